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
 * only inside the tenant's Graph base URL (graph_delta_get refuses others),
 * and a page whose link points elsewhere is refused before anything of it is
 * stored: a foreign deltaLink committed would fail every later round. A
 * deltaLink is committed with the base URL it came from; one of another
 * base URL (graph_url changed) is never followed: the round reads
 * everything instead.
 *
 * One bad object is one failed object (DESIGN.md invariant 8): an item
 * holding a value galbridge cannot take (graph_delta_item_check) is not
 * merged; its object keeps what it had, is marked refused with the
 * attribute and the reason, and counts as seen. The page and the round go
 * on.
 *
 * Paging is bounded. A nextLink already followed in this round, or more
 * pages or items than the tenant could fill (see READER_* below), fails
 * the round before anything is marked deleted (a full read marks only at
 * its end), and drops the delta link so the next round reads everything
 * afresh. The bound is "far beyond the tenant's size": N = the larger of
 * the objects stored for the tenant and its users as Graph counts them
 * ($count, asked before a full read, and in a delta round only once the
 * stored size is passed, so that a tenant that really grew is read on).
 */
#include "reader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "text.h"

#define READER_PROGRESS_SECONDS 5
#define READER_ERRMSG_MAX 768

/* The paging bound for a tenant of N objects: 2N + READER_SLACK_ITEMS
 * items (each object may come twice in a round, and a full read also
 * lists recently removed ones; the slack covers new hires and
 * tombstones of a small tenant) and N + READER_SLACK_PAGES pages (a page
 * may be empty, but Graph fills its pages with up to some hundreds of
 * users: N pages would already be one user a page). */
#define READER_SLACK_ITEMS 1000
#define READER_SLACK_PAGES 100

struct reader {
  struct store *store;
  struct graph *graph;
  const struct config_tenant *tenant;
  /* What it reads: users (key: the tenant id), or for groupcontact links
   * the tenant's groups (key "<tenant id>#groups": their own objects and
   * delta link in the store, never mixed with the users'). */
  int groups;
  char key[CONFIG_SOURCE_KEY_MAX];
  const char *select; /* GRAPH_DELTA_SELECT or GRAPH_GROUP_SELECT */
  const char *what;   /* "users" or "groups", for messages */
  char *user_id;      /* reader_user: the id of the user read, or NULL */
  int single;         /* this round reads one user (reader_user) */
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
  /* the paging bound of this round */
  long long size;         /* N: the tenant's size it is measured from */
  int counted;            /* N includes the users Graph counted */
  unsigned long paged;    /* pages of this read (a full read after an
                             expired token starts again at 0) */
  unsigned long received; /* its items, refused and skipped ones too */
  char *after_count;      /* the URL to fetch once the count is in */
  /* The links followed in this round, as hashes (a repeat of one fails
   * the round). Searched linearly: a round has at most the bound's pages,
   * a few thousand for the largest tenants, and each page costs a round
   * trip to Graph anyway. */
  unsigned long long *links;
  size_t n_links, cap_links;
};

void
reader_on_page(struct reader *reader, reader_page_fn fn, void *ctx)
{
  reader->on_page = fn;
  reader->page_ctx = ctx;
}

static void fetch(struct reader *reader, const char *url);
static void fail_past_bound(struct reader *reader);

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
  snprintf(reader->key, sizeof(reader->key), "%s", tenant->tenant_id);
  reader->select = GRAPH_DELTA_SELECT;
  reader->what = "users";
  return reader;
}

struct reader *
reader_new_groups(struct store *store, struct graph *graph,
                  const struct config_tenant *tenant)
{
  struct reader *reader = reader_new(store, graph, tenant);

  if (reader == NULL)
    return NULL;
  reader->groups = 1;
  snprintf(reader->key, sizeof(reader->key), "%s#groups", tenant->tenant_id);
  reader->select = GRAPH_GROUP_SELECT;
  reader->what = "groups";
  return reader;
}

void
reader_free(struct reader *reader)
{
  if (reader == NULL)
    return;
  free(reader->after_count);
  free(reader->links);
  free(reader->user_id);
  free(reader);
}

/* The field a groups read adds to its log lines after source=. */
static const char *
groups_field(const struct reader *reader)
{
  return reader->groups ? " objects=groups" : "";
}

static unsigned long long
link_hash(const char *base, const char *url)
{
  unsigned long long h = 0xcbf29ce484222325ULL;

  /* A path is under the base: hash the absolute URL it stands for. */
  for (const char *p = url[0] == '/' ? base : ""; *p != '\0'; p++)
    h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
  for (const char *p = url; *p != '\0'; p++)
    h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
  return h;
}

/* Remember a link followed in this round: 1 when it was followed before
 * (a loop), 0 when new, -1 on allocation failure. */
static int
link_seen(struct reader *reader, const char *url)
{
  unsigned long long h = link_hash(graph_base_url(reader->graph), url);

  for (size_t i = 0; i < reader->n_links; i++) {
    if (reader->links[i] == h)
      return 1;
  }
  if (reader->n_links == reader->cap_links) {
    size_t cap = reader->cap_links ? reader->cap_links * 2 : 64;
    unsigned long long *grown =
        realloc(reader->links, cap * sizeof(*reader->links));
    if (grown == NULL)
      return -1;
    reader->links = grown;
    reader->cap_links = cap;
  }
  reader->links[reader->n_links++] = h;
  return 0;
}

static unsigned long
bound_items(const struct reader *reader)
{
  return 2 * (unsigned long)reader->size + READER_SLACK_ITEMS;
}

static unsigned long
bound_pages(const struct reader *reader)
{
  return (unsigned long)reader->size + READER_SLACK_PAGES;
}

static int
past_bound(const struct reader *reader)
{
  return reader->paged > bound_pages(reader) ||
         reader->received > bound_items(reader);
}

static void
round_end(struct reader *reader, int result, int permanent, const char *errmsg)
{
  reader_done_fn done = reader->done;

  reader->running = 0;
  reader->stats.seconds = since(&reader->started);
  free(reader->after_count);
  reader->after_count = NULL;
  if (result == 0 && reader->single) {
    log_info("user read done source=%s id=%s refused=%lu duration=%.2fs",
             reader->tenant->name, reader->user_id, reader->stats.refused,
             reader->stats.seconds);
  } else if (result == 0) {
    log_info("delta round done source=%s%s mode=%s pages=%lu items=%lu "
             "removed=%lu unseen=%lu refused=%lu duration=%.2fs",
             reader->tenant->name, groups_field(reader),
             reader->full ? "full" : "delta", reader->stats.pages,
             reader->stats.items, reader->stats.removed, reader->stats.unseen,
             reader->stats.refused, reader->stats.seconds);
  } else {
    log_error("%s failed source=%s%s pages=%lu error=\"%s\"",
              reader->single ? "user read" : "delta round",
              reader->tenant->name, groups_field(reader), reader->stats.pages,
              errmsg);
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

/* Paging went wrong (a loop, or past the bound): the round fails, and
 * since the links of this round cannot be trusted, the next one starts
 * afresh with a full read. Nothing was marked deleted: a full read marks
 * the unseen only when its deltaLink comes. */
static void fail_paging(struct reader *reader, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
fail_paging(struct reader *reader, const char *fmt, ...)
{
  char msg[READER_ERRMSG_MAX];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (store_delta_reset(reader->store, reader->key) != 0)
    log_error("cannot drop the delta link source=%s", reader->tenant->name);
  fail(reader, 0,
       "source %s: %s; the round stops here (nothing is marked deleted "
       "for not being read) and the next one reads the tenant in full",
       reader->tenant->name, msg);
}

static void on_count(void *ctx, const struct graph_response *resp,
                     long long count);

/* Ask Graph how many users the tenant has, then fetch `url`. */
static int
count_then_fetch(struct reader *reader, const char *url)
{
  free(reader->after_count);
  reader->after_count = strdup(url);
  if (reader->after_count == NULL)
    return -1;
  return reader->groups ? graph_group_count(reader->graph, on_count, reader)
                        : graph_user_count(reader->graph, on_count, reader);
}

/* Start (or restart) a full read: new generation, committed alone; the
 * tenant's size is asked first (the paging bound). */
static int
start_full(struct reader *reader)
{
  char url[512];

  snprintf(url, sizeof(url), "/v1.0/%s/delta?$select=%s", reader->what,
           reader->select);
  if (store_delta_start_full(reader->store, reader->key, reader->select,
                             time(NULL), &reader->gen) != 0)
    return -1;

  reader->full = 1;
  reader->stats.full = 1;
  reader->paged = 0;
  reader->received = 0;
  reader->n_links = 0;
  if (link_seen(reader, url) < 0 || count_then_fetch(reader, url) != 0)
    return -1;
  return 0;
}

int
reader_put_keys(struct store *store, const char *tenant_id, const char *id,
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

/* Merge one item (delta, or a user read on its own: `replace`, the
 * whole object) into the store, inside the caller's transaction. An item
 * holding a value galbridge cannot take is refused alone: the object
 * keeps what it had (store_source_bad). `replace` 2 is a user read alone
 * (reader_user), which does not read the manager: the stored one stays
 * (only users/delta says when it changes). */
static int
store_item(struct reader *reader, const json_t *item, int replace, char *err,
           size_t errlen)
{
  const char *tid = reader->key;
  const char *id = graph_delta_item_id(item);
  char attr[160], bad[320];
  const char *reason;
  char *old_text = NULL, *new_text = NULL;
  json_t *old = NULL, *merged = NULL;
  int old_removed, removed = 0, rc = -1;

  if (id == NULL)
    return 0; /* counted in page->skipped, logged by the caller */
  if (graph_delta_item_check(item, attr, sizeof(attr), &reason) != 0) {
    /* One bad object is one failed object: nothing of the item is
     * taken, the object keeps what it had and counts as seen. */
    snprintf(bad, sizeof(bad), "%s: %s", attr, reason);
    if (store_source_bad(reader->store, tid, id, bad, reader->gen) != 0) {
      snprintf(err, errlen, "cannot store delta item %s", id);
      return -1;
    }
    log_warning("source value refused, object kept as it was source=%s "
                "id=%s attribute=%s reason=\"%s\"",
                reader->tenant->name, id, attr, reason);
    reader->stats.refused++;
    reader->stats.items++;
    return 0;
  }

  if (store_source_get(reader->store, tid, id, &old_text, &old_removed) != 0)
    goto out;
  if (old_text != NULL)
    old = json_loads(old_text, 0, NULL);
  merged = graph_delta_merge(old, item, replace, &removed);
  if (merged == NULL)
    goto out;
  if (replace == 2 && json_object_get(old, "manager") != NULL &&
      json_object_set(merged, "manager", json_object_get(old, "manager")) != 0)
    goto out;
  new_text = json_dumps(merged, JSON_COMPACT | JSON_SORT_KEYS);
  if (new_text == NULL)
    goto out;
  if (store_source_put(reader->store, tid, id, new_text, removed,
                       reader->gen) != 0)
    goto out;
  /* What it holds (addresses, anchors) for lookups before writes; an
   * unchanged object keeps its keys, but a full read writes them all (a
   * store from before schema 4 has none). */
  if ((replace || old_text == NULL || strcmp(old_text, new_text) != 0 ||
       old_removed != removed) &&
      reader_put_keys(reader->store, tid, id,
                      removed == GRAPH_PRESENT ? merged : NULL) != 0)
    goto out;
  if (removed != GRAPH_PRESENT)
    reader->stats.removed++;
  reader->stats.items++;
  rc = 0;
out:
  free(old_text);
  free(new_text);
  json_decref(old);
  json_decref(merged);
  if (rc != 0)
    snprintf(err, errlen, "cannot store delta item %s", id);
  return rc;
}

/* Merge one page and, on the last one, commit the deltaLink with it. */
static int
store_page(struct reader *reader, const struct graph_delta_page *page,
           char *err, size_t errlen)
{
  const char *tid = reader->key;
  json_t *item;
  size_t i;
  int result = -1;

  if (store_begin(reader->store) != 0) {
    snprintf(err, errlen, "cannot begin a store transaction");
    return -1;
  }
  json_array_foreach(page->items, i, item)
  {
    if (store_item(reader, item, reader->full, err, errlen) != 0)
      goto out;
  }
  if (page->delta_link != NULL) {
    long long unseen = 0;
    if (store_delta_finish(reader->store, tid, page->delta_link,
                           graph_base_url(reader->graph), reader->gen,
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
  log_info("delta round progress source=%s%s mode=%s pages=%lu items=%lu "
           "rate=%.0f/s",
           reader->tenant->name, groups_field(reader),
           reader->full ? "full" : "delta", reader->stats.pages,
           reader->stats.items,
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
    fail(reader, 0, "source %s: bad %s/delta page %lu: %s",
         reader->tenant->name, reader->what, reader->stats.pages + 1, err);
    return;
  }
  link = page.next_link != NULL ? page.next_link : page.delta_link;
  if (!graph_url_is_under(graph_base_url(reader->graph), link)) {
    fail(reader, 0,
         "source %s: bad %s/delta page %lu: %s is not a URL under %s",
         reader->tenant->name, reader->what, reader->stats.pages + 1,
         page.next_link != NULL ? "@odata.nextLink" : "@odata.deltaLink",
         graph_base_url(reader->graph));
    return;
  }
  if (page.next_link != NULL) {
    int seen = link_seen(reader, page.next_link);
    if (seen != 0) {
      if (seen < 0)
        fail(reader, 0, "source %s: out of memory", reader->tenant->name);
      else
        fail_paging(reader,
                    "%s/delta page %lu: its @odata.nextLink leads back "
                    "to a page already read in this round",
                    reader->what, reader->stats.pages + 1);
      return;
    }
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
  reader->paged++;
  reader->received += json_array_size(page.items);
  if (page.delta_link != NULL) {
    round_end(reader, 0, 0, "");
    return;
  }
  progress(reader);
  if (past_bound(reader)) {
    if (!reader->counted) {
      /* Past what the stored objects allow: the tenant may have grown
       * since. Graph's count decides. */
      if (count_then_fetch(reader, page.next_link) != 0)
        fail(reader, 0, "source %s: cannot ask the tenant's size",
             reader->tenant->name);
      return;
    }
    fail_past_bound(reader);
    return;
  }
  if (reader->on_page != NULL)
    reader->on_page(reader->page_ctx, &reader->stats);
  fetch(reader, page.next_link);
}

static void
fail_past_bound(struct reader *reader)
{
  fail_paging(reader,
              "%s/delta paging past its bound: %lu pages and %lu items "
              "read, more than %lu pages or %lu items for a tenant of %lld "
              "objects",
              reader->what, reader->paged, reader->received,
              bound_pages(reader), bound_items(reader), reader->size);
}

static void
on_count(void *ctx, const struct graph_response *resp, long long count)
{
  struct reader *reader = ctx;
  char *url = reader->after_count;

  reader->after_count = NULL;
  if (resp->result == GRAPH_ERR_CANCELLED) {
    free(url);
    fail(reader, 0, "source %s: cancelled", reader->tenant->name);
    return;
  }
  if (resp->result == GRAPH_ERR_AUTH) {
    /* No token: the pages could not be read either. */
    free(url);
    fail(reader, resp->auth_permanent, "source %s: %s", reader->tenant->name,
         resp->errmsg);
    return;
  }
  reader->counted = (count >= 0);
  if (count < 0) {
    /* The stored size stays the measure. */
    log_warning("cannot count the tenant's %s, paging bound from the "
                "stored objects source=%s objects=%lld error=\"%s\"",
                reader->what, reader->tenant->name, reader->size,
                resp->errmsg);
  } else {
    log_debug("tenant size source=%s users=%lld stored=%lld",
              reader->tenant->name, count, reader->size);
    if (count > reader->size)
      reader->size = count;
  }
  if (past_bound(reader)) {
    free(url);
    fail_past_bound(reader);
    return;
  }
  /* The first page of a full read, or the next of a round that was
   * found still within its bound. */
  if (reader->paged > 0 && reader->on_page != NULL)
    reader->on_page(reader->page_ctx, &reader->stats);
  fetch(reader, url);
  free(url);
}

static void
fetch(struct reader *reader, const char *url)
{
  if (graph_delta_get(reader->graph, url, on_page, reader) != 0) {
    /* graph_delta_get refuses links outside the tenant's Graph base URL. */
    fail(reader, 0, "source %s: cannot follow link outside %s",
         reader->tenant->name, graph_base_url(reader->graph));
  }
}

int
reader_round(struct reader *reader, reader_done_fn done, void *ctx)
{
  struct store_delta_state state;
  struct store_source_counts counts;
  const char *base = graph_base_url(reader->graph);
  const char *why_full = NULL;
  int result = -1;

  if (reader->running)
    return -1;
  if (store_delta_get(reader->store, reader->key, &state) != 0)
    return -1;
  if (store_source_count(reader->store, reader->key, &counts) != 0)
    goto out;

  memset(&reader->stats, 0, sizeof(reader->stats));
  clock_gettime(CLOCK_MONOTONIC, &reader->started);
  reader->last_progress = time(NULL);
  reader->done = done;
  reader->ctx = ctx;
  reader->resynced = 0;
  reader->size = counts.present + counts.soft_deleted + counts.deleted;
  reader->counted = 0;
  reader->paged = 0;
  reader->received = 0;
  reader->n_links = 0;
  reader->single = 0;

  if (state.full)
    why_full = "previous-full-read-unfinished";
  else if (state.delta_link == NULL)
    why_full = "no-delta-link";
  else if (state.select == NULL || strcmp(state.select, reader->select) != 0)
    why_full = "select-changed";
  else if (!graph_delta_link_usable(base, state.base_url, state.delta_link))
    why_full = "graph-url-changed";

  if (why_full != NULL && strcmp(why_full, "graph-url-changed") == 0) {
    char was[256];
    graph_url_origin(state.base_url != NULL ? state.base_url
                                            : state.delta_link,
                     was, sizeof(was));
    log_notice("delta link of another Graph base URL not followed, reading "
               "everything again source=%s link_base=%s graph_url=%s",
               reader->tenant->name, was, base);
  }
  reader->running = 1;
  if (why_full != NULL) {
    log_info("delta round start source=%s%s mode=full reason=%s",
             reader->tenant->name, groups_field(reader), why_full);
    reader->resynced = 1;
    if (start_full(reader) != 0) {
      reader->running = 0;
      goto out;
    }
  } else {
    log_debug("delta round start source=%s%s mode=delta", reader->tenant->name,
              groups_field(reader));
    if (store_delta_start(reader->store, reader->key, time(NULL)) != 0 ||
        link_seen(reader, state.delta_link) < 0) {
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

/* --- one user (sync --user) --- */

static void
on_user(void *ctx, const struct graph_response *resp)
{
  struct reader *reader = ctx;
  char err[READER_ERRMSG_MAX];
  const char *id;

  if (resp->result == GRAPH_ERR_CANCELLED) {
    fail(reader, 0, "source %s: cancelled", reader->tenant->name);
    return;
  }
  if (resp->result != GRAPH_OK && resp->status == 404) {
    /* Nothing is marked deleted on the strength of one answer (a new
     * user may not be replicated yet): the rounds see deletions. */
    fail(reader, 1, "source %s: no such user (%s); nothing was changed",
         reader->tenant->name, resp->code);
    return;
  }
  if (resp->result != GRAPH_OK) {
    fail(reader, resp->auth_permanent, "source %s: %s", reader->tenant->name,
         resp->errmsg);
    return;
  }
  id = json_is_object(resp->body) ? graph_delta_item_id(resp->body) : NULL;
  if (id == NULL) {
    fail(reader, 1, "source %s: the answer holds no user id",
         reader->tenant->name);
    return;
  }
  reader->user_id = strdup(id);
  if (reader->user_id == NULL) {
    fail(reader, 0, "source %s: out of memory", reader->tenant->name);
    return;
  }
  if (store_begin(reader->store) != 0) {
    fail(reader, 0, "source %s: cannot begin a store transaction",
         reader->tenant->name);
    return;
  }
  if (store_item(reader, resp->body, 2, err, sizeof(err)) != 0 ||
      store_commit(reader->store) != 0) {
    store_rollback(reader->store);
    fail(reader, 0, "source %s: %s", reader->tenant->name, err);
    return;
  }
  reader->stats.pages = 1;
  round_end(reader, 0, 0, "");
}

struct ids {
  char *id;
  size_t n;
};

static int
collect_id(void *ctx, const char *id, const char *value)
{
  struct ids *ids = ctx;

  (void)value;
  if (ids->n++ == 0 && (ids->id = strdup(id)) == NULL)
    return -1;
  return 0;
}

int
reader_user(struct reader *reader, const char *who, reader_done_fn done,
            void *ctx)
{
  struct store_delta_state state;
  struct ids ids = {0};
  char key[600], url[1024];
  const char *name = who;
  size_t n = 0;
  int result = -1;

  if (reader->running)
    return -1;
  if (reader->groups) {
    log_error("sync --user reads one user: source=%s objects=groups reads "
              "groups, in rounds only",
              reader->tenant->name);
    return -1;
  }
  /* An address (mail, userPrincipalName or proxy address) the store knows
   * names one user; else Graph takes an id or a userPrincipalName. */
  snprintf(key, sizeof(key), "addr:%s", who);
  for (char *c = key; *c != '\0'; c++) {
    if (*c >= 'A' && *c <= 'Z')
      *c = (char)(*c - 'A' + 'a');
  }
  if (!text_is_guid(who) &&
      store_object_lookup(reader->store, reader->tenant->tenant_id, key,
                          collect_id, &ids) < 0)
    goto out;
  if (ids.n > 1) {
    log_error("several users of source %s hold the address %s: name one "
              "by its object id (galbridge explain lists them)",
              reader->tenant->name, who);
    goto out;
  }
  if (ids.n == 1)
    name = ids.id;
  n = (size_t)snprintf(url, sizeof(url), "/v1.0/users/");
  for (const unsigned char *c = (const unsigned char *)name;
       *c != '\0' && n + 4 < sizeof(url); c++) {
    if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
        (*c >= '0' && *c <= '9') || strchr("-._~@", *c) != NULL)
      url[n++] = (char)*c;
    else
      n += (size_t)snprintf(url + n, sizeof(url) - n, "%%%02X", *c);
  }
  url[n] = '\0';
  if (n + sizeof("?$select=" GRAPH_USER_SELECT) > sizeof(url)) {
    log_error("user name too long source=%s", reader->tenant->name);
    goto out;
  }
  snprintf(url + n, sizeof(url) - n, "?$select=%s", GRAPH_USER_SELECT);
  if (store_delta_get(reader->store, reader->tenant->tenant_id, &state) != 0)
    goto out;
  reader->gen = state.gen;
  store_delta_state_clear(&state);
  memset(&reader->stats, 0, sizeof(reader->stats));
  clock_gettime(CLOCK_MONOTONIC, &reader->started);
  free(reader->user_id);
  reader->user_id = NULL;
  reader->done = done;
  reader->ctx = ctx;
  reader->single = 1;
  reader->full = 0;
  if (graph_get(reader->graph, url, NULL, on_user, reader) != 0)
    goto out;
  reader->running = 1;
  result = 0;
out:
  free(ids.id);
  return result;
}

const char *
reader_user_id(const struct reader *reader)
{
  return reader->user_id;
}
