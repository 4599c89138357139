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
 * and, before a create, what the target already holds (as its own delta
 * read shows it, through store_object_lookup):
 *
 *   an object with this person's anchor
 *     and a proof made with the key     → update it: galbridge's own copy
 *                                         (a state lost, or a crash)
 *     without one                       → fail: it proves nothing
 *   an object holding the address       → adopt it (the link's `adopt =
 *                                         mail`, the link's own kind), or
 *                                         fail: galbridge did not make it
 *
 * A person whose mailbox a migration link moved into this link's source
 * (its copy there handed off, planner_link.moved) is taken over instead:
 * the mail user the move left in this link's target, the person's former
 * object, becomes its copy (the executor checks it is what the move
 * left). So the person is never in the target twice, and no copy feeds
 * another: the migration link no longer manages the person.
 *
 * Every object in scope claims its target address and its anchor in the
 * target tenant (store_claims_put): two objects claiming one (two source
 * users whose addresses differ only in case, or a person in scope of two
 * links with the same source, target and kind) both fail, and neither
 * copy is touched for the other. A failed object is an op of kind "fail"
 * in state failed whose error is the reason (status, plan and the log
 * show it); nothing of it is sent, and it is weighed again when it, or
 * the other side of its conflict, changes, and at least hourly.
 *
 * The desired attributes of an object are the mapping's result plus the
 * anchor in the link's anchor attribute; their hash (FNV-1a 64 over
 * canonical JSON, sorted keys, with the plain anchor
 * "galbridge:<source tenant>:<source id>") is what is compared. The
 * anchor written is the stamp for the target object (anchor.h: with its
 * proof when the link has a key), so a copy without it (made before the
 * key, or edited by hand: its target's own delta shows the anchor it
 * carries) gets it in an update. A round with no change plans nothing.
 *
 * With the link's manager = yes, a live copy's desired values hold its
 * manager (planner_manager_attr): the target id of the link's active copy
 * of the source user's manager when that manager is a present source
 * user in scope, else nothing (what galbridge set is cleared). A create
 * or restore never holds one: the store asks for a new decision once the
 * copies exist (schema 7), so the manager is written by the update of
 * the next round. A guest's manager that the target's own read shows
 * different is written again.
 *
 * An op already queued with the same kind and hash is left alone (a
 * pending one runs, a failed one waits for the source to change or for
 * `resync`); a different decision replaces it. Deletes beyond the link's
 * max_deletes, or beyond its max_delete_share of its copies, in one round
 * are written as held (DESIGN.md invariant 4) until `approve-deletes`.
 * Creates beyond max_creates in one round (a scope filter's typo that
 * suddenly takes a whole tenant) are held likewise until
 * `approve-creates`, except in a link's first round (no copies yet).
 */
#ifndef GALBRIDGE_PLANNER_H
#define GALBRIDGE_PLANNER_H

#include <jansson.h>
#include <stddef.h>

#include "anchor.h"
#include "config.h"
#include "mapping.h"
#include "migration.h"
#include "scope.h"
#include "store.h"

/* What a decision does: the kind of the op it queues, with the store's
 * values (a cast between the two is exact); NONE queues nothing. */
enum planner_kind {
  PLANNER_NONE = STORE_OP_NONE,
  PLANNER_CREATE = STORE_OP_CREATE,
  PLANNER_UPDATE = STORE_OP_UPDATE,
  PLANNER_DELETE = STORE_OP_DELETE,
  PLANNER_DISABLE = STORE_OP_DISABLE,
  PLANNER_HIDE = STORE_OP_HIDE,
  PLANNER_RESTORE = STORE_OP_RESTORE,
  /* take over an object galbridge did not make (adopt) */
  PLANNER_ADOPT = STORE_OP_ADOPT,
  /* take over the former source object of a person whose mailbox moved
   * (a migration link's copy handed off) as this link's copy */
  PLANNER_TAKEOVER = STORE_OP_TAKEOVER,
  /* this object fails: nothing is sent, reason shown */
  PLANNER_FAIL = STORE_OP_FAIL,
};

/* A link as the planner needs it; everything borrowed. */
struct planner_link {
  const struct config_link *link;
  const struct mapping *mapping;
  const struct scope_filter *filter; /* NULL: no scope_filter */
  const json_t *members; /* scope_group members as object keys, or NULL */
  /* exclude_group members: id → the reason ("member of exclude_group
   * <id>", the first group of the list that holds them), or NULL */
  const json_t *excluded;
  const struct anchor_key *key; /* proof in anchors, or NULL */
  int quiet; /* no warnings about values refused (planner_plan's own) */
  /* migration = yes: the target as migration needs it (NULL while its
   * accepted domains are not known: every copy of a mailbox then fails
   * with that reason rather than be made unready). */
  const struct migration_target *migration;
  /* Mail-user links back into a migration link's source: the copies that
   * link handed off after their mailbox moved (now the person's mailbox
   * in this link's source), as copy id → the former source object's id
   * (string), or NULL. Such a copy is a person here, not a galbridge
   * copy, and its former object (the mail user the move left) becomes
   * its copy: a take-over rather than a create. */
  const json_t *moved;
  /* sync --user: plan this source object only (planner_plan), or NULL. */
  const char *only;
  /* SelectUniqueValue(): whether `value` of target attribute `attr` is
   * held in the target by an object other than `own` (this person's
   * copy, NULL when it has none): 1, 0, or -1 when it cannot tell. NULL:
   * planner_decide() takes the first candidate with a value, and
   * planner_plan() asks the target objects its store holds. */
  int (*taken)(void *arg, const char *own, const char *attr,
               const char *value);
  void *taken_arg;
  /* A round run while a full read of the source streams in (the
   * scheduler's partial rounds): part of a fill, so max_creates does not
   * hold its creates. */
  int filling;
};

struct planner_decision {
  enum planner_kind kind;
  json_t *desired; /* new reference or NULL: attributes once applied */
  json_t *payload; /* new reference or NULL: attributes to send */
  char hash[17];   /* of desired, or the kind's name for deletes */
  const char *why; /* for NONE on an out-of-scope object, and logs */
  char *reason;    /* PLANNER_FAIL: why this object fails (owned) */
  char *target_id; /* ADOPT, or an update of a copy found by its proven
                      anchor: the target object (owned); else NULL */
};

/* The op kind's name (store_op_kind_name()), "unknown" beyond
 * PLANNER_FAIL. */
const char *planner_kind_name(enum planner_kind kind);

/* FNV-1a 64 of the canonical JSON text (sorted keys, compact), as 16
 * lower-case hex digits. */
void planner_hash(const json_t *value, char out[17]);

/* The last check of a loaded config, made by every command and reload
 * before it uses one: each link compiles (planner_link_compile). Returns
 * 0, or -1 with the first link's "file:line: message" in err (errlen
 * bytes, not NULL), e.g. "galbridge.conf:14: column 9: Left() takes 2
 * arguments, got 1". */
int planner_check_config(const struct config *cfg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Compile a link of cfg (borrowed) as planner_check_config() checks it: its
 * mapping (mapping_compile: its [mapping], or the built-in one), which
 * may not set the link's anchor attribute, and its scope filter; both
 * may read only source attributes galbridge reads (GRAPH_USER_SELECT).
 * Returns 0 with *mapping new (mapping_free) and *filter new or NULL
 * without a scope_filter (scope_filter_free), or -1 with both NULL and
 * "file:line: message" in err. */
int planner_link_compile(const struct config *cfg,
                         const struct config_link *link,
                         struct mapping **mapping,
                         struct scope_filter **filter, char *err,
                         size_t errlen) __attribute__((warn_unused_result));

/* The default scope (scope_default_match) of `attrs`, source object
 * `source_id` of the link: a copy the link takes over (planner_link.moved)
 * is a person, not a galbridge copy. Returns 1, or 0 with *why (not NULL)
 * its first reason. */
int planner_default_scope(const struct planner_link *pl, const char *source_id,
                          const json_t *attrs, const char **why);

/* The delete guard: whether `deletes` removals in one round of `link`,
 * which manages `copies` objects, are held for approval: more than
 * max_deletes, or more than CONFIG_DELETE_SHARE_FLOOR that are more than
 * max_delete_share percent of its copies (a share of 100% is no share
 * guard). Entra Connect's accidental-delete threshold and MIM's run
 * profile thresholds work the same way, by count or by share. */
int planner_deletes_over(const struct config_link *link, unsigned long deletes,
                         long long copies);

/* Whether `source_id` is a member of one of the link's exclude groups
 * (pl->excluded): 1 and *why the reason naming the group (borrowed from
 * pl->excluded), else 0 and *why untouched. An exclusion wins over every
 * other rule of the scope. */
int planner_excluded(const struct planner_link *pl, const char *source_id,
                     const char **why);

/* The attribute that carries the anchor on the link's objects: its
 * `anchor` (extensionAttributeN) for guests, the matching CustomAttributeN
 * for mail contacts and mail users. */
const char *planner_anchor_attr(const struct config_link *link);

/* The parameters of an Exchange listing (Get-MailContact, Get-MailUser) of
 * every recipient carrying the link's source's anchors in the link's
 * anchor attribute: {"Filter": "<attr> -like 'galbridge:<source>:*'",
 * "ResultSize": "Unlimited"}. New reference, or NULL (memory). */
json_t *planner_anchor_listing(const struct config_link *link);

/* The claims of an object of `link` whose desired attributes are
 * `desired`: "obj:<kind>:<plain anchor>" and "addr:<address>" (lower
 * case), new strings in keys[0..*n). Returns 0, or -1 on allocation
 * failure (what was made is in keys[0..*n) all the same). */
#define PLANNER_CLAIMS_MAX 2
int planner_claim_keys(const struct config_link *link, const char *source_id,
                       const json_t *desired, char *keys[PLANNER_CLAIMS_MAX],
                       size_t *n) __attribute__((warn_unused_result));

/* Where the store keeps what the target shows of this link's objects:
 * the target tenant id (its users read), or for mail contact links
 * "<target tenant id>#contacts", listed on Exchange's side each round
 * (Graph's users read does not hold contacts, nor orgContact their
 * custom attributes). Writes at most len - 1 bytes. */
void planner_observed_tenant(const struct config_link *link, char *buf,
                             size_t len);

/* The attribute that carries a copy's manager in desired values and
 * ops: "manager" for guests (Graph's manager/$ref), "Manager" for mail
 * contacts and mail users (Set-Contact, Set-User -Manager). */
const char *planner_manager_attr(const struct config_link *link);

/* The manager a live copy of `row` should have (link manager = yes): 1
 * and *target, the target id of the link's active copy of the source
 * manager (row->manager_target, borrowed), when the manager is a source
 * user of the link's tenant, present, not refused, in the link's scope,
 * not the object itself, and has that copy; else 0 with *target NULL and
 * *why (static text) saying which: the copy then has no manager (one
 * galbridge set is cleared), never a foreign object's. */
int planner_manager(const struct planner_link *pl,
                    const struct store_plan_row *row, const char **target,
                    const char **why);

/* The attribute an object cannot be made without: mail (the guest's
 * invited address) or ExternalEmailAddress. */
const char *planner_address_attr(const struct config_link *link);

/* Decide for one row (pure: reads nothing else, writes nothing; what the
 * target holds and the claims are weighed by planner_plan). For an object
 * in scope left as it is (NONE without why), desired is set too. A row
 * whose source object was refused (row->bad) fails, before any scope or
 * delete rule: FAIL, reason "source value refused: <reason>" (its stored
 * attributes are an older state; its copy is neither changed nor deleted
 * on their strength). Returns
 * 0, or -1 with err set when the row cannot be planned (bad stored JSON,
 * a mapping that cannot be evaluated for it). */
int planner_decide(const struct planner_link *pl, const char *source_tenant,
                   const struct store_plan_row *row,
                   struct planner_decision *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void planner_decision_clear(struct planner_decision *d);

struct planner_stats {
  unsigned long creates, updates, deletes, restores, adopts;
  unsigned long fails; /* objects refused this round (PLANNER_FAIL) */
  unsigned long unchanged, out_of_scope, waiting, failed_kept, errors;
  unsigned long held;         /* deletes held (deletes_held) */
  unsigned long creates_held; /* creates held by max_creates, or 0 */
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
 * so that memory does not grow with the tenant. A round weighs only the
 * objects changed since the link's last round (store_plan_rows), or all
 * of them when the plan key changed or `all` is set (galbridge plan,
 * which gives a private copy of the store: planning writes ops and
 * claims as a round does); it writes each chunk's ops as it goes, weighs
 * again the objects a conflict found later involves, then writes the
 * deletes (held over max_deletes), the plan mark and the held-delete
 * count in one last transaction. With `all`, every claim is written
 * first, so that each object's decision (emitted once) already sees every
 * conflict. With pl->only, that one object is weighed, against every claim
 * the store holds, and nothing else is touched: no other object is weighed
 * (again), no held delete of another is released, and the plan mark
 * stays, so the link's next round weighs what it would have. Returns 0 or
 * -1. */
int planner_plan(struct store *store, const struct planner_link *pl, int all,
                 planner_emit_fn emit, void *ctx, struct planner_stats *stats)
    __attribute__((warn_unused_result));

#endif
