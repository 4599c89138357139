/*
 * test_retry — the retry decisions, from tables: Retry-After parsing
 * (delta-seconds, HTTP-dates, garbage, huge values), the full-jitter
 * backoff and its bounds, and which statuses are retried. No loop, no
 * network: retry.c needs neither.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "retry.h"

/* A Retry-After value, the clock it is read at, and what must come of
 * it: rc 0 with `want` seconds, or -1 with the output untouched. */
struct ra_case {
  const char *in;
  time_t now;
  int rc;
  double want;
};

static void
check_retry_after(const struct ra_case *cases, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    double s = -42;
    int rc = retry_parse_after(cases[i].in, cases[i].now, &s);

    if (rc != cases[i].rc)
      fail_msg("case %zu \"%s\": rc %d, want %d", i, cases[i].in, rc,
               cases[i].rc);
    if (rc == 0 && fabs(s - cases[i].want) > 1e-9)
      fail_msg("case %zu \"%s\": %.6f, want %.6f", i, cases[i].in, s,
               cases[i].want);
    if (rc != 0 && s != -42)
      fail_msg("case %zu \"%s\": output written on error", i, cases[i].in);
  }
}

static void
test_parse_retry_after(void **state)
{
  static const struct ra_case cases[] = {
      {"0", 0, 0, 0},
      {"5", 0, 0, 5},
      {"120", 0, 0, 120},
      {"007", 0, 0, 7},
      {"2.128", 0, 0, 2.128},
      {"1.000", 0, 0, 1},
      {"0.0001", 0, 0, 0.001}, /* rounded up to whole ms */
      {"1.0005", 0, 0, 1.001},
      {"1.0010000", 0, 0, 1.001},
      {" 5", 0, 0, 5},
      {"5\t ", 0, 0, 5},
      {"2147483647", 0, 0, 2147483647.0},
      {"2147483648", 0, -1, 0}, /* overflow */
      {"99999999999999999999999999", 0, -1, 0},
      {"-1", 0, -1, 0},
      {"+1", 0, -1, 0},
      {"abc", 0, -1, 0},
      {"1e9999", 0, -1, 0},
      {"1e3", 0, -1, 0},
      {"0x10", 0, -1, 0},
      {"inf", 0, -1, 0},
      {"nan", 0, -1, 0},
      {"", 0, -1, 0},
      {"   ", 0, -1, 0},
      {".5", 0, -1, 0},
      {"5.", 0, -1, 0},
      {"1.2.3", 0, -1, 0},
      {"5 s", 0, -1, 0},
      {"5,6", 0, -1, 0},
      /* IMF-fixdate, relative to now = 784111777 (the date itself) */
      {"Sun, 06 Nov 1994 08:49:37 GMT", 784111777, 0, 0},
      {"Sun, 06 Nov 1994 08:50:37 GMT", 784111777, 0, 60},
      {"Sun, 06 Nov 1994 08:48:37 GMT", 784111777, 0, 0}, /* past */
      {"Mon, 07 Nov 1994 08:49:37 GMT", 784111777, 0, 86400},
      {"Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 - 90, 0, 90},
      {"Thu, 29 Feb 2024 00:00:00 GMT", 1709164800 - 1, 0, 1},
      {"  Sun, 06 Nov 1994 08:50:37 GMT ", 784111777, 0, 60},
      {"Wed, 29 Feb 2023 00:00:00 GMT", 0, -1, 0}, /* not a leap year */
      {"Sun, 31 Nov 1994 08:49:37 GMT", 0, -1, 0},
      {"Sun, 06 Nov 1994 24:00:00 GMT", 0, -1, 0},
      {"Sun, 06 Nov 1994 08:60:00 GMT", 0, -1, 0},
      {"Sun, 06 Nov 1994 08:49:37 UTC", 0, -1, 0},
      {"sun, 06 nov 1994 08:49:37 GMT", 0, -1, 0},
      {"Sun, 6 Nov 1994 08:49:37 GMT", 0, -1, 0},
      {"Sunday, 06-Nov-94 08:49:37 GMT", 0, -1, 0}, /* RFC 850 */
      {"Sun Nov  6 08:49:37 1994", 0, -1, 0},       /* asctime */
      {"Sun, 06 Nov 1994 08:49:37 GMTX", 0, -1, 0},
  };
  double s;

  (void)state;
  check_retry_after(cases, sizeof cases / sizeof cases[0]);
  assert_int_equal(retry_parse_after(NULL, 0, &s), -1);
}

static void
test_backoff_bounds(void **state)
{
  static const long bases[] = {1, 10, 100, 500, 1000};
  static const long caps[] = {1, 50, 1000, 60000, 2147483647L};
  double fixed_u[] = {
      0.0, 1e-12, 0.25, 0.5, 0.75, 0.999999, nextafter(1.0, 0.0)};
  unsigned int seed = 12345;

  (void)state;
  for (int attempt = 1; attempt <= 40; attempt++) {
    for (size_t b = 0; b < sizeof bases / sizeof bases[0]; b++) {
      for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
        double ceiling = ldexp((double)bases[b], attempt - 1);

        if (ceiling > (double)caps[c])
          ceiling = (double)caps[c];
        for (int k = 0; k < 207; k++) {
          double u = k < 7 ? fixed_u[k] : (double)rand_r(&seed) / 2147483648.0;
          double d = retry_backoff_ms(attempt, bases[b], caps[c], u);

          if (!(isfinite(d) && d >= 0 && d < ceiling))
            fail_msg("attempt %d base %ld cap %ld u %.17g: %.17g not in "
                     "[0, %.17g)",
                     attempt, bases[b], caps[c], u, d, ceiling);
          /* full jitter: proportional to u */
          if (fabs(d - u * ceiling) > 1e-9 * ceiling + 1e-12)
            fail_msg("attempt %d: %.17g, want u*ceiling %.17g", attempt, d,
                     u * ceiling);
        }
      }
    }
  }
  /* the ceiling is reached and respected */
  assert_true(retry_backoff_ms(40, 500, 60000, nextafter(1.0, 0.0)) > 59999.0);
  assert_true(retry_backoff_ms(40, 500, 60000, nextafter(1.0, 0.0)) < 60000.0);
  assert_true(retry_backoff_ms(3, 500, 60000, 0.5) == 1000.0);
  /* edges: clamped u, attempt < 1, bad base/cap, huge attempt */
  assert_true(retry_backoff_ms(1, 500, 60000, 1.0) < 500.0);
  assert_true(retry_backoff_ms(1, 500, 60000, 5.0) < 500.0);
  assert_true(retry_backoff_ms(1, 500, 60000, -0.5) == 0.0);
  assert_true(retry_backoff_ms(1, 500, 60000, NAN) == 0.0);
  assert_true(retry_backoff_ms(0, 500, 60000, 0.5) == 250.0);
  assert_true(retry_backoff_ms(-7, 500, 60000, 0.5) == 250.0);
  assert_true(retry_backoff_ms(3, 0, 60000, 0.5) == 0.0);
  assert_true(retry_backoff_ms(3, 500, 0, 0.5) == 0.0);
  assert_true(retry_backoff_ms(2147483647, 500, 60000, 0.5) == 30000.0);
  assert_true(retry_backoff_ms(1, 1000, 300, 0.5) == 150.0); /* cap < base */
}

/* More Retry-After values, by kind: what a service may well send, and
 * what it must not be able to make us do (wait forever, or not at all). */
static void
test_parse_retry_after_kinds(void **state)
{
  static const struct ra_case cases[] = {
      /* delta-seconds */
      {"1", 0, 0, 1},
      {"86400", 0, 0, 86400},
      {"0.5", 0, 0, 0.5},
      {"0.999", 0, 0, 0.999},
      {"0.9991", 0, 0, 1},    /* rounded up to whole ms */
      {"1.5\t", 0, 0, 1.5},   /* trailing tab */
      {"5", 784111777, 0, 5}, /* the clock does not matter */
      {"0000000000000000000000000000001", 0, 0, 1}, /* zeros: no overflow */
      /* HTTP-date (IMF-fixdate) */
      {"Thu, 01 Jan 1970 00:00:00 GMT", 0, 0, 0},
      {"Sat, 01 Jan 2000 00:00:00 GMT", 946684800 - 30, 0, 30},
      {"Tue, 29 Feb 2000 00:00:00 GMT", 951782400 - 1, 0,
       1}, /* leap: by 400 */
      {"Sat, 31 Dec 2016 23:59:60 GMT", 1483228800 - 1, 0,
       1},                                                 /* leap second */
      {"Sun, 06 Nov 1994 08:49:37 GMT", 4102444800, 0, 0}, /* long past */
      {"Thu, 29 Feb 1900 00:00:00 GMT", 0, -1, 0}, /* by 100, not 400 */
      {"Sun, 00 Nov 1994 08:49:37 GMT", 0, -1, 0},
      {"Xyz, 06 Nov 1994 08:49:37 GMT", 0, -1, 0},
      {"Sun, 06 Foo 1994 08:49:37 GMT", 0, -1, 0},
      {"Sun, 06 Nov 1994 8:49:37 GMT", 0, -1, 0},
      {"Sun, 06 Nov 1994 08:49:37 gmt", 0, -1, 0},
      {"Sun, 06 Nov 94 08:49:37 GMT", 0, -1, 0},
      /* garbage */
      {"Retry-After: 5", 0, -1, 0},
      {"5s", 0, -1, 0},
      {"five", 0, -1, 0},
      {"-0", 0, -1, 0},
      {"0x", 0, -1, 0},
      {"5\r", 0, -1, 0}, /* only spaces and tabs are trimmed */
      {"\x01", 0, -1, 0},
      {"\xef\xbc\x95", 0, -1, 0}, /* FULLWIDTH DIGIT FIVE */
      {"5 5", 0, -1, 0},
      /* huge */
      {"2147483647.000", 0, 0, 2147483647.0},
      {"2147483647.0001", 0, 0, 2147483647.001},
      {"4294967296", 0, -1, 0},
      {"18446744073709551616", 0, -1, 0}, /* 2^64 */
      {"Fri, 31 Dec 9999 23:59:59 GMT", 0, 0, 253402300799.0},
  };
  char longfrac[10005];
  double s;

  (void)state;
  check_retry_after(cases, sizeof cases / sizeof cases[0]);
  /* A fraction of any length is read to its end, not cut short. */
  memcpy(longfrac, "0.", 2);
  memset(longfrac + 2, '0', 10000);
  memcpy(longfrac + 10002, "1", 2);
  assert_int_equal(retry_parse_after(longfrac, 0, &s), 0);
  assert_true(fabs(s - 0.001) < 1e-12);
  longfrac[10002] = 'x';
  s = -42;
  assert_int_equal(retry_parse_after(longfrac, 0, &s), -1);
  assert_true(s == -42);
  assert_int_equal(retry_parse_after("5", 0, NULL), -1);
}

/* Exact backoffs: the ceiling doubles from base_ms per retry up to
 * cap_ms, and u picks a point below it; a huge cap never overflows. */
static void
test_backoff_table(void **state)
{
  static const struct {
    int attempt;
    long base_ms, cap_ms;
    double u, want;
  } cases[] = {
      {1, 500, 60000, 0.5, 250},
      {2, 500, 60000, 0.5, 500},
      {3, 500, 60000, 0.5, 1000},
      {7, 500, 60000, 0.5, 16000},
      {8, 500, 60000, 0.5, 30000}, /* 64000 capped */
      {100, 500, 60000, 0.5, 30000},
      {INT_MAX, 500, 60000, 0.25, 15000},
      {5, 500, 60000, 0, 0},
      {1, 500, 60000, 0.999999, 499.9995},
      {1, 500, 500, 0.5, 250},                       /* cap == base */
      {64, 1, LONG_MAX, 0.5, 4611686018427387904.0}, /* 2^63 / 2 */
      {INT_MAX, 1, LONG_MAX, 0.5, 4611686018427387904.0},
      {1, -1, 60000, 0.5, 0},
      {1, 500, -1, 0.5, 0},
  };

  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    double d = retry_backoff_ms(cases[i].attempt, cases[i].base_ms,
                                cases[i].cap_ms, cases[i].u);

    if (!(isfinite(d) && fabs(d - cases[i].want) <= 1e-9 * cases[i].want))
      fail_msg("case %zu: %.17g, want %.17g", i, d, cases[i].want);
  }
}

/* Which answers are retried: those that ask to come back later. */
static void
test_on_status(void **state)
{
  static const struct {
    long status;
    int want;
  } cases[] = {
      {429, 1}, {503, 1}, {504, 1}, {0, 0},   {200, 0},
      {204, 0}, {301, 0}, {400, 0}, {401, 0}, {404, 0},
      {408, 0}, {500, 0}, {502, 0}, {505, 0}, {-1, 0},
  };

  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (retry_on_status(cases[i].status) != cases[i].want)
      fail_msg("status %ld: want %d", cases[i].status, cases[i].want);
  }
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_retry_after),
      cmocka_unit_test(test_parse_retry_after_kinds),
      cmocka_unit_test(test_backoff_bounds),
      cmocka_unit_test(test_backoff_table),
      cmocka_unit_test(test_on_status),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
