/*
 * budget — paces requests under a documented limit of `limit` requests
 * per sliding window of `window` seconds, so that the server rarely has
 * to answer 429.
 *
 * Pure arithmetic: no I/O, no clock. Every call takes the current time in
 * seconds (any monotonic origin); a time earlier than one seen before is
 * taken as "no time has passed" (never as a refund).
 *
 * A request may go when both allow it (see budget.c): a mirror of the
 * server's sliding window, which lets at most BUDGET_FILL of `limit`
 * through in any window, and a token bucket of BUDGET_BURST of `limit`
 * filled at `rate` tokens per second, at most BUDGET_FILL of the
 * documented rate, which keeps sending smooth.
 *
 * The rate adapts (AIMD): a throttled answer empties the bucket and
 * multiplies the rate by BUDGET_DECREASE, and a throttle-limit percentage
 * over BUDGET_PRESSURE_LEVEL and more than BUDGET_PRESSURE_MARGIN over the
 * share this budget itself sent in the window multiplies it by
 * BUDGET_PRESSURE_DECREASE, at
 * most once per hold time (a tenth of the window, 0.05 to 2 s) so that a
 * volley of 429s counts as one; it never goes under max_rate / 20. Once
 * the hold time has passed it climbs back by half of max_rate per window,
 * up to max_rate.
 */
#ifndef GALBRIDGE_BUDGET_H
#define GALBRIDGE_BUDGET_H

#define BUDGET_FILL 0.975
#define BUDGET_BURST 0.1
#define BUDGET_SLOTS 100               /* the window's resolution */
#define BUDGET_RING (BUDGET_SLOTS + 2) /* slots counted at once */
#define BUDGET_DECREASE 0.7
#define BUDGET_PRESSURE_LEVEL 0.9
#define BUDGET_PRESSURE_DECREASE 0.9
#define BUDGET_PRESSURE_MARGIN 0.05

/* Plain data: read freely, written only through the functions below. */
struct budget {
  double limit;     /* documented count per window; 0: unlimited */
  double window;    /* seconds */
  double burst;     /* bucket size, BUDGET_BURST of the limit, >= 1 */
  double allowance; /* most taken in any window, BUDGET_FILL of it */
  double max_rate;  /* configured fill rate, tokens per second */
  double min_rate;  /* floor of the adaptive rate */
  double rate;      /* current fill rate */
  double tokens;    /* may go negative after a request over the burst */
  double last;      /* time of the last refill */
  double last_slow; /* time of the last decrease */
  int slowed;       /* a decrease happened (last_slow is meaningful) */
  unsigned long long decreases;
  double slot_len;                 /* window / BUDGET_SLOTS */
  long long slot_idx[BUDGET_RING]; /* which slot each entry counts, -1 */
  double slot_cost[BUDGET_RING];
};

/* Set `b` up for `limit` per `window` seconds at time `now`, full. A zero
 * limit makes an unlimited budget (every wait is 0). Returns 0, or -1 (b
 * untouched) when limit is negative or not finite, or when limit > 0 and
 * window is not a finite number > 0. */
int budget_init(struct budget *b, double limit, double window, double now)
    __attribute__((warn_unused_result));

/* 1 when `b` limits nothing. */
int budget_unlimited(const struct budget *b);

/* Bring `b` to time `now` (refill, additive increase). */
void budget_refill(struct budget *b, double now);

/* Seconds from `now` until a request costing `cost` may go (0: now). A
 * cost over the burst waits for a full bucket (and one over the window's
 * allowance for an empty window): it could never fit, so it goes alone,
 * leaving the bucket in debt, which later requests wait out. A cost <= 0
 * never waits. Refills first. */
double budget_wait(struct budget *b, double cost, double now);

/* Take `cost` tokens at `now` (after budget_wait() said 0). */
void budget_take(struct budget *b, double cost, double now);

/* The server answered 429 (or throttled an inner request): multiplicative
 * decrease, and the bucket is emptied so nothing bursts when the server's
 * Retry-After ends. */
void budget_throttled(struct budget *b, double now);

/* The share of the limit sent through `b` in the window ending `now`
 * (what its mirror counts, over `limit`); 0 when unlimited. */
double budget_share(const struct budget *b, double now);

/* A response carried x-ms-throttle-limit-percentage `fraction` (0.8 to
 * 1.8: Graph sends the share of the limit used, once over 0.8). `own` is
 * the share our own sending explains (budget_share(), of this budget or
 * the fullest of those the server may be counting). Over
 * BUDGET_PRESSURE_LEVEL and more than BUDGET_PRESSURE_MARGIN over `own`,
 * the rate goes down a little; otherwise nothing (the window already
 * keeps our own share under BUDGET_FILL). */
void budget_pressure(struct budget *b, double fraction, double own,
                     double now);

#endif
