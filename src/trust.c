/*
 * trust — see include/trust.h. The pure part: the verdict lines and the
 * plan; setup-trust's requests are in trust_run.c.
 *
 * Every line names both tenants by their config names; a fix names the
 * command and the Entra admin center's path (External Identities >
 * Cross-tenant access settings), so an administrator can do it either
 * way.
 */
#include "trust.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PORTAL                                                                \
  "Entra admin center, External Identities > Cross-tenant access settings"

static struct trust_line *
add(struct trust_line *lines, size_t *n, size_t max, enum trust_level level)
{
  struct trust_line *l;

  if (*n >= max)
    return NULL;
  l = &lines[(*n)++];
  l->level = level;
  l->text[0] = l->fix[0] = '\0';
  return l;
}

static void say(char *buf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
say(char *buf, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(buf, TRUST_TEXT_MAX, fmt, ap);
  va_end(ap);
}

static const char *
flag_text(enum graph_flag f)
{
  return f == GRAPH_FLAG_TRUE    ? "true"
         : f == GRAPH_FLAG_FALSE ? "false"
                                 : "null";
}

static void
check_partner(const struct trust_names *n, const struct graph_policy *p,
              int in_target, struct trust_line *lines, size_t *k, size_t max)
{
  const char *me = in_target ? n->target : n->source;
  const char *other = in_target ? n->source : n->target;
  const char *other_id = in_target ? n->source_id : n->target_id;
  struct trust_line *l =
      add(lines, k, max, p->partner ? TRUST_OK : TRUST_WARN);

  if (l == NULL)
    return;
  if (p->partner) {
    say(l->text, "tenant %s has a partner entry for %s", me, other);
    return;
  }
  say(l->text,
      "tenant %s has no partner entry for %s in its cross-tenant access "
      "settings: automatic redemption cannot be set without one",
      me, other);
  say(l->fix,
      "galbridge setup-trust %s adds it; or in %s's " PORTAL
      " > Organizational settings > Add organization: %s",
      n->link, me, other_id);
}

static void
check_auto(const struct trust_names *n, const struct graph_policy *p,
           int in_target, struct trust_line *lines, size_t *k, size_t max)
{
  const char *me = in_target ? n->target : n->source;
  const char *other = in_target ? n->source : n->target;
  enum graph_flag f = in_target ? p->auto_inbound : p->auto_outbound;
  const char *dir = in_target ? "inbound" : "outbound";
  struct trust_line *l =
      add(lines, k, max, f == GRAPH_FLAG_TRUE ? TRUST_OK : TRUST_WARN);

  if (l == NULL)
    return;
  if (f == GRAPH_FLAG_TRUE) {
    say(l->text, "tenant %s redeems invitations %s %s automatically (%s)", me,
        in_target ? "from" : "to", other, dir);
    return;
  }
  say(l->text,
      "tenant %s does not redeem invitations %s %s automatically (%s; "
      "automaticUserConsentSettings.%sAllowed %s): each guest gets a "
      "consent prompt at first sign-in and the invitation mail is not "
      "suppressed (both tenants must set it)",
      me, in_target ? "from" : "to", other, dir, dir,
      !p->partner             ? "unset: no partner entry"
      : f == GRAPH_FLAG_FALSE ? "is false"
                              : "is null, which counts as false");
  say(l->fix,
      "galbridge setup-trust %s sets it; or in %s's " PORTAL " > %s > %s "
      "access > Trust settings > Automatically redeem invitations with the "
      "tenant %s",
      n->link, me, other, in_target ? "Inbound" : "Outbound", other);
}

static void
check_b2b(const struct trust_names *n, const struct graph_policy *p,
          int in_target, struct trust_line *lines, size_t *k, size_t max)
{
  const char *me = in_target ? n->target : n->source;
  const char *other = in_target ? n->source : n->target;
  int dflt;
  const struct graph_b2b_setting *s =
      graph_policy_effective(p, in_target, &dflt);
  const char *where = dflt ? "default policy" : "partner entry";
  char what[160];
  enum trust_level level = s->users == GRAPH_B2B_BLOCKED  ? TRUST_FAIL
                           : s->users == GRAPH_B2B_LISTED ? TRUST_WARN
                                                          : TRUST_OK;
  struct trust_line *l = add(lines, k, max, level);

  if (l == NULL)
    return;
  if (in_target)
    snprintf(what, sizeof(what), "inbound for %s's users", other);
  else
    snprintf(what, sizeof(what), "outbound for its users to %s", other);
  /* UNSET on the default too: the service default allows (G-DEF-GET). */
  if (level == TRUST_OK) {
    say(l->text, "tenant %s allows B2B collaboration %s (%s)", me, what,
        where);
    return;
  }
  if (level == TRUST_FAIL) {
    say(l->text,
        "tenant %s blocks B2B collaboration %s (%s): the link's "
        "invitations are refused",
        me, what, where);
    say(l->fix,
        "galbridge setup-trust %s allows it on the partner entry only; or "
        "in %s's " PORTAL " > %s > %s access > B2B collaboration > Allow "
        "access",
        n->link, me, other, in_target ? "Inbound" : "Outbound");
    return;
  }
  say(l->text,
      "tenant %s allows B2B collaboration %s for listed users or groups "
      "only (%s): people the list does not allow cannot be invited",
      me, what, where);
  say(l->fix,
      "check in %s's " PORTAL " > %s > %s access > B2B collaboration that "
      "link %s's people are allowed (setup-trust leaves lists alone)",
      me, dflt ? "Default settings" : other,
      in_target ? "Inbound" : "Outbound", n->link);
}

static void
check_sync(const struct trust_names *n, const struct graph_policy *p,
           struct trust_line *lines, size_t *k, size_t max)
{
  struct trust_line *l =
      add(lines, k, max,
          p->sync_allowed == GRAPH_FLAG_TRUE ? TRUST_NOTE : TRUST_OK);

  if (l == NULL)
    return;
  if (p->sync_allowed == GRAPH_FLAG_TRUE) {
    say(l->text,
        "tenant %s lets %s sync users in with Entra cross-tenant "
        "synchronization: galbridge does not need it, and if %s syncs the "
        "people of link %s that way, cross-tenant synchronization takes "
        "over galbridge's guests (it matches existing B2B users and makes "
        "them members)",
        n->target, n->source, n->source, n->link);
  } else if (p->sync_allowed == GRAPH_POLICY_SYNC_UNKNOWN) {
    l->level = TRUST_NOTE;
    say(l->text,
        "tenant %s: whether it lets %s sync users in with Entra cross-tenant "
        "synchronization could not be read",
        n->target, n->source);
  } else {
    say(l->text,
        "tenant %s does not let %s sync users in with Entra cross-tenant "
        "synchronization (galbridge does not need it)",
        n->target, n->source);
  }
}

size_t
trust_check(const struct trust_names *names, const struct graph_policy *target,
            const struct graph_policy *source, struct trust_line *lines,
            size_t max)
{
  size_t k = 0;

  if (target != NULL) {
    check_partner(names, target, 1, lines, &k, max);
    check_auto(names, target, 1, lines, &k, max);
    check_b2b(names, target, 1, lines, &k, max);
  }
  if (source != NULL) {
    check_partner(names, source, 0, lines, &k, max);
    check_auto(names, source, 0, lines, &k, max);
    check_b2b(names, source, 0, lines, &k, max);
  }
  if (target != NULL)
    check_sync(names, target, lines, &k, max);
  return k;
}

/* --- the plan --- */

static void
field(struct trust_write *w, const char *name, const char *was,
      const char *will)
{
  struct trust_field *f = &w->fields[w->n_fields++];

  f->name = name;
  snprintf(f->was, sizeof(f->was), "%s", was);
  snprintf(f->will, sizeof(f->will), "%s", will);
}

static void
plan_side(const struct trust_names *n, const struct graph_policy *p,
          int in_target, struct trust_write *w, struct trust_plan *plan)
{
  enum graph_flag mine = in_target ? p->auto_inbound : p->auto_outbound;
  int dflt;
  const struct graph_b2b_setting *s =
      graph_policy_effective(p, in_target, &dflt);

  memset(w, 0, sizeof(*w));
  w->tenant = in_target ? n->target : n->source;
  w->tenant_id = in_target ? n->target_id : n->source_id;
  w->partner_id = in_target ? n->source_id : n->target_id;
  w->create = !p->partner;
  if (mine != GRAPH_FLAG_TRUE) {
    /* Both members, the other as it was read (graph_policy.h). */
    w->patch.set_auto = 1;
    w->patch.auto_inbound = in_target ? GRAPH_FLAG_TRUE : p->auto_inbound;
    w->patch.auto_outbound = in_target ? p->auto_outbound : GRAPH_FLAG_TRUE;
    field(w,
          in_target ? GRAPH_POLICY_FIELD_AUTO_IN : GRAPH_POLICY_FIELD_AUTO_OUT,
          flag_text(mine), "true");
  }
  if (s->users == GRAPH_B2B_BLOCKED) {
    if (in_target)
      w->patch.allow_inbound = s;
    else
      w->patch.allow_outbound = s;
    field(
        w, in_target ? GRAPH_POLICY_FIELD_B2B_IN : GRAPH_POLICY_FIELD_B2B_OUT,
        dflt ? "null (default policy: blocked AllUsers)" : "blocked AllUsers",
        "allowed AllUsers");
  } else if (s->users == GRAPH_B2B_LISTED &&
             plan->n_kept < sizeof(plan->kept) / sizeof(plan->kept[0])) {
    struct trust_line *l = &plan->kept[plan->n_kept++];
    l->level = TRUST_WARN;
    say(l->text,
        "not changed: tenant %s's B2B collaboration %s (%s) names a list "
        "of users or groups; check that link %s's people are allowed",
        w->tenant, in_target ? "inbound" : "outbound",
        dflt ? "default policy" : "partner entry", n->link);
    l->fix[0] = '\0';
  }
}

void
trust_plan(const struct trust_names *names, const struct graph_policy *target,
           const struct graph_policy *source, struct trust_plan *plan)
{
  memset(plan, 0, sizeof(*plan));
  plan_side(names, target, 1, &plan->target, plan);
  plan_side(names, source, 0, &plan->source, plan);
}

int
trust_write_empty(const struct trust_write *w)
{
  return !w->create && w->n_fields == 0;
}

int
trust_plan_empty(const struct trust_plan *plan)
{
  return trust_write_empty(&plan->target) && trust_write_empty(&plan->source);
}

void
trust_not_needed(const struct config_link *link, char *buf, size_t len)
{
  snprintf(buf, len,
           "link %s makes %s in %s, not B2B guests: nobody is invited, so "
           "no cross-tenant access settings are needed",
           link->name,
           config_link_contacts(link) ? "mail contacts" : "mail users",
           link->target->name);
}
