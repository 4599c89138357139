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

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "graph.h"
#include "log.h"

const char *
planner_kind_name(enum planner_kind kind)
{
  if (kind > PLANNER_FAIL)
    return "unknown";
  return store_op_kind_name((enum store_op_kind)kind);
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

void
planner_decision_clear(struct planner_decision *d)
{
  json_decref(d->desired);
  json_decref(d->payload);
  free(d->reason);
  free(d->target_id);
  memset(d, 0, sizeof(*d));
}

/* The former source object of `source_id` when it is a copy handed off
 * that this link takes over (planner_link.moved), else NULL. */
static const char *
moved_from(const struct planner_link *pl, const char *source_id)
{
  return pl->moved != NULL
             ? json_string_value(json_object_get(pl->moved, source_id))
             : NULL;
}

int
planner_default_scope(const struct planner_link *pl, const char *source_id,
                      const json_t *attrs, const char **why)
{
  /* A group contact's source is a group: the group rules alone. */
  if (pl->link->object == CONFIG_OBJECT_GROUPCONTACT)
    return scope_group_match(attrs, why);
  /* A copy handed off is the person's mailbox now: a person here. */
  if (moved_from(pl, source_id) != NULL)
    return scope_person_match(attrs, why);
  return scope_default_match(attrs, why);
}

int
planner_deletes_over(const struct config_link *link, unsigned long deletes,
                     long long copies)
{
  if (deletes > (unsigned long)link->max_deletes)
    return 1;
  /* Integers only: deletes / copies > share / 100. A round that would
   * delete more copies than the link has (copies counted before it) is
   * over any share. */
  return deletes > CONFIG_DELETE_SHARE_FLOOR && link->max_delete_share < 100 &&
         (copies <= 0 || (unsigned long long)deletes * 100 >
                             (unsigned long long)copies *
                                 (unsigned long long)link->max_delete_share);
}

int
planner_excluded(const struct planner_link *pl, const char *source_id,
                 const char **why)
{
  const char *reason =
      pl->excluded != NULL
          ? json_string_value(json_object_get(pl->excluded, source_id))
          : NULL;

  if (reason == NULL)
    return 0;
  *why = reason;
  return 1;
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
  if (!planner_default_scope(pl, row->source_id, attrs, why))
    return 0;
  if (planner_excluded(pl, row->source_id, why))
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
  static const char *const never[] = {
      "displayName",          "mail", "DisplayName",
      "ExternalEmailAddress", "Name", "MicrosoftOnlineServicesID"};
  for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++) {
    if (strcmp(attr, never[i]) == 0)
      return 0;
  }
  return 1;
}

json_t *
planner_anchor_listing(const struct config_link *link)
{
  char filter[ANCHOR_PLAIN_MAX + 64];

  snprintf(filter, sizeof(filter), "%s -like '%s%s:*'",
           planner_anchor_attr(link), ANCHOR_PREFIX,
           config_link_source_key(link));
  return json_pack("{s:s, s:s}", "Filter", filter, "ResultSize", "Unlimited");
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

void
planner_observed_tenant(const struct config_link *link, char *buf, size_t len)
{
  snprintf(buf, len, "%s%s", link->target->tenant_id,
           config_link_contacts(link) ? "#contacts" : "");
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
  int rc;

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
      rc = json_object_set(desired, key, old);
    else
      rc = json_object_del(desired, key);
    if (rc != 0) { /* the refused value would be sent: fail instead */
      json_decref(refused);
      return NULL;
    }
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

/* Changed attributes between what was applied and what is desired; NULL
 * on allocation failure (never a partial answer: what is left out of it
 * would not be sent). */
static json_t *
diff(const json_t *applied, const json_t *desired)
{
  json_t *changes = json_object(), *gone = json_array(), *result = NULL;
  json_t *v, *a, *b;
  const char *key;
  size_t i, j;

  if (changes == NULL || gone == NULL)
    goto out;
  json_object_foreach((json_t *)desired, key, v)
  {
    json_t *old = json_object_get(applied, key);
    if ((old == NULL || !json_equal(old, v)) &&
        json_object_set(changes, key, v) != 0)
      goto out;
  }
  /* Exchange adds and removes extra addresses one by one: say which of
   * the old ones go (what stays is sent again; adding is idempotent). */
  json_array_foreach(json_object_get(applied, "EmailAddresses"), i, a)
  {
    int kept = 0;
    json_array_foreach(json_object_get(desired, "EmailAddresses"), j, b)
        kept |= json_equal(a, b);
    if (!kept && json_array_append(gone, a) != 0)
      goto out;
  }
  if (json_array_size(gone) > 0 &&
      json_object_set(changes, "EmailAddresses@removed", gone) != 0)
    goto out;
  json_object_foreach((json_t *)applied, key, v)
  {
    if (json_object_get(desired, key) == NULL && clearable(key) &&
        json_object_set_new(changes, key, json_null()) != 0)
      goto out;
  }
  result = changes;
  changes = NULL;
out:
  json_decref(gone);
  json_decref(changes);
  return result;
}

/* A copy galbridge keeps up: active, or taken up again after a state was
 * lost (its values unknown). */
static int
is_live(const char *state)
{
  return state != NULL &&
         (strcmp(state, "active") == 0 || strcmp(state, "recovered") == 0);
}

/* Whether the anchor on the copy must be written: the value last applied
 * is not the stamp, or the target's own read shows another one (edited or
 * cleared by hand). */
static int
anchor_needed(const struct planner_link *pl, const struct store_plan_row *row,
              const json_t *applied, const char *stamp)
{
  const char *was = json_string_value(
      json_object_get(applied, planner_anchor_attr(pl->link)));
  json_t *target;
  int differs;

  if (was == NULL || strcmp(was, stamp) != 0)
    return 1;
  if (row->target_attrs == NULL)
    return 0;
  target = json_loads(row->target_attrs, 0, NULL);
  if (!json_is_object(target)) {
    json_decref(target);
    return 0;
  }
  was = graph_user_extension(target, pl->link->anchor);
  differs = was == NULL || strcmp(was, stamp) != 0;
  json_decref(target);
  return differs;
}

/* A migration link's copy of a source mailbox: what migration_desired()
 * adds to `desired`. Returns 1 when done, 0 when the object fails (out is
 * a PLANNER_FAIL with the reason), -1 on an error of the planner's own
 * (err). */
static int
ready_to_move(const struct planner_link *pl, const struct store_plan_row *row,
              json_t *desired, struct planner_decision *out, char *err,
              size_t errlen)
{
  json_t *mailbox = json_loads(row->mailbox, 0, NULL), *h;
  char why[512];
  int rc;

  if (!json_is_object(mailbox)) {
    json_decref(mailbox);
    snprintf(err, errlen, "stored mailbox of %s is not JSON", row->source_id);
    return -1;
  }
  if (pl->migration == NULL)
    snprintf(why, sizeof(why), "the target's accepted domains are not known");
  rc = pl->migration != NULL ? migration_desired(mailbox, pl->migration,
                                                 desired, why, sizeof(why))
                             : -1;
  json_decref(mailbox);
  if (rc == 0)
    return 1;
  if (asprintf(&out->reason, "not ready to move: %s", why) < 0) {
    out->reason = NULL;
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  out->kind = PLANNER_FAIL;
  h = json_string(out->reason);
  planner_hash(h, out->hash);
  json_decref(h);
  return 0;
}

/* SelectUniqueValue()'s question for one object: its own copy (when it
 * has one) never counts as taking a value. */
struct own_copy {
  const struct planner_link *pl;
  const char *target_id; /* NULL: no copy yet */
};

static int
own_taken(void *arg, const char *attr, const char *value)
{
  const struct own_copy *oc = arg;
  return oc->pl->taken(oc->pl->taken_arg, oc->target_id, attr, value);
}

/* The mapping's values for the object, or NULL: an error of the
 * planner's own (err), or, every SelectUniqueValue() candidate being
 * taken, a FAIL decision in out (*failed set) with the reason. */
static json_t *
map_object(const struct planner_link *pl, const struct store_plan_row *row,
           const json_t *attrs, int gone, struct planner_decision *out,
           int *failed, char *err, size_t errlen)
{
  struct own_copy oc = {pl,
                        row->state != NULL && !gone ? row->target_id : NULL};
  int exhausted = 0;
  json_t *desired, *h;

  *failed = 0;
  desired = mapping_eval_taken(pl->mapping, attrs,
                               pl->taken != NULL ? own_taken : NULL, &oc,
                               &exhausted, err, errlen);
  if (desired != NULL || !exhausted)
    return desired;
  out->reason = strdup(err);
  if (out->reason == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  out->kind = PLANNER_FAIL;
  h = json_string(out->reason);
  planner_hash(h, out->hash);
  json_decref(h);
  *failed = 1;
  return NULL;
}

const char *
planner_manager_attr(const struct config_link *link)
{
  return link->object == CONFIG_OBJECT_GUEST ? "manager" : "Manager";
}

int
planner_manager(const struct planner_link *pl,
                const struct store_plan_row *row, const char **target,
                const char **why)
{
  struct store_plan_row mrow = {.removed = STORE_PRESENT};
  json_t *mattrs;
  int in;

  *target = NULL;
  *why = NULL;
  if (row->manager_id == NULL) {
    *why = "no manager, or one that is no user of the source";
    return 0;
  }
  if (strcmp(row->manager_id, row->source_id) == 0) {
    *why = "its own manager";
    return 0;
  }
  mattrs = json_loads(row->manager_attrs ? row->manager_attrs : "", 0, NULL);
  if (!json_is_object(mattrs)) {
    json_decref(mattrs);
    *why = "the manager's stored attributes are not JSON";
    return 0;
  }
  mrow.source_id = row->manager_id;
  mrow.attrs = row->manager_attrs;
  in = in_scope(pl, &mrow, mattrs, why);
  json_decref(mattrs);
  if (!in)
    return 0;
  if (row->manager_target == NULL) {
    *why = "the manager has no copy of this link (yet)";
    return 0;
  }
  *target = row->manager_target;
  return 1;
}

/* Whether the manager must be written although the hash did not change:
 * a guest link's target read shows another manager on the copy than the
 * one wanted (set or cleared by hand). Only guests: the target read is
 * Graph's, in Graph's ids; contacts are read from Exchange without it. */
static int
manager_needed(const struct planner_link *pl, const struct store_plan_row *row,
               const json_t *desired)
{
  const char *want, *has;
  json_t *target;
  int differs;

  if (!pl->link->manager || pl->link->object != CONFIG_OBJECT_GUEST ||
      row->target_attrs == NULL)
    return 0;
  target = json_loads(row->target_attrs, 0, NULL);
  if (!json_is_object(target)) {
    json_decref(target);
    return 0;
  }
  want = json_string_value(json_object_get(desired, "manager"));
  has = json_string_value(json_object_get(target, "manager"));
  differs = (want == NULL) != (has == NULL) ||
            (want != NULL && strcasecmp(want, has) != 0);
  json_decref(target);
  return differs;
}

int
planner_decide(const struct planner_link *pl, const char *source_tenant,
               const struct store_plan_row *row, struct planner_decision *out,
               char *err, size_t errlen)
{
  const struct config_link *link = pl->link;
  const char *anchor_attr = planner_anchor_attr(link);
  json_t *attrs = NULL, *applied = NULL, *desired = NULL, *refused = NULL;
  const char *why = NULL;
  char *plain = NULL, *stamp = NULL;
  int result = -1, gone = 0, failed = 0;

  memset(out, 0, sizeof(*out));
  if (row->bad != NULL) {
    /* Its stored attributes are an older state: the object fails as a
     * whole, its copy neither changed nor deleted on their strength. */
    static const char prefix[] = "source value refused: ";
    size_t n = sizeof(prefix) + strlen(row->bad);
    json_t *h;
    out->reason = malloc(n);
    if (out->reason == NULL) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    snprintf(out->reason, n, "%s%s", prefix, row->bad);
    out->kind = PLANNER_FAIL;
    h = json_string(out->reason);
    planner_hash(h, out->hash);
    json_decref(h);
    return 0;
  }
  if (row->state != NULL && strcmp(row->state, "moved") == 0) {
    /* Handed off (migration): the copy is the person's mailbox now. */
    out->kind = PLANNER_NONE;
    out->why = "its mailbox moved to the target; no longer managed";
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
    if (!is_live(row->state) || link->on_delete == CONFIG_ON_DELETE_KEEP) {
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
    if (out->kind != PLANNER_NONE && out->kind != PLANNER_DELETE &&
        out->payload == NULL) {
      snprintf(err, errlen, "out of memory");
      goto out;
    }
    if (out->kind != PLANNER_NONE)
      snprintf(out->hash, sizeof(out->hash), "%s",
               planner_kind_name(out->kind));
    result = 0;
    goto out;
  }

  if (is_live(row->state) && row->target_removed != STORE_PRESENT) {
    /* Deleted by hand in the target (its own delta says so): make it
     * again, as if it had never been. */
    gone = 1;
  }
  desired = map_object(pl, row, attrs, gone, out, &failed, err, errlen);
  if (desired == NULL) {
    result = failed ? 0 : -1;
    goto out;
  }
  /* The manager is a reference to another copy: sent by an update only
   * (a copy being made or restored gets it in the next round, once it
   * exists; the store asks for that decision). The mapping cannot set
   * it: only the link's own copy of the manager is ever written. */
  json_object_del(desired, planner_manager_attr(link));
  if (link->manager && is_live(row->state) && !gone) {
    const char *mgr, *mwhy;
    if (planner_manager(pl, row, &mgr, &mwhy) &&
        json_object_set_new(desired, planner_manager_attr(link),
                            json_string(mgr)) != 0) {
      snprintf(err, errlen, "out of memory");
      goto out;
    }
  }
  plain = anchor_plain(source_tenant, row->source_id);
  if (plain == NULL ||
      json_object_set_new(desired, anchor_attr, json_string(plain)) != 0) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  if (!json_is_string(json_object_get(desired, planner_address_attr(link)))) {
    out->kind = PLANNER_NONE;
    out->why = "the mapping gives no address";
    result = 0;
    goto out;
  }
  if (link->migration && row->mailbox != NULL) {
    /* Ready to move: the source mailbox's identity on the copy. */
    int ready = ready_to_move(pl, row, desired, out, err, errlen);
    if (ready <= 0) {
      result = ready;
      goto out;
    }
  }
  /* The hash covers the mapped values, refused ones included (a change
   * to one is noticed and logged once, then the object is quiet), and
   * the plain anchor: the stamp written depends on the target object. */
  planner_hash(desired, out->hash);
  stamp = anchor_stamp(pl->key, link->target->tenant_id,
                       config_object_name(link->object), plain,
                       row->state != NULL && !gone ? row->target_id : NULL);
  if (stamp == NULL ||
      json_object_set_new(desired, anchor_attr, json_string(stamp)) != 0) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }
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
    int enable = strcmp(row->state, "disabled") == 0 ||
                 (strcmp(row->state, "recovered") == 0 &&
                  link->object == CONFIG_OBJECT_GUEST);
    int need_anchor = anchor_needed(pl, row, applied, stamp);
    int need_manager = manager_needed(pl, row, desired);
    json_t *mgr = json_object_get(desired, planner_manager_attr(link));
    if (!revive && !need_anchor && !need_manager && row->hash != NULL &&
        strcmp(row->hash, out->hash) == 0) {
      /* Left as it is; what it stands for still counts (claims). */
      out->kind = PLANNER_NONE;
      out->desired = desired;
      desired = NULL;
      result = 0;
      goto out;
    }
    out->kind = PLANNER_UPDATE;
    out->payload = diff(json_is_object(applied) ? applied : NULL, desired);
    if (out->payload == NULL ||
        (need_anchor && json_object_set_new(out->payload, anchor_attr,
                                            json_string(stamp)) != 0) ||
        (enable && json_object_set_new(out->payload, "accountEnabled",
                                       json_true()) != 0) ||
        (revive && json_object_set_new(out->payload, "showInAddressList",
                                       json_true()) != 0) ||
        (need_manager &&
         json_object_set_new(out->payload, planner_manager_attr(link),
                             mgr ? json_incref(mgr) : json_null()) != 0)) {
      snprintf(err, errlen, "out of memory");
      goto out;
    }
    if (json_object_size(out->payload) == 0) {
      /* Same values under a hash from an older galbridge: no request,
       * but the row's hash is brought up to date by an empty update. */
      out->kind = PLANNER_UPDATE;
    }
  }
  out->desired = desired;
  desired = NULL;
  result = 0;
  if (!pl->quiet)
    log_refused(link, row->source_id, refused);

out:
  json_decref(refused);
  free(plain);
  free(stamp);
  json_decref(attrs);
  json_decref(applied);
  json_decref(desired);
  if (result != 0)
    planner_decision_clear(out);
  return result;
}

/* --- a round --- */

#define MAX_KEYS 2  /* claims of one object: its address, its anchor */
#define MAX_FOUND 8 /* target objects weighed for one lookup */
#define FAIL_RETRY                                                            \
  3600 /* seconds before a refused object is weighed again                    \
        */

struct planned {
  char *source_id;
  char *target_id;
  char *applied;
  struct planner_decision d;
  int drop_op;     /* an op is queued but nothing is to be done */
  int no_op;       /* nothing to queue (only its claims to write) */
  int show;        /* no_op, yet emitted: a refusal kept (galbridge plan) */
  int logged;      /* its refusal was logged already (by the reader) */
  long long op_id; /* existing op, for drop_op */
  int is_delete;
  int claims; /* write `keys` as its claims (none: drop them) */
  char *keys[PLANNER_CLAIMS_MAX];
  size_t n_keys;
};

struct round {
  struct store *store;
  const struct planner_link *pl;
  const char *source_tenant;
  const char *target;    /* target tenant id */
  char observed[160];    /* where the store keeps the target's objects */
  const char *kind;      /* the link's object kind, as anchors name it */
  int pass;              /* 0: claims only; 1: the round; 2: weighed again */
  int all;               /* galbridge plan: refusals kept are shown too */
  struct planned *items; /* this chunk's decisions, deletes aside */
  size_t n, cap;
  struct planned *dels; /* every delete of the round */
  size_t n_dels, cap_dels;
  json_t *chunk_keys; /* claim key → index in items, this chunk's */
  json_t *counted;    /* source id → kind counted in this plan */
  size_t replanned;   /* objects of this link a claim change woke */
  char *last_id;      /* the chunk's last source id */
  size_t rows;        /* rows of the chunk */
  long long held_met; /* rows whose op was a held delete */
  int hold_creates;   /* creates are written held (max_creates guard) */
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
planned_clear(struct planned *p)
{
  free(p->source_id);
  free(p->target_id);
  free(p->applied);
  for (size_t k = 0; k < p->n_keys; k++)
    free(p->keys[k]);
  planner_decision_clear(&p->d);
  memset(p, 0, sizeof(*p));
}

static void
planned_free(struct planned *items, size_t n)
{
  for (size_t i = 0; i < n; i++)
    planned_clear(&items[i]);
}

static char *
lower_dup(const char *prefix, const char *s)
{
  size_t n = strlen(prefix) + strlen(s) + 1;
  char *out = malloc(n);

  if (out == NULL)
    return NULL;
  snprintf(out, n, "%s%s", prefix, s);
  for (char *c = out + strlen(prefix); *c != '\0'; c++) {
    if (*c >= 'A' && *c <= 'Z')
      *c = (char)(*c - 'A' + 'a');
  }
  return out;
}

/* The address the object is made with, without an "SMTP:" prefix. */
static const char *
target_address(const struct round *r, const json_t *desired)
{
  const char *a = json_string_value(
      json_object_get(desired, planner_address_attr(r->pl->link)));

  if (a != NULL && strncasecmp(a, "smtp:", 5) == 0)
    a += 5;
  return a;
}

/* Claims of an object in scope: "addr:<address>" (any recipient of the
 * tenant) and "obj:<kind>:<plain anchor>" (one copy of a kind per source
 * object and target). */
int
planner_claim_keys(const struct config_link *link, const char *source_id,
                   const json_t *desired, char *keys[PLANNER_CLAIMS_MAX],
                   size_t *n)
{
  const char *address =
      json_string_value(json_object_get(desired, planner_address_attr(link)));
  char *plain = anchor_plain(config_link_source_key(link), source_id);
  char prefix[64];

  *n = 0;
  if (plain == NULL)
    return -1;
  snprintf(prefix, sizeof(prefix),
           "obj:%s:", config_object_name(link->object));
  keys[*n] = lower_dup(prefix, plain);
  free(plain);
  if (keys[(*n)++] == NULL)
    return -1;
  if (address != NULL && strncasecmp(address, "smtp:", 5) == 0)
    address += 5;
  if (address != NULL) {
    keys[*n] = lower_dup("addr:", address);
    if (keys[(*n)++] == NULL)
      return -1;
  }
  return 0;
}

static int
claim_keys(struct round *r, struct planned *p, const char *source_id)
{
  p->claims = 1;
  return planner_claim_keys(r->pl->link, source_id, p->d.desired, p->keys,
                            &p->n_keys);
}

/* Turn a decision into a failure for `reason`; its hash follows the
 * reason and the values, so that the same failure is kept as it is. */
static int
make_fail(struct planner_decision *d, const char *reason)
{
  json_t *h = json_pack("[s, s]", reason, d->hash);

  if (h == NULL)
    return -1;
  free(d->reason);
  d->reason = strdup(reason);
  free(d->target_id);
  d->target_id = NULL;
  json_decref(d->payload);
  d->payload = NULL;
  d->kind = PLANNER_FAIL;
  d->why = NULL;
  planner_hash(h, d->hash);
  json_decref(h);
  return d->reason == NULL ? -1 : 0;
}

static int make_failf(struct planner_decision *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* make_fail() for a reason formatted as printf does, sized from what it
 * names (addresses and ids, each bounded where it was read): never cut.
 * -1 when memory is short. */
static int
make_failf(struct planner_decision *d, const char *fmt, ...)
{
  char *reason = NULL;
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vasprintf(&reason, fmt, ap);
  va_end(ap);
  if (n < 0)
    return -1;
  n = make_fail(d, reason);
  free(reason);
  return n;
}

/* The decision fails: its claim `key` is also (other_link, other_id)'s. */
static int
claim_fail(struct planner_decision *d, const char *key, const char *link,
           const char *other_link, const char *other_id)
{
  if (strncmp(key, "addr:", 5) == 0 && strcmp(link, other_link) == 0)
    return make_failf(d,
                      "conflict: address %s is also the address of source "
                      "object %s; neither is synced until one of them "
                      "changes",
                      key + 5, other_id);
  if (strncmp(key, "addr:", 5) == 0)
    return make_failf(d,
                      "conflict: address %s is also claimed by link %s "
                      "(source object %s); neither is synced until one of "
                      "them changes",
                      key + 5, other_link, other_id);
  return make_failf(d,
                    "conflict: this person is also in scope of link %s "
                    "(same source, target and kind); neither link writes "
                    "them",
                    other_link);
}

/* Whether another object claims one of p's keys: in the store (earlier
 * chunks and rounds, other links) or in this chunk (whose claims are
 * not written yet; that one fails too, now). */
static int
check_claims(struct round *r, struct planned *p, const char *source_id)
{
  const char *link = r->pl->link->name;

  for (size_t k = 0; k < p->n_keys; k++) {
    json_t *at = json_object_get(r->chunk_keys, p->keys[k]);
    char *olink = NULL, *oid = NULL;
    int rc;

    if (at != NULL) {
      struct planned *q = &r->items[json_integer_value(at)];
      if (q->d.kind != PLANNER_FAIL) {
        if (claim_fail(&q->d, p->keys[k], link, link, source_id) != 0)
          return -1;
        q->drop_op = q->no_op = 0;
      }
      return claim_fail(&p->d, p->keys[k], link, link, q->source_id);
    }
    rc = store_claim_first(r->store, r->target, p->keys[k], link, source_id,
                           &olink, &oid);
    if (rc < 0)
      return -1;
    if (rc > 0) {
      rc = claim_fail(&p->d, p->keys[k], link, olink, oid);
      free(olink);
      free(oid);
      return rc;
    }
  }
  return 0;
}

struct found {
  char *id[MAX_FOUND];
  char *value[MAX_FOUND];
  const char *tenant[MAX_FOUND]; /* where each was found */
  int other[MAX_FOUND];          /* found by an other mail only */
  size_t n;
};

static int
collect(void *ctx, const char *id, const char *value)
{
  struct found *f = ctx;

  if (f->n == MAX_FOUND)
    return 1;
  f->id[f->n] = strdup(id);
  f->value[f->n] = value != NULL ? strdup(value) : NULL;
  f->n++;
  return 0;
}

/* Look `key` up in `tenant`, adding what is found to f. */
static int
lookup(struct round *r, const char *tenant, const char *key, struct found *f)
{
  size_t from = f->n;

  if (store_object_lookup(r->store, tenant, key, collect, f) < 0)
    return -1;
  for (size_t i = from; i < f->n; i++) {
    f->tenant[i] = tenant;
    f->other[i] = strncmp(key, "other:", 6) == 0;
  }
  return 0;
}

static void
found_clear(struct found *f)
{
  for (size_t i = 0; i < f->n; i++) {
    free(f->id[i]);
    free(f->value[i]);
  }
  f->n = 0;
}

/* The decision takes over target object `id`: the values with the stamp
 * for it, all sent, and shown in the address lists. */
static int
take_object(struct round *r, struct planner_decision *d, const char *id,
            enum planner_kind kind)
{
  const char *attr = planner_anchor_attr(r->pl->link);
  char *plain =
      anchor_parse(json_string_value(json_object_get(d->desired, attr)), NULL);
  char *stamp =
      plain ? anchor_stamp(r->pl->key, r->target, r->kind, plain, id) : NULL;
  int rc = -1;

  if (stamp == NULL ||
      json_object_set_new(d->desired, attr, json_string(stamp)) != 0)
    goto out;
  json_decref(d->payload);
  d->payload = json_deep_copy(d->desired);
  free(d->target_id);
  d->target_id = strdup(id);
  if (d->payload == NULL || d->target_id == NULL ||
      json_object_set_new(d->payload, "showInAddressList", json_true()) != 0)
    goto out;
  if (r->pl->link->object == CONFIG_OBJECT_GUEST &&
      json_object_set_new(d->payload, "accountEnabled", json_true()) != 0)
    goto out;
  d->kind = kind;
  rc = 0;
out:
  free(plain);
  free(stamp);
  return rc;
}

/* Who owns target object `id` besides (link, source_id): *owner a new
 * string for the reason, or NULL when nobody else does. -1 when the
 * store cannot tell or memory is short. */
static int
owned_elsewhere(struct round *r, const char *id, const char *source_id,
                char **owner)
{
  char *link = NULL, *sid = NULL;
  int rc = 0;

  *owner = NULL;
  if (store_target_owner(r->store, id, r->pl->link->name, source_id, &link,
                         &sid) != 0)
    return -1;
  if (link != NULL && asprintf(owner, "the copy of source object %s (link %s)",
                               sid, link) < 0) {
    *owner = NULL;
    rc = -1;
  }
  free(link);
  free(sid);
  return rc;
}

/* Whether a holder of the address may be adopted by this link: one of
 * its own kind (guests: an invited user; mail users: a user, which the
 * executor checks on Exchange's side; never for mail contacts, which
 * Graph does not show). */
static int
adoptable(const struct config_link *link, const json_t *attrs)
{
  const char *ct = json_string_value(json_object_get(attrs, "creationType"));

  if (link->adopt != CONFIG_ADOPT_MAIL)
    return 0;
  if (link->object == CONFIG_OBJECT_GUEST)
    return ct != NULL && strcasecmp(ct, "Invitation") == 0;
  return link->object == CONFIG_OBJECT_MAILUSER &&
         (ct == NULL || strcasecmp(ct, "Invitation") != 0);
}

/* A create: what does the target hold already (as its own read shows)? */
static int
check_target(struct round *r, struct planned *p, const char *source_id)
{
  const struct config_link *link = r->pl->link;
  struct planner_decision *d = &p->d;
  const char *address = target_address(r, d->desired);
  char *plain = NULL, *key = NULL, *attrs_text = NULL, *owner = NULL;
  const char *unproven = NULL;
  struct found anchors = {0}, holders = {0};
  json_t *attrs = NULL;
  int removed, rc = -1;
  const char *former = moved_from(r->pl, source_id);

  if (former != NULL &&
      store_source_get(r->store, r->pl->link->target->tenant_id, former,
                       &attrs_text, &removed) != 0)
    goto out;
  if (former != NULL && attrs_text != NULL && removed == STORE_PRESENT) {
    /* The mail user its move left here stands for the person (once it
     * is gone, the person gets a copy of its own, as any other). */
    if (owned_elsewhere(r, former, source_id, &owner) != 0)
      goto out;
    rc = owner != NULL
             ? make_failf(d,
                          "conflict: the former object %s of this person "
                          "is held by %s; not written",
                          former, owner)
             : take_object(r, d, former, PLANNER_TAKEOVER);
    goto out;
  }
  plain = anchor_plain(r->source_tenant, source_id);
  key = plain ? lower_dup("anchor:", plain) : NULL;
  if (key == NULL || lookup(r, r->observed, key, &anchors) != 0)
    goto out;
  for (size_t i = 0; i < anchors.n; i++) {
    if (anchor_proven(r->pl->key, r->target, r->kind, anchors.value[i],
                      anchors.id[i])) {
      if (owned_elsewhere(r, anchors.id[i], source_id, &owner) != 0)
        goto out;
      if (owner == NULL) {
        /* Its own copy, which the state had lost track of. */
        rc = take_object(r, d, anchors.id[i], PLANNER_UPDATE);
        goto out;
      }
      free(owner);
      owner = NULL;
    }
    if (unproven == NULL)
      unproven = anchors.id[i];
  }
  free(key);
  key = address ? lower_dup("addr:", address) : NULL;
  /* Users of the target, and for mail contacts its anchored contacts;
   * then users with it among their other mails. */
  if (key == NULL || lookup(r, r->target, key, &holders) != 0 ||
      (strcmp(r->observed, r->target) != 0 &&
       lookup(r, r->observed, key, &holders) != 0))
    goto out;
  free(key);
  key = lower_dup("other:", address);
  if (key == NULL || lookup(r, r->target, key, &holders) != 0)
    goto out;
  for (size_t i = 0; i < holders.n; i++) {
    const char *id = holders.id[i], *name, *ct;
    char *other;

    if (owned_elsewhere(r, id, source_id, &owner) != 0)
      goto out;
    if (owner != NULL) {
      rc = make_failf(d, "conflict: address %s is held by %s; not written",
                      address, owner);
      goto out;
    }
    free(attrs_text);
    json_decref(attrs);
    attrs = NULL;
    if (store_source_get(r->store, holders.tenant[i], id, &attrs_text,
                         &removed) != 0)
      goto out;
    attrs = json_loads(attrs_text ? attrs_text : "{}", 0, NULL);
    ct = json_string_value(json_object_get(attrs, "creationType"));
    /* An other mail is no unique address: it stands in the way only on
     * an invited user (whom an invitation of it would answer with). */
    if (holders.other[i] && (ct == NULL || strcasecmp(ct, "Invitation") != 0))
      continue;
    other = anchor_parse(graph_user_extension(attrs, link->anchor), NULL);
    /* Never one with another person's anchor, proven or not: another
     * galbridge's copy, or a forgery, is left alone. */
    if (adoptable(link, attrs) &&
        (other == NULL || strcmp(other, plain) == 0)) {
      free(other);
      rc = take_object(r, d, id, PLANNER_ADOPT);
      goto out;
    }
    free(other);
    name = json_string_value(json_object_get(attrs, "displayName"));
    rc = make_failf(
        d,
        "conflict: address %s is held by '%s' (%s), %s of the target "
        "that galbridge did not make; not written%s",
        address, name ? name : "?", id,
        holders.tenant[i] != r->target            ? "a mail contact"
        : ct && strcasecmp(ct, "Invitation") == 0 ? "an invited user"
                                                  : "a user",
        link->adopt == CONFIG_ADOPT_NO && !config_link_contacts(link)
            ? " (adopt = mail on the link would take it over)"
            : "");
    goto out;
  }
  if (unproven != NULL) {
    rc = make_failf(d,
                    "conflict: target object %s carries this person's "
                    "anchor but nothing proves galbridge made it (edited by "
                    "hand, or made without this anchor_key_file); left alone",
                    unproven);
    goto out;
  }
  rc = 0;
out:
  found_clear(&anchors);
  found_clear(&holders);
  json_decref(attrs);
  free(attrs_text);
  free(owner);
  free(plain);
  free(key);
  return rc;
}

static int
on_row(void *ctx, const struct store_plan_row *row)
{
  struct round *r = ctx;
  struct planned p = {0};
  char err[512];
  enum planner_kind op_kind = PLANNER_NONE;
  char *last = strdup(row->source_id);
  int in_scope = 0;

  if (last == NULL) {
    r->failed = 1;
    return -1;
  }
  free(r->last_id);
  r->last_id = last;
  r->rows++;
  if (r->pass == 1 && row->op_id != 0 && row->op_state == STORE_OP_HELD &&
      is_delete_kind((enum planner_kind)row->op_kind))
    r->held_met++;

  if (planner_decide(r->pl, r->source_tenant, row, &p.d, err, sizeof(err)) !=
      0) {
    if (r->pass != 0) {
      log_error("cannot plan object link=%s source_id=%s error=\"%s\"",
                r->pl->link->name, row->source_id, err);
      r->stats->errors++;
    }
    return 0;
  }
  /* An op the planner never queues (conflict) matches no decision. */
  if (row->op_id != 0 && row->op_kind <= STORE_OP_FAIL)
    op_kind = (enum planner_kind)row->op_kind;

  /* What it stands for in the target, and what stands there already. */
  in_scope = p.d.desired != NULL &&
             (p.d.kind == PLANNER_CREATE || p.d.kind == PLANNER_UPDATE ||
              p.d.kind == PLANNER_RESTORE || p.d.kind == PLANNER_NONE);
  if (in_scope) {
    if (claim_keys(r, &p, row->source_id) != 0 ||
        check_claims(r, &p, row->source_id) != 0 ||
        (p.d.kind == PLANNER_CREATE &&
         check_target(r, &p, row->source_id) != 0))
      goto oom;
  } else if (p.d.why != NULL) {
    p.claims = 1; /* out of scope: it claims nothing any more */
  }

  if (r->pass == 0) {
    p.no_op = 1;
  } else if (p.d.kind == PLANNER_NONE) {
    if (p.d.why != NULL)
      r->stats->out_of_scope++;
    else
      r->stats->unchanged++;
    if (row->op_id != 0 && (row->op_state != STORE_OP_FAILED ||
                            op_kind == PLANNER_FAIL || p.d.why != NULL)) {
      /* Queued work, a refusal, or a failure that no longer stands (its
       * object left the scope: nothing is to be done for it now). */
      p.drop_op = 1;
      p.op_id = row->op_id;
    } else {
      p.no_op = 1;
    }
  } else if (row->op_id != 0 && op_kind == p.d.kind && row->op_hash != NULL &&
             strcmp(row->op_hash, p.d.hash) == 0 &&
             row->op_state != STORE_OP_HELD) {
    /* Queued already (held deletes are weighed again below: a higher
     * max_deletes lets them through). */
    p.no_op = 1;
    if (row->op_state == STORE_OP_FAILED)
      r->stats->failed_kept++;
    else
      r->stats->waiting++;
    p.show = r->all && p.d.kind == PLANNER_FAIL;
  }
  if (p.no_op && !p.claims && !p.show) {
    planned_clear(&p);
    return 0;
  }

  p.logged = row->bad != NULL;
  p.source_id = strdup(row->source_id);
  /* A create starts from nothing, even over a row whose object is gone:
   * the old id must not be patched. */
  if (p.d.target_id != NULL)
    p.target_id = strdup(p.d.target_id);
  else if (row->target_id != NULL && p.d.kind != PLANNER_CREATE)
    p.target_id = strdup(row->target_id);
  p.applied = row->applied ? strdup(row->applied) : NULL;
  p.is_delete = !p.no_op && is_delete_kind(p.d.kind);
  if (p.source_id == NULL ||
      ((p.d.target_id || (row->target_id && p.d.kind != PLANNER_CREATE)) &&
       p.target_id == NULL) ||
      (row->applied && p.applied == NULL))
    goto oom;
  if (push(p.is_delete ? &r->dels : &r->items,
           p.is_delete ? &r->n_dels : &r->n,
           p.is_delete ? &r->cap_dels : &r->cap, &p) != 0)
    goto oom;
  if (!p.is_delete) {
    for (size_t k = 0; k < p.n_keys; k++) {
      if (json_object_set_new(r->chunk_keys, p.keys[k],
                              json_integer((json_int_t)r->n - 1)) != 0)
        return r->failed = 1, -1;
    }
  }
  return 0;

oom:
  planned_clear(&p);
  r->failed = 1;
  return -1;
}

static unsigned long *
counter(struct planner_stats *st, enum planner_kind k)
{
  switch (k) {
  case PLANNER_CREATE:
    return &st->creates;
  case PLANNER_UPDATE:
    return &st->updates;
  case PLANNER_RESTORE:
    return &st->restores;
  case PLANNER_ADOPT:
  case PLANNER_TAKEOVER:
    return &st->adopts;
  case PLANNER_FAIL:
    return &st->fails;
  case PLANNER_DELETE:
  case PLANNER_DISABLE:
  case PLANNER_HIDE:
    return &st->deletes;
  default:
    return NULL;
  }
}

/* Write decisions and claims (inside the caller's transaction). */
static int
write_ops(struct round *r, struct planned *items, size_t n, int hold)
{
  const char *link = r->pl->link->name;
  time_t now = time(NULL);

  for (size_t i = 0; i < n; i++) {
    struct planned *p = &items[i];
    char *payload = NULL, *desired = NULL;
    size_t woke = 0;
    int fail = p->d.kind == PLANNER_FAIL, rc;

    if (p->claims &&
        store_claims_put(r->store, r->target, link, p->source_id,
                         (const char *const *)p->keys, p->n_keys, &woke) != 0)
      return -1;
    r->replanned += woke;
    if (p->no_op)
      continue;
    if (p->drop_op) {
      if (store_op_delete(r->store, p->op_id) != 0)
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
             : store_op_put(
                   r->store, link, p->source_id, (enum store_op_kind)p->d.kind,
                   payload, desired, p->d.hash,
                   fail ? STORE_OP_FAILED
                   : (p->is_delete && hold) ||
                           (p->d.kind == PLANNER_CREATE && r->hold_creates)
                       ? STORE_OP_HELD
                       : STORE_OP_PENDING,
                   p->target_id, fail ? p->d.reason : NULL,
                   fail ? now + FAIL_RETRY : 0, now);
    free(payload);
    free(desired);
    if (rc != 0)
      return -1;
  }
  return 0;
}

/* Count and show each of `items`. Returns 0, or -1 when memory is short
 * to note what was counted (the counts would be wrong). */
static int
emit_all(struct round *r, struct planned *items, size_t n, int hold)
{
  for (size_t i = 0; i < n; i++) {
    struct planned *p = &items[i];
    json_t *before;
    unsigned long *c;

    if (p->show && r->emit != NULL) {
      struct store_plan_row row = {.source_id = p->source_id,
                                   .target_id = p->target_id,
                                   .applied = p->applied};
      r->emit(r->ctx, &row, &p->d, 0);
    }
    if (p->drop_op || p->no_op)
      continue;
    if (p->d.kind == PLANNER_FAIL && !p->logged)
      log_warning("object not synced link=%s source_id=%s reason=\"%s\"",
                  r->pl->link->name, p->source_id, p->d.reason);
    else if (p->d.kind == PLANNER_ADOPT)
      log_notice("adopting a target object galbridge did not make link=%s "
                 "source_id=%s target_id=%s (adopt = mail)",
                 r->pl->link->name, p->source_id, p->target_id);
    else if (p->d.kind == PLANNER_TAKEOVER)
      log_notice("taking over the former object of a person whose mailbox "
                 "moved link=%s source_id=%s target_id=%s",
                 r->pl->link->name, p->source_id, p->target_id);
    /* Weighed again in this plan (a conflict found later): it counts
     * once, as it is now. */
    before = json_object_get(r->counted, p->source_id);
    if (before != NULL &&
        (c = counter(r->stats,
                     (enum planner_kind)json_integer_value(before))) != NULL &&
        *c > 0)
      (*c)--;
    if ((c = counter(r->stats, p->d.kind)) != NULL) {
      (*c)++;
      if (json_object_set_new(r->counted, p->source_id,
                              json_integer((json_int_t)p->d.kind)) != 0)
        return -1;
    }
    if (r->emit != NULL) {
      struct store_plan_row row = {.source_id = p->source_id,
                                   .target_id = p->target_id,
                                   .applied = p->applied};
      r->emit(r->ctx, &row, &p->d, p->is_delete && hold);
    }
  }
  return 0;
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
  /* v2: claims (every object weighed once after the upgrade files its
   * claims). */
  if (json_object_set_new(key, "v", json_integer(2)) != 0 ||
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
      json_object_set_new(key, "manager", json_integer(l->manager)) ||
      json_object_set(key, "mapping", map) != 0)
    goto out;
  /* Only for links with exclude groups: every other link keeps its key
   * (a key that changes weighs every object again). */
  if (pl->excluded != NULL || l->exclude_group != NULL) {
    char excluded[17] = "";
    if (pl->excluded != NULL)
      planner_hash(pl->excluded, excluded);
    if (json_object_set_new(key, "exclude",
                            l->exclude_group ? json_string(l->exclude_group)
                                             : json_null()) != 0 ||
        json_object_set_new(key, "excluded", json_string(excluded)) != 0)
      goto out;
  }
  /* Only for migration links: every other link keeps its key. */
  if (l->migration &&
      (json_object_set_new(key, "migration",
                           json_integer(l->migration_external)) != 0 ||
       json_object_set_new(key, "initial",
                           pl->migration != NULL
                               ? json_string(pl->migration->initial)
                               : json_null()) != 0 ||
       json_object_set_new(key, "accepted",
                           pl->migration != NULL
                               ? json_deep_copy(pl->migration->accepted)
                               : json_null()) != 0))
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

/* One pass over the rows `since` gives (every object when < 0), chunk
 * by chunk: decide, emit (passes 1 and 2), write. */
static int
run_pass(struct round *r, int pass, long long since)
{
  const char *link = r->pl->link->name;
  int result = -1;

  r->pass = pass;
  free(r->last_id);
  r->last_id = NULL;
  do {
    r->rows = 0;
    json_decref(r->chunk_keys);
    r->chunk_keys = json_object();
    if (r->chunk_keys == NULL)
      goto out;
    if (r->pl->only != NULL
            ? store_plan_row_one(r->store, link, r->source_tenant, r->observed,
                                 r->pl->only, on_row, r) != 0
            : store_plan_rows(r->store, link, r->source_tenant, r->observed,
                              since, r->last_id ? r->last_id : "", CHUNK,
                              on_row, r) != 0)
      goto out;
    if (r->failed)
      goto out;
    if (pass != 0 && emit_all(r, r->items, r->n, 0) != 0)
      goto out;
    if (r->n > 0) {
      if (store_begin(r->store) != 0)
        goto out;
      if (write_ops(r, r->items, r->n, 0) != 0 ||
          store_commit(r->store) != 0) {
        store_rollback(r->store);
        goto out;
      }
    }
    planned_free(r->items, r->n);
    r->n = 0;
  } while (r->pl->only == NULL && r->rows == CHUNK);
  result = 0;
out:
  return result;
}

/* Whether target object `id` found under a key is another's: not this
 * person's copy. */
static int
found_other(void *ctx, const char *id, const char *value)
{
  const char *own = ctx;

  (void)value;
  return own == NULL || strcmp(id, own) != 0; /* non-zero: stop, taken */
}

/* Whether target object `id` found under a key is this person's copy. */
static int
found_own(void *ctx, const char *id, const char *value)
{
  (void)value;
  return strcmp(id, (const char *)ctx) == 0; /* non-zero: stop, found */
}

/* SelectUniqueValue()'s answer in a round: `value` of `attr` is taken
 * when the target objects the store holds (the target's own read) have
 * it as an address ("addr:" keys: mail, userPrincipalName and SMTP proxy
 * addresses) on an object other than `own`; held by `own` alone, it is
 * the value the copy was given (MAPPING_TAKEN_OWN, kept). Alias and Name
 * are not kept by the store: never taken here, so the first candidate
 * goes and the target's own check refuses a duplicate (that object's
 * write fails). */
static int
round_taken(void *arg, const char *own, const char *attr, const char *value)
{
  struct round *r = arg;
  char *key;
  int rc = 0;

  if (strcmp(attr, "Alias") == 0 || strcmp(attr, "Name") == 0)
    return 0;
  if (asprintf(&key, "addr:%s", value) < 0)
    return -1;
  for (char *c = key; *c != '\0'; c++)
    *c = (char)tolower((unsigned char)*c);
  rc = store_object_lookup(r->store, r->target, key, found_other, (void *)own);
  if (rc == 0 && strcmp(r->observed, r->target) != 0)
    rc = store_object_lookup(r->store, r->observed, key, found_other,
                             (void *)own);
  if (rc == 0 && own != NULL) {
    rc = store_object_lookup(r->store, r->target, key, found_own, (void *)own);
    if (rc == 0 && strcmp(r->observed, r->target) != 0)
      rc = store_object_lookup(r->store, r->observed, key, found_own,
                               (void *)own);
    free(key);
    return rc < 0 ? -1 : rc != 0 ? MAPPING_TAKEN_OWN : 0;
  }
  free(key);
  return rc < 0 ? -1 : rc != 0;
}

/* Passes of objects woken by a change of claims, at most this many. */
#define AGAIN_MAX 3

int
planner_plan(struct store *store, const struct planner_link *pl, int all,
             planner_emit_fn emit, void *ctx, struct planner_stats *stats)
{
  struct planner_link with = *pl, quiet;
  struct round r = {.store = store,
                    .pl = &with,
                    .source_tenant = config_link_source_key(pl->link),
                    .target = pl->link->target->tenant_id,
                    .kind = config_object_name(pl->link->object),
                    .all = all,
                    .stats = stats,
                    .emit = emit,
                    .ctx = ctx};
  const char *link = pl->link->name;
  char key[17], *old_key = NULL;
  long long since = -1, planned = 0, now_seq = 0, held = 0;
  long long creates_held = 0;
  struct store_link_counts counts;
  unsigned long new_deletes;
  int hold, hold_creates = 0, in_tx = 0, result = -1;

  memset(stats, 0, sizeof(*stats));
  if (with.taken == NULL) { /* SelectUniqueValue() asks the target read */
    with.taken = round_taken;
    with.taken_arg = &r;
  }
  pl = &with;
  quiet = with;
  planner_observed_tenant(pl->link, r.observed, sizeof(r.observed));
  r.counted = json_object();
  if (r.counted == NULL || planner_plan_key(pl, key) != 0 ||
      store_seq_now(store, &now_seq) != 0 ||
      store_link_counts(store, link, &counts) != 0)
    goto out;
  /* The create burst guard: every create of the round is written held,
   * and all are released at the end when they are few enough. Not while
   * a link is filled: no copies yet (its first round is all creates, and
   * `galbridge plan` shows it beforehand), a round run while a full read
   * streams in, which a first fill of a large tenant is made of, or any
   * round until one has ended in success (the round after those partial
   * ones finishes the fill: 7,625 creates of 9,529 in one bench); nor for
   * one person's plan (no burst). */
  r.hold_creates = pl->only == NULL && !pl->filling && counts.objects > 0 &&
                   counts.last_success != 0;
  /* A round weighs the objects changed since the last one, unless what
   * decides them changed; galbridge plan weighs every one. */
  if (store_plan_mark_get(store, link, &old_key, &planned) != 0)
    goto out;
  if (!all && old_key != NULL && strcmp(old_key, key) == 0)
    since = planned;
  else if (!all)
    log_info("plan link=%s weighs every object (%s)", link,
             old_key == NULL ? "first round, or resync"
                             : "configuration changed");
  /* Refused objects whose time has come are weighed again (by a round
   * of the link: one person's plan touches nobody else). */
  if (pl->only == NULL && store_begin(store) != 0)
    goto out;
  if (pl->only == NULL && (store_fails_due(store, link, time(NULL)) != 0 ||
                           store_commit(store) != 0)) {
    store_rollback(store);
    goto out;
  }

  if (all) {
    /* Every claim first, without a word: each decision then sees every
     * conflict and is shown once. */
    quiet.quiet = 1;
    r.pl = &quiet;
    if (run_pass(&r, 0, -1) != 0)
      goto out;
    r.pl = pl;
    r.replanned = 0;
  }
  if (run_pass(&r, 1, since) != 0)
    goto out;
  /* Objects of this link a conflict found later involves (or ends) are
   * weighed again now: only those (the queue to plan again), since
   * nothing else changed while planning. */
  for (int again = 0; pl->only == NULL && r.replanned > 0 && again < AGAIN_MAX;
       again++) {
    r.replanned = 0;
    if (run_pass(&r, 2, now_seq) != 0)
      goto out;
  }

  /* This round's deletes, with those still held from earlier rounds that
   * it did not weigh again: over the limit they are all held; under it
   * (the limit was raised, or fewer are wanted now) they all go. Deletes
   * released by approve-deletes are pending ops and are not counted
   * again. */
  new_deletes = 0;
  for (size_t i = 0; i < r.n_dels; i++)
    new_deletes += !r.dels[i].drop_op;
  if (store_begin(store) != 0)
    goto out;
  in_tx = 1;
  if (store_link_count_held(store, link, &held) != 0)
    goto out;
  held = held > r.held_met ? held - r.held_met : 0;
  hold = planner_deletes_over(pl->link, new_deletes + (unsigned long)held,
                              counts.objects);
  if (hold)
    log_error("deletes held link=%s planned=%lu max_deletes=%ld "
              "copies=%lld max_delete_share=%ld%%: "
              "run 'galbridge approve-deletes %s' to let them through",
              link, new_deletes + (unsigned long)held, pl->link->max_deletes,
              counts.objects, pl->link->max_delete_share, link);
  /* This round's creates, with those still held from earlier rounds:
   * over max_creates they all stay held, else they all go. */
  if (r.hold_creates &&
      store_link_held_creates(store, link, &creates_held) != 0)
    goto out;
  hold_creates =
      r.hold_creates && creates_held > (long long)pl->link->max_creates;
  if (hold_creates)
    log_error("creates held link=%s planned=%lld max_creates=%ld: "
              "run 'galbridge approve-creates %s' to let them through",
              link, creates_held, pl->link->max_creates, link);
  /* One person's plan neither releases the others' held deletes nor
   * moves the plan mark: the link's next round weighs what it would
   * have weighed. */
  if (emit_all(&r, r.dels, r.n_dels, hold) != 0 ||
      write_ops(&r, r.dels, r.n_dels, hold) != 0 ||
      (pl->only == NULL && !hold && held > 0 &&
       store_link_approve(store, link, NULL) != 0) ||
      (r.hold_creates && !hold_creates && creates_held > 0 &&
       store_link_approve_creates(store, link, NULL) != 0) ||
      (pl->only == NULL &&
       store_plan_mark_set(store, link, key, now_seq) != 0) ||
      store_link_count_held(store, link, &held) != 0 ||
      store_commit(store) != 0)
    goto out;
  in_tx = 0;
  stats->held = (unsigned long)held;
  stats->creates_held = hold_creates ? (unsigned long)creates_held : 0;
  result = 0;

out:
  if (in_tx)
    store_rollback(store);
  planned_free(r.items, r.n);
  planned_free(r.dels, r.n_dels);
  free(r.items);
  free(r.dels);
  free(r.last_id);
  json_decref(r.chunk_keys);
  json_decref(r.counted);
  free(old_key);
  return result;
}

/* ---------------------------------------------------------------------
 * planner_check_config: each link's mapping and scope filter, compiled once
 * the config is whole, so that an expression galbridge cannot run is a config
 * error like any other (the scheduler compiles them again for its rounds).
 */

/* Whether the link's source read holds `name`: a group's properties for
 * a groupcontact link, a user's for the others. */
static int
source_property_known(const struct config_link *link, const char *name)
{
  return link->object == CONFIG_OBJECT_GROUPCONTACT
             ? graph_group_property_known(name)
             : graph_user_property_known(name);
}

/* Consumes `names` (a new JSON array); puts the first name galbridge does
 * not read into msg and returns -1. */
static int
unknown_source(const struct config_link *link, json_t *names, char *msg,
               size_t msglen)
{
  json_t *v;
  size_t i;
  int result = 0;

  json_array_foreach(names, i, v)
  {
    const char *name = json_string_value(v);
    if (name != NULL && !source_property_known(link, name)) {
      snprintf(msg, msglen, "%s", name);
      result = -1;
      break;
    }
  }
  json_decref(names);
  return result;
}

int
planner_link_compile(const struct config *cfg, const struct config_link *link,
                     struct mapping **mapping, struct scope_filter **filter,
                     char *err, size_t errlen)
{
  char msg[512];

  *mapping = NULL;
  *filter = NULL;
  if (mapping_compile(link->mapping, link->object, cfg->path, mapping, err,
                      errlen) != 0)
    return -1;
  for (size_t i = 0; i < mapping_count(*mapping); i++) {
    if (strcasecmp(mapping_target(*mapping, i), planner_anchor_attr(link)) ==
        0) {
      snprintf(err, errlen,
               "%s:%d: link '%s' maps %s, which it uses as its anchor",
               cfg->path, link->line, link->name, planner_anchor_attr(link));
      goto out;
    }
  }
  for (size_t i = 0; i < mapping_count(*mapping) && !link->migration; i++) {
    /* Targets only a migration link sets, and why. */
    static const char *const only[][2] = {
        {"PrimarySmtpAddress", "Exchange Online takes a mail user's or "
                               "contact's primary address from its external "
                               "one"},
        {"MicrosoftOnlineServicesID", "the sign-in name a moved mailbox "
                                      "keeps"},
    };
    for (size_t k = 0; k < sizeof(only) / sizeof(only[0]); k++) {
      if (strcasecmp(mapping_target(*mapping, i), only[k][0]) == 0) {
        snprintf(err, errlen,
                 "%s:%d: link '%s' maps %s, which only a link with "
                 "migration = yes sets (%s)",
                 cfg->path, link->line, link->name, only[k][0], only[k][1]);
        goto out;
      }
    }
  }
  if (link->scope_filter != NULL &&
      scope_filter_parse(link->scope_filter, filter, msg, sizeof(msg)) != 0) {
    snprintf(err, errlen, "%s:%d: link '%s': scope_filter: %s", cfg->path,
             link->line, link->name, msg);
    goto out;
  }
  if (unknown_source(link, mapping_sources(*mapping), msg, sizeof(msg)) != 0 ||
      (*filter != NULL && unknown_source(link, scope_filter_sources(*filter),
                                         msg, sizeof(msg)) != 0)) {
    snprintf(err, errlen,
             "%s:%d: link '%s' reads source attribute '%s', which galbridge "
             "does not read from a tenant (it reads: %s)",
             cfg->path, link->line, link->name, msg,
             link->object == CONFIG_OBJECT_GROUPCONTACT ? GRAPH_GROUP_SELECT
                                                        : GRAPH_USER_SELECT);
    goto out;
  }
  return 0;
out:
  mapping_free(*mapping);
  *mapping = NULL;
  scope_filter_free(*filter);
  *filter = NULL;
  return -1;
}

int
planner_check_config(const struct config *cfg, char *err, size_t errlen)
{
  for (size_t i = 0; i < cfg->n_links; i++) {
    struct mapping *m;
    struct scope_filter *f;
    if (planner_link_compile(cfg, &cfg->links[i], &m, &f, err, errlen) != 0)
      return -1;
    mapping_free(m);
    scope_filter_free(f);
  }
  return 0;
}
