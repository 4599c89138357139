/*
 * Unit tests for migration-check's evaluation (migcheck.c) and the exo
 * helpers that give it its inputs: organization relationships (the
 * capability read as a set), migration endpoints, the availability test,
 * target MailUsers, group members; then each check and each thing a
 * person can miss, with its fix.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "exo.h"
#include "migcheck.h"
#include "migration.h"

#define SRC_ID "aaaaaaaa-1111-4111-8111-000000000001"
#define TGT_ID "bbbbbbbb-2222-4222-8222-000000000002"
#define APP "cccccccc-3333-4333-8333-000000000003"
#define GUID "0b7e4b1c-55e1-4f11-9a55-6a0e1d6c1a01"
#define ARCHIVE "1c8f5c2d-66f2-4022-8b66-7b1f2e7d2b02"
#define DN                                                                    \
  "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/"       \
  "cn=Recipients/cn=0b7e4b1c55e14f119a556a0e1d6c1a01-lara"
#define OLD_X500 "X500:/o=First Organization/ou=Old/cn=Recipients/cn=lara"

static struct config_tenant source = {
    .name = "fabrikam", .tenant_id = SRC_ID, .cloud = CONFIG_CLOUD_GLOBAL};
static struct config_tenant target = {
    .name = "contoso", .tenant_id = TGT_ID, .cloud = CONFIG_CLOUD_GLOBAL};
static struct config_link mlink = {.name = "f-to-c",
                                   .source = &source,
                                   .target = &target,
                                   .object = CONFIG_OBJECT_MAILUSER,
                                   .anchor = "extensionAttribute15",
                                   .migration = 1};

/* The check at index i of checks. */
static const json_t *
at(const json_t *checks, size_t i)
{
  const json_t *c = json_array_get(checks, i);
  assert_non_null(c);
  return c;
}

static int
ok(const json_t *c)
{
  return json_is_true(json_object_get(c, "ok"));
}

static const char *
field(const json_t *c, const char *key)
{
  return json_string_value(json_object_get(c, key));
}

/* Whether some check of `checks` is a failure whose what has `what` and
 * whose fix has `fix` (NULL: any). */
static int
failed_with(const json_t *checks, const char *what, const char *fix)
{
  const json_t *c;
  size_t i;

  json_array_foreach((json_t *)checks, i, c)
  {
    if (!ok(c) && strstr(field(c, "what"), what) != NULL &&
        (fix == NULL ||
         (field(c, "fix") != NULL && strstr(field(c, "fix"), fix) != NULL)))
      return 1;
  }
  return 0;
}

static size_t
n_failed(const json_t *checks)
{
  const json_t *c;
  size_t i, n = 0;

  json_array_foreach((json_t *)checks, i, c)
  {
    n += !ok(c);
  }
  return n;
}

/* ---- exo: Microsoft's answers into galbridge's shapes ---- */

static json_t *
relationships(const char *capability, const char *app_key)
{
  json_t *v = json_pack(
      "[{s:s, s:[s], s:b, s:b, s:s, s:s, s:[s]}, {s:s, s:[s], s:b}]", "Name",
      "To Contoso", "DomainNames", "BBBBBBBB-2222-4222-8222-000000000002",
      "Enabled", 1, "MailboxMoveEnabled", 1, "MailboxMoveCapability",
      capability, app_key, "CCCCCCCC-3333-4333-8333-000000000003",
      "MailboxMovePublishedScopes", "Movers", "Name", "Federation",
      "DomainNames", "other.example", "Enabled", 1);
  assert_non_null(v);
  return v;
}

static json_t *
rels_of(json_t *raw)
{
  json_t *out = NULL;

  assert_int_equal(exo_relationships(raw, &out), 0);
  json_decref(raw);
  return out;
}

static void
test_relationships(void **state)
{
  json_t *rels =
      rels_of(relationships("Inbound, RemoteOutbound", "OauthApplicationId"));
  const json_t *r = json_array_get(rels, 0), *caps;

  (void)state;
  assert_int_equal(json_array_size(rels), 2);
  assert_string_equal(field(r, "name"), "To Contoso");
  assert_string_equal(
      json_string_value(json_array_get(json_object_get(r, "domains"), 0)),
      TGT_ID);
  /* OauthApplicationId spelled either way, lower-cased. */
  assert_string_equal(field(r, "appId"), APP);
  assert_true(json_is_true(json_object_get(r, "moveEnabled")));
  caps = json_object_get(r, "capabilities");
  assert_int_equal(json_array_size(caps), 2);
  assert_string_equal(json_string_value(json_array_get(caps, 0)), "Inbound");
  assert_string_equal(json_string_value(json_array_get(caps, 1)),
                      "RemoteOutbound");
  /* Flags absent are false; no app id means no "appId". */
  r = json_array_get(rels, 1);
  assert_false(json_is_true(json_object_get(r, "moveEnabled")));
  assert_null(json_object_get(r, "appId"));
  assert_int_equal(json_array_size(json_object_get(r, "capabilities")), 0);
  json_decref(rels);
}

/* The capability as a set: any order, any case, spaces, a list form,
 * None, and a name Exchange does not have kept as written. */
static void
test_capability_set(void **state)
{
  static const struct {
    const char *text;
    const char *want;
  } cases[] = {
      {"Inbound", "Inbound"},
      {"RemoteOutbound,Inbound", "Inbound|RemoteOutbound"},
      {" remoteoutbound ,  INBOUND ", "Inbound|RemoteOutbound"},
      {"Inbound, RemoteOutbound, Inbound", "Inbound|RemoteOutbound"},
      {"None", ""},
      {"", ""},
      {"Outbound, RemoteInbound", "Outbound|RemoteInbound"},
      {"Inbound, Sideways", "Inbound|Sideways"},
  };
  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    json_t *rels = rels_of(relationships(cases[i].text, "OAuthApplicationId"));
    const json_t *caps =
                     json_object_get(json_array_get(rels, 0), "capabilities"),
                 *c;
    char got[256] = "";
    size_t j, n = 0;

    json_array_foreach(caps, j, c)
    {
      n += (size_t)snprintf(got + n, sizeof(got) - n, "%s%s", j ? "|" : "",
                            json_string_value(c));
    }
    assert_string_equal(got, cases[i].want);
    json_decref(rels);
  }
  /* A list of names (a serialisation of the flags as an array). */
  {
    json_t *raw =
        json_pack("[{s:s, s:[s,s]}]", "Name", "r", "MailboxMoveCapability",
                  "RemoteOutbound", "Inbound");
    json_t *rels = rels_of(raw);
    const json_t *caps =
        json_object_get(json_array_get(rels, 0), "capabilities");
    assert_int_equal(json_array_size(caps), 2);
    assert_string_equal(json_string_value(json_array_get(caps, 0)), "Inbound");
    json_decref(rels);
  }
}

static void
test_endpoints_and_test_answer(void **state)
{
  json_t *raw = json_pack(
      "[{s:s, s:s, s:s, s:s, s:s}, {s:s, s:s}]", "Identity", "Fabrikam",
      "RemoteServer", "outlook.office.com", "RemoteTenant",
      "fabrikam.onmicrosoft.com", "EndpointType", "ExchangeRemoteMove",
      "ApplicationId", "CCCCCCCC-3333-4333-8333-000000000003", "Name", "imap",
      "EndpointType", "IMAP");
  json_t *eps = NULL, *answer;
  char detail[128];

  (void)state;
  assert_int_equal(exo_endpoints(raw, &eps), 0);
  assert_int_equal(json_array_size(eps), 2);
  assert_string_equal(field(json_array_get(eps, 0), "name"), "Fabrikam");
  assert_string_equal(field(json_array_get(eps, 0), "appId"), APP);
  assert_string_equal(field(json_array_get(eps, 1), "name"), "imap");
  assert_null(json_object_get(json_array_get(eps, 1), "appId"));
  json_decref(raw);
  json_decref(eps);

  answer = json_pack("[{s:s}]", "Result", "Success");
  assert_int_equal(exo_availability(answer, detail, sizeof(detail)), 0);
  json_decref(answer);
  answer = json_pack("[{s:s, s:s, s:s}]", "Result", "Failed", "Message", "",
                     "ErrorDetail", "consent\nmissing");
  assert_int_equal(exo_availability(answer, detail, sizeof(detail)), 1);
  assert_string_equal(detail, "consent missing");
  json_decref(answer);
  answer = json_pack("[{s:s, s:s, s:n}]", "Result", "Failed", "Message",
                     "The connection could not be completed.", "ErrorDetail");
  assert_int_equal(exo_availability(answer, detail, sizeof(detail)), 1);
  assert_string_equal(detail, "The connection could not be completed.");
  json_decref(answer);
  answer = json_pack("[{s:s, s:s, s:s}]", "Result", "Failed", "Message",
                     "generic", "ErrorDetail", "MissingExchangeGuidException");
  assert_int_equal(exo_availability(answer, detail, sizeof(detail)), 1);
  assert_string_equal(detail, "MissingExchangeGuidException");
  json_decref(answer);
  answer = json_pack("[{}]");
  assert_int_equal(exo_availability(answer, detail, sizeof(detail)), -1);
  json_decref(answer);

  answer = json_pack("[{s:b}]", "IsDehydrated", 1);
  assert_int_equal(exo_org_dehydrated(answer), 1);
  json_decref(answer);
  answer = json_pack("[{s:s}]", "isdehydrated", "False");
  assert_int_equal(exo_org_dehydrated(answer), 0);
  json_decref(answer);
  answer = json_pack("[]");
  assert_int_equal(exo_org_dehydrated(answer), -1);
  json_decref(answer);
}

static json_t *
mailuser_raw(void)
{
  json_t *v = json_pack(
      "{s:s, s:s, s:s, s:[s,s,s,s], s:s, s:s, s:[s], s:b}",
      "ExternalDirectoryObjectId", "dddddddd-4444-4444-8444-000000000004",
      "RecipientTypeDetails", "MailUser", "PrimarySmtpAddress",
      "lara@contoso.com", "EmailAddresses", "SMTP:lara@contoso.com",
      "smtp:lara@contoso.onmicrosoft.com", "X500:" DN, OLD_X500,
      "ExchangeGuid", "0B7E4B1C-55E1-4F11-9A55-6A0E1D6C1A01", "ArchiveGuid",
      "00000000-0000-0000-0000-000000000000", "PersistedCapabilities",
      "ExchangeT2TMbxMove", "IsDirSynced", 0);
  assert_non_null(v);
  return v;
}

static json_t *
mailuser(void)
{
  json_t *raw = mailuser_raw(), *rec = NULL;

  assert_int_equal(exo_mailuser_record(raw, &rec), 0);
  json_decref(raw);
  return rec;
}

static void
test_mailuser_record(void **state)
{
  json_t *rec = mailuser(), *raw, *set = NULL;

  (void)state;
  assert_string_equal(field(rec, "id"),
                      "dddddddd-4444-4444-8444-000000000004");
  assert_string_equal(field(rec, "exchangeGuid"), GUID);
  /* The zero GUID is no archive. */
  assert_null(json_object_get(rec, "archiveGuid"));
  assert_int_equal(json_array_size(json_object_get(rec, "smtp")), 2);
  assert_int_equal(json_array_size(json_object_get(rec, "x500")), 2);
  assert_true(json_is_true(json_object_get(rec, "licensed")));
  json_decref(rec);

  raw = json_pack("{s:s}", "PrimarySmtpAddress", "x@contoso.com");
  assert_int_equal(exo_mailuser_record(raw, &rec), -1); /* no id */
  assert_null(rec);
  json_decref(raw);

  raw = json_pack("[{s:s, s:s}, {s:s}]", "ExternalDirectoryObjectId", "EEEE-1",
                  "PrimarySmtpAddress", "Lara@Fabrikam.com",
                  "PrimarySmtpAddress", "kim@fabrikam.com");
  assert_int_equal(exo_group_members(raw, &set), 0);
  assert_non_null(json_object_get(set, "eeee-1"));
  assert_non_null(json_object_get(set, "lara@fabrikam.com"));
  assert_non_null(json_object_get(set, "kim@fabrikam.com"));
  json_decref(raw);
  json_decref(set);
}

/* ---- the set-up checks ---- */

static void
test_org(void **state)
{
  json_t *checks = json_array();

  (void)state;
  assert_int_equal(migcheck_org(checks, "target", &target, 0), 0);
  assert_int_equal(migcheck_org(checks, "target", &target, 1), 0);
  assert_int_equal(migcheck_org(checks, "source", &source, -1), 0);
  assert_true(ok(at(checks, 0)));
  assert_string_equal(field(at(checks, 0), "subject"), "target contoso");
  assert_false(ok(at(checks, 1)));
  assert_string_equal(field(at(checks, 1), "fix"),
                      "in contoso: Enable-OrganizationCustomization");
  assert_false(ok(at(checks, 2)));
  assert_true(json_is_null(json_object_get(at(checks, 0), "fix")));
  json_decref(checks);
}

/* The target's relationship: its name in DomainNames is the source's
 * tenant id; Inbound read from a two-way value passes; a missing one is
 * fixed by adding it to what there is. */
static void
test_target_relationship(void **state)
{
  json_t *raw =
      json_pack("[{s:s, s:[s], s:b, s:b, s:s}]", "Name", "From Fabrikam",
                "DomainNames", SRC_ID, "Enabled", 1, "MailboxMoveEnabled", 1,
                "MailboxMoveCapability", "RemoteOutbound, Inbound");
  json_t *rels = rels_of(raw), *checks = json_array();
  const json_t *rel = migcheck_find_relationship(rels, SRC_ID);

  (void)state;
  assert_non_null(rel);
  assert_null(migcheck_find_relationship(rels, TGT_ID));
  assert_int_equal(migcheck_target_relationship(checks, &mlink, rel), 0);
  assert_int_equal(json_array_size(checks), 4);
  assert_int_equal(n_failed(checks), 0);
  json_decref(rels);
  json_decref(checks);

  raw = json_pack("[{s:s, s:[s], s:b, s:b, s:s}]", "Name", "It's",
                  "DomainNames", SRC_ID, "Enabled", 0, "MailboxMoveEnabled", 0,
                  "MailboxMoveCapability", "RemoteOutbound");
  rels = rels_of(raw);
  checks = json_array();
  assert_int_equal(
      migcheck_target_relationship(checks, &mlink,
                                   migcheck_find_relationship(rels, SRC_ID)),
      0);
  assert_int_equal(n_failed(checks), 3);
  assert_true(failed_with(
      checks, "Enabled",
      "in contoso: Set-OrganizationRelationship 'It''s' -Enabled:$true"));
  assert_true(
      failed_with(checks, "MailboxMoveEnabled", "-MailboxMoveEnabled:$true"));
  assert_true(failed_with(checks, "has Inbound",
                          "-MailboxMoveCapability 'Inbound, "
                          "RemoteOutbound'"));
  json_decref(rels);
  json_decref(checks);

  /* None names the source: one failure, the New- command as the fix. */
  checks = json_array();
  assert_int_equal(migcheck_target_relationship(checks, &mlink, NULL), 0);
  assert_int_equal(json_array_size(checks), 1);
  assert_true(
      failed_with(checks, "organization relationship for fabrikam",
                  "New-OrganizationRelationship 'fabrikam' "
                  "-Enabled:$true -MailboxMoveEnabled:$true "
                  "-MailboxMoveCapability Inbound -DomainNames " SRC_ID));
  json_decref(checks);
}

static json_t *
endpoints(const char *remote_tenant, const char *server, const char *type,
          const char *app)
{
  json_t *raw =
      json_pack("[{s:s, s:s, s:s}, {s:s, s:s, s:s, s:s?, s:s?}]", "Identity",
                "imap", "EndpointType", "IMAP", "RemoteServer", "imap.example",
                "Identity", "Fabrikam", "RemoteServer", server, "RemoteTenant",
                remote_tenant, "EndpointType", type, "ApplicationId", app);
  json_t *eps = NULL;

  assert_int_equal(exo_endpoints(raw, &eps), 0);
  json_decref(raw);
  return eps;
}

static void
test_endpoint(void **state)
{
  json_t *domains =
      json_pack("[s,s]", "fabrikam.onmicrosoft.com", "fabrikam.com");
  json_t *srel = json_pack("{s:s}", "appId", APP);
  json_t *eps = endpoints("Fabrikam.onmicrosoft.com", "outlook.office.com",
                          "ExchangeRemoteMove", APP);
  json_t *checks = json_array();
  const json_t *e = NULL;

  (void)state;
  assert_int_equal(migcheck_endpoint(checks, &mlink, eps, domains, srel, &e),
                   0);
  assert_non_null(e);
  assert_string_equal(field(e, "name"), "Fabrikam");
  assert_int_equal(json_array_size(checks), 4);
  assert_int_equal(n_failed(checks), 0);
  json_decref(eps);
  json_decref(checks);

  /* Wrong server, type, no app id: three failures, each with its fix. */
  eps = endpoints("fabrikam.onmicrosoft.com", "outlook.office365.com",
                  "ExchangeOutlookAnywhere", NULL);
  checks = json_array();
  assert_int_equal(migcheck_endpoint(checks, &mlink, eps, domains, srel, &e),
                   0);
  assert_non_null(e);
  assert_int_equal(n_failed(checks), 3);
  assert_true(failed_with(
      checks, "RemoteServer outlook.office.com",
      "Set-MigrationEndpoint 'Fabrikam' -RemoteServer outlook.office.com"));
  assert_true(failed_with(checks, "EndpointType ExchangeRemoteMove",
                          "-ExchangeRemoteMove:$true"));
  assert_true(failed_with(checks, "ApplicationId", "-ApplicationId " APP));
  json_decref(eps);
  json_decref(checks);

  /* Another tenant's endpoint, and an app id that is not the source's:
   * none is for this source. */
  eps =
      endpoints("northwind.onmicrosoft.com", "outlook.office.com",
                "ExchangeRemoteMove", "dddddddd-0000-4000-8000-000000000000");
  checks = json_array();
  assert_int_equal(migcheck_endpoint(checks, &mlink, eps, domains, srel, &e),
                   0);
  assert_null(e);
  assert_int_equal(json_array_size(checks), 1);
  assert_true(failed_with(checks, "migration endpoint for fabrikam",
                          "New-MigrationEndpoint -Name 'fabrikam' "
                          "-RemoteServer outlook.office.com -RemoteTenant "
                          "'fabrikam.onmicrosoft.com'"));
  json_decref(checks);

  /* The source's domains unknown: the app id finds it. */
  checks = json_array();
  json_decref(eps);
  eps =
      endpoints("elsewhere", "outlook.office.com", "ExchangeRemoteMove", APP);
  assert_int_equal(migcheck_endpoint(checks, &mlink, eps, NULL, srel, &e), 0);
  assert_non_null(e);
  json_decref(eps);
  json_decref(checks);

  /* Two for the source: the one with an application (here not the
   * source's) before the one without. */
  {
    json_t *raw = json_pack(
        "[{s:s, s:s, s:s}, {s:s, s:s, s:s, s:s}]", "Identity", "bare",
        "RemoteTenant", "fabrikam.onmicrosoft.com", "EndpointType",
        "ExchangeRemoteMove", "Identity", "with-app", "RemoteTenant",
        "fabrikam.onmicrosoft.com", "EndpointType", "ExchangeRemoteMove",
        "ApplicationId", "dddddddd-0000-4000-8000-000000000000");
    json_t *two = NULL;
    assert_int_equal(exo_endpoints(raw, &two), 0);
    checks = json_array();
    assert_int_equal(migcheck_endpoint(checks, &mlink, two, domains, srel, &e),
                     0);
    assert_string_equal(field(e, "name"), "with-app");
    json_decref(checks);
    json_decref(two);
    json_decref(raw);
  }
  /* Nothing known of the source (its reads failed): the endpoints are
   * judged on their own, the IMAP one never first. */
  eps =
      endpoints("elsewhere", "outlook.office.com", "ExchangeRemoteMove", APP);
  checks = json_array();
  assert_int_equal(migcheck_endpoint(checks, &mlink, eps, NULL, NULL, &e), 0);
  assert_string_equal(field(e, "name"), "Fabrikam");
  json_decref(checks);
  json_decref(eps);

  /* Other clouds name their own host. */
  assert_string_equal(migcheck_remote_server(CONFIG_CLOUD_GLOBAL),
                      "outlook.office.com");
  assert_string_equal(migcheck_remote_server(CONFIG_CLOUD_USGOVHIGH),
                      "outlook.office365.us");
  json_decref(domains);
  json_decref(srel);
}

static void
test_source_relationship(void **state)
{
  json_t *ep = json_pack("{s:s, s:s}", "name", "Fabrikam", "appId", APP);
  json_t *rels =
      rels_of(relationships("Inbound, RemoteOutbound", "OAuthApplicationId"));
  json_t *checks = json_array(), *raw;
  const json_t *rel = migcheck_find_relationship(rels, TGT_ID);

  (void)state;
  assert_non_null(rel);
  assert_int_equal(migcheck_source_relationship(checks, &mlink, rel, ep), 0);
  assert_int_equal(json_array_size(checks), 5);
  assert_int_equal(n_failed(checks), 0);
  assert_string_equal(field(at(checks, 4), "subject"), "source fabrikam");
  json_decref(rels);
  json_decref(checks);

  /* Inbound only, another app, no scope. */
  raw = json_pack("[{s:s, s:[s], s:b, s:s, s:s, s:[]}]", "Name", "To Contoso",
                  "DomainNames", TGT_ID, "MailboxMoveEnabled", 1,
                  "MailboxMoveCapability", "Inbound", "OAuthApplicationId",
                  "dddddddd-0000-4000-8000-000000000000",
                  "MailboxMovePublishedScopes");
  rels = rels_of(raw);
  checks = json_array();
  assert_int_equal(migcheck_source_relationship(checks, &mlink,
                                                json_array_get(rels, 0), ep),
                   0);
  assert_int_equal(n_failed(checks), 3);
  assert_true(failed_with(checks, "has RemoteOutbound",
                          "in fabrikam: Set-OrganizationRelationship 'To "
                          "Contoso' -MailboxMoveCapability 'Inbound, "
                          "RemoteOutbound'"));
  assert_true(
      failed_with(checks, "OAuthApplicationId", "-OAuthApplicationId " APP));
  assert_true(failed_with(checks, "MailboxMovePublishedScopes",
                          "-MailboxMovePublishedScopes"));
  json_decref(checks);

  /* The endpoint not known: only that it has an app id is checked. */
  checks = json_array();
  assert_int_equal(migcheck_source_relationship(checks, &mlink,
                                                json_array_get(rels, 0), NULL),
                   0);
  assert_int_equal(n_failed(checks), 2);
  json_decref(checks);

  checks = json_array();
  assert_int_equal(migcheck_source_relationship(checks, &mlink, NULL, ep), 0);
  assert_true(failed_with(checks, "organization relationship for contoso",
                          "-MailboxMoveCapability RemoteOutbound "
                          "-DomainNames " TGT_ID " -OAuthApplicationId " APP));
  json_decref(checks);
  json_decref(rels);
  json_decref(ep);
}

/* ---- one person ---- */

static json_t *
source_record(void)
{
  json_t *r =
      json_pack("{s:s, s:s, s:s, s:s, s:s, s:[s], s:[], s:b}", "id",
                "eeeeeeee-5555-4555-8555-000000000005", "exchangeGuid", GUID,
                "legacyDN", DN, "primary", "lara@fabrikam.com", "alias",
                "lara", "x500", OLD_X500, "holds", "licensed", 0);
  assert_non_null(r);
  return r;
}

struct env_fixture {
  json_t *accepted, *members;
  struct migration_target target;
  struct migcheck_env env;
};

static void
env_init(struct env_fixture *f)
{
  f->accepted = json_pack("[s,s]", "contoso.com", "contoso.onmicrosoft.com");
  f->members = json_pack("{s:b}", "eeeeeeee-5555-4555-8555-000000000005", 1);
  f->target.initial = "contoso.onmicrosoft.com";
  f->target.accepted = f->accepted;
  f->env.link = &mlink;
  f->env.target = &f->target;
  f->env.members = f->members;
  f->env.scope = "Movers";
}

static void
env_clear(struct env_fixture *f)
{
  json_decref(f->accepted);
  json_decref(f->members);
}

/* The whats of a person's missing list, joined with '|'. */
static void
whats(const json_t *missing, char *buf, size_t len)
{
  const json_t *m;
  size_t i, n = 0;

  buf[0] = '\0';
  json_array_foreach((json_t *)missing, i, m)
  {
    n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s", i ? "|" : "",
                          field(m, "what"));
  }
}

static void
test_user_ready(void **state)
{
  struct env_fixture f;
  json_t *rec = source_record(), *mu = mailuser(), *missing = json_array();
  struct exo_user_state st = {.type = "MailUser"};

  (void)state;
  env_init(&f);
  assert_int_equal(migcheck_user(&f.env, rec, mu, &st, missing), 0);
  assert_int_equal(json_array_size(missing), 0);
  json_decref(missing);
  /* Membership by address counts too; unknown members are not checked. */
  json_object_clear(f.members);
  json_object_set_new(f.members, "lara@fabrikam.com", json_true());
  missing = json_array();
  assert_int_equal(migcheck_user(&f.env, rec, mu, NULL, missing), 0);
  assert_int_equal(json_array_size(missing), 0);
  json_decref(missing);
  f.env.members = NULL;
  json_object_clear(f.members);
  missing = json_array();
  assert_int_equal(migcheck_user(&f.env, rec, mu, NULL, missing), 0);
  assert_int_equal(json_array_size(missing), 0);
  json_decref(missing);
  json_decref(rec);
  json_decref(mu);
  env_clear(&f);
}

/* A change to the source record or the target MailUser, and what the
 * person then misses (the whats, joined) with a word of its fix. */
static void
test_user_missing(void **state)
{
  static const struct {
    const char *name;
    const char *rec_key; /* set on the record (JSON text), or NULL */
    const char *rec_json;
    const char *mu_key; /* set on the MailUser, or NULL */
    const char *mu_json;
    const char *want;
    const char *fix;
  } cases[] = {
      {"guid missing", NULL, NULL, "exchangeGuid", "null",
       "ExchangeGuid missing on the target",
       "galbridge sync --link f-to-c writes it again (or in contoso: "
       "Set-MailUser <its target> -ExchangeGuid <the source mailbox's "
       "ExchangeGuid>); if it stays, galbridge status shows why the copy is "
       "refused"},
      {"guid differs", NULL, NULL, "exchangeGuid",
       "\"11111111-1111-4111-8111-111111111111\"",
       "ExchangeGuid 11111111-1111-4111-8111-111111111111 on the target is "
       "not the source's " GUID,
       "-ExchangeGuid <the source mailbox's ExchangeGuid>"},
      {"archive missing", "archiveGuid", "\"" ARCHIVE "\"", NULL, NULL,
       "ArchiveGuid missing on the target (the source has an archive)",
       "-ArchiveGuid <the source archive's ArchiveGuid>"},
      {"archive differs", "archiveGuid", "\"" ARCHIVE "\"", "archiveGuid",
       "\"" GUID "\"",
       "ArchiveGuid " GUID " on the target is not the source's " ARCHIVE,
       "-ArchiveGuid"},
      {"archive stale", NULL, NULL, "archiveGuid", "\"" ARCHIVE "\"",
       "ArchiveGuid " ARCHIVE " on the target while the source has no "
       "archive",
       "enable it again"},
      {"legacy dn x500", NULL, NULL, "x500", "[\"" OLD_X500 "\"]",
       "X500 address of the source's LegacyExchangeDN missing",
       "-EmailAddresses @{add='X500:<the source's value>'}"},
      {"other x500", NULL, NULL, "x500", "[\"x500:" DN "\"]",
       "1 of the source's X500 addresses missing", "@{add='X500:"},
      {"foreign smtp", NULL, NULL, "smtp",
       "[\"lara@contoso.com\", \"lara@contoso.onmicrosoft.com\", "
       "\"lara@fabrikam.com\"]",
       "address lara@fabrikam.com is in a domain contoso does not accept",
       "in contoso: Set-MailUser <its target> -EmailAddresses "
       "@{remove='smtp:<that address>'}"},
      {"no initial", NULL, NULL, "smtp", "[\"lara@contoso.com\"]",
       "no address in contoso's initial domain contoso.onmicrosoft.com",
       "@{add='smtp:<its alias>@<the initial domain>'}"},
      {"holds", "holds", "[\"LitigationHold\", \"InPlaceHold\"]", NULL, NULL,
       "on hold in the source: LitigationHold, InPlaceHold",
       "release every hold"},
      {"not in scope", "id", "\"ffffffff-0000-4000-8000-000000000000\"", NULL,
       NULL, "not a member of the published-scope group Movers",
       "in fabrikam: Add-DistributionGroupMember -Identity 'Movers'"},
      {"no licence", NULL, NULL, "licensed", "false",
       "no Cross Tenant User Data Migration licence (on the source mailbox "
       "or the target MailUser)",
       "Cross Tenant User Data Migration licence to the user in fabrikam or "
       "in contoso"},
      {"licence on the source", "licensed", "true", "licensed", "false", "",
       NULL},
      {"dir synced", NULL, NULL, "dirSynced", "true",
       "the target object is synchronised from on-premises",
       "msExchMailboxGuid"},
      {"bad record", "bad", "\"its ExchangeGuid is not a GUID\"", NULL, NULL,
       "its source mailbox is refused: its ExchangeGuid is not a GUID",
       "correct the source mailbox in fabrikam"},
  };
  struct env_fixture f;

  (void)state;
  env_init(&f);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    json_t *rec = source_record(), *mu = mailuser(), *missing = json_array();
    char got[2048];

    if (cases[i].rec_key != NULL)
      json_object_set_new(
          rec, cases[i].rec_key,
          json_loads(cases[i].rec_json, JSON_DECODE_ANY, NULL));
    if (cases[i].mu_key != NULL) {
      json_t *v = json_loads(cases[i].mu_json, JSON_DECODE_ANY, NULL);
      if (json_is_null(v))
        json_object_del(mu, cases[i].mu_key);
      else
        json_object_set(mu, cases[i].mu_key, v);
      json_decref(v);
    }
    assert_int_equal(migcheck_user(&f.env, rec, mu, NULL, missing), 0);
    whats(missing, got, sizeof(got));
    if (strcmp(got, cases[i].want) != 0)
      fail_msg("%s: got \"%s\"", cases[i].name, got);
    if (cases[i].fix != NULL &&
        strstr(field(json_array_get(missing, 0), "fix"), cases[i].fix) == NULL)
      fail_msg("%s: fix \"%s\"", cases[i].name,
               field(json_array_get(missing, 0), "fix"));
    json_decref(rec);
    json_decref(mu);
    json_decref(missing);
  }
  env_clear(&f);
}

/* A target object that may not be stamped is that, and nothing is
 * compared on it; the source side still is. No MailUser at all is the
 * copy missing. */
static void
test_user_target_refused(void **state)
{
  static const struct {
    struct exo_user_state st;
    const char *want;
    const char *fix;
  } cases[] = {
      {{.type = "MailUser", .licensed = 1},
       "the target object is licensed",
       "remove its licences"},
      {{.type = "MailUser", .previous = "UserMailbox"},
       "the target object had a mailbox (UserMailbox)",
       "PermanentlyClearPreviousMailboxInfo"},
      {{.type = "UserMailbox"},
       "the target object is a UserMailbox, not a MailUser",
       "already has a mailbox"},
      {{.type = "MailUser", .dir_synced = 1},
       "the target object is synchronised from on-premises",
       "on-premises"},
  };
  struct env_fixture f;
  json_t *rec = source_record(), *mu = mailuser(), *missing;
  char got[1024];

  (void)state;
  env_init(&f);
  json_object_set_new(rec, "holds", json_pack("[s]", "DelayHold"));
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    missing = json_array();
    json_object_del(mu, "exchangeGuid"); /* not compared */
    assert_int_equal(migcheck_user(&f.env, rec, mu, &cases[i].st, missing), 0);
    whats(missing, got, sizeof(got));
    assert_int_equal(json_array_size(missing), 2);
    assert_string_equal(field(json_array_get(missing, 0), "what"),
                        cases[i].want);
    assert_non_null(
        strstr(field(json_array_get(missing, 0), "fix"), cases[i].fix));
    assert_string_equal(field(json_array_get(missing, 1), "what"),
                        "on hold in the source: DelayHold");
    json_decref(missing);
  }
  missing = json_array();
  assert_int_equal(migcheck_user(&f.env, rec, NULL, NULL, missing), 0);
  whats(missing, got, sizeof(got));
  assert_string_equal(got, "no target MailUser carries its anchor|"
                           "on hold in the source: DelayHold");
  json_decref(missing);
  json_decref(rec);
  json_decref(mu);
  env_clear(&f);
}

/* One fix text per kind of failure, the same for every person. */
static void
test_user_fix_shared(void **state)
{
  struct env_fixture f;
  json_t *a = source_record(), *b = source_record(), *mu = mailuser();
  json_t *ma = json_array(), *mb = json_array();

  (void)state;
  env_init(&f);
  json_object_set_new(b, "primary", json_string("kim@fabrikam.com"));
  json_object_set_new(a, "id", json_string("x"));
  json_object_set_new(b, "id", json_string("y"));
  assert_int_equal(migcheck_user(&f.env, a, mu, NULL, ma), 0);
  assert_int_equal(migcheck_user(&f.env, b, mu, NULL, mb), 0);
  assert_int_equal(json_array_size(ma), 1);
  assert_string_equal(field(json_array_get(ma, 0), "fix"),
                      field(json_array_get(mb, 0), "fix"));
  json_decref(a);
  json_decref(b);
  json_decref(mu);
  json_decref(ma);
  json_decref(mb);
  env_clear(&f);
}

static void
test_refused(void **state)
{
  (void)state;
  assert_true(migcheck_refused(403, "", ""));
  assert_true(migcheck_refused(401, "", "Get-MailUser: HTTP 401"));
  assert_true(migcheck_refused(
      400, "System.Management.Automation.CommandNotFoundException", ""));
  assert_true(migcheck_refused(
      400, "",
      "Get-Mailbox: HTTP 400: User is not allowed to call Get-Mailbox"));
  assert_false(migcheck_refused(404,
                                "Microsoft.Exchange.Configuration.Tasks."
                                "ManagementObjectNotFoundException",
                                "not found"));
  assert_false(migcheck_refused(503, NULL, NULL));
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_relationships),
      cmocka_unit_test(test_capability_set),
      cmocka_unit_test(test_endpoints_and_test_answer),
      cmocka_unit_test(test_mailuser_record),
      cmocka_unit_test(test_org),
      cmocka_unit_test(test_target_relationship),
      cmocka_unit_test(test_endpoint),
      cmocka_unit_test(test_source_relationship),
      cmocka_unit_test(test_user_ready),
      cmocka_unit_test(test_user_missing),
      cmocka_unit_test(test_user_target_refused),
      cmocka_unit_test(test_user_fix_shared),
      cmocka_unit_test(test_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
