/*
 * budget — see include/budget.h.
 *
 * Why the burst is small: a token bucket lets through at most
 * burst + rate * T tokens in any span of T seconds. The server counts a
 * sliding window of `window` seconds, so a full bucket spent at the start
 * of a window plus a full window of refill must stay within the limit:
 * burst <= limit - rate * window. With rate at 95 % of the documented
 * rate that leaves 5 % of the limit; the burst takes half of it (at least
 * one token; the rate is lowered when rounding the burst up would break
 * the bound) and the other half is a margin for requests that reach the
 * server in clumps (queued in the network or behind a slow answer),
 * which a bound met exactly turned into the odd 429.
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
    n.burst = floor(limit * (1.0 - BUDGET_FILL) / 2);
    if (n.burst < 1)
      n.burst = 1;
    n.max_rate = BUDGET_FILL * limit / window;
    if (n.burst + n.max_rate * window > limit)
      n.max_rate = (limit - n.burst) / window;
    n.min_rate = n.max_rate * MIN_RATE_SHARE;
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

double
budget_wait(struct budget *b, double cost, double now)
{
  double need;

  if (budget_unlimited(b) || !(cost > 0))
    return 0;
  budget_refill(b, now);
  need = cost < b->burst ? cost : b->burst;
  if (b->tokens + EPSILON >= need)
    return 0;
  return (need - b->tokens) / b->rate;
}

void
budget_take(struct budget *b, double cost, double now)
{
  if (budget_unlimited(b) || !(cost > 0))
    return;
  budget_refill(b, now);
  b->tokens -= cost;
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

void
budget_pressure(struct budget *b, double fraction, double now)
{
  if (!(fraction > BUDGET_PRESSURE_LEVEL))
    return;
  slow(b, BUDGET_PRESSURE_DECREASE, now);
}
