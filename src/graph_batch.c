/*
 * graph_batch — JSON batching: the pure $batch body builder and answer
 * parser (graph_batch_body, graph_batch_parse, graph_batch_wait), and the
 * batcher that graph_batch_enable() turns on. See include/graph.h.
 *
 * The batcher: a sub-request ("sub") waits in graph->queue until the
 * tick timer fires, then goes out in a batch of up to GRAPH_BATCH_MAX
 * subs of one version (v1.0 or beta), itself sent as an ordinary
 * graph_req to /{version}/$batch, so tokens, the outer 401 retry,
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
 */
#include "graph_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "retry.h"
#include "text.h"

/* Inner 429/503/504 retries of one sub-request, and their bounds. */
#define SUB_MAX_RETRIES 5
#define SUB_BACKOFF_BASE_MS 500
#define SUB_BACKOFF_CAP_MS 60000
#define SUB_MAX_RETRY_AFTER 300.0
/* How long a partial batch may wait for company while invitations are in
 * flight (each one is followed by a PATCH). */
#define BATCH_LINGER_MS 1000

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
  /* "o" takes the array even when json_pack() fails. */
  out = json_pack("{s:o}", "requests", requests);
  requests = NULL;
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

/* The string value of header `want` (any case) of an inner answer, or
 * NULL. */
static const char *
inner_header(const json_t *headers, const char *want)
{
  const char *name;
  json_t *v;

  json_object_foreach((json_t *)headers, name, v)
  {
    if (strcasecmp(name, want) == 0)
      return json_string_value(v);
  }
  return NULL;
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
    out[k].throttle_information = NULL;
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
    out[k].throttle_information =
        inner_header(headers, "x-ms-throttle-information");
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
  int partial;      /* fewer than GRAPH_BATCH_MAX */
  char *token;      /* the token the batch went with (for an inner 401) */
  int stale;        /* ... and it was past its prime (see authorize()) */
  uint64_t sent_ns; /* when it left its gate, 0: unknown */
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
  graph_answer(done, ctx, resp);
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

/* Every queued and delayed sub, answered with a copy of `proto`. */
static void
answer_waiting(struct graph *graph, const struct graph_response *proto)
{
  while (graph->queue != NULL || graph->delayed != NULL) {
    struct graph_response resp = *proto;
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
    sub_finish(sub, &resp);
  }
}

/* The batcher's timers refuse to start only once closing, and they are
 * closed only after graph_free() has set `freeing`, which every caller
 * checks first. Were one to refuse anyway, what waits for it would never
 * go: it is answered now, as a transient failure, with `sub` (NULL when
 * none) that could not be queued again. Only from the loop's callbacks
 * (never inside graph_submit()). */
static void
timer_refused(struct graph *graph, struct sub *sub, int rc)
{
  const struct graph_response resp = {
      .result = GRAPH_ERR_NETWORK,
      .errmsg = "$batch timer refused to start",
  };

  log_error("graph: $batch timer refused to start tenant=%s error=\"%s\"",
            graph->tenant->name, uv_strerror(rc));
  if (sub != NULL) {
    struct graph_response r = resp;
    sub_finish(sub, &r);
  }
  answer_waiting(graph, &resp);
}

/* Queue `sub` and see that a tick comes. Returns 0, or a libuv error when
 * the tick cannot start; the sub is then not queued (nor answered). */
static int
enqueue(struct graph *graph, struct sub *sub)
{
  struct sub *prev_tail = graph->queue_tail;
  int rc = 0;

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
    rc = uv_timer_start(graph->tick, on_tick, 0, 0);
  if (rc != 0) {
    /* Back out: it was the tail. */
    unqueued(graph, sub);
    graph->queue_tail = prev_tail;
    if (prev_tail != NULL)
      prev_tail->next = NULL;
    else
      graph->queue = NULL;
  }
  return rc;
}

/* Queue `sub` again from a loop callback; if it cannot be, it is answered
 * as the others waiting are (see timer_refused()). */
static void
requeue(struct graph *graph, struct sub *sub)
{
  int rc = enqueue(graph, sub);

  if (rc != 0)
    timer_refused(graph, sub, rc);
}

/* A partial batch is answered: the next one may go. */
static void
partial_done(struct graph *graph)
{
  int rc;

  graph->partials--;
  if (graph->queue == NULL || graph->freeing)
    return;
  rc = uv_timer_start(graph->tick, on_tick, 0, 0);
  if (rc != 0)
    timer_refused(graph, NULL, rc);
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
  int rc;

  if (graph->invites != 0 || graph->loop == NULL || graph->queue == NULL ||
      graph->freeing)
    return;
  rc = uv_timer_start(graph->tick, on_tick, 0, 0);
  if (rc != 0)
    timer_refused(graph, NULL, rc);
}

static void on_retry(uv_timer_t *t);

static void
arm_retry(struct graph *graph)
{
  uint64_t now = uv_now(graph->loop);
  int rc;

  if (graph->delayed == NULL || graph->freeing) {
    uv_timer_stop(graph->retry);
    return;
  }
  rc = uv_timer_start(
      graph->retry, on_retry,
      graph->delayed->due > now ? graph->delayed->due - now : 0, 0);
  if (rc != 0)
    timer_refused(graph, NULL, rc);
}

static void
on_retry(uv_timer_t *t)
{
  struct graph *graph = t->data;
  uint64_t now = uv_now(graph->loop);

  while (graph->delayed != NULL && graph->delayed->due <= now) {
    struct sub *sub = graph->delayed;
    graph->delayed = sub->next;
    requeue(graph, sub);
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
  const char *headers[4];
  struct graph_req *req = NULL;
  char *url;
  int i;

  for (i = 0; sub->headers[i] != NULL; i++)
    headers[i] = sub->headers[i];
  headers[i] = NULL;
  url = graph_url_build("/%s%s", sub->beta ? "beta" : "v1.0", sub->url);
  if (url != NULL)
    req = graph_req_prepare(graph, sub->method, url, sub->body, headers,
                            on_sub_plain, sub);
  free(url);
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
  graph_req_start(req);
}

static void
batch_free(struct batch *b)
{
  text_wipe_free(b->token);
  free(b);
}

/* An inner answer said to wait (429, 503, 504): slow the budget, close
 * the gate for its Retry-After (http has done so already as the batch's
 * answer came in: see batch_inner_wait) and send the sub again, alone,
 * after it. */
static void
sub_throttled(struct graph *graph, struct sub *sub,
              const struct graph_batch_answer *a, uint64_t sent_ns)
{
  double secs = a->retry_after;
  double u = (double)random() / ((double)RAND_MAX + 1.0);

  const char *why = a->throttle_information;
  enum gate_bucket bucket;

  sub->retries++;
  /* The limit the answer names (an invitation is a write too), else by
   * what the request costs. */
  if (why != NULL && strcasecmp(why, "ResourceUnitLimitExceeded") == 0)
    bucket = GATE_BUCKET_UNITS;
  else if (why != NULL && strcasecmp(why, "WriteLimitExceeded") == 0)
    bucket = GATE_BUCKET_WRITES;
  else if (sub->invitation)
    bucket = GATE_BUCKET_INVITATIONS;
  else if (strcmp(sub->method, "GET") == 0)
    bucket = GATE_BUCKET_UNITS;
  else
    bucket = GATE_BUCKET_WRITES;
  if (a->status == 429 || secs >= 0)
    http_gate_note_throttle(graph->http, graph->gate, secs, bucket, sent_ns);
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
  graph_describe_error(sub->method, path, a->status, a->body, &resp.code, msg,
                       sizeof(msg));
  resp.result = GRAPH_ERR_HTTP;
  resp.errmsg = msg;
  resp.body = a->body;
  /* Classified as a plain answer is (graph_error_class), acted on alike:
   * a token refusal gets a fresh token (the next batch asks for one),
   * throttling waits its own Retry-After and goes again. */
  switch (graph_error_class(&resp)) {
  case HTTP_CLASS_TOKEN:
    if (graph_token_retry(graph, b->token, b->stale, &sub->stale_retries,
                          &sub->refreshed, a->status, resp.code)) {
      requeue(graph, sub);
      return;
    }
    break;
  case HTTP_CLASS_THROTTLED:
    if (sub->retries < SUB_MAX_RETRIES) {
      sub_throttled(graph, sub, a, b->sent_ns);
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
  b->sent_ns = resp->sent_ns;
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
            : graph_req_prepare(graph, "POST",
                                b->beta ? "/beta/$batch" : "/v1.0/$batch",
                                payload, NULL, on_batch, b);
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
  graph_req_start(req);
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
    int rc = uv_timer_start(graph->tick, on_tick,
                            graph->queue->queued + BATCH_LINGER_MS - now, 0);
    if (rc != 0)
      timer_refused(graph, NULL, rc);
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
  if (uv_timer_init(loop, graph->tick) != 0) {
    free(graph->tick);
    free(graph->retry);
    graph->tick = graph->retry = NULL;
    return -1;
  }
  if (uv_timer_init(loop, graph->retry) != 0) {
    uv_close((uv_handle_t *)graph->tick, on_timer_closed); /* frees it */
    free(graph->retry);
    graph->tick = graph->retry = NULL;
    return -1;
  }
  graph->tick->data = graph->retry->data = graph;
  graph->loop = loop;
  return 0;
}

/* graph_free's part: every waiting sub is cancelled (batches in flight
 * are graph_reqs: graph_free cancels those). */
void
graph_batcher_cancel(struct graph *graph)
{
  const struct graph_response resp = {.result = GRAPH_ERR_CANCELLED,
                                      .errmsg = "cancelled"};

  answer_waiting(graph, &resp);
}

void
graph_batcher_close(struct graph *graph)
{
  if (graph->loop == NULL)
    return;
  uv_close((uv_handle_t *)graph->tick, on_timer_closed);
  uv_close((uv_handle_t *)graph->retry, on_timer_closed);
  graph->loop = NULL;
}

/* Queue METHOD /{v1.0|beta}`url` when batching, else send it now. Returns
 * 0, or -1 (callback never called). */
int
graph_submit(struct graph *graph, const char *method, int beta,
             const char *url, const json_t *body, const char *header,
             graph_done_fn done, void *ctx)
{
  struct sub *sub;

  if (graph->loop == NULL || graph->freeing) {
    const char *headers[] = {header, NULL};
    char *full = graph_url_build("/%s%s", beta ? "beta" : "v1.0", url);
    int rc;
    if (full == NULL)
      return -1;
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
  sub->invitation = graph_budget_invitations(method, url);
  sub->done = done;
  sub->ctx = ctx;
  if (enqueue(graph, sub) != 0) {
    sub_free(sub);
    return -1;
  }
  return 0;
}
