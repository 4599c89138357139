/*
 * planner — see include/planner.h.
 *
 * A round reads the link's rows through store_plan_rows(), decides each
 * one in memory, and only then writes the ops in one transaction: SQLite
 * must not see writes to a table a running SELECT is reading.
 *
 * Values the target would refuse (longer than Microsoft's documented
 * maximum, or a blank display name) are refused here, one attribute at a
 * time, so that one bad value never fails the whole object: the attribute
 * is not sent and keeps the value last applied (none on a new object).
 * The hash still covers the mapped value, so a change of it is planned
 * once and logged once (a warning naming link, source id, attribute,
 * length and limit); an unchanged object is quiet. This is the one side
 * effect of planner_decide().
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
  free(d->why_text);
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

/* Maximum lengths in UTF-16 code units, as Microsoft documents them for
 * the user resource (Graph) and the address-book parameters of the
 * Exchange cmdlets; the same numbers fakecloud enforces. Only attributes
 * the mapping can produce are listed. */
struct attr_limit {
  const char *name;
  size_t max;
};

static const struct attr_limit attr_limits[] = {
    /* Graph (guests) */
    {"displayName", 256},
    {"givenName", 64},
    {"surname", 64},
    {"jobTitle", 128},
    {"department", 64},
    {"companyName", 64},
    {"officeLocation", 128},
    {"mobilePhone", 64},
    {"streetAddress", 1024},
    {"city", 128},
    {"state", 128},
    {"country", 128},
    {"postalCode", 40},
    {"employeeId", 16},
    /* Exchange (mail contacts, mail users) */
    {"DisplayName", 256},
    {"FirstName", 64},
    {"LastName", 64},
    {"Alias", 64},
    {"Company", 64},
    {"Department", 64},
    {"Title", 128},
    {"Phone", 64},
    {"MobilePhone", 64},
    {"Office", 128},
    {"StreetAddress", 1024},
    {"City", 128},
    {"StateOrProvince", 128},
    {"PostalCode", 40},
    {"CountryOrRegion", 128},
};

#define CUSTOM_ATTR_MAX 1024 /* extensionAttributeN, CustomAttributeN */

static size_t
attr_limit(const char *name)
{
  for (size_t i = 0; i < sizeof(attr_limits) / sizeof(attr_limits[0]); i++) {
    if (strcmp(name, attr_limits[i].name) == 0)
      return attr_limits[i].max;
  }
  if (strncmp(name, "extensionAttribute", 18) == 0 ||
      strncmp(name, "CustomAttribute", 15) == 0)
    return CUSTOM_ATTR_MAX;
  return 0;
}

/* UTF-16 code units of a UTF-8 string: a 4-byte sequence is a surrogate
 * pair, continuation bytes count nothing. */
static size_t
utf16_units(const char *s)
{
  size_t n = 0;

  for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
    if ((*p & 0xc0) == 0x80)
      continue;
    n += *p >= 0xf0 ? 2 : 1;
  }
  return n;
}

static int
blank(const char *s)
{
  for (; *s != '\0'; s++) {
    if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
      return 0;
  }
  return 1;
}

/* Why the target would refuse `v` as `name` (a static text, *limit and
 * *len set for a length), or NULL when it is fine. */
static const char *
refusal(const char *name, const json_t *v, size_t *limit, size_t *len)
{
  const json_t *el;
  size_t i;

  *limit = attr_limit(name);
  *len = 0;
  if (json_is_string(v)) {
    if ((strcmp(name, "displayName") == 0 ||
         strcmp(name, "DisplayName") == 0) &&
        blank(json_string_value(v)))
      return "blank";
    *len = utf16_units(json_string_value(v));
    return *limit > 0 && *len > *limit ? "too long" : NULL;
  }
  if (json_is_array(v) && strcmp(name, "businessPhones") == 0) {
    json_array_foreach(v, i, el)
    {
      size_t n = json_is_string(el) ? utf16_units(json_string_value(el)) : 0;
      if (n > *len)
        *len = n;
    }
    *limit = 64;
    return *len > *limit ? "too long" : NULL;
  }
  return NULL;
}

/* Take out of `desired` every value the target would refuse, putting
 * back the value last applied if there is one. Returns a new array of
 * {"attribute", "reason", "length", "limit"} (maybe empty) or NULL on
 * allocation failure. */
static json_t *
refuse_values(json_t *desired, const json_t *applied)
{
  json_t *refused = json_array(), *v, *old;
  const char *key;
  void *tmp;
  size_t limit, len;
  const char *why;

  if (refused == NULL)
    return NULL;
  json_object_foreach_safe(desired, tmp, key, v)
  {
    why = refusal(key, v, &limit, &len);
    if (why == NULL)
      continue;
    if (json_array_append_new(
            refused, json_pack("{s:s, s:s, s:I, s:I}", "attribute", key,
                               "reason", why, "length", (json_int_t)len,
                               "limit", (json_int_t)limit)) != 0) {
      json_decref(refused);
      return NULL;
    }
    old = json_object_get(applied, key);
    if (old != NULL && !json_is_null(old))
      json_object_set(desired, key, old);
    else
      json_object_del(desired, key);
  }
  return refused;
}

static void
log_refused(const struct config_link *link, const char *source_id,
            const json_t *refused)
{
  const json_t *r;
  size_t i;

  json_array_foreach(refused, i, r)
  {
    const char *why = json_string_value(json_object_get(r, "reason"));

    if (strcmp(why, "blank") == 0)
      log_warning("attribute not synced link=%s source_id=%s attribute=%s "
                  "reason=\"blank display name, refused by the target\"",
                  link->name, source_id,
                  json_string_value(json_object_get(r, "attribute")));
    else
      log_warning("attribute not synced link=%s source_id=%s attribute=%s "
                  "length=%" JSON_INTEGER_FORMAT " limit=%" JSON_INTEGER_FORMAT
                  " reason=\"longer than the target allows\"",
                  link->name, source_id,
                  json_string_value(json_object_get(r, "attribute")),
                  json_integer_value(json_object_get(r, "length")),
                  json_integer_value(json_object_get(r, "limit")));
  }
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
  json_t *attrs = NULL, *applied = NULL, *desired = NULL, *refused = NULL;
  const char *why = NULL;
  char *anchor = NULL;
  int result = -1, gone = 0;

  memset(out, 0, sizeof(*out));
  if (row->bad != NULL) {
    static const char prefix[] = "source value refused: ";
    size_t n = sizeof(prefix) + strlen(row->bad);
    out->why_text = malloc(n);
    if (out->why_text == NULL) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    snprintf(out->why_text, n, "%s%s", prefix, row->bad);
    out->kind = PLANNER_NONE;
    out->why = out->why_text;
    return 0;
  }
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
  /* The hash covers the mapped values, refused ones included: a change
   * to one is noticed (and logged) once, then the object is quiet. */
  planner_hash(desired, out->hash);
  applied = json_loads(row->applied ? row->applied : "{}", 0, NULL);
  refused = refuse_values(
      desired,
      row->state == NULL || gone || !json_is_object(applied) ? NULL : applied);
  if (refused == NULL) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }

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
  log_refused(link, row->source_id, refused);

out:
  json_decref(refused);
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
  struct planned *items; /* this chunk's decisions, deletes aside */
  size_t n, cap;
  struct planned *dels; /* every delete of the round */
  size_t n_dels, cap_dels;
  char *last_id;      /* the chunk's last source id */
  size_t rows;        /* rows of the chunk */
  long long held_met; /* rows whose op was a held delete */
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
push(struct planned **items, size_t *n, size_t *cap, const struct planned *p)
{
  if (*n == *cap) {
    size_t ncap = *cap ? *cap * 2 : 64;
    struct planned *grown = realloc(*items, ncap * sizeof(*grown));
    if (grown == NULL)
      return -1;
    *items = grown;
    *cap = ncap;
  }
  (*items)[(*n)++] = *p;
  return 0;
}

static void
planned_free(struct planned *items, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    free(items[i].source_id);
    free(items[i].target_id);
    free(items[i].applied);
    planner_decision_clear(&items[i].d);
  }
}

static int
on_row(void *ctx, const struct store_plan_row *row)
{
  struct round *r = ctx;
  struct planned p = {0};
  char err[512];
  enum planner_kind op_kind = PLANNER_NONE;
  char *last = strdup(row->source_id);

  if (last == NULL) {
    r->failed = 1;
    return -1;
  }
  free(r->last_id);
  r->last_id = last;
  r->rows++;
  if (row->op_id != 0 && row->op_state != NULL &&
      strcmp(row->op_state, "held") == 0)
    r->held_met++;

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
  if (push(p.is_delete ? &r->dels : &r->items,
           p.is_delete ? &r->n_dels : &r->n,
           p.is_delete ? &r->cap_dels : &r->cap, &p) != 0)
    goto oom;
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

/* Write decisions (inside the caller's transaction). */
static int
write_ops(struct store *store, const char *link, struct planned *items,
          size_t n, int hold)
{
  time_t now = time(NULL);

  for (size_t i = 0; i < n; i++) {
    struct planned *p = &items[i];
    char *payload = NULL, *desired = NULL;
    int rc;

    if (p->drop_op) {
      if (store_op_delete(store, p->op_id) != 0)
        return -1;
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
      return -1;
  }
  return 0;
}

static void
emit_all(struct round *r, struct planned *items, size_t n, int hold)
{
  for (size_t i = 0; i < n; i++) {
    struct planned *p = &items[i];
    if (p->drop_op)
      continue;
    count(r->stats, p->d.kind);
    if (r->emit != NULL) {
      struct store_plan_row row = {.source_id = p->source_id,
                                   .target_id = p->target_id,
                                   .applied = p->applied};
      r->emit(r->ctx, &row, &p->d, p->is_delete && hold);
    }
  }
}

int
planner_plan_key(const struct planner_link *pl, char out[17])
{
  const struct config_link *l = pl->link;
  json_t *key = json_object(), *map = json_object();
  char members[17] = "";
  int rc = -1;

  if (key == NULL || map == NULL)
    goto out;
  if (l->mapping != NULL) {
    for (size_t i = 0; i < l->mapping->n_entries; i++) {
      if (json_object_set_new(map, l->mapping->entries[i].target,
                              json_string(l->mapping->entries[i].expr)) != 0)
        goto out;
    }
  }
  if (pl->members != NULL)
    planner_hash(pl->members, members);
  /* Everything a decision depends on besides the objects themselves;
   * "v" changes when the planner's own rules do. */
  if (json_object_set_new(key, "v", json_integer(1)) != 0 ||
      json_object_set_new(key, "source", json_string(l->source->tenant_id)) ||
      json_object_set_new(key, "target", json_string(l->target->tenant_id)) ||
      json_object_set_new(key, "object", json_integer(l->object)) ||
      json_object_set_new(key, "member", json_integer(l->user_type_member)) ||
      json_object_set_new(key, "group",
                          l->scope_group ? json_string(l->scope_group)
                                         : json_null()) ||
      json_object_set_new(key, "filter",
                          l->scope_filter ? json_string(l->scope_filter)
                                          : json_null()) ||
      json_object_set_new(key, "members", json_string(members)) ||
      json_object_set_new(key, "anchor", json_string(l->anchor)) ||
      json_object_set_new(key, "on_delete", json_integer(l->on_delete)) ||
      json_object_set(key, "mapping", map) != 0)
    goto out;
  planner_hash(key, out);
  rc = 0;
out:
  json_decref(key);
  json_decref(map);
  return rc;
}

/* Rows read and decided per chunk: memory stays bounded whatever the
 * tenant's size. */
#define CHUNK 500

int
planner_plan(struct store *store, const struct planner_link *pl, int dry_run,
             planner_emit_fn emit, void *ctx, struct planner_stats *stats)
{
  struct round r = {.pl = pl,
                    .source_tenant = pl->link->source->tenant_id,
                    .stats = stats,
                    .emit = emit,
                    .ctx = ctx};
  const char *link = pl->link->name;
  char key[17], *old_key = NULL;
  long long since = -1, planned = 0, now_seq = 0, held = 0;
  unsigned long new_deletes;
  int hold, in_tx = 0, result = -1;

  memset(stats, 0, sizeof(*stats));
  if (planner_plan_key(pl, key) != 0 || store_seq_now(store, &now_seq) != 0)
    goto out;
  /* A dry run (galbridge plan) weighs every object; a round only those
   * changed since the last one, unless what decides them changed. */
  if (!dry_run) {
    if (store_plan_mark_get(store, link, &old_key, &planned) != 0)
      goto out;
    if (old_key != NULL && strcmp(old_key, key) == 0)
      since = planned;
    else
      log_info("plan link=%s weighs every object (%s)", link,
               old_key == NULL ? "first round, or resync"
                               : "configuration changed");
  }

  do {
    r.rows = 0;
    if (store_plan_rows(store, link, r.source_tenant,
                        pl->link->target->tenant_id, since,
                        r.last_id ? r.last_id : "", CHUNK, on_row, &r) != 0 ||
        r.failed)
      goto out;
    emit_all(&r, r.items, r.n, 0);
    if (!dry_run && r.n > 0) {
      if (store_begin(store) != 0)
        goto out;
      if (write_ops(store, link, r.items, r.n, 0) != 0 ||
          store_commit(store) != 0) {
        store_rollback(store);
        goto out;
      }
    }
    planned_free(r.items, r.n);
    r.n = 0;
  } while (r.rows == CHUNK);

  /* This round's deletes, with those still held from earlier rounds that
   * it did not weigh again: over the limit they are all held; under it
   * (the limit was raised, or fewer are wanted now) they all go. Deletes
   * released by approve-deletes are pending ops and are not counted
   * again. */
  new_deletes = 0;
  for (size_t i = 0; i < r.n_dels; i++)
    new_deletes += !r.dels[i].drop_op;
  if (!dry_run) {
    if (store_begin(store) != 0)
      goto out;
    in_tx = 1;
    if (store_link_count_held(store, link, &held) != 0)
      goto out;
  }
  held = held > r.held_met ? held - r.held_met : 0;
  hold =
      new_deletes + (unsigned long)held > (unsigned long)pl->link->max_deletes;
  if (hold)
    log_error("deletes held link=%s planned=%lu max_deletes=%ld: "
              "run 'galbridge approve-deletes %s' to let them through",
              link, new_deletes + (unsigned long)held, pl->link->max_deletes,
              link);
  emit_all(&r, r.dels, r.n_dels, hold);
  if (dry_run) {
    if (hold)
      stats->held = new_deletes;
    result = 0;
    goto out;
  }
  if (write_ops(store, link, r.dels, r.n_dels, hold) != 0 ||
      (!hold && held > 0 && store_link_approve(store, link, NULL) != 0) ||
      store_plan_mark_set(store, link, key, now_seq) != 0 ||
      store_link_count_held(store, link, &held) != 0 ||
      store_commit(store) != 0)
    goto out;
  in_tx = 0;
  stats->held = (unsigned long)held;
  result = 0;

out:
  if (in_tx)
    store_rollback(store);
  planned_free(r.items, r.n);
  planned_free(r.dels, r.n_dels);
  free(r.items);
  free(r.dels);
  free(r.last_id);
  free(old_key);
  return result;
}
