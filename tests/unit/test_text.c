/*
 * Tests for text: strict UTF-8 (a table of sequences that are and are not
 * valid, where cut text is cut again), decoding, ASCII case rules, the edit
 * distance, the loopback hosts, error messages and wiping.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "text.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void
utf8_table(void **state)
{
  static const struct {
    const char *s;
    size_t n;    /* bytes given */
    size_t want; /* text_utf8_seq of the first sequence */
  } cases[] = {
      {"a", 1, 1},
      {"\x7f", 1, 1},
      {"\xc3\xa9", 2, 2},         /* é */
      {"\xe2\x82\xac", 3, 3},     /* € */
      {"\xf0\x9f\x98\x80", 4, 4}, /* U+1F600 */
      {"\xf4\x8f\xbf\xbf", 4, 4}, /* U+10FFFF */
      {"\xc3", 1, 0},             /* cut short */
      {"\xe2\x82", 2, 0},         /* cut short */
      {"\xc3\xa9", 1, 0},         /* n cuts it */
      {"\x80", 1, 0},             /* lone continuation */
      {"\xc0\xaf", 2, 0},         /* overlong '/' */
      {"\xc1\xbf", 2, 0},         /* overlong */
      {"\xe0\x80\xaf", 3, 0},     /* overlong */
      {"\xf0\x80\x80\xaf", 4, 0}, /* overlong */
      {"\xed\xa0\x80", 3, 0},     /* surrogate U+D800 */
      {"\xed\xbf\xbf", 3, 0},     /* surrogate U+DFFF */
      {"\xf4\x90\x80\x80", 4, 0}, /* U+110000 */
      {"\xf5\x80\x80\x80", 4, 0}, /* lead past 0xf4 */
      {"\xff", 1, 0},
      {"\xc3\x28", 2, 0}, /* bad continuation */
  };

  (void)state;
  for (size_t i = 0; i < N_OF(cases); i++) {
    const unsigned char *u = (const unsigned char *)cases[i].s;
    if (text_utf8_seq(u, cases[i].n) != cases[i].want)
      fail_msg("case %zu: got %zu, want %zu", i, text_utf8_seq(u, cases[i].n),
               cases[i].want);
    assert_int_equal(text_utf8_valid(cases[i].s, cases[i].n),
                     cases[i].want == cases[i].n);
  }
  assert_int_equal(text_utf8_seq((const unsigned char *)"", 0), 0);
}

static void
utf8_valid_whole_strings(void **state)
{
  (void)state;
  assert_true(text_utf8_valid("", 0));
  assert_true(text_utf8_valid("Zoë Ångström €", strlen("Zoë Ångström €")));
  assert_false(text_utf8_valid("ok\xc3", 3));
  assert_false(text_utf8_valid("a\xed\xa0\x80z", 5));
  /* a NUL is a valid (if unwelcome) code point: callers refuse it */
  assert_true(text_utf8_valid("a\0b", 3));
}

/* Where text cut by bytes is cut again so that JSON takes it. */
static void
utf8_valid_prefix_table(void **state)
{
  static const struct {
    const char *s;
    size_t n, want;
  } cases[] = {
      {"", 0, 0},
      {"plain", 5, 5},
      {"Zo\xc3\xab", 4, 4},     /* whole */
      {"Zo\xc3", 3, 2},         /* cut inside the ë */
      {"\xe2\x82", 2, 0},       /* cut inside the € */
      {"ab\xf0\x9f\x98", 5, 2}, /* cut inside an emoji */
      {"a\xed\xa0\x80z", 5, 1}, /* a surrogate */
      {"a\x80"
       "b",
       3, 1},                         /* a stray continuation byte */
      {"\xc3\xab\xe2\x82\xac", 5, 5}, /* ë€ */
  };

  (void)state;
  for (size_t i = 0; i < N_OF(cases); i++) {
    size_t got = text_utf8_valid_prefix(cases[i].s, cases[i].n);
    if (got != cases[i].want)
      fail_msg("case %zu: got %zu, want %zu", i, got, cases[i].want);
    assert_true(text_utf8_valid(cases[i].s, got));
  }
}

static void
utf8_decode_moves_on(void **state)
{
  size_t len = 0;

  (void)state;
  assert_int_equal(
      text_utf8_decode((const unsigned char *)"\xe2\x82\xac", 3, &len),
      0x20ac);
  assert_int_equal(len, 3);
  assert_int_equal(
      text_utf8_decode((const unsigned char *)"\xf0\x9f\x98\x80", 4, &len),
      0x1f600);
  assert_int_equal(len, 4);
  /* a broken byte comes back as itself, one byte long */
  assert_int_equal(text_utf8_decode((const unsigned char *)"\xff!", 2, &len),
                   0xff);
  assert_int_equal(len, 1);
  assert_int_equal(text_utf8_decode((const unsigned char *)"\xc3", 1, &len),
                   0xc3);
  assert_int_equal(len, 1);
}

static void
case_insensitive_is_ascii_only(void **state)
{
  (void)state;
  assert_true(text_ci_equal("Mail", 4, "mAIL", 4));
  assert_false(text_ci_equal("mail", 4, "mails", 5));
  assert_false(text_ci_equal("mail", 4, "mall", 4));
  /* É and é differ outside ASCII: no locale folding */
  assert_false(text_ci_equal("\xc3\x89", 2, "\xc3\xa9", 2));
  assert_true(text_ci_equal("", 0, "", 0));
}

static void
distance_table(void **state)
{
  static const struct {
    const char *a, *b;
    size_t want;
  } cases[] = {
      {"", "", 0},
      {"mail", "MAIL", 0},
      {"mail", "mial", 2},
      {"displayName", "displayNme", 1},
      {"kitten", "sitting", 3},
      {"", "abc", 3},
      {"tenant_id", "tennat_id", 2},
  };
  char long_word[65];

  (void)state;
  for (size_t i = 0; i < N_OF(cases); i++) {
    if (text_distance(cases[i].a, cases[i].b) != cases[i].want)
      fail_msg("%s ~ %s: got %zu, want %zu", cases[i].a, cases[i].b,
               text_distance(cases[i].a, cases[i].b), cases[i].want);
  }
  memset(long_word, 'a', 64);
  long_word[64] = '\0';
  assert_true(text_distance(long_word, long_word) == SIZE_MAX);
  long_word[63] = '\0';
  assert_int_equal(text_distance(long_word, long_word), 0);
}

static void
loopback_hosts(void **state)
{
  static const struct {
    const char *host;
    int want;
  } cases[] = {
      {"127.0.0.1", 1}, {"[::1]", 1},     {"localhost", 1},
      {"LocalHost", 1}, {"127.0.0.2", 0}, {"localhost.evil", 0},
      {"::1", 0},       {"", 0},          {"graph.microsoft.com", 0},
  };

  (void)state;
  for (size_t i = 0; i < N_OF(cases); i++) {
    if (text_is_loopback(cases[i].host, strlen(cases[i].host)) !=
        cases[i].want)
      fail_msg("%s: want %d", cases[i].host, cases[i].want);
  }
  /* the length given counts, not the NUL */
  assert_true(text_is_loopback("localhost:8443", 9));
  assert_false(text_is_loopback("localhost", 5));
}

static void
set_err_cuts_and_tolerates_null(void **state)
{
  char err[8];

  (void)state;
  text_set_err(NULL, 0, "x %d", 1);
  text_set_err(err, 0, "untouched");
  text_set_err(err, sizeof(err), "code %d", 42);
  assert_string_equal(err, "code 42");
  text_set_err(err, sizeof(err), "a long message");
  assert_string_equal(err, "a long ");
}

static void
is_guid_shape(void **state)
{
  (void)state;
  assert_true(text_is_guid("0b7e4b1c-55e1-4f11-9a55-6a0e1d6c1a01"));
  assert_true(text_is_guid("0B7E4B1C-55E1-4F11-9A55-6A0E1D6C1A01"));
  assert_false(text_is_guid("0b7e4b1c-55e1-4f11-9a55-6a0e1d6c1a0"));
  assert_false(text_is_guid("0b7e4b1c-55e1-4f11-9a55-6a0e1d6c1a01x"));
  assert_false(text_is_guid("0b7e4b1c055e1-4f11-9a55-6a0e1d6c1a01"));
  assert_false(text_is_guid("0b7e4b1c-55e1-4f11-9a55-6a0e1d6c1ag1"));
  assert_false(text_is_guid(""));
  assert_false(text_is_guid(NULL));
}

static void
wipe_free_frees(void **state)
{
  char *s = strdup("secret-token");

  (void)state;
  assert_non_null(s);
  text_wipe_free(s); /* ASan/valgrind would report a leak or misuse */
  text_wipe_free(NULL);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(utf8_table),
      cmocka_unit_test(utf8_valid_whole_strings),
      cmocka_unit_test(utf8_valid_prefix_table),
      cmocka_unit_test(utf8_decode_moves_on),
      cmocka_unit_test(case_insensitive_is_ascii_only),
      cmocka_unit_test(distance_table),
      cmocka_unit_test(loopback_hosts),
      cmocka_unit_test(set_err_cuts_and_tolerates_null),
      cmocka_unit_test(is_guid_shape),
      cmocka_unit_test(wipe_free_frees),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
