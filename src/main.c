/*
 * main — each command's start-up and shutdown order.
 *
 * The only file that knows every module. The command line is cmdline.c's;
 * here each command's id is mapped to its handler. Start-up: log →
 * config → store → loop → http → per source tenant (auth, graph, reader).
 * Shutdown runs the same list backwards, and the loop is run until every
 * handle is closed so that uv_loop_close() succeeds and nothing leaks. What
 * `status` and `plan` print is report.c's; the commands here open what it
 * reads.
 *
 * Exit codes (DESIGN.md): 0 ok; 1 runtime failure; 2 usage; 3 deletes or
 * creates held for approval; 78 config error (file:line on stderr, nothing
 * sent).
 */
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "auth.h"
#include "cmdline.h"
#include "config.h"
#include "doctor.h"
#include "explain.h"
#include "http.h"
#include "log.h"
#include "migcheck.h"
#include "notify.h"
#include "planner.h"
#include "report.h"
#include "scheduler.h"
#include "store.h"
#include "trust.h"
#include "version.h"

#define EXIT_OK 0
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_HELD 3
#define EXIT_CONFIG 78

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
  int n_signals, n_timers; /* of those, made (and so to be closed) */
};

#define STOP_TIMEOUT_MS 20000
#define STATUS_EVERY_MS 5000

/* `sync`: the command syncs or plans to (check-config, sync, run, plan),
 * so the config must have a link. */
static int
load_config(const char *path, int sync, struct config **cfg)
{
  char err[1024];

  if (config_load(path, cfg, err, sizeof(err)) != 0 ||
      (sync && config_require_links(*cfg, err, sizeof(err)) != 0) ||
      planner_check_config(*cfg, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    config_free(*cfg);
    *cfg = NULL;
    return -1;
  }
  log_set_level((*cfg)->log_level);
  return 0;
}

/* --- commands --- */

static int
cmd_check_config(const struct cmdline *cl)
{
  struct config *cfg;

  if (load_config(cl->path, 1, &cfg) != 0)
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
      planner_check_config(cfg, err, sizeof(err)) != 0) {
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
  int rc;

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
  /* Without the bound the stop waits for the work in flight, however
   * long: a second signal still stops at once. */
  rc = uv_timer_start(&app->stop_timer, on_stop_timeout, STOP_TIMEOUT_MS, 0);
  if (rc != 0)
    log_warning("stop not bounded in time, a second signal stops at once "
                "error=\"%s\"",
                uv_strerror(rc));
  if (app->sched != NULL)
    scheduler_stop(app->sched);
}

/* run: the signal handlers and timers. Returns 0, or -1 (logged) with
 * app->n_signals and app->n_timers saying how many were made: exactly
 * those are closed by daemon_handles_close(). */
static int
daemon_handles_open(struct app *app)
{
  uv_signal_t *sigs[] = {&app->sig_term, &app->sig_int, &app->sig_hup,
                         &app->sig_usr1};
  static const int signums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
  uv_timer_t *timers[] = {&app->stop_timer, &app->status_timer};
  int result = 0;

  for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
    result = uv_signal_init(&app->loop, sigs[i]);
    if (result != 0)
      goto out;
    sigs[i]->data = app;
    app->n_signals++;
  }
  for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++) {
    result = uv_timer_init(&app->loop, timers[i]);
    if (result != 0)
      goto out;
    timers[i]->data = app;
    app->n_timers++;
  }
  for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
    result = uv_signal_start(sigs[i], on_signal, signums[i]);
    if (result != 0)
      goto out;
  }
out:
  if (result != 0)
    log_error("cannot start error=\"cannot set up signals and timers: %s\"",
              uv_strerror(result));
  return result != 0 ? -1 : 0;
}

static void
daemon_handles_close(struct app *app)
{
  uv_signal_t *sigs[] = {&app->sig_term, &app->sig_int, &app->sig_hup,
                         &app->sig_usr1};
  uv_timer_t *timers[] = {&app->stop_timer, &app->status_timer};

  for (int i = 0; i < app->n_signals; i++)
    uv_close((uv_handle_t *)sigs[i], on_handle_closed);
  for (int i = 0; i < app->n_timers; i++)
    uv_close((uv_handle_t *)timers[i], on_handle_closed);
  app->n_signals = app->n_timers = 0;
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
    if (daemon_handles_open(&app) != 0) {
      exit_code = EXIT_RUNTIME;
      goto out;
    }
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
    /* Without it the STATUS line is still renewed after each round. */
    rc = uv_timer_start(&app.status_timer, on_status_timer, STATUS_EVERY_MS,
                        STATUS_EVERY_MS);
    if (rc != 0)
      log_warning("status timer not started error=\"%s\"", uv_strerror(rc));
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
    daemon_handles_close(&app);
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

static int
cmd_run(const struct cmdline *cl)
{
  struct scheduler_opts opts = {.mode = SCHEDULER_RUN};

  return cmd_rounds(cl->path, &opts, NULL);
}

/* sync --link LINK --user WHO: the state directory's lock (refused while
 * a daemon or a sync runs, as sync is) and the store are taken here, so
 * that what was done can be read once the run is over. */
static int
cmd_sync_user(const struct cmdline *cl)
{
  struct scheduler_opts opts = {.mode = SCHEDULER_SYNC,
                                .only_link = cl->link,
                                .only_user = cl->user,
                                .planning = report_user_planning,
                                .emit = report_user_emit};
  const struct config_link *link;
  struct store_lock *lock = NULL;
  struct report_user *ru = NULL;
  struct config *cfg = NULL;
  struct store *store = NULL;
  char err[1024];
  int rc;

  if (load_config(cl->path, 1, &cfg) != 0)
    return EXIT_CONFIG;
  link = config_link_find(cfg, cl->link);
  if (link == NULL) {
    fprintf(stderr, "galbridge: no link named '%s' in %s\n", cl->link,
            cl->path);
    config_free(cfg);
    return EXIT_USAGE;
  }
  if (link->object == CONFIG_OBJECT_GROUPCONTACT) {
    fprintf(stderr,
            "galbridge: --user syncs one person; link '%s' copies groups "
            "(object = groupcontact): run 'galbridge sync --link %s'\n",
            cl->link, cl->link);
    config_free(cfg);
    return EXIT_USAGE;
  }
  if (store_lock(cfg->state_dir, &lock, NULL, err, sizeof(err)) != 0) {
    log_error("cannot lock the state directory: %s", err);
    rc = EXIT_RUNTIME;
    goto out;
  }
  if (store_open(cfg->state_dir, &store, err, sizeof(err)) != 0) {
    log_error("cannot open the store state_dir=%s error=\"%s\"",
              cfg->state_dir, err);
    rc = EXIT_RUNTIME;
    goto out;
  }
  ru = report_user_new(stdout, store, link);
  if (ru == NULL) {
    rc = EXIT_RUNTIME;
    goto out;
  }
  opts.emit_ctx = ru;
  rc = cmd_rounds(cl->path, &opts, store);
  if (report_user_end(ru) != 0 && rc == EXIT_OK)
    rc = EXIT_RUNTIME;
  if (store_failed(store))
    rc = EXIT_RUNTIME;
out:
  store_close(store);
  store_unlock(lock);
  config_free(cfg);
  return rc;
}

static int
cmd_sync(const struct cmdline *cl)
{
  struct scheduler_opts opts = {.mode = SCHEDULER_SYNC, .only_link = cl->link};

  if (cl->user != NULL)
    return cmd_sync_user(cl);
  return cmd_rounds(cl->path, &opts, NULL);
}

static int
cmd_status(const struct cmdline *cl)
{
  struct app app = {0};
  int rc;

  rc = app_open(&app, cl->path, OPEN_READ);
  if (rc == EXIT_OK &&
      report_status(app.cfg, app.store, app.missing, cl->json, stdout) != 0)
    rc = EXIT_RUNTIME;
  app_close(&app);
  return rc;
}

/* plan and explain: the config (which must have a link, and `link` if
 * not NULL), and a private copy of the state to plan into (plan reads the
 * tenants and plans as a round does: the state on disk is never made or
 * changed, no lock is taken, and a daemon may run meanwhile). Returns
 * EXIT_OK with *cfg and *store new, or the exit code, having said why. */
static int
plan_open(const char *path, const char *link, struct config **cfg,
          struct store **store, int *missing)
{
  char err[1024];

  if (load_config(path, 1, cfg) != 0)
    return EXIT_CONFIG;
  if (link != NULL && config_link_find(*cfg, link) == NULL) {
    fprintf(stderr, "galbridge: no link named '%s' in %s\n", link, path);
    config_free(*cfg);
    *cfg = NULL;
    return EXIT_USAGE;
  }
  if (store_open_readonly((*cfg)->state_dir, 1, store, missing, err,
                          sizeof(err)) != 0) {
    log_error("cannot read the state state_dir=%s error=\"%s\"",
              (*cfg)->state_dir, err);
    config_free(*cfg);
    *cfg = NULL;
    return EXIT_RUNTIME;
  }
  return EXIT_OK;
}

static int
cmd_plan(const struct cmdline *cl)
{
  const char *path = cl->path, *only_link = cl->link;
  struct report_plan *rp;
  struct config *cfg = NULL;
  struct store *store = NULL;
  int rc, missing = 0;

  /* Plan each link on its own so that its header comes before its
   * changes, whatever order sources answer in. */
  rc = plan_open(path, only_link, &cfg, &store, &missing);
  if (rc != EXIT_OK)
    return rc;
  rp = report_plan_begin(stdout, cl->json, cfg->state_dir, missing);
  rc = rp != NULL ? EXIT_OK : EXIT_RUNTIME;
  for (size_t i = 0; rp != NULL && i < cfg->n_links; i++) {
    const struct config_link *link = &cfg->links[i];
    struct scheduler_opts opts = {.mode = SCHEDULER_PLAN,
                                  .only_link = link->name,
                                  .emit = report_plan_emit,
                                  .emit_ctx = rp,
                                  .plan_done = report_plan_done};
    int one;
    if (only_link != NULL && strcmp(only_link, link->name) != 0)
      continue;
    report_plan_link(rp, link);
    one = cmd_rounds(path, &opts, store);
    if (one != EXIT_OK)
      rc = one;
  }
  if (report_plan_end(rp) != 0) {
    log_error("cannot write the plan error=\"out of memory making its "
              "JSON\"");
    rc = EXIT_RUNTIME;
  }
  store_close(store);
  config_free(cfg);
  return rc;
}

/* explain LINK WHO [--json]: a plan of LINK, as `plan` makes it (a
 * private copy of the state, no lock: a daemon may run meanwhile), that
 * explain.c watches for WHO. */
static int
cmd_explain(const struct cmdline *cl)
{
  const struct config_link *link;
  struct explain *ex = NULL;
  struct config *cfg = NULL;
  struct store *store = NULL;
  int rc, missing = 0;

  rc = plan_open(cl->path, cl->operand, &cfg, &store, &missing);
  if (rc != EXIT_OK)
    return rc;
  link = config_link_find(cfg, cl->operand);
  ex = explain_new(cfg, link, cl->who, store);
  rc = ex != NULL ? EXIT_OK : EXIT_RUNTIME;
  if (ex != NULL) {
    struct scheduler_opts opts = {.mode = SCHEDULER_PLAN,
                                  .only_link = link->name,
                                  .planning = explain_planning,
                                  .emit = explain_emit,
                                  .emit_ctx = ex,
                                  .plan_done = explain_done};
    /* A link that could not be planned is said by explain_print. */
    (void)cmd_rounds(cl->path, &opts, store);
    switch (explain_print(ex, cl->json, stdout, stderr)) {
    case 0:
      rc = EXIT_OK;
      break;
    case 1:
      rc = EXIT_RUNTIME;
      break;
    default:
      log_error("cannot explain link=%s error=\"out of memory, or the "
                "state could not be read\"",
                link->name);
      rc = EXIT_RUNTIME;
    }
  }
  explain_free(ex);
  store_close(store);
  config_free(cfg);
  return rc;
}

/* approve-deletes, approve-creates and resync: LINK is there (the parser
 * needs it). */
static int
cmd_link_admin(const struct cmdline *cl)
{
  struct app app = {0};
  const struct config_link *link;
  long long n = 0;
  int rc;

  rc = app_open(&app, cl->path, OPEN_WRITE);
  if (rc != EXIT_OK) {
    app_close(&app);
    return rc;
  }
  link = config_link_find(app.cfg, cl->operand);
  if (link == NULL) {
    fprintf(stderr, "galbridge: no link named '%s' in %s\n", cl->operand,
            cl->path);
    app_close(&app);
    return EXIT_USAGE;
  }
  rc = EXIT_OK;
  if (cl->command == CMDLINE_APPROVE_DELETES) {
    if (store_link_approve(app.store, link->name, &n) != 0)
      rc = EXIT_RUNTIME;
    else
      printf("link %s: %lld held deletes released; they run in the next "
             "round\n",
             link->name, n);
    if (rc == EXIT_OK)
      log_notice("deletes approved link=%s released=%lld", link->name, n);
  } else if (cl->command == CMDLINE_APPROVE_CREATES) {
    /* One approve path per guard: each releases what its own guard held,
     * so approving a burst of creates never lets a mass delete through
     * (nor the reverse). */
    if (store_link_approve_creates(app.store, link->name, &n) != 0)
      rc = EXIT_RUNTIME;
    else
      printf("link %s: %lld held creates released; they run in the next "
             "round\n",
             link->name, n);
    if (rc == EXIT_OK)
      log_notice("creates approved link=%s released=%lld", link->name, n);
  } else {
    /* Both tenants the link reads (the source for its people, the target
     * for its copies) are read again in full. A NULL plan key: the next
     * round weighs every object again. */
    if (store_link_clear_failed(app.store, link->name, &n) != 0 ||
        store_delta_reset(app.store, config_link_source_key(link)) != 0 ||
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

/* The online commands' work: run on `loop` with `http`; 0 or not. */
typedef int (*online_fn)(uv_loop_t *loop, struct http *http, void *arg);

/* Run fn on a loop and http client of its own, then close both and run
 * the loop until every handle is closed. Returns fn's result, or -1
 * when they could not be made. */
static int
online(online_fn fn, void *arg)
{
  struct http *http;
  uv_loop_t loop;
  int rc;

  if (uv_loop_init(&loop) != 0)
    return -1;
  http = http_new(&loop, NULL);
  rc = http == NULL ? -1 : fn(&loop, http, arg);
  if (http != NULL)
    http_close(http);
  uv_run(&loop, UV_RUN_DEFAULT);
  (void)uv_loop_close(&loop);
  return rc;
}

static int
doctor_online(uv_loop_t *loop, struct http *http, void *arg)
{
  return doctor_run(loop, http, arg, stdout);
}

static int
cmd_doctor(const struct cmdline *cl)
{
  struct config *cfg;
  int rc;

  /* A config with tenants and no link yet: their credentials can be
   * checked before any link is written. */
  if (load_config(cl->path, 0, &cfg) != 0)
    return EXIT_CONFIG;
  rc = online(doctor_online, cfg);
  config_free(cfg);
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

/* migration-check [LINK] [--json | --csv]: the links with migration = yes
 * (or LINK, which must have it), checked online and read-only. The
 * parser has refused --json with --csv. */
static int
cmd_migration_check(const struct cmdline *cl)
{
  const struct config_link **links = NULL;
  const char *path = cl->path, *only = cl->operand;
  struct config *cfg;
  struct http *http;
  enum migcheck_format format = cl->json  ? MIGCHECK_JSON
                                : cl->csv ? MIGCHECK_CSV
                                          : MIGCHECK_TABLE;
  uv_loop_t loop;
  size_t n = 0;
  int rc;

  if (load_config(path, 0, &cfg) != 0)
    return EXIT_CONFIG;
  links = calloc(cfg->n_links + 1, sizeof(*links));
  if (links == NULL) {
    config_free(cfg);
    return EXIT_RUNTIME;
  }
  for (size_t i = 0; i < cfg->n_links; i++) {
    const struct config_link *l = &cfg->links[i];
    if (only != NULL && strcmp(l->name, only) != 0)
      continue;
    if (only != NULL && !l->migration) {
      fprintf(stderr,
              "galbridge: link '%s' does not have migration = yes (%s:%d); "
              "migration-check checks migration links only\n",
              l->name, path, l->line);
      rc = EXIT_USAGE;
      goto out;
    }
    if (l->migration)
      links[n++] = l;
  }
  if (n == 0) {
    if (only != NULL)
      fprintf(stderr, "galbridge: no link named '%s' in %s\n", only, path);
    else
      fprintf(stderr,
              "galbridge: no link in %s has migration = yes: nothing to "
              "check\n",
              path);
    rc = EXIT_USAGE;
    goto out;
  }
  if (uv_loop_init(&loop) != 0) {
    rc = EXIT_RUNTIME;
    goto out;
  }
  http = http_new(&loop, NULL);
  rc = http == NULL
           ? -1
           : migcheck_run(&loop, http, cfg, links, n, format, stdout, stderr);
  if (http != NULL)
    http_close(http);
  uv_run(&loop, UV_RUN_DEFAULT);
  (void)uv_loop_close(&loop);
  rc = rc == 0 ? EXIT_OK : EXIT_RUNTIME;
out:
  free(links);
  config_free(cfg);
  return rc;
}

struct setup_trust {
  const struct config_link *link;
  int yes;
};

static int
setup_trust_online(uv_loop_t *loop, struct http *http, void *arg)
{
  const struct setup_trust *st = arg;

  return trust_setup_run(loop, http, st->link, st->yes, stdout);
}

/* setup-trust LINK [--yes]: the cross-tenant access settings LINK's
 * guests need, printed, and written with --yes. */
static int
cmd_setup_trust(const struct cmdline *cl)
{
  struct setup_trust st = {.yes = cl->yes};
  struct config *cfg;
  int rc;

  if (load_config(cl->path, 0, &cfg) != 0)
    return EXIT_CONFIG;
  st.link = config_link_find(cfg, cl->operand);
  if (st.link == NULL) {
    fprintf(stderr, "galbridge: no link named '%s' in %s\n", cl->operand,
            cl->path);
    config_free(cfg);
    return EXIT_USAGE;
  }
  rc = online(setup_trust_online, &st);
  config_free(cfg);
  return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

/* Each command's handler, by the command line's id for it. */
static int (*const handlers[CMDLINE_COMMANDS])(const struct cmdline *cl) = {
    [CMDLINE_RUN] = cmd_run,
    [CMDLINE_SYNC] = cmd_sync,
    [CMDLINE_PLAN] = cmd_plan,
    [CMDLINE_STATUS] = cmd_status,
    [CMDLINE_CHECK_CONFIG] = cmd_check_config,
    [CMDLINE_DOCTOR] = cmd_doctor,
    [CMDLINE_APPROVE_DELETES] = cmd_link_admin,
    [CMDLINE_APPROVE_CREATES] = cmd_link_admin,
    [CMDLINE_RESYNC] = cmd_link_admin,
    [CMDLINE_MIGRATION_CHECK] = cmd_migration_check,
    [CMDLINE_SETUP_TRUST] = cmd_setup_trust,
    [CMDLINE_EXPLAIN] = cmd_explain,
};

int
main(int argc, char **argv)
{
  struct cmdline cl = {.path = CONFIG_DEFAULT_PATH};

  log_init();
  /* libcurl runs with CURLOPT_NOSIGNAL and OpenSSL writes with write(2):
   * a peer closing a connection must not kill the daemon. */
  signal(SIGPIPE, SIG_IGN);
  /* Tokens and keys live in this process's memory: no core file. */
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

  switch (cmdline_parse(argc, argv, &cl)) {
  case CMDLINE_EXIT:
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
  case CMDLINE_USAGE:
    return EXIT_USAGE;
  default:
    return handlers[cl.command](&cl);
  }
}
