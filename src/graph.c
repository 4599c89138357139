/*
 * graph — the client: see include/graph.h for the module's contract.
 *
 * The module is four files sharing src/graph_int.h: this one (requests,
 * tokens, decoding answers and errors, what a request costs),
 * graph_delta.c (users/delta pages and what they make), graph_batch.c
 * ($batch bodies and answers, and the batcher) and graph_users.c (the
 * target-side user operations: lookups, invitations, PATCH, DELETE).
 *
 * A request's life: graph_get() → token (cached, or asked of auth) →
 * http_send() → on_http(): decode, and on a token refusal (a 401, or
 * InvalidAuthenticationToken: graph_error_class()) invalidate the token
 * and go round again with a fresh one, up to TOKEN_RETRIES times; past
 * that the answer goes back as a token problem, which is never a
 * permanent failure. Requests in flight sit on a list so graph_free() can
 * cancel them; a cancelled request is detached (req->graph = NULL) and freed
 * when the http or auth callback it waits for comes back.
 *
 * Tokens: a request (a batch too) takes a token before it is handed to
 * http, but http asks authorize() again as each attempt actually leaves,
 * since pacing or a closed gate can hold it longer than a token lives.
 * A 401 on a token that was no longer fresh when it left is retried
 * (STALE_RETRIES) without counting as the one refresh that a 401 on a
 * fresh token gets before it is final.
 *
 * Every URL graph builds (graph_url_build) is as long as what it holds,
 * up to GRAPH_URL_MAX: never cut.
 */
#include "graph_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "text.h"

/* Retries of a request refused with 401 because the token it carried
 * was past its prime when it left (see authorize()). */
#define STALE_RETRIES 3
/* Fresh tokens a request (a $batch, an inner request of one) gets after
 * its token was refused before the refusal goes back to the caller: as a
 * token problem, transient, so its op is tried again later (tokens can be
 * revoked again and again while a tenant's sessions are reset). */
#define TOKEN_RETRIES 3

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
  graph_gate_name(tenant, graph->gate, sizeof(graph->gate));
  return graph;
}

void
graph_gate_name(const struct config_tenant *tenant, char *buf, size_t len)
{
  snprintf(buf, len, "%s/%s/graph", tenant->tenant_id, tenant->client_id);
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
  text_wipe_free(req->token);
  text_wipe_free(req->auth_line);
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

  if (req->token_out != NULL) {
    *req->token_out = req->token;
    req->token = NULL;
  }
  if (req->stale_out != NULL)
    *req->stale_out = req->stale;
  req_unlink(req);
  req_free(req);
  graph_answer(done, ctx, resp);
}

void
graph_answer(graph_done_fn done, void *ctx, struct graph_response *resp)
{
  if (resp->code == NULL)
    resp->code = "";
  if (resp->errmsg == NULL)
    resp->errmsg = "";
  resp->transient = graph_error_transient(resp);
  done(ctx, resp);
}

void
graph_free(struct graph *graph)
{
  if (graph == NULL)
    return;
  /* Callbacks may ask for more: those go out plain (freeing is set) and
   * are cancelled in turn. */
  graph->freeing = 1;
  do {
    graph_batcher_cancel(graph);
    while (graph->reqs != NULL) {
      struct graph_req *req = graph->reqs;
      struct graph_response resp = {.result = GRAPH_ERR_CANCELLED,
                                    .errmsg = "cancelled"};
      graph_done_fn done = req->done;
      void *ctx = req->ctx;
      /* Detach only: the http or auth callback still to come frees it. */
      req_unlink(req);
      resp.transient = 1;
      done(ctx, &resp);
    }
  } while (graph->queue != NULL || graph->delayed != NULL);
  graph_batcher_close(graph);
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

/* A new string of printf-style `fmt`, as long as what it holds, or NULL
 * on allocation failure or when it would be longer than GRAPH_URL_MAX
 * bytes (logged, without the text: it may hold an address). */
char *
graph_url_build(const char *fmt, ...)
{
  va_list ap;
  char *s;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return NULL;
  if (n > GRAPH_URL_MAX) {
    log_warning("graph: refusing to build a URL over %d bytes length=%d",
                GRAPH_URL_MAX, n);
    return NULL;
  }
  s = malloc((size_t)n + 1);
  if (s == NULL)
    return NULL;
  va_start(ap, fmt);
  (void)vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
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

void
graph_req_start(struct graph_req *req)
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

/* A token refusal (graph_error_class() HTTP_CLASS_TOKEN) of a request,
 * a $batch or an inner request that left with `token`: whether to go
 * again with a fresh one, counting the try. A token that left in the last
 * part of its life (or past it: no fresh one could be had then) says
 * nothing about our credentials: it is retried up to STALE_RETRIES times
 * without counting as a refresh; a fresh token refused (expired early,
 * revoked) gets TOKEN_RETRIES fresh ones. */
int
graph_token_retry(struct graph *graph, const char *token, int stale,
                  int *stale_retries, int *refreshed, long status,
                  const char *code)
{
  if (stale && *stale_retries < STALE_RETRIES) {
    log_debug("graph: token expired on the way, retrying tenant=%s "
              "status=%ld code=%s",
              graph->tenant->name, status, code);
    (*stale_retries)++;
  } else if (*refreshed < TOKEN_RETRIES) {
    log_info("graph: token refused, refreshing tenant=%s status=%ld "
             "code=%s try=%d",
             graph->tenant->name, status, code, *refreshed + 1);
    (*refreshed)++;
  } else {
    return 0;
  }
  auth_invalidate(graph->auth, AUTH_RESOURCE_GRAPH, token);
  return 1;
}

/* Fill code and errmsg from a Graph error body (or whatever came). */
void
graph_describe_error(const char *method, const char *path, long status,
                     json_t *body, const char **code, char *msg, size_t msglen)
{
  json_t *err = json_object_get(body, "error");
  const char *c = json_string_value(json_object_get(err, "code"));
  const char *m = json_string_value(json_object_get(err, "message"));

  *code = c != NULL ? c : "";
  if (msglen == 0)
    return;
  snprintf(msg, msglen, "%s %s: HTTP %ld%s%s%s%.300s", method, path, status,
           *code[0] ? " " : "", *code, m ? ": " : "", m ? m : "");
  /* Cut by bytes (the message at 300, the whole at msglen): never inside
   * a character, since the text goes into JSON too (status shows an op's
   * last error, and JSON takes only valid UTF-8). */
  msg[text_utf8_valid_prefix(msg, strlen(msg))] = '\0';
}

static void
decode_error(const struct graph_req *req, long status, json_t *body,
             const char **code, char *msg, size_t msglen)
{
  graph_describe_error(req->method, req->path_for_log, status, body, code, msg,
                       msglen);
}

/* A body jansson refused, decoded again with each value it cannot take
 * marked (graph_json_mark_bad); NULL when it still does not decode (jerr
 * then says why) or on allocation failure. */
static json_t *
load_marked(const struct graph_req *req, const struct http_response *hr,
            json_error_t *jerr)
{
  size_t len, marks;
  char *text = graph_json_mark_bad(hr->body, hr->body_len, &len, &marks);
  json_t *body;

  if (text == NULL || marks == 0) {
    free(text);
    return NULL;
  }
  body = json_loadb(text, len, JSON_ALLOW_NUL, jerr);
  free(text);
  if (body != NULL)
    log_debug("graph: values refused in an answer, marked tenant=%s "
              "path=%s marks=%zu",
              req->graph->tenant->name, req->path_for_log, marks);
  return body;
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
  resp.sent_ns = hr->sent_ns;
  resp.location = http_response_header(hr, "Location");
  msg[0] = '\0';

  if (hr->error != HTTP_OK) {
    resp.result = hr->error == HTTP_ERR_CANCELLED   ? GRAPH_ERR_CANCELLED
                  : hr->error == HTTP_ERR_TOO_LARGE ? GRAPH_ERR_TOO_LARGE
                                                    : GRAPH_ERR_NETWORK;
    snprintf(msg, sizeof(msg), "%s %s: %s (after %d attempts)", req->method,
             req->path_for_log, hr->errmsg, hr->attempts);
    resp.errmsg = msg;
    finish(req, &resp);
    return;
  }

  if (req->raw && hr->status >= 200 && hr->status < 300) {
    resp.result = GRAPH_OK;
    resp.raw = hr->body;
    resp.raw_len = hr->body_len;
    resp.content_type = http_response_header(hr, "Content-Type");
    finish(req, &resp);
    return;
  }

  if (hr->body_len > 0) {
    body = json_loadb(hr->body, hr->body_len,
                      req->tolerant ? JSON_ALLOW_NUL : 0, &jerr);
    if (body == NULL && req->tolerant && hr->status >= 200 && hr->status < 300)
      body = load_marked(req, hr, &jerr);
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
  resp.result = GRAPH_ERR_HTTP;
  if (graph_error_class(&resp) == HTTP_CLASS_TOKEN &&
      graph_token_retry(req->graph, req->token, req->stale,
                        &req->stale_retries, &req->refreshed, hr->status,
                        resp.code)) {
    json_decref(body);
    graph_req_start(req);
    return;
  }
  resp.errmsg = msg;
  resp.body = body;
  finish(req, &resp);
  json_decref(body);
}

/* What a plain request costs against the tenant's write budget: one
 * directory write for PATCH, POST and DELETE (throttling-limits.md: every
 * write costs 1), and one invitation for POST .../invitations. */
static unsigned
budget_writes(const char *method)
{
  return strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;
}

unsigned
graph_budget_invitations(const char *method, const char *url)
{
  const char *q = strchr(url, '?');
  size_t n = q != NULL ? (size_t)(q - url) : strlen(url);
  static const char tail[] = "/invitations";

  return strcmp(method, "POST") == 0 && n >= sizeof(tail) - 1 &&
         memcmp(url + n - (sizeof(tail) - 1), tail, sizeof(tail) - 1) == 0;
}

/* The path after the version ("users/delta"), its length, and the query
 * string after '?' (or NULL). */
static const char *
units_path(const char *url, size_t *len, const char **query)
{
  const char *p = url, *q;

  if (strstr(p, "://") != NULL) { /* absolute: skip the authority */
    p = strchr(strstr(p, "://") + 3, '/');
    if (p == NULL)
      p = "";
  }
  if (strncmp(p, "/v1.0/", 6) == 0)
    p += 6;
  else if (strncmp(p, "/beta/", 6) == 0)
    p += 6;
  else if (*p == '/')
    p++;
  q = strchr(p, '?');
  *len = q != NULL ? (size_t)(q - p) : strlen(p);
  *query = q != NULL ? q + 1 : NULL;
  return p;
}

/* Whether query parameter `key` (its text up to '=' or '&') is `name`,
 * with the '$' written as is or as %24. */
static int
is_param(const char *key, size_t n, const char *name)
{
  size_t len = strlen(name);

  if (n > 3 && strncasecmp(key, "%24", 3) == 0) {
    key += 3;
    n -= 3;
    name++;
    len--;
  }
  return n == len && strncmp(key, name, len) == 0;
}

/* Whether the path is groups/{id}/<tail>, a type cast after it allowed. */
static int
group_path(const char *p, size_t len, const char *tail)
{
  const char *id, *rest, *end = p + len;
  size_t tl = strlen(tail);

  if (len < 7 || strncmp(p, "groups/", 7) != 0)
    return 0;
  id = p + 7;
  rest = memchr(id, '/', (size_t)(end - id));
  if (rest == NULL || rest == id || (size_t)(end - rest - 1) < tl ||
      strncmp(rest + 1, tail, tl) != 0)
    return 0;
  return rest + 1 + tl == end || rest[1 + tl] == '/';
}

unsigned
graph_request_units(const char *method, const char *url)
{
  const char *path, *query, *k;
  size_t len;
  int cost = 1;

  if (method == NULL || url == NULL)
    return 1;
  path = units_path(url, &len, &query);
  if (strcmp(method, "GET") == 0) {
    if ((len == 5 && strncmp(path, "users", 5) == 0) ||
        (len == 12 && strncmp(path, "applications", 12) == 0))
      cost = 2;
    else if (group_path(path, len, "members"))
      cost = 3;
    else if (group_path(path, len, "transitiveMembers"))
      cost = 5;
  }
  for (k = query; k != NULL && *k != '\0';) {
    size_t n = strcspn(k, "=&");
    const char *v = k[n] == '=' ? k + n + 1 : NULL;

    if (is_param(k, n, "$select"))
      cost--;
    else if (is_param(k, n, "$expand"))
      cost++;
    else if (is_param(k, n, "$top") && v != NULL) {
      char *e;
      long top;

      errno = 0;
      top = strtol(v, &e, 10);
      if (e != v && (*e == '&' || *e == '\0') && errno == 0 && top < 20)
        cost--;
    }
    k = strchr(k, '&');
    if (k != NULL)
      k++;
  }
  return cost < 1 ? 1u : (unsigned)cost;
}

/* http's authorization hook: the token current as the request actually
 * leaves, which may be long after send_with_token() (budget pacing, a
 * closed gate). Whether it is still fresh is noted for on_http. */
static const char *
authorize(void *ctx)
{
  struct graph_req *req = ctx;
  const char *token;
  char *t, *line;
  size_t len;
  int fresh = 0;

  if (req->graph == NULL)
    return NULL; /* cancelled: it goes nowhere useful anyway */
  token = auth_current(req->graph->auth, AUTH_RESOURCE_GRAPH, &fresh);
  req->stale = !fresh;
  if (token == NULL)
    return NULL; /* none valid now: the one it has, then on_http */
  if (req->token != NULL && req->auth_line != NULL &&
      strcmp(req->token, token) == 0)
    return req->auth_line;
  len = strlen(token) + sizeof("Authorization: Bearer ");
  t = strdup(token);
  line = malloc(len);
  if (t == NULL || line == NULL) {
    free(t);
    free(line);
    req->stale = 1;
    return NULL;
  }
  snprintf(line, len, "Authorization: Bearer %s", token);
  text_wipe_free(req->token);
  text_wipe_free(req->auth_line);
  req->token = t;
  req->auth_line = line;
  return line;
}

/* http's inner_wait hook of a $batch, called as its answer's body is
 * complete, before the connection can carry another request: how long
 * the throttled answers inside ask the gate to wait (graph_batch_wait),
 * so that http closes the gate at once (DESIGN.md invariant 7). Only
 * reads; sub_answer() acts on the answer later. */
static double
batch_inner_wait(void *ctx, const char *body, size_t len)
{
  struct graph_req *req = ctx;
  json_t *answer;
  double wait;

  if (req->graph == NULL)
    return -1;
  answer = json_loadb(body, len, 0, NULL);
  wait = graph_batch_wait(answer);
  json_decref(answer);
  return wait;
}

static void
send_with_token(struct graph_req *req, const char *token)
{
  struct graph *graph = req->graph;
  const char *headers[GRAPH_MAX_HEADERS + 4];
  char *auth_header = NULL;
  size_t n = 0, len;
  int rc;

  /* The token and its header line go together: authorize() hands the
   * line out again while the token is still the current one. */
  text_wipe_free(req->token);
  text_wipe_free(req->auth_line);
  req->auth_line = NULL;
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
  req->auth_line = auth_header;
  headers[n++] = auth_header;
  if (!req->raw)
    headers[n++] = "Accept: application/json";
  if (req->body != NULL && !req->raw)
    headers[n++] = "Content-Type: application/json";
  for (int i = 0; req->headers[i] != NULL; i++)
    headers[n++] = req->headers[i];
  headers[n] = NULL;

  struct http_request hreq = {
      .method = req->method,
      .url = req->url,
      .headers = headers,
      .body = req->body,
      .body_len = req->raw            ? req->raw_len
                  : req->body != NULL ? strlen(req->body)
                                      : 0,
      .ca_file = graph->tenant->ca_file,
      .gate = graph->gate,
      .writes = req->cost_set ? req->writes : budget_writes(req->method),
      .invitations = req->cost_set
                         ? req->invitations
                         : graph_budget_invitations(req->method, req->url),
      .units = req->cost_set ? req->units
                             : graph_request_units(req->method, req->url),
      .authorization = authorize,
      .inner_wait = req->batch ? batch_inner_wait : NULL,
      .max_body = req->max_body,
  };
  rc = http_send(graph->http, &hreq, on_http, req);
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

/* A request ready to start (on the in-flight list), or NULL. */
struct graph_req *
graph_req_prepare(struct graph *graph, const char *method, const char *url,
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
    return NULL;
  }
  req = calloc(1, sizeof(*req));
  if (req == NULL)
    return NULL;
  req->method = strdup(method);
  if (req->method == NULL)
    goto out;
  if (body != NULL) {
    req->body = json_dumps(body, JSON_COMPACT);
    if (req->body == NULL)
      goto out;
  }
  req->url = url[0] == '/' ? graph_url_build("%s%s", base, url) : strdup(url);
  if (req->url == NULL)
    goto out;
  n = strcspn(req->url, "?");
  req->path_for_log = strndup(req->url + strlen(base), n - strlen(base));
  if (req->path_for_log == NULL)
    goto out;
  for (int i = 0; headers != NULL && headers[i] != NULL; i++) {
    if (i == GRAPH_MAX_HEADERS)
      goto out;
    req->headers[i] = strdup(headers[i]);
    if (req->headers[i] == NULL)
      goto out;
  }
  req->done = done;
  req->ctx = ctx;
  req->graph = graph;
  req->next = graph->reqs;
  if (graph->reqs != NULL)
    graph->reqs->prev = req;
  graph->reqs = req;
  return req;

out:
  req_free(req);
  return NULL;
}

struct graph_req *
graph_req_prepare_raw(struct graph *graph, const char *method, const char *url,
                      const void *data, size_t len, const char *const *headers,
                      size_t max_body, graph_done_fn done, void *ctx)
{
  struct graph_req *req =
      graph_req_prepare(graph, method, url, NULL, headers, done, ctx);

  if (req == NULL)
    return NULL;
  req->raw = 1;
  req->max_body = max_body;
  if (data != NULL) {
    req->body = malloc(len > 0 ? len : 1);
    if (req->body == NULL) {
      req_unlink(req);
      req_free(req);
      return NULL;
    }
    memcpy(req->body, data, len);
    req->raw_len = len;
  }
  return req;
}

int
graph_request(struct graph *graph, const char *method, const char *url,
              const json_t *body, const char *const *headers,
              graph_done_fn done, void *ctx)
{
  struct graph_req *req =
      graph_req_prepare(graph, method, url, body, headers, done, ctx);

  if (req == NULL)
    return -1;
  graph_req_start(req);
  return 0;
}

/* The length of url's scheme://host[:port], or 0 when it has none. */
static size_t
origin_len(const char *url)
{
  const char *p = strstr(url, "://");

  if (p == NULL || p == url)
    return 0;
  p += 3;
  return (size_t)(p - url) + strcspn(p, "/?#");
}

void
graph_url_origin(const char *url, char *buf, size_t len)
{
  snprintf(buf, len, "%.*s", (int)origin_len(url), url);
}

enum http_class
graph_error_class(const struct graph_response *resp)
{
  switch (resp->result) {
  case GRAPH_OK:
    return HTTP_CLASS_OK;
  case GRAPH_ERR_NETWORK:
  case GRAPH_ERR_CANCELLED:
  case GRAPH_ERR_PROTOCOL:
    return HTTP_CLASS_TRANSIENT;
  case GRAPH_ERR_TOO_LARGE:
    return HTTP_CLASS_PERMANENT;
  case GRAPH_ERR_AUTH:
    /* No token could be had: the credentials refused are for the admin
     * to fix; anything else (the token endpoint away) passes. */
    return resp->auth_permanent ? HTTP_CLASS_PERMANENT : HTTP_CLASS_TOKEN;
  default:
    if (resp->code != NULL &&
        strcasecmp(resp->code, "InvalidAuthenticationToken") == 0)
      return HTTP_CLASS_TOKEN;
    return http_status_class(resp->status);
  }
}

int
graph_error_transient(const struct graph_response *resp)
{
  enum http_class c = graph_error_class(resp);

  return c != HTTP_CLASS_OK && c != HTTP_CLASS_PERMANENT;
}
