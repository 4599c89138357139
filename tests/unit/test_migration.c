/*
 * Unit tests for the migration module (what a ready MailUser carries,
 * which target objects are never stamped) and for the exo helpers that
 * give it its inputs: a source mailbox's record from a Get-Mailbox result,
 * a target object's state from Get-User, the accepted domains.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "exo.h"
#include "migration.h"

#define GUID "0b7e4b1c-55e1-4f11-9a55-6a0e1d6c1a01"
#define ARCHIVE "1c8f5c2d-66f2-4022-8b66-7b1f2e7d2b02"
#define DN                                                                    \
  "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/"       \
  "cn=Recipients/cn=0b7e4b1c55e14f119a556a0e1d6c1a01-lara"

/* A Get-Mailbox result as Exchange gives it (the properties asked for). */
static json_t *
mailbox_json(void)
{
  return json_pack(
      "{s:s, s:s, s:s, s:s, s:[s,s,s,s], s:s, s:s, s:s, s:s, s:b, s:[], "
      "s:b, s:b, s:b, s:[s], s:s}",
      "ExternalDirectoryObjectId", "5d0b1e0e-1111-4a4a-8b8b-000000000001",
      "Alias", "lara", "PrimarySmtpAddress", "lara@contoso.com",
      "RecipientTypeDetails", "UserMailbox", "EmailAddresses",
      "SMTP:lara@contoso.com", "smtp:lara@contoso.onmicrosoft.com",
      "x500:/o=First Organization/ou=Old/cn=Recipients/cn=lara",
      "SIP:lara@contoso.com", "ExchangeGuid",
      "0B7E4B1C-55E1-4F11-9A55-"
      "6A0E1D6C1A01",
      "ArchiveGuid", ARCHIVE, "ArchiveStatus", "Active", "LegacyExchangeDN",
      DN, "LitigationHoldEnabled", 1, "InPlaceHolds", "DelayHoldApplied", 0,
      "DelayReleaseHoldApplied", 0, "ComplianceTagHoldApplied", 0,
      "PersistedCapabilities", "ExchangeT2TMbxMove", "WhenChangedUTC",
      "2026-12-07T09:55:00Z");
}

static json_t *
record(void)
{
  json_t *m = mailbox_json(), *rec = NULL;
  char err[256];

  assert_int_equal(exo_mailbox_record(m, &rec, err, sizeof(err)), 0);
  json_decref(m);
  return rec;
}

static void
test_mailbox_record(void **state)
{
  json_t *rec = record();
  json_t *x500 = json_object_get(rec, "x500");

  (void)state;
  assert_string_equal(json_string_value(json_object_get(rec, "exchangeGuid")),
                      GUID);
  assert_string_equal(json_string_value(json_object_get(rec, "archiveGuid")),
                      ARCHIVE);
  assert_string_equal(json_string_value(json_object_get(rec, "legacyDN")), DN);
  assert_string_equal(json_string_value(json_object_get(rec, "initial")),
                      "lara@contoso.onmicrosoft.com");
  /* The X500 address kept as written, behind "X500:"; SIP and SMTP not. */
  assert_int_equal(json_array_size(x500), 1);
  assert_string_equal(json_string_value(json_array_get(x500, 0)),
                      "X500:/o=First Organization/ou=Old/cn=Recipients/"
                      "cn=lara");
  assert_true(json_is_true(json_object_get(rec, "licensed")));
  assert_int_equal(json_array_size(json_object_get(rec, "holds")), 1);
  assert_string_equal(
      json_string_value(json_array_get(json_object_get(rec, "holds"), 0)),
      "LitigationHold");
  json_decref(rec);
}

/* A disabled archive's leftover GUID is not an archive. */
static void
test_mailbox_record_no_archive(void **state)
{
  json_t *m = mailbox_json(), *rec = NULL;
  char err[256];

  (void)state;
  json_object_set_new(m, "ArchiveStatus", json_string("None"));
  assert_int_equal(exo_mailbox_record(m, &rec, err, sizeof(err)), 0);
  assert_null(json_object_get(rec, "archiveGuid"));
  json_decref(rec);
  json_decref(m);
}

/* Values a source admin could write that must not reach a target: each
 * refuses the mailbox (that person alone). */
static void
test_mailbox_record_hostile(void **state)
{
  static const struct {
    const char *key, *value;
    const char *why;
  } cases[] = {
      {"ExchangeGuid", "not-a-guid", "ExchangeGuid"},
      {"ExchangeGuid", "00000000-0000-0000-0000-000000000000", "ExchangeGuid"},
      {"LegacyExchangeDN", "cn=no-org", "LegacyExchangeDN"},
      {"LegacyExchangeDN", "/o=Org\r\nX-Injected: 1", "LegacyExchangeDN"},
      {"Alias", "a@b", "alias"},
      {"PrimarySmtpAddress", "no-at-sign", "primary"},
      {"ArchiveGuid", "00000000-0000-0000-0000-000000000000", "archive"},
  };
  char err[256];

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    json_t *m = mailbox_json(), *rec = (json_t *)1;
    json_object_set_new(m, cases[i].key, json_string(cases[i].value));
    assert_int_equal(exo_mailbox_record(m, &rec, err, sizeof(err)), -1);
    assert_null(rec);
    assert_non_null(strstr(err, cases[i].why));
    json_decref(m);
  }
  {
    /* Too many X500 addresses, and one with a control character. */
    json_t *m = mailbox_json(), *rec = NULL;
    json_t *list = json_object_get(m, "EmailAddresses");
    for (int k = 0; k < EXO_X500_MAX + 1; k++)
      json_array_append_new(list, json_sprintf("X500:/o=o/cn=%d", k));
    assert_int_equal(exo_mailbox_record(m, &rec, err, sizeof(err)), -1);
    json_decref(m);
    m = mailbox_json();
    json_array_append_new(json_object_get(m, "EmailAddresses"),
                          json_string("X500:/o=o/cn=a\tb"));
    assert_int_equal(exo_mailbox_record(m, &rec, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "X500"));
    json_decref(m);
  }
}

static const struct migration_target *
target(enum config_migration_external external)
{
  static json_t *accepted;
  static struct migration_target t;

  if (accepted == NULL)
    accepted = json_pack("[s,s]", "fabrikam.onmicrosoft.com", "fabrikam.com");
  t.initial = "fabrikam.onmicrosoft.com";
  t.accepted = accepted;
  t.external = external;
  return &t;
}

static void
assert_list(const json_t *list, const char *const *want)
{
  size_t n = 0;

  while (want[n] != NULL) {
    assert_non_null(json_array_get(list, n));
    assert_string_equal(json_string_value(json_array_get(list, n)), want[n]);
    n++;
  }
  assert_int_equal(json_array_size(list), n);
}

/* Every stamp, the foreign addresses left out, the mapping's extra one in
 * an accepted domain kept, duplicates merged without case. */
static void
test_desired(void **state)
{
  json_t *rec = record();
  json_t *desired = json_pack(
      "{s:s, s:s, s:s, s:[s,s,s,s]}", "DisplayName", "Lara N", "Alias",
      "laran", "ExternalEmailAddress", "lara@contoso.com", "EmailAddresses",
      "lara@contoso.com", "smtp:Lara.N@Fabrikam.com", "x500:/o=mapped/cn=x",
      "LaraN@fabrikam.onmicrosoft.com");
  static const char *const want[] = {
      "SMTP:laran@fabrikam.onmicrosoft.com",
      "smtp:Lara.N@Fabrikam.com",
      "X500:" DN,
      "X500:/o=First Organization/ou=Old/cn=Recipients/cn=lara",
      NULL,
  };
  char err[256];

  (void)state;
  assert_int_equal(
      migration_desired(rec, target(0), desired, err, sizeof(err)), 0);
  assert_string_equal(
      json_string_value(json_object_get(desired, "ExchangeGuid")), GUID);
  assert_string_equal(
      json_string_value(json_object_get(desired, "ArchiveGuid")), ARCHIVE);
  assert_string_equal(
      json_string_value(json_object_get(desired, "ExternalEmailAddress")),
      "lara@contoso.com");
  /* The primary (no PrimarySmtpAddress mapped) is the initial-domain
   * address, so that one is not listed twice. */
  assert_list(json_object_get(desired, "ProxyAddresses"), want);
  assert_null(json_object_get(desired, "EmailAddresses"));
  assert_string_equal(
      json_string_value(json_object_get(desired, "DisplayName")), "Lara N");
  json_decref(desired);
  json_decref(rec);
}

/* A primary from the mapping, the external address in the source's
 * initial domain, no archive: no ArchiveGuid. */
static void
test_desired_primary_initial(void **state)
{
  json_t *m = mailbox_json(), *rec = NULL;
  json_t *desired = json_pack("{s:s}", "PrimarySmtpAddress",
                              "smtp:lara.newton@fabrikam.com");
  static const char *const want[] = {
      "SMTP:lara.newton@fabrikam.com",
      "smtp:lara@fabrikam.onmicrosoft.com",
      "X500:" DN,
      "X500:/o=First Organization/ou=Old/cn=Recipients/cn=lara",
      NULL,
  };
  char err[256];

  (void)state;
  json_object_set_new(m, "ArchiveStatus", json_string("None"));
  assert_int_equal(exo_mailbox_record(m, &rec, err, sizeof(err)), 0);
  assert_int_equal(
      migration_desired(rec, target(1), desired, err, sizeof(err)), 0);
  assert_null(json_object_get(desired, "ArchiveGuid"));
  assert_null(json_object_get(desired, "PrimarySmtpAddress"));
  assert_string_equal(
      json_string_value(json_object_get(desired, "ExternalEmailAddress")),
      "lara@contoso.onmicrosoft.com");
  assert_list(json_object_get(desired, "ProxyAddresses"), want);
  json_decref(desired);
  json_decref(rec);
  json_decref(m);
}

/* The mapping's sign-in name is kept in an accepted domain of the target,
 * dropped when it maps to nothing, and refuses the person in any other
 * domain (or with a type prefix). */
static void
test_desired_sign_in_name(void **state)
{
  static const char *const refused[] = {"lara@partner.example",
                                        "smtp:lara@fabrikam.com", "lara"};
  json_t *rec = record(), *desired;
  char err[256];

  (void)state;
  desired = json_pack("{s:s}", "MicrosoftOnlineServicesID",
                      "Lara.Newton@Fabrikam.com");
  assert_int_equal(
      migration_desired(rec, target(0), desired, err, sizeof(err)), 0);
  assert_string_equal(
      json_string_value(json_object_get(desired, "MicrosoftOnlineServicesID")),
      "Lara.Newton@Fabrikam.com");
  json_decref(desired);
  desired = json_pack("{s:s}", "MicrosoftOnlineServicesID", "");
  assert_int_equal(
      migration_desired(rec, target(0), desired, err, sizeof(err)), 0);
  assert_null(json_object_get(desired, "MicrosoftOnlineServicesID"));
  json_decref(desired);
  for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
    desired = json_pack("{s:s}", "MicrosoftOnlineServicesID", refused[i]);
    assert_int_equal(
        migration_desired(rec, target(0), desired, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "MicrosoftOnlineServicesID"));
    assert_non_null(strstr(err, "accepted domain"));
    json_decref(desired);
  }
  json_decref(rec);
}

/* The same mailbox twice, its X500 addresses listed in another order:
 * the same attributes (the hash does not move). */
static void
test_desired_stable(void **state)
{
  json_t *a = mailbox_json(), *b = mailbox_json(), *ra, *rb;
  json_t *da = json_object(), *db = json_object();
  char err[256];

  (void)state;
  json_array_append_new(json_object_get(a, "EmailAddresses"),
                        json_string("X500:/o=z/cn=1"));
  json_array_insert_new(json_object_get(b, "EmailAddresses"), 0,
                        json_string("X500:/o=z/cn=1"));
  assert_int_equal(exo_mailbox_record(a, &ra, err, sizeof(err)), 0);
  assert_int_equal(exo_mailbox_record(b, &rb, err, sizeof(err)), 0);
  assert_int_equal(migration_desired(ra, target(0), da, err, sizeof(err)), 0);
  assert_int_equal(migration_desired(rb, target(0), db, err, sizeof(err)), 0);
  assert_true(json_equal(da, db));
  json_decref(a);
  json_decref(b);
  json_decref(ra);
  json_decref(rb);
  json_decref(da);
  json_decref(db);
}

/* Each failure leaves `desired` as it was, with a reason. */
static void
test_desired_refused(void **state)
{
  json_t *rec = record(), *desired, *copy, *bad;
  char err[256];

  (void)state;
  desired = json_pack("{s:s}", "PrimarySmtpAddress", "lara@contoso.com");
  copy = json_deep_copy(desired);
  assert_int_equal(
      migration_desired(rec, target(0), desired, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "not in an accepted domain"));
  assert_true(json_equal(desired, copy));
  json_decref(desired);
  json_decref(copy);

  json_object_del(rec, "initial");
  desired = json_object();
  assert_int_equal(
      migration_desired(rec, target(1), desired, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "onmicrosoft.com"));
  assert_int_equal(json_object_size(desired), 0);
  json_decref(desired);

  bad = json_pack("{s:s}", "bad", "its ExchangeGuid is not a GUID");
  desired = json_object();
  assert_int_equal(
      migration_desired(bad, target(0), desired, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "ExchangeGuid"));
  json_decref(desired);
  json_decref(bad);
  json_decref(rec);
}

static void
test_accepted(void **state)
{
  (void)state;
  assert_true(migration_accepted(target(0), "a@FABRIKAM.com"));
  assert_true(
      migration_accepted(target(0), "smtp:a@fabrikam.onmicrosoft.com"));
  assert_false(migration_accepted(target(0), "a@contoso.com"));
  assert_false(migration_accepted(target(0), "a@sub.fabrikam.com"));
  assert_false(migration_accepted(target(0), "fabrikam.com"));
  assert_false(migration_accepted(target(0), "a@"));
  assert_false(migration_accepted(target(0), NULL));
}

static void
test_target_refused(void **state)
{
  struct exo_user_state st;
  json_t *u;
  char why[512];

  (void)state;
  u = json_pack("{s:s, s:s, s:b, s:b}", "RecipientTypeDetails", "MailUser",
                "PreviousRecipientTypeDetails", "None", "SKUAssigned", 0,
                "IsDirSynced", 0);
  assert_int_equal(exo_user_state(u, &st), 0);
  assert_int_equal(migration_target_refused(&st, why, sizeof(why)), 0);

  json_object_set_new(u, "SKUAssigned", json_true());
  assert_int_equal(exo_user_state(u, &st), 0);
  assert_int_equal(migration_target_refused(&st, why, sizeof(why)), 1);
  assert_non_null(strstr(why, "licensed"));

  json_object_set_new(u, "SKUAssigned", json_false());
  json_object_set_new(u, "PreviousRecipientTypeDetails",
                      json_string("UserMailbox"));
  assert_int_equal(exo_user_state(u, &st), 0);
  assert_int_equal(migration_target_refused(&st, why, sizeof(why)), 1);
  assert_non_null(strstr(why, "PermanentlyClearPreviousMailboxInfo"));
  assert_non_null(strstr(why, "never runs it"));

  json_object_set_new(u, "PreviousRecipientTypeDetails", json_string("None"));
  json_object_set_new(u, "RecipientTypeDetails", json_string("UserMailbox"));
  assert_int_equal(exo_user_state(u, &st), 0);
  assert_int_equal(migration_target_refused(&st, why, sizeof(why)), 1);
  assert_non_null(strstr(why, "already has a mailbox"));

  json_object_set_new(u, "RecipientTypeDetails", json_string("MailUser"));
  json_object_set_new(u, "IsDirSynced", json_true());
  assert_int_equal(exo_user_state(u, &st), 0);
  assert_int_equal(migration_target_refused(&st, why, sizeof(why)), 1);
  assert_non_null(strstr(why, "on-premises"));

  json_object_del(u, "RecipientTypeDetails");
  assert_int_equal(exo_user_state(u, &st), -1);
  json_decref(u);
}

static void
test_accepted_domains(void **state)
{
  json_t *v = json_pack("[{s:s, s:b}, {s:s, s:b}, {s:s}, {s:i}]", "DomainName",
                        "Fabrikam.com", "InitialDomain", 0, "DomainName",
                        "fabrikam.onmicrosoft.com", "InitialDomain", 1,
                        "DomainName", "bad domain", "DomainName", 3);
  json_t *domains = NULL;
  char *initial = NULL;

  (void)state;
  assert_int_equal(exo_accepted_domains(v, &domains, &initial), 0);
  assert_string_equal(initial, "fabrikam.onmicrosoft.com");
  assert_int_equal(json_array_size(domains), 2);
  assert_string_equal(json_string_value(json_array_get(domains, 0)),
                      "fabrikam.com");
  free(initial);
  json_decref(domains);
  /* None marked initial: refused. */
  json_array_remove(v, 1);
  assert_int_equal(exo_accepted_domains(v, &domains, &initial), -1);
  assert_null(domains);
  assert_null(initial);
  json_decref(v);
}

/* What the target shows against what was applied: case and order do
 * not matter; a missing X500, a changed GUID, a primary moved or an
 * address added do. */
static void
test_stamps_differ(void **state)
{
  json_t *applied =
      json_pack("{s:s, s:s, s:[s,s,s]}", "ExchangeGuid", GUID, "ArchiveGuid",
                ARCHIVE, "ProxyAddresses", "SMTP:lara@fabrikam.com",
                "smtp:lara@fabrikam.onmicrosoft.com", "X500:" DN);
  json_t *r =
      json_pack("{s:s, s:s, s:[s,s,s]}", "ExchangeGuid",
                "0B7E4B1C-55E1-4F11-9A55-6A0E1D6C1A01", "ArchiveGuid", ARCHIVE,
                "EmailAddresses", "x500:" DN, "SMTP:Lara@Fabrikam.com",
                "smtp:lara@fabrikam.onmicrosoft.com");
  json_t *seen = NULL, *list;

  (void)state;
  assert_int_equal(exo_mailuser_stamps(r, &seen), 0);
  assert_string_equal(json_string_value(json_object_get(seen, "ExchangeGuid")),
                      GUID);
  assert_false(migration_stamps_differ(applied, seen));
  /* An X500 removed by hand. */
  list = json_object_get(seen, "ProxyAddresses");
  json_array_remove(list, 0);
  assert_true(migration_stamps_differ(applied, seen));
  json_array_append_new(list, json_string("X500:" DN));
  assert_false(migration_stamps_differ(applied, seen));
  /* An address added by hand. */
  json_array_append_new(list, json_string("smtp:extra@fabrikam.com"));
  assert_true(migration_stamps_differ(applied, seen));
  json_array_remove(list, json_array_size(list) - 1);
  /* The primary moved to another address. */
  json_array_set_new(list, 0, json_string("smtp:Lara@Fabrikam.com"));
  json_array_set_new(list, 1,
                     json_string("SMTP:lara@fabrikam.onmicrosoft.com"));
  assert_true(migration_stamps_differ(applied, seen));
  json_decref(seen);
  /* Another ExchangeGuid, or none (a zero GUID is none). */
  json_object_set_new(r, "ExchangeGuid",
                      json_string("00000000-0000-0000-0000-000000000000"));
  assert_int_equal(exo_mailuser_stamps(r, &seen), 0);
  assert_null(json_object_get(seen, "ExchangeGuid"));
  assert_true(migration_stamps_differ(applied, seen));
  json_decref(seen);
  /* Nothing applied: nothing to compare. */
  assert_int_equal(exo_mailuser_stamps(r, &seen), 0);
  list = json_object();
  assert_false(migration_stamps_differ(list, seen));
  json_decref(list);
  json_decref(seen);
  json_decref(r);
  json_decref(applied);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mailbox_record),
      cmocka_unit_test(test_mailbox_record_no_archive),
      cmocka_unit_test(test_mailbox_record_hostile),
      cmocka_unit_test(test_desired),
      cmocka_unit_test(test_desired_primary_initial),
      cmocka_unit_test(test_desired_sign_in_name),
      cmocka_unit_test(test_desired_stable),
      cmocka_unit_test(test_desired_refused),
      cmocka_unit_test(test_accepted),
      cmocka_unit_test(test_target_refused),
      cmocka_unit_test(test_accepted_domains),
      cmocka_unit_test(test_stamps_differ),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
