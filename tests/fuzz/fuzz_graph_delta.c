/*
 * fuzz_graph_delta — the users/delta page parser and merge
 * (src/graph_delta.c: graph_delta_page_parse, graph_delta_item_id,
 * graph_delta_merge), and what makes a hostile page readable
 * (graph_json_mark_bad, graph_delta_item_check).
 *
 * Input: a response body. When it is JSON, the page is checked; for a
 * page that parses, each item is merged twice — into nothing, and into
 * what the previous item of the page merged to (as a second delta round
 * over the stored object), alternating replace — as the reader does.
 * The raw body is also merged as an item, then again over that result,
 * so shapes that are not pages reach the merge too.
 *
 * Checks: no crash, leak or sanitizer report; a page either parses with
 * exactly one link set and value an array, or fails with a message;
 * skipped counts the items without a usable id; a merge gives an object
 * without "id" or "@odata.*" keys and a removed value in range. Marking:
 * a body jansson takes (JSON_ALLOW_NUL) comes back unchanged with no mark;
 * any body's marked text is as long as it says and every item check
 * either passes (no reason, no attribute) or gives a reason.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "graph.h"

static void
check_merged(const json_t *merged, int removed)
{
  const char *key;
  json_t *value;

  if (removed != GRAPH_PRESENT && removed != GRAPH_REMOVED_CHANGED &&
      removed != GRAPH_REMOVED_DELETED)
    abort();
  if (!json_is_object(merged))
    abort();
  json_object_foreach((json_t *)merged, key, value)
  {
    if (strcmp(key, "id") == 0 || strncmp(key, "@odata.", 7) == 0)
      abort();
  }
}

static json_t *
merge(const json_t *stored, const json_t *item, int replace)
{
  int removed = -1;
  json_t *merged = graph_delta_merge(stored, item, replace, &removed);

  if (merged != NULL)
    check_merged(merged, removed);
  else if (json_is_object(item))
    abort(); /* only allocation failure, which ASan would report */
  return merged;
}

/* graph_json_mark_bad() and graph_delta_item_check(), as graph.c's
 * on_http() and the reader use them. */
static void
check_marking(const uint8_t *data, size_t size)
{
  json_t *plain = json_loadb((const char *)data, size,
                             JSON_ALLOW_NUL | JSON_DECODE_ANY, NULL);
  size_t len = 0, marks = 0, i;
  char *text = graph_json_mark_bad((const char *)data, size, &len, &marks);
  json_t *body, *item;
  char attr[160];
  const char *reason;

  if (text == NULL)
    abort(); /* only allocation failure, which ASan would report */
  if (strlen(text) > len || text[len] != '\0')
    abort();
  if (plain != NULL && (marks != 0 || len != size || memcmp(text, data, size)))
    abort();
  body = json_loadb(text, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, NULL);
  json_array_foreach(json_object_get(body, "value"), i, item)
  {
    if (!json_is_object(item))
      continue;
    if (graph_delta_item_check(item, attr, sizeof(attr), &reason) == 0) {
      if (reason != NULL || attr[0] != '\0')
        abort();
    } else if (reason == NULL) {
      abort(); /* attr may be "": an item can have an empty key */
    }
  }
  json_decref(body);
  json_decref(plain);
  free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  json_t *body = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
  struct graph_delta_page page;
  json_t *prev = NULL, *item, *m;
  char err[256];
  size_t i, skipped = 0;

  check_marking(data, size);
  if (body == NULL)
    return 0;
  memset(&page, 0, sizeof(page));
  if (graph_delta_page_parse(body, &page, err, sizeof(err)) != 0) {
    if (err[0] == '\0')
      abort();
  } else {
    if (!json_is_array(page.items) ||
        (page.next_link == NULL) == (page.delta_link == NULL))
      abort();
    json_array_foreach(page.items, i, item)
    {
      if (graph_delta_item_id(item) == NULL) {
        skipped++;
        continue;
      }
      m = merge(NULL, item, 1);
      json_decref(m);
      m = merge(prev, item, (int)(i & 1));
      json_decref(prev);
      prev = m;
    }
    if (skipped != page.skipped)
      abort();
  }
  m = merge(NULL, body, 0);
  if (m != NULL) {
    json_t *again = merge(m, body, 0);

    json_decref(again);
  }
  json_decref(m);
  json_decref(prev);
  json_decref(body);
  return 0;
}
