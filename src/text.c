/*
 * text — see include/text.h.
 *
 * Before this file, four modules each carried a UTF-8 decoder, two an
 * edit distance and two a loopback test; a fix to one did not reach the
 * others. They all call these now.
 */
#include "text.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DISTANCE_MAX_LEN 64

size_t
text_utf8_seq(const unsigned char *s, size_t n)
{
  size_t len;
  uint32_t cp;

  if (n == 0)
    return 0;
  if (s[0] < 0x80)
    return 1;
  if (s[0] >= 0xc2 && s[0] <= 0xdf) {
    len = 2;
    cp = s[0] & 0x1f;
  } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
    len = 3;
    cp = s[0] & 0x0f;
  } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
    len = 4;
    cp = s[0] & 0x07;
  } else {
    return 0; /* a continuation byte, 0xc0/0xc1 (overlong) or past 0xf4 */
  }
  if (len > n)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
      (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
    return 0;
  return len;
}

size_t
text_utf8_valid_prefix(const char *s, size_t n)
{
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;

  while (i < n) {
    size_t len = text_utf8_seq(u + i, n - i);
    if (len == 0)
      break;
    i += len;
  }
  return i;
}

int
text_utf8_valid(const char *s, size_t n)
{
  return text_utf8_valid_prefix(s, n) == n;
}

uint32_t
text_utf8_decode(const unsigned char *s, size_t n, size_t *len)
{
  static const unsigned char mask[] = {0, 0x7f, 0x1f, 0x0f, 0x07};
  size_t l = text_utf8_seq(s, n);
  uint32_t cp;

  if (l <= 1) {
    *len = 1;
    return s[0];
  }
  cp = s[0] & mask[l];
  for (size_t i = 1; i < l; i++)
    cp = (cp << 6) | (s[i] & 0x3f);
  *len = l;
  return cp;
}

static int
lower(unsigned char c)
{
  return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

int
text_ci_equal(const char *a, size_t alen, const char *b, size_t blen)
{
  if (alen != blen)
    return 0;
  for (size_t i = 0; i < alen; i++) {
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
      return 0;
  }
  return 1;
}

size_t
text_distance(const char *a, const char *b)
{
  size_t la = strlen(a), lb = strlen(b);
  size_t row[DISTANCE_MAX_LEN];

  if (la >= DISTANCE_MAX_LEN || lb >= DISTANCE_MAX_LEN)
    return SIZE_MAX;
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (lower((unsigned char)a[i - 1]) !=
                            lower((unsigned char)b[j - 1]));
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

int
text_is_loopback(const char *host, size_t len)
{
  static const char *const names[] = {"127.0.0.1", "[::1]", "localhost"};

  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    if (strlen(names[i]) == len && strncasecmp(host, names[i], len) == 0)
      return 1;
  }
  return 0;
}

void
text_set_err(char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;

  if (err == NULL || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

void
text_wipe_free(char *s)
{
  if (s != NULL) {
    explicit_bzero(s, strlen(s));
    free(s);
  }
}

int
text_is_guid(const char *s)
{
  if (s == NULL || strlen(s) != 36)
    return 0;
  for (size_t i = 0; i < 36; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-')
        return 0;
    } else if (!isxdigit((unsigned char)s[i])) {
      return 0;
    }
  }
  return 1;
}
