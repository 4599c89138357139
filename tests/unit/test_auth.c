/*
 * test_auth — the auth module against a token endpoint of our own.
 *
 * Each test runs a tiny HTTP/1.1 server on 127.0.0.1 in the same libuv
 * loop (testserver.h; the http module allows plain http to loopback only).
 * The server records every request (method, path, Host, Content-Type, body)
 * and answers from a script: one canned reply that repeats, or by default
 * a fresh token per request. It can hold its answers until the test
 * releases them, so a request can be kept in flight. Tests check the exact
 * form the server saw (parsed and decoded here), the assertion (verified
 * with OpenSSL), the result and errmsg the caller got, and what was
 * logged. Nothing sleeps: the loop runs until a condition holds, with a
 * guard timer as the timeout. Each test ends by closing every handle and
 * checking that uv_loop_close() returns 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <uv.h>

#include "auth.h"
#include "http.h"
#include "log.h"

#include "testserver.h"

#define SECRET "s3cr3t value+/&=%~"
#define TOKEN_PATH "/" TENANT_ID "/oauth2/v2.0/token"
#define MAX_REQS 32

/* ------------------------------------------------------------------ */
/* The token server                                                    */

struct recorded {
  char method[16];
  char path[256];
  char host[128];
  char content_type[128];
  char *body;
  size_t body_len;
};

struct server {
  struct ts_server ts; /* first: the hooks cast c->srv to struct server */
  struct recorded reqs[MAX_REQS];
  int n_reqs;
  int status;             /* canned reply; 0: a fresh token per request */
  const char *body;       /* canned body */
  const char *expires_in; /* JSON value for the default reply */
  int hold;
};

static void
respond(struct ts_conn *c)
{
  struct server *srv = (struct server *)c->srv;
  char token_body[256];
  const char *body = srv->body;
  int status = srv->status;

  if (status == 0) {
    snprintf(token_body, sizeof(token_body),
             "{\"token_type\":\"Bearer\",\"expires_in\":%s,"
             "\"ext_expires_in\":3599,\"access_token\":\"eyJ0.tok-%d.sig\"}",
             srv->expires_in != NULL ? srv->expires_in : "3599", c->index + 1);
    body = token_body;
    status = 200;
  }
  ts_reply(c, status, "application/json; charset=utf-8", body);
}

/* Record a whole request; answer it unless answers are held. */
static void
on_request(struct ts_conn *c, size_t head_len, size_t body_len)
{
  struct server *srv = (struct server *)c->srv;
  struct recorded *r;

  assert_true(srv->n_reqs < MAX_REQS);
  c->index = srv->n_reqs++;
  r = &srv->reqs[c->index];
  memset(r, 0, sizeof(*r));
  assert_int_equal(sscanf(c->buf, "%15s %255s", r->method, r->path), 2);
  ts_header(c->buf, "Host", r->host, sizeof(r->host));
  ts_header(c->buf, "Content-Type", r->content_type, sizeof(r->content_type));
  r->body = strndup(c->buf + head_len, body_len);
  assert_non_null(r->body);
  r->body_len = body_len;
  wake();
  if (!srv->hold)
    respond(c);
}

static void
server_start(uv_loop_t *loop, struct server *srv)
{
  memset(srv, 0, sizeof(*srv));
  ts_start(loop, &srv->ts, on_request, NULL);
}

/* Answer every request held so far, and the next ones at once. */
static void
server_release(struct server *srv)
{
  srv->hold = 0;
  ts_release(&srv->ts, respond);
}

static void
server_stop(struct server *srv)
{
  ts_stop(&srv->ts);
  for (int i = 0; i < srv->n_reqs; i++)
    free(srv->reqs[i].body);
}

/* ------------------------------------------------------------------ */
/* Forms, base64url, JWTs                                              */

struct form {
  int n;
  char key[8][64];
  char val[8][8200];
};

static int
hexval(int c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static void
form_decode(const char *s, size_t len, char *out, size_t outlen)
{
  size_t j = 0;

  for (size_t i = 0; i < len; i++) {
    assert_true(j + 1 < outlen);
    if (s[i] == '%') {
      assert_true(i + 2 < len);
      assert_true(hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0);
      out[j++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    } else if (s[i] == '+') {
      out[j++] = ' ';
    } else {
      out[j++] = s[i];
    }
  }
  out[j] = '\0';
}

/* Parse an x-www-form-urlencoded body; every byte must be unreserved, a
 * %XX escape or a separator, so a value that was not encoded shows. */
static void
form_parse(const char *body, struct form *f)
{
  const char *p = body;

  memset(f, 0, sizeof(*f));
  assert_int_equal(strspn(body, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
                                "qrstuvwxyz0123456789-._~%=&"),
                   strlen(body));
  while (*p != '\0') {
    const char *amp = strchr(p, '&');
    const char *end = amp != NULL ? amp : p + strlen(p);
    const char *eq = memchr(p, '=', (size_t)(end - p));

    assert_non_null(eq);
    assert_true(f->n < 8);
    form_decode(p, (size_t)(eq - p), f->key[f->n], sizeof(f->key[0]));
    form_decode(eq + 1, (size_t)(end - eq - 1), f->val[f->n],
                sizeof(f->val[0]));
    f->n++;
    p = amp != NULL ? amp + 1 : end;
  }
}

static void
assert_form(const struct form *f, const char *const *want, int n)
{
  if (f->n != n)
    fail_msg("form has %d fields, want %d", f->n, n);
  for (int i = 0; i < n; i++) {
    assert_string_equal(f->key[i], want[2 * i]);
    assert_string_equal(f->val[i], want[2 * i + 1]);
  }
}

#include "b64url.h"

static json_t *
jwt_part(const char *s, size_t len)
{
  size_t n;
  unsigned char *raw = b64url_decode(s, len, &n);
  json_t *j = json_loadb((const char *)raw, n, 0, NULL);

  free(raw);
  assert_true(json_is_object(j));
  return j;
}

/* ------------------------------------------------------------------ */
/* Fixture                                                             */

struct got {
  int called;
  int result;
  int during_call; /* called from inside auth_token(): a defect */
  char token[128];
  char errmsg[700];
};

struct fx {
  uv_loop_t loop;
  uv_timer_t guard;
  int timed_out;
  struct server srv;
  struct http *http;
  struct auth *auth;
  struct config_tenant tenant;
  char login_url[64];
  char dir[64];
  char secret_path[128];
};

static int in_auth_call;
static X509 *test_cert;
static char cert_dir[64];
static char cert_path[128];

static void
on_token(void *ctx, int result, const char *token, const char *errmsg)
{
  struct got *g = ctx;

  g->called++;
  wake();
  g->result = result;
  g->during_call |= in_auth_call;
  assert_non_null(errmsg);
  if (result == AUTH_OK) {
    assert_non_null(token);
    assert_string_equal(errmsg, "");
    snprintf(g->token, sizeof(g->token), "%s", token);
  } else {
    assert_null(token);
    g->token[0] = '\0';
  }
  snprintf(g->errmsg, sizeof(g->errmsg), "%s", errmsg);
}

static void
ask(struct fx *f, enum auth_resource res, struct got *g)
{
  memset(g, 0, sizeof(*g));
  in_auth_call = 1;
  assert_int_equal(auth_token(f->auth, res, on_token, g), 0);
  in_auth_call = 0;
  assert_int_equal(g->called, 0);
}

/* ask(), then run the loop until the answer is in. */
static void
ask_wait(struct fx *f, enum auth_resource res, struct got *g)
{
  ask(f, res, g);
  RUN_UNTIL(f, g->called);
}

static void
write_file(const char *path, const char *data, size_t len, mode_t mode)
{
  FILE *fp = fopen(path, "w");

  assert_non_null(fp);
  assert_int_equal(fwrite(data, 1, len, fp), len);
  assert_int_equal(fclose(fp), 0);
  assert_int_equal(chmod(path, mode), 0);
}

static struct fx *
fx_new(void)
{
  struct fx *f = calloc(1, sizeof(*f));
  struct http_options opts = {
      .connect_timeout_ms = 5000,
      .timeout_ms = 10000,
      .max_attempts = 2,
      .backoff_base_ms = 1,
      .backoff_cap_ms = 5,
  };

  assert_non_null(f);
  ts_loop_open(&f->loop, &f->guard, &f->timed_out);
  server_start(&f->loop, &f->srv);
  f->http = http_new(&f->loop, &opts);
  assert_non_null(f->http);
  snprintf(f->login_url, sizeof(f->login_url), "http://127.0.0.1:%d",
           f->srv.ts.port);
  ts_secret_dir(f->dir, f->secret_path, "test_auth", SECRET);
  ts_tenant(&f->tenant, f->secret_path, f->login_url);
  f->tenant.graph_url = (char *)"https://graph.example";
  f->tenant.exchange_url = (char *)"https://outlook.example";
  log_capture();
  return f;
}

static void
fx_auth(struct fx *f)
{
  char err[512];

  assert_int_equal(
      auth_new(&f->loop, f->http, &f->tenant, &f->auth, err, sizeof(err)), 0);
  assert_non_null(f->auth);
}

static void
fx_free(struct fx *f)
{
  auth_free(f->auth);
  if (f->http != NULL)
    http_close(f->http);
  server_stop(&f->srv);
  ts_loop_close(&f->loop, &f->guard);
  ts_secret_dir_remove(f->dir, f->secret_path);
  log_uncapture();
  /* No secret and no token ever reaches a log line. */
  assert_null(strstr(log_buf, "s3cr3t"));
  assert_null(strstr(log_buf, "eyJ0.tok"));
  free(f);
}

/* ------------------------------------------------------------------ */
/* Tests                                                               */

static void
test_scopes(void **state)
{
  static const struct {
    enum config_cloud cloud;
    const char *graph;
    const char *exchange;
  } cases[] = {
      {CONFIG_CLOUD_GLOBAL, "https://graph.microsoft.com/.default",
       "https://outlook.office365.com/.default"},
      {CONFIG_CLOUD_USGOVHIGH, "https://graph.microsoft.us/.default",
       "https://outlook.office365.us/.default"},
      {CONFIG_CLOUD_DOD, "https://dod-graph.microsoft.us/.default",
       "https://webmail.apps.mil/.default"},
      {CONFIG_CLOUD_CHINA, "https://microsoftgraph.chinacloudapi.cn/.default",
       "https://partner.outlook.cn/.default"},
  };

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    assert_string_equal(auth_scope(cases[i].cloud, AUTH_RESOURCE_GRAPH),
                        cases[i].graph);
    assert_string_equal(auth_scope(cases[i].cloud, AUTH_RESOURCE_EXCHANGE),
                        cases[i].exchange);
  }
  assert_null(auth_scope((enum config_cloud)9, AUTH_RESOURCE_GRAPH));
  assert_null(auth_scope(CONFIG_CLOUD_GLOBAL, (enum auth_resource)5));
}

static void
test_secret_flow(void **state)
{
  struct fx *f = fx_new();
  struct form form;
  struct got g;
  const char *const want[] = {
      "client_id",     CLIENT_ID,
      "scope",         "https://graph.microsoft.com/.default",
      "grant_type",    "client_credentials",
      "client_secret", SECRET,
  };

  (void)state;
  fx_auth(f);
  assert_null(auth_cached(f->auth, AUTH_RESOURCE_GRAPH));
  ask_wait(f, AUTH_RESOURCE_GRAPH, &g);
  assert_int_equal(g.called, 1);
  assert_int_equal(g.during_call, 0);
  assert_int_equal(g.result, AUTH_OK);
  assert_string_equal(g.token, "eyJ0.tok-1.sig");
  assert_int_equal(f->srv.n_reqs, 1);
  assert_string_equal(f->srv.reqs[0].method, "POST");
  assert_string_equal(f->srv.reqs[0].path, TOKEN_PATH);
  assert_string_equal(f->srv.reqs[0].content_type,
                      "application/x-www-form-urlencoded");
  form_parse(f->srv.reqs[0].body, &form);
  assert_form(&form, want, 4);
  assert_string_equal(auth_cached(f->auth, AUTH_RESOURCE_GRAPH),
                      "eyJ0.tok-1.sig");
  assert_null(auth_cached(f->auth, AUTH_RESOURCE_EXCHANGE));
  assert_int_equal(auth_refresh_count(f->auth), 1);
  assert_non_null(strstr(log_buf, "token obtained tenant=contoso "
                                  "resource=graph expires_in=3599s"));
  fx_free(f);
}

/* The secret file is read at each request: a table of contents, and what
 * is sent (or the error), all through one auth. */
static void
test_secret_file(void **state)
{
  static char big[8192 + 3];
  static char too_big[8193 + 1];
  static const struct {
    const char *content;
    size_t len; /* 0: strlen */
    mode_t mode;
    const char *sent; /* NULL: refused with `error` */
    const char *error;
  } cases[] = {
      {"abc\n", 0, 0600, "abc", NULL},
      {"abc", 0, 0600, "abc", NULL},
      {"rotated\r\n", 0, 0400, "rotated", NULL},
      {"two\n\n", 0, 0600, "two\n", NULL},
      {"cr\r", 0, 0600, "cr\r", NULL},
      {"", 0, 0600, NULL, "empty"},
      {"\n", 0, 0600, NULL, "empty"},
      {"\r\n", 0, 0600, NULL, "empty"},
      {"a\0b", 3, 0600, NULL, "NUL"},
      {"loose\n", 0, 0640, NULL, "readable by group or others"},
      {"loose\n", 0, 0604, NULL, "readable by group or others"},
      {big, 8193, 0600, big, NULL},          /* 8192 + "\n" */
      {too_big, 8193, 0600, NULL, "larger"}, /* 8193 bytes */
      {NULL, 0, 0, NULL, "No such file"},
  };
  struct fx *f = fx_new();

  (void)state;
  memset(big, 'x', 8192);
  big[8192] = '\n';
  memset(too_big, 'y', 8193);
  fx_auth(f);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int before = f->srv.n_reqs;
    struct got g;

    unlink(f->secret_path);
    if (cases[i].content != NULL)
      write_file(f->secret_path, cases[i].content,
                 cases[i].len ? cases[i].len : strlen(cases[i].content),
                 cases[i].mode);
    auth_invalidate(f->auth, AUTH_RESOURCE_GRAPH, NULL);
    ask_wait(f, AUTH_RESOURCE_GRAPH, &g);
    if (cases[i].sent != NULL) {
      struct form form;
      char want[8200];

      assert_int_equal(g.result, AUTH_OK);
      assert_int_equal(f->srv.n_reqs, before + 1);
      form_parse(f->srv.reqs[before].body, &form);
      assert_string_equal(form.key[3], "client_secret");
      /* At most 8192 bytes: `big` without its newline. */
      snprintf(want, sizeof(want), "%.*s", 8192, cases[i].sent);
      assert_string_equal(form.val[3], want);
    } else {
      assert_int_equal(g.result, AUTH_ERR_CREDENTIALS);
      assert_int_equal(f->srv.n_reqs, before); /* nothing was sent */
      if (strstr(g.errmsg, cases[i].error) == NULL ||
          strstr(g.errmsg, "tenant contoso: client_secret_file ") == NULL ||
          strstr(g.errmsg, f->secret_path) == NULL)
        fail_msg("case %zu: errmsg \"%s\", want \"%s\"", i, g.errmsg,
                 cases[i].error);
      assert_null(auth_cached(f->auth, AUTH_RESOURCE_GRAPH));
    }
  }
  fx_free(f);
}

static void
load_cert(const char *path)
{
  FILE *fp = fopen(path, "r");

  assert_non_null(fp);
  test_cert = PEM_read_X509(fp, NULL, NULL, NULL);
  assert_non_null(test_cert);
  fclose(fp);
}

static void
test_certificate_flow(void **state)
{
  struct fx *f = fx_new();
  struct form form;
  struct got g;
  char url[512];
  const char *jwt, *d1, *d2;
  json_t *header, *claims;
  unsigned char *sig;
  size_t sig_len;
  EVP_MD_CTX *md;

  (void)state;
  f->tenant.client_secret_file = NULL;
  f->tenant.certificate_file = cert_path;
  f->tenant.cloud = CONFIG_CLOUD_USGOVHIGH;
  fx_auth(f);
  ask_wait(f, AUTH_RESOURCE_EXCHANGE, &g);
  assert_int_equal(g.result, AUTH_OK);
  assert_int_equal(f->srv.n_reqs, 1);
  assert_string_equal(f->srv.reqs[0].path, TOKEN_PATH);
  assert_non_null(strstr(f->srv.reqs[0].body,
                         "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth"
                         "%3Aclient-assertion-type%3Ajwt-bearer&"));
  form_parse(f->srv.reqs[0].body, &form);
  assert_int_equal(form.n, 5);
  assert_string_equal(form.key[0], "client_id");
  assert_string_equal(form.val[0], CLIENT_ID);
  assert_string_equal(form.key[1], "scope");
  /* From the cloud, whatever login_url says. */
  assert_string_equal(form.val[1], "https://outlook.office365.us/.default");
  assert_string_equal(form.key[2], "grant_type");
  assert_string_equal(form.val[2], "client_credentials");
  assert_string_equal(form.key[3], "client_assertion_type");
  assert_string_equal(
      form.val[3], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
  assert_string_equal(form.key[4], "client_assertion");

  /* The assertion: aud is the URL the server was called on. */
  jwt = form.val[4];
  d1 = strchr(jwt, '.');
  assert_non_null(d1);
  d2 = strchr(d1 + 1, '.');
  assert_non_null(d2);
  header = jwt_part(jwt, (size_t)(d1 - jwt));
  claims = jwt_part(d1 + 1, (size_t)(d2 - d1 - 1));
  assert_string_equal(json_string_value(json_object_get(header, "alg")),
                      "RS256");
  assert_non_null(json_string_value(json_object_get(header, "x5t")));
  snprintf(url, sizeof(url), "http://%s%s", f->srv.reqs[0].host,
           f->srv.reqs[0].path);
  assert_string_equal(json_string_value(json_object_get(claims, "aud")), url);
  snprintf(url, sizeof(url), "%s%s", f->login_url, TOKEN_PATH);
  assert_string_equal(json_string_value(json_object_get(claims, "aud")), url);
  assert_string_equal(json_string_value(json_object_get(claims, "iss")),
                      CLIENT_ID);
  assert_string_equal(json_string_value(json_object_get(claims, "sub")),
                      CLIENT_ID);
  json_decref(header);
  json_decref(claims);

  sig = b64url_decode(d2 + 1, strlen(d2 + 1), &sig_len);
  md = EVP_MD_CTX_new();
  assert_non_null(md);
  assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL,
                                        X509_get0_pubkey(test_cert)),
                   1);
  assert_int_equal(EVP_DigestVerify(md, sig, sig_len,
                                    (const unsigned char *)jwt,
                                    (size_t)(d2 - jwt)),
                   1);
  EVP_MD_CTX_free(md);
  free(sig);
  assert_null(strstr(log_buf, d2 + 1)); /* the signature never logged */
  fx_free(f);
}

struct reask {
  struct fx *f;
  struct got first;
  struct got second;
};

static void
on_token_reask(void *ctx, int result, const char *token, const char *errmsg)
{
  struct reask *r = ctx;

  on_token(&r->first, result, token, errmsg);
  in_auth_call = 1;
  assert_int_equal(
      auth_token(r->f->auth, AUTH_RESOURCE_GRAPH, on_token, &r->second), 0);
  in_auth_call = 0;
  assert_int_equal(r->second.called, 0);
}

static void
test_cache(void **state)
{
  struct fx *f = fx_new();
  struct got a, b, x;
  struct reask r;
  struct form form;

  (void)state;
  fx_auth(f);
  ask_wait(f, AUTH_RESOURCE_GRAPH, &a);
  assert_int_equal(a.result, AUTH_OK);

  /* Fresh: answered later from the loop, without a request. */
  ask_wait(f, AUTH_RESOURCE_GRAPH, &b);
  assert_int_equal(b.result, AUTH_OK);
  assert_int_equal(b.during_call, 0);
  assert_string_equal(b.token, a.token);
  assert_int_equal(f->srv.n_reqs, 1);

  /* A callback may ask again; that answer comes on a later turn. */
  memset(&r, 0, sizeof(r));
  r.f = f;
  assert_int_equal(
      auth_token(f->auth, AUTH_RESOURCE_GRAPH, on_token_reask, &r), 0);
  RUN_UNTIL(f, r.second.called);
  assert_int_equal(r.second.during_call, 0);
  assert_string_equal(r.second.token, a.token);
  assert_int_equal(f->srv.n_reqs, 1);

  /* The other resource has its own token and scope. */
  ask_wait(f, AUTH_RESOURCE_EXCHANGE, &x);
  assert_int_equal(x.result, AUTH_OK);
  assert_string_not_equal(x.token, a.token);
  assert_int_equal(f->srv.n_reqs, 2);
  form_parse(f->srv.reqs[1].body, &form);
  assert_string_equal(form.val[1], "https://outlook.office365.com/.default");
  assert_string_equal(auth_cached(f->auth, AUTH_RESOURCE_GRAPH), a.token);
  assert_string_equal(auth_cached(f->auth, AUTH_RESOURCE_EXCHANGE), x.token);
  assert_int_equal(auth_refresh_count(f->auth), 2);
  fx_free(f);
}

static int
count_path(const struct server *srv, const char *path)
{
  int n = 0;

  for (int i = 0; i < srv->n_reqs; i++)
    n += strcmp(srv->reqs[i].path, path) == 0;
  return n;
}

static void
on_probe(void *ctx, const struct http_response *resp)
{
  int *done = ctx;

  (void)resp;
  *done = 1;
  wake();
}

static void
test_single_flight(void **state)
{
  struct fx *f = fx_new();
  struct got g[3];
  char probe_url[128];
  struct http_request probe = {
      .method = "GET", .url = probe_url, .gate = TENANT_ID "/login"};
  int probe_done = 0;

  (void)state;
  /* A token that is never fresh: a caller that did not join the request
   * in flight would have to make a request of its own. */
  f->srv.expires_in = "0";
  fx_auth(f);
  f->srv.hold = 1;
  ask(f, AUTH_RESOURCE_GRAPH, &g[0]);
  RUN_UNTIL(f, f->srv.n_reqs == 1);
  /* Two more while the first request is in flight. */
  ask(f, AUTH_RESOURCE_GRAPH, &g[1]);
  ask(f, AUTH_RESOURCE_GRAPH, &g[2]);
  uv_run(&f->loop, UV_RUN_NOWAIT); /* their turn: they join the request */
  assert_int_equal(g[1].called, 0);
  assert_int_equal(g[2].called, 0);
  /* A request sent after anything they could have sent: once the server
   * has it, it has seen every token request made so far. */
  snprintf(probe_url, sizeof(probe_url), "%s/probe", f->login_url);
  assert_int_equal(http_send(f->http, &probe, on_probe, &probe_done), 0);
  RUN_UNTIL(f, count_path(&f->srv, "/probe") == 1);
  assert_int_equal(count_path(&f->srv, TOKEN_PATH), 1);
  server_release(&f->srv);
  RUN_UNTIL(f, g[0].called && g[1].called && g[2].called && probe_done);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(g[i].called, 1);
    assert_int_equal(g[i].result, AUTH_OK);
    assert_string_equal(g[i].token, "eyJ0.tok-1.sig");
  }
  assert_int_equal(count_path(&f->srv, TOKEN_PATH), 1);
  assert_int_equal(auth_refresh_count(f->auth), 1);
  fx_free(f);
}

/* expires_in 0 (as a string): delivered, but never fresh. */
static void
test_expired_at_once(void **state)
{
  struct fx *f = fx_new();
  struct got a, b;

  (void)state;
  f->srv.expires_in = "\"0\"";
  fx_auth(f);
  ask_wait(f, AUTH_RESOURCE_GRAPH, &a);
  assert_int_equal(a.result, AUTH_OK);
  assert_null(auth_cached(f->auth, AUTH_RESOURCE_GRAPH));
  ask_wait(f, AUTH_RESOURCE_GRAPH, &b);
  assert_int_equal(b.result, AUTH_OK);
  assert_string_equal(b.token, "eyJ0.tok-2.sig");
  assert_int_equal(f->srv.n_reqs, 2);
  fx_free(f);
}

static void
on_tick(uv_timer_t *t)
{
  (void)t;
  wake();
}

/* A 2 s token is fresh for 1.5 s (a quarter of its life is the margin),
 * then a new one is asked for. */
static void
test_refresh_near_expiry(void **state)
{
  struct fx *f = fx_new();
  struct got a, b;
  uv_timer_t tick;
  uint64_t got_at, stale_at;

  (void)state;
  f->srv.expires_in = "2";
  fx_auth(f);
  ask_wait(f, AUTH_RESOURCE_GRAPH, &a);
  got_at = uv_hrtime();
  assert_int_equal(a.result, AUTH_OK);
  assert_string_equal(auth_cached(f->auth, AUTH_RESOURCE_GRAPH), a.token);
  /* Poll every 20 ms until the cache says stale. */
  assert_int_equal(uv_timer_init(&f->loop, &tick), 0);
  assert_int_equal(uv_timer_start(&tick, on_tick, 20, 20), 0);
  RUN_UNTIL(f, auth_cached(f->auth, AUTH_RESOURCE_GRAPH) == NULL);
  stale_at = uv_hrtime();
  uv_close((uv_handle_t *)&tick, NULL);
  /* Stale after 1.5 s, well before the 2 s expiry. */
  assert_true(stale_at - got_at < 2000000000ULL);
  assert_true(stale_at - got_at > 1000000000ULL);
  ask_wait(f, AUTH_RESOURCE_GRAPH, &b);
  assert_int_equal(b.result, AUTH_OK);
  assert_string_equal(b.token, "eyJ0.tok-2.sig");
  assert_int_equal(f->srv.n_reqs, 2);
  fx_free(f);
}

static void
test_invalidate(void **state)
{
  struct fx *f = fx_new();
  struct got a, b;

  (void)state;
  fx_auth(f);
  ask_wait(f, AUTH_RESOURCE_GRAPH, &a);
  /* Another token (already replaced) does not drop the current one. */
  auth_invalidate(f->auth, AUTH_RESOURCE_GRAPH, "eyJ0.old.sig");
  auth_invalidate(f->auth, AUTH_RESOURCE_EXCHANGE, a.token);
  assert_string_equal(auth_cached(f->auth, AUTH_RESOURCE_GRAPH), a.token);
  auth_invalidate(f->auth, AUTH_RESOURCE_GRAPH, a.token);
  assert_null(auth_cached(f->auth, AUTH_RESOURCE_GRAPH));
  ask_wait(f, AUTH_RESOURCE_GRAPH, &b);
  assert_int_equal(b.result, AUTH_OK);
  assert_string_equal(b.token, "eyJ0.tok-2.sig");
  assert_int_equal(f->srv.n_reqs, 2);
  assert_int_equal(auth_refresh_count(f->auth), 2);
  fx_free(f);
}

/* Error answers: a table of server replies and what the caller gets. */
static void
test_error_answers(void **state)
{
  static const char invalid_scope[] =
      "{\"error\":\"invalid_scope\",\"error_description\":\"AADSTS70011: "
      "The provided value for the input parameter 'scope' is not valid. "
      "The scope https://foo.microsoft.com/.default is not valid.\\r\\n"
      "Trace ID: 255d1aef-8c98-452f-ac51-23d051240864\\r\\nCorrelation ID: "
      "fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7\\r\\nTimestamp: 2016-01-09 "
      "02:02:12Z\",\"error_codes\":[70011],\"timestamp\":\"2016-01-09 "
      "02:02:12Z\",\"trace_id\":\"255d1aef-8c98-452f-ac51-23d051240864\","
      "\"correlation_id\":\"fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7\"}";
  static const struct {
    int status;
    const char *body;
    int result;
    const char *errmsg; /* exact, or a part when `part` */
    int part;
  } cases[] = {
      {401,
       "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215:"
       " Invalid client secret provided.\\r\\nTrace ID: 0b1c\\r\\n"
       "Correlation ID: 1c2d\\r\\nTimestamp: 2024-05-01 10:00:00Z\","
       "\"error_codes\":[7000215]}",
       AUTH_ERR_CREDENTIALS,
       "tenant contoso: token request refused (401 invalid_client): "
       "AADSTS7000215: Invalid client secret provided.",
       0},
      {400, invalid_scope, AUTH_ERR_CREDENTIALS,
       "tenant contoso: token request refused (400 invalid_scope): "
       "AADSTS70011: The provided value for the input parameter 'scope' is "
       "not valid. The scope https://foo.microsoft.com/.default is not "
       "valid.",
       0},
      {400,
       "{\"error\":\"unauthorized_client\",\"error_description\":"
       "\"AADSTS700016: Application not found.\"}",
       AUTH_ERR_CREDENTIALS,
       "tenant contoso: token request refused (400 unauthorized_client): "
       "AADSTS700016: Application not found.",
       0},
      {400, "{\"error\":\"invalid_request\"}", AUTH_ERR_CREDENTIALS,
       "tenant contoso: token request refused (400 invalid_request)", 0},
      {400, "{\"error\":\"invalid_grant\",\"error_description\":\"x\"}",
       AUTH_ERR_CREDENTIALS,
       "tenant contoso: token request refused (400 invalid_grant): x", 0},
      /* The server echoing the secret: the description is withheld. */
      {401,
       "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215:"
       " bad secret s3cr3t value+/&=%~ given\"}",
       AUTH_ERR_CREDENTIALS,
       "tenant contoso: token request refused (401 invalid_client): "
       "(description withheld: it repeats the credential)",
       0},
      {401,
       "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215:"
       " bad secret s3cr3t%20value%2B%2F%26%3D%25~\"}",
       AUTH_ERR_CREDENTIALS,
       "tenant contoso: token request refused (401 invalid_client): "
       "(description withheld: it repeats the credential)",
       0},
      {503,
       "{\"error\":\"temporarily_unavailable\",\"error_description\":"
       "\"AADSTS50196: The server terminated an operation.\\r\\nTrace ID: "
       "x\"}",
       AUTH_ERR_TRANSIENT,
       "tenant contoso: token request failed (503 temporarily_unavailable): "
       "AADSTS50196: The server terminated an operation.",
       0},
      {500, "<html>Internal error</html>", AUTH_ERR_TRANSIENT,
       "tenant contoso: token request failed (500): the answer is not a "
       "JSON object",
       0},
      {429, "", AUTH_ERR_TRANSIENT, "token request failed (429)", 1},
      {400, "{\"error\":\"some_new_error\"}", AUTH_ERR_TRANSIENT,
       "tenant contoso: token request failed (400 some_new_error)", 0},
      {403, "{\"error\":\"invalid_client\"}", AUTH_ERR_TRANSIENT,
       "token request failed (403 invalid_client)", 1},
      {200, "not json", AUTH_ERR_TRANSIENT,
       "tenant contoso: token request failed (200): the answer is not a "
       "JSON object",
       0},
      {200, "[1,2]", AUTH_ERR_TRANSIENT, "not a JSON object", 1},
      {200,
       "{\"token_type\":\"pop\",\"expires_in\":3599,\"access_token\":\"a\"}",
       AUTH_ERR_TRANSIENT,
       "tenant contoso: token response (200) unusable: token_type is not "
       "Bearer",
       0},
      {200, "{\"token_type\":\"Bearer\",\"expires_in\":3599}",
       AUTH_ERR_TRANSIENT, "no access_token", 1},
      {200,
       "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"access_token\":\"\"}",
       AUTH_ERR_TRANSIENT, "no access_token", 1},
      {200,
       "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"access_token\":"
       "\"a\\r\\nX-Injected: 1\"}",
       AUTH_ERR_TRANSIENT, "not printable ASCII", 1},
      {200,
       "{\"token_type\":\"Bearer\",\"expires_in\":-5,\"access_token\":\"a\"}",
       AUTH_ERR_TRANSIENT, "expires_in", 1},
      {200,
       "{\"token_type\":\"Bearer\",\"expires_in\":\"12x\",\"access_token\":"
       "\"a\"}",
       AUTH_ERR_TRANSIENT, "expires_in", 1},
      {200,
       "{\"token_type\":\"Bearer\",\"expires_in\":1.5,\"access_token\":\"a\"}",
       AUTH_ERR_TRANSIENT, "expires_in", 1},
      {200, "{\"token_type\":\"Bearer\",\"access_token\":\"a\"}",
       AUTH_ERR_TRANSIENT, "expires_in", 1},
      /* Accepted: any case of Bearer, expires_in as a string. */
      {200,
       "{\"token_type\":\"bearer\",\"expires_in\":\"3599\","
       "\"access_token\":\"eyJ0.tok-ok.sig\"}",
       AUTH_OK, "", 0},
  };
  struct fx *f = fx_new();

  (void)state;
  fx_auth(f);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct got g;
    int before = f->srv.n_reqs;

    f->srv.status = cases[i].status;
    f->srv.body = cases[i].body;
    log_len = 0;
    log_buf[0] = '\0';
    ask_wait(f, AUTH_RESOURCE_GRAPH, &g);
    if (g.result != cases[i].result ||
        (cases[i].part ? strstr(g.errmsg, cases[i].errmsg) == NULL
                       : strcmp(g.errmsg, cases[i].errmsg) != 0))
      fail_msg("case %zu: got %d \"%s\", want %d \"%s\"", i, g.result,
               g.errmsg, cases[i].result, cases[i].errmsg);
    assert_null(strstr(g.errmsg, "s3cr3t"));
    assert_null(strstr(g.errmsg, "Trace ID"));
    if (g.result == AUTH_OK) {
      assert_string_equal(g.token, "eyJ0.tok-ok.sig");
      auth_invalidate(f->auth, AUTH_RESOURCE_GRAPH, NULL);
      continue;
    }
    assert_null(auth_cached(f->auth, AUTH_RESOURCE_GRAPH));
    /* Retried statuses were sent twice (max_attempts 2), others once. */
    if (cases[i].status == 429 || cases[i].status == 503)
      assert_int_equal(f->srv.n_reqs, before + 2);
    else
      assert_int_equal(f->srv.n_reqs, before + 1);
    /* Logged once, at error for a refusal, warning otherwise. */
    {
      char want[64];
      snprintf(want, sizeof(want), "%d token request failed",
               g.result == AUTH_ERR_CREDENTIALS ? LOG_LEVEL_ERROR
                                                : LOG_LEVEL_WARNING);
      if (strstr(log_buf, want) == NULL ||
          strstr(log_buf, cases[i].errmsg) == NULL)
        fail_msg("case %zu: log \"%s\"", i, log_buf);
    }
  }
  assert_int_equal(auth_refresh_count(f->auth), 1);
  fx_free(f);
}

/* A token at the 64 KiB limit is taken; one byte more is not. */
static void
test_token_size_limit(void **state)
{
  struct fx *f = fx_new();
  size_t sizes[] = {65536, 65537};
  char *body = malloc(65537 + 128);

  (void)state;
  assert_non_null(body);
  fx_auth(f);
  for (int i = 0; i < 2; i++) {
    struct got g;
    int n = snprintf(body, 65537 + 128,
                     "{\"token_type\":\"Bearer\",\"expires_in\":3599,"
                     "\"access_token\":\"");
    memset(body + n, 'T', sizes[i]);
    snprintf(body + n + sizes[i], 8, "\"}");
    f->srv.status = 200;
    f->srv.body = body;
    ask_wait(f, AUTH_RESOURCE_GRAPH, &g);
    assert_int_equal(g.result, i == 0 ? AUTH_OK : AUTH_ERR_TRANSIENT);
    if (i == 0) {
      const char *t = auth_cached(f->auth, AUTH_RESOURCE_GRAPH);
      assert_non_null(t);
      assert_int_equal(strlen(t), 65536);
      auth_invalidate(f->auth, AUTH_RESOURCE_GRAPH, t);
    }
  }
  fx_free(f);
  free(body);
}

static void
test_network_error(void **state)
{
  struct fx *f = fx_new();
  uv_tcp_t probe;
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  struct got g;

  (void)state;
  /* A port that was just free: nothing listens there. */
  assert_int_equal(uv_tcp_init(&f->loop, &probe), 0);
  assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
  assert_int_equal(uv_tcp_bind(&probe, (const struct sockaddr *)&addr, 0), 0);
  assert_int_equal(uv_tcp_getsockname(&probe, (struct sockaddr *)&bound, &len),
                   0);
  snprintf(f->login_url, sizeof(f->login_url), "http://127.0.0.1:%d",
           ntohs(((struct sockaddr_in *)&bound)->sin_port));
  uv_close((uv_handle_t *)&probe, NULL);
  fx_auth(f);
  ask_wait(f, AUTH_RESOURCE_GRAPH, &g);
  assert_int_equal(g.result, AUTH_ERR_TRANSIENT);
  if (strstr(g.errmsg, "tenant contoso: token request failed after 2 "
                       "attempts: ") == NULL)
    fail_msg("errmsg \"%s\"", g.errmsg);
  fx_free(f);
}

/* http_close() under a request in flight: the waiters are cancelled. */
static void
test_http_closed(void **state)
{
  struct fx *f = fx_new();
  struct got g;

  (void)state;
  fx_auth(f);
  f->srv.hold = 1;
  ask(f, AUTH_RESOURCE_GRAPH, &g);
  RUN_UNTIL(f, f->srv.n_reqs == 1);
  http_close(f->http);
  f->http = NULL;
  RUN_UNTIL(f, g.called);
  assert_int_equal(g.result, AUTH_ERR_CANCELLED);
  assert_string_equal(g.errmsg, "tenant contoso: token request cancelled");
  fx_free(f);
}

static void
test_free_with_waiters(void **state)
{
  struct fx *f = fx_new();
  struct got g[5];

  (void)state;
  fx_auth(f);
  f->srv.hold = 1;
  ask(f, AUTH_RESOURCE_GRAPH, &g[0]);
  ask(f, AUTH_RESOURCE_GRAPH, &g[1]);
  RUN_UNTIL(f, f->srv.n_reqs == 1);
  ask(f, AUTH_RESOURCE_GRAPH, &g[2]);
  uv_run(&f->loop, UV_RUN_NOWAIT);       /* g[2] joins the request */
  ask(f, AUTH_RESOURCE_GRAPH, &g[3]);    /* still queued */
  ask(f, AUTH_RESOURCE_EXCHANGE, &g[4]); /* still queued */
  auth_free(f->auth);
  f->auth = NULL;
  for (int i = 0; i < 5; i++) {
    assert_int_equal(g[i].called, 1);
    assert_int_equal(g[i].result, AUTH_ERR_CANCELLED);
    assert_string_equal(g[i].errmsg,
                        "tenant contoso: token request cancelled");
  }
  /* The answer arrives after the auth is gone (one turn of the loop runs
   * its close callback, which frees it): dropped safely. */
  uv_run(&f->loop, UV_RUN_NOWAIT);
  server_release(&f->srv);
  RUN_UNTIL(f, f->srv.ts.eofs == 1);
  for (int i = 0; i < 5; i++)
    assert_int_equal(g[i].called, 1);
  assert_int_equal(f->srv.n_reqs, 1);
  fx_free(f);
}

struct freer {
  struct fx *f;
  struct got g;
};

static void
on_token_free(void *ctx, int result, const char *token, const char *errmsg)
{
  struct freer *fr = ctx;

  on_token(&fr->g, result, token, errmsg);
  auth_free(fr->f->auth);
  fr->f->auth = NULL;
}

/* A callback that frees the auth: the callers after it are cancelled. */
static void
test_free_from_callback(void **state)
{
  struct fx *f = fx_new();
  struct freer fr;
  struct got g[2];

  (void)state;
  fx_auth(f);
  memset(&fr, 0, sizeof(fr));
  fr.f = f;
  assert_int_equal(
      auth_token(f->auth, AUTH_RESOURCE_GRAPH, on_token_free, &fr), 0);
  ask(f, AUTH_RESOURCE_GRAPH, &g[0]);
  ask(f, AUTH_RESOURCE_GRAPH, &g[1]);
  RUN_UNTIL(f, fr.g.called && g[0].called && g[1].called);
  assert_int_equal(fr.g.result, AUTH_OK);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(g[i].called, 1);
    assert_int_equal(g[i].result, AUTH_ERR_CANCELLED);
  }
  fx_free(f);
}

static void
test_free_pending_only(void **state)
{
  struct fx *f = fx_new();
  struct got g;

  (void)state;
  fx_auth(f);
  ask(f, AUTH_RESOURCE_GRAPH, &g);
  auth_free(f->auth);
  f->auth = NULL;
  assert_int_equal(g.called, 1);
  assert_int_equal(g.result, AUTH_ERR_CANCELLED);
  assert_int_equal(f->srv.n_reqs, 0);
  auth_free(NULL);
  fx_free(f);
}

static void
test_new_errors(void **state)
{
  struct fx *f = fx_new();
  struct auth *a = (struct auth *)f; /* must come back NULL */
  char err[512], missing[160];

  (void)state;
  snprintf(missing, sizeof(missing), "%s/missing.pem", f->dir);
  f->tenant.client_secret_file = NULL;
  f->tenant.certificate_file = missing;
  assert_int_equal(
      auth_new(&f->loop, f->http, &f->tenant, &a, err, sizeof(err)), -1);
  assert_null(a);
  if (strstr(err, "tenant contoso: ") != err || strstr(err, missing) == NULL ||
      strstr(err, "not found") == NULL)
    fail_msg("err \"%s\"", err);

  f->tenant.client_secret_file = f->secret_path;
  a = (struct auth *)f;
  assert_int_equal(
      auth_new(&f->loop, f->http, &f->tenant, &a, err, sizeof(err)), -1);
  assert_null(a);
  assert_non_null(strstr(err, "exactly one"));

  f->tenant.client_secret_file = NULL;
  f->tenant.certificate_file = NULL;
  assert_int_equal(
      auth_new(&f->loop, f->http, &f->tenant, &a, err, sizeof(err)), -1);
  assert_null(a);

  f->tenant.client_secret_file = f->secret_path;
  assert_int_equal(auth_new(&f->loop, NULL, &f->tenant, &a, err, sizeof(err)),
                   -1);
  assert_null(a);

  /* Arguments refused by a live auth; no callback follows. */
  fx_auth(f);
  assert_int_equal(auth_token(f->auth, AUTH_RESOURCE_GRAPH, NULL, NULL), -1);
  assert_int_equal(auth_token(f->auth, (enum auth_resource)7, on_token, NULL),
                   -1);
  assert_null(auth_cached(f->auth, (enum auth_resource)7));
  assert_int_equal(auth_refresh_count(NULL), 0);
  fx_free(f);
}

/* ------------------------------------------------------------------ */

static int
group_setup(void **state)
{
  EVP_PKEY *key = EVP_RSA_gen(2048);
  X509 *x = X509_new();
  X509_NAME *name;
  FILE *fp;

  (void)state;
  assert_non_null(key);
  assert_non_null(x);
  assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 7), 1);
  assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
  assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
  name = X509_get_subject_name(x);
  assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                              (const unsigned char *)"app", -1,
                                              -1, 0),
                   1);
  assert_int_equal(X509_set_issuer_name(x, name), 1);
  assert_int_equal(X509_set_pubkey(x, key), 1);
  assert_true(X509_sign(x, key, EVP_sha256()) > 0);
  snprintf(cert_dir, sizeof(cert_dir), "/tmp/test_auth_cert.XXXXXX");
  assert_non_null(mkdtemp(cert_dir));
  snprintf(cert_path, sizeof(cert_path), "%s/app.pem", cert_dir);
  fp = fopen(cert_path, "w");
  assert_non_null(fp);
  assert_int_equal(chmod(cert_path, 0600), 0);
  assert_int_equal(PEM_write_X509(fp, x), 1);
  assert_int_equal(PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL),
                   1);
  assert_int_equal(fclose(fp), 0);
  X509_free(x);
  EVP_PKEY_free(key);
  load_cert(cert_path);
  return 0;
}

static int
group_teardown(void **state)
{
  (void)state;
  X509_free(test_cert);
  unlink(cert_path);
  rmdir(cert_dir);
  return 0;
}

/* auth_parse_token_response (the fuzz target's entry) on bodies without a
 * server: a string expires_in, a capped lifetime, a refusal whose
 * description repeats the secret (form-encoded) and is withheld. */
static void
test_parse_token_response(void **state)
{
  static const char ok[] = "{\"token_type\":\"Bearer\",\"expires_in\":"
                           "\"99999\",\"access_token\":\"tok.en\"}";
  static const char echo[] = "{\"error\":\"invalid_client\","
                             "\"error_description\":\"bad s3cr%21t\"}";
  struct http_response resp;
  json_t *root = NULL;
  const char *token = NULL;
  long lifetime = -1;
  char msg[640];

  (void)state;
  memset(&resp, 0, sizeof(resp));
  resp.status = 200;
  resp.errmsg = "";
  resp.body = ok;
  resp.body_len = strlen(ok);
  assert_int_equal(auth_parse_token_response("t", "s3cr!t", &resp, &root,
                                             &token, &lifetime, msg,
                                             sizeof(msg)),
                   AUTH_OK);
  assert_string_equal(token, "tok.en");
  assert_int_equal(lifetime, 86400);
  json_decref(root);

  resp.status = 401;
  resp.body = echo;
  resp.body_len = strlen(echo);
  assert_int_equal(auth_parse_token_response("t", "s3cr!t", &resp, &root,
                                             &token, &lifetime, msg,
                                             sizeof(msg)),
                   AUTH_ERR_CREDENTIALS);
  assert_null(root);
  assert_null(token);
  assert_string_equal(msg, "tenant t: token request refused (401 "
                           "invalid_client): (description withheld: it "
                           "repeats the credential)");
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scopes),
      cmocka_unit_test(test_secret_flow),
      cmocka_unit_test(test_secret_file),
      cmocka_unit_test(test_certificate_flow),
      cmocka_unit_test(test_cache),
      cmocka_unit_test(test_single_flight),
      cmocka_unit_test(test_expired_at_once),
      cmocka_unit_test(test_refresh_near_expiry),
      cmocka_unit_test(test_invalidate),
      cmocka_unit_test(test_error_answers),
      cmocka_unit_test(test_token_size_limit),
      cmocka_unit_test(test_network_error),
      cmocka_unit_test(test_http_closed),
      cmocka_unit_test(test_free_with_waiters),
      cmocka_unit_test(test_free_from_callback),
      cmocka_unit_test(test_free_pending_only),
      cmocka_unit_test(test_new_errors),
      cmocka_unit_test(test_parse_token_response),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
