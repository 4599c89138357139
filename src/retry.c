/*
 * retry — see include/retry.h.
 *
 * Retry-After is parsed by hand, digit by digit, so that neither the
 * locale nor strtod()'s extras (signs, exponents, "inf", hex) decide what
 * an answer means. Two forms are taken: delta-seconds, with the fraction
 * Graph sends beyond RFC 9110's integers, and IMF-fixdate, the one date
 * form a sender may generate; the obsolete date forms are refused, and
 * the caller then falls back on its own backoff.
 */
#include "retry.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Largest delta-seconds accepted in Retry-After (2^31 - 1). */
#define DELTA_SECONDS_MAX 2147483647ULL

double
retry_backoff_ms(int attempt, long base_ms, long cap_ms, double u)
{
  double ceiling, d;

  if (base_ms <= 0 || cap_ms <= 0)
    return 0;
  if (attempt < 1)
    attempt = 1;
  if (!(u >= 0)) /* negative or NaN */
    u = 0;
  if (u >= 1)
    u = nextafter(1.0, 0.0);
  ceiling = (double)base_ms;
  for (int i = 1; i < attempt && ceiling < (double)cap_ms; i++)
    ceiling *= 2;
  if (ceiling > (double)cap_ms)
    ceiling = (double)cap_ms;
  d = u * ceiling;
  if (d >= ceiling) /* rounding must not reach the ceiling */
    d = nextafter(ceiling, 0.0);
  return d;
}

int
retry_on_status(long status)
{
  return status == 429 || status == 503 || status == 504;
}

/* --- Retry-After --- */

static int
is_ows(char c)
{
  return c == ' ' || c == '\t';
}

static int
digit(char c)
{
  return c >= '0' && c <= '9';
}

/* delta-seconds, optionally with a fraction; rounded up to whole ms. */
static int
parse_delta(const char *p, const char *end, double *seconds)
{
  uint64_t whole = 0, frac_ms = 0;
  int ndigits = 0, round_up = 0;

  if (p == end || !digit(*p))
    return -1;
  for (; p < end && digit(*p); p++) {
    whole = whole * 10 + (uint64_t)(*p - '0');
    if (whole > DELTA_SECONDS_MAX)
      return -1;
  }
  if (p < end && *p == '.') {
    p++;
    if (p == end || !digit(*p))
      return -1;
    for (; p < end && digit(*p); p++) {
      if (ndigits < 3)
        frac_ms = frac_ms * 10 + (uint64_t)(*p - '0');
      else if (*p != '0')
        round_up = 1;
      ndigits++;
    }
    for (int i = ndigits; i < 3; i++)
      frac_ms *= 10;
    frac_ms += (uint64_t)round_up;
  }
  if (p != end)
    return -1;
  *seconds = (double)(whole * 1000 + frac_ms) / 1000.0;
  return 0;
}

static int
two_digits(const char *p, int *out)
{
  if (!digit(p[0]) || !digit(p[1]))
    return -1;
  *out = (p[0] - '0') * 10 + (p[1] - '0');
  return 0;
}

/* IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT", parsed by hand so that the
 * locale never matters. */
static int
parse_imf_fixdate(const char *p, const char *end, time_t *out)
{
  static const char days[] = "SunMonTueWedThuFriSat";
  static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  struct tm tm;
  int day, mon = -1, year, hh, mm, ss, dname = -1, y1, y2;
  time_t t;

  if (end - p != 29 || memcmp(p + 3, ", ", 2) != 0 || p[7] != ' ' ||
      p[11] != ' ' || p[16] != ' ' || p[19] != ':' || p[22] != ':' ||
      memcmp(p + 25, " GMT", 4) != 0)
    return -1;
  for (int i = 0; i < 7; i++) {
    if (memcmp(p, days + 3 * i, 3) == 0)
      dname = i;
  }
  for (int i = 0; i < 12; i++) {
    if (memcmp(p + 8, months + 3 * i, 3) == 0)
      mon = i;
  }
  if (dname < 0 || mon < 0 || two_digits(p + 5, &day) != 0 ||
      two_digits(p + 12, &y1) != 0 || two_digits(p + 14, &y2) != 0 ||
      two_digits(p + 17, &hh) != 0 || two_digits(p + 20, &mm) != 0 ||
      two_digits(p + 23, &ss) != 0)
    return -1;
  year = y1 * 100 + y2;
  if (day < 1 || day > mdays[mon] || hh > 23 || mm > 59 || ss > 60)
    return -1;
  if (mon == 1 && day == 29 &&
      !(year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)))
    return -1;
  memset(&tm, 0, sizeof tm);
  tm.tm_year = year - 1900;
  tm.tm_mon = mon;
  tm.tm_mday = day;
  tm.tm_hour = hh;
  tm.tm_min = mm;
  tm.tm_sec = ss;
  errno = 0;
  t = timegm(&tm);
  if (t == (time_t)-1 && errno != 0)
    return -1;
  *out = t;
  return 0;
}

int
retry_parse_after(const char *value, time_t now, double *seconds)
{
  const char *p, *end;
  time_t t;

  if (value == NULL || seconds == NULL)
    return -1;
  p = value;
  end = value + strlen(value);
  while (p < end && is_ows(*p))
    p++;
  while (end > p && is_ows(end[-1]))
    end--;
  if (p == end)
    return -1;
  if (digit(*p))
    return parse_delta(p, end, seconds);
  if (!isalpha((unsigned char)*p) || parse_imf_fixdate(p, end, &t) != 0)
    return -1;
  *seconds = t > now ? (double)(t - now) : 0.0;
  return 0;
}
