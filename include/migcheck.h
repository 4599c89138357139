/*
 * migcheck — `galbridge migration-check [LINK]`: whether the people of a
 * migration link (migration = yes) can be moved now by Microsoft's
 * cross-tenant mailbox migration (MIGRATION.md §1.3, §1.4), and for each
 * failure what the administrator does about it.
 *
 * Read-only: nothing is written to any tenant (only Get- cmdlets and
 * Test-MigrationServerAvailability, which changes nothing), and the state
 * is opened read-only without the lock, so a running daemon is not
 * disturbed. For each link, one after another (as doctor does, so no
 * tenant sees more than one request at a time and the lines come in
 * order):
 *   - the tenants' set-up: the organizations are not dehydrated; the
 *     target's organization relationship naming the source tenant id is
 *     enabled, allows mailbox moves, and its MailboxMoveCapability has
 *     Inbound; the target's migration endpoint for the source is an
 *     ExchangeRemoteMove endpoint on the cloud's remote server with an
 *     ApplicationId; the source's relationship naming the target tenant id
 *     allows moves, has RemoteOutbound, the endpoint's ApplicationId as its
 *     OAuthApplicationId, and published scopes;
 *   - every copy the state holds of a source mailbox in scope, compared
 *     with the target MailUser as it is now (read in pages: Get-MailUser
 *     with a filter on the link's anchor attribute, Get-User for the
 *     target objects' state) and with the source (holds, licence, the
 *     published-scope groups' members);
 *   - Test-MigrationServerAvailability with the target address of one
 *     ready person (MIGRATION.md §1.3: the TARGET address).
 * A read the application is not allowed to make (a 401 or 403, or a
 * cmdlet outside its roles) is a failed check naming the Exchange role
 * to grant; the other checks go on.
 *
 * Microsoft's shapes stay in exo (exo_relationships, exo_endpoints,
 * exo_mailuser_record, ...): the evaluation here reads galbridge's own.
 */
#ifndef GALBRIDGE_MIGCHECK_H
#define GALBRIDGE_MIGCHECK_H

#include <jansson.h>
#include <stdio.h>
#include <uv.h>

#include "config.h"
#include "exo.h"
#include "http.h"
#include "migration.h"

enum migcheck_format {
  MIGCHECK_TABLE, /* for people: "ok"/"FAIL" lines, then one per user */
  MIGCHECK_JSON,  /* one JSON object on stdout */
  MIGCHECK_CSV,   /* New-MigrationBatch's CSV: EmailAddress, ready users */
};

/* Check `links` (borrowed; n of them, each with migration = yes) on
 * `loop` (run until it returns), writing the report to `out` in `format`
 * and, for the CSV, a summary line to `err`. Returns 0 when every check
 * passed and every person is ready, 1 when not, -1 when the checks could
 * not run (out of memory, the state unreadable): nothing more was
 * written then than what had been. */
int migcheck_run(uv_loop_t *loop, struct http *http, const struct config *cfg,
                 const struct config_link *const *links, size_t n,
                 enum migcheck_format format, FILE *out, FILE *err)
    __attribute__((warn_unused_result));

/* --- pure parts, exposed for unit tests --- */

/* Append {"subject", "what", "ok", "detail", "fix"} to `checks` (detail
 * and fix null when NULL, and always when ok). Returns 0, or -1 out of
 * memory. */
int migcheck_add(json_t *checks, const char *subject, int ok, const char *what,
                 const char *detail, const char *fix)
    __attribute__((warn_unused_result));

/* The organization's IsDehydrated (exo_org_dehydrated: 1, 0, -1 unknown)
 * as a check of tenant `t` ("target" or "source" in `role`). */
int migcheck_org(json_t *checks, const char *role,
                 const struct config_tenant *t, int dehydrated)
    __attribute__((warn_unused_result));

/* The relationship of `rels` (exo_relationships' shape) whose domains
 * hold `tenant_id` (borrowed), or NULL. */
const json_t *migcheck_find_relationship(const json_t *rels,
                                         const char *tenant_id);

/* The target's side: `rel` (the target's relationship naming the
 * source's tenant id, or NULL when there is none) is there, Enabled,
 * MailboxMoveEnabled, and its capabilities have Inbound. Returns 0, or
 * -1 out of memory (as every check function here). */
int migcheck_target_relationship(json_t *checks,
                                 const struct config_link *link,
                                 const json_t *rel)
    __attribute__((warn_unused_result));

/* The remote server a cross-tenant endpoint names in `cloud`:
 * outlook.office.com for global (Microsoft's doc and validation script),
 * else the cloud's Exchange host. Static text. */
const char *migcheck_remote_server(enum config_cloud cloud);

/* The target's migration endpoint for the link's source among
 * `endpoints` (exo_endpoints' shape): one whose RemoteTenant is one of
 * `source_domains` (lower-case names, may be NULL when unknown) or the
 * source's tenant id, else one whose ApplicationId is `source_rel`'s
 * (may be NULL) OAuthApplicationId (any one when neither is known);
 * an ExchangeRemoteMove one first, then one with an application. Adds
 * the checks (found, RemoteServer, EndpointType, ApplicationId) and sets
 * *endpoint to it (borrowed from endpoints), or NULL when none is. */
int migcheck_endpoint(json_t *checks, const struct config_link *link,
                      const json_t *endpoints, const json_t *source_domains,
                      const json_t *source_rel, const json_t **endpoint)
    __attribute__((warn_unused_result));

/* The source's side: `rel` (the source's relationship naming the
 * target's tenant id, or NULL) is there, MailboxMoveEnabled, has
 * RemoteOutbound, its OAuthApplicationId is `endpoint`'s ApplicationId
 * (only that it has one when endpoint is NULL: not known), and it
 * publishes scopes. */
int migcheck_source_relationship(json_t *checks,
                                 const struct config_link *link,
                                 const json_t *rel, const json_t *endpoint)
    __attribute__((warn_unused_result));

/* What a person's check is compared with, besides the person. */
struct migcheck_env {
  const struct config_link *link;
  const struct migration_target *target; /* accepted domains, initial;
                                            NULL: not known */
  const json_t *members; /* exo_group_members of the published scopes;
                            NULL: not known (not checked) */
  const char *scope;     /* the first published-scope group, for fixes */
};

/* Whether one person is ready to move: `record` (the source mailbox's
 * record: exo_mailbox_record's shape, or {"bad": reason}), `mailuser`
 * (exo_mailuser_record's shape of the target object, or NULL when no
 * target MailUser was found), `st` (the target object's Get-User state,
 * or NULL when not known). Appends to `missing` one {"what", "fix"} per
 * thing missing (a fix is the same text for every person it applies to,
 * so that a report can group them). Returns 0 (ready when nothing was
 * appended), or -1 out of memory. */
int migcheck_user(const struct migcheck_env *env, const json_t *record,
                  const json_t *mailuser, const struct exo_user_state *st,
                  json_t *missing) __attribute__((warn_unused_result));

/* Whether an Exchange answer refused a read for lack of permission: a
 * 401 or 403 (after exo's fresh tokens), a cmdlet the application's roles
 * do not include (CommandNotFoundException: Exchange hides it), or
 * "not allowed to call". */
int migcheck_refused(long status, const char *exception, const char *errmsg);

#endif
