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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "auth.h"
#include "config.h"
#include "graph.h"
#include "http.h"
#include "log.h"
#include "reader.h"
#include "store.h"

#define EXIT_OK 0
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_HELD 3
#define EXIT_CONFIG 78

#ifndef GALBRIDGE_VERSION
#define GALBRIDGE_VERSION "0.1.0"
#endif

/* One source tenant being read: a reader with its own token and Graph
 * client. Several links reading one source share it. */
struct source {
  const struct config_tenant *tenant;
  struct auth *auth;
  struct graph *graph;
  struct reader *reader;
  long interval;
  uv_timer_t timer;
  int timer_open;
  int running;
  int failed;
  int permanent;
  struct app *app;
};

struct app {
  struct config *cfg;
  struct store *store;
  uv_loop_t loop;
  struct http *http;
  struct source *sources;
  size_t n_sources;
  int daemon; /* `run`: rounds repeat until a signal */
  int stopping;
  uv_signal_t sig_term, sig_int, sig_hup;
  uv_timer_t stop_timer;
};

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
      "  plan [--link NAME]   show what the next round would change\n"
      "  status [--json]      per link and source: objects, pending work\n"
      "  check-config         validate and print the effective config\n"
      "  doctor               check credentials and permissions online\n"
      "  approve-deletes LINK release the deletes held for LINK\n"
      "  resync LINK          read LINK's source again in full\n"
      "\n"
      "options:\n"
      "  -c FILE   config file (default " CONFIG_DEFAULT_PATH ")\n"
      "  -h        this help\n"
      "  -V        version\n");
}

static int
load_config(const char *path, struct config **cfg)
{
  char err[1024];

  if (config_load(path, cfg, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
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

/* --- sources --- */

static int
source_selected(const struct config_link *link, const char *only_link)
{
  return only_link == NULL || strcmp(link->name, only_link) == 0;
}

/* One source per distinct source tenant of the selected links; its
 * interval is the shortest of its links'. */
static int
sources_build(struct app *app, const char *only_link)
{
  const struct config *cfg = app->cfg;

  app->sources =
      calloc(cfg->n_links ? cfg->n_links : 1, sizeof(*app->sources));
  if (app->sources == NULL)
    return -1;
  for (size_t i = 0; i < cfg->n_links; i++) {
    const struct config_link *link = &cfg->links[i];
    struct source *src = NULL;

    if (!source_selected(link, only_link))
      continue;
    for (size_t j = 0; j < app->n_sources; j++) {
      if (app->sources[j].tenant == link->source)
        src = &app->sources[j];
    }
    if (src == NULL) {
      src = &app->sources[app->n_sources++];
      src->tenant = link->source;
      src->interval = link->interval;
      src->app = app;
    } else if (link->interval < src->interval) {
      src->interval = link->interval;
    }
  }
  return 0;
}

static int
sources_start(struct app *app)
{
  char err[512];

  for (size_t i = 0; i < app->n_sources; i++) {
    struct source *src = &app->sources[i];

    if (auth_new(&app->loop, app->http, src->tenant, &src->auth, err,
                 sizeof(err)) != 0) {
      log_error("cannot set up credentials tenant=%s error=\"%s\"",
                src->tenant->name, err);
      return -1;
    }
    src->graph = graph_new(app->http, src->auth, src->tenant);
    if (src->graph == NULL)
      return -1;
    src->reader = reader_new(app->store, src->graph, src->tenant);
    if (src->reader == NULL)
      return -1;
  }
  return 0;
}

static void
on_timer_closed(uv_handle_t *handle)
{
  (void)handle;
}

static void
sources_stop(struct app *app)
{
  for (size_t i = 0; i < app->n_sources; i++) {
    struct source *src = &app->sources[i];

    if (src->timer_open) {
      uv_close((uv_handle_t *)&src->timer, on_timer_closed);
      src->timer_open = 0;
    }
    /* graph first: it cancels requests still waiting on auth. */
    graph_free(src->graph);
    src->graph = NULL;
    auth_free(src->auth);
    src->auth = NULL;
    reader_free(src->reader);
    src->reader = NULL;
  }
}

static void round_start(struct source *src);

static void
on_round(void *ctx, int result, int permanent, const char *errmsg,
         const struct reader_stats *stats)
{
  struct source *src = ctx;

  (void)errmsg;
  (void)stats;
  src->running = 0;
  src->failed = (result != 0);
  src->permanent = permanent;
  if (src->app->daemon && src->app->stopping) {
    int busy = 0;
    for (size_t i = 0; i < src->app->n_sources; i++)
      busy |= src->app->sources[i].running;
    if (!busy)
      uv_stop(&src->app->loop);
  }
}

static void
round_start(struct source *src)
{
  if (src->running || src->app->stopping)
    return;
  if (reader_round(src->reader, on_round, src) != 0) {
    log_error("cannot start a delta round source=%s", src->tenant->name);
    src->failed = 1;
    return;
  }
  src->running = 1;
}

static void
on_tick(uv_timer_t *timer)
{
  round_start(timer->data);
}

/* --- commands --- */

static int
cmd_check_config(const char *path)
{
  struct config *cfg;

  if (load_config(path, &cfg) != 0)
    return EXIT_CONFIG;
  config_dump(cfg, stdout);
  config_free(cfg);
  return EXIT_OK;
}

static int
app_open(struct app *app, const char *path)
{
  char err[1024];

  if (load_config(path, &app->cfg) != 0)
    return EXIT_CONFIG;
  if (store_open(app->cfg->state_dir, &app->store, err, sizeof(err)) != 0) {
    log_error("cannot open the store state_dir=%s error=\"%s\"",
              app->cfg->state_dir, err);
    return EXIT_RUNTIME;
  }
  return EXIT_OK;
}

static void
app_close(struct app *app)
{
  store_close(app->store);
  config_free(app->cfg);
  free(app->sources);
}

static void
on_signal_closed(uv_handle_t *handle)
{
  (void)handle;
}

static void
on_stop_timeout(uv_timer_t *timer)
{
  struct app *app = timer->data;
  log_warning("in-flight work did not finish in time, stopping anyway");
  uv_stop(&app->loop);
}

static void
on_signal(uv_signal_t *sig, int signum)
{
  struct app *app = sig->data;
  int busy = 0;

  if (signum == SIGHUP) {
    log_notice("SIGHUP received; configuration reload is not available "
               "in this version, restart to apply changes");
    return;
  }
  if (app->stopping) {
    log_notice("second signal, stopping now");
    uv_stop(&app->loop);
    return;
  }
  log_notice("stopping signal=%s", signum == SIGTERM ? "TERM" : "INT");
  app->stopping = 1;
  for (size_t i = 0; i < app->n_sources; i++) {
    uv_timer_stop(&app->sources[i].timer);
    busy |= app->sources[i].running;
  }
  if (!busy) {
    uv_stop(&app->loop);
    return;
  }
  uv_timer_start(&app->stop_timer, on_stop_timeout, 20000, 0);
}

static int
cmd_rounds(const char *path, const char *only_link, int daemon)
{
  struct app app = {0};
  int rc, exit_code = EXIT_OK;

  rc = app_open(&app, path);
  if (rc != EXIT_OK) {
    app_close(&app);
    return rc;
  }
  if (only_link != NULL && config_link_find(app.cfg, only_link) == NULL) {
    fprintf(stderr, "galbridge: no link named '%s' in %s\n", only_link, path);
    app_close(&app);
    return EXIT_USAGE;
  }
  app.daemon = daemon;
  if (uv_loop_init(&app.loop) != 0) {
    app_close(&app);
    return EXIT_RUNTIME;
  }
  app.http = http_new(&app.loop, NULL);
  if (app.http == NULL || sources_build(&app, only_link) != 0 ||
      sources_start(&app) != 0) {
    exit_code = EXIT_RUNTIME;
    goto out;
  }
  if (app.n_sources == 0)
    log_notice("no links configured: nothing to read");

  if (daemon) {
    uv_signal_init(&app.loop, &app.sig_term);
    uv_signal_init(&app.loop, &app.sig_int);
    uv_signal_init(&app.loop, &app.sig_hup);
    uv_timer_init(&app.loop, &app.stop_timer);
    app.sig_term.data = app.sig_int.data = app.sig_hup.data = &app;
    app.stop_timer.data = &app;
    uv_signal_start(&app.sig_term, on_signal, SIGTERM);
    uv_signal_start(&app.sig_int, on_signal, SIGINT);
    uv_signal_start(&app.sig_hup, on_signal, SIGHUP);
    log_notice("galbridge %s running config=%s links=%zu sources=%zu",
               GALBRIDGE_VERSION, path, app.cfg->n_links, app.n_sources);
  }
  for (size_t i = 0; i < app.n_sources; i++) {
    struct source *src = &app.sources[i];
    if (daemon) {
      uv_timer_init(&app.loop, &src->timer);
      src->timer.data = src;
      src->timer_open = 1;
      uv_timer_start(&src->timer, on_tick, 0, (uint64_t)src->interval * 1000);
    } else {
      round_start(src);
    }
  }
  uv_run(&app.loop, UV_RUN_DEFAULT);

  for (size_t i = 0; i < app.n_sources; i++) {
    if (app.sources[i].failed || app.sources[i].running)
      exit_code = EXIT_RUNTIME;
  }
  if (daemon)
    exit_code = EXIT_OK;

out:
  sources_stop(&app);
  if (daemon) {
    uv_close((uv_handle_t *)&app.sig_term, on_signal_closed);
    uv_close((uv_handle_t *)&app.sig_int, on_signal_closed);
    uv_close((uv_handle_t *)&app.sig_hup, on_signal_closed);
    uv_close((uv_handle_t *)&app.stop_timer, on_timer_closed);
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

static int
cmd_status(const char *path, int as_json)
{
  struct app app = {0};
  json_t *root = NULL, *links, *sources;
  int rc;

  rc = app_open(&app, path);
  if (rc != EXIT_OK) {
    app_close(&app);
    return rc;
  }
  root = json_object();
  links = json_array();
  sources = json_array();
  json_object_set_new(root, "links", links);
  json_object_set_new(root, "sources", sources);
  rc = EXIT_RUNTIME;

  for (size_t i = 0; i < app.cfg->n_links; i++) {
    const struct config_link *link = &app.cfg->links[i];
    struct store_link_counts c;
    if (store_link_counts(app.store, link->name, &c) != 0)
      goto out;
    json_array_append_new(
        links, json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:o}",
                         "name", link->name, "source", link->source->name,
                         "target", link->target->name, "object",
                         config_object_name(link->object), "objects",
                         (json_int_t)c.objects, "pending",
                         (json_int_t)c.pending, "failed", (json_int_t)c.failed,
                         "deletes_held", (json_int_t)c.deletes_held,
                         "last_success", time_or_null(c.last_success)));
  }
  for (size_t i = 0; i < app.cfg->n_tenants; i++) {
    const struct config_tenant *t = &app.cfg->tenants[i];
    struct store_source_counts c;
    struct store_delta_state st;
    int is_source = 0;

    for (size_t j = 0; j < app.cfg->n_links; j++)
      is_source |= (app.cfg->links[j].source == t);
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
                  st.delta_link == NULL));
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
    }
  }
  rc = EXIT_OK;

out:
  json_decref(root);
  app_close(&app);
  return rc;
}

static int
cmd_not_yet(const char *name)
{
  fprintf(stderr,
          "galbridge: '%s' is not available in this version yet "
          "(see galbridge(8))\n",
          name);
  return EXIT_RUNTIME;
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
    if (command_args(argc, argv, &link, NULL) != 0)
      return EXIT_USAGE;
    return cmd_rounds(path, link, 0);
  }
  if (strcmp(cmd, "run") == 0) {
    if (command_args(argc, argv, NULL, NULL) != 0)
      return EXIT_USAGE;
    return cmd_rounds(path, NULL, 1);
  }
  if (strcmp(cmd, "status") == 0) {
    if (command_args(argc, argv, NULL, &json) != 0)
      return EXIT_USAGE;
    return cmd_status(path, json);
  }
  if (strcmp(cmd, "plan") == 0 || strcmp(cmd, "doctor") == 0 ||
      strcmp(cmd, "approve-deletes") == 0 || strcmp(cmd, "resync") == 0)
    return cmd_not_yet(cmd);

  fprintf(stderr, "galbridge: unknown command '%s'\n", cmd);
  usage(stderr);
  return EXIT_USAGE;
}
