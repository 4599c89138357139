/*
 * migcheck — see include/migcheck.h. This file holds the evaluation:
 * pure functions from galbridge's own shapes (what exo made of the
 * cmdlets' answers, the store's mailbox records) to checks and to what a
 * person misses; migcheck_run.c does the reads and the output.
 *
 * Every failure carries the administrator's fix. Fixes name the tenant
 * to run them in and quote names as PowerShell single-quoted strings (a
 * quote doubled), so that they can be pasted. A person's fix is the same
 * text for everyone it applies to: the table groups them.
 */
#include "migcheck.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "migcheck_int.h"
#include "text.h"

#define TEXT_MAX 1024

int
migcheck_add(json_t *checks, const char *subject, int ok, const char *what,
             const char *detail, const char *fix)
{
  /* A check that passed has nothing to say beyond its what. */
  json_t *c = json_pack("{s:s, s:s, s:b, s:s?, s:s?}", "subject", subject,
                        "what", what, "ok", ok, "detail", ok ? NULL : detail,
                        "fix", ok ? NULL : fix);

  return json_array_append_new(checks, c);
}

/* `s` as a PowerShell single-quoted string into buf ('it''s'). */
static const char *
quote(char *buf, size_t len, const char *s)
{
  size_t j = 0;

  if (len < 3)
    return "''";
  buf[j++] = '\'';
  for (; s != NULL && *s != '\0' && j + 3 < len; s++) {
    if (*s == '\'')
      buf[j++] = '\'';
    buf[j++] = *s;
  }
  buf[j++] = '\'';
  buf[j] = '\0';
  return buf;
}

const char *
migcheck_str(const json_t *o, const char *key)
{
  const char *s = json_string_value(json_object_get(o, key));
  return s != NULL && s[0] != '\0' ? s : NULL;
}

/* Whether the array `list` holds `s` (compared without case). */
static int
has_text(const json_t *list, const char *s)
{
  const json_t *v;
  size_t i;

  if (s == NULL)
    return 0;
  json_array_foreach((json_t *)list, i, v)
  {
    if (json_is_string(v) && strcasecmp(json_string_value(v), s) == 0)
      return 1;
  }
  return 0;
}

/* A check whose texts are formatted here (what / detail / fix, each may
 * be NULL). */
static int
check(json_t *checks, const char *role, const struct config_tenant *t, int ok,
      const char *what, const char *detail, const char *fix)
{
  char subject[256];

  snprintf(subject, sizeof(subject), "%s %s", role, t->name);
  return migcheck_add(checks, subject, ok, what, detail, fix);
}

int
migcheck_org(json_t *checks, const char *role, const struct config_tenant *t,
             int dehydrated)
{
  char fix[TEXT_MAX];

  snprintf(fix, sizeof(fix), "in %s: Enable-OrganizationCustomization",
           t->name);
  return check(checks, role, t, dehydrated == 0,
               "organization customization enabled (IsDehydrated false)",
               dehydrated > 0 ? "IsDehydrated is true"
                              : "Get-OrganizationConfig did not say",
               dehydrated > 0 ? fix : NULL);
}

const json_t *
migcheck_find_relationship(const json_t *rels, const char *tenant_id)
{
  const json_t *r;
  size_t i;

  json_array_foreach((json_t *)rels, i, r)
  {
    if (has_text(json_object_get(r, "domains"), tenant_id))
      return r;
  }
  return NULL;
}

/* Exchange's MailboxMoveCapability names, in its order. */
static const char *const capabilities[] = {"Inbound", "Outbound",
                                           "RemoteInbound", "RemoteOutbound"};

/* The relationship's capabilities plus `add`, as Set-Organization-
 * Relationship takes them ("Inbound, RemoteOutbound"). */
static void
caps_with(char *buf, size_t len, const json_t *rel, const char *add)
{
  const json_t *have = json_object_get(rel, "capabilities");
  size_t j = 0;

  buf[0] = '\0';
  for (size_t i = 0; i < sizeof(capabilities) / sizeof(capabilities[0]); i++) {
    if (strcmp(capabilities[i], add) != 0 && !has_text(have, capabilities[i]))
      continue;
    j += (size_t)snprintf(buf + j, j < len ? len - j : 0, "%s%s",
                          j > 0 ? ", " : "", capabilities[i]);
  }
}

/* The capabilities as read, for a detail ("None" when there are none). */
static void
caps_text(char *buf, size_t len, const json_t *rel)
{
  const json_t *v;
  size_t i, j = 0;

  snprintf(buf, len, "None");
  json_array_foreach(json_object_get(rel, "capabilities"), i, v)
  {
    j += (size_t)snprintf(buf + j, j < len ? len - j : 0, "%s%s",
                          j > 0 ? ", " : "", json_string_value(v));
  }
}

/* Checks of a relationship's flag (Enabled, MailboxMoveEnabled). */
static int
rel_flag(json_t *checks, const char *role, const struct config_tenant *t,
         const json_t *rel, const char *key, const char *param)
{
  char what[TEXT_MAX], detail[TEXT_MAX], fix[TEXT_MAX], q[300];
  const char *name = migcheck_str(rel, "name");

  snprintf(what, sizeof(what), "relationship %s: %s",
           quote(q, sizeof(q), name), param);
  snprintf(detail, sizeof(detail), "%s is false", param);
  snprintf(fix, sizeof(fix),
           "in %s: Set-OrganizationRelationship %s -%s:$true", t->name, q,
           param);
  return check(checks, role, t, json_is_true(json_object_get(rel, key)), what,
               detail, fix);
}

/* The check that rel's capabilities have `cap`. */
static int
rel_capability(json_t *checks, const char *role, const struct config_tenant *t,
               const json_t *rel, const char *cap)
{
  char what[TEXT_MAX], detail[TEXT_MAX], fix[TEXT_MAX], q[300];
  char caps[256], want[256];

  quote(q, sizeof(q), migcheck_str(rel, "name"));
  caps_text(caps, sizeof(caps), rel);
  caps_with(want, sizeof(want), rel, cap);
  snprintf(what, sizeof(what), "relationship %s: MailboxMoveCapability has %s",
           q, cap);
  snprintf(detail, sizeof(detail), "MailboxMoveCapability is %s", caps);
  snprintf(fix, sizeof(fix),
           "in %s: Set-OrganizationRelationship %s -MailboxMoveCapability "
           "'%s'",
           t->name, q, want);
  return check(checks, role, t,
               has_text(json_object_get(rel, "capabilities"), cap), what,
               detail, fix);
}

/* The "what" of a side's relationship check: the one naming the other
 * tenant `other` (and its name when there is one). */
static void
rel_found(char *what, size_t len, const struct config_tenant *other,
          const json_t *rel)
{
  char q[300];

  snprintf(what, len,
           "organization relationship for %s (DomainNames has %s)%s%s",
           other->name, other->tenant_id, rel != NULL ? ": " : "",
           rel != NULL ? quote(q, sizeof(q), migcheck_str(rel, "name")) : "");
}

int
migcheck_target_relationship(json_t *checks, const struct config_link *link,
                             const json_t *rel)
{
  const struct config_tenant *t = link->target, *s = link->source;
  char what[TEXT_MAX], fix[TEXT_MAX], q[300];

  rel_found(what, sizeof(what), s, rel);
  snprintf(fix, sizeof(fix),
           "in %s: New-OrganizationRelationship %s -Enabled:$true "
           "-MailboxMoveEnabled:$true -MailboxMoveCapability Inbound "
           "-DomainNames %s",
           t->name, quote(q, sizeof(q), s->name), s->tenant_id);
  if (check(checks, "target", t, rel != NULL, what,
            "no relationship has it in DomainNames", fix) != 0)
    return -1;
  if (rel == NULL)
    return 0;
  if (rel_flag(checks, "target", t, rel, "enabled", "Enabled") != 0 ||
      rel_flag(checks, "target", t, rel, "moveEnabled",
               "MailboxMoveEnabled") != 0 ||
      rel_capability(checks, "target", t, rel, "Inbound") != 0)
    return -1;
  return 0;
}

const char *
migcheck_remote_server(enum config_cloud cloud)
{
  /* Microsoft's doc and validation script name outlook.office.com; "the
   * host depends on the cloud instance": for the others, their Exchange
   * host (MICROSOFT.md), not confirmed for endpoints. */
  switch (cloud) {
  case CONFIG_CLOUD_USGOVHIGH:
    return "outlook.office365.us";
  case CONFIG_CLOUD_DOD:
    return "webmail.apps.mil";
  case CONFIG_CLOUD_CHINA:
    return "partner.outlook.cn";
  case CONFIG_CLOUD_GLOBAL:
  default:
    return "outlook.office.com";
  }
}

/* The source's initial domain among its accepted domains (the
 * .onmicrosoft.com one), for a fix; NULL when not known. */
static const char *
initial_of(const json_t *domains)
{
  const json_t *v;
  size_t i;

  json_array_foreach((json_t *)domains, i, v)
  {
    const char *d = json_string_value(v);
    size_t n = d != NULL ? strlen(d) : 0;
    if (n > 16 && strcasecmp(d + n - 16, ".onmicrosoft.com") == 0 &&
        (n < 21 || strcasecmp(d + n - 21, ".mail.onmicrosoft.com") != 0))
      return d;
  }
  return NULL;
}

/* Whether endpoint e is one for the source: its RemoteTenant is one of
 * the source's domains or its tenant id. */
static int
for_source(const json_t *e, const json_t *domains, const char *source_id)
{
  const char *rt = migcheck_str(e, "remoteTenant");

  return rt != NULL &&
         (has_text(domains, rt) || strcasecmp(rt, source_id) == 0);
}

static const json_t *
pick_endpoint(const json_t *endpoints, const json_t *domains,
              const char *source_id, const char *app)
{
  const json_t *e, *best = NULL;
  /* Nothing read of the source (its failure is reported): the endpoints
   * are judged on their own. */
  int best_score = 0, unknown = domains == NULL && app == NULL;
  size_t i;

  json_array_foreach((json_t *)endpoints, i, e)
  {
    const char *type = migcheck_str(e, "type");
    const char *eapp = migcheck_str(e, "appId");
    int score = 0;

    /* Among those for the source: an ExchangeRemoteMove one, then one
     * with the source's application, then one with any application. */
    if (for_source(e, domains, source_id))
      score += 8;
    else if (!unknown &&
             (app == NULL || eapp == NULL || strcasecmp(app, eapp) != 0))
      continue; /* neither names the source nor carries its app */
    if (type != NULL && strcasecmp(type, "ExchangeRemoteMove") == 0)
      score += 4;
    if (app != NULL && eapp != NULL && strcasecmp(app, eapp) == 0)
      score += 2;
    score += 1 + (eapp != NULL); /* so that any endpoint can win */
    if (score > best_score) {
      best = e;
      best_score = score;
    }
  }
  return best;
}

int
migcheck_endpoint(json_t *checks, const struct config_link *link,
                  const json_t *endpoints, const json_t *source_domains,
                  const json_t *source_rel, const json_t **endpoint)
{
  const struct config_tenant *t = link->target, *s = link->source;
  const char *server = migcheck_remote_server(t->cloud);
  const char *app = migcheck_str(source_rel, "appId");
  const char *initial = initial_of(source_domains);
  const json_t *e =
      pick_endpoint(endpoints, source_domains, s->tenant_id, app);
  char what[TEXT_MAX], detail[TEXT_MAX], make[TEXT_MAX], fix[TEXT_MAX];
  char q[300], qi[300];
  const char *type, *rs, *eapp;
  int rc = 0;

  *endpoint = e;
  snprintf(make, sizeof(make),
           "in %s: New-MigrationEndpoint -Name %s -RemoteServer %s "
           "-RemoteTenant %s -ExchangeRemoteMove:$true -ApplicationId %s "
           "-Credentials (Get-Credential) (user name: that application id, "
           "password: its secret)",
           t->name, quote(q, sizeof(q), s->name), server,
           initial != NULL ? quote(qi, sizeof(qi), initial)
                           : "<source>.onmicrosoft.com",
           app != NULL ? app : "<the migration app's id>");
  snprintf(what, sizeof(what), "migration endpoint for %s%s%s", s->name,
           e != NULL ? ": " : "",
           e != NULL ? quote(q, sizeof(q), migcheck_str(e, "name")) : "");
  if (json_array_size(endpoints) == 0)
    snprintf(detail, sizeof(detail), "the target has no migration endpoint");
  else
    snprintf(detail, sizeof(detail),
             "none has RemoteTenant %s or ApplicationId %s",
             initial != NULL ? initial : s->tenant_id,
             app != NULL ? app : "(the source's is not known)");
  if (check(checks, "target", t, e != NULL, what, detail, make) != 0)
    return -1;
  if (e == NULL)
    return 0;

  quote(q, sizeof(q), migcheck_str(e, "name"));
  rs = migcheck_str(e, "remoteServer");
  snprintf(what, sizeof(what), "endpoint %s: RemoteServer %s", q, server);
  snprintf(detail, sizeof(detail), "RemoteServer is %s", rs ? rs : "empty");
  snprintf(fix, sizeof(fix),
           "in %s: Set-MigrationEndpoint %s -RemoteServer %s", t->name, q,
           server);
  rc |= check(checks, "target", t, rs != NULL && strcasecmp(rs, server) == 0,
              what, detail, fix);

  type = migcheck_str(e, "type");
  snprintf(what, sizeof(what), "endpoint %s: EndpointType ExchangeRemoteMove",
           q);
  snprintf(detail, sizeof(detail), "EndpointType is %s",
           type ? type : "empty");
  rc |= check(checks, "target", t,
              type != NULL && strcasecmp(type, "ExchangeRemoteMove") == 0,
              what, detail, make);

  eapp = migcheck_str(e, "appId");
  snprintf(what, sizeof(what), "endpoint %s: ApplicationId%s%s", q,
           eapp ? " " : "", eapp ? eapp : "");
  snprintf(fix, sizeof(fix),
           "in %s: Set-MigrationEndpoint %s -ApplicationId %s (the "
           "migration app consented in both tenants)",
           t->name, q, app != NULL ? app : "<the migration app's id>");
  rc |= check(checks, "target", t, eapp != NULL, what, "it has none", fix);
  return rc;
}

int
migcheck_source_relationship(json_t *checks, const struct config_link *link,
                             const json_t *rel, const json_t *endpoint)
{
  const struct config_tenant *t = link->target, *s = link->source;
  const char *want = migcheck_str(endpoint, "appId");
  const char *app = migcheck_str(rel, "appId");
  const json_t *scopes = json_object_get(rel, "scopes"), *v;
  char what[TEXT_MAX], detail[TEXT_MAX], fix[TEXT_MAX], q[300];
  size_t i, j;

  rel_found(what, sizeof(what), t, rel);
  snprintf(fix, sizeof(fix),
           "in %s: New-OrganizationRelationship %s -Enabled:$true "
           "-MailboxMoveEnabled:$true -MailboxMoveCapability RemoteOutbound "
           "-DomainNames %s -OAuthApplicationId %s "
           "-MailboxMovePublishedScopes '<a mail-enabled security group of "
           "the people to move>'",
           s->name, quote(q, sizeof(q), t->name), t->tenant_id,
           want != NULL ? want : "<the migration app's id>");
  if (check(checks, "source", s, rel != NULL, what,
            "no relationship has it in DomainNames", fix) != 0)
    return -1;
  if (rel == NULL)
    return 0;
  if (rel_flag(checks, "source", s, rel, "moveEnabled",
               "MailboxMoveEnabled") != 0 ||
      rel_capability(checks, "source", s, rel, "RemoteOutbound") != 0)
    return -1;

  quote(q, sizeof(q), migcheck_str(rel, "name"));
  if (want != NULL)
    snprintf(what, sizeof(what),
             "relationship %s: OAuthApplicationId is the endpoint's "
             "ApplicationId %s",
             q, want);
  else
    snprintf(what, sizeof(what), "relationship %s: OAuthApplicationId%s%s", q,
             app ? " " : "", app ? app : "");
  if (app != NULL)
    snprintf(detail, sizeof(detail), "OAuthApplicationId is %s", app);
  else
    snprintf(detail, sizeof(detail), "it has none");
  snprintf(fix, sizeof(fix),
           "in %s: Set-OrganizationRelationship %s -OAuthApplicationId %s",
           s->name, q, want != NULL ? want : "<the migration app's id>");
  if (check(checks, "source", s,
            app != NULL && (want == NULL || strcasecmp(app, want) == 0), what,
            detail, fix) != 0)
    return -1;

  j = (size_t)snprintf(what, sizeof(what),
                       "relationship %s: MailboxMovePublishedScopes", q);
  json_array_foreach(scopes, i, v)
  {
    j += (size_t)snprintf(what + j, j < sizeof(what) ? sizeof(what) - j : 0,
                          "%s%s", i == 0 ? " " : ", ", json_string_value(v));
  }
  snprintf(fix, sizeof(fix),
           "in %s: Set-OrganizationRelationship %s "
           "-MailboxMovePublishedScopes '<a mail-enabled security group of "
           "the people to move>'",
           s->name, q);
  return check(checks, "source", s, json_array_size(scopes) > 0, what,
               "it publishes no scope: no mailbox may leave", fix);
}

/* --- one person --- */

static int miss(json_t *missing, const char *fix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
miss(json_t *missing, const char *fix, const char *fmt, ...)
{
  char what[TEXT_MAX];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(what, sizeof(what), fmt, ap);
  va_end(ap);
  return json_array_append_new(
      missing, json_pack("{s:s, s:s}", "what", what, "fix", fix));
}

/* The target object's state as a missing thing, in the order of
 * migration_target_refused(); 0 when it may be stamped. */
static int
target_state(json_t *missing, const struct exo_user_state *st)
{
  char why[TEXT_MAX];

  if (!migration_target_refused(st, why, sizeof(why)))
    return 0;
  if (st->dir_synced)
    return miss(missing, why,
                "the target object is synchronised from "
                "on-premises");
  if (strcasecmp(st->type, "MailUser") != 0)
    return miss(missing, why, "the target object is a %s, not a MailUser",
                st->type);
  if (st->licensed)
    return miss(missing, why, "the target object is licensed");
  return miss(missing, why, "the target object had a mailbox (%s)",
              st->previous);
}

/* A fix for a copy's stamps. galbridge writes them when it makes a copy,
 * when its source changes, and when a round's listing shows them changed
 * in the target: its next round puts them right, unless the copy is one
 * it refuses to stamp (plan and status say why). */
static void
stamp_fix(char *buf, size_t len, const struct config_link *link,
          const char *params)
{
  snprintf(buf, len,
           "galbridge sync --link %s writes it again (or in %s: "
           "Set-MailUser <its target> %s); if it stays, galbridge status "
           "shows why the copy is refused",
           link->name, link->target->name, params);
}

/* What the target side misses: GUIDs, X500 addresses, addresses. */
static int
compare_target(const struct migcheck_env *env, const json_t *record,
               const json_t *mu, json_t *missing)
{
  const struct config_link *link = env->link;
  const char *guid = migcheck_str(record, "exchangeGuid"), *tguid;
  const char *arch = migcheck_str(record, "archiveGuid"), *tarch;
  const char *dn = migcheck_str(record, "legacyDN");
  const json_t *tx = json_object_get(mu, "x500"), *v;
  char fix[TEXT_MAX], x[EXO_PROXY_MAX + 8];
  size_t i, lacking = 0;
  int rc = 0, initial = 0;

  stamp_fix(fix, sizeof(fix), link,
            "-ExchangeGuid <the source mailbox's ExchangeGuid>");
  tguid = migcheck_str(mu, "exchangeGuid");
  if (tguid == NULL)
    rc |= miss(missing, fix, "ExchangeGuid missing on the target");
  else if (guid != NULL && strcasecmp(guid, tguid) != 0)
    rc |= miss(missing, fix,
               "ExchangeGuid %s on the target is not the source's %s", tguid,
               guid);
  stamp_fix(fix, sizeof(fix), link,
            "-ArchiveGuid <the source archive's ArchiveGuid>");
  tarch = migcheck_str(mu, "archiveGuid");
  if (arch != NULL && tarch == NULL)
    rc |= miss(missing, fix,
               "ArchiveGuid missing on the target (the source has an "
               "archive)");
  else if (arch != NULL && strcasecmp(arch, tarch) != 0)
    rc |= miss(missing, fix,
               "ArchiveGuid %s on the target is not the source's %s", tarch,
               arch);
  else if (arch == NULL && tarch != NULL)
    rc |= miss(missing,
               "remove the ArchiveGuid from the target MailUser, or, if the "
               "source's archive was disabled, enable it again: galbridge "
               "then stamps its GUID",
               "ArchiveGuid %s on the target while the source has no archive",
               tarch);
  stamp_fix(fix, sizeof(fix), link,
            "-EmailAddresses @{add='X500:<the source's value>'}");
  if (dn != NULL) {
    snprintf(x, sizeof(x), "X500:%s", dn);
    if (!migration_has_proxy(tx, x))
      rc |= miss(missing, fix,
                 "X500 address of the source's LegacyExchangeDN missing");
  }
  json_array_foreach(json_object_get(record, "x500"), i, v)
  {
    const char *a = json_string_value(v);
    lacking += a != NULL && strlen(a) > 5 && !migration_has_proxy(tx, a);
  }
  if (lacking > 0)
    rc |= miss(missing, fix, "%zu of the source's X500 addresses missing",
               lacking);
  if (env->target == NULL)
    return rc;
  stamp_fix(fix, sizeof(fix), link,
            "-EmailAddresses @{remove='smtp:<that address>'}");
  json_array_foreach(json_object_get(mu, "smtp"), i, v)
  {
    const char *a = json_string_value(v), *at = a ? strrchr(a, '@') : NULL;
    if (a == NULL)
      continue;
    if (!migration_accepted(env->target, a))
      rc |= miss(missing, fix, "address %s is in a domain %s does not accept",
                 a, link->target->name);
    else if (at != NULL && env->target->initial != NULL &&
             strcasecmp(at + 1, env->target->initial) == 0)
      initial = 1;
  }
  stamp_fix(fix, sizeof(fix), link,
            "-EmailAddresses @{add='smtp:<its alias>@<the initial domain>'}");
  if (!initial && env->target->initial != NULL)
    rc |= miss(missing, fix, "no address in %s's initial domain %s",
               link->target->name, env->target->initial);
  return rc;
}

/* Whether the members' set (exo_group_members) holds `s` (NULL: no),
 * compared in lower case as its keys are. -1: out of memory. */
static int
member_has(const json_t *members, const char *s, int *in)
{
  char *lower;

  *in = 0;
  if (s == NULL)
    return 0;
  lower = strdup(s);
  if (lower == NULL)
    return -1;
  for (char *p = lower; *p != '\0'; p++)
    *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
  *in = json_object_get(members, lower) != NULL;
  free(lower);
  return 0;
}

/* What the source side misses: holds, the published scope, a licence. */
static int
compare_source(const struct migcheck_env *env, const json_t *record,
               const json_t *mu, json_t *missing)
{
  const char *s = env->link->source->name, *t = env->link->target->name;
  const json_t *holds = json_object_get(record, "holds"), *v;
  char list[TEXT_MAX], fix[TEXT_MAX], q[300];
  size_t i, j = 0;
  int rc = 0;

  list[0] = '\0';
  json_array_foreach(holds, i, v)
  {
    j += (size_t)snprintf(list + j, j < sizeof(list) ? sizeof(list) - j : 0,
                          "%s%s", i > 0 ? ", " : "", json_string_value(v));
  }
  if (json_array_size(holds) > 0) {
    snprintf(fix, sizeof(fix),
             "in %s, release every hold on the source mailbox (a mailbox on "
             "any hold is not moved)",
             s);
    rc |= miss(missing, fix, "on hold in the source: %s", list);
  }
  if (env->members != NULL) {
    int in = 0;
    if (member_has(env->members, migcheck_str(record, "id"), &in) != 0 ||
        (!in &&
         member_has(env->members, migcheck_str(record, "primary"), &in) != 0))
      return -1;
    snprintf(fix, sizeof(fix),
             "in %s: Add-DistributionGroupMember -Identity %s -Member "
             "<its source address>",
             s, quote(q, sizeof(q), env->scope));
    if (!in)
      rc |= miss(missing, fix, "not a member of the published-scope group%s%s",
                 env->scope ? " " : "", env->scope ? env->scope : "");
  }
  /* Without the target MailUser its side of the licence is not known. */
  if (mu != NULL && !json_is_true(json_object_get(record, "licensed")) &&
      !json_is_true(json_object_get(mu, "licensed"))) {
    snprintf(fix, sizeof(fix),
             "assign the Cross Tenant User Data Migration licence to the "
             "user in %s or in %s",
             s, t);
    rc |= miss(missing, fix,
               "no Cross Tenant User Data Migration licence (on the source "
               "mailbox or the target MailUser)");
  }
  return rc;
}

int
migcheck_user(const struct migcheck_env *env, const json_t *record,
              const json_t *mu, const struct exo_user_state *st,
              json_t *missing)
{
  char fix[TEXT_MAX];
  size_t before;
  int rc = 0;

  if (migcheck_str(record, "bad") != NULL) {
    snprintf(fix, sizeof(fix),
             "correct the source mailbox in %s; galbridge reads it again at "
             "its next sync",
             env->link->source->name);
    return miss(missing, fix, "its source mailbox is refused: %s",
                migcheck_str(record, "bad"));
  }
  before = json_array_size(missing);
  if (st != NULL && target_state(missing, st) != 0)
    return -1;
  if (json_array_size(missing) > before) /* never stamped: not compared */
    return compare_source(env, record, mu, missing);
  snprintf(fix, sizeof(fix),
           "run galbridge sync: it makes a copy removed from the target "
           "again (galbridge plan --link %s says why it does not)",
           env->link->name);
  if (mu == NULL)
    rc |= miss(missing, fix, "no target MailUser carries its anchor");
  else if (json_is_true(json_object_get(mu, "dirSynced")))
    rc |= miss(missing,
               "set msExchMailboxGuid and the X500 addresses on the "
               "on-premises object; galbridge does not change it",
               "the target object is synchronised from on-premises");
  else
    rc |= compare_target(env, record, mu, missing);
  return rc | compare_source(env, record, mu, missing);
}

int
migcheck_refused(long status, const char *exception, const char *errmsg)
{
  if (status == 401 || status == 403)
    return 1;
  if (exception != NULL && (strstr(exception, "CommandNotFound") != NULL ||
                            strstr(exception, "AccessDenied") != NULL))
    return 1;
  return errmsg != NULL && (strcasestr(errmsg, "not allowed to call") ||
                            strcasestr(errmsg, "is not recognized as"));
}
