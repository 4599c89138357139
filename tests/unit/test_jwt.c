/*
 * test_jwt — the jwt module against OpenSSL itself.
 *
 * The group set-up makes an RSA key and a self-signed certificate (plus a
 * second RSA key, an EC key and certificate, and encrypted copies of the
 * key) and writes them as PEM files in a fresh temporary directory. The
 * tests load them through jwt_key_load, build assertions with both
 * algorithms, take the compact JWS apart with a base64url decoder of their
 * own, and check every header field and claim, and the signature with
 * OpenSSL's verifier (PKCS#1 v1.5 for RS256, PSS with a 32-byte salt for
 * PS256). Error cases are a table: file, key file, what the message must
 * say.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "jwt.h"

struct fixture {
  char dir[64];
  EVP_PKEY *key;   /* the certificate's RSA key */
  EVP_PKEY *other; /* an unrelated RSA key */
  X509 *cert;
  unsigned char sha1[20];
  unsigned char sha256[32];
  char key_line[17]; /* first base64 characters of the key's PEM body */
};

static struct fixture fx;

static void
path_in(char *buf, size_t len, const char *name)
{
  int n = snprintf(buf, len, "%s/%s", fx.dir, name);
  assert_true(n > 0 && (size_t)n < len);
}

/* Write `name` in the temp dir from the PEM writers given as flags. */
enum {
  W_CERT = 1,
  W_KEY = 2,
  W_OTHER = 4,
  W_KEY_FIRST = 8,
  W_ENC_PKCS8 = 16,
  W_ENC_LEGACY = 32,
};

static void
write_pem(const char *name, int what)
{
  char path[256];
  FILE *fp;

  path_in(path, sizeof(path), name);
  fp = fopen(path, "w");
  assert_non_null(fp);
  assert_int_equal(chmod(path, 0600), 0);
  if ((what & W_KEY_FIRST) && (what & W_KEY))
    assert_int_equal(
        PEM_write_PrivateKey(fp, fx.key, NULL, NULL, 0, NULL, NULL), 1);
  if (what & W_CERT)
    assert_int_equal(PEM_write_X509(fp, fx.cert), 1);
  if ((what & W_KEY) && !(what & W_KEY_FIRST))
    assert_int_equal(
        PEM_write_PrivateKey(fp, fx.key, NULL, NULL, 0, NULL, NULL), 1);
  if (what & W_OTHER)
    assert_int_equal(
        PEM_write_PrivateKey(fp, fx.other, NULL, NULL, 0, NULL, NULL), 1);
  if (what & W_ENC_PKCS8)
    assert_int_equal(PEM_write_PKCS8PrivateKey(fp, fx.key, EVP_aes_256_cbc(),
                                               NULL, 0, NULL, "sesame"),
                     1);
  if (what & W_ENC_LEGACY) {
    unsigned char pass[] = "sesame";
    BIO *b = BIO_new_fp(fp, BIO_NOCLOSE);
    assert_non_null(b);
    assert_int_equal(PEM_write_bio_PrivateKey_traditional(
                         b, fx.key, EVP_aes_256_cbc(), pass,
                         (int)sizeof(pass) - 1, NULL, NULL),
                     1);
    BIO_free(b);
  }
  assert_int_equal(fclose(fp), 0);
}

static void
write_text(const char *name, const char *text)
{
  char path[256];
  FILE *fp;

  path_in(path, sizeof(path), name);
  fp = fopen(path, "w");
  assert_non_null(fp);
  assert_int_equal(fputs(text, fp) >= 0, 1);
  assert_int_equal(fclose(fp), 0);
}

static X509 *
self_signed(EVP_PKEY *key, const char *cn)
{
  X509 *x = X509_new();
  X509_NAME *name;

  assert_non_null(x);
  assert_int_equal(X509_set_version(x, 2), 1);
  assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 4242), 1);
  assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
  assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365));
  name = X509_get_subject_name(x);
  assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                              (const unsigned char *)cn, -1,
                                              -1, 0),
                   1);
  assert_int_equal(X509_set_issuer_name(x, name), 1);
  assert_int_equal(X509_set_pubkey(x, key), 1);
  assert_true(X509_sign(x, key, EVP_sha256()) > 0);
  return x;
}

static int
setup(void **state)
{
  unsigned char *der = NULL;
  int der_len;
  unsigned int n = 0;
  BIO *mem;
  char *pem = NULL;
  long pem_len;
  const char *body;
  EVP_PKEY *ec;
  X509 *ec_cert;
  FILE *fp;
  char path[256];

  (void)state;
  memset(&fx, 0, sizeof(fx));
  snprintf(fx.dir, sizeof(fx.dir), "/tmp/test_jwt.XXXXXX");
  assert_non_null(mkdtemp(fx.dir));
  fx.key = EVP_RSA_gen(2048);
  fx.other = EVP_RSA_gen(2048);
  assert_non_null(fx.key);
  assert_non_null(fx.other);
  fx.cert = self_signed(fx.key, "galbridge test");

  der_len = i2d_X509(fx.cert, &der);
  assert_true(der_len > 0);
  assert_int_equal(
      EVP_Digest(der, (size_t)der_len, fx.sha1, &n, EVP_sha1(), NULL), 1);
  assert_int_equal(n, 20);
  assert_int_equal(
      EVP_Digest(der, (size_t)der_len, fx.sha256, &n, EVP_sha256(), NULL), 1);
  assert_int_equal(n, 32);
  OPENSSL_free(der);

  /* Remember a piece of the key's PEM body, to prove that no error
   * message ever carries it. */
  mem = BIO_new(BIO_s_mem());
  assert_non_null(mem);
  assert_int_equal(
      PEM_write_bio_PrivateKey(mem, fx.key, NULL, NULL, 0, NULL, NULL), 1);
  pem_len = BIO_get_mem_data(mem, &pem);
  assert_true(pem_len > 100);
  body = strchr(pem, '\n'); /* end of the BEGIN line */
  assert_non_null(body);
  body = strchr(body + 1, '\n'); /* end of the first body line */
  assert_non_null(body);
  memcpy(fx.key_line, body + 1, 16);
  BIO_free(mem);

  write_pem("both.pem", W_CERT | W_KEY);
  write_pem("key-first.pem", W_CERT | W_KEY | W_KEY_FIRST);
  write_pem("cert.pem", W_CERT);
  write_pem("key.pem", W_KEY);
  write_pem("other-key.pem", W_OTHER);
  write_pem("both-mismatch.pem", W_CERT | W_OTHER);
  write_pem("enc-pkcs8.pem", W_CERT | W_ENC_PKCS8);
  write_pem("enc-pkcs8-key.pem", W_ENC_PKCS8);
  write_pem("enc-legacy-key.pem", W_ENC_LEGACY);
  write_text("garbage.pem", "this is not a certificate\n\x01\x02\n");
  write_text("empty.pem", "");
  write_text("bad-base64.pem", "-----BEGIN CERTIFICATE-----\n"
                               "!!!!not base64!!!!\n"
                               "-----END CERTIFICATE-----\n");

  /* An EC certificate with its key: valid PEM, but not RSA. */
  ec = EVP_EC_gen("P-256");
  assert_non_null(ec);
  ec_cert = self_signed(ec, "galbridge ec");
  path_in(path, sizeof(path), "ec.pem");
  fp = fopen(path, "w");
  assert_non_null(fp);
  assert_int_equal(PEM_write_X509(fp, ec_cert), 1);
  assert_int_equal(PEM_write_PrivateKey(fp, ec, NULL, NULL, 0, NULL, NULL), 1);
  assert_int_equal(fclose(fp), 0);
  X509_free(ec_cert);
  EVP_PKEY_free(ec);
  return 0;
}

static int
teardown(void **state)
{
  static const char *const names[] = {
      "both.pem",      "key-first.pem",     "cert.pem",
      "key.pem",       "other-key.pem",     "both-mismatch.pem",
      "enc-pkcs8.pem", "enc-pkcs8-key.pem", "enc-legacy-key.pem",
      "garbage.pem",   "empty.pem",         "bad-base64.pem",
      "ec.pem",
  };
  char path[256];

  (void)state;
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    path_in(path, sizeof(path), names[i]);
    unlink(path);
  }
  rmdir(fx.dir);
  X509_free(fx.cert);
  EVP_PKEY_free(fx.key);
  EVP_PKEY_free(fx.other);
  return 0;
}

#include "b64url.h"

static void
test_base64url_vectors(void **state)
{
  /* RFC 4648 section 10, then bytes that hit '+' and '/'. */
  static const struct {
    const char *in;
    size_t len;
    const char *out;
  } cases[] = {
      {"", 0, ""},
      {"f", 1, "Zg"},
      {"fo", 2, "Zm8"},
      {"foo", 3, "Zm9v"},
      {"foob", 4, "Zm9vYg"},
      {"fooba", 5, "Zm9vYmE"},
      {"foobar", 6, "Zm9vYmFy"},
      {"\xfb\xff", 2, "-_8"},
      {"\xfb\xef\xbe", 3, "----"},
      {"\xff\xff\xff", 3, "____"},
      {"\x00\x00", 2, "AAA"},
  };

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char *s = jwt_base64url((const unsigned char *)cases[i].in, cases[i].len);
    assert_non_null(s);
    assert_string_equal(s, cases[i].out);
    free(s);
  }
}

/* --- a parsed assertion --- */

struct parsed {
  json_t *header;
  json_t *claims;
  unsigned char *sig;
  size_t sig_len;
  char *signing_input;
};

static void
parsed_free(struct parsed *p)
{
  json_decref(p->header);
  json_decref(p->claims);
  free(p->sig);
  free(p->signing_input);
}

static json_t *
decode_json(const char *s, size_t len)
{
  size_t n;
  unsigned char *raw = b64url_decode(s, len, &n);
  json_error_t jerr;
  json_t *j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, &jerr);

  /* Compact: no whitespace anywhere outside strings in our own output. */
  assert_null(memchr(raw, '\n', n));
  assert_null(strstr((const char *)raw, "\": "));
  assert_null(strstr((const char *)raw, ", \""));
  free(raw);
  assert_non_null(j);
  assert_true(json_is_object(j));
  return j;
}

static void
parse(const char *jwt, struct parsed *p)
{
  const char *d1 = strchr(jwt, '.');
  const char *d2;

  memset(p, 0, sizeof(*p));
  assert_non_null(d1);
  d2 = strchr(d1 + 1, '.');
  assert_non_null(d2);
  assert_null(strchr(d2 + 1, '.'));
  assert_null(strpbrk(jwt, "=+/ \n"));
  p->header = decode_json(jwt, (size_t)(d1 - jwt));
  p->claims = decode_json(d1 + 1, (size_t)(d2 - d1 - 1));
  p->sig = b64url_decode(d2 + 1, strlen(d2 + 1), &p->sig_len);
  p->signing_input = strndup(jwt, (size_t)(d2 - jwt));
  assert_non_null(p->signing_input);
}

static int
verify(const struct parsed *p, enum jwt_alg alg, const char *input)
{
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  EVP_PKEY_CTX *pctx = NULL;
  int ok;

  assert_non_null(md);
  assert_int_equal(EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL,
                                        X509_get0_pubkey(fx.cert)),
                   1);
  if (alg == JWT_ALG_PS256) {
    assert_true(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0);
    assert_true(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) > 0);
    assert_true(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) > 0);
  } else {
    assert_true(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0);
  }
  ok = EVP_DigestVerify(md, p->sig, p->sig_len, (const unsigned char *)input,
                        strlen(input));
  EVP_MD_CTX_free(md);
  return ok == 1;
}

static void
assert_digest(json_t *header, const char *field, const unsigned char *want,
              size_t want_len)
{
  const char *v = json_string_value(json_object_get(header, field));
  unsigned char *raw;
  size_t n;

  assert_non_null(v);
  raw = b64url_decode(v, strlen(v), &n);
  assert_int_equal(n, want_len);
  assert_memory_equal(raw, want, want_len);
  free(raw);
}

static void
assert_uuid_v4(const char *s)
{
  assert_int_equal(strlen(s), 36);
  for (int i = 0; i < 36; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23)
      assert_int_equal(s[i], '-');
    else
      assert_non_null(strchr("0123456789abcdef", s[i]));
  }
  assert_int_equal(s[14], '4');
  assert_non_null(strchr("89ab", s[19]));
}

static const char client_id[] = "97e0a5b7-d745-40b6-94fe-5f77d35c6e05";
static const char aud[] = "https://login.microsoftonline.com/"
                          "4a6f1a2b-0c1d-4e5f-8a9b-0c1d2e3f4a5b"
                          "/oauth2/v2.0/token";

static void
check_assertion(const char *cert, const char *key, enum jwt_alg alg)
{
  char cert_path[256], key_path[256], err[512] = "";
  struct jwt_key *k = NULL;
  char *a = NULL, *b = NULL;
  struct parsed p, q;
  time_t before = time(NULL);
  json_int_t nbf, exp, iat;
  char *tampered;

  path_in(cert_path, sizeof(cert_path), cert);
  if (key != NULL)
    path_in(key_path, sizeof(key_path), key);
  assert_int_equal(jwt_key_load(cert_path, key != NULL ? key_path : NULL, &k,
                                err, sizeof(err)),
                   0);
  assert_non_null(k);

  assert_int_equal(jwt_client_assertion(k, alg, client_id, aud, before, &a,
                                        err, sizeof(err)),
                   0);
  assert_int_equal(jwt_client_assertion(k, alg, client_id, aud, before, &b,
                                        err, sizeof(err)),
                   0);
  parse(a, &p);
  parse(b, &q);

  /* Header. */
  assert_int_equal(json_object_size(p.header), 3);
  assert_string_equal(json_string_value(json_object_get(p.header, "typ")),
                      "JWT");
  if (alg == JWT_ALG_PS256) {
    assert_string_equal(json_string_value(json_object_get(p.header, "alg")),
                        "PS256");
    assert_digest(p.header, "x5t#S256", fx.sha256, sizeof(fx.sha256));
    assert_null(json_object_get(p.header, "x5t"));
  } else {
    assert_string_equal(json_string_value(json_object_get(p.header, "alg")),
                        "RS256");
    assert_digest(p.header, "x5t", fx.sha1, sizeof(fx.sha1));
    assert_null(json_object_get(p.header, "x5t#S256"));
  }

  /* Claims. */
  assert_string_equal(json_string_value(json_object_get(p.claims, "aud")),
                      aud);
  assert_string_equal(json_string_value(json_object_get(p.claims, "iss")),
                      client_id);
  assert_string_equal(json_string_value(json_object_get(p.claims, "sub")),
                      client_id);
  assert_uuid_v4(json_string_value(json_object_get(p.claims, "jti")));
  assert_uuid_v4(json_string_value(json_object_get(q.claims, "jti")));
  assert_string_not_equal(json_string_value(json_object_get(p.claims, "jti")),
                          json_string_value(json_object_get(q.claims, "jti")));
  assert_true(json_is_integer(json_object_get(p.claims, "nbf")));
  assert_true(json_is_integer(json_object_get(p.claims, "exp")));
  assert_true(json_is_integer(json_object_get(p.claims, "iat")));
  nbf = json_integer_value(json_object_get(p.claims, "nbf"));
  exp = json_integer_value(json_object_get(p.claims, "exp"));
  iat = json_integer_value(json_object_get(p.claims, "iat"));
  assert_true(nbf <= (json_int_t)time(NULL));
  assert_true(nbf >= (json_int_t)before);
  assert_true(iat == nbf);
  assert_in_range(exp - nbf, 300, 600);

  /* Signature: valid for the key's certificate, and only for this input
   * and this padding. */
  assert_int_equal(p.sig_len, (size_t)EVP_PKEY_get_size(fx.key));
  assert_true(verify(&p, alg, p.signing_input));
  assert_true(verify(&q, alg, q.signing_input));
  tampered = strdup(p.signing_input);
  assert_non_null(tampered);
  tampered[strlen(tampered) - 1] ^= 1;
  assert_false(verify(&p, alg, tampered));
  free(tampered);
  assert_false(verify(&p, alg == JWT_ALG_PS256 ? JWT_ALG_RS256 : JWT_ALG_PS256,
                      p.signing_input));

  parsed_free(&p);
  parsed_free(&q);
  free(a);
  free(b);
  jwt_key_free(k);
}

static void
test_rs256_combined(void **state)
{
  (void)state;
  check_assertion("both.pem", NULL, JWT_ALG_RS256);
}

static void
test_ps256_combined(void **state)
{
  (void)state;
  check_assertion("both.pem", NULL, JWT_ALG_PS256);
}

static void
test_rs256_separate_key(void **state)
{
  (void)state;
  check_assertion("cert.pem", "key.pem", JWT_ALG_RS256);
}

static void
test_ps256_separate_key(void **state)
{
  (void)state;
  check_assertion("cert.pem", "key.pem", JWT_ALG_PS256);
}

static void
test_key_before_cert(void **state)
{
  (void)state;
  check_assertion("key-first.pem", NULL, JWT_ALG_RS256);
}

static void
test_assertion_bad_arguments(void **state)
{
  char path[256], err[256] = "";
  struct jwt_key *k = NULL;
  char *out = (char *)"sentinel";

  (void)state;
  path_in(path, sizeof(path), "both.pem");
  assert_int_equal(jwt_key_load(path, NULL, &k, err, sizeof(err)), 0);
  assert_int_equal(jwt_client_assertion(k, JWT_ALG_RS256, "", aud, time(NULL),
                                        &out, err, sizeof(err)),
                   -1);
  assert_null(out);
  assert_int_equal(jwt_client_assertion(k, JWT_ALG_RS256, client_id, NULL,
                                        time(NULL), &out, err, sizeof(err)),
                   -1);
  assert_null(out);
  assert_int_equal(jwt_client_assertion(NULL, JWT_ALG_RS256, client_id, aud,
                                        time(NULL), &out, err, sizeof(err)),
                   -1);
  assert_null(out);
  assert_int_equal(jwt_client_assertion(k, (enum jwt_alg)7, client_id, aud,
                                        time(NULL), &out, err, sizeof(err)),
                   -1);
  assert_null(out);
  jwt_key_free(k);
  jwt_key_free(NULL);
}

/* --- loading errors --- */

static void
test_load_errors(void **state)
{
  static const struct {
    const char *cert;
    const char *key; /* NULL: the key is in cert */
    const char *file_named;
    const char *says;
  } cases[] = {
      {"missing.pem", NULL, "missing.pem", "not found"},
      {"cert.pem", "missing-key.pem", "missing-key.pem", "not found"},
      {"garbage.pem", NULL, "garbage.pem", "not a PEM file"},
      {"empty.pem", NULL, "empty.pem", "not a PEM file"},
      {"cert.pem", "garbage.pem", "garbage.pem", "not a PEM file"},
      {"key.pem", NULL, "key.pem", "no certificate"},
      {"bad-base64.pem", NULL, "bad-base64.pem", "cannot parse"},
      {"cert.pem", NULL, "cert.pem", "no private key"},
      {"cert.pem", "cert.pem", "cert.pem", "no private key"},
      {"cert.pem", "other-key.pem", "other-key.pem", "does not match"},
      {"both-mismatch.pem", NULL, "both-mismatch.pem", "does not match"},
      {"enc-pkcs8.pem", NULL, "enc-pkcs8.pem", "encrypted"},
      {"cert.pem", "enc-pkcs8-key.pem", "enc-pkcs8-key.pem", "encrypted"},
      {"cert.pem", "enc-legacy-key.pem", "enc-legacy-key.pem", "encrypted"},
      {"ec.pem", NULL, "ec.pem", "not an RSA key"},
  };
  char cert[256], key[256], err[512];

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct jwt_key *k = (struct jwt_key *)&fx; /* must be reset to NULL */

    path_in(cert, sizeof(cert), cases[i].cert);
    if (cases[i].key != NULL)
      path_in(key, sizeof(key), cases[i].key);
    err[0] = '\0';
    assert_int_equal(
        jwt_key_load(cert, cases[i].key ? key : NULL, &k, err, sizeof(err)),
        -1);
    assert_null(k);
    if (strstr(err, cases[i].file_named) == NULL ||
        strstr(err, cases[i].says) == NULL)
      fail_msg("case %zu: got \"%s\", want the file %s and \"%s\"", i, err,
               cases[i].file_named, cases[i].says);
    assert_null(strstr(err, fx.key_line));
    assert_null(strstr(err, "KEY-----"));
  }
}

static void
test_load_no_file_given(void **state)
{
  char err[128];
  struct jwt_key *k = NULL;

  (void)state;
  assert_int_equal(jwt_key_load(NULL, NULL, &k, err, sizeof(err)), -1);
  assert_null(k);
  assert_int_equal(jwt_key_load("", NULL, &k, err, sizeof(err)), -1);
  assert_null(k);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_base64url_vectors),
      cmocka_unit_test(test_rs256_combined),
      cmocka_unit_test(test_ps256_combined),
      cmocka_unit_test(test_rs256_separate_key),
      cmocka_unit_test(test_ps256_separate_key),
      cmocka_unit_test(test_key_before_cert),
      cmocka_unit_test(test_assertion_bad_arguments),
      cmocka_unit_test(test_load_errors),
      cmocka_unit_test(test_load_no_file_given),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
