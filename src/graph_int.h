/*
 * graph_int — what the files of the graph module share, and nothing
 * outside it may use: the client and request structures and the internal
 * functions one file defines for another, as curl's lib/urldata.h and
 * lib/vtls/vtls_int.h are for its files. The module's contract is
 * include/graph.h; this header is not in include/ and nothing but
 * src/graph*.c includes it.
 *
 *   graph.c        the client: requests, tokens, answers and errors,
 *                  request costs, the URL builder
 *   graph_delta.c  users/delta pages, items, merge, stored users' keys
 *   graph_batch.c  $batch bodies and answers, the batcher
 *   graph_users.c  target-side user operations and lookups
 *
 * Invariants: a graph_req is on graph->reqs from graph_req_prepare()
 * until its callback (or until graph_free() detaches it); a sub (the
 * batcher's, defined in graph_batch.c) belongs to one place at a time
 * and ends in one callback. graph->loop is NULL until
 * graph_batch_enable(), and then the batcher owns tick and retry.
 */
#ifndef GALBRIDGE_GRAPH_INT_H
#define GALBRIDGE_GRAPH_INT_H

#include "graph.h"

#define GRAPH_MAX_HEADERS 8
#define GRAPH_ERRMSG_MAX 512
/* The longest URL (or part of one) galbridge builds. URLs are built from
 * ids, addresses and links that come from a tenant or the network; one
 * cut short would ask another question, so a longer one is refused with
 * an error instead. Twice what HTTP.sys, for one, takes by default for a
 * request line and its headers (16 KiB). */
#define GRAPH_URL_MAX 32768

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
  /* A binary request or answer (photos): `body` holds raw_len bytes sent
   * as they are (the caller's headers name the Content-Type), and a 2xx
   * answer is handed over raw, not decoded as JSON, its body capped at
   * max_body bytes (0: the client's cap). */
  int raw;
  size_t raw_len;
  size_t max_body;
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

/* --- graph.c --- */

/* A request for `url` (relative to the tenant's Graph base URL, or an
 * absolute one under it), its body, headers and callback copied, put on
 * graph->reqs but not started; NULL on a URL outside the base (logged),
 * more than GRAPH_MAX_HEADERS headers or allocation failure. The caller
 * may set its fields (tolerant, batch, costs...) before
 * graph_req_start(). */
struct graph_req *graph_req_prepare(struct graph *graph, const char *method,
                                    const char *url, const json_t *body,
                                    const char *const *headers,
                                    graph_done_fn done, void *ctx);

/* Send a prepared request: a token, then http. Its callback is called
 * exactly once from then on (perhaps before this returns, on failure). */
void graph_req_start(struct graph_req *req);

/* A token refusal of a request, a $batch or an inner request that left
 * with `token`: whether to go again with a fresh one (the token is then
 * invalidated), counting the try in *stale_retries or *refreshed. */
int graph_token_retry(struct graph *graph, const char *token, int stale,
                      int *stale_retries, int *refreshed, long status,
                      const char *code);

/* Fill *code (borrowed from body, "" if none) and msg, one log line of
 * valid UTF-8 (cut at a character), from a Graph error body of `method`
 * `path` (or whatever came). */
void graph_describe_error(const char *method, const char *path, long status,
                          json_t *body, const char **code, char *msg,
                          size_t msglen);

/* Hand `resp` to `done`: code and errmsg made "" when NULL, transient
 * set as graph_error_transient() says. Every answer a caller gets, of a
 * plain request or of a sub-request of a $batch, goes through here (but
 * graph_free()'s cancellations). */
void graph_answer(graph_done_fn done, void *ctx, struct graph_response *resp);

/* Whether `method` `url` is an invitation (POST .../invitations): the
 * budget's invitations cost. */
unsigned graph_budget_invitations(const char *method, const char *url);

/* A new string of printf-style `fmt`, as long as what it holds, or NULL
 * on allocation failure or when it would be over GRAPH_URL_MAX bytes
 * (logged). */
char *graph_url_build(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* A request whose body is `len` bytes of binary `data` (copied; NULL:
 * none) and whose 2xx answer is handed over raw (resp->raw, raw_len,
 * content_type), at most `max_body` bytes of it; otherwise as
 * graph_req_prepare(). The caller starts it with graph_req_start(). */
struct graph_req *
graph_req_prepare_raw(struct graph *graph, const char *method, const char *url,
                      const void *data, size_t len, const char *const *headers,
                      size_t max_body, graph_done_fn done, void *ctx);

/* --- graph_batch.c --- */

/* Queue METHOD /{v1.0|beta}`url` when batching, else send it now.
 * `header` is one "Name: value" line or NULL. Returns 0, or -1 (callback
 * never called). */
int graph_submit(struct graph *graph, const char *method, int beta,
                 const char *url, const json_t *body, const char *header,
                 graph_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* graph_free()'s part: cancel every queued and delayed sub (their
 * callbacks run now); close the batcher's timers (freed in their close
 * callbacks: the loop must run afterwards). */
void graph_batcher_cancel(struct graph *graph);
void graph_batcher_close(struct graph *graph);

#endif
