/*
 * auth — access tokens by the client credentials grant (see
 * include/auth.h and MICROSOFT.md "Tokens").
 *
 * Each struct auth has one slot per resource (Graph, Exchange) holding the
 * cached token, its lifetime, the token request in flight (at most one)
 * and the callers waiting for it. auth_token() never answers inside the
 * call: it queues the caller on `pending` and arms a zero timer; the timer
 * callback answers from the cache when the token is fresh, or moves the
 * caller to its slot's waiters and starts a request if none is in flight.
 * When the request ends every waiter of the slot is called with the one
 * result (single-flight).
 *
 * A token request is a small heap object pointing back at its auth. If the
 * auth is freed first, that pointer is cleared and the http callback that
 * comes later only frees the object. Callbacks may call back into the auth,
 * even auth_free(): lists are detached before callers are run, and after
 * each callback the `closing` flag is checked; the struct itself is freed
 * in the timer's close callback, so it outlives any callback in progress.
 *
 * Secrets: the client secret file is read at each request (rotation), the
 * secret and assertion are wiped from memory as soon as the request is
 * sent and answered, tokens are wiped when dropped, and none of them ever
 * reaches a log line or an error message (the server's error description
 * is withheld if it echoes the credential).
 */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "jwt.h"
#include "log.h"
#include "text.h"

#define SECRET_FILE_MAX 8192       /* bytes in a client secret file */
#define TOKEN_MAX (64 * 1024)      /* bytes in an access token */
#define LIFETIME_MAX (24L * 3600)  /* seconds: longer claims are capped */
#define REFRESH_MARGIN_MS 300000.0 /* refresh at most 5 minutes early */
#define DESCRIPTION_MAX 300        /* bytes of error_description kept */
#define WAITERS_MAX 100000         /* callers queued on one auth */
#define ERRMSG_MAX 640

#define N_RESOURCES 2

struct waiter {
  struct waiter *next;
  enum auth_resource resource;
  auth_token_fn done;
  void *ctx;
};

struct waitq {
  struct waiter *head;
  struct waiter **tail;
};

struct request {
  struct auth *auth; /* NULL once the auth is freed */
  enum auth_resource resource;
  char *credential; /* the secret or assertion sent; wiped and freed */
};

struct slot {
  char *token; /* NULL when none */
  double expiry_ms;
  double margin_ms;
  struct request *inflight;
  struct waitq waiters;
};

struct auth {
  uv_loop_t *loop;
  struct http *http;
  const struct config_tenant *tenant;
  struct jwt_key *key; /* certificate tenants only */
  enum jwt_alg alg;
  char *token_url;
  char *gate;
  uv_timer_t deliver;
  /* Refreshes a token in use as it stops being fresh, so that a request
   * leaving after a long wait (pacing, a closed gate) finds a good one:
   * auth_current() cannot wait. Unreferenced: it never keeps a loop
   * alive. */
  uv_timer_t refresh;
  int open_handles; /* freed once both timers are closed */
  struct waitq pending;
  size_t n_waiting;
  struct slot slots[N_RESOURCES];
  unsigned long refreshes;
  int closing;
};

static const char *const scopes[][N_RESOURCES] = {
    [CONFIG_CLOUD_GLOBAL] = {"https://graph.microsoft.com/.default",
                             "https://outlook.office365.com/.default"},
    [CONFIG_CLOUD_USGOVHIGH] = {"https://graph.microsoft.us/.default",
                                "https://outlook.office365.us/.default"},
    [CONFIG_CLOUD_DOD] = {"https://dod-graph.microsoft.us/.default",
                          "https://webmail.apps.mil/.default"},
    [CONFIG_CLOUD_CHINA] = {"https://microsoftgraph.chinacloudapi.cn/.default",
                            "https://partner.outlook.cn/.default"},
};

/* Errors that say the credentials or the request are wrong: asking again
 * with the same configuration gets the same answer. */
static const char *const refusals[] = {
    "invalid_client", "unauthorized_client", "invalid_request",
    "invalid_scope",  "invalid_grant",
};

const char *
auth_scope(enum config_cloud cloud, enum auth_resource resource)
{
  if ((unsigned)cloud >= sizeof(scopes) / sizeof(scopes[0]) ||
      (unsigned)resource >= N_RESOURCES)
    return NULL;
  return scopes[cloud][resource];
}

static const char *
resource_name(enum auth_resource resource)
{
  return resource == AUTH_RESOURCE_EXCHANGE ? "exchange" : "graph";
}

static double
now_ms(void)
{
  return (double)uv_hrtime() / 1e6;
}

static void
waitq_init(struct waitq *q)
{
  q->head = NULL;
  q->tail = &q->head;
}

static void
waitq_push(struct waitq *q, struct waiter *w)
{
  w->next = NULL;
  *q->tail = w;
  q->tail = &w->next;
}

static struct waiter *
waitq_pop(struct waitq *q)
{
  struct waiter *w = q->head;

  if (w != NULL) {
    q->head = w->next;
    if (q->head == NULL)
      q->tail = &q->head;
  }
  return w;
}

/* Move everything out of `from` into a fresh `to`. */
static void
waitq_take(struct waitq *to, struct waitq *from)
{
  waitq_init(to);
  if (from->head != NULL) {
    to->head = from->head;
    to->tail = from->tail;
  }
  waitq_init(from);
}

static int
fresh(const struct slot *slot, double now)
{
  return slot->token != NULL && slot->expiry_ms - now > slot->margin_ms;
}

static void on_refresh(uv_timer_t *t);

/* Wake when the first token held stops being fresh. Without the timer
 * (its creation failed, or it cannot be started) tokens are still renewed,
 * only later: by auth_current() and auth_token() when they find them
 * stale. So a failure here is logged and otherwise ignored. */
static void
arm_refresh(struct auth *auth)
{
  double now = now_ms(), due = -1;
  int rc;

  if (auth->closing || auth->open_handles < 2)
    return;
  for (int i = 0; i < N_RESOURCES; i++) {
    const struct slot *slot = &auth->slots[i];
    double at;
    if (slot->token == NULL)
      continue;
    at = slot->expiry_ms - slot->margin_ms - now;
    if (at < 0)
      at = 0;
    if (due < 0 || at < due)
      due = at;
  }
  if (due < 0)
    return;
  rc = uv_timer_start(&auth->refresh, on_refresh, (uint64_t)due + 1, 0);
  if (rc != 0)
    log_warning("token refresh timer not armed tenant=%s error=\"%s\"",
                auth->tenant->name, uv_strerror(rc));
}

static void on_background_token(void *ctx, int result, const char *token,
                                const char *errmsg);

static void
on_refresh(uv_timer_t *t)
{
  struct auth *auth = t->data;
  double now = now_ms();

  for (int i = 0; i < N_RESOURCES; i++) {
    struct slot *slot = &auth->slots[i];
    if (slot->token == NULL || slot->inflight != NULL ||
        slot->expiry_ms - slot->margin_ms > now)
      continue;
    if (auth_token(auth, (enum auth_resource)i, on_background_token, NULL) !=
        0)
      log_debug("token refresh not queued tenant=%s resource=%s",
                auth->tenant->name, resource_name((enum auth_resource)i));
  }
}

static void
drop_token(struct slot *slot)
{
  text_wipe_free(slot->token);
  slot->token = NULL;
  slot->expiry_ms = 0;
  slot->margin_ms = 0;
}

/* Call one waiter and free it. With the auth closing, the result is
 * AUTH_ERR_CANCELLED whatever it would have been. */
static void
answer(struct auth *auth, struct waiter *w, int result, const char *token,
       const char *errmsg)
{
  char msg[ERRMSG_MAX];

  if (auth->closing) {
    snprintf(msg, sizeof(msg), "tenant %s: token request cancelled",
             auth->tenant->name);
    result = AUTH_ERR_CANCELLED;
    token = NULL;
    errmsg = msg;
  }
  auth->n_waiting--;
  w->done(w->ctx, result, result == AUTH_OK ? token : NULL,
          result == AUTH_OK ? "" : errmsg);
  free(w);
}

/* Give every waiter of `resource` the result of its request. The token is
 * copied first: a callback may drop the cached one. */
static void
finish_slot(struct auth *auth, enum auth_resource resource, int result,
            const char *token, const char *errmsg)
{
  struct waitq q;
  struct waiter *w;
  char *copy = NULL;
  char msg[ERRMSG_MAX];

  if (result == AUTH_OK) {
    copy = token != NULL ? strdup(token) : NULL;
    if (copy == NULL) {
      snprintf(msg, sizeof(msg), "tenant %s: out of memory delivering a token",
               auth->tenant->name);
      result = AUTH_ERR_TRANSIENT;
      errmsg = msg;
    }
  }
  waitq_take(&q, &auth->slots[resource].waiters);
  for (w = waitq_pop(&q); w != NULL; w = waitq_pop(&q))
    answer(auth, w, result, copy, errmsg);
  text_wipe_free(copy);
}

/* Copy `s` into `out` as one bounded, printable line: cut at the first CR
 * or LF (Microsoft appends Trace ID, Correlation ID and Timestamp lines),
 * control characters replaced, never split inside a UTF-8 sequence. */
static void
one_line(const char *s, size_t max, char *out, size_t outlen)
{
  size_t n = strcspn(s, "\r\n");
  size_t cut = n;
  size_t j = 0;

  if (cut > max)
    cut = max;
  if (cut >= outlen)
    cut = outlen - 1;
  while (cut > 0 && cut < n && ((unsigned char)s[cut] & 0xc0) == 0x80)
    cut--;
  for (size_t i = 0; i < cut; i++) {
    unsigned char c = (unsigned char)s[i];
    out[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
  }
  out[j] = '\0';
  /* Mark a cut, if there is room for it. */
  if (cut < n && j + 3 < outlen) {
    memcpy(out + j, "...", 4);
  }
}

/* The OAuth error code, if it looks like one (letters, digits, '_'). */
static const char *
error_code(json_t *root)
{
  const char *e = json_string_value(json_object_get(root, "error"));
  size_t n;

  if (e == NULL)
    return NULL;
  n = strlen(e);
  if (n == 0 || n > 64 ||
      strspn(e, "abcdefghijklmnopqrstuvwxyz"
                "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != n)
    return NULL;
  return e;
}

static int
is_refusal(long status, const char *code)
{
  if (code == NULL || (status != 400 && status != 401))
    return 0;
  for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
    if (strcmp(code, refusals[i]) == 0)
      return 1;
  }
  return 0;
}

/* expires_in: a JSON integer or a string of digits (both are seen). */
static int
parse_expires_in(json_t *v, long *out)
{
  if (json_is_integer(v)) {
    json_int_t n = json_integer_value(v);
    if (n < 0)
      return -1;
    *out = n > LIFETIME_MAX ? LIFETIME_MAX : (long)n;
    return 0;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    char *end = NULL;
    long n;

    if (*s < '0' || *s > '9')
      return -1;
    errno = 0;
    n = strtol(s, &end, 10);
    if (*end != '\0' || n < 0)
      return -1;
    if (errno == ERANGE || n > LIFETIME_MAX)
      n = LIFETIME_MAX;
    *out = n;
    return 0;
  }
  return -1;
}

/* A token goes into an Authorization header: printable ASCII, no spaces. */
static int
token_ok(const char *t)
{
  size_t n = strlen(t);

  if (n == 0 || n > TOKEN_MAX)
    return 0;
  for (size_t i = 0; i < n; i++) {
    if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
      return 0;
  }
  return 1;
}

/* Whether the server's text repeats the credential we sent, as it is or
 * form-encoded. */
static int
echoes(const char *text, const char *credential)
{
  char *enc;
  int hit;

  if (credential == NULL || *credential == '\0')
    return 0;
  if (strstr(text, credential) != NULL)
    return 1;
  enc = http_urlencode(credential);
  hit = enc != NULL && strstr(text, enc) != NULL;
  text_wipe_free(enc);
  return hit;
}

/* See auth.h. */
int
auth_parse_token_response(const char *name, const char *credential,
                          const struct http_response *resp, json_t **root,
                          const char **token, long *lifetime, char *msg,
                          size_t msglen)
{
  json_error_t jerr;
  json_t *j = NULL;
  const char *code, *desc;
  char line[DESCRIPTION_MAX + 8];
  int refused;

  *root = NULL;
  *token = NULL;
  if (resp->error == HTTP_ERR_CANCELLED) {
    snprintf(msg, msglen, "tenant %s: token request cancelled", name);
    return AUTH_ERR_CANCELLED;
  }
  if (resp->error != HTTP_OK) {
    one_line(resp->errmsg != NULL ? resp->errmsg : "", DESCRIPTION_MAX, line,
             sizeof(line));
    snprintf(msg, msglen,
             "tenant %s: token request failed after %d attempt%s: %s", name,
             resp->attempts, resp->attempts == 1 ? "" : "s",
             line[0] != '\0' ? line : "network error");
    return AUTH_ERR_TRANSIENT;
  }
  if (resp->body != NULL && resp->body_len > 0)
    j = json_loadb(resp->body, resp->body_len, 0, &jerr);
  if (!json_is_object(j)) {
    json_decref(j);
    snprintf(msg, msglen,
             "tenant %s: token request failed (%ld): the answer is not a "
             "JSON object",
             name, resp->status);
    return AUTH_ERR_TRANSIENT;
  }
  if (resp->status == 200) {
    const char *type = json_string_value(json_object_get(j, "token_type"));
    const char *tok = json_string_value(json_object_get(j, "access_token"));
    const char *what = NULL;

    if (type == NULL || strcasecmp(type, "Bearer") != 0)
      what = "token_type is not Bearer";
    else if (tok == NULL || *tok == '\0')
      what = "no access_token";
    else if (!token_ok(tok))
      what = "access_token is too long or not printable ASCII";
    else if (parse_expires_in(json_object_get(j, "expires_in"), lifetime) != 0)
      what = "expires_in is missing or not a non-negative number";
    if (what != NULL) {
      json_decref(j);
      snprintf(msg, msglen, "tenant %s: token response (200) unusable: %s",
               name, what);
      return AUTH_ERR_TRANSIENT;
    }
    *root = j;
    *token = tok;
    msg[0] = '\0';
    return AUTH_OK;
  }

  code = error_code(j);
  desc = json_string_value(json_object_get(j, "error_description"));
  line[0] = '\0';
  if (desc != NULL) {
    if (echoes(desc, credential))
      snprintf(line, sizeof(line),
               "(description withheld: it repeats the credential)");
    else
      one_line(desc, DESCRIPTION_MAX, line, sizeof(line));
  }
  refused = is_refusal(resp->status, code);
  snprintf(msg, msglen, "tenant %s: token request %s (%ld%s%s)%s%s", name,
           refused ? "refused" : "failed", resp->status,
           code != NULL ? " " : "", code != NULL ? code : "",
           line[0] != '\0' ? ": " : "", line);
  json_decref(j); /* code and desc pointed into it */
  return refused ? AUTH_ERR_CREDENTIALS : AUTH_ERR_TRANSIENT;
}

static void
request_free(struct request *req)
{
  if (req == NULL)
    return;
  text_wipe_free(req->credential);
  free(req);
}

static void
on_token_response(void *ctx, const struct http_response *resp)
{
  struct request *req = ctx;
  struct auth *auth = req->auth;
  enum auth_resource resource = req->resource;
  struct slot *slot;
  char msg[ERRMSG_MAX];
  json_t *root = NULL;
  const char *token = NULL;
  long lifetime = 0;
  int result;

  if (auth == NULL) { /* the auth was freed meanwhile */
    request_free(req);
    return;
  }
  slot = &auth->slots[resource];
  slot->inflight = NULL;
  result =
      auth_parse_token_response(auth->tenant->name, req->credential, resp,
                                &root, &token, &lifetime, msg, sizeof(msg));
  request_free(req);
  if (result == AUTH_OK) {
    double now = now_ms();
    double life_ms = (double)lifetime * 1000.0;
    char *copy = strdup(token);

    if (copy == NULL) {
      result = AUTH_ERR_TRANSIENT;
      snprintf(msg, sizeof(msg), "tenant %s: out of memory storing a token",
               auth->tenant->name);
    } else {
      drop_token(slot);
      slot->token = copy;
      slot->expiry_ms = now + life_ms;
      slot->margin_ms =
          life_ms / 4 < REFRESH_MARGIN_MS ? life_ms / 4 : REFRESH_MARGIN_MS;
      auth->refreshes++;
      log_info("token obtained tenant=%s resource=%s expires_in=%lds",
               auth->tenant->name, resource_name(resource), lifetime);
      arm_refresh(auth);
    }
  }
  if (result != AUTH_OK && result != AUTH_ERR_CANCELLED)
    log_msg(result == AUTH_ERR_CREDENTIALS ? LOG_LEVEL_ERROR
                                           : LOG_LEVEL_WARNING,
            "token request failed tenant=%s resource=%s status=%ld "
            "attempts=%d error=\"%s\"",
            auth->tenant->name, resource_name(resource), resp->status,
            resp->attempts, msg);
  finish_slot(auth, resource, result, slot->token, msg);
  if (token != NULL) /* jansson's copy of the token */
    explicit_bzero((char *)token, strlen(token));
  json_decref(root);
}

/* Read the client secret: a regular file, not readable by group or
 * others, 1..8192 bytes once one trailing LF or CRLF is stripped, no NUL.
 * Returns 0 and a new string in *out, or -1 with a message. */
static int
read_secret(const struct auth *auth, char **out, char *msg, size_t msglen)
{
  const char *path = auth->tenant->client_secret_file;
  const char *name = auth->tenant->name;
  int result = -1;
  int fd = -1;
  struct stat st;
  char *buf = NULL;
  size_t len = 0;

  *out = NULL;
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    snprintf(msg, msglen, "tenant %s: client_secret_file %s: %s", name, path,
             strerror(errno));
    goto out;
  }
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(msg, msglen,
             "tenant %s: client_secret_file %s: not a regular file", name,
             path);
    goto out;
  }
  if (st.st_mode & (S_IRGRP | S_IROTH)) {
    snprintf(msg, msglen,
             "tenant %s: client_secret_file %s: readable by group or "
             "others; refused (chmod 600 it)",
             name, path);
    goto out;
  }
  buf = malloc(SECRET_FILE_MAX + 2);
  if (buf == NULL) {
    snprintf(msg, msglen, "tenant %s: out of memory", name);
    goto out;
  }
  /* Read one byte more than allowed, to tell "too large" apart. */
  while (len < SECRET_FILE_MAX + 1) {
    ssize_t n = read(fd, buf + len, SECRET_FILE_MAX + 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      snprintf(msg, msglen, "tenant %s: client_secret_file %s: %s", name, path,
               strerror(errno));
      goto out;
    }
    if (n == 0)
      break;
    len += (size_t)n;
  }
  if (len > 0 && buf[len - 1] == '\n') {
    len--;
    if (len > 0 && buf[len - 1] == '\r')
      len--;
  }
  if (len > SECRET_FILE_MAX) {
    snprintf(msg, msglen,
             "tenant %s: client_secret_file %s: larger than %d bytes", name,
             path, SECRET_FILE_MAX);
    goto out;
  }
  if (len == 0) {
    snprintf(msg, msglen, "tenant %s: client_secret_file %s: empty", name,
             path);
    goto out;
  }
  if (memchr(buf, '\0', len) != NULL) {
    snprintf(msg, msglen,
             "tenant %s: client_secret_file %s: contains a NUL byte", name,
             path);
    goto out;
  }
  buf[len] = '\0';
  *out = buf;
  buf = NULL;
  result = 0;
out:
  if (buf != NULL) {
    explicit_bzero(buf, SECRET_FILE_MAX + 2);
    free(buf);
  }
  if (fd >= 0)
    close(fd);
  return result;
}

/* "a=b&c=d..." from n_pairs name/value pairs; values are form-encoded.
 * NULL on allocation failure. */
static char *
form_body(const char *const *pairs, size_t n_pairs, size_t *len_out)
{
  char *enc[8] = {0};
  size_t total = 1;
  char *body = NULL;
  size_t at = 0;

  if (n_pairs > 8)
    return NULL;
  for (size_t i = 0; i < n_pairs; i++) {
    enc[i] = http_urlencode(pairs[2 * i + 1]);
    if (enc[i] == NULL)
      goto out;
    total += strlen(pairs[2 * i]) + 1 + strlen(enc[i]) + 1;
  }
  body = malloc(total);
  if (body == NULL)
    goto out;
  for (size_t i = 0; i < n_pairs; i++) {
    int n = snprintf(body + at, total - at, "%s%s=%s", i > 0 ? "&" : "",
                     pairs[2 * i], enc[i]);
    if (n < 0 || (size_t)n >= total - at) {
      explicit_bzero(body, total);
      free(body);
      body = NULL;
      goto out;
    }
    at += (size_t)n;
  }
  *len_out = at;
out:
  for (size_t i = 0; i < n_pairs; i++)
    text_wipe_free(enc[i]);
  return body;
}

/* Start the token request for `resource`; on a failure before anything
 * was sent, answer the slot's waiters at once (we are in a loop
 * callback). */
static void
start_request(struct auth *auth, enum auth_resource resource)
{
  const struct config_tenant *t = auth->tenant;
  struct slot *slot = &auth->slots[resource];
  static const char *const headers[] = {
      "Content-Type: application/x-www-form-urlencoded",
      "Accept: application/json",
      NULL,
  };
  char msg[ERRMSG_MAX], err[512];
  struct request *req = NULL;
  char *body = NULL;
  size_t body_len = 0;
  int result = AUTH_ERR_TRANSIENT;
  struct http_request hr;
  int rc;

  req = calloc(1, sizeof(*req));
  if (req == NULL) {
    snprintf(msg, sizeof(msg), "tenant %s: out of memory", t->name);
    goto fail;
  }
  req->auth = auth;
  req->resource = resource;
  if (auth->key == NULL) {
    if (read_secret(auth, &req->credential, msg, sizeof(msg)) != 0) {
      result = AUTH_ERR_CREDENTIALS;
      goto fail;
    }
    const char *pairs[] = {
        "client_id",     t->client_id,
        "scope",         auth_scope(t->cloud, resource),
        "grant_type",    "client_credentials",
        "client_secret", req->credential,
    };
    body = form_body(pairs, 4, &body_len);
  } else {
    if (jwt_client_assertion(auth->key, auth->alg, t->client_id,
                             auth->token_url, time(NULL), &req->credential,
                             err, sizeof(err)) != 0) {
      snprintf(msg, sizeof(msg), "tenant %s: %s", t->name, err);
      goto fail;
    }
    const char *pairs[] = {
        "client_id",
        t->client_id,
        "scope",
        auth_scope(t->cloud, resource),
        "grant_type",
        "client_credentials",
        "client_assertion_type",
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion",
        req->credential,
    };
    body = form_body(pairs, 5, &body_len);
  }
  if (body == NULL) {
    snprintf(msg, sizeof(msg), "tenant %s: out of memory", t->name);
    goto fail;
  }

  memset(&hr, 0, sizeof(hr));
  hr.method = "POST";
  hr.url = auth->token_url;
  hr.headers = headers;
  hr.body = body;
  hr.body_len = body_len;
  hr.ca_file = t->ca_file;
  hr.gate = auth->gate;
  hr.max_attempts = 0;
  /* In flight before the send, in case an answer ever came at once. */
  slot->inflight = req;
  rc = http_send(auth->http, &hr, on_token_response, req);
  explicit_bzero(body, body_len);
  free(body);
  body = NULL;
  if (rc != 0) {
    slot->inflight = NULL;
    snprintf(msg, sizeof(msg),
             "tenant %s: cannot send the token request (http error %d)",
             t->name, rc);
    goto fail;
  }
  log_debug("token request sent tenant=%s resource=%s url=%s", t->name,
            resource_name(resource), auth->token_url);
  return;

fail:
  request_free(req);
  log_msg(result == AUTH_ERR_CREDENTIALS ? LOG_LEVEL_ERROR : LOG_LEVEL_WARNING,
          "token request not sent tenant=%s resource=%s error=\"%s\"", t->name,
          resource_name(resource), msg);
  finish_slot(auth, resource, result, NULL, msg);
}

/* The zero timer: answer the callers queued by auth_token(). Only those
 * queued before it fired: a callback that asks again waits for the next
 * turn of the loop. */
static void
on_deliver(uv_timer_t *timer)
{
  struct auth *auth = timer->data;
  struct waitq q;
  struct waiter *w;

  waitq_take(&q, &auth->pending);
  for (w = waitq_pop(&q); w != NULL; w = waitq_pop(&q)) {
    struct slot *slot = &auth->slots[w->resource];

    if (auth->closing) {
      answer(auth, w, AUTH_ERR_CANCELLED, NULL, "");
      continue;
    }
    if (fresh(slot, now_ms())) {
      answer(auth, w, AUTH_OK, slot->token, "");
      continue;
    }
    waitq_push(&slot->waiters, w);
    if (slot->inflight == NULL)
      start_request(auth, w->resource);
  }
}

int
auth_new(uv_loop_t *loop, struct http *http,
         const struct config_tenant *tenant, struct auth **out, char *err,
         size_t errlen)
{
  int result = -1;
  struct auth *auth = NULL;
  char *tid = NULL;
  char kerr[512];
  size_t n;
  int rc;

  *out = NULL;
  if (loop == NULL || http == NULL || tenant == NULL || tenant->name == NULL ||
      tenant->tenant_id == NULL || *tenant->tenant_id == '\0' ||
      tenant->client_id == NULL || *tenant->client_id == '\0' ||
      tenant->login_url == NULL ||
      auth_scope(tenant->cloud, AUTH_RESOURCE_GRAPH) == NULL) {
    snprintf(err, errlen, "tenant %s: incomplete tenant settings",
             tenant != NULL && tenant->name != NULL ? tenant->name : "?");
    return -1;
  }
  if ((tenant->client_secret_file == NULL) ==
      (tenant->certificate_file == NULL)) {
    snprintf(err, errlen,
             "tenant %s: exactly one of client_secret_file and "
             "certificate_file must be set",
             tenant->name);
    return -1;
  }
  auth = calloc(1, sizeof(*auth));
  if (auth == NULL)
    goto nomem;
  auth->loop = loop;
  auth->http = http;
  auth->tenant = tenant;
  auth->alg = JWT_ALG_RS256;
  waitq_init(&auth->pending);
  for (int i = 0; i < N_RESOURCES; i++)
    waitq_init(&auth->slots[i].waiters);

  tid = http_urlencode(tenant->tenant_id);
  if (tid == NULL)
    goto nomem;
  n = strlen(tenant->login_url) + 1 + strlen(tid) +
      sizeof("/oauth2/v2.0/token");
  auth->token_url = malloc(n);
  if (auth->token_url == NULL)
    goto nomem;
  snprintf(auth->token_url, n, "%s/%s/oauth2/v2.0/token", tenant->login_url,
           tid);
  n = strlen(tenant->tenant_id) + sizeof("/login");
  auth->gate = malloc(n);
  if (auth->gate == NULL)
    goto nomem;
  snprintf(auth->gate, n, "%s/login", tenant->tenant_id);

  if (tenant->certificate_file != NULL &&
      jwt_key_load(tenant->certificate_file, tenant->key_file, &auth->key,
                   kerr, sizeof(kerr)) != 0) {
    snprintf(err, errlen, "tenant %s: %s", tenant->name, kerr);
    goto out;
  }
  /* Last: once the timer exists, the auth is freed only by its close. */
  if (uv_timer_init(loop, &auth->deliver) != 0) {
    snprintf(err, errlen, "tenant %s: cannot create a timer", tenant->name);
    goto out;
  }
  auth->deliver.data = auth;
  auth->open_handles = 1;
  /* Optional (see arm_refresh()): without it the auth still works. */
  rc = uv_timer_init(loop, &auth->refresh);
  if (rc == 0) {
    auth->refresh.data = auth;
    uv_unref((uv_handle_t *)&auth->refresh);
    auth->open_handles = 2;
  } else {
    log_warning("token refresh timer not created tenant=%s error=\"%s\"",
                tenant->name, uv_strerror(rc));
  }
  *out = auth;
  auth = NULL;
  result = 0;
  goto out;
nomem:
  snprintf(err, errlen, "tenant %s: out of memory", tenant->name);
out:
  if (auth != NULL) {
    jwt_key_free(auth->key);
    free(auth->token_url);
    free(auth->gate);
    free(auth);
  }
  free(tid);
  return result;
}

static void
on_closed(uv_handle_t *handle)
{
  struct auth *auth = handle->data;

  if (--auth->open_handles == 0)
    free(auth);
}

void
auth_free(struct auth *auth)
{
  struct waitq q;
  struct waiter *w;

  if (auth == NULL || auth->closing)
    return;
  auth->closing = 1;
  uv_timer_stop(&auth->deliver);
  for (int i = 0; i < N_RESOURCES; i++) {
    struct slot *slot = &auth->slots[i];

    if (slot->inflight != NULL) {
      slot->inflight->auth = NULL; /* its http callback only frees it */
      slot->inflight = NULL;
    }
  }
  /* answer() turns every result into AUTH_ERR_CANCELLED now. Callbacks
   * cannot queue more: auth_token() refuses once closing is set. */
  waitq_take(&q, &auth->pending);
  for (w = waitq_pop(&q); w != NULL; w = waitq_pop(&q))
    answer(auth, w, AUTH_ERR_CANCELLED, NULL, "");
  for (int i = 0; i < N_RESOURCES; i++)
    finish_slot(auth, (enum auth_resource)i, AUTH_ERR_CANCELLED, NULL, "");
  for (int i = 0; i < N_RESOURCES; i++)
    drop_token(&auth->slots[i]);
  jwt_key_free(auth->key);
  auth->key = NULL;
  free(auth->token_url);
  auth->token_url = NULL;
  free(auth->gate);
  auth->gate = NULL;
  if (auth->open_handles == 2) {
    uv_timer_stop(&auth->refresh);
    uv_close((uv_handle_t *)&auth->refresh, on_closed);
  }
  uv_close((uv_handle_t *)&auth->deliver, on_closed);
}

const char *
auth_cached(struct auth *auth, enum auth_resource resource)
{
  if (auth == NULL || auth->closing || (unsigned)resource >= N_RESOURCES)
    return NULL;
  if (!fresh(&auth->slots[resource], now_ms()))
    return NULL;
  return auth->slots[resource].token;
}

/* A refresh asked for by auth_current(): the result lands in the cache,
 * nobody waits for it. */
static void
on_background_token(void *ctx, int result, const char *token,
                    const char *errmsg)
{
  (void)ctx;
  (void)result;
  (void)token;
  (void)errmsg;
}

const char *
auth_current(struct auth *auth, enum auth_resource resource, int *is_fresh)
{
  struct slot *slot;
  double now = now_ms();

  if (is_fresh != NULL)
    *is_fresh = 0;
  if (auth == NULL || auth->closing || (unsigned)resource >= N_RESOURCES)
    return NULL;
  slot = &auth->slots[resource];
  if (fresh(slot, now)) {
    if (is_fresh != NULL)
      *is_fresh = 1;
    return slot->token;
  }
  /* A failure to queue the refresh only means the next caller tries. */
  if (slot->inflight == NULL &&
      auth_token(auth, resource, on_background_token, NULL) != 0)
    log_debug("token refresh not queued tenant=%s resource=%s",
              auth->tenant->name, resource_name(resource));
  return slot->token != NULL && slot->expiry_ms > now ? slot->token : NULL;
}

int
auth_token(struct auth *auth, enum auth_resource resource, auth_token_fn done,
           void *ctx)
{
  struct waiter *w;

  if (auth == NULL || auth->closing || done == NULL ||
      (unsigned)resource >= N_RESOURCES || auth->n_waiting >= WAITERS_MAX)
    return -1;
  w = calloc(1, sizeof(*w));
  if (w == NULL)
    return -1;
  if (!uv_is_active((uv_handle_t *)&auth->deliver) &&
      uv_timer_start(&auth->deliver, on_deliver, 0, 0) != 0) {
    free(w);
    return -1;
  }
  w->resource = resource;
  w->done = done;
  w->ctx = ctx;
  waitq_push(&auth->pending, w);
  auth->n_waiting++;
  return 0;
}

void
auth_invalidate(struct auth *auth, enum auth_resource resource,
                const char *token)
{
  struct slot *slot;

  if (auth == NULL || (unsigned)resource >= N_RESOURCES)
    return;
  slot = &auth->slots[resource];
  if (slot->token == NULL)
    return;
  if (token == NULL || strcmp(token, slot->token) == 0) {
    drop_token(slot);
    log_debug("token dropped tenant=%s resource=%s", auth->tenant->name,
              resource_name(resource));
  }
}

unsigned long
auth_refresh_count(const struct auth *auth)
{
  return auth != NULL ? auth->refreshes : 0;
}
