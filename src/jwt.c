/*
 * jwt — client assertions for the certificate credential (see
 * include/jwt.h and MICROSOFT.md "Tokens").
 *
 * A key is loaded once: the PEM file(s) are read into memory (bounded),
 * scanned for their "-----BEGIN ...-----" labels so that an error can say
 * what is wrong (not PEM, no certificate, no key, encrypted key), then
 * parsed by OpenSSL with a passphrase callback that refuses, so nothing
 * ever prompts on a terminal. The key must be RSA and match the
 * certificate. Only the EVP_PKEY and the two thumbprints (already in
 * base64url) are kept; the file buffers are cleansed before they are
 * freed.
 *
 * Invariants: nothing here prints or returns key material; every error
 * message names the file it is about; OpenSSL's error queue is left empty
 * after a failure so that it cannot leak into another module's report.
 * Only this file includes OpenSSL (OpenSSL 3 EVP APIs, no RSA_*).
 */
#include "jwt.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

/* A certificate chain plus a key is a few KiB; 1 MiB is generous. */
#define PEM_FILE_MAX (1024 * 1024)
/* Assertion lifetime: Microsoft accepts 5-10 minutes. */
#define ASSERTION_LIFETIME 600

struct jwt_key {
  EVP_PKEY *pkey;
  char x5t[32];      /* base64url(SHA-1(DER)): 27 characters */
  char x5t_s256[48]; /* base64url(SHA-256(DER)): 43 characters */
};

struct pem_file {
  const char *path;
  unsigned char *data; /* NUL-terminated, cleansed on free */
  size_t len;
};

static void
pem_file_release(struct pem_file *f)
{
  if (f->data != NULL) {
    OPENSSL_cleanse(f->data, f->len);
    free(f->data);
  }
  f->data = NULL;
  f->len = 0;
}

/* Read the whole file (at most PEM_FILE_MAX bytes) into f->data. */
static int
pem_file_read(struct pem_file *f, const char *path, char *err, size_t errlen)
{
  int result = -1;
  int fd = -1;
  struct stat st;
  size_t cap = 0, len = 0;
  unsigned char *buf = NULL;

  f->path = path;
  f->data = NULL;
  f->len = 0;
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    if (errno == ENOENT)
      snprintf(err, errlen, "%s: not found", path);
    else
      snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    goto out;
  }
  if (fstat(fd, &st) != 0) {
    snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
    goto out;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: not a regular file", path);
    goto out;
  }
  if (st.st_size > PEM_FILE_MAX) {
    snprintf(err, errlen, "%s: too large for a PEM file (over %d bytes)", path,
             PEM_FILE_MAX);
    goto out;
  }
  cap = (size_t)st.st_size + 1;
  buf = malloc(cap);
  if (buf == NULL) {
    snprintf(err, errlen, "%s: out of memory", path);
    goto out;
  }
  for (;;) {
    ssize_t n = read(fd, buf + len, cap - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
      goto out;
    }
    if (n == 0)
      break;
    len += (size_t)n;
    if (len == cap) {
      /* The file grew after fstat; never read past the cap. */
      snprintf(err, errlen, "%s: changed while being read", path);
      goto out;
    }
  }
  buf[len] = '\0';
  f->data = buf;
  f->len = len;
  buf = NULL;
  result = 0;
out:
  if (buf != NULL) {
    OPENSSL_cleanse(buf, cap);
    free(buf);
  }
  if (fd >= 0)
    close(fd);
  return result;
}

/* What the PEM labels in a buffer say, found without decoding anything. */
struct pem_scan {
  int blocks;
  int certificate;
  int private_key; /* any "... PRIVATE KEY" label */
  int encrypted;   /* PKCS#8 ENCRYPTED or a legacy Proc-Type header */
};

static void
pem_scan(const unsigned char *data, size_t len, struct pem_scan *scan)
{
  static const char begin[] = "-----BEGIN ";
  const char *p = (const char *)data;
  const char *end = p + len;

  memset(scan, 0, sizeof(*scan));
  while (p < end) {
    const char *hit = memmem(p, (size_t)(end - p), begin, sizeof(begin) - 1);
    const char *label, *close;
    size_t n;

    if (hit == NULL)
      break;
    label = hit + sizeof(begin) - 1;
    close = memmem(label, (size_t)(end - label), "-----", 5);
    if (close == NULL)
      break;
    n = (size_t)(close - label);
    scan->blocks++;
    if ((n == 11 && memcmp(label, "CERTIFICATE", 11) == 0) ||
        (n == 16 && memcmp(label, "X509 CERTIFICATE", 16) == 0) ||
        (n == 19 && memcmp(label, "TRUSTED CERTIFICATE", 19) == 0))
      scan->certificate = 1;
    if (n >= 11 && memcmp(label + n - 11, "PRIVATE KEY", 11) == 0) {
      scan->private_key = 1;
      if (n == 21 && memcmp(label, "ENCRYPTED PRIVATE KEY", 21) == 0)
        scan->encrypted = 1;
    }
    p = close + 5;
  }
  /* Legacy "RSA PRIVATE KEY" blocks announce encryption in a header. */
  if (memmem(data, len, "Proc-Type: 4,ENCRYPTED", 22) != NULL)
    scan->encrypted = 1;
}

/* Passphrase callback: never prompt; remember that one was wanted. */
static int
refuse_passphrase(char *buf, int size, int rwflag, void *ctx)
{
  (void)buf;
  (void)size;
  (void)rwflag;
  *(int *)ctx = 1;
  return -1;
}

/* OpenSSL's reason for the last failure (a fixed string, never data). */
static const char *
ssl_reason(void)
{
  unsigned long e = ERR_peek_last_error();
  const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
  return r != NULL ? r : "unknown error";
}

static int
thumbprint(const unsigned char *der, size_t der_len, const EVP_MD *md,
           char *out, size_t outlen)
{
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  char *b64;
  int result = -1;

  if (EVP_Digest(der, der_len, digest, &dlen, md, NULL) != 1)
    return -1;
  b64 = jwt_base64url(digest, dlen);
  if (b64 != NULL && strlen(b64) < outlen) {
    memcpy(out, b64, strlen(b64) + 1);
    result = 0;
  }
  free(b64);
  return result;
}

int
jwt_key_load(const char *cert_file, const char *key_file, struct jwt_key **out,
             char *err, size_t errlen)
{
  int result = -1;
  struct pem_file cert_pem = {0}, key_pem = {0};
  const struct pem_file *kp;
  struct pem_scan scan;
  BIO *bio = NULL;
  X509 *cert = NULL;
  EVP_PKEY *pkey = NULL;
  unsigned char *der = NULL;
  int der_len;
  int wanted_passphrase = 0;
  struct jwt_key *key = NULL;

  *out = NULL;
  if (cert_file == NULL || *cert_file == '\0') {
    snprintf(err, errlen, "no certificate file given");
    return -1;
  }
  if (key_file != NULL && *key_file == '\0')
    key_file = NULL;

  /* The certificate. */
  if (pem_file_read(&cert_pem, cert_file, err, errlen) != 0)
    goto out;
  pem_scan(cert_pem.data, cert_pem.len, &scan);
  if (scan.blocks == 0) {
    snprintf(err, errlen, "%s: not a PEM file (no -----BEGIN line)",
             cert_file);
    goto out;
  }
  if (!scan.certificate) {
    snprintf(err, errlen, "%s: no certificate (no BEGIN CERTIFICATE block)",
             cert_file);
    goto out;
  }
  bio = BIO_new_mem_buf(cert_pem.data, (int)cert_pem.len);
  if (bio == NULL) {
    snprintf(err, errlen, "%s: out of memory", cert_file);
    goto out;
  }
  cert = PEM_read_bio_X509(bio, NULL, refuse_passphrase, &wanted_passphrase);
  BIO_free(bio);
  bio = NULL;
  if (cert == NULL) {
    snprintf(err, errlen, "%s: cannot parse the certificate: %s", cert_file,
             ssl_reason());
    goto out;
  }

  /* The private key, from key_file or the certificate file itself. */
  if (key_file != NULL) {
    if (pem_file_read(&key_pem, key_file, err, errlen) != 0)
      goto out;
    kp = &key_pem;
  } else {
    kp = &cert_pem;
  }
  pem_scan(kp->data, kp->len, &scan);
  if (scan.blocks == 0) {
    snprintf(err, errlen, "%s: not a PEM file (no -----BEGIN line)", kp->path);
    goto out;
  }
  if (scan.encrypted) {
    snprintf(err, errlen,
             "%s: the private key is encrypted; encrypted keys are not "
             "supported (store it unencrypted, mode 0600)",
             kp->path);
    goto out;
  }
  if (!scan.private_key) {
    if (key_file == NULL)
      snprintf(err, errlen,
               "%s: no private key (append it to the file or set key_file)",
               kp->path);
    else
      snprintf(err, errlen, "%s: no private key (no BEGIN PRIVATE KEY block)",
               kp->path);
    goto out;
  }
  bio = BIO_new_mem_buf(kp->data, (int)kp->len);
  if (bio == NULL) {
    snprintf(err, errlen, "%s: out of memory", kp->path);
    goto out;
  }
  pkey = PEM_read_bio_PrivateKey(bio, NULL, refuse_passphrase,
                                 &wanted_passphrase);
  if (pkey == NULL) {
    if (wanted_passphrase)
      snprintf(err, errlen,
               "%s: the private key is encrypted; encrypted keys are not "
               "supported",
               kp->path);
    else
      snprintf(err, errlen, "%s: cannot parse the private key: %s", kp->path,
               ssl_reason());
    goto out;
  }
  if (!EVP_PKEY_is_a(pkey, "RSA")) {
    snprintf(err, errlen, "%s: the private key is not an RSA key (%s)",
             kp->path, EVP_PKEY_get0_type_name(pkey));
    goto out;
  }
  if (X509_check_private_key(cert, pkey) != 1) {
    snprintf(err, errlen,
             "%s: the private key does not match the certificate in %s",
             kp->path, cert_file);
    goto out;
  }

  der_len = i2d_X509(cert, &der);
  if (der_len <= 0) {
    snprintf(err, errlen, "%s: cannot encode the certificate: %s", cert_file,
             ssl_reason());
    goto out;
  }
  key = calloc(1, sizeof(*key));
  if (key == NULL) {
    snprintf(err, errlen, "%s: out of memory", cert_file);
    goto out;
  }
  if (thumbprint(der, (size_t)der_len, EVP_sha1(), key->x5t,
                 sizeof(key->x5t)) != 0 ||
      thumbprint(der, (size_t)der_len, EVP_sha256(), key->x5t_s256,
                 sizeof(key->x5t_s256)) != 0) {
    snprintf(err, errlen, "%s: cannot compute the certificate thumbprint",
             cert_file);
    goto out;
  }
  key->pkey = pkey;
  pkey = NULL;
  *out = key;
  key = NULL;
  result = 0;
out:
  free(key);
  OPENSSL_free(der);
  EVP_PKEY_free(pkey);
  X509_free(cert);
  BIO_free(bio);
  pem_file_release(&key_pem);
  pem_file_release(&cert_pem);
  if (result != 0)
    ERR_clear_error();
  return result;
}

void
jwt_key_free(struct jwt_key *key)
{
  if (key == NULL)
    return;
  EVP_PKEY_free(key->pkey); /* OpenSSL cleanses the key's bignums */
  free(key);
}

char *
jwt_base64url(const unsigned char *data, size_t len)
{
  size_t outlen, n = 0;
  char *out;
  int enc;

  if (len > (size_t)INT_MAX / 4 * 3 - 3)
    return NULL;
  outlen = 4 * ((len + 2) / 3) + 1;
  out = malloc(outlen);
  if (out == NULL)
    return NULL;
  enc = len > 0 ? EVP_EncodeBlock((unsigned char *)out, data, (int)len) : 0;
  if (enc < 0) {
    free(out);
    return NULL;
  }
  for (int i = 0; i < enc; i++) {
    char c = out[i];
    if (c == '=')
      break;
    if (c == '+')
      c = '-';
    else if (c == '/')
      c = '_';
    out[n++] = c;
  }
  out[n] = '\0';
  return out;
}

/* Compact JSON of `obj` (stolen) in base64url, or NULL. */
static char *
json_segment(json_t *obj)
{
  char *text, *b64 = NULL;

  if (obj == NULL)
    return NULL;
  text = json_dumps(obj, JSON_COMPACT);
  json_decref(obj);
  if (text != NULL)
    b64 = jwt_base64url((const unsigned char *)text, strlen(text));
  free(text);
  return b64;
}

/* A random (version 4) UUID, lower-case, 36 characters + NUL. */
static int
uuid_v4(char out[37])
{
  unsigned char b[16];
  int n;

  if (RAND_bytes(b, sizeof(b)) != 1)
    return -1;
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
  n = snprintf(out, 37,
               "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
               "%02x%02x%02x%02x%02x%02x",
               b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
               b[10], b[11], b[12], b[13], b[14], b[15]);
  return n == 36 ? 0 : -1;
}

/* Sign `input` with SHA-256 and the padding `alg` names. */
static int
sign(EVP_PKEY *pkey, enum jwt_alg alg, const char *input, unsigned char **sig,
     size_t *siglen)
{
  int result = -1;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  EVP_PKEY_CTX *pctx = NULL;
  unsigned char *buf = NULL;
  size_t len = 0;

  *sig = NULL;
  if (md == NULL)
    goto out;
  if (EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, pkey) != 1)
    goto out;
  if (alg == JWT_ALG_PS256) {
    /* RFC 7518 3.5: MGF1 with SHA-256, salt as long as the digest. */
    if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) <= 0 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) <= 0)
      goto out;
  } else {
    if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0)
      goto out;
  }
  if (EVP_DigestSign(md, NULL, &len, (const unsigned char *)input,
                     strlen(input)) != 1)
    goto out;
  buf = malloc(len);
  if (buf == NULL)
    goto out;
  if (EVP_DigestSign(md, buf, &len, (const unsigned char *)input,
                     strlen(input)) != 1)
    goto out;
  *sig = buf;
  *siglen = len;
  buf = NULL;
  result = 0;
out:
  if (buf != NULL)
    OPENSSL_cleanse(buf, len);
  free(buf);
  EVP_MD_CTX_free(md); /* frees pctx too */
  return result;
}

int
jwt_client_assertion(const struct jwt_key *key, enum jwt_alg alg,
                     const char *client_id, const char *aud, time_t now,
                     char **out, char *err, size_t errlen)
{
  int result = -1;
  char jti[37];
  char *head = NULL, *body = NULL, *input = NULL, *sigb64 = NULL;
  char *jwt = NULL;
  unsigned char *sig = NULL;
  size_t siglen = 0, input_len, total;
  json_t *h, *c;

  *out = NULL;
  if (key == NULL || key->pkey == NULL || client_id == NULL ||
      *client_id == '\0' || aud == NULL || *aud == '\0' || now <= 0 ||
      (alg != JWT_ALG_RS256 && alg != JWT_ALG_PS256)) {
    snprintf(err, errlen, "client assertion: invalid arguments");
    return -1;
  }
  if (uuid_v4(jti) != 0) {
    snprintf(err, errlen, "client assertion: no random bytes for jti");
    goto out;
  }
  /* jansson keeps insertion order, so the header reads alg, typ, x5t. */
  if (alg == JWT_ALG_PS256)
    h = json_pack("{s:s, s:s, s:s}", "alg", "PS256", "typ", "JWT", "x5t#S256",
                  key->x5t_s256);
  else
    h = json_pack("{s:s, s:s, s:s}", "alg", "RS256", "typ", "JWT", "x5t",
                  key->x5t);
  c = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "aud", aud, "iss",
                client_id, "sub", client_id, "jti", jti, "nbf",
                (json_int_t)now, "iat", (json_int_t)now, "exp",
                (json_int_t)now + ASSERTION_LIFETIME);
  head = json_segment(h);
  body = json_segment(c);
  if (head == NULL || body == NULL) {
    snprintf(err, errlen, "client assertion: cannot encode JSON");
    goto out;
  }
  input_len = strlen(head) + 1 + strlen(body);
  input = malloc(input_len + 1);
  if (input == NULL) {
    snprintf(err, errlen, "client assertion: out of memory");
    goto out;
  }
  snprintf(input, input_len + 1, "%s.%s", head, body);
  if (sign(key->pkey, alg, input, &sig, &siglen) != 0) {
    snprintf(err, errlen, "client assertion: signing failed: %s",
             ssl_reason());
    goto out;
  }
  sigb64 = jwt_base64url(sig, siglen);
  if (sigb64 == NULL) {
    snprintf(err, errlen, "client assertion: out of memory");
    goto out;
  }
  total = input_len + 1 + strlen(sigb64) + 1;
  jwt = malloc(total);
  if (jwt == NULL) {
    snprintf(err, errlen, "client assertion: out of memory");
    goto out;
  }
  snprintf(jwt, total, "%s.%s", input, sigb64);
  *out = jwt;
  result = 0;
out:
  /* The signing input and the signature make up the assertion, a bearer
   * credential for its lifetime: wipe them like the caller wipes *out. */
  if (input != NULL)
    OPENSSL_cleanse(input, strlen(input));
  if (sig != NULL)
    OPENSSL_cleanse(sig, siglen);
  if (sigb64 != NULL)
    OPENSSL_cleanse(sigb64, strlen(sigb64));
  free(head);
  free(body);
  free(input);
  free(sig);
  free(sigb64);
  if (result != 0)
    ERR_clear_error();
  return result;
}

int
jwt_hmac_sha256(const unsigned char *key, size_t keylen,
                const unsigned char *msg, size_t msglen, unsigned char out[32])
{
  unsigned int len = 0;

  if (HMAC(EVP_sha256(), key, (int)keylen, msg, msglen, out, &len) == NULL ||
      len != 32) {
    ERR_clear_error();
    return -1;
  }
  return 0;
}

int
jwt_memcmp_ct(const void *a, const void *b, size_t n)
{
  return CRYPTO_memcmp(a, b, n);
}

void
jwt_cleanse(void *p, size_t n)
{
  OPENSSL_cleanse(p, n);
}
