/*
 * http — every HTTP request galbridge makes, on one curl multi handle
 * driven by the libuv loop (one uv_poll_t per socket, one uv_timer_t for
 * curl's timer, as curl's multi-uv example, done properly).
 *
 * Requests carry their own retry policy: network errors, 429, 503 and 504
 * are retried with exponential backoff and full jitter, honouring
 * Retry-After (seconds, possibly fractional, or an HTTP-date); retry.h
 * holds those decisions. A request may name a "gate" (for example
 * "<tenant id>/graph", see gate.h): after a 429 or a 503/504 with
 * Retry-After on a gate, no request on that gate is sent before the time
 * has passed (DESIGN.md invariant 7); other gates go on.
 * The gate closes as the answer's headers are read (for a throttled
 * answer inside a 2xx one, such as Graph's $batch, as its body is
 * complete: http_request.inner_wait), before libcurl can hand that
 * connection, or any other, to a request that waits for one; a request
 * libcurl was about to send on a closed gate is put back unsent.
 *
 * TLS verification is always on; a request's ca_file replaces the trust
 * store, it never disables checking. Plain http:// is accepted only to a
 * loopback host (127.0.0.1, [::1], localhost: unit tests and local fakes);
 * redirects are never followed (read Location with http_response_header).
 * Response bodies are capped. Nothing here logs a header or a body: they
 * may hold tokens and secrets.
 *
 * A certificate verification failure is permanent (not retried); other
 * network errors are retried, whatever the method: callers' writes are
 * idempotent (DESIGN.md invariant 2). Requests waiting for a gate or a
 * retry are bounded only by what the caller sends.
 *
 * http_new() takes a curl_global_init() reference and the client's last
 * close callback drops it. libcurl runs with CURLOPT_NOSIGNAL, so the
 * process must ignore SIGPIPE (OpenSSL writes to sockets with write(2)).
 *
 * Only this module includes curl.
 */
#ifndef GALBRIDGE_HTTP_H
#define GALBRIDGE_HTTP_H

#include <stddef.h>
#include <time.h>
#include <uv.h>

#include "gate.h"

struct http;

/* A zero (or NULL) field takes its default. */
struct http_options {
  long connect_timeout_ms; /* default 10000 */
  long timeout_ms;         /* whole transfer, default 60000 */
  size_t max_body;         /* response body cap, default 64 MiB */
  int max_attempts;        /* default 5 (1 = no retry) */
  long backoff_base_ms;    /* default 500 */
  long backoff_cap_ms;     /* default 60000 */
  double max_retry_after;  /* seconds; longer Retry-After is capped, 300 */
  const char *user_agent;  /* default "galbridge/VERSION" */
};

/* Error codes in http_response.error (0 when an HTTP status came back,
 * whatever it was) and from http_send(). */
enum http_error {
  HTTP_OK = 0,
  HTTP_ERR_NETWORK = -1,   /* connect/TLS/reset/timeout: see errmsg */
  HTTP_ERR_TOO_LARGE = -2, /* body over max_body */
  HTTP_ERR_CANCELLED = -3, /* http_close() while in flight */
  HTTP_ERR_INTERNAL = -4,  /* allocation or curl set-up failure */
  HTTP_ERR_INVALID = -5,   /* http_send(): bad URL, scheme, method, header */
};

struct http_request {
  const char *method;         /* "GET", "POST", "PATCH", "DELETE" */
  const char *url;            /* absolute https:// URL (see above) */
  const char *const *headers; /* NULL-terminated "Name: value" or NULL */
  const char *body;           /* may be NULL */
  size_t body_len;
  const char *ca_file; /* PEM bundle replacing the trust store, or NULL */
  const char *gate;    /* backpressure key, or NULL ("" = NULL) */
  int max_attempts;    /* 0: the client's default; 1: no retry */
  /* What the request costs against its gate's budget (see
   * http_gate_set_limits and gate.h): directory writes it carries (1 for a
   * PATCH, POST or DELETE, n for a $batch of n writes, 0 for a read),
   * invitations among them, and resource units (every request's, reads
   * included). A request is not started before its gate's buckets hold
   * that much; one that costs only units is not held behind writes
   * waiting for theirs. */
  unsigned writes;
  unsigned invitations;
  unsigned units;
  /* Optional. Called from the loop just before each attempt is sent (the
   * gate open, the budget taken), with the callback's ctx: it returns the
   * Authorization header line for this attempt ("Authorization: Bearer
   * ...", borrowed until it returns), which replaces the one in
   * `headers`, or NULL to keep that one. A request can wait for its gate
   * and budget longer than a token lives: this way the credential it
   * carries is the one current when it leaves. */
  const char *(*authorization)(void *ctx);
  /* Optional, for answers that carry answers (Graph's $batch). Called
   * from inside the transfer, with the callback's ctx, as soon as the
   * body of a 2xx answer is complete as a JSON object or array (`body`
   * borrowed, NUL-terminated): it returns how many seconds the service
   * asked this gate to wait in a throttled answer inside (at most
   * max_retry_after is kept), or a negative value when it asked no wait.
   * The gate is then closed at once, before libcurl can send another
   * request on it (DESIGN.md invariant 7). It must not call into http:
   * the done callback is where the answer is acted on. */
  double (*inner_wait)(void *ctx, const char *body, size_t len);
  /* The response body cap of this request (a photo's size limit): 0 or
   * more than the client's max_body takes the client's. A larger body
   * ends the request with HTTP_ERR_TOO_LARGE, never retried. */
  size_t max_body;
};

/* When error != 0 the response carries no status (0), an empty body, no
 * headers and retry_after -1: a truncated answer is never handed over. */
struct http_response {
  long status;        /* HTTP status, 0 if none came back */
  int error;          /* enum http_error */
  const char *errmsg; /* "" unless error != 0: curl's text, no secrets */
  const char *body;   /* NUL-terminated (body_len excludes the NUL) */
  size_t body_len;
  double retry_after; /* seconds from Retry-After (capped at
                         max_retry_after), -1 when absent or unparsable */
  int attempts;       /* how many times the request was sent */
  uint64_t sent_ns;   /* when its last attempt left its gate (uv_hrtime()
                         clock), 0 when unknown */
  const void *priv;   /* for http_response_header() */
};

/* What an answer means for its sender, by status: the one classification
 * of errors that graph and exo refine with the service's own codes and
 * use alike for a plain request, a $batch answer as a whole and each
 * answer inside one. */
enum http_class {
  HTTP_CLASS_OK = 0,    /* 2xx */
  HTTP_CLASS_TOKEN,     /* 401: the token was refused (expired, revoked):
                           a new token and a retry may well fix it */
  HTTP_CLASS_THROTTLED, /* 429, 503, 504: come back later (Retry-After) */
  HTTP_CLASS_TRANSIENT, /* no answer (status 0), 408, any other 5xx */
  HTTP_CLASS_PERMANENT, /* any other status: this request is refused */
};

/* The class of an answer with HTTP status `status` (0: none came). */
enum http_class http_status_class(long status);

/* Called once per request when it is finished for good (success, a
 * non-retryable status, or retries exhausted). `resp` and everything it
 * points to are borrowed until the callback returns. */
typedef void (*http_done_fn)(void *ctx, const struct http_response *resp);

/* A new client on `loop`; `opts` may be NULL for defaults. Returns NULL
 * on allocation or curl initialisation failure. */
struct http *http_new(uv_loop_t *loop, const struct http_options *opts);

/* Cancel what is in flight or waiting (their callbacks run with
 * HTTP_ERR_CANCELLED before this returns), close every handle and free the
 * client once the loop has run the close callbacks. Call while the loop
 * still runs (or run it afterwards until uv_run returns 0). May be called
 * from a done callback; a second call does nothing. */
void http_close(struct http *http);

/* Start `req` (everything it points to is copied). Returns 0, or a
 * negative enum http_error (HTTP_ERR_INVALID, HTTP_ERR_INTERNAL, or
 * HTTP_ERR_CANCELLED once http_close() has been called); if it returns an
 * error the callback is never called. The callback always runs from the
 * loop, never from inside http_send(). */
int http_send(struct http *http, const struct http_request *req,
              http_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* Value of response header `name` (case-insensitive; the first one when
 * repeated, surrounding whitespace trimmed), borrowed like the response,
 * or NULL. At most 100 headers / 64 KiB of a response are kept. */
const char *http_response_header(const struct http_response *resp,
                                 const char *name);

/* Copy up to `max` counters of `gate` (every attempt counts, retries
 * included) into out; *throttled gets how many answers closed the gate
 * (429, or 503/504 with Retry-After). Returns how many were copied. */
size_t http_gate_stats(const struct http *http, const char *gate,
                       struct gate_stat *out, size_t max,
                       unsigned long long *throttled);

/* Seconds until `gate` opens again (0 when open). */
double http_gate_wait(const struct http *http, const char *gate);

/* Give `gate` the client-side budget `limits` (struct gate_limits: the
 * server's documented limits, so that it rarely has to answer 429).
 * Requests on it are then paced; waiting ones are looked at again at
 * once. Returns 0, or -1 on a bad value or allocation failure, or once
 * http_close() has been called. */
int http_gate_set_limits(struct http *http, const char *gate,
                         const struct gate_limits *limits);

/* An inner request of a $batch sent on `gate` (its $batch left the gate
 * at `sent_ns`, http_response.sent_ns; 0: unknown) was throttled with
 * `retry_after` seconds (-1: none given): teach the gate's `bucket` as
 * a 429 would (the write budget when that bucket is unlimited) and, when
 * a Retry-After is given, close the gate until it has passed, as a 429 of
 * a request of its own would (DESIGN.md invariant 7). The caller retries
 * that inner request itself, alone, after its own Retry-After. Nothing
 * when the gate has not been used or given limits. */
void http_gate_note_throttle(struct http *http, const char *gate,
                             double retry_after, enum gate_bucket bucket,
                             uint64_t sent_ns);

/* Fill `out` with `gate`'s budget as it stands (struct gate_budget).
 * Returns 0, or -1 (out zeroed when not NULL) when the gate has not been
 * used or given limits. */
int http_gate_budget(const struct http *http, const char *gate,
                     struct gate_budget *out);

/* What `bucket` of `gate` has learnt (gate_learnt); -1 when the gate
 * has not been made or the bucket is unlimited. */
int http_gate_learnt(const struct http *http, const char *gate,
                     enum gate_bucket bucket, struct gate_learnt *out);

/* Give it back after a restart (gate_learn); -1 when the gate has not
 * been made, or the values do not apply. */
int http_gate_learn(struct http *http, const char *gate,
                    enum gate_bucket bucket, const struct gate_learnt *in);

/* gate_learnt_changes() of `gate` (0 when it has not been made). */
unsigned long long http_gate_learnt_changes(const struct http *http,
                                            const char *gate);

/* Percent-encode `s` for a URL query or form value (everything but
 * ALPHA, DIGIT and "-._~"). New string, or NULL when `s` is NULL or on
 * allocation failure. */
char *http_urlencode(const char *s);

/* An ISO 8601 time in UTC as Microsoft's services write them
 * ("2026-12-07T13:00:00Z", with or without fractions, or "+00:00"), or 0
 * when `value` is NULL or not one. */
time_t http_parse_iso8601(const char *value);

#endif
