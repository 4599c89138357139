/*
 * reader — see include/reader.h.
 *
 * The round is a small state machine driven by graph callbacks:
 *
 *   begin ─▶ fetch(url) ─▶ on_page ─┬─ nextLink ─▶ fetch(nextLink)
 *                                  ├─ deltaLink ─▶ finish (commit link)
 *                                  └─ token expired ─▶ start_full ─▶ fetch
 *
 * Each page is merged in its own transaction; nothing of a page that fails
 * to parse or to store is committed. Links from the service are followed
 * only inside the tenant's Graph base URL (graph_get refuses others), and
 * a page whose link points elsewhere is refused before anything of it is
 * stored: a foreign deltaLink committed would fail every later round.
 */
#include "reader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define READER_PROGRESS_SECONDS 5
#define READER_ERRMSG_MAX 768

struct reader {
  struct store *store;
  struct graph *graph;
  const struct config_tenant *tenant;
  int running;
  int resynced; /* this round already restarted as a full read */
  long long gen;
  int full;
  struct reader_stats stats;
  struct timespec started;
  time_t last_progress;
  reader_done_fn done;
  void *ctx;
  reader_page_fn on_page;
  void *page_ctx;
};

void
reader_on_page(struct reader *reader, reader_page_fn fn, void *ctx)
{
  reader->on_page = fn;
  reader->page_ctx = ctx;
}

static void fetch(struct reader *reader, const char *url);

static double
since(const struct timespec *t0)
{
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - t0->tv_sec) +
         (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

struct reader *
reader_new(struct store *store, struct graph *graph,
           const struct config_tenant *tenant)
{
  struct reader *reader = calloc(1, sizeof(*reader));

  if (reader == NULL)
    return NULL;
  reader->store = store;
  reader->graph = graph;
  reader->tenant = tenant;
  return reader;
}

void
reader_free(struct reader *reader)
{
  free(reader);
}

static void
round_end(struct reader *reader, int result, int permanent, const char *errmsg)
{
  reader_done_fn done = reader->done;

  reader->running = 0;
  reader->stats.seconds = since(&reader->started);
  if (result == 0) {
    log_info("delta round done source=%s mode=%s pages=%lu items=%lu "
             "removed=%lu unseen=%lu duration=%.2fs",
             reader->tenant->name, reader->full ? "full" : "delta",
             reader->stats.pages, reader->stats.items, reader->stats.removed,
             reader->stats.unseen, reader->stats.seconds);
  } else {
    log_error("delta round failed source=%s pages=%lu error=\"%s\"",
              reader->tenant->name, reader->stats.pages, errmsg);
  }
  done(reader->ctx, result, permanent, errmsg, &reader->stats);
}

static void fail(struct reader *reader, int permanent, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
fail(struct reader *reader, int permanent, const char *fmt, ...)
{
  char msg[READER_ERRMSG_MAX];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  round_end(reader, -1, permanent, msg);
}

/* Start (or restart) a full read: new generation, committed alone. */
static int
start_full(struct reader *reader)
{
  if (store_delta_start_full(reader->store, reader->tenant->tenant_id,
                             GRAPH_USER_SELECT, time(NULL), &reader->gen) != 0)
    return -1;
  reader->full = 1;
  reader->stats.full = 1;
  fetch(reader, "/v1.0/users/delta?$select=" GRAPH_USER_SELECT);
  return 0;
}

/* Index the keys of a stored object (none when `attrs` is NULL). */
static int
put_keys(struct store *store, const char *tenant_id, const char *id,
         const json_t *attrs)
{
  json_t *keys = attrs != NULL ? graph_user_keys(attrs) : json_array(), *kv;
  const char **k = NULL, **v = NULL;
  size_t n = json_array_size(keys), i;
  int rc = -1;

  if (keys == NULL)
    return -1;
  k = calloc(n + 1, sizeof(*k));
  v = calloc(n + 1, sizeof(*v));
  if (k == NULL || v == NULL)
    goto out;
  json_array_foreach(keys, i, kv)
  {
    k[i] = json_string_value(json_array_get(kv, 0));
    v[i] = json_string_value(json_array_get(kv, 1));
  }
  rc = store_object_keys_put(store, tenant_id, id, k, v, n);
out:
  free(k);
  free(v);
  json_decref(keys);
  return rc;
}

/* Merge one page and, on the last one, commit the deltaLink with it. */
static int
store_page(struct reader *reader, const struct graph_delta_page *page,
           char *err, size_t errlen)
{
  const char *tid = reader->tenant->tenant_id;
  json_t *item;
  size_t i;
  int result = -1;

  if (store_begin(reader->store) != 0) {
    snprintf(err, errlen, "cannot begin a store transaction");
    return -1;
  }
  json_array_foreach(page->items, i, item)
  {
    const char *id = graph_delta_item_id(item);
    char *old_text = NULL, *new_text = NULL;
    json_t *old = NULL, *merged = NULL;
    int old_removed, removed = 0, rc = -1;

    if (id == NULL)
      continue; /* counted in page->skipped, logged by the caller */

    if (store_source_get(reader->store, tid, id, &old_text, &old_removed) != 0)
      goto item_out;
    if (old_text != NULL)
      old = json_loads(old_text, 0, NULL);
    merged = graph_delta_merge(old, item, reader->full, &removed);
    if (merged == NULL)
      goto item_out;
    new_text = json_dumps(merged, JSON_COMPACT | JSON_SORT_KEYS);
    if (new_text == NULL)
      goto item_out;
    if (store_source_put(reader->store, tid, id, new_text, removed,
                         reader->gen) != 0)
      goto item_out;
    /* What it holds (addresses, anchors) for lookups before writes; an
     * unchanged object keeps its keys. */
    if ((old_text == NULL || strcmp(old_text, new_text) != 0 ||
         old_removed != removed) &&
        put_keys(reader->store, tid, id,
                 removed == GRAPH_PRESENT ? merged : NULL) != 0)
      goto item_out;
    if (removed != GRAPH_PRESENT)
      reader->stats.removed++;
    reader->stats.items++;
    rc = 0;
  item_out:
    free(old_text);
    free(new_text);
    json_decref(old);
    json_decref(merged);
    if (rc != 0) {
      snprintf(err, errlen, "cannot store delta item %s", id);
      goto out;
    }
  }
  if (page->delta_link != NULL) {
    long long unseen = 0;
    if (store_delta_finish(reader->store, tid, page->delta_link, reader->gen,
                           time(NULL), &unseen) != 0) {
      snprintf(err, errlen, "cannot save the delta link");
      goto out;
    }
    reader->stats.unseen = (unsigned long)unseen;
  }
  if (store_commit(reader->store) != 0) {
    snprintf(err, errlen, "cannot commit the page");
    goto out;
  }
  result = 0;

out:
  if (result != 0)
    store_rollback(reader->store);
  return result;
}

static void
progress(struct reader *reader)
{
  time_t now = time(NULL);

  if (now - reader->last_progress < READER_PROGRESS_SECONDS)
    return;
  reader->last_progress = now;
  log_info("delta round progress source=%s mode=%s pages=%lu items=%lu "
           "rate=%.0f/s",
           reader->tenant->name, reader->full ? "full" : "delta",
           reader->stats.pages, reader->stats.items,
           (double)reader->stats.items / (since(&reader->started) + 1e-9));
}

static void
on_page(void *ctx, const struct graph_response *resp)
{
  struct reader *reader = ctx;
  struct graph_delta_page page;
  char err[READER_ERRMSG_MAX];
  const char *link;

  if (resp->result == GRAPH_ERR_CANCELLED) {
    fail(reader, 0, "source %s: cancelled", reader->tenant->name);
    return;
  }
  if (graph_delta_needs_resync(resp) && !reader->resynced) {
    log_notice("delta token no longer valid, reading everything again "
               "source=%s status=%ld code=%s",
               reader->tenant->name, resp->status, resp->code);
    reader->resynced = 1;
    if (start_full(reader) != 0)
      fail(reader, 0, "source %s: cannot start a full read",
           reader->tenant->name);
    return;
  }
  if (resp->result != GRAPH_OK) {
    fail(reader, resp->auth_permanent, "source %s: %s", reader->tenant->name,
         resp->errmsg);
    return;
  }
  if (graph_delta_page_parse(resp->body, &page, err, sizeof(err)) != 0) {
    fail(reader, 0, "source %s: bad users/delta page %lu: %s",
         reader->tenant->name, reader->stats.pages + 1, err);
    return;
  }
  link = page.next_link != NULL ? page.next_link : page.delta_link;
  if (!graph_url_is_under(graph_base_url(reader->graph), link)) {
    fail(reader, 0,
         "source %s: bad users/delta page %lu: %s is not a URL under %s",
         reader->tenant->name, reader->stats.pages + 1,
         page.next_link != NULL ? "@odata.nextLink" : "@odata.deltaLink",
         graph_base_url(reader->graph));
    return;
  }
  if (page.skipped > 0)
    log_warning("delta items without an id skipped source=%s page=%lu "
                "count=%zu",
                reader->tenant->name, reader->stats.pages + 1, page.skipped);
  if (store_page(reader, &page, err, sizeof(err)) != 0) {
    fail(reader, 0, "source %s: %s", reader->tenant->name, err);
    return;
  }
  reader->stats.pages++;
  if (page.delta_link != NULL) {
    round_end(reader, 0, 0, "");
    return;
  }
  progress(reader);
  if (reader->on_page != NULL)
    reader->on_page(reader->page_ctx, &reader->stats);
  fetch(reader, page.next_link);
}

static void
fetch(struct reader *reader, const char *url)
{
  if (graph_get(reader->graph, url, NULL, on_page, reader) != 0) {
    /* graph_get refuses links outside the tenant's Graph base URL. */
    fail(reader, 0, "source %s: cannot follow link outside %s",
         reader->tenant->name, graph_base_url(reader->graph));
  }
}

int
reader_round(struct reader *reader, reader_done_fn done, void *ctx)
{
  struct store_delta_state state;
  int result = -1;

  if (reader->running)
    return -1;
  if (store_delta_get(reader->store, reader->tenant->tenant_id, &state) != 0)
    return -1;

  memset(&reader->stats, 0, sizeof(reader->stats));
  clock_gettime(CLOCK_MONOTONIC, &reader->started);
  reader->last_progress = time(NULL);
  reader->done = done;
  reader->ctx = ctx;
  reader->resynced = 0;
  reader->running = 1;

  if (state.delta_link == NULL || state.full || state.select == NULL ||
      strcmp(state.select, GRAPH_USER_SELECT) != 0) {
    log_info("delta round start source=%s mode=full reason=%s",
             reader->tenant->name,
             state.full                 ? "previous-full-read-unfinished"
             : state.delta_link == NULL ? "no-delta-link"
                                        : "select-changed");
    reader->resynced = 1;
    if (start_full(reader) != 0) {
      reader->running = 0;
      goto out;
    }
  } else {
    log_debug("delta round start source=%s mode=delta", reader->tenant->name);
    if (store_delta_start(reader->store, reader->tenant->tenant_id,
                          time(NULL)) != 0) {
      reader->running = 0;
      goto out;
    }
    reader->gen = state.gen;
    reader->full = 0;
    fetch(reader, state.delta_link);
  }
  result = 0;

out:
  store_delta_state_clear(&state);
  return result;
}
