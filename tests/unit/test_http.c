/*
 * test_http — the http module: its pure helpers from tables, and real
 * transfers over a libuv loop against servers inside this process (the
 * retry decisions and the gates alone are test_retry's and test_gate's).
 *
 * The plain-HTTP server runs on the same loop as the client (127.0.0.1,
 * an ephemeral port) and answers by path; it records when each request
 * arrived (uv_hrtime), so timing assertions (a gate held for Retry-After)
 * are measured where the request lands, not where it leaves. The TLS
 * server is a blocking OpenSSL server on a thread with a certificate made
 * at start-up, to prove verification is on and a verification failure is
 * not retried.
 *
 * No test sleeps: each runs the loop until its condition holds, under a
 * timeout timer, and every test ends by closing all handles and checking
 * uv_loop_close() == 0, so a leaked handle fails it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <uv.h>

#include "http.h"
#include "log.h"

#define MS 1000000ULL /* ns per ms */

/* ------------------------------------------------------------------ */
/* captured log lines                                                  */

static char log_buf[65536];
static size_t log_len;

static void
log_capture(void *ctx, enum log_level level, const char *line)
{
  size_t n = strlen(line);

  (void)ctx;
  (void)level;
  if (n + 2 > sizeof log_buf - log_len)
    return;
  memcpy(log_buf + log_len, line, n);
  log_len += n;
  log_buf[log_len++] = '\n';
  log_buf[log_len] = '\0';
}

/* ------------------------------------------------------------------ */
/* a tiny HTTP/1.1 server on the test's loop                           */

#define MAX_HITS 64

struct hit {
  char method[16];
  char path[256]; /* without the query */
  char query[256];
  uint64_t t_ns; /* uv_hrtime() when the whole request was in */
  char ua[128];
  char accept_enc[128];
  char auth[128];
  char expect[64];
  char body[256];
  size_t body_len;
};

struct server;

struct conn {
  uv_tcp_t tcp;
  struct server *srv;
  struct conn *prev, *next;
  char in[16384]; /* the head and the start of the body */
  size_t inlen;
  size_t head_len; /* 0 until the head is in */
  size_t cl;       /* Content-Length */
  size_t body_got; /* body bytes received, kept or not */
  int handled;
  int reset; /* send RST once the response is written */
  int closing;
  uv_write_t wr;
  char *out;
};

struct server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int port;
  struct conn *conns;
  struct hit hits[MAX_HITS];
  int nhits;
};

static const unsigned char gzip_hello[] = {
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xcb,
    0x48, 0xcd, 0xc9, 0xc9, 0x57, 0x48, 0xaf, 0xca, 0x2c, 0xe0, 0x02,
    0x00, 0x39, 0x7c, 0x63, 0x56, 0x0b, 0x00, 0x00, 0x00}; /* "hello gzip\n" */

static void
on_conn_closed(uv_handle_t *h)
{
  struct conn *c = h->data;

  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    c->srv->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  free(c->out);
  free(c);
}

static void
conn_close(struct conn *c)
{
  if (c->closing)
    return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void
on_written(uv_write_t *wr, int status)
{
  struct conn *c = wr->data;

  free(c->out);
  c->out = NULL;
  if (c->closing)
    return;
  if (status == 0 && c->reset) {
    c->closing = 1;
    uv_tcp_close_reset(&c->tcp, on_conn_closed);
    return;
  }
  conn_close(c);
}

static void
send_raw(struct conn *c, const char *head, size_t head_len, const void *body,
         size_t body_len)
{
  uv_buf_t buf;

  c->out = malloc(head_len + body_len + 1);
  assert_non_null(c->out);
  memcpy(c->out, head, head_len);
  if (body_len > 0)
    memcpy(c->out + head_len, body, body_len);
  buf = uv_buf_init(c->out, (unsigned)(head_len + body_len));
  c->wr.data = c;
  assert_int_equal(
      uv_write(&c->wr, (uv_stream_t *)&c->tcp, &buf, 1, on_written), 0);
}

/* A complete response with Content-Length and Connection: close. */
static void
respond(struct conn *c, const char *status, const char *extra,
        const void *body, size_t body_len)
{
  char head[8192];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %s\r\nContent-Length: %zu\r\n"
                   "Connection: close\r\n%s\r\n",
                   status, body_len, extra);

  assert_true(n > 0 && (size_t)n < sizeof head);
  send_raw(c, head, (size_t)n, body, body_len);
}

static int
server_count(const struct server *s, const char *path)
{
  int n = 0;

  for (int i = 0; i < s->nhits; i++)
    n += strcmp(s->hits[i].path, path) == 0;
  return n;
}

/* The k-th (1-based) hit on `path`, or NULL. */
static const struct hit *
server_hit(const struct server *s, const char *path, int k)
{
  for (int i = 0; i < s->nhits; i++) {
    if (strcmp(s->hits[i].path, path) == 0 && --k == 0)
      return &s->hits[i];
  }
  return NULL;
}

static void
copy_field(char *dst, size_t cap, const char *src, size_t len)
{
  if (len >= cap)
    len = cap - 1;
  memcpy(dst, src, len);
  dst[len] = '\0';
}

static void
route(struct conn *c, const struct hit *h)
{
  int n = server_count(c->srv, h->path);
  char *big;
  size_t len;

  if (strcmp(h->path, "/ok") == 0) {
    respond(c, "200 OK",
            "Content-Type: text/plain\r\nX-Dup: one\r\nX-Dup: two\r\n"
            "X-Spaced:   padded value  \r\n",
            "hello", 5);
  } else if (strcmp(h->path, "/echo") == 0) {
    char extra[64];

    snprintf(extra, sizeof extra, "X-Method: %s\r\n", h->method);
    respond(c, "200 OK", extra, h->body, h->body_len);
  } else if (strcmp(h->path, "/r429-1") == 0) {
    if (n == 1)
      respond(c, "429 Too Many Requests", "Retry-After: 1\r\n", "slow", 4);
    else
      respond(c, "200 OK", "", "after", 5);
  } else if (strcmp(h->path, "/r429-long") == 0) {
    respond(c, "429 Too Many Requests", "Retry-After: 30\r\n", "slow", 4);
  } else if (strcmp(h->path, "/503once") == 0) {
    if (n == 1)
      respond(c, "503 Service Unavailable", "", "busy", 4);
    else
      respond(c, "200 OK", "", "fine", 4);
  } else if (strcmp(h->path, "/503") == 0) {
    respond(c, "503 Service Unavailable", "", "busy", 4);
  } else if (strcmp(h->path, "/503ra") == 0) {
    if (n == 1)
      respond(c, "503 Service Unavailable", "Retry-After: 0.3\r\n", "", 0);
    else
      respond(c, "200 OK", "", "fine", 4);
  } else if (strcmp(h->path, "/batch-429") == 0) {
    /* Braces and quotes inside strings must not end the JSON early. */
    static const char b[] =
        "{\"responses\":[{\"id\":\"1\",\"status\":429,\"headers\":"
        "{\"Retry-After\":\"0.4\"},\"body\":{\"error\":{\"code\":"
        "\"TooManyRequests\",\"message\":\"a } a ] a \\\" a \\\\\"}}},"
        "{\"id\":\"2\",\"status\":204}]}";
    respond(c, "200 OK", "Content-Type: application/json\r\n", b,
            sizeof b - 1);
  } else if (strcmp(h->path, "/batch-ok") == 0) {
    respond(c, "200 OK", "Content-Type: application/json\r\n",
            " {\"responses\":[{\"id\":\"1\",\"status\":204}]}\n", 41);
  } else if (strcmp(h->path, "/batch-text") == 0) {
    respond(c, "200 OK", "Content-Type: text/plain\r\n", "not json {", 10);
  } else if (strcmp(h->path, "/batch-400") == 0) {
    respond(c, "400 Bad Request", "Content-Type: application/json\r\n",
            "{\"error\":{\"code\":\"BadRequest\"}}", 31);
  } else if (strcmp(h->path, "/redirect") == 0) {
    respond(c, "302 Found", "Location: https://example.invalid/next\r\n", "",
            0);
  } else if (strcmp(h->path, "/gzip") == 0) {
    respond(c, "200 OK", "Content-Encoding: gzip\r\n", gzip_hello,
            sizeof gzip_hello);
  } else if (strcmp(h->path, "/headers") == 0) {
    char extra[8000];
    size_t off = 0;

    for (int i = 0; i < 150; i++)
      off += (size_t)snprintf(extra + off, sizeof extra - off,
                              "X-H-%d: v%d\r\n", i, i);
    respond(c, "200 OK", extra, "", 0);
  } else if (strncmp(h->path, "/bytes/", 7) == 0 ||
             strncmp(h->path, "/stream/", 8) == 0) {
    len = strtoul(strchr(h->path + 1, '/') + 1, NULL, 10);
    big = malloc(len + 1);
    assert_non_null(big);
    memset(big, 'x', len);
    if (h->path[1] == 'b') {
      respond(c, "200 OK", "", big, len);
    } else {
      static const char head[] =
          "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
      send_raw(c, head, sizeof head - 1, big, len);
    }
    free(big);
  } else if (strcmp(h->path, "/reset") == 0) {
    static const char head[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
    c->reset = 1;
    send_raw(c, head, sizeof head - 1, "0123456789", 10);
  } else if (strcmp(h->path, "/hang") == 0) {
    /* never answer */
  } else {
    respond(c, "404 Not Found", "", "", 0);
  }
}

static const char *
header_value(const char *headers, const char *end, const char *name,
             size_t *len)
{
  size_t nl = strlen(name);

  for (const char *p = headers; p < end;) {
    const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);

    if (eol == NULL)
      eol = end;
    if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 &&
        p[nl] == ':') {
      const char *v = p + nl + 1;

      while (v < eol && *v == ' ')
        v++;
      *len = (size_t)(eol - v);
      return v;
    }
    p = eol + 2;
  }
  return NULL;
}

/* Returns 1 once the head is in (setting head_len, cl, body_got). */
static int
parse_head(struct conn *c)
{
  const char *end, *v;
  size_t vlen;

  if (c->head_len > 0)
    return 1;
  end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
  if (end == NULL)
    return 0;
  c->head_len = (size_t)(end - c->in) + 4;
  v = header_value(c->in, end, "Content-Length", &vlen);
  if (v != NULL)
    c->cl = strtoul(v, NULL, 10);
  c->body_got = c->inlen - c->head_len;
  return 1;
}

static void
try_handle(struct conn *c)
{
  struct server *s = c->srv;
  const char *end, *sp1, *sp2, *q, *v;
  size_t head_len, cl, vlen;
  struct hit *h;

  if (c->handled || !parse_head(c) || c->body_got < c->cl)
    return;
  c->handled = 1;
  head_len = c->head_len;
  end = c->in + head_len - 4;
  cl = c->inlen - head_len; /* what was kept of the body */
  assert_true(s->nhits < MAX_HITS);
  h = &s->hits[s->nhits++];
  memset(h, 0, sizeof *h);
  h->t_ns = uv_hrtime();
  sp1 = memchr(c->in, ' ', (size_t)(end - c->in));
  assert_non_null(sp1);
  sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1));
  assert_non_null(sp2);
  copy_field(h->method, sizeof h->method, c->in, (size_t)(sp1 - c->in));
  q = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
  if (q != NULL) {
    copy_field(h->path, sizeof h->path, sp1 + 1, (size_t)(q - sp1 - 1));
    copy_field(h->query, sizeof h->query, q + 1, (size_t)(sp2 - q - 1));
  } else {
    copy_field(h->path, sizeof h->path, sp1 + 1, (size_t)(sp2 - sp1 - 1));
  }
  v = header_value(c->in, end, "User-Agent", &vlen);
  if (v != NULL)
    copy_field(h->ua, sizeof h->ua, v, vlen);
  v = header_value(c->in, end, "Accept-Encoding", &vlen);
  if (v != NULL)
    copy_field(h->accept_enc, sizeof h->accept_enc, v, vlen);
  v = header_value(c->in, end, "Authorization", &vlen);
  if (v != NULL)
    copy_field(h->auth, sizeof h->auth, v, vlen);
  v = header_value(c->in, end, "Expect", &vlen);
  if (v != NULL)
    copy_field(h->expect, sizeof h->expect, v, vlen);
  copy_field(h->body, sizeof h->body, c->in + head_len, cl);
  h->body_len = cl < sizeof h->body ? cl : sizeof h->body - 1;
  route(c, h);
}

static char discard[65536]; /* body bytes beyond what `in` keeps */

static void
on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
  struct conn *c = handle->data;

  (void)suggested;
  if (c->inlen < sizeof c->in) {
    buf->base = c->in + c->inlen;
    buf->len = sizeof c->in - c->inlen;
  } else {
    buf->base = discard;
    buf->len = sizeof discard;
  }
}

static void
on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
  struct conn *c = stream->data;

  if (nread < 0) {
    conn_close(c);
    return;
  }
  if (buf->base != discard)
    c->inlen += (size_t)nread;
  if (c->head_len > 0)
    c->body_got += (size_t)nread;
  else if (!parse_head(c) && c->inlen == sizeof c->in)
    conn_close(c); /* head too large */
  try_handle(c);
}

static void
on_connection(uv_stream_t *listener, int status)
{
  struct server *s = listener->data;
  struct conn *c;

  assert_int_equal(status, 0);
  c = calloc(1, sizeof *c);
  assert_non_null(c);
  c->srv = s;
  assert_int_equal(uv_tcp_init(s->loop, &c->tcp), 0);
  c->tcp.data = c;
  c->next = s->conns;
  if (s->conns != NULL)
    s->conns->prev = c;
  s->conns = c;
  assert_int_equal(uv_accept(listener, (uv_stream_t *)&c->tcp), 0);
  assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read),
                   0);
}

static int
bound_port(uv_tcp_t *tcp)
{
  struct sockaddr_storage ss;
  int len = sizeof ss;

  assert_int_equal(uv_tcp_getsockname(tcp, (struct sockaddr *)&ss, &len), 0);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void
server_start(struct server *s, uv_loop_t *loop)
{
  struct sockaddr_in addr;

  memset(s, 0, sizeof *s);
  s->loop = loop;
  assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
  assert_int_equal(uv_tcp_init(loop, &s->listener), 0);
  s->listener.data = s;
  assert_int_equal(
      uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 64, on_connection),
                   0);
  s->port = bound_port(&s->listener);
}

static void
server_stop(struct server *s)
{
  for (struct conn *c = s->conns; c != NULL; c = c->next)
    conn_close(c);
  uv_close((uv_handle_t *)&s->listener, NULL);
}

/* ------------------------------------------------------------------ */
/* fixture: a loop, the server, a client                               */

/* Set by teardown: a failed test's results (on its stack) are gone, so the
 * cancellations http_close() delivers then must not touch them. */
static int results_gone;

struct fx {
  uv_loop_t loop;
  struct server srv;
  struct http *http;
  char url[512];
};

static int
fx_setup(void **state)
{
  struct fx *fx = calloc(1, sizeof *fx);

  assert_non_null(fx);
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  server_start(&fx->srv, &fx->loop);
  log_len = 0;
  log_buf[0] = '\0';
  *state = fx;
  return 0;
}

static int
fx_teardown(void **state)
{
  struct fx *fx = *state;
  int rc;

  results_gone = 1;
  http_close(fx->http);
  results_gone = 0;
  server_stop(&fx->srv);
  for (int i = 0; i < 10000; i++) {
    if (uv_run(&fx->loop, UV_RUN_NOWAIT) == 0)
      break;
  }
  rc = uv_loop_close(&fx->loop);
  free(fx);
  assert_int_equal(rc, 0);
  return 0;
}

static void
fx_http(struct fx *fx, const struct http_options *o)
{
  fx->http = http_new(&fx->loop, o);
  assert_non_null(fx->http);
}

static const char *
fx_url(struct fx *fx, const char *path)
{
  snprintf(fx->url, sizeof fx->url, "http://127.0.0.1:%d%s", fx->srv.port,
           path);
  return fx->url;
}

static void
on_timeout(uv_timer_t *t)
{
  *(int *)t->data = 1;
}

static void
on_timer_closed(uv_handle_t *h)
{
  *(int *)h->data = 1;
}

/* Runs the loop until cond(arg) holds or timeout_ms passes. */
static int
run_until(struct fx *fx, int (*cond)(void *), void *arg, uint64_t timeout_ms)
{
  uv_timer_t t;
  int fired = 0, closed = 0, ok;

  assert_int_equal(uv_timer_init(&fx->loop, &t), 0);
  t.data = &fired;
  assert_int_equal(uv_timer_start(&t, on_timeout, timeout_ms, 0), 0);
  while (!cond(arg) && !fired)
    uv_run(&fx->loop, UV_RUN_ONCE);
  ok = cond(arg);
  t.data = &closed;
  uv_close((uv_handle_t *)&t, on_timer_closed);
  while (!closed)
    uv_run(&fx->loop, UV_RUN_NOWAIT);
  return ok;
}

/* ------------------------------------------------------------------ */
/* results                                                             */

static int in_send; /* set around http_send() */

struct result {
  int calls;
  int called_in_send;
  long status;
  int error;
  char errmsg[512];
  char body[8192];
  size_t body_len;
  int body_terminated;
  double retry_after;
  int attempts;
  char ctype[64];
  char location[256];
  char xdup[32];
  char xspaced[64];
  char xmethod[16];
  int xh0, xh97, xh98, xh149;
  uint64_t t_ns;
  struct fx *close_fx; /* http_close() from the callback when set */
};

static void
copy_header(char *dst, size_t cap, const struct http_response *resp,
            const char *name)
{
  const char *v = http_response_header(resp, name);

  if (v != NULL)
    copy_field(dst, cap, v, strlen(v));
}

static void
on_done(void *ctx, const struct http_response *resp)
{
  struct result *r = ctx;

  if (results_gone)
    return;
  r->calls++;
  r->called_in_send |= in_send;
  r->t_ns = uv_hrtime();
  r->status = resp->status;
  r->error = resp->error;
  copy_field(r->errmsg, sizeof r->errmsg, resp->errmsg, strlen(resp->errmsg));
  r->body_len = resp->body_len;
  r->body_terminated = resp->body[resp->body_len] == '\0';
  copy_field(r->body, sizeof r->body, resp->body, resp->body_len);
  r->retry_after = resp->retry_after;
  r->attempts = resp->attempts;
  copy_header(r->ctype, sizeof r->ctype, resp, "content-TYPE");
  copy_header(r->location, sizeof r->location, resp, "Location");
  copy_header(r->xdup, sizeof r->xdup, resp, "x-dup");
  copy_header(r->xspaced, sizeof r->xspaced, resp, "X-Spaced");
  copy_header(r->xmethod, sizeof r->xmethod, resp, "X-Method");
  r->xh0 = http_response_header(resp, "X-H-0") != NULL;
  r->xh97 = http_response_header(resp, "X-H-97") != NULL;
  r->xh98 = http_response_header(resp, "X-H-98") != NULL;
  r->xh149 = http_response_header(resp, "X-H-149") != NULL;
  if (r->close_fx != NULL)
    http_close(r->close_fx->http);
}

static int
send_req(struct fx *fx, const struct http_request *req, struct result *r)
{
  int rc;

  in_send = 1;
  rc = http_send(fx->http, req, on_done, r);
  in_send = 0;
  return rc;
}

static void
get(struct fx *fx, const char *path, const char *gate, struct result *r)
{
  struct http_request req = {.method = "GET", .gate = gate};

  req.url = fx_url(fx, path);
  assert_int_equal(send_req(fx, &req, r), 0);
  assert_int_equal(r->calls, 0); /* never from inside http_send */
}

static int
cond_done(void *arg)
{
  return ((struct result *)arg)->calls > 0;
}

struct many {
  struct result *r[5];
};

static int
cond_all_done(void *arg)
{
  struct many *m = arg;

  for (int i = 0; i < 5 && m->r[i] != NULL; i++) {
    if (m->r[i]->calls == 0)
      return 0;
  }
  return 1;
}

static void
wait_done(struct fx *fx, struct result *r)
{
  assert_true(run_until(fx, cond_done, r, 20000));
  assert_int_equal(r->calls, 1);
  assert_int_equal(r->called_in_send, 0);
}

static void
assert_ok(const struct result *r, long status, const char *body)
{
  assert_int_equal(r->error, HTTP_OK);
  assert_string_equal(r->errmsg, "");
  assert_int_equal(r->status, status);
  assert_true(r->body_terminated);
  if (body != NULL) {
    assert_int_equal(r->body_len, strlen(body));
    assert_string_equal(r->body, body);
  }
}

static double
gap_ms(const struct hit *a, const struct hit *b)
{
  return ((double)b->t_ns - (double)a->t_ns) / (double)MS;
}

/* ------------------------------------------------------------------ */
/* pure helpers                                                        */

static void
test_urlencode(void **state)
{
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"", ""},
      {"abcXYZ019-._~", "abcXYZ019-._~"},
      {"a b&c=d/e?f#g", "a%20b%26c%3Dd%2Fe%3Ff%23g"},
      {"\xc3\xa9+%", "%C3%A9%2B%25"},
      {"startswith(displayName,'A')", "startswith%28displayName%2C%27A%27%29"},
  };

  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *s = http_urlencode(cases[i].in);

    assert_non_null(s);
    assert_string_equal(s, cases[i].out);
    free(s);
  }
  assert_null(http_urlencode(NULL));
}

/* The one classification of errors, by status. */
static void
test_status_class(void **state)
{
  static const struct {
    long status;
    enum http_class want;
  } cases[] = {
      {200, HTTP_CLASS_OK},        {201, HTTP_CLASS_OK},
      {204, HTTP_CLASS_OK},        {401, HTTP_CLASS_TOKEN},
      {429, HTTP_CLASS_THROTTLED}, {503, HTTP_CLASS_THROTTLED},
      {504, HTTP_CLASS_THROTTLED}, {0, HTTP_CLASS_TRANSIENT},
      {408, HTTP_CLASS_TRANSIENT}, {500, HTTP_CLASS_TRANSIENT},
      {502, HTTP_CLASS_TRANSIENT}, {509, HTTP_CLASS_TRANSIENT},
      {302, HTTP_CLASS_PERMANENT}, {400, HTTP_CLASS_PERMANENT},
      {403, HTTP_CLASS_PERMANENT}, {404, HTTP_CLASS_PERMANENT},
      {409, HTTP_CLASS_PERMANENT}, {422, HTTP_CLASS_PERMANENT},
  };

  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    assert_int_equal(http_status_class(cases[i].status), cases[i].want);
}

/* ------------------------------------------------------------------ */
/* transfers                                                           */

static void
test_get_ok(void **state)
{
  struct fx *fx = *state;
  static const char *const headers[] = {"Authorization: Bearer SECRETHDR",
                                        NULL};
  struct http_request req = {.method = "GET", .headers = headers};
  struct result r = {0};
  const struct hit *h;

  fx_http(fx, NULL);
  req.url = fx_url(fx, "/ok?token=SECRETQUERY&x=1");
  assert_int_equal(send_req(fx, &req, &r), 0);
  assert_int_equal(r.calls, 0);
  wait_done(fx, &r);
  assert_ok(&r, 200, "hello");
  assert_int_equal(r.attempts, 1);
  assert_true(r.retry_after == -1);
  assert_string_equal(r.ctype, "text/plain"); /* case-insensitive */
  assert_string_equal(r.xdup, "one");         /* the first of repeats */
  assert_string_equal(r.xspaced, "padded value");
  assert_string_equal(r.location, "");

  assert_int_equal(fx->srv.nhits, 1);
  h = server_hit(&fx->srv, "/ok", 1);
  assert_non_null(h);
  assert_string_equal(h->method, "GET");
  assert_string_equal(h->query, "token=SECRETQUERY&x=1");
  assert_string_equal(h->auth, "Bearer SECRETHDR");
  assert_true(strncmp(h->ua, "galbridge/", 10) == 0);
  assert_non_null(strstr(h->accept_enc, "gzip"));

  /* debug logs name the request, never its query or headers */
  assert_non_null(strstr(log_buf, "/ok"));
  assert_non_null(strstr(log_buf, "status=200"));
  assert_null(strstr(log_buf, "SECRET"));
  assert_null(strstr(log_buf, "token"));
}

static void
test_methods_and_body(void **state)
{
  struct fx *fx = *state;
  static const char *const headers[] = {"Content-Type: application/json",
                                        NULL};
  struct http_options o = {.user_agent = "tester/1"};
  struct result rp = {0}, rpatch = {0}, rdel = {0}, rbig = {0};
  struct many m = {{&rp, &rpatch, &rdel, &rbig}};
  char body[64];
  char *large = malloc(3 * 1024 * 1024);
  struct http_request req = {.headers = headers};

  assert_non_null(large);
  fx_http(fx, &o);
  snprintf(body, sizeof body, "{\"a\":1}");
  req.method = "POST";
  req.url = fx_url(fx, "/echo");
  req.body = body;
  req.body_len = strlen(body);
  assert_int_equal(send_req(fx, &req, &rp), 0);
  memset(body, 'Z', sizeof body); /* the request was copied */

  snprintf(body, sizeof body, "{\"b\":2}");
  req.method = "PATCH";
  req.url = fx_url(fx, "/echo");
  req.body_len = strlen(body);
  assert_int_equal(send_req(fx, &req, &rpatch), 0);
  memset(body, 'Z', sizeof body);

  req.method = "DELETE";
  req.url = fx_url(fx, "/echo");
  req.body = NULL;
  req.body_len = 0;
  assert_int_equal(send_req(fx, &req, &rdel), 0);

  /* a body above curl's 100-continue threshold is sent without waiting */
  memset(large, 'L', 3 * 1024 * 1024);
  req.method = "PUT";
  req.url = fx_url(fx, "/nowhere");
  req.body = large;
  req.body_len = 3 * 1024 * 1024;
  assert_int_equal(send_req(fx, &req, &rbig), 0);
  free(large);

  assert_true(run_until(fx, cond_all_done, &m, 20000));
  assert_ok(&rp, 200, "{\"a\":1}");
  assert_string_equal(rp.xmethod, "POST");
  assert_ok(&rpatch, 200, "{\"b\":2}");
  assert_string_equal(rpatch.xmethod, "PATCH");
  assert_ok(&rdel, 200, "");
  assert_string_equal(rdel.xmethod, "DELETE");
  assert_ok(&rbig, 404, "");
  assert_string_equal(server_hit(&fx->srv, "/nowhere", 1)->expect, "");
  assert_string_equal(server_hit(&fx->srv, "/echo", 1)->ua, "tester/1");
}

static void
test_redirect_not_followed(void **state)
{
  struct fx *fx = *state;
  struct result r = {0};

  fx_http(fx, NULL);
  get(fx, "/redirect", NULL, &r);
  wait_done(fx, &r);
  assert_ok(&r, 302, "");
  assert_string_equal(r.location, "https://example.invalid/next");
  assert_int_equal(fx->srv.nhits, 1);
}

static void
test_gzip_and_header_bounds(void **state)
{
  struct fx *fx = *state;
  struct result rz = {0}, rh = {0};

  fx_http(fx, NULL);
  get(fx, "/gzip", NULL, &rz);
  get(fx, "/headers", NULL, &rh);
  wait_done(fx, &rz);
  wait_done(fx, &rh);
  assert_ok(&rz, 200, "hello gzip\n");
  assert_ok(&rh, 200, "");
  /* at most 100 headers are kept, the first ones: Content-Length,
   * Connection, then X-H-0 .. X-H-97 */
  assert_true(rh.xh0);
  assert_true(rh.xh97);
  assert_false(rh.xh98);
  assert_false(rh.xh149);
}

struct gate_cond {
  struct fx *fx;
  const char *gate;
};

static int
cond_gate_closed(void *arg)
{
  struct gate_cond *g = arg;

  return http_gate_wait(g->fx->http, g->gate) > 0;
}

struct hit_cond {
  struct server *srv;
  const char *path;
  int n;
};

static int
cond_hits(void *arg)
{
  struct hit_cond *h = arg;

  return server_count(h->srv, h->path) >= h->n;
}

/* After a 429 with Retry-After: 1 on a gate, nothing goes to that gate for
 * a second (neither the retry nor a request issued meanwhile); another
 * gate goes on. */
static void
test_429_gate(void **state)
{
  struct fx *fx = *state;
  struct http_options o = {.backoff_base_ms = 10, .backoff_cap_ms = 20};
  struct result r1 = {0}, r2 = {0}, r3 = {0};
  struct many m = {{&r1, &r2, NULL, NULL}};
  struct gate_cond gc = {fx, "tenant-a/graph"};
  const struct hit *first, *retry, *a2, *b;
  double w;

  fx_http(fx, &o);
  get(fx, "/r429-1", "tenant-a/graph", &r1);
  assert_true(run_until(fx, cond_gate_closed, &gc, 10000));
  w = http_gate_wait(fx->http, "tenant-a/graph");
  assert_true(w > 0.5 && w <= 1.0);
  assert_true(http_gate_wait(fx->http, "tenant-b/graph") == 0);
  assert_true(http_gate_wait(fx->http, "never-used") == 0);
  assert_true(http_gate_wait(fx->http, NULL) == 0);

  get(fx, "/a2", "tenant-a/graph", &r2);
  get(fx, "/b", "tenant-b/graph", &r3);
  wait_done(fx, &r3);
  /* B finished while A is still shut */
  assert_int_equal(r1.calls, 0);
  assert_int_equal(r2.calls, 0);
  assert_int_equal(server_count(&fx->srv, "/a2"), 0);

  assert_true(run_until(fx, cond_all_done, &m, 20000));
  assert_ok(&r1, 200, "after");
  assert_int_equal(r1.attempts, 2);
  assert_true(r1.retry_after == -1); /* the final response had none */
  assert_ok(&r2, 404, "");
  assert_int_equal(r2.attempts, 1);
  assert_ok(&r3, 404, "");

  first = server_hit(&fx->srv, "/r429-1", 1);
  retry = server_hit(&fx->srv, "/r429-1", 2);
  a2 = server_hit(&fx->srv, "/a2", 1);
  b = server_hit(&fx->srv, "/b", 1);
  assert_non_null(first);
  assert_non_null(retry);
  assert_non_null(a2);
  assert_non_null(b);
  assert_true(gap_ms(first, retry) >= 1000.0 - 2.0);
  assert_true(gap_ms(first, a2) >= 1000.0 - 2.0);
  assert_true(gap_ms(first, b) < 900.0);
  assert_true(b->t_ns < a2->t_ns);
  assert_true(http_gate_wait(fx->http, "tenant-a/graph") == 0);
  assert_non_null(strstr(log_buf, "gate=tenant-a/graph"));
}

/* An answer that carries throttled answers inside (Graph's $batch): the
 * request's inner_wait hook reads the body as soon as it is complete
 * JSON, and the gate closes then, inside the transfer, before libcurl
 * could hand the connection to another request, so before the done
 * callback runs; a body that is not JSON, or an error answer, is not
 * given to the hook. */
struct inner_result {
  struct result r; /* first: on_done's view */
  struct fx *fx;
  const char *gate;
  int hook_calls;
  char hook_body[512];
  double wait_in_done;
};

static double
inner_wait_hook(void *ctx, const char *body, size_t len)
{
  struct inner_result *ir = ctx;

  ir->hook_calls++;
  copy_field(ir->hook_body, sizeof ir->hook_body, body, len);
  assert_int_equal(body[len], '\0');
  return strstr(body, "\"status\":429") != NULL ? 0.4 : -1;
}

static void
on_inner_done(void *ctx, const struct http_response *resp)
{
  struct inner_result *ir = ctx;

  on_done(&ir->r, resp);
  if (!results_gone)
    ir->wait_in_done = http_gate_wait(ir->fx->http, ir->gate);
}

static void
send_inner(struct fx *fx, const char *path, struct inner_result *ir)
{
  struct http_request req = {
      .method = "POST", .gate = "t/app/graph", .inner_wait = inner_wait_hook};

  memset(ir, 0, sizeof *ir);
  ir->fx = fx;
  ir->gate = req.gate;
  req.url = fx_url(fx, path);
  req.body = "{}";
  req.body_len = 2;
  assert_int_equal(http_send(fx->http, &req, on_inner_done, ir), 0);
  wait_done(fx, &ir->r);
}

static void
test_inner_wait_closes_the_gate(void **state)
{
  struct fx *fx = *state;
  struct inner_result ir;
  struct result after = {0};
  const struct hit *batch, *next;

  fx_http(fx, NULL);
  send_inner(fx, "/batch-429", &ir);
  assert_ok(&ir.r, 200, NULL);
  assert_int_equal(ir.hook_calls, 1);
  assert_string_equal(ir.hook_body, ir.r.body); /* all of it, at once */
  assert_true(ir.wait_in_done > 0.3 && ir.wait_in_done <= 0.4);
  get(fx, "/after", "t/app/graph", &after);
  wait_done(fx, &after);
  batch = server_hit(&fx->srv, "/batch-429", 1);
  next = server_hit(&fx->srv, "/after", 1);
  assert_non_null(batch);
  assert_non_null(next);
  assert_true(gap_ms(batch, next) >= 400.0 - 2.0);
  assert_non_null(strstr(log_buf, "http gate closed gate=t/app/graph"));

  /* Nothing throttled inside: the hook reads it, the gate stays open. */
  send_inner(fx, "/batch-ok", &ir);
  assert_int_equal(ir.hook_calls, 1);
  assert_string_equal(ir.hook_body, ir.r.body);
  assert_true(ir.wait_in_done == 0);
  /* Not JSON, or not a 2xx: never given to the hook. */
  send_inner(fx, "/batch-text", &ir);
  assert_ok(&ir.r, 200, "not json {");
  assert_int_equal(ir.hook_calls, 0);
  send_inner(fx, "/batch-400", &ir);
  assert_int_equal(ir.r.status, 400);
  assert_int_equal(ir.hook_calls, 0);
  assert_true(ir.wait_in_done == 0);
}

/* A 503 with Retry-After also shuts the gate; Retry-After longer than
 * max_retry_after is capped. */
static void
test_503_retry_after_and_cap(void **state)
{
  struct fx *fx = *state;
  struct http_options o = {
      .backoff_base_ms = 1, .backoff_cap_ms = 2, .max_retry_after = 0.2};
  struct http_request req = {.method = "GET", .gate = "g", .max_attempts = 2};
  struct result r1 = {0}, r2 = {0};
  struct gate_cond gc = {fx, "g2"};

  fx_http(fx, &o);
  get(fx, "/503ra", "g2", &r1);
  assert_true(run_until(fx, cond_gate_closed, &gc, 10000));
  wait_done(fx, &r1);
  assert_ok(&r1, 200, "fine");
  assert_int_equal(r1.attempts, 2);
  assert_true(gap_ms(server_hit(&fx->srv, "/503ra", 1),
                     server_hit(&fx->srv, "/503ra", 2)) >= 200.0 - 2.0);

  /* Retry-After: 30, capped at 0.2 s; attempts exhausted → the 429 */
  req.url = fx_url(fx, "/r429-long");
  assert_int_equal(send_req(fx, &req, &r2), 0);
  wait_done(fx, &r2);
  assert_ok(&r2, 429, "slow");
  assert_int_equal(r2.attempts, 2);
  assert_true(fabs(r2.retry_after - 0.2) < 1e-9);
  assert_true(gap_ms(server_hit(&fx->srv, "/r429-long", 1),
                     server_hit(&fx->srv, "/r429-long", 2)) >= 200.0 - 2.0);
  assert_true(gap_ms(server_hit(&fx->srv, "/r429-long", 1),
                     server_hit(&fx->srv, "/r429-long", 2)) < 5000.0);
  /* the final 429 shut the gate again */
  assert_true(http_gate_wait(fx->http, "g") > 0);
}

static void
test_503_backoff(void **state)
{
  struct fx *fx = *state;
  struct http_options o = {.backoff_base_ms = 20, .backoff_cap_ms = 40};
  struct result r = {0};

  fx_http(fx, &o);
  get(fx, "/503once", "g", &r);
  wait_done(fx, &r);
  assert_ok(&r, 200, "fine");
  assert_int_equal(r.attempts, 2);
  assert_int_equal(server_count(&fx->srv, "/503once"), 2);
  /* full jitter below base (20 ms), far from the 1 s a Retry-After
   * would impose; no Retry-After, so the gate stayed open */
  assert_true(gap_ms(server_hit(&fx->srv, "/503once", 1),
                     server_hit(&fx->srv, "/503once", 2)) < 500.0);
  assert_true(http_gate_wait(fx->http, "g") == 0);
  assert_non_null(strstr(log_buf, "http retry"));
}

static void
test_503_exhausted(void **state)
{
  struct fx *fx = *state;
  struct http_options o = {.backoff_base_ms = 1, .backoff_cap_ms = 5};
  struct http_request req = {.method = "GET", .max_attempts = 3};
  struct result r = {0}, r1 = {0};

  fx_http(fx, &o);
  req.url = fx_url(fx, "/503");
  assert_int_equal(send_req(fx, &req, &r), 0);
  wait_done(fx, &r);
  assert_ok(&r, 503, "busy");
  assert_int_equal(r.attempts, 3);
  assert_int_equal(server_count(&fx->srv, "/503"), 3);

  /* max_attempts 1: no retry */
  req.max_attempts = 1;
  req.url = fx_url(fx, "/503");
  assert_int_equal(send_req(fx, &req, &r1), 0);
  wait_done(fx, &r1);
  assert_ok(&r1, 503, "busy");
  assert_int_equal(r1.attempts, 1);
  assert_int_equal(server_count(&fx->srv, "/503"), 4);
}

static void
test_body_cap(void **state)
{
  struct fx *fx = *state;
  struct http_options o = {.max_body = 1000};
  struct result at = {0}, over = {0}, stream_at = {0}, stream_over = {0};
  struct many m = {{&at, &over, &stream_at, &stream_over}};

  fx_http(fx, &o);
  get(fx, "/bytes/1000", NULL, &at);
  get(fx, "/bytes/1001", NULL, &over);
  get(fx, "/stream/1000", NULL, &stream_at);
  get(fx, "/stream/5000", NULL, &stream_over); /* no Content-Length */
  assert_true(run_until(fx, cond_all_done, &m, 20000));
  assert_ok(&at, 200, NULL);
  assert_int_equal(at.body_len, 1000);
  assert_ok(&stream_at, 200, NULL);
  assert_int_equal(stream_at.body_len, 1000);
  assert_int_equal(over.error, HTTP_ERR_TOO_LARGE);
  assert_int_equal(over.attempts, 1);
  assert_int_equal(over.status, 0);
  assert_int_equal(over.body_len, 0);
  assert_true(over.body_terminated);
  assert_true(strlen(over.errmsg) > 0);
  assert_int_equal(stream_over.error, HTTP_ERR_TOO_LARGE);
  assert_int_equal(stream_over.attempts, 1);
  assert_int_equal(stream_over.body_len, 0);
  assert_int_equal(server_count(&fx->srv, "/stream/5000"), 1);
}

/* A request's own cap (a photo's size limit) under the client's: a body
 * over it ends that request alone, with HTTP_ERR_TOO_LARGE and no retry;
 * a cap over the client's is the client's. */
static void
test_request_body_cap(void **state)
{
  struct fx *fx = *state;
  struct http_options o = {.max_body = 1000};
  struct http_request small = {.method = "GET", .max_body = 500};
  struct http_request large = {.method = "GET", .max_body = 5000};
  struct result at = {0}, over = {0}, stream_over = {0}, client = {0},
                plain = {0};
  struct many m = {{&at, &over, &stream_over, &client, &plain}};

  fx_http(fx, &o);
  small.url = fx_url(fx, "/bytes/500");
  assert_int_equal(send_req(fx, &small, &at), 0);
  small.url = fx_url(fx, "/bytes/501");
  assert_int_equal(send_req(fx, &small, &over), 0);
  small.url = fx_url(fx, "/stream/2000");
  assert_int_equal(send_req(fx, &small, &stream_over), 0);
  large.url = fx_url(fx, "/bytes/1001");
  assert_int_equal(send_req(fx, &large, &client), 0);
  get(fx, "/bytes/900", NULL, &plain);
  assert_true(run_until(fx, cond_all_done, &m, 20000));
  assert_ok(&at, 200, NULL);
  assert_int_equal(at.body_len, 500);
  assert_int_equal(over.error, HTTP_ERR_TOO_LARGE);
  assert_int_equal(over.attempts, 1);
  assert_int_equal(over.body_len, 0);
  assert_non_null(strstr(over.errmsg, "500"));
  assert_int_equal(stream_over.error, HTTP_ERR_TOO_LARGE);
  assert_int_equal(client.error, HTTP_ERR_TOO_LARGE);
  assert_non_null(strstr(client.errmsg, "1000"));
  assert_ok(&plain, 200, NULL);
  assert_int_equal(plain.body_len, 900);
}

static void
test_connection_refused(void **state)
{
  struct fx *fx = *state;
  struct http_options o = {.backoff_base_ms = 1, .backoff_cap_ms = 2};
  struct http_request req = {.method = "GET", .max_attempts = 2};
  struct result r = {0};
  struct sockaddr_in addr;
  uv_tcp_t tmp;
  int port;
  char url[128];

  /* a port that was just free: bind, read it, close */
  assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
  assert_int_equal(uv_tcp_init(&fx->loop, &tmp), 0);
  assert_int_equal(uv_tcp_bind(&tmp, (const struct sockaddr *)&addr, 0), 0);
  port = bound_port(&tmp);
  uv_close((uv_handle_t *)&tmp, NULL);
  uv_run(&fx->loop, UV_RUN_NOWAIT);

  fx_http(fx, &o);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/x", port);
  req.url = url;
  assert_int_equal(send_req(fx, &req, &r), 0);
  wait_done(fx, &r);
  assert_int_equal(r.error, HTTP_ERR_NETWORK);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.attempts, 2); /* connect errors are retried */
  assert_true(strlen(r.errmsg) > 0);
  assert_true(r.body_terminated);
  assert_int_equal(r.body_len, 0);
}

static void
test_reset_mid_body(void **state)
{
  struct fx *fx = *state;
  struct http_options o = {.backoff_base_ms = 1, .backoff_cap_ms = 2};
  struct http_request req = {.method = "GET", .max_attempts = 2};
  struct result r = {0};

  fx_http(fx, &o);
  req.url = fx_url(fx, "/reset");
  assert_int_equal(send_req(fx, &req, &r), 0);
  wait_done(fx, &r);
  assert_int_equal(r.error, HTTP_ERR_NETWORK);
  assert_int_equal(r.status, 0); /* no truncated 200 is handed over */
  assert_int_equal(r.body_len, 0);
  assert_int_equal(r.attempts, 2);
  assert_int_equal(server_count(&fx->srv, "/reset"), 2);
  assert_true(strlen(r.errmsg) > 0);
}

/* http_close with one request on the wire, one waiting for its retry and
 * one waiting for its gate: every callback runs before http_close returns,
 * with HTTP_ERR_CANCELLED, and the loop closes cleanly (teardown). */
static void
test_close_cancels(void **state)
{
  struct fx *fx = *state;
  struct result hang = {0}, retry = {0}, gated = {0}, late = {0};
  struct gate_cond gc = {fx, "c"};
  struct hit_cond hc = {&fx->srv, "/hang", 1};
  struct http_request req = {.method = "GET"};

  fx_http(fx, NULL);
  get(fx, "/hang", NULL, &hang);
  get(fx, "/r429-long", "c", &retry);
  assert_true(run_until(fx, cond_hits, &hc, 10000));
  assert_true(run_until(fx, cond_gate_closed, &gc, 10000));
  get(fx, "/ok", "c", &gated);
  for (int i = 0; i < 20; i++)
    uv_run(&fx->loop, UV_RUN_NOWAIT);
  assert_int_equal(server_count(&fx->srv, "/ok"), 0);
  assert_int_equal(hang.calls + retry.calls + gated.calls, 0);

  http_close(fx->http);
  assert_int_equal(hang.calls, 1);
  assert_int_equal(retry.calls, 1);
  assert_int_equal(gated.calls, 1);
  assert_int_equal(hang.error, HTTP_ERR_CANCELLED);
  assert_int_equal(retry.error, HTTP_ERR_CANCELLED);
  assert_int_equal(gated.error, HTTP_ERR_CANCELLED);
  assert_int_equal(hang.attempts, 1);
  assert_int_equal(retry.attempts, 1);
  assert_int_equal(gated.attempts, 0);
  assert_int_equal(hang.status, 0);
  assert_true(strlen(hang.errmsg) > 0);

  /* closing: refused, callback never called; a second close is a no-op */
  req.url = fx_url(fx, "/ok");
  assert_int_equal(send_req(fx, &req, &late), HTTP_ERR_CANCELLED);
  http_close(fx->http);
  fx->http = NULL;
  for (int i = 0; i < 100; i++)
    uv_run(&fx->loop, UV_RUN_NOWAIT);
  assert_int_equal(late.calls, 0);
}

/* A done callback may close the client; the other request is cancelled. */
static void
test_close_from_callback(void **state)
{
  struct fx *fx = *state;
  struct result first = {0}, other = {0};
  struct many m = {{&first, &other, NULL, NULL}};

  fx_http(fx, NULL);
  first.close_fx = fx;
  get(fx, "/hang", NULL, &other);
  get(fx, "/ok", NULL, &first);
  assert_true(run_until(fx, cond_all_done, &m, 10000));
  fx->http = NULL;
  assert_ok(&first, 200, "hello");
  assert_int_equal(other.error, HTTP_ERR_CANCELLED);
  assert_int_equal(other.calls, 1);
}

/* The loop runs dry on its own once the client is closed and idle. */
static void
test_loop_runs_dry(void **state)
{
  struct fx *fx = *state;
  struct result r = {0};

  fx_http(fx, NULL);
  get(fx, "/ok", NULL, &r);
  wait_done(fx, &r);
  http_close(fx->http);
  fx->http = NULL;
  server_stop(&fx->srv);
  assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
  server_start(&fx->srv, &fx->loop); /* for teardown */
}

static void
test_invalid_requests(void **state)
{
  struct fx *fx = *state;
  static const char *const crlf[] = {"X-A: b\r\nX-Injected: 1", NULL};
  static const char *const empty[] = {"", NULL};
  struct {
    const char *method, *url;
    const char *const *headers;
    int body;
  } cases[] = {
      {"GET", "ftp://127.0.0.1/x", NULL, 0},
      {"GET", "http://example.com/x", NULL, 0}, /* plain http off loopback */
      {"GET", "http://10.0.0.1/x", NULL, 0},
      {"GET", "file:///etc/passwd", NULL, 0},
      {"GET", "not a url", NULL, 0},
      {"GET", "", NULL, 0},
      {"get", "https://127.0.0.1/x", NULL, 0},
      {"", "https://127.0.0.1/x", NULL, 0},
      {NULL, "https://127.0.0.1/x", NULL, 0},
      {"GE T", "https://127.0.0.1/x", NULL, 0},
      {"HEAD", "https://127.0.0.1/x", NULL, 1},
      {"GET", "https://127.0.0.1/x", crlf, 0},
      {"GET", "https://127.0.0.1/x", empty, 0},
  };
  struct result r = {0};
  struct http_request req;

  fx_http(fx, NULL);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    memset(&req, 0, sizeof req);
    req.method = cases[i].method;
    req.url = cases[i].url;
    req.headers = cases[i].headers;
    req.body = cases[i].body ? "x" : NULL;
    req.body_len = cases[i].body ? 1 : 0;
    if (send_req(fx, &req, &r) != HTTP_ERR_INVALID)
      fail_msg("case %zu (%s %s) accepted", i, cases[i].method, cases[i].url);
  }
  memset(&req, 0, sizeof req);
  req.method = "GET";
  assert_int_equal(send_req(fx, &req, &r), HTTP_ERR_INVALID); /* no URL */
  req.url = "https://127.0.0.1/x";
  assert_int_equal(http_send(fx->http, &req, NULL, &r), HTTP_ERR_INVALID);
  assert_int_equal(http_send(NULL, &req, on_done, &r), HTTP_ERR_INVALID);
  assert_int_equal(http_send(fx->http, NULL, on_done, &r), HTTP_ERR_INVALID);
  for (int i = 0; i < 20; i++)
    uv_run(&fx->loop, UV_RUN_NOWAIT);
  assert_int_equal(r.calls, 0);
  assert_int_equal(fx->srv.nhits, 0);
  assert_null(http_response_header(NULL, "x"));
  assert_null(http_new(NULL, NULL));
  http_close(NULL);
}

/* ------------------------------------------------------------------ */
/* TLS: a blocking OpenSSL server on a thread                          */

struct tls_server {
  SSL_CTX *ctx;
  int lfd;
  int port;
  pthread_t thread;
  atomic_int stop;
  atomic_int accepted;
  atomic_int served;
};

static void
make_cert(X509 **cert_out, EVP_PKEY **key_out, long serial)
{
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  X509_NAME *name;
  X509V3_CTX v3;
  X509_EXTENSION *ext;

  assert_non_null(key);
  assert_non_null(x);
  assert_int_equal(X509_set_version(x, 2), 1);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  assert_int_equal(X509_set_pubkey(x, key), 1);
  name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             (const unsigned char *)"galbridge test", -1, -1,
                             0);
  X509_set_issuer_name(x, name);
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
  ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "IP:127.0.0.1");
  assert_non_null(ext);
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
                            "critical,CA:TRUE");
  assert_non_null(ext);
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  assert_true(X509_sign(x, key, EVP_sha256()) > 0);
  *cert_out = x;
  *key_out = key;
}

static void
write_pem(const char *path, X509 *x)
{
  FILE *f = fopen(path, "w");

  assert_non_null(f);
  assert_int_equal(PEM_write_X509(f, x), 1);
  assert_int_equal(fclose(f), 0);
}

static void *
tls_serve(void *arg)
{
  struct tls_server *t = arg;
  static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n"
                             "Connection: close\r\n\r\nsecure";

  while (!atomic_load(&t->stop)) {
    struct pollfd pfd = {.fd = t->lfd, .events = POLLIN};
    struct timeval tv = {.tv_sec = 5};
    char buf[4096];
    size_t len = 0;
    SSL *ssl;
    int fd;

    if (poll(&pfd, 1, 20) <= 0)
      continue;
    fd = accept(t->lfd, NULL, NULL);
    if (fd < 0)
      continue;
    atomic_fetch_add(&t->accepted, 1);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssl = SSL_new(t->ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
      while (len < sizeof buf - 1) {
        int n = SSL_read(ssl, buf + len, (int)(sizeof buf - 1 - len));

        if (n <= 0)
          break;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL) {
          SSL_write(ssl, resp, (int)sizeof resp - 1);
          atomic_fetch_add(&t->served, 1);
          break;
        }
      }
      SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    close(fd);
    ERR_clear_error();
  }
  return NULL;
}

static void
test_tls(void **state)
{
  struct fx *fx = *state;
  struct tls_server t;
  struct sockaddr_in addr = {.sin_family = AF_INET};
  socklen_t alen = sizeof addr;
  X509 *cert, *other;
  EVP_PKEY *key, *other_key;
  char good_ca[] = "/tmp/test_http_ca_XXXXXX";
  char bad_ca[] = "/tmp/test_http_ca_XXXXXX";
  char url[128];
  struct http_request req = {.method = "GET", .max_attempts = 3};
  struct http_options o = {.backoff_base_ms = 1, .backoff_cap_ms = 2};
  struct result ok = {0}, wrong = {0}, system = {0};
  int fd;

  memset(&t, 0, sizeof t);
  make_cert(&cert, &key, 1);
  make_cert(&other, &other_key, 2);
  fd = mkstemp(good_ca);
  assert_true(fd >= 0);
  close(fd);
  fd = mkstemp(bad_ca);
  assert_true(fd >= 0);
  close(fd);
  write_pem(good_ca, cert);
  write_pem(bad_ca, other);

  t.ctx = SSL_CTX_new(TLS_server_method());
  assert_non_null(t.ctx);
  assert_int_equal(SSL_CTX_use_certificate(t.ctx, cert), 1);
  assert_int_equal(SSL_CTX_use_PrivateKey(t.ctx, key), 1);
  t.lfd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(t.lfd >= 0);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(t.lfd, (struct sockaddr *)&addr, sizeof addr), 0);
  assert_int_equal(listen(t.lfd, 16), 0);
  assert_int_equal(getsockname(t.lfd, (struct sockaddr *)&addr, &alen), 0);
  t.port = ntohs(addr.sin_port);
  assert_int_equal(pthread_create(&t.thread, NULL, tls_serve, &t), 0);

  fx_http(fx, &o);
  snprintf(url, sizeof url, "https://127.0.0.1:%d/secure?q=1", t.port);
  req.url = url;
  req.ca_file = good_ca;
  assert_int_equal(send_req(fx, &req, &ok), 0);
  wait_done(fx, &ok);
  assert_ok(&ok, 200, "secure");
  assert_int_equal(atomic_load(&t.served), 1);

  /* a trust store without the server's certificate: verification fails,
   * and a verification failure is never retried */
  req.ca_file = bad_ca;
  assert_int_equal(send_req(fx, &req, &wrong), 0);
  wait_done(fx, &wrong);
  assert_int_equal(wrong.error, HTTP_ERR_NETWORK);
  assert_int_equal(wrong.attempts, 1);
  assert_true(strlen(wrong.errmsg) > 0);

  /* the system store does not know a self-signed test certificate */
  req.ca_file = NULL;
  assert_int_equal(send_req(fx, &req, &system), 0);
  wait_done(fx, &system);
  assert_int_equal(system.error, HTTP_ERR_NETWORK);
  assert_int_equal(system.attempts, 1);
  assert_int_equal(atomic_load(&t.served), 1);

  atomic_store(&t.stop, 1);
  assert_int_equal(pthread_join(t.thread, NULL), 0);
  assert_int_equal(atomic_load(&t.accepted), 3);
  close(t.lfd);
  SSL_CTX_free(t.ctx);
  X509_free(cert);
  X509_free(other);
  EVP_PKEY_free(key);
  EVP_PKEY_free(other_key);
  unlink(good_ca);
  unlink(bad_ca);
}

/* Microsoft's ISO 8601 times: UTC only, fractions allowed. */
static void
iso8601_table(void **state)
{
  (void)state;
  assert_int_equal(http_parse_iso8601("1970-01-01T00:00:00Z"), 0);
  assert_int_equal(http_parse_iso8601("2026-12-07T13:00:00Z"), 1796648400);
  assert_int_equal(http_parse_iso8601("2026-12-07T13:00:00.1234567Z"),
                   1796648400);
  assert_int_equal(http_parse_iso8601("2026-12-07T13:00:00+00:00"),
                   1796648400);
  assert_int_equal(http_parse_iso8601("2026-12-07T13:00:00+01:00"), 0);
  assert_int_equal(http_parse_iso8601("2026-12-07T13:00:00"), 0);
  assert_int_equal(http_parse_iso8601("2026-12-07"), 0);
  assert_int_equal(http_parse_iso8601(""), 0);
  assert_int_equal(http_parse_iso8601(NULL), 0);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(iso8601_table),
      cmocka_unit_test(test_urlencode),
      cmocka_unit_test(test_status_class),
#define T(name) cmocka_unit_test_setup_teardown(name, fx_setup, fx_teardown)
      T(test_get_ok),
      T(test_methods_and_body),
      T(test_redirect_not_followed),
      T(test_gzip_and_header_bounds),
      T(test_429_gate),
      T(test_inner_wait_closes_the_gate),
      T(test_503_retry_after_and_cap),
      T(test_503_backoff),
      T(test_503_exhausted),
      T(test_body_cap),
      T(test_request_body_cap),
      T(test_connection_refused),
      T(test_reset_mid_body),
      T(test_close_cancels),
      T(test_close_from_callback),
      T(test_loop_runs_dry),
      T(test_invalid_requests),
      T(test_tls),
#undef T
  };
  int rc;

  /* libcurl runs with CURLOPT_NOSIGNAL: the process ignores SIGPIPE, as
   * the daemon must. Proxies from the environment must not catch
   * loopback requests (http.c also sets NOPROXY for loopback). */
  signal(SIGPIPE, SIG_IGN);
  log_set_level(LOG_LEVEL_DEBUG);
  log_set_sink(log_capture, NULL);
  rc = cmocka_run_group_tests(tests, NULL, NULL);
  log_set_sink(NULL, NULL);
  return rc;
}
