/*
 * metrics — the Prometheus text file (the node exporter's textfile
 * collector format), rewritten atomically after each round: written to
 * "<path>.tmp" in the same directory, fsync'd, then renamed over <path>,
 * so a scraper never reads half a file.
 *
 * Plain data in, text out: the caller gathers the figures.
 */
#ifndef GALBRIDGE_METRICS_H
#define GALBRIDGE_METRICS_H

#include <stddef.h>
#include <time.h>

struct metrics_link {
  const char *name, *source, *target, *object;
  long long objects;      /* target objects managed */
  long long pending;      /* ops not yet done */
  long long failed;       /* ops failed for good, now */
  long long refused;      /* of those, objects refused (conflicts...) */
  long long deletes_held; /* deletes waiting for approval */
  long long creates_held; /* creates waiting for approval (max_creates) */
  time_t last_success;    /* 0: never */
  double last_round_seconds;
  unsigned long long rounds;
  /* ops completed since start, by kind */
  unsigned long long created, adopted, updated, deleted, restored;
  /* ops that failed since start: for good, and for now (retried) */
  unsigned long long op_failures, op_retries;
};

struct metrics_status_count {
  long status; /* HTTP status, 0 for no answer (network error) */
  unsigned long long count;
};

struct metrics_service {
  const char *tenant;  /* [tenant NAME] */
  const char *service; /* "login", "graph", "exchange" */
  const struct metrics_status_count *by_status;
  size_t n_status;
  unsigned long long throttled; /* 429 and 503/504 with Retry-After */
  /* The client-side write budget (http_gate_budget), when has_budget. */
  int has_budget;
  double write_rate;                /* writes per second allowed now */
  double write_rate_max;            /* ... and when not slowed */
  double unit_rate;                 /* resource units per second now */
  double unit_rate_max;             /* ... and when not slowed (0: off) */
  unsigned long long budget_waited; /* requests that waited for it */
};

struct metrics_tenant {
  const char *name;
  unsigned long long token_refreshes;
};

/* Write the file: families in the order above, series in the order given,
 * a family with no series left out (the timestamp is always there). The
 * file is mode 0644 whatever the umask. Returns 0, or -1 with err set to
 * "metrics_file PATH: ..." and the old file untouched, no "<path>.tmp"
 * left: for a label value that is NULL, over 1024 bytes or not UTF-8, a
 * series given twice (a link, tenant, tenant/service or status repeated),
 * or a failed open/write/fsync/close/rename ("<step> PATH.tmp: <strerror>").
 * err may be NULL with errlen 0. It calls fsync(2), which may block. */
int metrics_write(const char *path, const struct metrics_link *links,
                  size_t n_links, const struct metrics_service *services,
                  size_t n_services, const struct metrics_tenant *tenants,
                  size_t n_tenants, time_t now, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
