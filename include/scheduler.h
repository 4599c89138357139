/*
 * scheduler — what runs when: source reads, then each link's plan and
 * execution, once (`sync`, `plan`) or on every link's interval (`run`).
 *
 * One tenant context (auth + Graph client) per tenant in use, shared by
 * reading and writing. One reader per source tenant, serving every link
 * that starts from it. A link's round: (scope_group members) → planner →
 * executor → another executor pass while transient failures remain
 * (`sync`, at most three). A link whose source could not be read, or
 * whose group membership could not be had, plans nothing: planning from a
 * partial picture could delete people who are still there.
 */
#ifndef GALBRIDGE_SCHEDULER_H
#define GALBRIDGE_SCHEDULER_H

#include <stddef.h>
#include <uv.h>

#include "config.h"
#include "http.h"
#include "planner.h"
#include "store.h"

struct scheduler;

enum scheduler_mode {
  SCHEDULER_SYNC, /* one round of every selected link, then done */
  SCHEDULER_PLAN, /* read sources, plan without writing to any tenant */
  SCHEDULER_RUN,  /* rounds on each link's interval until stopped */
};

/* What a link's first look at the target found when the store held
 * nothing of it (a first round, or a lost state). */
struct recovery {
  int empty;              /* the store held nothing of the link */
  unsigned long proven;   /* copies with a proven anchor no link owns */
  unsigned long taken_up; /* of those, the ones whose source is gone */
  unsigned long unproven; /* objects with its anchors but no proof */
};

struct scheduler_opts {
  enum scheduler_mode mode;
  const char *only_link; /* NULL: every link */
  /* SCHEDULER_SYNC with only_link: instead of a round of the link's
   * source, read this one user (reader_user: an id, mail or UPN), then
   * plan and run that person only (planner_link .only, executor_only);
   * its exit code is that person's. NULL: rounds as usual. */
  const char *only_user;
  planner_emit_fn emit; /* each planned change (plan, sync --user) */
  void *emit_ctx;
  /* Just before a link is planned, once its source and target are read
   * and its scope_group members known: the link as the planner sees it
   * (borrowed for the call). In SCHEDULER_PLAN the store then still holds
   * the outbox as it was (a dry run puts no failed op back). May be NULL.
   * .emit_ctx is its ctx. */
  void (*planning)(void *ctx, const struct planner_link *pl);
  /* SCHEDULER_PLAN: a link's totals once planned. */
  void (*plan_done)(void *ctx, const struct config_link *link,
                    const struct planner_stats *stats,
                    const struct recovery *recovery);
  /* SCHEDULER_RUN: after each link round (metrics, STATUS), and every few
   * seconds while a round is long. */
  void (*progress)(void *ctx);
  void *progress_ctx;
};

/* Returns 0 and a scheduler, or -1 with err set (a config error when
 * *config_error is set, else a runtime one). Nothing starts yet. */
int scheduler_new(uv_loop_t *loop, struct http *http, struct store *store,
                  const struct config *cfg, const struct scheduler_opts *opts,
                  struct scheduler **out, int *config_error, char *err,
                  size_t errlen) __attribute__((warn_unused_result));

/* Start. `done` is called (from the loop) once a SYNC or PLAN run has
 * finished, or a RUN has stopped after scheduler_stop(). */
void scheduler_start(struct scheduler *s, void (*done)(void *ctx), void *ctx);

/* RUN: schedule nothing new; `done` comes once work in flight ends. */
void scheduler_stop(struct scheduler *s);

/* Number of links scheduled. */
size_t scheduler_links(const struct scheduler *s);

/* RUN: a round of every link now (SIGUSR1); tenants being read already
 * are left to finish. */
void scheduler_trigger(struct scheduler *s);

/* One line for systemd's STATUS=: per link, its last round, pending ops
 * and held deletes, or during a long round its progress ("contoso→fabrikam:
 * 12,400/30,000 people, 410/s"). */
void scheduler_status(const struct scheduler *s, char *buf, size_t len);

/* Write the metrics file (see metrics.h). Returns 0, or -1 after logging
 * why: a metrics file that cannot be written never stops a round. */
int scheduler_write_metrics(const struct scheduler *s, const char *path);

/* Exit code per DESIGN.md: 0 ok, 1 runtime failure (a tenant not
 * reached, an op failed for good), 3 deletes held (nothing else wrong). */
int scheduler_exit_code(const struct scheduler *s);

/* Free; the loop must run afterwards to close handles. */
void scheduler_free(struct scheduler *s);

#endif
