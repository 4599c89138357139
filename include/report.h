/*
 * report — what `galbridge status` and `galbridge plan` print, as text for
 * people or as JSON (`--json`) for programs.
 *
 * status is one JSON document built from the state (per link: objects,
 * pending and failed work, the round in progress; per tenant read: its
 * users and last round), written as it is or as lines of text read back
 * from it, so that the two forms never say different things.
 *
 * plan is streamed: the scheduler hands each planned change and each
 * link's totals to the callbacks below while the link is planned. Text is
 * written as it comes; JSON gathers every link into one document written
 * by report_plan_end().
 *
 * Nothing here reads a tenant or writes the state; the caller opens the
 * store and runs the rounds. Output goes to the FILE given (stdout for the
 * commands) and its bytes are the commands' interface: the integration
 * tests compare them.
 */
#ifndef GALBRIDGE_REPORT_H
#define GALBRIDGE_REPORT_H

#include <stdio.h>

#include "config.h"
#include "planner.h"
#include "scheduler.h"
#include "store.h"

/* Write status for the links of cfg, and for each tenant one of them
 * reads, from `store` (borrowed, only read): JSON when as_json, else
 * text. `missing`: there is no state database (store_open_readonly said
 * so); the text then says so first, as it does for a state holding
 * nothing, and the JSON's "state" is "missing" (else "empty" or
 * "present"). Returns 0, or -1 when the store could not be read or the
 * JSON not made; nothing is written then. */
int report_status(const struct config *cfg, struct store *store, int missing,
                  int as_json, FILE *fp) __attribute__((warn_unused_result));

struct report_plan;

/* Start plan's report, to fp (borrowed until report_plan_end). In text,
 * when `missing` (no state database in state_dir), first a line saying
 * the plan is made as for a first sync. Returns NULL when out of memory,
 * having written nothing. */
struct report_plan *report_plan_begin(FILE *fp, int as_json,
                                      const char *state_dir, int missing);

/* Before a link is planned: its header line in text, its object in the
 * JSON (a failure is kept, as below). fp is flushed, so that the header
 * comes before whatever the link's round logs to stderr. */
void report_plan_link(struct report_plan *rp, const struct config_link *link);

/* The scheduler's SCHEDULER_PLAN callbacks (scheduler_opts .emit, a
 * planner_emit_fn, and .plan_done), with the struct report_plan as
 * their ctx: one planned change of the link last started, and the link's
 * totals with what its first look at the target found. With --json, a
 * failure to add to the document (memory) is kept for report_plan_end(). */
void report_plan_emit(void *ctx, const struct store_plan_row *row,
                      const struct planner_decision *d, int held);
void report_plan_done(void *ctx, const struct config_link *link,
                      const struct planner_stats *st,
                      const struct recovery *rec);

/* End the report: with --json, write the document of every link started
 * ("state" is "missing" or "present"); then free rp. NULL is fine.
 * Returns 0, or -1 when with --json a part of the document could not be
 * made (memory): nothing is written then, never a partial document. */
int report_plan_end(struct report_plan *rp)
    __attribute__((warn_unused_result));

/* sync --link LINK --user WHO: what was done for that one person. Begun
 * before the run (the link's header line, as plan prints it), with
 * `store` (borrowed: the run's) to read the person from; then the
 * scheduler's callbacks (scheduler_opts .planning, .emit, with the struct
 * report_user as ctx): the person, and the change planned, as plan prints
 * it; report_user_end() then writes what came of it (done, refused with
 * the reason, failed with the error, left pending, a delete held, or
 * nothing to do and why) and frees ru. NULL when out of memory. */
struct report_user;
struct report_user *report_user_new(FILE *fp, struct store *store,
                                    const struct config_link *link);
void report_user_planning(void *ctx, const struct planner_link *pl);
void report_user_emit(void *ctx, const struct store_plan_row *row,
                      const struct planner_decision *d, int held);
/* Returns 0, or -1 when the store could not be read. NULL is fine. */
int report_user_end(struct report_user *ru)
    __attribute__((warn_unused_result));

#endif
