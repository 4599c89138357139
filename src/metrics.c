/*
 * metrics — see include/metrics.h.
 *
 * The text is the Prometheus exposition format, version 0.0.4: each family
 * once, as a "# HELP" line, a "# TYPE" line, then its samples
 * `name{label="value",...} number`, one per line, each line ending in '\n'.
 * Label values are UTF-8 with backslash, double quote and newline escaped;
 * numbers are decimal integers, or for fractions the shortest "%g" that
 * reads back exactly (NaN, +Inf and -Inf spelled as Prometheus reads them).
 * No timestamps: the textfile collector refuses them.
 *
 * The whole text is built in memory first (with a hard ceiling), so that
 * every refusal — a label value that is too long or not UTF-8, a series
 * given twice — happens before any file is touched. Then "<path>.tmp" is
 * written, fsync'd, closed and renamed over <path>; on any failure the
 * temporary file is unlinked and <path> is left as it was.
 */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "text.h"

/* Longest label value accepted, in bytes before escaping. */
#define LABEL_VALUE_MAX 1024
/* Ceiling on the whole text: about 2 KiB per link, so far more than any
 * plausible configuration needs. */
#define PAGE_MAX (16u * 1024 * 1024)

/* The page being written: a growable buffer that refuses to pass PAGE_MAX.
 * `err` holds the first failure; later appends are no-ops, so callers check
 * once. */
struct page {
  char *data;
  size_t len, cap;
  int failed;
  char err[512];
};

static void page_fail(struct page *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
page_fail(struct page *t, const char *fmt, ...)
{
  va_list ap;

  if (t->failed)
    return;
  t->failed = 1;
  va_start(ap, fmt);
  vsnprintf(t->err, sizeof(t->err), fmt, ap);
  va_end(ap);
}

/* Room for `more` bytes plus a NUL. */
static int
page_reserve(struct page *t, size_t more)
{
  size_t want, cap;
  char *data;

  if (t->failed)
    return -1;
  if (more > PAGE_MAX - t->len) {
    page_fail(t, "text longer than %u bytes", PAGE_MAX);
    return -1;
  }
  want = t->len + more + 1;
  if (want <= t->cap)
    return 0;
  cap = t->cap == 0 ? 4096 : t->cap;
  while (cap < want)
    cap *= 2;
  data = realloc(t->data, cap);
  if (data == NULL) {
    page_fail(t, "out of memory");
    return -1;
  }
  t->data = data;
  t->cap = cap;
  return 0;
}

static void
page_append(struct page *t, const char *s, size_t len)
{
  if (page_reserve(t, len) != 0)
    return;
  memcpy(t->data + t->len, s, len);
  t->len += len;
  t->data[t->len] = '\0';
}

static void
page_puts(struct page *t, const char *s)
{
  page_append(t, s, strlen(s));
}

static void page_printf(struct page *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
page_printf(struct page *t, const char *fmt, ...)
{
  char buf[128]; /* numbers and names: always enough */
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof(buf)) {
    page_fail(t, "formatting failed");
    return;
  }
  page_append(t, buf, (size_t)n);
}

/* Append `name="value"`, escaped; refuse NULL, over-long or non-UTF-8. */
static void
page_label(struct page *t, const char *name, const char *value)
{
  size_t len;

  if (t->failed)
    return;
  if (value == NULL) {
    page_fail(t, "label %s: no value", name);
    return;
  }
  len = strlen(value);
  if (len > LABEL_VALUE_MAX) {
    page_fail(t, "label %s: value longer than %d bytes", name,
              LABEL_VALUE_MAX);
    return;
  }
  if (!text_utf8_valid(value, len)) {
    page_fail(t, "label %s: value is not UTF-8", name);
    return;
  }
  page_puts(t, name);
  page_puts(t, "=\"");
  for (size_t i = 0; i < len; i++) {
    switch (value[i]) {
    case '\\':
      page_puts(t, "\\\\");
      break;
    case '"':
      page_puts(t, "\\\"");
      break;
    case '\n':
      page_puts(t, "\\n");
      break;
    default:
      page_append(t, value + i, 1);
      break;
    }
  }
  page_puts(t, "\"");
}

/* A sample's labels: up to four (name, value) pairs. */
struct labels {
  const char *name[4];
  const char *value[4];
  size_t n;
};

/* Append `family{labels} ` — the value follows. */
static void
page_series(struct page *t, const char *family, const struct labels *l)
{
  page_puts(t, family);
  if (l->n == 0) {
    page_puts(t, " ");
    return;
  }
  page_puts(t, "{");
  for (size_t i = 0; i < l->n; i++) {
    if (i > 0)
      page_puts(t, ",");
    page_label(t, l->name[i], l->value[i]);
  }
  page_puts(t, "} ");
}

static void
sample_ll(struct page *t, const char *family, const struct labels *l,
          long long v)
{
  page_series(t, family, l);
  page_printf(t, "%lld\n", v);
}

static void
sample_ull(struct page *t, const char *family, const struct labels *l,
           unsigned long long v)
{
  page_series(t, family, l);
  page_printf(t, "%llu\n", v);
}

static void
sample_double(struct page *t, const char *family, const struct labels *l,
              double v)
{
  char buf[64];

  page_series(t, family, l);
  if (isnan(v)) {
    page_puts(t, "NaN\n");
    return;
  }
  if (isinf(v)) {
    page_puts(t, v > 0 ? "+Inf\n" : "-Inf\n");
    return;
  }
  /* The shortest of %.15g..%.17g that reads back as the same double. */
  for (int precision = 15; precision <= 17; precision++) {
    snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (strtod(buf, NULL) == v)
      break;
  }
  page_puts(t, buf);
  page_puts(t, "\n");
}

static void
family(struct page *t, const char *name, const char *type, const char *help)
{
  page_printf(t, "# HELP %s ", name);
  page_puts(t, help);
  page_printf(t, "\n# TYPE %s %s\n", name, type);
}

/* Null-safe equality for duplicate checks (NULL is refused later). */
static int
same(const char *a, const char *b)
{
  return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* Refuse input that would give one series twice: Prometheus rejects the
 * whole file then. */
static void
check_duplicates(struct page *t, const struct metrics_link *links,
                 size_t n_links, const struct metrics_service *services,
                 size_t n_services, const struct metrics_tenant *tenants,
                 size_t n_tenants)
{
  for (size_t i = 0; i < n_links; i++)
    for (size_t j = 0; j < i; j++)
      if (same(links[i].name, links[j].name))
        page_fail(t, "link %.64s given twice", links[i].name);
  for (size_t i = 0; i < n_services; i++) {
    const struct metrics_service *s = &services[i];

    for (size_t j = 0; j < i; j++)
      if (same(s->tenant, services[j].tenant) &&
          same(s->service, services[j].service))
        page_fail(t, "service %.64s/%.64s given twice", s->tenant, s->service);
    for (size_t k = 0; k < s->n_status; k++)
      for (size_t j = 0; j < k; j++)
        if (s->by_status[k].status == s->by_status[j].status)
          page_fail(t, "service %.64s/%.64s: status %ld given twice",
                    s->tenant ? s->tenant : "?", s->service ? s->service : "?",
                    s->by_status[k].status);
  }
  for (size_t i = 0; i < n_tenants; i++)
    for (size_t j = 0; j < i; j++)
      if (same(tenants[i].name, tenants[j].name))
        page_fail(t, "tenant %.64s given twice", tenants[i].name);
}

/* The per-link gauges that take only the link label. */
struct link_gauge {
  const char *name, *help;
  size_t offset; /* of a long long in struct metrics_link */
};

static const struct link_gauge link_gauges[] = {
    {"galbridge_link_pending_ops", "Operations not yet done.",
     offsetof(struct metrics_link, pending)},
    {"galbridge_link_failed_ops", "Operations failed for good, now.",
     offsetof(struct metrics_link, failed)},
    {"galbridge_link_refused_objects",
     "Objects not synced: conflicts (an address or anchor held by an object "
     "galbridge cannot prove it made, two objects claiming one) and values "
     "it cannot take.",
     offsetof(struct metrics_link, refused)},
    {"galbridge_link_deletes_held", "Deletes waiting for approval.",
     offsetof(struct metrics_link, deletes_held)},
    {"galbridge_link_creates_held",
     "Creates waiting for approval (more than max_creates in one round).",
     offsetof(struct metrics_link, creates_held)},
};

static void
link_families(struct page *t, const struct metrics_link *links, size_t n)
{
  static const char *const kinds[] = {"create", "adopt", "update", "delete",
                                      "restore"};
  struct labels l;

  family(t, "galbridge_link_objects", "gauge",
         "Target objects the link manages.");
  for (size_t i = 0; i < n; i++) {
    l = (struct labels){
        {"link", "source", "target", "object"},
        {links[i].name, links[i].source, links[i].target, links[i].object},
        4};
    sample_ll(t, "galbridge_link_objects", &l, links[i].objects);
  }
  for (size_t g = 0; g < sizeof(link_gauges) / sizeof(link_gauges[0]); g++) {
    family(t, link_gauges[g].name, "gauge", link_gauges[g].help);
    for (size_t i = 0; i < n; i++) {
      const char *base = (const char *)&links[i];
      long long v;

      memcpy(&v, base + link_gauges[g].offset, sizeof(v));
      l = (struct labels){{"link"}, {links[i].name}, 1};
      sample_ll(t, link_gauges[g].name, &l, v);
    }
  }
  family(t, "galbridge_link_last_success_timestamp_seconds", "gauge",
         "Unix time of the last successful round, 0 if none yet.");
  for (size_t i = 0; i < n; i++) {
    l = (struct labels){{"link"}, {links[i].name}, 1};
    sample_ll(t, "galbridge_link_last_success_timestamp_seconds", &l,
              (long long)links[i].last_success);
  }
  family(t, "galbridge_link_last_round_duration_seconds", "gauge",
         "Duration of the last round.");
  for (size_t i = 0; i < n; i++) {
    l = (struct labels){{"link"}, {links[i].name}, 1};
    sample_double(t, "galbridge_link_last_round_duration_seconds", &l,
                  links[i].last_round_seconds);
  }
  family(t, "galbridge_link_rounds_total", "counter",
         "Rounds run since start.");
  for (size_t i = 0; i < n; i++) {
    l = (struct labels){{"link"}, {links[i].name}, 1};
    sample_ull(t, "galbridge_link_rounds_total", &l, links[i].rounds);
  }
  family(t, "galbridge_link_ops_total", "counter",
         "Operations since start: done by kind, failed for good, retried.");
  for (size_t i = 0; i < n; i++) {
    const struct metrics_link *k = &links[i];
    const unsigned long long done[] = {k->created, k->adopted, k->updated,
                                       k->deleted, k->restored};

    for (size_t j = 0; j < sizeof(kinds) / sizeof(kinds[0]); j++) {
      l = (struct labels){
          {"link", "kind", "result"}, {k->name, kinds[j], "ok"}, 3};
      sample_ull(t, "galbridge_link_ops_total", &l, done[j]);
    }
    l = (struct labels){
        {"link", "kind", "result"}, {k->name, "any", "failed"}, 3};
    sample_ull(t, "galbridge_link_ops_total", &l, k->op_failures);
    l = (struct labels){
        {"link", "kind", "result"}, {k->name, "any", "retry"}, 3};
    sample_ull(t, "galbridge_link_ops_total", &l, k->op_retries);
  }
}

/* The client-side budget of the services that have one. */
static void
budget_families(struct page *t, const struct metrics_service *services,
                size_t n)
{
  static const struct {
    const char *name, *type, *help;
  } fams[] = {
      {"galbridge_budget_write_rate", "gauge",
       "Directory writes per second the client-side budget allows now."},
      {"galbridge_budget_write_rate_max", "gauge",
       "Directory writes per second the budget allows when not slowed."},
      {"galbridge_budget_waited_total", "counter",
       "Requests that waited for the client-side budget."},
      {"galbridge_budget_unit_rate", "gauge",
       "Resource units per second the client-side budget allows now."},
      {"galbridge_budget_unit_rate_max", "gauge",
       "Resource units per second the budget allows when not slowed."},
  };
  struct labels l;

  for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
    int header = 0;

    for (size_t i = 0; i < n; i++) {
      const struct metrics_service *s = &services[i];

      /* Rates only of the limits that are set. */
      if (!s->has_budget || (f < 2 && !(s->write_rate_max > 0)) ||
          (f >= 3 && !(s->unit_rate_max > 0)))
        continue;
      if (!header) {
        family(t, fams[f].name, fams[f].type, fams[f].help);
        header = 1;
      }
      l = (struct labels){{"tenant", "service"}, {s->tenant, s->service}, 2};
      if (f == 0)
        sample_double(t, fams[f].name, &l, s->write_rate);
      else if (f == 1)
        sample_double(t, fams[f].name, &l, s->write_rate_max);
      else if (f == 2)
        sample_ull(t, fams[f].name, &l, s->budget_waited);
      else if (f == 3)
        sample_double(t, fams[f].name, &l, s->unit_rate);
      else
        sample_double(t, fams[f].name, &l, s->unit_rate_max);
    }
  }
}

static void
service_families(struct page *t, const struct metrics_service *services,
                 size_t n)
{
  size_t samples = 0;
  struct labels l;

  for (size_t i = 0; i < n; i++)
    samples += services[i].n_status;
  if (samples > 0) {
    family(t, "galbridge_http_requests_total", "counter",
           "HTTP requests by answer status, 0 for no answer.");
    for (size_t i = 0; i < n; i++) {
      const struct metrics_service *s = &services[i];

      for (size_t j = 0; j < s->n_status; j++) {
        char status[32];

        snprintf(status, sizeof(status), "%ld", s->by_status[j].status);
        l = (struct labels){{"tenant", "service", "status"},
                            {s->tenant, s->service, status},
                            3};
        sample_ull(t, "galbridge_http_requests_total", &l,
                   s->by_status[j].count);
      }
    }
  }
  if (n > 0) {
    family(t, "galbridge_http_throttled_total", "counter",
           "Requests the service throttled (429, or 503/504 with "
           "Retry-After).");
    for (size_t i = 0; i < n; i++) {
      l = (struct labels){
          {"tenant", "service"}, {services[i].tenant, services[i].service}, 2};
      sample_ull(t, "galbridge_http_throttled_total", &l,
                 services[i].throttled);
    }
  }
  budget_families(t, services, n);
}

/* Write all of buf to fd. Returns 0, or -1 with errno set. */
static int
write_all(int fd, const char *buf, size_t len)
{
  while (len > 0) {
    ssize_t w = write(fd, buf, len);

    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    buf += w;
    len -= (size_t)w;
  }
  return 0;
}

int
metrics_write(const char *path, const struct metrics_link *links,
              size_t n_links, const struct metrics_service *services,
              size_t n_services, const struct metrics_tenant *tenants,
              size_t n_tenants, time_t now, char *err, size_t errlen)
{
  int result = -1;
  struct page t = {0};
  char tmp[PATH_MAX];
  const char *what = NULL; /* the step that failed, for the message */
  int fd = -1, saved;
  struct labels l;

  if (err == NULL)
    errlen = 0; /* snprintf(NULL, 0, ...) below then writes nothing */
  else if (errlen > 0)
    err[0] = '\0';
  if (path == NULL || path[0] == '\0') {
    snprintf(err, errlen, "metrics_file: no path");
    return -1;
  }
  if ((n_links > 0 && links == NULL) || (n_services > 0 && services == NULL) ||
      (n_tenants > 0 && tenants == NULL)) {
    snprintf(err, errlen, "metrics_file %s: no data", path);
    return -1;
  }
  for (size_t i = 0; i < n_services; i++) {
    if (services[i].n_status > 0 && services[i].by_status == NULL) {
      snprintf(err, errlen, "metrics_file %s: no data", path);
      return -1;
    }
  }

  check_duplicates(&t, links, n_links, services, n_services, tenants,
                   n_tenants);
  if (n_links > 0)
    link_families(&t, links, n_links);
  service_families(&t, services, n_services);
  if (n_tenants > 0) {
    family(&t, "galbridge_token_refreshes_total", "counter",
           "Access tokens obtained since start.");
    for (size_t i = 0; i < n_tenants; i++) {
      l = (struct labels){{"tenant"}, {tenants[i].name}, 1};
      sample_ull(&t, "galbridge_token_refreshes_total", &l,
                 tenants[i].token_refreshes);
    }
  }
  family(&t, "galbridge_metrics_written_timestamp_seconds", "gauge",
         "Unix time this file was written.");
  l = (struct labels){{NULL}, {NULL}, 0};
  sample_ll(&t, "galbridge_metrics_written_timestamp_seconds", &l,
            (long long)now);
  if (t.failed) {
    snprintf(err, errlen, "metrics_file %s: %s", path, t.err);
    goto out;
  }

  if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
    snprintf(err, errlen, "metrics_file %s: path too long", path);
    goto out;
  }
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    what = "open";
    goto fail;
  }
  /* 0644 despite the service's UMask=0077: the collector (node_exporter)
   * runs as another user, and nothing here is secret. */
  if (fchmod(fd, 0644) != 0) {
    what = "chmod";
    goto fail;
  }
  if (write_all(fd, t.data, t.len) != 0) {
    what = "write";
    goto fail;
  }
  if (fsync(fd) != 0) {
    what = "fsync";
    goto fail;
  }
  if (close(fd) != 0) {
    fd = -1;
    what = "close";
    goto fail;
  }
  fd = -1;
  if (rename(tmp, path) != 0) {
    what = "rename";
    goto fail;
  }
  result = 0;
  goto out;

fail:
  saved = errno;
  if (fd >= 0)
    close(fd);
  fd = -1;
  if (strcmp(what, "open") != 0)
    unlink(tmp);
  snprintf(err, errlen, "metrics_file %s: %s %s: %s", path, what, tmp,
           strerror(saved));
out:
  free(t.data);
  return result;
}
