/*
 * Unit tests: the token-bucket budget and what it learns. Time is a
 * number the tests move by hand; the bucket and window properties are
 * checked by simulating a greedy client that sends whenever the budget
 * lets it, against what the service's bucket (or window) would allow.
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
documented_limits_give_a_full_bucket(void **state)
{
  struct budget b;

  (void)state;
  /* 3,000 writes per 2.5 minutes per app per tenant: all of it at once,
   * then 97.5% of the documented rate. */
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  NEAR(b.capacity, 3000);
  NEAR(b.tokens, 3000);
  NEAR(b.max_rate, 19.5);
  NEAR(b.rate, 19.5);
  assert_int_equal(b.model, BUDGET_BUCKET);
  /* 150 invitations per 5 s per tenant. */
  assert_int_equal(budget_init(&b, 150, 5, 0), 0);
  NEAR(b.tokens, 150);
  NEAR(b.max_rate, 29.25);
  NEAR(b.allowance, 146);
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
  struct budget_learnt l = {.capacity = 5, .rate = 1, .model = 0};

  (void)state;
  assert_int_equal(budget_init(&b, 0, 0, 0), 0);
  assert_true(budget_unlimited(&b));
  for (int i = 0; i < 1000; i++) {
    assert_true(budget_wait(&b, 20, 0) == 0);
    budget_take(&b, 20, 0);
  }
  assert_int_equal(budget_throttled(&b, 150, -1, 0), 0);
  assert_true(budget_wait(&b, 1, 0) == 0);
  assert_int_equal(budget_learnt_set(&b, &l), -1);
}

static void
full_bucket_spends_at_once(void **state)
{
  struct budget b;

  (void)state;
  assert_int_equal(budget_init(&b, 3000, 150, 10), 0);
  /* 150 batches of 20 writes, none waiting. */
  for (int i = 0; i < 150; i++) {
    assert_true(budget_wait(&b, 20, 10) == 0);
    budget_take(&b, 20, 10);
  }
  NEAR(b.tokens, 0);
  /* The next batch waits for 20 tokens at 19.5 a second. */
  NEAR(budget_wait(&b, 20, 10), 20 / 19.5);
  assert_true(budget_wait(&b, 20, 10 + 20 / 19.5 + 1e-6) == 0);
  /* Zero-cost requests never wait. */
  assert_true(budget_wait(&b, 0, 10) == 0);
}

static void
refills_at_the_documented_rate(void **state)
{
  struct budget b;

  (void)state;
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  budget_take(&b, 3000, 0);
  budget_refill(&b, 10);
  NEAR(b.tokens, 195);
  /* Never over the capacity however long it waits. */
  budget_refill(&b, 1000);
  NEAR(b.tokens, 3000);
  /* 150 per 5 s: empty, full again after 150 / 29.25 s. */
  assert_int_equal(budget_init(&b, 150, 5, 0), 0);
  budget_take(&b, 150, 0);
  NEAR(budget_wait(&b, 150, 0), 150 / 29.25);
}

/* A greedy client against the budget, over `windows` windows, with
 * pseudo-random costs in 1..max_cost and, when `throttle` is set, a 429
 * now and then. Checks what the service allows: a bucket of `limit`
 * refilled at limit / window (every interval [a, c] sees at most limit
 * + (c - a) * limit / window), or when `window_model` a sliding window
 * of `limit`. Returns the tokens taken per second. */
static double
simulate(struct budget *b, double limit, double window, int max_cost,
         int throttle, double windows, int window_model)
{
  double now = b->last, start = b->last, end = now + window * windows;
  double taken = 0, rate = limit / window;
  size_t n = 0, cap = 1 << 16;
  double *at = malloc(cap * sizeof *at);
  uint32_t seed = 12345;

  assert_non_null(at);
  while (now < end) {
    int cost;

    seed = seed * 1103515245u + 12345u;
    cost = 1 + (int)((seed >> 16) % (uint32_t)max_cost);
    now += budget_wait(b, cost, now);
    assert_true(budget_wait(b, cost, now) == 0);
    budget_take(b, cost, now);
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
      (void)budget_throttled(b, 1, -1, now);
  }
  if (window_model) {
    /* For each take, count takes within `window` after it (inclusive,
     * as the server counts). */
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
      if (j < i)
        j = i;
      while (j + 1 < n && at[j + 1] <= at[i] + window)
        j++;
      assert_true((double)(j - i + 1) <= limit);
    }
  } else {
    /* A bucket: the service's level, full at the start, never below 0
     * (compared with a little slack for rounding). */
    double level = limit, last = start;
    for (size_t i = 0; i < n; i++) {
      level += (at[i] - last) * rate;
      if (level > limit)
        level = limit;
      last = at[i];
      level -= 1;
      assert_true(level > -1e-6);
    }
  }
  free(at);
  return taken / (now - start);
}

static void
never_over_the_service_bucket(void **state)
{
  struct budget b;
  double r;

  (void)state;
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  r = simulate(&b, 3000, 150, 20, 0, 10, 0);
  /* The first full bucket, then 19.5 a second: 3000 / 1500 + 19.5. */
  assert_true(r > 21 && r < 21.6);
  assert_int_equal(budget_init(&b, 150, 5, 0), 0);
  simulate(&b, 150, 5, 7, 1, 20, 0);
  assert_int_equal(budget_init(&b, 10, 1, 0), 0);
  simulate(&b, 10, 1, 1, 0, 50, 0);
}

/* 2,000 of 3,000 spent and the service says no: its bucket is smaller
 * (another application, a smaller quota). What the bucket still held is
 * taken off its capacity, the rate follows, and a greedy client stays
 * under a service bucket of that size from then on. */
static void
learns_a_smaller_capacity(void **state)
{
  struct budget b;

  (void)state;
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  budget_take(&b, 2000, 0);
  assert_int_equal(budget_throttled(&b, 1, -1, 0), 1);
  NEAR(b.capacity, 2000);
  NEAR(b.rate, 0.975 * 2000 / 150);
  assert_int_equal(b.model, BUDGET_BUCKET);
  NEAR(b.tokens, 0);
  assert_int_equal(b.decreases, 1);
  /* A volley of 429s within the hold time (2 s here) is one lesson. */
  budget_refill(&b, 1.5);
  assert_int_equal(budget_throttled(&b, 1, -1, 1.5), 0);
  NEAR(b.capacity, 2000);
  /* It stays below it: a service bucket of 2,000 per 150 s, from full. */
  budget_refill(&b, 1000);
  NEAR(b.tokens, 2000);
  simulate(&b, 2000, 150, 20, 0, 6, 0);
  /* One lesson takes at most half: a 429 "under load" on a full
   * bucket. */
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  assert_int_equal(budget_throttled(&b, 1, -1, 0), 1);
  NEAR(b.capacity, 1500);
}

/* A 429 while spending at the bucket's own rate: the service refills
 * slower; the rate goes down, never under a twentieth. */
static void
learns_a_slower_rate(void **state)
{
  struct budget b;
  double t = 0;

  (void)state;
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  budget_take(&b, 3000, 0);
  for (int i = 0; i < 100; i++) {
    t += budget_wait(&b, 1, t);
    budget_take(&b, 1, t);
  }
  assert_int_equal(budget_throttled(&b, 1, -1, t), 1);
  NEAR(b.capacity, 3000);
  NEAR(b.rate, 19.5 * 0.7);
  for (int i = 1; i <= 40; i++)
    (void)budget_throttled(&b, 1, -1, t + 2.0 * i);
  NEAR(b.rate, 19.5 * 0.05);
  assert_int_equal(b.model, BUDGET_BUCKET);
}

/* The service counts a sliding window: after the whole bucket went at
 * once, the next request is told to come back in most of a window, long
 * after a bucket at anything near the documented rate (or our own,
 * refilled by then) would have let it through. The model becomes that
 * window, remembering what was sent in it. */
static void
learns_a_window(void **state)
{
  struct budget b;
  double t;

  (void)state;
  assert_int_equal(budget_init(&b, 3000, 150, 0.01), 0);
  budget_take(&b, 3000, 0.01);
  t = 0.01 + budget_wait(&b, 1, 0.01);
  budget_take(&b, 1, t);
  /* Our bucket holds a token again within 0.06 s; the service says
   * 150 s. */
  assert_int_equal(budget_throttled(&b, 150, -1, t + 0.01), 1);
  assert_int_equal(b.model, BUDGET_WINDOW);
  NEAR(b.capacity, 3000);
  /* What was sent stays counted until the window (and half a second for
   * late arrivals) has slid past it: slot 0 leaves at 102 slots of
   * 150.5 / 100 s. */
  NEAR(budget_wait(&b, 1, 1), 102 * 1.505 - 1);
  assert_true(budget_wait(&b, 1, 153.52) == 0);
  /* Under a window from then on, a greedy client keeps to it. */
  simulate(&b, 3000, 150, 20, 0, 6, 1);
  /* Slowing for pressure does not hide the next 429's lesson. */
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  budget_pressure(&b, 1.0, 0, 1);
  assert_int_equal(b.decreases, 1);
  assert_int_equal(budget_throttled(&b, 140, -1, 1.1), 1);
  assert_int_equal(b.model, BUDGET_WINDOW);
  /* One second is Retry-After's unit: no window, even for a window of
   * a second (150 invitations per 5 s, periods five times shorter), nor
   * for a quarter of 5 s; four seconds of 5 s is one. */
  assert_int_equal(budget_init(&b, 150, 1, 0), 0);
  assert_int_equal(budget_throttled(&b, 1, -1, 0), 1);
  assert_int_equal(b.model, BUDGET_BUCKET);
  assert_int_equal(budget_init(&b, 150, 5, 0), 0);
  assert_int_equal(budget_throttled(&b, 1, -1, 0), 1);
  assert_int_equal(b.model, BUDGET_BUCKET);
  assert_int_equal(budget_init(&b, 150, 5, 0), 0);
  assert_int_equal(budget_throttled(&b, 4, -1, 0), 1);
  assert_int_equal(b.model, BUDGET_WINDOW);
  /* A storm's short Retry-After is no window. */
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  (void)budget_throttled(&b, 3, -1, 0);
  assert_int_equal(b.model, BUDGET_BUCKET);
  /* A 429 under a window already: the mirror lets less through. */
  assert_int_equal(budget_init(&b, 150, 5, 0), 0);
  assert_int_equal(budget_throttled(&b, 5, -1, 0), 1);
  assert_int_equal(b.model, BUDGET_WINDOW);
  assert_int_equal(budget_throttled(&b, 1, -1, 1), 1);
  NEAR(b.capacity, 150 * 0.7);
  NEAR(b.allowance, floor(150 * 0.7 * 0.975));
}

static void
stays_below_what_it_learnt(void **state)
{
  struct budget b;
  double r;

  (void)state;
  /* Learnt: a service bucket of 1,000 per 150 s (a rate of 6.67/s). */
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  budget_take(&b, 1000, 0);
  (void)budget_throttled(&b, 1, -1, 0); /* capacity 1,500 */
  budget_refill(&b, 3);
  b.tokens = 1500;
  budget_take(&b, 1000, 3);
  (void)budget_throttled(&b, 1, -1, 3); /* capacity 1,000 */
  NEAR(b.capacity, 1000);
  budget_refill(&b, 200);
  r = simulate(&b, 1000, 150, 20, 0, 8, 0);
  assert_true(r < 1000.0 / 150 * 1.2);
  /* Without a lesson for ten windows, a tenth of the way back. */
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  budget_take(&b, 2000, 0);
  (void)budget_throttled(&b, 1, -1, 0);
  budget_refill(&b, 1499);
  NEAR(b.capacity, 2000);
  budget_refill(&b, 1500);
  NEAR(b.capacity, 2100);
  NEAR(b.rate, 13 + (19.5 - 13) * 0.1);
  /* A 429 soon after the step takes only the step back. */
  assert_int_equal(budget_throttled(&b, 1, -1, 1600), 1);
  NEAR(b.capacity, 2000);
  NEAR(b.rate, 13);
  /* The next one (the service got slower still) is a lesson again. */
  assert_int_equal(budget_throttled(&b, 1, -1, 1603), 1);
  NEAR(b.rate, 13 * 0.7);
}

/* A client against a service whose bucket holds `scap` and refills at
 * `srate` (another application spends the rest of the tenant's limit,
 * and the service says how full the tenant's limit is, counting the
 * other application's half, once over 80%), requests reaching it `lag`
 * seconds after they leave and its answers taking as long to come back,
 * a 429 closing the client for its Retry-After (a whole second, as Graph
 * rounds it). The client pauses 4 s in every 20 (reads, planning).
 * Returns what the service let through per second over the last
 * `measure` seconds; *throttled counts the 429s. */
static double
against_a_shared_service(struct budget *b, double scap, double srate,
                         double lag, double seconds, double measure,
                         int *throttled)
{
  enum { INFLIGHT = 4096 };
  double sent[INFLIGHT], level_after[INFLIGHT];
  double t = b->last, level = scap, last = t, closed_until = 0;
  double end = t + seconds, passed_late = 0;
  int ok[INFLIGHT], head = 0, tail = 0;

  *throttled = 0;
  while (t < end) {
    double w = budget_wait(b, 1, t);
    /* Answers that arrived by then, oldest first. */
    while (head != tail && sent[head] + 2 * lag <= t + w) {
      double at = sent[head] + 2 * lag, f;
      if (at < t)
        at = t;
      if (ok[head]) {
        f = 0.5 + 0.5 * (1 - level_after[head] / scap);
        if (f > 0.8)
          budget_pressure(b, f, budget_share(b, at), at);
      } else {
        (void)budget_throttled(b, 1, sent[head], at);
        if (closed_until < at + 1)
          closed_until = at + 1;
      }
      head = (head + 1) % INFLIGHT;
      t = at;
      w = budget_wait(b, 1, t);
    }
    t += w;
    if (t < closed_until)
      t = closed_until;
    if (fmod(t, 20) < 4)
      t += 4 - fmod(t, 20);
    if (budget_wait(b, 1, t) > 0)
      continue;
    budget_take(b, 1, t);
    /* The service sees it `lag` later, in order. */
    level += (t + lag - last) * srate;
    if (level > scap)
      level = scap;
    last = t + lag;
    ok[tail] = level >= 1;
    if (ok[tail]) {
      level -= 1;
      if (t > end - measure)
        passed_late += 1;
    } else {
      (*throttled)++;
    }
    level_after[tail] = level;
    sent[tail] = t;
    tail = (tail + 1) % INFLIGHT;
    assert_true(tail != head);
  }
  return passed_late / measure;
}

/* Another application spends part of the tenant's limit: the service
 * lets 2,519 through at once and 50 a second after, where we may send
 * 3,000 and 97.5. The first 429 came with 481 tokens still in our
 * bucket (the requests of a burst answered while it went on): the
 * capacity is learnt. From then on the service's hints that the
 * tenant's limit fills are what emptying that smaller bucket does, and
 * must not walk the rate down (before: 22 hints, 35 a second); the 429s
 * keep it near what the service lets through, with few of them. */
static void
learns_what_the_service_lets_through(void **state)
{
  struct budget b;
  double r;
  int throttled;
  const double lags[] = {0.2, 1.0};

  (void)state;
  for (size_t i = 0; i < sizeof lags / sizeof lags[0]; i++) {
    assert_int_equal(budget_init(&b, 3000, 30, 0), 0);
    budget_take(&b, 2519, 0);
    assert_int_equal(budget_throttled(&b, 1, -1, 0.01), 1);
    assert_true(b.capacity > 2510 && b.capacity < 2520);
    r = against_a_shared_service(&b, 2519, 50, lags[i], 900, 600, &throttled);
    assert_true(r > 50 * 0.85);
    assert_true(throttled < 0.01 * 50 * 900);
  }
}

/* Another application spends part of the tenant's limit, and a 429
 * taught a smaller capacity. Emptying that bucket fills the service's
 * limit: the header saying so is our own spending, not news. And hints
 * alone, however many, take the rate at most a tenth under what the
 * last 429 taught. */
static void
pressure_after_a_lesson(void **state)
{
  struct budget b;
  double t;

  (void)state;
  assert_int_equal(budget_init(&b, 3000, 30, 0), 0);
  budget_take(&b, 2000, 0);
  assert_int_equal(budget_throttled(&b, 1, -1, 0), 1);
  NEAR(b.capacity, 2000);
  /* Our bucket is empty: all of the 2,000 the service lets us have. */
  NEAR(budget_share(&b, 0), 1.0);
  budget_pressure(&b, 1.0, budget_share(&b, 0), 0);
  assert_int_equal(b.decreases, 1);
  /* Half spent: half of the service's limit is ours. */
  budget_refill(&b, 2000 / b.rate);
  budget_take(&b, 1000, 2000 / b.rate);
  NEAR(budget_share(&b, 2000 / b.rate), 0.5);
  /* Hints every hold time, nothing ours: down to the floor, no
   * further. */
  t = 2000 / b.rate;
  for (int i = 0; i < 10; i++) {
    t += 2;
    budget_pressure(&b, 0.99, 0, t);
  }
  NEAR(b.rate, 0.975 * 2000 / 30 * 0.9);
  /* Under a window, the capacity keeps the same floor. */
  assert_int_equal(budget_init(&b, 3000, 30, 0), 0);
  assert_int_equal(budget_throttled(&b, 20, -1, 0), 1);
  assert_int_equal(b.model, BUDGET_WINDOW);
  for (int i = 1; i <= 10; i++)
    budget_pressure(&b, 0.99, 0, 2.0 * i);
  NEAR(b.capacity, 3000 * 0.9);
}

/* One lesson per round trip: the 429s of requests sent before a lesson
 * (at the pace it corrected) teach nothing more, however late they come
 * back; one sent after it does. Each still empties the bucket. */
static void
one_lesson_per_round_trip(void **state)
{
  struct budget b;

  (void)state;
  assert_int_equal(budget_init(&b, 3000, 30, 0), 0);
  budget_take(&b, 3000, 0);
  assert_int_equal(budget_throttled(&b, 1, 0.2, 0.5), 1);
  NEAR(b.rate, 97.5 * 0.7);
  /* Sent at 0.4 s, answered 5 s after the lesson: not news. */
  budget_refill(&b, 5.5);
  assert_true(b.tokens > 0);
  assert_int_equal(budget_throttled(&b, 1, 0.4, 5.5), 0);
  NEAR(b.tokens, 0);
  NEAR(b.rate, 97.5 * 0.7);
  /* Sent after the lesson: a lesson. */
  assert_int_equal(budget_throttled(&b, 1, 3, 6), 1);
  NEAR(b.rate, 97.5 * 0.7 * 0.7);
}

static void
learnt_values_round_trip(void **state)
{
  struct budget a, b;
  struct budget_learnt l, m;

  (void)state;
  assert_int_equal(budget_init(&a, 3000, 150, 0), 0);
  budget_take(&a, 2000, 0);
  (void)budget_throttled(&a, 1, -1, 0);
  (void)budget_throttled(&a, 150, -1, 10);
  budget_learnt_get(&a, &l);
  NEAR(l.capacity, 2000);
  NEAR(l.rate, 13);
  assert_int_equal(l.model, BUDGET_WINDOW);
  /* A restart: a new full budget given what was learnt. */
  assert_int_equal(budget_init(&b, 3000, 150, 500), 0);
  assert_int_equal(budget_learnt_set(&b, &l), 0);
  budget_learnt_get(&b, &m);
  NEAR(m.capacity, l.capacity);
  NEAR(m.rate, l.rate);
  assert_int_equal(m.model, l.model);
  NEAR(b.tokens, 2000);
  NEAR(b.allowance, 1950);
  assert_int_equal(b.changes, 0);
  /* Clamped to the documented values and the floor. */
  l.capacity = 1e9;
  l.rate = 0.001;
  l.model = BUDGET_BUCKET;
  assert_int_equal(budget_learnt_set(&b, &l), 0);
  NEAR(b.capacity, 3000);
  NEAR(b.rate, 19.5 * 0.05);
  /* Nonsense is refused and changes nothing. */
  l.capacity = NAN;
  assert_int_equal(budget_learnt_set(&b, &l), -1);
  l.capacity = 100;
  l.rate = -1;
  assert_int_equal(budget_learnt_set(&b, &l), -1);
  l.rate = 1;
  l.model = 7;
  assert_int_equal(budget_learnt_set(&b, &l), -1);
  NEAR(b.capacity, 3000);
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
  budget_pressure(&b, 0.95, budget_share(&b, 1), 1);
  NEAR(b.rate, 19.5 * 0.95);
  NEAR(b.tokens, 3000); /* pressure slows, it does not empty */
  budget_pressure(&b, 1.2, budget_share(&b, 1.5), 1.5);
  NEAR(b.rate, 19.5 * 0.95);
  budget_pressure(&b, 1.2, budget_share(&b, 3.0), 3.0);
  NEAR(b.rate, 19.5 * 0.95 * 0.95);
}

/* What our own spending explains is no news: only more than that
 * (someone else writing with the same app or in the same tenant) slows. */
static void
pressure_counts_only_what_others_sent(void **state)
{
  struct budget b;

  (void)state;
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  budget_take(&b, 2700, 0);
  NEAR(budget_share(&b, 0), 0.9);
  budget_pressure(&b, 0.93, budget_share(&b, 0), 0);
  budget_pressure(&b, 0.95, budget_share(&b, 0), 0);
  NEAR(b.rate, 19.5);
  budget_pressure(&b, 0.96, budget_share(&b, 0), 0);
  NEAR(b.rate, 19.5 * 0.95);
  /* Once the bucket has refilled, the same figure is news. */
  assert_int_equal(budget_init(&b, 3000, 150, 0), 0);
  budget_take(&b, 2700, 0);
  budget_pressure(&b, 0.93, budget_share(&b, 0), 0);
  NEAR(b.rate, 19.5);
  budget_pressure(&b, 0.93, budget_share(&b, 160), 160);
  NEAR(b.rate, 19.5 * 0.95);
}

static void
cost_over_the_capacity_waits_for_a_full_bucket(void **state)
{
  struct budget b;

  (void)state;
  assert_int_equal(budget_init(&b, 150, 5, 0), 0);
  /* 200 > 150 on a full bucket: it goes alone, leaving a debt. */
  assert_true(budget_wait(&b, 200, 0) == 0);
  budget_take(&b, 200, 0);
  NEAR(b.tokens, -50);
  NEAR(budget_wait(&b, 1, 0), 51 / 29.25);
  /* Over the capacity again: it waits for a full bucket. */
  NEAR(budget_wait(&b, 200, 0), 200 / 29.25);
}

static void
time_going_backwards_is_ignored(void **state)
{
  struct budget b;
  double tokens, rate;

  (void)state;
  assert_int_equal(budget_init(&b, 150, 5, 100), 0);
  budget_take(&b, 150, 100);
  (void)budget_throttled(&b, 1, -1, 100);
  tokens = b.tokens;
  rate = b.rate;
  budget_refill(&b, 50);
  NEAR(b.tokens, tokens);
  NEAR(b.last, 100);
  NEAR(budget_wait(&b, 1, 40), 1 / rate);
  /* Going back does not reopen the hold time either. */
  assert_int_equal(budget_throttled(&b, 1, -1, 60), 0);
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
      cmocka_unit_test(documented_limits_give_a_full_bucket),
      cmocka_unit_test(bad_values_are_refused),
      cmocka_unit_test(unlimited_never_waits),
      cmocka_unit_test(full_bucket_spends_at_once),
      cmocka_unit_test(refills_at_the_documented_rate),
      cmocka_unit_test(never_over_the_service_bucket),
      cmocka_unit_test(learns_a_smaller_capacity),
      cmocka_unit_test(learns_a_slower_rate),
      cmocka_unit_test(learns_a_window),
      cmocka_unit_test(stays_below_what_it_learnt),
      cmocka_unit_test(learns_what_the_service_lets_through),
      cmocka_unit_test(learnt_values_round_trip),
      cmocka_unit_test(pressure_slows_only_over_the_level),
      cmocka_unit_test(pressure_counts_only_what_others_sent),
      cmocka_unit_test(pressure_after_a_lesson),
      cmocka_unit_test(one_lesson_per_round_trip),
      cmocka_unit_test(cost_over_the_capacity_waits_for_a_full_bucket),
      cmocka_unit_test(time_going_backwards_is_ignored),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
