/*
 * executor — runs a link's pending ops against its target tenant.
 *
 * Every op was committed to the outbox before the executor sees it, and
 * its result is recorded together with the op's removal in one
 * transaction (store_op_complete), so a crash between a request and its
 * record replays the op (DESIGN.md invariant 2). Replays are safe because
 * a create first looks for an object that already carries the link's
 * anchor, then (guests) for a guest with the same mail address, and adopts
 * what it finds instead of inviting again.
 *
 * Up to `max_in_flight` ops run at once on the loop. A transient failure
 * (throttling, 5xx, network; http has already retried with backoff) leaves
 * the op pending for the next round; a permanent one (400, 403, 409...)
 * marks it failed with the decoded error, logged once at error level. A
 * 404 right after an invitation is replication lag and is retried with
 * backoff; a 404 on an older object means it was deleted by hand: its
 * target row is dropped and the next round makes it again.
 */
#ifndef GALBRIDGE_EXECUTOR_H
#define GALBRIDGE_EXECUTOR_H

#include <uv.h>

#include "anchor.h"
#include "config.h"
#include "exo.h"
#include "graph.h"
#include "store.h"

struct executor;

struct executor_stats {
  unsigned long done;    /* ops completed */
  unsigned long created; /* invitations sent */
  unsigned long adopted; /* creates that found their object */
  unsigned long updated;
  unsigned long deleted; /* deletes, disables and hides */
  unsigned long restored;
  unsigned long failed;    /* failed for good in this run */
  unsigned long transient; /* left pending for a later round */
  unsigned long moved;     /* migration: copies handed off (a mailbox now) */
};

typedef void (*executor_done_fn)(void *ctx,
                                 const struct executor_stats *stats);

/* An executor for `link` writing through `target` (Graph) or, for mail
 * contacts and mail users, `exo` (Exchange; may be NULL for guest links).
 * All borrowed. NULL when memory is short or its timer cannot be made
 * (nothing logged). */
struct executor *executor_new(uv_loop_t *loop, struct store *store,
                              struct graph *target, struct exo *exo,
                              const struct config_link *link,
                              const struct anchor_key *key, int max_in_flight);
/* Free it; must not be running (wait for the callback) or be told to
 * stop first with executor_stop. */
void executor_free(struct executor *ex);

/* Run every pending op of the link once. The callback is called (from the
 * loop) when the last one finishes. Returns 0, or -1 when already running,
 * the ops cannot be counted or the loop refuses to start its timer
 * (callback never called). */
int executor_run(struct executor *ex, executor_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* Run only the ops of source object `source_id` (borrowed until the
 * next call; NULL: every op again), as `sync --user` does: the others
 * stay pending for the link's round. */
void executor_only(struct executor *ex, const char *source_id);

/* How far the current run is: ops finished of all it holds, and the rate
 * since it started (0s when idle). */
void executor_progress(const struct executor *ex, size_t *done, size_t *total,
                       double *rate);

/* Start nothing new; ops in flight finish and the callback comes. */
void executor_stop(struct executor *ex);

/* The error of the last op left pending for a later round in the current
 * (or last) run, or "" when none was: what the round's warning names. */
const char *executor_last_error(const struct executor *ex);

#endif
