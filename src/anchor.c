/*
 * anchor — see include/anchor.h.
 *
 * The proof is computed over one line per field (target tenant, kind,
 * plain anchor, target object id, each lower-cased), after a version
 * line, so that no two different inputs give the same message. Its
 * version ("1.") is part of the stamp: a later scheme can sit beside it.
 */
#include "anchor.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jwt.h"

#define KEY_MIN 16
#define KEY_MAX 4096
#define PROOF_BYTES 16
#define PROOF_VERSION "1."

struct anchor_key {
  unsigned char bytes[KEY_MAX];
  size_t len;
};

void
anchor_key_free(struct anchor_key *key)
{
  if (key == NULL)
    return;
  jwt_cleanse(key, sizeof(*key));
  free(key);
}

int
anchor_key_load(const char *path, struct anchor_key **out, char *err,
                size_t errlen)
{
  struct anchor_key *key = NULL;
  struct stat st;
  ssize_t n;
  size_t len = 0;
  int fd, result = -1;

  *out = NULL;
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    snprintf(err, errlen, "anchor_key_file %s: %s", path, strerror(errno));
    return -1;
  }
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "anchor_key_file %s: not a regular file", path);
    goto out;
  }
  if ((st.st_mode & 077) != 0) {
    snprintf(err, errlen,
             "anchor_key_file %s is accessible by group or others (mode "
             "%04o); run chmod 600 on it",
             path, (unsigned)(st.st_mode & 07777));
    goto out;
  }
  key = calloc(1, sizeof(*key));
  if (key == NULL) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  /* One byte more than the maximum tells a file that is too long. */
  while (len < sizeof(key->bytes)) {
    n = read(fd, key->bytes + len, sizeof(key->bytes) - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      snprintf(err, errlen, "anchor_key_file %s: %s", path, strerror(errno));
      goto out;
    }
    if (n == 0)
      break;
    len += (size_t)n;
  }
  if (len == sizeof(key->bytes)) {
    char extra;
    if (read(fd, &extra, 1) == 1) {
      snprintf(err, errlen, "anchor_key_file %s: longer than %d bytes", path,
               KEY_MAX);
      goto out;
    }
  }
  while (len > 0 && isspace(key->bytes[len - 1]))
    len--;
  if (len < KEY_MIN) {
    snprintf(err, errlen,
             "anchor_key_file %s: shorter than %d bytes (make one with "
             "'openssl rand -base64 32')",
             path, KEY_MIN);
    goto out;
  }
  key->len = len;
  *out = key;
  key = NULL;
  result = 0;
out:
  anchor_key_free(key);
  close(fd);
  return result;
}

static void
lower(char *s)
{
  for (; *s != '\0'; s++)
    *s = (char)tolower((unsigned char)*s);
}

char *
anchor_plain(const char *source_tenant, const char *source_id)
{
  size_t n =
      strlen(ANCHOR_PREFIX) + strlen(source_tenant) + strlen(source_id) + 2;
  char *plain = malloc(n);

  if (plain == NULL)
    return NULL;
  snprintf(plain, n, "%s%s:%s", ANCHOR_PREFIX, source_tenant, source_id);
  lower(plain);
  return plain;
}

char *
anchor_parse(const char *value, const char **proof)
{
  const size_t plen = strlen(ANCHOR_PREFIX);
  const char *tenant, *id, *end;
  char *plain;

  if (proof != NULL)
    *proof = NULL;
  if (value == NULL || strncasecmp(value, ANCHOR_PREFIX, plen) != 0)
    return NULL;
  tenant = value + plen;
  id = strchr(tenant, ':');
  if (id == NULL || id == tenant)
    return NULL;
  id++;
  end = strchr(id, ':');
  if (end == NULL)
    end = id + strlen(id);
  if (end == id || (size_t)(end - value) >= ANCHOR_PLAIN_MAX)
    return NULL;
  plain = strndup(value, (size_t)(end - value));
  if (plain == NULL)
    return NULL;
  lower(plain);
  if (proof != NULL && *end == ':')
    *proof = end + 1;
  return plain;
}

/* a + b + c, a new string (NULL on allocation failure). */
static char *
concat(const char *a, const char *b, const char *c)
{
  size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
  char *out = malloc(n);

  if (out != NULL)
    snprintf(out, n, "%s%s%s", a, b, c);
  return out;
}

/* The proof's text ("1." + base64url of PROOF_BYTES) into a new string. */
static char *
proof_text(const struct anchor_key *key, const char *target_tenant,
           const char *kind, const char *plain, const char *target_id)
{
  unsigned char mac[32];
  char *msg, *b64, *out = NULL;
  size_t n = strlen(target_tenant) + strlen(kind) + strlen(plain) +
             strlen(target_id) + 32;
  int len;

  msg = malloc(n);
  if (msg == NULL)
    return NULL;
  len = snprintf(msg, n, "galbridge-anchor-1\n%s\n%s\n%s\n%s", target_tenant,
                 kind, plain, target_id);
  lower(msg);
  if (len < 0 || (size_t)len >= n ||
      jwt_hmac_sha256(key->bytes, key->len, (const unsigned char *)msg,
                      (size_t)len, mac) != 0) {
    free(msg);
    return NULL;
  }
  free(msg);
  b64 = jwt_base64url(mac, PROOF_BYTES);
  jwt_cleanse(mac, sizeof(mac));
  if (b64 == NULL)
    return NULL;
  out = concat(PROOF_VERSION, b64, "");
  free(b64);
  return out;
}

char *
anchor_stamp(const struct anchor_key *key, const char *target_tenant,
             const char *kind, const char *plain, const char *target_id)
{
  char *proof, *out;

  if (key == NULL || target_id == NULL)
    return strdup(plain);
  proof = proof_text(key, target_tenant, kind, plain, target_id);
  if (proof == NULL)
    return NULL;
  out = concat(plain, ":", proof);
  free(proof);
  return out;
}

int
anchor_proven(const struct anchor_key *key, const char *target_tenant,
              const char *kind, const char *value, const char *target_id)
{
  const char *proof = NULL;
  char *plain, *want = NULL;
  int proven = 0;

  if (key == NULL || value == NULL || target_id == NULL)
    return 0;
  plain = anchor_parse(value, &proof);
  if (plain == NULL || proof == NULL)
    goto out;
  want = proof_text(key, target_tenant, kind, plain, target_id);
  proven = want != NULL && strlen(want) == strlen(proof) &&
           jwt_memcmp_ct(want, proof, strlen(want)) == 0;
out:
  free(plain);
  free(want);
  return proven;
}
