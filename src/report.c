/*
 * report — see include/report.h.
 *
 * status: status_links() and status_sources() fill the document from the
 * store; status_text() writes the text form from that document alone.
 * plan: struct report_plan holds the JSON of the links planned so far
 * (--json) and the link being planned, whose changes the planner hands
 * over one by one.
 */
#include "report.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graph.h"

/* --- status --- */

static void
iso_time(time_t t, char *buf, size_t len)
{
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
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

/* Each link of cfg, as an object appended to `links`. */
static int
status_links(const struct config *cfg, struct store *store, json_t *links)
{
  for (size_t i = 0; i < cfg->n_links; i++) {
    const struct config_link *link = &cfg->links[i];
    struct store_link_counts c;
    struct store_op *ops;
    size_t n_ops;
    json_t *entry, *failures;
    if (store_link_counts(store, link->name, &c) != 0 ||
        store_ops_list(store, link->name, STORE_OP_FAILED, 100, &ops,
                       &n_ops) != 0)
      return -1;
    failures = json_array();
    /* next_try: when a round tries it again (null: the next round). */
    for (size_t k = 0; k < n_ops; k++)
      json_array_append_new(
          failures,
          json_pack("{s:s, s:s, s:s?, s:i, s:o}", "source_id",
                    ops[k].source_id, "op", store_op_kind_name(ops[k].kind),
                    "error", ops[k].last_error, "attempts", ops[k].attempts,
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
      if (store_count_not_visible(store, link->name, &nv) != 0 ||
          store_unverified(store, link->name, 20, &pairs, &n_pairs) != 0) {
        json_decref(list);
        json_decref(entry);
        return -1;
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
  return 0;
}

/* Each tenant a link of cfg reads (as its source or its target), as an
 * object appended to `sources`. */
static int
status_sources(const struct config *cfg, struct store *store, json_t *sources)
{
  for (size_t i = 0; i < cfg->n_tenants; i++) {
    const struct config_tenant *t = &cfg->tenants[i];
    struct store_source_counts c;
    struct store_delta_state st;
    int is_source = 0;

    for (size_t j = 0; j < cfg->n_links; j++)
      is_source |= (cfg->links[j].source == t || cfg->links[j].target == t);
    if (!is_source)
      continue;
    if (store_source_count(store, t->tenant_id, &c) != 0 ||
        store_delta_get(store, t->tenant_id, &st) != 0)
      return -1;
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
  return 0;
}

/* The text form of the status document `root`. */
static void
status_text(const struct config *cfg, const json_t *root, int missing,
            int empty, FILE *fp)
{
  json_t *v;
  size_t i;

  if (missing || empty)
    fprintf(fp,
            "%s %s/state.db: galbridge has not synced from here yet, "
            "or its state was lost ('galbridge plan' shows what the "
            "targets already hold)\n",
            missing ? "no state database at" : "nothing recorded in",
            cfg->state_dir);
  json_array_foreach(json_object_get(root, "sources"), i, v)
  {
    const char *last = json_string_value(json_object_get(v, "last_round"));
    fprintf(fp,
            "source %s: %lld users, %lld soft-deleted, %lld deleted; "
            "last round %s\n",
            json_string_value(json_object_get(v, "name")),
            json_integer_value(json_object_get(v, "objects")),
            json_integer_value(json_object_get(v, "soft_deleted")),
            json_integer_value(json_object_get(v, "deleted")),
            last ? last : "never");
  }
  json_array_foreach(json_object_get(root, "links"), i, v)
  {
    const char *last = json_string_value(json_object_get(v, "last_success"));
    fprintf(fp,
            "link %s (%s -> %s, %s): %lld objects, %lld pending, "
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
      fprintf(fp,
              "  this round: %lld done since %s, %.1f/s; %lld pending, "
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
        fprintf(fp, "  not synced: source object %s: %s\n",
                json_string_value(json_object_get(f, "source_id")),
                json_string_value(json_object_get(f, "error")));
      else
        fprintf(fp, "  failed %s of source object %s: %s; next try %s%s\n", op,
                json_string_value(json_object_get(f, "source_id")),
                json_string_value(json_object_get(f, "error")),
                next != NULL ? "at " : "in the next round",
                next != NULL ? next : "");
    }
    if (json_integer_value(json_object_get(v, "guests_not_visible")) > 0) {
      json_t *g;
      size_t gi;
      fprintf(fp,
              "  %lld guests not yet seen visible on the Exchange side "
              "(provisioning can take a while; checked every round):\n",
              json_integer_value(json_object_get(v, "guests_not_visible")));
      json_array_foreach(json_object_get(v, "guests_not_visible_first"), gi, g)
      {
        fprintf(fp, "    guest %s (source object %s)\n",
                json_string_value(json_object_get(g, "target_id")),
                json_string_value(json_object_get(g, "source_id")));
      }
    }
    if (json_integer_value(json_object_get(v, "deletes_held")) > 0)
      fprintf(fp,
              "  deletes held: run 'galbridge approve-deletes %s' to let "
              "them through\n",
              json_string_value(json_object_get(v, "name")));
  }
}

int
report_status(const struct config *cfg, struct store *store, int missing,
              int as_json, FILE *fp)
{
  json_t *root, *links, *sources;
  int empty = 0, result = -1;

  if (store_is_empty(store, &empty) != 0)
    return -1;
  root = json_object();
  links = json_array();
  sources = json_array();
  json_object_set_new(root, "links", links);
  json_object_set_new(root, "sources", sources);
  /* A state that is not there, or holds nothing, says so: it may have
   * been lost (galbridge plan looks for copies in the targets). */
  json_object_set_new(root, "state",
                      json_string(missing ? "missing"
                                  : empty ? "empty"
                                          : "present"));
  if (status_links(cfg, store, links) != 0 ||
      status_sources(cfg, store, sources) != 0)
    goto out;
  if (as_json) {
    char *text = json_dumps(root, JSON_INDENT(2));
    if (text == NULL)
      goto out;
    fprintf(fp, "%s\n", text);
    free(text);
  } else {
    status_text(cfg, root, missing, empty, fp);
  }
  result = 0;

out:
  json_decref(root);
  return result;
}

/* --- plan --- */

struct report_plan {
  FILE *fp;
  int json;
  int missing;     /* no state database: "state" is "missing" */
  json_t *links;   /* --json: the links planned so far */
  json_t *current; /* --json: the link being planned (borrowed) */
};

struct report_plan *
report_plan_begin(FILE *fp, int as_json, const char *state_dir, int missing)
{
  struct report_plan *rp = calloc(1, sizeof(*rp));

  if (rp == NULL)
    return NULL;
  rp->fp = fp;
  rp->json = as_json;
  rp->missing = missing;
  rp->links = json_array();
  if (missing && !as_json)
    fprintf(fp,
            "no state database at %s/state.db: planned as for a first "
            "sync (or a lost state)\n",
            state_dir);
  return rp;
}

void
report_plan_link(struct report_plan *rp, const struct config_link *link)
{
  if (rp->json) {
    rp->current =
        json_pack("{s:s, s:s, s:s, s:s, s:[]}", "name", link->name, "source",
                  link->source->name, "target", link->target->name, "object",
                  config_object_name(link->object), "changes");
    json_array_append_new(rp->links, rp->current);
  } else {
    fprintf(rp->fp, "link %s (%s -> %s, %s):\n", link->name,
            link->source->name, link->target->name,
            config_object_name(link->object));
  }
  fflush(rp->fp);
}

static void
print_value(FILE *fp, const json_t *v)
{
  char *text;

  if (v == NULL || json_is_null(v)) {
    fprintf(fp, "(none)");
    return;
  }
  text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  fprintf(fp, "%s", text ? text : "?");
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

void
report_plan_emit(void *ctx, const struct store_plan_row *row,
                 const struct planner_decision *d, int held)
{
  struct report_plan *rp = ctx;
  json_t *applied = NULL, *v;
  const char *key, *kind = planner_kind_name(d->kind);

  if (row->applied != NULL)
    applied = json_loads(row->applied, 0, NULL);
  if (rp->json) {
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
    json_array_append_new(json_object_get(rp->current, "changes"), item);
    json_decref(applied);
    return;
  }
  if (applied != NULL && d->desired == NULL) {
    const char *name =
        json_string_value(json_object_get(applied, "displayName"));
    fprintf(rp->fp, "  %-8s %s (target %s)%s\n", kind,
            name ? name : row->source_id, row->target_id,
            held ? "  [held: over max_deletes]" : "");
  } else if (d->kind == PLANNER_UPDATE) {
    fprintf(rp->fp, "  %-8s %s (target %s)\n", kind, label(row, d),
            row->target_id);
    json_object_foreach(d->payload, key, v)
    {
      fprintf(rp->fp, "             %s: ", key);
      print_value(rp->fp, json_object_get(applied, key));
      fprintf(rp->fp, " -> ");
      print_value(rp->fp, v);
      fprintf(rp->fp, "\n");
    }
  } else if (d->kind == PLANNER_FAIL) {
    fprintf(rp->fp, "  %-8s %s <%s> (source %s): %s\n", kind, label(row, d),
            address(d), row->source_id, d->reason);
  } else if (d->kind == PLANNER_ADOPT) {
    fprintf(rp->fp,
            "  %-8s %s <%s> (source %s): target object %s, which galbridge "
            "did not make\n",
            kind, label(row, d), address(d), row->source_id, row->target_id);
  } else {
    fprintf(rp->fp, "  %-8s %s <%s> (source %s)\n", kind, label(row, d),
            address(d), row->source_id);
  }
  json_decref(applied);
}

void
report_plan_done(void *ctx, const struct config_link *link,
                 const struct planner_stats *st, const struct recovery *rec)
{
  struct report_plan *rp = ctx;
  const char *state = !rec->empty                       ? "present"
                      : rec->proven + rec->unproven > 0 ? "lost"
                                                        : "empty";

  if (rp->json) {
    json_object_set_new(
        rp->current, "totals",
        json_pack(
            "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
            "create", (json_int_t)st->creates, "update",
            (json_int_t)st->updates, "delete", (json_int_t)st->deletes,
            "restore", (json_int_t)st->restores, "adopt",
            (json_int_t)st->adopts, "refused", (json_int_t)st->fails, "held",
            (json_int_t)st->held, "unchanged", (json_int_t)st->unchanged,
            "out_of_scope", (json_int_t)st->out_of_scope, "waiting",
            (json_int_t)st->waiting, "failed", (json_int_t)st->failed_kept));
    json_object_set_new(rp->current, "state",
                        json_pack("{s:s, s:I, s:I, s:I}", "state", state,
                                  "proven", (json_int_t)rec->proven, "gone",
                                  (json_int_t)rec->taken_up, "unproven",
                                  (json_int_t)rec->unproven));
    return;
  }
  if (rec->empty && rec->proven + rec->unproven > 0)
    fprintf(rp->fp,
            "  the state holds nothing of this link, but %s already holds "
            "%lu objects with its anchors: the state looks lost. Of the %lu "
            "whose anchor proves galbridge made them, a sync takes up those "
            "of people in scope and updates them, takes up the %lu whose "
            "source object is gone and removes them under max_deletes, and "
            "leaves the rest alone, as it leaves the %lu without proof.\n",
            link->target->name, rec->proven + rec->unproven, rec->proven,
            rec->taken_up, rec->unproven);
  else if (rec->empty)
    fprintf(rp->fp,
            "  the state holds nothing of this link: planned as a first "
            "sync\n");
  fprintf(rp->fp,
          "  totals: %lu to create, %lu to update, %lu to delete "
          "(%lu held), %lu to restore, %lu to adopt; %lu refused, "
          "%lu unchanged, %lu out of scope, %lu already queued, "
          "%lu failed\n",
          st->creates, st->updates, st->deletes, st->held, st->restores,
          st->adopts, st->fails, st->unchanged, st->out_of_scope, st->waiting,
          st->failed_kept);
}

void
report_plan_end(struct report_plan *rp)
{
  if (rp == NULL)
    return;
  if (rp->json) {
    json_t *root = json_pack("{s:O, s:s}", "links", rp->links, "state",
                             rp->missing ? "missing" : "present");
    char *text = json_dumps(root, JSON_INDENT(2));
    fprintf(rp->fp, "%s\n", text ? text : "{}");
    free(text);
    json_decref(root);
  }
  json_decref(rp->links);
  free(rp);
}
