/*
 * graph — Microsoft Graph for one tenant: authenticated JSON requests and
 * the shapes of users/delta pages.
 *
 * graph_get() attaches a Graph token from auth, sends the request through
 * http (gate "<tenant id>/graph", so a 429 holds back only this tenant's
 * Graph traffic) and decodes the answer: a JSON body, or a Graph error
 * {"error": {"code", "message", "innerError"}} turned into a code the
 * caller can branch on and a message it can log. A 401
 * InvalidAuthenticationToken drops the cached token, gets a fresh one and
 * retries once.
 *
 * Links the service hands back (@odata.nextLink, @odata.deltaLink) are
 * followed only when they point at this tenant's own Graph base URL: the
 * token must never be sent anywhere else.
 *
 * Only this module (with exo and auth) knows Microsoft's JSON shapes.
 */
#ifndef GALBRIDGE_GRAPH_H
#define GALBRIDGE_GRAPH_H

#include <jansson.h>
#include <stddef.h>

#include "auth.h"
#include "config.h"
#include "http.h"

struct graph;

/* The user properties galbridge tracks in a source tenant. Changing this
 * list makes every source re-read in full (a deltaLink bakes in its
 * $select). */
#define GRAPH_USER_SELECT                                                     \
  "id,displayName,givenName,surname,mail,mailNickname,userPrincipalName,"     \
  "userType,accountEnabled,creationType,jobTitle,department,companyName,"     \
  "officeLocation,businessPhones,mobilePhone,streetAddress,city,state,"       \
  "country,postalCode,employeeId,otherMails,proxyAddresses,"                  \
  "onPremisesExtensionAttributes"

enum graph_result {
  GRAPH_OK = 0,
  GRAPH_ERR_HTTP = -1,      /* an HTTP error status: see status, code */
  GRAPH_ERR_NETWORK = -2,   /* no answer (after http's retries) */
  GRAPH_ERR_AUTH = -3,      /* no token could be had */
  GRAPH_ERR_PROTOCOL = -4,  /* the answer is not what Graph documents */
  GRAPH_ERR_CANCELLED = -5, /* shutting down */
};

struct graph_response {
  int result;           /* enum graph_result */
  long status;          /* HTTP status, 0 if none */
  const char *code;     /* Graph error code ("" if none) */
  const char *errmsg;   /* one line for the log ("" on success) */
  json_t *body;         /* borrowed; parsed body or NULL (e.g. 204) */
  const char *location; /* Location header or NULL */
  int auth_permanent;   /* GRAPH_ERR_AUTH: credentials refused */
};

typedef void (*graph_done_fn)(void *ctx, const struct graph_response *resp);

/* A Graph client for `tenant` (borrowed, as are http and auth: they must
 * outlive it). Returns NULL on allocation failure. */
struct graph *graph_new(struct http *http, struct auth *auth,
                        const struct config_tenant *tenant);
/* Free it. Requests in flight finish quietly: their callbacks are called
 * with GRAPH_ERR_CANCELLED before this returns. */
void graph_free(struct graph *graph);

const char *graph_base_url(const struct graph *graph);

/* GET `url`: a path such as "/v1.0/users/delta?$select=id" (appended to
 * the tenant's Graph base URL) or an absolute URL, which must lie under
 * that base URL. `headers` is a NULL-terminated list of extra "Name:
 * value" lines or NULL. Returns 0, or -1 (bad URL, allocation failure)
 * when the callback will never be called. */
int graph_get(struct graph *graph, const char *url, const char *const *headers,
              graph_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* Whether `url` lies under `base` (scheme, host and port equal, followed
 * by '/'): the only URLs a token may be sent to. */
int graph_url_is_under(const char *base, const char *url);

/* --- users/delta pages (pure) --- */

enum graph_removed {
  GRAPH_PRESENT = 0,
  GRAPH_REMOVED_CHANGED = 1, /* soft-deleted: restorable for 30 days */
  GRAPH_REMOVED_DELETED = 2, /* gone for good */
};

struct graph_delta_page {
  json_t *items;         /* borrowed: the page's "value" array */
  const char *next_link; /* borrowed; exactly one of the two is set */
  const char *delta_link;
};

/* Check a users/delta page's shape: an object with a "value" array of
 * objects that each have a string "id", and exactly one of
 * @odata.nextLink / @odata.deltaLink as a string. Returns 0 and fills
 * *page (pointers borrowed from body), or -1 with the reason in err. */
int graph_delta_page_parse(json_t *body, struct graph_delta_page *page,
                           char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Merge one delta item into the stored attributes of that object.
 * `stored` (borrowed, may be NULL) is what the store holds; `replace` is
 * true in a full read, where the item stands for the whole object. Rules:
 *  - an item with @removed keeps the stored attributes and reports
 *    GRAPH_REMOVED_CHANGED or _DELETED in *removed;
 *  - otherwise *removed = GRAPH_PRESENT (a restored user comes back as a
 *    normal item) and every property of the item overrides the stored
 *    one; a null clears it; properties the item does not carry keep their
 *    stored value (Prefer: return=minimal omits unchanged ones), unless
 *    `replace` is set; "id" and "@odata.*" annotations are not stored.
 * Returns a new reference (an object), or NULL on allocation failure or an
 * item that is not an object. */
json_t *graph_delta_merge(const json_t *stored, const json_t *item,
                          int replace, int *removed);

/* True when an error answer means "this delta token is no good: read
 * everything again": 400/404 syncStateNotFound, 410 Gone, resyncRequired
 * (any casing). */
int graph_delta_needs_resync(const struct graph_response *resp);

#endif
