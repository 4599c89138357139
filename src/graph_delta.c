/*
 * graph_delta — users/delta: fetching a page (graph_delta_get), judging
 * its shape and its items (graph_delta_page_parse, graph_delta_item_id,
 * graph_delta_item_check), marking the values jansson cannot take
 * (graph_json_mark_bad), merging an item into what the store holds
 * (graph_delta_merge) and what a stored user is found by
 * (graph_user_keys), and whether a stored delta link may be followed.
 * See include/graph.h.
 *
 * Everything here but graph_delta_get() is pure: a page is judged and
 * merged without the loop, so the fuzzer and the unit tests run it from
 * bodies alone. Nothing taken from a page is trusted: an item without a
 * usable id is skipped, a value with a NUL, a bad UTF-8 run or an
 * unpaired surrogate, or one past GRAPH_VALUE_MAX, is refused before
 * anything of the item is used.
 */
#include "graph_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "anchor.h"

/* Whether `name` (any case) is one of the comma-separated `list`. */
static int
in_select(const char *list, const char *name)
{
  const char *p = list;
  size_t n = strlen(name);

  while (*p != '\0') {
    size_t len = strcspn(p, ",");
    if (len == n && strncasecmp(p, name, n) == 0)
      return 1;
    p += len;
    if (*p == ',')
      p++;
  }
  return 0;
}

int
graph_user_property_known(const char *name)
{
  return in_select(GRAPH_USER_SELECT, name);
}

int
graph_group_property_known(const char *name)
{
  return in_select(GRAPH_GROUP_SELECT, name);
}

int
graph_delta_get(struct graph *graph, const char *url, graph_done_fn done,
                void *ctx)
{
  struct graph_req *req =
      graph_req_prepare(graph, "GET", url, NULL, NULL, done, ctx);

  if (req == NULL)
    return -1;
  /* on_http() (graph.c) decodes a tolerant request's answer this way. */
  req->tolerant = 1;
  graph_req_start(req);
  return 0;
}

/* --- values galbridge cannot take (graph_json_mark_bad) --- */

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0. Whether
 * it is valid is jansson's own judgement (json_stringn checks UTF-8 as
 * the parser does: no overlong form, no surrogate, nothing above
 * U+10FFFF), so that what is marked is exactly what it refuses (out of
 * memory, a good one is marked too: never the other way round); this
 * runs only on bodies jansson has refused already. */
static size_t
utf8_valid(const unsigned char *p, size_t n)
{
  size_t len = p[0] < 0x80   ? 1
               : p[0] < 0xc2 ? 0 /* a continuation, or overlong */
               : p[0] < 0xe0 ? 2
               : p[0] < 0xf0 ? 3
               : p[0] < 0xf5 ? 4
                             : 0;
  json_t *s;

  if (len <= 1 || len > n)
    return len > n ? 0 : len;
  s = json_stringn((const char *)p, len);
  if (s == NULL)
    return 0;
  json_decref(s);
  return len;
}

/* The value of the \uXXXX escape at p (6 bytes left at least), or -1. */
static long
escape_value(const unsigned char *p, size_t n)
{
  long v = 0;

  if (n < 6 || p[0] != '\\' || p[1] != 'u')
    return -1;
  for (int i = 2; i < 6; i++) {
    int c = p[i], d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else
      return -1;
    v = v * 16 + d;
  }
  return v;
}

static void
emit(char *out, size_t *o, const void *src, size_t k)
{
  if (out != NULL)
    memcpy(out + *o, src, k);
  *o += k;
}

/* One pass of graph_json_mark_bad(): the output's length; the output
 * itself too when `out` is not NULL. */
static size_t
mark_scan(const unsigned char *p, size_t len, char *out, size_t *marks)
{
  static const char mark[] = "\\u0000";
  size_t i = 0, o = 0;
  int in_string = 0, bad_run = 0;

  *marks = 0;
  while (i < len) {
    size_t k = 1;
    long v;
    int bad = 0;

    if (!in_string) {
      in_string = (p[i] == '"');
    } else if (p[i] == '"') {
      in_string = 0;
    } else if (p[i] == '\\' && i + 1 < len && p[i + 1] != 'u') {
      k = 2; /* \" \\ \n...: jansson judges the rest */
    } else if (p[i] == '\\' && (v = escape_value(p + i, len - i)) >= 0) {
      k = 6;
      if (v >= 0xd800 && v <= 0xdbff) {
        long lo = escape_value(p + i + 6, len - i - 6);
        if (lo >= 0xdc00 && lo <= 0xdfff)
          k = 12; /* a pair: one character */
        else
          bad = 1;
      } else if (v >= 0xdc00 && v <= 0xdfff) {
        bad = 1;
      }
    } else if (p[i] < 0x20) {
      bad = 1; /* a raw control character */
    } else if (p[i] >= 0x80) {
      k = utf8_valid(p + i, len - i);
      if (k == 0) {
        k = 1;
        bad = 1;
      }
    }
    if (bad) {
      /* A run of bad bytes is one mark; each bad escape is one. */
      if (!bad_run || k > 1) {
        emit(out, &o, mark, sizeof(mark) - 1);
        (*marks)++;
      }
      bad_run = (k == 1);
    } else {
      emit(out, &o, p + i, k);
      bad_run = 0;
    }
    i += k;
  }
  return o;
}

char *
graph_json_mark_bad(const char *text, size_t len, size_t *out_len,
                    size_t *marks)
{
  const unsigned char *p = (const unsigned char *)text;
  size_t n = mark_scan(p, len, NULL, marks);
  char *out = malloc(n + 1);

  if (out == NULL)
    return NULL;
  (void)mark_scan(p, len, out, marks);
  out[n] = '\0';
  *out_len = n;
  return out;
}

/* What is wrong with `v` (a value under attribute `name`), or NULL; a
 * nested attribute's name goes to `name` (of `namelen` bytes). */
static const char *
value_refusal(const json_t *v, char *name, size_t namelen)
{
  size_t used = strlen(name), i;
  const char *key, *why;
  json_t *el;

  if (json_is_string(v)) {
    if (strlen(json_string_value(v)) != json_string_length(v))
      return "holds a NUL, invalid UTF-8 or an unpaired surrogate";
    if (json_string_length(v) > GRAPH_VALUE_MAX)
      return "longer than " GRAPH_STR(GRAPH_VALUE_MAX) " bytes";
    return NULL;
  }
  if (json_is_array(v)) {
    if (json_array_size(v) > GRAPH_VALUES_MAX)
      return "more than " GRAPH_STR(GRAPH_VALUES_MAX) " values";
    json_array_foreach(v, i, el)
    {
      snprintf(name + used, namelen - used, "[%zu]", i);
      if ((why = value_refusal(el, name, namelen)) != NULL)
        return why;
    }
  } else if (json_is_object(v)) {
    json_object_foreach((json_t *)v, key, el)
    {
      snprintf(name + used, namelen - used, ".%s", key);
      if ((why = value_refusal(el, name, namelen)) != NULL)
        return why;
    }
  }
  name[used] = '\0';
  return NULL;
}

/* "manager@delta" as Graph documents it: an array of objects, each with
 * an id (the manager's, or a removed link's). Anything else names no
 * manager galbridge could follow. */
static int
manager_refs_ok(const json_t *refs)
{
  const json_t *ref;
  size_t i;

  if (!json_is_array(refs) || json_array_size(refs) > GRAPH_MANAGER_REFS)
    return 0;
  json_array_foreach(refs, i, ref)
  {
    if (graph_delta_item_id(ref) == NULL)
      return 0;
  }
  return 1;
}

int
graph_delta_item_check(const json_t *item, char *attribute, size_t attrlen,
                       const char **reason)
{
  const char *key;
  json_t *v;

  *reason = NULL;
  if (attrlen > 0)
    attribute[0] = '\0';
  if (json_object_get(item, "manager@delta") != NULL &&
      !manager_refs_ok(json_object_get(item, "manager@delta"))) {
    snprintf(attribute, attrlen, "manager");
    *reason = "not directory object references (objects with an id)";
    return -1;
  }
  json_object_foreach((json_t *)item, key, v)
  {
    /* What graph_delta_merge() does not keep is not judged. */
    if (strcmp(key, "id") == 0 || strncmp(key, "@odata.", 7) == 0)
      continue;
    snprintf(attribute, attrlen, "%s", key);
    *reason = value_refusal(v, attribute, attrlen);
    if (*reason != NULL)
      return -1;
  }
  if (attrlen > 0)
    attribute[0] = '\0';
  return 0;
}

const char *
graph_delta_item_id(const json_t *item)
{
  json_t *id = json_object_get(item, "id");

  /* An id with a NUL in it would be read as a shorter one: another
   * object's, perhaps. */
  if (!json_is_object(item) || !json_is_string(id) ||
      json_string_length(id) == 0 || json_string_length(id) > 128 ||
      strlen(json_string_value(id)) != json_string_length(id))
    return NULL;
  return json_string_value(id);
}

int
graph_delta_page_parse(json_t *body, struct graph_delta_page *page, char *err,
                       size_t errlen)
{
  json_t *value, *next, *delta, *item;
  size_t i;

  memset(page, 0, sizeof(*page));
  if (!json_is_object(body)) {
    snprintf(err, errlen, "delta page is not a JSON object");
    return -1;
  }
  value = json_object_get(body, "value");
  if (!json_is_array(value)) {
    snprintf(err, errlen, "delta page has no \"value\" array");
    return -1;
  }
  /* The service always sends an id, but Microsoft's own samples do not:
   * an item without one cannot be stored, so it is counted and skipped
   * rather than failing the whole page. */
  json_array_foreach(value, i, item)
  {
    if (graph_delta_item_id(item) == NULL)
      page->skipped++;
  }
  next = json_object_get(body, "@odata.nextLink");
  delta = json_object_get(body, "@odata.deltaLink");
  if ((next != NULL && !json_is_string(next)) ||
      (delta != NULL && !json_is_string(delta))) {
    snprintf(err, errlen, "delta page link is not a string");
    return -1;
  }
  if ((next == NULL) == (delta == NULL)) {
    snprintf(err, errlen, "delta page has %s",
             next == NULL ? "neither @odata.nextLink nor @odata.deltaLink"
                          : "both @odata.nextLink and @odata.deltaLink");
    return -1;
  }
  page->items = value;
  page->next_link = json_string_value(next);
  page->delta_link = json_string_value(delta);
  return 0;
}

/* Keep the manager "manager@delta" names (checked by
 * graph_delta_item_check) in `merged`: the last reference not removed,
 * or none. */
static int
merge_manager(json_t *merged, const json_t *refs)
{
  const char *id = NULL;
  const json_t *ref;
  size_t i;

  json_array_foreach(refs, i, ref)
  {
    if (json_object_get(ref, "@removed") == NULL)
      id = graph_delta_item_id(ref);
  }
  if (id == NULL) {
    json_object_del(merged, "manager");
    return 0;
  }
  return json_object_set_new(merged, "manager", json_string(id));
}

json_t *
graph_delta_merge(const json_t *stored, const json_t *item, int replace,
                  int *removed)
{
  json_t *merged, *value, *rm;
  const char *key;

  if (!json_is_object(item))
    return NULL;
  rm = json_object_get(item, "@removed");
  if (rm != NULL) {
    const char *reason = json_string_value(json_object_get(rm, "reason"));
    /* "deleted" is final; "changed" (soft delete) and anything unknown
     * are treated as restorable, the less destructive reading. */
    *removed = (reason != NULL && strcmp(reason, "deleted") == 0)
                   ? GRAPH_REMOVED_DELETED
                   : GRAPH_REMOVED_CHANGED;
    return json_is_object(stored) ? json_deep_copy(stored) : json_object();
  }

  *removed = GRAPH_PRESENT;
  merged = (replace || !json_is_object(stored)) ? json_object()
                                                : json_deep_copy(stored);
  if (merged == NULL)
    return NULL;
  /* jansson's iteration macro wants a non-const object; it only reads. */
  json_object_foreach((json_t *)item, key, value)
  {
    if (strcmp(key, "id") == 0 || strncmp(key, "@odata.", 7) == 0 ||
        strcmp(key, "manager") == 0)
      continue;
    if (strcmp(key, "manager@delta") == 0) {
      if (merge_manager(merged, value) != 0) {
        json_decref(merged);
        return NULL;
      }
      continue;
    }
    if (json_is_null(value)) {
      json_object_del(merged, key);
    } else if (json_object_set(merged, key, value) != 0) {
      json_decref(merged);
      return NULL;
    }
  }
  return merged;
}

/* Append ["addr:<lower-case address>", null] unless it is empty or too
 * long to be an address. */
/* Append ["<prefix><lower-case address>", null] unless the address is
 * empty or too long to be one. */
static int
add_address_key(json_t *keys, const char *prefix, const char *address)
{
  char key[300];
  size_t n;

  if (address == NULL)
    return 0;
  n = strlen(address);
  if (n == 0 || n + strlen(prefix) >= sizeof(key))
    return 0;
  snprintf(key, sizeof(key), "%s%s", prefix, address);
  for (char *c = key + strlen(prefix); *c != '\0'; c++)
    *c = (char)tolower((unsigned char)*c);
  return json_array_append_new(keys, json_pack("[s, n]", key));
}

json_t *
graph_user_keys(const json_t *attrs)
{
  json_t *keys = json_array(), *v, *ext;
  const char *name;
  size_t i;
  int rc = 0;

  if (keys == NULL)
    return NULL;
  rc |= add_address_key(
      keys, "addr:", json_string_value(json_object_get(attrs, "mail")));
  rc |= add_address_key(
      keys,
      "addr:", json_string_value(json_object_get(attrs, "userPrincipalName")));
  json_array_foreach(json_object_get(attrs, "proxyAddresses"), i, v)
  {
    const char *a = json_string_value(v);
    if (a != NULL && strncasecmp(a, "smtp:", 5) == 0)
      rc |= add_address_key(keys, "addr:", a + 5);
  }
  /* Other mails are no unique address: they stand in the way only on an
   * invited user (the planner's rule, see planner.c). */
  json_array_foreach(json_object_get(attrs, "otherMails"), i, v) rc |=
      add_address_key(keys, "other:", json_string_value(v));
  ext = json_object_get(attrs, "onPremisesExtensionAttributes");
  json_object_foreach(ext, name, v)
  {
    char *plain = anchor_parse(json_string_value(v), NULL);
    char key[ANCHOR_PLAIN_MAX + 8];
    if (plain == NULL)
      continue;
    snprintf(key, sizeof(key), "anchor:%s", plain);
    free(plain);
    rc |= json_array_append_new(
        keys, json_pack("[s, s]", key, json_string_value(v)));
  }
  if (rc != 0) {
    json_decref(keys);
    return NULL;
  }
  return keys;
}

const char *
graph_user_extension(const json_t *attrs, const char *name)
{
  return json_string_value(json_object_get(
      json_object_get(attrs, "onPremisesExtensionAttributes"), name));
}

int
graph_delta_needs_resync(const struct graph_response *resp)
{
  if (resp->result != GRAPH_ERR_HTTP)
    return 0;
  if (resp->status == 410)
    return 1;
  return strcasecmp(resp->code, "syncStateNotFound") == 0 ||
         strcasecmp(resp->code, "resyncRequired") == 0;
}

int
graph_delta_link_usable(const char *graph_url, const char *stored_base,
                        const char *delta_link)
{
  size_t a, b;

  if (delta_link == NULL)
    return 0;
  if (stored_base == NULL)
    return graph_url_is_under(graph_url, delta_link);
  a = strlen(graph_url);
  b = strlen(stored_base);
  while (a > 0 && graph_url[a - 1] == '/')
    a--;
  while (b > 0 && stored_base[b - 1] == '/')
    b--;
  return a == b && a > 0 && strncasecmp(graph_url, stored_base, a) == 0 &&
         graph_url_is_under(graph_url, delta_link);
}
