/*
 * datefmt — dates between .NET custom date and time format strings, for
 * the mapping language's FormatDateTime(source, , inputFormat,
 * outputFormat).
 *
 * A format is read as .NET reads a custom format string, with the
 * invariant culture: y yy yyy yyyy yyyyy (year), M MM (month number), MMM
 * MMMM (English month names), d dd (day), ddd dddd (English day names), H
 * HH h hh m mm s ss, f..fffffff (fraction, exact digits), F..FFFFFFF
 * (fraction, trailing zeros dropped), t tt (A/P, AM/PM), z zz zzz (UTC
 * offset), K (Z, an offset or nothing), ':' and '/' as themselves, 'text'
 * and "text" literals, \c for one literal character, %c for a single
 * specifier; any other character is a literal (so the generalized time
 * form "yyyyMMddHHmmss.fZ" reads "20150123105347.1Z"). The era (g) is not
 * supported: a format holding one is refused.
 *
 * Parsing is exact (.NET's ParseExact with RoundtripKind and blanks
 * allowed around the value): every literal must be there, a field of
 * two or more digits takes that many, a one-letter field one or two; the
 * date must exist (no 30 February). Parts the input format does not give
 * are year 1, January, day 1, midnight, offset unknown. No time zone
 * conversion is made: the offset read is the offset written (z/zzz write
 * +00:00 when none was read, K nothing).
 *
 * Pure functions, no locale, no allocation.
 */
#ifndef GALBRIDGE_DATEFMT_H
#define GALBRIDGE_DATEFMT_H

#include <stddef.h>

/* Whether fmt[0..n) is a format this module takes: 0, or -1 with the
 * reason in err (e.g. "'g' (the era) is not supported"). An empty format
 * is refused. */
int datefmt_check(const char *fmt, size_t n, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Read in[0..inlen) with format `infmt` and write it with `outfmt` (both
 * passed by datefmt_check) into out (size bytes), *outlen its length (no
 * NUL is written). Returns 0; -1 when the input does not match the input
 * format or names no real date; -2 when the result would not fit. */
int datefmt_convert(const char *in, size_t inlen, const char *infmt,
                    size_t infmtlen, const char *outfmt, size_t outfmtlen,
                    char *out, size_t size, size_t *outlen)
    __attribute__((warn_unused_result));

#endif
