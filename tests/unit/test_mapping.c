/*
 * Tests for mapping: tables of (expression, source object, expected value)
 * for every function and value rule; the exact text of every compile
 * error; the built-in defaults of the three object kinds; how a [mapping]
 * section lays over them (replace, add, drop, required, unknown target);
 * the order of mapping_target(); mapping_sources(); evaluation errors and
 * the 64 KiB cap; and the speed of the default mapping.
 *
 * A case's expected value is JSON text, or NULL when the target must be
 * absent from the result (a null value). Mappings are built here as
 * config.c would build them, so these tests do not read files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

#include "mapping.h"

#define FILE_NAME "galbridge.conf"
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------------
 * Helpers
 */

struct spec {
  const char *target;
  const char *expr;
  int line;
};

/* mapping_compile over a section made of `specs`. */
static int
compile(enum config_object object, const struct spec *specs, size_t n,
        struct mapping **out, char *err, size_t errlen)
{
  struct config_mapping_entry entries[8];
  struct config_mapping section = {
      .name = (char *)"m", .entries = entries, .n_entries = n, .line = 1};

  assert_true(n <= N_OF(entries));
  for (size_t i = 0; i < n; i++) {
    entries[i].target = (char *)specs[i].target;
    entries[i].expr = (char *)specs[i].expr;
    entries[i].line = specs[i].line;
  }
  return mapping_compile(&section, object, FILE_NAME, out, err, errlen);
}

static json_t *
parse_json(const char *text)
{
  json_error_t jerr;
  json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);
  if (j == NULL)
    fail_msg("bad JSON in test: %s: %s", text, jerr.text);
  return j;
}

/* Fails the test, showing both sides, unless `got` (may be NULL: absent)
 * equals the JSON text `want` (NULL: absent). */
static void
check_value(const char *what, const json_t *got, const char *want)
{
  json_t *w = want != NULL ? parse_json(want) : NULL;
  int same = (w == NULL && got == NULL) ||
             (w != NULL && got != NULL && json_equal(w, got));

  if (!same) {
    char *g = got != NULL ? json_dumps(got, JSON_ENCODE_ANY) : NULL;
    print_error("%s\n  want %s\n  got  %s\n", what,
                want != NULL ? want : "(absent)", g != NULL ? g : "(absent)");
    free(g);
  }
  json_decref(w);
  assert_true(same);
}

/* ---------------------------------------------------------------------
 * Evaluation of single expressions
 */

struct eval_case {
  const char *target; /* a guest target */
  const char *expr;
  const char *source; /* JSON object */
  const char *expect; /* JSON value, or NULL: absent */
};

static const struct eval_case eval_cases[] = {
    /* attribute references */
    {"displayName", "mail", "{\"mail\":\"a@b.example\"}", "\"a@b.example\""},
    {"displayName", "MAIL", "{\"mail\":\"a@b.example\"}", "\"a@b.example\""},
    {"displayName", "mail", "{\"Mail\":\"x\"}", "\"x\""},
    {"displayName", "Mail", "{\"mail\":\"x\",\"Mail\":\"y\"}", "\"y\""},
    {"displayName", "mail", "{\"MAIL\":\"y\",\"mail\":\"x\"}", "\"x\""},
    {"displayName", "mail", "{}", NULL},
    {"displayName", "mail", "{\"mail\":null}", NULL},
    {"displayName", "mail", "{\"mail\":\"\"}", NULL},
    {"displayName", "mail_2", "{\"mail_2\":\"u\"}", "\"u\""},
    {"displayName", "_x", "{\"_x\":\"u\"}", "\"u\""},
    {"displayName", "onPremisesExtensionAttributes/extensionAttribute3",
     "{\"onPremisesExtensionAttributes\":{\"extensionAttribute3\":\"e3\"}}",
     "\"e3\""},
    {"displayName", "onpremisesextensionattributes/EXTENSIONATTRIBUTE3",
     "{\"onPremisesExtensionAttributes\":{\"extensionAttribute3\":\"e3\"}}",
     "\"e3\""},
    {"displayName", "onPremisesExtensionAttributes/extensionAttribute3",
     "{\"onPremisesExtensionAttributes\":null}", NULL},
    {"displayName", "onPremisesExtensionAttributes/extensionAttribute3",
     "{\"onPremisesExtensionAttributes\":\"flat\"}", NULL},
    {"displayName", "a/b/c", "{\"a\":{\"b\":{\"c\":\"deep\"}}}", "\"deep\""},
    {"displayName", "accountEnabled", "{\"accountEnabled\":true}", "\"true\""},
    {"displayName", "accountEnabled", "{\"accountEnabled\":false}",
     "\"false\""},
    {"displayName", "n", "{\"n\":42}", "\"42\""},
    {"displayName", "n", "{\"n\":-7}", "\"-7\""},
    {"displayName", "n", "{\"n\":1.5}", "\"1.5\""},
    /* arrays and array targets */
    {"displayName", "businessPhones", "{\"businessPhones\":[\"1\",\"2\"]}",
     "\"1\""},
    {"displayName", "businessPhones", "{\"businessPhones\":[null,\"\",\"2\"]}",
     "\"2\""},
    {"displayName", "businessPhones", "{\"businessPhones\":[]}", NULL},
    {"businessPhones", "businessPhones",
     "{\"businessPhones\":[\"1\",\"\",null,\"2\"]}", "[\"1\",\"2\"]"},
    {"businessPhones", "businessPhones", "{\"businessPhones\":[]}", NULL},
    {"businessPhones", "businessPhones", "{\"businessPhones\":[\"\",null]}",
     NULL},
    {"otherMails", "mail", "{\"mail\":\"a@b\"}", "[\"a@b\"]"},
    {"otherMails", "'x'", "{}", "[\"x\"]"},
    {"otherMails", "true", "{}", "[\"true\"]"},
    {"otherMails", "Join(';', a, b)", "{\"a\":\"1\",\"b\":\"2\"}",
     "[\"1;2\"]"},
    {"otherMails", "proxyAddresses",
     "{\"proxyAddresses\":[\"SMTP:a@b\",\"smtp:c@d\"]}",
     "[\"SMTP:a@b\",\"smtp:c@d\"]"},
    /* constants */
    {"displayName", "\"hello\"", "{}", "\"hello\""},
    {"displayName", "'hello'", "{}", "\"hello\""},
    {"displayName", "'O''Brien'", "{}", "\"O'Brien\""},
    {"displayName", "\"say \"\"hi\"\"\"", "{}", "\"say \\\"hi\\\"\""},
    {"displayName", "\"it's\"", "{}", "\"it's\""},
    {"displayName", "'say \"hi\"'", "{}", "\"say \\\"hi\\\"\""},
    {"displayName", "'a\\b'", "{}", "\"a\\\\b\""},
    {"displayName", "'a\\'", "{}", "\"a\\\\\""},
    {"displayName", "''''", "{}", "\"'\""},
    {"displayName", "''", "{}", NULL},
    {"displayName", "\"\"", "{}", NULL},
    {"displayName", "'Zoë Ångström ✓'", "{}", "\"Zoë Ångström ✓\""},
    {"displayName", "'; # not a comment'", "{}", "\"; # not a comment\""},
    {"displayName", "true", "{}", "\"true\""},
    {"displayName", "FALSE", "{}", "\"false\""},
    {"displayName", "null", "{\"null\":\"x\"}", NULL},
    {"displayName", "  'spaced'  ", "{}", "\"spaced\""},
    /* Join */
    {"displayName", "Join(' ', givenName, surname)",
     "{\"givenName\":\"Ann\",\"surname\":\"Lee\"}", "\"Ann Lee\""},
    {"displayName", "Join(' ', givenName, surname)",
     "{\"givenName\":\"Ann\",\"surname\":null}", "\"Ann\""},
    {"displayName", "Join(' ', givenName, surname)",
     "{\"givenName\":\"\",\"surname\":\"Lee\"}", "\"Lee\""},
    {"displayName", "Join(' ', givenName, surname)", "{}", NULL},
    {"displayName", "Join(', ', businessPhones, mobilePhone)",
     "{\"businessPhones\":[\"1\",\"\",\"2\"],\"mobilePhone\":\"3\"}",
     "\"1, 2, 3\""},
    {"displayName", "Join(nothing, 'a', 'b')", "{}", "\"ab\""},
    {"displayName", "Join('', 'a', 'b', 'c')", "{}", "\"abc\""},
    {"displayName", "Join('-', true, 'x')", "{}", "\"true-x\""},
    {"displayName", "Join(sep, 'a', 'b')", "{\"sep\":[\"+\",\"-\"]}",
     "\"a+b\""},
    {"displayName", "join(' ', 'a')", "{}", "\"a\""},
    {"displayName", "JOIN('·', 'Zoë', 'Å')", "{}", "\"Zoë·Å\""},
    /* Append */
    {"displayName", "Append(displayName, ' (Contoso)')",
     "{\"displayName\":\"Ann Lee\"}", "\"Ann Lee (Contoso)\""},
    {"displayName", "Append(displayName, ' (Contoso)')", "{}", NULL},
    {"displayName", "Append(displayName, ' (Contoso)')",
     "{\"displayName\":\"\"}", NULL},
    {"displayName", "Append('a', missing, 'c')", "{}", "\"ac\""},
    {"displayName", "Append(businessPhones, 'x')",
     "{\"businessPhones\":[\"1\",\"2\"]}", "\"1x\""},
    {"displayName", "append('a', '')", "{}", "\"a\""},
    /* Coalesce */
    {"displayName", "Coalesce(mail, userPrincipalName)",
     "{\"mail\":null,\"userPrincipalName\":\"u@x\"}", "\"u@x\""},
    {"displayName", "Coalesce(mail, userPrincipalName)",
     "{\"mail\":\"\",\"userPrincipalName\":\"u@x\"}", "\"u@x\""},
    {"displayName", "Coalesce(mail, userPrincipalName)",
     "{\"mail\":\"m@x\",\"userPrincipalName\":\"u@x\"}", "\"m@x\""},
    {"displayName", "Coalesce(mail, userPrincipalName)", "{}", NULL},
    {"displayName", "Coalesce(mail)", "{\"mail\":\"m\"}", "\"m\""},
    {"displayName", "COALESCE(null, '', 'z')", "{}", "\"z\""},
    {"otherMails", "Coalesce(otherMails, mail)",
     "{\"otherMails\":[\"a\",\"b\"],\"mail\":\"m\"}", "[\"a\",\"b\"]"},
    {"otherMails", "Coalesce(otherMails, mail)",
     "{\"otherMails\":[],\"mail\":\"m\"}", "[\"m\"]"},
    /* ToLower / ToUpper */
    {"displayName", "ToLower('ABC def')", "{}", "\"abc def\""},
    {"displayName", "ToUpper('abc DEF')", "{}", "\"ABC DEF\""},
    {"displayName", "ToUpper(n)", "{\"n\":\"Zoë Ångström\"}",
     "\"ZOË ÅNGSTRÖM\""},
    {"displayName", "ToLower(n)", "{\"n\":\"ZOË ÅNGSTRÖM\"}",
     "\"zoë ångström\""},
    {"displayName", "ToUpper('Łódź ÿ')", "{}", "\"ŁÓDŹ Ÿ\""},
    {"displayName", "ToLower('ŁÓDŹ Ÿ')", "{}", "\"łódź ÿ\""},
    {"displayName", "ToLower('ΑΘΗΝΑ Москва Ёж')", "{}", "\"αθηνα москва ёж\""},
    {"displayName", "ToUpper('αθηνας москва ёж')", "{}",
     "\"ΑΘΗΝΑΣ МОСКВА ЁЖ\""},
    {"displayName", "ToUpper('straße × ÷')", "{}", "\"STRAßE × ÷\""},
    {"displayName", "ToUpper('a😀b日本')", "{}", "\"A😀B日本\""},
    {"displayName", "ToUpper(missing)", "{}", NULL},
    {"displayName", "ToLower(TRUE)", "{}", "\"true\""},
    {"displayName", "ToLower(x)", "{\"x\":[\"AB\",\"CD\"]}", "\"ab\""},
    {"displayName", "tolower('X')", "{}", "\"x\""},
    /* Trim */
    {"displayName", "Trim('  a b  ')", "{}", "\"a b\""},
    {"displayName", "Trim(x)", "{\"x\":\"\\t\\r\\n a \\n\"}", "\"a\""},
    {"displayName", "Trim(x)", "{\"x\":\"\\u00a0\\u3000x y\\u2003\\u00a0\"}",
     "\"x y\""},
    {"displayName", "Trim('   ')", "{}", NULL},
    {"displayName", "Trim(missing)", "{}", NULL},
    {"displayName", "Trim('ë ')", "{}", "\"ë\""},
    {"displayName", "Trim(' 😀')", "{}", "\"😀\""},
    /* Replace */
    {"displayName", "Replace(mail, '@contoso.com', '@fabrikam.com')",
     "{\"mail\":\"ann@contoso.com\"}", "\"ann@fabrikam.com\""},
    {"displayName", "Replace('a.b.c', '.', '-')", "{}", "\"a-b-c\""},
    {"displayName", "Replace('a.b', '.*', 'x')", "{}", "\"a.b\""},
    {"displayName", "Replace('a.*b', '.*', 'x')", "{}", "\"axb\""},
    {"displayName", "Replace('aaa', 'aa', 'b')", "{}", "\"ba\""},
    {"displayName", "Replace('a-b', '-', '')", "{}", "\"ab\""},
    {"displayName", "Replace('a-b', '-', null)", "{}", "\"ab\""},
    {"displayName", "Replace('a-b', old, 'x')", "{}", "\"a-b\""},
    {"displayName", "Replace('a-b', '+', 'x')", "{}", "\"a-b\""},
    {"displayName", "Replace('aa', 'a', '')", "{}", NULL},
    {"displayName", "Replace(missing, 'a', 'b')", "{}", NULL},
    {"displayName", "Replace('x', 'x', 'O''Brien')", "{}", "\"O'Brien\""},
    {"displayName", "Replace(p, '+', '00')", "{\"p\":[\"+1\",\"+2\"]}",
     "\"001\""},
    {"displayName", "Replace('Zoë', 'ë', 'e')", "{}", "\"Zoe\""},
    {"displayName", "REPLACE('ab', 'b', 'c')", "{}", "\"ac\""},
    /* Left */
    {"displayName", "Left('abcdef', 3)", "{}", "\"abc\""},
    {"displayName", "Left('ab', 5)", "{}", "\"ab\""},
    {"displayName", "Left('ab', 2)", "{}", "\"ab\""},
    {"displayName", "Left('ab', 0)", "{}", NULL},
    {"displayName", "Left(n, 3)", "{\"n\":\"Zoë Ångström\"}", "\"Zoë\""},
    {"displayName", "Left(n, 5)", "{\"n\":\"Zoë Ångström\"}", "\"Zoë Å\""},
    {"displayName", "Left(n, 2)", "{\"n\":\"Zoë Ångström\"}", "\"Zo\""},
    {"displayName", "Left('😀😃x', 1)", "{}", "\"😀\""},
    {"displayName", "Left('a😀b', 2)", "{}", "\"a😀\""},
    {"displayName", "Left('日本語', 2)", "{}", "\"日本\""},
    {"displayName", "Left(missing, 3)", "{}", NULL},
    {"displayName", "Left(x, 1)", "{\"x\":[\"ab\"]}", "\"a\""},
    {"displayName", "left('abc', 00)", "{}", NULL},
    {"displayName", "Left('abc', -0)", "{}", NULL},
    /* IIF */
    {"displayName", "IIF(country == 'US', 'United States', country)",
     "{\"country\":\"US\"}", "\"United States\""},
    {"displayName", "IIF(country == 'US', 'United States', country)",
     "{\"country\":\"DE\"}", "\"DE\""},
    {"displayName", "IIF(country == 'US', 'United States', country)",
     "{\"country\":\"us\"}", "\"us\""},
    {"displayName", "IIF(country != 'US', 'abroad', 'home')",
     "{\"country\":\"US\"}", "\"home\""},
    {"displayName", "IIF(country != 'US', 'abroad', 'home')", "{}",
     "\"abroad\""},
    {"displayName", "IIF(department != null, department, 'none')", "{}",
     "\"none\""},
    {"displayName", "IIF(department != null, department, 'none')",
     "{\"department\":\"Sales\"}", "\"Sales\""},
    {"displayName", "IIF(missing == null, 'yes', 'no')", "{}", "\"yes\""},
    {"displayName", "IIF(x == '', 'yes', 'no')", "{\"x\":\"\"}", "\"yes\""},
    {"displayName", "IIF(null == null, 'yes', 'no')", "{}", "\"yes\""},
    {"displayName", "IIF(a == b, 'same', 'differ')",
     "{\"a\":\"Zoë\",\"b\":\"Zoë\"}", "\"same\""},
    {"displayName", "IIF(a == b, 'same', 'differ')",
     "{\"a\":\"Zoë\",\"b\":\"Zoe\"}", "\"differ\""},
    {"displayName", "IIF(flag == 'true', 'on', 'off')", "{\"flag\":true}",
     "\"on\""},
    {"displayName", "IIF(p == '1', 'first', 'not')", "{\"p\":[\"1\",\"2\"]}",
     "\"first\""},
    {"displayName", "IIF(IsPresent(mail), 'y', 'n')", "{\"mail\":\"m\"}",
     "\"y\""},
    {"displayName", "IIF(IsPresent(mail), 'y', 'n')", "{}", "\"n\""},
    {"displayName", "IIF(accountEnabled, 'on', 'off')",
     "{\"accountEnabled\":true}", "\"on\""},
    {"displayName", "IIF(accountEnabled, 'on', 'off')",
     "{\"accountEnabled\":false}", "\"off\""},
    {"displayName", "IIF(accountEnabled, 'on', 'off')",
     "{\"accountEnabled\":\"False\"}", "\"off\""},
    {"displayName", "IIF(accountEnabled, 'on', 'off')",
     "{\"accountEnabled\":\"yes\"}", "\"on\""},
    {"displayName", "IIF(accountEnabled, 'on', 'off')", "{}", "\"off\""},
    {"displayName", "IIF(x, 'on', 'off')", "{\"x\":\"\"}", "\"off\""},
    {"displayName", "iif(true, null, 'x')", "{}", NULL},
    /* only the branch taken is evaluated: `manager` is an object */
    {"displayName", "IIF(true, 'a', manager)", "{\"manager\":{\"id\":\"1\"}}",
     "\"a\""},
    {"otherMails", "IIF(true, otherMails, mail)",
     "{\"otherMails\":[\"a\",\"b\"],\"mail\":\"m\"}", "[\"a\",\"b\"]"},
    /* Switch */
    {"displayName", "Switch(country, 'Other', 'US', 'USA', 'DE', 'Germany')",
     "{\"country\":\"DE\"}", "\"Germany\""},
    {"displayName", "Switch(country, 'Other', 'US', 'USA', 'DE', 'Germany')",
     "{\"country\":\"US\"}", "\"USA\""},
    {"displayName", "Switch(country, 'Other', 'US', 'USA', 'DE', 'Germany')",
     "{\"country\":\"FR\"}", "\"Other\""},
    {"displayName", "Switch(country, 'Other', 'US', 'USA', 'DE', 'Germany')",
     "{\"country\":\"de\"}", "\"Other\""},
    {"displayName", "Switch(country, country, 'US', 'USA')",
     "{\"country\":\"FR\"}", "\"FR\""},
    {"displayName", "Switch(x, 'd', null, 'was null', 'a', 'A')", "{}",
     "\"was null\""},
    {"displayName", "Switch(x, null, 'a', 'A')", "{\"x\":\"b\"}", NULL},
    {"displayName", "switch(x, 'd', 'a', 'A', 'a', 'second')", "{\"x\":\"a\"}",
     "\"A\""},
    {"displayName", "Switch(x, 'd', 'a', 'A', 'b', manager)",
     "{\"x\":\"a\",\"manager\":{}}", "\"A\""},
    /* IsPresent */
    {"displayName", "IsPresent(mail)", "{\"mail\":\"m\"}", "\"true\""},
    {"displayName", "IsPresent(mail)", "{}", "\"false\""},
    {"displayName", "IsPresent(mail)", "{\"mail\":\"\"}", "\"false\""},
    {"displayName", "IsPresent(mail)", "{\"mail\":[]}", "\"false\""},
    {"displayName", "IsPresent(mail)", "{\"mail\":[\"\"]}", "\"false\""},
    {"displayName", "IsPresent(mail)", "{\"mail\":false}", "\"true\""},
    {"displayName", "ISPRESENT('x')", "{}", "\"true\""},
    /* nesting and layout */
    {"displayName", "ToUpper(Left(Trim(displayName), 3))",
     "{\"displayName\":\"  zoë ångström\"}", "\"ZOË\""},
    {"displayName", "Join(' ', Left(givenName, 1), ToUpper(surname))",
     "{\"givenName\":\"Ann\",\"surname\":\"Lee\"}", "\"A LEE\""},
    {"displayName",
     "Coalesce(IIF(IsPresent(nickname), Append(nickname, ' *'), null), "
     "Join(' ', givenName, surname))",
     "{\"givenName\":\"Ann\",\"surname\":\"Lee\"}", "\"Ann Lee\""},
    {"displayName",
     "Coalesce(IIF(IsPresent(nickname), Append(nickname, ' *'), null), "
     "Join(' ', givenName, surname))",
     "{\"nickname\":\"Annie\",\"givenName\":\"Ann\"}", "\"Annie *\""},
    {"mail", "ToLower(Replace(Trim(mail), '@CONTOSO.COM', '@contoso.com'))",
     "{\"mail\":\" Ann@CONTOSO.COM \"}", "\"ann@contoso.com\""},
    {"displayName", "  Join ( ' ' ,\tgivenName ,surname )  ",
     "{\"givenName\":\"Ann\",\"surname\":\"Lee\"}", "\"Ann Lee\""},
};

static void
test_eval_table(void **state)
{
  (void)state;
  for (size_t i = 0; i < N_OF(eval_cases); i++) {
    const struct eval_case *c = &eval_cases[i];
    struct spec s = {c->target, c->expr, 3};
    struct mapping *m = NULL;
    char err[256] = "", what[512];
    json_t *src, *got;

    if (compile(CONFIG_OBJECT_GUEST, &s, 1, &m, err, sizeof(err)) != 0)
      fail_msg("case %zu: %s = %s: %s", i, c->target, c->expr, err);
    src = parse_json(c->source);
    got = mapping_eval(m, src, err, sizeof(err));
    if (got == NULL)
      fail_msg("case %zu: %s = %s: %s", i, c->target, c->expr, err);
    snprintf(what, sizeof(what), "case %zu: %s = %s over %s", i, c->target,
             c->expr, c->source);
    check_value(what, json_object_get(got, c->target), c->expect);
    json_decref(got);
    json_decref(src);
    mapping_free(m);
  }
}

/* Nesting: 32 levels compile and run; 33 do not (see the error table). */
static char *
nested(int levels, const char *inner)
{
  size_t len = (size_t)levels * 9 + strlen(inner) + 1, n = 0;
  char *s = malloc(len);

  assert_non_null(s);
  for (int i = 0; i < levels; i++) {
    memcpy(s + n, "ToLower(", 8);
    n += 8;
  }
  memcpy(s + n, inner, strlen(inner));
  n += strlen(inner);
  for (int i = 0; i < levels; i++)
    s[n++] = ')';
  s[n] = '\0';
  return s;
}

static void
test_nesting_limit(void **state)
{
  char *expr = nested(32, "'ABC'");
  struct spec s = {"displayName", expr, 5};
  struct mapping *m = NULL;
  char err[256] = "";
  json_t *src = json_object(), *got;

  (void)state;
  assert_int_equal(compile(CONFIG_OBJECT_GUEST, &s, 1, &m, err, sizeof(err)),
                   0);
  got = mapping_eval(m, src, err, sizeof(err));
  assert_non_null(got);
  assert_string_equal(json_string_value(json_object_get(got, "displayName")),
                      "abc");
  json_decref(got);
  mapping_free(m);
  free(expr);

  expr = nested(33, "'ABC'");
  s.expr = expr;
  m = NULL;
  assert_int_equal(compile(CONFIG_OBJECT_GUEST, &s, 1, &m, err, sizeof(err)),
                   -1);
  assert_null(m);
  assert_string_equal(
      err, "galbridge.conf:5: column 257: functions nested more than 32 deep");
  free(expr);
  json_decref(src);
}

/* The longest expression allowed (10,000 characters, as Entra's
 * cross-tenant sync allows; here two-byte ones), and one character more:
 * the error names the column of the first character too many. */
static void
test_expression_length(void **state)
{
  size_t chars = 10000, bytes = 2 + (chars - 2) * 2;
  char *expr = malloc(bytes + 3);
  struct spec s = {"displayName", expr, 7};
  struct mapping *m = NULL;
  char err[256] = "";
  json_t *src = json_object(), *got;

  (void)state;
  assert_non_null(expr);
  expr[0] = '\'';
  for (size_t i = 0; i < chars - 2; i++)
    memcpy(expr + 1 + 2 * i, "\xc3\xa9", 2); /* é */
  expr[bytes - 1] = '\'';
  expr[bytes] = '\0';
  assert_int_equal(compile(CONFIG_OBJECT_GUEST, &s, 1, &m, err, sizeof(err)),
                   0);
  got = mapping_eval(m, src, err, sizeof(err));
  assert_non_null(got);
  assert_int_equal(json_string_length(json_object_get(got, "displayName")),
                   (chars - 2) * 2);
  json_decref(got);
  mapping_free(m);

  expr[bytes] = ' ';
  expr[bytes + 1] = '\0';
  m = NULL;
  assert_int_equal(compile(CONFIG_OBJECT_GUEST, &s, 1, &m, err, sizeof(err)),
                   -1);
  assert_null(m);
  assert_string_equal(err, "galbridge.conf:7: column 10001: expression "
                           "longer than 10000 characters (10001)");
  free(expr);
  json_decref(src);
}

/* ---------------------------------------------------------------------
 * Compile errors
 */

struct error_case {
  enum config_object object;
  const char *target;
  const char *expr;
  const char *message; /* after "galbridge.conf:14: " */
};

static const struct error_case error_cases[] = {
    /* arity */
    {CONFIG_OBJECT_GUEST, "displayName", "Left(mail)",
     "column 1: Left() takes 2 arguments, got 1"},
    {CONFIG_OBJECT_GUEST, "displayName", "ToUpper(Left(mail))",
     "column 9: Left() takes 2 arguments, got 1"},
    {CONFIG_OBJECT_GUEST, "displayName", "Left(mail, 1, 2)",
     "column 1: Left() takes 2 arguments, got 3"},
    {CONFIG_OBJECT_GUEST, "displayName", "Join(mail)",
     "column 1: Join() takes at least 2 arguments, got 1"},
    {CONFIG_OBJECT_GUEST, "displayName", "Append('a')",
     "column 1: Append() takes at least 2 arguments, got 1"},
    {CONFIG_OBJECT_GUEST, "displayName", "Coalesce()",
     "column 1: Coalesce() takes at least 1 argument, got 0"},
    {CONFIG_OBJECT_GUEST, "displayName", "tolower(a, b)",
     "column 1: ToLower() takes 1 argument, got 2"},
    {CONFIG_OBJECT_GUEST, "displayName", "ToUpper()",
     "column 1: ToUpper() takes 1 argument, got 0"},
    {CONFIG_OBJECT_GUEST, "displayName", "Trim(a, b)",
     "column 1: Trim() takes 1 argument, got 2"},
    {CONFIG_OBJECT_GUEST, "displayName", "Replace(a, 'b')",
     "column 1: Replace() takes 3 arguments, got 2"},
    {CONFIG_OBJECT_GUEST, "displayName", "IIF(a, b)",
     "column 1: IIF() takes 3 arguments, got 2"},
    {CONFIG_OBJECT_GUEST, "displayName", "IsPresent(a, b)",
     "column 1: IsPresent() takes 1 argument, got 2"},
    {CONFIG_OBJECT_GUEST, "displayName", "Switch(a, b)",
     "column 1: Switch() takes a value, a default and key/value pairs (4, "
     "6, 8... arguments), got 2"},
    {CONFIG_OBJECT_GUEST, "displayName", "Switch(a, b, c)",
     "column 1: Switch() takes a value, a default and key/value pairs (4, "
     "6, 8... arguments), got 3"},
    {CONFIG_OBJECT_GUEST, "displayName", "Switch(a, b, c, d, e)",
     "column 1: Switch() takes a value, a default and key/value pairs (4, "
     "6, 8... arguments), got 5"},
    /* arguments with rules of their own */
    {CONFIG_OBJECT_GUEST, "displayName", "Left(a, b)",
     "column 9: Left()'s count must be a whole number, e.g. Left(x, 3)"},
    {CONFIG_OBJECT_GUEST, "displayName", "Left(a, '3')",
     "column 9: Left()'s count must be a whole number, e.g. Left(x, 3)"},
    {CONFIG_OBJECT_GUEST, "displayName", "Left(a, -1)",
     "column 9: Left()'s count must be 0 or more, got -1"},
    {CONFIG_OBJECT_GUEST, "displayName", "Left(a, 99999999999999999999)",
     "column 9: number 99999999999999999999 is too large (at most 65536)"},
    {CONFIG_OBJECT_GUEST, "displayName", "Replace(a, '', 'x')",
     "column 12: Replace()'s text to replace is empty; it would never "
     "match"},
    {CONFIG_OBJECT_GUEST, "displayName", "Replace(a, NULL, 'x')",
     "column 12: Replace()'s text to replace is empty; it would never "
     "match"},
    {CONFIG_OBJECT_GUEST, "displayName", "42",
     "column 1: a number is only allowed as a count or position of Left(), "
     "Mid() or Word(); quote it to use "
     "it as text"},
    {CONFIG_OBJECT_GUEST, "displayName", "Join(' ', a, 3)",
     "column 14: a number is only allowed as a count or position of Left(), "
     "Mid() or Word(); quote it to "
     "use it as text"},
    {CONFIG_OBJECT_GUEST, "displayName", "a == b",
     "column 3: a comparison ('==') is only allowed as IIF()'s condition"},
    {CONFIG_OBJECT_GUEST, "displayName", "IIF(a, b != c, d)",
     "column 10: a comparison ('!=') is only allowed as IIF()'s condition"},
    {CONFIG_OBJECT_GUEST, "displayName", "IIF(a == b == c, d, e)",
     "column 12: expected ',' or ')' in IIF(), found '=='"},
    /* names */
    {CONFIG_OBJECT_GUEST, "displayName", "Frobnicate(a)",
     "column 1: unknown function 'Frobnicate'"},
    {CONFIG_OBJECT_GUEST, "displayName", "Join(' ', Substring(a, 1), b)",
     "column 11: unknown function 'Substring'"},
    {CONFIG_OBJECT_GUEST, "displayName", "null(a)",
     "column 1: unknown function 'null'"},
    {CONFIG_OBJECT_GUEST, "displayName", "a/b(c)",
     "column 1: unknown function 'a/b'"},
    /* strings */
    {CONFIG_OBJECT_GUEST, "displayName", "'abc",
     "column 1: unterminated string (opened with ')"},
    {CONFIG_OBJECT_GUEST, "displayName", "Join(' ', \"abc)",
     "column 11: unterminated string (opened with \")"},
    {CONFIG_OBJECT_GUEST, "displayName", "'O''Brien",
     "column 1: unterminated string (opened with ')"},
    {CONFIG_OBJECT_GUEST, "displayName", "'it''",
     "column 1: unterminated string (opened with ')"},
    {CONFIG_OBJECT_GUEST, "displayName", "'\xff'",
     "column 1: text constant is not valid UTF-8"},
    {CONFIG_OBJECT_GUEST, "displayName", "Join(' ', 'a\xc0\xaf')",
     "column 11: text constant is not valid UTF-8"}, /* overlong '/' */
    {CONFIG_OBJECT_GUEST, "displayName", "'\xed\xa0\x80'",
     "column 1: text constant is not valid UTF-8"}, /* a surrogate */
    {CONFIG_OBJECT_GUEST, "displayName", "'\xc3'",
     "column 1: text constant is not valid UTF-8"}, /* cut short */
    /* unexpected tokens and characters */
    {CONFIG_OBJECT_GUEST, "displayName", "a b",
     "column 3: unexpected 'b' after the end of the expression"},
    {CONFIG_OBJECT_GUEST, "displayName", "Trim(a))",
     "column 8: unexpected ')' after the end of the expression"},
    {CONFIG_OBJECT_GUEST, "displayName", "'x' 'abcdefghijklmnopqrstuvwxyz'",
     "column 5: unexpected 'abcdefghijklmnopqrstuvw... after the end of the "
     "expression"},
    {CONFIG_OBJECT_GUEST, "displayName", "'Zoë' x",
     "column 7: unexpected 'x' after the end of the expression"},
    {CONFIG_OBJECT_GUEST, "displayName", "Join(' ' a)",
     "column 10: expected ',' or ')' in Join(), found 'a'"},
    {CONFIG_OBJECT_GUEST, "displayName", "Join(' ', a",
     "column 12: expected ',' or ')' in Join(), found end of expression"},
    {CONFIG_OBJECT_GUEST, "displayName", "Join(, a)",
     "column 6: expected a value, found ','"},
    {CONFIG_OBJECT_GUEST, "displayName", "Join(' ', a,)",
     "column 13: expected a value, found ')'"},
    {CONFIG_OBJECT_GUEST, "displayName", "ToLower(",
     "column 9: expected a value, found end of expression"},
    {CONFIG_OBJECT_GUEST, "displayName", ")",
     "column 1: expected a value, found ')'"},
    {CONFIG_OBJECT_GUEST, "displayName", "(a)",
     "column 1: expected a value, found '('"},
    {CONFIG_OBJECT_GUEST, "displayName", "a = b",
     "column 3: '=' is not an operator; compare with '==' or '!='"},
    {CONFIG_OBJECT_GUEST, "displayName", "IIF(!a, b, c)",
     "column 5: '!' is not an operator; compare with '==' or '!='"},
    {CONFIG_OBJECT_GUEST, "displayName", "a $ b",
     "column 3: unexpected character '$'"},
    {CONFIG_OBJECT_GUEST, "displayName", "mail/",
     "column 5: unexpected character '/'"},
    {CONFIG_OBJECT_GUEST, "displayName", "a/1",
     "column 2: unexpected character '/'"},
    {CONFIG_OBJECT_GUEST, "displayName", "a\\b",
     "column 2: unexpected character '\\'"},
    {CONFIG_OBJECT_GUEST, "displayName", "Join(' ', é)",
     "column 11: unexpected character 'é'"},
    {CONFIG_OBJECT_GUEST, "displayName", "a \xe9",
     "column 3: unexpected byte 0xE9 (not UTF-8 text)"},
    {CONFIG_OBJECT_GUEST, "displayName", "a\x1b[2J",
     "column 2: unexpected control character 0x1B"},
    {CONFIG_OBJECT_GUEST, "displayName", "", "empty expression"},
    {CONFIG_OBJECT_GUEST, "displayName", " \t ", "empty expression"},
    /* targets */
    {CONFIG_OBJECT_GUEST, "jobtitel", "jobTitle",
     "unknown target attribute 'jobtitel' for guest links; did you mean "
     "'jobTitle'?"},
    {CONFIG_OBJECT_GUEST, "manager", "mail",
     "unknown target attribute 'manager' for guest links"},
    {CONFIG_OBJECT_GUEST, "CustomAttribute1", "mail",
     "unknown target attribute 'CustomAttribute1' for guest links"},
    {CONFIG_OBJECT_MAILCONTACT, "mail", "mail",
     "unknown target attribute 'mail' for mailcontact links"},
    {CONFIG_OBJECT_MAILUSER, "extensionAttribute1", "mail",
     "unknown target attribute 'extensionAttribute1' for mailuser links"},
    {CONFIG_OBJECT_MAILUSER, "Titel", "mail",
     "unknown target attribute 'Titel' for mailuser links; did you mean "
     "'Title'?"},
    /* required targets */
    {CONFIG_OBJECT_GUEST, "mail", "null",
     "mail is required for guest links: it is the address the guest is "
     "invited with"},
    {CONFIG_OBJECT_GUEST, "MAIL", "  NULL ",
     "mail is required for guest links: it is the address the guest is "
     "invited with"},
    {CONFIG_OBJECT_MAILCONTACT, "ExternalEmailAddress", "null",
     "ExternalEmailAddress is required for mailcontact links: it is the "
     "address mail to the contact is sent to"},
    {CONFIG_OBJECT_MAILUSER, "externalemailaddress", "Null",
     "ExternalEmailAddress is required for mailuser links: it is the "
     "address mail to the mail user is sent to"},
};

static void
test_compile_errors(void **state)
{
  (void)state;
  for (size_t i = 0; i < N_OF(error_cases); i++) {
    const struct error_case *c = &error_cases[i];
    struct spec s = {c->target, c->expr, 14};
    struct mapping *m = (struct mapping *)&s; /* must be reset to NULL */
    char err[512] = "", want[512];
    int rc = compile(c->object, &s, 1, &m, err, sizeof(err));

    snprintf(want, sizeof(want), "galbridge.conf:14: %s", c->message);
    if (rc != -1 || strcmp(err, want) != 0)
      print_error("case %zu: %s = %s\n  want %s\n  got  %d %s\n", i, c->target,
                  c->expr, want, rc, err);
    assert_int_equal(rc, -1);
    assert_null(m);
    assert_string_equal(err, want);
  }
}

/* The error names the line of the entry at fault, not the first one; a
 * short buffer gets a cut, terminated message; a NULL one is fine. */
static void
test_error_line_and_buffer(void **state)
{
  const struct spec specs[] = {
      {"displayName", "Join(' ', givenName, surname)", 20},
      {"jobTitle", "Left(jobTitle)", 21},
  };
  struct mapping *m = NULL;
  char err[256], small[12];

  (void)state;
  assert_int_equal(
      compile(CONFIG_OBJECT_GUEST, specs, 2, &m, err, sizeof(err)), -1);
  assert_string_equal(
      err, "galbridge.conf:21: column 1: Left() takes 2 arguments, got 1");
  memset(small, 'X', sizeof(small));
  assert_int_equal(
      compile(CONFIG_OBJECT_GUEST, specs, 2, &m, small, sizeof(small)), -1);
  assert_string_equal(small, "galbridge.c");
  assert_int_equal(compile(CONFIG_OBJECT_GUEST, specs, 2, &m, NULL, 0), -1);
  assert_null(m);
}

/* ---------------------------------------------------------------------
 * The functions of issue 19: Microsoft's documented examples first, then
 * nulls, arrays, UTF-8 and the edges of each.
 */

static const struct eval_case more_cases[] = {
    /* Mid: "Generate user alias" example */
    {"displayName", "Append(Mid(givenName, 1, 3), Mid(surname, 1, 5))",
     "{\"givenName\":\"John\",\"surname\":\"Doe\"}", "\"JohDoe\""},
    {"displayName", "Mid(a, 2, 3)", "{\"a\":\"Zoë Ñuñez\"}", "\"oë \""},
    {"displayName", "Mid(a, 3, 100)", "{\"a\":\"Zoë\"}", "\"ë\""},
    {"displayName", "Mid(a, 4, 1)", "{\"a\":\"Zoë\"}", NULL},
    {"displayName", "Mid(a, 1, 0)", "{\"a\":\"Zoë\"}", NULL},
    {"displayName", "Mid(a, 1, 2)", "{}", NULL},
    {"displayName", "Mid(businessPhones, 2, 3)",
     "{\"businessPhones\":[\"\",\"12345\"]}", "\"234\""},
    /* Split: the documented example (pieces trimmed as it shows) */
    {"otherMails", "Split(extensionAttribute5, \",\")",
     "{\"extensionAttribute5\":\"PermissionSetOne, PermissionSetTwo\"}",
     "[\"PermissionSetOne\",\"PermissionSetTwo\"]"},
    {"otherMails", "Split(a, ';')", "{\"a\":\"x@a.example;;y@b.example;\"}",
     "[\"x@a.example\",\"y@b.example\"]"},
    {"otherMails", "Split(a, ' - ')", "{\"a\":\"Åsa - Zoë\"}",
     "[\"Åsa\",\"Zoë\"]"},
    {"otherMails", "Split(a, ',')", "{\"a\":\" , ,\"}", NULL},
    {"otherMails", "Split(a, ',')", "{}", NULL},
    {"otherMails", "Split(a, b)", "{\"a\":\"x,y\"}", "[\"x,y\"]"},
    {"displayName", "Split(a, ',')", "{\"a\":\"first, second\"}", "\"first\""},
    {"displayName", "Join('+', Split(a, ','))", "{\"a\":\"1,2,3\"}",
     "\"1+2+3\""},
    {"displayName", "ToUpper(Split(a, ','))", "{\"a\":\"x,y\"}", "\"X\""},
    /* Word: both documented examples */
    {"displayName", "Word('The quick brown fox', 3, ' ')", "{}", "\"brown\""},
    {"displayName", "Word('This,string!has&many separators', 3, ',!&#')", "{}",
     "\"has\""},
    {"displayName", "Word(a, 2, '·')", "{\"a\":\"Ünal··Zoë·x\"}", "\"Zoë\""},
    {"displayName", "Word(a, 4, ' ')", "{\"a\":\"a b c\"}", NULL},
    {"displayName", "Word(a, 0, ' ')", "{\"a\":\"a b c\"}", NULL},
    {"displayName", "Word(a, -1, ' ')", "{\"a\":\"a b c\"}", NULL},
    {"displayName", "Word(a, 1, ' ')", "{}", NULL},
    {"displayName", "Word(a, 1, b)", "{\"a\":\"a b\"}", "\"a b\""},
    /* NormalizeDiacritics: the documented example and the table */
    {"displayName", "NormalizeDiacritics(givenName)",
     "{\"givenName\":\"Zoë\"}", "\"Zoe\""},
    {"displayName", "NormalizeDiacritics(a)",
     "{\"a\":\"Łódź Straße Ærø Şişli Ĳ\"}", "\"Lodz Strasse AEroe Sisli Ĳ\""},
    {"displayName", "NormalizeDiacritics(a)",
     "{\"a\":\"Jose\\u0301 A\\u0331 \\u01d5 \\u1e53\"}", "\"Jose A U o\""},
    {"displayName", "NormalizeDiacritics(a)", "{\"a\":\"Дмитрий 李\"}",
     "\"Дмитрий 李\""},
    {"displayName", "NormalizeDiacritics(a)", "{\"a\":\"\\u0301\"}", NULL},
    /* StripSpaces: only U+0020 */
    {"displayName", "StripSpaces(a)", "{\"a\":\" J o\\th n \"}",
     "\"Jo\\thn\""},
    {"displayName", "StripSpaces(a)", "{\"a\":\"   \"}", NULL},
    /* ToLower + NormalizeDiacritics + StripSpaces: the documented UPN */
    {"displayName",
     "ToLower(Join(\"@\", NormalizeDiacritics(StripSpaces(Join(\".\", "
     "PreferredFirstName, PreferredLastName))), \"contoso.com\"))",
     "{\"PreferredFirstName\":\"John\",\"PreferredLastName\":\"Smith\"}",
     "\"john.smith@contoso.com\""},
    /* ToTitleCase: .NET's rule keeps words all in capitals */
    {"displayName", "ToTitleCase(a)", "{\"a\":\"john o'neil-smith\"}",
     "\"John O'Neil-Smith\""},
    {"displayName", "ToTitleCase(a, 'en-US')", "{\"a\":\"NASA rocket mAN\"}",
     "\"NASA Rocket Man\""},
    {"displayName", "ToTitleCase(a)", "{\"a\":\"éLODIE ñandú 3rd\"}",
     "\"Élodie Ñandú 3rd\""},
    {"displayName", "ToTitleCase(a)", "{}", NULL},
    /* PCase: the documented examples */
    {"displayName", "PCase(firstName)",
     "{\"firstName\":\"PABLO GONSALVES (SECOND)\"}",
     "\"Pablo Gonsalves (Second)\""},
    {"displayName", "PCase(lastName, \" '-\")",
     "{\"lastName\":\"PINTO-DE'SILVA\"}", "\"Pinto-De'Silva\""},
    {"displayName", "PCase(Join(\" \", firstName, lastName))",
     "{\"firstName\":\"GREGORY\",\"lastName\":\"JAMES\"}",
     "\"Gregory James\""},
    /* FormatDateTime: the documented example, generalized time */
    {"displayName",
     "FormatDateTime(extensionAttribute1, , \"yyyyMMddHHmmss.fZ\", "
     "\"yyyy-MM-dd\")",
     "{\"extensionAttribute1\":\"20150123105347.1Z\"}", "\"2015-01-23\""},
    {"displayName",
     "FormatDateTime(a, null, 'yyyy-MM-ddTHH:mm:sszzz', "
     "'dddd, d MMMM yyyy h:mm tt zzz')",
     "{\"a\":\"2020-03-16T07:05:09+02:00\"}",
     "\"Monday, 16 March 2020 7:05 AM +02:00\""},
    {"displayName",
     "FormatDateTime(a, '', 'M/d/yyyy hh:mm:ss tt', 'yyyy-MM-ddTHH:mm:ss')",
     "{\"a\":\" 12/31/2020 11:59:59 PM \"}", "\"2020-12-31T23:59:59\""},
    {"displayName",
     "FormatDateTime(a, , 'yyyy-MM-ddTHH:mm:ss.fffK', "
     "'yyyyMMddHHmmss.FK')",
     "{\"a\":\"2015-01-23T10:53:47.100Z\"}", "\"20150123105347.1Z\""},
    {"displayName",
     "FormatDateTime(a, , 'yyyyMMdd', \"ddd d MMM yy 'at' \"\"x\"\" \\h\")",
     "{\"a\":\"20240229\"}", "\"Thu 29 Feb 24 at x h\""},
    {"displayName", "FormatDateTime(a, , 'yyyyMMdd', \"'week' d\")",
     "{\"a\":\"20240229\"}", "\"week 29\""},
    {"displayName", "FormatDateTime(a, , 'yyyyMMdd', 'yyyy')", "{}", NULL},
    /* Not, IsNullOrEmpty, IsNull */
    {"displayName", "Not(IsPresent(mail))", "{}", "\"true\""},
    {"displayName", "Not(IsPresent(mail))", "{\"mail\":\"a\"}", "\"false\""},
    {"displayName", "Not('True')", "{}", "\"false\""},
    {"displayName", "Not('no')", "{}", "\"true\""},
    {"displayName", "Not(a)", "{\"a\":true}", "\"false\""},
    {"displayName", "Not(null)", "{}", "\"true\""},
    {"displayName", "IsNullOrEmpty(mail)", "{\"mail\":\"\"}", "\"true\""},
    {"displayName", "IsNullOrEmpty(mail)", "{\"mail\":\"x\"}", "\"false\""},
    {"displayName", "IsNull(mail)", "{}", "\"true\""},
    {"displayName", "IsNull(mail)", "{\"mail\":\"\"}", "\"true\""},
    {"displayName", "IsNull(businessPhones)", "{\"businessPhones\":[\"1\"]}",
     "\"false\""},
    {"displayName", "IIF(IsNullOrEmpty(department), 'none', department)", "{}",
     "\"none\""},
    {"displayName", "IIF(Not(IsNull(department)), department, 'none')",
     "{\"department\":\"Sales\"}", "\"Sales\""},
    /* SelectUniqueValue without a target to ask: the first not null */
    {"mail", "SelectUniqueValue(x, mail, 'c@d.example')",
     "{\"mail\":\"a@b.example\"}", "\"a@b.example\""},
    {"mail", "SelectUniqueValue(x, y)", "{\"mail\":\"a@b.example\"}", NULL},
};

static void
test_more_functions(void **state)
{
  (void)state;
  for (size_t i = 0; i < N_OF(more_cases); i++) {
    const struct eval_case *c = &more_cases[i];
    struct spec s = {c->target, c->expr, 3};
    struct mapping *m = NULL;
    char err[256] = "", what[512];
    json_t *src, *got;

    if (compile(CONFIG_OBJECT_GUEST, &s, 1, &m, err, sizeof(err)) != 0)
      fail_msg("case %zu: %s = %s: %s", i, c->target, c->expr, err);
    src = parse_json(c->source);
    got = mapping_eval(m, src, err, sizeof(err));
    if (got == NULL)
      fail_msg("case %zu: %s = %s: %s", i, c->target, c->expr, err);
    snprintf(what, sizeof(what), "case %zu: %s = %s over %s", i, c->target,
             c->expr, c->source);
    check_value(what, json_object_get(got, c->target), c->expect);
    json_decref(got);
    json_decref(src);
    mapping_free(m);
  }
}

static const struct error_case more_errors[] = {
    {CONFIG_OBJECT_GUEST, "displayName", "Mid(a, 0, 2)",
     "column 8: Mid()'s start counts from 1, got 0"},
    {CONFIG_OBJECT_GUEST, "displayName", "Mid(a, 1, -1)",
     "column 11: Mid()'s length must be 0 or more, got -1"},
    {CONFIG_OBJECT_GUEST, "displayName", "Mid(a, b, 2)",
     "column 8: Mid()'s start must be a whole number, e.g. Mid(x, 1, 3)"},
    {CONFIG_OBJECT_GUEST, "displayName", "Mid(a, 1)",
     "column 1: Mid() takes 3 arguments, got 2"},
    {CONFIG_OBJECT_GUEST, "displayName", "Split(a)",
     "column 1: Split() takes 2 arguments, got 1"},
    {CONFIG_OBJECT_GUEST, "displayName", "Split(a, '')",
     "column 10: Split()'s delimiter is empty"},
    {CONFIG_OBJECT_GUEST, "displayName", "Split(a, 2)",
     "column 10: a number is only allowed as a count or position of Left(), "
     "Mid() or Word(); quote it to use it as text"},
    {CONFIG_OBJECT_GUEST, "displayName", "Word(a, '3', ' ')",
     "column 9: Word()'s number must be a whole number, e.g. Word(x, 2, "
     "\" \")"},
    {CONFIG_OBJECT_GUEST, "displayName", "Word(a, 3, '')",
     "column 12: Word()'s delimiters must be text with at least one "
     "character"},
    {CONFIG_OBJECT_GUEST, "displayName", "Word(a, 3)",
     "column 1: Word() takes 3 arguments, got 2"},
    {CONFIG_OBJECT_GUEST, "displayName", "Not()",
     "column 1: Not() takes 1 argument, got 0"},
    {CONFIG_OBJECT_GUEST, "displayName", "IsNull(a, b)",
     "column 1: IsNull() takes 1 argument, got 2"},
    {CONFIG_OBJECT_GUEST, "displayName", "IsNullOrEmpty()",
     "column 1: IsNullOrEmpty() takes 1 argument, got 0"},
    {CONFIG_OBJECT_GUEST, "displayName", "NormalizeDiacritics(a, b)",
     "column 1: NormalizeDiacritics() takes 1 argument, got 2"},
    {CONFIG_OBJECT_GUEST, "displayName", "StripSpaces()",
     "column 1: StripSpaces() takes 1 argument, got 0"},
    {CONFIG_OBJECT_GUEST, "displayName", "ToTitleCase(a, 'en', 'x')",
     "column 1: ToTitleCase() takes 1 or 2 arguments, got 3"},
    {CONFIG_OBJECT_GUEST, "displayName", "ToTitleCase(a, 'en US')",
     "column 16: ToTitleCase()'s culture must be a culture name such as "
     "\"en-US\""},
    {CONFIG_OBJECT_GUEST, "displayName", "FormatDateTime(a, , 'yyyy')",
     "column 1: FormatDateTime() takes 4 arguments, got 3"},
    {CONFIG_OBJECT_GUEST, "displayName",
     "FormatDateTime(a, 'AdjustToUniversal', 'yyyy', 'yy')",
     "column 19: FormatDateTime()'s dateTimeStyles: only the default is "
     "supported; leave it empty, e.g. FormatDateTime(x, , \"yyyyMMdd\", "
     "\"yyyy-MM-dd\")"},
    {CONFIG_OBJECT_GUEST, "displayName", "FormatDateTime(a, , b, 'yy')",
     "column 21: FormatDateTime()'s input format must be a quoted constant"},
    {CONFIG_OBJECT_GUEST, "displayName", "FormatDateTime(a, , 'yy', '')",
     "column 27: FormatDateTime()'s output format: the format is empty"},
    {CONFIG_OBJECT_GUEST, "displayName",
     "FormatDateTime(a, , 'gg yyyy', 'yy')",
     "column 21: FormatDateTime()'s input format: 'g' (the era) is not "
     "supported"},
    {CONFIG_OBJECT_GUEST, "displayName", "FormatDateTime(a, , 'yyyy', \"'x\")",
     "column 29: FormatDateTime()'s output format: unterminated quote or "
     "trailing backslash in the format"},
    {CONFIG_OBJECT_GUEST, "displayName", "FormatDateTime(a, , 'HHH', 'yy')",
     "column 21: FormatDateTime()'s input format: 'H' repeated 3 times (at "
     "most 2)"},
    {CONFIG_OBJECT_GUEST, "mail", "SelectUniqueValue(a)",
     "column 1: SelectUniqueValue() takes at least 2 arguments, got 1"},
    {CONFIG_OBJECT_GUEST, "mail", "Trim(SelectUniqueValue(a, b))",
     "column 6: SelectUniqueValue() must be the whole expression, not "
     "inside another function"},
    {CONFIG_OBJECT_GUEST, "displayName", "SelectUniqueValue(a, b)",
     "SelectUniqueValue() picks a value no other object holds, which only "
     "means something for an attribute the target keeps unique (mail); "
     "'displayName' is not one"},
    {CONFIG_OBJECT_MAILCONTACT, "DisplayName", "SelectUniqueValue(a, b)",
     "SelectUniqueValue() picks a value no other object holds, which only "
     "means something for an attribute the target keeps unique "
     "(ExternalEmailAddress, PrimarySmtpAddress, Alias, "
     "MicrosoftOnlineServicesID, Name); 'DisplayName' is not one"},
};

static void
test_more_errors(void **state)
{
  (void)state;
  for (size_t i = 0; i < N_OF(more_errors); i++) {
    const struct error_case *c = &more_errors[i];
    struct spec s = {c->target, c->expr, 14};
    struct mapping *m = NULL;
    char err[512] = "", want[512];
    int rc = compile(c->object, &s, 1, &m, err, sizeof(err));

    snprintf(want, sizeof(want), "galbridge.conf:14: %s", c->message);
    if (rc != -1 || strcmp(err, want) != 0)
      print_error("case %zu: %s = %s\n  want %s\n  got  %d %s\n", i, c->target,
                  c->expr, want, rc, err);
    assert_int_equal(rc, -1);
    assert_null(m);
    assert_string_equal(err, want);
  }
}

/* SelectUniqueValue() asking the target: the documented UPN example. */
struct taken_set {
  const char *values[4];
  const char *target; /* the last target asked about */
  int calls;
  int fail;        /* answer -1 */
  const char *own; /* held by the person's own copy alone */
};

static int
taken_in(void *arg, const char *target, const char *value)
{
  struct taken_set *t = arg;

  t->target = target;
  t->calls++;
  if (t->fail)
    return -1;
  if (t->own != NULL && strcmp(t->own, value) == 0)
    return MAPPING_TAKEN_OWN;
  for (size_t i = 0; i < N_OF(t->values) && t->values[i] != NULL; i++) {
    if (strcmp(t->values[i], value) == 0)
      return 1;
  }
  return 0;
}

static json_t *
unique_eval(struct taken_set *t, int *exhausted, char *err, size_t errlen)
{
  static const char expr[] =
      "SelectUniqueValue("
      "Join(\"@\", NormalizeDiacritics(StripSpaces(Join(\".\", "
      "PreferredFirstName, PreferredLastName))), \"contoso.com\"), "
      "Join(\"@\", NormalizeDiacritics(StripSpaces(Join(\".\", "
      "Mid(PreferredFirstName, 1, 1), PreferredLastName))), "
      "\"contoso.com\"), "
      "Join(\"@\", NormalizeDiacritics(StripSpaces(Join(\".\", "
      "Mid(PreferredFirstName, 1, 2), PreferredLastName))), "
      "\"contoso.com\"))";
  struct spec s = {"mail", expr, 3};
  struct mapping *m = NULL;
  json_t *src = parse_json("{\"PreferredFirstName\":\"John\","
                           "\"PreferredLastName\":\"Smith\"}");
  json_t *got;

  assert_int_equal(compile(CONFIG_OBJECT_GUEST, &s, 1, &m, err, errlen), 0);
  got = mapping_eval_taken(m, src, taken_in, t, exhausted, err, errlen);
  json_decref(src);
  mapping_free(m);
  return got;
}

static void
test_select_unique(void **state)
{
  struct taken_set none = {{NULL}, NULL, 0, 0, NULL};
  struct taken_set first = {{"John.Smith@contoso.com"}, NULL, 0, 0, NULL};
  struct taken_set two = {
      {"John.Smith@contoso.com", "J.Smith@contoso.com"}, NULL, 0, 0, NULL};
  struct taken_set all = {{"John.Smith@contoso.com", "J.Smith@contoso.com",
                           "Jo.Smith@contoso.com"},
                          NULL,
                          0,
                          0,
                          NULL};
  struct taken_set broken = {{NULL}, NULL, 0, 1, NULL};
  char err[256];
  int exhausted = -1;
  json_t *got;

  (void)state;
  got = unique_eval(&none, &exhausted, err, sizeof(err));
  check_value("free", json_object_get(got, "mail"),
              "\"John.Smith@contoso.com\"");
  /* Every candidate is asked: the copy may hold a later one. */
  assert_int_equal(none.calls, 3);
  assert_string_equal(none.target, "mail");
  assert_int_equal(exhausted, 0);
  json_decref(got);

  got = unique_eval(&first, &exhausted, err, sizeof(err));
  check_value("first taken", json_object_get(got, "mail"),
              "\"J.Smith@contoso.com\"");
  assert_int_equal(first.calls, 3);
  json_decref(got);

  /* The copy holds the third, given when the first two were taken; they
   * came free since: it keeps the third. */
  none.own = "Jo.Smith@contoso.com";
  got = unique_eval(&none, &exhausted, err, sizeof(err));
  check_value("own kept", json_object_get(got, "mail"),
              "\"Jo.Smith@contoso.com\"");
  json_decref(got);
  none.own = NULL;

  got = unique_eval(&two, &exhausted, err, sizeof(err));
  check_value("two taken", json_object_get(got, "mail"),
              "\"Jo.Smith@contoso.com\"");
  json_decref(got);

  assert_null(unique_eval(&all, &exhausted, err, sizeof(err)));
  assert_int_equal(exhausted, 1);
  assert_string_equal(err, "cannot map 'mail': SelectUniqueValue(): every "
                           "candidate (3) is taken in the target by another "
                           "object");

  assert_null(unique_eval(&broken, &exhausted, err, sizeof(err)));
  assert_int_equal(exhausted, 0);
  assert_string_equal(err, "cannot map 'mail': SelectUniqueValue(): cannot "
                           "tell whether candidate 1 is taken in the "
                           "target");
}

/* Exchange targets that are unique take SelectUniqueValue(); the values
 * built by the new functions are capped like every other. */
static void
test_more_limits(void **state)
{
  const struct spec alias[] = {
      {"Alias", "SelectUniqueValue(mailNickname, Left(mail, 5))", 3},
      {"ExternalEmailAddress", "SelectUniqueValue(mail, otherMails)", 4},
  };
  const struct spec diacritics = {"displayName", "NormalizeDiacritics(a)", 3};
  const struct spec date = {
      "displayName", "FormatDateTime(a, , 'yyyyMMddHHmmss.fZ', 'yyyy-MM-dd')",
      3};
  struct mapping *m = NULL;
  char err[256];
  size_t n = 70000;
  char *big = malloc(n * 2 + 1);
  json_t *src;

  (void)state;
  assert_int_equal(
      compile(CONFIG_OBJECT_MAILCONTACT, alias, 2, &m, err, sizeof(err)), 0);
  mapping_free(m);

  /* 70,000 two-byte letters: 140,000 bytes in, 70,000 out: too long */
  assert_non_null(big);
  for (size_t i = 0; i < n; i++)
    memcpy(big + 2 * i, "\xc3\xa9", 2);
  big[n * 2] = '\0';
  src = json_pack("{s:s}", "a", big);
  assert_int_equal(
      compile(CONFIG_OBJECT_GUEST, &diacritics, 1, &m, err, sizeof(err)), 0);
  assert_null(mapping_eval(m, src, err, sizeof(err)));
  assert_string_equal(err, "cannot map 'displayName': value longer than 65536 "
                           "bytes");
  mapping_free(m);
  json_decref(src);
  free(big);

  /* a date that is not one fails that object, without echoing it */
  assert_int_equal(
      compile(CONFIG_OBJECT_GUEST, &date, 1, &m, err, sizeof(err)), 0);
  src = json_pack("{s:s}", "a", "20150230105347.1Z");
  assert_null(mapping_eval(m, src, err, sizeof(err)));
  assert_string_equal(err, "cannot map 'displayName': FormatDateTime(): the "
                           "value (17 bytes) is not a date in the format "
                           "\"yyyyMMddHHmmss.fZ\"");
  json_decref(src);
  src = json_pack("{s:s}", "a", "2015-01-23");
  assert_null(mapping_eval(m, src, err, sizeof(err)));
  json_decref(src);
  mapping_free(m);
}

/* ---------------------------------------------------------------------
 * Defaults and the overlay
 */

static const char *const guest_defaults[] = {
    "businessPhones", "city",        "companyName",    "country",
    "department",     "displayName", "givenName",      "jobTitle",
    "mail",           "mobilePhone", "officeLocation", "surname",
};

static const char *const exchange_defaults[] = {
    "City",
    "Company",
    "CountryOrRegion",
    "Department",
    "DisplayName",
    "ExternalEmailAddress",
    "FirstName",
    "LastName",
    "MobilePhone",
    "Office",
    "Phone",
    "PostalCode",
    "StateOrProvince",
    "StreetAddress",
    "Title",
};

/* A full Graph user as the reader stores it. */
static const char *const full_user =
    "{\"id\":\"0b0c\",\"displayName\":\"Zoë Ångström\",\"givenName\":\"Zoë\","
    "\"surname\":\"Ångström\",\"mail\":\"zoe@contoso.example\","
    "\"userPrincipalName\":\"zoe@contoso.example\",\"jobTitle\":\"Engineer\","
    "\"department\":\"R&D\",\"companyName\":\"Contoso\","
    "\"officeLocation\":\"B1\",\"businessPhones\":[\"+1 555 0100\","
    "\"+1 555 0101\"],\"mobilePhone\":\"+1 555 0199\","
    "\"streetAddress\":\"1 Main St\",\"city\":\"Springfield\","
    "\"state\":\"IL\",\"postalCode\":\"62701\",\"country\":\"US\","
    "\"accountEnabled\":true,\"userType\":\"Member\","
    "\"onPremisesExtensionAttributes\":{\"extensionAttribute1\":null}}";

static void
check_targets(const struct mapping *m, const char *const *want, size_t n)
{
  assert_int_equal(mapping_count(m), n);
  for (size_t i = 0; i < n; i++)
    assert_string_equal(mapping_target(m, i), want[i]);
  assert_null(mapping_target(m, n));
}

static void
test_defaults_guest(void **state)
{
  struct mapping *m = NULL;
  char err[256] = "";
  json_t *src = parse_json(full_user), *got;

  (void)state;
  assert_int_equal(mapping_compile(NULL, CONFIG_OBJECT_GUEST, FILE_NAME, &m,
                                   err, sizeof(err)),
                   0);
  check_targets(m, guest_defaults, N_OF(guest_defaults));
  got = mapping_eval(m, src, err, sizeof(err));
  assert_non_null(got);
  check_value("guest defaults", got,
              "{\"displayName\":\"Zoë Ångström\",\"givenName\":\"Zoë\","
              "\"surname\":\"Ångström\",\"mail\":\"zoe@contoso.example\","
              "\"jobTitle\":\"Engineer\",\"department\":\"R&D\","
              "\"companyName\":\"Contoso\",\"officeLocation\":\"B1\","
              "\"businessPhones\":[\"+1 555 0100\",\"+1 555 0101\"],"
              "\"mobilePhone\":\"+1 555 0199\",\"city\":\"Springfield\","
              "\"country\":\"US\"}");
  json_decref(got);

  /* Only non-null targets appear. */
  json_decref(src);
  src = parse_json("{\"mail\":\"a@b\",\"displayName\":\"\",\"city\":null,"
                   "\"businessPhones\":[]}");
  got = mapping_eval(m, src, err, sizeof(err));
  check_value("sparse guest", got, "{\"mail\":\"a@b\"}");
  json_decref(got);
  json_decref(src);
  mapping_free(m);
}

static void
test_defaults_exchange(void **state)
{
  const enum config_object kinds[] = {CONFIG_OBJECT_MAILCONTACT,
                                      CONFIG_OBJECT_MAILUSER};
  json_t *src = parse_json(full_user);

  (void)state;
  for (size_t k = 0; k < N_OF(kinds); k++) {
    struct mapping *m = NULL;
    char err[256] = "";
    json_t *got;
    /* an empty section is the defaults too */
    struct config_mapping empty = {.name = (char *)"e"};

    assert_int_equal(
        mapping_compile(&empty, kinds[k], FILE_NAME, &m, err, sizeof(err)), 0);
    check_targets(m, exchange_defaults, N_OF(exchange_defaults));
    got = mapping_eval(m, src, err, sizeof(err));
    assert_non_null(got);
    check_value("exchange defaults", got,
                "{\"DisplayName\":\"Zoë Ångström\",\"FirstName\":\"Zoë\","
                "\"LastName\":\"Ångström\","
                "\"ExternalEmailAddress\":\"zoe@contoso.example\","
                "\"Company\":\"Contoso\",\"Department\":\"R&D\","
                "\"Title\":\"Engineer\",\"Phone\":\"+1 555 0100\","
                "\"MobilePhone\":\"+1 555 0199\",\"Office\":\"B1\","
                "\"StreetAddress\":\"1 Main St\",\"City\":\"Springfield\","
                "\"StateOrProvince\":\"IL\",\"PostalCode\":\"62701\","
                "\"CountryOrRegion\":\"US\"}");
    json_decref(got);
    mapping_free(m);
  }
  json_decref(src);
}

/* object = groupcontact: the group's name and address, nothing of a
 * person's (no FirstName, no Company...), no Alias unless mapped. */
static void
test_defaults_groupcontact(void **state)
{
  static const char *const want[] = {"DisplayName", "ExternalEmailAddress"};
  json_t *src = parse_json(
      "{\"displayName\":\"Sales\",\"mail\":\"sales@contoso.example\","
      "\"mailNickname\":\"sales\",\"mailEnabled\":true,"
      "\"groupTypes\":[\"Unified\"]}");
  const struct spec alias = {"Alias", "mailNickname", 3};
  const struct spec first = {"FirstName", "displayName", 4};
  struct mapping *m = NULL;
  char err[256] = "";
  json_t *got;

  (void)state;
  assert_int_equal(mapping_compile(NULL, CONFIG_OBJECT_GROUPCONTACT, FILE_NAME,
                                   &m, err, sizeof(err)),
                   0);
  check_targets(m, want, N_OF(want));
  got = mapping_eval(m, src, err, sizeof(err));
  assert_non_null(got);
  check_value("groupcontact defaults", got,
              "{\"DisplayName\":\"Sales\","
              "\"ExternalEmailAddress\":\"sales@contoso.example\"}");
  json_decref(got);
  mapping_free(m);
  /* Alias from mailNickname when the mapping asks for it. */
  assert_int_equal(
      compile(CONFIG_OBJECT_GROUPCONTACT, &alias, 1, &m, err, sizeof(err)), 0);
  got = mapping_eval(m, src, err, sizeof(err));
  assert_string_equal(json_string_value(json_object_get(got, "Alias")),
                      "sales");
  json_decref(got);
  mapping_free(m);
  /* A person's field is no target of a group contact. */
  assert_int_equal(
      compile(CONFIG_OBJECT_GROUPCONTACT, &first, 1, &m, err, sizeof(err)),
      -1);
  assert_non_null(strstr(err, "FirstName"));
  json_decref(src);
}

static void
test_overlay(void **state)
{
  const struct spec specs[] = {
      {"DISPLAYNAME", "Join(' ', givenName, SURNAME)", 10}, /* replace */
      {"extensionattribute3",
       "onPremisesExtensionAttributes/extensionAttribute3", 11}, /* add */
      {"jobTitle", "null", 12},                                  /* drop */
      {"state", "null", 13}, /* drop what is not there: nothing */
      {"companyName", "'Contoso'", 14},
      {"otherMails", "Coalesce(otherMails, mail)", 15},
  };
  const char *const want[] = {
      "businessPhones", "city",        "companyName",         "country",
      "department",     "displayName", "extensionAttribute3", "givenName",
      "mail",           "mobilePhone", "officeLocation",      "otherMails",
      "surname",
  };
  struct mapping *m = NULL;
  char err[256] = "";
  json_t *src, *got, *sources;

  (void)state;
  assert_int_equal(
      compile(CONFIG_OBJECT_GUEST, specs, N_OF(specs), &m, err, sizeof(err)),
      0);
  check_targets(m, want, N_OF(want));
  src = parse_json(
      "{\"givenName\":\"Ann\",\"surname\":\"Lee\",\"displayName\":\"X\","
      "\"jobTitle\":\"Boss\",\"state\":\"IL\",\"mail\":\"ann@x\","
      "\"companyName\":\"Other\",\"onPremisesExtensionAttributes\":"
      "{\"extensionAttribute3\":\"e3\"}}");
  got = mapping_eval(m, src, err, sizeof(err));
  check_value("overlay", got,
              "{\"displayName\":\"Ann Lee\",\"givenName\":\"Ann\","
              "\"surname\":\"Lee\",\"mail\":\"ann@x\","
              "\"companyName\":\"Contoso\",\"extensionAttribute3\":\"e3\","
              "\"otherMails\":[\"ann@x\"]}");
  json_decref(got);
  json_decref(src);

  /* Top-level names, once each ignoring case (first spelling in target
   * order), sorted ignoring case; constants add nothing. */
  sources = mapping_sources(m);
  check_value("overlay sources", sources,
              "[\"businessPhones\",\"city\",\"country\",\"department\","
              "\"givenName\",\"mail\",\"mobilePhone\",\"officeLocation\","
              "\"onPremisesExtensionAttributes\",\"otherMails\","
              "\"SURNAME\"]");
  json_decref(sources);
  mapping_free(m);
}

static void
test_sources(void **state)
{
  struct mapping *m = NULL;
  char err[256] = "";
  json_t *sources;
  const struct spec specs[] = {
      {"Name", "IIF(a/x == B, Switch(c, d, e, f), Left(g, 2))", 3},
      {"CustomAttribute2", "Join(h, 'k', A, IsPresent(b/y))", 4},
  };

  (void)state;
  assert_int_equal(mapping_compile(NULL, CONFIG_OBJECT_GUEST, FILE_NAME, &m,
                                   err, sizeof(err)),
                   0);
  sources = mapping_sources(m);
  check_value("guest default sources", sources,
              "[\"businessPhones\",\"city\",\"companyName\",\"country\","
              "\"department\",\"displayName\",\"givenName\",\"jobTitle\","
              "\"mail\",\"mobilePhone\",\"officeLocation\",\"surname\"]");
  json_decref(sources);
  mapping_free(m);

  assert_int_equal(compile(CONFIG_OBJECT_MAILCONTACT, specs, N_OF(specs), &m,
                           err, sizeof(err)),
                   0);
  sources = mapping_sources(m);
  /* CustomAttribute2 sorts before Name: its "A" and "b" come first */
  check_value("contact sources", sources,
              "[\"A\",\"b\",\"businessPhones\",\"c\",\"city\","
              "\"companyName\",\"country\",\"d\",\"department\","
              "\"displayName\",\"e\",\"f\",\"g\",\"givenName\",\"h\","
              "\"jobTitle\",\"mail\",\"mobilePhone\",\"officeLocation\","
              "\"postalCode\",\"state\",\"streetAddress\",\"surname\"]");
  json_decref(sources);
  mapping_free(m);

  sources = mapping_sources(NULL);
  check_value("no mapping", sources, "[]");
  json_decref(sources);
}

/* ---------------------------------------------------------------------
 * Evaluation errors and limits
 */

static char *
repeat(char c, size_t n)
{
  char *s = malloc(n + 1);
  assert_non_null(s);
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

struct limit_case {
  const char *target;
  const char *expr;
  size_t len;         /* length of source attribute "a" */
  const char *expect; /* error, or NULL: fine */
};

static const struct limit_case limit_cases[] = {
    {"displayName", "a", 65536, NULL},
    {"displayName", "a", 65537,
     "cannot map 'displayName': value longer than 65536 bytes"},
    {"businessPhones", "a", 65537,
     "cannot map 'businessPhones': value longer than 65536 bytes"},
    {"businessPhones", "arr", 65537,
     "cannot map 'businessPhones': value longer than 65536 bytes"},
    {"jobTitle", "Left(a, 10)", 65537, NULL},
    {"jobTitle", "Join('', a, 'x')", 65535, NULL},
    {"jobTitle", "Join('', a, 'x')", 65536,
     "cannot map 'jobTitle': value longer than 65536 bytes"},
    {"jobTitle", "Join(a, 'x', 'y')", 65535,
     "cannot map 'jobTitle': value longer than 65536 bytes"},
    {"city", "Append(a, 'x')", 65536,
     "cannot map 'city': value longer than 65536 bytes"},
    {"city", "Replace(a, 'x', 'yy')", 40000,
     "cannot map 'city': value longer than 65536 bytes"},
    {"city", "Replace(a, 'x', 'y')", 65536, NULL},
    /* a value built too long is an error even when later cut short */
    {"city", "Left(Join('', a, a), 3)", 40000,
     "cannot map 'city': value longer than 65536 bytes"},
    {"city", "Left(Append(a, a), 3)", 40000,
     "cannot map 'city': value longer than 65536 bytes"},
    {"city", "Left(Replace(a, 'x', 'yy'), 3)", 40000,
     "cannot map 'city': value longer than 65536 bytes"},
    {"city", "ToUpper(a)", 65537,
     "cannot map 'city': value longer than 65536 bytes"},
    {"city", "Trim(a)", 65537,
     "cannot map 'city': value longer than 65536 bytes"},
};

static void
test_limits(void **state)
{
  (void)state;
  for (size_t i = 0; i < N_OF(limit_cases); i++) {
    const struct limit_case *c = &limit_cases[i];
    struct spec s = {c->target, c->expr, 2};
    struct mapping *m = NULL;
    char err[256] = "";
    char *a = repeat('x', c->len);
    json_t *src = json_pack("{s:s, s:[s]}", "a", a, "arr", a), *got;

    assert_non_null(src);
    assert_int_equal(compile(CONFIG_OBJECT_GUEST, &s, 1, &m, err, sizeof(err)),
                     0);
    got = mapping_eval(m, src, err, sizeof(err));
    if (c->expect == NULL) {
      if (got == NULL)
        fail_msg("case %zu: %s: %s", i, c->expr, err);
      assert_non_null(json_object_get(got, c->target));
    } else {
      if (got != NULL)
        fail_msg("case %zu: %s: no error", i, c->expr);
      assert_string_equal(err, c->expect);
    }
    json_decref(got);
    json_decref(src);
    mapping_free(m);
    free(a);
  }
}

struct bad_case {
  const char *target, *expr, *source, *expect;
};

static const struct bad_case bad_cases[] = {
    {"department", "manager", "{\"manager\":{\"id\":\"1\"}}",
     "cannot map 'department': attribute 'manager' is an object, not a "
     "value"},
    {"department", "ToLower(onPremisesExtensionAttributes)",
     "{\"onPremisesExtensionAttributes\":{}}",
     "cannot map 'department': attribute 'onPremisesExtensionAttributes' "
     "is an object, not a value"},
    {"otherMails", "identities", "{\"identities\":[{\"issuer\":\"x\"}]}",
     "cannot map 'otherMails': attribute 'identities' holds an array of "
     "non-strings"},
    {"city", "Join(' ', a/b)", "{\"a\":{\"b\":[1,2]}}",
     "cannot map 'city': attribute 'a/b' holds an array of non-strings"},
};

static void
test_eval_errors(void **state)
{
  char err[256];
  struct mapping *m = NULL;
  json_t *src, *got;

  (void)state;
  for (size_t i = 0; i < N_OF(bad_cases); i++) {
    const struct bad_case *c = &bad_cases[i];
    struct spec s = {c->target, c->expr, 2};

    assert_int_equal(compile(CONFIG_OBJECT_GUEST, &s, 1, &m, err, sizeof(err)),
                     0);
    src = parse_json(c->source);
    err[0] = '\0';
    got = mapping_eval(m, src, err, sizeof(err));
    assert_null(got);
    assert_string_equal(err, c->expect);
    json_decref(src);
    mapping_free(m);
  }

  /* Bad arguments */
  assert_int_equal(mapping_compile(NULL, CONFIG_OBJECT_GUEST, FILE_NAME, &m,
                                   err, sizeof(err)),
                   0);
  src = parse_json("[\"not\", \"an object\"]");
  assert_null(mapping_eval(m, src, err, sizeof(err)));
  assert_string_equal(err, "mapping_eval: source is not a JSON object");
  assert_null(mapping_eval(m, NULL, NULL, 0));
  json_decref(src);
  src = json_object();
  assert_null(mapping_eval(NULL, src, err, sizeof(err)));
  assert_string_equal(err, "mapping_eval: no mapping");
  got = mapping_eval(m, src, NULL, 0);
  check_value("empty source", got, "{}");
  json_decref(got);
  json_decref(src);
  mapping_free(m);

  assert_int_equal(mapping_compile(NULL, (enum config_object)42, FILE_NAME, &m,
                                   err, sizeof(err)),
                   -1);
  assert_null(m);
  assert_int_equal(mapping_compile(NULL, CONFIG_OBJECT_GUEST, FILE_NAME, NULL,
                                   err, sizeof(err)),
                   -1);
  assert_int_equal(mapping_count(NULL), 0);
  assert_null(mapping_target(NULL, 0));
  mapping_free(NULL);
}

/* One mapping evaluated many times gives the same answer each time (no
 * state leaks between calls; the scratch arena is reset). */
static void
test_eval_repeatable(void **state)
{
  const struct spec specs[] = {
      {"displayName",
       "Join(' ', ToUpper(Left(givenName, 1)), Replace(surname, 'ö', 'oe'))",
       2},
      {"department", "Append(department, ' / ', companyName)", 3},
  };
  struct mapping *m = NULL;
  char err[256];
  json_t *src = parse_json(full_user);

  (void)state;
  assert_int_equal(
      compile(CONFIG_OBJECT_GUEST, specs, N_OF(specs), &m, err, sizeof(err)),
      0);
  for (int i = 0; i < 3; i++) {
    json_t *got = mapping_eval(m, src, err, sizeof(err));
    assert_non_null(got);
    assert_string_equal(json_string_value(json_object_get(got, "displayName")),
                        "Z Ångstroem");
    assert_string_equal(json_string_value(json_object_get(got, "department")),
                        "R&D / Contoso");
    json_decref(got);
  }
  json_decref(src);
  mapping_free(m);
}

/* The default mapping over 100,000 objects: well under a second of CPU in
 * an optimised build (timed only there: sanitizers and valgrind are many
 * times slower, so they run fewer objects and only check results). */
static void
test_eval_speed(void **state)
{
  struct mapping *m = NULL;
  char err[256];
  json_t *src = parse_json(full_user);
  size_t n = 100000;
  int timed = 1;
  clock_t start;
  double secs;

  (void)state;
#if defined(__SANITIZE_ADDRESS__) || !defined(__OPTIMIZE__)
  timed = 0;
#endif
  if (RUNNING_ON_VALGRIND)
    timed = 0;
  if (!timed)
    n = 2000;
  assert_int_equal(mapping_compile(NULL, CONFIG_OBJECT_GUEST, FILE_NAME, &m,
                                   err, sizeof(err)),
                   0);
  start = clock();
  for (size_t i = 0; i < n; i++) {
    json_t *got = mapping_eval(m, src, err, sizeof(err));
    assert_non_null(got);
    assert_int_equal(json_object_size(got), N_OF(guest_defaults));
    json_decref(got);
  }
  secs = (double)(clock() - start) / CLOCKS_PER_SEC;
  print_message("mapping_eval: %zu objects in %.3f s CPU%s\n", n, secs,
                timed ? "" : " (not timed: instrumented build)");
  if (timed)
    assert_true(secs < 1.0);
  json_decref(src);
  mapping_free(m);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_eval_table),
      cmocka_unit_test(test_nesting_limit),
      cmocka_unit_test(test_expression_length),
      cmocka_unit_test(test_more_functions),
      cmocka_unit_test(test_more_errors),
      cmocka_unit_test(test_select_unique),
      cmocka_unit_test(test_more_limits),
      cmocka_unit_test(test_compile_errors),
      cmocka_unit_test(test_error_line_and_buffer),
      cmocka_unit_test(test_defaults_guest),
      cmocka_unit_test(test_defaults_exchange),
      cmocka_unit_test(test_defaults_groupcontact),
      cmocka_unit_test(test_overlay),
      cmocka_unit_test(test_sources),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_eval_errors),
      cmocka_unit_test(test_eval_repeatable),
      cmocka_unit_test(test_eval_speed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
