/*
 * trust — the cross-tenant access settings a guest link needs, judged
 * (doctor) and planned (setup-trust), and the setup-trust command.
 *
 * A guest link invites the source's people into the target as B2B
 * guests. For that the target's settings for the source and the source's
 * for the target (graph_policy.h) should have: a partner entry in each;
 * automatic redemption inbound in the target and outbound in the source
 * (without both, each guest gets a consent prompt at first sign-in and
 * the invitation mail is not suppressed); B2B collaboration allowed
 * inbound in the target and outbound in the source (partner entry, else
 * the default policy: blocked there, invitations are refused). Whether
 * the target lets Entra cross-tenant synchronization (CTS) sync users in
 * is information only: galbridge does not need it, and CTS can take over
 * galbridge's guests. Mail contact and mail user links invite nobody and
 * need none of it.
 *
 * trust_check() and trust_plan() are pure: the verdict lines and the
 * writes follow from the two tenants' settings alone. The plan changes
 * only what is missing and never loosens more than that: a partner entry
 * when there is none, the automatic redemption flag of its direction,
 * B2B collaboration of its direction only when it is blocked for all
 * users (a list of users or groups is left alone, to be checked by
 * hand); never inboundTrust, identitySynchronization or the default
 * policy.
 */
#ifndef GALBRIDGE_TRUST_H
#define GALBRIDGE_TRUST_H

#include <stdio.h>
#include <uv.h>

#include "config.h"
#include "graph_policy.h"
#include "http.h"

enum trust_level {
  TRUST_OK,
  TRUST_NOTE, /* information */
  TRUST_WARN, /* works, but not as well as it could */
  TRUST_FAIL, /* the link's invitations will be refused */
};

#define TRUST_TEXT_MAX 400

struct trust_line {
  enum trust_level level;
  char text[TRUST_TEXT_MAX];
  char fix[TRUST_TEXT_MAX]; /* what to do ("" when nothing) */
};

/* At most this many lines come from trust_check(). */
#define TRUST_LINES_MAX 8

/* Who is who, all borrowed. */
struct trust_names {
  const char *link;
  const char *source, *source_id; /* config names and tenant ids */
  const char *target, *target_id;
};

/* The verdict on a guest link from the target's settings for the source
 * and the source's for the target (either NULL: it could not be read,
 * and its lines are left out). Fills at most `max` lines; returns their
 * number. */
size_t trust_check(const struct trust_names *names,
                   const struct graph_policy *target,
                   const struct graph_policy *source, struct trust_line *lines,
                   size_t max);

/* A field a write changes, as setup-trust prints it. */
struct trust_field {
  const char *name; /* GRAPH_POLICY_FIELD_* */
  char was[64], will[64];
};

/* The writes to one tenant: a new partner entry and/or one PATCH. */
struct trust_write {
  const char *tenant, *tenant_id; /* the tenant written (borrowed) */
  const char *partner_id;         /* the partner entry's tenant id */
  int create;                     /* POST the partner entry first */
  struct graph_policy_patch patch;
  struct trust_field fields[3]; /* what the PATCH changes */
  size_t n_fields;
};

/* What setup-trust would write. Its patches point into the policies it
 * was planned from: they must outlive it. */
struct trust_plan {
  struct trust_write target, source;
  /* settings it leaves alone that may still stop invitations */
  struct trust_line kept[2];
  size_t n_kept;
};

/* Plan the writes from both tenants' settings (neither NULL). */
void trust_plan(const struct trust_names *names,
                const struct graph_policy *target,
                const struct graph_policy *source, struct trust_plan *plan);

/* Whether a write (or the whole plan) has nothing to send. */
int trust_write_empty(const struct trust_write *w);
int trust_plan_empty(const struct trust_plan *plan);

/* `galbridge setup-trust LINK [--yes]`: read both tenants' settings,
 * print what would change (tenant, request, each field old -> new) and,
 * with `yes`, write it, on `out`. `link` (borrowed) names the tenants.
 * Runs `loop` until done. Returns 0 (printed, written or nothing to
 * do), 1 when a read or a write failed (a permission refused names the
 * one to grant), -1 when it could not run. */
int trust_setup_run(uv_loop_t *loop, struct http *http,
                    const struct config_link *link, int yes, FILE *out)
    __attribute__((warn_unused_result));

/* The line doctor and setup-trust print for a link that makes mail
 * contacts or mail users: the settings are not needed. */
void trust_not_needed(const struct config_link *link, char *buf, size_t len);

#endif
