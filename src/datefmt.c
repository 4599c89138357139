/*
 * datefmt — see include/datefmt.h.
 *
 * One tokenizer serves the check, the parse and the write, so that a
 * format means the same thing in all three: a token is either a
 * specifier (its letter and how many times it repeats) or a literal (a
 * run of bytes to match or copy). Fields are kept as plain integers in
 * struct when; nothing here knows about time zones beyond the offset
 * read.
 */
#include "datefmt.h"

#include <stdio.h>
#include <string.h>

#include "text.h"

#define FRACTION_MAX 7 /* .NET's f..fffffff */

struct tok {
  char spec;  /* a specifier letter, or 0 for a literal */
  size_t cnt; /* repeats of spec */
  const char *lit;
  size_t litlen;
};

struct when {
  long year;
  int month, day, hour, minute, second;
  long frac; /* 10^-7 seconds */
  int pm;    /* -1: no designator read */
  int has_offset;
  int offset; /* minutes east of UTC */
};

static const char *const month_names[12] = {
    "January", "February", "March",     "April",   "May",      "June",
    "July",    "August",   "September", "October", "November", "December"};
static const char *const day_names[7] = {"Sunday",    "Monday",   "Tuesday",
                                         "Wednesday", "Thursday", "Friday",
                                         "Saturday"};

static int
is_spec(char c)
{
  return strchr("yMdHhmsfFtzKg", c) != NULL && c != '\0';
}

/* The token at fmt[*i]; advances *i. -1 for an unterminated quote or a
 * trailing backslash. */
static int
next_tok(const char *fmt, size_t n, size_t *i, struct tok *t)
{
  char c = fmt[*i];

  memset(t, 0, sizeof(*t));
  if (c == '%' && *i + 1 < n && is_spec(fmt[*i + 1])) {
    (*i)++; /* %d: the single specifier d */
    c = fmt[*i];
  }
  if (is_spec(c)) {
    size_t j = *i;
    while (j < n && fmt[j] == c)
      j++;
    t->spec = c;
    t->cnt = j - *i;
    *i = j;
    return 0;
  }
  if (c == '\'' || c == '"') {
    const char *end = memchr(fmt + *i + 1, c, n - *i - 1);
    if (end == NULL)
      return -1;
    t->lit = fmt + *i + 1;
    t->litlen = (size_t)(end - t->lit);
    *i = (size_t)(end - fmt) + 1;
    return 0;
  }
  if (c == '\\') {
    if (*i + 1 >= n)
      return -1;
    t->lit = fmt + *i + 1;
    t->litlen = text_utf8_seq((const unsigned char *)t->lit, n - *i - 1);
    if (t->litlen == 0)
      t->litlen = 1;
    *i += 1 + t->litlen;
    return 0;
  }
  t->lit = fmt + *i;
  t->litlen = text_utf8_seq((const unsigned char *)t->lit, n - *i);
  if (t->litlen == 0)
    t->litlen = 1;
  *i += t->litlen;
  return 0;
}

int
datefmt_check(const char *fmt, size_t n, char *err, size_t errlen)
{
  struct tok t;

  if (fmt == NULL || n == 0) {
    text_set_err(err, errlen, "the format is empty");
    return -1;
  }
  for (size_t i = 0; i < n;) {
    if (next_tok(fmt, n, &i, &t) != 0) {
      text_set_err(err, errlen,
                   "unterminated quote or trailing backslash in the "
                   "format");
      return -1;
    }
    if (t.spec == 'g') {
      text_set_err(err, errlen, "'g' (the era) is not supported");
      return -1;
    }
    if ((t.spec == 'f' || t.spec == 'F') && t.cnt > FRACTION_MAX) {
      text_set_err(err, errlen, "more than %d '%c' in a row", FRACTION_MAX,
                   t.spec);
      return -1;
    }
    if (t.spec != 0 && t.spec != 'y' && t.spec != 'M' && t.spec != 'd' &&
        t.spec != 'f' && t.spec != 'F' && t.spec != 'z' && t.cnt > 2) {
      text_set_err(err, errlen, "'%c' repeated %zu times (at most 2)", t.spec,
                   t.cnt);
      return -1;
    }
    if ((t.spec == 'z' || t.spec == 'K') && t.cnt > (t.spec == 'z' ? 3 : 1)) {
      text_set_err(err, errlen, "'%c' repeated %zu times", t.spec, t.cnt);
      return -1;
    }
  }
  return 0;
}

/* ---------------------------------------------------------------------
 * Parsing
 */

static int
is_leap(long y)
{
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int
days_in(long y, int m)
{
  static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : d[m - 1];
}

/* Exactly `min`..`max` digits at s[*i]; the value in *v. */
static int
digits(const char *s, size_t n, size_t *i, size_t min, size_t max, long *v)
{
  size_t k = 0;

  *v = 0;
  while (*i + k < n && k < max && s[*i + k] >= '0' && s[*i + k] <= '9') {
    *v = *v * 10 + (s[*i + k] - '0');
    k++;
  }
  if (k < min)
    return -1;
  *i += k;
  return 0;
}

/* One of names[0..count) (or its first three letters) at s[*i], ignoring
 * ASCII case: its index, or -1. */
static int
name_at(const char *s, size_t n, size_t *i, const char *const *names,
        int count, int abbrev)
{
  for (int k = 0; k < count; k++) {
    size_t len = abbrev ? 3 : strlen(names[k]);
    if (n - *i >= len && text_ci_equal(s + *i, len, names[k], len)) {
      *i += len;
      return k;
    }
  }
  return -1;
}

/* An offset at s[*i]: "Z" (when allow_z), or a sign, hours and for
 * `colon` ":mm" (optional when colon is 2). */
static int
offset_at(const char *s, size_t n, size_t *i, int allow_z, int minutes,
          struct when *w)
{
  long h = 0, m = 0;
  int sign;

  if (allow_z && *i < n && (s[*i] == 'Z' || s[*i] == 'z')) {
    (*i)++;
    w->has_offset = 1;
    w->offset = 0;
    return 0;
  }
  if (*i >= n || (s[*i] != '+' && s[*i] != '-'))
    return -1;
  sign = s[*i] == '-' ? -1 : 1;
  (*i)++;
  if (digits(s, n, i, minutes ? 2 : 1, 2, &h) != 0 || h > 14)
    return -1;
  if (minutes) {
    if (*i >= n || s[*i] != ':')
      return -1;
    (*i)++;
    if (digits(s, n, i, 2, 2, &m) != 0 || m > 59)
      return -1;
  }
  w->has_offset = 1;
  w->offset = sign * (int)(h * 60 + m);
  return 0;
}

static int
parse_tok(const struct tok *t, const char *s, size_t n, size_t *i,
          struct when *w)
{
  long v;
  int k;

  switch (t->spec) {
  case 0:
    if (n - *i < t->litlen || memcmp(s + *i, t->lit, t->litlen) != 0)
      return -1;
    *i += t->litlen;
    return 0;
  case 'y':
    if (digits(s, n, i, t->cnt <= 2 ? 1 : t->cnt, t->cnt <= 2 ? 2 : t->cnt,
               &v) != 0)
      return -1;
    if (t->cnt <= 2) /* .NET's two-digit year window: 1950..2049 */
      v += v < 50 ? 2000 : 1900;
    if (v < 1 || v > 9999)
      return -1;
    w->year = v;
    return 0;
  case 'M':
    if (t->cnt >= 3) {
      k = name_at(s, n, i, month_names, 12, t->cnt == 3);
      if (k < 0)
        return -1;
      w->month = k + 1;
      return 0;
    }
    if (digits(s, n, i, t->cnt, 2, &v) != 0 || v < 1 || v > 12)
      return -1;
    w->month = (int)v;
    return 0;
  case 'd':
    if (t->cnt >= 3) /* a day name: read, and left to the date */
      return name_at(s, n, i, day_names, 7, t->cnt == 3) < 0 ? -1 : 0;
    if (digits(s, n, i, t->cnt, 2, &v) != 0 || v < 1 || v > 31)
      return -1;
    w->day = (int)v;
    return 0;
  case 'H':
  case 'h':
  case 'm':
  case 's':
    if (digits(s, n, i, t->cnt, 2, &v) != 0)
      return -1;
    if ((t->spec == 'H' && v > 23) || (t->spec == 'h' && (v < 1 || v > 12)) ||
        v > 59)
      return -1;
    if (t->spec == 'H' || t->spec == 'h')
      w->hour = (int)v;
    else if (t->spec == 'm')
      w->minute = (int)v;
    else
      w->second = (int)v;
    return 0;
  case 'f':
  case 'F': {
    size_t start = *i;
    if (digits(s, n, i, t->spec == 'f' ? t->cnt : 0, t->cnt, &v) != 0)
      return -1;
    for (size_t d = *i - start; d < FRACTION_MAX; d++)
      v *= 10;
    w->frac = v;
    return 0;
  }
  case 't':
    if (*i < n &&
        (s[*i] == 'A' || s[*i] == 'a' || s[*i] == 'P' || s[*i] == 'p')) {
      w->pm = s[*i] == 'P' || s[*i] == 'p';
      (*i)++;
      if (t->cnt == 2) {
        if (*i >= n || (s[*i] != 'M' && s[*i] != 'm'))
          return -1;
        (*i)++;
      }
      return 0;
    }
    return -1;
  case 'z':
    return offset_at(s, n, i, 0, t->cnt == 3, w);
  case 'K':
    if (*i < n && (s[*i] == 'Z' || s[*i] == '+' || s[*i] == '-'))
      return offset_at(s, n, i, 1, 1, w);
    return 0; /* no zone: nothing */
  default:
    return -1;
  }
}

static int
parse_date(const char *s, size_t n, const char *fmt, size_t fn, struct when *w)
{
  size_t i = 0;
  struct tok t;

  memset(w, 0, sizeof(*w));
  w->year = 1;
  w->month = 1;
  w->day = 1;
  w->pm = -1;
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
    n--;
  while (i < n && (s[i] == ' ' || s[i] == '\t'))
    i++;
  for (size_t f = 0; f < fn;) {
    if (next_tok(fmt, fn, &f, &t) != 0 || parse_tok(&t, s, n, &i, w) != 0)
      return -1;
  }
  if (i != n || w->day > days_in(w->year, w->month))
    return -1;
  if (w->pm >= 0) {
    if (w->hour > 12 || w->hour == 0)
      return -1; /* 13 PM, 0 AM: not a 12-hour time */
    w->hour = w->hour % 12 + (w->pm ? 12 : 0);
  }
  return 0;
}

/* ---------------------------------------------------------------------
 * Writing
 */

struct out {
  char *buf;
  size_t size, len;
  int full;
};

static void
put(struct out *o, const char *s, size_t n)
{
  if (o->full || o->size - o->len < n) {
    o->full = 1;
    return;
  }
  memcpy(o->buf + o->len, s, n);
  o->len += n;
}

static void
putnum(struct out *o, long v, size_t width)
{
  char b[32];
  int len = snprintf(b, sizeof(b), "%0*ld", (int)width, v);
  put(o, b, len > 0 ? (size_t)len : 0);
}

/* Sakamoto's day of the week, 0 = Sunday. */
static int
weekday(long y, int m, int d)
{
  static const int t[12] = {0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4};
  if (m < 3)
    y--;
  return (int)((y + y / 4 - y / 100 + y / 400 + t[m - 1] + d) % 7);
}

static void
put_offset(struct out *o, int minutes, size_t form)
{
  int a = minutes < 0 ? -minutes : minutes;

  put(o, minutes < 0 ? "-" : "+", 1);
  putnum(o, a / 60, form == 1 ? 1 : 2);
  if (form == 3) {
    put(o, ":", 1);
    putnum(o, a % 60, 2);
  }
}

static void
write_tok(const struct tok *t, const struct when *w, struct out *o)
{
  int h12 = w->hour % 12 == 0 ? 12 : w->hour % 12;

  switch (t->spec) {
  case 0:
    put(o, t->lit, t->litlen);
    break;
  case 'y':
    putnum(o, t->cnt <= 2 ? w->year % 100 : w->year, t->cnt);
    break;
  case 'M':
    if (t->cnt >= 3)
      put(o, month_names[w->month - 1],
          t->cnt == 3 ? 3 : strlen(month_names[w->month - 1]));
    else
      putnum(o, w->month, t->cnt);
    break;
  case 'd':
    if (t->cnt >= 3) {
      const char *name = day_names[weekday(w->year, w->month, w->day)];
      put(o, name, t->cnt == 3 ? 3 : strlen(name));
    } else {
      putnum(o, w->day, t->cnt);
    }
    break;
  case 'H':
    putnum(o, w->hour, t->cnt);
    break;
  case 'h':
    putnum(o, h12, t->cnt);
    break;
  case 'm':
    putnum(o, w->minute, t->cnt);
    break;
  case 's':
    putnum(o, w->second, t->cnt);
    break;
  case 'f':
  case 'F': {
    long v = w->frac;
    size_t cnt = t->cnt;
    for (size_t d = cnt; d < FRACTION_MAX; d++)
      v /= 10;
    if (t->spec == 'F') {
      while (cnt > 0 && v % 10 == 0) {
        v /= 10;
        cnt--;
      }
      if (cnt == 0)
        break;
    }
    putnum(o, v, cnt);
    break;
  }
  case 't':
    put(o, w->hour >= 12 ? "PM" : "AM", t->cnt == 1 ? 1 : 2);
    break;
  case 'z':
    put_offset(o, w->has_offset ? w->offset : 0, t->cnt);
    break;
  case 'K':
    if (w->has_offset && w->offset == 0)
      put(o, "Z", 1);
    else if (w->has_offset)
      put_offset(o, w->offset, 3);
    break;
  default:
    break;
  }
}

int
datefmt_convert(const char *in, size_t inlen, const char *infmt,
                size_t infmtlen, const char *outfmt, size_t outfmtlen,
                char *out, size_t size, size_t *outlen)
{
  struct when w;
  struct out o = {out, size, 0, 0};
  struct tok t;

  *outlen = 0;
  if (parse_date(in, inlen, infmt, infmtlen, &w) != 0)
    return -1;
  for (size_t f = 0; f < outfmtlen;) {
    if (next_tok(outfmt, outfmtlen, &f, &t) != 0)
      return -1;
    write_tok(&t, &w, &o);
  }
  if (o.full)
    return -2;
  *outlen = o.len;
  return 0;
}
