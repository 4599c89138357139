/*
 * http — see include/http.h.
 *
 * One curl multi handle is driven by the libuv loop with the "socket
 * action" interface: curl's socket callback keeps one uv_poll_t per socket
 * (tied to curl with curl_multi_assign, freed in its close callback), and
 * curl's timer callback keeps one one-shot uv_timer_t. Neither callback
 * calls back into libcurl (curl_multi_assign aside, which curl allows), and
 * a timeout of 0 becomes 1 ms so that curl_multi_socket_action() always
 * runs from the loop. Every socket action is followed by draining
 * curl_multi_info_read(), and a finished transfer's results are read
 * before curl_multi_remove_handle().
 *
 * Request life: http_send() copies the request into a `struct req`, builds
 * its easy handle and queues it on its gate; a zero-delay "wake" timer then
 * starts it from the loop. So a callback never runs inside http_send(). A
 * request is always in exactly one place: waiting on its gate (gate.h:
 * the gate's FIFOs, which pace it by the gate's budget), the delayed list
 * (sorted by the time its retry may start) or the running list (attached
 * to the multi handle). A retry goes to the delayed list, then to the tail
 * of its gate's queue. The wake timer is armed for the earliest moment
 * anything can move (gate_next_at() on the monotonic clock, uv_hrtime).
 * Waiting requests are bounded only by what the caller sends: this module
 * adds no limit of its own. Each attempt asks the request's authorization
 * hook, if any, for the credential to send as it starts (a wait can
 * outlast a token). Answers are fed back to the gate (gate_answer,
 * gate_count), and a throttled one closes it.
 *
 * There is one gate per distinct name the caller uses (tenant × service;
 * for Graph, tenant × application), living as long as the client.
 *
 * When a gate closes matters as much as how long: it closes from inside
 * the transfer, as the throttled answer's headers are read (on_header),
 * or, for a throttled answer inside a 2xx one (Graph's $batch), as soon
 * as its body is complete JSON and the request's inner_wait hook has read
 * it (on_body). Closing it later, when drain() gets the finished transfer
 * from curl_multi_info_read(), was too late: requests handed to curl
 * together (as when a gate reopens) do not all get a connection at once,
 * and a transfer waiting inside libcurl for one is given the connection
 * the throttled answer frees within the same curl_multi_socket_action()
 * that read that answer, before drain() runs: it went out on the very
 * connection that had just carried the 429. prereq_hold() stops any such
 * request unsent once the gate is closed.
 *
 * Plain http:// is refused except to a loopback host (127.0.0.1, [::1],
 * localhost), which unit tests and local fakes use; everything else must
 * be https with the peer and host name verified.
 *
 * Closing: http_close() cancels every request (callbacks run before it
 * returns), cleans up the multi handle while the loop still runs, closes
 * every handle, and the last close callback frees the client. A user
 * callback may call http_send() (refused once closing) or http_close()
 * from anywhere; code that invokes a callback re-checks `closing` after it.
 *
 * Logs are debug-level and carry method, URL without query or userinfo,
 * status, attempt, delay and gate: never a header or a body.
 */
#include "http.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <curl/curl.h>

#include "gate.h"
#include "log.h"
#include "retry.h"
#include "text.h"
#include "version.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 10000L
#define DEFAULT_TIMEOUT_MS 60000L
#define DEFAULT_MAX_BODY ((size_t)64 * 1024 * 1024)
#define DEFAULT_MAX_ATTEMPTS 5
#define DEFAULT_BACKOFF_BASE_MS 500L
#define DEFAULT_BACKOFF_CAP_MS 60000L
#define DEFAULT_MAX_RETRY_AFTER 300.0

/* Response headers kept per response; more, or longer, are dropped. */
#define HDR_MAX 100
#define HDR_BYTES_MAX (64 * 1024)

#define NS_PER_MS 1000000ULL

struct req;

struct rlist {
  struct req *head, *tail;
};

/* One watched socket; freed in its close callback. */
struct sock {
  struct sock *prev, *next;
  struct http *http;
  curl_socket_t fd;
  uv_poll_t poll;
};

struct req {
  struct req *prev, *next;
  struct rlist *list; /* the list it is on (delayed, running), or NULL */
  struct http *http;
  struct gate_waiter waiter; /* its gate, its cost; waiting on the gate */
  CURL *easy;
  struct curl_slist *headers;
  char *method;
  char *log_url; /* no query, fragment or userinfo */
  char *body;    /* may hold a secret (a token request): wiped when freed */
  size_t body_len;
  int max_attempts;
  int attempt;       /* sends so far */
  int held;          /* the attempt was stopped unsent (prereq_hold) */
  double backoff_ms; /* this attempt's backoff, drawn as it starts */
  double (*inner_wait)(void *ctx, const char *body, size_t len);
  uint64_t not_before; /* uv_hrtime() before which a retry waits */
  const char *(*authorization)(void *ctx); /* see http_request */
  http_done_fn done;
  void *ctx;
  /* The current attempt's response. */
  char *rbody;
  size_t rlen, rcap;
  char *hdr[HDR_MAX]; /* each "name\0value\0" */
  size_t nhdr, hdr_bytes;
  long status;     /* of the last status line read (0: none yet) */
  int gate_closed; /* this answer has closed the gate (on_header) */
  /* The body's JSON framing, followed for inner_wait: 0 before the
   * value, 1 inside it, 2 done (or not an object or array). */
  int json_state, json_depth, json_string, json_escape;
  int too_large;
  int oom;
  size_t max_body; /* this request's body cap (<= the client's) */
  char errbuf[CURL_ERROR_SIZE];
};

struct http {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t curl_timer; /* curl's timeout */
  uv_timer_t wake;       /* the next gate reopening or retry */
  int live_handles;      /* handles whose close callback is pending */
  int closing;
  int gzip;  /* libcurl can decode gzip */
  int http2; /* libcurl can speak HTTP/2 */
  long connect_timeout_ms;
  long timeout_ms;
  size_t max_body;
  int max_attempts;
  long backoff_base_ms;
  long backoff_cap_ms;
  double max_retry_after;
  char *user_agent;
  struct gate_set *gates;
  struct rlist delayed;
  struct rlist running;
  struct sock *socks;
};

static void on_wake(uv_timer_t *timer);

/* --- lists --- */

static void
list_push(struct rlist *l, struct req *r)
{
  r->list = l;
  r->next = NULL;
  r->prev = l->tail;
  if (l->tail != NULL)
    l->tail->next = r;
  else
    l->head = r;
  l->tail = r;
}

static void
list_remove(struct req *r)
{
  struct rlist *l = r->list;

  if (l == NULL)
    return;
  if (r->prev != NULL)
    r->prev->next = r->next;
  else
    l->head = r->next;
  if (r->next != NULL)
    r->next->prev = r->prev;
  else
    l->tail = r->prev;
  r->prev = r->next = NULL;
  r->list = NULL;
}

static struct req *
list_pop(struct rlist *l)
{
  struct req *r = l->head;

  if (r != NULL)
    list_remove(r);
  return r;
}

/* Keep the delayed list sorted by not_before (FIFO among equals). */
static void
delayed_insert(struct http *h, struct req *r)
{
  struct req *at = h->delayed.tail;

  while (at != NULL && at->not_before > r->not_before)
    at = at->prev;
  if (at == NULL) {
    r->list = &h->delayed;
    r->prev = NULL;
    r->next = h->delayed.head;
    if (h->delayed.head != NULL)
      h->delayed.head->prev = r;
    else
      h->delayed.tail = r;
    h->delayed.head = r;
    return;
  }
  r->list = &h->delayed;
  r->prev = at;
  r->next = at->next;
  if (at->next != NULL)
    at->next->prev = r;
  else
    h->delayed.tail = r;
  at->next = r;
}

/* --- small helpers --- */

static double
random_unit(void)
{
  uint64_t x;

  if (getrandom(&x, sizeof x, GRND_NONBLOCK) != (ssize_t)sizeof x) {
    /* No entropy yet (early boot): jitter needs spread, not secrecy. */
    x = uv_hrtime() * 0x9E3779B97F4A7C15ULL;
    x ^= x >> 29;
  }
  return (double)(x >> 11) * 0x1.0p-53;
}

/* --- responses --- */

static void
headers_clear(struct req *r)
{
  for (size_t i = 0; i < r->nhdr; i++)
    free(r->hdr[i]);
  r->nhdr = 0;
  r->hdr_bytes = 0;
}

static const char *
header_find(const struct req *r, const char *name)
{
  for (size_t i = 0; i < r->nhdr; i++) {
    if (strcasecmp(r->hdr[i], name) == 0)
      return r->hdr[i] + strlen(r->hdr[i]) + 1;
  }
  return NULL;
}

static void
response_reset(struct req *r)
{
  headers_clear(r);
  if (r->rbody != NULL)
    explicit_bzero(r->rbody, r->rlen); /* a token endpoint's answer */
  free(r->rbody);
  r->rbody = NULL;
  r->rlen = r->rcap = 0;
  r->status = 0;
  r->gate_closed = 0;
  r->json_state = r->json_depth = r->json_string = r->json_escape = 0;
  r->too_large = 0;
  r->oom = 0;
  r->errbuf[0] = '\0';
}

/* Follows the JSON framing of the body as it comes in: returns 1 once,
 * on the data that completes a top-level object or array. Strings are
 * skipped with their escapes; nothing else of JSON matters to find the
 * end. A body that is not an object or array is left alone (state 2). */
static int
json_complete(struct req *r, const char *p, size_t n)
{
  for (size_t i = 0; i < n && r->json_state != 2; i++) {
    char c = p[i];

    if (r->json_state == 0) {
      if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
        continue;
      r->json_state = c == '{' || c == '[' ? 1 : 2;
      r->json_depth = 1;
      continue;
    }
    if (r->json_string) {
      if (r->json_escape)
        r->json_escape = 0;
      else if (c == '\\')
        r->json_escape = 1;
      else if (c == '"')
        r->json_string = 0;
      continue;
    }
    if (c == '"') {
      r->json_string = 1;
    } else if (c == '{' || c == '[') {
      r->json_depth++;
    } else if ((c == '}' || c == ']') && --r->json_depth == 0) {
      r->json_state = 2;
      return 1;
    }
  }
  return 0;
}

/* The body of a 2xx answer is complete: if the request's inner_wait
 * finds a throttled answer inside, the gate closes now, from inside the
 * transfer (see the top of this file). */
static void
inner_read(struct req *r)
{
  double s = r->inner_wait(r->ctx, r->rbody, r->rlen);

  if (!(s >= 0))
    return;
  if (s > r->http->max_retry_after)
    s = r->http->max_retry_after;
  gate_close(r->waiter.gate, uv_hrtime(), s * 1000.0);
}

static size_t
on_body(char *data, size_t size, size_t nmemb, void *userp)
{
  struct req *r = userp;
  size_t n = size * nmemb;
  size_t max = r->max_body;

  if (n > max - r->rlen) {
    r->too_large = 1;
    return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
  }
  if (r->rlen + n + 1 > r->rcap) {
    size_t cap = r->rcap < 4096 ? 4096 : r->rcap;
    char *p;

    while (cap < r->rlen + n + 1)
      cap = cap > (max + 1) / 2 ? max + 1 : cap * 2;
    if (cap > max + 1)
      cap = max + 1;
    /* Not realloc: the old buffer is wiped before it goes back. */
    p = malloc(cap);
    if (p == NULL) {
      r->oom = 1;
      return 0;
    }
    if (r->rbody != NULL) {
      memcpy(p, r->rbody, r->rlen);
      explicit_bzero(r->rbody, r->rlen);
      free(r->rbody);
    }
    r->rbody = p;
    r->rcap = cap;
  }
  memcpy(r->rbody + r->rlen, data, n);
  r->rlen += n;
  r->rbody[r->rlen] = '\0';
  if (r->inner_wait != NULL && r->status >= 200 && r->status < 300 &&
      json_complete(r, data, n))
    inner_read(r);
  return n;
}

static int
is_ows(char c)
{
  return c == ' ' || c == '\t';
}

/* The code of a status line "HTTP/1.1 429 Too Many Requests" (or
 * "HTTP/2 429"), or 0. */
static long
status_line_code(const char *p, size_t n)
{
  const char *sp = memchr(p, ' ', n);
  size_t left;

  if (sp == NULL)
    return 0;
  left = n - (size_t)(sp + 1 - p);
  sp++;
  if (left < 3 || !isdigit((unsigned char)sp[0]) ||
      !isdigit((unsigned char)sp[1]) || !isdigit((unsigned char)sp[2]) ||
      (left > 3 && isdigit((unsigned char)sp[3])))
    return 0;
  return (sp[0] - '0') * 100 + (sp[1] - '0') * 10 + (sp[2] - '0');
}

/* The Retry-After of the answer being read (capped at max_retry_after),
 * or -1 when it has none or an unparsable one. */
static double
answer_retry_after(const struct req *r)
{
  const char *v = header_find(r, "Retry-After");
  double s;

  if (v == NULL || retry_parse_after(v, time(NULL), &s) != 0)
    return -1;
  return s < r->http->max_retry_after ? s : r->http->max_retry_after;
}

/* The final answer's headers are read: a throttled one closes its gate
 * now, before libcurl can send another request on it (see the top of
 * this file). */
static void
headers_read(struct req *r)
{
  double ra;

  if (r->status < 200 || r->gate_closed)
    return;
  ra = answer_retry_after(r);
  if (!gate_closes_on(r->status, ra))
    return;
  r->gate_closed = 1;
  gate_close(r->waiter.gate, uv_hrtime(),
             ra >= 0 ? ra * 1000.0 : r->backoff_ms);
}

/* Keeps the headers of the last response (a 1xx or proxy CONNECT reply
 * starts a new set); bounded by HDR_MAX and HDR_BYTES_MAX. */
static size_t
on_header(char *data, size_t size, size_t nmemb, void *userp)
{
  struct req *r = userp;
  size_t n = size * nmemb, len = n, nlen, vlen;
  const char *colon, *v;
  char *e;

  if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
    headers_clear(r);
    r->status = status_line_code(data, n);
    return n;
  }
  while (len > 0 && (data[len - 1] == '\r' || data[len - 1] == '\n'))
    len--;
  if (len == 0) {
    headers_read(r);
    return n;
  }
  if (is_ows(data[0]))
    return n; /* an obsolete folded line */
  colon = memchr(data, ':', len);
  if (colon == NULL || colon == data)
    return n;
  nlen = (size_t)(colon - data);
  v = colon + 1;
  vlen = len - nlen - 1;
  while (vlen > 0 && is_ows(*v)) {
    v++;
    vlen--;
  }
  while (vlen > 0 && is_ows(v[vlen - 1]))
    vlen--;
  if (r->nhdr == HDR_MAX || nlen + vlen + 2 > HDR_BYTES_MAX - r->hdr_bytes)
    return n;
  e = malloc(nlen + vlen + 2);
  if (e == NULL) {
    r->oom = 1;
    return 0;
  }
  memcpy(e, data, nlen);
  e[nlen] = '\0';
  memcpy(e + nlen + 1, v, vlen);
  e[nlen + 1 + vlen] = '\0';
  r->hdr[r->nhdr++] = e;
  r->hdr_bytes += nlen + vlen + 2;
  return n;
}

/* --- request set-up --- */

/* Checks the scheme (https, or http to a loopback host) and makes the URL
 * used in logs. Returns 0, or HTTP_ERR_INVALID / HTTP_ERR_INTERNAL with
 * *why set. */
static int
check_url(const char *url, char **log_url, int *plain, int *loopback,
          const char **why)
{
  int result = HTTP_ERR_INTERNAL;
  CURLU *u = curl_url();
  char *scheme = NULL, *host = NULL, *clean = NULL;

  *why = "out of memory";
  if (u == NULL)
    goto out;
  result = HTTP_ERR_INVALID;
  *why = "malformed URL";
  if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
    goto out;
  *loopback = text_is_loopback(host, strlen(host));
  *plain = strcasecmp(scheme, "http") == 0;
  *why = "scheme not allowed (https only; http only to loopback)";
  if (strcasecmp(scheme, "https") != 0 && !(*plain && *loopback))
    goto out;
  *why = "malformed URL";
  if (curl_url_set(u, CURLUPART_QUERY, NULL, 0) != CURLUE_OK ||
      curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK ||
      curl_url_set(u, CURLUPART_USER, NULL, 0) != CURLUE_OK ||
      curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) != CURLUE_OK ||
      curl_url_set(u, CURLUPART_OPTIONS, NULL, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_URL, &clean, 0) != CURLUE_OK)
    goto out;
  result = HTTP_ERR_INTERNAL;
  *why = "out of memory";
  *log_url = strdup(clean);
  if (*log_url == NULL)
    goto out;
  result = 0;
out:
  curl_free(clean);
  curl_free(host);
  curl_free(scheme);
  curl_url_cleanup(u);
  return result;
}

static int
check_method(const char *m)
{
  size_t n = 0;

  if (m == NULL)
    return -1;
  for (; m[n] != '\0'; n++) {
    if (m[n] < 'A' || m[n] > 'Z' || n >= 16)
      return -1;
  }
  return n > 0 ? 0 : -1;
}

static int
check_header(const char *line)
{
  return line[0] != '\0' && strpbrk(line, "\r\n") == NULL ? 0 : -1;
}

static void
req_free(struct req *r)
{
  if (r == NULL)
    return;
  response_reset(r);
  if (r->easy != NULL)
    curl_easy_cleanup(r->easy);
  /* Headers hold bearer tokens, the body of a token request the client
   * secret or assertion: wiped before they go back to the allocator
   * (libcurl's own copies are out of reach; the process is not dumpable
   * and never writes them anywhere). */
  for (struct curl_slist *l = r->headers; l != NULL; l = l->next)
    explicit_bzero(l->data, strlen(l->data));
  curl_slist_free_all(r->headers);
  free(r->method);
  free(r->log_url);
  if (r->body != NULL)
    explicit_bzero(r->body, r->body_len);
  free(r->body);
  free(r);
}

/* Everything but the per-attempt state. Returns 0 or -1. */
/* CURLOPT_PREREQFUNCTION: the connection is ready and the request about
 * to be written. A request can be handed to curl and then wait for a
 * connection (a TLS handshake, another request's ALPN) while an answer on
 * its gate says to wait: it is stopped unsent then, and attempt_done puts
 * it back to wait for the gate (DESIGN.md invariant 7 holds on the wire,
 * not only when requests are handed to curl). */
static int
prereq_hold(void *clientp, char *primary_ip, char *local_ip, int primary_port,
            int local_port)
{
  struct req *r = clientp;

  (void)primary_ip;
  (void)local_ip;
  (void)primary_port;
  (void)local_port;
  if (gate_closed(r->waiter.gate, uv_hrtime())) {
    r->held = 1;
    return CURL_PREREQFUNC_ABORT;
  }
  return CURL_PREREQFUNC_OK;
}

static int
setup_easy(struct http *h, struct req *r, const struct http_request *req,
           int plain, int loopback)
{
  CURL *e = r->easy;
  int bad = 0;
  int has_body = req->body != NULL;

  bad |= curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR,
                          plain ? "http" : "https") != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "https") != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, prereq_hold) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_PREREQDATA, r) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_SSLVERSION,
                          (long)CURL_SSLVERSION_TLSv1_2) != CURLE_OK;
  if (req->ca_file != NULL) {
    bad |= curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CAPATH, NULL) != CURLE_OK;
  }
  if (loopback) /* never send a loopback request through a proxy */
    bad |= curl_easy_setopt(e, CURLOPT_NOPROXY, "*") != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                          h->connect_timeout_ms) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, h->timeout_ms) != CURLE_OK;
  if (h->http2) {
    bad |= curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                            (long)CURL_HTTP_VERSION_2TLS) != CURLE_OK;
    /* Over TLS, wait for a connection being set up to the same host to
     * learn (by ALPN) whether it multiplexes, rather than open another.
     * Not over plain http: there curl learns that only from the first
     * response, so one slow request would hold every other one. */
    if (!plain)
      bad |= curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L) != CURLE_OK;
  }
  if (h->gzip)
    bad |= curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "gzip") != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, h->user_agent) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
                          (curl_off_t)r->max_body) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, r) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, r) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, r) != CURLE_OK;
  bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers) != CURLE_OK;

  if (has_body) {
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                            (curl_off_t)req->body_len) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body) != CURLE_OK;
    if (strcmp(r->method, "POST") != 0)
      bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method) != CURLE_OK;
  } else if (strcmp(r->method, "GET") == 0) {
    bad |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) != CURLE_OK;
  } else if (strcmp(r->method, "HEAD") == 0) {
    bad |= curl_easy_setopt(e, CURLOPT_NOBODY, 1L) != CURLE_OK;
  } else if (strcmp(r->method, "POST") == 0) {
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0) !=
           CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, "") != CURLE_OK;
  } else {
    bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method) != CURLE_OK;
  }
  return bad ? -1 : 0;
}

/* Copies the caller's headers, adding "Expect:" (no 100-continue round
 * trip) unless the caller set Expect. */
static int
copy_headers(struct req *r, const char *const *headers, const char **why)
{
  int has_expect = 0;
  struct curl_slist *l;

  for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
    if (check_header(headers[i]) != 0) {
      *why = "header with CR/LF or empty";
      return HTTP_ERR_INVALID;
    }
    if (strncasecmp(headers[i], "Expect:", 7) == 0)
      has_expect = 1;
    l = curl_slist_append(r->headers, headers[i]);
    if (l == NULL) {
      *why = "out of memory";
      return HTTP_ERR_INTERNAL;
    }
    r->headers = l;
  }
  if (!has_expect) {
    l = curl_slist_append(r->headers, "Expect:");
    if (l == NULL) {
      *why = "out of memory";
      return HTTP_ERR_INTERNAL;
    }
    r->headers = l;
  }
  return 0;
}

/* --- finishing --- */

static int
curl_error_retryable(CURLcode c)
{
  switch (c) {
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_CONNECT:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_SSL_CONNECT_ERROR: /* handshake failed, not verification */
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_HTTP3:
  case CURLE_QUIC_CONNECT_ERROR:
    return 1;
  default:
    /* Among others CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CACERT_BADFILE,
     * CURLE_SSL_CERTPROBLEM: a certificate problem is permanent. */
    return 0;
  }
}

static const char *
error_name(int error)
{
  switch (error) {
  case HTTP_OK:
    return "none";
  case HTTP_ERR_NETWORK:
    return "network";
  case HTTP_ERR_TOO_LARGE:
    return "too_large";
  case HTTP_ERR_CANCELLED:
    return "cancelled";
  case HTTP_ERR_INVALID:
    return "invalid";
  default:
    return "internal";
  }
}

/* Hands the final outcome to the caller and frees `r`, which is on no
 * list. On an error the response carries no status, body or headers. */
static void
finish(struct req *r, long status, int error, const char *errmsg,
       double retry_after)
{
  struct http_response resp;

  if (error != HTTP_OK) {
    status = 0;
    headers_clear(r);
    r->rlen = 0;
    retry_after = -1;
  }
  memset(&resp, 0, sizeof resp);
  resp.status = status;
  resp.error = error;
  resp.errmsg = error != HTTP_OK ? errmsg : "";
  resp.body = r->rbody != NULL && r->rlen > 0 ? r->rbody : "";
  resp.body_len = r->rlen;
  resp.retry_after = retry_after;
  resp.attempts = r->attempt;
  resp.sent_ns = r->waiter.paid ? r->waiter.paid_at : 0;
  resp.priv = r;
  log_debug("http done method=%s url=%s status=%ld error=%s attempts=%d "
            "gate=%s",
            r->method, r->log_url, status, error_name(error), r->attempt,
            gate_name(r->waiter.gate));
  r->done(r->ctx, &resp);
  req_free(r);
}

/* One attempt ended (the handle is already out of the multi): retry it or
 * finish it. */
static void
attempt_done(struct http *h, struct req *r, CURLcode code, long status)
{
  int error = HTTP_OK, retry = 0, throttled;
  double ra = -1, backoff, delay;
  const char *errmsg = "";
  char toobig[64];

  if (r->held) {
    /* Stopped unsent by prereq_hold: not an attempt, and its budget is
     * still paid; it waits for its gate again, first in line. */
    r->held = 0;
    r->attempt--;
    log_debug("http held method=%s url=%s gate=%s (closed while connecting)",
              r->method, r->log_url, gate_name(r->waiter.gate));
    gate_push_front(&r->waiter); /* drain() schedules */
    return;
  }
  if (r->oom || code == CURLE_OUT_OF_MEMORY) {
    error = HTTP_ERR_INTERNAL;
    errmsg = "out of memory";
  } else if (r->too_large || code == CURLE_FILESIZE_EXCEEDED) {
    error = HTTP_ERR_TOO_LARGE;
    snprintf(toobig, sizeof toobig, "response body over %zu bytes",
             r->max_body);
    errmsg = toobig;
  } else if (code == CURLE_WRITE_ERROR || code == CURLE_ABORTED_BY_CALLBACK) {
    error = HTTP_ERR_INTERNAL;
    errmsg = r->errbuf[0] != '\0' ? r->errbuf : curl_easy_strerror(code);
  } else if (code != CURLE_OK) {
    error = HTTP_ERR_NETWORK;
    errmsg = r->errbuf[0] != '\0' ? r->errbuf : curl_easy_strerror(code);
    retry = curl_error_retryable(code);
  } else {
    ra = answer_retry_after(r);
    retry = retry_on_status(status);
  }

  throttled = error == HTTP_OK && gate_closes_on(status, ra);
  gate_count(r->waiter.gate, error == HTTP_OK ? status : 0, throttled);
  if (error == HTTP_OK) {
    struct gate_headers gh = {
        .retry_after = ra,
        .throttle_information = header_find(r, "x-ms-throttle-information"),
        .throttle_scope = header_find(r, "x-ms-throttle-scope"),
        .limit_percentage = header_find(r, "x-ms-throttle-limit-percentage"),
        .resource_unit = header_find(r, "x-ms-resource-unit"),
    };
    gate_answer(&r->waiter, status, &gh, uv_hrtime());
  }
  backoff = r->backoff_ms;
  /* Closed already as its headers were read, unless curl did not show
   * them to on_header. */
  if (throttled && !r->gate_closed)
    gate_close(r->waiter.gate, uv_hrtime(), ra >= 0 ? ra * 1000.0 : backoff);

  if (!retry || r->attempt >= r->max_attempts) {
    finish(r, status, error, errmsg, ra);
    return;
  }
  delay = ra * 1000.0 > backoff ? ra * 1000.0 : backoff;
  log_debug("http retry method=%s url=%s status=%ld error=%s attempt=%d "
            "delay_ms=%.0f gate=%s",
            r->method, r->log_url, status, error_name(error), r->attempt,
            delay, gate_name(r->waiter.gate));
  r->not_before = uv_hrtime() + (uint64_t)ceil(delay * (double)NS_PER_MS);
  r->waiter.paid = 0; /* a new attempt costs its budget again */
  delayed_insert(h, r);
}

static void
cancel(struct req *r)
{
  finish(r, 0, HTTP_ERR_CANCELLED, "cancelled", -1);
}

/* --- scheduling --- */

/* Arms the wake timer for the earliest moment a waiting request may
 * start, or stops it when nothing waits. */
static void
schedule(struct http *h)
{
  uint64_t now = uv_hrtime(), next = UINT64_MAX, at, ms;

  if (h->closing)
    return;
  if (h->delayed.head != NULL)
    next = h->delayed.head->not_before;
  at = gate_next_at(h->gates, now);
  if (at < next)
    next = at;
  if (next == UINT64_MAX) {
    uv_timer_stop(&h->wake);
    return;
  }
  ms = next <= now ? 0 : (next - now + NS_PER_MS - 1) / NS_PER_MS;
  /* The loop's cached time may lag; on_wake re-checks against uv_hrtime()
   * anyway, so an early wake-up only re-arms. */
  uv_update_time(h->loop);
  if (uv_timer_start(&h->wake, on_wake, ms, 0) != 0)
    log_error("http: cannot arm the wake-up timer; queued requests wait "
              "for the next answer");
}

static int
is_authorization(const char *line)
{
  return strncasecmp(line, "Authorization:", 14) == 0;
}

/* Replace r's Authorization header with `line` (the easy handle is not
 * in the multi handle). The old list is wiped: it holds a credential.
 * Returns 0, or -1 (r unchanged) on a bad line or out of memory. */
static int
set_authorization(struct req *r, const char *line)
{
  struct curl_slist *fresh = NULL, *l, *n;

  if (check_header(line) != 0 || !is_authorization(line))
    return -1;
  for (n = r->headers; n != NULL; n = n->next) {
    if (is_authorization(n->data))
      continue;
    l = curl_slist_append(fresh, n->data);
    if (l == NULL)
      goto out;
    fresh = l;
  }
  l = curl_slist_append(fresh, line);
  if (l == NULL)
    goto out;
  fresh = l;
  if (curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, fresh) != CURLE_OK)
    goto out;
  for (n = r->headers; n != NULL; n = n->next) {
    if (is_authorization(n->data))
      explicit_bzero(n->data, strlen(n->data));
  }
  curl_slist_free_all(r->headers);
  r->headers = fresh;
  return 0;

out:
  for (n = fresh; n != NULL; n = n->next) {
    if (is_authorization(n->data))
      explicit_bzero(n->data, strlen(n->data));
  }
  curl_slist_free_all(fresh);
  return -1;
}

static void
start(struct http *h, struct req *r)
{
  CURLMcode mc;
  const char *line;

  r->attempt++;
  response_reset(r);
  r->backoff_ms = retry_backoff_ms(r->attempt, h->backoff_base_ms,
                                   h->backoff_cap_ms, random_unit());
  /* The credential as of now, not as of http_send(): the request may
   * have waited for its gate and budget longer than a token lives. */
  line = r->authorization != NULL ? r->authorization(r->ctx) : NULL;
  if (line != NULL && set_authorization(r, line) != 0) {
    finish(r, 0, HTTP_ERR_INTERNAL, "cannot set the Authorization header", -1);
    return;
  }
  log_debug("http send method=%s url=%s attempt=%d gate=%s", r->method,
            r->log_url, r->attempt, gate_name(r->waiter.gate));
  list_push(&h->running, r);
  mc = curl_multi_add_handle(h->multi, r->easy);
  if (mc != CURLM_OK) {
    list_remove(r);
    finish(r, 0, HTTP_ERR_INTERNAL, curl_multi_strerror(mc), -1);
  }
}

static void
on_wake(uv_timer_t *timer)
{
  struct http *h = timer->data;
  uint64_t now = uv_hrtime();
  struct gate_waiter *w;
  struct req *r;

  while (h->delayed.head != NULL && h->delayed.head->not_before <= now) {
    r = list_pop(&h->delayed);
    gate_push(&r->waiter);
  }
  for (;;) {
    if (h->closing)
      return;
    w = gate_next(h->gates, now);
    if (w == NULL)
      break;
    start(h, w->data);
  }
  schedule(h);
}

/* --- curl <-> libuv --- */

static void
drain(struct http *h)
{
  CURLMsg *msg;
  CURL *easy;
  CURLcode code;
  char *priv;
  long status;
  int pending;

  for (;;) {
    if (h->closing)
      return;
    msg = curl_multi_info_read(h->multi, &pending);
    if (msg == NULL)
      break;
    if (msg->msg != CURLMSG_DONE)
      continue;
    easy = msg->easy_handle;
    code = msg->data.result;
    priv = NULL;
    status = 0;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(h->multi, easy); /* msg is gone from here */
    if (priv == NULL)
      continue;
    list_remove((struct req *)priv);
    attempt_done(h, (struct req *)priv, code, status);
  }
  schedule(h);
}

static void
on_handle_closed(struct http *h)
{
  h->live_handles--;
  if (!h->closing || h->live_handles > 0)
    return;
  gate_set_free(h->gates);
  free(h->user_agent);
  free(h);
  curl_global_cleanup();
}

static void
on_sock_closed(uv_handle_t *handle)
{
  struct sock *s = handle->data;
  struct http *h = s->http;

  free(s);
  on_handle_closed(h);
}

static void
on_timer_closed(uv_handle_t *handle)
{
  on_handle_closed(handle->data);
}

static void
sock_close(struct http *h, struct sock *s)
{
  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    h->socks = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  s->prev = s->next = NULL;
  uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static void
on_poll(uv_poll_t *poll, int status, int events)
{
  struct sock *s = poll->data;
  struct http *h = s->http;
  int flags = 0, running;

  if (h->closing)
    return;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  curl_multi_socket_action(h->multi, s->fd, flags, &running);
  drain(h);
}

static void
on_curl_timeout(uv_timer_t *timer)
{
  struct http *h = timer->data;
  int running;

  if (h->closing)
    return;
  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain(h);
}

/* CURLMOPT_SOCKETFUNCTION: only libuv calls (and curl_multi_assign). */
static int
on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
  struct http *h = userp;
  struct sock *s = socketp;
  int events = 0;

  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    /* curl forgets the socket's pointer itself after this call. */
    if (s != NULL)
      sock_close(h, s);
    return 0;
  }
  if (h->closing)
    return 0;
  if (s == NULL) {
    s = calloc(1, sizeof *s);
    if (s == NULL)
      return -1;
    if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->poll.data = s;
    s->http = h;
    s->fd = fd;
    s->next = h->socks;
    if (h->socks != NULL)
      h->socks->prev = s;
    h->socks = s;
    h->live_handles++;
    curl_multi_assign(h->multi, fd, s);
  }
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  return uv_poll_start(&s->poll, events, on_poll) == 0 ? 0 : -1;
}

/* CURLMOPT_TIMERFUNCTION: a 0 timeout becomes 1 ms so that curl is called
 * from the loop, never from inside itself. */
static int
on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
  struct http *h = userp;

  (void)multi;
  if (h->closing)
    return 0;
  if (timeout_ms < 0) {
    uv_timer_stop(&h->curl_timer);
    return 0;
  }
  return uv_timer_start(&h->curl_timer, on_curl_timeout,
                        timeout_ms == 0 ? 1 : (uint64_t)timeout_ms, 0) == 0
             ? 0
             : -1;
}

/* --- public --- */

struct http *
http_new(uv_loop_t *loop, const struct http_options *opts)
{
  struct http *h = NULL, *result = NULL;
  struct http_options o;
  const curl_version_info_data *vi;
  int global = 0;

  if (loop == NULL)
    return NULL;
  memset(&o, 0, sizeof o);
  if (opts != NULL)
    o = *opts;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    goto out;
  global = 1;
  h = calloc(1, sizeof *h);
  if (h == NULL)
    goto out;
  h->loop = loop;
  h->connect_timeout_ms = o.connect_timeout_ms > 0
                              ? o.connect_timeout_ms
                              : DEFAULT_CONNECT_TIMEOUT_MS;
  h->timeout_ms = o.timeout_ms > 0 ? o.timeout_ms : DEFAULT_TIMEOUT_MS;
  h->max_body = o.max_body > 0 ? o.max_body : DEFAULT_MAX_BODY;
  if (h->max_body > (size_t)INT64_MAX - 1)
    h->max_body = (size_t)INT64_MAX - 1;
  h->max_attempts = o.max_attempts > 0 ? o.max_attempts : DEFAULT_MAX_ATTEMPTS;
  h->backoff_base_ms =
      o.backoff_base_ms > 0 ? o.backoff_base_ms : DEFAULT_BACKOFF_BASE_MS;
  h->backoff_cap_ms =
      o.backoff_cap_ms > 0 ? o.backoff_cap_ms : DEFAULT_BACKOFF_CAP_MS;
  h->max_retry_after =
      o.max_retry_after > 0 ? o.max_retry_after : DEFAULT_MAX_RETRY_AFTER;
  h->user_agent = strdup(
      o.user_agent != NULL ? o.user_agent : "galbridge/" GALBRIDGE_VERSION);
  if (h->user_agent == NULL)
    goto out;
  h->gates = gate_set_new();
  if (h->gates == NULL)
    goto out;
  vi = curl_version_info(CURLVERSION_NOW);
  h->gzip = (vi->features & CURL_VERSION_LIBZ) != 0;
  h->http2 = (vi->features & CURL_VERSION_HTTP2) != 0;

  h->multi = curl_multi_init();
  if (h->multi == NULL)
    goto out;
  if (curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket) !=
          CURLM_OK ||
      curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h) != CURLM_OK ||
      curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) !=
          CURLM_OK ||
      curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h) != CURLM_OK)
    goto out;

  /* libuv's timers do not fail to initialise today; should one, a timer
   * already initialised is a live handle, and h goes in its close
   * callback. Nothing after them can fail. */
  if (uv_timer_init(loop, &h->curl_timer) != 0)
    goto out;
  h->curl_timer.data = h;
  if (uv_timer_init(loop, &h->wake) != 0) {
    curl_multi_cleanup(h->multi);
    h->multi = NULL;
    h->closing = 1;
    h->live_handles = 1;
    uv_close((uv_handle_t *)&h->curl_timer, on_timer_closed);
    return NULL;
  }
  h->wake.data = h;
  h->live_handles = 2;
  result = h;
out:
  if (result == NULL) {
    if (h != NULL) {
      if (h->multi != NULL)
        curl_multi_cleanup(h->multi);
      gate_set_free(h->gates);
      free(h->user_agent);
      free(h);
    }
    if (global)
      curl_global_cleanup();
  }
  return result;
}

void
http_close(struct http *h)
{
  struct gate_waiter *w;
  struct req *r;

  if (h == NULL || h->closing)
    return;
  h->closing = 1;
  uv_timer_stop(&h->wake);
  uv_timer_stop(&h->curl_timer);

  for (;;) {
    r = list_pop(&h->running);
    if (r == NULL)
      break;
    curl_multi_remove_handle(h->multi, r->easy);
    cancel(r);
  }
  for (;;) {
    w = gate_pop(h->gates);
    if (w == NULL)
      break;
    cancel(w->data);
  }
  for (;;) {
    r = list_pop(&h->delayed);
    if (r == NULL)
      break;
    cancel(r);
  }

  curl_multi_cleanup(h->multi);
  h->multi = NULL;
  while (h->socks != NULL)
    sock_close(h, h->socks);
  uv_close((uv_handle_t *)&h->curl_timer, on_timer_closed);
  uv_close((uv_handle_t *)&h->wake, on_timer_closed);
}

int
http_send(struct http *h, const struct http_request *req, http_done_fn done,
          void *ctx)
{
  int result = HTTP_ERR_INTERNAL, plain = 0, loopback = 0;
  struct req *r = NULL;
  const char *why = "out of memory";

  if (h == NULL || req == NULL || done == NULL || req->url == NULL) {
    why = "missing argument";
    result = HTTP_ERR_INVALID;
    goto out;
  }
  if (h->closing) {
    why = "client closing";
    result = HTTP_ERR_CANCELLED;
    goto out;
  }
  if (check_method(req->method) != 0 ||
      (req->body != NULL && strcmp(req->method, "HEAD") == 0)) {
    why = "bad method";
    result = HTTP_ERR_INVALID;
    goto out;
  }
  r = calloc(1, sizeof *r);
  if (r == NULL)
    goto out;
  r->http = h;
  r->done = done;
  r->ctx = ctx;
  r->max_attempts =
      req->max_attempts > 0 ? req->max_attempts : h->max_attempts;
  r->waiter.data = r;
  r->waiter.writes = req->writes;
  r->waiter.invitations = req->invitations;
  r->waiter.units = req->units;
  r->authorization = req->authorization;
  r->inner_wait = req->inner_wait;
  r->max_body = req->max_body > 0 && req->max_body < h->max_body
                    ? req->max_body
                    : h->max_body;
  result = check_url(req->url, &r->log_url, &plain, &loopback, &why);
  if (result != 0)
    goto out;
  result = HTTP_ERR_INTERNAL;
  why = "out of memory";
  r->method = strdup(req->method);
  if (r->method == NULL)
    goto out;
  if (req->body != NULL) {
    r->body = malloc(req->body_len > 0 ? req->body_len : 1);
    if (r->body == NULL)
      goto out;
    if (req->body_len > 0)
      memcpy(r->body, req->body, req->body_len);
    r->body_len = req->body_len;
  }
  result = copy_headers(r, req->headers, &why);
  if (result != 0)
    goto out;
  result = HTTP_ERR_INTERNAL;
  why = "out of memory";
  r->waiter.gate = gate_get(h->gates, req->gate);
  if (r->waiter.gate == NULL)
    goto out;
  r->easy = curl_easy_init();
  why = "curl set-up failed";
  if (r->easy == NULL || setup_easy(h, r, req, plain, loopback) != 0)
    goto out;

  /* Start (or wait for the gate) from the loop, never from here. */
  why = "cannot arm the wake-up timer";
  if (uv_timer_start(&h->wake, on_wake, 0, 0) != 0)
    goto out;
  gate_push(&r->waiter);
  r = NULL;
  result = 0;
out:
  if (result != 0)
    log_debug("http refused method=%s url=%s error=%s why=%s",
              r != NULL && r->method != NULL ? r->method : "-",
              r != NULL && r->log_url != NULL ? r->log_url : "-",
              error_name(result), why);
  req_free(r);
  return result;
}

const char *
http_response_header(const struct http_response *resp, const char *name)
{
  if (resp == NULL || resp->priv == NULL || name == NULL)
    return NULL;
  return header_find(resp->priv, name);
}

int
http_gate_set_limits(struct http *h, const char *gate,
                     const struct gate_limits *limits)
{
  if (h == NULL || h->closing ||
      gate_set_limits(h->gates, gate, limits, uv_hrtime()) != 0)
    return -1;
  schedule(h);
  return 0;
}

void
http_gate_note_throttle(struct http *h, const char *gate, double retry_after,
                        enum gate_bucket bucket, uint64_t sent_ns)
{
  struct gate *g;

  if (h == NULL || h->closing || gate == NULL || gate[0] == '\0')
    return;
  g = gate_find(h->gates, gate);
  if (g == NULL)
    return;
  gate_note_throttle(g, retry_after, bucket, sent_ns, uv_hrtime());
  schedule(h);
}

int
http_gate_learnt(const struct http *h, const char *gate,
                 enum gate_bucket bucket, struct gate_learnt *out)
{
  if (h == NULL || gate == NULL || out == NULL)
    return -1;
  return gate_learnt(gate_find(h->gates, gate), bucket, out);
}

int
http_gate_learn(struct http *h, const char *gate, enum gate_bucket bucket,
                const struct gate_learnt *in)
{
  if (h == NULL || h->closing || gate == NULL)
    return -1;
  if (gate_learn(gate_find(h->gates, gate), bucket, in) != 0)
    return -1;
  schedule(h);
  return 0;
}

unsigned long long
http_gate_learnt_changes(const struct http *h, const char *gate)
{
  if (h == NULL || gate == NULL)
    return 0;
  return gate_learnt_changes(gate_find(h->gates, gate));
}

int
http_gate_budget(const struct http *h, const char *gate,
                 struct gate_budget *out)
{
  if (h == NULL || gate == NULL || out == NULL)
    return -1;
  return gate_budget(gate_find(h->gates, gate), out);
}

double
http_gate_wait(const struct http *h, const char *gate)
{
  if (h == NULL || gate == NULL || gate[0] == '\0')
    return 0;
  return gate_reopen_in(gate_find(h->gates, gate), uv_hrtime());
}

size_t
http_gate_stats(const struct http *h, const char *gate, struct gate_stat *out,
                size_t max, unsigned long long *throttled)
{
  return gate_stats(gate_find(h->gates, gate), out, max, throttled);
}

enum http_class
http_status_class(long status)
{
  if (status >= 200 && status < 300)
    return HTTP_CLASS_OK;
  if (status == 401)
    return HTTP_CLASS_TOKEN;
  if (status == 429 || status == 503 || status == 504)
    return HTTP_CLASS_THROTTLED;
  if (status == 0 || status == 408 || (status >= 500 && status < 600))
    return HTTP_CLASS_TRANSIENT;
  return HTTP_CLASS_PERMANENT;
}

char *
http_urlencode(const char *s)
{
  size_t n;
  char *esc, *copy;

  if (s == NULL)
    return NULL;
  n = strlen(s);
  if (n > (size_t)INT32_MAX / 3)
    return NULL;
  if (n == 0)
    return strdup("");
  esc = curl_easy_escape(NULL, s, (int)n);
  if (esc == NULL)
    return NULL;
  copy = strdup(esc);
  curl_free(esc);
  return copy;
}

time_t
http_parse_iso8601(const char *value)
{
  struct tm tm = {0};
  const char *end;

  if (value == NULL)
    return 0;
  end = strptime(value, "%Y-%m-%dT%H:%M:%S", &tm);
  if (end == NULL)
    return 0;
  if (*end == '.')
    end += 1 + strspn(end + 1, "0123456789");
  if (strcmp(end, "Z") != 0 && strcmp(end, "+00:00") != 0)
    return 0;
  return timegm(&tm);
}
