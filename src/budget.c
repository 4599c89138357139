/*
 * budget — see include/budget.h.
 *
 * Why a bucket: Microsoft documents the identity and access limits as a
 * token bucket (resource units per 10 s; 3,000 writes per 2 min 30 s per
 * application and tenant). A full bucket lets a client spend its whole
 * capacity at once and then refill at the average rate, so a first round
 * of 4,000 writes may take 50 s, where a mirror of a sliding window
 * (what this file did before) waits for the window to slide and takes
 * minutes. Spending at once is safe against a bucket even though requests
 * reach the server later than we count them: a later arrival only finds
 * the server's bucket fuller. Only the rate keeps a margin (BUDGET_FILL),
 * for the service's own rounding and clocks.
 *
 * Why learn: the documented bucket is what one application meets alone
 * in a tenant of the documented size. The service throttles sooner when
 * another application spends the tenant's budget, when the tenant's quota
 * is smaller, or when it counts a window. Each shows in the 429s: tokens
 * left in our bucket when the service's ran out (a smaller bucket), a
 * Retry-After far longer than a bucket refilling at anything near our
 * rate would ask (a window), or a 429 while we spend at our rate (a
 * slower refill). What is learnt is kept below, for this application and
 * tenant, and given back after a restart by the caller.
 *
 * The window: a mirror of the server's sliding window. What was taken is
 * counted in BUDGET_SLOTS slots of window/BUDGET_SLOTS seconds, and a
 * slot is counted for two slots longer than the window and its margin
 * (so never for less than the window, whatever the take's place in its
 * slot, even when the request reaches the service a little later than
 * we count it: window_margin()). It records in
 * both models, so that a window learnt mid-way knows what was sent in the
 * last window; it limits only once the model is a window.
 *
 * Why time only moves forward: the caller's clock is monotonic, but a
 * caller that mixes clocks, or a test, must not be able to mint tokens by
 * going back; an earlier time is treated as the last one seen.
 */
#include "budget.h"

#include <math.h>
#include <string.h>

#define HOLD_SHARE 0.1
#define HOLD_MIN 0.05
#define HOLD_MAX 2.0
/* Rounding slack: a wait this short is no wait. */
#define EPSILON 1e-9

/* How much longer than the window the mirror counts a take: requests
 * reach the service, which counts them as they arrive, later than we
 * count them as they leave, by the time a $batch of them takes; a
 * quarter of a short window, never more than half a second. */
static double
window_margin(double window)
{
  double m = window * 0.25;

  return m < BUDGET_WINDOW_MARGIN ? m : BUDGET_WINDOW_MARGIN;
}

static void
set_allowance(struct budget *b)
{
  b->allowance = floor(b->capacity * BUDGET_FILL);
  if (b->allowance < 1)
    b->allowance = 1;
}

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
  n.quiet_since = now;
  if (limit > 0) {
    n.max_rate = BUDGET_FILL * limit / window;
    n.min_rate = n.max_rate * BUDGET_MIN_SHARE;
    n.capacity = limit;
    n.rate = n.max_rate;
    n.taught_rate = n.rate;
    n.taught_capacity = n.capacity;
    n.model = BUDGET_BUCKET;
    n.tokens = limit;
    n.slot_len = (window + window_margin(window)) / BUDGET_SLOTS;
    for (int i = 0; i < BUDGET_RING; i++)
      n.slot_idx[i] = -1;
    set_allowance(&n);
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

static double
min_capacity(const struct budget *b)
{
  double c = ceil(b->limit * BUDGET_MIN_SHARE);

  return c < 1 ? 1 : c;
}

/* After a quiet time, learnt values go part of the way back: what was
 * learnt may have been another application's passing load. */
static void
recover(struct budget *b, double now)
{
  double cap, rate;

  if (now - b->quiet_since < BUDGET_RECOVER_WINDOWS * b->window)
    return;
  b->quiet_since = now;
  if (b->capacity >= b->limit && b->rate >= b->max_rate)
    return;
  /* Kept, so that a 429 soon after the step only takes it back. */
  b->stepped = 1;
  b->step_at = now;
  b->step_capacity = b->capacity;
  b->step_rate = b->rate;
  cap = b->capacity + (b->limit - b->capacity) * BUDGET_RECOVER_STEP;
  rate = b->rate + (b->max_rate - b->rate) * BUDGET_RECOVER_STEP;
  /* The last step lands on the documented values. */
  b->capacity = b->limit - cap < 1 ? b->limit : cap;
  b->rate = b->max_rate - rate < b->max_rate * 0.01 ? b->max_rate : rate;
  b->taught_rate = b->rate;
  b->taught_capacity = b->capacity;
  set_allowance(b);
  b->changes++;
}

void
budget_refill(struct budget *b, double now)
{
  if (budget_unlimited(b) || !(now > b->last))
    return;
  b->tokens += b->rate * (now - b->last);
  if (b->tokens > b->capacity)
    b->tokens = b->capacity;
  b->last = now;
  recover(b, now);
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

/* The window model: wait until the mirror has room for `cost`. A cost
 * over the whole allowance waits for an empty window, then goes alone. */
static double
window_wait(const struct budget *b, double cost, double now)
{
  double used = window_used(b, now, 0, NULL), cap = b->allowance, expires;
  double excess;

  if (!(used > 0) || used + cost <= cap + EPSILON)
    return 0;
  excess = cost > cap ? used : used + cost - cap;
  window_used(b, now, excess, &expires);
  return expires > now ? expires - now : 0;
}

double
budget_wait(struct budget *b, double cost, double now)
{
  double need, wait = 0;

  if (budget_unlimited(b) || !(cost > 0))
    return 0;
  budget_refill(b, now);
  if (!(now > b->last))
    now = b->last;
  if (b->model == BUDGET_WINDOW) {
    wait = window_wait(b, cost, now);
  } else {
    need = cost < b->capacity ? cost : b->capacity;
    if (b->tokens + EPSILON < need)
      wait = (need - b->tokens) / b->rate;
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

/* Whether a lesson may be taken at `now` (one per hold time, 429s and
 * pressure apart: slowing for pressure must not hide a 429's lesson);
 * if so it is counted. */
static int
lesson(struct budget *b, double now, int pressure)
{
  int *taught = pressure ? &b->pressed : &b->taught;
  double *last = pressure ? &b->last_pressure : &b->last_lesson;

  if (*taught && now - *last < hold_time(b))
    return 0;
  *taught = 1;
  *last = now;
  b->quiet_since = now;
  b->decreases++;
  b->changes++;
  return 1;
}

static void
lower_rate(struct budget *b, double factor)
{
  b->rate *= factor;
  if (b->rate < b->min_rate)
    b->rate = b->min_rate;
}

static void
lower_capacity(struct budget *b, double capacity)
{
  double floor_cap = min_capacity(b);

  b->capacity = capacity < floor_cap ? floor_cap : capacity;
  set_allowance(b);
}

static int throttled(struct budget *b, double retry_after, double now);

int
budget_throttled(struct budget *b, double retry_after, double sent, double now)
{
  int learnt;

  if (budget_unlimited(b))
    return 0;
  /* Sent before the last lesson, at the pace it corrected: its 429 is
   * that lesson's, not news. The bucket is still emptied. */
  if (b->taught && sent >= 0 && sent < b->last_lesson) {
    budget_refill(b, now);
    if (b->tokens > 0)
      b->tokens = 0;
    return 0;
  }
  learnt = throttled(b, retry_after, now);

  if (learnt) {
    b->taught_rate = b->rate;
    b->taught_capacity = b->capacity;
  }
  return learnt;
}

static int
throttled(struct budget *b, double retry_after, double now)
{
  double left;

  if (budget_unlimited(b))
    return 0;
  budget_refill(b, now);
  if (!(now > b->last)) /* earlier (or NaN): the last time seen */
    now = b->last;
  left = b->tokens > 0 ? b->tokens : 0;
  if (b->tokens > 0)
    b->tokens = 0;
  if (!lesson(b, now, 0))
    return 0;
  /* A 429 within the windows after a step back: the step was too far,
   * what was learnt before it was right. */
  if (b->stepped) {
    b->stepped = 0;
    if (now - b->step_at < BUDGET_RECOVER_WINDOWS * b->window) {
      b->capacity = b->step_capacity;
      b->rate = b->step_rate;
      set_allowance(b);
      return 1;
    }
  }
  if (b->model == BUDGET_WINDOW) {
    /* Already a window: the mirror let through more than the service
     * counted (late arrivals of a burst, or others): spend less of it. */
    lower_capacity(b, b->capacity * BUDGET_DECREASE);
    return 1;
  }
  /* A bucket refilling near the documented rate holds the cost of one
   * request again within a second (3,000 per 150 s: a write each 50 ms);
   * waiting a quarter of the window is what a sliding window asks, until
   * its oldest entries leave. Retry-After comes in whole seconds, so one
   * second says only "soon": it is no window, however short the window
   * (150 invitations per 5 s: a bucket's next token is 34 ms away, and
   * the service still says 1). (Not "past the time our bucket would be
   * full": after a burst that is the whole window too, and a throttling
   * storm's 429 on a full bucket would pass it.) */
  if (isfinite(retry_after) && retry_after > BUDGET_WINDOW_HINT * b->window &&
      retry_after > BUDGET_RETRY_GRAIN) {
    b->model = BUDGET_WINDOW;
    return 1;
  }
  if (left > BUDGET_LEFT_SHARE * b->capacity) {
    /* At most halved by one lesson: a 429 "under load" (Microsoft says
     * they happen below the limits too) must not take it all. */
    double cap = b->capacity - left;
    if (cap < b->capacity * 0.5)
      cap = b->capacity * 0.5;
    lower_capacity(b, cap);
    /* A smaller quota refills in the same window: the rate follows. */
    if (b->rate > BUDGET_FILL * b->capacity / b->window)
      b->rate = BUDGET_FILL * b->capacity / b->window;
    if (b->rate < b->min_rate)
      b->rate = b->min_rate;
    return 1;
  }
  lower_rate(b, BUDGET_DECREASE);
  return 1;
}

double
budget_share(const struct budget *b, double now)
{
  double used;

  if (budget_unlimited(b))
    return 0;
  if (!(now > b->last)) /* earlier (or NaN): the last time seen */
    now = b->last;
  if (b->model == BUDGET_WINDOW)
    return window_used(b, now, 0, NULL) / b->capacity;
  used = b->capacity - (b->tokens + b->rate * (now - b->last));
  return used > 0 ? used / b->capacity : 0;
}

void
budget_pressure(struct budget *b, double fraction, double own, double now)
{
  double floor_at, cap;

  if (budget_unlimited(b) || !(fraction > BUDGET_PRESSURE_LEVEL))
    return;
  /* A share our own spending explains is no news: slowing for it would
   * settle the rate near the level. Only a share above ours (others
   * writing with the same app, or a tenant-wide limit, beyond what a
   * 429 already taught) is. */
  if (!(fraction > own + BUDGET_PRESSURE_MARGIN))
    return;
  budget_refill(b, now);
  if (!(now > b->last))
    now = b->last;
  /* A hint, not a lesson: it takes off at most what the floor allows
   * below what the last 429 taught. */
  if (b->model == BUDGET_WINDOW) {
    floor_at = b->taught_capacity * BUDGET_PRESSURE_FLOOR;
    if (b->capacity <= floor_at + EPSILON || !lesson(b, now, 1))
      return;
    cap = b->capacity * BUDGET_PRESSURE_DECREASE;
    lower_capacity(b, cap > floor_at ? cap : floor_at);
    return;
  }
  floor_at = b->taught_rate * BUDGET_PRESSURE_FLOOR;
  if (b->rate <= floor_at + EPSILON || !lesson(b, now, 1))
    return;
  lower_rate(b, BUDGET_PRESSURE_DECREASE);
  if (b->rate < floor_at)
    b->rate = floor_at;
}

void
budget_learnt_get(const struct budget *b, struct budget_learnt *out)
{
  memset(out, 0, sizeof *out);
  if (budget_unlimited(b))
    return;
  out->capacity = b->capacity;
  out->rate = b->rate;
  out->model = b->model;
}

int
budget_learnt_set(struct budget *b, const struct budget_learnt *l)
{
  double cap, rate;

  if (budget_unlimited(b) || !isfinite(l->capacity) || !(l->capacity > 0) ||
      !isfinite(l->rate) || !(l->rate > 0) ||
      (l->model != BUDGET_BUCKET && l->model != BUDGET_WINDOW))
    return -1;
  cap = l->capacity > b->limit ? b->limit : l->capacity;
  rate = l->rate > b->max_rate ? b->max_rate : l->rate;
  b->capacity = cap < min_capacity(b) ? min_capacity(b) : cap;
  b->rate = rate < b->min_rate ? b->min_rate : rate;
  b->model = l->model;
  b->taught_rate = b->rate;
  b->taught_capacity = b->capacity;
  set_allowance(b);
  if (b->tokens > b->capacity)
    b->tokens = b->capacity;
  /* The way back starts from now, as after a lesson. */
  b->quiet_since = b->last;
  return 0;
}
