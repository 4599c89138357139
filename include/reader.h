/*
 * reader — one delta round of a source tenant's users into the store.
 *
 * A round pages through users/delta from the committed deltaLink (or, when
 * there is none, from a full read with GRAPH_USER_SELECT), merges every
 * item into source_object page by page (one transaction per page), and
 * commits the new deltaLink in the same transaction as the last page
 * (DESIGN.md invariant 1). A crash mid-round re-reads from the old
 * deltaLink: merges are idempotent, so nothing is skipped or doubled.
 *
 * When the service says the delta token is no longer good
 * (syncStateNotFound, 410 Gone, resyncRequired) the round turns into a
 * full read: every object it sees is stamped with a new generation and
 * only at the end are the objects it did not see marked deleted. A
 * stored deltaLink of another Graph base URL than the tenant's graph_url
 * is never followed: the round is a full read.
 *
 * An item holding a value galbridge cannot take is refused alone
 * (store_source_bad, a warning naming id and attribute); the round goes
 * on. A round that loops (a nextLink already followed) or pages past its
 * bound (N + 100 pages or 2N + 1000 items, N the tenant's size) fails,
 * marks nothing deleted and drops the deltaLink: the next one reads in
 * full (see reader.c).
 */
#ifndef GALBRIDGE_READER_H
#define GALBRIDGE_READER_H

#include <time.h>

#include "graph.h"
#include "store.h"

struct reader;

struct reader_stats {
  int full; /* the round was a full read */
  unsigned long pages;
  unsigned long items; /* delta items received (duplicates included) */
  unsigned long removed;
  unsigned long unseen;  /* marked deleted at the end of a full read */
  unsigned long refused; /* items refused for a value galbridge cannot take
                            (their objects keep what they had) */
  double seconds;
};

/* result 0, or -1 with errmsg naming the tenant and what failed;
 * `permanent` is set when retrying cannot help (credentials refused). */
typedef void (*reader_done_fn)(void *ctx, int result, int permanent,
                               const char *errmsg,
                               const struct reader_stats *stats);

/* A reader for `tenant` (borrowed, as are store and graph). NULL on
 * allocation failure. */
struct reader *reader_new(struct store *store, struct graph *graph,
                          const struct config_tenant *tenant);
/* The same for `tenant`'s groups (groupcontact links): rounds page
 * through groups/delta with GRAPH_GROUP_SELECT into the store under
 * "<tenant id>#groups", with a delta link of their own (never the users'
 * one, nor theirs the users'). reader_user() refuses such a reader. */
struct reader *reader_new_groups(struct store *store, struct graph *graph,
                                 const struct config_tenant *tenant);
void reader_free(struct reader *reader);

/* Called after each page but the last is committed (the round goes on):
 * what is stored so far may be planned while reading continues. */
typedef void (*reader_page_fn)(void *ctx, const struct reader_stats *stats);
void reader_on_page(struct reader *reader, reader_page_fn fn, void *ctx);

/* Index what a stored object holds (graph_user_keys: its addresses and
 * anchors) for lookups before writes; none when `attrs` is NULL (an
 * object removed holds nothing). Inside the caller's transaction. */
int reader_put_keys(struct store *store, const char *tenant_id, const char *id,
                    const json_t *attrs) __attribute__((warn_unused_result));

/* Start a round. Returns 0, or -1 (a round is already running, or it
 * could not start) when the callback will never be called. */
int reader_round(struct reader *reader, reader_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* Instead of a round, read one user now (sync --user): `who` is an object
 * id, or an address (mail, userPrincipalName, proxy address) the store
 * knows for one user, or a userPrincipalName Graph knows: GET
 * /users/{id}?$select=GRAPH_USER_SELECT, merged into the store as a
 * whole object (a value it cannot take refused as in a round). Nothing
 * is marked deleted: a user Graph does not know (404) fails the read, as
 * a permanent error. The delta link and the round's generation stay as
 * they are. Returns 0, or -1 (logged: a round running, several users
 * holding the address, the store) when the callback will never be
 * called. */
int reader_user(struct reader *reader, const char *who, reader_done_fn done,
                void *ctx) __attribute__((warn_unused_result));

/* The id of the user the last reader_user() read, or NULL (borrowed,
 * until the next read). */
const char *reader_user_id(const struct reader *reader);

#endif
