/*
 * test_exo — the exo module: its pure helpers from tables, and whole calls
 * on the loop against an HTTP/1.1 server of our own (testserver.h, on
 * 127.0.0.1, which the http module allows in plain http) playing both the
 * token endpoint (a fresh token per request, "eyJ0.tok-N.sig" with N the
 * request's rank at the server) and InvokeCommand (scripted answers in
 * order, the last one repeating). The server records every request (line,
 * headers, body), can hold Exchange or token answers to keep calls in
 * flight, and counts how many Exchange requests it holds at once. Nothing
 * sleeps: the loop runs until a condition holds, with a guard timer. Each
 * test ends by closing every handle and checking uv_loop_close() is 0, and
 * that no token or request body reached the log.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "auth.h"
#include "exo.h"
#include "http.h"
#include "log.h"

#include "testserver.h"

#define SECRET "s3cr3t-value"
#define TOKEN_PATH "/" TENANT_ID "/oauth2/v2.0/token"
#define INVOKE_PATH "/adminapi/beta/" TENANT_ID "/InvokeCommand"
#define ANCHOR                                                                \
  "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@" TENANT_ID
#define PRIVATE_ADDR "private.person@fabrikam.example"
#define MAX_REQS 48
#define MAX_REPLIES 8

/* ------------------------------------------------------------------ */
/* The server                                                          */

struct recorded {
  char method[16];
  char path[512];
  char *head; /* header block, NUL-terminated */
  char *body;
  size_t body_len;
  int is_token;
};

struct reply {
  int status;
  const char *content_type;
  const char *body;
};

struct server {
  struct ts_server ts; /* first: the hooks cast c->srv to struct server */
  struct recorded reqs[MAX_REQS];
  int n_reqs;
  int n_exo;
  struct reply replies[MAX_REPLIES];
  int n_replies;
  int next_reply;
  int hold_exo, hold_token;
  int pending, max_pending; /* Exchange requests held at once */
};

static void
respond(struct ts_conn *c)
{
  struct server *srv = (struct server *)c->srv;
  struct recorded *r = &srv->reqs[c->index];
  char token_body[256];
  struct reply rep;

  if (r->is_token) {
    snprintf(token_body, sizeof(token_body),
             "{\"token_type\":\"Bearer\",\"expires_in\":3599,"
             "\"access_token\":\"eyJ0.tok-%d.sig\"}",
             c->index + 1);
    rep = (struct reply){200, "application/json", token_body};
  } else {
    assert_true(srv->n_replies > 0);
    rep = srv->replies[srv->next_reply];
    if (srv->next_reply + 1 < srv->n_replies)
      srv->next_reply++;
    srv->pending--;
  }
  ts_reply(c, rep.status, rep.content_type, rep.body);
}

/* Value of header `name` in a recorded header block, or "" (static). */
static const char *
header(const struct recorded *r, const char *name)
{
  static char out[1024];

  ts_header(r->head, name, out, sizeof(out));
  return out;
}

/* Record a whole request; answer it unless its kind is held. */
static void
on_request(struct ts_conn *c, size_t head_len, size_t body_len)
{
  struct server *srv = (struct server *)c->srv;
  struct recorded *r;

  assert_true(srv->n_reqs < MAX_REQS);
  c->index = srv->n_reqs++;
  r = &srv->reqs[c->index];
  memset(r, 0, sizeof(*r));
  r->head = strndup(c->buf, head_len);
  assert_non_null(r->head);
  assert_int_equal(sscanf(c->buf, "%15s %511s", r->method, r->path), 2);
  r->body = strndup(c->buf + head_len, body_len);
  assert_non_null(r->body);
  r->body_len = body_len;
  r->is_token = strcmp(r->path, TOKEN_PATH) == 0;
  if (!r->is_token) {
    srv->n_exo++;
    srv->pending++;
    if (srv->pending > srv->max_pending)
      srv->max_pending = srv->pending;
  }
  wake();
  if (!(r->is_token ? srv->hold_token : srv->hold_exo))
    respond(c);
}

static void
on_eof(struct ts_conn *c)
{
  struct server *srv = (struct server *)c->srv;

  if (c->complete && c->out == NULL && !srv->reqs[c->index].is_token)
    srv->pending--; /* the client gave up on a held request */
}

static void
server_start(uv_loop_t *loop, struct server *srv)
{
  memset(srv, 0, sizeof(*srv));
  ts_start(loop, &srv->ts, on_request, on_eof);
}

/* Answer what is held, and what comes next at once. */
static void
server_release(struct server *srv)
{
  srv->hold_exo = srv->hold_token = 0;
  ts_release(&srv->ts, respond);
}

static void
server_stop(struct server *srv)
{
  ts_stop(&srv->ts);
  for (int i = 0; i < srv->n_reqs; i++) {
    free(srv->reqs[i].head);
    free(srv->reqs[i].body);
  }
}

static void
add_reply(struct server *srv, int status, const char *ctype, const char *body)
{
  assert_true(srv->n_replies < MAX_REPLIES);
  srv->replies[srv->n_replies++] = (struct reply){status, ctype, body};
}

/* The i-th Exchange request the server saw. */
static const struct recorded *
exo_req(const struct server *srv, int i)
{
  for (int k = 0; k < srv->n_reqs; k++) {
    if (!srv->reqs[k].is_token && i-- == 0)
      return &srv->reqs[k];
  }
  fail_msg("no Exchange request %d", i);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* Fixture                                                             */

struct got {
  int called;
  int result;
  long status;
  int transient;
  int during_call;
  char error_id[64];
  char exception[160];
  char errmsg[1100];
  json_t *value;       /* a copy */
  struct exo *free_it; /* exo_free() this from the callback */
};

struct fx {
  uv_loop_t loop;
  uv_timer_t guard, settle;
  int timed_out, settled;
  struct server srv;
  struct http *http;
  struct auth *auth;
  struct exo *exo;
  struct config_tenant tenant;
  char base_url[64];
  char dir[64];
  char secret_path[128];
};

static int in_invoke;

static void
on_done(void *ctx, const struct exo_response *resp)
{
  struct got *g = ctx;

  g->called++;
  g->during_call |= in_invoke;
  wake();
  g->result = resp->result;
  g->status = resp->status;
  g->transient = resp->transient;
  assert_non_null(resp->error_id);
  assert_non_null(resp->exception);
  assert_non_null(resp->errmsg);
  assert_null(strchr(resp->errmsg, '\n'));
  snprintf(g->error_id, sizeof(g->error_id), "%s", resp->error_id);
  snprintf(g->exception, sizeof(g->exception), "%s", resp->exception);
  snprintf(g->errmsg, sizeof(g->errmsg), "%s", resp->errmsg);
  if (resp->result == EXO_OK) {
    assert_true(json_is_array(resp->value));
    assert_string_equal(resp->errmsg, "");
    g->value = json_deep_copy(resp->value);
  } else {
    assert_null(resp->value);
  }
  if (g->free_it != NULL) {
    exo_free(g->free_it);
    g->free_it = NULL;
  }
}

static void
invoke(struct fx *f, const char *cmdlet, const json_t *params, struct got *g)
{
  memset(g, 0, sizeof(*g));
  in_invoke = 1;
  assert_int_equal(exo_invoke(f->exo, cmdlet, params, on_done, g), 0);
  in_invoke = 0;
  assert_int_equal(g->called, 0);
}

/* From now on the server answers every Exchange request with this one
 * reply; invoke `cmdlet` without parameters and run until it is done. */
static void
invoke_answered(struct fx *f, int status, const char *ctype, const char *body,
                const char *cmdlet, struct got *g)
{
  f->srv.n_replies = f->srv.next_reply = 0;
  add_reply(&f->srv, status, ctype, body);
  invoke(f, cmdlet, NULL, g);
  RUN_UNTIL(f, g->called);
}

static void
on_settle(uv_timer_t *t)
{
  struct fx *f = t->data;

  f->settled = 1;
  wake();
}

/* Let the loop run `ms` milliseconds. */
static void
settle(struct fx *f, uint64_t ms)
{
  f->settled = 0;
  uv_timer_start(&f->settle, on_settle, ms, 0);
  RUN_UNTIL(f, f->settled);
}

static struct fx *
fx_new(int max_in_flight)
{
  struct fx *f = calloc(1, sizeof(*f));
  struct http_options opts = {
      .connect_timeout_ms = 5000,
      .timeout_ms = 10000,
      .max_attempts = 2,
      .backoff_base_ms = 1,
      .backoff_cap_ms = 5,
  };
  char err[512];

  assert_non_null(f);
  ts_loop_open(&f->loop, &f->guard, &f->timed_out);
  assert_int_equal(uv_timer_init(&f->loop, &f->settle), 0);
  f->settle.data = f;
  server_start(&f->loop, &f->srv);
  f->http = http_new(&f->loop, &opts);
  assert_non_null(f->http);
  snprintf(f->base_url, sizeof(f->base_url), "http://127.0.0.1:%d",
           f->srv.ts.port);
  ts_secret_dir(f->dir, f->secret_path, "test_exo", SECRET);
  ts_tenant(&f->tenant, f->secret_path, f->base_url);
  f->tenant.graph_url = (char *)"https://graph.example";
  log_capture();
  assert_int_equal(
      auth_new(&f->loop, f->http, &f->tenant, &f->auth, err, sizeof(err)), 0);
  f->exo = exo_new(&f->loop, f->http, f->auth, &f->tenant, max_in_flight);
  assert_non_null(f->exo);
  return f;
}

static void
fx_free(struct fx *f)
{
  exo_free(f->exo);
  auth_free(f->auth);
  http_close(f->http);
  server_stop(&f->srv);
  uv_close((uv_handle_t *)&f->settle, NULL);
  ts_loop_close(&f->loop, &f->guard);
  ts_secret_dir_remove(f->dir, f->secret_path);
  log_uncapture();
  /* No secret, token or request body ever reaches a log line. */
  assert_null(strstr(log_buf, SECRET));
  assert_null(strstr(log_buf, "eyJ0.tok"));
  assert_null(strstr(log_buf, PRIVATE_ADDR));
  free(f);
}

static void
got_clear(struct got *g)
{
  json_decref(g->value);
  g->value = NULL;
}

/* ------------------------------------------------------------------ */
/* Pure helpers                                                        */

static char *
read_fixture(const char *path)
{
  FILE *fp = fopen(path, "r");
  char *buf = calloc(1, 4096);
  size_t n;

  if (fp == NULL) {
    free(buf);
    return NULL;
  }
  assert_non_null(buf);
  n = fread(buf, 1, 4095, fp);
  fclose(fp);
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
    buf[--n] = '\0';
  return buf;
}

static void
assert_dump(json_t *j, const char *want)
{
  char *s;

  assert_non_null(j);
  s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  assert_non_null(s);
  assert_string_equal(s, want);
  free(s);
  json_decref(j);
}

static void
test_request_body(void **state)
{
  static const char observed[] = "{\"CmdletInput\":{\"CmdletName\":\"get-"
                                 "mailbox\",\"Parameters\":{\"Identity\":"
                                 "\"c@lvin.ie\"}}}";
  json_t *params = json_pack("{s:s}", "Identity", "c@lvin.ie");
  json_t *multi =
      json_pack("{s:s,s:s,s:b}", "Name", "Ann (0a1b2c3d)",
                "ExternalEmailAddress", "SMTP:ann@x.example", "Confirm", 0);
  char *fixture = read_fixture("/work/shared/microsoft-fixtures/observed/"
                               "exo-invokecommand-request.json");

  (void)state;
  /* The observed request, byte for byte (82 bytes). */
  assert_int_equal(strlen(observed), 82);
  if (fixture != NULL)
    assert_string_equal(fixture, observed);
  free(fixture);
  assert_dump(exo_request_body("get-mailbox", params), observed);
  /* The caller's object is copied, not taken or changed. */
  assert_int_equal(json_object_size(params), 1);
  assert_int_equal(params->refcount, 1);
  assert_dump(exo_request_body("Get-MailContact", NULL),
              "{\"CmdletInput\":{\"CmdletName\":\"Get-MailContact\","
              "\"Parameters\":{}}}");
  assert_dump(exo_request_body("New-MailContact", multi),
              "{\"CmdletInput\":{\"CmdletName\":\"New-MailContact\","
              "\"Parameters\":{\"Name\":\"Ann (0a1b2c3d)\","
              "\"ExternalEmailAddress\":\"SMTP:ann@x.example\","
              "\"Confirm\":false}}}");
  /* Bad arguments. */
  assert_null(exo_request_body(NULL, params));
  assert_null(exo_request_body("", params));
  json_t *arr = json_array();
  assert_null(exo_request_body("Get-User", arr));
  json_decref(arr);
  json_decref(params);
  json_decref(multi);
}

static void
test_decode_error(void **state)
{
  static char huge[200000];
  static char huge_json[200100];
  static const struct {
    const char *body;
    int rc;
    const char *id, *exception, *text;
  } cases[] = {
      /* The observed shape. */
      {"{\"error\":{\"code\":\"InternalServerError\",\"message\":\"Error "
       "executing cmdlet\",\"details\":[{\"code\":\"Context\",\"target\":"
       "\"\",\"message\":\"Ex6F9304|Microsoft.Exchange.Configuration.Tasks."
       "ManagementObjectNotFoundException|The operation couldn't be "
       "performed because object 'x' couldn't be found on "
       "'AM0PR01A001DC01.EURPR01A001.prod.outlook.com'.\"}],\"innererror\":"
       "{\"message\":\"m\"}}}",
       0, "Ex6F9304",
       "Microsoft.Exchange.Configuration.Tasks."
       "ManagementObjectNotFoundException",
       "The operation couldn't be performed because object 'x' couldn't be "
       "found on 'AM0PR01A001DC01.EURPR01A001.prod.outlook.com'."},
      /* Text with '|' in it: only the first two split. */
      {"{\"error\":{\"details\":[{\"message\":\"ExA1|T.E|a | b|c\"}]}}", 0,
       "ExA1", "T.E", "a | b|c"},
      /* Newlines in the text become spaces. */
      {"{\"error\":{\"details\":[{\"message\":\"ExB2|T|line1\\nline2\\r\\n"
       "\"}]}}",
       0, "ExB2", "T", "line1 line2"},
      /* A details message without the triple: text only. */
      {"{\"error\":{\"message\":\"outer\",\"details\":[{\"message\":"
       "\"no bars here\"}]}}",
       -1, "", "", "no bars here"},
      {"{\"error\":{\"details\":[{\"message\":\"|T|text\"}]}}", -1, "", "",
       "|T|text"},
      {"{\"error\":{\"details\":[{\"message\":\"Ex 1|T|text\"}]}}", -1, "", "",
       "Ex 1|T|text"},
      /* No details: error.message. */
      {"{\"error\":{\"code\":\"Unauthorized\",\"message\":\"Access denied"
       "\"}}",
       -1, "", "", "Access denied"},
      {"{\"error\":{\"details\":[],\"message\":\"empty details\"}}", -1, "",
       "", "empty details"},
      {"{\"error\":\"a bare string\"}", -1, "", "", "a bare string"},
      /* Plain text: its first line. */
      {"The request was rejected because the maximum number of concurrent "
       "requests per tenant has been reached.\r\nSecond line",
       -1, "", "",
       "The request was rejected because the maximum number of concurrent "
       "requests per tenant has been reached."},
      /* Truncated or odd JSON: the raw first line. */
      {"{\"error\":{\"details\":[{\"message\":\"Ex1|T|t", -1, "", "",
       "{\"error\":{\"details\":[{\"message\":\"Ex1|T|t"},
      {"[1,2,3]", -1, "", "", "[1,2,3]"},
      {"{\"error\":{\"details\":[{\"message\":42}]}}", -1, "", "",
       "{\"error\":{\"details\":[{\"message\":42}]}}"},
      {"\n\nafter blank lines\nand more", -1, "", "", "after blank lines"},
      {"  \t spaced  ", -1, "", "", "spaced"},
      {"", -1, "", "", ""},
  };
  char id[16], ex[128], text[256];

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int rc = exo_decode_error(cases[i].body, strlen(cases[i].body), id,
                              sizeof(id), ex, sizeof(ex), text, sizeof(text));
    if (rc != cases[i].rc || strcmp(id, cases[i].id) != 0 ||
        strcmp(ex, cases[i].exception) != 0 ||
        strcmp(text, cases[i].text) != 0)
      fail_msg("case %zu: rc=%d id=[%s] ex=[%s] text=[%s]", i, rc, id, ex,
               text);
  }
  /* NULL body. */
  assert_int_equal(exo_decode_error(NULL, 5, id, sizeof(id), ex, sizeof(ex),
                                    text, sizeof(text)),
                   -1);
  assert_string_equal(text, "");
  /* Huge raw text: bounded. */
  memset(huge, 'x', sizeof(huge) - 1);
  assert_int_equal(exo_decode_error(huge, sizeof(huge) - 1, id, sizeof(id), ex,
                                    sizeof(ex), text, sizeof(text)),
                   -1);
  assert_int_equal(strlen(text), sizeof(text) - 1);
  /* Huge id and text in JSON: bounded, and a UTF-8 character is never cut:
   * "é" is 2 bytes, so 255 bytes of them end on a whole character. */
  size_t n = (size_t)snprintf(huge_json, sizeof(huge_json),
                              "{\"error\":{\"details\":[{\"message\":\"");
  for (int i = 0; i < 100; i++)
    huge_json[n++] = 'E';
  huge_json[n++] = '|';
  huge_json[n++] = 'T';
  huge_json[n++] = '|';
  for (int i = 0; i < 50000; i++) {
    huge_json[n++] = (char)0xc3;
    huge_json[n++] = (char)0xa9;
  }
  n += (size_t)snprintf(huge_json + n, sizeof(huge_json) - n, "\"}]}}");
  assert_int_equal(exo_decode_error(huge_json, n, id, sizeof(id), ex,
                                    sizeof(ex), text, sizeof(text)),
                   0);
  assert_int_equal(strlen(id), sizeof(id) - 1);
  assert_int_equal(strlen(text), 254);
  assert_int_equal((unsigned char)text[253], 0xa9);
  /* Zero-length buffers are left alone. */
  id[0] = 'z';
  static const char small[] =
      "{\"error\":{\"details\":[{\"message\":\"a|b|c\"}]}}";
  assert_int_equal(exo_decode_error(small, strlen(small), id, 0, ex,
                                    sizeof(ex), text, sizeof(text)),
                   0);
  assert_int_equal(id[0], 'z');
  assert_string_equal(ex, "b");
}

/* UTF-16 code units of a UTF-8 string (valid input). */
static size_t
utf16_len(const char *s)
{
  size_t n = 0;

  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if ((*p & 0xc0) != 0x80)
      n += (*p >= 0xf0) ? 2 : 1;
  }
  return n;
}

static void
test_unique_name(void **state)
{
  static const struct {
    const char *display, *id, *want;
  } cases[] = {
      {"Ann Smith", "0A1B2C3D-4e5f-6789-abcd-ef0123456789",
       "Ann Smith (0a1b2c3d)"},
      {"  Ann\tSmith \n", "0a1b2c3d", "Ann Smith (0a1b2c3d)"},
      {"", "{0A1B2C3D-0000}", "0a1b2c3d"},
      {NULL, "0a1b2c3d4e", "0a1b2c3d"},
      {"   ", "0a1b2c3d", "0a1b2c3d"},
      {"Zoë Ångström", "ffffffff-0000", "Zoë Ångström (ffffffff)"},
      /* 53 characters fit before the suffix: the 54th goes. */
      {"12345678901234567890123456789012345678901234567890123X",
       "00000000-1111",
       "12345678901234567890123456789012345678901234567890123 (00000000)"},
      /* A cut that would leave a trailing space drops it. */
      {"1234567890123456789012345678901234567890123456789012 XYZ", "00000000",
       "1234567890123456789012345678901234567890123456789012 (00000000)"},
      {"bad \xff byte", "12345678", "bad ? byte (12345678)"},
  };
  char long_name[512], *a, *b;
  size_t n = 0;

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char *got = exo_unique_name(cases[i].display, cases[i].id);
    if (got == NULL || strcmp(got, cases[i].want) != 0)
      fail_msg("case %zu: got [%s]", i, got ? got : "(null)");
    assert_true(utf16_len(got) <= 64);
    free(got);
  }
  /* Not enough hex digits. */
  assert_null(exo_unique_name("Ann", "0a1b-zz"));
  assert_null(exo_unique_name("Ann", NULL));

  /* Long ASCII: exactly 64. */
  memset(long_name, 'a', 200);
  long_name[200] = '\0';
  a = exo_unique_name(long_name, "abcdef01");
  assert_int_equal(strlen(a), 64);
  assert_string_equal(a + 53, " (abcdef01)");
  free(a);

  /* Long multi-byte (2, 3 bytes): 64 characters, no split sequence. */
  for (int i = 0; i < 100; i++) {
    memcpy(long_name + n, i % 2 ? "é" : "€", i % 2 ? 2 : 3);
    n += i % 2 ? 2 : 3;
  }
  long_name[n] = '\0';
  a = exo_unique_name(long_name, "abcdef01");
  assert_int_equal(utf16_len(a), 64);
  assert_int_equal(strlen(a), 27 * 3 + 26 * 2 + 11);
  assert_string_equal(a + strlen(a) - 11, " (abcdef01)");
  b = NULL;
  {
    json_error_t jerr;
    json_t *j = json_pack_ex(&jerr, 0, "s", a); /* valid UTF-8 */
    assert_non_null(j);
    json_decref(j);
  }
  free(a);

  /* Four-byte characters count two UTF-16 units each. */
  n = 0;
  for (int i = 0; i < 40; i++) {
    memcpy(long_name + n, "\xf0\x9f\x98\x80", 4);
    n += 4;
  }
  long_name[n] = '\0';
  a = exo_unique_name(long_name, "abcdef01");
  assert_int_equal(utf16_len(a), 63); /* 26 emoji = 52 units, + 11 */
  assert_int_equal(strlen(a), 26 * 4 + 11);
  free(a);

  /* Homonyms differ; the same inputs give the same output. */
  a = exo_unique_name("Jean Martin", "11111111-aaaa");
  b = exo_unique_name("Jean Martin", "22222222-aaaa");
  assert_string_not_equal(a, b);
  free(b);
  b = exo_unique_name("Jean Martin", "11111111-aaaa");
  assert_string_equal(a, b);
  free(a);
  free(b);
}

static void
test_multivalue(void **state)
{
  json_t *add = json_pack("[s,s]", "smtp:a@x.example", "smtp:b@x.example");
  json_t *rm = json_pack("[s]", "smtp:old@x.example");

  (void)state;
  assert_dump(exo_multivalue(add, rm),
              "{\"@odata.type\":\"#Exchange.GenericHashTable\",\"Add\":"
              "[\"smtp:a@x.example\",\"smtp:b@x.example\"],\"Remove\":"
              "[\"smtp:old@x.example\"]}");
  assert_dump(exo_multivalue(add, NULL),
              "{\"@odata.type\":\"#Exchange.GenericHashTable\",\"Add\":"
              "[\"smtp:a@x.example\",\"smtp:b@x.example\"]}");
  assert_dump(exo_multivalue(NULL, rm),
              "{\"@odata.type\":\"#Exchange.GenericHashTable\",\"Remove\":"
              "[\"smtp:old@x.example\"]}");
  assert_dump(exo_multivalue(NULL, NULL),
              "{\"@odata.type\":\"#Exchange.GenericHashTable\"}");
  /* Copies: the caller's arrays are untouched. */
  assert_int_equal(add->refcount, 1);
  assert_int_equal(json_array_size(add), 2);
  json_decref(add);
  json_decref(rm);
}

/* An address of `n` bytes: a local part of 'a's, then "@x.example".
 * New string. */
static char *
long_address(size_t n)
{
  static const char domain[] = "@x.example";
  char *a = malloc(n + 1);

  assert_non_null(a);
  assert_true(n > sizeof(domain));
  memset(a, 'a', n - (sizeof(domain) - 1));
  memcpy(a + n - (sizeof(domain) - 1), domain, sizeof(domain));
  return a;
}

/* Extra addresses become Exchange's secondary "smtp:" proxies, each
 * sized from its address: a long one is sent whole (a 600-byte one was
 * cut at 511 bytes once), one beyond EXO_ADDRESS_MAX is refused. */
static void
test_smtp_addresses(void **state)
{
  json_t *in, *out = NULL;
  const char *why = NULL;
  char *a, *want;

  (void)state;
  in = json_pack("[s, s, s, s, s, s, i]", "a@x.example", "SMTP:B@x.example",
                 "smtp:c@x", "X500:/o=x/cn=y", "SIP:d@x.example", "no mail",
                 42);
  assert_int_equal(exo_smtp_addresses(in, &out, &why), 0);
  assert_null(why);
  assert_dump(out, "[\"smtp:a@x.example\",\"smtp:B@x.example\","
                   "\"smtp:c@x\"]");
  json_decref(in);
  assert_int_equal(exo_smtp_addresses(NULL, &out, &why), 0);
  assert_dump(out, "[]");

  /* Long, and as long as may be: whole. */
  for (size_t n = 600; n <= EXO_ADDRESS_MAX; n += EXO_ADDRESS_MAX - 600) {
    a = long_address(n);
    in = json_pack("[s]", a);
    assert_int_equal(exo_smtp_addresses(in, &out, &why), 0);
    assert_int_equal(json_array_size(out), 1);
    assert_int_equal(json_string_length(json_array_get(out, 0)), 5 + n);
    want = malloc(n + 6);
    assert_non_null(want);
    snprintf(want, n + 6, "smtp:%s", a);
    assert_string_equal(json_string_value(json_array_get(out, 0)), want);
    free(want);
    json_decref(out);
    json_decref(in);
    free(a);
  }

  /* One byte more: refused, never cut. */
  a = long_address(EXO_ADDRESS_MAX + 1);
  in = json_pack("[s, s]", "a@x.example", a);
  out = in; /* anything but NULL: a failure must set it to NULL */
  assert_int_equal(exo_smtp_addresses(in, &out, &why), -1);
  assert_null(out);
  assert_non_null(why);
  assert_non_null(strstr(why, "longer than 16384 bytes"));
  json_decref(in);
  free(a);
}

/* ------------------------------------------------------------------ */
/* On the loop                                                         */

static void
assert_exo_headers(const struct recorded *r, const char *token)
{
  char want[128];

  snprintf(want, sizeof(want), "Bearer %s", token);
  assert_string_equal(r->method, "POST");
  assert_string_equal(header(r, "Authorization"), want);
  assert_string_equal(header(r, "Content-Type"), "application/json");
  assert_string_equal(header(r, "Accept"), "application/json");
  assert_string_equal(header(r, "X-ResponseFormat"), "json");
  assert_string_equal(header(r, "X-AnchorMailbox"), ANCHOR);
  assert_string_equal(header(r, "Prefer"), "odata.maxpagesize=1000");
  assert_string_equal(header(r, "X-Prefer"), "odata.maxpagesize=1000");
}

static void
test_round_trip_paging(void **state)
{
  struct fx *f = fx_new(0);
  char page1[512], page3[512];
  json_t *params = json_pack("{s:s,s:s}", "Identity", PRIVATE_ADDR,
                             "ResultSize", "Unlimited");
  struct got g;

  (void)state;
  snprintf(page1, sizeof(page1),
           "{\"@odata.context\":\"%s/adminapi/beta/%s/$metadata#Collection("
           "Exchange.GenericHashTable)\",\"adminapi.warnings@odata.type\":"
           "\"#Collection(String)\",\"@adminapi.warnings\":[],\"value\":[{"
           "\"Name\":\"a\"},{\"Name\":\"b\"}],\"@odata.nextLink\":\"%s%s?"
           "$skiptoken=p2\"}",
           f->base_url, TENANT_ID, f->base_url, INVOKE_PATH);
  snprintf(page3, sizeof(page3),
           "{\"value\":[{\"Name\":\"d\"}],\"@odata.nextLink\":\"%s%s?"
           "$skiptoken=p3\"}",
           f->base_url, INVOKE_PATH);
  add_reply(&f->srv, 200,
            "application/json;odata.metadata=minimal;charset=utf-8", page1);
  add_reply(&f->srv, 200, "application/json", page3);
  add_reply(&f->srv, 200, "application/json",
            "{\"value\":[{\"Name\":\"e\"}]}");
  invoke(f, "Get-MailContact", params, &g);
  RUN_UNTIL(f, g.called);
  assert_int_equal(g.called, 1);
  assert_int_equal(g.during_call, 0);
  assert_int_equal(g.result, EXO_OK);
  assert_int_equal(g.status, 200);
  assert_string_equal(g.errmsg, "");
  assert_int_equal(json_array_size(g.value), 4);
  assert_string_equal(
      json_string_value(json_object_get(json_array_get(g.value, 3), "Name")),
      "e");

  /* One token, then three POSTs of the same body with the same headers. */
  assert_int_equal(f->srv.n_reqs, 4);
  assert_true(f->srv.reqs[0].is_token);
  assert_int_equal(f->srv.n_exo, 3);
  for (int i = 0; i < 3; i++) {
    const struct recorded *r = exo_req(&f->srv, i);
    assert_exo_headers(r, "eyJ0.tok-1.sig");
    assert_string_equal(r->body,
                        "{\"CmdletInput\":{\"CmdletName\":\"Get-MailContact\","
                        "\"Parameters\":{\"Identity\":\"" PRIVATE_ADDR
                        "\",\"ResultSize\":\"Unlimited\"}}}");
  }
  assert_string_equal(exo_req(&f->srv, 0)->path, INVOKE_PATH);
  assert_string_equal(exo_req(&f->srv, 1)->path, INVOKE_PATH "?$skiptoken=p2");
  assert_string_equal(exo_req(&f->srv, 2)->path, INVOKE_PATH "?$skiptoken=p3");
  /* Debug log names the cmdlet, never the body. */
  assert_non_null(strstr(log_buf, "cmdlet=Get-MailContact"));
  got_clear(&g);
  json_decref(params);
  fx_free(f);
}

static void
test_answers(void **state)
{
  static const char busy[] = "The request was rejected: the maximum number "
                             "of concurrent requests per tenant has been "
                             "reached.\r\nTry later.";
  static const char cmdlet_err[] =
      "{\"error\":{\"code\":\"BadRequest\",\"message\":\"Error executing "
      "cmdlet\",\"details\":[{\"code\":\"Context\",\"target\":\"\","
      "\"message\":\"Ex6F9304|Microsoft.Exchange.Configuration.Tasks."
      "ManagementObjectNotFoundException|The operation couldn't be "
      "performed because object 'x' couldn't be found\"}]}}";
  struct fx *f = fx_new(1);
  char other_host[256];
  struct got g;

  (void)state;
  /* A cmdlet error. */
  add_reply(&f->srv, 400, "application/json", cmdlet_err);
  invoke(f, "New-MailContact", NULL, &g);
  RUN_UNTIL(f, g.called);
  assert_int_equal(g.result, EXO_ERR_CMDLET);
  assert_int_equal(g.status, 400);
  assert_int_equal(g.transient, 0);
  assert_string_equal(g.error_id, "Ex6F9304");
  assert_string_equal(g.exception, "Microsoft.Exchange.Configuration.Tasks."
                                   "ManagementObjectNotFoundException");
  assert_string_equal(g.errmsg,
                      "New-MailContact: Ex6F9304 "
                      "ManagementObjectNotFoundException: The operation "
                      "couldn't be performed because object 'x' couldn't be "
                      "found");

  /* The plain-text concurrency answer, with a 503 (retried by http, then
   * given up) and with a 200. */
  invoke_answered(f, 503, "text/plain", busy, "Get-User", &g);
  assert_int_equal(g.result, EXO_ERR_HTTP);
  assert_int_equal(g.status, 503);
  assert_int_equal(g.transient, 1);
  assert_string_equal(g.errmsg, "Get-User: HTTP 503: The request was "
                                "rejected: the maximum number of concurrent "
                                "requests per tenant has been reached.");
  invoke_answered(f, 200, "text/plain", busy, "Get-User", &g);
  assert_int_equal(g.result, EXO_ERR_HTTP);
  assert_int_equal(g.transient, 1);

  /* A plain 404 error without details. */
  invoke_answered(
      f, 404, "application/json",
      "{\"error\":{\"code\":\"NotFound\",\"message\":\"Not here\"}}",
      "Get-Nothing", &g);
  assert_int_equal(g.result, EXO_ERR_HTTP);
  assert_int_equal(g.transient, 0);
  assert_string_equal(g.errmsg, "Get-Nothing: HTTP 404: Not here");
  assert_string_equal(g.error_id, "");

  /* 200 without value: empty; with an empty body: empty. */
  invoke_answered(f, 200, "application/json",
                  "{\"@odata.context\":\"x\",\"@adminapi.warnings\":[\"w\"]}",
                  "Remove-MailContact", &g);
  assert_int_equal(g.result, EXO_OK);
  assert_int_equal(json_array_size(g.value), 0);
  got_clear(&g);
  invoke_answered(f, 200, "application/json", "", "Remove-MailContact", &g);
  assert_int_equal(g.result, EXO_OK);
  assert_int_equal(json_array_size(g.value), 0);
  got_clear(&g);

  /* Not JSON, or value not an array: protocol errors. */
  invoke_answered(f, 200, "application/json", "{\"value\":[1,", "Get-User",
                  &g);
  assert_int_equal(g.result, EXO_ERR_PROTOCOL);
  invoke_answered(f, 200, "application/json", "{\"value\":{}}", "Get-User",
                  &g);
  assert_int_equal(g.result, EXO_ERR_PROTOCOL);

  /* A nextLink to another host is refused, never requested. */
  snprintf(other_host, sizeof(other_host),
           "{\"value\":[],\"@odata.nextLink\":\"http://127.0.0.2:%d%s\"}",
           f->srv.ts.port, INVOKE_PATH);
  int before = f->srv.n_exo;
  invoke_answered(f, 200, "application/json", other_host, "Get-User", &g);
  assert_int_equal(g.result, EXO_ERR_PROTOCOL);
  assert_non_null(strstr(g.errmsg, "nextLink"));
  assert_int_equal(f->srv.n_exo, before + 1);

  /* Bad arguments: -1, no callback. */
  memset(&g, 0, sizeof(g));
  assert_int_equal(exo_invoke(f->exo, "", NULL, on_done, &g), -1);
  assert_int_equal(exo_invoke(f->exo, NULL, NULL, on_done, &g), -1);
  assert_int_equal(exo_invoke(f->exo, "Get-X\r\nY: z", NULL, on_done, &g), -1);
  json_t *arr = json_array();
  assert_int_equal(exo_invoke(f->exo, "Get-X", arr, on_done, &g), -1);
  json_decref(arr);
  assert_int_equal(exo_invoke(f->exo, "Get-X", NULL, NULL, &g), -1);
  assert_int_equal(g.called, 0);
  fx_free(f);
}

static void
test_401_refresh(void **state)
{
  struct fx *f = fx_new(0);
  struct got g;

  (void)state;
  add_reply(&f->srv, 401, "application/json",
            "{\"error\":{\"code\":\"InvalidAuthenticationToken\"}}");
  add_reply(&f->srv, 200, "application/json", "{\"value\":[{\"a\":1}]}");
  invoke(f, "Get-User", NULL, &g);
  RUN_UNTIL(f, g.called);
  assert_int_equal(g.result, EXO_OK);
  assert_int_equal(json_array_size(g.value), 1);
  got_clear(&g);
  assert_int_equal(auth_refresh_count(f->auth), 2);
  assert_int_equal(f->srv.n_exo, 2);
  assert_exo_headers(exo_req(&f->srv, 0), "eyJ0.tok-1.sig");
  assert_exo_headers(exo_req(&f->srv, 1), "eyJ0.tok-3.sig");
  assert_non_null(strstr(log_buf, "token refused"));

  /* Refused again and again (tokens revoked as fast as they come): three
   * fresh tokens, then the 401 is the answer, as a token problem: worth
   * trying later, never a permanent failure. */
  invoke_answered(f, 401, "application/json",
                  "{\"error\":{\"code\":\"InvalidAuthenticationToken\","
                  "\"message\":\"Token expired\"}}",
                  "Get-User", &g);
  assert_int_equal(g.result, EXO_ERR_HTTP);
  assert_int_equal(g.status, 401);
  assert_int_equal(g.transient, 1);
  assert_string_equal(g.errmsg, "Get-User: HTTP 401: Token expired");
  assert_int_equal(auth_refresh_count(f->auth), 5);
  assert_int_equal(f->srv.n_exo, 6);
  fx_free(f);
}

/* One classification (http.h): Exchange's answers by status, its
 * plain-text "too many concurrent requests" as throttling whatever the
 * status. */
static void
test_error_class(void **state)
{
  static const struct {
    long status;
    const char *text;
    enum http_class want;
  } cases[] = {
      {401, "Token expired", HTTP_CLASS_TOKEN},
      {401, NULL, HTTP_CLASS_TOKEN},
      {429, "", HTTP_CLASS_THROTTLED},
      {503, "", HTTP_CLASS_THROTTLED},
      {200,
       "The request was rejected: the maximum number of concurrent "
       "requests per tenant has been reached.",
       HTTP_CLASS_THROTTLED},
      {400, "You have reached the Maximum Number Of Concurrent Requests",
       HTTP_CLASS_THROTTLED},
      {500, "oops", HTTP_CLASS_TRANSIENT},
      {502, NULL, HTTP_CLASS_TRANSIENT},
      {400, "Ex6F9304|...ManagementObjectNotFoundException|x",
       HTTP_CLASS_PERMANENT},
      {403, "Access denied", HTTP_CLASS_PERMANENT},
      {404, "Not here", HTTP_CLASS_PERMANENT},
  };

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    assert_int_equal(exo_error_class(cases[i].status, cases[i].text),
                     cases[i].want);
}

static void
test_concurrency(void **state)
{
  struct fx *f = fx_new(2);
  struct got g[6];
  int done = 0;

  (void)state;
  add_reply(&f->srv, 200, "application/json", "{\"value\":[]}");
  f->srv.hold_exo = 1;
  for (int i = 0; i < 6; i++) {
    char cmdlet[32];
    snprintf(cmdlet, sizeof(cmdlet), "Get-C%d", i);
    invoke(f, cmdlet, NULL, &g[i]);
  }
  RUN_UNTIL(f, f->srv.n_exo == 2);
  settle(f, 100);
  assert_int_equal(f->srv.n_exo, 2);
  assert_int_equal(f->srv.pending, 2);
  /* The first two, in some order: FIFO. */
  for (int i = 0; i < 2; i++) {
    const char *b = exo_req(&f->srv, i)->body;
    assert_true(strstr(b, "Get-C0") != NULL || strstr(b, "Get-C1") != NULL);
  }
  for (int i = 0; i < 6; i++)
    assert_int_equal(g[i].called, 0);
  server_release(&f->srv);
  RUN_UNTIL(f, g[0].called + g[1].called + g[2].called + g[3].called +
                       g[4].called + g[5].called ==
                   6);
  for (int i = 0; i < 6; i++) {
    assert_int_equal(g[i].called, 1);
    assert_int_equal(g[i].result, EXO_OK);
    done += g[i].called;
    got_clear(&g[i]);
  }
  assert_int_equal(done, 6);
  assert_int_equal(f->srv.n_exo, 6);
  assert_int_equal(f->srv.max_pending, 2);
  /* One token for all. */
  assert_int_equal(auth_refresh_count(f->auth), 1);
  fx_free(f);
}

static void
test_free_cancels(void **state)
{
  struct fx *f = fx_new(2);
  struct got g[3];

  (void)state;
  add_reply(&f->srv, 200, "application/json", "{\"value\":[]}");

  /* Two waiting for a token, one queued. */
  f->srv.hold_token = 1;
  for (int i = 0; i < 3; i++)
    invoke(f, "Get-User", NULL, &g[i]);
  RUN_UNTIL(f, f->srv.n_reqs == 1);
  exo_free(f->exo);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(g[i].called, 1);
    assert_int_equal(g[i].result, EXO_ERR_CANCELLED);
  }
  exo_free(f->exo); /* a second call does nothing */
  server_release(&f->srv);
  RUN_UNTIL(f, auth_cached(f->auth, AUTH_RESOURCE_EXCHANGE) != NULL);
  settle(f, 20);
  for (int i = 0; i < 3; i++)
    assert_int_equal(g[i].called, 1);
  assert_int_equal(f->srv.n_exo, 0);

  /* In flight at the server. */
  f->exo = exo_new(&f->loop, f->http, f->auth, &f->tenant, 2);
  assert_non_null(f->exo);
  f->srv.hold_exo = 1;
  invoke(f, "Get-User", NULL, &g[0]);
  RUN_UNTIL(f, f->srv.n_exo == 1);
  exo_free(f->exo);
  assert_int_equal(g[0].called, 1);
  assert_int_equal(g[0].result, EXO_ERR_CANCELLED);
  assert_string_equal(g[0].errmsg, "cancelled");
  server_release(&f->srv);
  settle(f, 50);
  assert_int_equal(g[0].called, 1);

  /* exo_free() from a done callback: the queued calls are cancelled. */
  f->exo = exo_new(&f->loop, f->http, f->auth, &f->tenant, 1);
  assert_non_null(f->exo);
  for (int i = 0; i < 3; i++)
    invoke(f, "Get-User", NULL, &g[i]);
  g[0].free_it = f->exo;
  RUN_UNTIL(f, g[0].called);
  assert_int_equal(g[0].result, EXO_OK);
  got_clear(&g[0]);
  for (int i = 1; i < 3; i++) {
    assert_int_equal(g[i].called, 1);
    assert_int_equal(g[i].result, EXO_ERR_CANCELLED);
  }
  f->exo = NULL;
  fx_free(f);
}

/* Found by tests/fuzz/fuzz_exo_error: an id or type made only of control
 * characters (or a tab) passed as the "id|type|text" form, and came out
 * empty once control characters became spaces and were trimmed. */
static void
test_decode_error_blank_fields(void **state)
{
  static const char *const bodies[] = {
      "{\"error\":{\"details\":[{\"message\":\"ETE|\x7f\x7f|t\"}]}}",
      "{\"error\":{\"details\":[{\"message\":\"\\t|T|t\"}]}}",
      "{\"error\":{\"details\":[{\"message\":\"Ex\\u0001|T|t\"}]}}",
      "{\"error\":{\"details\":[{\"message\":\"Ex|T\\n|t\"}]}}",
  };
  char id[16], ex[128], text[256];

  (void)state;
  for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
    int rc = exo_decode_error(bodies[i], strlen(bodies[i]), id, sizeof(id), ex,
                              sizeof(ex), text, sizeof(text));
    if (rc != -1 || id[0] != '\0' || ex[0] != '\0' || text[0] == '\0')
      fail_msg("body %zu: rc=%d id=[%s] ex=[%s] text=[%s]", i, rc, id, ex,
               text);
  }
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_request_body),
      cmocka_unit_test(test_decode_error),
      cmocka_unit_test(test_unique_name),
      cmocka_unit_test(test_multivalue),
      cmocka_unit_test(test_smtp_addresses),
      cmocka_unit_test(test_round_trip_paging),
      cmocka_unit_test(test_answers),
      cmocka_unit_test(test_401_refresh),
      cmocka_unit_test(test_error_class),
      cmocka_unit_test(test_concurrency),
      cmocka_unit_test(test_free_cancels),
      cmocka_unit_test(test_decode_error_blank_fields),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
