/*
 * graph — Microsoft Graph for one tenant: authenticated JSON requests and
 * the shapes of users/delta pages.
 *
 * graph_get() attaches a Graph token from auth, sends the request through
 * http (gate "<tenant id>/graph", so a 429 holds back only this tenant's
 * Graph traffic) and decodes the answer: a JSON body, or a Graph error
 * {"error": {"code", "message", "innerError"}} turned into a code the
 * caller can branch on and a message it can log. The token goes on
 * each attempt as it actually leaves (http's authorization hook), however
 * long the request waited for its gate or budget.
 *
 * Errors are classified by what they mean (graph_error_class: a token
 * refusal, throttling, transient, permanent), the same way for a plain
 * request, a $batch answer as a whole and each answer inside one. A token
 * refusal (a 401, InvalidAuthenticationToken) drops the token, gets a
 * fresh one and retries, a few times; a 401 on a token that was past its
 * prime (the last quarter of its life, or expired because no new one
 * could be had) is retried a few times more, as a timing accident. A
 * token refusal that outlasts those retries goes back as a token problem:
 * transient, never a permanent failure of the request (or of the ops
 * inside a batch).
 *
 * Links the service hands back (@odata.nextLink, @odata.deltaLink) are
 * followed only when they point at this tenant's own Graph base URL: the
 * token must never be sent anywhere else.
 *
 * Writes can go through JSON batching ($batch, at most 20 requests in one
 * HTTP request) once graph_batch_enable() has given the client a loop:
 * graph_address_holders, graph_invite, graph_user_patch and
 * graph_user_delete
 * then queue a sub-request. Queued sub-requests go on the next loop tick
 * (a 0 ms timer), 20 to a batch, one POST /v1.0/$batch (or /beta/$batch
 * for beta URLs) each; a lone one goes as a plain request. A full batch
 * goes at once; a partial one (under 20) waits for company while another
 * partial one is in flight, as in Nagle's algorithm, or while invitations
 * (whose PATCHes will follow) are, but never more than a second; a lone
 * request otherwise goes at once. Each caller still gets its own
 * graph_response: the inner answer's status, decoded error and body. An
 * inner 429/503/504 is retried alone after its own Retry-After (bounded),
 * and tells http's budget to slow down and its gate to close until then;
 * an inner token refusal gets a fresh token and goes again, as a plain
 * request's would. The gate closes for an inner Retry-After as soon as
 * the batch's answer is in, before its connection can carry another
 * request (http_request.inner_wait, graph_batch_wait). A batch that
 * fails as a whole (network, 5xx, 429 after http's retries, a token
 * refusal after its retries) fails each of its sub-requests as a plain
 * request would have, with the same class; a 400 for the whole batch
 * sends each sub-request again on its own, so only a bad one fails.
 *
 * A batch costs http's budget one write per inner write and one
 * invitation per inner invitation (their own limit, 150 per 5 s, counts
 * inner requests one by one). An inner invitation's answer (201, the
 * invitation, whose invitedUser.id is the new user) goes to its own
 * graph_invite callback as a plain one would. Under throttling a batch
 * gets most of its invitations through where invitations sent one by one
 * would each risk a 429 that holds the whole tenant back.
 *
 * Only this module (with exo and auth) knows Microsoft's JSON shapes. Its
 * code is src/graph.c (the client, errors), graph_delta.c, graph_batch.c
 * and graph_users.c, which share src/graph_int.h.
 */
#ifndef GALBRIDGE_GRAPH_H
#define GALBRIDGE_GRAPH_H

#include <jansson.h>
#include <stddef.h>
#include <time.h>
#include <uv.h>

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
  "country,postalCode,employeeId,employeeType,faxNumber,otherMails,"          \
  "proxyAddresses,preferredLanguage,usageLocation,"                           \
  "onPremisesExtensionAttributes"

/* What users/delta selects: the properties, and the `manager`
 * relationship, which comes as "manager@delta" (graph_delta_merge keeps
 * it as "manager", the manager's object id). A user read alone
 * (reader_user) selects GRAPH_USER_SELECT: a plain $select=manager
 * returns nothing there, and the stored manager is kept. */
#define GRAPH_DELTA_SELECT GRAPH_USER_SELECT ",manager"

/* Whether `name` (any case) is one of GRAPH_USER_SELECT's properties. */
int graph_user_property_known(const char *name);

/* The group properties galbridge tracks (groupcontact links): what says
 * whether a group is mail-enabled and what its contact shows. Never
 * "members": a group contact needs none, and members@delta would page a
 * big group's whole membership. Changing the list makes every groups
 * read start again in full, as for users. */
#define GRAPH_GROUP_SELECT                                                    \
  "id,displayName,description,mail,mailEnabled,mailNickname,"                 \
  "securityEnabled,groupTypes,proxyAddresses"

/* Whether `name` (any case) is one of GRAPH_GROUP_SELECT's properties. */
int graph_group_property_known(const char *name);

enum graph_result {
  GRAPH_OK = 0,
  GRAPH_ERR_HTTP = -1,      /* an HTTP error status: see status, code */
  GRAPH_ERR_NETWORK = -2,   /* no answer (after http's retries) */
  GRAPH_ERR_AUTH = -3,      /* no token could be had */
  GRAPH_ERR_PROTOCOL = -4,  /* the answer is not what Graph documents */
  GRAPH_ERR_CANCELLED = -5, /* shutting down */
  GRAPH_ERR_TOO_LARGE = -6, /* a binary answer over its cap (permanent) */
};

struct graph_response {
  int result;           /* enum graph_result */
  long status;          /* HTTP status, 0 if none */
  const char *code;     /* Graph error code ("" if none) */
  const char *errmsg;   /* one line for the log ("" on success) */
  json_t *body;         /* borrowed; parsed body or NULL (e.g. 204) */
  const char *location; /* Location header or NULL */
  int auth_permanent;   /* GRAPH_ERR_AUTH: credentials refused */
  int transient;        /* graph_error_transient() of this answer */
  /* A binary answer (graph_photo_get): its bytes and Content-Type,
   * borrowed; NULL and 0 otherwise. */
  const char *raw;
  size_t raw_len;
  const char *content_type;
  uint64_t sent_ns; /* when it left its gate (http_response), 0: unknown */
};

typedef void (*graph_done_fn)(void *ctx, const struct graph_response *resp);

/* The http gate (and so the budget) of `tenant`'s Graph requests: one per
 * tenant and application, as Microsoft counts its limits, whichever
 * [tenant] sections name them. Writes at most len - 1 bytes. */
void graph_gate_name(const struct config_tenant *tenant, char *buf,
                     size_t len);

/* A Graph client for `tenant` (borrowed, as are http and auth: they must
 * outlive it). Returns NULL on allocation failure. */
struct graph *graph_new(struct http *http, struct auth *auth,
                        const struct config_tenant *tenant);
/* Free it. Requests in flight finish quietly: their callbacks are called
 * with GRAPH_ERR_CANCELLED before this returns (queued $batch
 * sub-requests too). After graph_batch_enable() its timers are closed
 * here: run the loop afterwards, as for http_close(). */
void graph_free(struct graph *graph);

const char *graph_base_url(const struct graph *graph);

/* At most this many requests in one $batch (Microsoft's limit). */
#define GRAPH_BATCH_MAX 20

/* Send finds, invitations, PATCHes and DELETEs of users through $batch
 * from now on (see the top of this file); `loop` (borrowed) is the loop
 * http runs on. Calling it again does nothing. Returns 0, or -1 on
 * allocation failure or when its timers cannot be made (requests then go
 * one by one, as before). */
int graph_batch_enable(struct graph *graph, uv_loop_t *loop)
    __attribute__((warn_unused_result));

/* GET `url`: a path such as "/v1.0/users/delta?$select=id" (appended to
 * the tenant's Graph base URL) or an absolute URL, which must lie under
 * that base URL. `headers` is a NULL-terminated list of extra "Name:
 * value" lines or NULL. Returns 0, or -1 (bad URL, allocation failure)
 * when the callback will never be called. */
int graph_get(struct graph *graph, const char *url, const char *const *headers,
              graph_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* The same for any method: `body` (borrowed; NULL for none) is sent as
 * JSON. */
int graph_request(struct graph *graph, const char *method, const char *url,
                  const json_t *body, const char *const *headers,
                  graph_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* Whether `url` lies under `base` (scheme, host and port equal, followed
 * by '/'): the only URLs a token may be sent to. */
int graph_url_is_under(const char *base, const char *url);

/* The scheme://host[:port] of `url` (empty when it has none), for logs
 * that must not show a link's token. Writes at most len - 1 bytes. */
void graph_url_origin(const char *url, char *buf, size_t len);

/* Whether a stored delta link may be followed by a tenant whose Graph
 * base URL is now `graph_url`: the link was committed under the same base
 * URL (`stored_base`, compared without trailing '/' and case), or, when
 * no base was stored with it (NULL), it lies under graph_url. A link of
 * another base URL is never sent (it would carry the token elsewhere, or
 * be refused there): the tenant is read again in full. */
int graph_delta_link_usable(const char *graph_url, const char *stored_base,
                            const char *delta_link);

/* `count` is the tenant's users (deleted ones not counted), or -1 on
 * error (resp says which). */
typedef void (*graph_count_fn)(void *ctx, const struct graph_response *resp,
                               long long count);

/* How many users the tenant has: GET /v1.0/users?$count=true&$top=1 with
 * ConsistencyLevel: eventual (an advanced query; the answer's
 * @odata.count). Returns 0, or -1 when the callback will never be
 * called. graph_group_count(): the same for its groups (GET
 * /v1.0/groups?$count=true&$top=1), the bound of a groups read. */
int graph_group_count(struct graph *graph, graph_count_fn done, void *ctx)
    __attribute__((warn_unused_result));
int graph_user_count(struct graph *graph, graph_count_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* --- target-side user operations (guests) --- */

/* Quote `value` as an OData string literal: 'O''Brien'. New string. */
char *graph_odata_quote(const char *value);

/* A directory object holding an address, as graph_address_holders()
 * found it; strings borrowed for the callback. */
struct graph_holder {
  const char *kind; /* "user", "contact" or "group" */
  const char *id;
  const char *display_name;
  const char *creation_type; /* users: "Invitation" for invited ones */
  const char *user_type;     /* users: "Member" or "Guest" */
  const char *anchor;        /* users: the anchor attribute asked for */
  time_t created;            /* users: createdDateTime, 0 if unknown */
  int other_only;            /* a user with it among its other mails only */
};

/* At most this many holders of each kind are reported. */
#define GRAPH_HOLDERS_MAX 5

/* `holders` (n of them) on success; on error resp->result says which. */
typedef void (*graph_holders_fn)(void *ctx, const struct graph_response *resp,
                                 const struct graph_holder *holders, size_t n);

/* Every directory object of the tenant holding `address`: users by mail,
 * userPrincipalName, otherMails or SMTP proxy address, org contacts and
 * groups by mail or
 * proxy address (three lookups, through $batch once batching is on; the
 * latter two as advanced queries). `anchor_attr` names the extension
 * attribute reported in each user's holder->anchor (may be NULL).
 * Returns 0, or -1 (callback never called): no address, one so long
 * that its lookups' URLs would pass 32 KiB (refused, never cut),
 * allocation failure. */
int graph_address_holders(struct graph *graph, const char *address,
                          const char *anchor_attr, graph_holders_fn done,
                          void *ctx) __attribute__((warn_unused_result));

/* `user_id` is the new user's object id (invitedUser.id), or NULL. */
typedef void (*graph_id_fn)(void *ctx, const struct graph_response *resp,
                            const char *user_id);

/* POST /v1.0/invitations without an invitation message; through $batch
 * once batching is enabled, with its own answer all the same. */
int graph_invite(struct graph *graph, const char *mail,
                 const char *display_name, int as_member, graph_id_fn done,
                 void *ctx) __attribute__((warn_unused_result));

/* PATCH a user from flat attributes: extensionAttributeN keys go into
 * onPremisesExtensionAttributes; showInAddressList sends the request to
 * the beta endpoint (v1.0 documents it as not for use). 204 expected. */
int graph_user_patch(struct graph *graph, const char *user_id,
                     const json_t *attrs, graph_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* DELETE a user (soft delete, restorable for 30 days). */
int graph_user_delete(struct graph *graph, const char *user_id,
                      graph_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* Set a user's manager: PUT /users/{user_id}/manager/$ref with
 * {"@odata.id": "<tenant's graph_url>/v1.0/users/{manager_id}"},
 * or, manager_id NULL, clear it: DELETE /users/{user_id}/manager/$ref.
 * 204 expected (a DELETE when there is none: 404). Through $batch when
 * batching, as PATCHes. Returns 0, or -1 (an id that is no GUID's text,
 * memory) when the callback will never be called. */
int graph_user_manager_set(struct graph *graph, const char *user_id,
                           const char *manager_id, graph_done_fn done,
                           void *ctx) __attribute__((warn_unused_result));

/* Restore a user from deleted items. */
int graph_user_restore(struct graph *graph, const char *user_id,
                       graph_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* `members` (borrowed): an object whose keys are the group's transitive
 * members' ids, or NULL on error. */
typedef void (*graph_members_fn)(void *ctx, const struct graph_response *resp,
                                 const json_t *members);

/* Every transitive member of a group, following nextLinks. Returns 0, or
 * -1 (callback never called) when `group_id` is no object id (lower-case
 * hex and '-', at most 64 characters) or on allocation failure. */
int graph_group_members(struct graph *graph, const char *group_id,
                        graph_members_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* What an answer means (http.h's classes), the same for a plain
 * request, a $batch answer as a whole and each answer inside one (build
 * a graph_response of its status and decoded code): a 401, or the code
 * InvalidAuthenticationToken whatever the status, is a token refusal
 * (HTTP_CLASS_TOKEN), as is "no token could be had" unless the
 * credentials were refused (then permanent); no answer, a cancelled
 * request or a malformed answer are transient; otherwise by status
 * (http_status_class). */
enum http_class graph_error_class(const struct graph_response *resp);

/* Whether a failed answer is worth retrying later: any class but OK and
 * PERMANENT (a token refusal, throttling, 5xx, network), rather than
 * final (400, 403, 409...). */
int graph_error_transient(const struct graph_response *resp);

/* --- profile photos of users (graph_photo.c) ---
 *
 * GET /users/{id}/photo is the metadata (@odata.mediaEtag changes with
 * each new photo; users/delta does not see photos), GET .../photo/$value
 * the bytes, PUT .../photo/$value (Content-Type as read, at most 4 MB) and
 * DELETE .../photo/$value write them. Ids reach a URL only when they look
 * like object ids. A metadata GET goes through $batch once batching is on;
 * the binary ones go alone: inside a $batch answer a binary body comes
 * base64-encoded in the JSON, and 20 photos in one answer would break the
 * bound of one photo in memory per request. */

/* What a photo's metadata says; strings borrowed from the answer. */
struct graph_photo {
  int present;              /* 0: no photo (see graph_photo_parse) */
  const char *etag;         /* @odata.mediaEtag ("" when none) */
  const char *content_type; /* @odata.mediaContentType ("" when none) */
};

/* `photo` is set when resp->result is GRAPH_OK, NULL otherwise. */
typedef void (*graph_photo_fn)(void *ctx, const struct graph_response *resp,
                               const struct graph_photo *photo);

/* Read a photo's metadata answer `body` (borrowed) into *out: a photo is
 * present only with a non-empty @odata.mediaEtag (at most 256 bytes, no
 * control character) and an id other than "1x1", which Graph answers for
 * a user without one. Returns 0, or -1 when body is not an object or its
 * etag is not a string of that shape. */
int graph_photo_parse(const json_t *body, struct graph_photo *out)
    __attribute__((warn_unused_result));

/* GET /v1.0/users/{user_id}/photo. A 404 whose code is not
 * Request_ResourceNotFound (the user itself unknown) means no photo:
 * the callback gets GRAPH_OK and photo->present 0. Returns 0, or -1
 * (callback never called) on an id that is no object id or allocation
 * failure. */
int graph_photo_meta(struct graph *graph, const char *user_id,
                     graph_photo_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* GET /v1.0/users/{user_id}/photo/$value: on success resp->raw,
 * raw_len and content_type hold the bytes; a body over `max_bytes` ends
 * with GRAPH_ERR_TOO_LARGE (nothing more is read). */
int graph_photo_get(struct graph *graph, const char *user_id, size_t max_bytes,
                    graph_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* PUT /v1.0/users/{user_id}/photo/$value with `len` bytes of `data`
 * (copied) as `content_type` ("image/jpeg" or "image/png", anything else
 * refused with -1); a directory write for the budget. */
int graph_photo_put(struct graph *graph, const char *user_id,
                    const char *content_type, const void *data, size_t len,
                    graph_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* DELETE /v1.0/users/{user_id}/photo/$value (204). */
int graph_photo_delete(struct graph *graph, const char *user_id,
                       graph_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* --- request costs (pure, exposed for unit tests) --- */

/* The resource units Microsoft Graph's identity limits charge for
 * `method` on `url` (throttling-limits.md, "Identity and access service
 * limits"): a base of 2 for GET users (the list) and applications, 3 for
 * GET groups/{id}/members, 5 for groups/{id}/transitiveMembers, 1 for
 * anything else; $select takes 1 off, $expand adds 1, $top under 20 takes
 * 1 off; never under 1. `url` is absolute or relative to the version
 * ("/users?..."), with its query string. */
unsigned graph_request_units(const char *method, const char *url);

/* --- $batch bodies (pure, exposed for unit tests) --- */

/* One sub-request: `url` is relative to the batch's version ("/users/…",
 * with its query string); `headers` a NULL-terminated "Name: value" list
 * or NULL; `body` borrowed or NULL (then Content-Type: application/json is
 * added unless the headers carry a Content-Type); `depends_on` the id of
 * a sub-request that must succeed first, or NULL. */
struct graph_batch_item {
  const char *id;
  const char *method;
  const char *url;
  const json_t *body;
  const char *const *headers;
  const char *depends_on;
};

/* The JSON body {"requests": [...]} of a $batch. Returns a new reference,
 * or NULL with the reason in err: n is 0 or over GRAPH_BATCH_MAX, an id is
 * empty or repeated (ids compare case-insensitively), a url is not
 * relative, a header has no ':', depends_on names no earlier item, or
 * allocation failed. */
json_t *graph_batch_body(const struct graph_batch_item *items, size_t n,
                         char *err, size_t errlen);

/* The answer to one sub-request. */
struct graph_batch_answer {
  long status;        /* its HTTP status; 0 when the batch has no (usable)
                         answer for this id */
  json_t *body;       /* borrowed from the batch answer, or NULL */
  double retry_after; /* its own Retry-After, seconds; -1 when none */
  /* its x-ms-throttle-information (any case), borrowed like body, or
   * NULL */
  const char *throttle_information;
};

/* Match a $batch answer {"responses": [{"id", "status", "headers"?,
 * "body"?}, …]} (in any order) to the ids sent: out[i] gets the answer to
 * ids[i]. Answers to unknown ids, repeated answers and answers whose
 * status is not a number from 100 to 599 are ignored (that id keeps
 * status 0). Retry-After (any case) is read as http does. Returns 0, or
 * -1 with the reason in err when the answer is not that shape. */
int graph_batch_parse(json_t *answer, const char *const *ids, size_t n,
                      struct graph_batch_answer *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* How long a $batch answer asks its gate to wait: the longest
 * Retry-After (seconds) among its inner answers that are throttled (429,
 * 503, 504); -1 when none gives one (or `answer`, borrowed, may be NULL
 * or any JSON, is not a batch answer). */
double graph_batch_wait(const json_t *answer);

/* --- users/delta pages (pure) --- */

enum graph_removed {
  GRAPH_PRESENT = 0,
  GRAPH_REMOVED_CHANGED = 1, /* soft-deleted: restorable for 30 days */
  GRAPH_REMOVED_DELETED = 2, /* gone for good */
};

struct graph_delta_page {
  json_t *items;         /* borrowed: the page's "value" array */
  size_t skipped;        /* items with no usable id (see below) */
  const char *next_link; /* borrowed; exactly one of the two is set */
  const char *delta_link;
};

/* Check a users/delta page's shape: an object with a "value" array and
 * exactly one of @odata.nextLink / @odata.deltaLink as a string. Items
 * that are not objects with a string "id" (1..128 bytes) are counted in
 * page->skipped: the caller skips them. Returns 0 and fills *page
 * (pointers borrowed from body), or -1 with the reason in err. */
int graph_delta_page_parse(json_t *body, struct graph_delta_page *page,
                           char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The item's id, borrowed, or NULL when it has no usable one (not a
 * string of 1..128 bytes, or one holding a NUL). */
const char *graph_delta_item_id(const json_t *item);

/* GET one users/delta page, as graph_get() does, except for values that
 * jansson cannot take. Graph is a .NET service: a user's attribute can
 * hold a NUL (\u0000), an unpaired surrogate escape (\ud800) or, from a
 * broken writer, bytes that are not UTF-8, and any one of them made
 * jansson refuse the whole page, so that one user's bad value stopped
 * every later round of the tenant. Here the answer is decoded with
 * JSON_ALLOW_NUL and, when that fails, decoded again with each such value
 * marked (graph_json_mark_bad): its bad part becomes U+0000, never a
 * plausible character. The caller must judge every item with
 * graph_delta_item_check() before it uses it. */
int graph_delta_get(struct graph *graph, const char *url, graph_done_fn done,
                    void *ctx) __attribute__((warn_unused_result));

/* JSON text `text` (`len` bytes) with, inside string literals, each run
 * of bytes that is not UTF-8 (jansson's rules: no overlong form, no
 * surrogate, nothing above U+10FFFF), each run of raw control characters
 * and each \u escape of an unpaired surrogate replaced by the escape
 * \u0000; everything else is copied as it is (jansson still judges the
 * syntax). A new NUL-terminated string (free()) whose length goes to
 * *out_len and whose number of marks goes to *marks, or NULL on
 * allocation failure. */
char *graph_json_mark_bad(const char *text, size_t len, size_t *out_len,
                          size_t *marks);

/* The longest string galbridge takes from a source attribute, in bytes of
 * UTF-8. Graph's longest user properties hold 1024 UTF-16 code units
 * (streetAddress, extensionAttributeN), at most 3072 bytes: this is five
 * times that. A longer value is no user's data; shorter ones over what a
 * target takes are the planner's to refuse, attribute by attribute. */
#define GRAPH_VALUE_MAX 16384
/* The most values galbridge takes in one multi-valued attribute
 * (otherMails holds up to 250, proxyAddresses a few hundred). */
#define GRAPH_VALUES_MAX 4096
/* The most elements taken in one "manager@delta" (a user has one manager:
 * an old link removed and the new one). */
#define GRAPH_MANAGER_REFS 8
#define GRAPH_STR_(x) #x
#define GRAPH_STR(x) GRAPH_STR_(x)

/* Judge a delta item before anything of it is used: every value under
 * every attribute but "id" and "@odata.*" (nested ones too) must be a
 * string without a NUL (a mark of graph_delta_get(), or a real one) and
 * at most GRAPH_VALUE_MAX bytes long, in arrays of at most
 * GRAPH_VALUES_MAX values; "manager@delta" must be an array of at most
 * GRAPH_MANAGER_REFS objects, each with an id graph_delta_item_id()
 * takes (attribute "manager"). Returns 0, or -1 with the attribute's name
 * (nested ones as "a.b" and "a[2]") in `attribute` (`attrlen` bytes) and
 * a static text in *reason; the value itself is never copied out. */
int graph_delta_item_check(const json_t *item, char *attribute, size_t attrlen,
                           const char **reason)
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
 *    `replace` is set; "id" and "@odata.*" annotations are not stored;
 *  - "manager@delta" (an array of {"@odata.type", "id"}, a link removed
 *    carrying "@removed") is kept as "manager": the id of its last
 *    element not removed, or none (cleared) when every element is
 *    removed; a plain "manager" in an item is ignored.
 * Returns a new reference (an object), or NULL on allocation failure or an
 * item that is not an object. */
json_t *graph_delta_merge(const json_t *stored, const json_t *item,
                          int replace, int *removed);

/* The keys under which a stored user (attributes as graph_delta_merge
 * makes them) can be found, for store_object_keys_put(): "addr:<address>"
 * (lower case) for its mail, userPrincipalName and SMTP proxyAddresses,
 * "other:<address>" for its otherMails, each with a NULL value, and
 * "anchor:<plain anchor>"
 * for every extension attribute holding a galbridge anchor, with that
 * attribute's whole value. New reference: an array of [key, value]
 * pairs, or NULL on allocation failure. */
json_t *graph_user_keys(const json_t *attrs);

/* The value of extension attribute `name` ("extensionAttributeN") of a
 * stored user, borrowed, or NULL when it has none. */
const char *graph_user_extension(const json_t *attrs, const char *name);

/* Whether user `u` (its Graph attributes) holds `address` as a unique
 * address: its mail, its UPN or an SMTP proxy address (not only among
 * its other mails). Case-insensitive; 0 for a NULL address. */
int graph_user_holds(const json_t *u, const char *address);

/* True when an error answer means "this delta token is no good: read
 * everything again": 400/404 syncStateNotFound, 410 Gone, resyncRequired
 * (any casing). */
int graph_delta_needs_resync(const struct graph_response *resp);

#endif
