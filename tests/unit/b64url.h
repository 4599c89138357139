/*
 * base64url decoding for the unit tests, written independently of the
 * jwt module so that the tests do not check the module against itself.
 * Included by test_jwt.c and test_auth.c (after cmocka.h).
 */
#ifndef GALBRIDGE_TEST_B64URL_H
#define GALBRIDGE_TEST_B64URL_H

#include <stdlib.h>

static int
b64url_value(int c)
{
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '-')
    return 62;
  if (c == '_')
    return 63;
  return -1;
}

/* Decode `len` characters of unpadded base64url; NUL-terminates. */
static unsigned char *
b64url_decode(const char *s, size_t len, size_t *outlen)
{
  unsigned char *out = malloc(len * 3 / 4 + 2);
  unsigned long acc = 0;
  int bits = 0;
  size_t n = 0;

  assert_non_null(out);
  assert_int_not_equal(len % 4, 1);
  for (size_t i = 0; i < len; i++) {
    int v = b64url_value((unsigned char)s[i]);
    assert_true(v >= 0);
    acc = (acc << 6) | (unsigned long)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (unsigned char)(acc >> bits);
      acc &= (1UL << bits) - 1;
    }
  }
  assert_int_equal(acc, 0); /* no stray bits: canonical encoding */
  out[n] = '\0';
  *outlen = n;
  return out;
}

#endif
