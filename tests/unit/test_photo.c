/*
 * Unit tests for the pure parts of photos: reading a photo's metadata
 * answer (graph_photo_parse: the "1x1" and empty-etag answers are no
 * photo, a hostile etag is refused), the content types copied and the
 * check of the bytes against them, and when a copy is next due.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "graph.h"
#include "photo.h"

static json_t *
load(const char *text)
{
  json_t *j = json_loads(text, 0, NULL);
  assert_non_null(j);
  return j;
}

static void
parse_present_and_absent(void **state)
{
  static const struct {
    const char *json;
    int rc, present;
    const char *etag;
  } cases[] = {
      /* the documented answer */
      {"{\"@odata.mediaContentType\":\"image/jpeg\","
       "\"@odata.mediaEtag\":\"\\\"BA09D118\\\"\",\"id\":\"240X240\","
       "\"width\":240,\"height\":240}",
       0, 1, "\"BA09D118\""},
      /* no photo: 1x1 with an empty etag (either alone is enough) */
      {"{\"@odata.mediaContentType\":\"image/gif\","
       "\"@odata.mediaEtag\":\"\",\"id\":\"1x1\",\"width\":1,\"height\":1}",
       0, 0, ""},
      {"{\"@odata.mediaEtag\":\"\\\"X\\\"\",\"id\":\"1X1\"}", 0, 0, "\"X\""},
      {"{\"id\":\"240x240\"}", 0, 0, ""},
      {"{\"@odata.mediaEtag\":null,\"id\":\"48x48\"}", 0, 0, ""},
      /* not a photo's metadata */
      {"[]", -1, 0, ""},
      {"{\"@odata.mediaEtag\":5}", -1, 0, ""},
      {"{\"@odata.mediaEtag\":\"a\\u0000b\"}", -1, 0, ""},
      {"{\"@odata.mediaEtag\":\"a\\nb\"}", -1, 0, ""},
  };
  struct graph_photo p;

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    json_t *j = json_loads(cases[i].json, JSON_ALLOW_NUL, NULL);
    assert_non_null(j);
    assert_int_equal(graph_photo_parse(j, &p), cases[i].rc);
    assert_int_equal(p.present, cases[i].present);
    if (cases[i].rc == 0)
      assert_string_equal(p.etag, cases[i].etag);
    json_decref(j);
  }
}

static void
parse_refuses_a_huge_etag(void **state)
{
  char text[1024];
  char etag[300];
  struct graph_photo p;
  json_t *j;

  (void)state;
  memset(etag, 'A', sizeof(etag) - 1);
  etag[sizeof(etag) - 1] = '\0';
  snprintf(text, sizeof(text), "{\"@odata.mediaEtag\":\"%s\"}", etag);
  j = load(text);
  assert_int_equal(graph_photo_parse(j, &p), -1);
  json_decref(j);
  etag[256] = '\0';
  snprintf(text, sizeof(text), "{\"@odata.mediaEtag\":\"%s\"}", etag);
  j = load(text);
  assert_int_equal(graph_photo_parse(j, &p), 0);
  assert_true(p.present);
  json_decref(j);
}

static void
types_and_bytes(void **state)
{
  static const unsigned char jpeg[] = {0xff, 0xd8, 0xff, 0xe0, 0};
  static const unsigned char png[] = {0x89, 'P',  'N',  'G', '\r',
                                      '\n', 0x1a, '\n', 0};

  (void)state;
  assert_string_equal(photo_type("image/jpeg"), "image/jpeg");
  assert_string_equal(photo_type(" IMAGE/PNG; charset=x"), "image/png");
  assert_null(photo_type("image/gif"));
  assert_null(photo_type("image/jpegx"));
  assert_null(photo_type("text/html"));
  assert_null(photo_type(""));
  assert_null(photo_type(NULL));
  assert_true(photo_type_matches("image/jpeg", jpeg, sizeof(jpeg)));
  assert_false(photo_type_matches("image/png", jpeg, sizeof(jpeg)));
  assert_true(photo_type_matches("image/png", png, sizeof(png)));
  assert_false(photo_type_matches("image/jpeg", png, sizeof(png)));
  assert_false(photo_type_matches("image/jpeg", jpeg, 2));
  assert_false(photo_type_matches("text/html", "<html>", 6));
  assert_false(photo_type_matches("image/jpeg", NULL, 0));
}

static void
next_check_spread(void **state)
{
  struct config_link link = {.photo_interval = 86400};
  time_t a = photo_next_check(&link, "11111111-aaaa", 1000);
  time_t b = photo_next_check(&link, "22222222-bbbb", 1000);

  (void)state;
  /* within the last tenth of the interval, by id, the same each time */
  assert_true(a <= 1000 + 86400 && a > 1000 + 86400 - 8640);
  assert_true(b <= 1000 + 86400 && b > 1000 + 86400 - 8640);
  assert_true(a != b);
  assert_int_equal(photo_next_check(&link, "11111111-aaaa", 1000), a);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(parse_present_and_absent),
      cmocka_unit_test(parse_refuses_a_huge_etag),
      cmocka_unit_test(types_and_bytes),
      cmocka_unit_test(next_check_spread),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
