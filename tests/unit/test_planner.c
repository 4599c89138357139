/*
 * Unit tests: the planner's decisions (the table in planner.h), the diff
 * of an update, the anchor, and hash stability.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "planner.h"

#include "guestlink.h"

#define SRC_TENANT "AAAAAAAA-1111-1111-1111-111111111111"
#define SOURCE_ID "0000AAAA-2222-2222-2222-222222222222"

static const char *const person =
    "{\"displayName\":\"Jane O'Brien\",\"givenName\":\"Jane\","
    "\"surname\":\"O'Brien\",\"mail\":\"jane@contoso.com\","
    "\"userType\":\"Member\",\"accountEnabled\":true,"
    "\"jobTitle\":\"Engineer\",\"department\":\"Sales\","
    "\"city\":\"Oslo\"}";

struct fixture {
  struct config_tenant source, target;
  struct config_link link;
  struct mapping *mapping;
  struct planner_link pl;
};

static int
setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));

  f->source.name = "a";
  f->source.tenant_id = SRC_TENANT;
  f->target.name = "b";
  f->target.tenant_id = "bbbbbbbb-3333-3333-3333-333333333333";
  if (guest_link_init(&f->link, &f->source, &f->target, "a-to-b", 500,
                      &f->mapping, &f->pl) != 0)
    return -1;
  *state = f;
  return 0;
}

static int
teardown(void **state)
{
  struct fixture *f = *state;
  mapping_free(f->mapping);
  free(f);
  return 0;
}

static void
decide(struct fixture *f, const struct store_plan_row *row,
       struct planner_decision *d)
{
  char err[256];
  if (planner_decide(&f->pl, SRC_TENANT, row, d, err, sizeof(err)) != 0)
    fail_msg("planner_decide: %s", err);
}

static void
anchor_is_lower_case(void **state)
{
  char *a = anchor_plain(SRC_TENANT, SOURCE_ID);
  (void)state;
  assert_string_equal(a, "galbridge:aaaaaaaa-1111-1111-1111-111111111111:"
                         "0000aaaa-2222-2222-2222-222222222222");
  free(a);
}

static void
new_person_is_created_with_anchor(void **state)
{
  struct fixture *f = *state;
  struct store_plan_row row = {.source_id = SOURCE_ID, .attrs = person};
  struct planner_decision d;

  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_CREATE);
  assert_string_equal(
      json_string_value(json_object_get(d.desired, "extensionAttribute15")),
      "galbridge:aaaaaaaa-1111-1111-1111-111111111111:"
      "0000aaaa-2222-2222-2222-222222222222");
  assert_string_equal(json_string_value(json_object_get(d.desired, "mail")),
                      "jane@contoso.com");
  /* Source-only attributes do not travel. */
  assert_null(json_object_get(d.desired, "userType"));
  assert_true(json_equal(d.payload, d.desired));
  assert_int_equal(strlen(d.hash), 16);
  planner_decision_clear(&d);
}

static void
unchanged_person_plans_nothing(void **state)
{
  struct fixture *f = *state;
  struct store_plan_row row = {.source_id = SOURCE_ID, .attrs = person};
  struct planner_decision d;
  char *applied;

  decide(f, &row, &d);
  applied = json_dumps(d.desired, JSON_COMPACT);
  row.target_id = "t1";
  row.state = "active";
  row.applied = applied;
  row.hash = d.hash;
  {
    struct planner_decision again;
    decide(f, &row, &again);
    assert_int_equal(again.kind, PLANNER_NONE);
    assert_null(again.why);
    planner_decision_clear(&again);
  }
  planner_decision_clear(&d);
  free(applied);
}

static void
update_sends_only_changes(void **state)
{
  struct fixture *f = *state;
  struct store_plan_row row = {
      .source_id = SOURCE_ID,
      .attrs = "{\"displayName\":\"Jane O'Brien\",\"mail\":"
               "\"jane@contoso.com\",\"userType\":\"Member\","
               "\"accountEnabled\":true,\"jobTitle\":\"Manager\"}",
      .target_id = "t1",
      .state = "active",
      .hash = "0000000000000000",
      .applied = "{\"displayName\":\"Jane O'Brien\",\"mail\":"
                 "\"jane@contoso.com\",\"jobTitle\":\"Engineer\","
                 "\"city\":\"Oslo\",\"extensionAttribute15\":"
                 "\"galbridge:aaaaaaaa-1111-1111-1111-111111111111:"
                 "0000aaaa-2222-2222-2222-222222222222\"}"};
  struct planner_decision d;
  json_t *want;

  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_UPDATE);
  want = json_loads("{\"jobTitle\":\"Manager\",\"city\":null}", 0, NULL);
  if (!json_equal(d.payload, want)) {
    char *got = json_dumps(d.payload, JSON_SORT_KEYS);
    fail_msg("payload %s", got);
  }
  json_decref(want);
  planner_decision_clear(&d);
}

static void
out_of_scope_follows_on_delete(void **state)
{
  struct fixture *f = *state;
  static const struct {
    const char *attrs;
    int removed;
    enum config_on_delete policy;
    enum planner_kind want;
  } cases[] = {
      /* disabled in the source */
      {"{\"mail\":\"a@x\",\"userType\":\"Member\",\"accountEnabled\":false}",
       0, CONFIG_ON_DELETE_DELETE, PLANNER_DELETE},
      {"{\"mail\":\"a@x\",\"userType\":\"Member\",\"accountEnabled\":false}",
       0, CONFIG_ON_DELETE_DISABLE, PLANNER_DISABLE},
      {"{\"mail\":\"a@x\",\"userType\":\"Member\",\"accountEnabled\":false}",
       0, CONFIG_ON_DELETE_HIDE, PLANNER_HIDE},
      {"{\"mail\":\"a@x\",\"userType\":\"Member\",\"accountEnabled\":false}",
       0, CONFIG_ON_DELETE_KEEP, PLANNER_NONE},
      /* soft-deleted and deleted in the source */
      {"{\"mail\":\"a@x\",\"userType\":\"Member\",\"accountEnabled\":true}",
       STORE_SOFT_DELETED, CONFIG_ON_DELETE_DELETE, PLANNER_DELETE},
      {"{\"mail\":\"a@x\",\"userType\":\"Member\",\"accountEnabled\":true}",
       STORE_DELETED, CONFIG_ON_DELETE_HIDE, PLANNER_HIDE},
      /* a guest in the source, and galbridge's own copy */
      {"{\"mail\":\"a@x\",\"userType\":\"Guest\",\"accountEnabled\":true}", 0,
       CONFIG_ON_DELETE_DELETE, PLANNER_DELETE},
      {"{\"mail\":\"a@x\",\"userType\":\"Member\",\"accountEnabled\":true,"
       "\"onPremisesExtensionAttributes\":{\"extensionAttribute15\":"
       "\"galbridge:x:y\"}}",
       0, CONFIG_ON_DELETE_DELETE, PLANNER_DELETE},
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct store_plan_row row = {.source_id = SOURCE_ID,
                                 .attrs = cases[i].attrs,
                                 .removed = cases[i].removed,
                                 .target_id = "t1",
                                 .state = "active",
                                 .hash = "x",
                                 .applied = "{}"};
    struct planner_decision d;
    f->link.on_delete = cases[i].policy;
    decide(f, &row, &d);
    if (d.kind != cases[i].want)
      fail_msg("case %zu: got %s, want %s", i, planner_kind_name(d.kind),
               planner_kind_name(cases[i].want));
    assert_non_null(d.why);
    planner_decision_clear(&d);

    /* Without a target object there is nothing to remove. */
    row.target_id = NULL;
    row.state = NULL;
    decide(f, &row, &d);
    assert_int_equal(d.kind, PLANNER_NONE);
    planner_decision_clear(&d);
  }
  f->link.on_delete = CONFIG_ON_DELETE_DELETE;
}

static void
removed_target_stays_removed(void **state)
{
  struct fixture *f = *state;
  struct store_plan_row row = {.source_id = SOURCE_ID,
                               .attrs = "{\"mail\":\"a@x\"}",
                               .removed = STORE_SOFT_DELETED,
                               .target_id = "t1",
                               .state = "deleted",
                               .applied = "{}"};
  struct planner_decision d;

  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_NONE);
  planner_decision_clear(&d);
}

static void
back_in_scope_restores_or_revives(void **state)
{
  struct fixture *f = *state;
  struct store_plan_row row = {.source_id = SOURCE_ID,
                               .attrs = person,
                               .target_id = "t1",
                               .state = "deleted",
                               .hash = "x",
                               .applied = "{}"};
  struct planner_decision d;

  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_RESTORE);
  assert_true(json_equal(d.payload, d.desired));
  planner_decision_clear(&d);

  row.state = "disabled";
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_UPDATE);
  assert_true(json_is_true(json_object_get(d.payload, "accountEnabled")));
  assert_true(json_is_true(json_object_get(d.payload, "showInAddressList")));
  planner_decision_clear(&d);

  row.state = "hidden";
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_UPDATE);
  assert_null(json_object_get(d.payload, "accountEnabled"));
  assert_true(json_is_true(json_object_get(d.payload, "showInAddressList")));
  planner_decision_clear(&d);
}

static void
target_deleted_by_hand_is_created_again(void **state)
{
  struct fixture *f = *state;
  struct store_plan_row row = {.source_id = SOURCE_ID,
                               .attrs = person,
                               .target_id = "t1",
                               .state = "active",
                               .hash = "x",
                               .applied = "{}",
                               .target_removed = STORE_DELETED};
  struct planner_decision d;

  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_CREATE);
  planner_decision_clear(&d);
  row.target_removed = STORE_SOFT_DELETED;
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_CREATE);
  planner_decision_clear(&d);
}

static void
group_and_filter_narrow_scope(void **state)
{
  struct fixture *f = *state;
  struct store_plan_row row = {.source_id = SOURCE_ID, .attrs = person};
  struct planner_decision d;
  struct scope_filter *filter;
  json_t *members = json_object();
  char err[256];

  f->pl.members = members;
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_NONE);
  assert_string_equal(d.why, "not a member of scope_group");
  planner_decision_clear(&d);
  json_object_set_new(members, SOURCE_ID, json_true());
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_CREATE);
  planner_decision_clear(&d);

  assert_int_equal(
      scope_filter_parse("department eq 'Support'", &filter, err, sizeof(err)),
      0);
  f->pl.filter = filter;
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_NONE);
  planner_decision_clear(&d);
  f->pl.filter = NULL;
  f->pl.members = NULL;
  scope_filter_free(filter);
  json_decref(members);
}

/* A member of an exclude group is out of scope whatever else matches
 * (here a member of the scope group too), with the group named; an
 * existing copy follows on_delete like any object leaving the scope. */
static void
exclude_group_wins(void **state)
{
  struct fixture *f = *state;
  struct store_plan_row row = {.source_id = SOURCE_ID, .attrs = person};
  struct planner_decision d;
  json_t *members = json_pack("{s:b}", SOURCE_ID, 1);
  json_t *excluded = json_pack(
      "{s:s}", "0000bbbb-2222-2222-2222-222222222222",
      "member of exclude_group 99999999-0000-0000-0000-000000000001");
  const char *why = NULL;
  char *applied;

  f->pl.members = members;
  f->pl.excluded = excluded;
  decide(f, &row, &d); /* someone else excluded: this one is created */
  assert_int_equal(d.kind, PLANNER_CREATE);
  applied = json_dumps(d.desired, JSON_COMPACT);
  planner_decision_clear(&d);
  json_object_set_new(
      excluded, SOURCE_ID,
      json_string(
          "member of exclude_group 99999999-0000-0000-0000-000000000002"));
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_NONE);
  assert_string_equal(
      d.why, "member of exclude_group 99999999-0000-0000-0000-000000000002");
  planner_decision_clear(&d);
  assert_int_equal(planner_excluded(&f->pl, SOURCE_ID, &why), 1);
  assert_string_equal(
      why, "member of exclude_group 99999999-0000-0000-0000-000000000002");
  /* with a copy: it goes, as on_delete says */
  row.target_id = "t1";
  row.state = "active";
  row.applied = applied;
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_DELETE);
  planner_decision_clear(&d);
  f->pl.members = NULL;
  f->pl.excluded = NULL;
  assert_int_equal(planner_excluded(&f->pl, SOURCE_ID, &why), 0);
  json_decref(members);
  json_decref(excluded);
  free(applied);
}

/* A refused source object is left alone before any other rule: not
 * created, not updated from its older attributes, and its copy not
 * deleted even when those attributes (or a removal) say so. */
static void
refused_source_is_left_alone(void **state)
{
  struct fixture *f = *state;
  struct store_plan_row row = {.source_id = SOURCE_ID,
                               .attrs = person,
                               .bad = "displayName: holds a NUL"};
  struct planner_decision d;

  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_FAIL);
  assert_string_equal(d.reason,
                      "source value refused: displayName: holds a NUL");
  assert_null(d.payload);
  planner_decision_clear(&d);

  row.target_id = "target-1";
  row.state = "active";
  row.hash = "0000000000000000";
  row.applied = "{}";
  row.removed = STORE_DELETED;
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_FAIL);
  assert_non_null(strstr(d.reason, "source value refused"));
  assert_null(d.payload);
  planner_decision_clear(&d);

  row.removed = STORE_PRESENT;
  row.attrs = "{}";
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_FAIL);
  planner_decision_clear(&d);
}

/* The anchor written is the stamp for the target object: the plain one
 * without a key. A copy whose anchor the target's own read shows cleared
 * or edited gets it back in an update, even when nothing else changed. */
static void
anchor_drift_is_repaired(void **state)
{
  struct fixture *f = *state;
  struct store_plan_row row = {.source_id = SOURCE_ID, .attrs = person};
  struct planner_decision d;
  char *applied, hash[17];

  decide(f, &row, &d);
  strcpy(hash, d.hash);
  applied = json_dumps(d.desired, JSON_COMPACT);
  planner_decision_clear(&d);

  /* Same values, same anchor on the target: nothing. */
  row.target_id = "target-1";
  row.state = "active";
  row.applied = applied;
  row.hash = hash;
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_NONE);
  planner_decision_clear(&d);
  row.target_attrs =
      "{\"onPremisesExtensionAttributes\":{\"extensionAttribute15\":"
      "\"galbridge:aaaaaaaa-1111-1111-1111-111111111111:"
      "0000aaaa-2222-2222-2222-222222222222\"}}";
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_NONE);
  planner_decision_clear(&d);

  /* Cleared by hand, then edited by hand: written again. */
  row.target_attrs = "{\"onPremisesExtensionAttributes\":{}}";
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_UPDATE);
  assert_int_equal(json_object_size(d.payload), 1);
  assert_string_equal(
      json_string_value(json_object_get(d.payload, "extensionAttribute15")),
      "galbridge:aaaaaaaa-1111-1111-1111-111111111111:"
      "0000aaaa-2222-2222-2222-222222222222");
  planner_decision_clear(&d);
  row.target_attrs = "{\"onPremisesExtensionAttributes\":"
                     "{\"extensionAttribute15\":\"edited\"}}";
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_UPDATE);
  assert_non_null(json_object_get(d.payload, "extensionAttribute15"));
  planner_decision_clear(&d);
  free(applied);
}

/* With a key, a known copy's anchor carries the proof for its object; a
 * copy that carries the plain one gets the proof in place. A copy taken
 * up after a lost state sends every value and is shown again. */
static void
stamp_upgrade_and_recovered_copy(void **state)
{
  struct fixture *f = *state;
  struct store_plan_row row = {.source_id = SOURCE_ID, .attrs = person};
  struct planner_decision d;
  struct anchor_key *key = NULL;
  char dir[] = "/tmp/galbridge-planner-XXXXXX", path[64], err[256];
  char *applied, hash[17];
  const char *stamp;
  FILE *fp;

  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/key", dir);
  fp = fopen(path, "w");
  assert_non_null(fp);
  fputs("0123456789abcdef0123456789abcdef\n", fp);
  fclose(fp);
  assert_int_equal(chmod(path, 0600), 0);
  assert_int_equal(anchor_key_load(path, &key, err, sizeof(err)), 0);
  unlink(path);
  rmdir(dir);

  decide(f, &row, &d); /* without a key: the plain anchor applied */
  strcpy(hash, d.hash);
  applied = json_dumps(d.desired, JSON_COMPACT);
  planner_decision_clear(&d);
  f->pl.key = key;
  row.target_id = "target-1";
  row.state = "active";
  row.hash = hash;
  row.applied = applied;
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_UPDATE);
  assert_string_equal(d.hash, hash); /* the values did not change */
  stamp =
      json_string_value(json_object_get(d.payload, "extensionAttribute15"));
  assert_non_null(stamp);
  assert_int_equal(
      anchor_proven(key, f->target.tenant_id, "guest", stamp, "target-1"), 1);
  assert_int_equal(json_object_size(d.payload), 1);
  planner_decision_clear(&d);

  row.state = "recovered";
  row.applied = "{}";
  row.hash = "";
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_UPDATE);
  assert_true(json_is_true(json_object_get(d.payload, "showInAddressList")));
  assert_true(json_is_true(json_object_get(d.payload, "accountEnabled")));
  assert_string_equal(
      json_string_value(json_object_get(d.payload, "displayName")),
      "Jane O'Brien");
  planner_decision_clear(&d);
  /* Out of scope, it is removed like any copy. */
  row.removed = STORE_DELETED;
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_DELETE);
  planner_decision_clear(&d);

  f->pl.key = NULL;
  anchor_key_free(key);
  free(applied);
}

static void
hash_is_stable(void **state)
{
  json_t *a = json_loads("{\"b\":1,\"a\":[\"x\",\"y\"],\"c\":\"é\"}", 0, NULL);
  json_t *b = json_loads("{\"c\":\"é\",\"a\":[\"x\",\"y\"],\"b\":1}", 0, NULL);
  json_t *c = json_loads("{\"c\":\"é\",\"a\":[\"y\",\"x\"],\"b\":1}", 0, NULL);
  char ha[17], hb[17], hc[17];

  (void)state;
  planner_hash(a, ha);
  planner_hash(b, hb);
  planner_hash(c, hc);
  assert_string_equal(ha, hb);     /* key order does not matter */
  assert_string_not_equal(ha, hc); /* array order does */
  /* A fixed value (FNV-1a 64 of "{}", computed independently): the hash
   * must not change between releases, or every object would be updated
   * after an upgrade. */
  json_decref(c);
  c = json_object();
  planner_hash(c, ha);
  assert_string_equal(ha, "08f44b07b5901a25");
  json_decref(a);
  json_decref(b);
  json_decref(c);
}

/* A galbridge copy is out of the default scope, unless it is a copy that a
 * migration link handed off after its mailbox moved and this link takes
 * over (planner_link.moved): the person's mailbox now. Every other rule
 * of the scope still applies to it. */
static void
moved_copy_is_a_person(void **state)
{
  static const char *const copy =
      "{\"displayName\":\"Jane O'Brien\",\"mail\":\"jane@b.example\","
      "\"userType\":\"Member\",\"accountEnabled\":true,"
      "\"onPremisesExtensionAttributes\":{\"extensionAttribute15\":"
      "\"galbridge:cccccccc-4444-4444-4444-444444444444:"
      "0000cccc-5555-5555-5555-555555555555\"}}";
  static const char *const disabled =
      "{\"displayName\":\"Jane O'Brien\",\"mail\":\"jane@b.example\","
      "\"userType\":\"Member\",\"accountEnabled\":false,"
      "\"onPremisesExtensionAttributes\":{\"extensionAttribute15\":"
      "\"galbridge:cccccccc-4444-4444-4444-444444444444:"
      "0000cccc-5555-5555-5555-555555555555\"}}";
  struct fixture *f = *state;
  struct store_plan_row row = {.source_id = SOURCE_ID, .attrs = copy};
  struct planner_decision d;
  json_t *moved =
      json_pack("{s:s}", SOURCE_ID, "0000cccc-5555-5555-5555-555555555555");

  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_NONE);
  assert_string_equal(d.why, SCOPE_WHY_COPY);
  planner_decision_clear(&d);

  f->pl.moved = moved;
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_CREATE);
  assert_null(d.why);
  planner_decision_clear(&d);

  row.attrs = disabled;
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_NONE);
  assert_string_equal(d.why, "disabled");
  planner_decision_clear(&d);

  /* Another copy, not handed off: still a copy. */
  row.attrs = copy;
  row.source_id = "0000dddd-6666-6666-6666-666666666666";
  decide(f, &row, &d);
  assert_int_equal(d.kind, PLANNER_NONE);
  assert_string_equal(d.why, SCOPE_WHY_COPY);
  planner_decision_clear(&d);
  f->pl.moved = NULL;
  json_decref(moved);
}

/* A planner kind's name is the name its op carries in the outbox. */
/* Managers: a reference to the link's copy of the source manager, sent
 * by updates only, never to anything else. */
#define BOSS_ID "0000bbbb-2222-2222-2222-222222222222"
static const char *const boss =
    "{\"displayName\":\"Boss\",\"mail\":\"boss@contoso.com\","
    "\"userType\":\"Member\",\"accountEnabled\":true}";
static const char *const report =
    "{\"displayName\":\"Jane O'Brien\",\"mail\":\"jane@contoso.com\","
    "\"userType\":\"Member\",\"accountEnabled\":true,"
    "\"manager\":\"" BOSS_ID "\"}";

/* The decision for an active copy of `report` whose applied values are
 * those of a decision made without any manager. */
static void
decide_report(struct fixture *f, struct store_plan_row *row,
              struct planner_decision *d, char **applied, char hash[17])
{
  struct store_plan_row first = {.source_id = SOURCE_ID,
                                 .attrs = report,
                                 .manager_id = BOSS_ID,
                                 .manager_attrs = boss,
                                 .manager_target = "copy-of-boss"};
  struct planner_decision c;

  /* A create never carries the manager. */
  decide(f, &first, &c);
  assert_int_equal(c.kind, PLANNER_CREATE);
  assert_null(json_object_get(c.desired, "manager"));
  assert_null(json_object_get(c.payload, "manager"));
  *applied = json_dumps(c.desired, JSON_COMPACT);
  strcpy(hash, c.hash);
  planner_decision_clear(&c);
  *row = first;
  row->target_id = "copy-of-jane";
  row->state = "active";
  row->applied = *applied;
  row->hash = hash;
  decide(f, row, d);
}

/* Decide `row`: of kind `kind`, and for an update one whose payload is
 * the manager alone: `want`, or null (cleared) when want is NULL. */
static void
expect_manager(struct fixture *f, const struct store_plan_row *row,
               enum planner_kind kind, const char *want)
{
  struct planner_decision d;
  json_t *m;

  decide(f, row, &d);
  assert_int_equal(d.kind, kind);
  if (kind == PLANNER_UPDATE) {
    m = json_object_get(d.payload, "manager");
    assert_int_equal(json_object_size(d.payload), 1);
    if (want == NULL)
      assert_true(json_is_null(m));
    else
      assert_string_equal(json_string_value(m), want);
  }
  if (want == NULL)
    assert_null(json_object_get(d.desired, "manager"));
  planner_decision_clear(&d);
}

static void
manager_is_the_managers_copy(void **state)
{
  struct fixture *f = *state;
  struct store_plan_row row, cases[4];
  struct planner_decision d;
  char *applied, *with, hash[17], hash2[17];

  f->link.manager = 1;
  decide_report(f, &row, &d, &applied, hash);
  /* The round after the create: the manager alone is sent. */
  assert_int_equal(d.kind, PLANNER_UPDATE);
  assert_int_equal(json_object_size(d.payload), 1);
  assert_string_equal(json_string_value(json_object_get(d.payload, "manager")),
                      "copy-of-boss");
  assert_string_not_equal(d.hash, hash);

  /* Once applied, nothing more: an idle round writes nothing. */
  with = json_dumps(d.desired, JSON_COMPACT);
  strcpy(hash2, d.hash);
  planner_decision_clear(&d);
  row.applied = with;
  row.hash = hash2;
  expect_manager(f, &row, PLANNER_NONE, "copy-of-boss");

  /* The target shows another manager (set by hand): put back. */
  row.target_attrs =
      "{\"manager\":\"someone-else\",\"onPremisesExtensionAttributes\":"
      "{\"extensionAttribute15\":\"galbridge:aaaaaaaa-1111-1111-1111-"
      "111111111111:0000aaaa-2222-2222-2222-222222222222\"}}";
  expect_manager(f, &row, PLANNER_UPDATE, "copy-of-boss");
  row.target_attrs =
      "{\"manager\":\"COPY-OF-BOSS\",\"onPremisesExtensionAttributes\":"
      "{\"extensionAttribute15\":\"galbridge:aaaaaaaa-1111-1111-1111-"
      "111111111111:0000aaaa-2222-2222-2222-222222222222\"}}";
  expect_manager(f, &row, PLANNER_NONE, "copy-of-boss");
  row.target_attrs = NULL;

  /* The manager's copy is gone, or the manager left the scope, is
   * refused or removed (the store then gives no manager_id), or is the
   * person itself: cleared, never pointed elsewhere. */
  for (size_t i = 0; i < 4; i++)
    cases[i] = row;
  cases[0].manager_target = NULL;
  cases[1].manager_attrs = "{\"displayName\":\"Boss\",\"mail\":"
                           "\"boss@contoso.com\",\"userType\":\"Member\","
                           "\"accountEnabled\":false}";
  cases[2].manager_id = NULL;
  cases[2].manager_attrs = NULL;
  cases[2].manager_target = NULL;
  cases[3].manager_id = SOURCE_ID;
  for (size_t i = 0; i < 4; i++)
    expect_manager(f, &cases[i], PLANNER_UPDATE, NULL);
  free(with);
  free(applied);
}

static void
manager_switched_off(void **state)
{
  struct fixture *f = *state;
  struct store_plan_row row;
  struct planner_decision d;
  char *applied, hash[17];
  const char *target, *why;

  f->link.manager = 0;
  decide_report(f, &row, &d, &applied, hash);
  assert_int_equal(d.kind, PLANNER_NONE);
  assert_null(json_object_get(d.desired, "manager"));
  planner_decision_clear(&d);
  /* planner_manager() itself says why there is none. */
  f->link.manager = 1;
  row.manager_target = NULL;
  assert_int_equal(planner_manager(&f->pl, &row, &target, &why), 0);
  assert_null(target);
  assert_non_null(strstr(why, "no copy"));
  free(applied);
}

static void
kind_names_roundtrip(void **state)
{
  enum store_op_kind k;
  (void)state;
  for (int i = PLANNER_NONE; i <= PLANNER_RESTORE; i++) {
    assert_int_equal(
        store_op_kind_parse(planner_kind_name((enum planner_kind)i), &k), 0);
    assert_int_equal((int)k, i);
  }
  assert_int_equal(store_op_kind_parse("take-over", &k), 0);
  assert_int_equal((int)k, PLANNER_TAKEOVER);
  assert_string_equal(planner_kind_name(PLANNER_TAKEOVER), "take-over");
  assert_int_equal(store_op_kind_parse("explode", &k), -1);
  assert_string_equal(planner_kind_name((enum planner_kind)99), "unknown");
}

/* A groupcontact link: a mail-enabled group is planned as a mail contact
 * anchored under "<tenant>#groups" with its name and address; a group
 * without mail is out of scope for the group rule, not a person's; a
 * person's attributes (userType, accountEnabled) play no part. */
static void
group_contact_planned(void **state)
{
  struct fixture *f = *state;
  struct config_link link = f->link;
  struct planner_link pl = f->pl;
  struct mapping *m = NULL;
  char err[256];
  struct store_plan_row row = {
      .source_id = SOURCE_ID,
      .attrs = "{\"displayName\":\"Sales\",\"mail\":\"sales@contoso.com\","
               "\"mailEnabled\":true,\"securityEnabled\":false,"
               "\"groupTypes\":[]}"};
  struct planner_decision d;

  link.object = CONFIG_OBJECT_GROUPCONTACT;
  snprintf(link.source_key, sizeof(link.source_key), "%s#groups", SRC_TENANT);
  assert_int_equal(mapping_compile(NULL, CONFIG_OBJECT_GROUPCONTACT,
                                   "test.conf", &m, err, sizeof(err)),
                   0);
  pl.link = &link;
  pl.mapping = m;
  assert_int_equal(planner_decide(&pl, config_link_source_key(&link), &row, &d,
                                  err, sizeof(err)),
                   0);
  assert_int_equal(d.kind, PLANNER_CREATE);
  assert_string_equal(
      json_string_value(json_object_get(d.desired, "CustomAttribute15")),
      "galbridge:aaaaaaaa-1111-1111-1111-111111111111#groups:"
      "0000aaaa-2222-2222-2222-222222222222");
  assert_string_equal(
      json_string_value(json_object_get(d.desired, "ExternalEmailAddress")),
      "sales@contoso.com");
  assert_string_equal(
      json_string_value(json_object_get(d.desired, "DisplayName")), "Sales");
  assert_null(json_object_get(d.desired, "FirstName"));
  planner_decision_clear(&d);

  row.attrs = "{\"displayName\":\"Security\",\"mailEnabled\":false,"
              "\"securityEnabled\":true,\"mail\":null}";
  assert_int_equal(planner_decide(&pl, config_link_source_key(&link), &row, &d,
                                  err, sizeof(err)),
                   0);
  assert_int_equal(d.kind, PLANNER_NONE);
  assert_string_equal(d.why, "not mail-enabled");
  planner_decision_clear(&d);
  mapping_free(m);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(anchor_is_lower_case),
      cmocka_unit_test_setup_teardown(new_person_is_created_with_anchor, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(unchanged_person_plans_nothing, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(update_sends_only_changes, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(out_of_scope_follows_on_delete, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(removed_target_stays_removed, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(back_in_scope_restores_or_revives, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(target_deleted_by_hand_is_created_again,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(group_and_filter_narrow_scope, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(exclude_group_wins, setup, teardown),
      cmocka_unit_test_setup_teardown(refused_source_is_left_alone, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(anchor_drift_is_repaired, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(stamp_upgrade_and_recovered_copy, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(moved_copy_is_a_person, setup, teardown),
      cmocka_unit_test_setup_teardown(manager_is_the_managers_copy, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(manager_switched_off, setup, teardown),
      cmocka_unit_test(hash_is_stable),
      cmocka_unit_test(kind_names_roundtrip),
      cmocka_unit_test_setup_teardown(group_contact_planned, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
