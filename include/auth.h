/*
 * auth — access tokens per (tenant, resource) by the OAuth 2.0 client
 * credentials grant: client secret, or certificate (a JWT client assertion
 * built by the jwt module, RS256 with x5t by default).
 *
 * One struct auth per tenant. Tokens are cached and refreshed before they
 * expire (when less than min(5 min, a quarter of their lifetime) is left);
 * at most one token request per resource is in flight, later askers wait
 * for it (single-flight). The scope always comes from the tenant's cloud
 * (`https://graph.microsoft.com/.default` ...), never from the URL
 * overrides; a certificate assertion's aud is the token URL actually
 * called.
 *
 * Tokens and secrets are never logged, stored or put in an error message.
 */
#ifndef GALBRIDGE_AUTH_H
#define GALBRIDGE_AUTH_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"
#include "http.h"

struct auth;

enum auth_resource {
  AUTH_RESOURCE_GRAPH,
  AUTH_RESOURCE_EXCHANGE,
};

/* Results passed to auth_token_fn. */
enum auth_result {
  AUTH_OK = 0,
  AUTH_ERR_CREDENTIALS = -1, /* refused: bad secret, unknown app/tenant,
                                bad certificate; retrying will not help */
  AUTH_ERR_TRANSIENT = -2,   /* network, 5xx, throttled: try later */
  AUTH_ERR_CANCELLED = -3,   /* auth_free() while waiting */
};

/* `token` is borrowed until the callback returns; NULL unless AUTH_OK.
 * `errmsg` (never NULL, "" on success) names the tenant and carries the
 * server's error and AADSTS description, e.g. "tenant contoso: token
 * request refused (401 invalid_client): AADSTS7000215: Invalid client
 * secret provided." */
typedef void (*auth_token_fn)(void *ctx, int result, const char *token,
                              const char *errmsg);

/* A token source for `tenant` (borrowed: it must outlive the auth) that
 * sends its requests through `http`, and delivers its callbacks on `loop`
 * (the loop `http` runs on). For a certificate tenant the certificate and
 * key are loaded now, so a bad file is reported here; a client secret file
 * is read at each token request, so a rotated secret is picked up. Returns
 * 0, or -1 with a message in `err` (naming the tenant). */
int auth_new(uv_loop_t *loop, struct http *http,
             const struct config_tenant *tenant, struct auth **out, char *err,
             size_t errlen) __attribute__((warn_unused_result));

/* Free it (NULL is a no-op). Callbacks still waiting are called with
 * AUTH_ERR_CANCELLED before this returns; a token request in flight is
 * abandoned safely (its late answer is dropped). The struct itself is
 * released in a close callback: call this while the loop runs, or run the
 * loop afterwards until uv_run() returns 0, as for http_close(). */
void auth_free(struct auth *auth);

/* The cached token for `resource` if it is still fresh, else NULL.
 * Borrowed: valid until the next call into this auth. */
const char *auth_cached(struct auth *auth, enum auth_resource resource);

/* The cached token for `resource` while it has not expired, even in the
 * last part of its life where auth_cached() no longer offers it; when it
 * is not fresh any more a refresh is started in the background (as by
 * auth_token(), single-flight), so that later callers get a new one.
 * NULL when no token is valid (a refresh has been started then too).
 * *is_fresh (may be NULL) is set to whether auth_cached() would have
 * given it. Borrowed: valid until the next call into this auth. Never
 * calls back into the caller. */
const char *auth_current(struct auth *auth, enum auth_resource resource,
                         int *is_fresh);

/* Get a token: from the cache when fresh, else by a token request (one in
 * flight at a time per resource). The callback is always called later from
 * the loop, never from inside this call, exactly once. Returns 0, or -1 on
 * allocation failure, when too many callers wait already, or after
 * auth_free() began; then the callback will never be called.
 *
 * HTTP_ERR_CANCELLED from http (http_close() while the request was in
 * flight) is reported as AUTH_ERR_CANCELLED. A response that cannot be
 * understood is AUTH_ERR_TRANSIENT; so is a 4xx whose `error` is not one
 * of invalid_client, unauthorized_client, invalid_request, invalid_scope,
 * invalid_grant (those, on 400 or 401, are AUTH_ERR_CREDENTIALS, as is an
 * unusable client secret file). */
int auth_token(struct auth *auth, enum auth_resource resource,
               auth_token_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* Drop the cached token for `resource` if it equals `token` (the one a
 * service just refused with 401), so the next auth_token() asks anew. A
 * NULL `token` drops whatever is cached. */
void auth_invalidate(struct auth *auth, enum auth_resource resource,
                     const char *token);

/* Tokens obtained so far (for metrics and tests). */
unsigned long auth_refresh_count(const struct auth *auth);

/* "https://graph.microsoft.com/.default" and the like for a cloud (a
 * static string), or NULL for a value outside the enums. */
const char *auth_scope(enum config_cloud cloud, enum auth_resource resource);

/* --- pure helper, exposed for the fuzz target and unit tests --- */

/* What a finished token request means for tenant `name`. `credential`
 * (the secret or assertion sent; may be NULL) is only used to withhold an
 * error description that repeats it. Returns AUTH_OK with *root a new
 * reference (decref it), *token borrowed from it and *lifetime in seconds
 * (capped at a day); otherwise another enum auth_result, *root and *token
 * NULL, and `msg` (msglen > 0) one line for the log that holds no token
 * and never the credential. */
int auth_parse_token_response(const char *name, const char *credential,
                              const struct http_response *resp, json_t **root,
                              const char **token, long *lifetime, char *msg,
                              size_t msglen);

#endif
