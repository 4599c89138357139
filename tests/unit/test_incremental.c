/*
 * Unit tests: incremental planning through the store. A round weighs only
 * the objects changed since the link's last round (the source object, its
 * target object in the target tenant's delta, or an executor outcome that
 * removed the target row), all of them again after a change of the plan
 * key, and its result is the one a full plan would give.
 */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "planner.h"
#include "store.h"

#include "guestlink.h"

#define SRC "aaaaaaaa-1111-1111-1111-111111111111"
#define DST "bbbbbbbb-2222-2222-2222-222222222222"
#define LINK "a-to-b"
#define PEOPLE 1200 /* more than one chunk */

struct fixture {
  char dir[64];
  struct store *store;
  struct config_tenant source, target;
  struct config_link link;
  struct mapping *mapping;
  struct planner_link pl;
};

static void
put_person(struct fixture *f, int i, const char *title, int removed)
{
  char id[40], attrs[512];

  snprintf(id, sizeof(id), "%08d-0000-0000-0000-000000000000", i);
  snprintf(attrs, sizeof(attrs),
           "{\"displayName\":\"Person %d\",\"mail\":\"p%d@contoso.com\","
           "\"userType\":\"Member\",\"accountEnabled\":true,"
           "\"jobTitle\":\"%s\"}",
           i, i, title);
  assert_int_equal(store_source_put(f->store, SRC, id, attrs, removed, 1), 0);
}

static int
setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  char err[256];

  snprintf(f->dir, sizeof(f->dir), "/tmp/galbridge-incr-XXXXXX");
  if (f == NULL || mkdtemp(f->dir) == NULL)
    return -1;
  if (store_open(f->dir, &f->store, err, sizeof(err)) != 0) {
    print_error("store_open: %s\n", err);
    return -1;
  }
  f->source.name = "contoso";
  f->source.tenant_id = SRC;
  f->target.name = "fabrikam";
  f->target.tenant_id = DST;
  if (guest_link_init(&f->link, &f->source, &f->target, LINK, 10000,
                      &f->mapping, &f->pl) != 0)
    return -1;
  *state = f;
  return 0;
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int
teardown(void **state)
{
  struct fixture *f = *state;
  store_close(f->store);
  mapping_free(f->mapping);
  nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

static unsigned long
weighed(const struct planner_stats *st)
{
  return st->creates + st->updates + st->deletes + st->restores +
         st->unchanged + st->out_of_scope + st->waiting + st->failed_kept +
         st->errors;
}

static void
plan(struct fixture *f, int dry, struct planner_stats *st)
{
  assert_int_equal(planner_plan(f->store, &f->pl, dry, NULL, NULL, st), 0);
}

/* Complete every pending op as the executor would on success. */
static size_t
execute_all(struct fixture *f)
{
  struct store_op *ops = NULL;
  size_t n = 0;

  assert_int_equal(
      store_ops_list(f->store, LINK, STORE_OP_PENDING, 100000, &ops, &n), 0);
  for (size_t i = 0; i < n; i++) {
    char target[64];
    int del = ops[i].kind == STORE_OP_DELETE;
    snprintf(target, sizeof(target), "t-%s", ops[i].source_id);
    assert_int_equal(store_op_complete(f->store, ops[i].id, LINK,
                                       ops[i].source_id, target, ops[i].hash,
                                       ops[i].desired,
                                       del ? "deleted" : "active", 1),
                     0);
  }
  store_ops_free(ops, n);
  return n;
}

/* Put people 0 to n-1 in the source as engineers, plan and execute: the
 * link is in step before a test's own changes. */
static void
in_step(struct fixture *f, int n)
{
  struct planner_stats st;

  for (int i = 0; i < n; i++)
    put_person(f, i, "Engineer", 0);
  plan(f, 0, &st);
  execute_all(f);
}

static void
idle_round_weighs_nothing(void **state)
{
  struct fixture *f = *state;
  struct planner_stats st;

  for (int i = 0; i < PEOPLE; i++)
    put_person(f, i, "Engineer", 0);
  plan(f, 0, &st);
  assert_int_equal(st.creates, PEOPLE);
  assert_int_equal(execute_all(f), PEOPLE);

  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 0);

  /* The delta gives the same values again (a full re-read): nothing. */
  put_person(f, 7, "Engineer", 0);
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 0);

  /* A dry run (galbridge plan) still weighs everyone, and finds nothing. */
  plan(f, 1, &st);
  assert_int_equal(st.unchanged, PEOPLE);
  assert_int_equal(st.creates + st.updates + st.deletes, 0);
}

/* Person `i` reporting to person `boss` (by their ids). */
static void
put_report(struct fixture *f, int i, int boss)
{
  char id[40], attrs[512];

  snprintf(id, sizeof(id), "%08d-0000-0000-0000-000000000000", i);
  snprintf(attrs, sizeof(attrs),
           "{\"displayName\":\"Person %d\",\"mail\":\"p%d@contoso.com\","
           "\"userType\":\"Member\",\"accountEnabled\":true,"
           "\"jobTitle\":\"Engineer\","
           "\"manager\":\"%08d-0000-0000-0000-000000000000\"}",
           i, i, boss);
  assert_int_equal(store_source_put(f->store, SRC, id, attrs, 0, 1), 0);
}

/* Managers (schema 7): a copy made asks for a decision on its reports
 * and on itself when it has a manager, so a report made before or with
 * its manager is linked in the next round; a manager's change of scope
 * weighs its reports; nothing else is weighed. */
static void
manager_copies_weigh_their_reports(void **state)
{
  struct fixture *f = *state;
  struct planner_stats st;

  f->link.manager = 1;
  in_step(f, 20);
  /* Person 20 comes, reporting to 21, who comes too: both made, neither
   * with a manager (a create never sends one). */
  put_report(f, 20, 21);
  put_person(f, 21, "Boss", 0);
  plan(f, 0, &st);
  assert_int_equal(st.creates, 2);
  assert_int_equal(execute_all(f), 2);
  /* The next round weighs the report (its copy and its manager's were
   * made) and sets its manager: one update. */
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 1);
  assert_int_equal(st.updates, 1);
  assert_int_equal(execute_all(f), 1);
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 0);

  /* The manager leaves the scope: its copy goes and the report is
   * weighed in the same round (its manager changed), then once more
   * when the delete is done. */
  put_person(f, 21, "Boss", 2);
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 2);
  assert_int_equal(st.deletes, 1);
  assert_int_equal(st.updates, 1);
  execute_all(f);
  plan(f, 0, &st);
  assert_int_equal(st.creates + st.updates + st.deletes, 0);
}

static void
round_weighs_only_changes(void **state)
{
  struct fixture *f = *state;
  struct planner_stats st;

  in_step(f, PEOPLE);

  put_person(f, 3, "Manager", 0);
  put_person(f, 1100, "Manager", 0);
  put_person(f, 9, "Engineer", 2); /* gone from the source */
  put_person(f, PEOPLE, "New", 0); /* a newcomer */
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 4);
  assert_int_equal(st.updates, 2);
  assert_int_equal(st.deletes, 1);
  assert_int_equal(st.creates, 1);
  assert_int_equal(execute_all(f), 4);
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 0);
}

/* One person (sync --user): only that object is weighed, its op alone is
 * written, and the link's next round still weighs every change it would
 * have (the plan mark did not move). */
static void
one_person_touches_nobody_else(void **state)
{
  struct fixture *f = *state;
  struct planner_stats st;
  struct store_op *ops = NULL;
  char *key = NULL;
  long long mark_before = 0, mark_after = 0;
  const char *one = "00000003-0000-0000-0000-000000000000";
  size_t n = 0;

  in_step(f, 20);
  put_person(f, 3, "Manager", 0);
  put_person(f, 11, "Manager", 0);
  put_person(f, 12, "Engineer", 2); /* gone: a delete for the round */
  assert_int_equal(store_plan_mark_get(f->store, LINK, &key, &mark_before), 0);
  free(key);

  f->pl.only = one;
  plan(f, 0, &st);
  f->pl.only = NULL;
  assert_int_equal(weighed(&st), 1);
  assert_int_equal(st.updates, 1);
  assert_int_equal(
      store_ops_list(f->store, LINK, STORE_OP_PENDING, 100, &ops, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(ops[0].source_id, one);
  assert_non_null(strstr(ops[0].payload, "Manager"));
  store_ops_free(ops, n);
  key = NULL;
  assert_int_equal(store_plan_mark_get(f->store, LINK, &key, &mark_after), 0);
  free(key);
  assert_int_equal(mark_after, mark_before);
  assert_int_equal(execute_all(f), 1);

  /* The round: the other two changes, and the one already applied is
   * weighed again and found in step. */
  plan(f, 0, &st);
  assert_int_equal(st.updates, 1);
  assert_int_equal(st.deletes, 1);
  assert_int_equal(st.unchanged, 1);
}

/* More changes than one chunk: the changed ids are listed once and read
 * chunk after chunk, each exactly once. */
static void
changes_over_several_chunks(void **state)
{
  struct fixture *f = *state;
  struct planner_stats st;

  in_step(f, PEOPLE);

  for (int i = 0; i < PEOPLE; i += 2)
    put_person(f, i, "Manager", 0);
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), PEOPLE / 2);
  assert_int_equal(st.updates, PEOPLE / 2);
  assert_int_equal(execute_all(f), PEOPLE / 2);
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 0);
}

static void
target_side_change_is_weighed(void **state)
{
  struct fixture *f = *state;
  struct planner_stats st;
  struct store_op *ops = NULL;
  size_t n = 0;

  in_step(f, 10);

  /* The target tenant's own delta says the object of person 4 is gone. */
  assert_int_equal(store_source_put(f->store, DST,
                                    "t-00000004-0000-0000-0000-000000000000",
                                    "{}", STORE_SOFT_DELETED, 1),
                   0);
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 1);
  assert_int_equal(st.creates, 1);
  assert_int_equal(
      store_ops_list(f->store, LINK, STORE_OP_PENDING, 10, &ops, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(ops[0].source_id,
                      "00000004-0000-0000-0000-000000000000");
  store_ops_free(ops, n);
}

static void
removed_target_row_is_weighed(void **state)
{
  struct fixture *f = *state;
  struct planner_stats st;
  struct store_op *ops = NULL;
  size_t n = 0;

  for (int i = 0; i < 5; i++)
    put_person(f, i, "Engineer", 0);
  plan(f, 0, &st);
  assert_int_equal(
      store_ops_list(f->store, LINK, STORE_OP_PENDING, 10, &ops, &n), 0);
  assert_int_equal(n, 5);
  /* The executor found the object gone and dropped the target row: the
   * object must be decided again although its source did not change. */
  assert_int_equal(store_op_complete(f->store, ops[2].id, LINK,
                                     ops[2].source_id, NULL, ops[2].hash, NULL,
                                     NULL, 1),
                   0);
  store_ops_free(ops, n);
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 1);
  assert_int_equal(st.creates, 1);
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 0);
}

static void
config_change_weighs_everyone(void **state)
{
  struct fixture *f = *state;
  struct planner_stats st;

  in_step(f, 20);
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 0);

  f->link.on_delete = CONFIG_ON_DELETE_HIDE;
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 20);
  assert_int_equal(st.unchanged, 20);
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 0);

  /* galbridge resync clears the key. */
  assert_int_equal(store_plan_mark_set(f->store, LINK, NULL, 0), 0);
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 20);
}

static void
held_deletes_are_weighed_every_round(void **state)
{
  struct fixture *f = *state;
  struct planner_stats st;
  struct store_link_counts c;
  long long held = -1;

  f->link.max_deletes = 2;
  in_step(f, 10);
  for (int i = 0; i < 3; i++)
    put_person(f, i, "Engineer", 2);
  plan(f, 0, &st);
  assert_int_equal(st.held, 3);

  /* One more delete next round: still over, four held. */
  put_person(f, 5, "Engineer", 2);
  plan(f, 0, &st);
  assert_int_equal(st.held, 4);

  /* The limit raised: the held ones go although none was weighed again. */
  f->link.max_deletes = 10;
  plan(f, 0, &st);
  assert_int_equal(weighed(&st), 0);
  assert_int_equal(st.held, 0);
  assert_int_equal(store_link_count_held(f->store, LINK, &held), 0);
  assert_int_equal(held, 0);
  assert_int_equal(execute_all(f), 4);
  /* Kept by triggers: ten made, four deleted. */
  assert_int_equal(store_link_counts(f->store, LINK, &c), 0);
  assert_int_equal(c.objects, 6);
}

/* The share guard: more than max_delete_share of the link's copies in
 * one round are held even under max_deletes, but only above the floor
 * (CONFIG_DELETE_SHARE_FLOOR): a small link deletes a few freely. */
static void
delete_share_is_held(void **state)
{
  struct fixture *f = *state;
  struct planner_stats st;
  long long held = -1;

  f->link.max_deletes = 10000;
  f->link.max_delete_share = 10;
  in_step(f, 200);
  /* 20 of 200 is 10%: not more than the share, they go. */
  for (int i = 0; i < 20; i++)
    put_person(f, i, "Engineer", 2);
  plan(f, 0, &st);
  assert_int_equal(st.deletes, 20);
  assert_int_equal(st.held, 0);
  assert_int_equal(execute_all(f), 20);
  /* 19 more of the 180 left is 10.6%: all held. */
  for (int i = 20; i < 39; i++)
    put_person(f, i, "Engineer", 2);
  plan(f, 0, &st);
  assert_int_equal(st.held, 19);
  assert_int_equal(execute_all(f), 0);
  /* approve-deletes lets them through; the next round holds nothing. */
  assert_int_equal(store_link_approve(f->store, LINK, &held), 0);
  assert_int_equal(held, 19);
  plan(f, 0, &st);
  assert_int_equal(st.held, 0);
  assert_int_equal(execute_all(f), 19);

  /* The floor: 10 of a small link's copies go whatever their share. */
  assert_int_equal(planner_deletes_over(&f->link, 10, 20), 0);
  assert_int_equal(planner_deletes_over(&f->link, 11, 20), 1);
  assert_int_equal(planner_deletes_over(&f->link, 11, 110), 0);
  assert_int_equal(planner_deletes_over(&f->link, 12, 110), 1);
  /* 100% is no share guard; max_deletes still counts alone. */
  f->link.max_delete_share = 100;
  assert_int_equal(planner_deletes_over(&f->link, 500, 20), 0);
  f->link.max_deletes = 5;
  assert_int_equal(planner_deletes_over(&f->link, 6, 1000), 1);
}

/* The create burst guard: a round creating more than max_creates holds
 * them all, except the link's first (no copies yet); approve-creates lets
 * them through, the hold outlives a restart (it is in the state), and a
 * round under the limit releases what earlier rounds held. Held creates
 * are apart from held deletes. */
static void
create_burst_is_held(void **state)
{
  struct fixture *f = *state;
  struct planner_stats st;
  struct store_link_counts c;
  long long n = -1;
  char err[256];

  f->link.max_creates = 5;
  in_step(f, 20); /* the first round: 20 made although over 5 */
  assert_int_equal(store_link_counts(f->store, LINK, &c), 0);
  assert_int_equal(c.objects, 20);
  /* Copies, but no round ended in success yet (a first fill whose
   * partial rounds made some): still the fill, not held. */
  for (int i = 100; i < 110; i++)
    put_person(f, i, "Engineer", 0);
  plan(f, 0, &st);
  assert_int_equal(st.creates, 10);
  assert_int_equal(st.creates_held, 0);
  assert_int_equal(execute_all(f), 10);
  assert_int_equal(store_link_success(f->store, LINK, 1000), 0);

  for (int i = 20; i < 25; i++) /* 5: not more than the limit */
    put_person(f, i, "Engineer", 0);
  plan(f, 0, &st);
  assert_int_equal(st.creates, 5);
  assert_int_equal(st.creates_held, 0);
  assert_int_equal(execute_all(f), 5);

  for (int i = 25; i < 31; i++) /* 6: held, none run */
    put_person(f, i, "Engineer", 0);
  plan(f, 0, &st);
  assert_int_equal(st.creates_held, 6);
  assert_int_equal(st.held, 0);
  assert_int_equal(execute_all(f), 0);
  assert_int_equal(store_link_counts(f->store, LINK, &c), 0);
  assert_int_equal(c.creates_held, 6);
  assert_int_equal(c.deletes_held, 0);
  /* approve-deletes does not release creates */
  assert_int_equal(store_link_approve(f->store, LINK, &n), 0);
  assert_int_equal(n, 0);

  /* A restart: the store closed and opened again keeps the hold. */
  store_close(f->store);
  assert_int_equal(store_open(f->dir, &f->store, err, sizeof(err)), 0);
  plan(f, 0, &st);
  assert_int_equal(st.creates_held, 6);
  assert_int_equal(execute_all(f), 0);

  /* Two leave the scope: four left, under the limit, they all go. */
  put_person(f, 25, "Engineer", 2);
  put_person(f, 26, "Engineer", 2);
  plan(f, 0, &st);
  assert_int_equal(st.creates_held, 0);
  assert_int_equal(execute_all(f), 4);

  /* Another burst, approved: released once, not held again. */
  for (int i = 40; i < 50; i++)
    put_person(f, i, "Engineer", 0);
  plan(f, 0, &st);
  assert_int_equal(st.creates_held, 10);
  assert_int_equal(store_link_approve_creates(f->store, LINK, &n), 0);
  assert_int_equal(n, 10);
  plan(f, 0, &st);
  assert_int_equal(st.creates_held, 0);
  assert_int_equal(execute_all(f), 10);
  assert_int_equal(store_link_counts(f->store, LINK, &c), 0);
  assert_int_equal(c.objects, 20 + 10 + 5 + 4 + 10);

  /* One person's plan (sync --user) is never held. */
  put_person(f, 60, "Engineer", 0);
  f->link.max_creates = 0;
  f->pl.only = "00000060-0000-0000-0000-000000000000";
  plan(f, 0, &st);
  f->pl.only = NULL;
  assert_int_equal(st.creates_held, 0);
  assert_int_equal(execute_all(f), 1);
}

/* Random changes: after each, an incremental round then a dry run over
 * everything must find nothing left to do. */
static void
incremental_matches_full(void **state)
{
  struct fixture *f = *state;
  struct planner_stats st;
  unsigned seed = 12345;

  for (int i = 0; i < 300; i++)
    put_person(f, i, "Engineer", 0);
  for (int round = 0; round < 20; round++) {
    for (int k = 0; k < 15; k++) {
      int who;
      seed = seed * 1103515245u + 12345u;
      who = (int)((seed >> 8) % 330);
      put_person(f, who, (seed >> 4) & 1 ? "Manager" : "Engineer",
                 ((seed >> 5) % 7 == 0) ? 2 : 0);
    }
    plan(f, 0, &st);
    execute_all(f);
    plan(f, 1, &st);
    assert_int_equal(st.creates + st.updates + st.deletes + st.restores, 0);
  }
}

/* Two people with one long address (900 bytes) both fail, each op's
 * reason naming the address and the other person whole: reasons are
 * sized from what they name (they were cut at 767 bytes once). */
static void
long_address_conflict_is_named_whole(void **state)
{
  struct fixture *f = *state;
  struct planner_stats st;
  struct store_op *ops = NULL;
  size_t n = 0, len = 900;
  char *addr = malloc(len + 1), *attrs, *want;
  const char *ids[2] = {"00000001-0000-0000-0000-000000000000",
                        "00000002-0000-0000-0000-000000000000"};

  assert_non_null(addr);
  memset(addr, 'x', len);
  memcpy(addr + len - 12, "@contoso.com", 13);
  attrs = malloc(len + 128);
  want = malloc(len + 256);
  assert_non_null(attrs);
  assert_non_null(want);
  snprintf(attrs, len + 128,
           "{\"displayName\":\"Twin\",\"mail\":\"%s\","
           "\"userType\":\"Member\",\"accountEnabled\":true}",
           addr);
  for (int i = 0; i < 2; i++)
    assert_int_equal(store_source_put(f->store, SRC, ids[i], attrs, 0, 1), 0);
  plan(f, 0, &st);
  assert_int_equal(
      store_ops_list(f->store, LINK, STORE_OP_FAILED, 10, &ops, &n), 0);
  assert_int_equal(n, 2);
  for (size_t i = 0; i < n; i++) {
    const char *other =
        strcmp(ops[i].source_id, ids[0]) == 0 ? ids[1] : ids[0];
    snprintf(want, len + 256,
             "conflict: address %s is also the address of source object "
             "%s; neither is synced until one of them changes",
             addr, other);
    assert_int_equal(ops[i].kind, STORE_OP_FAIL);
    assert_non_null(ops[i].last_error);
    assert_string_equal(ops[i].last_error, want);
  }
  store_ops_free(ops, n);
  free(addr);
  free(attrs);
  free(want);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(idle_round_weighs_nothing, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(round_weighs_only_changes, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(one_person_touches_nobody_else, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(changes_over_several_chunks, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(target_side_change_is_weighed, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(removed_target_row_is_weighed, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(config_change_weighs_everyone, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(held_deletes_are_weighed_every_round,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(delete_share_is_held, setup, teardown),
      cmocka_unit_test_setup_teardown(create_burst_is_held, setup, teardown),
      cmocka_unit_test_setup_teardown(manager_copies_weigh_their_reports,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(incremental_matches_full, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(long_address_conflict_is_named_whole,
                                      setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
