/*
 * Tests for metrics: the exact text for two links, services and tenants;
 * label escaping; refusals (over-long, NULL or non-UTF-8 label values,
 * duplicate series) that leave the old file alone; failures at open and at
 * rename that leave no "<path>.tmp" behind and name the failed step; the
 * file mode despite a strict umask; number formatting (a table of doubles
 * and the integer extremes); and a small parser of the exposition format
 * that every written file must pass: valid names, HELP then TYPE once per
 * family before its samples, well-formed escaped labels, numbers Prometheus
 * reads, no timestamps, no duplicate series.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "metrics.h"

struct dir {
  char path[64];
  char file[128]; /* path/galbridge.prom */
  char tmp[160];  /* file.tmp */
};

static int
setup(void **state)
{
  struct dir *d = calloc(1, sizeof(*d));

  if (d == NULL)
    return -1;
  snprintf(d->path, sizeof(d->path), "/tmp/galbridge-metrics-XXXXXX");
  if (mkdtemp(d->path) == NULL) {
    free(d);
    return -1;
  }
  snprintf(d->file, sizeof(d->file), "%s/galbridge.prom", d->path);
  snprintf(d->tmp, sizeof(d->tmp), "%s.tmp", d->file);
  *state = d;
  return 0;
}

static int
teardown(void **state)
{
  struct dir *d = *state;
  char sub[192];

  unlink(d->file);
  unlink(d->tmp);
  snprintf(sub, sizeof(sub), "%s/isdir.tmp", d->path);
  unlink(sub);
  snprintf(sub, sizeof(sub), "%s/isdir", d->path);
  rmdir(sub);
  snprintf(sub, sizeof(sub), "%s/plain", d->path);
  unlink(sub);
  rmdir(d->path);
  free(d);
  return 0;
}

/* The whole file; the caller frees. */
static char *
slurp(const char *path)
{
  FILE *f = fopen(path, "r");
  char *buf;
  size_t n;

  if (f == NULL)
    fail_msg("cannot open %s: %s", path, strerror(errno));
  buf = malloc(1 << 20);
  assert_non_null(buf);
  n = fread(buf, 1, (1 << 20) - 1, f);
  assert_false(ferror(f));
  fclose(f);
  buf[n] = '\0';
  return buf;
}

static int
exists(const char *path)
{
  struct stat st;

  return lstat(path, &st) == 0;
}

/* ---- a checker for the text exposition format (0.0.4) ---- */

static int
name_start(char c, int colon)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         (colon && c == ':');
}

static int
name_char(char c, int colon)
{
  return name_start(c, colon) || (c >= '0' && c <= '9');
}

/* Length of the metric (colon = 1) or label name at s; 0 if none. */
static size_t
name_len(const char *s, int colon)
{
  size_t n = 0;

  if (!name_start(s[0], colon))
    return 0;
  while (name_char(s[n], colon))
    n++;
  return n;
}

/* Whether s is a value Prometheus (Go's ParseFloat) reads. */
static int
value_ok(const char *s)
{
  char *end;

  if (strcmp(s, "NaN") == 0 || strcmp(s, "+Inf") == 0 ||
      strcmp(s, "-Inf") == 0)
    return 1;
  if (s[0] == '\0' || strspn(s, "0123456789.eE+-") != strlen(s))
    return 0;
  errno = 0;
  (void)strtod(s, &end);
  return *end == '\0';
}

#define MAX_ITEMS 512

/* Names seen so far (families, series, a series' labels). */
struct seen {
  char *item[MAX_ITEMS];
  size_t n;
};

static void
seen_free(struct seen *s)
{
  for (size_t i = 0; i < s->n; i++)
    free(s->item[i]);
  s->n = 0;
}

/* Add item; 0 if new, -1 if it is there already. */
static int
seen_add(struct seen *s, const char *item, size_t len)
{
  for (size_t i = 0; i < s->n; i++)
    if (strlen(s->item[i]) == len && memcmp(s->item[i], item, len) == 0)
      return -1;
  assert_true(s->n < MAX_ITEMS);
  s->item[s->n] = strndup(item, len);
  assert_non_null(s->item[s->n]);
  s->n++;
  return 0;
}

static char why[512]; /* the checker's last complaint */

static int bad(int lineno, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
bad(int lineno, const char *fmt, ...)
{
  va_list ap;
  int n = snprintf(why, sizeof(why), "line %d: ", lineno);

  va_start(ap, fmt);
  vsnprintf(why + n, sizeof(why) - (size_t)n, fmt, ap);
  va_end(ap);
  return -1;
}

/* Check the `{labels}` at *p; leave *p after the '}'. */
static int
check_labels(const char **p, int lineno)
{
  const char *s = *p + 1;
  struct seen names = {0};
  int result = -1;

  if (*s == '}') {
    bad(lineno, "empty label set");
    goto out;
  }
  for (;;) {
    size_t n = name_len(s, 0);

    if (n == 0) {
      bad(lineno, "bad label name at %s", s);
      goto out;
    }
    if (n >= 2 && s[0] == '_' && s[1] == '_') {
      bad(lineno, "reserved label name");
      goto out;
    }
    if (seen_add(&names, s, n) != 0) {
      bad(lineno, "label %.*s twice", (int)n, s);
      goto out;
    }
    s += n;
    if (s[0] != '=' || s[1] != '"') {
      bad(lineno, "expected =\" at %s", s);
      goto out;
    }
    s += 2;
    while (*s != '"') {
      if (*s == '\0') {
        bad(lineno, "unterminated label value");
        goto out;
      }
      if (*s == '\\') {
        if (s[1] != '\\' && s[1] != '"' && s[1] != 'n') {
          bad(lineno, "bad escape \\%c", s[1]);
          goto out;
        }
        s++;
      }
      s++;
    }
    s++;
    if (*s == '}')
      break;
    if (*s != ',') {
      bad(lineno, "expected , or } at %s", s);
      goto out;
    }
    s++;
  }
  *p = s + 1;
  result = 0;
out:
  seen_free(&names);
  return result;
}

/* The number of samples when text is well-formed exposition text as
 * metrics.c means to write it (every family has HELP, then TYPE, then at
 * least one sample, and appears once); -1 with `why` set otherwise. */
static int
exposition_samples(const char *text)
{
  struct seen families = {0}, series = {0};
  char help_for[256] = "", family[256] = "";
  const char *line = text;
  int lineno = 0, samples = 0, family_samples = 0, result = -1;

  if (text[0] != '\0' && text[strlen(text) - 1] != '\n') {
    bad(0, "the text does not end with a newline");
    goto out;
  }
  while (*line != '\0') {
    const char *nl = strchr(line, '\n');
    char buf[4096];
    size_t len = (size_t)(nl - line);

    lineno++;
    assert_true(len < sizeof(buf));
    memcpy(buf, line, len);
    buf[len] = '\0';
    line = nl + 1;

    if (strncmp(buf, "# HELP ", 7) == 0) {
      size_t n = name_len(buf + 7, 1);

      if (n == 0 || buf[7 + n] != ' ' || buf[8 + n] == '\0') {
        bad(lineno, "bad HELP: %s", buf);
        goto out;
      }
      if (help_for[0] != '\0') {
        bad(lineno, "HELP %s without TYPE", help_for);
        goto out;
      }
      if (family[0] != '\0' && family_samples == 0) {
        bad(lineno, "family %s has no samples", family);
        goto out;
      }
      if (seen_add(&families, buf + 7, n) != 0) {
        bad(lineno, "family %.*s twice", (int)n, buf + 7);
        goto out;
      }
      snprintf(help_for, sizeof(help_for), "%.*s", (int)n, buf + 7);
      family[0] = '\0';
      continue;
    }
    if (strncmp(buf, "# TYPE ", 7) == 0) {
      size_t n = name_len(buf + 7, 1);
      const char *type = buf + 8 + n;

      if (n == 0 || buf[7 + n] != ' ') {
        bad(lineno, "bad TYPE: %s", buf);
        goto out;
      }
      if (strlen(help_for) != n || memcmp(help_for, buf + 7, n) != 0) {
        bad(lineno, "TYPE without its HELP just before: %s", buf);
        goto out;
      }
      if (strcmp(type, "gauge") != 0 && strcmp(type, "counter") != 0) {
        bad(lineno, "bad type %s", type);
        goto out;
      }
      if (strcmp(type, "counter") == 0 &&
          (n < 6 || memcmp(buf + 7 + n - 6, "_total", 6) != 0)) {
        bad(lineno, "counter not named *_total");
        goto out;
      }
      memcpy(family, help_for, n + 1);
      help_for[0] = '\0';
      family_samples = 0;
      continue;
    }
    if (buf[0] == '#' || buf[0] == '\0') {
      bad(lineno, "unexpected line: %s", buf);
      goto out;
    }

    /* A sample: name{labels} value */
    {
      size_t n = name_len(buf, 1);
      const char *p = buf + n;

      if (n == 0) {
        bad(lineno, "bad metric name: %s", buf);
        goto out;
      }
      if (family[0] == '\0' || strlen(family) != n ||
          memcmp(family, buf, n) != 0) {
        bad(lineno, "sample outside its family (%s): %s", family, buf);
        goto out;
      }
      if (*p == '{' && check_labels(&p, lineno) != 0)
        goto out;
      if (seen_add(&series, buf, (size_t)(p - buf)) != 0) {
        bad(lineno, "series %.*s twice", (int)(p - buf), buf);
        goto out;
      }
      if (*p != ' ') {
        bad(lineno, "expected one space before the value");
        goto out;
      }
      p++;
      if (strchr(p, ' ') != NULL) {
        bad(lineno, "trailing field (timestamp?): %s", p);
        goto out;
      }
      if (!value_ok(p)) {
        bad(lineno, "bad value %s", p);
        goto out;
      }
      samples++;
      family_samples++;
    }
  }
  if (help_for[0] != '\0') {
    bad(lineno, "HELP %s without TYPE", help_for);
    goto out;
  }
  if (family[0] != '\0' && family_samples == 0) {
    bad(lineno, "family %s has no samples", family);
    goto out;
  }
  result = samples;
out:
  seen_free(&families);
  seen_free(&series);
  return result;
}

/* Fail unless text passes; returns the number of samples. */
static int
check_exposition(const char *text)
{
  int samples = exposition_samples(text);

  if (samples < 0)
    fail_msg("not valid exposition text: %s", why);
  return samples;
}

/* ---- the data ---- */

static const struct metrics_status_count contoso_graph_status[] = {
    {200, 5000},
    {429, 12},
    {0, 2},
};
static const struct metrics_status_count fabrikam_exo_status[] = {
    {200, 7},
};

static const struct metrics_link LINKS[] = {
    {.name = "contoso-fabrikam",
     .source = "contoso",
     .target = "fabrikam",
     .object = "guest",
     .objects = 1200,
     .pending = 3,
     .failed = 1,
     .refused = 1,
     .deletes_held = 0,
     .last_success = 1700000000,
     .last_round_seconds = 2.5,
     .rounds = 42,
     .created = 1190,
     .adopted = 10,
     .updated = 30,
     .deleted = 2,
     .restored = 1,
     .op_failures = 1,
     .op_retries = 7},
    {.name = "fabrikam-contoso",
     .source = "fabrikam",
     .target = "contoso",
     .object = "mailcontact",
     .deletes_held = 600,
     .creates_held = 7,
     .last_round_seconds = 0.125},
};

static const struct metrics_service SERVICES[] = {
    {.tenant = "contoso",
     .service = "graph",
     .by_status = contoso_graph_status,
     .n_status = 3,
     .throttled = 12},
    {.tenant = "fabrikam",
     .service = "exchange",
     .by_status = fabrikam_exo_status,
     .n_status = 1},
};

static const struct metrics_tenant TENANTS[] = {
    {"contoso", 3},
    {"fabrikam", 1},
};

static const char GOLDEN[] =
    "# HELP galbridge_link_objects Target objects the link manages.\n"
    "# TYPE galbridge_link_objects gauge\n"
    "galbridge_link_objects{link=\"contoso-fabrikam\",source=\"contoso\","
    "target=\"fabrikam\",object=\"guest\"} 1200\n"
    "galbridge_link_objects{link=\"fabrikam-contoso\",source=\"fabrikam\","
    "target=\"contoso\",object=\"mailcontact\"} 0\n"
    "# HELP galbridge_link_pending_ops Operations not yet done.\n"
    "# TYPE galbridge_link_pending_ops gauge\n"
    "galbridge_link_pending_ops{link=\"contoso-fabrikam\"} 3\n"
    "galbridge_link_pending_ops{link=\"fabrikam-contoso\"} 0\n"
    "# HELP galbridge_link_failed_ops Operations failed for good, now.\n"
    "# TYPE galbridge_link_failed_ops gauge\n"
    "galbridge_link_failed_ops{link=\"contoso-fabrikam\"} 1\n"
    "galbridge_link_failed_ops{link=\"fabrikam-contoso\"} 0\n"
    "# HELP galbridge_link_refused_objects Objects not synced: conflicts (an "
    "address or anchor held by an object galbridge cannot prove it made, two "
    "objects claiming one) and values it cannot take.\n"
    "# TYPE galbridge_link_refused_objects gauge\n"
    "galbridge_link_refused_objects{link=\"contoso-fabrikam\"} 1\n"
    "galbridge_link_refused_objects{link=\"fabrikam-contoso\"} 0\n"
    "# HELP galbridge_link_deletes_held Deletes waiting for approval.\n"
    "# TYPE galbridge_link_deletes_held gauge\n"
    "galbridge_link_deletes_held{link=\"contoso-fabrikam\"} 0\n"
    "galbridge_link_deletes_held{link=\"fabrikam-contoso\"} 600\n"
    "# HELP galbridge_link_creates_held Creates waiting for approval (more "
    "than max_creates in one round).\n"
    "# TYPE galbridge_link_creates_held gauge\n"
    "galbridge_link_creates_held{link=\"contoso-fabrikam\"} 0\n"
    "galbridge_link_creates_held{link=\"fabrikam-contoso\"} 7\n"
    "# HELP galbridge_link_last_success_timestamp_seconds Unix time of the "
    "last successful round, 0 if none yet.\n"
    "# TYPE galbridge_link_last_success_timestamp_seconds gauge\n"
    "galbridge_link_last_success_timestamp_seconds{link=\"contoso-fabrikam\"}"
    " 1700000000\n"
    "galbridge_link_last_success_timestamp_seconds{link=\"fabrikam-contoso\"}"
    " 0\n"
    "# HELP galbridge_link_last_round_duration_seconds Duration of the last "
    "round.\n"
    "# TYPE galbridge_link_last_round_duration_seconds gauge\n"
    "galbridge_link_last_round_duration_seconds{link=\"contoso-fabrikam\"} "
    "2.5\n"
    "galbridge_link_last_round_duration_seconds{link=\"fabrikam-contoso\"} "
    "0.125\n"
    "# HELP galbridge_link_rounds_total Rounds run since start.\n"
    "# TYPE galbridge_link_rounds_total counter\n"
    "galbridge_link_rounds_total{link=\"contoso-fabrikam\"} 42\n"
    "galbridge_link_rounds_total{link=\"fabrikam-contoso\"} 0\n"
    "# HELP galbridge_link_ops_total Operations since start: done by kind, "
    "failed for good, retried.\n"
    "# TYPE galbridge_link_ops_total counter\n"
    "galbridge_link_ops_total{link=\"contoso-fabrikam\",kind=\"create\","
    "result=\"ok\"} 1190\n"
    "galbridge_link_ops_total{link=\"contoso-fabrikam\",kind=\"adopt\","
    "result=\"ok\"} 10\n"
    "galbridge_link_ops_total{link=\"contoso-fabrikam\",kind=\"update\","
    "result=\"ok\"} 30\n"
    "galbridge_link_ops_total{link=\"contoso-fabrikam\",kind=\"delete\","
    "result=\"ok\"} 2\n"
    "galbridge_link_ops_total{link=\"contoso-fabrikam\",kind=\"restore\","
    "result=\"ok\"} 1\n"
    "galbridge_link_ops_total{link=\"contoso-fabrikam\",kind=\"any\","
    "result=\"failed\"} 1\n"
    "galbridge_link_ops_total{link=\"contoso-fabrikam\",kind=\"any\","
    "result=\"retry\"} 7\n"
    "galbridge_link_ops_total{link=\"fabrikam-contoso\",kind=\"create\","
    "result=\"ok\"} 0\n"
    "galbridge_link_ops_total{link=\"fabrikam-contoso\",kind=\"adopt\","
    "result=\"ok\"} 0\n"
    "galbridge_link_ops_total{link=\"fabrikam-contoso\",kind=\"update\","
    "result=\"ok\"} 0\n"
    "galbridge_link_ops_total{link=\"fabrikam-contoso\",kind=\"delete\","
    "result=\"ok\"} 0\n"
    "galbridge_link_ops_total{link=\"fabrikam-contoso\",kind=\"restore\","
    "result=\"ok\"} 0\n"
    "galbridge_link_ops_total{link=\"fabrikam-contoso\",kind=\"any\","
    "result=\"failed\"} 0\n"
    "galbridge_link_ops_total{link=\"fabrikam-contoso\",kind=\"any\","
    "result=\"retry\"} 0\n"
    "# HELP galbridge_http_requests_total HTTP requests by answer status, 0 "
    "for no answer.\n"
    "# TYPE galbridge_http_requests_total counter\n"
    "galbridge_http_requests_total{tenant=\"contoso\",service=\"graph\","
    "status=\"200\"} 5000\n"
    "galbridge_http_requests_total{tenant=\"contoso\",service=\"graph\","
    "status=\"429\"} 12\n"
    "galbridge_http_requests_total{tenant=\"contoso\",service=\"graph\","
    "status=\"0\"} 2\n"
    "galbridge_http_requests_total{tenant=\"fabrikam\",service=\"exchange\","
    "status=\"200\"} 7\n"
    "# HELP galbridge_http_throttled_total Requests the service throttled "
    "(429, or 503/504 with Retry-After).\n"
    "# TYPE galbridge_http_throttled_total counter\n"
    "galbridge_http_throttled_total{tenant=\"contoso\",service=\"graph\"} "
    "12\n"
    "galbridge_http_throttled_total{tenant=\"fabrikam\",service=\"exchange\"}"
    " 0\n"
    "# HELP galbridge_token_refreshes_total Access tokens obtained since "
    "start.\n"
    "# TYPE galbridge_token_refreshes_total counter\n"
    "galbridge_token_refreshes_total{tenant=\"contoso\"} 3\n"
    "galbridge_token_refreshes_total{tenant=\"fabrikam\"} 1\n"
    "# HELP galbridge_metrics_written_timestamp_seconds Unix time this file "
    "was written.\n"
    "# TYPE galbridge_metrics_written_timestamp_seconds gauge\n"
    "galbridge_metrics_written_timestamp_seconds 1700000123\n";

static const char EMPTY[] =
    "# HELP galbridge_metrics_written_timestamp_seconds Unix time this file "
    "was written.\n"
    "# TYPE galbridge_metrics_written_timestamp_seconds gauge\n"
    "galbridge_metrics_written_timestamp_seconds 5\n";

/* ---- the tests ---- */

/* metrics_write() of these families at `now` into d->file, which must
 * succeed; returns the text written (the caller frees it). */
static char *
written(struct dir *d, const struct metrics_link *links, size_t nl,
        const struct metrics_service *services, size_t ns,
        const struct metrics_tenant *tenants, size_t nt, time_t now)
{
  char err[512];

  assert_int_equal(metrics_write(d->file, links, nl, services, ns, tenants, nt,
                                 now, err, sizeof(err)),
                   0);
  return slurp(d->file);
}

static void
writes_the_exact_text(void **state)
{
  struct dir *d = *state;
  char err[512] = "untouched";
  char *text;

  assert_int_equal(metrics_write(d->file, LINKS, 2, SERVICES, 2, TENANTS, 2,
                                 1700000123, err, sizeof(err)),
                   0);
  assert_string_equal(err, "");
  text = slurp(d->file);
  assert_string_equal(text, GOLDEN);
  /* 2 links × 16 series, 4 + 2 HTTP series, 2 tenants, 1 timestamp. */
  assert_int_equal(check_exposition(text), 2 * 16 + 6 + 2 + 1);
  assert_false(exists(d->tmp));
  free(text);
}

static void
empty_families_are_left_out(void **state)
{
  struct dir *d = *state;
  struct metrics_service quiet = {.tenant = "contoso", .service = "login"};
  char *text;

  text = written(d, NULL, 0, NULL, 0, NULL, 0, 5);
  assert_string_equal(text, EMPTY);
  assert_int_equal(check_exposition(text), 1);
  free(text);

  /* A service with no requests yet: throttled only, no requests family. */
  text = written(d, NULL, 0, &quiet, 1, NULL, 0, 5);
  assert_null(strstr(text, "galbridge_http_requests_total"));
  assert_non_null(strstr(text, "galbridge_http_throttled_total{tenant="
                               "\"contoso\",service=\"login\"} 0\n"));
  assert_null(strstr(text, "galbridge_budget"));
  assert_int_equal(check_exposition(text), 2);
  free(text);
}

/* The write budget of a service that has one; none for one without. */
static void
budget_families(void **state)
{
  struct dir *d = *state;
  const struct metrics_service svc[] = {
      {.tenant = "contoso", .service = "login"},
      {.tenant = "fabrikam",
       .service = "graph",
       .has_budget = 1,
       .write_rate = 13.3,
       .write_rate_max = 19,
       .budget_waited = 179,
       .unit_rate = 250.5,
       .unit_rate_max = 341.25},
  };
  char *text;

  text = written(d, NULL, 0, svc, 2, NULL, 0, 5);
  assert_non_null(strstr(text, "# TYPE galbridge_budget_write_rate gauge\n"
                               "galbridge_budget_write_rate{tenant="
                               "\"fabrikam\",service=\"graph\"} 13.3\n"));
  assert_non_null(strstr(text, "galbridge_budget_write_rate_max{tenant="
                               "\"fabrikam\",service=\"graph\"} 19\n"));
  assert_non_null(strstr(text, "# TYPE galbridge_budget_waited_total counter\n"
                               "galbridge_budget_waited_total{tenant="
                               "\"fabrikam\",service=\"graph\"} 179\n"));
  assert_non_null(strstr(text, "# TYPE galbridge_budget_unit_rate gauge\n"
                               "galbridge_budget_unit_rate{tenant="
                               "\"fabrikam\",service=\"graph\"} 250.5\n"));
  assert_non_null(strstr(text, "galbridge_budget_unit_rate_max{tenant="
                               "\"fabrikam\",service=\"graph\"} 341.25\n"));
  assert_null(strstr(text, "galbridge_budget_write_rate{tenant=\"contoso\""));
  /* Two throttled, five budget samples and the timestamp. */
  assert_int_equal(check_exposition(text), 8);
  free(text);
}

static void
label_values_are_escaped(void **state)
{
  struct dir *d = *state;
  struct metrics_link link = {.name = "a\"b\\c\nd",
                              .source = "Zürich \xe2\x82\xac \xf0\x9d\x84\x9e",
                              .target = "t,}{=",
                              .object = "guest\\n"};
  struct metrics_tenant tenant = {"x\"", 1};
  char *text;

  text = written(d, &link, 1, NULL, 0, &tenant, 1, 0);
  assert_non_null(strstr(text,
                         "galbridge_link_objects{link=\"a\\\"b\\\\c\\nd\","
                         "source=\"Zürich \xe2\x82\xac \xf0\x9d\x84\x9e\","
                         "target=\"t,}{=\",object=\"guest\\\\n\"} 0\n"));
  assert_non_null(
      strstr(text, "\ngalbridge_link_pending_ops{link=\"a\\\"b\\\\c\\nd\"} "
                   "0\n"));
  assert_non_null(
      strstr(text, "\ngalbridge_token_refreshes_total{tenant=\"x\\\"\"} 1\n"));
  check_exposition(text);
  free(text);
}

/* Write GOLDEN first, then expect `bad` refused with err containing want,
 * the old file intact and no temporary file. */
static void
expect_refused(struct dir *d, const struct metrics_link *links, size_t nl,
               const struct metrics_service *services, size_t ns,
               const struct metrics_tenant *tenants, size_t nt,
               const char *want)
{
  char err[512], expect[600];
  char *text;

  assert_int_equal(metrics_write(d->file, LINKS, 2, SERVICES, 2, TENANTS, 2,
                                 1700000123, err, sizeof(err)),
                   0);
  assert_int_equal(metrics_write(d->file, links, nl, services, ns, tenants, nt,
                                 99, err, sizeof(err)),
                   -1);
  snprintf(expect, sizeof(expect), "metrics_file %s: %s", d->file, want);
  assert_string_equal(err, expect);
  text = slurp(d->file);
  assert_string_equal(text, GOLDEN);
  free(text);
  assert_false(exists(d->tmp));
}

static void
long_label_values_are_refused(void **state)
{
  struct dir *d = *state;
  static char longest[1025], too_long[1026];
  struct metrics_link link = {.source = "s", .target = "t", .object = "o"};
  char *text;

  memset(longest, 'v', 1024);
  memset(too_long, 'v', 1025);
  link.name = longest;
  text = written(d, &link, 1, NULL, 0, NULL, 0, 0);
  check_exposition(text);
  free(text);

  link.name = too_long;
  expect_refused(d, &link, 1, NULL, 0, NULL, 0,
                 "label link: value longer than 1024 bytes");
  link.name = "ok";
  link.object = too_long;
  expect_refused(d, &link, 1, NULL, 0, NULL, 0,
                 "label object: value longer than 1024 bytes");
}

static void
bad_label_values_are_refused(void **state)
{
  struct dir *d = *state;
  static const struct {
    const char *value;
    int ok;
  } cases[] = {
      {"", 1},
      {"plain", 1},
      {"caf\xc3\xa9", 1},
      {"\xe2\x82\xac", 1},
      {"\xf0\x9d\x84\x9e", 1},
      {"\xf4\x8f\xbf\xbf", 1}, /* U+10FFFF */
      {"\xed\x9f\xbf", 1},     /* U+D7FF */
      {"\xff", 0},
      {"\x80", 0},
      {"\xc0\xaf", 0},         /* overlong '/' */
      {"\xe0\x80\xaf", 0},     /* overlong */
      {"\xf0\x80\x80\xaf", 0}, /* overlong */
      {"\xed\xa0\x80", 0},     /* surrogate U+D800 */
      {"\xf4\x90\x80\x80", 0}, /* past U+10FFFF */
      {"\xe2\x82", 0},         /* cut short */
      {"ab\xc3", 0},           /* cut short at the end */
      {"\xc3(", 0},            /* not a continuation */
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct metrics_tenant tenant = {cases[i].value, 1};
    char err[512];
    int r = metrics_write(d->file, NULL, 0, NULL, 0, &tenant, 1, 0, err,
                          sizeof(err));

    if (cases[i].ok && r != 0)
      fail_msg("case %zu refused: %s", i, err);
    if (!cases[i].ok) {
      if (r != -1)
        fail_msg("case %zu accepted", i);
      assert_non_null(strstr(err, ": label tenant: value is not UTF-8"));
      assert_false(exists(d->tmp));
    }
  }

  /* A missing value is refused, not written as "(null)". */
  {
    struct metrics_link link = {.name = "l", .target = "t", .object = "o"};
    struct metrics_service svc = {.tenant = "contoso"};

    expect_refused(d, &link, 1, NULL, 0, NULL, 0, "label source: no value");
    expect_refused(d, NULL, 0, &svc, 1, NULL, 0, "label service: no value");
  }
}

static void
duplicate_series_are_refused(void **state)
{
  struct dir *d = *state;
  const struct metrics_link twice[] = {LINKS[0], LINKS[0]};
  const struct metrics_service same_service[] = {SERVICES[0], SERVICES[0]};
  const struct metrics_status_count status_twice[] = {{200, 1}, {200, 2}};
  const struct metrics_service same_status = {.tenant = "contoso",
                                              .service = "graph",
                                              .by_status = status_twice,
                                              .n_status = 2};
  const struct metrics_tenant tenant_twice[] = {{"contoso", 1},
                                                {"contoso", 2}};

  expect_refused(d, twice, 2, NULL, 0, NULL, 0,
                 "link contoso-fabrikam given twice");
  expect_refused(d, NULL, 0, same_service, 2, NULL, 0,
                 "service contoso/graph given twice");
  expect_refused(d, NULL, 0, &same_status, 1, NULL, 0,
                 "service contoso/graph: status 200 given twice");
  expect_refused(d, NULL, 0, NULL, 0, tenant_twice, 2,
                 "tenant contoso given twice");
}

static void
missing_directory_fails_at_open(void **state)
{
  struct dir *d = *state;
  char path[192], tmp[200], want[512], err[512];

  snprintf(path, sizeof(path), "%s/nodir/galbridge.prom", d->path);
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  assert_int_equal(metrics_write(path, LINKS, 2, SERVICES, 2, TENANTS, 2, 1,
                                 err, sizeof(err)),
                   -1);
  snprintf(want, sizeof(want), "metrics_file %s: open %s: %s", path, tmp,
           strerror(ENOENT));
  assert_string_equal(err, want);
  assert_false(exists(tmp));

  /* A regular file where a directory should be. */
  snprintf(path, sizeof(path), "%s/plain", d->path);
  fclose(fopen(path, "w"));
  snprintf(path, sizeof(path), "%s/plain/galbridge.prom", d->path);
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  assert_int_equal(
      metrics_write(path, NULL, 0, NULL, 0, NULL, 0, 1, err, sizeof(err)), -1);
  snprintf(want, sizeof(want), "metrics_file %s: open %s: %s", path, tmp,
           strerror(ENOTDIR));
  assert_string_equal(err, want);

  /* err may be omitted. */
  assert_int_equal(metrics_write(path, NULL, 0, NULL, 0, NULL, 0, 1, NULL, 0),
                   -1);
}

static void
failed_rename_removes_the_temporary_file(void **state)
{
  struct dir *d = *state;
  char path[192], tmp[200], want[512], err[512];
  struct stat st;

  /* rename(2) of a file over a directory fails after the write. */
  snprintf(path, sizeof(path), "%s/isdir", d->path);
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  assert_int_equal(mkdir(path, 0755), 0);
  assert_int_equal(metrics_write(path, LINKS, 2, SERVICES, 2, TENANTS, 2, 1,
                                 err, sizeof(err)),
                   -1);
  snprintf(want, sizeof(want), "metrics_file %s: rename %s: %s", path, tmp,
           strerror(EISDIR));
  assert_string_equal(err, want);
  assert_false(exists(tmp));
  assert_int_equal(stat(path, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
}

static void
read_only_directory_keeps_the_old_file(void **state)
{
  struct dir *d = *state;
  char err[512];
  char *text;

  if (geteuid() == 0) {
    /* root writes through mode bits; the open and rename failures above
     * cover the same paths. */
    skip();
  }
  assert_int_equal(metrics_write(d->file, LINKS, 2, SERVICES, 2, TENANTS, 2,
                                 1700000123, err, sizeof(err)),
                   0);
  assert_int_equal(chmod(d->path, 0555), 0);
  assert_int_equal(
      metrics_write(d->file, NULL, 0, NULL, 0, NULL, 0, 1, err, sizeof(err)),
      -1);
  assert_int_equal(chmod(d->path, 0700), 0);
  assert_non_null(strstr(err, ": open "));
  assert_non_null(strstr(err, strerror(EACCES)));
  text = slurp(d->file);
  assert_string_equal(text, GOLDEN);
  free(text);
  assert_false(exists(d->tmp));
}

static void
replaces_the_file_world_readable(void **state)
{
  struct dir *d = *state;
  mode_t old_mask = umask(077);
  struct stat st;
  char err[512];
  char *text;

  assert_int_equal(metrics_write(d->file, LINKS, 2, SERVICES, 2, TENANTS, 2,
                                 1700000123, err, sizeof(err)),
                   0);
  assert_int_equal(
      metrics_write(d->file, NULL, 0, NULL, 0, NULL, 0, 5, err, sizeof(err)),
      0);
  umask(old_mask);
  text = slurp(d->file);
  assert_string_equal(text, EMPTY);
  free(text);
  assert_int_equal(stat(d->file, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0644);
  assert_false(exists(d->tmp));
  /* A stale temporary file from a crash is simply overwritten. */
  fclose(fopen(d->tmp, "w"));
  assert_int_equal(
      metrics_write(d->file, NULL, 0, NULL, 0, NULL, 0, 5, err, sizeof(err)),
      0);
  assert_false(exists(d->tmp));
}

static void
numbers_read_back(void **state)
{
  struct dir *d = *state;
  static const struct {
    double v;
    const char *text;
  } cases[] = {
      {0, "0"},
      {3, "3"},
      {2.5, "2.5"},
      {0.1, "0.1"},
      {0.1 + 0.2, "0.30000000000000004"},
      {1e-7, "1e-07"},
      {1234567.891, "1234567.891"},
      {1e300, "1e+300"},
      {-0.5, "-0.5"},
      {NAN, "NaN"},
      {INFINITY, "+Inf"},
      {-INFINITY, "-Inf"},
  };
  const char *key = "galbridge_link_last_round_duration_seconds{link=\"l\"} ";

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct metrics_link link = {.name = "l",
                                .source = "s",
                                .target = "t",
                                .object = "o",
                                .last_round_seconds = cases[i].v};
    char want[256];
    char *text;

    text = written(d, &link, 1, NULL, 0, NULL, 0, 0);
    snprintf(want, sizeof(want), "\n%s%s\n", key, cases[i].text);
    if (strstr(text, want) == NULL)
      fail_msg("case %zu: no line %s", i, want + 1);
    if (!isnan(cases[i].v) && !isinf(cases[i].v))
      assert_true(strtod(cases[i].text, NULL) == cases[i].v);
    check_exposition(text);
    free(text);
  }

  /* Integer extremes, exactly. */
  {
    struct metrics_link link = {.name = "l",
                                .source = "s",
                                .target = "t",
                                .object = "o",
                                .objects = LLONG_MIN,
                                .pending = LLONG_MAX,
                                .rounds = ULLONG_MAX};
    char *text;

    text = written(d, &link, 1, NULL, 0, NULL, 0, (time_t)-1);
    assert_non_null(strstr(text, "} -9223372036854775808\n"));
    assert_non_null(strstr(text, "galbridge_link_pending_ops{link=\"l\"} "
                                 "9223372036854775807\n"));
    assert_non_null(strstr(text, "galbridge_link_rounds_total{link=\"l\"} "
                                 "18446744073709551615\n"));
    assert_non_null(
        strstr(text, "\ngalbridge_metrics_written_timestamp_seconds -1\n"));
    check_exposition(text);
    free(text);
  }
}

static void
the_checker_catches_bad_text(void **state)
{
  static const char *const broken[] = {
      "# HELP a x\n# TYPE a gauge\na 1",   /* no final newline */
      "a 1\n",                             /* no HELP, TYPE */
      "# TYPE a gauge\na 1\n",             /* TYPE without HELP */
      "# HELP a x\na 1\n",                 /* HELP without TYPE */
      "# HELP a x\n# TYPE b gauge\nb 1\n", /* TYPE for another */
      "# HELP a x\n# TYPE a gauge\n",      /* no samples */
      "# HELP a x\n# TYPE a gauge\nb 1\n", /* outside its family */
      "# HELP a x\n# TYPE a gauge\na 1\n"
      "# HELP a x\n# TYPE a gauge\na 2\n",      /* family twice */
      "# HELP a x\n# TYPE a gauge\na 1\na 2\n", /* series twice */
      "# HELP a x\n# TYPE a gauge\na{l=\"1\"} 1\na{l=\"1\"} 2\n",
      "# HELP a x\n# TYPE a gauge\na{l=\"1\",l=\"2\"} 1\n",
      "# HELP a x\n# TYPE a gauge\na{} 1\n",
      "# HELP a x\n# TYPE a gauge\na{1l=\"1\"} 1\n",
      "# HELP a x\n# TYPE a gauge\na{__l=\"1\"} 1\n",
      "# HELP a x\n# TYPE a gauge\na{l=1} 1\n",
      "# HELP a x\n# TYPE a gauge\na{l=\"\\t\"} 1\n",
      "# HELP a x\n# TYPE a gauge\na{l=\"1} 1\n",
      "# HELP a x\n# TYPE a gauge\na{l=\"1\";m=\"2\"} 1\n",
      "# HELP a x\n# TYPE a gauge\na 1 1700000000\n", /* timestamp */
      "# HELP a x\n# TYPE a gauge\na  1\n",
      "# HELP a x\n# TYPE a gauge\na inf\n",
      "# HELP a x\n# TYPE a gauge\na 0x1\n",
      "# HELP a x\n# TYPE a gauge\na\n",
      "# HELP a x\n# TYPE a summary\na 1\n",
      "# HELP a x\n# TYPE a counter\na 1\n", /* counter not *_total */
      "# HELP 1a x\n# TYPE 1a gauge\n1a 1\n",
      "# HELP a x\n# TYPE a gauge\n\na 1\n", /* blank line */
      "# HELP a x\n# TYPE a gauge\n# hi\na 1\n",
  };

  (void)state;
  assert_int_equal(exposition_samples("# HELP a_total x y\n"
                                      "# TYPE a_total counter\n"
                                      "a_total{l=\"\\\\\\\"\\n\",m=\"\"} 1\n"
                                      "a_total{l=\"2\"} -1.5e+09\n"
                                      "# HELP b:c x\n# TYPE b:c gauge\n"
                                      "b:c NaN\n"),
                   3);
  for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++)
    if (exposition_samples(broken[i]) != -1)
      fail_msg("case %zu passed: %s", i, broken[i]);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(writes_the_exact_text, setup, teardown),
      cmocka_unit_test_setup_teardown(empty_families_are_left_out, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(budget_families, setup, teardown),
      cmocka_unit_test_setup_teardown(label_values_are_escaped, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(long_label_values_are_refused, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(bad_label_values_are_refused, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(duplicate_series_are_refused, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(missing_directory_fails_at_open, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(failed_rename_removes_the_temporary_file,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(read_only_directory_keeps_the_old_file,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(replaces_the_file_world_readable, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(numbers_read_back, setup, teardown),
      cmocka_unit_test(the_checker_catches_bad_text),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
