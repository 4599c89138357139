/*
 * budget — see include/budget.h.
 *
 * Two constraints, both must allow a request:
 *
 * The window: a mirror of the server's sliding window. What was taken is
 * counted in BUDGET_SLOTS slots of window/BUDGET_SLOTS seconds, and a
 * slot is counted for two slots longer than the window (so never for
 * less than the window, whatever the take's place in its slot, even when
 * rounding puts a take on a slot boundary into the slot before). Taking stops
 * at BUDGET_FILL of the limit: the rest is a margin for requests that
 * reach the server in clumps. So the first window's whole allowance can
 * go at once, as the server allows, and no window of the limit's length
 * ever sees more than the limit.
 *
 * The bucket: a token bucket of BUDGET_BURST of the limit, filled at
 * BUDGET_FILL of the documented rate. It keeps sending smooth: a window's
 * whole allowance sent at once reaches a slow server over seconds, so the
 * server's count (at arrival) lags ours (at sending) and the next window
 * meets 429s. After a 429 it is emptied and its rate cut, and the rate
 * climbs back slowly (AIMD).
 *
 * Why time only moves forward: the caller's clock is monotonic, but a
 * caller that mixes clocks, or a test, must not be able to mint tokens by
 * going back; an earlier time is treated as the last one seen.
 */
#include "budget.h"

#include <math.h>
#include <string.h>

/* Additive increase: max_rate * AI_PER_WINDOW per window of time. */
#define AI_PER_WINDOW 0.5
#define MIN_RATE_SHARE 0.05
#define HOLD_SHARE 0.1
#define HOLD_MIN 0.05
#define HOLD_MAX 2.0
/* Rounding slack: a wait this short is no wait. */
#define EPSILON 1e-9

int
budget_init(struct budget *b, double limit, double window, double now)
{
  struct budget n;

  if (!isfinite(limit) || limit < 0 || !isfinite(now))
    return -1;
  if (limit > 0 && (!isfinite(window) || window <= 0 || limit < 2))
    return -1;
  memset(&n, 0, sizeof n);
  n.limit = limit;
  n.window = limit > 0 ? window : 0;
  n.last = now;
  if (limit > 0) {
    n.burst = floor(limit * BUDGET_BURST);
    if (n.burst < 1)
      n.burst = 1;
    n.allowance = floor(limit * BUDGET_FILL);
    if (n.allowance < 1)
      n.allowance = 1;
    n.max_rate = BUDGET_FILL * limit / window;
    n.min_rate = n.max_rate * MIN_RATE_SHARE;
    n.slot_len = window / BUDGET_SLOTS;
    for (int i = 0; i < BUDGET_RING; i++)
      n.slot_idx[i] = -1;
    n.rate = n.max_rate;
    n.tokens = n.burst;
  }
  *b = n;
  return 0;
}

int
budget_unlimited(const struct budget *b)
{
  return b->limit <= 0;
}

static double
hold_time(const struct budget *b)
{
  double h = b->window * HOLD_SHARE;

  if (h < HOLD_MIN)
    h = HOLD_MIN;
  if (h > HOLD_MAX)
    h = HOLD_MAX;
  return h;
}

void
budget_refill(struct budget *b, double now)
{
  double dt;

  if (budget_unlimited(b) || !(now > b->last))
    return;
  dt = now - b->last;
  b->last = now;
  b->tokens += b->rate * dt;
  if (b->tokens > b->burst)
    b->tokens = b->burst;
  if (b->rate < b->max_rate &&
      (!b->slowed || now - b->last_slow >= hold_time(b))) {
    b->rate += b->max_rate * AI_PER_WINDOW * dt / b->window;
    if (b->rate > b->max_rate)
      b->rate = b->max_rate;
  }
}

/* The slot a time falls in (times before the last seen count as it). */
static long long
slot_of(const struct budget *b, double now)
{
  if (!(now > b->last))
    now = b->last;
  return (long long)floor(now / b->slot_len);
}

/* What the window counts at `now`, and in *expires (when not NULL) the
 * time at which `need` of it will have left the count. */
static double
window_used(const struct budget *b, double now, double need, double *expires)
{
  long long cur = slot_of(b, now);
  double used = 0, freed = 0;

  if (expires != NULL)
    *expires = 0;
  /* Oldest first: slots cur - BUDGET_RING + 1 .. cur are counted. */
  for (long long k = cur - BUDGET_RING + 1; k <= cur; k++) {
    int p = (int)(((k % BUDGET_RING) + BUDGET_RING) % BUDGET_RING);
    if (b->slot_idx[p] != k || b->slot_cost[p] <= 0)
      continue;
    used += b->slot_cost[p];
    if (expires != NULL && *expires == 0 && need > 0) {
      freed += b->slot_cost[p];
      if (freed + EPSILON >= need)
        *expires = (double)(k + BUDGET_RING) * b->slot_len;
    }
  }
  return used;
}

double
budget_wait(struct budget *b, double cost, double now)
{
  double need, wait = 0, used, cap, expires;

  if (budget_unlimited(b) || !(cost > 0))
    return 0;
  budget_refill(b, now);
  if (!(now > b->last))
    now = b->last;
  need = cost < b->burst ? cost : b->burst;
  if (b->tokens + EPSILON < need)
    wait = (need - b->tokens) / b->rate;
  /* The window: a request over the whole allowance waits for an empty
   * window, then goes alone. */
  cap = b->allowance;
  used = window_used(b, now, 0, NULL);
  if (used > 0 && used + cost > cap + EPSILON) {
    double excess = cost > cap ? used : used + cost - cap;
    window_used(b, now, excess, &expires);
    if (expires - now > wait)
      wait = expires - now;
  }
  /* A wait of rounding noise (a slot boundary computed two ways) is none:
   * the window's two spare slots cover far more than that. */
  return wait > 1e-6 ? wait : 0;
}

void
budget_take(struct budget *b, double cost, double now)
{
  long long k;
  int p;

  if (budget_unlimited(b) || !(cost > 0))
    return;
  budget_refill(b, now);
  b->tokens -= cost;
  k = slot_of(b, now);
  p = (int)(((k % BUDGET_RING) + BUDGET_RING) % BUDGET_RING);
  if (b->slot_idx[p] != k) {
    b->slot_idx[p] = k;
    b->slot_cost[p] = 0;
  }
  b->slot_cost[p] += cost;
}

/* Multiply the rate by `factor`, at most once per hold time. */
static int
slow(struct budget *b, double factor, double now)
{
  if (budget_unlimited(b))
    return 0;
  budget_refill(b, now);
  if (!(now > b->last)) /* earlier (or NaN): the last time seen */
    now = b->last;
  if (b->slowed && now - b->last_slow < hold_time(b))
    return 0;
  b->rate *= factor;
  if (b->rate < b->min_rate)
    b->rate = b->min_rate;
  b->slowed = 1;
  b->last_slow = now;
  b->decreases++;
  return 1;
}

void
budget_throttled(struct budget *b, double now)
{
  if (budget_unlimited(b))
    return;
  slow(b, BUDGET_DECREASE, now);
  if (b->tokens > 0)
    b->tokens = 0;
}

double
budget_share(const struct budget *b, double now)
{
  if (budget_unlimited(b))
    return 0;
  if (!(now > b->last)) /* earlier (or NaN): the last time seen */
    now = b->last;
  return window_used(b, now, 0, NULL) / b->limit;
}

void
budget_pressure(struct budget *b, double fraction, double own, double now)
{
  if (budget_unlimited(b) || !(fraction > BUDGET_PRESSURE_LEVEL))
    return;
  /* Our own sending is already kept under BUDGET_FILL by the window: a
   * share that much of is no news, and slowing for it would settle the
   * rate near the level instead of the fill. Only a share above ours
   * (others writing with the same app, or a tenant-wide limit) is. */
  if (!(fraction > own + BUDGET_PRESSURE_MARGIN))
    return;
  slow(b, BUDGET_PRESSURE_DECREASE, now);
}
