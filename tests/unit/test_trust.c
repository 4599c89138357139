/*
 * Unit tests for the cross-tenant access settings: graph_policy's
 * parsing (Microsoft's documented bodies in ../fakecloud/fixtures/xtap-*
 * and inline cases) and PATCH bodies, then trust.c's verdict and plan for
 * each combination: partner present or absent, the default allowing or
 * blocking, a list of users, automatic redemption inbound and outbound,
 * cross-tenant synchronization allowed, a side not read.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "graph_policy.h"
#include "trust.h"

#define SRC_ID "aaaaaaaa-1111-4111-8111-000000000001"
#define TGT_ID "bbbbbbbb-2222-4222-8222-000000000002"
#define FIXTURES "../fakecloud/fixtures/"

static const struct trust_names names = {.link = "c-to-f",
                                         .source = "contoso",
                                         .source_id = SRC_ID,
                                         .target = "fabrikam",
                                         .target_id = TGT_ID};

static json_t *
load(const char *name)
{
  char path[256];
  json_error_t e;
  json_t *j;

  snprintf(path, sizeof(path), FIXTURES "%s", name);
  j = json_load_file(path, 0, &e);
  if (j == NULL)
    fail_msg("%s: %s", path, e.text);
  return j;
}

static json_t *
parse(const char *text)
{
  json_error_t e;
  json_t *j = json_loads(text, JSON_DECODE_ANY, &e);

  if (j == NULL)
    fail_msg("bad test JSON: %s", e.text);
  return j;
}

#define ALLOW_ALL                                                             \
  "{\"usersAndGroups\":{\"accessType\":\"allowed\",\"targets\":[{\"target\":" \
  "\"AllUsers\",\"targetType\":\"user\"}]},\"applications\":{\"accessType\":" \
  "\"allowed\",\"targets\":[{\"target\":\"AllApplications\",\"targetType\":"  \
  "\"application\"}]}}"
#define BLOCK_ALL                                                             \
  "{\"usersAndGroups\":{\"accessType\":\"blocked\",\"targets\":[{\"target\":" \
  "\"AllUsers\",\"targetType\":\"user\"}]},\"applications\":{\"accessType\":" \
  "\"blocked\",\"targets\":[{\"target\":\"AllApplications\",\"targetType\":"  \
  "\"application\"}]}}"
#define ALLOW_GROUP                                                           \
  "{\"usersAndGroups\":{\"accessType\":\"allowed\",\"targets\":[{\"target\":" \
  "\"0b7e4b1c-55e1-4f11-9a55-6a0e1d6c1a01\",\"targetType\":\"group\"}]}}"

/* A tenant's settings: the service default, no partner. */
static struct graph_policy
nothing_set(void)
{
  struct graph_policy p = {0};
  json_t *d = load("xtap-default-get-response.json");
  char err[256];

  p.auto_inbound = p.auto_outbound = GRAPH_FLAG_NULL;
  p.sync_allowed = GRAPH_FLAG_NULL;
  assert_int_equal(graph_policy_parse_default(d, &p, err, sizeof(err)), 0);
  json_decref(d);
  return p;
}

static void
set_default(struct graph_policy *p, int inbound, const char *setting)
{
  json_t *j = parse(setting);
  char err[256];

  assert_int_equal(graph_policy_parse_b2b(
                       j, inbound ? &p->default_inbound : &p->default_outbound,
                       err, sizeof(err)),
                   0);
  json_decref(j);
}

static void
set_partner(struct graph_policy *p, const char *obj)
{
  json_t *j = parse(obj);
  char err[256];

  assert_int_equal(graph_policy_parse_partner(j, p, err, sizeof(err)), 0);
  json_decref(j);
}

/* The line whose text contains `needle`, or fail. */
static const struct trust_line *
line(const struct trust_line *lines, size_t n, const char *needle)
{
  for (size_t i = 0; i < n; i++) {
    if (strstr(lines[i].text, needle) != NULL)
      return &lines[i];
  }
  fail_msg("no line with \"%s\"", needle);
  return NULL;
}

static size_t
count(const struct trust_line *lines, size_t n, enum trust_level level)
{
  size_t k = 0;

  for (size_t i = 0; i < n; i++)
    k += lines[i].level == level;
  return k;
}

/* --- graph_policy --- */

static void
parse_documented_bodies(void **state)
{
  struct graph_policy p = nothing_set();
  json_t *j;
  char err[256];

  (void)state;
  /* The service default allows B2B collaboration both ways. */
  assert_int_equal(p.default_inbound.users, GRAPH_B2B_ALLOWED);
  assert_int_equal(p.default_outbound.users, GRAPH_B2B_ALLOWED);
  assert_non_null(strstr(p.default_inbound.applications, "AllApplications"));
  /* The documented partner: everything null but direct connect. */
  j = load("xtap-partner-get-response.json");
  assert_int_equal(graph_policy_parse_partner(j, &p, err, sizeof(err)), 0);
  json_decref(j);
  assert_true(p.partner);
  assert_int_equal(p.auto_inbound, GRAPH_FLAG_NULL);
  assert_int_equal(p.auto_outbound, GRAPH_FLAG_NULL);
  assert_int_equal(p.inbound.users, GRAPH_B2B_UNSET);
  assert_int_equal(p.sync_allowed, GRAPH_FLAG_NULL); /* no such key */
  /* The documented list with $expand: sync allowed. */
  j = load("xtap-partners-list-expand-response.json");
  assert_int_equal(graph_policy_parse_partner(
                       json_array_get(json_object_get(j, "value"), 0), &p, err,
                       sizeof(err)),
                   0);
  json_decref(j);
  assert_int_equal(p.sync_allowed, GRAPH_FLAG_TRUE);
  /* POST's 201 parses as well. */
  j = load("xtap-partner-post-response.json");
  assert_int_equal(graph_policy_parse_partner(j, &p, err, sizeof(err)), 0);
  json_decref(j);
}

static void
parse_settings_and_errors(void **state)
{
  struct graph_policy p = nothing_set();
  struct graph_b2b_setting s;
  json_t *j;
  char err[256] = "";
  char big[3000];

  (void)state;
  set_partner(&p, "{\"tenantId\":\"" SRC_ID "\","
                  "\"automaticUserConsentSettings\":{\"inboundAllowed\":true,"
                  "\"outboundAllowed\":false},"
                  "\"b2bCollaborationInbound\":" BLOCK_ALL ","
                  "\"b2bCollaborationOutbound\":" ALLOW_GROUP ","
                  "\"identitySynchronization\":null}");
  assert_int_equal(p.auto_inbound, GRAPH_FLAG_TRUE);
  assert_int_equal(p.auto_outbound, GRAPH_FLAG_FALSE);
  assert_int_equal(p.inbound.users, GRAPH_B2B_BLOCKED);
  assert_int_equal(p.outbound.users, GRAPH_B2B_LISTED);
  assert_string_equal(p.outbound.applications, "");
  assert_int_equal(p.sync_allowed, GRAPH_FLAG_NULL);
  /* Blocked for a list: everyone else is allowed, so a list too. */
  j = parse("{\"usersAndGroups\":{\"accessType\":\"blocked\",\"targets\":"
            "[{\"target\":\"x\",\"targetType\":\"user\"}]}}");
  assert_int_equal(graph_policy_parse_b2b(j, &s, err, sizeof(err)), 0);
  assert_int_equal(s.users, GRAPH_B2B_LISTED);
  json_decref(j);
  /* Bad shapes are errors, not guesses. */
  j = parse("{\"usersAndGroups\":{\"accessType\":\"maybe\",\"targets\":[]}}");
  assert_int_equal(graph_policy_parse_b2b(j, &s, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "accessType"));
  json_decref(j);
  j = parse("\"allowed\"");
  assert_int_equal(graph_policy_parse_b2b(j, &s, err, sizeof(err)), -1);
  json_decref(j);
  j = parse("[1]");
  assert_int_equal(graph_policy_parse_partner(j, &p, err, sizeof(err)), -1);
  assert_int_equal(graph_policy_parse_default(j, &p, err, sizeof(err)), -1);
  json_decref(j);
  /* An applications list too long to keep is refused, not cut. */
  memset(big, 'a', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  j = json_pack("{s:{s:s,s:[{s:s,s:s}]}}", "applications", "accessType",
                "allowed", "targets", "target", big, "targetType",
                "application");
  assert_int_equal(graph_policy_parse_b2b(j, &s, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "too long"));
  json_decref(j);
}

static void
effective_setting(void **state)
{
  struct graph_policy p = nothing_set();
  int dflt;

  (void)state;
  set_default(&p, 1, BLOCK_ALL);
  /* No partner: the default. */
  assert_int_equal(graph_policy_effective(&p, 1, &dflt)->users,
                   GRAPH_B2B_BLOCKED);
  assert_true(dflt);
  /* A partner that leaves it null: still the default. */
  set_partner(&p, "{\"tenantId\":\"" SRC_ID "\"}");
  assert_int_equal(graph_policy_effective(&p, 1, &dflt)->users,
                   GRAPH_B2B_BLOCKED);
  assert_true(dflt);
  /* A partner's own setting wins. */
  set_partner(&p, "{\"tenantId\":\"" SRC_ID
                  "\",\"b2bCollaborationInbound\":" ALLOW_ALL "}");
  assert_int_equal(graph_policy_effective(&p, 1, &dflt)->users,
                   GRAPH_B2B_ALLOWED);
  assert_false(dflt);
  assert_int_equal(graph_policy_effective(&p, 0, &dflt)->users,
                   GRAPH_B2B_ALLOWED);
  assert_true(dflt);
}

static void
patch_bodies(void **state)
{
  struct graph_policy p = nothing_set();
  struct graph_policy_patch patch = {.set_auto = 1,
                                     .auto_inbound = GRAPH_FLAG_TRUE,
                                     .auto_outbound = GRAPH_FLAG_NULL};
  json_t *body;
  char *text;

  (void)state;
  body = graph_policy_patch_body(&patch);
  text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
  /* Both members; nothing else (never inboundTrust). */
  assert_string_equal(text, "{\"automaticUserConsentSettings\":{"
                            "\"inboundAllowed\":true,"
                            "\"outboundAllowed\":null}}");
  free(text);
  json_decref(body);
  /* Allowing B2B keeps the applications that applied. */
  set_default(&p, 0, BLOCK_ALL);
  patch = (struct graph_policy_patch){.allow_outbound = &p.default_outbound};
  body = graph_policy_patch_body(&patch);
  text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
  assert_string_equal(
      text, "{\"b2bCollaborationOutbound\":{\"applications\":{"
            "\"accessType\":\"blocked\",\"targets\":[{\"target\":"
            "\"AllApplications\",\"targetType\":\"application\"}]},"
            "\"usersAndGroups\":{\"accessType\":\"allowed\",\"targets\":[{"
            "\"target\":\"AllUsers\",\"targetType\":\"user\"}]}}}");
  free(text);
  json_decref(body);
}

/* --- the verdict --- */

static void
check_nothing_set(void **state)
{
  struct graph_policy t = nothing_set(), s = nothing_set();
  struct trust_line lines[TRUST_LINES_MAX];
  size_t n = trust_check(&names, &t, &s, lines, TRUST_LINES_MAX);
  const struct trust_line *l;

  (void)state;
  assert_int_equal(n, 7);
  assert_int_equal(count(lines, n, TRUST_FAIL), 0);
  assert_int_equal(count(lines, n, TRUST_WARN), 4);
  l = line(lines, n, "tenant fabrikam has no partner entry for contoso");
  assert_int_equal(l->level, TRUST_WARN);
  assert_non_null(strstr(l->fix, "galbridge setup-trust c-to-f"));
  assert_non_null(strstr(l->fix, SRC_ID));
  l = line(lines, n, "tenant contoso has no partner entry for fabrikam");
  assert_non_null(strstr(l->fix, TGT_ID));
  l = line(lines, n, "fabrikam does not redeem invitations from contoso");
  assert_non_null(strstr(l->text, "consent prompt"));
  assert_non_null(strstr(l->text, "invitation mail"));
  assert_non_null(strstr(l->fix, "Inbound access > Trust settings"));
  l = line(lines, n, "contoso does not redeem invitations to fabrikam");
  assert_non_null(strstr(l->fix, "Outbound access > Trust settings"));
  l = line(lines, n, "fabrikam allows B2B collaboration inbound");
  assert_int_equal(l->level, TRUST_OK);
  assert_non_null(strstr(l->text, "default policy"));
  l = line(lines, n, "contoso allows B2B collaboration outbound");
  assert_int_equal(l->level, TRUST_OK);
  l = line(lines, n, "does not let contoso sync users in");
  assert_int_equal(l->level, TRUST_OK);
}

static void
check_all_set(void **state)
{
  struct graph_policy t = nothing_set(), s = nothing_set();
  struct trust_line lines[TRUST_LINES_MAX];
  size_t n;

  (void)state;
  set_partner(&t, "{\"tenantId\":\"" SRC_ID "\","
                  "\"automaticUserConsentSettings\":{\"inboundAllowed\":true,"
                  "\"outboundAllowed\":null}}");
  set_partner(&s, "{\"tenantId\":\"" TGT_ID "\","
                  "\"automaticUserConsentSettings\":{\"inboundAllowed\":null,"
                  "\"outboundAllowed\":true}}");
  n = trust_check(&names, &t, &s, lines, TRUST_LINES_MAX);
  assert_int_equal(n, 7);
  assert_int_equal(count(lines, n, TRUST_OK), 7);
  line(lines, n, "fabrikam redeems invitations from contoso automatically");
  line(lines, n, "contoso redeems invitations to fabrikam automatically");
  for (size_t i = 0; i < n; i++)
    assert_string_equal(lines[i].fix, "");
}

static void
check_auto_redemption_directions(void **state)
{
  struct graph_policy t = nothing_set(), s = nothing_set();
  struct trust_line lines[TRUST_LINES_MAX];
  size_t n;
  const struct trust_line *l;

  (void)state;
  /* The mirror image (outbound in the target, inbound in the source)
   * does not count: each side's own direction is checked. */
  set_partner(&t, "{\"tenantId\":\"" SRC_ID "\","
                  "\"automaticUserConsentSettings\":{\"inboundAllowed\":false,"
                  "\"outboundAllowed\":true}}");
  set_partner(&s, "{\"tenantId\":\"" TGT_ID "\","
                  "\"automaticUserConsentSettings\":{\"inboundAllowed\":true,"
                  "\"outboundAllowed\":null}}");
  n = trust_check(&names, &t, &s, lines, TRUST_LINES_MAX);
  l = line(lines, n, "fabrikam does not redeem invitations from contoso");
  assert_int_equal(l->level, TRUST_WARN);
  assert_non_null(strstr(l->text, "inboundAllowed is false"));
  l = line(lines, n, "contoso does not redeem invitations to fabrikam");
  assert_non_null(strstr(l->text, "outboundAllowed is null"));
  line(lines, n, "tenant fabrikam has a partner entry for contoso");
  line(lines, n, "tenant contoso has a partner entry for fabrikam");
}

static void
check_b2b_blocked(void **state)
{
  struct graph_policy t = nothing_set(), s = nothing_set();
  struct trust_line lines[TRUST_LINES_MAX];
  size_t n;
  const struct trust_line *l;

  (void)state;
  /* Blocked by the target's default, and on the source's partner. */
  set_default(&t, 1, BLOCK_ALL);
  set_partner(&s, "{\"tenantId\":\"" TGT_ID
                  "\",\"b2bCollaborationOutbound\":" BLOCK_ALL "}");
  n = trust_check(&names, &t, &s, lines, TRUST_LINES_MAX);
  assert_int_equal(count(lines, n, TRUST_FAIL), 2);
  l = line(lines, n,
           "fabrikam blocks B2B collaboration inbound for "
           "contoso's users (default policy)");
  assert_int_equal(l->level, TRUST_FAIL);
  assert_non_null(strstr(l->text, "invitations are refused"));
  assert_non_null(strstr(l->fix, "partner entry only"));
  l = line(lines, n,
           "contoso blocks B2B collaboration outbound for its "
           "users to fabrikam (partner entry)");
  assert_int_equal(l->level, TRUST_FAIL);
  /* A partner that allows it overrides a blocking default. */
  set_partner(&t, "{\"tenantId\":\"" SRC_ID
                  "\",\"b2bCollaborationInbound\":" ALLOW_ALL "}");
  n = trust_check(&names, &t, &s, lines, TRUST_LINES_MAX);
  l = line(lines, n, "fabrikam allows B2B collaboration inbound");
  assert_int_equal(l->level, TRUST_OK);
  assert_non_null(strstr(l->text, "(partner entry)"));
  assert_int_equal(count(lines, n, TRUST_FAIL), 1);
}

static void
check_b2b_listed(void **state)
{
  struct graph_policy t = nothing_set(), s = nothing_set();
  struct trust_line lines[TRUST_LINES_MAX];
  size_t n;
  const struct trust_line *l;

  (void)state;
  set_default(&t, 1, ALLOW_GROUP);
  n = trust_check(&names, &t, &s, lines, TRUST_LINES_MAX);
  l = line(lines, n, "for listed users or groups only (default policy)");
  assert_int_equal(l->level, TRUST_WARN);
  assert_non_null(strstr(l->fix, "leaves lists alone"));
  assert_int_equal(count(lines, n, TRUST_FAIL), 0);
}

static void
check_sync_and_unread_sides(void **state)
{
  struct graph_policy t = nothing_set(), s = nothing_set();
  struct trust_line lines[TRUST_LINES_MAX];
  size_t n;
  const struct trust_line *l;

  (void)state;
  set_partner(&t, "{\"tenantId\":\"" SRC_ID "\",\"identitySynchronization\":"
                  "{\"tenantId\":\"" SRC_ID "\",\"userSyncInbound\":"
                  "{\"isSyncAllowed\":true}}}");
  n = trust_check(&names, &t, &s, lines, TRUST_LINES_MAX);
  l = line(lines, n, "fabrikam lets contoso sync users in");
  assert_int_equal(l->level, TRUST_NOTE);
  assert_non_null(strstr(l->text, "takes over galbridge's guests"));
  /* Sync not readable (no $expand): said so. */
  t.sync_allowed = GRAPH_POLICY_SYNC_UNKNOWN;
  n = trust_check(&names, &t, &s, lines, TRUST_LINES_MAX);
  assert_int_equal(line(lines, n, "could not be read")->level, TRUST_NOTE);
  /* The source could not be read: only the target's lines. */
  n = trust_check(&names, &t, NULL, lines, TRUST_LINES_MAX);
  assert_int_equal(n, 4);
  for (size_t i = 0; i < n; i++)
    assert_null(strstr(lines[i].text, "tenant contoso "));
  /* The target could not be read: the source's three. */
  n = trust_check(&names, NULL, &s, lines, TRUST_LINES_MAX);
  assert_int_equal(n, 3);
  /* Fewer lines than there are: never more than asked. */
  assert_int_equal(trust_check(&names, &t, &s, lines, 2), 2);
}

/* --- the plan --- */

static void
plan_nothing_set(void **state)
{
  struct graph_policy t = nothing_set(), s = nothing_set();
  struct trust_plan plan;

  (void)state;
  trust_plan(&names, &t, &s, &plan);
  assert_false(trust_plan_empty(&plan));
  assert_true(plan.target.create);
  assert_string_equal(plan.target.tenant, "fabrikam");
  assert_string_equal(plan.target.partner_id, SRC_ID);
  assert_int_equal(plan.target.n_fields, 1);
  assert_string_equal(plan.target.fields[0].name, GRAPH_POLICY_FIELD_AUTO_IN);
  assert_string_equal(plan.target.fields[0].was, "null");
  assert_string_equal(plan.target.fields[0].will, "true");
  assert_true(plan.target.patch.set_auto);
  assert_int_equal(plan.target.patch.auto_inbound, GRAPH_FLAG_TRUE);
  assert_int_equal(plan.target.patch.auto_outbound, GRAPH_FLAG_NULL);
  assert_null(plan.target.patch.allow_inbound);
  assert_true(plan.source.create);
  assert_string_equal(plan.source.partner_id, TGT_ID);
  assert_string_equal(plan.source.fields[0].name, GRAPH_POLICY_FIELD_AUTO_OUT);
  assert_int_equal(plan.source.patch.auto_inbound, GRAPH_FLAG_NULL);
  assert_int_equal(plan.source.patch.auto_outbound, GRAPH_FLAG_TRUE);
  assert_int_equal(plan.n_kept, 0);
}

static void
plan_keeps_what_it_does_not_need(void **state)
{
  struct graph_policy t = nothing_set(), s = nothing_set();
  struct trust_plan plan;

  (void)state;
  /* The target's partner exists with outbound redemption set for its
   * own reasons: it is sent back as read, only inbound changes. */
  set_partner(&t, "{\"tenantId\":\"" SRC_ID "\","
                  "\"automaticUserConsentSettings\":{\"inboundAllowed\":null,"
                  "\"outboundAllowed\":true}}");
  set_partner(&s, "{\"tenantId\":\"" TGT_ID "\","
                  "\"automaticUserConsentSettings\":{\"inboundAllowed\":false,"
                  "\"outboundAllowed\":true}}");
  trust_plan(&names, &t, &s, &plan);
  assert_false(plan.target.create);
  assert_int_equal(plan.target.patch.auto_inbound, GRAPH_FLAG_TRUE);
  assert_int_equal(plan.target.patch.auto_outbound, GRAPH_FLAG_TRUE);
  assert_true(trust_write_empty(&plan.source));
  assert_false(trust_plan_empty(&plan));
}

static void
plan_already_set(void **state)
{
  struct graph_policy t = nothing_set(), s = nothing_set();
  struct trust_plan plan;

  (void)state;
  set_partner(&t, "{\"tenantId\":\"" SRC_ID "\","
                  "\"automaticUserConsentSettings\":{\"inboundAllowed\":true}"
                  ",\"identitySynchronization\":{\"userSyncInbound\":"
                  "{\"isSyncAllowed\":false}}}");
  set_partner(&s, "{\"tenantId\":\"" TGT_ID "\","
                  "\"automaticUserConsentSettings\":{\"outboundAllowed\":true}"
                  "}");
  trust_plan(&names, &t, &s, &plan);
  assert_true(trust_plan_empty(&plan));
  assert_true(trust_write_empty(&plan.target));
  assert_true(trust_write_empty(&plan.source));
}

static void
plan_allows_b2b_only_when_blocked(void **state)
{
  struct graph_policy t = nothing_set(), s = nothing_set();
  struct trust_plan plan;

  (void)state;
  set_default(&t, 1, BLOCK_ALL);
  set_default(&s, 0, ALLOW_GROUP);
  set_partner(&t, "{\"tenantId\":\"" SRC_ID "\","
                  "\"automaticUserConsentSettings\":{\"inboundAllowed\":true}"
                  "}");
  trust_plan(&names, &t, &s, &plan);
  /* Target: blocked by the default, allowed on the partner only. */
  assert_false(plan.target.create);
  assert_false(plan.target.patch.set_auto);
  assert_int_equal(plan.target.n_fields, 1);
  assert_string_equal(plan.target.fields[0].name, GRAPH_POLICY_FIELD_B2B_IN);
  assert_non_null(strstr(plan.target.fields[0].was, "default policy"));
  assert_string_equal(plan.target.fields[0].will, "allowed AllUsers");
  assert_ptr_equal(plan.target.patch.allow_inbound, &t.default_inbound);
  assert_null(plan.target.patch.allow_outbound);
  /* Source: a list is left alone, and said. */
  assert_null(plan.source.patch.allow_outbound);
  assert_int_equal(plan.source.n_fields, 1); /* outboundAllowed only */
  assert_int_equal(plan.n_kept, 1);
  assert_non_null(strstr(plan.kept[0].text, "not changed: tenant contoso"));
}

static void
not_needed_for_contacts(void **state)
{
  struct config_tenant src = {.name = "contoso", .tenant_id = SRC_ID};
  struct config_tenant dst = {.name = "fabrikam", .tenant_id = TGT_ID};
  struct config_link l = {.name = "contacts",
                          .source = &src,
                          .target = &dst,
                          .object = CONFIG_OBJECT_MAILCONTACT};
  char buf[512];

  (void)state;
  trust_not_needed(&l, buf, sizeof(buf));
  assert_non_null(
      strstr(buf, "link contacts makes mail contacts in fabrikam"));
  assert_non_null(strstr(buf, "no cross-tenant access settings are needed"));
  l.object = CONFIG_OBJECT_MAILUSER;
  trust_not_needed(&l, buf, sizeof(buf));
  assert_non_null(strstr(buf, "mail users"));
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(parse_documented_bodies),
      cmocka_unit_test(parse_settings_and_errors),
      cmocka_unit_test(effective_setting),
      cmocka_unit_test(patch_bodies),
      cmocka_unit_test(check_nothing_set),
      cmocka_unit_test(check_all_set),
      cmocka_unit_test(check_auto_redemption_directions),
      cmocka_unit_test(check_b2b_blocked),
      cmocka_unit_test(check_b2b_listed),
      cmocka_unit_test(check_sync_and_unread_sides),
      cmocka_unit_test(plan_nothing_set),
      cmocka_unit_test(plan_keeps_what_it_does_not_need),
      cmocka_unit_test(plan_already_set),
      cmocka_unit_test(plan_allows_b2b_only_when_blocked),
      cmocka_unit_test(not_needed_for_contacts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
