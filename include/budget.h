/*
 * budget — paces requests under a limit Microsoft documents as a token
 * bucket of `limit` requests (or resource units) refilled over `window`
 * seconds, so that the server rarely has to answer 429; and learns, from
 * the 429s it still gets, a limit the service enforces that is smaller
 * than the documented one, or a window rather than a bucket.
 *
 * Pure arithmetic: no I/O, no clock. Every call takes the current time in
 * seconds (any monotonic origin); a time earlier than one seen before is
 * taken as "no time has passed" (never as a refund).
 *
 * The model (see budget.c for why): a bucket of `capacity` tokens, full
 * at the start, refilled at `rate` tokens per second; a request goes at
 * once while the bucket holds its cost. At first capacity is the limit
 * and rate BUDGET_FILL of limit / window. What is learnt:
 *
 *  - a 429 that comes while the bucket still holds more than
 *    BUDGET_LEFT_SHARE of its capacity: the service's bucket is smaller
 *    (a smaller quota, another application of the tenant): capacity
 *    loses what the bucket still held (at most half of it at once), and
 *    rate follows it;
 *  - a 429 whose Retry-After is longer than BUDGET_WINDOW_HINT of the
 *    window, and than BUDGET_RETRY_GRAIN (a whole second, the header's
 *    unit, which any bucket may answer), long past the time a bucket
 *    refilling near the documented rate would hold the request's cost
 *    again: a sliding window makes a client wait that long: the model
 *    becomes a window of `capacity` per `window` seconds, of which
 *    BUDGET_FILL is spent (a mirror of what
 *    was sent, counted in BUDGET_SLOTS slots, for a little longer than
 *    the window: BUDGET_WINDOW_MARGIN, a quarter of a short one);
 *  - any other 429 (the bucket ran dry as we spent at its rate): the
 *    rate is multiplied by BUDGET_DECREASE (under a window: the capacity
 *    is);
 *  - an x-ms-throttle-limit-percentage over BUDGET_PRESSURE_LEVEL and
 *    more than BUDGET_PRESSURE_MARGIN over the share our own spending
 *    explains (of the capacity learnt: a bucket the service showed to be
 *    smaller is that much fuller when we empty it): the rate is
 *    multiplied by BUDGET_PRESSURE_DECREASE (under a window: the
 *    capacity is), but never under BUDGET_PRESSURE_FLOOR of what the
 *    last 429 (or step back, or the start) set. Pressure is a hint;
 *    only a 429 shows how much less the service lets through, so a run
 *    of hints alone cannot walk the rate down.
 *
 * A lesson is taken at most once per hold time (a tenth of the window,
 * 0.05 to 2 s; 429s and pressure apart) so that a volley of 429s counts
 * as one; capacity never goes under BUDGET_MIN_SHARE of the limit, nor rate
 * under that share of the documented rate. After BUDGET_RECOVER_WINDOWS
 * windows without a lesson, capacity and rate move BUDGET_RECOVER_STEP of the
 * way back to the documented values (the model stays a window once learnt); a
 * 429 within BUDGET_RECOVER_WINDOWS windows of such a step only takes the step
 * back. What is learnt can be read and given back (budget_learnt_get/set) so
 * that a restart does not forget it.
 */
#ifndef GALBRIDGE_BUDGET_H
#define GALBRIDGE_BUDGET_H

#define BUDGET_FILL 0.975
#define BUDGET_SLOTS 100               /* the window's resolution */
#define BUDGET_RING (BUDGET_SLOTS + 2) /* slots counted at once */
#define BUDGET_DECREASE 0.7
#define BUDGET_LEFT_SHARE 0.05
#define BUDGET_WINDOW_HINT 0.25
#define BUDGET_RETRY_GRAIN 1.0 /* s: Retry-After's unit, which says "soon" */
#define BUDGET_MIN_SHARE 0.05
#define BUDGET_PRESSURE_LEVEL 0.9
#define BUDGET_PRESSURE_DECREASE 0.95
#define BUDGET_PRESSURE_FLOOR 0.9
#define BUDGET_PRESSURE_MARGIN 0.05
#define BUDGET_RECOVER_WINDOWS 10
#define BUDGET_RECOVER_STEP 0.1
#define BUDGET_WINDOW_MARGIN 0.5 /* seconds, see budget.c */

enum budget_model {
  BUDGET_BUCKET = 0, /* what Microsoft documents */
  BUDGET_WINDOW = 1, /* learnt: the service counts a sliding window */
};

/* What a budget has learnt, as saved and given back. */
struct budget_learnt {
  double capacity; /* tokens, <= the limit */
  double rate;     /* tokens per second, <= the documented rate */
  int model;       /* enum budget_model */
};

/* Plain data: read freely, written only through the functions below. */
struct budget {
  double limit;    /* documented count per window; 0: unlimited */
  double window;   /* seconds */
  double max_rate; /* BUDGET_FILL of limit / window */
  double min_rate; /* floor of what is learnt */
  /* Learnt: */
  double capacity;
  double rate;
  int model;
  double allowance;     /* a window's spend: BUDGET_FILL of capacity, >= 1 */
  double tokens;        /* may go negative after a request over capacity */
  double last;          /* time of the last refill */
  double last_lesson;   /* of a 429 (taught: there was one) */
  double last_pressure; /* of a pressure header (pressed: there was one) */
  int taught;
  int pressed;
  double quiet_since; /* the last lesson, or the last step back */
  int stepped;        /* a step back was taken at step_at, from: */
  double step_at;
  double step_capacity;
  double step_rate;
  double taught_rate; /* set by a 429, a step back or the start */
  double taught_capacity;
  unsigned long long decreases;    /* lessons that lowered something */
  unsigned long long changes;      /* learnt values changed (lessons too) */
  double slot_len;                 /* window / BUDGET_SLOTS */
  long long slot_idx[BUDGET_RING]; /* which slot each entry counts, -1 */
  double slot_cost[BUDGET_RING];
};

/* Set `b` up for `limit` per `window` seconds at time `now`: a full
 * bucket of the documented size. A zero limit makes an unlimited budget
 * (every wait is 0). Returns 0, or -1 (b untouched) when limit is
 * negative or not finite, or when limit > 0 and window is not a finite
 * number > 0 or limit < 2. */
int budget_init(struct budget *b, double limit, double window, double now)
    __attribute__((warn_unused_result));

/* 1 when `b` limits nothing. */
int budget_unlimited(const struct budget *b);

/* Bring `b` to time `now` (refill, and the slow way back after a quiet
 * time). */
void budget_refill(struct budget *b, double now);

/* Seconds from `now` until a request costing `cost` may go (0: now). A
 * cost over the capacity (the window's allowance) waits for a full
 * bucket (an empty window): it could never fit, so it goes alone,
 * leaving the bucket in debt, which later requests wait out. A cost <= 0
 * never waits. Refills first. */
double budget_wait(struct budget *b, double cost, double now);

/* Take `cost` tokens at `now` (after budget_wait() said 0). */
void budget_take(struct budget *b, double cost, double now);

/* The server answered 429 (or throttled an inner request) with
 * Retry-After `retry_after` seconds (< 0: none given) to a request sent
 * at `sent` (< 0: unknown): learn from it as the file's comment says, and
 * empty the bucket so that nothing bursts when the Retry-After ends.
 * Returns 1 when something was learnt, 0 when the answer fell in the
 * hold time of an earlier one, or answers a request sent before the last
 * lesson (it went at the pace that lesson already corrected: one lesson
 * per round trip), or b is unlimited. */
int budget_throttled(struct budget *b, double retry_after, double sent,
                     double now);

/* The share of the service's limit our own spending explains at `now`:
 * what the bucket lacks of its capacity (what the mirror counts in the
 * window), over the capacity (the limit as far as we learnt it); 0 when
 * unlimited. */
double budget_share(const struct budget *b, double now);

/* A response carried x-ms-throttle-limit-percentage `fraction` (0.8 to
 * 1.8: Graph sends the share of the limit used, once over 0.8). `own` is
 * the share our own sending explains (budget_share(), of this budget or
 * the fullest of those the server may be counting). Over
 * BUDGET_PRESSURE_LEVEL and more than BUDGET_PRESSURE_MARGIN over `own`,
 * the rate goes down a little; otherwise nothing. */
void budget_pressure(struct budget *b, double fraction, double own,
                     double now);

/* What `b` has learnt (for an unlimited budget: zeros). */
void budget_learnt_get(const struct budget *b, struct budget_learnt *out);

/* Give `b` what an earlier run learnt: capacity and rate are clamped to
 * [BUDGET_MIN_SHARE, 1] of the documented values. The bucket is left as
 * it is, but never holds more than the capacity. Returns 0, or -1 (b
 * untouched) when b is unlimited or a value is not finite, not > 0 or
 * the model unknown. */
int budget_learnt_set(struct budget *b, const struct budget_learnt *l)
    __attribute__((warn_unused_result));

#endif
