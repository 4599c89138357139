/*
 * graph — see include/graph.h.
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
 * The batcher (graph_batch_enable): a sub-request ("sub") waits in
 * graph->queue until the tick timer fires, then goes out in a batch of up
 * to GRAPH_BATCH_MAX subs of one version (v1.0 or beta), itself sent as an
 * ordinary graph_req to /{version}/$batch, so tokens, the outer 401 retry,
 * cancellation and http's retries of the whole batch are the plain
 * path's. A sub belongs to exactly one place at a time: the queue, the
 * delayed list (waiting out an inner Retry-After, sorted by due time, one
 * retry timer for all), a batch in flight, or a plain request in flight.
 * Every sub ends in sub_finish(), which calls its callback once.
 *
 * When to send, as Nagle's algorithm for TCP: a full batch goes at once;
 * a partial one (a lone sub goes as a plain request) goes on the next
 * tick only while no other partial one is in flight, else it waits for
 * that one's answer or for the queue to fill. A lone request is not
 * delayed, and a stream of them still travels several to a request,
 * paced by round trips. The same wait holds while invitations are in
 * flight (each is followed by a PATCH, which will want company). Either
 * wait lasts at most BATCH_LINGER_MS from the oldest queued sub: the
 * batch in flight may itself sit behind a closed gate, and what waits
 * here would then miss the gate's next opening.
 * Invitations ride in batches like the rest; a batch's budget cost is
 * its writes and, among them, its invitations.
 *
 * Tokens: a request (a batch too) takes a token before it is handed to
 * http, but http asks authorize() again as each attempt actually leaves,
 * since pacing or a closed gate can hold it longer than a token lives.
 * A 401 on a token that was no longer fresh when it left is retried
 * (STALE_RETRIES) without counting as the one refresh that a 401 on a
 * fresh token gets before it is final.
 */
#include "graph.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "anchor.h"
#include "log.h"
#include "retry.h"

#define GRAPH_MAX_HEADERS 8
#define GRAPH_ERRMSG_MAX 512
/* Inner 429/503/504 retries of one sub-request, and their bounds. */
#define SUB_MAX_RETRIES 5
#define SUB_BACKOFF_BASE_MS 500
#define SUB_BACKOFF_CAP_MS 60000
#define SUB_MAX_RETRY_AFTER 300.0
/* How long a partial batch may wait for company while invitations are in
 * flight (each one is followed by a PATCH). */
#define BATCH_LINGER_MS 1000
/* Retries of a request refused with 401 because the token it carried
 * was past its prime when it left (see authorize()). */
#define STALE_RETRIES 3
/* Fresh tokens a request (a $batch, an inner request of one) gets after
 * its token was refused before the refusal goes back to the caller: as a
 * token problem, transient, so its op is tried again later (tokens can be
 * revoked again and again while a tenant's sessions are reset). */
#define TOKEN_RETRIES 3

struct graph_req {
  struct graph *graph; /* NULL once cancelled */
  struct graph_req *next, *prev;
  char *method;
  char *url;
  char *body;         /* JSON text or NULL */
  char *path_for_log; /* url without its query string */
  char *headers[GRAPH_MAX_HEADERS + 1];
  char *token;       /* the token the request was sent with */
  char *auth_line;   /* "Authorization: Bearer <token>" */
  int refreshed;     /* fresh tokens it got after a refusal */
  int batch;         /* a $batch: its answer carries answers (inner_wait) */
  int stale;         /* the last attempt left with a token not fresh */
  int stale_retries; /* 401s retried because of that */
  int *stale_out;    /* if set, gets `stale` at the end */
  int cost_set;      /* writes/invitations/units below, not guessed ($batch) */
  int tolerant;      /* graph_delta_get(): refused values are marked */
  unsigned writes, invitations, units;
  char **token_out; /* if set, gets the token (ownership) at the end */
  graph_done_fn done;
  void *ctx;
};

struct sub;

struct graph {
  struct http *http;
  struct auth *auth;
  const struct config_tenant *tenant;
  char gate[160];
  struct graph_req *reqs;
  /* the batcher; loop is NULL until graph_batch_enable() */
  uv_loop_t *loop;
  uv_timer_t *tick, *retry;
  struct sub *queue, *queue_tail;
  struct sub *delayed; /* sorted by due */
  size_t queued[2];    /* subs in the queue, by version (1: beta) */
  size_t writes[2];    /* of which writes (not GET) */
  int partials;        /* batches of fewer than GRAPH_BATCH_MAX in flight */
  int invites;         /* invitations in flight */
  int freeing;
};

static void send_with_token(struct graph_req *req, const char *token);
static void batcher_cancel(struct graph *graph);
static void batcher_close(struct graph *graph);

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

/* Free a string that may hold a token, wiping it first. */
static void
wipe_free(char *s)
{
  if (s != NULL) {
    explicit_bzero(s, strlen(s));
    free(s);
  }
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
  wipe_free(req->token);
  wipe_free(req->auth_line);
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
    batcher_cancel(graph);
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
  batcher_close(graph);
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

/* A token refusal (graph_error_class() HTTP_CLASS_TOKEN) of a request,
 * a $batch or an inner request that left with `token`: whether to go
 * again with a fresh one, counting the try. A token that left in the last
 * part of its life (or past it: no fresh one could be had then) says
 * nothing about our credentials: it is retried up to STALE_RETRIES times
 * without counting as a refresh; a fresh token refused (expired early,
 * revoked) gets TOKEN_RETRIES fresh ones. */
static int
token_retry(struct graph *graph, const char *token, int stale,
            int *stale_retries, int *refreshed, long status, const char *code)
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
static void
describe_error(const char *method, const char *path, long status, json_t *body,
               const char **code, char *msg, size_t msglen)
{
  json_t *err = json_object_get(body, "error");
  const char *c = json_string_value(json_object_get(err, "code"));
  const char *m = json_string_value(json_object_get(err, "message"));

  *code = c != NULL ? c : "";
  snprintf(msg, msglen, "%s %s: HTTP %ld%s%s%s%.300s", method, path, status,
           *code[0] ? " " : "", *code, m ? ": " : "", m ? m : "");
}

static void
decode_error(const struct graph_req *req, long status, json_t *body,
             const char **code, char *msg, size_t msglen)
{
  describe_error(req->method, req->path_for_log, status, body, code, msg,
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
      token_retry(req->graph, req->token, req->stale, &req->stale_retries,
                  &req->refreshed, hr->status, resp.code)) {
    json_decref(body);
    start(req);
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

static unsigned
budget_invitations(const char *method, const char *url)
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
  wipe_free(req->token);
  wipe_free(req->auth_line);
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
  wipe_free(req->token);
  wipe_free(req->auth_line);
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
      .writes = req->cost_set ? req->writes : budget_writes(req->method),
      .invitations = req->cost_set ? req->invitations
                                   : budget_invitations(req->method, req->url),
      .units = req->cost_set ? req->units
                             : graph_request_units(req->method, req->url),
      .authorization = authorize,
      .inner_wait = req->batch ? batch_inner_wait : NULL,
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
static struct graph_req *
req_prepare(struct graph *graph, const char *method, const char *url,
            const json_t *body, const char *const *headers, graph_done_fn done,
            void *ctx)
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
  return req;

fail:
  req_free(req);
  return NULL;
}

int
graph_request(struct graph *graph, const char *method, const char *url,
              const json_t *body, const char *const *headers,
              graph_done_fn done, void *ctx)
{
  struct graph_req *req =
      req_prepare(graph, method, url, body, headers, done, ctx);

  if (req == NULL)
    return -1;
  start(req);
  return 0;
}

int
graph_delta_get(struct graph *graph, const char *url, graph_done_fn done,
                void *ctx)
{
  struct graph_req *req =
      req_prepare(graph, "GET", url, NULL, NULL, done, ctx);

  if (req == NULL)
    return -1;
  req->tolerant = 1;
  start(req);
  return 0;
}

/* --- values galbridge cannot take (graph_json_mark_bad) --- */

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0. Whether
 * it is valid is jansson's own judgement (json_stringn checks UTF-8 as
 * the parser does: no overlong form, no surrogate, nothing above
 * U+10FFFF), so that what is marked is exactly what it refuses (out of
 * memory, a good one is marked too: never the other way round); this
 * runs only on bodies jansson has refused already. */
static size_t
utf8_valid(const unsigned char *p, size_t n)
{
  size_t len = p[0] < 0x80   ? 1
               : p[0] < 0xc2 ? 0 /* a continuation, or overlong */
               : p[0] < 0xe0 ? 2
               : p[0] < 0xf0 ? 3
               : p[0] < 0xf5 ? 4
                             : 0;
  json_t *s;

  if (len <= 1 || len > n)
    return len > n ? 0 : len;
  s = json_stringn((const char *)p, len);
  if (s == NULL)
    return 0;
  json_decref(s);
  return len;
}

/* The value of the \uXXXX escape at p (6 bytes left at least), or -1. */
static long
escape_value(const unsigned char *p, size_t n)
{
  long v = 0;

  if (n < 6 || p[0] != '\\' || p[1] != 'u')
    return -1;
  for (int i = 2; i < 6; i++) {
    int c = p[i], d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else
      return -1;
    v = v * 16 + d;
  }
  return v;
}

static void
emit(char *out, size_t *o, const void *src, size_t k)
{
  if (out != NULL)
    memcpy(out + *o, src, k);
  *o += k;
}

/* One pass of graph_json_mark_bad(): the output's length; the output
 * itself too when `out` is not NULL. */
static size_t
mark_scan(const unsigned char *p, size_t len, char *out, size_t *marks)
{
  static const char mark[] = "\\u0000";
  size_t i = 0, o = 0;
  int in_string = 0, bad_run = 0;

  *marks = 0;
  while (i < len) {
    size_t k = 1;
    long v;
    int bad = 0;

    if (!in_string) {
      in_string = (p[i] == '"');
    } else if (p[i] == '"') {
      in_string = 0;
    } else if (p[i] == '\\' && i + 1 < len && p[i + 1] != 'u') {
      k = 2; /* \" \\ \n...: jansson judges the rest */
    } else if (p[i] == '\\' && (v = escape_value(p + i, len - i)) >= 0) {
      k = 6;
      if (v >= 0xd800 && v <= 0xdbff) {
        long lo = escape_value(p + i + 6, len - i - 6);
        if (lo >= 0xdc00 && lo <= 0xdfff)
          k = 12; /* a pair: one character */
        else
          bad = 1;
      } else if (v >= 0xdc00 && v <= 0xdfff) {
        bad = 1;
      }
    } else if (p[i] < 0x20) {
      bad = 1; /* a raw control character */
    } else if (p[i] >= 0x80) {
      k = utf8_valid(p + i, len - i);
      if (k == 0) {
        k = 1;
        bad = 1;
      }
    }
    if (bad) {
      /* A run of bad bytes is one mark; each bad escape is one. */
      if (!bad_run || k > 1) {
        emit(out, &o, mark, sizeof(mark) - 1);
        (*marks)++;
      }
      bad_run = (k == 1);
    } else {
      emit(out, &o, p + i, k);
      bad_run = 0;
    }
    i += k;
  }
  return o;
}

char *
graph_json_mark_bad(const char *text, size_t len, size_t *out_len,
                    size_t *marks)
{
  const unsigned char *p = (const unsigned char *)text;
  size_t n = mark_scan(p, len, NULL, marks);
  char *out = malloc(n + 1);

  if (out == NULL)
    return NULL;
  (void)mark_scan(p, len, out, marks);
  out[n] = '\0';
  *out_len = n;
  return out;
}

/* What is wrong with `v` (a value under attribute `name`), or NULL; a
 * nested attribute's name goes to `name` (of `namelen` bytes). */
static const char *
value_refusal(const json_t *v, char *name, size_t namelen)
{
  size_t used = strlen(name), i;
  const char *key, *why;
  json_t *el;

  if (json_is_string(v)) {
    if (strlen(json_string_value(v)) != json_string_length(v))
      return "holds a NUL, invalid UTF-8 or an unpaired surrogate";
    if (json_string_length(v) > GRAPH_VALUE_MAX)
      return "longer than " GRAPH_STR(GRAPH_VALUE_MAX) " bytes";
    return NULL;
  }
  if (json_is_array(v)) {
    if (json_array_size(v) > GRAPH_VALUES_MAX)
      return "more than " GRAPH_STR(GRAPH_VALUES_MAX) " values";
    json_array_foreach(v, i, el)
    {
      snprintf(name + used, namelen - used, "[%zu]", i);
      if ((why = value_refusal(el, name, namelen)) != NULL)
        return why;
    }
  } else if (json_is_object(v)) {
    json_object_foreach((json_t *)v, key, el)
    {
      snprintf(name + used, namelen - used, ".%s", key);
      if ((why = value_refusal(el, name, namelen)) != NULL)
        return why;
    }
  }
  name[used] = '\0';
  return NULL;
}

int
graph_delta_item_check(const json_t *item, char *attribute, size_t attrlen,
                       const char **reason)
{
  const char *key;
  json_t *v;

  *reason = NULL;
  if (attrlen > 0)
    attribute[0] = '\0';
  json_object_foreach((json_t *)item, key, v)
  {
    /* What graph_delta_merge() does not keep is not judged. */
    if (strcmp(key, "id") == 0 || strncmp(key, "@odata.", 7) == 0)
      continue;
    snprintf(attribute, attrlen, "%s", key);
    *reason = value_refusal(v, attribute, attrlen);
    if (*reason != NULL)
      return -1;
  }
  if (attrlen > 0)
    attribute[0] = '\0';
  return 0;
}

const char *
graph_delta_item_id(const json_t *item)
{
  json_t *id = json_object_get(item, "id");

  /* An id with a NUL in it would be read as a shorter one: another
   * object's, perhaps. */
  if (!json_is_object(item) || !json_is_string(id) ||
      json_string_length(id) == 0 || json_string_length(id) > 128 ||
      strlen(json_string_value(id)) != json_string_length(id))
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

/* Append ["addr:<lower-case address>", null] unless it is empty or too
 * long to be an address. */
/* Append ["<prefix><lower-case address>", null] unless the address is
 * empty or too long to be one. */
static int
add_address_key(json_t *keys, const char *prefix, const char *address)
{
  char key[300];
  size_t n;

  if (address == NULL)
    return 0;
  n = strlen(address);
  if (n == 0 || n + strlen(prefix) >= sizeof(key))
    return 0;
  snprintf(key, sizeof(key), "%s%s", prefix, address);
  for (char *c = key + strlen(prefix); *c != '\0'; c++)
    *c = (char)tolower((unsigned char)*c);
  return json_array_append_new(keys, json_pack("[s, n]", key));
}

json_t *
graph_user_keys(const json_t *attrs)
{
  json_t *keys = json_array(), *v, *ext;
  const char *name;
  size_t i;
  int rc = 0;

  if (keys == NULL)
    return NULL;
  rc |= add_address_key(
      keys, "addr:", json_string_value(json_object_get(attrs, "mail")));
  rc |= add_address_key(
      keys,
      "addr:", json_string_value(json_object_get(attrs, "userPrincipalName")));
  json_array_foreach(json_object_get(attrs, "proxyAddresses"), i, v)
  {
    const char *a = json_string_value(v);
    if (a != NULL && strncasecmp(a, "smtp:", 5) == 0)
      rc |= add_address_key(keys, "addr:", a + 5);
  }
  /* Other mails are no unique address: they stand in the way only on an
   * invited user (the planner's rule, see planner.c). */
  json_array_foreach(json_object_get(attrs, "otherMails"), i, v) rc |=
      add_address_key(keys, "other:", json_string_value(v));
  ext = json_object_get(attrs, "onPremisesExtensionAttributes");
  json_object_foreach(ext, name, v)
  {
    char *plain = anchor_parse(json_string_value(v), NULL);
    char key[ANCHOR_PLAIN_MAX + 8];
    if (plain == NULL)
      continue;
    snprintf(key, sizeof(key), "anchor:%s", plain);
    free(plain);
    rc |= json_array_append_new(
        keys, json_pack("[s, s]", key, json_string_value(v)));
  }
  if (rc != 0) {
    json_decref(keys);
    return NULL;
  }
  return keys;
}

const char *
graph_user_extension(const json_t *attrs, const char *name)
{
  return json_string_value(json_object_get(
      json_object_get(attrs, "onPremisesExtensionAttributes"), name));
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

/* --- $batch: pure body builder and answer parser --- */

static int
header_split(const char *line, char *name, size_t namelen, const char **value)
{
  const char *colon = strchr(line, ':');
  size_t n;

  if (colon == NULL || colon == line)
    return -1;
  n = (size_t)(colon - line);
  if (n >= namelen)
    return -1;
  memcpy(name, line, n);
  name[n] = '\0';
  *value = colon + 1;
  while (**value == ' ' || **value == '\t')
    (*value)++;
  return 0;
}

json_t *
graph_batch_body(const struct graph_batch_item *items, size_t n, char *err,
                 size_t errlen)
{
  json_t *requests = NULL, *out = NULL;
  char name[128];
  const char *value;
  size_t i, j;

  if (n == 0 || n > GRAPH_BATCH_MAX) {
    snprintf(err, errlen, "a batch holds 1 to %d requests, not %zu",
             GRAPH_BATCH_MAX, n);
    return NULL;
  }
  requests = json_array();
  if (requests == NULL)
    goto nomem;
  for (i = 0; i < n; i++) {
    const struct graph_batch_item *it = &items[i];
    json_t *r, *headers = NULL;
    int has_type = 0, dep_ok = it->depends_on == NULL;

    if (it->id == NULL || it->id[0] == '\0' || it->method == NULL ||
        it->method[0] == '\0' || it->url == NULL) {
      snprintf(err, errlen, "batch request %zu has no id, method or url", i);
      goto fail;
    }
    for (j = 0; j < i; j++) {
      if (strcasecmp(items[j].id, it->id) == 0) {
        snprintf(err, errlen, "batch request id '%.64s' is repeated", it->id);
        goto fail;
      }
      if (it->depends_on != NULL &&
          strcasecmp(items[j].id, it->depends_on) == 0)
        dep_ok = 1;
    }
    if (it->url[0] != '/') {
      snprintf(err, errlen, "batch request '%.64s': url is not relative",
               it->id);
      goto fail;
    }
    if (!dep_ok) {
      snprintf(err, errlen,
               "batch request '%.64s' depends on '%.64s', not before it",
               it->id, it->depends_on);
      goto fail;
    }
    r = json_pack("{s:s, s:s, s:s}", "id", it->id, "method", it->method, "url",
                  it->url);
    if (r == NULL || json_array_append_new(requests, r) != 0)
      goto nomem;
    for (j = 0; it->headers != NULL && it->headers[j] != NULL; j++) {
      if (header_split(it->headers[j], name, sizeof(name), &value) != 0) {
        snprintf(err, errlen, "batch request '%.64s': bad header", it->id);
        goto fail;
      }
      if (headers == NULL) {
        headers = json_object();
        if (headers == NULL || json_object_set_new(r, "headers", headers))
          goto nomem;
      }
      if (strcasecmp(name, "Content-Type") == 0)
        has_type = 1;
      if (json_object_set_new(headers, name, json_string(value)) != 0)
        goto nomem;
    }
    if (it->body != NULL) {
      /* Graph refuses a body without a Content-Type (the whole batch). */
      if (headers == NULL) {
        headers = json_object();
        if (headers == NULL || json_object_set_new(r, "headers", headers))
          goto nomem;
      }
      if (!has_type && json_object_set_new(headers, "Content-Type",
                                           json_string("application/json")))
        goto nomem;
      if (json_object_set_new(r, "body", json_deep_copy(it->body)) != 0)
        goto nomem;
    }
    if (it->depends_on != NULL &&
        json_object_set_new(r, "dependsOn",
                            json_pack("[s]", it->depends_on)) != 0)
      goto nomem;
  }
  out = json_pack("{s:o}", "requests", requests);
  if (out == NULL)
    goto nomem;
  return out;

nomem:
  snprintf(err, errlen, "out of memory");
fail:
  json_decref(requests);
  return NULL;
}

/* The Retry-After (any case) of an inner answer's headers, read as http
 * does, in seconds; -1 when none (or unparsable). */
static double
inner_retry_after(const json_t *headers)
{
  const char *name;
  json_t *v;

  json_object_foreach((json_t *)headers, name, v)
  {
    double secs;
    char num[64];
    const char *text = json_string_value(v);

    if (strcasecmp(name, "Retry-After") != 0)
      continue;
    if (text == NULL && json_is_number(v)) {
      snprintf(num, sizeof(num), "%.3f", json_number_value(v));
      text = num;
    }
    if (text != NULL && retry_parse_after(text, time(NULL), &secs) == 0)
      return secs;
  }
  return -1;
}

int
graph_batch_parse(json_t *answer, const char *const *ids, size_t n,
                  struct graph_batch_answer *out, char *err, size_t errlen)
{
  json_t *responses = json_object_get(answer, "responses"), *r;
  size_t i, k;

  for (k = 0; k < n; k++) {
    out[k].status = 0;
    out[k].body = NULL;
    out[k].retry_after = -1;
  }
  if (!json_is_object(answer) || !json_is_array(responses)) {
    snprintf(err, errlen, "$batch answer has no \"responses\" array");
    return -1;
  }
  json_array_foreach(responses, i, r)
  {
    const char *id = json_string_value(json_object_get(r, "id"));
    json_t *status = json_object_get(r, "status");
    json_t *headers = json_object_get(r, "headers");

    if (id == NULL || !json_is_integer(status) ||
        json_integer_value(status) < 100 || json_integer_value(status) > 599)
      continue;
    for (k = 0; k < n && strcasecmp(ids[k], id) != 0; k++)
      ;
    if (k == n || out[k].status != 0)
      continue; /* not ours, or answered twice: the first one counts */
    out[k].status = (long)json_integer_value(status);
    out[k].body = json_object_get(r, "body");
    out[k].retry_after = inner_retry_after(headers);
  }
  return 0;
}

double
graph_batch_wait(const json_t *answer)
{
  json_t *r;
  size_t i;
  double wait = -1;

  json_array_foreach(json_object_get(answer, "responses"), i, r)
  {
    json_t *status = json_object_get(r, "status");
    double secs;

    if (!json_is_integer(status) || http_status_class((long)json_integer_value(
                                        status)) != HTTP_CLASS_THROTTLED)
      continue;
    secs = inner_retry_after(json_object_get(r, "headers"));
    if (secs > wait)
      wait = secs;
  }
  return wait;
}

/* --- the batcher --- */

struct sub {
  struct sub *next; /* in the queue or the delayed list */
  struct graph *graph;
  int beta;
  int partial;     /* sent alone as a partial batch (see flush) */
  uint64_t queued; /* uv_now() when it was queued */
  char *method;
  char *url; /* relative to the version: "/users/…?…" */
  json_t *body;
  char *headers[3];
  int refreshed;     /* fresh tokens after inner token refusals */
  int stale_retries; /* inner 401s on a token past its prime */
  int retries;       /* inner 429/503/504 so far */
  int invitation;    /* POST /invitations */
  int in_flight;     /* sent (counted in graph->invites if invitation) */
  uint64_t due;      /* uv_now() at which a delayed sub goes again */
  graph_done_fn done;
  void *ctx;
};

struct batch {
  struct graph *graph;
  struct sub *subs[GRAPH_BATCH_MAX];
  size_t n;
  int beta;
  int partial; /* fewer than GRAPH_BATCH_MAX */
  char *token; /* the token the batch went with (for an inner 401) */
  int stale;   /* ... and it was past its prime (see authorize()) */
};

static void flush(struct graph *graph);

static void
sub_free(struct sub *sub)
{
  free(sub->method);
  free(sub->url);
  json_decref(sub->body);
  for (int i = 0; sub->headers[i] != NULL; i++)
    free(sub->headers[i]);
  free(sub);
}

/* The sub's one and only answer. */
static void
sub_finish(struct sub *sub, struct graph_response *resp)
{
  graph_done_fn done = sub->done;
  void *ctx = sub->ctx;

  sub_free(sub);
  if (resp->code == NULL)
    resp->code = "";
  if (resp->errmsg == NULL)
    resp->errmsg = "";
  resp->transient = graph_error_transient(resp);
  done(ctx, resp);
}

static void
sub_cancel(struct sub *sub)
{
  struct graph_response resp = {.result = GRAPH_ERR_CANCELLED,
                                .errmsg = "cancelled"};
  sub_finish(sub, &resp);
}

static void
on_tick(uv_timer_t *t)
{
  flush(t->data);
}

static int
is_write(const struct sub *sub)
{
  return strcmp(sub->method, "GET") != 0;
}

/* A sub leaves the queue. */
static void
unqueued(struct graph *graph, const struct sub *sub)
{
  graph->queued[sub->beta]--;
  graph->writes[sub->beta] -= (size_t)is_write(sub);
}

static void
enqueue(struct graph *graph, struct sub *sub)
{
  sub->next = NULL;
  if (graph->queue_tail != NULL)
    graph->queue_tail->next = sub;
  else
    graph->queue = sub;
  graph->queue_tail = sub;
  graph->queued[sub->beta]++;
  graph->writes[sub->beta] += (size_t)is_write(sub);
  sub->queued = uv_now(graph->loop);
  /* A full batch goes on the next tick even if a partial one lingers. */
  if (!graph->freeing &&
      (!uv_is_active((uv_handle_t *)graph->tick) ||
       graph->writes[sub->beta] >= GRAPH_BATCH_MAX ||
       graph->queued[sub->beta] - graph->writes[sub->beta] >= GRAPH_BATCH_MAX))
    uv_timer_start(graph->tick, on_tick, 0, 0);
}

/* A partial batch is answered: the next one may go. */
static void
partial_done(struct graph *graph)
{
  graph->partials--;
  if (graph->queue != NULL && !graph->freeing)
    uv_timer_start(graph->tick, on_tick, 0, 0);
}

/* The sub is on its way (in a batch or alone). */
static void
sub_sent(struct graph *graph, struct sub *sub)
{
  sub->in_flight = 1;
  if (sub->invitation)
    graph->invites++;
}

/* Its answer (or its batch's failure) is back. */
static void
sub_landed(struct graph *graph, struct sub *sub)
{
  if (!sub->in_flight)
    return;
  sub->in_flight = 0;
  if (sub->invitation)
    graph->invites--;
}

/* After answers came back: once no invitation is in flight, what
 * lingered for their PATCHes may go now. */
static void
invites_settled(struct graph *graph)
{
  if (graph->invites == 0 && graph->loop != NULL && graph->queue != NULL &&
      !graph->freeing)
    uv_timer_start(graph->tick, on_tick, 0, 0);
}

static void on_retry(uv_timer_t *t);

static void
arm_retry(struct graph *graph)
{
  uint64_t now = uv_now(graph->loop);

  if (graph->delayed == NULL || graph->freeing) {
    uv_timer_stop(graph->retry);
    return;
  }
  uv_timer_start(graph->retry, on_retry,
                 graph->delayed->due > now ? graph->delayed->due - now : 0, 0);
}

static void
on_retry(uv_timer_t *t)
{
  struct graph *graph = t->data;
  uint64_t now = uv_now(graph->loop);

  while (graph->delayed != NULL && graph->delayed->due <= now) {
    struct sub *sub = graph->delayed;
    graph->delayed = sub->next;
    enqueue(graph, sub);
  }
  arm_retry(graph);
}

/* Wait `ms`, then queue again. */
static void
delay(struct graph *graph, struct sub *sub, uint64_t ms)
{
  struct sub **p = &graph->delayed;

  sub->due = uv_now(graph->loop) + ms;
  while (*p != NULL && (*p)->due <= sub->due)
    p = &(*p)->next;
  sub->next = *p;
  *p = sub;
  arm_retry(graph);
}

static void
on_sub_plain(void *ctx, const struct graph_response *resp)
{
  struct sub *sub = ctx;
  struct graph *graph = sub->graph;
  struct graph_response r = *resp;
  int partial = sub->partial;

  sub_landed(graph, sub);
  sub_finish(sub, &r);
  if (partial)
    partial_done(graph);
  invites_settled(graph);
}

/* Send a sub as a request of its own (a lone sub, or the batch it was in
 * was refused as a whole). */
static void
send_plain(struct graph *graph, struct sub *sub)
{
  char url[1024];
  const char *headers[4];
  struct graph_req *req;
  int i;

  for (i = 0; sub->headers[i] != NULL; i++)
    headers[i] = sub->headers[i];
  headers[i] = NULL;
  snprintf(url, sizeof(url), "/%s%s", sub->beta ? "beta" : "v1.0", sub->url);
  req = req_prepare(graph, sub->method, url, sub->body, headers, on_sub_plain,
                    sub);
  if (req == NULL) {
    struct graph_response resp = {.result = GRAPH_ERR_PROTOCOL,
                                  .errmsg = "cannot build the request"};
    sub_finish(sub, &resp);
    return;
  }
  req->refreshed = sub->refreshed;
  if (sub->partial)
    graph->partials++;
  sub_sent(graph, sub);
  start(req);
}

static void
batch_free(struct batch *b)
{
  wipe_free(b->token);
  free(b);
}

/* An inner answer said to wait (429, 503, 504): slow the budget, close
 * the gate for its Retry-After (http has done so already as the batch's
 * answer came in: see batch_inner_wait) and send the sub again, alone,
 * after it. */
static void
sub_throttled(struct graph *graph, struct sub *sub,
              const struct graph_batch_answer *a)
{
  double secs = a->retry_after;
  double u = (double)random() / ((double)RAND_MAX + 1.0);

  sub->retries++;
  if (a->status == 429 || secs >= 0)
    http_gate_note_throttle(graph->http, graph->gate, secs,
                            sub->invitation ? GATE_BUCKET_INVITATIONS
                            : strcmp(sub->method, "GET") == 0
                                ? GATE_BUCKET_UNITS
                                : GATE_BUCKET_WRITES);
  if (secs < 0)
    secs = retry_backoff_ms(sub->retries, SUB_BACKOFF_BASE_MS,
                            SUB_BACKOFF_CAP_MS, u) /
           1000.0;
  if (secs > SUB_MAX_RETRY_AFTER)
    secs = SUB_MAX_RETRY_AFTER;
  log_debug("graph: inner request throttled, retrying alone tenant=%s "
            "status=%ld retry_in=%.3fs try=%d",
            graph->tenant->name, a->status, secs, sub->retries);
  delay(graph, sub, (uint64_t)(secs * 1000.0 + 0.5));
}

/* One sub's inner answer: hand it over, or go again. */
static void
sub_answer(struct batch *b, struct sub *sub,
           const struct graph_batch_answer *a)
{
  struct graph *graph = b->graph;
  struct graph_response resp = {0};
  char msg[GRAPH_ERRMSG_MAX], path[256];
  const char *q = strchr(sub->url, '?');

  snprintf(path, sizeof(path), "/%s%.*s", sub->beta ? "beta" : "v1.0",
           (int)(q != NULL ? (size_t)(q - sub->url) : strlen(sub->url)),
           sub->url);
  resp.status = a->status;
  if (a->status == 0) {
    snprintf(msg, sizeof(msg), "%s %s: no answer for it in the $batch",
             sub->method, path);
    resp.result = GRAPH_ERR_PROTOCOL;
    resp.errmsg = msg;
    sub_finish(sub, &resp);
    return;
  }
  if (a->status >= 200 && a->status < 300) {
    resp.result = GRAPH_OK;
    resp.body =
        json_is_object(a->body) || json_is_array(a->body) ? a->body : NULL;
    sub_finish(sub, &resp);
    return;
  }
  describe_error(sub->method, path, a->status, a->body, &resp.code, msg,
                 sizeof(msg));
  resp.result = GRAPH_ERR_HTTP;
  resp.errmsg = msg;
  resp.body = a->body;
  /* Classified as a plain answer is (graph_error_class), acted on alike:
   * a token refusal gets a fresh token (the next batch asks for one),
   * throttling waits its own Retry-After and goes again. */
  switch (graph_error_class(&resp)) {
  case HTTP_CLASS_TOKEN:
    if (token_retry(graph, b->token, b->stale, &sub->stale_retries,
                    &sub->refreshed, a->status, resp.code)) {
      enqueue(graph, sub);
      return;
    }
    break;
  case HTTP_CLASS_THROTTLED:
    if (sub->retries < SUB_MAX_RETRIES) {
      sub_throttled(graph, sub, a);
      return;
    }
    break;
  default:
    break;
  }
  sub_finish(sub, &resp);
}

static void
on_batch(void *ctx, const struct graph_response *resp)
{
  struct batch *b = ctx;
  struct graph *graph = b->graph;
  struct graph_batch_answer answers[GRAPH_BATCH_MAX];
  const char *ids[GRAPH_BATCH_MAX];
  char idbuf[GRAPH_BATCH_MAX][24], err[256];
  size_t i;

  for (i = 0; i < b->n; i++)
    sub_landed(graph, b->subs[i]);
  if (resp->result == GRAPH_OK) {
    for (i = 0; i < b->n; i++) {
      snprintf(idbuf[i], sizeof(idbuf[i]), "%zu", i + 1);
      ids[i] = idbuf[i];
    }
    if (graph_batch_parse(resp->body, ids, b->n, answers, err, sizeof(err)) ==
        0) {
      for (i = 0; i < b->n; i++)
        sub_answer(b, b->subs[i], &answers[i]);
      goto out;
    }
    log_warning("graph: %s tenant=%s", err, graph->tenant->name);
  } else if (resp->result == GRAPH_ERR_HTTP && resp->status == 400 &&
             !graph->freeing) {
    /* The batch as a whole was refused: each sub alone, so that only a
     * bad one fails. */
    log_warning("graph: $batch refused, sending its requests one by one "
                "tenant=%s error=\"%s\"",
                graph->tenant->name, resp->errmsg);
    for (i = 0; i < b->n; i++)
      send_plain(graph, b->subs[i]);
    goto out;
  }
  /* Network, auth, 5xx, 429 after http's retries, a malformed answer:
   * each sub fails as a plain request would have. */
  for (i = 0; i < b->n; i++) {
    struct graph_response r = *resp;
    if (r.result == GRAPH_OK) {
      r.result = GRAPH_ERR_PROTOCOL;
      r.transient = 1;
      r.errmsg = "$batch answer is not what Graph documents";
      r.body = NULL;
    }
    sub_finish(b->subs[i], &r);
  }
out:
  if (b->partial)
    partial_done(graph);
  invites_settled(graph);
  batch_free(b);
}

/* Send up to GRAPH_BATCH_MAX queued subs of version `beta`, oldest
 * first. */
/* One batch of `beta` subs: writes first, then reads to fill up; only
 * reads when `reads_only`. */
static void
send_batch(struct graph *graph, int beta, int reads_only)
{
  struct batch *b = calloc(1, sizeof(*b));
  struct graph_batch_item items[GRAPH_BATCH_MAX];
  char ids[GRAPH_BATCH_MAX][24], err[256];
  const char *hdrs[GRAPH_BATCH_MAX][4];
  struct sub **p = &graph->queue, *last = NULL;
  struct graph_req *req;
  json_t *payload;
  unsigned writes = 0, invitations = 0, units = 0;
  size_t i;

  if (b == NULL) {
    struct sub *s = graph->queue;
    graph->queue = s->next;
    unqueued(graph, s);
    if (graph->queue == NULL)
      graph->queue_tail = NULL;
    send_plain(graph, s);
    return;
  }
  b->graph = graph;
  b->beta = beta;
  /* Writes first, then reads to fill up: writes travel together, so the
   * requests that carry them (what the write budget paces) stay few. */
  for (int sweep = reads_only; sweep < 2 && b->n < GRAPH_BATCH_MAX; sweep++) {
    p = &graph->queue;
    last = NULL;
    while (*p != NULL && b->n < GRAPH_BATCH_MAX) {
      struct sub *s = *p;
      int write = strcmp(s->method, "GET") != 0;
      if (s->beta != b->beta || write != (sweep == 0)) {
        last = s;
        p = &s->next;
        continue;
      }
      *p = s->next;
      unqueued(graph, s);
      b->subs[b->n++] = s;
    }
    if (*p == NULL) /* taken up to the end: the last one left is the tail */
      graph->queue_tail = last;
  }

  if (b->n == 1) {
    b->subs[0]->partial = 1;
    send_plain(graph, b->subs[0]);
    free(b);
    return;
  }
  b->partial = b->n < GRAPH_BATCH_MAX;
  for (i = 0; i < b->n; i++) {
    struct sub *s = b->subs[i];
    int h;
    for (h = 0; s->headers[h] != NULL; h++)
      hdrs[i][h] = s->headers[h];
    hdrs[i][h] = NULL;
    snprintf(ids[i], sizeof(ids[i]), "%zu", i + 1);
    items[i] = (struct graph_batch_item){.id = ids[i],
                                         .method = s->method,
                                         .url = s->url,
                                         .body = s->body,
                                         .headers = hdrs[i]};
    if (strcmp(s->method, "GET") != 0)
      writes++;
    if (s->invitation)
      invitations++;
    units += graph_request_units(s->method, s->url);
  }
  payload = graph_batch_body(items, b->n, err, sizeof(err));
  req = payload == NULL
            ? NULL
            : req_prepare(graph, "POST",
                          b->beta ? "/beta/$batch" : "/v1.0/$batch", payload,
                          NULL, on_batch, b);
  json_decref(payload);
  if (req == NULL) {
    log_error("graph: cannot build a $batch tenant=%s: %s",
              graph->tenant->name, payload == NULL ? err : "out of memory");
    for (i = 0; i < b->n; i++)
      send_plain(graph, b->subs[i]);
    free(b);
    return;
  }
  /* Every inner write counts against the tenant's limits, invitations
   * against theirs too: the budget paces the batch by what it carries. */
  req->batch = 1;
  req->cost_set = 1;
  req->writes = writes;
  req->invitations = invitations;
  req->units = units;
  req->token_out = &b->token;
  req->stale_out = &b->stale;
  if (b->partial)
    graph->partials++;
  for (i = 0; i < b->n; i++)
    sub_sent(graph, b->subs[i]);
  log_debug("graph: $batch tenant=%s requests=%zu writes=%u invitations=%u",
            graph->tenant->name, b->n, writes, invitations);
  start(req);
}

static void
flush(struct graph *graph)
{
  uint64_t now = uv_now(graph->loop);

  /* Full batches at once: of writes, then of reads (a few writes wait
   * for more of their kind rather than ride with reads). */
  for (int beta = 0; beta < 2; beta++) {
    while (graph->writes[beta] >= GRAPH_BATCH_MAX && !graph->freeing)
      send_batch(graph, beta, 0);
    while (graph->queued[beta] - graph->writes[beta] >= GRAPH_BATCH_MAX &&
           !graph->freeing)
      send_batch(graph, beta, 1);
  }
  if (graph->queue == NULL || graph->freeing)
    return;
  /* Company is coming (a partial batch's answer, the PATCHes of
   * invitations in flight): wait for it, but not for long, since the
   * batch in flight may itself be held by a closed gate. partial_done()
   * and invites_settled() call again as soon as it comes. */
  if ((graph->partials > 0 || graph->invites > 0) &&
      now < graph->queue->queued + BATCH_LINGER_MS) {
    uv_timer_start(graph->tick, on_tick,
                   graph->queue->queued + BATCH_LINGER_MS - now, 0);
    return;
  }
  send_batch(graph, graph->queue->beta, 0);
}

static void
on_timer_closed(uv_handle_t *h)
{
  free(h);
}

int
graph_batch_enable(struct graph *graph, uv_loop_t *loop)
{
  if (graph->loop != NULL)
    return 0;
  graph->tick = calloc(1, sizeof(*graph->tick));
  graph->retry = calloc(1, sizeof(*graph->retry));
  if (graph->tick == NULL || graph->retry == NULL) {
    free(graph->tick);
    free(graph->retry);
    graph->tick = graph->retry = NULL;
    return -1;
  }
  uv_timer_init(loop, graph->tick);
  uv_timer_init(loop, graph->retry);
  graph->tick->data = graph->retry->data = graph;
  graph->loop = loop;
  return 0;
}

/* graph_free's part: every waiting sub is cancelled (batches in flight
 * are graph_reqs: graph_free cancels those). */
static void
batcher_cancel(struct graph *graph)
{
  while (graph->queue != NULL || graph->delayed != NULL) {
    struct sub *sub;
    if (graph->queue != NULL) {
      sub = graph->queue;
      graph->queue = sub->next;
      unqueued(graph, sub);
      if (graph->queue == NULL)
        graph->queue_tail = NULL;
    } else {
      sub = graph->delayed;
      graph->delayed = sub->next;
    }
    sub_cancel(sub);
  }
}

static void
batcher_close(struct graph *graph)
{
  if (graph->loop == NULL)
    return;
  uv_close((uv_handle_t *)graph->tick, on_timer_closed);
  uv_close((uv_handle_t *)graph->retry, on_timer_closed);
  graph->loop = NULL;
}

/* Queue METHOD /{v1.0|beta}`url` when batching, else send it now. Returns
 * 0, or -1 (callback never called). */
static int
submit(struct graph *graph, const char *method, int beta, const char *url,
       const json_t *body, const char *header, graph_done_fn done, void *ctx)
{
  struct sub *sub;

  if (graph->loop == NULL || graph->freeing) {
    const char *headers[] = {header, NULL};
    size_t n = strlen(url) + 8;
    char *full = malloc(n);
    int rc;
    if (full == NULL)
      return -1;
    snprintf(full, n, "/%s%s", beta ? "beta" : "v1.0", url);
    rc = graph_request(graph, method, full, body, headers, done, ctx);
    free(full);
    return rc;
  }
  sub = calloc(1, sizeof(*sub));
  if (sub == NULL)
    return -1;
  sub->graph = graph;
  sub->beta = beta;
  sub->method = strdup(method);
  sub->url = strdup(url);
  sub->body = body != NULL ? json_deep_copy(body) : NULL;
  sub->headers[0] = header != NULL ? strdup(header) : NULL;
  if (sub->method == NULL || sub->url == NULL ||
      (body != NULL && sub->body == NULL) ||
      (header != NULL && sub->headers[0] == NULL)) {
    sub_free(sub);
    return -1;
  }
  sub->invitation = budget_invitations(method, url);
  sub->done = done;
  sub->ctx = ctx;
  enqueue(graph, sub);
  return 0;
}

/* --- target-side user operations --- */

struct call {
  struct graph *graph;
  graph_id_fn id;
  graph_done_fn done;
  graph_members_fn members_done;
  graph_count_fn count_done;
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

/* Whether user u holds `address` as a unique address (mail, UPN, an SMTP
 * proxy address), not only among its other mails. */
static int
holds_address(const json_t *u, const char *address)
{
  static const char *const names[] = {"mail", "userPrincipalName"};
  const json_t *v;
  size_t i;

  for (i = 0; i < 2; i++) {
    const char *a = json_string_value(json_object_get(u, names[i]));
    if (a != NULL && strcasecmp(a, address) == 0)
      return 1;
  }
  json_array_foreach(json_object_get(u, "proxyAddresses"), i, v)
  {
    const char *a = json_string_value(v);
    if (a != NULL && strncasecmp(a, "smtp:", 5) == 0 &&
        strcasecmp(a + 5, address) == 0)
      return 1;
  }
  return 0;
}

/* The three lookups of graph_address_holders, answered in any order. */
struct holders {
  struct graph *graph;
  graph_holders_fn done;
  void *ctx;
  char *anchor_attr;
  char *address;
  int waiting;
  json_t *values[3]; /* users, contacts, groups */
  long status;       /* of the first lookup that failed, if any */
  int result;
  int transient, auth_permanent;
  char code[64];
  char errmsg[512];
};

static const char *const holder_kinds[3] = {"user", "contact", "group"};

static void
holders_finish(struct holders *h)
{
  struct graph_holder list[3 * GRAPH_HOLDERS_MAX];
  struct graph_response r = {.result = h->result,
                             .status = h->status,
                             .code = h->code,
                             .errmsg = h->errmsg,
                             .transient = h->transient,
                             .auth_permanent = h->auth_permanent};
  size_t n = 0;

  if (h->result == GRAPH_OK) {
    for (int k = 0; k < 3; k++) {
      json_t *v;
      size_t i;
      json_array_foreach(h->values[k], i, v)
      {
        const char *id = json_string_value(json_object_get(v, "id"));
        if (id == NULL || n == sizeof(list) / sizeof(list[0]))
          continue;
        list[n] = (struct graph_holder){
            .kind = holder_kinds[k],
            .id = id,
            .display_name =
                json_string_value(json_object_get(v, "displayName")),
            .creation_type =
                json_string_value(json_object_get(v, "creationType")),
            .user_type = json_string_value(json_object_get(v, "userType")),
            .anchor = h->anchor_attr != NULL
                          ? graph_user_extension(v, h->anchor_attr)
                          : NULL,
            .created = http_parse_iso8601(
                json_string_value(json_object_get(v, "createdDateTime"))),
            .other_only = k == 0 && !holds_address(v, h->address),
        };
        n++;
      }
    }
  }
  h->done(h->ctx, &r, list, n);
  for (int k = 0; k < 3; k++)
    json_decref(h->values[k]);
  free(h->anchor_attr);
  free(h->address);
  free(h);
}

static void
on_holders(struct holders *h, int k, const struct graph_response *resp)
{
  json_t *value = json_object_get(resp->body, "value");

  if (h->result == GRAPH_OK && resp->result == GRAPH_OK &&
      !json_is_array(value)) {
    h->result = GRAPH_ERR_PROTOCOL;
    h->transient = 1;
    snprintf(h->errmsg, sizeof(h->errmsg),
             "%ss query answer has no \"value\" array", holder_kinds[k]);
  } else if (h->result == GRAPH_OK && resp->result != GRAPH_OK) {
    h->result = resp->result;
    h->status = resp->status;
    h->transient = graph_error_transient(resp);
    h->auth_permanent = resp->auth_permanent;
    snprintf(h->code, sizeof(h->code), "%s", resp->code ? resp->code : "");
    snprintf(h->errmsg, sizeof(h->errmsg), "%s", resp->errmsg);
  } else if (resp->result == GRAPH_OK) {
    h->values[k] = json_incref(value);
  }
  if (--h->waiting == 0)
    holders_finish(h);
}

static void
on_holders_users(void *ctx, const struct graph_response *resp)
{
  on_holders(ctx, 0, resp);
}

static void
on_holders_contacts(void *ctx, const struct graph_response *resp)
{
  on_holders(ctx, 1, resp);
}

static void
on_holders_groups(void *ctx, const struct graph_response *resp)
{
  on_holders(ctx, 2, resp);
}

/* "/<what>?$filter=<filter>&<rest>" with the filter URL-encoded. New
 * string. */
static char *
query_url(const char *what, const char *filter, const char *rest)
{
  char *encoded = http_urlencode(filter), *url;
  size_t n;

  if (encoded == NULL)
    return NULL;
  n = strlen(what) + strlen(encoded) + strlen(rest) + 16;
  url = malloc(n);
  if (url != NULL)
    snprintf(url, n, "/%s?$filter=%s&%s", what, encoded, rest);
  free(encoded);
  return url;
}

int
graph_address_holders(struct graph *graph, const char *address,
                      const char *anchor_attr, graph_holders_fn done,
                      void *ctx)
{
  static const char eventual[] = "ConsistencyLevel: eventual";
  static const graph_done_fn answers[3] = {
      on_holders_users, on_holders_contacts, on_holders_groups};
  struct holders *h = NULL;
  char *quoted = NULL, *prefixed = NULL, *smtp = NULL, *filter = NULL;
  char *url[3] = {0};
  size_t n;
  int sent = 0, rc = -1;

  if (address == NULL || address[0] == '\0')
    return -1;
  quoted = graph_odata_quote(address);
  n = strlen(address) + 8;
  prefixed = malloc(n);
  if (quoted == NULL || prefixed == NULL)
    goto out;
  snprintf(prefixed, n, "smtp:%s", address);
  smtp = graph_odata_quote(prefixed);
  if (smtp == NULL)
    goto out;
  n = 4 * strlen(quoted) + strlen(smtp) + 128;
  filter = malloc(n);
  if (filter == NULL)
    goto out;
  /* Users hold an address as mail, as a proxy address, or (an invited
   * user whose address another object had) in otherMails; contacts and
   * groups as mail or proxy address. Every one stands in the way. */
  snprintf(filter, n,
           "mail eq %s or userPrincipalName eq %s or "
           "otherMails/any(x:x eq %s) or proxyAddresses/any(x:x eq %s)",
           quoted, quoted, quoted, smtp);
  url[0] = query_url("users", filter,
                     "$select=id,displayName,mail,userPrincipalName,"
                     "proxyAddresses,userType,creationType,createdDateTime,"
                     "onPremisesExtensionAttributes&$top=5");
  snprintf(filter, n, "mail eq %s or proxyAddresses/any(x:x eq %s)", quoted,
           smtp);
  url[1] = query_url("contacts", filter,
                     "$select=id,displayName,mail&$count=true&$top=5");
  url[2] = query_url("groups", filter,
                     "$select=id,displayName,mail&$count=true&$top=5");
  h = calloc(1, sizeof(*h));
  if (url[0] == NULL || url[1] == NULL || url[2] == NULL || h == NULL)
    goto out;
  h->graph = graph;
  h->done = done;
  h->ctx = ctx;
  h->waiting = 3;
  h->result = GRAPH_OK;
  if ((anchor_attr != NULL &&
       (h->anchor_attr = strdup(anchor_attr)) == NULL) ||
      (h->address = strdup(address)) == NULL)
    goto out;
  /* Reads: through $batch when batching (round trips, not resource
   * units: each inner request counts on its own). Contacts' and groups'
   * address filters are advanced queries. */
  for (int k = 0; k < 3; k++) {
    if (submit(graph, "GET", 0, url[k], NULL, k == 0 ? NULL : eventual,
               answers[k], h) != 0)
      break;
    sent++;
  }
  if (sent < 3) {
    /* Those sent will answer: the ones that could not count as failed. */
    h->result = GRAPH_ERR_PROTOCOL;
    h->transient = 1;
    snprintf(h->errmsg, sizeof(h->errmsg), "cannot ask who holds %s", address);
    h->waiting -= 3 - sent;
    if (sent == 0)
      goto out;
    if (h->waiting == 0)
      holders_finish(h); /* those sent have answered already */
  }
  h = NULL;
  rc = 0;
out:
  if (h != NULL) {
    free(h->anchor_attr);
    free(h->address);
    free(h);
  }
  for (int k = 0; k < 3; k++)
    free(url[k]);
  free(quoted);
  free(prefixed);
  free(smtp);
  free(filter);
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
    r.transient = 1;
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
  /* Through $batch when batching, as PATCHes and finds: each invitation
   * still gets its own answer (invitedUser.id) through on_invite. */
  rc = body == NULL ? -1
                    : submit(graph, "POST", 0, "/invitations", body, NULL,
                             on_invite, c);
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
  /* PATCH and DELETE may go through $batch; a restore goes alone. */
  if (strcmp(method, "POST") != 0 && strncmp(url, "/beta/", 6) == 0)
    rc = submit(graph, method, 1, url + 5, body, NULL, on_plain, c);
  else if (strcmp(method, "POST") != 0 && strncmp(url, "/v1.0/", 6) == 0)
    rc = submit(graph, method, 0, url + 5, body, NULL, on_plain, c);
  else
    rc = graph_request(graph, method, url, body, NULL, on_plain, c);
  if (rc != 0)
    call_free(c);
  return rc;
}

static int
is_anchor_attr(const char *attr)
{
  return strncmp(attr, "extensionAttribute", 18) == 0;
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
    r.transient = 1;
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
    r.transient = 1;
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

static void
on_count(void *ctx, const struct graph_response *resp)
{
  struct call *c = ctx;
  json_t *n = json_object_get(resp->body, "@odata.count");
  struct graph_response r = *resp;
  long long count = -1;

  if (resp->result == GRAPH_OK) {
    if (json_is_integer(n) && json_integer_value(n) >= 0) {
      count = (long long)json_integer_value(n);
    } else {
      r.result = GRAPH_ERR_PROTOCOL;
      r.transient = 1;
      r.errmsg = "users count answer has no \"@odata.count\" number";
    }
  }
  c->count_done(c->ctx, &r, count);
  call_free(c);
}

int
graph_user_count(struct graph *graph, graph_count_fn done, void *ctx)
{
  static const char *const eventual[] = {"ConsistencyLevel: eventual", NULL};
  struct call *c = call_new(graph, ctx);
  int rc;

  if (c == NULL)
    return -1;
  c->count_done = done;
  /* $count is an advanced query: ConsistencyLevel eventual; $top=1 and
   * $select=id keep the answer (and its resource units) small. */
  rc = graph_get(graph, "/v1.0/users?$count=true&$top=1&$select=id", eventual,
                 on_count, c);
  if (rc != 0)
    call_free(c);
  return rc;
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

int
graph_delta_link_usable(const char *graph_url, const char *stored_base,
                        const char *delta_link)
{
  size_t a, b;

  if (delta_link == NULL)
    return 0;
  if (stored_base == NULL)
    return graph_url_is_under(graph_url, delta_link);
  a = strlen(graph_url);
  b = strlen(stored_base);
  while (a > 0 && graph_url[a - 1] == '/')
    a--;
  while (b > 0 && stored_base[b - 1] == '/')
    b--;
  return a == b && a > 0 && strncasecmp(graph_url, stored_base, a) == 0 &&
         graph_url_is_under(graph_url, delta_link);
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
