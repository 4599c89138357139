/*
 * testserver — the plumbing shared by the unit tests that run the
 * http-based modules (auth, exo, graph) on a libuv loop.
 *
 * - The loop: wake() stops the uv_run() of RUN_UNTIL so that it looks at
 *   its condition again; RUN_UNTIL(f, cond) runs f->loop until cond holds
 *   and fails after TEST_TIMEOUT_MS (f->guard, whose data points at
 *   f->timed_out, is the timeout). Nothing sleeps.
 * - The server: an HTTP/1.1 server on 127.0.0.1 in the same loop (uv_tcp;
 *   the http module allows plain http to loopback only). It reads each
 *   connection until one whole request (header block and Content-Length
 *   body) is in, then hands it to the test's request hook, which records
 *   it and either answers at once (ts_reply) or holds it; ts_release()
 *   answers what is held. A test's own server struct holds a struct
 *   ts_server as its first member, so that the hook can cast c->srv.
 * - The tenant: a private temporary directory holding a secret file, and
 *   a tenant "contoso" whose hosts are the test server.
 * - The log: a sink that keeps every line in log_buf.
 *
 * Every function is static inline: a test uses what it needs. Included
 * after cmocka.h.
 */
#ifndef GALBRIDGE_TEST_TESTSERVER_H
#define GALBRIDGE_TEST_TESTSERVER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "config.h"
#include "log.h"

#define TENANT_ID "4a6f1a2b-0c1d-4e5f-8a9b-0c1d2e3f4a5b"
#define CLIENT_ID "535fb089-9ff3-47b6-9bfb-4f1264799865"
#define TEST_TIMEOUT_MS 10000
#define TS_CONN_BUF (256 * 1024)

/* ------------------------------------------------------------------ */
/* The loop                                                            */

/* The loop of the running test. Every event a test may wait for calls
 * wake(): uv_stop() makes the uv_run() of RUN_UNTIL return instead of
 * blocking in poll until the next timer. Outside RUN_UNTIL it does
 * nothing, so no stop is left pending for a later uv_run(). */
static uv_loop_t *cur_loop;
static int in_run_until;

static inline void
wake(void)
{
  if (cur_loop != NULL && in_run_until)
    uv_stop(cur_loop);
}

/* The guard timer's callback: its data is the int that says timed out. */
static inline void
on_guard(uv_timer_t *t)
{
  int *timed_out = t->data;

  *timed_out = 1;
  wake();
}

/* Open the test's loop and its guard timer, which sets *timed_out. */
static inline void
ts_loop_open(uv_loop_t *loop, uv_timer_t *guard, int *timed_out)
{
  assert_int_equal(uv_loop_init(loop), 0);
  cur_loop = loop;
  assert_int_equal(uv_timer_init(loop, guard), 0);
  guard->data = timed_out;
}

/* Close the guard, run the loop until every handle is closed, and check
 * that the loop then closes: no handle was left open. */
static inline void
ts_loop_close(uv_loop_t *loop, uv_timer_t *guard)
{
  uv_close((uv_handle_t *)guard, NULL);
  assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(loop), 0);
  cur_loop = NULL;
}

/* Run the loop until `cond` holds; fail after TEST_TIMEOUT_MS. */
#define RUN_UNTIL(f, cond)                                                    \
  do {                                                                        \
    (f)->timed_out = 0;                                                       \
    uv_timer_start(&(f)->guard, on_guard, TEST_TIMEOUT_MS, 0);                \
    in_run_until = 1;                                                         \
    while (!(cond) && !(f)->timed_out)                                        \
      uv_run(&(f)->loop, UV_RUN_ONCE);                                        \
    in_run_until = 0;                                                         \
    uv_timer_stop(&(f)->guard);                                               \
    if (!(cond))                                                              \
      fail_msg("timed out waiting for %s", #cond);                            \
  } while (0)

/* ------------------------------------------------------------------ */
/* The server                                                          */

struct ts_server;

struct ts_conn {
  uv_tcp_t tcp;
  uv_write_t wr;
  uv_shutdown_t sh;
  struct ts_server *srv;
  struct ts_conn *next;
  char *buf; /* TS_CONN_BUF bytes and a NUL */
  size_t len;
  char *out; /* the answer; NULL while none was given */
  int complete;
  int index; /* of the request in the test's records: the hook sets it */
  int closing;
};

struct ts_server {
  uv_tcp_t tcp;
  int port;
  struct ts_conn *conns;
  int eofs; /* connections the client closed */
  /* A whole request is in c->buf: head_len bytes of header block (its
   * blank line included), then body_len bytes of body. */
  void (*request)(struct ts_conn *c, size_t head_len, size_t body_len);
  /* The client closed c; NULL: nothing to do. */
  void (*eof)(struct ts_conn *c);
};

static inline void
ts_conn_closed(uv_handle_t *h)
{
  struct ts_conn *c = h->data;
  struct ts_conn **p = &c->srv->conns;

  while (*p != c)
    p = &(*p)->next;
  *p = c->next;
  free(c->buf);
  free(c->out);
  free(c);
}

static inline void
ts_conn_close(struct ts_conn *c)
{
  if (!c->closing) {
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, ts_conn_closed);
  }
}

static inline void
ts_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct ts_conn *c = h->data;

  (void)suggested;
  buf->base = c->buf + c->len;
  buf->len = TS_CONN_BUF - c->len;
}

static inline void
ts_on_shutdown(uv_shutdown_t *sh, int status)
{
  (void)sh;
  (void)status;
}

static inline void
ts_on_written(uv_write_t *wr, int status)
{
  struct ts_conn *c = wr->data;

  if (status == 0 && !c->closing &&
      uv_shutdown(&c->sh, (uv_stream_t *)&c->tcp, ts_on_shutdown) != 0)
    ts_conn_close(c);
}

/* Answer the request on c with `status`, a body of type `ctype`, and
 * Connection: close; the server shuts its side down once written. */
static inline void
ts_reply(struct ts_conn *c, int status, const char *ctype, const char *body)
{
  size_t n = strlen(body) + 256;
  uv_buf_t b;

  c->out = malloc(n);
  assert_non_null(c->out);
  snprintf(c->out, n,
           "HTTP/1.1 %d Canned\r\nContent-Type: %s\r\nContent-Length: "
           "%zu\r\nConnection: close\r\n\r\n%s",
           status, ctype, strlen(body), body);
  b = uv_buf_init(c->out, (unsigned)strlen(c->out));
  c->wr.data = c;
  assert_int_equal(
      uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, ts_on_written), 0);
}

/* Value of header `name` in the header block `head` (the request line
 * first; it ends at its blank line or NUL), copied into out; "" when
 * absent. The value must fit. */
static inline void
ts_header(const char *head, const char *name, char *out, size_t outlen)
{
  size_t nl = strlen(name);
  const char *p = strstr(head, "\r\n");

  out[0] = '\0';
  while (p != NULL && p[2] != '\r' && p[2] != '\0') {
    const char *line = p + 2;
    const char *end = strstr(line, "\r\n");

    if (end == NULL)
      return;
    if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
      const char *v = line + nl + 1;
      size_t len;

      while (*v == ' ')
        v++;
      len = (size_t)(end - v);
      assert_true(len < outlen);
      memcpy(out, v, len);
      out[len] = '\0';
      return;
    }
    p = end;
  }
}

static inline void
ts_try_parse(struct ts_conn *c)
{
  char *end = strstr(c->buf, "\r\n\r\n");
  char clen[32];
  size_t head_len, body_len;

  if (end == NULL)
    return;
  end[2] = '\0'; /* look no further than the header block */
  ts_header(c->buf, "Content-Length", clen, sizeof(clen));
  end[2] = '\r';
  body_len = (size_t)strtoul(clen, NULL, 10);
  head_len = (size_t)(end - c->buf) + 4;
  if (c->len < head_len + body_len)
    return;
  c->complete = 1;
  c->srv->request(c, head_len, body_len);
}

static inline void
ts_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct ts_conn *c = s->data;

  (void)buf;
  if (n < 0) {
    c->srv->eofs++;
    if (c->srv->eof != NULL)
      c->srv->eof(c);
    ts_conn_close(c);
    wake();
    return;
  }
  c->len += (size_t)n;
  c->buf[c->len] = '\0';
  if (!c->complete)
    ts_try_parse(c);
}

static inline void
ts_on_connection(uv_stream_t *listener, int status)
{
  struct ts_server *srv = listener->data;
  struct ts_conn *c;

  assert_int_equal(status, 0);
  c = calloc(1, sizeof(*c));
  assert_non_null(c);
  c->buf = malloc(TS_CONN_BUF + 1);
  assert_non_null(c->buf);
  c->srv = srv;
  c->next = srv->conns;
  srv->conns = c;
  assert_int_equal(uv_tcp_init(listener->loop, &c->tcp), 0);
  c->tcp.data = c;
  assert_int_equal(uv_accept(listener, (uv_stream_t *)&c->tcp), 0);
  assert_int_equal(
      uv_read_start((uv_stream_t *)&c->tcp, ts_on_alloc, ts_on_read), 0);
}

/* Listen on an ephemeral port of 127.0.0.1 (srv->port); srv is cleared
 * first. */
static inline void
ts_start(uv_loop_t *loop, struct ts_server *srv,
         void (*request)(struct ts_conn *, size_t, size_t),
         void (*eof)(struct ts_conn *))
{
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);

  memset(srv, 0, sizeof(*srv));
  srv->request = request;
  srv->eof = eof;
  assert_int_equal(uv_tcp_init(loop, &srv->tcp), 0);
  srv->tcp.data = srv;
  assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
  assert_int_equal(uv_tcp_bind(&srv->tcp, (const struct sockaddr *)&addr, 0),
                   0);
  assert_int_equal(uv_listen((uv_stream_t *)&srv->tcp, 32, ts_on_connection),
                   0);
  assert_int_equal(
      uv_tcp_getsockname(&srv->tcp, (struct sockaddr *)&bound, &len), 0);
  srv->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
}

/* Answer with `respond` every request held so far. */
static inline void
ts_release(struct ts_server *srv, void (*respond)(struct ts_conn *))
{
  for (struct ts_conn *c = srv->conns; c != NULL; c = c->next) {
    if (c->complete && c->out == NULL && !c->closing)
      respond(c);
  }
}

/* Close every connection and the listener; uv_run() finishes the job. */
static inline void
ts_stop(struct ts_server *srv)
{
  for (struct ts_conn *c = srv->conns; c != NULL; c = c->next)
    ts_conn_close(c);
  uv_close((uv_handle_t *)&srv->tcp, NULL);
}

/* ------------------------------------------------------------------ */
/* The tenant                                                          */

/* Make the directory /tmp/<test>.XXXXXX (dir: 64 bytes) holding the file
 * "secret" (path: 128 bytes), mode 0600, that says `secret` and a
 * newline. */
static inline void
ts_secret_dir(char *dir, char *path, const char *test, const char *secret)
{
  FILE *fp;

  snprintf(dir, 64, "/tmp/%s.XXXXXX", test);
  assert_non_null(mkdtemp(dir));
  snprintf(path, 128, "%s/secret", dir);
  fp = fopen(path, "w");
  assert_non_null(fp);
  assert_true(fputs(secret, fp) >= 0);
  assert_true(fputc('\n', fp) == '\n');
  assert_int_equal(fclose(fp), 0);
  assert_int_equal(chmod(path, 0600), 0);
}

static inline void
ts_secret_dir_remove(const char *dir, const char *path)
{
  unlink(path);
  rmdir(dir);
}

/* The tenant "contoso" of the global cloud with a client secret: its
 * login, Graph and Exchange hosts are all `url`. */
static inline void
ts_tenant(struct config_tenant *t, const char *secret_path, const char *url)
{
  t->name = (char *)"contoso";
  t->tenant_id = (char *)TENANT_ID;
  t->client_id = (char *)CLIENT_ID;
  t->client_secret_file = (char *)secret_path;
  t->cloud = CONFIG_CLOUD_GLOBAL;
  t->login_url = (char *)url;
  t->graph_url = (char *)url;
  t->exchange_url = (char *)url;
}

/* ------------------------------------------------------------------ */
/* The log                                                             */

static char log_buf[64 * 1024];
static size_t log_len;

static inline void
log_sink(void *ctx, enum log_level level, const char *line)
{
  int n;

  (void)ctx;
  n = snprintf(log_buf + log_len, sizeof(log_buf) - log_len, "%d %s\n",
               (int)level, line);
  if (n > 0 && (size_t)n < sizeof(log_buf) - log_len)
    log_len += (size_t)n;
}

/* Keep every log line from debug up in log_buf, from empty. */
static inline void
log_capture(void)
{
  log_len = 0;
  log_buf[0] = '\0';
  log_set_sink(log_sink, NULL);
  log_set_level(LOG_LEVEL_DEBUG);
}

/* Back to the default sink and level. */
static inline void
log_uncapture(void)
{
  log_set_sink(NULL, NULL);
  log_set_level(LOG_LEVEL_INFO);
}

#endif
