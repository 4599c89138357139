/*
 * photo — profile photos of a link's people onto their copies (photos =
 * yes, guest and mail user links; a mail contact has no photo in Graph).
 *
 * users/delta does not see photo changes, so each copy's source person is
 * polled: GET /users/{id}/photo (metadata, through $batch when batching
 * is on) once every photo_interval, and the bytes are read only when its
 * @odata.mediaEtag differs from the one galbridge last wrote on that copy
 * (kept per copy in the store, so a restart sends nothing again). A new
 * photo is PUT on the copy with the Content-Type it was read with; a
 * photo the source removed (404, or "1x1" with an empty etag) is deleted
 * from the copy only when galbridge had written one there.
 *
 * Invariants: only copies the store names as the link's active ones and
 * whose anchor (as last written, and as the target's own read shows it)
 * is this person's, with its proof when an anchor key is set, are
 * written. A person's photo that cannot be copied (over photo_max_bytes,
 * not JPEG or PNG, refused by the target) fails alone, with its reason
 * recorded and logged, and is tried again later; nothing else waits for
 * it. Photo bytes are never stored; at most PHOTO_TRANSFERS photos are in
 * memory at once, each at most photo_max_bytes.
 */
#ifndef GALBRIDGE_PHOTO_H
#define GALBRIDGE_PHOTO_H

#include <stddef.h>
#include <time.h>

#include "anchor.h"
#include "config.h"
#include "graph.h"
#include "store.h"

/* Copies checked in one round of a link at most: the first checks of a
 * large link spread over several rounds, and stay spread. */
#define PHOTO_ROUND_MAX 500
/* Metadata reads in flight (one $batch), and photos in memory at once. */
#define PHOTO_CHECKS 20
#define PHOTO_TRANSFERS 2
/* A check that failed for a reason that may pass (throttling, a 403 of a
 * policy being changed) comes back after this long, at most
 * photo_interval. */
#define PHOTO_RETRY 3600

struct photo_stats {
  unsigned long checked;   /* metadata read */
  unsigned long unchanged; /* same etag as written: nothing sent */
  unsigned long written;   /* photo PUT on the copy */
  unsigned long removed;   /* photo deleted from the copy */
  unsigned long skipped;   /* refused: too large, not an image, unproven */
  unsigned long failed;    /* an error answer: tried again later */
};

struct photo_pass;

typedef void (*photo_done_fn)(void *ctx, const struct photo_stats *stats);

/* Check up to PHOTO_ROUND_MAX of `link`'s copies whose check is due at
 * `now`, reading from `source` and writing through `target` (all
 * borrowed: they must outlive the pass, or photo_pass_cancel() it
 * first). `done` is called once when every check has ended: from the
 * loop, or before this returns when none had a request to make. *out is
 * set to the pass (for photo_pass_cancel) before any callback and is
 * valid until `done` is called. Returns 0, or -1 (logged) when nothing
 * was started: the callback is then never called. */
int photo_pass_start(struct store *store, struct graph *source,
                     struct graph *target, const struct config_link *link,
                     const struct anchor_key *key, time_t now,
                     photo_done_fn done, void *ctx, struct photo_pass **out)
    __attribute__((warn_unused_result));

/* Stop: no further request starts, no answer touches the store, and
 * `done` is never called. The pass frees itself once its requests end
 * (graph_free() cancels them). */
void photo_pass_cancel(struct photo_pass *pass);

/* Whether `data` (`len` bytes) begins as an image of `content_type`
 * says: a JPEG's FF D8 FF, a PNG's signature. Any other type is 0. */
int photo_type_matches(const char *content_type, const void *data, size_t len);

/* The content type galbridge copies, normalised ("image/jpeg" or
 * "image/png", static), of a Content-Type header (parameters and case
 * ignored), or NULL for anything else. */
const char *photo_type(const char *content_type);

/* When a copy checked at `now` is next due: photo_interval later, less
 * up to a tenth of it by a hash of `source_id`, so that checks made
 * together drift apart rather than come due in one burst. */
time_t photo_next_check(const struct config_link *link, const char *source_id,
                        time_t now);

#endif
