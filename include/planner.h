/*
 * planner — desired state against applied state, into the outbox.
 *
 * For every source object of a link's source tenant the planner decides,
 * from the object's attributes, the link's scope and mapping, the target
 * row (target id, hash and values applied, state) and the op already
 * queued for it, what to do next:
 *
 *   in scope,  no target row            → create
 *   in scope,  active, hash differs     → update (only changed attributes)
 *   in scope,  deleted by galbridge     → restore (then the full values)
 *   in scope,  disabled / hidden        → update that also re-enables
 *   out of scope or removed, active     → per on_delete: delete, disable,
 *                                         hide, or nothing (keep)
 *
 * The desired attributes of an object are the mapping's result plus the
 * anchor ("galbridge:<source tenant>:<source id>" in the link's anchor
 * attribute); their hash (FNV-1a 64 over canonical JSON, sorted keys) is
 * what is compared. A round with no source change plans nothing.
 *
 * An op already queued with the same kind and hash is left alone (a
 * pending one runs, a failed one waits for the source to change or for
 * `resync`); a different decision replaces it. Deletes beyond the link's
 * max_deletes in one round are written as held (DESIGN.md invariant 4)
 * until `approve-deletes`.
 */
#ifndef GALBRIDGE_PLANNER_H
#define GALBRIDGE_PLANNER_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"
#include "mapping.h"
#include "scope.h"
#include "store.h"

enum planner_kind {
  PLANNER_NONE,
  PLANNER_CREATE,
  PLANNER_UPDATE,
  PLANNER_DELETE,
  PLANNER_DISABLE,
  PLANNER_HIDE,
  PLANNER_RESTORE,
};

/* A link as the planner needs it; everything borrowed. */
struct planner_link {
  const struct config_link *link;
  const struct mapping *mapping;
  const struct scope_filter *filter; /* NULL: no scope_filter */
  const json_t *members; /* scope_group members as object keys, or NULL */
};

struct planner_decision {
  enum planner_kind kind;
  json_t *desired; /* new reference or NULL: attributes once applied */
  json_t *payload; /* new reference or NULL: attributes to send */
  char hash[17];   /* of desired, or the kind's name for deletes */
  const char *why; /* for NONE on an out-of-scope object, and logs */
  char *why_text;  /* owned: the text `why` points to when it is made for
                      this decision (freed by planner_decision_clear) */
};

const char *planner_kind_name(enum planner_kind kind);
int planner_kind_parse(const char *name, enum planner_kind *kind);

/* FNV-1a 64 of the canonical JSON text (sorted keys, compact), as 16
 * lower-case hex digits. */
void planner_hash(const json_t *value, char out[17]);

/* The attribute that carries the anchor on the link's objects: its
 * `anchor` (extensionAttributeN) for guests, the matching CustomAttributeN
 * for mail contacts and mail users. */
const char *planner_anchor_attr(const struct config_link *link);

/* The attribute an object cannot be made without: mail (the guest's
 * invited address) or ExternalEmailAddress. */
const char *planner_address_attr(const struct config_link *link);

/* The anchor value for a source object. New string. */
char *planner_anchor(const char *source_tenant_id, const char *source_id);

/* Decide for one row (pure: reads nothing else, writes nothing). A row
 * whose source object was refused (row->bad) is left as it is, before
 * any scope or delete rule: NONE, why "source value refused: <reason>"
 * (its stored attributes are an older state; its copy must be neither
 * changed nor deleted on their strength). Returns
 * 0, or -1 with err set when the row cannot be planned (bad stored JSON,
 * a mapping that cannot be evaluated for it). */
int planner_decide(const struct planner_link *pl, const char *source_tenant,
                   const struct store_plan_row *row,
                   struct planner_decision *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void planner_decision_clear(struct planner_decision *d);

struct planner_stats {
  unsigned long creates, updates, deletes, restores;
  unsigned long unchanged, out_of_scope, waiting, failed_kept, errors;
  unsigned long held;
};

/* Called for each decision that would change something (dry run and
 * real), with the row it came from. */
typedef void (*planner_emit_fn)(void *ctx, const struct store_plan_row *row,
                                const struct planner_decision *d, int held);

/* The key of everything besides the objects that decisions depend on
 * (tenants, kind, scope, members, mapping, anchor, on_delete): a round
 * planned under another key weighs every object again. */
int planner_plan_key(const struct planner_link *pl, char out[17])
    __attribute__((warn_unused_result));

/* Plan a round of `pl` against the store, reading the objects in chunks
 * so that memory does not grow with the tenant. A dry run weighs every
 * object and writes nothing. A round weighs only the objects changed
 * since the link's last round (store_plan_rows), or all of them when the
 * plan key changed; it writes each chunk's ops as it goes, then the
 * deletes (held over max_deletes), the plan mark and the held-delete
 * count in one last transaction. Returns 0 or -1. */
int planner_plan(struct store *store, const struct planner_link *pl,
                 int dry_run, planner_emit_fn emit, void *ctx,
                 struct planner_stats *stats)
    __attribute__((warn_unused_result));

#endif
