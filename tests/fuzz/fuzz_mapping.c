/*
 * fuzz_mapping — the mapping expression parser and evaluator
 * (src/mapping.c).
 *
 * Input: up to 8 lines `target=expression` (a [mapping] section's
 * entries, as config.c would hand them over), then an empty line, then a
 * JSON source object. The section is compiled for each of the four
 * object kinds; every mapping that compiles lists its sources and is
 * evaluated against the source (or against a fixed sample user when the
 * tail is not a JSON object).
 *
 * Checks: no crash, leak or sanitizer report; a failed compile leaves
 * *out NULL with a message; an evaluation gives an object or NULL with a
 * message, never a value over the documented 65536-byte cap.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "mapping.h"

#define MAX_ENTRIES 8
#define VALUE_MAX 65536

static const char SAMPLE[] =
    "{\"id\":\"1\",\"displayName\":\"Anna "
    "O'Brien\",\"givenName\":\"Zo\\u00eb\","
    "\"surname\":\"O'Brien\",\"mail\":\"anna@contoso.com\","
    "\"accountEnabled\":true,\"businessPhones\":[\"+1 555\",\"\"],"
    "\"otherMails\":[],\"city\":null,\"level\":3,"
    "\"onPremisesExtensionAttributes\":{\"extensionAttribute1\":\"Blue\"}}";

static void
check_result(const json_t *out)
{
  const char *key;
  const json_t *value;

  if (!json_is_object(out))
    abort();
  json_object_foreach((json_t *)out, key, value)
  {
    size_t i;
    const json_t *item;

    if (json_is_string(value)) {
      if (json_string_length(value) > VALUE_MAX)
        abort();
    } else if (json_is_array(value)) {
      json_array_foreach(value, i, item)
      {
        if (!json_is_string(item) || json_string_length(item) > VALUE_MAX)
          abort();
      }
    } else {
      abort();
    }
  }
}

static void
run(const struct config_mapping *section, enum config_object object,
    const json_t *source)
{
  struct mapping *mapping = (struct mapping *)1;
  char err[256];
  json_t *sources, *out;

  if (mapping_compile(section, object, "fuzz.conf", &mapping, err,
                      sizeof(err)) != 0) {
    if (mapping != NULL || err[0] == '\0')
      abort();
    return;
  }
  for (size_t i = 0; i < mapping_count(mapping); i++) {
    if (mapping_target(mapping, i) == NULL)
      abort();
  }
  sources = mapping_sources(mapping);
  if (!json_is_array(sources))
    abort();
  json_decref(sources);
  err[0] = '\0';
  out = mapping_eval(mapping, source, err, sizeof(err));
  if (out != NULL)
    check_result(out);
  else if (err[0] == '\0')
    abort();
  json_decref(out);
  mapping_free(mapping);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct config_mapping_entry entries[MAX_ENTRIES];
  struct config_mapping section = {
      .name = (char *)"fuzz", .entries = entries, .n_entries = 0, .line = 1};
  size_t head_len, tail = fuzz_split(data, size, "\n\n", 2, &head_len);
  char *head = fuzz_strndup(data, head_len);
  json_t *source = json_loadb((const char *)data + tail, size - tail, 0, NULL);
  char *line = head;

  while (line != NULL && section.n_entries < MAX_ENTRIES) {
    char *next = strchr(line, '\n');
    char *eq;

    if (next != NULL)
      *next++ = '\0';
    eq = strchr(line, '=');
    if (eq != NULL) {
      *eq = '\0';
      entries[section.n_entries].target = line;
      entries[section.n_entries].expr = eq + 1;
      entries[section.n_entries].line = (int)section.n_entries + 2;
      section.n_entries++;
    }
    line = next;
  }
  if (!json_is_object(source)) {
    json_decref(source);
    source = json_incref(fuzz_sample(SAMPLE));
  }
  run(&section, CONFIG_OBJECT_GUEST, source);
  run(&section, CONFIG_OBJECT_MAILCONTACT, source);
  run(&section, CONFIG_OBJECT_MAILUSER, source);
  run(&section, CONFIG_OBJECT_GROUPCONTACT, source);
  json_decref(source);
  free(head);
  return 0;
}
