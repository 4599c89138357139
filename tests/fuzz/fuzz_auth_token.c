/*
 * fuzz_auth_token — the token-endpoint response parser
 * (auth_parse_token_response in src/auth.c).
 *
 * The input is a response body, judged as the answer to a token request
 * with status 200, 400, 401 and 500, and once more as the curl error text
 * of a request that got no answer.
 *
 * Checks: no crash, leak or sanitizer report; AUTH_OK only with status
 * 200, a token that is printable ASCII without spaces (at most 64 KiB)
 * and a lifetime of 0..86400 s; otherwise no token and a message. The
 * message is always one line and never holds the credential that was
 * sent, as it is or form-encoded, when the server wrote it (the secret
 * must not reach a log).
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "auth.h"
#include "fuzz.h"
#include "http.h"

/* Has characters that form-encoding changes, and none an OAuth error
 * code may hold, so it can only reach the message by echo. */
static const char CREDENTIAL[] = "s3cr!t~Va/ue+=";
static char *credential_enc;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  credential_enc = http_urlencode(CREDENTIAL);
  if (credential_enc == NULL)
    abort();
  return 0;
}

/* `from_server`: the text judged came from the token endpoint (curl's
 * error text, our own, is not checked for echoes). */
static void
judge(const struct http_response *resp, int from_server)
{
  json_t *root = (json_t *)1;
  const char *token = (const char *)1;
  long lifetime = -1;
  char msg[640];
  int rc;

  rc = auth_parse_token_response("fuzz", CREDENTIAL, resp, &root, &token,
                                 &lifetime, msg, sizeof(msg));
  if (strnlen(msg, sizeof(msg)) >= sizeof(msg) || strchr(msg, '\n') ||
      strchr(msg, '\r') ||
      (from_server &&
       (strstr(msg, CREDENTIAL) || strstr(msg, credential_enc))))
    abort();
  if (rc == AUTH_OK) {
    size_t n;

    if (resp->status != 200 || root == NULL || token == NULL || lifetime < 0 ||
        lifetime > 86400)
      abort();
    n = strlen(token);
    if (n == 0 || n > 64 * 1024)
      abort();
    for (size_t i = 0; i < n; i++) {
      if ((unsigned char)token[i] <= 0x20 || (unsigned char)token[i] >= 0x7f)
        abort();
    }
    json_decref(root);
    return;
  }
  if (rc != AUTH_ERR_CREDENTIALS && rc != AUTH_ERR_TRANSIENT &&
      rc != AUTH_ERR_CANCELLED)
    abort();
  if (root != NULL || token != NULL || msg[0] == '\0')
    abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const long statuses[] = {200, 400, 401, 500};
  char *body = fuzz_strndup(data, size); /* http NUL-terminates bodies */
  struct http_response resp;

  for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
    memset(&resp, 0, sizeof(resp));
    resp.status = statuses[i];
    resp.errmsg = "";
    resp.body = body;
    resp.body_len = size;
    resp.retry_after = -1;
    resp.attempts = 1;
    judge(&resp, 1);
  }
  memset(&resp, 0, sizeof(resp));
  resp.error = HTTP_ERR_NETWORK;
  resp.errmsg = body;
  resp.body = "";
  resp.retry_after = -1;
  resp.attempts = 3;
  judge(&resp, 0);
  free(body);
  return 0;
}
