/*
 * scheduler — see include/scheduler.h.
 *
 * Objects and their lives:
 *   tctx    per tenant in use: auth + Graph client
 *   source  per source tenant: a reader and, in RUN, an interval timer
 *   lrun    per link: compiled mapping and filter, an executor, the state
 *           of its current round (idle → members → executing → idle)
 *
 * A source round ends in on_read(), which starts the round of every link
 * reading from it. In SYNC and PLAN the scheduler is done when every
 * source has been read and every link's round has ended.
 */
#include "scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "anchor.h"
#include "auth.h"
#include "executor.h"
#include "exo.h"
#include "graph.h"
#include "log.h"
#include "mailbox.h"
#include "mapping.h"
#include "migration.h"
#include "metrics.h"
#include "photo.h"
#include "reader.h"
#include "scope.h"

#define SYNC_PASSES 3
#define EXECUTOR_IN_FLIGHT 8

struct tctx {
  const struct config_tenant *tenant;
  struct auth *auth;
  struct graph *graph;
  struct exo *exo; /* only for targets of mail contact / mail user links */
  /* gate_learnt_changes() of its Graph gate when last saved or loaded */
  unsigned long long budget_saved;
};

struct source {
  struct scheduler *s;
  struct tctx *tc;
  struct reader *reader;
  int groups; /* reads the tenant's groups (groupcontact links) */
  long interval;
  uv_timer_t timer;
  int timer_live;
  int reading;
  int read_once;
  int failed;
  unsigned long last_items; /* delta items of the last round */
  int triggered;            /* SIGUSR1 came while busy: go again when done */
  int forced; /* SIGUSR1: the next round of its links runs, due or not */
  unsigned long kick_pages; /* pages read when links last streamed */
};

enum lrun_state { LRUN_IDLE, LRUN_MEMBERS, LRUN_EXECUTING };

struct lrun {
  struct scheduler *s;
  const struct config_link *link;
  struct mapping *mapping;
  struct scope_filter *filter;
  struct source *source;
  struct source *tsource; /* the target tenant's own reads */
  struct tctx *target;
  struct executor *executor;
  enum lrun_state state;
  json_t *members;  /* the scope groups' members (their union), or NULL */
  json_t *excluded; /* member id → "member of exclude_group G", or NULL */
  size_t group_at;  /* the group being read: scope groups, then excluded */
  int pass;
  int followed; /* this round planned again for its new managers */
  int rounds;
  int failed;       /* this round could not be planned or run */
  int ops_failed;   /* permanent failures in this round */
  int transient;    /* ops left pending after the last pass */
  uint64_t started; /* uv_hrtime() at the round's start */
  struct executor_stats total;
  /* RUN: since start, for metrics */
  struct executor_stats sum;
  unsigned long long op_retries;
  double last_round_seconds;
  long backoff;      /* seconds before the next round while ops are pending */
  uint64_t next_due; /* RUN: uv_now() from which its next round may run */
  int wanted;        /* its source was read: a round is to run */
  int partial;       /* this round runs while its source is still read */
  int recovering;    /* found with no state: its copies whose source
                        object is gone are taken up after a whole read */
  int vis_pending;   /* Exchange visibility checks in flight */
  unsigned long vis_fixed;
  /* migration = yes: the target's accepted domains (read hourly) and
   * when the source's mailboxes were last read (at most once a round). */
  struct migration_target mig;
  json_t *accepted;
  char *initial;
  time_t domains_at;
  time_t mailboxes_at;
  struct photo_pass *photos; /* its photo checks in flight, or NULL */
};

struct scheduler {
  uv_loop_t *loop;
  struct http *http;
  struct store *store;
  const struct config *cfg;
  struct anchor_key *key; /* anchor_key_file's, or NULL */
  struct scheduler_opts opts;
  struct tctx *tctx;
  size_t n_tctx;
  struct source *sources;
  size_t n_sources;
  struct lrun *lruns;
  size_t n_lruns;
  int stopping;
  int finished;
  int closing; /* timers whose close callback is still to come */
  void (*done)(void *ctx);
  void *done_ctx;
};

/* --- set-up --- */

static struct tctx *
tctx_for(struct scheduler *s, const struct config_tenant *t)
{
  for (size_t i = 0; i < s->n_tctx; i++) {
    if (s->tctx[i].tenant == t)
      return &s->tctx[i];
  }
  return NULL;
}

/* Pace requests to the tenant's Graph gate at its configured limits (one
 * gate per tenant id and application, so links that write there with the
 * same app share it). Called on
 * every scheduler_new(), hence on each reload too; unchanged limits keep
 * what the gate has learnt. */
static int
set_budget(struct http *http, const struct config_tenant *t)
{
  char gate[160];
  struct gate_limits lim = {
      .writes = (double)t->graph_write_limit.count,
      .writes_window = (double)t->graph_write_limit.window,
      .invitations = (double)t->invitation_limit.count,
      .invitations_window = (double)t->invitation_limit.window,
      .units = (double)t->graph_resource_unit_limit.count,
      .units_window = (double)t->graph_resource_unit_limit.window,
  };

  graph_gate_name(t, gate, sizeof(gate));
  return http_gate_set_limits(http, gate, &lim);
}

/* The budget's buckets as the store names them. */
static const struct {
  enum gate_bucket bucket;
  const char *name;
} budget_buckets[] = {
    {GATE_BUCKET_WRITES, "writes"},
    {GATE_BUCKET_INVITATIONS, "invitations"},
    {GATE_BUCKET_UNITS, "units"},
};

/* Give the tenant's Graph gate what earlier runs learnt of its limits,
 * unless this process has learnt something itself (a reload). A row
 * learnt under other limits than the configured ones is left aside. */
static void
budget_load(struct scheduler *s, struct tctx *tc)
{
  char gate[160];

  graph_gate_name(tc->tenant, gate, sizeof(gate));
  if (http_gate_learnt_changes(s->http, gate) != 0) {
    tc->budget_saved = http_gate_learnt_changes(s->http, gate);
    return;
  }
  for (size_t i = 0; i < sizeof budget_buckets / sizeof budget_buckets[0];
       i++) {
    struct store_budget row;
    struct gate_learnt l;
    int found;

    if (store_budget_get(s->store, gate, budget_buckets[i].name, &row,
                         &found) != 0 ||
        !found)
      continue;
    l.limit = row.limit;
    l.window = row.window;
    l.learnt.capacity = row.capacity;
    l.learnt.rate = row.rate;
    l.learnt.model = row.window_model ? BUDGET_WINDOW : BUDGET_BUCKET;
    if (http_gate_learn(s->http, gate, budget_buckets[i].bucket, &l) != 0)
      log_info("budget: saved lesson not used tenant=%s bucket=%s "
               "(learnt under limit=%.0f/%.0fs)",
               tc->tenant->name, budget_buckets[i].name, row.limit,
               row.window);
  }
  tc->budget_saved = 0;
}

/* Save what the tenants' Graph gates learnt since the last save (once a
 * round, and at the end: not on every request). */
static void
budget_save(struct scheduler *s)
{
  if (s->opts.mode == SCHEDULER_PLAN) /* sends no writes; may be a copy */
    return;
  for (size_t t = 0; t < s->n_tctx; t++) {
    struct tctx *tc = &s->tctx[t];
    char gate[160];
    unsigned long long changes;

    graph_gate_name(tc->tenant, gate, sizeof(gate));
    changes = http_gate_learnt_changes(s->http, gate);
    if (changes == tc->budget_saved)
      continue;
    for (size_t i = 0; i < sizeof budget_buckets / sizeof budget_buckets[0];
         i++) {
      struct gate_learnt l;
      struct store_budget row;

      if (http_gate_learnt(s->http, gate, budget_buckets[i].bucket, &l) != 0)
        continue;
      row.limit = l.limit;
      row.window = l.window;
      row.capacity = l.learnt.capacity;
      row.rate = l.learnt.rate;
      row.window_model = l.learnt.model == BUDGET_WINDOW;
      if (store_budget_put(s->store, gate, budget_buckets[i].name, &row) != 0)
        return; /* logged; tried again at the next save */
      log_info("budget: saved tenant=%s bucket=%s model=%s capacity=%.0f "
               "rate=%.3f/s",
               tc->tenant->name, budget_buckets[i].name,
               row.window_model ? "window" : "bucket", row.capacity, row.rate);
    }
    tc->budget_saved = changes;
  }
}

static struct tctx *
tctx_add(struct scheduler *s, const struct config_tenant *t, char *err,
         size_t errlen)
{
  struct tctx *tc = tctx_for(s, t);

  if (tc != NULL)
    return tc;
  tc = &s->tctx[s->n_tctx];
  tc->tenant = t;
  if (auth_new(s->loop, s->http, t, &tc->auth, err, errlen) != 0)
    return NULL;
  s->n_tctx++;
  tc->graph = graph_new(s->http, tc->auth, t);
  if (tc->graph == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  if (set_budget(s->http, t) != 0) {
    snprintf(err, errlen, "tenant %s: cannot set the Graph budget", t->name);
    return NULL;
  }
  budget_load(s, tc);
  return tc;
}

static void on_page(void *ctx, const struct reader_stats *stats);

/* The reader of `tenant`, made on first use. Every tenant a link touches
 * is read: its source for the people, its target so that objects deleted
 * there by hand are seen. */
static struct source *
source_for(struct scheduler *s, const struct config_tenant *tenant, int groups,
           long interval, char *err, size_t errlen)
{
  struct source *src;

  for (size_t j = 0; j < s->n_sources; j++) {
    src = &s->sources[j];
    if (src->tc->tenant == tenant && src->groups == groups) {
      if (interval < src->interval)
        src->interval = interval;
      return src;
    }
  }
  src = &s->sources[s->n_sources];
  src->s = s;
  src->interval = interval;
  src->tc = tctx_add(s, tenant, err, errlen);
  if (src->tc == NULL)
    return NULL;
  s->n_sources++;
  src->groups = groups;
  src->reader = groups ? reader_new_groups(s->store, src->tc->graph, tenant)
                       : reader_new(s->store, src->tc->graph, tenant);
  if (src->reader == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  reader_on_page(src->reader, on_page, src);
  /* RUN: each source's rounds come from its timer, made here where a
   * failure can still stop the start; scheduler_start() arms it. */
  if (s->opts.mode == SCHEDULER_RUN) {
    int rc = uv_timer_init(s->loop, &src->timer);

    if (rc != 0) {
      snprintf(err, errlen, "tenant %s: cannot create a timer: %s",
               tenant->name, uv_strerror(rc));
      return NULL;
    }
    src->timer.data = src;
    src->timer_live = 1;
  }
  return src;
}

/* A link's object kind against the one its state records. A change to or
 * from groupcontact while the link holds copies is refused: its source
 * objects would come from another read (groups for users or the
 * reverse), and the copies it made would be nobody's, neither planned
 * nor removed. Other changes keep their behaviour. Records the kind
 * otherwise. Returns 0, or -1 with the reason in err (config_error set
 * when it is the configuration's). */
static int
check_link_kind(struct store *store, const struct config *cfg,
                const struct config_link *link, int *config_error, char *err,
                size_t errlen)
{
  const char *now = config_object_name(link->object);
  const char *group = config_object_name(CONFIG_OBJECT_GROUPCONTACT);
  char *was = NULL;
  long long objects = 0;
  int rc = -1;

  if (store_link_kind_get(store, link->name, &was, &objects) != 0) {
    snprintf(err, errlen, "link %s: cannot read its state", link->name);
    return -1;
  }
  if (was != NULL && strcmp(was, now) != 0 && objects > 0 &&
      (strcmp(was, group) == 0 || strcmp(now, group) == 0)) {
    snprintf(err, errlen,
             "%s:%d: link '%s' made %lld %s copies and is now object = %s: "
             "its copies would be nobody's; set object = %s again, or give "
             "the new kind a link of another name (the old copies are then "
             "left as those of a removed link)",
             cfg->path, link->line, link->name, objects, was, now, was);
    *config_error = 1;
    goto out;
  }
  if ((was == NULL || strcmp(was, now) != 0) &&
      store_link_kind_set(store, link->name, now) != 0) {
    snprintf(err, errlen, "link %s: cannot record its object kind",
             link->name);
    goto out;
  }
  rc = 0;
out:
  free(was);
  return rc;
}

/* A link of the configuration (the others' claims are forgotten). */
static int
configured(void *ctx, const char *link)
{
  return config_link_find(ctx, link) != NULL;
}

int
scheduler_new(uv_loop_t *loop, struct http *http, struct store *store,
              const struct config *cfg, const struct scheduler_opts *opts,
              struct scheduler **out, int *config_error, char *err,
              size_t errlen)
{
  struct scheduler *s = calloc(1, sizeof(*s));
  size_t n = cfg->n_links ? cfg->n_links : 1;

  *out = NULL;
  *config_error = 0;
  if (s == NULL)
    return -1;
  s->loop = loop;
  s->http = http;
  s->store = store;
  s->cfg = cfg;
  s->opts = *opts;
  srandom((unsigned)(time(NULL) ^ (uv_hrtime() & 0xffffffff)));
  if (cfg->anchor_key_file != NULL &&
      anchor_key_load(cfg->anchor_key_file, &s->key, err, errlen) != 0) {
    *config_error = 1;
    goto fail;
  }
  {
    /* A link removed from the configuration claims nothing any more:
     * whoever was in conflict with it is weighed again. */
    size_t gone = 0;
    if (store_claims_forget_links(store, configured, (void *)cfg, &gone) != 0)
      log_warning("cannot forget the claims of links no longer configured");
    else if (gone > 0)
      log_notice("links no longer configured claim nothing now count=%zu",
                 gone);
  }
  s->tctx = calloc(2 * n, sizeof(*s->tctx));
  s->sources = calloc(2 * n, sizeof(*s->sources));
  s->lruns = calloc(n, sizeof(*s->lruns));
  if (s->tctx == NULL || s->sources == NULL || s->lruns == NULL) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }

  for (size_t i = 0; i < cfg->n_links; i++) {
    const struct config_link *link = &cfg->links[i];
    struct lrun *lr;
    struct source *src;

    if (opts->only_link != NULL && strcmp(link->name, opts->only_link) != 0)
      continue;
    if (check_link_kind(store, cfg, link, config_error, err, errlen) != 0)
      goto fail;
    lr = &s->lruns[s->n_lruns++];
    lr->s = s;
    lr->link = link;
    if (planner_link_compile(cfg, link, &lr->mapping, &lr->filter, err,
                             errlen) != 0) {
      *config_error = 1;
      goto fail;
    }
    src =
        source_for(s, link->source, link->object == CONFIG_OBJECT_GROUPCONTACT,
                   link->interval, err, errlen);
    if (src == NULL)
      goto fail;
    lr->source = src;
    lr->tsource = source_for(s, link->target, 0, link->interval, err, errlen);
    if (lr->tsource == NULL)
      goto fail;
    lr->target = tctx_add(s, link->target, err, errlen);
    if (lr->target == NULL)
      goto fail;
    /* Photo checks read the source 20 to a $batch (without, one by one). */
    if (link->photos && graph_batch_enable(src->tc->graph, loop) != 0)
      log_warning("photo checks go one by one link=%s", link->name);
    if ((link->object != CONFIG_OBJECT_GUEST || link->target->exchange) &&
        lr->target->exo == NULL) {
      lr->target->exo = exo_new(loop, s->http, lr->target->auth, link->target,
                                (int)link->target->exchange_max_in_flight);
      if (lr->target->exo == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
      }
    }
    if (link->migration && src->tc->exo == NULL) {
      /* The source's mailboxes are read from its Exchange. */
      src->tc->exo = exo_new(loop, s->http, src->tc->auth, link->source,
                             (int)link->source->exchange_max_in_flight);
      if (src->tc->exo == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
      }
    }
    lr->mig.external = link->migration_external;
    lr->executor =
        executor_new(loop, store, lr->target->graph, lr->target->exo, link,
                     s->key, EXECUTOR_IN_FLIGHT);
    if (lr->executor == NULL) {
      snprintf(err, errlen, "link %s: cannot make its executor", link->name);
      goto fail;
    }
  }
  *out = s;
  return 0;

fail:
  scheduler_free(s);
  return -1;
}

/* --- rounds --- */

static void maybe_finished(struct scheduler *s);
static void lrun_execute(struct lrun *lr);
static void lrun_plan(struct lrun *lr);
static void lrun_start(struct lrun *lr);

/* RUN: the delay before a source's next round, with up to 10% jitter
 * either way so that links do not fire together. */
static uint64_t
jittered_ms(long interval)
{
  double j = 0.9 + 0.2 * ((double)random() / ((double)RAND_MAX + 1.0));
  return (uint64_t)((double)interval * 1000.0 * j);
}

static void on_tick(uv_timer_t *t);

/* Only a closing timer refuses to start, and a timer is closed only once
 * the scheduler stops: a failure is logged (the source would read no
 * more) and otherwise cannot be acted on here. */
static void
source_arm(struct source *src, uint64_t ms)
{
  int rc;

  if (!src->timer_live || src->s->stopping)
    return;
  rc = uv_timer_start(&src->timer, on_tick, ms, 0);
  if (rc != 0)
    log_error("cannot schedule the next round tenant=%s error=\"%s\"",
              src->tc->tenant->name, uv_strerror(rc));
}

/* A link wants a round and both of its tenants have been read and are
 * not being read: start it. */
static void
lrun_maybe_start(struct lrun *lr)
{
  if (!lr->wanted || lr->state != LRUN_IDLE)
    return;
  if (!lr->source->read_once || !lr->tsource->read_once ||
      lr->source->reading || lr->tsource->reading)
    return;
  lr->wanted = 0;
  if (lr->source->failed) {
    /* The link cannot be planned from a source it could not read. */
    lr->failed = 1;
    lr->rounds++;
    return;
  }
  lrun_start(lr);
}

/* A round run while its source was still being read (a long first read
 * streams: what is stored is planned and written while reading goes on).
 * It is not a round of the link's own: the one after the read is. */
static void
lrun_end_partial(struct lrun *lr)
{
  lr->partial = 0;
  lr->state = LRUN_IDLE;
  json_decref(lr->members);
  lr->members = NULL;
  json_decref(lr->excluded);
  lr->excluded = NULL;
  log_info("link partial round done link=%s created=%lu adopted=%lu "
           "updated=%lu deleted=%lu restored=%lu failed=%lu pending=%d "
           "duration=%.2fs (its source is still being read)",
           lr->link->name, lr->total.created, lr->total.adopted,
           lr->total.updated, lr->total.deleted, lr->total.restored,
           lr->total.failed, lr->transient,
           (double)(uv_hrtime() - lr->started) / 1e9);
  lr->sum.created += lr->total.created;
  lr->sum.adopted += lr->total.adopted;
  lr->sum.updated += lr->total.updated;
  lr->sum.deleted += lr->total.deleted;
  lr->sum.restored += lr->total.restored;
  lr->sum.failed += lr->total.failed;
  lr->op_retries += (unsigned long long)lr->transient;
  lrun_maybe_start(lr);
  maybe_finished(lr->s);
}

/* After every STREAM_PAGES pages of a source's read, its idle links run
 * a partial round over what is stored so far. */
#define STREAM_PAGES 10

static void
on_page(void *ctx, const struct reader_stats *stats)
{
  struct source *src = ctx;
  struct scheduler *s = src->s;

  if (s->opts.mode == SCHEDULER_PLAN || s->stopping ||
      stats->pages < src->kick_pages + STREAM_PAGES)
    return;
  src->kick_pages = stats->pages;
  for (size_t i = 0; i < s->n_lruns; i++) {
    struct lrun *lr = &s->lruns[i];
    if (lr->source != src || lr->tsource == src || lr->state != LRUN_IDLE ||
        !lr->tsource->read_once || lr->tsource->reading)
      continue;
    lr->partial = 1;
    lrun_start(lr);
  }
}

/* Operations of the link waiting in the outbox to be run (held deletes
 * left out), or -1 when they cannot be counted. */
static long long
ops_left(const struct lrun *lr)
{
  struct store_link_counts c;

  if (store_link_counts(lr->s->store, lr->link->name, &c) != 0)
    return -1;
  return c.pending - c.held;
}

/* A round is a success only if it ran to its end: no stop came (SIGTERM,
 * SIGINT, a reload) while it ran, it could be planned and run, no op
 * failed, and none is left in the outbox. An executor told to stop
 * starts no more ops, so a stopped round's unstarted ops count nowhere
 * but in the outbox: that is what is checked. */
static void
lrun_end(struct lrun *lr)
{
  struct scheduler *s = lr->s;
  long long left;

  if (lr->partial) {
    lrun_end_partial(lr);
    return;
  }
  lr->state = LRUN_IDLE;
  lr->rounds++;
  budget_save(s);
  json_decref(lr->members);
  lr->members = NULL;
  json_decref(lr->excluded);
  lr->excluded = NULL;
  lr->last_round_seconds = (double)(uv_hrtime() - lr->started) / 1e9;
  if (s->opts.mode != SCHEDULER_PLAN && s->stopping) {
    left = ops_left(lr);
    log_notice("link round interrupted link=%s pending=%lld created=%lu "
               "adopted=%lu updated=%lu deleted=%lu restored=%lu failed=%lu "
               "duration=%.2fs (not a success; the next round goes on)",
               lr->link->name, left, lr->total.created, lr->total.adopted,
               lr->total.updated, lr->total.deleted, lr->total.restored,
               lr->total.failed, lr->last_round_seconds);
    lr->failed = 1;
  } else if (s->opts.mode != SCHEDULER_PLAN) {
    log_info("link round done link=%s read=%lu created=%lu adopted=%lu "
             "updated=%lu deleted=%lu restored=%lu failed=%lu pending=%d "
             "duration=%.2fs",
             lr->link->name, lr->source->last_items, lr->total.created,
             lr->total.adopted, lr->total.updated, lr->total.deleted,
             lr->total.restored, lr->total.failed, lr->transient,
             lr->last_round_seconds);
    log_debug("link round cost link=%s store_statements=%llu (since start)",
              lr->link->name, store_statements(s->store));
    if (lr->transient > 0)
      log_warning("operations left pending, retried in the next round "
                  "link=%s pending=%d last_error=\"%s\" (log_level = debug "
                  "shows each one's error)",
                  lr->link->name, lr->transient,
                  executor_last_error(lr->executor));
    /* One person (sync --user) is no round of the link: no success is
     * recorded, and the others' ops wait for the link's round. */
    if (!lr->failed && lr->transient == 0 && lr->total.failed == 0 &&
        s->opts.only_user == NULL) {
      left = ops_left(lr);
      if (left != 0) {
        /* Not run at all (no Exchange client, a store that stopped
         * recording): no success either. */
        log_warning("operations not run in this round link=%s pending=%lld",
                    lr->link->name, left);
        lr->failed = 1;
      } else if (store_link_success(s->store, lr->link->name, time(NULL)) !=
                 0) {
        lr->failed = 1;
      }
    }
  }
  lr->sum.created += lr->total.created;
  lr->sum.adopted += lr->total.adopted;
  lr->sum.updated += lr->total.updated;
  lr->sum.deleted += lr->total.deleted;
  lr->sum.restored += lr->total.restored;
  lr->sum.failed += lr->total.failed;
  lr->op_retries += (unsigned long long)lr->transient;
  if (s->opts.mode == SCHEDULER_RUN) {
    /* Work left (throttled, a tenant away): come back soon, backing off
     * up to the interval, instead of a whole interval later. */
    if (lr->transient > 0) {
      lr->backoff = lr->backoff ? lr->backoff * 2 : 2;
      if (lr->backoff > lr->link->interval)
        lr->backoff = lr->link->interval;
      lr->next_due = uv_now(s->loop) + (uint64_t)lr->backoff * 1000;
      if (uv_timer_get_due_in(&lr->source->timer) >
          (uint64_t)lr->backoff * 1000)
        source_arm(lr->source, (uint64_t)lr->backoff * 1000);
    } else {
      lr->backoff = 0;
      /* The link's own interval: its source may be read more often for
       * another link with a shorter one. */
      lr->next_due = uv_now(s->loop) + jittered_ms(lr->link->interval);
    }
    if (lr->source->triggered && !lr->source->reading) {
      lr->source->triggered = 0;
      source_arm(lr->source, 0);
    }
    if (s->opts.progress != NULL)
      s->opts.progress(s->opts.progress_ctx);
  }
  maybe_finished(s);
}

/* --- guests' visibility on the Exchange side ---
 *
 * A guest is hidden from the GAL until someone unhides it; the Graph PATCH
 * does that on the directory side, and when the target tenant has
 * `exchange = yes` its GuestMailUser is checked (and fixed) too, once
 * Exchange has provisioned it, so that "synced but not in the GAL" cannot
 * happen silently. Guests not provisioned yet are tried again next round
 * and counted by `status`. */

#define VISIBILITY_BATCH 500

struct vis {
  struct lrun *lr;
  char *source_id, *target_id;
  int step; /* 0: Get-MailUser, 1: Set-MailUser */
};

static void vis_done(struct lrun *lr);

static void
vis_free(struct vis *v)
{
  free(v->source_id);
  free(v->target_id);
  free(v);
}

static void
on_vis(void *ctx, const struct exo_response *resp)
{
  struct vis *v = ctx;
  struct lrun *lr = v->lr;
  json_t *r = json_array_get(resp->value, 0), *params;

  if (resp->result == EXO_OK && v->step == 0 && r != NULL &&
      json_is_true(json_object_get(r, "HiddenFromAddressListsEnabled"))) {
    params = json_pack("{s:s, s:b}", "Identity", v->target_id,
                       "HiddenFromAddressListsEnabled", 0);
    v->step = 1;
    if (params != NULL &&
        exo_invoke(lr->target->exo, "Set-MailUser", params, on_vis, v) == 0) {
      json_decref(params);
      return;
    }
    json_decref(params);
  } else if (resp->result == EXO_OK && (v->step == 1 || r != NULL)) {
    if (store_set_exo_visible(lr->s->store, lr->link->name, v->source_id,
                              v->target_id) == 0)
      lr->vis_fixed += (unsigned long)v->step;
  } else if (resp->result != EXO_OK && resp->result != EXO_ERR_CANCELLED &&
             strstr(resp->exception, "NotFound") == NULL) {
    /* Not provisioned yet is normal; anything else is worth a line. */
    log_warning("cannot check a guest on the Exchange side link=%s "
                "target_id=%s error=\"%s\"",
                lr->link->name, v->target_id, resp->errmsg);
  }
  vis_free(v);
  if (--lr->vis_pending == 0)
    vis_done(lr);
}

static void lrun_photos(struct lrun *lr);

static void
vis_done(struct lrun *lr)
{
  if (lr->vis_fixed > 0)
    log_info("guests made visible on the Exchange side link=%s count=%lu",
             lr->link->name, lr->vis_fixed);
  lrun_photos(lr);
}

static void
visibility_pass(struct lrun *lr)
{
  struct store_pair *pairs = NULL;
  size_t n = 0;

  if (lr->link->object != CONFIG_OBJECT_GUEST || !lr->link->target->exchange ||
      lr->target->exo == NULL || lr->s->stopping ||
      lr->s->opts.mode == SCHEDULER_PLAN || lr->s->opts.only_user != NULL ||
      store_unverified(lr->s->store, lr->link->name, VISIBILITY_BATCH, &pairs,
                       &n) != 0 ||
      n == 0) {
    store_pairs_free(pairs, n);
    lrun_photos(lr);
    return;
  }
  lr->vis_fixed = 0;
  lr->vis_pending = 1; /* held until every call is started */
  for (size_t i = 0; i < n; i++) {
    struct vis *v = calloc(1, sizeof(*v));
    json_t *params;
    if (v == NULL)
      break;
    v->lr = lr;
    v->source_id = pairs[i].a;
    v->target_id = pairs[i].b;
    pairs[i].a = pairs[i].b = NULL;
    params = json_pack("{s:s}", "Identity", v->target_id);
    if (params == NULL ||
        exo_invoke(lr->target->exo, "Get-MailUser", params, on_vis, v) != 0) {
      json_decref(params);
      vis_free(v);
      continue;
    }
    json_decref(params);
    lr->vis_pending++;
  }
  store_pairs_free(pairs, n);
  if (--lr->vis_pending == 0)
    vis_done(lr);
}

/* --- profile photos (photos = yes) ---
 *
 * After a link's writes, the copies whose photo check is due (photo.h):
 * not in a dry run, not for one person (sync --user), not once a stop
 * came. A photo that fails does not fail the round: it is logged and
 * tried again later, and `status` shows it. */

static void
on_photos(void *ctx, const struct photo_stats *stats)
{
  struct lrun *lr = ctx;

  (void)stats;
  lr->photos = NULL;
  lrun_end(lr);
}

static void
lrun_photos(struct lrun *lr)
{
  if (!lr->link->photos || lr->s->stopping ||
      lr->s->opts.mode == SCHEDULER_PLAN || lr->s->opts.only_user != NULL ||
      lr->photos != NULL ||
      photo_pass_start(lr->s->store, lr->source->tc->graph, lr->target->graph,
                       lr->link, lr->s->key, time(NULL), on_photos, lr,
                       &lr->photos) != 0) {
    lrun_end(lr);
    return;
  }
}

/* Copies made in this round may be the managers of people planned before
 * them, whom the store queued to be weighed again (its manager_copy_*
 * triggers), and a copy made gets its own manager only once it exists:
 * one more plan and execution, in the same round, sets those managers,
 * so that a first sync ends with them in place rather than a round
 * later. Once per round, only for a round that made copies, and not in a
 * partial round (the next one weighs the queued people anyway). */
static int
follow_up(struct lrun *lr)
{
  const struct scheduler *s = lr->s;

  if (!lr->link->manager || lr->followed || lr->partial ||
      lr->total.created + lr->total.restored == 0 ||
      s->opts.mode == SCHEDULER_PLAN || s->opts.only_user != NULL ||
      s->stopping || store_failed(s->store))
    return 0;
  lr->followed = 1;
  return 1;
}

static void
on_executed(void *ctx, const struct executor_stats *st)
{
  struct lrun *lr = ctx;

  lr->total.done += st->done;
  lr->total.created += st->created;
  lr->total.adopted += st->adopted;
  lr->total.updated += st->updated;
  lr->total.deleted += st->deleted;
  lr->total.restored += st->restored;
  lr->total.moved += st->moved;
  lr->total.failed += st->failed;
  lr->transient = (int)st->transient;
  lr->pass++;
  /* Another pass for what is left, unless the store failed a write: then
   * it would only send what cannot be recorded (a full or read-only
   * disk; the outbox replays it in the next sync). */
  if (st->transient > 0 && st->done > 0 && lr->pass < SYNC_PASSES &&
      lr->s->opts.mode == SCHEDULER_SYNC && !lr->s->stopping &&
      !store_failed(lr->s->store)) {
    lrun_execute(lr);
    return;
  }
  if (st->transient > 0)
    lr->failed = 1;
  if (follow_up(lr)) {
    lrun_plan(lr);
    return;
  }
  visibility_pass(lr);
}

static void
lrun_execute(struct lrun *lr)
{
  lr->state = LRUN_EXECUTING;
  if (lr->s->stopping) {
    /* A stop came while the round was planned or its scope read: the
     * executor would run the whole outbox (executor_run starts afresh). */
    lrun_end(lr);
    return;
  }
  if (lr->pass == 0 &&
      store_link_run_start(lr->s->store, lr->link->name, time(NULL)) != 0)
    log_warning("cannot record the start of a round link=%s", lr->link->name);
  if (executor_run(lr->executor, on_executed, lr) != 0) {
    log_error("cannot run the outbox link=%s", lr->link->name);
    lr->failed = 1;
    lrun_end(lr);
  }
}

/* --- a lost state ---
 *
 * A link with nothing in the store (never planned, no row, no op) either
 * starts for the first time or lost its state. Its copies in the target
 * carry its anchors, and those whose proof holds (made with this
 * anchor_key_file, for that very object) are galbridge's:
 *  - the copy of a person in the link's scope is taken up by the planner
 *    when it plans that person (a create finds its proven copy), while
 *    the source is still being read too;
 *  - the copy of a source object that is gone is taken up once the
 *    source has been read to its end (never before: a person not read
 *    yet is not gone), and removed like any copy whose source went,
 *    under max_deletes;
 *  - a copy another link's state names, or whose source object is there
 *    but out of this link's scope (another link's, with the same source
 *    and target), is left alone.
 * Objects whose anchor has no proof are counted and left alone (the
 * planner refuses to make a second copy beside them). Mail contacts are
 * not in the target's users read: their link lists them on Exchange's
 * side first (lrun_observe). */

struct recover_ctx {
  struct lrun *lr;
  struct recovery *rec;
  const char *kind;
  time_t now;
  int failed;
};

static int
on_anchor(void *ctx, const char *id, const char *value)
{
  struct recover_ctx *rc = ctx;
  const struct config_link *link = rc->lr->link;
  struct store *store = rc->lr->s->store;
  const char *attr = planner_anchor_attr(link);
  char *plain = anchor_parse(value, NULL), *applied = NULL, *text = NULL;
  char *olink = NULL, *osid = NULL;
  const char *source_id;
  int taken = 0, removed = 0, result = -1;

  if (plain == NULL)
    return 0;
  if (!anchor_proven(rc->lr->s->key, link->target->tenant_id, rc->kind, value,
                     id)) {
    rc->rec->unproven++;
    free(plain);
    return 0;
  }
  source_id =
      plain + strlen(ANCHOR_PREFIX) + strlen(config_link_source_key(link)) + 1;
  if (store_target_owner(store, id, NULL, NULL, &olink, &osid) != 0 ||
      store_source_get(store, config_link_source_key(link), source_id, &text,
                       &removed) != 0)
    goto out;
  result = 0;
  if (olink != NULL)
    goto out; /* another link's (or already this one's) */
  rc->rec->proven++;
  if (text != NULL && removed == STORE_PRESENT)
    goto out; /* its source is there: the planner's, if in scope */
  result = -1;
  {
    json_t *a = json_pack("{s:s}", attr, value);
    applied = a != NULL ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
  }
  if (applied == NULL ||
      store_take_up(store, link->name, config_link_source_key(link), source_id,
                    id, applied, rc->now, &taken) != 0)
    goto out;
  rc->rec->taken_up += (unsigned long)taken;
  result = 0;
out:
  if (result != 0)
    rc->failed = 1;
  free(plain);
  free(applied);
  free(text);
  free(olink);
  free(osid);
  return result != 0;
}

static int
recover(struct lrun *lr, struct recovery *rec)
{
  const struct config_link *link = lr->link;
  struct recover_ctx rc = {.lr = lr,
                           .rec = rec,
                           .kind = config_object_name(link->object),
                           .now = time(NULL)};
  char prefix[ANCHOR_PLAIN_MAX + 16], observed[160];
  int empty = 0;

  memset(rec, 0, sizeof(*rec));
  if (store_link_empty(lr->s->store, link->name, &empty) != 0)
    return -1;
  if (empty) {
    rec->empty = 1;
    lr->recovering = 1;
  }
  /* Copies of gone source objects wait for a read to its end. */
  if (!lr->recovering || lr->partial || lr->source->failed)
    return 0;
  planner_observed_tenant(link, observed, sizeof(observed));
  snprintf(prefix, sizeof(prefix), "anchor:%s%s:", ANCHOR_PREFIX,
           config_link_source_key(link));
  for (char *c = prefix; *c != '\0'; c++) {
    if (*c >= 'A' && *c <= 'Z')
      *c = (char)(*c - 'A' + 'a');
  }
  if (store_begin(lr->s->store) != 0)
    return -1;
  if (store_anchor_keys(lr->s->store, observed, prefix, on_anchor, &rc) < 0 ||
      rc.failed || store_commit(lr->s->store) != 0) {
    store_rollback(lr->s->store);
    return -1;
  }
  lr->recovering = 0;
  if (rec->proven > 0 || rec->unproven > 0)
    log_notice("the state held nothing of this link: its copies found in "
               "the target link=%s target=%s proven=%lu gone=%lu "
               "unproven=%lu (proven copies of people in scope are taken "
               "up and updated; those whose source object is gone are "
               "removed under max_deletes; the rest, and objects whose "
               "anchor has no proof, are left alone)",
               link->name, link->target->name, rec->proven, rec->taken_up,
               rec->unproven);
  return 0;
}

/* --- people whose mailbox moved ---
 *
 * A mail-user link whose source is a migration link's target and whose
 * target is that link's source takes over the former source objects of
 * the people that link handed off (planner.h). Their copies are listed
 * each round (the migration link's rows in state "moved": few); one this
 * link has no row for yet is planned again now, as its hand-off is news
 * that no source change carries. */

struct moved_ctx {
  struct lrun *lr;
  json_t *map;
  int dry; /* galbridge plan: the state is only read */
};

static int
on_moved(void *ctx, const struct store_moved_row *row)
{
  struct moved_ctx *m = ctx;

  if (json_object_set_new(m->map, row->target_id,
                          json_string(row->source_id)) != 0)
    return -1;
  if (row->reverse_state == NULL && !m->dry &&
      store_replan_add(m->lr->s->store, m->lr->link->name, row->target_id) !=
          0)
    return -1;
  return 0;
}

/* The handed-off copies this link takes over (planner_link.moved): a new
 * object, or NULL when there are none or the link takes none over. -1
 * when the state cannot tell (the round is not planned). */
static int
moved_copies(struct lrun *lr, int dry, json_t **out)
{
  const struct config *cfg = lr->s->cfg;
  const struct config_link *link = lr->link;
  struct moved_ctx m = {lr, NULL, dry};
  int rc = 0;

  *out = NULL;
  if (link->object != CONFIG_OBJECT_MAILUSER)
    return 0;
  for (size_t i = 0; i < cfg->n_links && rc == 0; i++) {
    const struct config_link *other = &cfg->links[i];
    if (!other->migration || other->source != link->target ||
        other->target != link->source)
      continue;
    if (m.map == NULL && (m.map = json_object()) == NULL)
      return -1;
    if (!dry && store_begin(lr->s->store) != 0)
      rc = -1;
    else if (store_moved_copies(lr->s->store, other->name, link->name,
                                on_moved, &m) != 0 ||
             (!dry && store_commit(lr->s->store) != 0)) {
      if (!dry)
        store_rollback(lr->s->store);
      rc = -1;
    }
  }
  if (rc != 0 || json_object_size(m.map) == 0) {
    json_decref(m.map);
    return rc;
  }
  *out = m.map;
  return 0;
}

static void
lrun_plan(struct lrun *lr)
{
  struct scheduler *s = lr->s;
  struct planner_link pl = {.link = lr->link,
                            .mapping = lr->mapping,
                            .filter = lr->filter,
                            .members = lr->members,
                            .excluded = lr->excluded,
                            .filling = lr->partial,
                            .key = s->key,
                            .migration =
                                lr->initial != NULL ? &lr->mig : NULL};
  struct planner_stats st;
  struct recovery rec = {0};
  json_t *moved = NULL;
  int dry = s->opts.mode == SCHEDULER_PLAN, rc;

  if (moved_copies(lr, dry, &moved) != 0) {
    log_error("cannot list the people whose mailbox moved link=%s",
              lr->link->name);
    lr->failed = 1;
    lrun_end(lr);
    return;
  }
  pl.moved = moved;
  if (s->opts.only_user != NULL) {
    int empty = 0;
    pl.only = reader_user_id(lr->source->reader);
    /* One person is never planned from a state that holds nothing of
     * the link: what its copies are is for a whole round to find. */
    if (pl.only == NULL ||
        store_link_empty(s->store, lr->link->name, &empty) != 0 || empty) {
      if (pl.only != NULL && empty)
        log_error("the state holds nothing of this link yet: run "
                  "'galbridge sync --link %s' first link=%s",
                  lr->link->name, lr->link->name);
      json_decref(moved);
      lr->failed = 1;
      lrun_end(lr);
      return;
    }
    executor_only(lr->executor, pl.only);
  }

  if (recover(lr, &rec) != 0) {
    json_decref(moved);
    log_error("cannot look for copies of a lost state link=%s",
              lr->link->name);
    lr->failed = 1;
    lrun_end(lr);
    return;
  }
  if (s->opts.planning != NULL)
    s->opts.planning(s->opts.emit_ctx, &pl);
  rc = planner_plan(s->store, &pl, dry, s->opts.emit, s->opts.emit_ctx, &st);
  json_decref(moved);
  if (rc != 0) {
    log_error("cannot plan link=%s", lr->link->name);
    lr->failed = 1;
    lrun_end(lr);
    return;
  }
  log_info("plan link=%s create=%lu update=%lu delete=%lu restore=%lu "
           "adopt=%lu refused=%lu unchanged=%lu out_of_scope=%lu "
           "waiting=%lu failed=%lu held=%lu",
           lr->link->name, st.creates, st.updates, st.deletes, st.restores,
           st.adopts, st.fails, st.unchanged, st.out_of_scope, st.waiting,
           st.failed_kept, st.held);
  if (dry) {
    if (s->opts.plan_done != NULL)
      s->opts.plan_done(s->opts.emit_ctx, lr->link, &st, &rec);
    lrun_end(lr);
    return;
  }
  lrun_execute(lr);
}

/* --- mail contacts as Exchange shows them ---
 *
 * Graph's users read holds no mail contacts (and orgContact no custom
 * attributes), so before a mail contact link plans, its contacts are
 * listed on Exchange's side: every contact whose anchor attribute starts
 * with this source's anchors (Get-MailContact -Filter "CustomAttributeN
 * -like 'galbridge:<source>:*'"), then each copy the state knows that the
 * listing did not show (its anchor cleared or edited by hand, or the
 * contact removed) by its id. What is seen is stored under
 * planner_observed_tenant(), as a full read of that tenant: the planner
 * repairs anchors that differ, makes again copies that are gone, and a
 * lost state takes up the proven ones. A listing that fails leaves the
 * last one in force. */

struct observe {
  struct lrun *lr;
  char tenant[160];
  long long gen;
  int pending; /* lookups in flight, +1 while they are being started */
  int failed;
};

static void
observe_done(struct observe *o)
{
  struct lrun *lr = o->lr;
  struct store *store = lr->s->store;
  long long gone = 0;

  if (!o->failed) {
    if (store_begin(store) != 0 ||
        store_delta_finish(store, o->tenant, "exchange listing", NULL, o->gen,
                           time(NULL), &gone) != 0 ||
        store_commit(store) != 0) {
      store_rollback(store);
      log_warning("cannot record the mail contacts seen link=%s",
                  lr->link->name);
    } else if (gone > 0) {
      log_notice("copies gone from the target, made again link=%s "
                 "count=%lld",
                 lr->link->name, gone);
    }
  }
  free(o);
  if (lr->s->stopping) {
    lrun_end(lr);
    return;
  }
  lrun_plan(lr);
}

/* Store one recipient as seen in this listing. */
static int
observe_put(struct observe *o, const json_t *r)
{
  struct store *store = o->lr->s->store;
  const char *id = exo_recipient_id(r);
  json_t *attrs = exo_recipient_attrs(r);
  char *text = attrs ? json_dumps(attrs, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  int rc = -1;

  if (id != NULL && text != NULL &&
      store_source_put(store, o->tenant, id, text, STORE_PRESENT, o->gen) ==
          0 &&
      reader_put_keys(store, o->tenant, id, attrs) == 0)
    rc = 0;
  if (id == NULL)
    rc = 0; /* nothing to key it by: left out */
  json_decref(attrs);
  free(text);
  return rc;
}

static int
observe_store(struct observe *o, const json_t *value)
{
  struct store *store = o->lr->s->store;
  const json_t *r;
  size_t i;

  if (store_begin(store) != 0)
    return -1;
  json_array_foreach(value, i, r)
  {
    if (observe_put(o, r) != 0) {
      store_rollback(store);
      return -1;
    }
  }
  return store_commit(store);
}

static void
on_unseen(void *ctx, const struct exo_response *resp)
{
  struct observe *o = ctx;

  if (resp->result == EXO_OK) {
    if (observe_store(o, resp->value) != 0)
      o->failed = 1;
  } else if (!(resp->result == EXO_ERR_CMDLET &&
               strstr(resp->exception, "NotFound") != NULL)) {
    /* Not a removal: this round cannot tell, so it marks none. */
    o->failed = 1;
  }
  if (--o->pending == 0)
    observe_done(o);
}

static int
check_unseen(void *ctx, const char *id)
{
  struct observe *o = ctx;
  json_t *params = json_pack("{s:s}", "Identity", id);

  if (params == NULL || exo_invoke(o->lr->target->exo, "Get-MailContact",
                                   params, on_unseen, o) != 0) {
    o->failed = 1;
  } else {
    o->pending++;
  }
  json_decref(params);
  return 0;
}

static void
on_contacts_listed(void *ctx, const struct exo_response *resp)
{
  struct observe *o = ctx;
  struct lrun *lr = o->lr;

  if (resp->result != EXO_OK) {
    log_warning("cannot list the link's mail contacts on Exchange's side, "
                "planned from the last listing link=%s error=\"%s\"",
                lr->link->name, resp->errmsg);
    o->failed = 1;
    observe_done(o);
    return;
  }
  if (observe_store(o, resp->value) != 0) {
    o->failed = 1;
    observe_done(o);
    return;
  }
  o->pending = 1;
  if (store_targets_unseen(lr->s->store, lr->link->name, o->tenant, o->gen,
                           check_unseen, o) != 0)
    o->failed = 1;
  if (--o->pending == 0)
    observe_done(o);
}

/* Before planning: list what the target shows of a mail contact link's
 * objects; other links plan at once (their target's read holds it). */
static void
lrun_observe(struct lrun *lr)
{
  const struct config_link *link = lr->link;
  struct observe *o;
  json_t *params = NULL;
  int empty = 0;

  /* A partial round (its source still being read) plans from the last
   * listing, unless the link has no state yet: a lost one is taken up
   * before anything else is planned. */
  if (!config_link_contacts(link) || lr->target->exo == NULL ||
      (lr->partial &&
       (store_link_empty(lr->s->store, link->name, &empty) != 0 || !empty))) {
    lrun_plan(lr);
    return;
  }
  o = calloc(1, sizeof(*o));
  if (o == NULL)
    goto out;
  o->lr = lr;
  planner_observed_tenant(link, o->tenant, sizeof(o->tenant));
  params = planner_anchor_listing(link);
  if (params == NULL ||
      store_delta_start_full(lr->s->store, o->tenant, "exchange listing",
                             time(NULL), &o->gen) != 0 ||
      exo_invoke(lr->target->exo, "Get-MailContact", params,
                 on_contacts_listed, o) != 0) {
    json_decref(params);
    free(o);
    goto out;
  }
  json_decref(params);
  return;
out:
  log_warning("cannot list the link's mail contacts, planned from the "
              "last listing link=%s",
              link->name);
  lrun_plan(lr);
}

/* --- migration links: what Exchange says before planning ---
 *
 * A migration link plans only when it knows the target's accepted
 * domains (read hourly; the last ones stay in force when a read fails):
 * without them no copy could be made ready, nor a foreign address left
 * out. The source's mailboxes are then read (incrementally: mailbox.h)
 * at most once per interval; when that read fails the records kept from
 * the last one are used. */

#define DOMAINS_EVERY 3600

static void lrun_mailboxes(struct lrun *lr);

static void
on_domains(void *ctx, int result, const json_t *domains, const char *initial,
           const char *errmsg)
{
  struct lrun *lr = ctx;
  char *copy = NULL;

  if (result == 0 && (copy = strdup(initial)) != NULL) {
    json_decref(lr->accepted);
    free(lr->initial);
    lr->accepted = json_deep_copy(domains);
    lr->initial = copy;
    lr->mig.accepted = lr->accepted;
    lr->mig.initial = lr->initial;
    lr->domains_at = time(NULL);
  } else {
    log_warning("cannot read the target's accepted domains link=%s "
                "error=\"%s\"",
                lr->link->name, result == 0 ? "out of memory" : errmsg);
  }
  if (lr->s->stopping) {
    lrun_end(lr);
    return;
  }
  if (lr->initial == NULL || lr->accepted == NULL) {
    log_error("link not planned: its target's accepted domains are not "
              "known link=%s",
              lr->link->name);
    lr->failed = 1;
    lrun_end(lr);
    return;
  }
  lrun_mailboxes(lr);
}

/* A copy whose stamps the target shows otherwise than galbridge wrote
 * them (edited by hand) gets them again in this round's plan. */
static void
restamp_one(struct lrun *lr, const json_t *r)
{
  const char *id = exo_recipient_id(r);
  char *source_id = NULL, *text = NULL;
  json_t *applied = NULL, *seen = NULL;

  if (id == NULL ||
      store_target_by_id(lr->s->store, lr->link->name, id, &source_id,
                         &text) != 0 ||
      source_id == NULL)
    goto out;
  applied = json_loads(text, 0, NULL);
  if (exo_mailuser_stamps(r, &seen) != 0 || !json_is_object(applied) ||
      !migration_stamps_differ(applied, seen))
    goto out;
  if (store_target_restamp(lr->s->store, lr->link->name, source_id) != 0)
    log_warning("cannot mark a copy to be stamped again link=%s "
                "target_id=%s",
                lr->link->name, id);
  else
    log_notice("copy's migration stamps changed in the target, written "
               "again this round link=%s source_id=%s target_id=%s",
               lr->link->name, source_id, id);
out:
  free(source_id);
  free(text);
  json_decref(applied);
  json_decref(seen);
}

struct unlisted_ctx {
  json_t *listed;  /* target ids the listing showed */
  json_t *missing; /* source ids of copies it did not */
};

static int
on_copy(void *ctx, const struct store_copy_row *row)
{
  struct unlisted_ctx *u = ctx;

  if (json_object_get(u->listed, row->target_id) != NULL)
    return 0;
  return json_array_append_new(u->missing, json_string(row->source_id));
}

/* A copy the listing did not show is no mail user any more: its move done
 * (a mailbox now), or removed by hand. Its stamps are written again this
 * round, so that the executor's guard finds which (a mailbox is handed
 * off, a copy gone is made again). */
static void
unlisted(struct lrun *lr, const json_t *value)
{
  struct unlisted_ctx u = {json_object(), json_array()};
  const json_t *r, *v;
  const char *id;
  size_t i;

  json_array_foreach(value, i, r)
  {
    if (u.listed != NULL && (id = exo_recipient_id(r)) != NULL &&
        json_object_set_new(u.listed, id, json_true()) != 0)
      break;
  }
  if (u.listed == NULL || u.missing == NULL ||
      store_link_copies(lr->s->store, lr->link->name,
                        config_link_source_key(lr->link), on_copy, &u) != 0) {
    log_warning("cannot look for copies that are no mail user any more "
                "link=%s",
                lr->link->name);
    goto out;
  }
  json_array_foreach(u.missing, i, v)
  {
    const char *sid = json_string_value(v);
    if (store_target_restamp(lr->s->store, lr->link->name, sid) != 0) {
      log_warning("cannot mark a copy to be checked link=%s source_id=%s",
                  lr->link->name, sid);
      continue;
    }
    log_notice("copy is no mail user any more (its mailbox moved, or "
               "removed by hand): checked this round link=%s source_id=%s",
               lr->link->name, sid);
  }
out:
  json_decref(u.listed);
  json_decref(u.missing);
}

static void
on_stamps_listed(void *ctx, const struct exo_response *resp)
{
  struct lrun *lr = ctx;
  const json_t *r;
  size_t i;

  if (resp->result != EXO_OK)
    log_warning("cannot list the link's mail users, their stamps not "
                "checked link=%s error=\"%s\"",
                lr->link->name, resp->errmsg);
  else {
    json_array_foreach(resp->value, i, r)
    {
      restamp_one(lr, r);
    }
    unlisted(lr, resp->value);
  }
  if (lr->s->stopping) {
    lrun_end(lr);
    return;
  }
  lrun_observe(lr);
}

/* List the link's copies as the target shows them (Get-MailUser by the
 * anchor attribute, in pages) to find stamps changed there. */
static void
lrun_restamp(struct lrun *lr)
{
  const struct config_link *link = lr->link;
  json_t *params = planner_anchor_listing(link);

  if (params == NULL || exo_invoke_select(lr->target->exo, "Get-MailUser",
                                          params, EXO_MAILUSER_STAMPS_SELECT,
                                          on_stamps_listed, lr) != 0) {
    log_warning("cannot list the link's mail users link=%s", link->name);
    json_decref(params);
    lrun_observe(lr);
    return;
  }
  json_decref(params);
}

static void
on_mailboxes_read(void *ctx, int result, const char *errmsg)
{
  struct lrun *lr = ctx;

  if (result != 0)
    log_warning("cannot read the source's mailboxes, planned from the last "
                "read link=%s error=\"%s\"",
                lr->link->name, errmsg);
  else
    lr->mailboxes_at = time(NULL);
  if (lr->s->stopping) {
    lrun_end(lr);
    return;
  }
  lrun_restamp(lr);
}

static void
lrun_mailboxes(struct lrun *lr)
{
  time_t now = time(NULL);

  if (now - lr->mailboxes_at < lr->link->interval) {
    lrun_observe(lr);
    return;
  }
  if (mailbox_read(lr->s->store, lr->source->tc->exo,
                   lr->link->source->tenant_id, now, on_mailboxes_read,
                   lr) != 0) {
    log_warning("cannot ask for the source's mailboxes link=%s",
                lr->link->name);
    lrun_observe(lr);
  }
}

static void
lrun_migration(struct lrun *lr)
{
  if (!lr->link->migration) {
    lrun_observe(lr);
    return;
  }
  if (lr->initial != NULL && time(NULL) - lr->domains_at < DOMAINS_EVERY) {
    lrun_mailboxes(lr);
    return;
  }
  if (mailbox_domains(lr->target->exo, on_domains, lr) != 0)
    on_domains(lr, -1, NULL, NULL, "cannot ask for them");
}

/* The groups of a round are read one after the other: the scope groups
 * (lrun.members, the union of their members) then the exclude groups
 * (lrun.excluded, each member with the first group that excludes it).
 * Any group that cannot be read leaves the link unplanned this round, an
 * exclude group as much as a scope group: taking an unreadable exclude
 * group as empty would create, or keep, a copy of every person it is
 * there to keep out (a Graph outage must not publish the people an admin
 * excluded). */
static void lrun_next_group(struct lrun *lr);

static int
group_of(const struct lrun *lr, size_t at, char out[CONFIG_GUID_LEN + 1],
         int *exclude)
{
  size_t n_scope = config_guids_count(lr->link->scope_group);

  *exclude = at >= n_scope;
  return config_guid_at(*exclude ? lr->link->exclude_group
                                 : lr->link->scope_group,
                        *exclude ? at - n_scope : at, out) != NULL;
}

/* Add `members` (borrowed) of exclude group `group` to lr->excluded. */
static int
add_excluded(struct lrun *lr, const char *group, const json_t *members)
{
  const char *id;
  json_t *v;
  char why[64];

  snprintf(why, sizeof(why), "member of exclude_group %s", group);
  if (lr->excluded == NULL && (lr->excluded = json_object()) == NULL)
    return -1;
  json_object_foreach((json_t *)members, id, v)
  {
    if (json_object_get(lr->excluded, id) == NULL &&
        json_object_set_new(lr->excluded, id, json_string(why)) != 0)
      return -1;
  }
  return 0;
}

static void
on_members(void *ctx, const struct graph_response *resp, const json_t *members)
{
  struct lrun *lr = ctx;
  char group[CONFIG_GUID_LEN + 1] = "";
  int exclude = 0, rc;

  (void)group_of(lr, lr->group_at, group, &exclude);
  if (members == NULL) {
    log_error("cannot read %s members, link not planned link=%s "
              "group=%s error=\"%s\"",
              exclude ? "exclude_group" : "scope_group", lr->link->name, group,
              resp->errmsg);
    lr->failed = 1;
    lrun_end(lr);
    return;
  }
  if (exclude)
    rc = add_excluded(lr, group, members);
  else if (lr->members == NULL)
    rc = (lr->members = json_copy((json_t *)members)) == NULL ? -1 : 0;
  else
    rc = json_object_update(lr->members, (json_t *)members);
  if (rc != 0) {
    log_error("out of memory reading group members, link not planned "
              "link=%s group=%s",
              lr->link->name, group);
    lr->failed = 1;
    lrun_end(lr);
    return;
  }
  log_debug("%s members link=%s group=%s count=%zu",
            exclude ? "exclude_group" : "scope_group", lr->link->name, group,
            json_object_size(members));
  if (lr->s->stopping) {
    lrun_end(lr);
    return;
  }
  lr->group_at++;
  lrun_next_group(lr);
}

static void
lrun_next_group(struct lrun *lr)
{
  char group[CONFIG_GUID_LEN + 1];
  int exclude;

  if (!group_of(lr, lr->group_at, group, &exclude)) {
    lr->state = LRUN_EXECUTING;
    lrun_migration(lr);
    return;
  }
  lr->state = LRUN_MEMBERS;
  if (graph_group_members(lr->source->tc->graph, group, on_members, lr) != 0) {
    log_error("cannot ask %s members link=%s group=%s",
              exclude ? "exclude_group" : "scope_group", lr->link->name,
              group);
    lr->failed = 1;
    lrun_end(lr);
  }
}

/* Ops that failed for good and whose next try has come go back to
 * pending before the round plans and runs (DESIGN.md: an error misjudged
 * as permanent heals without the admin). A dry run changes nothing. */
static void
lrun_retry_failed(struct lrun *lr)
{
  long long n = 0;

  if (lr->s->opts.mode == SCHEDULER_PLAN || lr->s->opts.only_user != NULL)
    return;
  if (store_ops_retry_due(lr->s->store, lr->link->name, time(NULL), &n) != 0) {
    log_warning("cannot put failed operations back link=%s", lr->link->name);
    return;
  }
  if (n > 0)
    log_notice("failed operations tried again after their backoff link=%s "
               "count=%lld",
               lr->link->name, n);
}

static void
lrun_start(struct lrun *lr)
{
  if (lr->state != LRUN_IDLE || lr->s->stopping)
    return;
  lrun_retry_failed(lr);
  memset(&lr->total, 0, sizeof(lr->total));
  lr->started = uv_hrtime();
  lr->failed = 0;
  lr->transient = 0;
  lr->pass = 0;
  lr->followed = 0;
  lr->group_at = 0;
  lrun_next_group(lr);
}

static void
on_read(void *ctx, int result, int permanent, const char *errmsg,
        const struct reader_stats *stats)
{
  struct source *src = ctx;
  struct scheduler *s = src->s;

  (void)permanent;
  (void)errmsg;
  src->reading = 0;
  src->read_once = 1;
  src->failed = (result != 0);
  src->last_items = stats != NULL ? stats->items : 0;
  if (s->opts.mode == SCHEDULER_RUN) {
    int feeds_links = 0;
    for (size_t i = 0; i < s->n_lruns; i++)
      feeds_links |= (s->lruns[i].source == src);
    /* SIGUSR1 during this read: a tenant that feeds links reads again
     * once their rounds end (lrun_end); one that is only a target now. */
    if (src->triggered && !feeds_links) {
      src->triggered = 0;
      source_arm(src, 0);
    } else {
      source_arm(src, jittered_ms(src->interval));
    }
  }
  /* A read of a link's source makes the link want a round: its first,
   * one that is due on its own interval (jitter on both timers can bring
   * a read a little early, hence a margin of a fifth of the interval), or
   * one SIGUSR1 asked for. */
  for (size_t i = 0; i < s->n_lruns; i++) {
    struct lrun *lr = &s->lruns[i];
    if (lr->source != src)
      continue;
    if (s->opts.mode != SCHEDULER_RUN) {
      lr->wanted = lr->rounds == 0;
    } else if (lr->rounds == 0 || src->forced ||
               uv_now(s->loop) + (uint64_t)lr->link->interval * 200 >=
                   lr->next_due) {
      lr->wanted = 1;
    }
  }
  if (!src->triggered)
    src->forced = 0;
  /* It runs once both of its tenants have been read and neither is being
   * read now, whichever read ends last. */
  for (size_t i = 0; i < s->n_lruns; i++) {
    struct lrun *lr = &s->lruns[i];
    if (lr->source == src || lr->tsource == src)
      lrun_maybe_start(lr);
  }
  maybe_finished(s);
}

/* Whether `src` is the source of a link this scheduler runs (sync
 * --user reads one user of it instead of a round). */
static int
feeds_a_link(const struct source *src)
{
  for (size_t i = 0; i < src->s->n_lruns; i++) {
    if (src->s->lruns[i].source == src)
      return 1;
  }
  return 0;
}

static void
source_read(struct source *src)
{
  const char *user = src->s->opts.only_user;
  int rc;

  if (src->reading || src->s->stopping)
    return;
  src->kick_pages = 0;
  if (user != NULL && feeds_a_link(src))
    rc = reader_user(src->reader, user, on_read, src);
  else
    rc = reader_round(src->reader, on_read, src);
  if (rc != 0) {
    log_error("cannot start a delta round source=%s", src->tc->tenant->name);
    src->failed = 1;
    src->read_once = 1;
    maybe_finished(src->s);
    return;
  }
  src->reading = 1;
}

static void
on_tick(uv_timer_t *t)
{
  source_read(t->data);
}

static int
busy(const struct scheduler *s)
{
  for (size_t i = 0; i < s->n_sources; i++) {
    if (s->sources[i].reading)
      return 1;
  }
  for (size_t i = 0; i < s->n_lruns; i++) {
    if (s->lruns[i].state != LRUN_IDLE)
      return 1;
  }
  return 0;
}

static void
maybe_finished(struct scheduler *s)
{
  if (s->finished || busy(s))
    return;
  if (s->opts.mode == SCHEDULER_RUN && !s->stopping)
    return;
  for (size_t i = 0; s->opts.mode != SCHEDULER_RUN && i < s->n_sources; i++) {
    if (!s->sources[i].read_once)
      return;
  }
  s->finished = 1;
  budget_save(s);
  if (s->done != NULL)
    s->done(s->done_ctx);
}

void
scheduler_start(struct scheduler *s, void (*done)(void *ctx), void *ctx)
{
  s->done = done;
  s->done_ctx = ctx;
  for (size_t i = 0; i < s->n_sources; i++) {
    struct source *src = &s->sources[i];
    if (s->opts.mode == SCHEDULER_RUN) {
      /* The first rounds start at once, spread over up to a second. */
      source_arm(src, (uint64_t)(random() % 1000));
    } else {
      source_read(src);
    }
  }
  if (s->n_sources == 0)
    maybe_finished(s);
}

void
scheduler_stop(struct scheduler *s)
{
  int held;

  s->stopping = 1;
  for (size_t i = 0; i < s->n_sources; i++) {
    if (s->sources[i].timer_live)
      uv_timer_stop(&s->sources[i].timer);
  }
  for (size_t i = 0; i < s->n_lruns; i++)
    executor_stop(s->lruns[i].executor);
  /* Photo checks are not waited for (a photo is up to 4 MB on a slow
   * link): what they did is recorded, the rest is checked next time.
   * `done` may free the scheduler (a reload): it waits for the loop's
   * end, held back by `finished`. */
  held = s->finished;
  s->finished = 1;
  for (size_t i = 0; i < s->n_lruns; i++) {
    struct lrun *lr = &s->lruns[i];
    if (lr->photos != NULL) {
      photo_pass_cancel(lr->photos);
      lr->photos = NULL;
      lrun_end(lr);
    }
  }
  s->finished = held;
  maybe_finished(s);
}

size_t
scheduler_links(const struct scheduler *s)
{
  return s->n_lruns;
}

void
scheduler_trigger(struct scheduler *s)
{
  log_notice("round of every link requested");
  for (size_t i = 0; i < s->n_sources; i++) {
    struct source *src = &s->sources[i];
    int busy_links = 0;

    for (size_t j = 0; j < s->n_lruns; j++)
      busy_links |=
          (s->lruns[j].source == src && s->lruns[j].state != LRUN_IDLE);
    src->forced = 1;
    if (src->reading || busy_links) {
      /* Not lost: the round in progress is followed by another at once. */
      src->triggered = 1;
      continue;
    }
    if (src->timer_live)
      uv_timer_stop(&src->timer);
    source_read(src);
  }
}

/* 12345 → "12,345" */
static void
thousands(unsigned long long n, char *buf, size_t len)
{
  char digits[32];
  int nd = snprintf(digits, sizeof(digits), "%llu", n);
  size_t o = 0;

  for (int i = 0; i < nd && o + 2 < len; i++) {
    if (i > 0 && (nd - i) % 3 == 0)
      buf[o++] = ',';
    buf[o++] = digits[i];
  }
  buf[o] = '\0';
}

void
scheduler_status(const struct scheduler *s, char *buf, size_t len)
{
  size_t o = 0;

  buf[0] = '\0';
  for (size_t i = 0; i < s->n_lruns && o + 1 < len; i++) {
    const struct lrun *lr = &s->lruns[i];
    struct store_link_counts c;
    size_t done, total;
    double rate;
    char a[32], b[32], when[16] = "never";
    int n;

    executor_progress(lr->executor, &done, &total, &rate);
    if (lr->state == LRUN_EXECUTING && total > 0) {
      thousands(done, a, sizeof(a));
      thousands(total, b, sizeof(b));
      n = snprintf(buf + o, len - o,
                   "%s%s\xe2\x86\x92%s: %s/%s people, %.0f/s", o ? "; " : "",
                   lr->link->source->name, lr->link->target->name, a, b, rate);
    } else {
      if (store_link_counts(s->store, lr->link->name, &c) != 0)
        memset(&c, 0, sizeof(c));
      if (c.last_success != 0) {
        struct tm tm;
        localtime_r(&c.last_success, &tm);
        strftime(when, sizeof(when), "%H:%M:%S", &tm);
      }
      n = snprintf(buf + o, len - o,
                   "%s%s: last success %s, %lld pending, %lld failed, "
                   "%lld deletes held%s",
                   o ? "; " : "", lr->link->name, when, c.pending, c.failed,
                   c.deletes_held, c.creates_held > 0 ? ", creates held" : "");
    }
    if (n < 0 || (size_t)n >= len - o)
      break;
    o += (size_t)n;
  }
}

int
scheduler_write_metrics(const struct scheduler *s, const char *path)
{
  static const char *const services[] = {"login", "graph", "exchange"};
  struct metrics_link *links = calloc(s->n_lruns + 1, sizeof(*links));
  struct metrics_service *svc = calloc(s->n_tctx * 3 + 1, sizeof(*svc));
  struct metrics_tenant *ten = calloc(s->n_tctx + 1, sizeof(*ten));
  struct gate_stat gs[32];
  struct metrics_status_count *stats =
      calloc((s->n_tctx * 3 + 1) * 32, sizeof(*stats));
  size_t n_svc = 0;
  char err[512];
  int rc = -1;

  if (links == NULL || svc == NULL || ten == NULL || stats == NULL)
    goto out;
  for (size_t i = 0; i < s->n_lruns; i++) {
    const struct lrun *lr = &s->lruns[i];
    struct metrics_link *m = &links[i];
    struct store_link_counts c;
    if (store_link_counts(s->store, lr->link->name, &c) != 0)
      goto out;
    m->name = lr->link->name;
    m->source = lr->link->source->name;
    m->target = lr->link->target->name;
    m->object = config_object_name(lr->link->object);
    m->objects = c.objects;
    m->pending = c.pending;
    m->failed = c.failed;
    m->refused = c.refused;
    m->deletes_held = c.deletes_held;
    m->creates_held = c.creates_held;
    m->last_success = c.last_success;
    m->last_round_seconds = lr->last_round_seconds;
    m->rounds = (unsigned long long)lr->rounds;
    m->created = lr->sum.created;
    m->adopted = lr->sum.adopted;
    m->updated = lr->sum.updated;
    m->deleted = lr->sum.deleted;
    m->restored = lr->sum.restored;
    m->op_failures = lr->sum.failed;
    m->op_retries = lr->op_retries;
  }
  for (size_t i = 0; i < s->n_tctx; i++) {
    const struct tctx *tc = &s->tctx[i];
    ten[i].name = tc->tenant->name;
    ten[i].token_refreshes = auth_refresh_count(tc->auth);
    for (size_t k = 0; k < 3; k++) {
      char gate[160];
      struct metrics_service *m = &svc[n_svc];
      struct metrics_status_count *st = stats + n_svc * 32;
      if (k == 1)
        graph_gate_name(tc->tenant, gate, sizeof(gate));
      else
        snprintf(gate, sizeof(gate), "%s/%s", tc->tenant->tenant_id,
                 services[k]);
      m->n_status = http_gate_stats(s->http, gate, gs, 32, &m->throttled);
      if (m->n_status == 0)
        continue;
      for (size_t j = 0; j < m->n_status; j++) {
        st[j].status = gs[j].status;
        st[j].count = gs[j].count;
      }
      m->by_status = st;
      m->tenant = tc->tenant->name;
      m->service = services[k];
      if (k == 1) { /* graph: the budget, when it has limits */
        struct gate_budget b;
        if (http_gate_budget(s->http, gate, &b) == 0 &&
            (b.write_rate_max > 0 || b.unit_rate_max > 0)) {
          m->has_budget = 1;
          m->write_rate = b.write_rate;
          m->write_rate_max = b.write_rate_max;
          m->budget_waited = b.waited;
          m->unit_rate = b.unit_rate;
          m->unit_rate_max = b.unit_rate_max;
        }
      }
      n_svc++;
    }
  }
  rc = metrics_write(path, links, s->n_lruns, svc, n_svc, ten, s->n_tctx,
                     time(NULL), err, sizeof(err));
  if (rc != 0)
    log_error("cannot write metrics error=\"%s\"", err);
out:
  free(links);
  free(svc);
  free(ten);
  free(stats);
  return rc;
}

struct user_op {
  long long op_id;
  enum store_op_state state;
};

static int
on_user_op(void *ctx, const struct store_plan_row *row)
{
  struct user_op *uo = ctx;

  uo->op_id = row->op_id;
  uo->state = row->op_state;
  return 0;
}

int
scheduler_exit_code(const struct scheduler *s)
{
  int held = 0, failed = 0;

  for (size_t i = 0; i < s->n_sources; i++)
    failed |= s->sources[i].failed;
  for (size_t i = 0; i < s->n_lruns; i++) {
    const struct lrun *lr = &s->lruns[i];
    struct store_link_counts c;
    failed |= lr->failed;
    if (store_link_counts(s->store, lr->link->name, &c) != 0) {
      failed = 1;
      continue;
    }
    if (s->opts.mode == SCHEDULER_PLAN)
      continue;
    if (s->opts.only_user != NULL) {
      /* sync --user: that person's op, not the link's others. */
      struct user_op uo = {0};
      const char *id = reader_user_id(lr->source->reader);
      char observed[160];
      planner_observed_tenant(lr->link, observed, sizeof(observed));
      if (id == NULL ||
          store_plan_row_one(s->store, lr->link->name,
                             config_link_source_key(lr->link), observed, id,
                             on_user_op, &uo) < 0) {
        failed = 1;
        continue;
      }
      failed |= uo.op_id != 0 && uo.state == STORE_OP_FAILED;
      held |= uo.op_id != 0 && uo.state == STORE_OP_HELD;
      continue;
    }
    failed |= c.failed > 0;
    held |= c.deletes_held > 0 || c.creates_held > 0;
  }
  return failed ? 1 : held ? 3 : 0;
}

static void
release(struct scheduler *s)
{
  free(s->tctx);
  free(s->sources);
  free(s->lruns);
  free(s);
}

static void
on_timer_closed(uv_handle_t *h)
{
  struct source *src = h->data;
  struct scheduler *s = src->s;

  if (--s->closing == 0)
    release(s);
}

void
scheduler_free(struct scheduler *s)
{
  if (s == NULL)
    return;
  s->stopping = 1;
  s->finished = 1; /* no done callback from here on */
  /* Photo checks answer nobody from here on (photo_pass_cancel). */
  for (size_t i = 0; i < s->n_lruns; i++) {
    photo_pass_cancel(s->lruns[i].photos);
    s->lruns[i].photos = NULL;
  }
  /* Graph clients first: cancelling their requests runs the readers' and
   * executors' callbacks while those still exist. */
  for (size_t i = 0; i < s->n_tctx; i++) {
    graph_free(s->tctx[i].graph);
    s->tctx[i].graph = NULL;
    exo_free(s->tctx[i].exo);
    s->tctx[i].exo = NULL;
  }
  for (size_t i = 0; i < s->n_lruns; i++) {
    struct lrun *lr = &s->lruns[i];
    mapping_free(lr->mapping);
    scope_filter_free(lr->filter);
    executor_free(lr->executor);
    json_decref(lr->members);
    json_decref(lr->excluded);
    json_decref(lr->accepted);
    free(lr->initial);
  }
  for (size_t i = 0; i < s->n_sources; i++)
    reader_free(s->sources[i].reader);
  for (size_t i = 0; i < s->n_tctx; i++)
    auth_free(s->tctx[i].auth);
  anchor_key_free(s->key);
  s->key = NULL;
  for (size_t i = 0; i < s->n_sources; i++) {
    if (s->sources[i].timer_live) {
      s->closing++;
      uv_close((uv_handle_t *)&s->sources[i].timer, on_timer_closed);
    }
  }
  if (s->closing == 0)
    release(s);
}
