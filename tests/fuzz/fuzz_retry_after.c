/*
 * fuzz_retry_after — the Retry-After parser (retry_parse_after in
 * src/retry.c).
 *
 * The input is the header value (cut at the first NUL, as a header line
 * would be), parsed relative to three clocks: the epoch, the RFC 7231
 * example date and 2100-01-01.
 *
 * Checks: no crash, leak or sanitizer report; a result is 0 with a
 * finite, non-negative number of seconds no larger than the later of
 * 2^31-1 and the furthest date (year 9999) from that clock, or -1 with
 * the output untouched.
 */
#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "fuzz.h"
#include "retry.h"

static const time_t clocks[] = {0, 784111777, 4102444800};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *value = fuzz_strndup(data, size);

  for (size_t i = 0; i < sizeof(clocks) / sizeof(clocks[0]); i++) {
    double s = -42;
    int rc = retry_parse_after(value, clocks[i], &s);

    if (rc == -1) {
      if (s != -42)
        abort();
    } else if (rc != 0 || !isfinite(s) || s < 0 ||
               s > 253402300800.0 + 2147483648.0) {
      abort();
    }
  }
  free(value);
  return 0;
}
