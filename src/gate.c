/*
 * gate — see include/gate.h.
 *
 * A set is the anonymous gate and a list of named ones (newest first;
 * admission walks them in that order). Each gate has two FIFOs of
 * waiters: the plain one, for requests that cost only resource units (a
 * read) or nothing, and the paced one, for requests that cost writes or
 * invitations. A paced request starts once the gate is open and the
 * gate's token buckets (budget.h) hold its cost; a plain one is never
 * held behind paced ones, and starts once the units bucket holds its
 * cost. The caller asks gate_next_at() when anything may move next and
 * arms its timer for that moment.
 *
 * Time is the caller's monotonic clock in nanoseconds; the buckets count
 * in seconds of the same clock.
 *
 * The log lines keep the "http" prefix they had when this was part of
 * http.c: they say what happened to the requests of a tenant, and log
 * monitors match them.
 */
#include "gate.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "budget.h"
#include "log.h"

#define NS_PER_MS 1000000ULL

/* Statuses counted per gate; the last slot takes what does not fit, so
 * the counts stay bounded. */
#define GATE_STATUSES 32

struct gate_queue {
  struct gate_waiter *head, *tail;
};

struct gate {
  struct gate *next;
  char *name;              /* NULL for the anonymous gate (never closes) */
  uint64_t reopen_ns;      /* the time at which it opens again */
  struct gate_queue queue; /* FIFO of requests waiting to start */
  /* Requests that cost writes or invitations wait here, FIFO, until the
   * gate is open and every bucket holds their cost; requests that cost
   * only units (or nothing) are not held behind them. Unlimited buckets
   * (the default) never hold anything. */
  struct gate_queue paced;
  struct budget writes;
  struct budget invites;
  struct budget units;              /* resource units, reads included */
  unsigned long long budget_waited; /* requests that waited for budget */
  /* Attempts by status (0: no answer). */
  struct gate_stat by_status[GATE_STATUSES];
  size_t n_status;
  unsigned long long throttled;
};

struct gate_set {
  struct gate anon;   /* requests without a gate */
  struct gate *gates; /* named gates */
};

static double
seconds(uint64_t ns)
{
  return (double)ns / 1e9;
}

/* --- queues --- */

static void
queue_push(struct gate_queue *q, struct gate_waiter *w)
{
  w->queue = q;
  w->next = NULL;
  w->prev = q->tail;
  if (q->tail != NULL)
    q->tail->next = w;
  else
    q->head = w;
  q->tail = w;
}

static void
queue_push_front(struct gate_queue *q, struct gate_waiter *w)
{
  w->queue = q;
  w->prev = NULL;
  w->next = q->head;
  if (q->head != NULL)
    q->head->prev = w;
  else
    q->tail = w;
  q->head = w;
}

static struct gate_waiter *
queue_pop(struct gate_queue *q)
{
  struct gate_waiter *w = q->head;

  if (w == NULL)
    return NULL;
  q->head = w->next;
  if (q->head != NULL)
    q->head->prev = NULL;
  else
    q->tail = NULL;
  w->prev = w->next = NULL;
  w->queue = NULL;
  return w;
}

/* The queue `w` waits on in its gate: paced when it costs budget. */
static struct gate_queue *
queue_of(struct gate_waiter *w)
{
  if (w->gate->name != NULL && (w->writes > 0 || w->invitations > 0))
    return &w->gate->paced;
  return &w->gate->queue;
}

void
gate_push(struct gate_waiter *w)
{
  queue_push(queue_of(w), w);
}

void
gate_push_front(struct gate_waiter *w)
{
  queue_push_front(queue_of(w), w);
}

/* --- the set --- */

struct gate_set *
gate_set_new(void)
{
  return calloc(1, sizeof(struct gate_set));
}

void
gate_set_free(struct gate_set *set)
{
  if (set == NULL)
    return;
  for (struct gate *g = set->gates, *next; g != NULL; g = next) {
    next = g->next;
    free(g->name);
    free(g);
  }
  free(set);
}

struct gate *
gate_find(const struct gate_set *set, const char *name)
{
  for (struct gate *g = set->gates; g != NULL; g = g->next) {
    if (strcmp(g->name, name) == 0)
      return g;
  }
  return NULL;
}

struct gate *
gate_get(struct gate_set *set, const char *name)
{
  struct gate *g;

  if (name == NULL || name[0] == '\0')
    return &set->anon;
  g = gate_find(set, name);
  if (g != NULL)
    return g;
  g = calloc(1, sizeof *g);
  if (g == NULL)
    return NULL;
  g->name = strdup(name);
  if (g->name == NULL) {
    free(g);
    return NULL;
  }
  g->next = set->gates;
  set->gates = g;
  return g;
}

const char *
gate_name(const struct gate *g)
{
  return g->name != NULL ? g->name : "-";
}

/* --- closing --- */

int
gate_closed(const struct gate *g, uint64_t now)
{
  return g->name != NULL && g->reopen_ns > now;
}

double
gate_reopen_in(const struct gate *g, uint64_t now)
{
  if (g == NULL || g->reopen_ns <= now)
    return 0;
  return (double)(g->reopen_ns - now) / 1e9;
}

static void
close_for(struct gate *g, uint64_t now, double ms, const char *why)
{
  uint64_t until;

  if (g->name == NULL)
    return;
  until = now + (uint64_t)ceil(ms * (double)NS_PER_MS);
  if (until > g->reopen_ns)
    g->reopen_ns = until;
  log_debug("http gate closed gate=%s for_ms=%.0f%s", g->name, ms, why);
}

void
gate_close(struct gate *g, uint64_t now, double ms)
{
  close_for(g, now, ms, "");
}

int
gate_closes_on(long status, double retry_after)
{
  return status == 429 ||
         ((status == 503 || status == 504) && retry_after >= 0);
}

/* --- counters --- */

void
gate_count(struct gate *g, long status, int throttled)
{
  size_t i;

  if (throttled)
    g->throttled++;
  for (i = 0; i < g->n_status; i++) {
    if (g->by_status[i].status == status) {
      g->by_status[i].count++;
      return;
    }
  }
  if (g->n_status < GATE_STATUSES) {
    g->by_status[g->n_status].status = status;
    g->by_status[g->n_status].count = 1;
    g->n_status++;
    return;
  }
  g->by_status[GATE_STATUSES - 1].count++;
}

size_t
gate_stats(const struct gate *g, struct gate_stat *out, size_t max,
           unsigned long long *throttled)
{
  size_t n = 0;

  *throttled = 0;
  if (g == NULL)
    return 0;
  for (size_t i = 0; i < g->n_status && n < max; i++)
    out[n++] = g->by_status[i];
  *throttled = g->throttled;
  return n;
}

/* --- budget (token buckets per gate, see budget.h) --- */

/* Seconds from `now` until every bucket holds what `w` costs (0: now). */
static double
budget_delay(struct gate *g, const struct gate_waiter *w, double now)
{
  double wr = budget_wait(&g->writes, w->writes, now);
  double i = budget_wait(&g->invites, w->invitations, now);
  double u = budget_wait(&g->units, w->units, now);

  if (i > wr)
    wr = i;
  return u > wr ? u : wr;
}

static void
budget_take_all(struct gate *g, struct gate_waiter *w, double now)
{
  if (w->paid)
    return;
  budget_take(&g->writes, w->writes, now);
  budget_take(&g->invites, w->invitations, now);
  budget_take(&g->units, w->units, now);
  w->paid = 1;
  w->paid_at = (uint64_t)(now * 1e9);
}

/* Whether `w` must wait for its gate's budget at `now` (counted once in
 * budget_waited). */
static int
budget_held(struct gate *g, struct gate_waiter *w, double now)
{
  if (w->paid || !(budget_delay(g, w, now) > 0))
    return 0;
  if (!w->waited) {
    w->waited = 1;
    g->budget_waited++;
  }
  return 1;
}

/* The bucket `b` names, or the write bucket when that one is unlimited
 * (a throttled read then still slows the tenant down). */
static struct budget *
bucket_of(struct gate *g, enum gate_bucket b)
{
  struct budget *p = b == GATE_BUCKET_INVITATIONS ? &g->invites
                     : b == GATE_BUCKET_UNITS     ? &g->units
                                                  : &g->writes;

  return p->limit > 0 ? p : &g->writes;
}

static const char *
bucket_name(const struct gate *g, const struct budget *b)
{
  return b == &g->invites ? "invitations"
         : b == &g->units ? "units"
                          : "writes";
}

/* The bucket a 429 for `w` most likely hit: the one the answer names
 * (x-ms-throttle-information, Graph's diagnostic), else invitations for
 * an invitation, writes for a write, resource units for a read. */
static enum gate_bucket
throttled_bucket(const struct gate_waiter *w, const char *why)
{
  if (why != NULL && strcasecmp(why, "ResourceUnitLimitExceeded") == 0)
    return GATE_BUCKET_UNITS;
  /* An invitation is a write too: the write limit may be the one. */
  if (why != NULL && strcasecmp(why, "WriteLimitExceeded") == 0)
    return GATE_BUCKET_WRITES;
  if (w->invitations > 0)
    return GATE_BUCKET_INVITATIONS;
  return w->writes > 0 ? GATE_BUCKET_WRITES : GATE_BUCKET_UNITS;
}

/* The share of the limits our own sending explains: the fuller of the
 * writes and units buckets (the server counts both). */
static double
own_share(const struct gate *g, double now)
{
  double own = budget_share(&g->writes, now);
  double units = budget_share(&g->units, now);

  return units > own ? units : own;
}

static void
log_lesson(const struct gate *g, const struct budget *b, long status,
           const char *scope, double retry_after)
{
  log_info("http budget learnt gate=%s bucket=%s model=%s capacity=%.0f "
           "rate=%.3f status=%ld retry_after=%.3f scope=%s",
           gate_name(g), bucket_name(g, b),
           b->model == BUDGET_WINDOW ? "window" : "bucket", b->capacity,
           b->rate, status, retry_after, scope != NULL ? scope : "-");
}

/* x-ms-resource-unit: what the service charged. A request we priced
 * lower takes the difference, so that our bucket follows its count. */
static void
charge_units(struct gate *g, const struct gate_waiter *w, const char *v,
             double now)
{
  char *end;
  double charged;

  if (v == NULL)
    return;
  errno = 0;
  charged = strtod(v, &end);
  if (end == v || *end != '\0' || errno != 0 || !(charged > w->units) ||
      charged > 1000)
    return;
  budget_take(&g->units, charged - w->units, now);
}

/* What an answer says about the budget: a 429 teaches the bucket it most
 * likely hit (throttled_bucket; the write bucket when that one is
 * unlimited: a throttled read still means the tenant is loaded); an
 * x-ms-throttle-limit-percentage over 0.9 that is more than our own
 * share of the writes or units limits slows writes a little. */
void
gate_answer(struct gate_waiter *w, long status, const struct gate_headers *h,
            uint64_t now_ns)
{
  struct gate *g = w->gate;
  struct budget *b;
  double now = seconds(now_ns), fraction;
  unsigned long long before;
  const char *v;
  char *end;

  if (g->name == NULL || h == NULL)
    return;
  if (status == 429) {
    b = bucket_of(g, throttled_bucket(w, h->throttle_information));
    if (budget_throttled(b, h->retry_after, w->paid ? seconds(w->paid_at) : -1,
                         now))
      log_lesson(g, b, status, h->throttle_scope, h->retry_after);
    return;
  }
  charge_units(g, w, h->resource_unit, now);
  v = h->limit_percentage;
  if (v == NULL)
    return;
  errno = 0;
  fraction = strtod(v, &end);
  if (end == v || *end != '\0' || errno != 0)
    return;
  b = &g->writes;
  before = b->decreases;
  budget_pressure(b, fraction, own_share(g, now), now);
  if (b->decreases != before)
    log_lesson(g, b, status, NULL, -1);
}

int
gate_set_limits(struct gate_set *set, const char *name,
                const struct gate_limits *limits, uint64_t now_ns)
{
  struct budget w, i, u;
  struct gate *g;
  double now = seconds(now_ns);

  if (name == NULL || name[0] == '\0' || limits == NULL)
    return -1;
  if (budget_init(&w, limits->writes, limits->writes_window, now) != 0 ||
      budget_init(&i, limits->invitations, limits->invitations_window, now) !=
          0 ||
      budget_init(&u, limits->units, limits->units_window, now) != 0)
    return -1;
  g = gate_get(set, name);
  if (g == NULL)
    return -1;
  /* The same limits again (a reload) keep what the buckets have learnt:
   * a recent 429 is not forgotten, nor spent tokens refunded. */
  if (g->writes.limit != w.limit || g->writes.window != w.window)
    g->writes = w;
  if (g->invites.limit != i.limit || g->invites.window != i.window)
    g->invites = i;
  if (g->units.limit != u.limit || g->units.window != u.window)
    g->units = u;
  log_debug("http budget gate=%s writes=%.0f/%.0fs invitations=%.0f/%.0fs "
            "units=%.0f/%.0fs",
            name, limits->writes, limits->writes_window, limits->invitations,
            limits->invitations_window, limits->units, limits->units_window);
  return 0;
}

void
gate_note_throttle(struct gate *g, double retry_after, enum gate_bucket bucket,
                   uint64_t sent, uint64_t now)
{
  struct budget *b = bucket_of(g, bucket);

  if (g->name != NULL &&
      budget_throttled(b, retry_after, sent > 0 ? seconds(sent) : -1,
                       seconds(now)))
    log_lesson(g, b, 429, "inner", retry_after);
  /* The service said when to come back: nothing goes on this gate before
   * then either (DESIGN.md invariant 7), as after a 429 of a request of
   * its own. */
  if (retry_after > 0)
    close_for(g, now, retry_after * 1000.0, " (inner request)");
}

int
gate_budget(const struct gate *g, struct gate_budget *out)
{
  memset(out, 0, sizeof *out);
  if (g == NULL)
    return -1;
  out->write_rate = g->writes.rate;
  out->write_rate_max = g->writes.max_rate;
  out->invitation_rate = g->invites.rate;
  out->invitation_rate_max = g->invites.max_rate;
  out->unit_rate = g->units.rate;
  out->unit_rate_max = g->units.max_rate;
  out->waited = g->budget_waited;
  out->decreases =
      g->writes.decreases + g->invites.decreases + g->units.decreases;
  return 0;
}

/* --- what the budget learnt --- */

static struct budget *
bucket_named(struct gate *g, enum gate_bucket b)
{
  return b == GATE_BUCKET_INVITATIONS ? &g->invites
         : b == GATE_BUCKET_UNITS     ? &g->units
                                      : &g->writes;
}

int
gate_learnt(const struct gate *g, enum gate_bucket bucket,
            struct gate_learnt *out)
{
  const struct budget *b;

  memset(out, 0, sizeof *out);
  if (g == NULL || g->name == NULL)
    return -1;
  b = bucket_named((struct gate *)g, bucket);
  if (budget_unlimited(b))
    return -1;
  out->limit = b->limit;
  out->window = b->window;
  budget_learnt_get(b, &out->learnt);
  return 0;
}

int
gate_learn(struct gate *g, enum gate_bucket bucket,
           const struct gate_learnt *in)
{
  struct budget *b;

  if (g == NULL || g->name == NULL || in == NULL)
    return -1;
  b = bucket_named(g, bucket);
  /* Learnt under other limits: the configuration changed since, and
   * what it says now wins. */
  if (budget_unlimited(b) || b->limit != in->limit ||
      b->window != in->window || budget_learnt_set(b, &in->learnt) != 0)
    return -1;
  log_debug("http budget loaded gate=%s bucket=%s model=%s capacity=%.0f "
            "rate=%.3f",
            g->name, bucket_name(g, b),
            b->model == BUDGET_WINDOW ? "window" : "bucket", b->capacity,
            b->rate);
  return 0;
}

unsigned long long
gate_learnt_changes(const struct gate *g)
{
  if (g == NULL)
    return 0;
  return g->writes.changes + g->invites.changes + g->units.changes;
}

/* --- admission --- */

struct gate_waiter *
gate_next(struct gate_set *set, uint64_t now)
{
  if (set->anon.queue.head != NULL)
    return queue_pop(&set->anon.queue);
  for (struct gate *g = set->gates; g != NULL; g = g->next) {
    struct gate_waiter *w = g->paced.head;
    double t = seconds(now);

    if (g->reopen_ns > now)
      continue;
    /* Unpaced first (reads: their units only), then the paced FIFO. */
    if (g->queue.head != NULL && !budget_held(g, g->queue.head, t)) {
      budget_take_all(g, g->queue.head, t);
      return queue_pop(&g->queue);
    }
    if (w == NULL || budget_held(g, w, t))
      continue;
    budget_take_all(g, w, t);
    return queue_pop(&g->paced);
  }
  return NULL;
}

uint64_t
gate_next_at(struct gate_set *set, uint64_t now)
{
  uint64_t next = UINT64_MAX;

  if (set->anon.queue.head != NULL)
    return now;
  for (struct gate *g = set->gates; g != NULL; g = g->next) {
    struct gate_waiter *heads[2] = {g->queue.head, g->paced.head};

    for (int i = 0; i < 2; i++) {
      if (heads[i] == NULL)
        continue;
      /* Measured from now (never refill a bucket into the future); a
       * request whose budget is paid waits only for the gate. */
      double d = heads[i]->paid ? 0 : budget_delay(g, heads[i], seconds(now));
      uint64_t at = now + (uint64_t)ceil(d * 1e9);
      if (at < g->reopen_ns)
        at = g->reopen_ns;
      if (at < next)
        next = at;
    }
  }
  return next;
}

struct gate_waiter *
gate_pop(struct gate_set *set)
{
  struct gate_waiter *w = queue_pop(&set->anon.queue);

  for (struct gate *g = set->gates; w == NULL && g != NULL; g = g->next) {
    w = queue_pop(&g->queue);
    if (w == NULL)
      w = queue_pop(&g->paced);
  }
  return w;
}
