/*
 * gate — admission of requests per tenant and service: a set of named
 * gates (for example "<tenant id>/graph"), each with the time at which it
 * reopens after a throttled answer, a client-side budget, the requests
 * waiting to go through it, and counters of what came back.
 *
 * A gate is closed by a 429, or by a 503 or 504 that carries Retry-After,
 * for Retry-After (or the caller's backoff when there is none); it is
 * only ever pushed later, never earlier. Nothing waiting on a closed gate
 * is let through before it reopens (DESIGN.md invariant 7); other gates
 * go on. Requests without a name go through the anonymous gate, which
 * never closes and has no budget. Gates live as long as their set: one
 * per distinct name the caller uses.
 *
 * The budget mirrors the server's documented limits so that it rarely
 * has to answer 429: three token buckets (budget.h) for directory writes,
 * invitations and resource units, full at the start as Microsoft
 * documents them. A 429 teaches the bucket it most likely hit (a smaller
 * capacity, a slower rate, or a window: budget.h); an
 * x-ms-throttle-limit-percentage over 0.9 that our own sending does not
 * explain slows writes. What is learnt can be read and given back
 * (gate_learnt, gate_learn) so that a restart does not forget it.
 *
 * Pure bookkeeping: no I/O, no clock, no curl, no libuv. Every call that
 * needs the time takes `now`, in nanoseconds of one monotonic clock
 * (http.c passes uv_hrtime()). The requests themselves belong to the
 * caller: a gate only links the struct gate_waiter each one embeds.
 */
#ifndef GALBRIDGE_GATE_H
#define GALBRIDGE_GATE_H

#include <stddef.h>
#include <stdint.h>

#include "budget.h"

struct gate;       /* one gate */
struct gate_set;   /* every gate of one client */
struct gate_queue; /* a FIFO inside a gate */

/* A request as its gate sees it, embedded in the caller's request. The
 * caller sets gate (from gate_get), data and the costs, and clears paid
 * when a new attempt must pay its budget again; the rest is the gate's.
 * A waiter is on at most one queue at a time. */
struct gate_waiter {
  struct gate_waiter *prev, *next;
  struct gate_queue *queue; /* the queue it waits on, or NULL */
  struct gate *gate;
  void *data; /* the caller's request */
  /* What each attempt costs against the gate's budget: directory writes,
   * invitations among them, and resource units (reads included). */
  unsigned writes;
  unsigned invitations;
  unsigned units;
  int waited;       /* counted once in gate_budget.waited */
  int paid;         /* this attempt's budget is taken */
  uint64_t paid_at; /* ... at this time (the attempt's start) */
};

/* Requests sent on a gate, by HTTP status (0: no answer came). */
struct gate_stat {
  long status;
  unsigned long long count;
};

/* A gate's client-side budget, mirroring the server's documented limits:
 * `writes` per `writes_window` seconds, `invitations` per
 * `invitations_window` seconds and `units` resource units per
 * `units_window` seconds (a zero count means unlimited). Requests are
 * paced by token buckets of that size, full at first, refilled at a
 * little under the limit per window; what 429s (gate_answer,
 * gate_note_throttle) and x-ms-throttle-limit-percentage teach lowers
 * them (budget.h), and they go slowly back after a quiet time. */
struct gate_limits {
  double writes;
  double writes_window;
  double invitations;
  double invitations_window;
  double units;
  double units_window;
};

/* The budget a throttled request most likely ran out of. */
enum gate_bucket {
  GATE_BUCKET_WRITES,
  GATE_BUCKET_INVITATIONS,
  GATE_BUCKET_UNITS,
};

/* A gate's budget as it stands: the writes, invitations and resource
 * units per second it lets through now and when not slowed (0:
 * unlimited), how many requests had to wait for budget, and how many
 * times a rate was lowered. */
struct gate_budget {
  double write_rate;
  double write_rate_max;
  double invitation_rate;
  double invitation_rate_max;
  double unit_rate;
  double unit_rate_max;
  unsigned long long waited;
  unsigned long long decreases;
};

/* A new, empty set (only its anonymous gate), or NULL when out of
 * memory. */
struct gate_set *gate_set_new(void);

/* Free `set` and every gate in it (NULL: nothing). No waiter may be left
 * on it (gate_pop them first). */
void gate_set_free(struct gate_set *set);

/* The gate named `name` in `set`, made (open, unlimited) on first use;
 * the anonymous gate when name is NULL or "". NULL when out of memory.
 * The gate lives as long as the set. */
struct gate *gate_get(struct gate_set *set, const char *name);

/* The named gate `name` (not NULL) if it has been made, else NULL. */
struct gate *gate_find(const struct gate_set *set, const char *name);

/* The gate's name, "-" for the anonymous gate (for logs). */
const char *gate_name(const struct gate *g);

/* 1 when `g` is closed at `now` (never for the anonymous gate). */
int gate_closed(const struct gate *g, uint64_t now);

/* Seconds from `now` until `g` opens again (0 when open or NULL). */
double gate_reopen_in(const struct gate *g, uint64_t now);

/* Close `g` for `ms` milliseconds from `now`, unless it already stays
 * closed longer (the anonymous gate never closes). Logged. */
void gate_close(struct gate *g, uint64_t now, double ms);

/* 1 when an answer closes its gate: a 429, or a 503 or 504 that says
 * when to come back (retry_after >= 0 seconds; -1: it did not). */
int gate_closes_on(long status, double retry_after);

/* Count one attempt on `g`: its HTTP status (0: no answer came), and
 * whether the answer closed the gate (gate_closes_on). The counters are
 * bounded: past 32 distinct statuses the last one takes the rest. */
void gate_count(struct gate *g, long status, int throttled);

/* What an answer said about the service's limits (each string NULL when
 * the header was absent; borrowed for the call). */
struct gate_headers {
  double retry_after;               /* seconds; < 0: none */
  const char *throttle_information; /* x-ms-throttle-information */
  const char *throttle_scope;       /* x-ms-throttle-scope */
  const char *limit_percentage;     /* x-ms-throttle-limit-percentage */
  const char *resource_unit;        /* x-ms-resource-unit */
};

/* Feed an answer to `w`'s attempt back into its gate's budget: a 429
 * teaches (budget_throttled, with its Retry-After) the bucket it most
 * likely hit (the one x-ms-throttle-information names; else by what `w`
 * costs); x-ms-resource-unit over what `w` was charged takes the
 * difference from the units bucket; x-ms-throttle-limit-percentage over
 * 0.9 that our own sending does not explain slows writes. Nothing for
 * the anonymous gate or a NULL `h`. */
void gate_answer(struct gate_waiter *w, long status,
                 const struct gate_headers *h, uint64_t now);

/* Give the gate named `name` (made on first use) the budget `limits`.
 * The same limits again keep what its buckets have learnt. Returns 0, or
 * -1 (no gate made) on a bad value, an empty name or out of memory. */
int gate_set_limits(struct gate_set *set, const char *name,
                    const struct gate_limits *limits, uint64_t now)
    __attribute__((warn_unused_result));

/* An inner request of a $batch sent on `g` at `sent` (0: unknown) was
 * throttled with `retry_after` seconds (-1: none given): teach `bucket`
 * as after a 429 (the write budget when that bucket is unlimited) and,
 * when a Retry-After is given, close the gate until it has passed. */
void gate_note_throttle(struct gate *g, double retry_after,
                        enum gate_bucket bucket, uint64_t sent, uint64_t now);

/* Copy up to `max` counters of `g` into out; *throttled gets how many
 * answers closed the gate. Returns how many were copied (0, *throttled
 * 0, when g is NULL). */
size_t gate_stats(const struct gate *g, struct gate_stat *out, size_t max,
                  unsigned long long *throttled);

/* Fill `out` (zeroed first) with `g`'s budget. Returns 0, or -1 when g
 * is NULL. */
int gate_budget(const struct gate *g, struct gate_budget *out);

/* What one bucket of a gate has learnt, with the limits it was learnt
 * under (a change of those in the configuration voids it). */
struct gate_learnt {
  double limit;
  double window;
  struct budget_learnt learnt;
};

/* Fill `out` with what `bucket` of `g` has learnt. Returns 0, or -1
 * (out zeroed) when g is NULL or anonymous or the bucket unlimited. */
int gate_learnt(const struct gate *g, enum gate_bucket bucket,
                struct gate_learnt *out);

/* Give `bucket` of `g` what an earlier run learnt (saved from
 * gate_learnt). Returns 0, or -1 (nothing changed) when the bucket is
 * unlimited, its limits are not those of `in`, or a value is bad. */
int gate_learn(struct gate *g, enum gate_bucket bucket,
               const struct gate_learnt *in);

/* How many times what `g`'s buckets learnt changed, in all: a caller
 * saves them again when this moved (0 for NULL). */
unsigned long long gate_learnt_changes(const struct gate *g);

/* Queue `w` on its gate (w->gate), last in line: requests that cost
 * writes or invitations wait on the gate's paced FIFO, others on its
 * plain one, so that reads are never held behind writes. */
void gate_push(struct gate_waiter *w);

/* The same, first in line: for a request that was stopped unsent and
 * keeps its place. */
void gate_push_front(struct gate_waiter *w);

/* The next waiter that may go at `now`, taken off its queue with its
 * budget paid, or NULL. The anonymous gate's come first; then, gate by
 * gate, only an open gate lets one through: the head of its plain FIFO
 * if its buckets hold its cost, else the head of its paced FIFO if they
 * hold that one's. */
struct gate_waiter *gate_next(struct gate_set *set, uint64_t now);

/* The earliest time at or after `now` at which gate_next() may let a
 * waiter through (`now` when one may go now), or UINT64_MAX when nothing
 * waits. */
uint64_t gate_next_at(struct gate_set *set, uint64_t now);

/* Any waiter, taken off its queue without paying (to cancel them all:
 * the anonymous gate's first, then gate by gate, plain before paced), or
 * NULL when none is left. */
struct gate_waiter *gate_pop(struct gate_set *set);

#endif
