/*
 * store — galbridge's state in SQLite (WAL) at state_dir/state.db.
 *
 * The only module that speaks SQL. The schema is versioned with
 * PRAGMA user_version and moved forward by migrations, one per version,
 * each in its own transaction; a database from a newer galbridge is
 * refused rather than guessed at.
 *
 * What it keeps for now:
 *   source_object  one row per source user: merged attributes (JSON text),
 *                  removed state, the generation of the round that last
 *                  saw it (full re-reads use it to find the unseen), and
 *                  why its last item was refused, if it was;
 *   delta_state    per source tenant: the deltaLink and the Graph base URL
 *                  it came from, the $select it was made with, the current
 *                  generation, whether a full read is in progress, and
 *                  when the last round finished;
 *   target_object, op, link_state
 *                  the reconciler's tables (counted by `status`).
 *
 * Invariant 1 (DESIGN.md): store_delta_finish() writes the deltaLink inside
 * the caller's transaction, the same one that holds the last page.
 *
 * Every function returns 0 on success or -1 after logging the SQLite error
 * with context; a `struct store` is used from the loop thread only.
 *
 * An op's kind and state are enums here and their names in the database
 * (the text a state directory has always held). A name read back that
 * this galbridge does not know (a damaged file, or one a later version
 * wrote) is an error like a failed statement: logged with the link, the
 * op's id and the text, and -1, never a guess.
 */
#ifndef GALBRIDGE_STORE_H
#define GALBRIDGE_STORE_H

#include <stddef.h>
#include <time.h>

struct store;

#define STORE_SCHEMA_VERSION 9

enum store_removed {
  STORE_PRESENT = 0,
  STORE_SOFT_DELETED = 1, /* @removed reason "changed": restorable */
  STORE_DELETED = 2,      /* reason "deleted", or unseen in a full read */
};

/* Open (creating the directory with mode 0700 and the database, 0600,
 * if needed; a database readable by others is made 0600) and migrate.
 * Returns 0 and *out, or -1 with a message in `err`. */
int store_open(const char *state_dir, struct store **out, char *err,
               size_t errlen) __attribute__((warn_unused_result));
void store_close(struct store *store);

/* Open state_dir/state.db for reading only: the file is never created,
 * written, migrated or locked for writing, so a read-only command may run
 * beside a daemon. When there is no state.db, *missing is set and the
 * store is an empty private one. When `copy` is set, or the file's schema
 * is older than this galbridge's, the store is a private copy (made with
 * SQLite's backup API, migrated if need be) that may be written freely
 * and vanishes on close; otherwise any write fails. Returns 0 and *out, or
 * -1 with a message in `err`. */
int store_open_readonly(const char *state_dir, int copy, struct store **out,
                        int *missing, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Whether any statement has failed since store_open() (a full or
 * read-only disk, a damaged file): a command that saw one did not record
 * all it did, and exits 1. */
int store_failed(const struct store *store);

/* The state directory's lock: state_dir/lock (0600, holding the holder's
 * pid), flock()ed exclusively from store_lock() to store_unlock() or the
 * process's end. Commands that run rounds take it before opening the
 * store, so that two processes never work one outbox (the second would
 * send the first one's operations again). Creates state_dir (0700) if
 * needed. Returns 0 and *out, or -1 with a message in `err`; *busy (may be
 * NULL) is set when another process holds the lock. */
struct store_lock;
int store_lock(const char *state_dir, struct store_lock **out, int *busy,
               char *err, size_t errlen) __attribute__((warn_unused_result));
void store_unlock(struct store_lock *lock);

int store_begin(struct store *store) __attribute__((warn_unused_result));
int store_commit(struct store *store) __attribute__((warn_unused_result));
/* Roll back the open transaction, if any. */
void store_rollback(struct store *store);

/* --- source objects --- */

/* *attrs: new string (free()) with the stored JSON, or NULL when the
 * object is unknown; *removed: enum store_removed (PRESENT if unknown). */
int store_source_get(struct store *store, const char *tenant_id,
                     const char *id, char **attrs, int *removed)
    __attribute__((warn_unused_result));

/* Store an object's attributes as merged from an accepted item, seen in
 * generation `gen`; it is no longer refused (bad is cleared). */
int store_source_put(struct store *store, const char *tenant_id,
                     const char *id, const char *attrs, int removed,
                     long long gen) __attribute__((warn_unused_result));

/* An item of the object was refused (`bad`: which attribute and what is
 * wrong, never the value): its stored attributes and removed state stay
 * as they are (an object not stored yet gets none, present), it counts
 * as seen in generation `gen` (a full read must not take it for gone),
 * and `bad` is kept until an accepted item clears it. A change of `bad`
 * brings the object into the next incremental plan, as a change of its
 * attributes does. */
int store_source_bad(struct store *store, const char *tenant_id,
                     const char *id, const char *bad, long long gen)
    __attribute__((warn_unused_result));

struct store_source_counts {
  long long present;
  long long soft_deleted;
  long long deleted;
};
int store_source_count(struct store *store, const char *tenant_id,
                       struct store_source_counts *out)
    __attribute__((warn_unused_result));

/* --- what stored objects hold: addresses and anchors --- */

/* Replace the keys of object (tenant, id) with `n` pairs: keys[i] (not
 * NULL, such as graph_user_keys() gives) and values[i] (may be NULL).
 * n = 0 removes them all (an object soft-deleted holds nothing). */
int store_object_keys_put(struct store *store, const char *tenant_id,
                          const char *id, const char *const *keys,
                          const char *const *values, size_t n)
    __attribute__((warn_unused_result));

/* Call fn for each object of `tenant_id` stored under `key` exactly, with
 * its id and the key's value (NULL if none), both borrowed for the call;
 * fn returns 0 to go on, non-zero to stop (returned as is). */
typedef int (*store_key_fn)(void *ctx, const char *id, const char *value);
int store_object_lookup(struct store *store, const char *tenant_id,
                        const char *key, store_key_fn fn, void *ctx)
    __attribute__((warn_unused_result));

/* --- delta state per source tenant --- */

struct store_delta_state {
  char *delta_link;    /* NULL: no committed round yet (or reset) */
  char *base_url;      /* the Graph base URL the link came from; NULL when
                          unknown (committed before it was kept) */
  char *select;        /* the $select the delta link was made with */
  long long gen;       /* generation of the current or last round */
  int full;            /* a full read is in progress */
  time_t last_round;   /* end of the last complete round, 0 if none */
  time_t last_started; /* start of the last round, 0 if none */
};

/* Fills *out (zeroed when the tenant has no row). Free with
 * store_delta_state_clear(). */
int store_delta_get(struct store *store, const char *tenant_id,
                    struct store_delta_state *out)
    __attribute__((warn_unused_result));
void store_delta_state_clear(struct store_delta_state *state);

/* Begin a full read: drop the delta link, bump the generation, mark the
 * read in progress, and commit that on its own (so a crash mid-read leads
 * to another full read). *gen receives the new generation. */
int store_delta_start_full(struct store *store, const char *tenant_id,
                           const char *select, time_t now, long long *gen)
    __attribute__((warn_unused_result));

/* Record the start of a delta (incremental) round. */
int store_delta_start(struct store *store, const char *tenant_id, time_t now)
    __attribute__((warn_unused_result));

/* Inside the caller's transaction (with the last page): store the new
 * delta link with the Graph base URL it came from, end the round at
 * `now`, and when a full read was in progress mark every present object
 * not seen in generation `gen` as deleted. *unseen (may be NULL) receives
 * how many were so marked. */
int store_delta_finish(struct store *store, const char *tenant_id,
                       const char *delta_link, const char *base_url,
                       long long gen, time_t now, long long *unseen)
    __attribute__((warn_unused_result));

/* --- per link figures for `status` --- */

struct store_link_counts {
  long long objects;      /* target objects the link manages */
  long long pending;      /* ops not yet done */
  long long held;         /* of those, held for approval (not run) */
  long long failed;       /* ops failed for good */
  long long refused;      /* of those, objects the planner refused
                             (conflicts, values it cannot take) */
  long long deletes_held; /* deletes waiting for approval */
  long long creates_held; /* creates waiting for approval (max_creates) */
  time_t last_success;    /* 0 if never */
  time_t run_started;     /* the current (or last) round's start, or 0 */
  long long run_done;     /* ops completed since then */
};
int store_link_counts(struct store *store, const char *link,
                      struct store_link_counts *out)
    __attribute__((warn_unused_result));

/* --- the reconciler: target objects and the outbox (op) --- */

/* What an op does. The database holds each as its name (the table below,
 * store_op_kind_name()); only the store converts, when it writes and
 * reads an op. The planner's decisions (planner.h) take these values. */
enum store_op_kind {
  STORE_OP_NONE, /* no op: a plan row's kind when it has none */
  STORE_OP_CREATE,
  STORE_OP_UPDATE,
  STORE_OP_DELETE,
  STORE_OP_DISABLE,
  STORE_OP_HIDE,
  STORE_OP_RESTORE,
  STORE_OP_ADOPT,    /* take over an object galbridge did not make */
  STORE_OP_TAKEOVER, /* take over the former source object of a person
                        whose mailbox moved to this link's source */
  STORE_OP_FAIL,     /* the planner refuses the object: nothing is sent */
  STORE_OP_CONFLICT, /* a refusal too: never tried again by the store
                        (store_ops_retry_due); no planner writes it */
};

/* Where an op stands, kept as its name like the kind. */
enum store_op_state {
  STORE_OP_PENDING, /* to be run */
  STORE_OP_HELD,    /* a delete or create waiting for approval (not run) */
  STORE_OP_FAILED,  /* failed for good (tried again after a backoff) */
};

/* The name kept in the database ("create", "pending", ...): static text,
 * "unknown" for a value outside the enum. */
const char *store_op_kind_name(enum store_op_kind kind);
const char *store_op_state_name(enum store_op_state state);
/* The value of a name (exactly as the name functions give it). Returns
 * 0 and *out, or -1 (out untouched) for NULL or any other text. */
int store_op_kind_parse(const char *name, enum store_op_kind *out)
    __attribute__((warn_unused_result));
int store_op_state_parse(const char *name, enum store_op_state *out)
    __attribute__((warn_unused_result));

/* One source object of a link's source tenant, with the link's target row
 * and op for it, if any. Strings are borrowed for the callback's duration;
 * absent parts are NULL (op_id 0: op_kind STORE_OP_NONE, op_state
 * meaningless). */
struct store_plan_row {
  const char *source_id;
  const char *attrs;
  int removed;
  const char *target_id;
  const char *hash;
  const char *applied;
  const char *state; /* "active", "deleted", "disabled", "hidden" */
  long long op_id;
  enum store_op_kind op_kind;
  const char *op_hash;
  enum store_op_state op_state;
  /* The target object as read from the target tenant's own delta: removed
   * (enum store_removed) there, or STORE_PRESENT when present or never
   * read; and its stored attributes (JSON), NULL when never read. */
  int target_removed;
  const char *target_attrs;
  const char *op_error; /* the op's last error, or NULL */
  /* Why the source object's last item was refused (store_source_bad()),
   * or NULL: its attributes are an older, accepted state. */
  const char *bad;
  /* Its source mailbox's record (store_mailbox_put), or NULL. */
  const char *mailbox;
  /* Its manager ("manager" in attrs) when that is a source object of the
   * same tenant, present and not refused: its id and attributes, else
   * NULLs; and the target id of the link's active copy of it, or NULL. */
  const char *manager_id;
  const char *manager_attrs;
  const char *manager_target;
};

/* Call fn for the source objects of `source_tenant` with an id after
 * `after_id` ("" or NULL: from the first), ordered by id, at most `limit`
 * of them (0: all), with what `target_tenant`'s own delta says of its
 * target object. `since` < 0 takes every object; otherwise only those
 * changed since change sequence `since` (store_seq_now()): the source
 * object, its target object in the target tenant's delta, or an outcome
 * of the executor that removed the link's target row. fn returns 0 to go
 * on, non-zero to stop (returned as is). Do not write to the store from
 * fn. */
typedef int (*store_plan_fn)(void *ctx, const struct store_plan_row *row);
int store_plan_rows(struct store *store, const char *link,
                    const char *source_tenant, const char *target_tenant,
                    long long since, const char *after_id, size_t limit,
                    store_plan_fn fn, void *ctx)
    __attribute__((warn_unused_result));

/* The same for the one source object `source_id` (fn called once, or
 * not at all when the store does not know it). */
int store_plan_row_one(struct store *store, const char *link,
                       const char *source_tenant, const char *target_tenant,
                       const char *source_id, store_plan_fn fn, void *ctx)
    __attribute__((warn_unused_result));

/* --- source mailboxes, for migration links --- */

/* Keep `record` (JSON text, exo_mailbox_record's shape, or {"bad":
 * reason}) as the mailbox of source object `id` of `tenant`. A record
 * new or different from the one kept marks the source object changed,
 * so that incremental planning weighs it again. */
int store_mailbox_put(struct store *store, const char *tenant, const char *id,
                      const char *record) __attribute__((warn_unused_result));

/* The record kept for `id` (new string), or *record NULL when none. */
int store_mailbox_get(struct store *store, const char *tenant, const char *id,
                      char **record) __attribute__((warn_unused_result));

/* Where the next incremental read of `tenant`'s mailboxes starts (*mark,
 * new string, the source's own WhenChangedUTC text; NULL: never read),
 * and when the last full read was (0: never). */
int store_mailbox_mark_get(struct store *store, const char *tenant,
                           char **mark, time_t *full_at)
    __attribute__((warn_unused_result));
/* Save the mark; `full_at` > 0 records a full read at that time (0 keeps
 * the last one). */
int store_mailbox_mark_set(struct store *store, const char *tenant,
                           const char *mark, time_t full_at)
    __attribute__((warn_unused_result));

/* --- what the client-side budget learnt (budget.h) --- */

/* One bucket's lesson: the configured limit and window it was learnt
 * under, the capacity and rate learnt, and whether the service counts a
 * window rather than a bucket. */
struct store_budget {
  double limit;
  double window;
  double capacity;
  double rate;
  int window_model;
};

/* What `bucket` ("writes", "invitations", "units") of Graph gate `gate`
 * learnt: *found 1 and *out filled, or *found 0 (out zeroed) when
 * nothing was saved (or the row is not one this version reads). */
int store_budget_get(struct store *store, const char *gate, const char *bucket,
                     struct store_budget *out, int *found)
    __attribute__((warn_unused_result));

/* Save it, replacing what was saved for that gate and bucket. */
int store_budget_put(struct store *store, const char *gate, const char *bucket,
                     const struct store_budget *in)
    __attribute__((warn_unused_result));

/* One copy of a migration link whose source mailbox the store knows:
 * the link's target row (active or recovered: in scope, not handed off)
 * of a source object still present, with that mailbox's record. Strings
 * borrowed for the callback's duration. */
struct store_copy_row {
  const char *source_id;
  const char *target_id;
  const char *record; /* store_mailbox_put's JSON text */
};

/* Call fn for each such copy of `link` (whose source is `source_tenant`),
 * ordered by source id; fn returns 0 to go on, non-zero to stop (returned
 * as is). Only reads: works on a store opened read-only. Do not write to
 * the store from fn. */
typedef int (*store_copy_fn)(void *ctx, const struct store_copy_row *row);
int store_link_copies(struct store *store, const char *link,
                      const char *source_tenant, store_copy_fn fn, void *ctx)
    __attribute__((warn_unused_result));

/* The source id and the applied values (JSON) of `link`'s active copy
 * whose target object is `target_id` (new strings), or NULLs when it has
 * none. */
int store_target_by_id(struct store *store, const char *link,
                       const char *target_id, char **source_id, char **applied)
    __attribute__((warn_unused_result));

/* One copy of a migration link handed off after its mailbox moved
 * (state "moved"): the former source object, the copy (now the person's
 * mailbox), and the state of `reverse`'s target row for that copy (NULL
 * when it has none). Strings borrowed for the callback's duration. */
struct store_moved_row {
  const char *source_id;
  const char *target_id;
  const char *reverse_state;
};

/* Call fn for each copy of `link` in state "moved", with `reverse`'s
 * target row for it (a link whose source objects are `link`'s copies);
 * fn returns 0 to go on, non-zero to stop (returned as is). Only reads.
 * Do not write to the store from fn. */
typedef int (*store_moved_fn)(void *ctx, const struct store_moved_row *row);
int store_moved_copies(struct store *store, const char *link,
                       const char *reverse, store_moved_fn fn, void *ctx)
    __attribute__((warn_unused_result));

/* Whether `link`'s copy of `source_id` was seen visible on the Exchange
 * side (store_set_exo_visible): *visible 1 or 0, or -1 when the link has
 * no row for it. Only reads. */
int store_target_visible(struct store *store, const char *link,
                         const char *source_id, int *visible)
    __attribute__((warn_unused_result));

/* A migration copy's stamps (ExchangeGuid, ArchiveGuid, ProxyAddresses)
 * were changed in the target: forget them from what is applied, so that
 * the link's next plan writes them again. */
int store_target_restamp(struct store *store, const char *link,
                         const char *source_id)
    __attribute__((warn_unused_result));

/* A round of the link's outbox starts: progress counts from now (each
 * store_op_complete() adds one). */
int store_link_run_start(struct store *store, const char *link, time_t now)
    __attribute__((warn_unused_result));

/* SQL statements run since store_open() (what a round costs the store;
 * shown at debug level after each link round). */
unsigned long long store_statements(const struct store *store);

/* The change sequence: every write that changes a source object (of any
 * tenant) gives it a higher number than any before. */
int store_seq_now(struct store *store, long long *seq)
    __attribute__((warn_unused_result));

/* The object kind recorded for a link ("guest", "groupcontact"...: *kind
 * a new string, NULL when none is) and the objects it manages in its
 * target now. */
int store_link_kind_get(struct store *store, const char *link, char **kind,
                        long long *objects)
    __attribute__((warn_unused_result));
/* Record `kind` as the link's object kind. */
int store_link_kind_set(struct store *store, const char *link,
                        const char *kind) __attribute__((warn_unused_result));

/* A link's plan mark: the key of the configuration it was planned with
 * (*key a new string, NULL if never planned) and the change sequence up to
 * which every object was planned. */
int store_plan_mark_get(struct store *store, const char *link, char **key,
                        long long *planned_seq)
    __attribute__((warn_unused_result));
/* Save the mark and forget the objects queued to be planned again. Call
 * inside the transaction that writes the round's last ops. */
int store_plan_mark_set(struct store *store, const char *link, const char *key,
                        long long planned_seq)
    __attribute__((warn_unused_result));

/* An operation of the outbox. */
struct store_op {
  long long id;
  char *source_id;
  enum store_op_kind kind;
  char *payload; /* JSON: what to send */
  char *desired; /* JSON: the attributes applied once done */
  char *hash;    /* hash of desired */
  enum store_op_state state;
  int attempts;
  char *last_error;
  char *target_id;
  long long sent_at;  /* a create's request may have left then (0: not) */
  long long sent_end; /* and its answer came then (0: none came) */
  time_t next_try;    /* failed: when it is tried again (0: next round) */
};

/* Insert or replace the op of (link, source_id) — one op per object at a
 * time; attempts start again, last_error and next_try are `error` (NULL
 * for none) and `next_try` (0 for none). A create replacing a create
 * keeps the target id the first one learnt and when it was sent. */
int store_op_put(struct store *store, const char *link, const char *source_id,
                 enum store_op_kind kind, const char *payload,
                 const char *desired, const char *hash,
                 enum store_op_state state, const char *target_id,
                 const char *error, time_t next_try, time_t now)
    __attribute__((warn_unused_result));
int store_op_delete(struct store *store, long long op_id)
    __attribute__((warn_unused_result));

/* Up to `max` ops of `link` in `state`, oldest first; free with
 * store_ops_free(). */
int store_ops_list(struct store *store, const char *link,
                   enum store_op_state state, size_t max,
                   struct store_op **ops, size_t *n)
    __attribute__((warn_unused_result));
/* The same, only ops with an id above `after_id`: a caller reads the
 * outbox a chunk at a time. */
int store_ops_list_after(struct store *store, const char *link,
                         enum store_op_state state, long long after_id,
                         size_t max, struct store_op **ops, size_t *n)
    __attribute__((warn_unused_result));
void store_ops_free(struct store_op *ops, size_t n);

/* Remember the target object an op has made (after an invitation). */
int store_op_set_target(struct store *store, long long op_id,
                        const char *target_id)
    __attribute__((warn_unused_result));

/* An op that failed for good is tried again after a long backoff, so
 * that an error misjudged as permanent heals without the admin:
 * STORE_RETRY_BASE seconds after its first failure for good (since it
 * was queued, or since resync), then STORE_RETRY_BASE plus how long the
 * op has been queued, which about doubles the wait each time (1, 2, 4, 8,
 * 16 hours), never more than STORE_RETRY_CAP. */
#define STORE_RETRY_BASE 3600
#define STORE_RETRY_CAP 86400

/* Record a failed attempt at `now`; `permanent` moves the op to state
 * failed with its next try set (see above), given in *next_try (may be
 * NULL; 0 unless permanent). */
int store_op_fail(struct store *store, long long op_id, int permanent,
                  const char *error, time_t now, time_t *next_try)
    __attribute__((warn_unused_result));

/* The link's failed ops whose next try has come (next_try <= now) go
 * back to pending, except those of kind "fail" and "conflict" (objects
 * the planner itself refuses and decides again on its own). *requeued
 * (may be NULL) gets how many. */
int store_ops_retry_due(struct store *store, const char *link, time_t now,
                        long long *requeued)
    __attribute__((warn_unused_result));

/* The op succeeded: in one transaction, write the link's target row
 * (state NULL removes it: the next round starts afresh; applied NULL only
 * changes the state of the row there is) and delete the op (invariant
 * 2). */
int store_op_complete(struct store *store, long long op_id, const char *link,
                      const char *source_id, const char *target_id,
                      const char *hash, const char *applied, const char *state,
                      time_t now) __attribute__((warn_unused_result));

/* One op's success, as store_op_complete() takes it; strings borrowed. */
struct store_done {
  long long op_id;
  const char *source_id;
  const char *target_id;
  const char *hash;
  const char *applied;
  const char *state;
};

/* Several ops of `link` succeeded: what store_op_complete() does for each,
 * all in one transaction (each op's row and its deletion stay together:
 * invariant 2). On failure nothing of it is written and -1 is returned:
 * every op stays in the outbox. */
int store_ops_complete(struct store *store, const char *link,
                       const struct store_done *done, size_t n, time_t now)
    __attribute__((warn_unused_result));

/* deletes_held = number of removals (delete, disable, hide) of the link
 * in state held. */
int store_link_count_held(struct store *store, const char *link,
                          long long *held) __attribute__((warn_unused_result));
/* Held removals → pending (held creates stay held); *released (may be
 * NULL) gets how many. Inside an open transaction it is part of it;
 * otherwise it is one of its own. */
int store_link_approve(struct store *store, const char *link,
                       long long *released)
    __attribute__((warn_unused_result));
/* The link's creates in state held (the max_creates guard). */
int store_link_held_creates(struct store *store, const char *link,
                            long long *held)
    __attribute__((warn_unused_result));
/* Held creates → pending; *released (may be NULL) gets how many. One
 * statement: atomic alone, or part of the caller's open transaction. */
int store_link_approve_creates(struct store *store, const char *link,
                               long long *released)
    __attribute__((warn_unused_result));
int store_link_success(struct store *store, const char *link, time_t now)
    __attribute__((warn_unused_result));
/* Put the link's failed ops back to pending (keeping what they learnt,
 * such as an invited object's id) so the next round tries them again,
 * their backoff started afresh. */
int store_link_clear_failed(struct store *store, const char *link,
                            long long *cleared)
    __attribute__((warn_unused_result));
/* --- guests' visibility on the Exchange side --- */

struct store_pair {
  char *a, *b;
};

/* Up to `max` active objects of the link not yet seen visible on the
 * Exchange side: a = source id, b = target id. Free with
 * store_pairs_free(). */
int store_unverified(struct store *store, const char *link, size_t max,
                     struct store_pair **pairs, size_t *n)
    __attribute__((warn_unused_result));
void store_pairs_free(struct store_pair *pairs, size_t n);
/* Seen visible (still the same target object). */
int store_set_exo_visible(struct store *store, const char *link,
                          const char *source_id, const char *target_id)
    __attribute__((warn_unused_result));
int store_count_not_visible(struct store *store, const char *link,
                            long long *count)
    __attribute__((warn_unused_result));

/* --- ownership, claims and recovery (DESIGN.md invariants 2, 3, 8) --- */

/* Weigh (link, source_id) again in the link's next plan. */
int store_replan_add(struct store *store, const char *link,
                     const char *source_id)
    __attribute__((warn_unused_result));

/* Claims: the keys an object of a link stands for in its target tenant
 * (such as "addr:<address>" and "obj:<kind>:<anchor>"); two objects
 * claiming one key of one target are in conflict. Returns 1 with the
 * first other (link, source id) claiming `key` in `target` (*other_link,
 * *other_id: new strings), 0 when nobody else does, -1 on error. */
int store_claim_first(struct store *store, const char *target, const char *key,
                      const char *link, const char *source_id,
                      char **other_link, char **other_id)
    __attribute__((warn_unused_result));
/* Replace the claims of (link, source_id) in `target` with `keys` (n = 0
 * drops them). Every other object holding a key it gives up or takes
 * anew is queued to be weighed again (store_replan_add); *replanned (may
 * be NULL) gets how many of those belong to the same link. */
int store_claims_put(struct store *store, const char *target, const char *link,
                     const char *source_id, const char *const *keys, size_t n,
                     size_t *replanned) __attribute__((warn_unused_result));

/* Forget the claims of every link for which keep(ctx, link) is 0 (links
 * no longer in the configuration): the objects in conflict with them are
 * queued to be weighed again. *forgotten gets how many links. */
int store_claims_forget_links(struct store *store,
                              int (*keep)(void *ctx, const char *link),
                              void *ctx, size_t *forgotten)
    __attribute__((warn_unused_result));

/* Who owns target object `target_id` besides (but_link, but_source_id)
 * (NULLs: besides nobody): a link and source id whose row or op names it
 * (*link and *source_id new strings), or NULLs when nobody else does. */
int store_target_owner(struct store *store, const char *target_id,
                       const char *but_link, const char *but_source_id,
                       char **link, char **source_id)
    __attribute__((warn_unused_result));

/* A create's request is about to leave (`answered` 0, outside any
 * transaction: it is committed before the request goes), or the answer
 * of the one that left at `sent` came at `answered` without an object. */
int store_op_sent(struct store *store, long long op_id, time_t sent,
                  time_t answered) __attribute__((warn_unused_result));

/* Take up a copy found in the target with a proven anchor while the link
 * has no row for it: a row in state "recovered" (weighed as a copy whose
 * values are unknown: the next update sends them all and shows it), the
 * source object recorded as deleted if the store does not know it, and
 * the object queued to be weighed. `applied` is the JSON of what is known
 * to be on it (its anchor). *taken is 0 when the link had a row already. */
int store_take_up(struct store *store, const char *link,
                  const char *source_tenant, const char *source_id,
                  const char *target_id, const char *applied, time_t now,
                  int *taken) __attribute__((warn_unused_result));

/* Call fn for every object of `tenant_id` with a key starting with
 * `prefix` (its id and the key's value, borrowed), in key order. */
int store_anchor_keys(struct store *store, const char *tenant_id,
                      const char *prefix, store_key_fn fn, void *ctx)
    __attribute__((warn_unused_result));

/* Whether the store holds nothing of `link`: no target row, no op, never
 * planned (a first round, or a state that was lost). */
int store_link_empty(struct store *store, const char *link, int *empty)
    __attribute__((warn_unused_result));

/* Whether the store holds nothing at all: no tenant read, no target
 * object, no op (a new state, or one that was lost). */
int store_is_empty(struct store *store, int *empty)
    __attribute__((warn_unused_result));

/* Call fn with the target id of every copy of `link` (not deleted) that
 * the read of generation `gen` of `tenant_id` did not see (ids borrowed;
 * fn returns non-zero to stop). Do not write to the store from fn. */
typedef int (*store_id_fn)(void *ctx, const char *id);
int store_targets_unseen(struct store *store, const char *link,
                         const char *tenant_id, long long gen, store_id_fn fn,
                         void *ctx) __attribute__((warn_unused_result));

/* Objects the planner refused (ops of kind "fail") whose next try has
 * come are weighed again in the link's next plan. */
int store_fails_due(struct store *store, const char *link, time_t now)
    __attribute__((warn_unused_result));

/* --- profile photos (photos = yes) --- */

/* A copy whose photo check is due; new strings (NULL when absent). */
struct store_photo_row {
  char *source_id;
  char *target_id;
  char *applied;      /* what galbridge last wrote on it (JSON) */
  char *target_attrs; /* the target's own read of it (JSON), or NULL */
  char *etag;         /* source etag last written on this target object,
                         NULL when none */
  char *skipped_etag; /* source etag refused for good on it, or NULL */
  char *error;        /* why the last check wrote nothing, or NULL */
};

/* Up to `max` active copies of `link` whose source object (in
 * `source_tenant`) is present and whose photo check has come (never
 * checked, checked on another target object, or next_check <= now),
 * longest due first. Free with store_photo_rows_free(). */
int store_photos_due(struct store *store, const char *link,
                     const char *source_tenant, const char *target_tenant,
                     time_t now, size_t max, struct store_photo_row **rows,
                     size_t *n) __attribute__((warn_unused_result));
void store_photo_rows_free(struct store_photo_row *rows, size_t n);

/* A copy's photo state. As an argument strings are borrowed; from
 * store_photo_get() they are new (store_photo_clear()). */
struct store_photo {
  const char *target_id;
  const char *etag;  /* source etag written on target_id; NULL: none */
  time_t checked_at; /* last check */
  time_t next_check; /* next one due */
  const char *error; /* why the last check wrote nothing, or NULL */
  /* The source etag of a photo refused for good (too large, not an
   * image): not read again while the source's etag stays this. */
  const char *skipped_etag;
};

/* Record (replace) the photo state of (link, source_id). */
int store_photo_put(struct store *store, const char *link,
                    const char *source_id, const struct store_photo *photo)
    __attribute__((warn_unused_result));
/* *found 0 (and *out zeroed) when the copy was never checked. */
int store_photo_get(struct store *store, const char *link,
                    const char *source_id, struct store_photo *out, int *found)
    __attribute__((warn_unused_result));
void store_photo_clear(struct store_photo *photo);
/* Of the link's active copies: how many carry a photo galbridge wrote,
 * and how many failed their last check. */
int store_photo_counts(struct store *store, const char *link,
                       long long *written, long long *failed)
    __attribute__((warn_unused_result));

/* Drop the tenant's delta link: the next round reads it in full. */
/* Drop the tenant's delta link (and its base URL): the next round reads
 * it in full. */
int store_delta_reset(struct store *store, const char *tenant_id)
    __attribute__((warn_unused_result));

#endif
