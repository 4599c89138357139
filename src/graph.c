/*
 * graph — see include/graph.h.
 *
 * A request's life: graph_get() → token (cached, or asked of auth) →
 * http_send() → on_http(): decode, and on a 401 InvalidAuthenticationToken
 * with a token that has not been refreshed yet, invalidate it and go round
 * once more. Requests in flight sit on a list so graph_free() can cancel
 * them; a cancelled request is detached (req->graph = NULL) and freed when
 * the http or auth callback it waits for comes back.
 */
#include "graph.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

#define GRAPH_MAX_HEADERS 8
#define GRAPH_ERRMSG_MAX 512

struct graph_req {
  struct graph *graph; /* NULL once cancelled */
  struct graph_req *next, *prev;
  char *method;
  char *url;
  char *body;         /* JSON text or NULL */
  char *path_for_log; /* url without its query string */
  char *headers[GRAPH_MAX_HEADERS + 1];
  char *token; /* the token the request was sent with */
  int refreshed;
  graph_done_fn done;
  void *ctx;
};

struct graph {
  struct http *http;
  struct auth *auth;
  const struct config_tenant *tenant;
  char gate[160];
  struct graph_req *reqs;
};

static void send_with_token(struct graph_req *req, const char *token);

struct graph *
graph_new(struct http *http, struct auth *auth,
          const struct config_tenant *tenant)
{
  struct graph *graph = calloc(1, sizeof(*graph));

  if (graph == NULL)
    return NULL;
  graph->http = http;
  graph->auth = auth;
  graph->tenant = tenant;
  snprintf(graph->gate, sizeof(graph->gate), "%s/graph", tenant->tenant_id);
  return graph;
}

const char *
graph_base_url(const struct graph *graph)
{
  return graph->tenant->graph_url;
}

static void
req_free(struct graph_req *req)
{
  if (req == NULL)
    return;
  free(req->method);
  free(req->url);
  free(req->body);
  free(req->path_for_log);
  for (int i = 0; req->headers[i] != NULL; i++)
    free(req->headers[i]);
  if (req->token != NULL) {
    explicit_bzero(req->token, strlen(req->token));
    free(req->token);
  }
  free(req);
}

static void
req_unlink(struct graph_req *req)
{
  struct graph *graph = req->graph;

  if (graph == NULL)
    return;
  if (req->prev != NULL)
    req->prev->next = req->next;
  else
    graph->reqs = req->next;
  if (req->next != NULL)
    req->next->prev = req->prev;
  req->next = req->prev = NULL;
  req->graph = NULL;
}

/* Hand the outcome to the caller and free the request. */
static void
finish(struct graph_req *req, struct graph_response *resp)
{
  graph_done_fn done = req->done;
  void *ctx = req->ctx;

  req_unlink(req);
  req_free(req);
  if (resp->code == NULL)
    resp->code = "";
  if (resp->errmsg == NULL)
    resp->errmsg = "";
  done(ctx, resp);
}

void
graph_free(struct graph *graph)
{
  if (graph == NULL)
    return;
  while (graph->reqs != NULL) {
    struct graph_req *req = graph->reqs;
    struct graph_response resp = {.result = GRAPH_ERR_CANCELLED,
                                  .errmsg = "cancelled"};
    graph_done_fn done = req->done;
    void *ctx = req->ctx;
    /* Detach only: the http or auth callback still to come frees it. */
    req_unlink(req);
    done(ctx, &resp);
  }
  free(graph);
}

int
graph_user_property_known(const char *name)
{
  const char *p = GRAPH_USER_SELECT;
  size_t n = strlen(name);

  while (*p != '\0') {
    size_t len = strcspn(p, ",");
    if (len == n && strncasecmp(p, name, n) == 0)
      return 1;
    p += len;
    if (*p == ',')
      p++;
  }
  return 0;
}

int
graph_url_is_under(const char *base, const char *url)
{
  size_t n = strlen(base);

  while (n > 0 && base[n - 1] == '/')
    n--;
  return n > 0 && strncasecmp(base, url, n) == 0 && url[n] == '/';
}

static void
on_token(void *ctx, int result, const char *token, const char *errmsg)
{
  struct graph_req *req = ctx;
  struct graph_response resp = {0};
  char msg[GRAPH_ERRMSG_MAX];

  if (req->graph == NULL) {
    req_free(req);
    return;
  }
  if (result != AUTH_OK) {
    snprintf(msg, sizeof(msg), "%s", errmsg);
    resp.result =
        result == AUTH_ERR_CANCELLED ? GRAPH_ERR_CANCELLED : GRAPH_ERR_AUTH;
    resp.auth_permanent = (result == AUTH_ERR_CREDENTIALS);
    resp.errmsg = msg;
    finish(req, &resp);
    return;
  }
  send_with_token(req, token);
}

static void
start(struct graph_req *req)
{
  const char *token = auth_cached(req->graph->auth, AUTH_RESOURCE_GRAPH);

  if (token != NULL) {
    send_with_token(req, token);
    return;
  }
  if (auth_token(req->graph->auth, AUTH_RESOURCE_GRAPH, on_token, req) != 0) {
    struct graph_response resp = {.result = GRAPH_ERR_AUTH,
                                  .errmsg = "out of memory asking a token"};
    finish(req, &resp);
  }
}

/* Fill code and errmsg from a Graph error body (or whatever came). */
static void
decode_error(const struct graph_req *req, long status, json_t *body,
             const char **code, char *msg, size_t msglen)
{
  json_t *err = json_object_get(body, "error");
  const char *c = json_string_value(json_object_get(err, "code"));
  const char *m = json_string_value(json_object_get(err, "message"));

  *code = c != NULL ? c : "";
  snprintf(msg, msglen, "%s %s: HTTP %ld%s%s%s%.300s", req->method,
           req->path_for_log, status, *code[0] ? " " : "", *code,
           m ? ": " : "", m ? m : "");
}

static void
on_http(void *ctx, const struct http_response *hr)
{
  struct graph_req *req = ctx;
  struct graph_response resp = {0};
  json_t *body = NULL;
  json_error_t jerr;
  char msg[GRAPH_ERRMSG_MAX];

  if (req->graph == NULL) {
    req_free(req);
    return;
  }
  resp.status = hr->status;
  resp.location = http_response_header(hr, "Location");
  msg[0] = '\0';

  if (hr->error != HTTP_OK) {
    resp.result = hr->error == HTTP_ERR_CANCELLED ? GRAPH_ERR_CANCELLED
                                                  : GRAPH_ERR_NETWORK;
    snprintf(msg, sizeof(msg), "%s %s: %s (after %d attempts)", req->method,
             req->path_for_log, hr->errmsg, hr->attempts);
    resp.errmsg = msg;
    finish(req, &resp);
    return;
  }

  if (hr->body_len > 0) {
    body = json_loadb(hr->body, hr->body_len, 0, &jerr);
    if (body == NULL && hr->status >= 200 && hr->status < 300) {
      resp.result = GRAPH_ERR_PROTOCOL;
      snprintf(msg, sizeof(msg), "%s %s: HTTP %ld with invalid JSON: %s",
               req->method, req->path_for_log, hr->status, jerr.text);
      resp.errmsg = msg;
      finish(req, &resp);
      return;
    }
  }

  if (hr->status >= 200 && hr->status < 300) {
    resp.result = GRAPH_OK;
    resp.body = body;
    finish(req, &resp);
    json_decref(body);
    return;
  }

  decode_error(req, hr->status, body, &resp.code, msg, sizeof(msg));
  if (hr->status == 401 && !req->refreshed) {
    /* The token was refused (expired early, revoked): one fresh token and
     * one more try. */
    log_info("graph: token refused, refreshing tenant=%s status=401 "
             "code=%s",
             req->graph->tenant->name, resp.code);
    auth_invalidate(req->graph->auth, AUTH_RESOURCE_GRAPH, req->token);
    req->refreshed = 1;
    json_decref(body);
    start(req);
    return;
  }
  resp.result = GRAPH_ERR_HTTP;
  resp.errmsg = msg;
  resp.body = body;
  finish(req, &resp);
  json_decref(body);
}

static void
send_with_token(struct graph_req *req, const char *token)
{
  struct graph *graph = req->graph;
  const char *headers[GRAPH_MAX_HEADERS + 4];
  char *auth_header = NULL;
  size_t n = 0, len;
  int rc;

  if (req->token != NULL) {
    explicit_bzero(req->token, strlen(req->token));
    free(req->token);
  }
  req->token = strdup(token);
  len = strlen(token) + sizeof("Authorization: Bearer ");
  auth_header = malloc(len);
  if (req->token == NULL || auth_header == NULL) {
    struct graph_response resp = {.result = GRAPH_ERR_AUTH,
                                  .errmsg = "out of memory"};
    free(auth_header);
    finish(req, &resp);
    return;
  }
  snprintf(auth_header, len, "Authorization: Bearer %s", token);
  headers[n++] = auth_header;
  headers[n++] = "Accept: application/json";
  if (req->body != NULL)
    headers[n++] = "Content-Type: application/json";
  for (int i = 0; req->headers[i] != NULL; i++)
    headers[n++] = req->headers[i];
  headers[n] = NULL;

  struct http_request hreq = {
      .method = req->method,
      .url = req->url,
      .headers = headers,
      .body = req->body,
      .body_len = req->body != NULL ? strlen(req->body) : 0,
      .ca_file = graph->tenant->ca_file,
      .gate = graph->gate,
  };
  rc = http_send(graph->http, &hreq, on_http, req);
  explicit_bzero(auth_header, len);
  free(auth_header);
  if (rc != 0) {
    struct graph_response resp = {.result = GRAPH_ERR_NETWORK,
                                  .errmsg = "cannot start HTTP request"};
    finish(req, &resp);
  }
}

int
graph_get(struct graph *graph, const char *url, const char *const *headers,
          graph_done_fn done, void *ctx)
{
  return graph_request(graph, "GET", url, NULL, headers, done, ctx);
}

int
graph_request(struct graph *graph, const char *method, const char *url,
              const json_t *body, const char *const *headers,
              graph_done_fn done, void *ctx)
{
  struct graph_req *req;
  const char *base = graph->tenant->graph_url;
  size_t n;

  if (url[0] != '/' && !graph_url_is_under(base, url)) {
    log_error("graph: refusing a URL outside the tenant's Graph host "
              "tenant=%s graph_url=%s",
              graph->tenant->name, base);
    return -1;
  }
  req = calloc(1, sizeof(*req));
  if (req == NULL)
    return -1;
  req->method = strdup(method);
  if (req->method == NULL)
    goto fail;
  if (body != NULL) {
    req->body = json_dumps(body, JSON_COMPACT);
    if (req->body == NULL)
      goto fail;
  }
  if (url[0] == '/') {
    n = strlen(base) + strlen(url) + 1;
    req->url = malloc(n);
    if (req->url != NULL)
      snprintf(req->url, n, "%s%s", base, url);
  } else {
    req->url = strdup(url);
  }
  if (req->url == NULL)
    goto fail;
  n = strcspn(req->url, "?");
  req->path_for_log = strndup(req->url + strlen(base), n - strlen(base));
  if (req->path_for_log == NULL)
    goto fail;
  for (int i = 0; headers != NULL && headers[i] != NULL; i++) {
    if (i == GRAPH_MAX_HEADERS)
      goto fail;
    req->headers[i] = strdup(headers[i]);
    if (req->headers[i] == NULL)
      goto fail;
  }
  req->done = done;
  req->ctx = ctx;
  req->graph = graph;
  req->next = graph->reqs;
  if (graph->reqs != NULL)
    graph->reqs->prev = req;
  graph->reqs = req;
  start(req);
  return 0;

fail:
  req_free(req);
  return -1;
}

const char *
graph_delta_item_id(const json_t *item)
{
  json_t *id = json_object_get(item, "id");

  if (!json_is_object(item) || !json_is_string(id) ||
      json_string_length(id) == 0 || json_string_length(id) > 128)
    return NULL;
  return json_string_value(id);
}

int
graph_delta_page_parse(json_t *body, struct graph_delta_page *page, char *err,
                       size_t errlen)
{
  json_t *value, *next, *delta, *item;
  size_t i;

  memset(page, 0, sizeof(*page));
  if (!json_is_object(body)) {
    snprintf(err, errlen, "delta page is not a JSON object");
    return -1;
  }
  value = json_object_get(body, "value");
  if (!json_is_array(value)) {
    snprintf(err, errlen, "delta page has no \"value\" array");
    return -1;
  }
  /* The service always sends an id, but Microsoft's own samples do not:
   * an item without one cannot be stored, so it is counted and skipped
   * rather than failing the whole page. */
  json_array_foreach(value, i, item)
  {
    if (graph_delta_item_id(item) == NULL)
      page->skipped++;
  }
  next = json_object_get(body, "@odata.nextLink");
  delta = json_object_get(body, "@odata.deltaLink");
  if ((next != NULL && !json_is_string(next)) ||
      (delta != NULL && !json_is_string(delta))) {
    snprintf(err, errlen, "delta page link is not a string");
    return -1;
  }
  if ((next == NULL) == (delta == NULL)) {
    snprintf(err, errlen, "delta page has %s",
             next == NULL ? "neither @odata.nextLink nor @odata.deltaLink"
                          : "both @odata.nextLink and @odata.deltaLink");
    return -1;
  }
  page->items = value;
  page->next_link = json_string_value(next);
  page->delta_link = json_string_value(delta);
  return 0;
}

json_t *
graph_delta_merge(const json_t *stored, const json_t *item, int replace,
                  int *removed)
{
  json_t *merged, *value, *rm;
  const char *key;

  if (!json_is_object(item))
    return NULL;
  rm = json_object_get(item, "@removed");
  if (rm != NULL) {
    const char *reason = json_string_value(json_object_get(rm, "reason"));
    /* "deleted" is final; "changed" (soft delete) and anything unknown
     * are treated as restorable, the less destructive reading. */
    *removed = (reason != NULL && strcmp(reason, "deleted") == 0)
                   ? GRAPH_REMOVED_DELETED
                   : GRAPH_REMOVED_CHANGED;
    return json_is_object(stored) ? json_deep_copy(stored) : json_object();
  }

  *removed = GRAPH_PRESENT;
  merged = (replace || !json_is_object(stored)) ? json_object()
                                                : json_deep_copy(stored);
  if (merged == NULL)
    return NULL;
  /* jansson's iteration macro wants a non-const object; it only reads. */
  json_object_foreach((json_t *)item, key, value)
  {
    if (strcmp(key, "id") == 0 || strncmp(key, "@odata.", 7) == 0)
      continue;
    if (json_is_null(value)) {
      json_object_del(merged, key);
    } else if (json_object_set(merged, key, value) != 0) {
      json_decref(merged);
      return NULL;
    }
  }
  return merged;
}

int
graph_delta_needs_resync(const struct graph_response *resp)
{
  if (resp->result != GRAPH_ERR_HTTP)
    return 0;
  if (resp->status == 410)
    return 1;
  return strcasecmp(resp->code, "syncStateNotFound") == 0 ||
         strcasecmp(resp->code, "resyncRequired") == 0;
}

/* --- target-side user operations --- */

struct call {
  struct graph *graph;
  graph_find_fn find;
  graph_id_fn id;
  graph_done_fn done;
  graph_members_fn members_done;
  void *ctx;
  char *anchor_attr;
  json_t *members;
};

static struct call *
call_new(struct graph *graph, void *ctx)
{
  struct call *c = calloc(1, sizeof(*c));
  if (c != NULL) {
    c->graph = graph;
    c->ctx = ctx;
  }
  return c;
}

static void
call_free(struct call *c)
{
  free(c->anchor_attr);
  json_decref(c->members);
  free(c);
}

char *
graph_odata_quote(const char *value)
{
  size_t n = 3;
  char *out, *p;

  for (const char *s = value; *s != '\0'; s++)
    n += (*s == '\'') ? 2 : 1;
  out = malloc(n);
  if (out == NULL)
    return NULL;
  p = out;
  *p++ = '\'';
  for (const char *s = value; *s != '\0'; s++) {
    *p++ = *s;
    if (*s == '\'')
      *p++ = '\'';
  }
  *p++ = '\'';
  *p = '\0';
  return out;
}

static int
is_anchor_attr(const char *attr)
{
  return strncmp(attr, "extensionAttribute", 18) == 0;
}

static void
on_find(void *ctx, const struct graph_response *resp)
{
  struct call *c = ctx;
  struct graph_user_ref ref = {0};
  json_t *value = json_object_get(resp->body, "value"), *u;
  struct graph_response r = *resp;

  if (resp->result != GRAPH_OK) {
    c->find(c->ctx, resp, NULL);
    call_free(c);
    return;
  }
  if (!json_is_array(value)) {
    r.result = GRAPH_ERR_PROTOCOL;
    r.errmsg = "users query answer has no \"value\" array";
    c->find(c->ctx, &r, NULL);
    call_free(c);
    return;
  }
  u = json_array_get(value, 0);
  if (u == NULL || !json_is_string(json_object_get(u, "id"))) {
    c->find(c->ctx, resp, NULL);
    call_free(c);
    return;
  }
  ref.id = json_string_value(json_object_get(u, "id"));
  ref.mail = json_string_value(json_object_get(u, "mail"));
  ref.user_type = json_string_value(json_object_get(u, "userType"));
  ref.creation_type = json_string_value(json_object_get(u, "creationType"));
  ref.display_name = json_string_value(json_object_get(u, "displayName"));
  if (c->anchor_attr != NULL)
    ref.anchor = json_string_value(json_object_get(
        json_object_get(u, "onPremisesExtensionAttributes"), c->anchor_attr));
  c->find(c->ctx, resp, &ref);
  call_free(c);
}

int
graph_user_find(struct graph *graph, const char *attr, const char *value,
                const char *anchor_attr, graph_find_fn done, void *ctx)
{
  struct call *c = call_new(graph, ctx);
  char *quoted = NULL, *filter = NULL, *encoded = NULL, *url = NULL;
  static const char *const eventual[] = {"ConsistencyLevel: eventual", NULL};
  int advanced = is_anchor_attr(attr);
  size_t n;
  int rc = -1;

  if (c == NULL)
    return -1;
  c->find = done;
  if (anchor_attr != NULL && (c->anchor_attr = strdup(anchor_attr)) == NULL)
    goto out;
  quoted = graph_odata_quote(value);
  if (quoted == NULL)
    goto out;
  n = strlen(attr) + strlen(quoted) + 64;
  filter = malloc(n);
  if (filter == NULL)
    goto out;
  snprintf(filter, n, "%s%s eq %s",
           advanced ? "onPremisesExtensionAttributes/" : "", attr, quoted);
  encoded = http_urlencode(filter);
  if (encoded == NULL)
    goto out;
  n = strlen(encoded) + 256;
  url = malloc(n);
  if (url == NULL)
    goto out;
  snprintf(url, n,
           "/v1.0/users?$filter=%s%s&$select=id,mail,userType,creationType,"
           "displayName,onPremisesExtensionAttributes",
           encoded, advanced ? "&$count=true" : "");
  rc = graph_request(graph, "GET", url, NULL, advanced ? eventual : NULL,
                     on_find, c);
out:
  free(quoted);
  free(filter);
  free(encoded);
  free(url);
  if (rc != 0)
    call_free(c);
  return rc;
}

static void
on_invite(void *ctx, const struct graph_response *resp)
{
  struct call *c = ctx;
  const char *id = json_string_value(
      json_object_get(json_object_get(resp->body, "invitedUser"), "id"));
  struct graph_response r = *resp;

  if (resp->result == GRAPH_OK && id == NULL) {
    r.result = GRAPH_ERR_PROTOCOL;
    r.errmsg = "invitation answer has no invitedUser.id";
  }
  c->id(c->ctx, &r, r.result == GRAPH_OK ? id : NULL);
  call_free(c);
}

int
graph_invite(struct graph *graph, const char *mail, const char *display_name,
             int as_member, graph_id_fn done, void *ctx)
{
  struct call *c = call_new(graph, ctx);
  json_t *body;
  int rc;

  if (c == NULL)
    return -1;
  c->id = done;
  body = json_pack("{s:s, s:s, s:b, s:s}", "invitedUserEmailAddress", mail,
                   "inviteRedirectUrl", "https://myapplications.microsoft.com",
                   "sendInvitationMessage", 0, "invitedUserType",
                   as_member ? "Member" : "Guest");
  if (body != NULL && display_name != NULL)
    json_object_set_new(body, "invitedUserDisplayName",
                        json_string(display_name));
  rc = body == NULL ? -1
                    : graph_request(graph, "POST", "/v1.0/invitations", body,
                                    NULL, on_invite, c);
  json_decref(body);
  if (rc != 0)
    call_free(c);
  return rc;
}

static void
on_plain(void *ctx, const struct graph_response *resp)
{
  struct call *c = ctx;
  c->done(c->ctx, resp);
  call_free(c);
}

/* METHOD prefix + id + suffix, e.g. "/v1.0/users/" id "". */
static int
user_call(struct graph *graph, const char *method, const char *prefix,
          const char *id, const char *suffix, const json_t *body,
          graph_done_fn done, void *ctx)
{
  struct call *c;
  char url[512];
  int rc;

  /* Object ids are GUIDs; anything else must not reach a URL. */
  for (const char *p = id; *p != '\0'; p++) {
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
          (*p >= 'A' && *p <= 'F') || *p == '-'))
      return -1;
  }
  if (strlen(id) > 64)
    return -1;
  c = call_new(graph, ctx);
  if (c == NULL)
    return -1;
  c->done = done;
  snprintf(url, sizeof(url), "%s%s%s", prefix, id, suffix);
  rc = graph_request(graph, method, url, body, NULL, on_plain, c);
  if (rc != 0)
    call_free(c);
  return rc;
}

int
graph_user_patch(struct graph *graph, const char *user_id, const json_t *attrs,
                 graph_done_fn done, void *ctx)
{
  json_t *body = json_object(), *ext = json_object(), *v;
  const char *key;
  int beta = 0, rc = -1;

  if (body == NULL || ext == NULL)
    goto out;
  json_object_foreach((json_t *)attrs, key, v)
  {
    if (is_anchor_attr(key))
      json_object_set(ext, key, v);
    else
      json_object_set(body, key, v);
    if (strcmp(key, "showInAddressList") == 0)
      beta = 1;
  }
  if (json_object_size(ext) > 0)
    json_object_set(body, "onPremisesExtensionAttributes", ext);
  rc = user_call(graph, "PATCH", beta ? "/beta/users/" : "/v1.0/users/",
                 user_id, "", body, done, ctx);
out:
  json_decref(body);
  json_decref(ext);
  return rc;
}

int
graph_user_delete(struct graph *graph, const char *user_id, graph_done_fn done,
                  void *ctx)
{
  return user_call(graph, "DELETE", "/v1.0/users/", user_id, "", NULL, done,
                   ctx);
}

int
graph_user_restore(struct graph *graph, const char *user_id,
                   graph_done_fn done, void *ctx)
{
  return user_call(graph, "POST", "/v1.0/directory/deletedItems/", user_id,
                   "/restore", NULL, done, ctx);
}

static void
on_members(void *ctx, const struct graph_response *resp)
{
  struct call *c = ctx;
  json_t *value = json_object_get(resp->body, "value"), *item;
  const char *next;
  size_t i;
  struct graph_response r = *resp;

  if (resp->result != GRAPH_OK)
    goto done;
  if (!json_is_array(value)) {
    r.result = GRAPH_ERR_PROTOCOL;
    r.errmsg = "transitiveMembers answer has no \"value\" array";
    goto done;
  }
  json_array_foreach(value, i, item)
  {
    const char *id = json_string_value(json_object_get(item, "id"));
    if (id != NULL)
      json_object_set_new(c->members, id, json_true());
  }
  next = json_string_value(json_object_get(resp->body, "@odata.nextLink"));
  if (next != NULL) {
    if (graph_request(c->graph, "GET", next, NULL, NULL, on_members, c) == 0)
      return;
    r.result = GRAPH_ERR_PROTOCOL;
    r.errmsg = "transitiveMembers nextLink outside the tenant's Graph host";
  }
done:
  c->members_done(c->ctx, &r, r.result == GRAPH_OK ? c->members : NULL);
  call_free(c);
}

int
graph_group_members(struct graph *graph, const char *group_id,
                    graph_members_fn done, void *ctx)
{
  struct call *c = call_new(graph, ctx);
  char url[256];
  int rc;

  if (c == NULL)
    return -1;
  c->members_done = done;
  c->members = json_object();
  for (const char *p = group_id; *p != '\0'; p++) {
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == '-')) {
      call_free(c);
      return -1;
    }
  }
  snprintf(url, sizeof(url),
           "/v1.0/groups/%.64s/transitiveMembers?$select=id&$top=999",
           group_id);
  rc = c->members == NULL
           ? -1
           : graph_request(graph, "GET", url, NULL, NULL, on_members, c);
  if (rc != 0)
    call_free(c);
  return rc;
}

int
graph_error_transient(const struct graph_response *resp)
{
  switch (resp->result) {
  case GRAPH_OK:
    return 0;
  case GRAPH_ERR_NETWORK:
  case GRAPH_ERR_CANCELLED:
    return 1;
  case GRAPH_ERR_AUTH:
    return !resp->auth_permanent;
  case GRAPH_ERR_PROTOCOL:
    return 1;
  default:
    return resp->status == 408 || resp->status == 429 || resp->status >= 500;
  }
}
