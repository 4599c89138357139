/*
 * main — command line, start-up and shutdown order.
 *
 * The only file that knows every module. The command line is two tables
 * (options, commands) and one parser, at the end of the file. Start-up: log →
 * config → store → loop → http → per source tenant (auth, graph, reader).
 * Shutdown runs the same list backwards, and the loop is run until every
 * handle is closed so that uv_loop_close() succeeds and nothing leaks. What
 * `status` and `plan` print is report.c's; the commands here open what it
 * reads.
 *
 * Exit codes (DESIGN.md): 0 ok; 1 runtime failure; 2 usage; 3 deletes held
 * for approval; 78 config error (file:line on stderr, nothing sent).
 */
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "auth.h"
#include "config.h"
#include "doctor.h"
#include "http.h"
#include "log.h"
#include "migcheck.h"
#include "notify.h"
#include "planner.h"
#include "report.h"
#include "scheduler.h"
#include "store.h"
#include "text.h"
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

struct cmdline;

/* Whether a command takes LINK, the one argument any command takes. */
enum operand { OPERAND_NONE, OPERAND_OPTIONAL, OPERAND_NEEDED };

/* A row of the command table (see "the command line" below). */
struct command {
  const char *name;
  unsigned opts;      /* its own options, besides OPTS_ANY_COMMAND */
  unsigned exclusive; /* of those, the ones that exclude each other */
  enum operand operand;
  const char *synopsis; /* what follows the name */
  const char *help;     /* one line, as galbridge(8) has it */
  int (*handler)(const struct cmdline *cl);
};

/* What the command line gave a command (see "the command line" below). */
struct cmdline {
  const struct command *cmd;
  const char *path;    /* -c FILE, or the default */
  const char *link;    /* --link NAME, or NULL */
  const char *operand; /* LINK, or NULL */
  int json, csv;       /* --json, --csv */
  unsigned given;      /* the options given, OPT_* bits */
};

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

static int
cmd_sync(const struct cmdline *cl)
{
  struct scheduler_opts opts = {.mode = SCHEDULER_SYNC, .only_link = cl->link};

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

static int
cmd_plan(const struct cmdline *cl)
{
  const char *path = cl->path, *only_link = cl->link;
  struct report_plan *rp;
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

/* approve-deletes and resync: LINK is there (the parser needs it). */
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
  if (strcmp(cl->cmd->name, "approve-deletes") == 0) {
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
cmd_doctor(const struct cmdline *cl)
{
  struct config *cfg;
  struct http *http;
  uv_loop_t loop;
  int rc;

  /* A config with tenants and no link yet: their credentials can be
   * checked before any link is written. */
  if (load_config(cl->path, 0, &cfg) != 0)
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

/* --- the command line ---
 *
 * galbridge [-c FILE] COMMAND [ARGS]. Two tables say it all: opts[] the
 * options, commands[] each command's options, operand, synopsis, one-line
 * help and handler. One parser reads both parts of a line; the usage
 * summary, each command's --help and every error come from the tables, so
 * a new command is one row. Before the command the global options (-c,
 * -h, -V); after it the command's own, -c and -h, mixed with its operand
 * in any order. Options act in the order given: the last -c wins, -h
 * prints help when reached. Like getopt_long it takes "-cFILE",
 * "--config=FILE", "--config FILE", a unique prefix of a long name and
 * "--" to end the options; unlike it, its errors say what was expected.
 */

#define OPT_CONFIG (1u << 0)
#define OPT_HELP (1u << 1)
#define OPT_VERSION (1u << 2)
#define OPT_LINK (1u << 3)
#define OPT_JSON (1u << 4)
#define OPT_CSV (1u << 5)
#define OPTS_GLOBAL (OPT_CONFIG | OPT_HELP | OPT_VERSION)
#define OPTS_ANY_COMMAND (OPT_CONFIG | OPT_HELP)

#define HELP_COLUMN 21    /* where an option's help starts */
#define SUMMARY_COLUMN 23 /* where a command's help starts in usage() */
#define WIDTH 79

struct opt {
  unsigned id;
  char short_name; /* 0: a long form only */
  const char *long_name;
  const char *arg;  /* its value as help shows it; NULL: a flag */
  const char *what; /* what that value is, for "needs a value" */
  const char *help;
};

static const struct opt opts[] = {
    {OPT_CONFIG, 'c', "config", "FILE", "a config file",
     "config file (default " CONFIG_DEFAULT_PATH ")"},
    {OPT_HELP, 'h', "help", NULL, NULL, "this help"},
    {OPT_VERSION, 'V', "version", NULL, NULL, "version"},
    {OPT_LINK, 0, "link", "NAME", "a link name", "only the link NAME"},
    {OPT_JSON, 0, "json", NULL, NULL, "print one JSON object"},
    {OPT_CSV, 0, "csv", NULL, NULL,
     "print the CSV that New-MigrationBatch takes: the ready people's "
     "target addresses"},
};

static const struct command commands[] = {
    {"run", 0, 0, OPERAND_NONE, "", "run as a daemon in the foreground",
     cmd_run},
    {"sync", OPT_LINK, 0, OPERAND_NONE, "[--link NAME]",
     "one round of every link (or of link NAME), then exit", cmd_sync},
    {"plan", OPT_LINK | OPT_JSON, 0, OPERAND_NONE, "[--link NAME] [--json]",
     "show what the next round would change; nothing is written to any "
     "tenant",
     cmd_plan},
    {"status", OPT_JSON, 0, OPERAND_NONE, "[--json]",
     "per link and source: objects, pending work", cmd_status},
    {"check-config", 0, 0, OPERAND_NONE, "",
     "validate and print the effective config", cmd_check_config},
    {"doctor", 0, 0, OPERAND_NONE, "",
     "check credentials and permissions online", cmd_doctor},
    {"approve-deletes", 0, 0, OPERAND_NEEDED, "LINK",
     "release the deletes held for LINK", cmd_link_admin},
    {"resync", 0, 0, OPERAND_NEEDED, "LINK",
     "read LINK's source and target again in full and retry its failed "
     "operations",
     cmd_link_admin},
    {"migration-check", OPT_JSON | OPT_CSV, OPT_JSON | OPT_CSV,
     OPERAND_OPTIONAL, "[LINK] [--json | --csv]",
     "whether the people of the migration links (or LINK) can be moved "
     "now, and the fix for each failure; read-only",
     cmd_migration_check},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))
#define OPERAND_WHAT "a link name"

enum parse { PARSE_OK, PARSE_EXIT, PARSE_USAGE };

/* Prints text with the cursor at column `col`, words wrapped at WIDTH
 * onto lines indented by `indent`, and ends the line. */
static void
print_wrapped(FILE *fp, const char *text, int col, int indent)
{
  const char *p = text;
  int first = 1;

  while (*p != '\0') {
    int len = (int)strcspn(p, " ");
    if (!first && col + 1 + len > WIDTH) {
      col = fprintf(fp, "\n%*s", indent, "") - 1;
    } else if (!first) {
      fputc(' ', fp);
      col++;
    }
    col += fprintf(fp, "%.*s", len, p);
    first = 0;
    p += len;
    while (*p == ' ')
      p++;
  }
  fputc('\n', fp);
}

/* The left column, then the help from `column` (on a line of its own
 * when the left one reaches it). */
static void
print_row(FILE *fp, int left, int column, const char *help)
{
  if (left + 1 >= column) {
    fputc('\n', fp);
    left = 0;
  }
  fprintf(fp, "%*s", column - left, "");
  print_wrapped(fp, help, column, column);
}

static void
print_options(FILE *fp, unsigned which)
{
  for (size_t i = 0; i < N_OPTS; i++) {
    const struct opt *o = &opts[i];
    int n;
    if ((o->id & which) == 0)
      continue;
    if (o->short_name != 0)
      n = fprintf(fp, "  -%c, --%s", o->short_name, o->long_name);
    else
      n = fprintf(fp, "      --%s", o->long_name);
    if (o->arg != NULL)
      n += fprintf(fp, " %s", o->arg);
    print_row(fp, n, HELP_COLUMN, o->help);
  }
}

static void
usage(FILE *fp)
{
  fprintf(fp, "usage: galbridge [-c FILE] COMMAND [ARGS]\n"
              "       galbridge COMMAND --help\n"
              "\n"
              "commands:\n");
  for (size_t i = 0; i < N_COMMANDS; i++) {
    const struct command *c = &commands[i];
    int n = fprintf(fp, "  %s%s%s", c->name, c->synopsis[0] ? " " : "",
                    c->synopsis);
    print_row(fp, n, SUMMARY_COLUMN, c->help);
  }
  fprintf(fp, "\noptions:\n");
  print_options(fp, OPTS_GLOBAL);
  fprintf(fp, "\n-c may come after the command too; the last one given "
              "wins.\n");
}

static void
command_usage_line(FILE *fp, const struct command *c)
{
  fprintf(fp, "usage: galbridge [-c FILE] %s%s%s\n", c->name,
          c->synopsis[0] ? " " : "", c->synopsis);
}

/* `galbridge COMMAND --help`: galbridge(8)'s synopsis and one line. */
static void
command_help(FILE *fp, const struct command *c)
{
  command_usage_line(fp, c);
  fputc('\n', fp);
  print_wrapped(fp, c->help, 0, 0);
  fprintf(fp, "\n%s:\n",
          c->operand != OPERAND_NONE ? "arguments and options" : "options");
  if (c->operand != OPERAND_NONE)
    print_row(fp, fprintf(fp, "  LINK"), HELP_COLUMN,
              "the name of a [link NAME] section of the config");
  print_options(fp, c->opts);
  print_options(fp, OPTS_ANY_COMMAND);
}

/* What a command line error prints after its message. */
static int
usage_error(const struct command *c)
{
  if (c == NULL)
    usage(stderr);
  else
    command_usage_line(stderr, c);
  return PARSE_USAGE;
}

/* The nearest of n names to `name`, when near enough to suggest: at most two
 * edits away and shorter, as edits, than the name less one (so "x" suggests
 * nothing), or a prefix of three letters or more; else NULL. */
static const char *
nearest(const char *name, const char *const *names, size_t n)
{
  const char *best = NULL;
  size_t best_d = SIZE_MAX;

  for (size_t i = 0; i < n; i++) {
    const char *cand = names[i];
    size_t d = text_distance(name, cand);
    if (strlen(name) >= 3 && strncmp(cand, name, strlen(name)) == 0)
      d = 1;
    if (d < best_d) {
      best_d = d;
      best = cand;
    }
  }
  return best_d <= 2 && best_d + 1 < strlen(name) ? best : NULL;
}

static const char *
nearest_command(const char *name)
{
  const char *names[N_COMMANDS];

  for (size_t i = 0; i < N_COMMANDS; i++)
    names[i] = commands[i].name;
  return nearest(name, names, N_COMMANDS);
}

static const struct command *
command_find(const char *name)
{
  for (size_t i = 0; i < N_COMMANDS; i++) {
    if (strcmp(commands[i].name, name) == 0)
      return &commands[i];
  }
  return NULL;
}

/* An option that exists but not where it was given. */
static int
misplaced(const struct opt *o, const char *given, const struct command *c)
{
  if (c != NULL) {
    fprintf(stderr, "galbridge: %s has no option '%s'\n", c->name, given);
    return usage_error(c);
  }
  fprintf(stderr, "galbridge: option '%s' goes after a command that takes it",
          given);
  for (size_t i = 0, n = 0; i < N_COMMANDS; i++) {
    if (commands[i].opts & o->id)
      fprintf(stderr, "%s%s", n++ == 0 ? " (" : ", ", commands[i].name);
  }
  fprintf(stderr, ")\n");
  return usage_error(NULL);
}

/* --name (len bytes of arg + 2) is no option: say so, and name the
 * nearest option allowed there or, before the command, the nearest
 * command ("--status": the command status). */
static int
unknown_long(const char *arg, size_t len, unsigned allowed,
             const struct command *c)
{
  const char *names[N_OPTS], *near;
  char name[64];
  size_t n = 0;

  for (size_t i = 0; i < N_OPTS; i++) {
    if (opts[i].id & allowed)
      names[n++] = opts[i].long_name;
  }
  snprintf(name, sizeof(name), "%.*s", (int)len, arg + 2);
  fprintf(stderr, "galbridge: unknown option '--%s'", name);
  near = nearest(name, names, n);
  if (near != NULL)
    fprintf(stderr, " (did you mean '--%s'?)", near);
  else if (c == NULL && (near = nearest_command(name)) != NULL)
    fprintf(stderr, " (did you mean the command '%s'?)", near);
  fputc('\n', stderr);
  return usage_error(c);
}

/* The option --name (len bytes of it: a unique prefix will do), or NULL
 * with the error printed. */
static const struct opt *
find_long(const char *arg, size_t len, unsigned allowed,
          const struct command *c)
{
  const struct opt *hit = NULL, *other = NULL;
  int hits = 0;

  if (len == 0) { /* "--=..." */
    unknown_long(arg, len, allowed, c);
    return NULL;
  }
  for (size_t i = 0; i < N_OPTS; i++) {
    const struct opt *o = &opts[i];
    if (strncmp(o->long_name, arg + 2, len) != 0)
      continue;
    if (strlen(o->long_name) == len)
      return (o->id & allowed) ? o : (misplaced(o, arg, c), NULL);
    if (o->id & allowed) {
      hit = o;
      hits++;
    } else {
      other = o;
    }
  }
  if (hits == 1)
    return hit;
  if (hits > 1) {
    fprintf(stderr, "galbridge: option '%.*s' is ambiguous:", (int)len + 2,
            arg);
    for (size_t i = 0; i < N_OPTS; i++) {
      if ((opts[i].id & allowed) &&
          strncmp(opts[i].long_name, arg + 2, len) == 0)
        fprintf(stderr, " --%s", opts[i].long_name);
    }
    fputc('\n', stderr);
    usage_error(c);
    return NULL;
  }
  if (other != NULL) {
    misplaced(other, arg, c);
    return NULL;
  }
  unknown_long(arg, len, allowed, c);
  return NULL;
}

static const struct opt *
find_short(char ch, unsigned allowed, const struct command *c)
{
  for (size_t i = 0; i < N_OPTS; i++) {
    const struct opt *o = &opts[i];
    char given[3] = {'-', ch, '\0'};
    if (o->short_name != ch)
      continue;
    if (o->id & allowed)
      return o;
    misplaced(o, given, c);
    return NULL;
  }
  fprintf(stderr, "galbridge: unknown option '-%c'\n", ch);
  usage_error(c);
  return NULL;
}

/* Does what option o says; `value` is its value or NULL for a flag. */
static int
apply(const struct opt *o, const char *value, struct cmdline *cl)
{
  cl->given |= o->id;
  switch (o->id) {
  case OPT_CONFIG:
    cl->path = value;
    break;
  case OPT_LINK:
    cl->link = value;
    break;
  case OPT_JSON:
    cl->json = 1;
    break;
  case OPT_CSV:
    cl->csv = 1;
    break;
  case OPT_HELP:
    if (cl->cmd != NULL)
      command_help(stdout, cl->cmd);
    else
      usage(stdout);
    return PARSE_EXIT;
  case OPT_VERSION:
    printf("galbridge %s\n", GALBRIDGE_VERSION);
    return PARSE_EXIT;
  }
  return PARSE_OK;
}

static int
needs_value(const struct opt *o, const char *given, const struct command *c)
{
  fprintf(stderr, "galbridge: option '%s' needs a value (%s)\n", given,
          o->what);
  return usage_error(c);
}

/* One argument that starts with '-' (not "-" or "--"), and its value from
 * argv[*i + 1] when it needs one (then *i moves past it). */
static int
parse_option(int argc, char **argv, int *i, unsigned allowed,
             struct cmdline *cl)
{
  const char *arg = argv[*i];
  const struct command *c = cl->cmd;
  const struct opt *o;

  if (arg[1] == '-') {
    const char *eq = strchr(arg, '=');
    size_t len = eq != NULL ? (size_t)(eq - arg - 2) : strlen(arg + 2);
    const char *value;
    char given[64];
    o = find_long(arg, len, allowed, c);
    if (o == NULL)
      return PARSE_USAGE;
    snprintf(given, sizeof(given), "--%s", o->long_name);
    if (o->arg == NULL) {
      if (eq == NULL)
        return apply(o, NULL, cl);
      fprintf(stderr, "galbridge: option '%s' takes no value\n", given);
      return usage_error(c);
    }
    value = eq != NULL ? eq + 1 : *i + 1 < argc ? argv[++*i] : NULL;
    if (value == NULL || value[0] == '\0')
      return needs_value(o, given, c);
    return apply(o, value, cl);
  }
  /* A cluster of short options, the last of them perhaps with a value. */
  for (const char *p = arg + 1; *p != '\0'; p++) {
    char given[3] = {'-', *p, '\0'};
    const char *value;
    int rc;
    o = find_short(*p, allowed, c);
    if (o == NULL)
      return PARSE_USAGE;
    if (o->arg == NULL) {
      rc = apply(o, NULL, cl);
      if (rc != PARSE_OK)
        return rc;
      continue;
    }
    value = p[1] != '\0' ? p + 1 : *i + 1 < argc ? argv[++*i] : NULL;
    if (value == NULL || value[0] == '\0')
      return needs_value(o, given, c);
    return apply(o, value, cl);
  }
  return PARSE_OK;
}

/* The part after the command: its options and operand, in any order. */
static int
parse_command(int argc, char **argv, int i, struct cmdline *cl)
{
  const struct command *c = cl->cmd;
  unsigned allowed = c->opts | OPTS_ANY_COMMAND, both;
  int options = 1;

  for (; i < argc; i++) {
    const char *arg = argv[i];
    int rc;
    if (options && strcmp(arg, "--") == 0) {
      options = 0;
      continue;
    }
    if (options && arg[0] == '-' && arg[1] != '\0') {
      rc = parse_option(argc, argv, &i, allowed, cl);
      if (rc != PARSE_OK)
        return rc;
      continue;
    }
    if (c->operand == OPERAND_NONE || cl->operand != NULL) {
      fprintf(stderr, "galbridge: unexpected argument '%s'\n", arg);
      return usage_error(c);
    }
    cl->operand = arg;
  }
  both = cl->given & c->exclusive;
  if (both & (both - 1)) {
    const char *names[2];
    size_t n = 0;
    for (size_t k = 0; k < N_OPTS && n < 2; k++) {
      if (both & opts[k].id)
        names[n++] = opts[k].long_name;
    }
    fprintf(stderr, "galbridge: --%s and --%s cannot be combined\n", names[0],
            names[1]);
    return usage_error(c);
  }
  if (c->operand == OPERAND_NEEDED && cl->operand == NULL) {
    fprintf(stderr, "galbridge: %s needs an argument (%s)\n", c->name,
            OPERAND_WHAT);
    return usage_error(c);
  }
  return PARSE_OK;
}

/* The whole line into cl: the global options, the command, then its part. */
static int
parse_line(int argc, char **argv, struct cmdline *cl)
{
  const char *name;
  int i;

  for (i = 1; i < argc; i++) {
    const char *arg = argv[i];
    int rc;
    if (strcmp(arg, "--") == 0) {
      i++;
      break;
    }
    if (arg[0] != '-' || arg[1] == '\0')
      break;
    rc = parse_option(argc, argv, &i, OPTS_GLOBAL, cl);
    if (rc != PARSE_OK)
      return rc;
  }
  if (i >= argc) {
    if (argc > 1)
      fprintf(stderr, "galbridge: a command is needed after the options\n");
    return usage_error(NULL);
  }
  name = argv[i];
  cl->cmd = command_find(name);
  if (cl->cmd == NULL) {
    const char *near = nearest_command(name);
    fprintf(stderr, "galbridge: unknown command '%s'", name);
    if (near != NULL)
      fprintf(stderr, " (did you mean '%s'?)", near);
    fputc('\n', stderr);
    return usage_error(NULL);
  }
  return parse_command(argc, argv, i + 1, cl);
}

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

  switch (parse_line(argc, argv, &cl)) {
  case PARSE_EXIT:
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
  case PARSE_USAGE:
    return EXIT_USAGE;
  default:
    return cl.cmd->handler(&cl);
  }
}
