/*
 * test_gate — admission per gate, with time moved by hand: a closed gate
 * lets nothing through before it reopens (DESIGN.md invariant 7) while
 * other gates go on, closing only ever pushes the time later, reads are
 * not held behind writes waiting for budget, answers feed the budget
 * back, and the counters stay bounded. The transfers themselves are
 * test_http's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "gate.h"

#define S 1000000000ULL /* ns per second */

static const struct gate_headers no_headers = {.retry_after = -1};

static void
waiter_on(struct gate_waiter *w, struct gate *g, unsigned writes,
          unsigned units)
{
  memset(w, 0, sizeof *w);
  w->gate = g;
  w->data = w;
  w->writes = writes;
  w->units = units;
}

/* Which answers close a gate. */
static void
test_closes_on(void **state)
{
  static const struct {
    long status;
    double retry_after;
    int want;
  } cases[] = {
      {429, -1, 1}, {429, 0, 1},   {429, 30, 1}, {503, -1, 0},
      {503, 0, 1},  {503, 2.5, 1}, {504, -1, 0}, {504, 7, 1},
      {500, 5, 0},  {502, 5, 0},   {200, 5, 0},  {0, 5, 0},
  };

  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (gate_closes_on(cases[i].status, cases[i].retry_after) != cases[i].want)
      fail_msg("status %ld retry_after %g: want %d", cases[i].status,
               cases[i].retry_after, cases[i].want);
  }
}

/* Invariant 7: after a throttled answer nothing goes through its gate
 * before the gate reopens, and then in the order it came. */
static void
test_closed_gate_holds_until_it_reopens(void **state)
{
  struct gate_set *set = gate_set_new();
  struct gate *g;
  struct gate_waiter w[3];
  uint64_t t0 = 10 * S;

  (void)state;
  assert_non_null(set);
  g = gate_get(set, "tenant-a/graph");
  assert_non_null(g);
  assert_ptr_equal(gate_get(set, "tenant-a/graph"), g);
  assert_ptr_equal(gate_find(set, "tenant-a/graph"), g);
  assert_string_equal(gate_name(g), "tenant-a/graph");
  for (int i = 0; i < 3; i++) {
    waiter_on(&w[i], g, 0, 0);
    gate_push(&w[i]);
  }
  gate_close(g, t0, 2000);
  assert_true(gate_closed(g, t0));
  assert_true(gate_reopen_in(g, t0) == 2.0);
  assert_null(gate_next(set, t0));
  assert_null(gate_next(set, t0 + 2 * S - 1));
  assert_int_equal(gate_next_at(set, t0), t0 + 2 * S);
  assert_false(gate_closed(g, t0 + 2 * S));
  assert_true(gate_reopen_in(g, t0 + 2 * S) == 0);
  for (int i = 0; i < 3; i++)
    assert_ptr_equal(gate_next(set, t0 + 2 * S), &w[i]);
  assert_null(gate_next(set, t0 + 2 * S));
  assert_int_equal(gate_next_at(set, t0 + 2 * S), UINT64_MAX);
  gate_set_free(set);
}

/* A shorter close never reopens a gate early; a longer one extends it. */
static void
test_close_only_pushes_later(void **state)
{
  struct gate_set *set = gate_set_new();
  struct gate *g = gate_get(set, "g");

  (void)state;
  gate_close(g, 0, 5000);
  gate_close(g, S, 1000);
  assert_true(gate_closed(g, 5 * S - 1));
  assert_false(gate_closed(g, 5 * S));
  gate_close(g, 2 * S, 4000);
  assert_true(gate_closed(g, 6 * S - 1));
  assert_false(gate_closed(g, 6 * S));
  gate_set_free(set);
}

/* One closed gate does not hold another; the anonymous gate never
 * closes and goes first. */
static void
test_other_gates_go_on(void **state)
{
  struct gate_set *set = gate_set_new();
  struct gate *a = gate_get(set, "tenant-a/graph");
  struct gate *b = gate_get(set, "tenant-b/graph");
  struct gate *anon = gate_get(set, NULL);
  struct gate_waiter wa, wb, wn;

  (void)state;
  assert_ptr_equal(gate_get(set, ""), anon);
  assert_string_equal(gate_name(anon), "-");
  assert_null(gate_find(set, "never-used"));
  waiter_on(&wa, a, 0, 0);
  waiter_on(&wb, b, 0, 0);
  waiter_on(&wn, anon, 0, 0);
  gate_push(&wa);
  gate_push(&wb);
  gate_push(&wn);
  gate_close(a, 0, 60000);
  gate_close(anon, 0, 60000);
  assert_false(gate_closed(anon, 0));
  assert_int_equal(gate_next_at(set, 0), 0);
  assert_ptr_equal(gate_next(set, 0), &wn);
  assert_ptr_equal(gate_next(set, 0), &wb);
  assert_null(gate_next(set, 0));
  assert_int_equal(gate_next_at(set, 0), 60 * S);
  assert_ptr_equal(gate_next(set, 60 * S), &wa);
  gate_set_free(set);
}

/* Writes wait for budget on the paced FIFO; a read behind them goes, a
 * request put back in front keeps its place, and what waited is
 * counted once. */
static void
test_reads_not_held_behind_writes(void **state)
{
  struct gate_set *set = gate_set_new();
  struct gate_limits lim = {.writes = 2, .writes_window = 10};
  struct gate *g;
  struct gate_waiter w0, w1, w2, rd;
  struct gate_budget b;
  uint64_t t0 = 100 * S, at;

  (void)state;
  assert_int_equal(gate_set_limits(set, "t/graph", &lim, t0), 0);
  g = gate_find(set, "t/graph");
  assert_non_null(g);
  waiter_on(&w0, g, 1, 0);
  waiter_on(&w1, g, 1, 0);
  waiter_on(&w2, g, 1, 0);
  waiter_on(&rd, g, 0, 1);
  gate_push(&w0);
  gate_push(&w1);
  gate_push(&w2);
  gate_push(&rd);
  /* The full bucket holds two writes: they go at once, the third
   * waits (a write each 10 / 1.95 s). */
  assert_ptr_equal(gate_next(set, t0), &rd);
  assert_ptr_equal(gate_next(set, t0), &w0);
  assert_ptr_equal(gate_next(set, t0), &w1);
  assert_int_equal(w1.paid, 1);
  assert_null(gate_next(set, t0));
  assert_null(gate_next(set, t0 + 1));
  at = gate_next_at(set, t0);
  assert_true(at > t0 + 5 * S && at <= t0 + 6 * S);
  /* A read that comes now is not held behind the waiting write. */
  rd.paid = 0;
  gate_push(&rd);
  assert_ptr_equal(gate_next(set, t0 + 2), &rd);
  /* w1 stopped unsent: back in front, its budget still paid. */
  gate_push_front(&w1);
  assert_ptr_equal(gate_next(set, t0 + 3), &w1);
  assert_ptr_equal(gate_next(set, t0 + 6 * S), &w2);
  assert_int_equal(gate_budget(g, &b), 0);
  assert_int_equal(b.waited, 1);
  assert_true(b.write_rate_max > 0);
  assert_true(b.unit_rate_max == 0);
  gate_set_free(set);
}

/* Limits are checked before a gate is made; the same limits again keep
 * what the buckets learnt. */
static void
test_set_limits(void **state)
{
  struct gate_set *set = gate_set_new();
  struct gate_limits bad = {.writes = -1, .writes_window = 10};
  struct gate_limits ok = {.writes = 10, .writes_window = 10};
  struct gate_waiter w;
  struct gate_budget b;
  struct gate *g;

  (void)state;
  assert_int_equal(gate_set_limits(set, "g", &bad, 0), -1);
  assert_null(gate_find(set, "g"));
  assert_int_equal(gate_set_limits(set, "", &ok, 0), -1);
  assert_int_equal(gate_set_limits(set, NULL, &ok, 0), -1);
  assert_int_equal(gate_set_limits(set, "g", NULL, 0), -1);
  assert_int_equal(gate_set_limits(set, "g", &ok, 0), 0);
  g = gate_find(set, "g");
  waiter_on(&w, g, 1, 0);
  gate_answer(&w, 429, &no_headers, S);
  assert_int_equal(gate_set_limits(set, "g", &ok, 2 * S), 0);
  assert_int_equal(gate_budget(g, &b), 0);
  assert_int_equal(b.decreases, 1);
  assert_true(b.write_rate < b.write_rate_max);
  assert_int_equal(gate_budget(NULL, &b), -1);
  assert_true(b.write_rate_max == 0);
  gate_set_free(set);
}

/* A 429 teaches the bucket it most likely hit; an inner throttle
 * teaches and closes; the anonymous gate has no budget to teach. */
static void
test_answers_feed_the_budget(void **state)
{
  struct gate_set *set = gate_set_new();
  struct gate_limits lim = {.writes = 100,
                            .writes_window = 10,
                            .invitations = 100,
                            .invitations_window = 10,
                            .units = 1000,
                            .units_window = 10};
  struct gate *g, *anon = gate_get(set, NULL);
  struct gate_waiter rd, an;
  struct gate_budget b;
  struct gate_headers h = no_headers;

  (void)state;
  assert_int_equal(gate_set_limits(set, "g", &lim, 0), 0);
  g = gate_find(set, "g");
  waiter_on(&rd, g, 0, 1);
  /* Not throttled, no pressure header, or one that does not parse. */
  gate_answer(&rd, 200, &no_headers, S);
  gate_answer(&rd, 200, NULL, S);
  h.limit_percentage = "lots";
  gate_answer(&rd, 200, &h, S);
  assert_int_equal(gate_budget(g, &b), 0);
  assert_int_equal(b.decreases, 0);
  /* A throttled read: the units bucket. */
  gate_answer(&rd, 429, &no_headers, S);
  assert_int_equal(gate_budget(g, &b), 0);
  assert_int_equal(b.decreases, 1);
  assert_true(b.unit_rate < b.unit_rate_max);
  assert_true(b.write_rate == b.write_rate_max);
  /* The answer names the write limit. */
  h = no_headers;
  h.throttle_information = "WriteLimitExceeded";
  gate_answer(&rd, 429, &h, 5 * S);
  assert_int_equal(gate_budget(g, &b), 0);
  assert_true(b.write_rate < b.write_rate_max);
  /* An inner request: the invitation bucket, and the gate closes. */
  gate_note_throttle(g, 2, GATE_BUCKET_INVITATIONS, 0, 9 * S);
  assert_int_equal(gate_budget(g, &b), 0);
  assert_true(b.invitation_rate < b.invitation_rate_max);
  assert_true(gate_closed(g, 11 * S - 1));
  assert_false(gate_closed(g, 11 * S));
  /* No Retry-After: taught, not closed. */
  gate_note_throttle(g, -1, GATE_BUCKET_UNITS, 0, 20 * S);
  assert_false(gate_closed(g, 20 * S));
  waiter_on(&an, anon, 1, 0);
  gate_answer(&an, 429, &no_headers, S);
  assert_int_equal(gate_budget(anon, &b), 0);
  assert_int_equal(b.decreases, 0);
  gate_set_free(set);
}

/* What the buckets learn can be read, and given back to a new gate with
 * the same limits (a restart), not to one with others. The Retry-After
 * of a 429 reaches the bucket: most of a window teaches a window. A
 * resource-unit charge over our price is taken. */
static void
test_learnt_round_trip(void **state)
{
  struct gate_set *set = gate_set_new(), *next = gate_set_new();
  struct gate_limits lim = {
      .writes = 100, .writes_window = 10, .units = 10, .units_window = 10};
  struct gate_limits other = {.writes = 200, .writes_window = 10};
  struct gate_headers h = no_headers;
  struct gate_learnt l, m;
  struct gate_waiter wr, rd, big;
  struct gate *g, *g2;

  (void)state;
  assert_int_equal(gate_set_limits(set, "g", &lim, 0), 0);
  g = gate_find(set, "g");
  assert_int_equal(gate_learnt_changes(g), 0);
  assert_int_equal(gate_learnt(g, GATE_BUCKET_INVITATIONS, &l), -1);
  assert_int_equal(gate_learnt(gate_get(set, NULL), GATE_BUCKET_WRITES, &l),
                   -1);
  waiter_on(&wr, g, 1, 0);
  h.retry_after = 9;
  h.throttle_scope = "Tenant_Application/Write/app/tenant";
  gate_answer(&wr, 429, &h, S);
  assert_int_equal(gate_learnt_changes(g), 1);
  assert_int_equal(gate_learnt(g, GATE_BUCKET_WRITES, &l), 0);
  assert_true(l.limit == 100 && l.window == 10);
  assert_int_equal(l.learnt.model, BUDGET_WINDOW);
  /* x-ms-resource-unit: 5 charged for a read we priced at 1. */
  waiter_on(&rd, g, 0, 1);
  h = no_headers;
  h.resource_unit = "5";
  gate_answer(&rd, 200, &h, S);
  h.resource_unit = "1e99";
  gate_answer(&rd, 200, &h, S);
  /* 10 - 4 units left: a read of 7 waits, one of 6 would not. */
  waiter_on(&big, g, 0, 7);
  gate_push(&big);
  assert_true(gate_next_at(set, S) > S);
  big.units = 6;
  assert_ptr_equal(gate_next(set, S), &big);

  assert_int_equal(gate_set_limits(next, "g", &lim, 0), 0);
  g2 = gate_find(next, "g");
  assert_int_equal(gate_learn(g2, GATE_BUCKET_WRITES, &l), 0);
  assert_int_equal(gate_learnt(g2, GATE_BUCKET_WRITES, &m), 0);
  assert_int_equal(m.learnt.model, BUDGET_WINDOW);
  assert_true(m.learnt.capacity == l.learnt.capacity &&
              m.learnt.rate == l.learnt.rate);
  /* Under other limits it does not apply. */
  assert_int_equal(gate_set_limits(next, "h", &other, 0), 0);
  assert_int_equal(gate_learn(gate_find(next, "h"), GATE_BUCKET_WRITES, &l),
                   -1);
  assert_int_equal(gate_learn(g2, GATE_BUCKET_INVITATIONS, &l), -1);
  assert_int_equal(gate_learn(NULL, GATE_BUCKET_WRITES, &l), -1);
  gate_set_free(set);
  gate_set_free(next);
}

/* Attempts by status, bounded; throttled answers counted apart. */
static void
test_stats(void **state)
{
  struct gate_set *set = gate_set_new();
  struct gate *g = gate_get(set, "g");
  struct gate_stat st[40];
  unsigned long long throttled = 99;
  size_t n;

  (void)state;
  assert_int_equal(gate_stats(NULL, st, 40, &throttled), 0);
  assert_int_equal(throttled, 0);
  gate_count(g, 200, 0);
  gate_count(g, 429, 1);
  gate_count(g, 200, 0);
  gate_count(g, 0, 0);
  n = gate_stats(g, st, 40, &throttled);
  assert_int_equal(n, 3);
  assert_int_equal(throttled, 1);
  assert_int_equal(st[0].status, 200);
  assert_int_equal(st[0].count, 2);
  assert_int_equal(st[1].status, 429);
  assert_int_equal(st[2].status, 0);
  assert_int_equal(gate_stats(g, st, 2, &throttled), 2);
  /* Past 32 distinct statuses the last slot takes the rest. */
  for (long s = 300; s < 340; s++)
    gate_count(g, s, 0);
  n = gate_stats(g, st, 40, &throttled);
  assert_int_equal(n, 32);
  assert_int_equal(st[31].status, 328);
  assert_int_equal(st[31].count, 12);
  gate_set_free(set);
}

/* Cancelling: every waiter comes off, the anonymous gate's first, then
 * gate by gate, plain before paced, none paying. */
static void
test_pop_all(void **state)
{
  struct gate_set *set = gate_set_new();
  struct gate_limits lim = {.writes = 10, .writes_window = 10};
  struct gate *g, *anon = gate_get(set, NULL);
  struct gate_waiter wr, rd, an;

  (void)state;
  assert_int_equal(gate_set_limits(set, "g", &lim, 0), 0);
  g = gate_find(set, "g");
  waiter_on(&wr, g, 1, 0);
  waiter_on(&rd, g, 0, 0);
  waiter_on(&an, anon, 0, 0);
  gate_push(&wr);
  gate_push(&rd);
  gate_push(&an);
  gate_close(g, 0, 1000);
  assert_ptr_equal(gate_pop(set), &an);
  assert_ptr_equal(gate_pop(set), &rd);
  assert_ptr_equal(gate_pop(set), &wr);
  assert_null(gate_pop(set));
  assert_int_equal(wr.paid, 0);
  assert_null(wr.queue);
  gate_set_free(set);
  gate_set_free(NULL);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_closes_on),
      cmocka_unit_test(test_closed_gate_holds_until_it_reopens),
      cmocka_unit_test(test_close_only_pushes_later),
      cmocka_unit_test(test_other_gates_go_on),
      cmocka_unit_test(test_reads_not_held_behind_writes),
      cmocka_unit_test(test_set_limits),
      cmocka_unit_test(test_answers_feed_the_budget),
      cmocka_unit_test(test_learnt_round_trip),
      cmocka_unit_test(test_stats),
      cmocka_unit_test(test_pop_all),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
