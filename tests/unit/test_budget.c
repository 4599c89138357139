/*
 * Unit tests: the token-bucket budget. Time is a number the tests move by
 * hand; the sliding-window property is checked by simulating a greedy
 * client that sends whenever the budget lets it.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "budget.h"

#define NEAR(a, b) assert_true(fabs((a) - (b)) < 1e-6)

static void
documented_limits_give_rate_and_burst(void **state)
{
  struct budget b;

  (void)state;
  /* 3,000 writes per 2.5 minutes per app per tenant: 97.5% of the
   * allowance, at 97.5% of the rate. */
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  NEAR(b.burst, 300);
  NEAR(b.allowance, 2925);
  NEAR(b.max_rate, 19.5);
  NEAR(b.rate, 19.5);
  NEAR(b.tokens, 300);
  /* 150 invitations per 5 s per tenant. */
  assert_int_equal(budget_init(&b, 150, 5, 0), 0);
  NEAR(b.burst, 15);
  NEAR(b.allowance, 146);
  NEAR(b.max_rate, 29.25);
  /* A small limit. */
  assert_int_equal(budget_init(&b, 10, 1, 0), 0);
  NEAR(b.burst, 1);
  NEAR(b.allowance, 9);
  NEAR(b.max_rate, 9.75);
}

static void
bad_values_are_refused(void **state)
{
  struct budget b;

  (void)state;
  b.limit = 42;
  assert_int_equal(budget_init(&b, -1, 10, 0), -1);
  assert_int_equal(budget_init(&b, NAN, 10, 0), -1);
  assert_int_equal(budget_init(&b, INFINITY, 10, 0), -1);
  assert_int_equal(budget_init(&b, 100, 0, 0), -1);
  assert_int_equal(budget_init(&b, 100, -5, 0), -1);
  assert_int_equal(budget_init(&b, 100, NAN, 0), -1);
  assert_int_equal(budget_init(&b, 1, 10, 0), -1);
  assert_int_equal(budget_init(&b, 100, 10, NAN), -1);
  NEAR(b.limit, 42); /* untouched */
}

static void
unlimited_never_waits(void **state)
{
  struct budget b;

  (void)state;
  assert_int_equal(budget_init(&b, 0, 0, 0), 0);
  assert_true(budget_unlimited(&b));
  for (int i = 0; i < 1000; i++) {
    assert_true(budget_wait(&b, 20, 0) == 0);
    budget_take(&b, 20, 0);
  }
  budget_throttled(&b, 0);
  assert_true(budget_wait(&b, 1, 0) == 0);
}

static void
burst_then_paced_then_the_window(void **state)
{
  struct budget b;
  double t = 100.01;

  (void)state;
  /* Slots of 0.05 s; 100.01 falls in slot 2000. */
  assert_int_equal(budget_init(&b, 150, 5, t), 0);
  for (int i = 0; i < 15; i++) {
    assert_true(budget_wait(&b, 1, t) == 0);
    budget_take(&b, 1, t);
  }
  /* The burst is spent: the bucket paces at 29.25 a second. */
  NEAR(budget_wait(&b, 1, t), 1 / 29.25);
  /* A greedy client gets the window's allowance (146) and no more within
   * the window: the 147th waits for slot 2000 to leave the count, at
   * (2000 + 102) * 0.05 = 105.1. */
  for (int i = 15; i < 146; i++) {
    t += budget_wait(&b, 1, t);
    budget_take(&b, 1, t);
  }
  assert_true(t < 105);
  NEAR(budget_wait(&b, 1, t), 105.1 - t);
  assert_true(budget_wait(&b, 1, 105.11) == 0);
  /* Zero-cost requests never wait. */
  assert_true(budget_wait(&b, 0, t) == 0);
}

/* A greedy client against the budget, over `windows` windows, with
 * pseudo-random costs in 1..max_cost and, when `throttle` is set, a 429
 * now and then. Every window of the limit's length must see at most
 * `limit` tokens; returns the tokens taken per second. */
static double
simulate(double limit, double window, int max_cost, int throttle,
         double windows, int check)
{
  struct budget b;
  double now = 0, end = window * windows, taken = 0;
  size_t n = 0, cap = 1 << 16;
  double *at = malloc(cap * sizeof *at);
  uint32_t seed = 12345;

  assert_non_null(at);
  assert_int_equal(budget_init(&b, limit, window, now), 0);
  while (now < end) {
    int cost;
    double w;

    seed = seed * 1103515245u + 12345u;
    cost = 1 + (int)((seed >> 16) % (uint32_t)max_cost);
    w = budget_wait(&b, cost, now);
    now += w;
    assert_true(budget_wait(&b, cost, now) == 0);
    budget_take(&b, cost, now);
    for (int i = 0; i < cost; i++) {
      if (n == cap) {
        cap *= 2;
        at = realloc(at, cap * sizeof *at);
        assert_non_null(at);
      }
      at[n++] = now;
    }
    taken += cost;
    if (throttle && (seed >> 8) % 97 == 0)
      budget_throttled(&b, now);
  }
  if (check) {
    /* Sliding window: for each take, count takes within `window` after
     * it (inclusive, as the server counts). */
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
      if (j < i)
        j = i;
      while (j + 1 < n && at[j + 1] <= at[i] + window)
        j++;
      assert_true((double)(j - i + 1) <= limit);
    }
  }
  free(at);
  return taken / now;
}

static void
no_window_exceeds_the_limit(void **state)
{
  (void)state;
  simulate(3000, 150, 1, 0, 6, 1);
  simulate(3000, 150, 20, 0, 6, 1);
  simulate(150, 5, 1, 1, 20, 1);
  simulate(150, 5, 7, 1, 20, 1);
  simulate(10, 1, 1, 0, 50, 1);
  simulate(18000, 300, 20, 1, 3, 1);
}

static void
long_run_rate_is_the_fill_rate(void **state)
{
  double r;

  (void)state;
  /* The window's allowance (97.5%) per window and one slot. */
  r = simulate(3000, 150, 1, 0, 40, 0);
  assert_true(r > 20 * 0.95 && r <= 20);
  r = simulate(150, 5, 3, 0, 200, 0);
  assert_true(r > 30 * 0.94 && r <= 30);
}

static void
throttle_decreases_once_per_hold(void **state)
{
  struct budget b;

  (void)state;
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  budget_throttled(&b, 10);
  NEAR(b.rate, 19.5 * 0.7);
  NEAR(b.tokens, 0);
  assert_int_equal(b.decreases, 1);
  /* A volley of 429s within the hold time (2 s here) is one decrease. */
  budget_throttled(&b, 10.5);
  budget_throttled(&b, 11.9);
  NEAR(b.rate, 19.5 * 0.7);
  assert_int_equal(b.decreases, 1);
  /* Out of the hold: the 0.1 s since the last refill count as increase
   * (half of max_rate per window) before the decrease. */
  budget_throttled(&b, 12.0);
  NEAR(b.rate, (19.5 * 0.7 + 19.5 * 0.5 * 0.1 / 150) * 0.7);
  assert_int_equal(b.decreases, 2);
  /* Never under a twentieth of the configured rate. */
  for (int i = 0; i < 40; i++)
    budget_throttled(&b, 14.0 + 2.0 * i);
  NEAR(b.rate, 19.5 * 0.05);
}

static void
rate_climbs_back_slowly(void **state)
{
  struct budget b;

  (void)state;
  assert_int_equal(budget_init(&b, 150, 5, 0), 0);
  budget_throttled(&b, 0);
  NEAR(b.rate, 29.25 * 0.7);
  /* No increase during the hold time (0.5 s). */
  budget_refill(&b, 0.4);
  NEAR(b.rate, 29.25 * 0.7);
  /* Then half of max_rate per window (the time since the last refill
   * counts): 0.3 * max_rate takes 0.6 window (3 s). */
  budget_refill(&b, 2.0);
  NEAR(b.rate, 29.25 * (0.7 + 0.5 * 1.6 / 5));
  budget_refill(&b, 3.5);
  NEAR(b.rate, 29.25);
  budget_refill(&b, 100);
  NEAR(b.rate, 29.25); /* capped at the configured rate */
}

static void
pressure_slows_only_over_the_level(void **state)
{
  struct budget b;

  (void)state;
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  budget_pressure(&b, 0.85, budget_share(&b, 1), 1);
  budget_pressure(&b, 0.9, budget_share(&b, 1), 1);
  budget_pressure(&b, NAN, budget_share(&b, 1), 1);
  NEAR(b.rate, 19.5);
  NEAR(b.tokens, 300);
  budget_pressure(&b, 0.95, budget_share(&b, 1), 1);
  NEAR(b.rate, 19.5 * 0.9);
  NEAR(b.tokens, 300); /* pressure slows, it does not empty */
  budget_pressure(&b, 1.2, budget_share(&b, 1.5), 1.5);
  NEAR(b.rate, 19.5 * 0.9);
  budget_pressure(&b, 1.2, budget_share(&b, 3.0), 3.0);
  NEAR(b.rate, (19.5 * 0.9 + 19.5 * 0.5 * 1.5 / 150) * 0.9);
}

/* The server's share of the limit, as far as it is our own sending, is
 * what the window already keeps under BUDGET_FILL: only more than that
 * (someone else writing with the same app or in the same tenant) slows. */
static void
pressure_counts_only_what_others_sent(void **state)
{
  struct budget b;

  (void)state;
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  budget_take(&b, 300, 0);
  for (int i = 1; i <= 8; i++) /* 2,700 sent: 0.9 of the limit */
    budget_take(&b, 300, i * 15.0);
  NEAR(budget_share(&b, 136), 0.9);
  budget_pressure(&b, 0.93, budget_share(&b, 136), 136);
  budget_pressure(&b, 0.95, budget_share(&b, 136),
                  136); /* within the margin over 0.9 */
  NEAR(b.rate, 19.5);
  budget_pressure(&b, 0.96, budget_share(&b, 136),
                  136); /* 6 % of the limit from elsewhere */
  NEAR(b.rate, 19.5 * 0.9);
  /* Once what we sent has left the window, the same figure is news. */
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  budget_take(&b, 2700, 0);
  budget_pressure(&b, 0.93, budget_share(&b, 1), 1);
  NEAR(b.rate, 19.5);
  budget_pressure(&b, 0.93, budget_share(&b, 160), 160);
  NEAR(b.rate, 19.5 * 0.9);
}

static void
cost_over_the_allowance_waits_for_an_empty_window(void **state)
{
  struct budget b;

  (void)state;
  assert_int_equal(budget_init(&b, 150, 5, 0.01), 0); /* allowance 146 */
  /* 200 > 146 on an empty window and a full bucket: it goes alone. */
  assert_true(budget_wait(&b, 200, 0.01) == 0);
  budget_take(&b, 200, 0.01);
  NEAR(b.tokens, -185);
  /* Then the debt is paid (186 / 29.25 s), after the window has emptied
   * (slot 0 leaves the count at 102 * 0.05 = 5.1). */
  NEAR(budget_wait(&b, 1, 0.01), 186 / 29.25);
  assert_true(budget_wait(&b, 1, 0.01 + 186 / 29.25 + 1e-3) == 0);
}

static void
time_going_backwards_is_ignored(void **state)
{
  struct budget b;
  double tokens, rate;

  (void)state;
  assert_int_equal(budget_init(&b, 150, 5, 100), 0);
  budget_take(&b, 3, 100);
  budget_throttled(&b, 100);
  tokens = b.tokens;
  rate = b.rate;
  budget_refill(&b, 50);
  NEAR(b.tokens, tokens);
  NEAR(b.last, 100);
  NEAR(budget_wait(&b, 1, 40), 1 / rate);
  /* Going back does not reopen the hold time either. */
  budget_throttled(&b, 60);
  NEAR(b.rate, rate);
  assert_int_equal(b.decreases, 1);
  /* And forward again counts from the latest time seen. */
  budget_refill(&b, 100.1);
  NEAR(b.tokens, tokens + rate * 0.1);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(documented_limits_give_rate_and_burst),
      cmocka_unit_test(bad_values_are_refused),
      cmocka_unit_test(unlimited_never_waits),
      cmocka_unit_test(burst_then_paced_then_the_window),
      cmocka_unit_test(no_window_exceeds_the_limit),
      cmocka_unit_test(long_run_rate_is_the_fill_rate),
      cmocka_unit_test(throttle_decreases_once_per_hold),
      cmocka_unit_test(rate_climbs_back_slowly),
      cmocka_unit_test(pressure_slows_only_over_the_level),
      cmocka_unit_test(pressure_counts_only_what_others_sent),
      cmocka_unit_test(cost_over_the_allowance_waits_for_an_empty_window),
      cmocka_unit_test(time_going_backwards_is_ignored),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
