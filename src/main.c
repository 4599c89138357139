/*
 * main — command line, start-up and shutdown order.
 *
 * The only file that knows every module. Start-up: log → config → store →
 * loop → http → per source tenant (auth, graph, reader). Shutdown runs the
 * same list backwards, and the loop is run until every handle is closed so
 * that uv_loop_close() succeeds and nothing leaks.
 *
 * Exit codes (DESIGN.md): 0 ok; 1 runtime failure; 2 usage; 3 deletes held
 * for approval; 78 config error (file:line on stderr, nothing sent).
 */
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "auth.h"
#include "config.h"
#include "doctor.h"
#include "graph.h"
#include "http.h"
#include "log.h"
#include "notify.h"
#include "planner.h"
#include "scheduler.h"
#include "store.h"

#define EXIT_OK 0
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_HELD 3
#define EXIT_CONFIG 78

#ifndef GALBRIDGE_VERSION
#define GALBRIDGE_VERSION "0.1.0"
#endif

/* How a command opens the state. */
enum open_mode {
  OPEN_LOCKED, /* run, sync: the lock, then the database for writing */
  OPEN_WRITE,  /* approve-deletes, resync: one short transaction */
  OPEN_READ,   /* status: never created, written or migrated on disk */
};

struct app {
  const char *path;
  struct config *cfg;
  struct store_lock *lock; /* run, sync: state_dir/lock, for life */
  struct store *store;
  int borrowed; /* store is the caller's (plan's copy) */
  int missing;  /* OPEN_READ: there is no state.db */
  uv_loop_t loop;
  struct http *http;
  struct scheduler *sched;
  struct scheduler_opts opts;
  struct notify *notify;
  int stopping;
  int failed; /* RUN ends with exit 1 (a reload that could not apply) */
  /* SIGHUP: the checked config waiting for the old scheduler to drain */
  struct config *next_cfg;
  int reload_again;
  uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
  uv_timer_t stop_timer, status_timer;
};

#define STOP_TIMEOUT_MS 20000
#define STATUS_EVERY_MS 5000

static void
usage(FILE *fp)
{
  fprintf(
      fp,
      "usage: galbridge [-c FILE] COMMAND [ARGS]\n"
      "\n"
      "commands:\n"
      "  run                  run as a daemon in the foreground\n"
      "  sync [--link NAME]   one round of every link (or one), then exit\n"
      "  plan [--link NAME] [--json]\n"
      "                       show what the next round would change\n"
      "  status [--json]      per link and source: objects, pending work\n"
      "  check-config         validate and print the effective config\n"
      "  doctor               check credentials and permissions online\n"
      "  approve-deletes LINK release the deletes held for LINK\n"
      "  resync LINK          read LINK's source and target again in full\n"
      "                       and retry its failed operations\n"
      "\n"
      "options:\n"
      "  -c FILE   config file (default " CONFIG_DEFAULT_PATH ")\n"
      "  -h        this help\n"
      "  -V        version\n");
}

/* `sync`: the command syncs or plans to (check-config, sync, run, plan),
 * so the config must have a link. */
static int
load_config(const char *path, int sync, struct config **cfg)
{
  char err[1024];

  if (config_load(path, cfg, err, sizeof(err)) != 0 ||
      (sync && config_require_links(*cfg, err, sizeof(err)) != 0) ||
      config_check(*cfg, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    config_free(*cfg);
    *cfg = NULL;
    return -1;
  }
  log_set_level((*cfg)->log_level);
  return 0;
}

static void
iso_time(time_t t, char *buf, size_t len)
{
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* --- commands --- */

static int
cmd_check_config(const char *path)
{
  struct config *cfg;

  if (load_config(path, 1, &cfg) != 0)
    return EXIT_CONFIG;
  config_dump_marked(cfg, stdout);
  fflush(stdout);
  (void)config_warn_overlaps(cfg, stderr);
  config_free(cfg);
  return EXIT_OK;
}

/* Commands that run rounds (OPEN_LOCKED) take the state directory's
 * lock before anything touches the database: a second one is refused.
 * approve-deletes and resync do not: each is one short SQLite
 * transaction, which SQLite itself keeps apart from a running daemon's.
 * status only reads (plan works on a private copy, opened by cmd_plan):
 * neither ever makes or changes a state database. */
static int
app_open(struct app *app, const char *path, enum open_mode mode)
{
  char err[1024];
  int rc;

  /* The commands that take the lock are those that sync. */
  if (load_config(path, mode == OPEN_LOCKED, &app->cfg) != 0)
    return EXIT_CONFIG;
  if (app->store != NULL) /* borrowed */
    return EXIT_OK;
  if (mode == OPEN_LOCKED && store_lock(app->cfg->state_dir, &app->lock, NULL,
                                        err, sizeof(err)) != 0) {
    log_error("cannot lock the state directory: %s", err);
    return EXIT_RUNTIME;
  }
  rc = mode == OPEN_READ
           ? store_open_readonly(app->cfg->state_dir, 0, &app->store,
                                 &app->missing, err, sizeof(err))
           : store_open(app->cfg->state_dir, &app->store, err, sizeof(err));
  if (rc != 0) {
    log_error("cannot open the store state_dir=%s error=\"%s\"",
              app->cfg->state_dir, err);
    return EXIT_RUNTIME;
  }
  return EXIT_OK;
}

static void
app_close(struct app *app)
{
  if (!app->borrowed)
    store_close(app->store);
  store_unlock(app->lock);
  config_free(app->cfg);
}

static void
on_handle_closed(uv_handle_t *handle)
{
  (void)handle;
}

static void
on_stop_timeout(uv_timer_t *timer)
{
  struct app *app = timer->data;
  log_warning("in-flight work did not finish in %d s, stopping anyway; "
              "unfinished operations stay queued",
              STOP_TIMEOUT_MS / 1000);
  uv_stop(&app->loop);
}

static void
update_status(struct app *app)
{
  char line[1024];

  if (app->sched == NULL || !notify_enabled(app->notify))
    return;
  scheduler_status(app->sched, line, sizeof(line));
  notify_status(app->notify, "%s", line);
}

static void
on_status_timer(uv_timer_t *timer)
{
  update_status(timer->data);
}

/* After each link round (RUN): metrics file and STATUS line. */
static void
on_progress(void *ctx)
{
  struct app *app = ctx;

  if (app->cfg->metrics_file != NULL)
    scheduler_write_metrics(app->sched, app->cfg->metrics_file);
  update_status(app);
}

static void on_sched_done(void *ctx);

static int
start_scheduler(struct app *app)
{
  char err[1024];
  int config_error;

  app->opts.progress = on_progress;
  app->opts.progress_ctx = app;
  if (scheduler_new(&app->loop, app->http, app->store, app->cfg, &app->opts,
                    &app->sched, &config_error, err, sizeof(err)) != 0) {
    if (config_error)
      fprintf(stderr, "%s\n", err);
    else
      log_error("cannot start error=\"%s\"", err);
    return config_error ? EXIT_CONFIG : EXIT_RUNTIME;
  }
  scheduler_start(app->sched, on_sched_done, app);
  return EXIT_OK;
}

/* SIGHUP: parse and check the whole file into a new config; on any error
 * keep the old one (invariant 5). On success let the running rounds end,
 * then start again from the new config (on_sched_done). */
static void
reload(struct app *app)
{
  struct config *cfg = NULL;
  char err[1024];

  if (app->next_cfg != NULL) {
    app->reload_again = 1;
    return;
  }
  notify_reloading(app->notify);
  if (config_load(app->path, &cfg, err, sizeof(err)) != 0 ||
      config_require_links(cfg, err, sizeof(err)) != 0 ||
      config_check(cfg, err, sizeof(err)) != 0) {
    log_error("reload failed, keeping the running configuration: %s", err);
    config_free(cfg);
    notify_ready(app->notify);
    update_status(app);
    return;
  }
  /* What names an object galbridge made (a tenant's id, a link's source,
   * target, object kind and anchor) and state_dir cannot change under a
   * running daemon: the key tables say which keys. */
  if (config_reload_check(app->cfg, cfg, err, sizeof(err)) != 0) {
    log_error("reload failed, keeping the running configuration: %s", err);
    config_free(cfg);
    notify_ready(app->notify);
    return;
  }
  log_notice("configuration checked, applying it once running rounds end "
             "links=%zu",
             cfg->n_links);
  app->next_cfg = cfg;
  scheduler_stop(app->sched);
}

static void
on_sched_done(void *ctx)
{
  struct app *app = ctx;

  if (app->next_cfg == NULL || app->stopping) {
    uv_stop(&app->loop);
    return;
  }
  /* The old rounds have ended: swap the configuration. */
  scheduler_free(app->sched);
  app->sched = NULL;
  config_free(app->cfg);
  app->cfg = app->next_cfg;
  app->next_cfg = NULL;
  log_set_level(app->cfg->log_level);
  if (start_scheduler(app) != EXIT_OK) {
    /* Checked before: only memory or credentials files can fail now. */
    log_error("cannot apply the new configuration, stopping");
    app->failed = 1;
    uv_stop(&app->loop);
    return;
  }
  log_notice("configuration reloaded config=%s links=%zu", app->path,
             scheduler_links(app->sched));
  notify_ready(app->notify);
  update_status(app);
  if (app->reload_again) {
    app->reload_again = 0;
    reload(app);
  }
}

static void
on_signal(uv_signal_t *sig, int signum)
{
  struct app *app = sig->data;

  if (signum == SIGHUP) {
    log_notice("SIGHUP received, reloading config=%s", app->path);
    reload(app);
    return;
  }
  if (signum == SIGUSR1) {
    if (app->sched != NULL && app->next_cfg == NULL && !app->stopping)
      scheduler_trigger(app->sched);
    return;
  }
  if (app->stopping) {
    log_notice("second signal, stopping now");
    uv_stop(&app->loop);
    return;
  }
  log_notice("stopping signal=%s", signum == SIGTERM ? "TERM" : "INT");
  app->stopping = 1;
  notify_stopping(app->notify);
  uv_timer_start(&app->stop_timer, on_stop_timeout, STOP_TIMEOUT_MS, 0);
  if (app->sched != NULL)
    scheduler_stop(app->sched);
}

/* `store`: plan's private copy (borrowed), or NULL to open the state. */
static int
cmd_rounds(const char *path, const struct scheduler_opts *opts,
           struct store *store)
{
  struct app app = {
      .path = path, .opts = *opts, .store = store, .borrowed = store != NULL};
  int rc, exit_code = EXIT_OK;
  int daemon = opts->mode == SCHEDULER_RUN;

  rc = app_open(&app, path, OPEN_LOCKED);
  if (rc != EXIT_OK) {
    app_close(&app);
    return rc;
  }
  if (opts->only_link != NULL &&
      config_link_find(app.cfg, opts->only_link) == NULL) {
    fprintf(stderr, "galbridge: no link named '%s' in %s\n", opts->only_link,
            path);
    app_close(&app);
    return EXIT_USAGE;
  }
  if (uv_loop_init(&app.loop) != 0) {
    app_close(&app);
    return EXIT_RUNTIME;
  }
  app.http = http_new(&app.loop, NULL);
  if (app.http == NULL) {
    exit_code = EXIT_RUNTIME;
    goto out;
  }
  if (daemon) {
    app.notify = notify_open(&app.loop);
    uv_signal_init(&app.loop, &app.sig_term);
    uv_signal_init(&app.loop, &app.sig_int);
    uv_signal_init(&app.loop, &app.sig_hup);
    uv_signal_init(&app.loop, &app.sig_usr1);
    uv_timer_init(&app.loop, &app.stop_timer);
    uv_timer_init(&app.loop, &app.status_timer);
    app.sig_term.data = app.sig_int.data = &app;
    app.sig_hup.data = app.sig_usr1.data = &app;
    app.stop_timer.data = app.status_timer.data = &app;
    uv_signal_start(&app.sig_term, on_signal, SIGTERM);
    uv_signal_start(&app.sig_int, on_signal, SIGINT);
    uv_signal_start(&app.sig_hup, on_signal, SIGHUP);
    uv_signal_start(&app.sig_usr1, on_signal, SIGUSR1);
  }
  exit_code = start_scheduler(&app);
  if (exit_code != EXIT_OK)
    goto out;
  if (daemon) {
    uint64_t wd = notify_watchdog_start(app.notify);
    log_notice("galbridge %s running config=%s links=%zu watchdog=%llums",
               GALBRIDGE_VERSION, path, scheduler_links(app.sched),
               (unsigned long long)(wd / 1000));
    notify_ready(app.notify);
    uv_timer_start(&app.status_timer, on_status_timer, STATUS_EVERY_MS,
                   STATUS_EVERY_MS);
    uv_unref((uv_handle_t *)&app.status_timer);
  }
  uv_run(&app.loop, UV_RUN_DEFAULT);
  if (daemon)
    exit_code = app.failed ? EXIT_RUNTIME : EXIT_OK;
  else
    exit_code = scheduler_exit_code(app.sched);
  if (!daemon && store_failed(app.store)) {
    /* A full or read-only disk: what was done is not all recorded (the
     * outbox replays it next time), so this is no success. */
    log_error("the state database could not be written or read, see the "
              "errors above; state_dir=%s",
              app.cfg->state_dir);
    exit_code = EXIT_RUNTIME;
  }

out:
  scheduler_free(app.sched);
  config_free(app.next_cfg);
  if (daemon) {
    uv_close((uv_handle_t *)&app.sig_term, on_handle_closed);
    uv_close((uv_handle_t *)&app.sig_int, on_handle_closed);
    uv_close((uv_handle_t *)&app.sig_hup, on_handle_closed);
    uv_close((uv_handle_t *)&app.sig_usr1, on_handle_closed);
    uv_close((uv_handle_t *)&app.stop_timer, on_handle_closed);
    uv_close((uv_handle_t *)&app.status_timer, on_handle_closed);
    notify_close(app.notify);
  }
  if (app.http != NULL)
    http_close(app.http);
  uv_run(&app.loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&app.loop) != 0)
    log_warning("event loop closed with handles still open");
  app_close(&app);
  return exit_code;
}

static json_t *
time_or_null(time_t t)
{
  char buf[32];

  if (t == 0)
    return json_null();
  iso_time(t, buf, sizeof(buf));
  return json_string(buf);
}

/* The current round's progress and, from its rate so far, when the
 * outbox should be empty; null when nothing is pending. */
static json_t *
progress_json(const struct store_link_counts *c, time_t now)
{
  double elapsed, rate = 0;
  json_t *p;

  if (c->pending <= 0 || c->run_started == 0)
    return json_null();
  elapsed = difftime(now, c->run_started);
  if (elapsed >= 1 && c->run_done > 0)
    rate = (double)c->run_done / elapsed;
  p = json_pack("{s:o, s:I, s:I, s:f}", "started",
                time_or_null(c->run_started), "done", (json_int_t)c->run_done,
                "pending", (json_int_t)c->pending, "per_second", rate);
  if (p != NULL)
    json_object_set_new(
        p, "finish_estimate",
        rate > 0 ? time_or_null(now + (time_t)((double)c->pending / rate + 1))
                 : json_null());
  return p;
}

static int
cmd_status(const char *path, int as_json)
{
  struct app app = {0};
  json_t *root = NULL, *links, *sources;
  int rc, empty = 0;

  rc = app_open(&app, path, OPEN_READ);
  if (rc != EXIT_OK) {
    app_close(&app);
    return rc;
  }
  if (store_is_empty(app.store, &empty) != 0) {
    app_close(&app);
    return EXIT_RUNTIME;
  }
  root = json_object();
  links = json_array();
  sources = json_array();
  json_object_set_new(root, "links", links);
  json_object_set_new(root, "sources", sources);
  /* A state that is not there, or holds nothing, says so: it may have
   * been lost (galbridge plan looks for copies in the targets). */
  json_object_set_new(root, "state",
                      json_string(app.missing ? "missing"
                                  : empty     ? "empty"
                                              : "present"));
  rc = EXIT_RUNTIME;

  for (size_t i = 0; i < app.cfg->n_links; i++) {
    const struct config_link *link = &app.cfg->links[i];
    struct store_link_counts c;
    struct store_op *ops;
    size_t n_ops;
    json_t *entry, *failures;
    if (store_link_counts(app.store, link->name, &c) != 0 ||
        store_ops_list(app.store, link->name, "failed", 100, &ops, &n_ops) !=
            0)
      goto out;
    failures = json_array();
    /* next_try: when a round tries it again (null: the next round). */
    for (size_t k = 0; k < n_ops; k++)
      json_array_append_new(
          failures, json_pack("{s:s, s:s, s:s?, s:i, s:o}", "source_id",
                              ops[k].source_id, "op", ops[k].kind, "error",
                              ops[k].last_error, "attempts", ops[k].attempts,
                              "next_try", time_or_null(ops[k].next_try)));
    store_ops_free(ops, n_ops);
    entry = json_pack(
        "{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:o}", "name", link->name,
        "source", link->source->name, "target", link->target->name, "object",
        config_object_name(link->object), "objects", (json_int_t)c.objects,
        "pending", (json_int_t)c.pending, "failed", (json_int_t)c.failed,
        "deletes_held", (json_int_t)c.deletes_held, "last_success",
        time_or_null(c.last_success));
    json_object_set_new(entry, "failures", failures);
    /* Of the failed: people not synced for a conflict or a value. */
    json_object_set_new(entry, "refused", json_integer(c.refused));
    json_object_set_new(entry, "progress", progress_json(&c, time(NULL)));
    if (link->object == CONFIG_OBJECT_GUEST && link->target->exchange) {
      struct store_pair *pairs;
      size_t n_pairs;
      json_t *list = json_array();
      long long nv;
      if (store_count_not_visible(app.store, link->name, &nv) != 0 ||
          store_unverified(app.store, link->name, 20, &pairs, &n_pairs) != 0) {
        json_decref(list);
        goto out;
      }
      for (size_t k = 0; k < n_pairs; k++)
        json_array_append_new(list,
                              json_pack("{s:s, s:s}", "source_id", pairs[k].a,
                                        "target_id", pairs[k].b));
      store_pairs_free(pairs, n_pairs);
      json_object_set_new(entry, "guests_not_visible", json_integer(nv));
      /* The first 20, for an admin to look at. */
      json_object_set_new(entry, "guests_not_visible_first", list);
    }
    json_array_append_new(links, entry);
  }
  for (size_t i = 0; i < app.cfg->n_tenants; i++) {
    const struct config_tenant *t = &app.cfg->tenants[i];
    struct store_source_counts c;
    struct store_delta_state st;
    int is_source = 0;

    for (size_t j = 0; j < app.cfg->n_links; j++)
      is_source |=
          (app.cfg->links[j].source == t || app.cfg->links[j].target == t);
    if (!is_source)
      continue;
    if (store_source_count(app.store, t->tenant_id, &c) != 0 ||
        store_delta_get(app.store, t->tenant_id, &st) != 0)
      goto out;
    json_array_append_new(
        sources,
        json_pack("{s:s, s:s, s:I, s:I, s:I, s:o, s:b}", "name", t->name,
                  "tenant_id", t->tenant_id, "objects", (json_int_t)c.present,
                  "soft_deleted", (json_int_t)c.soft_deleted, "deleted",
                  (json_int_t)c.deleted, "last_round",
                  time_or_null(st.last_round), "full_read_pending",
                  !graph_delta_link_usable(t->graph_url, st.base_url,
                                           st.delta_link)));
    store_delta_state_clear(&st);
  }

  if (as_json) {
    char *text = json_dumps(root, JSON_INDENT(2));
    if (text == NULL)
      goto out;
    printf("%s\n", text);
    free(text);
  } else {
    json_t *v;
    size_t i;
    if (app.missing || empty)
      printf("%s %s/state.db: galbridge has not synced from here yet, or "
             "its state was lost ('galbridge plan' shows what the targets "
             "already hold)\n",
             app.missing ? "no state database at" : "nothing recorded in",
             app.cfg->state_dir);
    json_array_foreach(sources, i, v)
    {
      const char *last = json_string_value(json_object_get(v, "last_round"));
      printf("source %s: %lld users, %lld soft-deleted, %lld deleted; "
             "last round %s\n",
             json_string_value(json_object_get(v, "name")),
             json_integer_value(json_object_get(v, "objects")),
             json_integer_value(json_object_get(v, "soft_deleted")),
             json_integer_value(json_object_get(v, "deleted")),
             last ? last : "never");
    }
    json_array_foreach(links, i, v)
    {
      const char *last = json_string_value(json_object_get(v, "last_success"));
      printf("link %s (%s -> %s, %s): %lld objects, %lld pending, "
             "%lld failed, %lld deletes held; last success %s\n",
             json_string_value(json_object_get(v, "name")),
             json_string_value(json_object_get(v, "source")),
             json_string_value(json_object_get(v, "target")),
             json_string_value(json_object_get(v, "object")),
             json_integer_value(json_object_get(v, "objects")),
             json_integer_value(json_object_get(v, "pending")),
             json_integer_value(json_object_get(v, "failed")),
             json_integer_value(json_object_get(v, "deletes_held")),
             last ? last : "never");
      json_t *f, *p = json_object_get(v, "progress");
      size_t k;
      if (json_is_object(p)) {
        const char *eta =
            json_string_value(json_object_get(p, "finish_estimate"));
        printf("  this round: %lld done since %s, %.1f/s; %lld pending, "
               "estimated finish %s\n",
               json_integer_value(json_object_get(p, "done")),
               json_string_value(json_object_get(p, "started")),
               json_real_value(json_object_get(p, "per_second")),
               json_integer_value(json_object_get(p, "pending")),
               eta ? eta : "unknown yet");
      }
      json_array_foreach(json_object_get(v, "failures"), k, f)
      {
        const char *op = json_string_value(json_object_get(f, "op"));
        const char *next = json_string_value(json_object_get(f, "next_try"));
        if (strcmp(op, "fail") == 0)
          printf("  not synced: source object %s: %s\n",
                 json_string_value(json_object_get(f, "source_id")),
                 json_string_value(json_object_get(f, "error")));
        else
          printf("  failed %s of source object %s: %s; next try %s%s\n", op,
                 json_string_value(json_object_get(f, "source_id")),
                 json_string_value(json_object_get(f, "error")),
                 next != NULL ? "at " : "in the next round",
                 next != NULL ? next : "");
      }
      if (json_integer_value(json_object_get(v, "guests_not_visible")) > 0) {
        json_t *g;
        size_t gi;
        printf("  %lld guests not yet seen visible on the Exchange side "
               "(provisioning can take a while; checked every round):\n",
               json_integer_value(json_object_get(v, "guests_not_visible")));
        json_array_foreach(json_object_get(v, "guests_not_visible_first"), gi,
                           g)
        {
          printf("    guest %s (source object %s)\n",
                 json_string_value(json_object_get(g, "target_id")),
                 json_string_value(json_object_get(g, "source_id")));
        }
      }
      if (json_integer_value(json_object_get(v, "deletes_held")) > 0)
        printf("  deletes held: run 'galbridge approve-deletes %s' to let "
               "them through\n",
               json_string_value(json_object_get(v, "name")));
    }
  }
  rc = EXIT_OK;

out:
  json_decref(root);
  app_close(&app);
  return rc;
}

/* --- plan --- */

struct plan_out {
  int json;
  json_t *links;   /* --json: the links planned so far */
  json_t *current; /* --json: the link being planned */
  const char *link;
};

static void
print_value(const json_t *v)
{
  char *text;

  if (v == NULL || json_is_null(v)) {
    printf("(none)");
    return;
  }
  text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  printf("%s", text ? text : "?");
  free(text);
}

static const char *
label(const struct store_plan_row *row, const struct planner_decision *d)
{
  const char *name =
      json_string_value(json_object_get(d->desired, "displayName"));
  return name != NULL ? name : row->source_id;
}

/* The address an object is (to be) made with, for plan's lines. */
static const char *
address(const struct planner_decision *d)
{
  const char *a = json_string_value(json_object_get(d->desired, "mail"));

  if (a == NULL)
    a = json_string_value(json_object_get(d->desired, "ExternalEmailAddress"));
  return a != NULL ? a : "";
}

static void
plan_emit(void *ctx, const struct store_plan_row *row,
          const struct planner_decision *d, int held)
{
  struct plan_out *po = ctx;
  json_t *applied = NULL, *v;
  const char *key, *kind = planner_kind_name(d->kind);

  if (row->applied != NULL)
    applied = json_loads(row->applied, 0, NULL);
  if (po->json) {
    json_t *item =
        json_pack("{s:s, s:s, s:s?, s:b}", "op", kind, "source_id",
                  row->source_id, "target_id", row->target_id, "held", held);
    if (d->kind == PLANNER_FAIL)
      json_object_set_new(item, "reason", json_string(d->reason));
    if (d->kind == PLANNER_UPDATE) {
      json_t *changes = json_object();
      json_object_foreach(d->payload, key, v)
      {
        json_t *old = json_object_get(applied, key);
        json_object_set_new(
            changes, key,
            json_pack("{s:O, s:O}", "old", old ? old : json_null(), "new", v));
      }
      json_object_set_new(item, "changes", changes);
    } else if (d->desired != NULL) {
      json_object_set(item, "attributes", d->desired);
    }
    json_array_append_new(json_object_get(po->current, "changes"), item);
    json_decref(applied);
    return;
  }
  if (applied != NULL && d->desired == NULL) {
    const char *name =
        json_string_value(json_object_get(applied, "displayName"));
    printf("  %-8s %s (target %s)%s\n", kind, name ? name : row->source_id,
           row->target_id, held ? "  [held: over max_deletes]" : "");
  } else if (d->kind == PLANNER_UPDATE) {
    printf("  %-8s %s (target %s)\n", kind, label(row, d), row->target_id);
    json_object_foreach(d->payload, key, v)
    {
      printf("             %s: ", key);
      print_value(json_object_get(applied, key));
      printf(" -> ");
      print_value(v);
      printf("\n");
    }
  } else if (d->kind == PLANNER_FAIL) {
    printf("  %-8s %s <%s> (source %s): %s\n", kind, label(row, d), address(d),
           row->source_id, d->reason);
  } else if (d->kind == PLANNER_ADOPT) {
    printf("  %-8s %s <%s> (source %s): target object %s, which galbridge "
           "did not make\n",
           kind, label(row, d), address(d), row->source_id, row->target_id);
  } else {
    printf("  %-8s %s <%s> (source %s)\n", kind, label(row, d), address(d),
           row->source_id);
  }
  json_decref(applied);
}

static void
plan_link_start(struct plan_out *po, const struct config_link *link)
{
  if (po->json) {
    po->current =
        json_pack("{s:s, s:s, s:s, s:s, s:[]}", "name", link->name, "source",
                  link->source->name, "target", link->target->name, "object",
                  config_object_name(link->object), "changes");
    json_array_append_new(po->links, po->current);
  } else {
    printf("link %s (%s -> %s, %s):\n", link->name, link->source->name,
           link->target->name, config_object_name(link->object));
  }
}

static void
plan_done(void *ctx, const struct config_link *link,
          const struct planner_stats *st, const struct recovery *rec)
{
  struct plan_out *po = ctx;
  const char *state = !rec->empty                       ? "present"
                      : rec->proven + rec->unproven > 0 ? "lost"
                                                        : "empty";

  if (po->json) {
    json_object_set_new(
        po->current, "totals",
        json_pack(
            "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
            "create", (json_int_t)st->creates, "update",
            (json_int_t)st->updates, "delete", (json_int_t)st->deletes,
            "restore", (json_int_t)st->restores, "adopt",
            (json_int_t)st->adopts, "refused", (json_int_t)st->fails, "held",
            (json_int_t)st->held, "unchanged", (json_int_t)st->unchanged,
            "out_of_scope", (json_int_t)st->out_of_scope, "waiting",
            (json_int_t)st->waiting, "failed", (json_int_t)st->failed_kept));
    json_object_set_new(po->current, "state",
                        json_pack("{s:s, s:I, s:I, s:I}", "state", state,
                                  "proven", (json_int_t)rec->proven, "gone",
                                  (json_int_t)rec->taken_up, "unproven",
                                  (json_int_t)rec->unproven));
    return;
  }
  if (rec->empty && rec->proven + rec->unproven > 0)
    printf("  the state holds nothing of this link, but %s already holds "
           "%lu objects with its anchors: the state looks lost. Of the %lu "
           "whose anchor proves galbridge made them, a sync takes up those "
           "of people in scope and updates them, takes up the %lu whose "
           "source object is gone and removes them under max_deletes, and "
           "leaves the rest alone, as it leaves the %lu without proof.\n",
           link->target->name, rec->proven + rec->unproven, rec->proven,
           rec->taken_up, rec->unproven);
  else if (rec->empty)
    printf("  the state holds nothing of this link: planned as a first "
           "sync\n");
  printf("  totals: %lu to create, %lu to update, %lu to delete "
         "(%lu held), %lu to restore, %lu to adopt; %lu refused, "
         "%lu unchanged, %lu out of scope, %lu already queued, "
         "%lu failed\n",
         st->creates, st->updates, st->deletes, st->held, st->restores,
         st->adopts, st->fails, st->unchanged, st->out_of_scope, st->waiting,
         st->failed_kept);
}

static int
cmd_plan(const char *path, const char *only_link, int as_json)
{
  struct plan_out po = {.json = as_json};
  struct config *cfg = NULL;
  struct store *store = NULL;
  char err[1024];
  int rc, missing = 0;

  /* Plan each link on its own so that its header comes before its
   * changes, whatever order sources answer in. */
  if (load_config(path, 1, &cfg) != 0)
    return EXIT_CONFIG;
  if (only_link != NULL && config_link_find(cfg, only_link) == NULL) {
    fprintf(stderr, "galbridge: no link named '%s' in %s\n", only_link, path);
    config_free(cfg);
    return EXIT_USAGE;
  }
  /* plan reads the tenants and plans as a round does, into a private
   * copy of the state: the state on disk is never made or changed, and
   * a daemon may run meanwhile. */
  if (store_open_readonly(cfg->state_dir, 1, &store, &missing, err,
                          sizeof(err)) != 0) {
    log_error("cannot read the state state_dir=%s error=\"%s\"",
              cfg->state_dir, err);
    config_free(cfg);
    return EXIT_RUNTIME;
  }
  if (missing && !as_json)
    printf("no state database at %s/state.db: planned as for a first "
           "sync (or a lost state)\n",
           cfg->state_dir);
  po.links = json_array();
  rc = EXIT_OK;
  for (size_t i = 0; i < cfg->n_links; i++) {
    const struct config_link *link = &cfg->links[i];
    struct scheduler_opts opts = {.mode = SCHEDULER_PLAN,
                                  .only_link = link->name,
                                  .emit = plan_emit,
                                  .emit_ctx = &po,
                                  .plan_done = plan_done};
    int one;
    if (only_link != NULL && strcmp(only_link, link->name) != 0)
      continue;
    plan_link_start(&po, link);
    fflush(stdout);
    one = cmd_rounds(path, &opts, store);
    if (one != EXIT_OK)
      rc = one;
  }
  if (as_json) {
    json_t *root = json_pack("{s:O, s:s}", "links", po.links, "state",
                             missing ? "missing" : "present");
    char *text = json_dumps(root, JSON_INDENT(2));
    printf("%s\n", text ? text : "{}");
    free(text);
    json_decref(root);
  }
  json_decref(po.links);
  store_close(store);
  config_free(cfg);
  return rc;
}

static int
cmd_link_admin(const char *path, const char *cmd, int argc, char **argv)
{
  struct app app = {0};
  const struct config_link *link;
  long long n = 0;
  int rc;

  if (argc != 1) {
    fprintf(stderr, "usage: galbridge %s LINK\n", cmd);
    return EXIT_USAGE;
  }
  rc = app_open(&app, path, OPEN_WRITE);
  if (rc != EXIT_OK) {
    app_close(&app);
    return rc;
  }
  link = config_link_find(app.cfg, argv[0]);
  if (link == NULL) {
    fprintf(stderr, "galbridge: no link named '%s' in %s\n", argv[0], path);
    app_close(&app);
    return EXIT_USAGE;
  }
  rc = EXIT_OK;
  if (strcmp(cmd, "approve-deletes") == 0) {
    if (store_link_approve(app.store, link->name, &n) != 0)
      rc = EXIT_RUNTIME;
    else
      printf("link %s: %lld held deletes released; they run in the next "
             "round\n",
             link->name, n);
    if (rc == EXIT_OK)
      log_notice("deletes approved link=%s released=%lld", link->name, n);
  } else {
    /* Both tenants the link reads (the source for its people, the target
     * for its copies) are read again in full. A NULL plan key: the next
     * round weighs every object again. */
    if (store_link_clear_failed(app.store, link->name, &n) != 0 ||
        store_delta_reset(app.store, link->source->tenant_id) != 0 ||
        store_delta_reset(app.store, link->target->tenant_id) != 0 ||
        store_plan_mark_set(app.store, link->name, NULL, 0) != 0)
      rc = EXIT_RUNTIME;
    else
      printf("link %s: %lld failed operations will be tried again; tenants "
             "%s (source) and %s (target) will be read in full and every "
             "object weighed in the next round\n",
             link->name, n, link->source->name, link->target->name);
  }
  app_close(&app);
  return rc;
}

static int
cmd_doctor(const char *path)
{
  struct config *cfg;
  struct http *http;
  uv_loop_t loop;
  int rc;

  /* A config with tenants and no link yet: their credentials can be
   * checked before any link is written. */
  if (load_config(path, 0, &cfg) != 0)
    return EXIT_CONFIG;
  if (uv_loop_init(&loop) != 0) {
    config_free(cfg);
    return EXIT_RUNTIME;
  }
  http = http_new(&loop, NULL);
  rc = http == NULL ? -1 : doctor_run(&loop, http, cfg, stdout);
  if (http != NULL)
    http_close(http);
  uv_run(&loop, UV_RUN_DEFAULT);
  (void)uv_loop_close(&loop);
  config_free(cfg);
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

/* Parse "--link NAME" / "--json" style options of a command. */
static int
command_args(int argc, char **argv, const char **link, int *json)
{
  for (int i = 0; i < argc; i++) {
    if (link != NULL && strcmp(argv[i], "--link") == 0 && i + 1 < argc) {
      *link = argv[++i];
    } else if (link != NULL && strncmp(argv[i], "--link=", 7) == 0) {
      *link = argv[i] + 7;
    } else if (json != NULL && strcmp(argv[i], "--json") == 0) {
      *json = 1;
    } else {
      fprintf(stderr, "galbridge: unexpected argument '%s'\n", argv[i]);
      return -1;
    }
  }
  return 0;
}

int
main(int argc, char **argv)
{
  const char *path = CONFIG_DEFAULT_PATH;
  const char *cmd, *link = NULL;
  int opt, json = 0;

  log_init();
  /* libcurl runs with CURLOPT_NOSIGNAL and OpenSSL writes with write(2):
   * a peer closing a connection must not kill the daemon. */
  signal(SIGPIPE, SIG_IGN);
  /* Tokens and keys live in this process's memory: no core file. */
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  while ((opt = getopt(argc, argv, "+c:hV")) != -1) {
    switch (opt) {
    case 'c':
      path = optarg;
      break;
    case 'h':
      usage(stdout);
      return EXIT_OK;
    case 'V':
      printf("galbridge %s\n", GALBRIDGE_VERSION);
      return EXIT_OK;
    default:
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (optind >= argc) {
    usage(stderr);
    return EXIT_USAGE;
  }
  cmd = argv[optind++];
  argc -= optind;
  argv += optind;

  if (strcmp(cmd, "check-config") == 0) {
    if (command_args(argc, argv, NULL, NULL) != 0)
      return EXIT_USAGE;
    return cmd_check_config(path);
  }
  if (strcmp(cmd, "sync") == 0) {
    struct scheduler_opts opts = {.mode = SCHEDULER_SYNC};
    if (command_args(argc, argv, &link, NULL) != 0)
      return EXIT_USAGE;
    opts.only_link = link;
    return cmd_rounds(path, &opts, NULL);
  }
  if (strcmp(cmd, "run") == 0) {
    struct scheduler_opts opts = {.mode = SCHEDULER_RUN};
    if (command_args(argc, argv, NULL, NULL) != 0)
      return EXIT_USAGE;
    return cmd_rounds(path, &opts, NULL);
  }
  if (strcmp(cmd, "plan") == 0) {
    if (command_args(argc, argv, &link, &json) != 0)
      return EXIT_USAGE;
    return cmd_plan(path, link, json);
  }
  if (strcmp(cmd, "approve-deletes") == 0 || strcmp(cmd, "resync") == 0)
    return cmd_link_admin(path, cmd, argc, argv);
  if (strcmp(cmd, "doctor") == 0) {
    if (command_args(argc, argv, NULL, NULL) != 0)
      return EXIT_USAGE;
    return cmd_doctor(path);
  }
  if (strcmp(cmd, "status") == 0) {
    if (command_args(argc, argv, NULL, &json) != 0)
      return EXIT_USAGE;
    return cmd_status(path, json);
  }

  fprintf(stderr, "galbridge: unknown command '%s'\n", cmd);
  usage(stderr);
  return EXIT_USAGE;
}
