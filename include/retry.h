/*
 * retry — the pure decisions of galbridge's retry policy: which answers
 * are retried, how long a retry waits when the service does not say
 * (exponential backoff with full jitter under a ceiling), and what a
 * Retry-After header says when it does.
 *
 * No I/O, no clock, no randomness of its own: the caller passes the time
 * and the random number, so every function here is tested from tables.
 * http.c applies these decisions to its transfers; graph.c uses them for
 * the requests inside a $batch, which it retries itself.
 */
#ifndef GALBRIDGE_RETRY_H
#define GALBRIDGE_RETRY_H

#include <time.h>

/* Full-jitter backoff before retry number `attempt` (1 = first retry):
 * u * min(cap_ms, base_ms * 2^(attempt-1)), u in [0, 1). The result is
 * always >= 0 and below that ceiling; attempt < 1 counts as 1, u outside
 * [0, 1) is clamped, base_ms or cap_ms <= 0 gives 0. */
double retry_backoff_ms(int attempt, long base_ms, long cap_ms, double u);

/* Parse a Retry-After value: delta-seconds (integer or fractional, as
 * Graph sends "2.128"; at most 2^31-1) or an IMF-fixdate HTTP-date
 * ("Sun, 06 Nov 1994 08:49:37 GMT") relative to `now` (a past date is 0).
 * Surrounding spaces and tabs are ignored. Returns 0 and sets *seconds
 * (>= 0, rounded up to whole milliseconds), or -1 (*seconds untouched)
 * when the value is not one of those (signs, exponents, obsolete date
 * forms, garbage). */
int retry_parse_after(const char *value, time_t now, double *seconds);

/* 1 when an answer with HTTP status `status` is retried (429, 503 and
 * 504: the service asks to come back later), else 0. Network errors are
 * the transport's to judge. */
int retry_on_status(long status);

#endif
