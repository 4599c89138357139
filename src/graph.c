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
  char *url;
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
  free(req->url);
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
  snprintf(msg, msglen, "GET %s: HTTP %ld%s%s%s%.300s", req->path_for_log,
           status, *code[0] ? " " : "", *code, m ? ": " : "", m ? m : "");
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
    snprintf(msg, sizeof(msg), "GET %s: %s (after %d attempts)",
             req->path_for_log, hr->errmsg, hr->attempts);
    resp.errmsg = msg;
    finish(req, &resp);
    return;
  }

  if (hr->body_len > 0) {
    body = json_loadb(hr->body, hr->body_len, 0, &jerr);
    if (body == NULL && hr->status >= 200 && hr->status < 300) {
      resp.result = GRAPH_ERR_PROTOCOL;
      snprintf(msg, sizeof(msg), "GET %s: HTTP %ld with invalid JSON: %s",
               req->path_for_log, hr->status, jerr.text);
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
  for (int i = 0; req->headers[i] != NULL; i++)
    headers[n++] = req->headers[i];
  headers[n] = NULL;

  struct http_request hreq = {
      .method = "GET",
      .url = req->url,
      .headers = headers,
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
  json_array_foreach(value, i, item)
  {
    json_t *id = json_object_get(item, "id");
    if (!json_is_object(item)) {
      snprintf(err, errlen, "delta item %zu is not an object", i);
      return -1;
    }
    if (!json_is_string(id) || json_string_length(id) == 0 ||
        json_string_length(id) > 128) {
      snprintf(err, errlen, "delta item %zu has no valid \"id\"", i);
      return -1;
    }
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
