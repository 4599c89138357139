/*
 * explain — see include/explain.h.
 *
 * WHO is matched, ignoring ASCII case, against each source object of the
 * link (its id, mail and userPrincipalName) and its copy (the target id,
 * the address and userPrincipalName the target's own read shows, the
 * address galbridge applied). The person found is kept as an owned copy
 * of its plan row, so that planner_decide() can weigh it again outside
 * the store's callback; every part of the explanation is added to one
 * JSON document, and the text is written from that document only.
 */
#include "explain.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "mapping.h"
#include "scope.h"

#define MATCHES_MAX 20    /* matches listed when WHO is ambiguous */
#define OPS_CHUNK 500     /* outbox rows read at a time */
#define TEXT_VALUE_MAX 70 /* a value shown in text beyond this is cut */

/* A plan row, every string owned. */
struct saved_row {
  char *source_id, *attrs, *target_id, *hash, *applied, *state;
  char *op_hash, *target_attrs, *op_error, *bad, *mailbox;
  char *manager_id, *manager_attrs, *manager_target;
  int removed, target_removed;
  long long op_id;
  enum store_op_kind op_kind;
  enum store_op_state op_state;
};

struct explain {
  const struct config *cfg;
  const struct config_link *link;
  const char *who;
  struct store *store;
  char observed[160];
  json_t *matches;      /* [{source_id, displayName, mail, ...}] */
  size_t n_matches;     /* may be more than listed */
  struct saved_row row; /* the one person (n_matches == 1) */
  json_t *doc;          /* the explanation */
  json_t *desired;      /* the planner's desired values, or NULL */
  const char *why;      /* planner_decide's why (static), or NULL */
  int planned;          /* explain_planning ran */
  int finished;         /* explain_done ran */
  int failed;           /* memory or the store: logged */
};

static char *
dup_or_null(const char *s, int *oom)
{
  char *d;

  if (s == NULL)
    return NULL;
  d = strdup(s);
  if (d == NULL)
    *oom = 1;
  return d;
}

static void
saved_row_clear(struct saved_row *r)
{
  char **strs[] = {&r->source_id,     &r->attrs,         &r->target_id,
                   &r->hash,          &r->applied,       &r->state,
                   &r->op_hash,       &r->target_attrs,  &r->op_error,
                   &r->bad,           &r->mailbox,       &r->manager_id,
                   &r->manager_attrs, &r->manager_target};

  for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
    free(*strs[i]);
    *strs[i] = NULL;
  }
  memset(r, 0, sizeof(*r));
}

static int
saved_row_set(struct saved_row *r, const struct store_plan_row *row)
{
  int oom = 0;

  saved_row_clear(r);
  r->source_id = dup_or_null(row->source_id, &oom);
  r->attrs = dup_or_null(row->attrs, &oom);
  r->target_id = dup_or_null(row->target_id, &oom);
  r->hash = dup_or_null(row->hash, &oom);
  r->applied = dup_or_null(row->applied, &oom);
  r->state = dup_or_null(row->state, &oom);
  r->op_hash = dup_or_null(row->op_hash, &oom);
  r->target_attrs = dup_or_null(row->target_attrs, &oom);
  r->op_error = dup_or_null(row->op_error, &oom);
  r->bad = dup_or_null(row->bad, &oom);
  r->mailbox = dup_or_null(row->mailbox, &oom);
  r->manager_id = dup_or_null(row->manager_id, &oom);
  r->manager_attrs = dup_or_null(row->manager_attrs, &oom);
  r->manager_target = dup_or_null(row->manager_target, &oom);
  r->removed = row->removed;
  r->target_removed = row->target_removed;
  r->op_id = row->op_id;
  r->op_kind = row->op_kind;
  r->op_state = row->op_state;
  return oom ? -1 : 0;
}

static struct store_plan_row
saved_row_view(const struct saved_row *r)
{
  struct store_plan_row row = {
      .source_id = r->source_id,
      .attrs = r->attrs,
      .removed = r->removed,
      .target_id = r->target_id,
      .hash = r->hash,
      .applied = r->applied,
      .state = r->state,
      .op_id = r->op_id,
      .op_kind = r->op_kind,
      .op_hash = r->op_hash,
      .op_state = r->op_state,
      .target_removed = r->target_removed,
      .target_attrs = r->target_attrs,
      .op_error = r->op_error,
      .bad = r->bad,
      .mailbox = r->mailbox,
      .manager_id = r->manager_id,
      .manager_attrs = r->manager_attrs,
      .manager_target = r->manager_target,
  };
  return row;
}

struct explain *
explain_new(const struct config *cfg, const struct config_link *link,
            const char *who, struct store *store)
{
  struct explain *ex = calloc(1, sizeof(*ex));

  if (ex == NULL)
    return NULL;
  ex->cfg = cfg;
  ex->link = link;
  ex->who = who;
  ex->store = store;
  planner_observed_tenant(link, ex->observed, sizeof(ex->observed));
  ex->matches = json_array();
  ex->doc = json_object();
  if (ex->matches == NULL || ex->doc == NULL) {
    explain_free(ex);
    return NULL;
  }
  return ex;
}

void
explain_free(struct explain *ex)
{
  if (ex == NULL)
    return;
  json_decref(ex->matches);
  json_decref(ex->doc);
  json_decref(ex->desired);
  saved_row_clear(&ex->row);
  free(ex);
}

/* --- finding WHO --- */

static int
same(const char *who, const json_t *v)
{
  return json_is_string(v) && strcasecmp(who, json_string_value(v)) == 0;
}

/* Whether `who` names one of the addresses of `text` (JSON, may be NULL):
 * mail, userPrincipalName, or the link's address attribute. */
static int
names_in(const char *who, const char *text, const char *address_attr)
{
  static const char *const keys[] = {"mail", "userPrincipalName",
                                     "PrimarySmtpAddress"};
  json_t *o;
  int hit = 0;

  if (text == NULL)
    return 0;
  o = json_loads(text, 0, NULL);
  for (size_t i = 0; json_is_object(o) && !hit && i < 3; i++)
    hit = same(who, json_object_get(o, keys[i]));
  if (json_is_object(o) && !hit)
    hit = same(who, json_object_get(o, address_attr));
  json_decref(o);
  return hit;
}

static json_t *
attr_of(const char *text, const char *key)
{
  json_t *o = json_loads(text != NULL ? text : "{}", 0, NULL);
  json_t *v = json_incref(json_object_get(o, key));

  json_decref(o);
  return v != NULL ? v : json_null();
}

static int
on_match(void *ctx, const struct store_plan_row *row)
{
  struct explain *ex = ctx;
  const char *addr = planner_address_attr(ex->link);
  json_t *m;

  if (strcasecmp(ex->who, row->source_id) != 0 &&
      (row->target_id == NULL || strcasecmp(ex->who, row->target_id) != 0) &&
      !names_in(ex->who, row->attrs, addr) &&
      !names_in(ex->who, row->target_attrs, addr) &&
      !names_in(ex->who, row->applied, addr))
    return 0;
  if (++ex->n_matches == 1 && saved_row_set(&ex->row, row) != 0)
    return ex->failed = 1, -1;
  if (ex->n_matches > MATCHES_MAX)
    return 0;
  m = json_pack("{s:s, s:o, s:o, s:o, s:s?}", "source_id", row->source_id,
                "displayName", attr_of(row->attrs, "displayName"), "mail",
                attr_of(row->attrs, "mail"), "userPrincipalName",
                attr_of(row->attrs, "userPrincipalName"), "target_id",
                row->target_id);
  if (json_array_append_new(ex->matches, m) != 0)
    return ex->failed = 1, -1;
  return 0;
}

/* --- what the state holds of the person --- */

static const char *
removed_name(int removed)
{
  return removed == STORE_SOFT_DELETED ? "deleted (soft: restorable)"
         : removed == STORE_DELETED    ? "deleted"
                                       : "present";
}

static json_t *
source_part(const struct explain *ex, const json_t *attrs)
{
  return json_pack("{s:s, s:s, s:s, s:O?, s:O?, s:O?, s:s, s:s?}", "tenant",
                   ex->link->source->name, "tenant_id",
                   ex->link->source->tenant_id, "id", ex->row.source_id,
                   "displayName", json_object_get(attrs, "displayName"),
                   "mail", json_object_get(attrs, "mail"), "userPrincipalName",
                   json_object_get(attrs, "userPrincipalName"), "state",
                   removed_name(ex->row.removed), "refused", ex->row.bad);
}

static json_t *
scope_part(const struct explain *ex, const struct planner_link *pl,
           const json_t *attrs)
{
  const char *why = NULL;
  int dflt = planner_default_scope(pl, ex->row.source_id, attrs, &why);
  int present = ex->row.removed == STORE_PRESENT;
  int member = 1, match = 1, excluded = 0;
  json_t *group = json_null(), *filter = json_null(), *exclude = json_null();
  const char *by = NULL;

  if (ex->link->scope_group != NULL) {
    member = pl->members != NULL &&
             json_object_get(pl->members, ex->row.source_id) != NULL;
    group =
        json_pack("{s:s, s:b}", "id", ex->link->scope_group, "member", member);
  }
  if (ex->link->exclude_group != NULL) {
    excluded = planner_excluded(pl, ex->row.source_id, &by);
    /* by is "member of exclude_group <id>": the id is what is shown */
    exclude = json_pack(
        "{s:s, s:b, s:s?}", "id", ex->link->exclude_group, "excluded",
        excluded, "group",
        excluded && strrchr(by, ' ') != NULL ? strrchr(by, ' ') + 1 : NULL);
  }
  if (pl->filter != NULL) {
    match = scope_filter_match(pl->filter, attrs);
    filter = json_pack("{s:s, s:b, s:o}", "filter", ex->link->scope_filter,
                       "result", match, "clauses",
                       scope_filter_clauses(pl->filter, attrs));
  }
  return json_pack("{s:b, s:s?, s:b, s:{s:b, s:s?}, s:o, s:o, s:o}",
                   "in_scope", present && dflt && !excluded && member && match,
                   "why", ex->why, "present", present, "default", "result",
                   dflt, "why", why, "scope_group", group, "exclude_group",
                   exclude, "scope_filter", filter);
}

static int photo_part(struct explain *ex, json_t *target);

static json_t *
target_part(struct explain *ex)
{
  json_t *applied, *observed, *t;
  int visible = -1;

  if (ex->row.state == NULL && ex->row.target_id == NULL)
    return json_null();
  if (store_target_visible(ex->store, ex->link->name, ex->row.source_id,
                           &visible) != 0)
    return NULL;
  applied = json_loads(ex->row.applied ? ex->row.applied : "null",
                       JSON_DECODE_ANY, NULL);
  observed = ex->row.target_attrs != NULL
                 ? json_loads(ex->row.target_attrs, 0, NULL)
                 : NULL;
  t = json_pack(
      "{s:s?, s:s, s:s?, s:o, s:s, s:o, s:o}", "id", ex->row.target_id, "kind",
      config_object_name(ex->link->object), "state", ex->row.state, "applied",
      applied != NULL ? applied : json_null(), "in_target",
      observed == NULL                          ? "not read"
      : ex->row.target_removed != STORE_PRESENT ? "deleted"
                                                : "present",
      "observed", observed != NULL ? observed : json_null(),
      "exchange_visible", visible < 0 ? json_null() : json_boolean(visible));
  if (t != NULL && photo_part(ex, t) != 0) {
    json_decref(t);
    return NULL;
  }
  return t;
}

static json_t *time_or_null(time_t t);

/* photos = yes: what the state knows of the copy's photo (the source
 * etag galbridge wrote on it, the last and next check, why the last one
 * wrote nothing), or null when never checked. */
static int
photo_part(struct explain *ex, json_t *target)
{
  struct store_photo ph;
  json_t *v;
  int found;

  if (!ex->link->photos)
    return 0;
  if (store_photo_get(ex->store, ex->link->name, ex->row.source_id, &ph,
                      &found) != 0)
    return -1;
  v = !found ? json_null()
             : json_pack("{s:s, s:s?, s:o, s:o, s:s?}", "target_id",
                         ph.target_id, "etag_written", ph.etag, "checked_at",
                         time_or_null(ph.checked_at), "next_check",
                         time_or_null(ph.next_check), "error", ph.error);
  store_photo_clear(&ph);
  return json_object_set_new(target, "photo", v);
}

static json_t *
time_or_null(time_t t)
{
  char buf[32];
  struct tm tm;

  if (t == 0)
    return json_null();
  gmtime_r(&t, &tm);
  strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return json_string(buf);
}

/* The person's ops in the outbox, as the state holds them. */
static json_t *
outbox_part(struct explain *ex)
{
  static const enum store_op_state states[] = {STORE_OP_PENDING, STORE_OP_HELD,
                                               STORE_OP_FAILED};
  json_t *out = json_array();

  for (size_t s = 0; out != NULL && s < 3; s++) {
    long long after = 0;
    for (;;) {
      struct store_op *ops = NULL;
      size_t n = 0;
      if (store_ops_list_after(ex->store, ex->link->name, states[s], after,
                               OPS_CHUNK, &ops, &n) != 0) {
        json_decref(out);
        return NULL;
      }
      for (size_t i = 0; i < n; i++) {
        const struct store_op *op = &ops[i];
        after = op->id;
        if (strcmp(op->source_id, ex->row.source_id) != 0)
          continue;
        if (json_array_append_new(
                out, json_pack("{s:I, s:s, s:s, s:i, s:s?, s:s?, s:o}", "id",
                               (json_int_t)op->id, "kind",
                               store_op_kind_name(op->kind), "state",
                               store_op_state_name(op->state), "attempts",
                               op->attempts, "last_error", op->last_error,
                               "target_id", op->target_id, "next_try",
                               time_or_null(op->next_try))) != 0) {
          store_ops_free(ops, n);
          json_decref(out);
          return NULL;
        }
      }
      store_ops_free(ops, n);
      if (n < OPS_CHUNK)
        break;
    }
  }
  return out;
}

static json_t *
migration_part(const struct explain *ex)
{
  json_t *mailbox;

  if (!ex->link->migration)
    return json_null();
  mailbox =
      ex->row.mailbox != NULL ? json_loads(ex->row.mailbox, 0, NULL) : NULL;
  return json_pack("{s:b, s:o}", "moved",
                   ex->row.state != NULL &&
                       strcmp(ex->row.state, "moved") == 0,
                   "mailbox", mailbox != NULL ? mailbox : json_null());
}

/* The manager the copy should have (planner_manager): the source's
 * manager, the link's copy of it, or why there is none; null when the
 * link leaves managers alone. */
static json_t *
manager_part(const struct explain *ex, const struct planner_link *pl,
             const json_t *attrs)
{
  struct store_plan_row row = saved_row_view(&ex->row);
  const char *target, *why;

  if (!ex->link->manager)
    return json_null();
  (void)planner_manager(pl, &row, &target, &why);
  return json_pack("{s:O, s:s?, s:s?}", "source_id",
                   json_is_string(json_object_get(attrs, "manager"))
                       ? json_object_get(attrs, "manager")
                       : json_null(),
                   "target_id", target, "why", why);
}

static int
set(struct explain *ex, const char *key, json_t *value)
{
  if (value == NULL || json_object_set_new(ex->doc, key, value) != 0) {
    ex->failed = 1;
    return -1;
  }
  return 0;
}

void
explain_planning(void *ctx, const struct planner_link *pl)
{
  struct explain *ex = ctx;
  struct planner_link quiet = *pl;
  struct planner_decision d;
  json_t *attrs, *mapped;
  char err[512];

  ex->planned = 1;
  if (store_plan_rows(ex->store, ex->link->name,
                      config_link_source_key(ex->link), ex->observed, -1, NULL,
                      0, on_match, ex) < 0 ||
      ex->failed) {
    ex->failed = 1;
    return;
  }
  if (ex->n_matches != 1)
    return;
  attrs = json_loads(ex->row.attrs ? ex->row.attrs : "{}", 0, NULL);
  if (!json_is_object(attrs)) {
    json_decref(attrs);
    attrs = json_object();
  }
  /* The planner's own weighing of the row as the state holds it, for
   * the reason an object is out of scope and its desired values. */
  quiet.quiet = 1;
  {
    struct store_plan_row row = saved_row_view(&ex->row);
    if (planner_decide(&quiet, config_link_source_key(ex->link), &row, &d, err,
                       sizeof(err)) == 0) {
      ex->why = d.why;
      ex->desired = json_incref(d.desired);
      planner_decision_clear(&d);
    }
  }
  mapped = mapping_eval(pl->mapping, attrs, err, sizeof(err));
  if (set(ex, "link", json_string(ex->link->name)) == 0 &&
      set(ex, "who", json_string(ex->who)) == 0 &&
      set(ex, "source", source_part(ex, attrs)) == 0 &&
      set(ex, "scope", scope_part(ex, pl, attrs)) == 0 &&
      set(ex, "mapped",
          mapped != NULL ? json_incref(mapped)
                         : json_pack("{s:s}", "error", err)) == 0 &&
      set(ex, "target", target_part(ex)) == 0 &&
      set(ex, "manager", manager_part(ex, pl, attrs)) == 0 &&
      set(ex, "outbox", outbox_part(ex)) == 0)
    (void)set(ex, "migration", migration_part(ex));
  json_decref(mapped);
  json_decref(attrs);
}

void
explain_emit(void *ctx, const struct store_plan_row *row,
             const struct planner_decision *d, int held)
{
  struct explain *ex = ctx;
  json_t *next;

  if (ex->n_matches != 1 || strcmp(row->source_id, ex->row.source_id) != 0)
    return;
  /* Weighed again in the same plan (a conflict found later): the last
   * decision is the one that stands. */
  next = json_pack("{s:s, s:b, s:s?, s:O?, s:s?, s:b}", "action",
                   planner_kind_name(d->kind), "held", held, "reason",
                   d->reason != NULL ? d->reason : d->why, "changes",
                   d->kind == PLANNER_UPDATE ? d->payload : NULL, "target_id",
                   d->target_id != NULL ? d->target_id : row->target_id,
                   "queued", 0);
  (void)set(ex, "next", next);
}

static int
on_self(void *ctx, const struct store_plan_row *row)
{
  struct explain *ex = ctx;

  return saved_row_set(&ex->row, row) != 0 ? -1 : 1;
}

/* Claims of the person another object holds in the target. */
static json_t *
conflicts_part(struct explain *ex)
{
  char *keys[PLANNER_CLAIMS_MAX] = {0};
  size_t n = 0;
  json_t *out = json_array();

  if (out == NULL || ex->desired == NULL)
    return out;
  if (planner_claim_keys(ex->link, ex->row.source_id, ex->desired, keys, &n) !=
      0)
    goto fail;
  for (size_t k = 0; k < n; k++) {
    char *olink = NULL, *oid = NULL;
    int rc =
        store_claim_first(ex->store, ex->link->target->tenant_id, keys[k],
                          ex->link->name, ex->row.source_id, &olink, &oid);
    if (rc < 0)
      goto fail;
    if (rc > 0 && json_array_append_new(
                      out, json_pack("{s:s, s:s?, s:s?}", "claim", keys[k],
                                     "link", olink, "source_id", oid)) != 0) {
      free(olink);
      free(oid);
      goto fail;
    }
    free(olink);
    free(oid);
  }
  for (size_t k = 0; k < n; k++)
    free(keys[k]);
  return out;
fail:
  for (size_t k = 0; k < n; k++)
    free(keys[k]);
  json_decref(out);
  return NULL;
}

/* The person's row as the plan left it, into ex->row. Returns 0, or -1
 * with ex->failed set. */
static int
reread_self(struct explain *ex)
{
  if (store_plan_row_one(ex->store, ex->link->name,
                         config_link_source_key(ex->link), ex->observed,
                         ex->row.source_id, on_self, ex) < 0) {
    ex->failed = 1;
    return -1;
  }
  return 0;
}

/* A create is emitted while its round is planned, before the round knows
 * whether max_creates holds its creates: what the plan left in the
 * (private) state says. */
static void
mark_held_create(struct explain *ex)
{
  json_t *next = json_object_get(ex->doc, "next");
  const char *action = json_string_value(json_object_get(next, "action"));

  if (action == NULL || strcmp(action, "create") != 0)
    return;
  if (reread_self(ex) != 0)
    return;
  if (ex->row.op_id != 0 && ex->row.op_kind == STORE_OP_CREATE &&
      ex->row.op_state == STORE_OP_HELD &&
      (json_object_set_new(next, "held", json_true()) != 0 ||
       json_object_set_new(next, "reason",
                           json_string("held: over max_creates, waiting for "
                                       "approve-creates")) != 0))
    ex->failed = 1;
}

void
explain_done(void *ctx, const struct config_link *link,
             const struct planner_stats *st, const struct recovery *rec)
{
  struct explain *ex = ctx;
  const char *kind;

  (void)link;
  (void)st;
  (void)rec;
  ex->finished = 1;
  if (ex->n_matches != 1 || ex->failed)
    return;
  if (set(ex, "conflicts", conflicts_part(ex)) != 0)
    return;
  if (json_object_get(ex->doc, "next") != NULL) {
    mark_held_create(ex);
    return;
  }
  /* No decision emitted: the op the plan left (queued already), or
   * nothing. */
  if (reread_self(ex) != 0)
    return;
  kind = store_op_kind_name(ex->row.op_kind);
  if (ex->row.op_id != 0 && ex->row.op_state == STORE_OP_PENDING)
    (void)set(ex, "next",
              json_pack("{s:s, s:b, s:n, s:n, s:s?, s:b}", "action", kind,
                        "held", 0, "reason", "changes", "target_id",
                        ex->row.target_id, "queued", 1));
  else if (ex->row.op_id != 0) {
    /* Held, or failed for good: it waits (its backoff, resync, or
     * approve-deletes). */
    char reason[1024];
    if (ex->row.op_state == STORE_OP_HELD &&
        ex->row.op_kind == STORE_OP_CREATE)
      snprintf(reason, sizeof(reason),
               "held: over max_creates, waiting for approve-creates");
    else if (ex->row.op_state == STORE_OP_HELD)
      snprintf(reason, sizeof(reason),
               "held: over max_deletes, waiting for approve-deletes");
    else
      snprintf(reason, sizeof(reason),
               "its %s failed for good and waits for its next try (or "
               "resync): %s",
               kind, ex->row.op_error ? ex->row.op_error : "");
    (void)set(ex, "next",
              json_pack("{s:s, s:b, s:s, s:n, s:s?, s:b}", "action",
                        ex->row.op_state == STORE_OP_HELD ? kind : "none",
                        "held", ex->row.op_state == STORE_OP_HELD, "reason",
                        reason, "changes", "target_id", ex->row.target_id,
                        "queued", 1));
  } else
    (void)set(ex, "next",
              json_pack("{s:s, s:b, s:s, s:n, s:s?, s:b}", "action", "none",
                        "held", 0, "reason",
                        ex->why != NULL ? ex->why : "up to date", "changes",
                        "target_id", ex->row.target_id, "queued", 0));
}

/* --- output --- */

static void
print_value(FILE *fp, const json_t *v)
{
  char *text;

  if (v == NULL || json_is_null(v)) {
    fputs("(none)", fp);
    return;
  }
  text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
  if (text == NULL)
    return;
  if (strlen(text) > TEXT_VALUE_MAX)
    fprintf(fp, "%.*s...", TEXT_VALUE_MAX, text);
  else
    fputs(text, fp);
  free(text);
}

static const char *
str(const json_t *o, const char *key)
{
  const char *s = json_string_value(json_object_get(o, key));

  return s != NULL ? s : "";
}

static const char *
yes_no(const json_t *o, const char *key)
{
  return json_is_true(json_object_get(o, key)) ? "yes" : "no";
}

/* The copy's photo, when the link copies photos. */
static void
print_photo(FILE *fp, const json_t *ph)
{
  if (ph == NULL)
    return;
  if (json_is_null(ph)) {
    fprintf(fp, "           photo: not checked yet\n");
    return;
  }
  fprintf(fp, "           photo: %s%s, checked %s, next check %s\n",
          json_is_string(json_object_get(ph, "etag_written"))
              ? "written, source etag "
              : "none written",
          json_is_string(json_object_get(ph, "etag_written"))
              ? str(ph, "etag_written")
              : "",
          str(ph, "checked_at"), str(ph, "next_check"));
  if (json_is_string(json_object_get(ph, "error")))
    fprintf(fp, "           photo not copied: %s\n", str(ph, "error"));
}

static void
print_exclude(const json_t *exclude, FILE *fp)
{
  if (!json_is_object(exclude))
    return;
  if (json_is_true(json_object_get(exclude, "excluded")))
    fprintf(fp, "  exclude_group          excluded: member of group %s\n",
            str(exclude, "group"));
  else
    fprintf(fp, "  exclude_group          not a member (groups %s)\n",
            str(exclude, "id"));
}

static void
print_text(const json_t *doc, FILE *fp)
{
  const json_t *src = json_object_get(doc, "source");
  const json_t *sc = json_object_get(doc, "scope");
  const json_t *dflt = json_object_get(sc, "default");
  const json_t *group = json_object_get(sc, "scope_group");
  const json_t *filter = json_object_get(sc, "scope_filter");
  const json_t *tg = json_object_get(doc, "target");
  const json_t *next = json_object_get(doc, "next");
  const json_t *v, *mig = json_object_get(doc, "migration");
  const json_t *mgr = json_object_get(doc, "manager");
  const char *key;
  size_t i;

  fprintf(fp, "link %s: %s\n", str(doc, "link"), str(doc, "who"));
  fprintf(fp, "source:    %s in %s, %s\n", str(src, "id"), str(src, "tenant"),
          str(src, "state"));
  /* A group has no userPrincipalName: no "upn" to show. */
  fprintf(fp, "           %s <%s>%s%s\n", str(src, "displayName"),
          str(src, "mail"),
          json_is_string(json_object_get(src, "userPrincipalName")) ? " upn "
                                                                    : "",
          str(src, "userPrincipalName"));
  if (json_is_string(json_object_get(src, "refused")))
    fprintf(fp, "           refused: %s\n", str(src, "refused"));
  fprintf(fp, "scope:     %s",
          json_is_true(json_object_get(sc, "in_scope")) ? "in scope\n"
                                                        : "not in scope");
  if (!json_is_true(json_object_get(sc, "in_scope")))
    fprintf(fp, "%s%s\n",
            json_is_string(json_object_get(sc, "why")) ? ": " : "",
            str(sc, "why"));
  fprintf(fp, "  present in source      %s\n", yes_no(sc, "present"));
  fprintf(fp, "  default scope          %s%s%s\n", yes_no(dflt, "result"),
          json_is_string(json_object_get(dflt, "why")) ? ": " : "",
          str(dflt, "why"));
  if (json_is_object(group))
    fprintf(fp, "  scope_group            %s (group %s)\n",
            json_is_true(json_object_get(group, "member")) ? "member"
                                                           : "not a member",
            str(group, "id"));
  else
    fprintf(fp, "  scope_group            (none set)\n");
  print_exclude(json_object_get(sc, "exclude_group"), fp);
  if (json_is_object(filter)) {
    fprintf(fp, "  scope_filter           %s: %s\n",
            json_is_true(json_object_get(filter, "result")) ? "matches"
                                                            : "no match",
            str(filter, "filter"));
    json_array_foreach(json_object_get(filter, "clauses"), i, v)
    {
      fprintf(fp, "    %-5s %s\n", yes_no(v, "result"), str(v, "clause"));
    }
  } else {
    fprintf(fp, "  scope_filter           (none set)\n");
  }
  fprintf(fp, "mapped values:\n");
  json_object_foreach((json_t *)json_object_get(doc, "mapped"), key, v)
  {
    fprintf(fp, "  %s: ", key);
    print_value(fp, v);
    fputc('\n', fp);
  }
  if (json_is_object(tg)) {
    const json_t *vis = json_object_get(tg, "exchange_visible");
    fprintf(fp, "target:    %s %s, state %s, in the target: %s\n",
            str(tg, "kind"),
            json_is_string(json_object_get(tg, "id")) ? str(tg, "id")
                                                      : "(no id yet)",
            json_is_string(json_object_get(tg, "state")) ? str(tg, "state")
                                                         : "none",
            str(tg, "in_target"));
    fprintf(fp, "           address list: %s; Exchange: %s\n",
            json_is_string(json_object_get(tg, "state")) &&
                    strcmp(str(tg, "state"), "active") == 0
                ? "shown (as galbridge applied it)"
                : "not shown by galbridge",
            json_is_null(vis)   ? "unknown"
            : json_is_true(vis) ? "seen visible"
                                : "not seen visible yet");
    print_photo(fp, json_object_get(tg, "photo"));
  } else {
    fprintf(fp, "target:    none (no copy in %s)\n",
            str(doc, "target_tenant"));
  }
  if (json_array_size(json_object_get(doc, "outbox")) == 0)
    fprintf(fp, "outbox:    nothing queued\n");
  json_array_foreach(json_object_get(doc, "outbox"), i, v)
  {
    fprintf(fp, "outbox:    #%lld %s %s, %lld attempts",
            (long long)json_integer_value(json_object_get(v, "id")),
            str(v, "kind"), str(v, "state"),
            (long long)json_integer_value(json_object_get(v, "attempts")));
    if (json_is_string(json_object_get(v, "last_error")))
      fprintf(fp, ", last error: %s", str(v, "last_error"));
    if (json_is_string(json_object_get(v, "next_try")))
      fprintf(fp, ", next try %s", str(v, "next_try"));
    fputc('\n', fp);
  }
  if (json_array_size(json_object_get(doc, "conflicts")) == 0)
    fprintf(fp, "conflicts: none\n");
  json_array_foreach(json_object_get(doc, "conflicts"), i, v)
  {
    fprintf(fp, "conflict:  %s also claimed by link %s, source object %s\n",
            str(v, "claim"), str(v, "link"), str(v, "source_id"));
  }
  if (json_is_object(mgr) && json_is_string(json_object_get(mgr, "target_id")))
    fprintf(fp, "manager:   %s, the copy of %s\n", str(mgr, "target_id"),
            str(mgr, "source_id"));
  else if (json_is_object(mgr))
    fprintf(fp, "manager:   none (%s%s%s)\n", str(mgr, "why"),
            json_is_string(json_object_get(mgr, "source_id")) ? ": " : "",
            str(mgr, "source_id"));
  if (json_is_object(mig)) {
    fprintf(fp, "migration: %s; mailbox ",
            json_is_true(json_object_get(mig, "moved")) ? "moved"
                                                        : "not moved");
    print_value(fp, json_object_get(mig, "mailbox"));
    fputc('\n', fp);
  }
  fprintf(fp, "next round: %s%s%s%s%s\n", str(next, "action"),
          json_is_true(json_object_get(next, "queued")) ? " (queued already)"
                                                        : "",
          json_is_true(json_object_get(next, "held")) ? " [held]" : "",
          json_is_string(json_object_get(next, "reason")) ? ": " : "",
          str(next, "reason"));
  json_object_foreach((json_t *)json_object_get(next, "changes"), key, v)
  {
    fprintf(fp, "  %s -> ", key);
    print_value(fp, v);
    fputc('\n', fp);
  }
}

int
explain_print(struct explain *ex, int as_json, FILE *fp, FILE *err)
{
  const json_t *m;
  size_t i;

  if (ex->failed)
    return -1;
  if (!ex->planned || !ex->finished) {
    fprintf(err,
            "galbridge: link %s was not planned (see the errors "
            "above): nothing to explain\n",
            ex->link->name);
    return 1;
  }
  if (ex->n_matches == 0) {
    fprintf(err,
            "galbridge: nobody in link %s matches '%s' (an object id, mail "
            "or user principal name in %s, or a copy's id or address in "
            "%s)\n",
            ex->link->name, ex->who, ex->link->source->name,
            ex->link->target->name);
    return 1;
  }
  if (ex->n_matches > 1) {
    fprintf(err, "galbridge: %zu people in link %s match '%s':\n",
            ex->n_matches, ex->link->name, ex->who);
    json_array_foreach(ex->matches, i, m)
    {
      fprintf(err, "  %s %s <%s>%s%s\n", str(m, "source_id"),
              str(m, "displayName"), str(m, "mail"),
              json_is_string(json_object_get(m, "target_id")) ? " target "
                                                              : "",
              str(m, "target_id"));
    }
    if (ex->n_matches > MATCHES_MAX)
      fprintf(err, "  and %zu more\n", ex->n_matches - MATCHES_MAX);
    fprintf(err, "galbridge: name one of them by its object id\n");
    return 1;
  }
  if (set(ex, "target_tenant", json_string(ex->link->target->name)) != 0)
    return -1;
  if (as_json) {
    if (json_dumpf(ex->doc, fp, JSON_INDENT(2) | JSON_SORT_KEYS) != 0)
      return -1;
    fputc('\n', fp);
    return 0;
  }
  print_text(ex->doc, fp);
  return 0;
}
