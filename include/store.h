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
 *                  removed state, and the generation of the round that last
 *                  saw it (full re-reads use it to find the unseen);
 *   delta_state    per source tenant: the deltaLink, the $select it was
 *                  made with, the current generation, whether a full read
 *                  is in progress, and when the last round finished;
 *   target_object, op, link_state
 *                  the reconciler's tables (counted by `status`).
 *
 * Invariant 1 (DESIGN.md): store_delta_finish() writes the deltaLink inside
 * the caller's transaction, the same one that holds the last page.
 *
 * Every function returns 0 on success or -1 after logging the SQLite error
 * with context; a `struct store` is used from the loop thread only.
 */
#ifndef GALBRIDGE_STORE_H
#define GALBRIDGE_STORE_H

#include <stddef.h>
#include <time.h>

struct store;

#define STORE_SCHEMA_VERSION 1

enum store_removed {
  STORE_PRESENT = 0,
  STORE_SOFT_DELETED = 1, /* @removed reason "changed": restorable */
  STORE_DELETED = 2,      /* reason "deleted", or unseen in a full read */
};

/* Open (creating the directory with mode 0700 and the database if needed)
 * and migrate. Returns 0 and *out, or -1 with a message in `err`. */
int store_open(const char *state_dir, struct store **out, char *err,
               size_t errlen) __attribute__((warn_unused_result));
void store_close(struct store *store);

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

int store_source_put(struct store *store, const char *tenant_id,
                     const char *id, const char *attrs, int removed,
                     long long gen) __attribute__((warn_unused_result));

struct store_source_counts {
  long long present;
  long long soft_deleted;
  long long deleted;
};
int store_source_count(struct store *store, const char *tenant_id,
                       struct store_source_counts *out)
    __attribute__((warn_unused_result));

/* --- delta state per source tenant --- */

struct store_delta_state {
  char *delta_link;    /* NULL: no committed round yet (or reset) */
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
 * delta link, end the round at `now`, and when a full read was in progress
 * mark every present object not seen in generation `gen` as deleted.
 * *unseen (may be NULL) receives how many were so marked. */
int store_delta_finish(struct store *store, const char *tenant_id,
                       const char *delta_link, long long gen, time_t now,
                       long long *unseen) __attribute__((warn_unused_result));

/* --- per link figures for `status` --- */

struct store_link_counts {
  long long objects;      /* target objects the link manages */
  long long pending;      /* ops not yet done */
  long long failed;       /* ops failed for good */
  long long deletes_held; /* deletes waiting for approval */
  time_t last_success;    /* 0 if never */
};
int store_link_counts(struct store *store, const char *link,
                      struct store_link_counts *out)
    __attribute__((warn_unused_result));

#endif
