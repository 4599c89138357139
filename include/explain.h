/*
 * explain — `galbridge explain LINK WHO [--json]`: why one person is or
 * is not in the target's address list, and what the next round would do.
 *
 * It is a plan of one link (scheduler SCHEDULER_PLAN on a private copy of
 * the state, as `galbridge plan` makes it: the tenants are read, a token
 * and GETs only, and nothing is written to the state on disk) watched
 * through three callbacks: just before the link is planned, WHO is looked
 * up among the link's source objects and their copies, and for the one
 * found the scope rules, the mapped values, the target object and the
 * outbox as the state holds it are taken; while it is planned, the
 * planner's own decision for that person; once planned, the op the round
 * would run and the claims in conflict. Nothing here decides anything:
 * scope, mapping and the decision are the planner's and scope's code.
 *
 * The explanation is one JSON document; text is written from it, so the
 * two forms never say different things. Its fields are galbridge(8)'s.
 */
#ifndef GALBRIDGE_EXPLAIN_H
#define GALBRIDGE_EXPLAIN_H

#include <stdio.h>

#include "config.h"
#include "planner.h"
#include "scheduler.h"
#include "store.h"

struct explain;

/* An explanation of `who` in `link` of cfg (all borrowed until
 * explain_free), read from `store` (the private copy the plan works on).
 * NULL when out of memory. */
struct explain *explain_new(const struct config *cfg,
                            const struct config_link *link, const char *who,
                            struct store *store);
void explain_free(struct explain *ex);

/* The scheduler's SCHEDULER_PLAN callbacks, with the struct explain as
 * their ctx (scheduler_opts .planning, .emit and .plan_done). */
void explain_planning(void *ctx, const struct planner_link *pl);
void explain_emit(void *ctx, const struct store_plan_row *row,
                  const struct planner_decision *d, int held);
void explain_done(void *ctx, const struct config_link *link,
                  const struct planner_stats *st, const struct recovery *rec);

/* Write the explanation to fp (JSON when as_json, else text) once the
 * plan has run. Returns 0 when exactly one person matched and all was
 * written; 1 when nobody or several matched (said on `err`, the several
 * listed), or the link was not planned (its tenants not read); -1 when
 * out of memory or the state could not be read (logged). */
int explain_print(struct explain *ex, int as_json, FILE *fp, FILE *err)
    __attribute__((warn_unused_result));

#endif
