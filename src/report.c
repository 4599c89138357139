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
#include "text.h"

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
 * outbox should be empty; null when nothing is pending. A new reference,
 * or NULL when memory is short. */
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
  if (p != NULL &&
      json_object_set_new(
          p, "finish_estimate",
          rate > 0
              ? time_or_null(now + (time_t)((double)c->pending / rate + 1))
              : json_null()) != 0) {
    json_decref(p);
    p = NULL;
  }
  return p;
}

/* Guest links writing to Exchange too: how many guests are not yet seen
 * visible there, and the first 20, for an admin to look at. */
static int
guests_not_visible(const struct config_link *link, struct store *store,
                   json_t *entry)
{
  struct store_pair *pairs = NULL;
  size_t n_pairs = 0;
  json_t *list = json_array();
  long long nv;
  int result = -1;

  if (list == NULL || store_count_not_visible(store, link->name, &nv) != 0 ||
      store_unverified(store, link->name, 20, &pairs, &n_pairs) != 0)
    goto out;
  for (size_t k = 0; k < n_pairs; k++) {
    if (json_array_append_new(list,
                              json_pack("{s:s, s:s}", "source_id", pairs[k].a,
                                        "target_id", pairs[k].b)) != 0)
      goto out;
  }
  if (json_object_set_new(entry, "guests_not_visible", json_integer(nv)) !=
          0 ||
      json_object_set(entry, "guests_not_visible_first", list) != 0)
    goto out;
  result = 0;
out:
  store_pairs_free(pairs, n_pairs);
  json_decref(list);
  return result;
}

/* photos = yes: how many copies carry a photo galbridge wrote, and how
 * many failed their last check (the reasons are in the log and in
 * `explain`). */
static int
photo_counts(const struct config_link *link, struct store *store,
             json_t *entry)
{
  long long written, failed;

  if (store_photo_counts(store, link->name, &written, &failed) != 0)
    return -1;
  return json_object_set_new(entry, "photos",
                             json_pack("{s:I, s:I}", "written",
                                       (json_int_t)written, "failed",
                                       (json_int_t)failed));
}

/* One link's status: a new object, or NULL when the store cannot be read
 * or memory is short (never a part of it). */
static json_t *
link_status(const struct config_link *link, struct store *store)
{
  struct store_link_counts c;
  struct store_op *ops = NULL;
  size_t n_ops = 0;
  json_t *entry = NULL, *failures = NULL, *result = NULL;

  if (store_link_counts(store, link->name, &c) != 0 ||
      store_ops_list(store, link->name, STORE_OP_FAILED, 100, &ops, &n_ops) !=
          0)
    goto out;
  failures = json_array();
  if (failures == NULL)
    goto out;
  /* next_try: when a round tries it again (null: the next round). An
   * error recorded by an older galbridge may end inside a character (it
   * was cut by bytes): it is shown without that tail, as JSON takes only
   * valid UTF-8. */
  for (size_t k = 0; k < n_ops; k++) {
    char *e = ops[k].last_error;

    if (e != NULL)
      e[text_utf8_valid_prefix(e, strlen(e))] = '\0';
    if (json_array_append_new(
            failures,
            json_pack("{s:s, s:s, s:s?, s:i, s:o}", "source_id",
                      ops[k].source_id, "op", store_op_kind_name(ops[k].kind),
                      "error", ops[k].last_error, "attempts", ops[k].attempts,
                      "next_try", time_or_null(ops[k].next_try))) != 0)
      goto out;
  }
  entry = json_pack(
      "{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:o}", "name", link->name,
      "source", link->source->name, "target", link->target->name, "object",
      config_object_name(link->object), "objects", (json_int_t)c.objects,
      "pending", (json_int_t)c.pending, "failed", (json_int_t)c.failed,
      "deletes_held", (json_int_t)c.deletes_held, "last_success",
      time_or_null(c.last_success));
  /* Added after the contract's fields, in the same form. */
  if (entry != NULL &&
      json_object_set_new(entry, "creates_held",
                          json_integer((json_int_t)c.creates_held)) != 0)
    goto out;
  /* refused: of the failed, people not synced for a conflict or a
   * value. */
  if (entry == NULL || json_object_set(entry, "failures", failures) != 0 ||
      json_object_set_new(entry, "refused", json_integer(c.refused)) != 0 ||
      json_object_set_new(entry, "progress", progress_json(&c, time(NULL))) !=
          0)
    goto out;
  if (link->object == CONFIG_OBJECT_GUEST && link->target->exchange &&
      guests_not_visible(link, store, entry) != 0)
    goto out;
  if (link->photos && photo_counts(link, store, entry) != 0)
    goto out;
  result = entry;
  entry = NULL;
out:
  store_ops_free(ops, n_ops);
  json_decref(failures);
  json_decref(entry);
  return result;
}

/* Each link of cfg, as an object appended to `links`. */
static int
status_links(const struct config *cfg, struct store *store, json_t *links)
{
  for (size_t i = 0; i < cfg->n_links; i++) {
    if (json_array_append_new(links, link_status(&cfg->links[i], store)) != 0)
      return -1;
  }
  return 0;
}

/* One read of tenant `t` (its users under its tenant id, or its groups
 * under `key` "<tenant id>#groups"), as an object appended to
 * `sources`: "read" says which. */
static int
append_source(json_t *sources, struct store *store,
              const struct config_tenant *t, const char *key, const char *read)
{
  struct store_source_counts c;
  struct store_delta_state st;
  int rc;

  if (store_source_count(store, key, &c) != 0 ||
      store_delta_get(store, key, &st) != 0)
    return -1;
  rc = json_array_append_new(
      sources,
      json_pack(
          "{s:s, s:s, s:s, s:I, s:I, s:I, s:o, s:b}", "name", t->name,
          "tenant_id", t->tenant_id, "read", read, "objects",
          (json_int_t)c.present, "soft_deleted", (json_int_t)c.soft_deleted,
          "deleted", (json_int_t)c.deleted, "last_round",
          time_or_null(st.last_round), "full_read_pending",
          !graph_delta_link_usable(t->graph_url, st.base_url, st.delta_link)));
  store_delta_state_clear(&st);
  return rc;
}

/* Each tenant a link of cfg reads (as its source or its target), as an
 * object appended to `sources`; a tenant whose groups a groupcontact
 * link reads has a second one for them. */
static int
status_sources(const struct config *cfg, struct store *store, json_t *sources)
{
  for (size_t i = 0; i < cfg->n_tenants; i++) {
    const struct config_tenant *t = &cfg->tenants[i];
    const char *groups_key = NULL;
    int is_source = 0;

    /* Its users are read as a target, or as a source of people; its
     * groups as a groupcontact link's source. */
    for (size_t j = 0; j < cfg->n_links; j++) {
      const struct config_link *l = &cfg->links[j];
      int groups = l->object == CONFIG_OBJECT_GROUPCONTACT;
      is_source |= l->target == t || (l->source == t && !groups);
      if (l->source == t && groups)
        groups_key = config_link_source_key(l);
    }
    if ((is_source &&
         append_source(sources, store, t, t->tenant_id, "users") != 0) ||
        (groups_key != NULL &&
         append_source(sources, store, t, groups_key, "groups") != 0))
      return -1;
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
    const char *read = json_string_value(json_object_get(v, "read"));
    fprintf(fp,
            "source %s%s: %lld %s, %lld soft-deleted, %lld deleted; "
            "last round %s\n",
            json_string_value(json_object_get(v, "name")),
            strcmp(read, "groups") == 0 ? " (groups)" : "",
            json_integer_value(json_object_get(v, "objects")), read,
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
    if (json_is_object(json_object_get(v, "photos"))) {
      const json_t *ph = json_object_get(v, "photos");
      fprintf(fp,
              "  photos: %lld copies carry a photo galbridge wrote, %lld "
              "failed their last check\n",
              json_integer_value(json_object_get(ph, "written")),
              json_integer_value(json_object_get(ph, "failed")));
    }
    if (json_integer_value(json_object_get(v, "deletes_held")) > 0)
      fprintf(fp,
              "  deletes held: run 'galbridge approve-deletes %s' to let "
              "them through\n",
              json_string_value(json_object_get(v, "name")));
    if (json_integer_value(json_object_get(v, "creates_held")) > 0)
      fprintf(fp,
              "  %lld creates held (over max_creates): run 'galbridge "
              "approve-creates %s' to let them through\n",
              json_integer_value(json_object_get(v, "creates_held")),
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
  /* A state that is not there, or holds nothing, says so: it may have
   * been lost (galbridge plan looks for copies in the targets). */
  root = json_pack("{s:[], s:[], s:s}", "links", "sources", "state",
                   missing ? "missing"
                   : empty ? "empty"
                           : "present");
  if (root == NULL)
    return -1;
  links = json_object_get(root, "links");
  sources = json_object_get(root, "sources");
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
  /* --json: a part of the document could not be made (memory): it is
   * not written, report_plan_end() says so. */
  int failed;
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
  if (as_json) {
    rp->links = json_array();
    if (rp->links == NULL) {
      free(rp);
      return NULL;
    }
  }
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
    json_t *obj =
        json_pack("{s:s, s:s, s:s, s:s, s:[]}", "name", link->name, "source",
                  link->source->name, "target", link->target->name, "object",
                  config_object_name(link->object), "changes");

    /* Borrowed from rp->links only once it is in there. */
    rp->current = NULL;
    if (json_array_append_new(rp->links, obj) == 0)
      rp->current = obj;
    else
      rp->failed = 1;
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

/* --json: one planned change, appended to the link's "changes".
 * Returns 0, or -1 when memory is short (nothing appended). */
static int
plan_item(struct report_plan *rp, const struct store_plan_row *row,
          const struct planner_decision *d, int held, const json_t *applied)
{
  json_t *item, *changes = NULL, *v;
  const char *key;
  int result = -1;

  item = json_pack("{s:s, s:s, s:s?, s:b}", "op", planner_kind_name(d->kind),
                   "source_id", row->source_id, "target_id", row->target_id,
                   "held", held);
  if (item == NULL)
    goto out;
  if (d->kind == PLANNER_FAIL &&
      json_object_set_new(item, "reason", json_string(d->reason)) != 0)
    goto out;
  if (d->kind == PLANNER_UPDATE) {
    changes = json_object();
    if (changes == NULL)
      goto out;
    json_object_foreach(d->payload, key, v)
    {
      json_t *old = json_object_get(applied, key);
      if (json_object_set_new(changes, key,
                              json_pack("{s:O, s:O}", "old",
                                        old ? old : json_null(), "new", v)) !=
          0)
        goto out;
    }
    if (json_object_set(item, "changes", changes) != 0)
      goto out;
  } else if (d->desired != NULL &&
             json_object_set(item, "attributes", d->desired) != 0) {
    goto out;
  }
  result = json_array_append(json_object_get(rp->current, "changes"), item);
out:
  json_decref(changes);
  json_decref(item);
  return result;
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
    if (!rp->failed && plan_item(rp, row, d, held, applied) != 0)
      rp->failed = 1;
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
  } else if (d->kind == PLANNER_TAKEOVER) {
    fprintf(rp->fp,
            "  %-8s %s <%s> (source %s): target object %s, the mail user "
            "its mailbox move left\n",
            kind, label(row, d), address(d), row->source_id, row->target_id);
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
    if (rp->failed)
      return;
    if (json_object_set_new(
            rp->current, "totals",
            json_pack(
                "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                "create", (json_int_t)st->creates, "update",
                (json_int_t)st->updates, "delete", (json_int_t)st->deletes,
                "restore", (json_int_t)st->restores, "adopt",
                (json_int_t)st->adopts, "refused", (json_int_t)st->fails,
                "held", (json_int_t)st->held, "unchanged",
                (json_int_t)st->unchanged, "out_of_scope",
                (json_int_t)st->out_of_scope, "waiting",
                (json_int_t)st->waiting, "failed",
                (json_int_t)st->failed_kept)) != 0 ||
        json_object_set_new(rp->current, "state",
                            json_pack("{s:s, s:I, s:I, s:I}", "state", state,
                                      "proven", (json_int_t)rec->proven,
                                      "gone", (json_int_t)rec->taken_up,
                                      "unproven",
                                      (json_int_t)rec->unproven)) != 0 ||
        json_object_set_new(json_object_get(rp->current, "totals"),
                            "creates_held",
                            json_integer((json_int_t)st->creates_held)) != 0)
      rp->failed = 1;
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
  if (st->creates_held > 0)
    fprintf(rp->fp,
            "  creates held: %lu, over max_creates (%ld) in one round; "
            "'galbridge approve-creates %s' lets them through\n",
            st->creates_held, link->max_creates, link->name);
}

int
report_plan_end(struct report_plan *rp)
{
  json_t *root = NULL;
  char *text = NULL;
  int result = -1;

  if (rp == NULL)
    return 0;
  if (!rp->json) {
    result = 0;
    goto out;
  }
  if (rp->failed)
    goto out;
  root = json_pack("{s:O, s:s}", "links", rp->links, "state",
                   rp->missing ? "missing" : "present");
  text = root != NULL ? json_dumps(root, JSON_INDENT(2)) : NULL;
  if (text == NULL)
    goto out;
  fprintf(rp->fp, "%s\n", text);
  result = 0;
out:
  free(text);
  json_decref(root);
  json_decref(rp->links);
  free(rp);
  return result;
}

/* --- sync --user --- */

struct report_user {
  struct report_plan *rp; /* the planned change, printed as plan does */
  struct store *store;
  const struct config_link *link;
  char observed[160];
  char *id;        /* the person's source id, once planned */
  const char *why; /* nothing to plan: the planner's reason (static) */
  int emitted;
};

struct report_user *
report_user_new(FILE *fp, struct store *store, const struct config_link *link)
{
  struct report_user *ru = calloc(1, sizeof(*ru));

  if (ru == NULL)
    return NULL;
  ru->rp = report_plan_begin(fp, 0, NULL, 0);
  if (ru->rp == NULL) {
    free(ru);
    return NULL;
  }
  ru->store = store;
  ru->link = link;
  planner_observed_tenant(link, ru->observed, sizeof(ru->observed));
  report_plan_link(ru->rp, link);
  return ru;
}

struct user_row {
  const struct planner_link *pl;
  struct report_user *ru;
  long long op_id;
  enum store_op_kind kind;
  enum store_op_state state;
  char *error, *target_id, *target_state, *name, *mail;
};

static void
user_row_clear(struct user_row *ur)
{
  free(ur->error);
  free(ur->target_id);
  free(ur->target_state);
  free(ur->name);
  free(ur->mail);
}

static char *
attr_dup(const char *attrs, const char *key)
{
  json_t *o = json_loads(attrs != NULL ? attrs : "{}", 0, NULL);
  const char *v = json_string_value(json_object_get(o, key));
  char *d = v != NULL ? strdup(v) : NULL;

  json_decref(o);
  return d;
}

/* The person's row: what the planner says of it (before the plan, with
 * pl), or what is left of it (after the run). */
static int
on_user_row(void *ctx, const struct store_plan_row *row)
{
  struct user_row *ur = ctx;
  struct planner_decision d;
  char err[256];

  ur->op_id = row->op_id;
  ur->kind = row->op_kind;
  ur->state = row->op_state;
  ur->error = row->op_error != NULL ? strdup(row->op_error) : NULL;
  ur->target_id = row->target_id != NULL ? strdup(row->target_id) : NULL;
  ur->target_state = row->state != NULL ? strdup(row->state) : NULL;
  ur->name = attr_dup(row->attrs, "displayName");
  ur->mail = attr_dup(row->attrs, "mail");
  if (ur->pl != NULL &&
      planner_decide(ur->pl, config_link_source_key(ur->ru->link), row, &d,
                     err, sizeof(err)) == 0) {
    ur->ru->why = d.kind == PLANNER_NONE && d.why != NULL ? d.why : NULL;
    planner_decision_clear(&d);
  }
  return 0;
}

void
report_user_planning(void *ctx, const struct planner_link *pl)
{
  struct report_user *ru = ctx;
  struct planner_link quiet = *pl;
  struct user_row ur = {.pl = &quiet, .ru = ru};

  if (pl->only == NULL)
    return;
  quiet.quiet = 1;
  free(ru->id);
  ru->id = strdup(pl->only);
  if (ru->id != NULL &&
      store_plan_row_one(ru->store, ru->link->name,
                         config_link_source_key(ru->link), ru->observed,
                         ru->id, on_user_row, &ur) < 0)
    ru->why = NULL;
  if (ur.name != NULL || ur.mail != NULL)
    fprintf(ru->rp->fp, "  person   %s <%s> (source %s)\n",
            ur.name ? ur.name : "", ur.mail ? ur.mail : "", pl->only);
  user_row_clear(&ur);
}

void
report_user_emit(void *ctx, const struct store_plan_row *row,
                 const struct planner_decision *d, int held)
{
  struct report_user *ru = ctx;

  ru->emitted = 1;
  report_plan_emit(ru->rp, row, d, held);
}

int
report_user_end(struct report_user *ru)
{
  struct user_row ur = {.ru = ru};
  FILE *fp;
  int result = 0;

  if (ru == NULL)
    return 0;
  fp = ru->rp->fp;
  if (ru->id == NULL) {
    fprintf(fp, "  nothing done: the person was not read or not planned "
                "(see the errors above)\n");
    goto out;
  }
  if (store_plan_row_one(ru->store, ru->link->name,
                         config_link_source_key(ru->link), ru->observed,
                         ru->id, on_user_row, &ur) < 0) {
    result = -1;
    goto out;
  }
  if (ur.op_id != 0 && ur.kind == STORE_OP_FAIL)
    fprintf(fp, "  result   refused: %s\n", ur.error ? ur.error : "");
  else if (ur.op_id != 0 && ur.state == STORE_OP_FAILED)
    fprintf(fp,
            "  result   %s failed for good (tried again after its backoff, "
            "or at once after 'galbridge resync %s'): %s\n",
            store_op_kind_name(ur.kind), ru->link->name,
            ur.error ? ur.error : "");
  else if (ur.op_id != 0 && ur.state == STORE_OP_HELD &&
           ur.kind == STORE_OP_CREATE)
    fprintf(fp,
            "  result   create held: over max_creates ('galbridge "
            "approve-creates %s' lets it through)\n",
            ru->link->name);
  else if (ur.op_id != 0 && ur.state == STORE_OP_HELD)
    fprintf(fp,
            "  result   delete held: over max_deletes ('galbridge "
            "approve-deletes %s' lets it through)\n",
            ru->link->name);
  else if (ur.op_id != 0)
    fprintf(fp,
            "  result   %s left pending: %s; the link's next round "
            "tries again\n",
            store_op_kind_name(ur.kind), ur.error ? ur.error : "not run");
  else if (ru->emitted || ur.target_id != NULL)
    fprintf(fp, "  result   %s; target %s (%s)\n",
            ru->emitted ? "done" : "nothing to do",
            ur.target_id ? ur.target_id : "(none)",
            ur.target_state ? ur.target_state : "no copy");
  else
    fprintf(fp, "  result   nothing to do: %s\n",
            ru->why ? ru->why : "up to date");
  if (ur.op_id == 0 && !ru->emitted && ur.target_id != NULL && ru->why)
    fprintf(fp, "           (%s)\n", ru->why);
out:
  user_row_clear(&ur);
  if (report_plan_end(ru->rp) != 0)
    result = -1;
  free(ru->id);
  free(ru);
  return result;
}
