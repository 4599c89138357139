/*
 * exo — see include/exo.h.
 *
 * A call's life: exo_invoke() queues it and arms a zero timer, so the
 * callback never runs inside exo_invoke(); pump() moves calls from the
 * FIFO queue to the active list while fewer than max_in_flight are
 * active. An active call asks a token (cached, or from auth), POSTs the
 * body, and on 200 appends the page's "value" and follows @odata.nextLink
 * (only under the tenant's exchange_url) with the same body; a token
 * refusal (a 401) drops the token and goes round again with a fresh one,
 * up to EXO_TOKEN_RETRIES times, after which it is the answer: a token
 * problem, transient (exo_error_class), never a permanent failure. An active
 * call always waits for exactly one auth or http callback; exo_free() detaches
 * it (call->exo = NULL, callback with EXO_ERR_CANCELLED) and that late
 * callback frees it. The struct exo itself is freed in its timer's close
 * callback, so a done callback may call exo_free() and exo_invoke() safely.
 *
 * Nothing here logs a token, a header or a body (bodies hold addresses):
 * only the tenant, cmdlet, status and page count, at debug level.
 */
#include "exo.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "text.h"

#define EXO_DEFAULT_IN_FLIGHT 4
#define EXO_ERRMSG_MAX 1024
#define EXO_FIELD_MAX 128
#define EXO_MAX_PAGES 10000
#define EXO_NAME_MAX 64 /* UTF-16 code units, as .NET counts a Name */
#define EXO_SUFFIX_HEX 8
#define EXO_ANCHOR "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"
#define EXO_PAGE_SIZE "odata.maxpagesize=1000"
#define EXO_BUSY_TEXT "maximum number of concurrent requests"
/* Fresh tokens a call gets after its token was refused (see graph.c's
 * TOKEN_RETRIES). */
#define EXO_TOKEN_RETRIES 3

struct exo_call {
  struct exo *exo; /* NULL once detached by exo_free() */
  struct exo_call *next, *prev;
  char *cmdlet;
  char *body;
  char *url;   /* the page being fetched */
  char *token; /* the token the request was sent with */
  json_t *value;
  int refreshed; /* fresh tokens it got after a refusal */
  int pages;
  exo_done_fn done;
  void *ctx;
};

struct exo {
  uv_loop_t *loop;
  struct http *http;
  struct auth *auth;
  const struct config_tenant *tenant;
  uv_timer_t kick;
  char gate[160];
  char *invoke_url;
  char *anchor_header;
  int max_in_flight;
  int in_flight;
  int pumping;
  int closing;
  struct exo_call *queue_head, *queue_tail; /* waiting, FIFO */
  struct exo_call *active;                  /* started */
};

static void start(struct exo_call *call);
static void pump(struct exo *exo);

/* ------------------------------------------------------------------ */
/* Bounded, one-line, UTF-8-safe copies                                */

/* Copy src[0..n) into dst (dstlen > 0): control characters become spaces
 * (or end the copy at the first line break when first_line), invalid
 * UTF-8 becomes '?', and a multi-byte character is never cut. Leading and
 * trailing spaces are dropped. */
static void
copy_line(char *dst, size_t dstlen, const char *src, size_t n, int first_line)
{
  const unsigned char *s = (const unsigned char *)src;
  size_t i = 0, j = 0;

  if (dstlen == 0)
    return;
  while (i < n &&
         (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
    i++;
  while (i < n) {
    size_t len = text_utf8_seq(s + i, n - i);

    if (first_line && (s[i] == '\n' || s[i] == '\r'))
      break;
    if (len <= 1) {
      char c = (char)s[i];
      if (len == 0)
        c = '?';
      else if (s[i] < 0x20 || s[i] == 0x7f)
        c = ' ';
      if (j + 1 >= dstlen)
        break;
      dst[j++] = c;
      i++;
      continue;
    }
    if (j + len >= dstlen)
      break;
    memcpy(dst + j, s + i, len);
    j += len;
    i += len;
  }
  while (j > 0 && dst[j - 1] == ' ')
    j--;
  dst[j] = '\0';
}

static void
set_empty(char *dst, size_t dstlen)
{
  if (dst != NULL && dstlen > 0)
    dst[0] = '\0';
}

/* ------------------------------------------------------------------ */
/* Pure helpers                                                        */

json_t *
exo_request_body(const char *cmdlet, const json_t *parameters)
{
  json_t *params, *body;

  if (cmdlet == NULL || cmdlet[0] == '\0' ||
      (parameters != NULL && !json_is_object(parameters)))
    return NULL;
  params = parameters != NULL ? json_deep_copy(parameters) : json_object();
  if (params == NULL)
    return NULL;
  body = json_pack("{s:{s:s,s:o}}", "CmdletInput", "CmdletName", cmdlet,
                   "Parameters", params);
  return body;
}

/* Whether s[0..n) has a space or a control character: copy_line() would
 * turn those into spaces and trim them, so an id or type made of them
 * would come out empty (found by tests/fuzz/fuzz_exo_error). */
static int
has_blank(const char *s, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
      return 1;
  }
  return 0;
}

/* Split "id|type|text" into the three fields; -1 unless id and type are
 * both present and free of spaces and control characters. */
static int
split_detail(const char *msg, char *id, size_t idlen, char *exception,
             size_t exlen, char *text, size_t textlen)
{
  const char *bar1 = strchr(msg, '|');
  const char *bar2 = bar1 != NULL ? strchr(bar1 + 1, '|') : NULL;
  size_t idn, exn;

  if (bar2 == NULL)
    return -1;
  idn = (size_t)(bar1 - msg);
  exn = (size_t)(bar2 - bar1 - 1);
  if (idn == 0 || exn == 0 || has_blank(msg, idn) || has_blank(bar1 + 1, exn))
    return -1;
  if (idlen > 0)
    copy_line(id, idlen, msg, idn, 0);
  if (exlen > 0)
    copy_line(exception, exlen, bar1 + 1, exn, 0);
  if (textlen > 0)
    copy_line(text, textlen, bar2 + 1, strlen(bar2 + 1), 0);
  return 0;
}

int
exo_decode_error(const char *body, size_t len, char *id, size_t idlen,
                 char *exception, size_t exlen, char *text, size_t textlen)
{
  json_t *root = NULL, *err, *details;
  const char *detail = NULL, *message = NULL;
  int result = -1;

  set_empty(id, idlen);
  set_empty(exception, exlen);
  set_empty(text, textlen);
  if (body == NULL || len == 0)
    goto out;
  root = json_loadb(body, len, 0, NULL);
  err = json_object_get(root, "error");
  details = json_object_get(err, "details");
  detail = json_string_value(
      json_object_get(json_array_get(details, 0), "message"));
  message = json_string_value(json_object_get(err, "message"));
  if (message == NULL)
    message = json_string_value(err); /* {"error": "text"} */
  if (detail != NULL) {
    if (split_detail(detail, id, idlen, exception, exlen, text, textlen) ==
        0) {
      result = 0;
      goto out;
    }
    set_empty(id, idlen);
    set_empty(exception, exlen);
    if (textlen > 0)
      copy_line(text, textlen, detail, strlen(detail), 0);
  } else if (message != NULL) {
    if (textlen > 0)
      copy_line(text, textlen, message, strlen(message), 0);
  } else if (textlen > 0) {
    copy_line(text, textlen, body, strnlen(body, len), 1);
  }

out:
  json_decref(root);
  return result;
}

char *
exo_unique_name(const char *display_name, const char *source_id)
{
  char hex[EXO_SUFFIX_HEX + 1];
  size_t nhex = 0, i = 0, j = 0, units = 0, n, cap;
  const unsigned char *s;
  char *out;
  /* Room for the name: 64 units less " (" + 8 + ")". */
  const size_t max_units = EXO_NAME_MAX - (EXO_SUFFIX_HEX + 3);

  if (source_id == NULL)
    return NULL;
  for (const char *p = source_id; *p != '\0' && nhex < EXO_SUFFIX_HEX; p++) {
    if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))
      hex[nhex++] = *p;
    else if (*p >= 'A' && *p <= 'F')
      hex[nhex++] = (char)(*p - 'A' + 'a');
  }
  if (nhex < EXO_SUFFIX_HEX)
    return NULL;
  hex[nhex] = '\0';

  if (display_name == NULL)
    display_name = "";
  s = (const unsigned char *)display_name;
  n = strlen(display_name);
  /* Worst case 4 bytes per unit kept, plus the suffix. */
  cap = max_units * 4 + EXO_SUFFIX_HEX + 4;
  out = malloc(cap);
  if (out == NULL)
    return NULL;
  while (i < n && (s[i] == ' ' || s[i] < 0x20 || s[i] == 0x7f))
    i++;
  while (i < n) {
    size_t len = text_utf8_seq(s + i, n - i);
    size_t u = 1;
    uint32_t cp;

    if (len == 0) { /* invalid byte: a replacement that fits */
      if (units + 1 > max_units)
        break;
      out[j++] = '?';
      units++;
      i++;
      continue;
    }
    cp = text_utf8_decode(s + i, len, &len);
    if (cp >= 0x10000)
      u = 2; /* a surrogate pair in UTF-16 */
    if (units + u > max_units)
      break;
    if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0) || cp == 0x2028 ||
        cp == 0x2029) {
      out[j++] = ' '; /* control characters: never in a Name */
    } else {
      memcpy(out + j, s + i, len);
      j += len;
    }
    units += u;
    i += len;
  }
  while (j > 0 && out[j - 1] == ' ')
    j--;
  if (j == 0)
    snprintf(out, cap, "%s", hex);
  else
    snprintf(out + j, cap - j, " (%s)", hex);
  return out;
}

const char *
exo_recipient_id(const json_t *recipient)
{
  const char *id = json_string_value(
      json_object_get(recipient, "ExternalDirectoryObjectId"));

  if (id == NULL || id[0] == '\0')
    id = json_string_value(json_object_get(recipient, "Guid"));
  return id != NULL && id[0] != '\0' ? id : NULL;
}

time_t
exo_recipient_created(const json_t *recipient)
{
  time_t t = http_parse_iso8601(
      json_string_value(json_object_get(recipient, "WhenCreatedUTC")));

  return t != 0 ? t
                : http_parse_iso8601(json_string_value(
                      json_object_get(recipient, "WhenCreated")));
}

json_t *
exo_recipient_attrs(const json_t *recipient)
{
  json_t *out = json_object(), *ext = json_object(), *v;
  const char *s;
  int rc = 0;

  if (out == NULL || ext == NULL)
    goto fail;
  s = json_string_value(json_object_get(recipient, "DisplayName"));
  if (s != NULL)
    rc |= json_object_set_new(out, "displayName", json_string(s));
  s = json_string_value(json_object_get(recipient, "PrimarySmtpAddress"));
  if (s != NULL && s[0] != '\0')
    rc |= json_object_set_new(out, "mail", json_string(s));
  v = json_object_get(recipient, "EmailAddresses");
  if (json_is_array(v))
    rc |= json_object_set(out, "proxyAddresses", v);
  for (int n = 1; n <= 15; n++) {
    char from[32], to[32];
    snprintf(from, sizeof(from), "CustomAttribute%d", n);
    snprintf(to, sizeof(to), "extensionAttribute%d", n);
    s = json_string_value(json_object_get(recipient, from));
    if (s != NULL && s[0] != '\0')
      rc |= json_object_set_new(ext, to, json_string(s));
  }
  rc |= json_object_set_new(out, "onPremisesExtensionAttributes", ext);
  ext = NULL;
  if (rc != 0)
    goto fail;
  return out;
fail:
  json_decref(out);
  json_decref(ext);
  return NULL;
}

json_t *
exo_multivalue(const json_t *add, const json_t *remove)
{
  json_t *mv = json_object();
  json_t *copy;

  if (mv == NULL)
    return NULL;
  if (json_object_set_new(mv, "@odata.type",
                          json_string("#Exchange.GenericHashTable")) != 0)
    goto out;
  if (add != NULL) {
    copy = json_deep_copy(add);
    if (copy == NULL || json_object_set_new(mv, "Add", copy) != 0)
      goto out;
  }
  if (remove != NULL) {
    copy = json_deep_copy(remove);
    if (copy == NULL || json_object_set_new(mv, "Remove", copy) != 0)
      goto out;
  }
  return mv;

out:
  json_decref(mv);
  return NULL;
}

#define EXO_STR_(x) #x
#define EXO_STR(x) EXO_STR_(x)
static const char address_too_long[] =
    "an extra mail address is longer than " EXO_STR(EXO_ADDRESS_MAX) " bytes";

int
exo_smtp_addresses(const json_t *addresses, json_t **out, const char **why)
{
  json_t *list = json_array(), *v;
  size_t i;

  *out = NULL;
  *why = "out of memory";
  if (list == NULL)
    return -1;
  json_array_foreach((json_t *)addresses, i, v)
  {
    const char *a = json_string_value(v);

    if (a == NULL)
      continue;
    if (strncasecmp(a, "smtp:", 5) == 0)
      a += 5;
    if (strchr(a, ':') != NULL || strchr(a, '@') == NULL)
      continue; /* X500:, SIP: and the like are not extra mail */
    if (strlen(a) > EXO_ADDRESS_MAX) {
      *why = address_too_long;
      goto fail;
    }
    /* json_sprintf() sizes its text from what it formats. */
    if (json_array_append_new(list, json_sprintf("smtp:%s", a)) != 0)
      goto fail;
  }
  *out = list;
  *why = NULL;
  return 0;

fail:
  json_decref(list);
  return -1;
}

/* ------------------------------------------------------------------ */
/* Calls                                                               */

static int
url_is_under(const char *base, const char *url)
{
  size_t n = strlen(base);

  while (n > 0 && base[n - 1] == '/')
    n--;
  return n > 0 && strncasecmp(base, url, n) == 0 && url[n] == '/';
}

static void
call_free(struct exo_call *call)
{
  if (call == NULL)
    return;
  free(call->cmdlet);
  text_wipe_free(call->body);
  free(call->url);
  text_wipe_free(call->token);
  json_decref(call->value);
  free(call);
}

static void
active_unlink(struct exo_call *call)
{
  struct exo *exo = call->exo;

  if (exo == NULL)
    return;
  if (call->prev != NULL)
    call->prev->next = call->next;
  else
    exo->active = call->next;
  if (call->next != NULL)
    call->next->prev = call->prev;
  call->next = call->prev = NULL;
  call->exo = NULL;
  exo->in_flight--;
}

/* Hand the outcome of an active call to its caller, free it, and start
 * the next waiting call. */
static void
finish(struct exo_call *call, struct exo_response *resp)
{
  struct exo *exo = call->exo;
  exo_done_fn done = call->done;
  void *ctx = call->ctx;

  log_debug("exo: tenant=%s cmdlet=%s status=%ld pages=%d result=%d",
            exo->tenant->name, call->cmdlet, resp->status, call->pages,
            resp->result);
  active_unlink(call);
  if (resp->error_id == NULL)
    resp->error_id = "";
  if (resp->exception == NULL)
    resp->exception = "";
  if (resp->errmsg == NULL)
    resp->errmsg = "";
  done(ctx, resp);
  call_free(call);
  /* exo stays allocated until its close callback, even if done() called
   * exo_free(); pump() does nothing then. */
  pump(exo);
}

static void
fail_call(struct exo_call *call, int result, const char *what)
{
  struct exo_response resp = {.result = result};
  char msg[EXO_ERRMSG_MAX];

  snprintf(msg, sizeof(msg), "%s: %s", call->cmdlet, what);
  resp.errmsg = msg;
  finish(call, &resp);
}

static void on_token(void *ctx, int result, const char *token,
                     const char *errmsg);
static void on_http(void *ctx, const struct http_response *hr);

static void
send_with_token(struct exo_call *call, const char *token)
{
  struct exo *exo = call->exo;
  const char *headers[9];
  char *auth_header = NULL;
  size_t len;
  int rc;

  text_wipe_free(call->token);
  call->token = strdup(token);
  len = strlen(token) + sizeof("Authorization: Bearer ");
  auth_header = malloc(len);
  if (call->token == NULL || auth_header == NULL) {
    free(auth_header);
    fail_call(call, EXO_ERR_AUTH, "out of memory");
    return;
  }
  snprintf(auth_header, len, "Authorization: Bearer %s", token);
  headers[0] = auth_header;
  headers[1] = "Content-Type: application/json";
  headers[2] = "Accept: application/json";
  headers[3] = "X-ResponseFormat: json";
  headers[4] = exo->anchor_header;
  headers[5] = "Prefer: " EXO_PAGE_SIZE;
  headers[6] = "X-Prefer: " EXO_PAGE_SIZE;
  headers[7] = NULL;

  struct http_request hreq = {
      .method = "POST",
      .url = call->url,
      .headers = headers,
      .body = call->body,
      .body_len = strlen(call->body),
      .ca_file = exo->tenant->ca_file,
      .gate = exo->gate,
  };
  rc = http_send(exo->http, &hreq, on_http, call);
  explicit_bzero(auth_header, len);
  free(auth_header);
  if (rc != 0)
    fail_call(call, EXO_ERR_NETWORK, "cannot start HTTP request");
}

static void
on_token(void *ctx, int result, const char *token, const char *errmsg)
{
  struct exo_call *call = ctx;
  struct exo_response resp = {0};
  char msg[EXO_ERRMSG_MAX];

  if (call->exo == NULL) {
    call_free(call);
    return;
  }
  if (result != AUTH_OK) {
    snprintf(msg, sizeof(msg), "%s: %s", call->cmdlet, errmsg);
    resp.result =
        result == AUTH_ERR_CANCELLED ? EXO_ERR_CANCELLED : EXO_ERR_AUTH;
    resp.auth_permanent = (result == AUTH_ERR_CREDENTIALS);
    resp.errmsg = msg;
    finish(call, &resp);
    return;
  }
  send_with_token(call, token);
}

static void
start(struct exo_call *call)
{
  struct exo *exo = call->exo;
  const char *token = auth_cached(exo->auth, AUTH_RESOURCE_EXCHANGE);

  if (token != NULL) {
    send_with_token(call, token);
    return;
  }
  if (auth_token(exo->auth, AUTH_RESOURCE_EXCHANGE, on_token, call) != 0)
    fail_call(call, EXO_ERR_AUTH, "cannot ask a token");
}

/* A 200 page: append its value, then follow nextLink or finish. */
static void
on_page(struct exo_call *call, const struct http_response *hr)
{
  struct exo_response resp = {.status = hr->status};
  json_error_t jerr;
  json_t *body = json_loadb(hr->body, hr->body_len, 0, &jerr);
  json_t *value, *next;
  const char *link;
  char *url;

  call->pages++;
  if (hr->body_len == 0) { /* nothing: an empty result */
    resp.result = EXO_OK;
    resp.value = call->value;
    finish(call, &resp);
    return;
  }
  if (!json_is_object(body)) {
    json_decref(body);
    fail_call(call, EXO_ERR_PROTOCOL, "HTTP 200 that is not a JSON object");
    return;
  }
  value = json_object_get(body, "value");
  next = json_object_get(body, "@odata.nextLink");
  if ((value != NULL && !json_is_array(value)) ||
      (next != NULL && !json_is_string(next))) {
    json_decref(body);
    fail_call(call, EXO_ERR_PROTOCOL,
              "HTTP 200 with a malformed value or nextLink");
    return;
  }
  if (value != NULL && json_array_extend(call->value, value) != 0) {
    json_decref(body);
    fail_call(call, EXO_ERR_PROTOCOL, "out of memory");
    return;
  }
  link = json_string_value(next);
  if (link != NULL) {
    if (!url_is_under(call->exo->tenant->exchange_url, link)) {
      json_decref(body);
      fail_call(call, EXO_ERR_PROTOCOL,
                "nextLink outside the tenant's Exchange host");
      return;
    }
    if (call->pages >= EXO_MAX_PAGES) {
      json_decref(body);
      fail_call(call, EXO_ERR_PROTOCOL, "too many pages");
      return;
    }
    url = strdup(link);
    json_decref(body);
    if (url == NULL) {
      fail_call(call, EXO_ERR_PROTOCOL, "out of memory");
      return;
    }
    free(call->url);
    call->url = url;
    start(call);
    return;
  }
  json_decref(body);
  resp.result = EXO_OK;
  resp.value = call->value;
  finish(call, &resp);
}

/* The last dot-separated part of an exception type name. */
static const char *
short_type(const char *type)
{
  const char *dot = strrchr(type, '.');

  return dot != NULL && dot[1] != '\0' ? dot + 1 : type;
}

static void
on_http(void *ctx, const struct http_response *hr)
{
  struct exo_call *call = ctx;
  struct exo_response resp = {0};
  char id[EXO_FIELD_MAX], type[EXO_FIELD_MAX], text[EXO_FIELD_MAX * 4];
  char msg[EXO_ERRMSG_MAX];

  if (call->exo == NULL) {
    call_free(call);
    return;
  }
  resp.status = hr->status;
  if (hr->error != HTTP_OK) {
    resp.result =
        hr->error == HTTP_ERR_CANCELLED ? EXO_ERR_CANCELLED : EXO_ERR_NETWORK;
    snprintf(msg, sizeof(msg), "%s: %s (after %d attempts)", call->cmdlet,
             hr->errmsg, hr->attempts);
    resp.errmsg = msg;
    finish(call, &resp);
    return;
  }
  if (hr->status >= 200 && hr->status < 300 &&
      (hr->body_len == 0 || hr->body[0] == '{' ||
       strcasestr(hr->body, EXO_BUSY_TEXT) == NULL)) {
    on_page(call, hr);
    return;
  }
  if (http_status_class(hr->status) == HTTP_CLASS_TOKEN &&
      call->refreshed < EXO_TOKEN_RETRIES) {
    /* The token was refused (expired early, revoked): a fresh token and
     * another try. */
    log_info("exo: token refused, refreshing tenant=%s cmdlet=%s try=%d",
             call->exo->tenant->name, call->cmdlet, call->refreshed + 1);
    auth_invalidate(call->exo->auth, AUTH_RESOURCE_EXCHANGE, call->token);
    call->refreshed++;
    start(call);
    return;
  }
  if (exo_decode_error(hr->body, hr->body_len, id, sizeof(id), type,
                       sizeof(type), text, sizeof(text)) == 0) {
    resp.result = EXO_ERR_CMDLET;
    resp.error_id = id;
    resp.exception = type;
    snprintf(msg, sizeof(msg), "%s: %s %s%s%s", call->cmdlet, id,
             short_type(type), text[0] ? ": " : "", text);
  } else {
    resp.result = EXO_ERR_HTTP;
    snprintf(msg, sizeof(msg), "%s: HTTP %ld%s%s", call->cmdlet, hr->status,
             text[0] ? ": " : "", text);
  }
  resp.transient = exo_error_class(hr->status, text) != HTTP_CLASS_PERMANENT;
  resp.errmsg = msg;
  finish(call, &resp);
}

enum http_class
exo_error_class(long status, const char *text)
{
  /* Throttled or busy: Exchange's "maximum number of concurrent requests
   * per tenant" comes as plain text, with whatever status. */
  if (text != NULL && strcasestr(text, EXO_BUSY_TEXT) != NULL)
    return HTTP_CLASS_THROTTLED;
  return http_status_class(status);
}

/* Start waiting calls while there is room. */
static void
pump(struct exo *exo)
{
  if (exo->pumping)
    return;
  exo->pumping = 1;
  while (!exo->closing && exo->queue_head != NULL &&
         exo->in_flight < exo->max_in_flight) {
    struct exo_call *call = exo->queue_head;

    exo->queue_head = call->next;
    if (exo->queue_head == NULL)
      exo->queue_tail = NULL;
    call->next = exo->active;
    call->prev = NULL;
    if (exo->active != NULL)
      exo->active->prev = call;
    exo->active = call;
    exo->in_flight++;
    start(call);
  }
  exo->pumping = 0;
}

static void
on_kick(uv_timer_t *timer)
{
  pump(timer->data);
}

static void
on_closed(uv_handle_t *handle)
{
  struct exo *exo = handle->data;

  free(exo->invoke_url);
  free(exo->anchor_header);
  free(exo);
}

struct exo *
exo_new(uv_loop_t *loop, struct http *http, struct auth *auth,
        const struct config_tenant *tenant, int max_in_flight)
{
  struct exo *exo = calloc(1, sizeof(*exo));
  const char *base = tenant->exchange_url;
  size_t n, blen = strlen(base);

  if (exo == NULL)
    return NULL;
  while (blen > 0 && base[blen - 1] == '/')
    blen--;
  exo->loop = loop;
  exo->http = http;
  exo->auth = auth;
  exo->tenant = tenant;
  exo->max_in_flight =
      max_in_flight > 0 ? max_in_flight : EXO_DEFAULT_IN_FLIGHT;
  snprintf(exo->gate, sizeof(exo->gate), "%s/exchange", tenant->tenant_id);
  n = blen + strlen(tenant->tenant_id) +
      sizeof("/adminapi/beta//Invoke"
             "Command");
  exo->invoke_url = malloc(n);
  if (exo->invoke_url != NULL)
    snprintf(exo->invoke_url, n, "%.*s/adminapi/beta/%s/InvokeCommand",
             (int)blen, base, tenant->tenant_id);
  n = strlen(tenant->tenant_id) + sizeof("X-AnchorMailbox: " EXO_ANCHOR "@");
  exo->anchor_header = malloc(n);
  if (exo->anchor_header != NULL)
    snprintf(exo->anchor_header, n, "X-AnchorMailbox: " EXO_ANCHOR "@%s",
             tenant->tenant_id);
  if (exo->invoke_url == NULL || exo->anchor_header == NULL ||
      uv_timer_init(loop, &exo->kick) != 0) {
    free(exo->invoke_url);
    free(exo->anchor_header);
    free(exo);
    return NULL;
  }
  exo->kick.data = exo;
  return exo;
}

void
exo_free(struct exo *exo)
{
  struct exo_response resp = {.result = EXO_ERR_CANCELLED,
                              .error_id = "",
                              .exception = "",
                              .errmsg = "cancelled"};

  if (exo == NULL || exo->closing)
    return;
  exo->closing = 1;
  /* Waiting calls: nothing else refers to them. */
  while (exo->queue_head != NULL) {
    struct exo_call *call = exo->queue_head;

    exo->queue_head = call->next;
    call->done(call->ctx, &resp);
    call_free(call);
  }
  exo->queue_tail = NULL;
  /* Active calls: detach only; the auth or http callback still to come
   * frees them. */
  while (exo->active != NULL) {
    struct exo_call *call = exo->active;

    active_unlink(call);
    call->done(call->ctx, &resp);
  }
  uv_close((uv_handle_t *)&exo->kick, on_closed);
}

/* A $select list: property names (letters, digits) joined by commas. */
static int
select_ok(const char *select)
{
  size_t n = strlen(select);

  if (n == 0 || n > 2048 || select[0] == ',' || select[n - 1] == ',' ||
      strstr(select, ",,") != NULL)
    return 0;
  return strspn(select, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        "0123456789,") == n;
}

int
exo_invoke(struct exo *exo, const char *cmdlet, const json_t *parameters,
           exo_done_fn done, void *ctx)
{
  return exo_invoke_select(exo, cmdlet, parameters, NULL, done, ctx);
}

int
exo_invoke_select(struct exo *exo, const char *cmdlet,
                  const json_t *parameters, const char *select,
                  exo_done_fn done, void *ctx)
{
  struct exo_call *call;
  json_t *body;

  if (exo == NULL || exo->closing || done == NULL || cmdlet == NULL ||
      cmdlet[0] == '\0' || strlen(cmdlet) > 128 ||
      strpbrk(cmdlet, "\r\n") != NULL ||
      (select != NULL && !select_ok(select)))
    return -1;
  body = exo_request_body(cmdlet, parameters);
  if (body == NULL)
    return -1;
  call = calloc(1, sizeof(*call));
  if (call == NULL)
    goto out;
  call->cmdlet = strdup(cmdlet);
  call->body = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (select == NULL)
    call->url = strdup(exo->invoke_url);
  else if (asprintf(&call->url, "%s?$select=%s", exo->invoke_url, select) < 0)
    call->url = NULL;
  call->value = json_array();
  if (call->cmdlet == NULL || call->body == NULL || call->url == NULL ||
      call->value == NULL)
    goto out;
  if (uv_timer_start(&exo->kick, on_kick, 0, 0) != 0)
    goto out;
  json_decref(body);
  call->done = done;
  call->ctx = ctx;
  call->exo = exo;
  if (exo->queue_tail != NULL)
    exo->queue_tail->next = call;
  else
    exo->queue_head = call;
  exo->queue_tail = call;
  return 0;

out:
  json_decref(body);
  call_free(call);
  return -1;
}

/* ------------------------------------------------------------------ */
/* Mailboxes, users and domains in galbridge's own shapes              */

/* `s` as a GUID 8-4-4-4-12 in lower case into out[37]; -1 if it is not
 * one. */
static int
guid_lower(const char *s, char out[37])
{
  if (!text_is_guid(s))
    return -1;
  for (size_t i = 0; i < 37; i++)
    out[i] = (char)tolower((unsigned char)s[i]);
  return 0;
}

/* A text from a tenant that galbridge writes back into another one:
 * non-empty, valid UTF-8, at most `max` bytes, no control character. */
static int
clean_text(const char *s, size_t max)
{
  size_t n;

  if (s == NULL || (n = strlen(s)) == 0 || n > max || !text_utf8_valid(s, n))
    return 0;
  for (size_t i = 0; i < n; i++) {
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
      return 0;
  }
  return 1;
}

static int
flag(const json_t *m, const char *key)
{
  return json_is_true(json_object_get(m, key));
}

static int
ends_with_ci(const char *s, const char *suffix)
{
  size_t n = strlen(s), k = strlen(suffix);

  return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

int
exo_mailbox_record(const json_t *m, json_t **out, char *err, size_t errlen)
{
  static const char zero[] = "00000000-0000-0000-0000-000000000000";
  const char *id = exo_recipient_id(m);
  const char *dn = json_string_value(json_object_get(m, "LegacyExchangeDN"));
  const char *primary =
      json_string_value(json_object_get(m, "PrimarySmtpAddress"));
  const char *alias = json_string_value(json_object_get(m, "Alias"));
  const char *status = json_string_value(json_object_get(m, "ArchiveStatus"));
  const char *changed =
      json_string_value(json_object_get(m, "WhenChangedUTC"));
  json_t *rec = NULL, *x500 = json_array(), *holds = json_array(), *v;
  char guid[37], archive[37];
  const char *initial = NULL;
  size_t i, n_x500 = 0;
  int licensed = 0;

  *out = NULL;
  if (x500 == NULL || holds == NULL) {
    text_set_err(err, errlen, "out of memory");
    goto fail;
  }
  if (guid_lower(json_string_value(json_object_get(m, "ExchangeGuid")),
                 guid) != 0 ||
      strcmp(guid, zero) == 0) {
    text_set_err(err, errlen, "its ExchangeGuid is not a GUID");
    goto fail;
  }
  if (!clean_text(dn, EXO_PROXY_MAX - 5) || strncasecmp(dn, "/o=", 3) != 0) {
    text_set_err(err, errlen,
                 "its LegacyExchangeDN is not an Exchange DN (/o=...)");
    goto fail;
  }
  if (!clean_text(primary, EXO_ADDRESS_MAX) || strchr(primary, '@') == NULL ||
      !clean_text(alias, 64) || strchr(alias, '@') != NULL) {
    text_set_err(err, errlen, "its primary address or alias is not usable");
    goto fail;
  }
  /* Only an archive that exists (ArchiveStatus Active) is stamped: a
   * leftover ArchiveGuid of a disabled archive is not. */
  archive[0] = '\0';
  if (status != NULL && strcasecmp(status, "Active") == 0 &&
      (guid_lower(json_string_value(json_object_get(m, "ArchiveGuid")),
                  archive) != 0 ||
       strcmp(archive, zero) == 0)) {
    text_set_err(err, errlen,
                 "its archive is active but its ArchiveGuid is "
                 "not a GUID");
    goto fail;
  }
  json_array_foreach(json_object_get(m, "EmailAddresses"), i, v)
  {
    const char *a = json_string_value(v);

    if (a == NULL)
      continue;
    if (strncasecmp(a, "x500:", 5) == 0) {
      if (!clean_text(a, EXO_PROXY_MAX) || a[5] != '/' ||
          ++n_x500 > EXO_X500_MAX) {
        text_set_err(err, errlen,
                     "an X500 address of it is not usable (more than %d, "
                     "longer than %d bytes, or not a DN)",
                     EXO_X500_MAX, EXO_PROXY_MAX);
        goto fail;
      }
      /* Kept as written, behind the prefix Exchange shows. */
      if (json_array_append_new(x500, json_sprintf("X500:%s", a + 5)) != 0)
        goto oom;
    } else if (strncasecmp(a, "smtp:", 5) == 0 && initial == NULL &&
               ends_with_ci(a, ".onmicrosoft.com") &&
               !ends_with_ci(a, ".mail.onmicrosoft.com") &&
               clean_text(a + 5, EXO_ADDRESS_MAX)) {
      initial = a + 5;
    }
  }
  json_array_foreach(json_object_get(m, "PersistedCapabilities"), i, v)
      licensed |= json_is_string(v) &&
                  strcasecmp(json_string_value(v), "ExchangeT2TMbxMove") == 0;
  if ((flag(m, "LitigationHoldEnabled") &&
       json_array_append_new(holds, json_string("LitigationHold")) != 0) ||
      (flag(m, "DelayHoldApplied") &&
       json_array_append_new(holds, json_string("DelayHold")) != 0) ||
      (flag(m, "DelayReleaseHoldApplied") &&
       json_array_append_new(holds, json_string("DelayReleaseHold")) != 0) ||
      (flag(m, "ComplianceTagHoldApplied") &&
       json_array_append_new(holds, json_string("ComplianceTagHold")) != 0) ||
      (json_array_size(json_object_get(m, "InPlaceHolds")) > 0 &&
       json_array_append_new(holds, json_string("InPlaceHold")) != 0))
    goto oom;
  rec = json_pack("{s:s?, s:s, s:s, s:s, s:s, s:O, s:O, s:b}", "id", id,
                  "exchangeGuid", guid, "legacyDN", dn, "primary", primary,
                  "alias", alias, "x500", x500, "holds", holds, "licensed",
                  licensed);
  if (rec == NULL ||
      (archive[0] != '\0' &&
       json_object_set_new(rec, "archiveGuid", json_string(archive)) != 0) ||
      (initial != NULL &&
       json_object_set_new(rec, "initial", json_string(initial)) != 0) ||
      (clean_text(changed, 64) &&
       json_object_set_new(rec, "changed", json_string(changed)) != 0))
    goto oom;
  json_decref(x500);
  json_decref(holds);
  *out = rec;
  return 0;

oom:
  text_set_err(err, errlen, "out of memory");
fail:
  json_decref(rec);
  json_decref(x500);
  json_decref(holds);
  return -1;
}

int
exo_user_state(const json_t *user, struct exo_user_state *out)
{
  const char *type =
      json_string_value(json_object_get(user, "RecipientTypeDetails"));
  const char *prev =
      json_string_value(json_object_get(user, "PreviousRecipientTypeDetails"));

  memset(out, 0, sizeof(*out));
  if (type == NULL || !clean_text(type, sizeof(out->type) - 1))
    return -1;
  memcpy(out->type, type, strlen(type) + 1);
  if (prev != NULL && strcasecmp(prev, "None") != 0 &&
      clean_text(prev, sizeof(out->previous) - 1))
    memcpy(out->previous, prev, strlen(prev) + 1);
  else if (prev != NULL && strcasecmp(prev, "None") != 0)
    memcpy(out->previous, "(unreadable)", sizeof("(unreadable)"));
  out->licensed = flag(user, "SKUAssigned");
  out->dir_synced = flag(user, "IsDirSynced");
  return 0;
}

int
exo_accepted_domains(const json_t *value, json_t **domains, char **initial)
{
  json_t *list = json_array(), *d;
  size_t i;

  *domains = NULL;
  *initial = NULL;
  if (list == NULL)
    return -1;
  json_array_foreach((json_t *)value, i, d)
  {
    const char *name = json_string_value(json_object_get(d, "DomainName"));
    char *lower;

    if (!clean_text(name, 255) || strchr(name, '@') != NULL ||
        strchr(name, ' ') != NULL)
      continue;
    lower = strdup(name);
    if (lower == NULL)
      goto fail;
    for (char *p = lower; *p != '\0'; p++)
      *p = (char)tolower((unsigned char)*p);
    if (json_array_append_new(list, json_string(lower)) != 0) {
      free(lower);
      goto fail;
    }
    if (flag(d, "InitialDomain") && *initial == NULL)
      *initial = lower;
    else
      free(lower);
  }
  if (*initial == NULL) /* none said so: no address can be placed */
    goto fail;
  *domains = list;
  return 0;
fail:
  free(*initial);
  *initial = NULL;
  json_decref(list);
  return -1;
}

/* ------------------------------------------------------------------ */
/* Migration set-up in galbridge's own shapes (migration-check)        */

/* obj's property `key`, matched exactly, else without case (PowerShell
 * names are case-insensitive, and public scripts spell some of them in
 * more than one way: OAuthApplicationId, OauthApplicationId). Borrowed. */
static json_t *
get_ci(const json_t *obj, const char *key)
{
  json_t *v = json_object_get(obj, key), *w;
  const char *k;

  if (v != NULL || !json_is_object(obj))
    return v;
  json_object_foreach((json_t *)obj, k, w)
  {
    if (strcasecmp(k, key) == 0)
      return w;
  }
  return NULL;
}

/* A boolean as the JSON output gives it (true), or as text ("True"). */
static int
truthy(const json_t *v)
{
  return json_is_true(v) ||
         (json_is_string(v) && strcasecmp(json_string_value(v), "true") == 0);
}

/* A property's text when it is clean, non-empty text; NULL otherwise. */
static const char *
text_of(const json_t *obj, const char *key, size_t max)
{
  const char *s = json_string_value(get_ci(obj, key));

  return clean_text(s, max) ? s : NULL;
}

/* A new JSON string: s in lower case (ASCII letters), or NULL. */
static json_t *
lower_string(const char *s)
{
  char *lower = strdup(s);
  json_t *v;

  if (lower == NULL)
    return NULL;
  for (char *p = lower; *p != '\0'; p++)
    *p = (char)tolower((unsigned char)*p);
  v = json_string(lower);
  free(lower);
  return v;
}

/* Set key to s in lower case; nothing when s is NULL. */
static int
set_lower(json_t *obj, const char *key, const char *s)
{
  return s == NULL ? 0 : json_object_set_new(obj, key, lower_string(s));
}

int
exo_org_dehydrated(const json_t *value)
{
  const json_t *v = get_ci(json_array_get(value, 0), "IsDehydrated");

  if (json_is_boolean(v))
    return json_is_true(v);
  if (json_is_string(v) && (strcasecmp(json_string_value(v), "true") == 0 ||
                            strcasecmp(json_string_value(v), "false") == 0))
    return truthy(v);
  return -1;
}

/* Exchange's MailboxMoveCapability flags, in the order it writes them. */
static const char *const capability_names[] = {
    "Inbound", "Outbound", "RemoteInbound", "RemoteOutbound"};
#define N_CAPABILITIES (sizeof(capability_names) / sizeof(capability_names[0]))

/* Mark in seen[] each flag named in `text` ("Inbound, RemoteOutbound");
 * names Exchange does not have go to `other` as written. */
static int
capability_words(const char *text, int seen[N_CAPABILITIES], json_t *other)
{
  const char *p = text;

  while (*p != '\0') {
    const char *end = strchr(p, ',');
    size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
    size_t i;

    while (n > 0 && (*p == ' ' || *p == '\t')) {
      p++;
      n--;
    }
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
      n--;
    for (i = 0; i < N_CAPABILITIES; i++) {
      if (strlen(capability_names[i]) == n &&
          strncasecmp(capability_names[i], p, n) == 0) {
        seen[i] = 1;
        break;
      }
    }
    if (i == N_CAPABILITIES && n > 0 &&
        !(n == 4 && !strncasecmp(p, "None", 4)))
      if (json_array_append_new(other, json_stringn(p, n)) != 0)
        return -1;
    if (end == NULL)
      break;
    p = end + 1;
  }
  return 0;
}

/* MailboxMoveCapability as a set (a text of comma-separated names, or a
 * list of them): new array, or NULL on allocation failure. */
static json_t *
capability_set(const json_t *v)
{
  int seen[N_CAPABILITIES] = {0};
  json_t *other = json_array(), *set = json_array(), *e;
  size_t i;

  if (other == NULL || set == NULL)
    goto fail;
  if (json_is_string(v) &&
      capability_words(json_string_value(v), seen, other) != 0)
    goto fail;
  json_array_foreach((json_t *)v, i, e)
  {
    if (json_is_string(e) &&
        capability_words(json_string_value(e), seen, other) != 0)
      goto fail;
  }
  for (i = 0; i < N_CAPABILITIES; i++) {
    if (seen[i] &&
        json_array_append_new(set, json_string(capability_names[i])) != 0)
      goto fail;
  }
  if (json_array_extend(set, other) != 0)
    goto fail;
  json_decref(other);
  return set;
fail:
  json_decref(other);
  json_decref(set);
  return NULL;
}

/* Append v to out when it is clean text (lower-cased when `lower`). */
static int
append_text(json_t *out, const json_t *v, int lower)
{
  const char *s = json_string_value(v);

  if (!clean_text(s, EXO_PROXY_MAX))
    return 0;
  return json_array_append_new(out, lower ? lower_string(s) : json_string(s));
}

/* The clean strings of a list (a lone string is a list of one), each
 * lower-cased when `lower`: new array, or NULL. */
static json_t *
text_list(const json_t *v, int lower)
{
  json_t *out = json_array(), *e;
  size_t i;

  if (out == NULL)
    return NULL;
  if (json_is_string(v) && append_text(out, v, lower) != 0)
    goto fail;
  json_array_foreach((json_t *)v, i, e)
  {
    if (append_text(out, e, lower) != 0)
      goto fail;
  }
  return out;
fail:
  json_decref(out);
  return NULL;
}

/* Turn each item of a cmdlet's `value` into galbridge's shape with fn
 * (0 and *item, or *item NULL to leave it out; -1 out of memory): 0 and
 * *out (new array), or -1. */
static int
each_item(const json_t *value, int (*fn)(const json_t *, json_t **),
          json_t **out)
{
  json_t *list = json_array(), *r, *item;
  size_t i;

  *out = NULL;
  if (list == NULL)
    return -1;
  json_array_foreach((json_t *)value, i, r)
  {
    if (fn(r, &item) != 0 ||
        (item != NULL && json_array_append_new(list, item) != 0)) {
      json_decref(list);
      return -1;
    }
  }
  *out = list;
  return 0;
}

/* One Get-OrganizationRelationship result (none without a name). */
static int
relationship_of(const json_t *r, json_t **out)
{
  const char *name = text_of(r, "Name", 256);
  const char *app = text_of(r, "OAuthApplicationId", 64);
  json_t *rel;

  *out = NULL;
  if (name == NULL)
    name = text_of(r, "Identity", 256);
  if (name == NULL)
    return 0;
  rel = json_pack("{s:s, s:o*, s:b, s:b, s:o*, s:o*}", "name", name, "domains",
                  text_list(get_ci(r, "DomainNames"), 1), "enabled",
                  truthy(get_ci(r, "Enabled")), "moveEnabled",
                  truthy(get_ci(r, "MailboxMoveEnabled")), "capabilities",
                  capability_set(get_ci(r, "MailboxMoveCapability")), "scopes",
                  text_list(get_ci(r, "MailboxMovePublishedScopes"), 0));
  if (rel == NULL || json_object_size(rel) != 6 ||
      set_lower(rel, "appId", app) != 0) {
    json_decref(rel);
    return -1;
  }
  *out = rel;
  return 0;
}

int
exo_relationships(const json_t *value, json_t **out)
{
  return each_item(value, relationship_of, out);
}

/* One Get-MigrationEndpoint result. */
static int
endpoint_of(const json_t *e, json_t **out)
{
  static const char *const keys[][2] = {{"name", "Identity"},
                                        {"name", "Name"},
                                        {"remoteServer", "RemoteServer"},
                                        {"remoteTenant", "RemoteTenant"},
                                        {"type", "EndpointType"}};
  json_t *ep = json_object();
  int rc = 0;

  *out = NULL;
  if (ep == NULL)
    return -1;
  for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
    const char *s = text_of(e, keys[k][1], 256);
    if (s != NULL && json_object_get(ep, keys[k][0]) == NULL)
      rc |= json_object_set_new(ep, keys[k][0], json_string(s));
  }
  rc |= set_lower(ep, "appId", text_of(e, "ApplicationId", 64));
  if (rc != 0) {
    json_decref(ep);
    return -1;
  }
  *out = ep;
  return 0;
}

int
exo_endpoints(const json_t *value, json_t **out)
{
  return each_item(value, endpoint_of, out);
}

int
exo_availability(const json_t *value, char *detail, size_t len)
{
  const json_t *r = json_array_get(value, 0);
  const char *result = json_string_value(get_ci(r, "Result"));
  const char *why = json_string_value(get_ci(r, "ErrorDetail"));

  set_empty(detail, len);
  if (result == NULL)
    return -1;
  if (strcasecmp(result, "Success") == 0)
    return 0;
  /* The cause is in ErrorDetail; Message is often a generic text. */
  if (why == NULL || why[0] == '\0')
    why = json_string_value(get_ci(r, "Message"));
  if (why == NULL || why[0] == '\0')
    why = result;
  if (len > 0)
    copy_line(detail, len, why, strlen(why), 0);
  return 1;
}

int
exo_mailuser_record(const json_t *mu, json_t **out)
{
  static const char zero[] = "00000000-0000-0000-0000-000000000000";
  const char *id = exo_recipient_id(mu);
  json_t *rec = NULL, *smtp = json_array(), *x500 = json_array(), *v;
  char guid[37];
  size_t i;
  int licensed = 0;

  *out = NULL;
  if (id == NULL || smtp == NULL || x500 == NULL)
    goto fail;
  json_array_foreach(get_ci(mu, "EmailAddresses"), i, v)
  {
    const char *a = json_string_value(v);
    if (!clean_text(a, EXO_PROXY_MAX))
      continue;
    if (strncasecmp(a, "smtp:", 5) == 0 && a[5] != '\0') {
      if (json_array_append_new(smtp, json_string(a + 5)) != 0)
        goto fail;
    } else if (strncasecmp(a, "x500:", 5) == 0 && a[5] != '\0') {
      if (json_array_append_new(x500, json_sprintf("X500:%s", a + 5)) != 0)
        goto fail;
    }
  }
  json_array_foreach(get_ci(mu, "PersistedCapabilities"), i, v) licensed |=
      json_is_string(v) &&
      strcasecmp(json_string_value(v), "ExchangeT2TMbxMove") == 0;
  rec = json_pack("{s:s, s:s?, s:s?, s:O, s:O, s:b, s:b}", "id", id, "type",
                  text_of(mu, "RecipientTypeDetails", 64), "primary",
                  text_of(mu, "PrimarySmtpAddress", EXO_ADDRESS_MAX), "smtp",
                  smtp, "x500", x500, "licensed", licensed, "dirSynced",
                  truthy(get_ci(mu, "IsDirSynced")));
  if (rec == NULL)
    goto fail;
  if (guid_lower(json_string_value(get_ci(mu, "ExchangeGuid")), guid) == 0 &&
      strcmp(guid, zero) != 0 &&
      json_object_set_new(rec, "exchangeGuid", json_string(guid)) != 0)
    goto fail;
  if (guid_lower(json_string_value(get_ci(mu, "ArchiveGuid")), guid) == 0 &&
      strcmp(guid, zero) != 0 &&
      json_object_set_new(rec, "archiveGuid", json_string(guid)) != 0)
    goto fail;
  json_decref(smtp);
  json_decref(x500);
  *out = rec;
  return 0;
fail:
  json_decref(rec);
  json_decref(smtp);
  json_decref(x500);
  return -1;
}

int
exo_group_members(const json_t *value, json_t **out)
{
  json_t *set = json_object(), *m;
  size_t i;

  *out = NULL;
  if (set == NULL)
    return -1;
  json_array_foreach((json_t *)value, i, m)
  {
    const char *keys[2] = {exo_recipient_id(m),
                           text_of(m, "PrimarySmtpAddress", EXO_ADDRESS_MAX)};
    for (size_t k = 0; k < 2; k++) {
      json_t *key = keys[k] != NULL ? lower_string(keys[k]) : NULL;
      int rc = key == NULL ? -1
                           : json_object_set_new(set, json_string_value(key),
                                                 json_true());
      json_decref(key);
      if (keys[k] != NULL && rc != 0) {
        json_decref(set);
        return -1;
      }
    }
  }
  *out = set;
  return 0;
}

int
exo_mailuser_stamps(const json_t *r, json_t **out)
{
  static const char zero[] = "00000000-0000-0000-0000-000000000000";
  json_t *stamps = json_object(), *list = json_array(), *v;
  char guid[37];
  size_t i;

  *out = NULL;
  if (stamps == NULL || list == NULL)
    goto fail;
  if (guid_lower(json_string_value(json_object_get(r, "ExchangeGuid")),
                 guid) == 0 &&
      strcmp(guid, zero) != 0 &&
      json_object_set_new(stamps, "ExchangeGuid", json_string(guid)) != 0)
    goto fail;
  if (guid_lower(json_string_value(json_object_get(r, "ArchiveGuid")), guid) ==
          0 &&
      strcmp(guid, zero) != 0 &&
      json_object_set_new(stamps, "ArchiveGuid", json_string(guid)) != 0)
    goto fail;
  json_array_foreach(json_object_get(r, "EmailAddresses"), i, v)
  {
    if (json_is_string(v) && json_array_append(list, v) != 0)
      goto fail;
  }
  if (json_object_set(stamps, "ProxyAddresses", list) != 0)
    goto fail;
  json_decref(list);
  *out = stamps;
  return 0;
fail:
  json_decref(stamps);
  json_decref(list);
  return -1;
}
