/*
 * test_retry — the retry decisions, from tables: Retry-After parsing and
 * the full-jitter backoff and its bounds. No loop, no network: retry.c
 * needs neither.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "retry.h"

static void
test_parse_retry_after(void **state)
{
  static const struct {
    const char *in;
    time_t now;
    int rc;
    double want;
  } cases[] = {
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
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int rc;

    s = -42;
    rc = retry_parse_after(cases[i].in, cases[i].now, &s);
    if (rc != cases[i].rc)
      fail_msg("case %zu \"%s\": rc %d, want %d", i, cases[i].in, rc,
               cases[i].rc);
    if (rc == 0 && fabs(s - cases[i].want) > 1e-9)
      fail_msg("case %zu \"%s\": %.6f, want %.6f", i, cases[i].in, s,
               cases[i].want);
    if (rc != 0 && s != -42)
      fail_msg("case %zu \"%s\": output written on error", i, cases[i].in);
  }
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

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_retry_after),
      cmocka_unit_test(test_backoff_bounds),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
