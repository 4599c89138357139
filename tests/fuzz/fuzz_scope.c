/*
 * fuzz_scope — the scope filter parser and matcher (src/scope.c).
 *
 * Input: a filter on the first line, then a JSON value (usually an object
 * of source attributes). The filter is parsed; when it parses, its
 * sources are listed and it is matched against the value and against a
 * fixed sample user. The default scope is also run on the value.
 *
 * Checks: no crash, leak or sanitizer report; a refused filter leaves
 * *out NULL with a message, also when the message is cut to 8 bytes;
 * matching answers 0 or 1; scope_default_match gives a reason exactly
 * when it answers 0.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "scope.h"

static const char SAMPLE[] =
    "{\"id\":\"1\",\"displayName\":\"Anna O'Brien\",\"department\":\"Sales\","
    "\"mail\":\"anna@contoso.com\",\"accountEnabled\":true,"
    "\"userType\":\"Member\",\"level\":3,\"big\":9223372036854775807,"
    "\"proxyAddresses\":[\"SMTP:anna@contoso.com\"],\"city\":null,"
    "\"mixed\":[1,\"two\",true,null,{\"a\":1}],"
    "\"onPremisesExtensionAttributes\":{\"extensionAttribute1\":\"Blue\"}}";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  size_t head_len, tail = fuzz_split(data, size, "\n", 1, &head_len);
  char *text = fuzz_strndup(data, head_len);
  json_t *attrs = json_loadb((const char *)data + tail, size - tail,
                             JSON_DECODE_ANY, NULL);
  struct scope_filter *filter = (struct scope_filter *)1;
  const char *why = "unset";
  char err[256], small[8];
  int m;

  if (scope_filter_parse(text, &filter, err, sizeof(err)) != 0) {
    if (filter != NULL || err[0] == '\0')
      abort();
    filter = (struct scope_filter *)1;
    if (scope_filter_parse(text, &filter, small, sizeof(small)) == 0 ||
        filter != NULL || strnlen(small, sizeof(small)) >= sizeof(small))
      abort();
  } else {
    json_t *sources = scope_filter_sources(filter);

    if (!json_is_array(sources))
      abort();
    json_decref(sources);
    m = scope_filter_match(filter, attrs);
    if (m != 0 && m != 1)
      abort();
    m = scope_filter_match(filter, fuzz_sample(SAMPLE));
    if (m != 0 && m != 1)
      abort();
    scope_filter_free(filter);
  }
  m = scope_default_match(attrs, &why);
  if ((m == 1 && why != NULL) || (m == 0 && why == NULL) || m < 0 || m > 1)
    abort();
  json_decref(attrs);
  free(text);
  return 0;
}
