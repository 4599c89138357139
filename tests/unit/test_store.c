/*
 * Unit tests: the store's schema, source objects and delta state,
 * including the full-read rule (only unseen objects are marked deleted, and
 * only when the read finishes) and invariant 1 (the delta link commits or
 * rolls back together with its page).
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
#include <sqlite3.h>

#include "log.h"
#include "store.h"

#define T1 "11111111-1111-1111-1111-111111111111"

struct fixture {
  char dir[64];
  struct store *store;
};

static int
setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  char err[256];

  snprintf(f->dir, sizeof(f->dir), "/tmp/galbridge-store-XXXXXX");
  if (mkdtemp(f->dir) == NULL)
    return -1;
  if (store_open(f->dir, &f->store, err, sizeof(err)) != 0) {
    print_error("store_open: %s\n", err);
    return -1;
  }
  *state = f;
  return 0;
}

static void
remove_dir(const char *dir)
{
  static const char *const names[] = {"state.db", "state.db-wal",
                                      "state.db-shm", "lock"};
  char path[128];
  for (size_t i = 0; i < 4; i++) {
    snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
    unlink(path);
  }
  rmdir(dir);
}

static int
teardown(void **state)
{
  struct fixture *f = *state;
  store_close(f->store);
  remove_dir(f->dir);
  free(f);
  return 0;
}

static void
put(struct store *s, const char *id, const char *attrs, int removed,
    long long gen)
{
  assert_int_equal(store_source_put(s, T1, id, attrs, removed, gen), 0);
}

static void
source_roundtrip(void **state)
{
  struct fixture *f = *state;
  char *attrs;
  int removed;

  assert_int_equal(store_source_get(f->store, T1, "u1", &attrs, &removed), 0);
  assert_null(attrs);
  put(f->store, "u1", "{\"displayName\":\"A\"}", STORE_PRESENT, 1);
  put(f->store, "u1", "{\"displayName\":\"B\"}", STORE_SOFT_DELETED, 2);
  assert_int_equal(store_source_get(f->store, T1, "u1", &attrs, &removed), 0);
  assert_string_equal(attrs, "{\"displayName\":\"B\"}");
  assert_int_equal(removed, STORE_SOFT_DELETED);
  free(attrs);
  /* Another tenant's object of the same id is another row. */
  assert_int_equal(store_source_get(f->store, "other", "u1", &attrs, &removed),
                   0);
  assert_null(attrs);
}

static void
full_read_marks_only_unseen(void **state)
{
  struct fixture *f = *state;
  struct store_source_counts c;
  struct store_delta_state st;
  long long gen, unseen;

  assert_int_equal(store_delta_start_full(f->store, T1, "id,mail", 100, &gen),
                   0);
  assert_int_equal(gen, 1);
  put(f->store, "a", "{}", STORE_PRESENT, gen);
  put(f->store, "b", "{}", STORE_PRESENT, gen);
  put(f->store, "c", "{}", STORE_PRESENT, gen);
  assert_int_equal(store_begin(f->store), 0);
  assert_int_equal(store_delta_finish(f->store, T1, "https://g/d?1",
                                      "https://g", gen, 101, &unseen),
                   0);
  assert_int_equal(store_commit(f->store), 0);
  assert_int_equal(unseen, 0);

  /* The token expires: a second full read sees a and c only. While it
   * runs, b is still present. */
  assert_int_equal(store_delta_start_full(f->store, T1, "id,mail", 200, &gen),
                   0);
  assert_int_equal(gen, 2);
  assert_int_equal(store_delta_get(f->store, T1, &st), 0);
  assert_null(st.delta_link);
  assert_true(st.full);
  store_delta_state_clear(&st);
  put(f->store, "a", "{}", STORE_PRESENT, gen);
  put(f->store, "c", "{}", STORE_PRESENT, gen);
  assert_int_equal(store_source_count(f->store, T1, &c), 0);
  assert_int_equal(c.present, 3);

  assert_int_equal(store_begin(f->store), 0);
  assert_int_equal(store_delta_finish(f->store, T1, "https://g/d?2",
                                      "https://g", gen, 201, &unseen),
                   0);
  assert_int_equal(store_commit(f->store), 0);
  assert_int_equal(unseen, 1);
  assert_int_equal(store_source_count(f->store, T1, &c), 0);
  assert_int_equal(c.present, 2);
  assert_int_equal(c.deleted, 1);

  assert_int_equal(store_delta_get(f->store, T1, &st), 0);
  assert_string_equal(st.delta_link, "https://g/d?2");
  assert_string_equal(st.select, "id,mail");
  assert_false(st.full);
  assert_int_equal(st.last_round, 201);
  store_delta_state_clear(&st);

  /* A delta round never marks anything unseen. */
  assert_int_equal(store_delta_start(f->store, T1, 300), 0);
  assert_int_equal(store_begin(f->store), 0);
  assert_int_equal(store_delta_finish(f->store, T1, "https://g/d?3",
                                      "https://g", gen, 301, &unseen),
                   0);
  assert_int_equal(store_commit(f->store), 0);
  assert_int_equal(unseen, 0);
}

static void
delta_link_rolls_back_with_page(void **state)
{
  struct fixture *f = *state;
  struct store_delta_state st;
  char *attrs;
  int removed;
  long long gen;

  assert_int_equal(store_delta_start_full(f->store, T1, "id", 1, &gen), 0);
  assert_int_equal(store_begin(f->store), 0);
  put(f->store, "x", "{\"v\":1}", STORE_PRESENT, gen);
  assert_int_equal(store_delta_finish(f->store, T1, "https://g/d", "https://g",
                                      gen, 2, NULL),
                   0);
  store_rollback(f->store);

  assert_int_equal(store_delta_get(f->store, T1, &st), 0);
  assert_null(st.delta_link);
  assert_true(st.full);
  store_delta_state_clear(&st);
  assert_int_equal(store_source_get(f->store, T1, "x", &attrs, &removed), 0);
  assert_null(attrs);
}

static void
finish_without_state_fails(void **state)
{
  struct fixture *f = *state;
  assert_int_equal(store_begin(f->store), 0);
  assert_int_equal(
      store_delta_finish(f->store, "nobody", "l", "b", 1, 1, NULL), -1);
  store_rollback(f->store);
}

/* The Graph base URL goes and comes with the delta link. */
static void
delta_link_keeps_its_base_url(void **state)
{
  struct fixture *f = *state;
  struct store_delta_state st;
  long long gen;

  assert_int_equal(store_delta_start_full(f->store, T1, "id", 1, &gen), 0);
  assert_int_equal(store_begin(f->store), 0);
  assert_int_equal(store_delta_finish(f->store, T1, "https://g:1/d?x",
                                      "https://g:1", gen, 2, NULL),
                   0);
  assert_int_equal(store_commit(f->store), 0);
  assert_int_equal(store_delta_get(f->store, T1, &st), 0);
  assert_string_equal(st.delta_link, "https://g:1/d?x");
  assert_string_equal(st.base_url, "https://g:1");
  store_delta_state_clear(&st);

  assert_int_equal(store_delta_reset(f->store, T1), 0);
  assert_int_equal(store_delta_get(f->store, T1, &st), 0);
  assert_null(st.delta_link);
  assert_null(st.base_url);
  store_delta_state_clear(&st);
}

/* The change sequence of one object (ST_SOURCE_PUT's seq), read with
 * SQLite itself. */
static long long
seq_of(struct fixture *f, const char *id, char **bad)
{
  char path[128];
  sqlite3 *db;
  sqlite3_stmt *st;
  long long seq = -1;

  snprintf(path, sizeof(path), "%s/state.db", f->dir);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db,
                                      "SELECT seq, bad FROM source_object"
                                      " WHERE tenant = ?1 AND id = ?2",
                                      -1, &st, NULL),
                   SQLITE_OK);
  sqlite3_bind_text(st, 1, T1, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
  if (sqlite3_step(st) == SQLITE_ROW) {
    const unsigned char *b = sqlite3_column_text(st, 1);
    seq = sqlite3_column_int64(st, 0);
    *bad = b != NULL ? strdup((const char *)b) : NULL;
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return seq;
}

/* A refused item leaves the stored attributes and removed state as they
 * were, counts as seen (a full read does not mark it gone), and keeps its
 * reason until an accepted item clears it; each change of the reason
 * brings the object into the next incremental plan. */
static void
refused_item_keeps_object(void **state)
{
  struct fixture *f = *state;
  struct store_source_counts c;
  char *attrs, *bad = NULL;
  int removed;
  long long gen, unseen, seq, seq2;

  assert_int_equal(store_delta_start_full(f->store, T1, "id", 1, &gen), 0);
  put(f->store, "u1", "{\"displayName\":\"A\"}", STORE_PRESENT, gen);
  put(f->store, "u2", "{}", STORE_PRESENT, gen);
  seq = seq_of(f, "u1", &bad);
  assert_null(bad);

  /* A second full read: u1's item is refused, u2 is not seen, u3 is new
   * and refused. */
  assert_int_equal(store_delta_start_full(f->store, T1, "id", 2, &gen), 0);
  assert_int_equal(
      store_source_bad(f->store, T1, "u1", "displayName: bad", gen), 0);
  assert_int_equal(store_source_bad(f->store, T1, "u3", "mail: bad", gen), 0);
  assert_int_equal(store_begin(f->store), 0);
  assert_int_equal(store_delta_finish(f->store, T1, "https://g/d", "https://g",
                                      gen, 3, &unseen),
                   0);
  assert_int_equal(store_commit(f->store), 0);
  assert_int_equal(unseen, 1); /* u2 only */
  assert_int_equal(store_source_get(f->store, T1, "u1", &attrs, &removed), 0);
  assert_string_equal(attrs, "{\"displayName\":\"A\"}");
  assert_int_equal(removed, STORE_PRESENT);
  free(attrs);
  seq2 = seq_of(f, "u1", &bad);
  assert_string_equal(bad, "displayName: bad");
  free(bad);
  assert_true(seq2 > seq);
  assert_int_equal(store_source_get(f->store, T1, "u3", &attrs, &removed), 0);
  assert_string_equal(attrs, "{}");
  free(attrs);
  assert_int_equal(store_source_count(f->store, T1, &c), 0);
  assert_int_equal(c.present, 2);

  /* The same refusal again changes nothing; an accepted item clears it,
   * even with the same attributes. */
  assert_int_equal(
      store_source_bad(f->store, T1, "u1", "displayName: bad", gen), 0);
  assert_int_equal(seq_of(f, "u1", &bad), seq2);
  free(bad);
  put(f->store, "u1", "{\"displayName\":\"A\"}", STORE_PRESENT, gen);
  assert_true(seq_of(f, "u1", &bad) > seq2);
  assert_null(bad);
}

/* Plan rows carry the refusal. */
static int
on_plan_row(void *ctx, const struct store_plan_row *row)
{
  char **seen = ctx;
  if (strcmp(row->source_id, "u1") == 0)
    seen[0] = row->bad != NULL ? strdup(row->bad) : strdup("(null)");
  else
    seen[1] = row->bad != NULL ? strdup(row->bad) : strdup("(null)");
  return 0;
}

static void
plan_rows_carry_bad(void **state)
{
  struct fixture *f = *state;
  char *seen[2] = {NULL, NULL};

  put(f->store, "u1", "{}", STORE_PRESENT, 1);
  put(f->store, "u2", "{}", STORE_PRESENT, 1);
  assert_int_equal(store_source_bad(f->store, T1, "u1", "city: bad", 1), 0);
  assert_int_equal(store_plan_rows(f->store, "l", T1, "other", -1, "", 0,
                                   on_plan_row, seen),
                   0);
  assert_string_equal(seen[0], "city: bad");
  assert_string_equal(seen[1], "(null)");
  free(seen[0]);
  free(seen[1]);
}

static void
link_counts_empty(void **state)
{
  struct fixture *f = *state;
  struct store_link_counts c;
  assert_int_equal(store_link_counts(f->store, "a-to-b", &c), 0);
  assert_int_equal(c.objects, 0);
  assert_int_equal(c.pending, 0);
  assert_int_equal(c.failed, 0);
  assert_int_equal(c.deletes_held, 0);
  assert_int_equal(c.last_success, 0);
}

/* The op of `source_id` in `state` (0 if none); *next_try its next try. */
static long long
op_of(struct store *s, enum store_op_state state, const char *source_id,
      time_t *next_try)
{
  struct store_op *ops;
  size_t n;
  long long id = 0;

  assert_int_equal(store_ops_list(s, "a-to-b", state, 100, &ops, &n), 0);
  for (size_t i = 0; i < n; i++) {
    if (strcmp(ops[i].source_id, source_id) == 0) {
      id = ops[i].id;
      if (next_try != NULL)
        *next_try = ops[i].next_try;
    }
  }
  store_ops_free(ops, n);
  return id;
}

static void
put_op(struct store *s, const char *source_id, enum store_op_kind kind,
       time_t now)
{
  assert_int_equal(store_op_put(s, "a-to-b", source_id, kind, "{}", "{}", "h",
                                STORE_OP_PENDING, NULL, NULL, 0, now),
                   0);
}

static long long
requeue(struct store *s, time_t now)
{
  long long n = -1;

  assert_int_equal(store_ops_retry_due(s, "a-to-b", now, &n), 0);
  return n;
}

/* An op failed for good is tried again after 1 hour, then about twice as
 * long each time, at most 24 hours; the planner's own refusals (kinds
 * "fail" and "conflict") are not; a new op or resync starts afresh. */
static void
failed_ops_retried_after_growing_backoff(void **state)
{
  struct fixture *f = *state;
  const time_t t0 = 1700000000;
  time_t next = -1, t;
  long long id;

  put_op(f->store, "s1", STORE_OP_UPDATE, t0);
  put_op(f->store, "s2", STORE_OP_FAIL, t0);
  put_op(f->store, "s3", STORE_OP_CONFLICT, t0);
  id = op_of(f->store, STORE_OP_PENDING, "s1", NULL);
  /* A passing failure stays pending, with no next try. */
  assert_int_equal(store_op_fail(f->store, id, 0, "busy", t0 + 5, &next), 0);
  assert_int_equal(next, 0);
  assert_int_equal(op_of(f->store, STORE_OP_PENDING, "s1", &next), id);
  assert_int_equal(next, 0);
  /* For good: one hour. */
  assert_int_equal(store_op_fail(f->store, id, 1, "refused", t0 + 10, &next),
                   0);
  assert_int_equal(next, t0 + 10 + 3600);
  assert_int_equal(op_of(f->store, STORE_OP_FAILED, "s1", &next), id);
  assert_int_equal(next, t0 + 10 + 3600);
  for (int i = 2; i <= 3; i++) {
    long long other =
        op_of(f->store, STORE_OP_PENDING, i == 2 ? "s2" : "s3", NULL);
    assert_int_equal(store_op_fail(f->store, other, 1, "x", t0 + 10, NULL), 0);
  }
  /* Not before its time; then back to pending, keeping its next try. */
  assert_int_equal(requeue(f->store, t0 + 10 + 3599), 0);
  assert_int_equal(requeue(f->store, t0 + 10 + 3600), 1);
  assert_int_equal(op_of(f->store, STORE_OP_PENDING, "s1", &next), id);
  assert_int_equal(next, t0 + 10 + 3600);
  assert_int_not_equal(op_of(f->store, STORE_OP_FAILED, "s2", NULL), 0);
  assert_int_not_equal(op_of(f->store, STORE_OP_FAILED, "s3", NULL), 0);
  /* Failing again: about two hours, then about four. */
  t = t0 + 10 + 3600 + 5;
  assert_int_equal(store_op_fail(f->store, id, 1, "refused", t, &next), 0);
  assert_in_range(next - t, 2 * 3600, 2 * 3600 + 60);
  assert_int_equal(requeue(f->store, next), 1);
  t = next;
  assert_int_equal(store_op_fail(f->store, id, 1, "refused", t, &next), 0);
  assert_in_range(next - t, 4 * 3600, 4 * 3600 + 60);
  /* Never more than a day. */
  assert_int_equal(requeue(f->store, next), 1);
  t = t0 + 40 * 86400;
  assert_int_equal(store_op_fail(f->store, id, 1, "refused", t, &next), 0);
  assert_int_equal(next, t + 86400);
  /* A new op for the object (its source changed) starts afresh. */
  put_op(f->store, "s1", STORE_OP_UPDATE, t);
  id = op_of(f->store, STORE_OP_PENDING, "s1", &next);
  assert_int_equal(next, 0);
  assert_int_equal(store_op_fail(f->store, id, 1, "refused", t + 1, &next), 0);
  assert_int_equal(next, t + 1 + 3600);
  /* So does resync, which puts back every failed op, the planner's own
   * refusals included. */
  long long cleared = 0;
  assert_int_equal(store_link_clear_failed(f->store, "a-to-b", &cleared), 0);
  assert_int_equal(cleared, 3);
  assert_int_equal(op_of(f->store, STORE_OP_PENDING, "s1", &next), id);
  assert_int_equal(next, 0);
  assert_int_equal(store_op_fail(f->store, id, 1, "refused", t + 9, &next), 0);
  assert_int_equal(next, t + 9 + 3600);
}

/* Kinds and states are enums in the code and their names in the
 * database: the names are the text state directories have always held,
 * and each comes back as what it was. */
static void
op_names_round_trip(void **state)
{
  static const char *const kinds[] = {
      [STORE_OP_NONE] = "none",          [STORE_OP_CREATE] = "create",
      [STORE_OP_UPDATE] = "update",      [STORE_OP_DELETE] = "delete",
      [STORE_OP_DISABLE] = "disable",    [STORE_OP_HIDE] = "hide",
      [STORE_OP_RESTORE] = "restore",    [STORE_OP_ADOPT] = "adopt",
      [STORE_OP_TAKEOVER] = "take-over", [STORE_OP_FAIL] = "fail",
      [STORE_OP_CONFLICT] = "conflict",
  };
  static const char *const states[] = {
      [STORE_OP_PENDING] = "pending",
      [STORE_OP_HELD] = "held",
      [STORE_OP_FAILED] = "failed",
  };
  enum store_op_kind k = STORE_OP_NONE;
  enum store_op_state st = STORE_OP_PENDING;

  (void)state;
  for (int i = STORE_OP_NONE; i <= STORE_OP_CONFLICT; i++) {
    assert_string_equal(store_op_kind_name((enum store_op_kind)i), kinds[i]);
    assert_int_equal(store_op_kind_parse(kinds[i], &k), 0);
    assert_int_equal(k, i);
  }
  for (int i = STORE_OP_PENDING; i <= STORE_OP_FAILED; i++) {
    assert_string_equal(store_op_state_name((enum store_op_state)i),
                        states[i]);
    assert_int_equal(store_op_state_parse(states[i], &st), 0);
    assert_int_equal(st, i);
  }
  /* Anything else is refused, and the value is left as it was. */
  k = STORE_OP_HIDE;
  assert_int_equal(store_op_kind_parse("explode", &k), -1);
  assert_int_equal(store_op_kind_parse("Create", &k), -1);
  assert_int_equal(store_op_kind_parse("", &k), -1);
  assert_int_equal(store_op_kind_parse(NULL, &k), -1);
  assert_int_equal(k, STORE_OP_HIDE);
  assert_int_equal(store_op_state_parse("pending ", &st), -1);
  assert_int_equal(store_op_state_parse(NULL, &st), -1);
  assert_string_equal(store_op_kind_name((enum store_op_kind)99), "unknown");
  assert_string_equal(store_op_state_name((enum store_op_state)99), "unknown");
}

/* Run `sql` on the fixture's database with SQLite itself, beside the
 * store (what another version, or a damaged file, would hold). */
static void
raw_sql(struct fixture *f, const char *sql)
{
  char path[128];
  sqlite3 *db;

  snprintf(path, sizeof(path), "%s/state.db", f->dir);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
}

/* The kind and state text of the op of (a-to-b, source_id), read with
 * SQLite itself. */
static void
raw_op(struct fixture *f, const char *source_id, char kind[16], char state[16])
{
  char path[128];
  sqlite3 *db;
  sqlite3_stmt *st;

  snprintf(path, sizeof(path), "%s/state.db", f->dir);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db,
                                      "SELECT kind, state FROM op"
                                      " WHERE link = 'a-to-b' AND"
                                      " source_id = ?1",
                                      -1, &st, NULL),
                   SQLITE_OK);
  sqlite3_bind_text(st, 1, source_id, -1, SQLITE_STATIC);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  snprintf(kind, 16, "%s", (const char *)sqlite3_column_text(st, 0));
  snprintf(state, 16, "%s", (const char *)sqlite3_column_text(st, 1));
  sqlite3_finalize(st);
  sqlite3_close(db);
}

struct op_seen {
  enum store_op_kind kind[16];
  enum store_op_state state[16];
  int rows, with_op;
};

/* Plan rows of sources "k<kind>" (and "none", without an op). */
static int
on_op_row(void *ctx, const struct store_plan_row *row)
{
  struct op_seen *seen = ctx;

  seen->rows++;
  if (row->op_id == 0) {
    assert_string_equal(row->source_id, "none");
    assert_int_equal(row->op_kind, STORE_OP_NONE);
    return 0;
  }
  seen->with_op++;
  seen->kind[row->source_id[1] - 'a'] = row->op_kind;
  seen->state[row->source_id[1] - 'a'] = row->op_state;
  return 0;
}

/* Every kind an op is put with, in every state, is written as its name
 * and read back as itself, by the outbox and by the planner's rows. */
static void
op_kind_and_state_round_trip(void **state)
{
  struct fixture *f = *state;
  struct op_seen seen = {0};

  put(f->store, "none", "{}", STORE_PRESENT, 1);
  for (int k = STORE_OP_CREATE; k <= STORE_OP_CONFLICT; k++) {
    char id[3] = {'k', (char)('a' + k), '\0'}, kind[16], st[16];
    enum store_op_state s = (enum store_op_state)(k % 3);

    put(f->store, id, "{}", STORE_PRESENT, 1);
    assert_int_equal(store_op_put(f->store, "a-to-b", id,
                                  (enum store_op_kind)k, "{}", "{}", "h", s,
                                  "t1", NULL, 0, 100),
                     0);
    raw_op(f, id, kind, st);
    assert_string_equal(kind, store_op_kind_name((enum store_op_kind)k));
    assert_string_equal(st, store_op_state_name(s));
  }
  for (int s = STORE_OP_PENDING; s <= STORE_OP_FAILED; s++) {
    struct store_op *ops;
    size_t n;

    assert_int_equal(store_ops_list(f->store, "a-to-b", (enum store_op_state)s,
                                    100, &ops, &n),
                     0);
    assert_true(n >= 2);
    for (size_t i = 0; i < n; i++) {
      int k = ops[i].source_id[1] - 'a';
      assert_int_equal(ops[i].kind, k);
      assert_int_equal(ops[i].state, s);
      assert_int_equal(k % 3, s);
    }
    store_ops_free(ops, n);
  }
  assert_int_equal(store_plan_rows(f->store, "a-to-b", T1, "other", -1, "", 0,
                                   on_op_row, &seen),
                   0);
  assert_int_equal(seen.rows, 1 + STORE_OP_CONFLICT);
  assert_int_equal(seen.with_op, STORE_OP_CONFLICT);
  for (int k = STORE_OP_CREATE; k <= STORE_OP_CONFLICT; k++) {
    assert_int_equal(seen.kind[k], k);
    assert_int_equal(seen.state[k], k % 3);
  }
}

static char sink_buf[4096];

static void
sink(void *ctx, enum log_level level, const char *line)
{
  size_t len = strlen(sink_buf);

  (void)ctx;
  if (level == LOG_LEVEL_ERROR)
    snprintf(sink_buf + len, sizeof(sink_buf) - len, "%s\n", line);
}

static int
row_never(void *ctx, const struct store_plan_row *row)
{
  (void)ctx;
  (void)row;
  fail_msg("a row of an op that cannot be read reached the planner");
  return 0;
}

/* A kind or state the database holds that this galbridge does not know
 * (a later version's, a damaged file) is an error naming the op, never a
 * guess: the outbox and the plan rows refuse to read it. */
static void
unknown_stored_kind_is_an_error(void **state)
{
  struct fixture *f = *state;
  struct store_op *ops = (struct store_op *)&ops;
  size_t n = 99;
  long long id;
  char want[128];

  put(f->store, "s1", "{}", STORE_PRESENT, 1);
  put_op(f->store, "s1", STORE_OP_UPDATE, 100);
  id = op_of(f->store, STORE_OP_PENDING, "s1", NULL);
  raw_sql(f, "UPDATE op SET kind = 'explode'");

  sink_buf[0] = '\0';
  log_set_sink(sink, NULL);
  assert_int_equal(
      store_ops_list(f->store, "a-to-b", STORE_OP_PENDING, 10, &ops, &n), -1);
  assert_null(ops);
  assert_int_equal(n, 0);
  snprintf(want, sizeof(want),
           "op of unknown kind link=a-to-b op_id=%lld kind=\"explode\"", id);
  assert_non_null(strstr(sink_buf, want));
  sink_buf[0] = '\0';
  assert_int_equal(store_plan_rows(f->store, "a-to-b", T1, "other", -1, "", 0,
                                   row_never, NULL),
                   -1);
  assert_non_null(strstr(sink_buf, want));

  /* The same for a state. */
  raw_sql(f, "UPDATE op SET kind = 'update', state = 'limbo'");
  sink_buf[0] = '\0';
  assert_int_equal(store_plan_rows(f->store, "a-to-b", T1, "other", -1, "", 0,
                                   row_never, NULL),
                   -1);
  snprintf(want, sizeof(want),
           "op in unknown state link=a-to-b op_id=%lld state=\"limbo\"", id);
  assert_non_null(strstr(sink_buf, want));
  log_set_sink(NULL, NULL);

  /* Put right, it reads again: the store itself was not harmed. */
  raw_sql(f, "UPDATE op SET state = 'pending'");
  assert_int_equal(op_of(f->store, STORE_OP_PENDING, "s1", NULL), id);
}

static struct store_op *
the_op(struct store *s, const char *link, struct store_op **ops, size_t *n)
{
  assert_int_equal(store_ops_list(s, link, STORE_OP_PENDING, 10, ops, n), 0);
  assert_int_equal(*n, 1);
  return &(*ops)[0];
}

/* Who owns a target object: any link or source object but the one
 * asking, however many name it (two links' lost states both took one
 * up); and a create's sent window survives a create replacing it. */
static void
target_owner_is_anyone_but_the_asker(void **state)
{
  struct fixture *f = *state;
  struct store_op *ops;
  size_t n;
  char *link, *sid;
  long long id;

  assert_int_equal(store_target_owner(f->store, "t1", NULL, NULL, &link, &sid),
                   0);
  assert_null(link);
  assert_null(sid);
  assert_int_equal(store_op_put(f->store, "a-to-b", "s1", STORE_OP_UPDATE,
                                "{}", "{}", "h", STORE_OP_PENDING, "t1", NULL,
                                0, 100),
                   0);
  assert_int_equal(store_op_put(f->store, "b-to-b", "s9", STORE_OP_UPDATE,
                                "{}", "{}", "h", STORE_OP_PENDING, "t1", NULL,
                                0, 100),
                   0);
  for (int round = 0; round < 2; round++) {
    const char *me = round == 0 ? "a-to-b" : "b-to-b";
    const char *other = round == 0 ? "b-to-b" : "a-to-b";
    assert_int_equal(store_target_owner(f->store, "t1", me,
                                        round == 0 ? "s1" : "s9", &link, &sid),
                     0);
    assert_non_null(link);
    assert_string_equal(link, other);
    assert_string_equal(sid, round == 0 ? "s9" : "s1");
    free(link);
    free(sid);
  }
  /* The same link, another source object: someone else too. */
  assert_int_equal(
      store_target_owner(f->store, "t1", "a-to-b", "s2", &link, &sid), 0);
  assert_non_null(link);
  free(link);
  free(sid);

  /* Sent and answered: kept by a create replacing a create, dropped by
   * any other op. */
  assert_int_equal(store_op_put(f->store, "c-to-b", "s1", STORE_OP_CREATE,
                                "{}", "{}", "h", STORE_OP_PENDING, NULL, NULL,
                                0, 100),
                   0);
  id = the_op(f->store, "c-to-b", &ops, &n)->id;
  assert_int_equal(ops[0].sent_at, 0);
  assert_int_equal(ops[0].sent_end, 0);
  store_ops_free(ops, n);
  assert_int_equal(store_op_sent(f->store, id, 1000, 0), 0);
  assert_int_equal(store_op_sent(f->store, id, 1000, 1042), 0);
  assert_int_equal(store_op_put(f->store, "c-to-b", "s1", STORE_OP_CREATE,
                                "{}", "{\"x\":1}", "h2", STORE_OP_PENDING,
                                NULL, NULL, 0, 200),
                   0);
  the_op(f->store, "c-to-b", &ops, &n);
  assert_int_equal(ops[0].sent_at, 1000);
  assert_int_equal(ops[0].sent_end, 1042);
  store_ops_free(ops, n);
  assert_int_equal(store_op_put(f->store, "c-to-b", "s1", STORE_OP_UPDATE,
                                "{}", "{}", "h3", STORE_OP_PENDING, "t5", NULL,
                                0, 300),
                   0);
  the_op(f->store, "c-to-b", &ops, &n);
  assert_int_equal(ops[0].sent_at, 0);
  assert_int_equal(ops[0].sent_end, 0);
  store_ops_free(ops, n);
}

static void
reopen_keeps_data_and_refuses_newer_schema(void **state)
{
  struct fixture *f = *state;
  char err[256], path[128], *attrs;
  sqlite3 *db;
  int removed;

  put(f->store, "keep", "{\"k\":1}", STORE_PRESENT, 1);
  store_close(f->store);
  f->store = NULL;
  assert_int_equal(store_open(f->dir, &f->store, err, sizeof(err)), 0);
  assert_int_equal(store_source_get(f->store, T1, "keep", &attrs, &removed),
                   0);
  assert_string_equal(attrs, "{\"k\":1}");
  free(attrs);
  store_close(f->store);
  f->store = NULL;

  snprintf(path, sizeof(path), "%s/state.db", f->dir);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(
      sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL),
      SQLITE_OK);
  sqlite3_close(db);
  assert_int_equal(store_open(f->dir, &f->store, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "schema version 99"));
  assert_null(f->store);
}

/* What the budget learnt: saved per gate and bucket, replaced, read back;
 * a row this version cannot read is nothing learnt. */
static void
budget_learnt_roundtrip(void **state)
{
  struct fixture *f = *state;
  struct store_budget in = {.limit = 3000,
                            .window = 150,
                            .capacity = 1500,
                            .rate = 9.75,
                            .window_model = 0};
  struct store_budget out;
  char path[128];
  sqlite3 *db;
  int found = 7;

  assert_int_equal(
      store_budget_get(f->store, "t/a/graph", "writes", &out, &found), 0);
  assert_int_equal(found, 0);
  assert_int_equal(store_budget_put(f->store, "t/a/graph", "writes", &in), 0);
  in.capacity = 1200;
  in.window_model = 1;
  assert_int_equal(store_budget_put(f->store, "t/a/graph", "writes", &in), 0);
  in.capacity = 100;
  assert_int_equal(store_budget_put(f->store, "t/a/graph", "units", &in), 0);
  assert_int_equal(
      store_budget_get(f->store, "t/a/graph", "writes", &out, &found), 0);
  assert_int_equal(found, 1);
  assert_true(out.limit == 3000 && out.window == 150 && out.capacity == 1200 &&
              out.rate == 9.75);
  assert_int_equal(out.window_model, 1);
  assert_int_equal(
      store_budget_get(f->store, "t/b/graph", "writes", &out, &found), 0);
  assert_int_equal(found, 0);
  store_close(f->store);
  f->store = NULL;
  snprintf(path, sizeof(path), "%s/state.db", f->dir);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db,
                                "UPDATE budget_learnt SET model = 'cone'"
                                " WHERE bucket = 'units'",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);
  {
    char err[256];
    assert_int_equal(store_open(f->dir, &f->store, err, sizeof(err)), 0);
  }
  assert_int_equal(
      store_budget_get(f->store, "t/a/graph", "units", &out, &found), 0);
  assert_int_equal(found, 0);
}

/* A state file of schema 5 (before the budget learnt anything) is
 * brought to 6 when opened: its data kept, the new table empty and
 * usable. */
static void
schema_5_migrates_to_6(void **state)
{
  struct fixture *f = *state;
  struct store_budget in = {.limit = 150,
                            .window = 5,
                            .capacity = 100,
                            .rate = 20,
                            .window_model = 0};
  struct store_budget out;
  char err[256], path[128], *attrs;
  sqlite3 *db;
  sqlite3_stmt *st;
  int removed, found;

  put(f->store, "old", "{\"k\":5}", STORE_PRESENT, 1);
  store_close(f->store);
  f->store = NULL;
  snprintf(path, sizeof(path), "%s/state.db", f->dir);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db,
                                "DROP TABLE budget_learnt;"
                                "DROP TABLE photo;"
                                "ALTER TABLE link_state DROP COLUMN object;"
                                "PRAGMA user_version = 5",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);

  assert_int_equal(store_open(f->dir, &f->store, err, sizeof(err)), 0);
  assert_int_equal(store_source_get(f->store, T1, "old", &attrs, &removed), 0);
  assert_string_equal(attrs, "{\"k\":5}");
  free(attrs);
  assert_int_equal(
      store_budget_get(f->store, "g", "invitations", &out, &found), 0);
  assert_int_equal(found, 0);
  assert_int_equal(store_budget_put(f->store, "g", "invitations", &in), 0);
  assert_int_equal(
      store_budget_get(f->store, "g", "invitations", &out, &found), 0);
  assert_int_equal(found, 1);
  assert_true(out.capacity == 100 && out.rate == 20);
  store_close(f->store);
  f->store = NULL;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(
      sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_int_equal(sqlite3_column_int(st, 0), STORE_SCHEMA_VERSION);
  sqlite3_finalize(st);
  sqlite3_close(db);
  assert_int_equal(store_open(f->dir, &f->store, err, sizeof(err)), 0);
}

/* A state file of schema 8 (links without a recorded object kind) is
 * brought to 9: its links keep their rows and have no kind until one is
 * recorded; a kind reads back with the link's objects. */
static void
schema_8_migrates_to_9(void **state)
{
  struct fixture *f = *state;
  char err[256], path[128], *kind = NULL;
  long long objects = -1, planned = 0;
  sqlite3 *db;

  assert_int_equal(store_plan_mark_set(f->store, "l", "key", 3), 0);
  store_close(f->store);
  f->store = NULL;
  snprintf(path, sizeof(path), "%s/state.db", f->dir);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db,
                                "ALTER TABLE link_state DROP COLUMN object;"
                                "PRAGMA user_version = 8",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);

  assert_int_equal(store_open(f->dir, &f->store, err, sizeof(err)), 0);
  assert_int_equal(store_plan_mark_get(f->store, "l", &kind, &planned), 0);
  assert_string_equal(kind, "key");
  assert_int_equal(planned, 3);
  free(kind);
  assert_int_equal(store_link_kind_get(f->store, "l", &kind, &objects), 0);
  assert_null(kind);
  assert_int_equal(objects, 0);
  assert_int_equal(store_link_kind_set(f->store, "l", "groupcontact"), 0);
  assert_int_equal(store_link_kind_set(f->store, "new", "mailcontact"), 0);
  assert_int_equal(store_link_kind_get(f->store, "l", &kind, &objects), 0);
  assert_string_equal(kind, "groupcontact");
  free(kind);
  assert_int_equal(store_link_kind_get(f->store, "new", &kind, &objects), 0);
  assert_string_equal(kind, "mailcontact");
  free(kind);
  assert_int_equal(store_link_kind_get(f->store, "none", &kind, &objects), 0);
  assert_null(kind);
}

static void
open_fails_cleanly_on_bad_dir(void **state)
{
  struct store *s = (struct store *)1;
  char err[256];
  (void)state;
  assert_int_equal(store_open("/proc/galbridge-no/such", &s, err, sizeof(err)),
                   -1);
  assert_null(s);
  assert_non_null(strstr(err, "state_dir"));
}

/* One process at a time: a second lock on the directory is refused with
 * the holder's pid, and taken once the first is let go. */
static void
lock_is_exclusive(void **state)
{
  struct fixture *f = *state;
  struct store_lock *a = NULL, *b = NULL;
  char err[512], want[64], path[128];
  struct stat sb;
  int busy = 0;

  assert_int_equal(store_lock(f->dir, &a, &busy, err, sizeof(err)), 0);
  assert_non_null(a);
  assert_int_equal(busy, 0);
  assert_int_equal(store_lock(f->dir, &b, &busy, err, sizeof(err)), -1);
  assert_null(b);
  assert_int_equal(busy, 1);
  snprintf(want, sizeof(want), "in use by another galbridge (pid %ld)",
           (long)getpid());
  assert_non_null(strstr(err, want));
  snprintf(path, sizeof(path), "%s/lock", f->dir);
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
  store_unlock(a);
  assert_int_equal(store_lock(f->dir, &b, &busy, err, sizeof(err)), 0);
  assert_int_equal(busy, 0);
  store_unlock(b);
  store_unlock(NULL);
}

/* Whatever the umask: the directory 0700, the database 0600, and a
 * database left readable by others is made 0600 again. */
static void
files_are_private(void **state)
{
  struct fixture *f = *state;
  char dir[80], path[160], err[256];
  struct store *s = NULL;
  struct stat sb;
  mode_t old = umask(022);

  snprintf(dir, sizeof(dir), "%s/sub", f->dir);
  assert_int_equal(store_open(dir, &s, err, sizeof(err)), 0);
  assert_int_equal(store_failed(s), 0);
  store_close(s);
  assert_int_equal(stat(dir, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0700);
  snprintf(path, sizeof(path), "%s/state.db", dir);
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
  assert_int_equal(chmod(path, 0644), 0);
  assert_int_equal(store_open(dir, &s, err, sizeof(err)), 0);
  store_close(s);
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
  umask(old);
  remove_dir(dir);
}

static long long
file_size(const char *dir, const char *name)
{
  char path[128];
  struct stat sb;

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* Read-only opens never make, change or migrate the file: missing stays
 * missing, a copy takes writes the file never sees, and a direct open
 * refuses them. */
static void
readonly_never_writes(void **state)
{
  struct fixture *f = *state;
  struct store *ro = NULL;
  char dir[64], err[256], *attrs;
  int missing = -1, removed;

  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/galbridge-store-XXXXXX");
  assert_non_null(mkdtemp(dir));
  assert_int_equal(
      store_open_readonly(dir, 0, &ro, &missing, err, sizeof(err)), 0);
  assert_int_equal(missing, 1);
  assert_int_equal(file_size(dir, "state.db"), -1);
  /* An empty state, with the schema: a plan may write into it. */
  assert_int_equal(store_source_put(ro, T1, "u1", "{}", STORE_PRESENT, 1), 0);
  store_close(ro);
  assert_int_equal(file_size(dir, "state.db"), -1);
  rmdir(dir);

  put(f->store, "u1", "{\"displayName\":\"A\"}", STORE_PRESENT, 1);
  store_close(f->store);
  f->store = NULL;

  assert_int_equal(
      store_open_readonly(f->dir, 0, &ro, &missing, err, sizeof(err)), 0);
  assert_int_equal(missing, 0);
  assert_int_equal(store_source_get(ro, T1, "u1", &attrs, &removed), 0);
  assert_string_equal(attrs, "{\"displayName\":\"A\"}");
  free(attrs);
  assert_int_equal(store_source_put(ro, T1, "u2", "{}", STORE_PRESENT, 1), -1);
  store_close(ro);

  assert_int_equal(
      store_open_readonly(f->dir, 1, &ro, &missing, err, sizeof(err)), 0);
  assert_int_equal(store_source_put(ro, T1, "u2", "{}", STORE_PRESENT, 1), 0);
  assert_int_equal(store_source_get(ro, T1, "u2", &attrs, &removed), 0);
  assert_non_null(attrs);
  free(attrs);
  store_close(ro);

  assert_int_equal(store_open(f->dir, &f->store, err, sizeof(err)), 0);
  assert_int_equal(store_source_get(f->store, T1, "u2", &attrs, &removed), 0);
  assert_null(attrs);
}

/* A target row of `link` for source object `sid`, made as the executor
 * makes one: an op, then its completion in `state`. */
static void
copy_row(struct store *s, const char *link, const char *sid, const char *tid,
         const char *state)
{
  struct store_op *ops;
  size_t n;

  assert_int_equal(store_op_put(s, link, sid, STORE_OP_CREATE, "{}", "{}", "h",
                                STORE_OP_PENDING, NULL, NULL, 0, 1),
                   0);
  assert_int_equal(store_ops_list(s, link, STORE_OP_PENDING, 10, &ops, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(
      store_op_complete(s, ops[0].id, link, sid, tid, "h", "{}", state, 1), 0);
  store_ops_free(ops, n);
}

/* Photo checks: which copies are due (never checked, due, or checked on
 * another target object; not a removed source object, not a deleted
 * copy), what a check records, and the counts of status. */
static void
photos_due_and_recorded(void **state)
{
  struct fixture *f = *state;
  struct store *s = f->store;
  struct store_photo_row *rows;
  struct store_photo got;
  struct store_photo ph = {.target_id = "t1",
                           .etag = "\"E1\"",
                           .checked_at = 100,
                           .next_check = 1000};
  long long written, failed;
  size_t n;
  int found;

  put(s, "s1", "{}", STORE_PRESENT, 1);
  put(s, "s2", "{}", STORE_PRESENT, 1);
  put(s, "s3", "{}", STORE_DELETED, 1);
  put(s, "s4", "{}", STORE_PRESENT, 1);
  copy_row(s, "L", "s1", "t1", "active");
  copy_row(s, "L", "s2", "t2", "active");
  copy_row(s, "L", "s3", "t3", "active");
  copy_row(s, "L", "s4", "t4", "deleted");
  assert_int_equal(store_photos_due(s, "L", T1, "T2", 500, 10, &rows, &n), 0);
  assert_int_equal(n, 2);
  assert_string_equal(rows[0].source_id, "s1");
  assert_string_equal(rows[0].target_id, "t1");
  assert_string_equal(rows[0].applied, "{}");
  assert_null(rows[0].etag);
  assert_null(rows[0].target_attrs);
  assert_string_equal(rows[1].source_id, "s2");
  store_photo_rows_free(rows, n);

  /* s1 checked: not due before next_check; its etag comes back then. */
  assert_int_equal(store_photo_put(s, "L", "s1", &ph), 0);
  assert_int_equal(store_photos_due(s, "L", T1, "T2", 500, 10, &rows, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(rows[0].source_id, "s2");
  store_photo_rows_free(rows, n);
  assert_int_equal(store_photos_due(s, "L", T1, "T2", 1000, 1, &rows, &n), 0);
  assert_int_equal(n, 1); /* the limit */
  store_photo_rows_free(rows, n);
  assert_int_equal(store_photos_due(s, "L", T1, "T2", 1000, 10, &rows, &n), 0);
  assert_int_equal(n, 2);
  assert_string_equal(rows[0].source_id, "s2"); /* never checked first */
  assert_string_equal(rows[1].etag, "\"E1\"");
  store_photo_rows_free(rows, n);
  assert_int_equal(store_photo_get(s, "L", "s1", &got, &found), 0);
  assert_int_equal(found, 1);
  assert_string_equal(got.target_id, "t1");
  assert_string_equal(got.etag, "\"E1\"");
  assert_int_equal(got.checked_at, 100);
  assert_int_equal(got.next_check, 1000);
  assert_null(got.error);
  store_photo_clear(&got);
  assert_int_equal(store_photo_get(s, "L", "s2", &got, &found), 0);
  assert_int_equal(found, 0);

  /* A failed check of s2 counts; s1's photo counts as written. The etag
   * refused comes back with the row, and its reason. */
  ph.target_id = "t2";
  ph.etag = NULL;
  ph.error = "too large";
  ph.skipped_etag = "\"BIG\"";
  assert_int_equal(store_photo_put(s, "L", "s2", &ph), 0);
  assert_int_equal(store_photos_due(s, "L", T1, "T2", 1000, 10, &rows, &n), 0);
  assert_int_equal(n, 2); /* both due at 1000: by id */
  assert_string_equal(rows[1].source_id, "s2");
  assert_string_equal(rows[1].skipped_etag, "\"BIG\"");
  assert_string_equal(rows[1].error, "too large");
  assert_null(rows[0].skipped_etag);
  assert_null(rows[0].error);
  store_photo_rows_free(rows, n);
  assert_int_equal(store_photo_counts(s, "L", &written, &failed), 0);
  assert_int_equal(written, 1);
  assert_int_equal(failed, 1);

  /* The copy of s1 is now another object: due at once, no etag (what
   * was written went on the old one). */
  store_close(f->store);
  f->store = NULL;
  {
    char err[256], path[128];
    sqlite3 *db;
    snprintf(path, sizeof(path), "%s/state.db", f->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "UPDATE target_object SET target_id = 't9'"
                                  " WHERE source_id = 's1'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(store_open(f->dir, &f->store, err, sizeof(err)), 0);
  }
  s = f->store;
  assert_int_equal(store_photos_due(s, "L", T1, "T2", 500, 10, &rows, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(rows[0].target_id, "t9");
  assert_null(rows[0].etag);
  store_photo_rows_free(rows, n);
}

/* Several successes in one transaction: each op's row written and the op
 * gone, progress counted once per op; one that cannot be written (no
 * hash) leaves every op of the batch in the outbox and no row. */
static void
ops_complete_in_one_transaction(void **state)
{
  struct fixture *f = *state;
  struct store *s = f->store;
  struct store_op *ops;
  struct store_link_counts c;
  struct store_done d[3];
  size_t n;

  assert_int_equal(store_link_run_start(s, "a-to-b", 1), 0);
  put_op(s, "s1", STORE_OP_CREATE, 1);
  put_op(s, "s2", STORE_OP_CREATE, 1);
  put_op(s, "s3", STORE_OP_UPDATE, 1);
  assert_int_equal(store_ops_list(s, "a-to-b", STORE_OP_PENDING, 10, &ops, &n),
                   0);
  assert_int_equal(n, 3);
  for (size_t i = 0; i < 3; i++)
    d[i] = (struct store_done){ops[i].id, ops[i].source_id, "t", "h",
                               "{}",      "active"};
  d[1].hash = NULL; /* NOT NULL: the whole batch fails */
  assert_int_equal(store_ops_complete(s, "a-to-b", d, 3, 2), -1);
  assert_int_equal(store_link_counts(s, "a-to-b", &c), 0);
  assert_int_equal(c.pending, 3);
  assert_int_equal(c.objects, 0);
  assert_int_equal(c.run_done, 0);
  d[1].hash = "h";
  d[2].state = NULL; /* forgotten: planned again, no row */
  assert_int_equal(store_ops_complete(s, "a-to-b", d, 3, 2), 0);
  assert_int_equal(store_link_counts(s, "a-to-b", &c), 0);
  assert_int_equal(c.pending, 0);
  assert_int_equal(c.objects, 2);
  assert_int_equal(c.run_done, 3);
  assert_int_equal(store_ops_complete(s, "a-to-b", d, 0, 3), 0);
  store_ops_free(ops, n);
}

static int
collect_copy(void *ctx, const struct store_copy_row *row)
{
  char *buf = ctx;
  size_t n = strlen(buf);

  snprintf(buf + n, 512 - n, "%s%s>%s:%s", n > 0 ? "," : "", row->source_id,
           row->target_id, row->record);
  return 0;
}

/* migration-check's read: a link's live copies whose source object is
 * present and whose mailbox is known, read-only. */
static void
link_copies_join_mailboxes(void **state)
{
  struct fixture *f = *state;
  struct store *ro = NULL;
  char buf[512] = "", err[256];
  int missing = 0;

  put(f->store, "a", "{}", STORE_PRESENT, 1);
  put(f->store, "b", "{}", STORE_PRESENT, 1);
  put(f->store, "c", "{}", STORE_PRESENT, 1);
  put(f->store, "d", "{}", STORE_DELETED, 1);
  put(f->store, "e", "{}", STORE_PRESENT, 1);
  assert_int_equal(store_mailbox_put(f->store, T1, "a", "{\"x\":1}"), 0);
  assert_int_equal(store_mailbox_put(f->store, T1, "c", "{\"x\":3}"), 0);
  assert_int_equal(store_mailbox_put(f->store, T1, "d", "{\"x\":4}"), 0);
  assert_int_equal(store_mailbox_put(f->store, T1, "e", "{\"x\":5}"), 0);
  copy_row(f->store, "l", "a", "ta", "active");
  copy_row(f->store, "l", "b", "tb", "active"); /* no mailbox */
  copy_row(f->store, "l", "c", "tc", "moved");  /* handed off */
  copy_row(f->store, "l", "d", "td", "active"); /* source gone */
  copy_row(f->store, "l", "e", "te", "hidden"); /* out of scope */
  copy_row(f->store, "other", "a", "tx", "active");
  store_close(f->store);
  f->store = NULL;

  assert_int_equal(
      store_open_readonly(f->dir, 0, &ro, &missing, err, sizeof(err)), 0);
  assert_int_equal(store_link_copies(ro, "l", T1, collect_copy, buf), 0);
  assert_string_equal(buf, "a>ta:{\"x\":1}");
  store_close(ro);
  assert_int_equal(store_open(f->dir, &f->store, err, sizeof(err)), 0);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(source_roundtrip, setup, teardown),
      cmocka_unit_test_setup_teardown(full_read_marks_only_unseen, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(delta_link_rolls_back_with_page, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(finish_without_state_fails, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(delta_link_keeps_its_base_url, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(refused_item_keeps_object, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(plan_rows_carry_bad, setup, teardown),
      cmocka_unit_test_setup_teardown(link_counts_empty, setup, teardown),
      cmocka_unit_test_setup_teardown(target_owner_is_anyone_but_the_asker,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(failed_ops_retried_after_growing_backoff,
                                      setup, teardown),
      cmocka_unit_test(op_names_round_trip),
      cmocka_unit_test_setup_teardown(op_kind_and_state_round_trip, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(unknown_stored_kind_is_an_error, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          reopen_keeps_data_and_refuses_newer_schema, setup, teardown),
      cmocka_unit_test_setup_teardown(budget_learnt_roundtrip, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(schema_5_migrates_to_6, setup, teardown),
      cmocka_unit_test_setup_teardown(photos_due_and_recorded, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(schema_8_migrates_to_9, setup, teardown),
      cmocka_unit_test(open_fails_cleanly_on_bad_dir),
      cmocka_unit_test_setup_teardown(lock_is_exclusive, setup, teardown),
      cmocka_unit_test_setup_teardown(files_are_private, setup, teardown),
      cmocka_unit_test_setup_teardown(readonly_never_writes, setup, teardown),
      cmocka_unit_test_setup_teardown(link_copies_join_mailboxes, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(ops_complete_in_one_transaction, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
