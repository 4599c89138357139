/*
 * planner — see include/planner.h.
 *
 * A round reads the link's rows through store_plan_rows(), decides each
 * one in memory, and only then writes the ops in one transaction: SQLite
 * must not see writes to a table a running SELECT is reading.
 */
#include "planner.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static const char *const kind_names[] = {
    [PLANNER_NONE] = "none",       [PLANNER_CREATE] = "create",
    [PLANNER_UPDATE] = "update",   [PLANNER_DELETE] = "delete",
    [PLANNER_DISABLE] = "disable", [PLANNER_HIDE] = "hide",
    [PLANNER_RESTORE] = "restore",
};

const char *
planner_kind_name(enum planner_kind kind)
{
  if (kind > PLANNER_RESTORE)
    return "unknown";
  return kind_names[kind];
}

int
planner_kind_parse(const char *name, enum planner_kind *kind)
{
  for (int k = PLANNER_NONE; k <= PLANNER_RESTORE; k++) {
    if (name != NULL && strcmp(name, kind_names[k]) == 0) {
      *kind = (enum planner_kind)k;
      return 0;
    }
  }
  return -1;
}

void
planner_hash(const json_t *value, char out[17])
{
  char *text =
      json_dumps(value, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
  uint64_t h = 0xcbf29ce484222325ULL;

  for (const unsigned char *p = (const unsigned char *)(text ? text : "");
       *p != '\0'; p++) {
    h ^= *p;
    h *= 0x100000001b3ULL;
  }
  free(text);
  snprintf(out, 17, "%016" PRIx64, h);
}

char *
planner_anchor(const char *source_tenant_id, const char *source_id)
{
  size_t n = strlen(source_tenant_id) + strlen(source_id) + 12;
  char *anchor = malloc(n);

  if (anchor == NULL)
    return NULL;
  snprintf(anchor, n, "galbridge:%s:%s", source_tenant_id, source_id);
  for (char *c = anchor; *c != '\0'; c++) {
    if (*c >= 'A' && *c <= 'Z')
      *c = (char)(*c - 'A' + 'a');
  }
  return anchor;
}

void
planner_decision_clear(struct planner_decision *d)
{
  json_decref(d->desired);
  json_decref(d->payload);
  memset(d, 0, sizeof(*d));
}

static int
in_scope(const struct planner_link *pl, const struct store_plan_row *row,
         const json_t *attrs, const char **why)
{
  if (row->removed != STORE_PRESENT) {
    *why = row->removed == STORE_SOFT_DELETED ? "deleted in source (soft)"
                                              : "deleted in source";
    return 0;
  }
  if (!scope_default_match(attrs, why))
    return 0;
  if (pl->members != NULL &&
      json_object_get(pl->members, row->source_id) == NULL) {
    *why = "not a member of scope_group";
    return 0;
  }
  if (pl->filter != NULL && !scope_filter_match(pl->filter, attrs)) {
    *why = "scope_filter does not match";
    return 0;
  }
  return 1;
}

/* Attributes that the target never lets galbridge clear. */
static int
clearable(const char *attr)
{
  static const char *const never[] = {"displayName", "mail", "DisplayName",
                                      "ExternalEmailAddress", "Name"};
  for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++) {
    if (strcmp(attr, never[i]) == 0)
      return 0;
  }
  return 1;
}

const char *
planner_anchor_attr(const struct config_link *link)
{
  static const char *const custom[] = {
      "CustomAttribute1",  "CustomAttribute2",  "CustomAttribute3",
      "CustomAttribute4",  "CustomAttribute5",  "CustomAttribute6",
      "CustomAttribute7",  "CustomAttribute8",  "CustomAttribute9",
      "CustomAttribute10", "CustomAttribute11", "CustomAttribute12",
      "CustomAttribute13", "CustomAttribute14", "CustomAttribute15"};
  long n;

  if (link->object == CONFIG_OBJECT_GUEST)
    return link->anchor;
  /* config.c stores "extensionAttributeN" with N in 1..15. */
  n = strtol(link->anchor + strlen("extensionAttribute"), NULL, 10);
  if (n < 1 || n > 15)
    n = 15;
  return custom[n - 1];
}

const char *
planner_address_attr(const struct config_link *link)
{
  return link->object == CONFIG_OBJECT_GUEST ? "mail" : "ExternalEmailAddress";
}

/* Changed attributes between what was applied and what is desired. */
static json_t *
diff(const json_t *applied, const json_t *desired)
{
  json_t *out = json_object(), *v;
  const char *key;

  if (out == NULL)
    return NULL;
  json_object_foreach((json_t *)desired, key, v)
  {
    json_t *old = json_object_get(applied, key);
    if (old == NULL || !json_equal(old, v))
      json_object_set(out, key, v);
  }
  /* Exchange adds and removes extra addresses one by one: say which of
   * the old ones go (what stays is sent again; adding is idempotent). */
  {
    json_t *old = json_object_get(applied, "EmailAddresses");
    json_t *now = json_object_get(desired, "EmailAddresses");
    json_t *gone = json_array(), *a, *b;
    size_t i, j;
    json_array_foreach(old, i, a)
    {
      int kept = 0;
      json_array_foreach(now, j, b) kept |= json_equal(a, b);
      if (!kept)
        json_array_append(gone, a);
    }
    if (json_array_size(gone) > 0)
      json_object_set(out, "EmailAddresses@removed", gone);
    json_decref(gone);
  }
  json_object_foreach((json_t *)applied, key, v)
  {
    if (json_object_get(desired, key) == NULL && clearable(key))
      json_object_set_new(out, key, json_null());
  }
  return out;
}

int
planner_decide(const struct planner_link *pl, const char *source_tenant,
               const struct store_plan_row *row, struct planner_decision *out,
               char *err, size_t errlen)
{
  const struct config_link *link = pl->link;
  json_t *attrs = NULL, *applied = NULL, *desired = NULL;
  const char *why = NULL;
  char *anchor = NULL;
  int result = -1, gone = 0;

  memset(out, 0, sizeof(*out));
  attrs = json_loads(row->attrs ? row->attrs : "{}", 0, NULL);
  if (!json_is_object(attrs)) {
    snprintf(err, errlen, "stored attributes of %s are not JSON",
             row->source_id);
    goto out;
  }

  if (!in_scope(pl, row, attrs, &why)) {
    out->why = why;
    if (row->state == NULL || strcmp(row->state, "active") != 0 ||
        link->on_delete == CONFIG_ON_DELETE_KEEP) {
      out->kind = PLANNER_NONE;
    } else if (link->on_delete == CONFIG_ON_DELETE_DELETE) {
      out->kind = PLANNER_DELETE;
    } else if (link->on_delete == CONFIG_ON_DELETE_DISABLE) {
      out->kind = PLANNER_DISABLE;
      out->payload =
          json_pack("{s:b, s:b}", "accountEnabled", 0, "showInAddressList", 0);
    } else {
      out->kind = PLANNER_HIDE;
      out->payload = json_pack("{s:b}", "showInAddressList", 0);
    }
    if (out->kind != PLANNER_NONE)
      snprintf(out->hash, sizeof(out->hash), "%s",
               planner_kind_name(out->kind));
    result = 0;
    goto out;
  }

  if (row->state != NULL && strcmp(row->state, "active") == 0 &&
      row->target_removed != STORE_PRESENT) {
    /* Deleted by hand in the target (its own delta says so): make it
     * again, as if it had never been. */
    gone = 1;
  }
  desired = mapping_eval(pl->mapping, attrs, err, errlen);
  if (desired == NULL)
    goto out;
  anchor = planner_anchor(source_tenant, row->source_id);
  if (anchor == NULL || json_object_set_new(desired, planner_anchor_attr(link),
                                            json_string(anchor)) != 0) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  if (!json_is_string(json_object_get(desired, planner_address_attr(link)))) {
    out->kind = PLANNER_NONE;
    out->why = "the mapping gives no address";
    result = 0;
    goto out;
  }
  planner_hash(desired, out->hash);

  if (row->state == NULL || gone) {
    out->kind = PLANNER_CREATE;
    out->payload = json_incref(desired);
  } else if (strcmp(row->state, "deleted") == 0) {
    out->kind = PLANNER_RESTORE;
    out->payload = json_incref(desired);
  } else {
    int revive = strcmp(row->state, "active") != 0;
    if (!revive && row->hash != NULL && strcmp(row->hash, out->hash) == 0) {
      out->kind = PLANNER_NONE;
      result = 0;
      goto out;
    }
    applied = json_loads(row->applied ? row->applied : "{}", 0, NULL);
    out->kind = PLANNER_UPDATE;
    out->payload = diff(json_is_object(applied) ? applied : NULL, desired);
    if (out->payload == NULL) {
      snprintf(err, errlen, "out of memory");
      goto out;
    }
    if (strcmp(row->state, "disabled") == 0)
      json_object_set_new(out->payload, "accountEnabled", json_true());
    if (revive)
      json_object_set_new(out->payload, "showInAddressList", json_true());
    if (json_object_size(out->payload) == 0) {
      /* Same values under a hash from an older galbridge: no request,
       * but the row's hash is brought up to date by an empty update. */
      out->kind = PLANNER_UPDATE;
    }
  }
  out->desired = desired;
  desired = NULL;
  result = 0;

out:
  free(anchor);
  json_decref(attrs);
  json_decref(applied);
  json_decref(desired);
  if (result != 0)
    planner_decision_clear(out);
  return result;
}

/* --- a round --- */

struct planned {
  char *source_id;
  char *target_id;
  char *applied;
  struct planner_decision d;
  int keep_op;     /* the op already queued is the same: leave it */
  int drop_op;     /* an op is queued but nothing is to be done */
  long long op_id; /* existing op, for drop_op */
  int is_delete;
};

struct round {
  const struct planner_link *pl;
  const char *source_tenant;
  struct planned *items;
  size_t n, cap;
  struct planner_stats *stats;
  planner_emit_fn emit;
  void *ctx;
  int failed;
};

static int
is_delete_kind(enum planner_kind k)
{
  return k == PLANNER_DELETE || k == PLANNER_DISABLE || k == PLANNER_HIDE;
}

static int
on_row(void *ctx, const struct store_plan_row *row)
{
  struct round *r = ctx;
  struct planned p = {0};
  char err[512];
  enum planner_kind op_kind = PLANNER_NONE;

  if (planner_decide(r->pl, r->source_tenant, row, &p.d, err, sizeof(err)) !=
      0) {
    log_error("cannot plan object link=%s source_id=%s error=\"%s\"",
              r->pl->link->name, row->source_id, err);
    r->stats->errors++;
    return 0;
  }
  if (row->op_id != 0)
    (void)planner_kind_parse(row->op_kind, &op_kind);

  if (p.d.kind == PLANNER_NONE) {
    if (p.d.why != NULL)
      r->stats->out_of_scope++;
    else
      r->stats->unchanged++;
    if (row->op_id == 0 || strcmp(row->op_state, "failed") == 0) {
      planner_decision_clear(&p.d);
      return 0;
    }
    /* Queued work that is no longer wanted. */
    p.drop_op = 1;
    p.op_id = row->op_id;
  } else if (row->op_id != 0 && op_kind == p.d.kind && row->op_hash != NULL &&
             strcmp(row->op_hash, p.d.hash) == 0 &&
             strcmp(row->op_state, "held") != 0) {
    /* Queued already (held deletes are weighed again below: a higher
     * max_deletes lets them through). */
    p.keep_op = 1;
    if (strcmp(row->op_state, "failed") == 0)
      r->stats->failed_kept++;
    else
      r->stats->waiting++;
    planner_decision_clear(&p.d);
    return 0;
  }

  p.source_id = strdup(row->source_id);
  /* A create starts from nothing, even over a row whose object is gone:
   * the old id must not be patched. */
  p.target_id = (row->target_id && p.d.kind != PLANNER_CREATE)
                    ? strdup(row->target_id)
                    : NULL;
  p.applied = row->applied ? strdup(row->applied) : NULL;
  p.is_delete = is_delete_kind(p.d.kind);
  if (p.source_id == NULL ||
      (row->target_id && p.d.kind != PLANNER_CREATE && p.target_id == NULL) ||
      (row->applied && p.applied == NULL))
    goto oom;
  if (r->n == r->cap) {
    size_t ncap = r->cap ? r->cap * 2 : 64;
    struct planned *grown = realloc(r->items, ncap * sizeof(*grown));
    if (grown == NULL)
      goto oom;
    r->items = grown;
    r->cap = ncap;
  }
  r->items[r->n++] = p;
  return 0;

oom:
  free(p.source_id);
  free(p.target_id);
  free(p.applied);
  planner_decision_clear(&p.d);
  r->failed = 1;
  return -1;
}

static void
count(struct planner_stats *st, enum planner_kind k)
{
  switch (k) {
  case PLANNER_CREATE:
    st->creates++;
    break;
  case PLANNER_UPDATE:
    st->updates++;
    break;
  case PLANNER_RESTORE:
    st->restores++;
    break;
  case PLANNER_DELETE:
  case PLANNER_DISABLE:
  case PLANNER_HIDE:
    st->deletes++;
    break;
  default:
    break;
  }
}

static int
write_ops(struct store *store, struct round *r, int hold)
{
  const char *link = r->pl->link->name;
  time_t now = time(NULL);
  long long held;

  if (store_begin(store) != 0)
    return -1;
  for (size_t i = 0; i < r->n; i++) {
    struct planned *p = &r->items[i];
    char *payload = NULL, *desired = NULL;
    int rc;

    if (p->drop_op) {
      if (store_op_delete(store, p->op_id) != 0)
        goto fail;
      continue;
    }
    payload = p->d.payload
                  ? json_dumps(p->d.payload, JSON_COMPACT | JSON_SORT_KEYS)
                  : strdup("{}");
    desired = p->d.desired
                  ? json_dumps(p->d.desired, JSON_COMPACT | JSON_SORT_KEYS)
                  : strdup("{}");
    rc = (payload == NULL || desired == NULL)
             ? -1
             : store_op_put(store, link, p->source_id,
                            planner_kind_name(p->d.kind), payload, desired,
                            p->d.hash,
                            (p->is_delete && hold) ? "held" : "pending",
                            p->target_id, now);
    free(payload);
    free(desired);
    if (rc != 0)
      goto fail;
  }
  if (store_link_count_held(store, link, &held) != 0 ||
      store_commit(store) != 0)
    goto fail;
  r->stats->held = (unsigned long)held;
  return 0;
fail:
  store_rollback(store);
  return -1;
}

int
planner_plan(struct store *store, const struct planner_link *pl, int dry_run,
             planner_emit_fn emit, void *ctx, struct planner_stats *stats)
{
  struct round r = {.pl = pl,
                    .source_tenant = pl->link->source->tenant_id,
                    .stats = stats,
                    .emit = emit,
                    .ctx = ctx};
  unsigned long new_deletes = 0;
  int hold, result = -1;

  memset(stats, 0, sizeof(*stats));
  if (store_plan_rows(store, pl->link->name, r.source_tenant,
                      pl->link->target->tenant_id, on_row, &r) != 0 ||
      r.failed)
    goto out;

  /* This round's deletes, with those still held from earlier rounds:
   * over the limit they are all held; under it (the limit was raised, or
   * fewer are wanted now) they all go. Deletes released by
   * approve-deletes are pending ops and are not counted again. */
  for (size_t i = 0; i < r.n; i++) {
    if (r.items[i].is_delete)
      new_deletes++;
  }
  hold = new_deletes > (unsigned long)pl->link->max_deletes;
  if (hold)
    log_error("deletes held link=%s planned=%lu max_deletes=%ld: "
              "run 'galbridge approve-deletes %s' to let them through",
              pl->link->name, new_deletes, pl->link->max_deletes,
              pl->link->name);

  for (size_t i = 0; i < r.n; i++) {
    struct planned *p = &r.items[i];
    if (p->drop_op)
      continue;
    count(stats, p->d.kind);
    if (emit != NULL) {
      struct store_plan_row row = {.source_id = p->source_id,
                                   .target_id = p->target_id,
                                   .applied = p->applied};
      emit(ctx, &row, &p->d, p->is_delete && hold);
    }
  }
  if (!dry_run && write_ops(store, &r, hold) != 0)
    goto out;
  if (dry_run && hold)
    stats->held = new_deletes;
  result = 0;

out:
  for (size_t i = 0; i < r.n; i++) {
    free(r.items[i].source_id);
    free(r.items[i].target_id);
    free(r.items[i].applied);
    planner_decision_clear(&r.items[i].d);
  }
  free(r.items);
  return result;
}
