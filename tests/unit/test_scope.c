/*
 * Tests for scope: tables of (filter, attributes, expected match) over
 * every operator, precedence, null, case, arrays, booleans, integers,
 * paths, quoting and non-ASCII values; a table of filters that must be
 * refused with their exact message; the limits on length and nesting;
 * scope_filter_sources; the default scope with each of its reasons.
 *
 * Attribute objects are written with ` for " to keep the tables readable
 * (no value here contains a backquote); a NULL object means USER below.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scope.h"

/* The user most match cases run against. */
static const char USER[] =
    "{`id`: `1`, `displayName`: `Anna O'Brien`, `surname`: `O'Brien`,"
    " `givenName`: `Zoë`, `officeLocation`: `Zürich`,"
    " `department`: `Sales`, `jobTitle`: `Intern`, `city`: null,"
    " `mail`: `anna@contoso.com`, `accountEnabled`: true,"
    " `userType`: `Member`, `level`: 3, `neg`: -7,"
    " `big`: 9223372036854775807, `min`: -9223372036854775808,"
    " `flag`: `TRUE`,"
    " `proxyAddresses`: [`SMTP:anna@contoso.com`,"
    "                    `smtp:a.obrien@contoso.com`],"
    " `businessPhones`: [], `mixed`: [1, `two`, true, null, {`a`: 1}],"
    " `onPremisesExtensionAttributes`: {`extensionAttribute1`: `Blue`,"
    "                                   `extensionAttribute2`: null},"
    " `Country`: `DE`, `country`: `FR`}";

/* `text` with every ` made ", parsed; a new reference. */
static json_t *
json_of(const char *text)
{
  char *copy = strdup(text);
  json_error_t error;
  json_t *json;

  assert_non_null(copy);
  for (char *c = copy; *c != '\0'; c++)
    if (*c == '`')
      *c = '"';
  json = json_loads(copy, JSON_DECODE_ANY, &error);
  if (json == NULL)
    fail_msg("bad test JSON at %d: %s: %s", error.position, error.text, copy);
  free(copy);
  return json;
}

struct match_case {
  const char *filter;
  const char *attrs; /* NULL: USER */
  int want;
};

static const struct match_case match_cases[] = {
    /* eq, ne */
    {"department eq 'Sales'", NULL, 1},
    {"department eq 'Marketing'", NULL, 0},
    {"department ne 'Marketing'", NULL, 1},
    {"department ne 'Sales'", NULL, 0},
    {"department eq 'Sale'", NULL, 0},
    {"department eq 'Sales '", NULL, 0},
    /* startsWith, endsWith, in every spelling */
    {"startsWith(mail, 'anna@')", NULL, 1},
    {"startsWith(mail, 'bob')", NULL, 0},
    {"endsWith(mail, '@contoso.com')", NULL, 1},
    {"endsWith(mail, '@fabrikam.com')", NULL, 0},
    {"endsWith(mail, 'anna')", NULL, 0},
    {"startsWith(mail, '')", NULL, 1},
    {"startsWith(mail, 'anna@contoso.com.')", NULL, 0},
    {"endsWith(mail, 'xanna@contoso.com')", NULL, 0},
    {"startsWith(mail, 'anna@contoso.com')", NULL, 1},
    {"startswith(mail,'ANNA')", NULL, 1},
    {"STARTSWITH ( mail , 'Anna' )", NULL, 1},
    {"endswith(mail, '.COM')", NULL, 1},
    {"EndsWith(Mail, '.Com')", NULL, 1},
    /* functions on what is not a string */
    {"startsWith(level, '3')", NULL, 0},
    {"startsWith(accountEnabled, 't')", NULL, 0},
    {"startsWith(city, '')", NULL, 0},
    {"startsWith(missing, '')", NULL, 0},
    {"endsWith(onPremisesExtensionAttributes, '')", NULL, 0},
    {"startsWith(mixed, 'tw')", NULL, 1},
    {"startsWith(mixed, '1')", NULL, 0},
    {"not startsWith(mail, 'bob')", NULL, 1},
    /* and, or, not */
    {"department eq 'Sales' and jobTitle eq 'Intern'", NULL, 1},
    {"department eq 'Sales' and jobTitle eq 'CEO'", NULL, 0},
    {"department eq 'HR' and jobTitle eq 'Intern'", NULL, 0},
    {"department eq 'HR' or jobTitle eq 'Intern'", NULL, 1},
    {"department eq 'Sales' or jobTitle eq 'CEO'", NULL, 1},
    {"department eq 'HR' or jobTitle eq 'CEO'", NULL, 0},
    {"not department eq 'HR'", NULL, 1},
    {"not department eq 'Sales'", NULL, 0},
    {"not not department eq 'Sales'", NULL, 1},
    {"not not not department eq 'Sales'", NULL, 0},
    {"level eq 1 or level eq 2 or level eq 3", NULL, 1},
    {"level eq 1 or level eq 2 or level eq 4", NULL, 0},
    {"level eq 3 and neg eq -7 and big ne 0", NULL, 1},
    {"level eq 3 and neg eq -7 and big eq 0", NULL, 0},
    /* precedence: not > and > or; each row tells the two readings apart */
    {"department eq 'Sales' or department eq 'HR' and jobTitle eq 'CEO'", NULL,
     1},
    {"(department eq 'Sales' or department eq 'HR') and jobTitle eq 'CEO'",
     NULL, 0},
    {"jobTitle eq 'CEO' and department eq 'HR' or department eq 'Sales'", NULL,
     1},
    {"jobTitle eq 'CEO' and (department eq 'HR' or department eq 'Sales')",
     NULL, 0},
    {"not department eq 'Sales' and jobTitle eq 'CEO'", NULL, 0},
    {"not (department eq 'Sales' and jobTitle eq 'CEO')", NULL, 1},
    {"not department eq 'Sales' or jobTitle eq 'Intern'", NULL, 1},
    {"not (department eq 'Sales' or jobTitle eq 'Intern')", NULL, 0},
    /* parentheses */
    {"((department eq 'Sales'))", NULL, 1},
    {"(((department eq 'HR') or (jobTitle eq 'Intern')) and "
     "not (city ne null))",
     NULL, 1},
    {"(department eq 'Sales')and(level eq 3)", NULL, 1},
    {"not(department eq 'Sales')", NULL, 0},
    /* null, absent, empty array */
    {"city eq null", NULL, 1},
    {"city ne null", NULL, 0},
    {"missing eq null", NULL, 1},
    {"missing ne null", NULL, 0},
    {"department eq null", NULL, 0},
    {"department ne null", NULL, 1},
    {"city eq 'x'", NULL, 0},
    {"city ne 'x'", NULL, 1},
    {"missing eq 'x'", NULL, 0},
    {"missing ne 'x'", NULL, 1},
    {"businessPhones eq null", NULL, 1},
    {"businessPhones ne null", NULL, 0},
    {"businessPhones eq ''", NULL, 0},
    {"proxyAddresses eq null", NULL, 0},
    {"proxyAddresses ne null", NULL, 1},
    {"mixed eq null", NULL, 1},
    {"x eq null", "{`x`: ``}", 0},
    {"x eq ''", "{`x`: ``}", 1},
    /* case: names, values, keywords; an exact key wins */
    {"Department eq 'Sales'", NULL, 1},
    {"DEPARTMENT EQ 'SALES'", NULL, 1},
    {"department Eq 'sAlEs'", NULL, 1},
    {"department NE 'SALES'", NULL, 0},
    {"department eq 'Sales' AND NOT jobTitle Ne 'intern'", NULL, 1},
    {"department eq 'HR' Or city EQ NULL", NULL, 1},
    {"accountEnabled eq TRUE", NULL, 1},
    {"Country eq 'DE'", NULL, 1},
    {"country eq 'FR'", NULL, 1},
    {"country eq 'DE'", NULL, 0},
    {"Country eq 'FR'", NULL, 0},
    {"COUNTRY eq 'DE' or COUNTRY eq 'FR'", NULL, 1},
    /* arrays: eq when any element matches, ne when none does */
    {"proxyAddresses eq 'SMTP:anna@contoso.com'", NULL, 1},
    {"proxyAddresses eq 'smtp:A.OBrien@contoso.com'", NULL, 1},
    {"proxyAddresses eq 'smtp:x@contoso.com'", NULL, 0},
    {"proxyAddresses ne 'smtp:x@contoso.com'", NULL, 1},
    {"proxyAddresses ne 'smtp:anna@contoso.com'", NULL, 0},
    {"startsWith(proxyAddresses, 'smtp:a.')", NULL, 1},
    {"endsWith(proxyAddresses, '@fabrikam.com')", NULL, 0},
    {"mixed eq 1", NULL, 1},
    {"mixed eq 'TWO'", NULL, 1},
    {"mixed eq true", NULL, 1},
    {"mixed eq false", NULL, 0},
    {"mixed eq 2", NULL, 0},
    {"mixed ne 2", NULL, 1},
    /* booleans, and the strings true/false */
    {"accountEnabled eq true", NULL, 1},
    {"accountEnabled eq false", NULL, 0},
    {"accountEnabled ne false", NULL, 1},
    {"accountEnabled ne true", NULL, 0},
    {"accountEnabled eq 'TRUE'", NULL, 1},
    {"accountEnabled eq 'false'", NULL, 0},
    {"accountEnabled eq 'yes'", NULL, 0},
    {"accountEnabled eq 1", NULL, 0},
    {"accountEnabled eq null", NULL, 0},
    {"flag eq true", NULL, 1},
    {"flag eq false", NULL, 0},
    {"x eq false", "{`x`: `False`}", 1},
    {"x eq false", "{`x`: false}", 1},
    {"x eq 'false'", "{`x`: false}", 1},
    {"x eq true", "{`x`: `truex`}", 0},
    {"department eq true", NULL, 0},
    /* integers compare with JSON integers only */
    {"level eq 3", NULL, 1},
    {"level eq 4", NULL, 0},
    {"level ne 4", NULL, 1},
    {"level eq '3'", NULL, 0},
    {"level eq 03", NULL, 1},
    {"department eq 3", NULL, 0},
    {"neg eq -7", NULL, 1},
    {"neg eq 7", NULL, 0},
    {"big eq 9223372036854775807", NULL, 1},
    {"min eq -9223372036854775808", NULL, 1},
    {"x eq 3", "{`x`: 3.0}", 0},
    {"x eq 3", "{`x`: `3`}", 0},
    /* paths into complex properties */
    {"onPremisesExtensionAttributes/extensionAttribute1 eq 'blue'", NULL, 1},
    {"ONPREMISESEXTENSIONATTRIBUTES/EXTENSIONATTRIBUTE1 eq 'Blue'", NULL, 1},
    {"onPremisesExtensionAttributes/extensionAttribute1 ne 'Blue'", NULL, 0},
    {"onPremisesExtensionAttributes/extensionAttribute2 eq null", NULL, 1},
    {"onPremisesExtensionAttributes/extensionAttribute3 eq null", NULL, 1},
    {"onPremisesExtensionAttributes/extensionAttribute2 ne null", NULL, 0},
    {"onPremisesExtensionAttributes/extensionAttribute1 ne null", NULL, 1},
    {"startsWith(onPremisesExtensionAttributes/extensionAttribute1, 'bL')",
     NULL, 1},
    {"department/x eq null", NULL, 1},
    {"department/x eq 'Sales'", NULL, 0},
    {"missing/x/y eq null", NULL, 1},
    {"onPremisesExtensionAttributes eq 'Blue'", NULL, 0},
    {"m/name eq 'b'", "{`m`: [{`name`: `a`}, {`name`: `B`}]}", 1},
    {"m/name ne 'b'", "{`m`: [{`name`: `a`}, {`name`: `B`}]}", 0},
    {"m/name eq 'c'", "{`m`: [{`name`: `a`}, {`name`: `B`}]}", 0},
    {"m/name eq null", "{`m`: [{`name`: `a`}, {}]}", 1},
    {"m/name eq null", "{`m`: [{`name`: `a`}]}", 0},
    {"m/name eq null", "{`m`: [1, 2]}", 1},
    {"m/name eq null", "{`m`: []}", 1},
    {"m/name eq null", "{`m`: [{`name`: `a`}, 1]}", 1},
    {"m/name ne null", "{`m`: [{`name`: `a`}, 1]}", 0},
    {"m/name eq 'a'", "{`m`: [[{`name`: `a`}]]}", 0},
    {"a/b/c eq 1", "{`A`: {`B`: {`C`: 1}}}", 1},
    /* quotes */
    {"surname eq 'O''Brien'", NULL, 1},
    {"surname eq 'o''brien'", NULL, 1},
    {"displayName eq 'Anna O''Brien'", NULL, 1},
    {"surname eq 'OBrien'", NULL, 0},
    {"surname eq 'O''''Brien'", NULL, 0},
    {"startsWith(surname, 'O''')", NULL, 1},
    {"x eq ''''''", "{`x`: `''`}", 1},
    {"x eq 'a b  c'", "{`x`: `A B  C`}", 1},
    {"x eq '(or) and not eq'", "{`x`: `(OR) AND NOT EQ`}", 1},
    /* non-ASCII values: ASCII letters fold, others compare exactly */
    {"givenName eq 'Zoë'", NULL, 1},
    {"givenName eq 'zoë'", NULL, 1},
    {"givenName eq 'ZOË'", NULL, 0},
    {"givenName eq 'Zoe'", NULL, 0},
    {"startsWith(officeLocation, 'zü')", NULL, 1},
    {"endsWith(givenName, 'ë')", NULL, 1},
    {"endsWith(givenName, 'e')", NULL, 0},
    {"officeLocation eq 'Zurich'", NULL, 0},
    {"x eq '東京 🙂'", "{`x`: `東京 🙂`}", 1},
    /* attributes that look like keywords or functions */
    {"notes eq 'x' and order eq 'y' and android eq 'z' and nest eq 1",
     "{`notes`: `x`, `order`: `y`, `android`: `z`, `nest`: 1}", 1},
    {"startsWith eq 'a' and endsWith ne null",
     "{`startsWith`: `a`, `endsWith`: 1}", 1},
    {"_x1/y_2 eq 1", "{`_x1`: {`y_2`: 1}}", 1},
    /* white space anywhere between tokens */
    {"\tdepartment\neq\r'Sales'  ", NULL, 1},
    {"  (  level   eq 3 )  ", NULL, 1},
    /* in: eq any literal of the list */
    {"department in ('HR', 'Sales')", NULL, 1},
    {"department in ('HR', 'Legal')", NULL, 0},
    {"department in ('sales')", NULL, 1},
    {"DEPARTMENT IN ( 'x' ,'SALES' )", NULL, 1},
    {"department in ('Sale', 'Sales ')", NULL, 0},
    {"level in (1, 2, 3)", NULL, 1},
    {"level in ('3')", NULL, 0},
    {"accountEnabled in (false, true)", NULL, 1},
    {"city in (null, 'x')", NULL, 1},
    {"city in ('x')", NULL, 0},
    {"missing in (null)", NULL, 1},
    {"missing in ('x')", NULL, 0},
    {"businessPhones in (null)", NULL, 1},
    {"surname in ('O''Brien')", NULL, 1},
    {"givenName in ('ZOË', 'zoë')", NULL, 1},
    {"givenName in ('ZOË')", NULL, 0},
    /* in on arrays: any element equal to any literal */
    {"proxyAddresses in ('smtp:x@y', 'smtp:A.OBRIEN@contoso.com')", NULL, 1},
    {"proxyAddresses in ('smtp:x@y', 'smtp:z@y')", NULL, 0},
    {"mixed in (2, 'two')", NULL, 1},
    {"mixed in (2, 3)", NULL, 0},
    {"m/name in ('c', 'b')", "{`m`: [{`name`: `a`}, {`name`: `B`}]}", 1},
    {"onPremisesExtensionAttributes/extensionAttribute1 in ('red', 'blue')",
     NULL, 1},
    /* not in: none equal */
    {"not department in ('HR', 'Sales')", NULL, 0},
    {"not (department in ('HR', 'Legal'))", NULL, 1},
    {"not proxyAddresses in ('smtp:x@y', 'smtp:z@y')", NULL, 1},
    {"not missing in ('x')", NULL, 1},
    {"department in ('HR') or level in (3)", NULL, 1},
    {"department in ('Sales') and not jobTitle in ('Intern')", NULL, 0},
    {"x in ('a') and y eq 1", "{`x`: `A`, `y`: 1}", 1},
    /* contains: a substring, ASCII case folded */
    {"contains(mail, 'contoso')", NULL, 1},
    {"contains(mail, 'CONTOSO.')", NULL, 1},
    {"contains(mail, 'fabrikam')", NULL, 0},
    {"contains(mail, '')", NULL, 1},
    {"contains(mail, 'anna@contoso.com')", NULL, 1},
    {"contains(mail, 'anna@contoso.com.')", NULL, 0},
    {"Contains ( displayName , 'o''b' )", NULL, 1},
    {"contains(officeLocation, 'ÜR')", NULL, 0},
    {"contains(officeLocation, 'üR')", NULL, 1},
    {"contains(x, 'aab')", "{`x`: `aaab`}", 1},
    {"contains(x, 'abab')", "{`x`: `abaabab`}", 1},
    {"contains(x, 'abab')", "{`x`: `abaaba`}", 0},
    {"contains(x, 'aa')", "{`x`: `a`}", 0},
    /* contains on what is not a string, and on arrays */
    {"contains(level, '3')", NULL, 0},
    {"contains(city, '')", NULL, 0},
    {"contains(missing, '')", NULL, 0},
    {"contains(proxyAddresses, 'OBRIEN')", NULL, 1},
    {"contains(proxyAddresses, 'fabrikam')", NULL, 0},
    {"contains(mixed, 'w')", NULL, 1},
    {"contains(m/name, 'b')", "{`m`: [{`name`: `a`}, {`name`: `xBx`}]}", 1},
    {"not contains(mail, 'fabrikam')", NULL, 1},
    {"not contains(proxyAddresses, 'OBRIEN')", NULL, 0},
    {"contains eq 'a'", "{`contains`: `a`}", 1},
    /* attributes that are not an object: everything is absent */
    {"missing eq null", "[]", 1},
    {"department eq 'Sales'", "[]", 0},
    {"department ne 'Sales'", "`Sales`", 1},
};

static void
filter_match_table(void **state)
{
  int failures = 0;
  json_t *user = json_of(USER);

  (void)state;
  for (size_t i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]); i++) {
    const struct match_case *c = &match_cases[i];
    struct scope_filter *f = NULL;
    char err[256];
    json_t *attrs = c->attrs != NULL ? json_of(c->attrs) : json_incref(user);
    int got;

    if (scope_filter_parse(c->filter, &f, err, sizeof(err)) != 0) {
      print_error("case %zu: %s: refused: %s\n", i, c->filter, err);
      failures++;
    } else {
      got = scope_filter_match(f, attrs);
      if (got != c->want) {
        print_error("case %zu: %s: got %d, want %d\n", i, c->filter, got,
                    c->want);
        failures++;
      }
    }
    scope_filter_free(f);
    json_decref(attrs);
  }
  json_decref(user);
  assert_int_equal(failures, 0);
}

struct error_case {
  const char *filter;
  const char *message;
};

static const struct error_case error_cases[] = {
    {"", "empty filter"},
    {" \t\n", "empty filter"},
    {"department",
     "column 11: unexpected end of filter, expected 'eq', 'ne' or 'in' after "
     "'department'"},
    {"department gt 'Sales'",
     "column 12: expected 'eq', 'ne' or 'in' after 'department'"},
    /* columns count characters, not bytes: 'ü' is one */
    {"city eq 'Zürich' and department 'Sales'",
     "column 33: expected 'eq', 'ne' or 'in' after 'department'"},
    {"onPremisesExtensionAttributes/extensionAttribute1 'x'",
     "column 51: expected 'eq', 'ne' or 'in' after "
     "'onPremisesExtensionAttributes/extensionAttribute1'"},
    {"department = 'Sales'", "column 12: unexpected character '=' (use 'eq')"},
    {"department eq \"Sales\"",
     "column 15: unexpected character '\"' (strings take single quotes)"},
    {"a != 1", "column 3: unexpected character '!' (use 'ne')"},
    {"a <> 1", "column 3: unexpected character '<' (use 'ne')"},
    {"!(a eq 1)", "column 1: unexpected character '!' (use 'not')"},
    {"a eq 1 && b eq 2", "column 8: unexpected character '&' (use 'and')"},
    {"a eq 1 || b eq 2", "column 8: unexpected character '|' (use 'or')"},
    {"a eq 1;", "column 7: unexpected character ';'"},
    {"a eq 1 €", "column 8: unexpected character '€'"},
    {"a eq 1\x01", "column 7: unexpected character 0x01"},
    {"a eq", "column 5: unexpected end of filter, expected a value ('text', a "
             "number, true, false or null) after 'eq'"},
    {"a ne b",
     "column 6: expected a value ('text', a number, true, false or null) "
     "after 'ne'"},
    {"a eq (1)",
     "column 6: expected a value ('text', a number, true, false or null) "
     "after 'eq'"},
    {"a ne 'x", "column 6: unterminated string"},
    {"a eq 'O''Brien", "column 6: unterminated string"},
    {"x eq 'ü' or surname eq 'O''Brien) or a eq 1",
     "column 24: unterminated string"},
    {"(a eq 1", "column 8: missing ')' to close '(' at column 1"},
    {"a eq 1 and ((b eq 2) or c eq 3",
     "column 31: missing ')' to close '(' at column 12"},
    {"(a eq 1 b eq 2)", "column 9: expected 'and', 'or' or ')'"},
    {"a eq 1)", "column 7: unexpected ')'"},
    {"a eq 1 b eq 2", "column 8: expected 'and' or 'or'"},
    {"a eq true eq false", "column 11: expected 'and' or 'or'"},
    {"a eq 1 and",
     "column 11: unexpected end of filter, expected an attribute, a "
     "function, 'not' or '('"},
    {"a eq 1 and not",
     "column 15: unexpected end of filter, expected an attribute, a "
     "function, 'not' or '('"},
    {"and a eq 1",
     "column 1: expected an attribute, a function, 'not' or '('"},
    {"a eq 1 or or b eq 2",
     "column 11: expected an attribute, a function, 'not' or '('"},
    {"()", "column 2: expected an attribute, a function, 'not' or '('"},
    {"'x' eq a", "column 1: expected an attribute, a function, 'not' or '('"},
    {"true", "column 1: expected an attribute, a function, 'not' or '('"},
    {"NULL eq a", "column 1: expected an attribute, a function, 'not' or '('"},
    {"startsWith(mail 'a')",
     "column 17: expected ',' after the attribute in startsWith"},
    {"startsWith(mail, 1)",
     "column 18: expected a string as the second argument of startsWith"},
    {"startsWith(mail, null)",
     "column 18: expected a string as the second argument of startsWith"},
    {"endsWith('a', mail)",
     "column 10: expected an attribute as the first argument of endsWith"},
    {"endsWith(not, 'a')",
     "column 10: expected an attribute as the first argument of endsWith"},
    {"startsWith(mail, 'a'",
     "column 21: missing ')' to close '(' at column 11"},
    {"startsWith(mail, 'a', 'b')",
     "column 21: expected ')' after the arguments of startsWith"},
    {"startsWith(mail)",
     "column 16: expected ',' after the attribute in startsWith"},
    {"startsWith(",
     "column 12: unexpected end of filter, expected an attribute as the "
     "first argument of startsWith"},
    {"containz(mail, 'a')", "column 1: unknown function 'containz'"},
    {"contains(mail 'a')",
     "column 15: expected ',' after the attribute in contains"},
    {"contains(mail, 1)",
     "column 16: expected a string as the second argument of contains"},
    {"contains('a', mail)",
     "column 10: expected an attribute as the first argument of contains"},
    {"contains(mail, 'a', 'b')",
     "column 19: expected ')' after the arguments of contains"},
    {"contains(mail, 'a'", "column 19: missing ')' to close '(' at column 9"},
    {"a in 'x'", "column 6: expected '(' after 'in'"},
    {"a in", "column 5: unexpected end of filter, expected '(' after 'in'"},
    {"a in ()",
     "column 7: expected a value ('text', a number, true, false or null) in "
     "the list of 'in'"},
    {"a in ('x',)",
     "column 11: expected a value ('text', a number, true, false or null) "
     "after ','"},
    {"a in ('x' 'y')", "column 11: expected ',' or ')' in the list of 'in'"},
    {"a in ('x', b)",
     "column 12: expected a value ('text', a number, true, false or null) "
     "after ','"},
    {"a in ('x'", "column 10: missing ')' to close '(' at column 6"},
    {"a in ('x', 'y", "column 12: unterminated string"},
    {"a in (1.5)", "column 8: unexpected character '.'"},
    {"a in ['x']", "column 6: unexpected character '['"},
    {"in eq 1", "column 1: expected an attribute, a function, 'not' or '('"},
    {"a in ('x') in ('y')", "column 12: expected 'and' or 'or'"},
    {"not in ('x')",
     "column 5: expected an attribute, a function, 'not' or '('"},
    {"a/b(mail, 'a')", "column 4: expected 'eq', 'ne' or 'in' after 'a/b'"},
    {"a/ eq 1", "column 3: expected an attribute name after '/'"},
    {"a/b/1 eq 1", "column 5: expected an attribute name after '/'"},
    {"/a eq 1", "column 1: unexpected character '/'"},
    {"a eq 9223372036854775808", "column 6: integer out of range"},
    {"a eq -9223372036854775809", "column 6: integer out of range"},
    {"a eq 99999999999999999999999", "column 6: integer out of range"},
    {"a eq 12ab", "column 6: invalid number"},
    {"a eq -x", "column 6: unexpected character '-'"},
    {"a eq 1.5", "column 7: unexpected character '.'"},
    {"a eq '\xff'", "column 7: invalid UTF-8"},
    {"a eq 'ü\xc0\xaf'", "column 8: invalid UTF-8"},
    {"a eq '\xed\xa0\x80'", "column 7: invalid UTF-8"},
    {"a eq '\xe0\x80\xaf'", "column 7: invalid UTF-8"},
    {"a eq '\xf0\x80\x80\xaf'", "column 7: invalid UTF-8"},
    {"a eq '\xf4\x90\x80\x80'", "column 7: invalid UTF-8"},
    {"a eq '\xe2\x82'", "column 7: invalid UTF-8"},
    /* the leftmost problem is the one reported */
    {"a eq eq 'unterminated",
     "column 6: expected a value ('text', a number, true, false or null) "
     "after 'eq'"},
};

static void
filter_error_table(void **state)
{
  int failures = 0;

  (void)state;
  for (size_t i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
    const struct error_case *c = &error_cases[i];
    struct scope_filter *f = (struct scope_filter *)&failures; /* non-NULL */
    char err[256] = "untouched";
    int rc = scope_filter_parse(c->filter, &f, err, sizeof(err));

    if (rc != -1 || f != NULL) {
      print_error("case %zu: %s: accepted (rc %d)\n", i, c->filter, rc);
      failures++;
      if (rc == 0)
        scope_filter_free(f);
    } else if (strcmp(err, c->message) != 0) {
      print_error("case %zu: %s:\n  got  %s\n  want %s\n", i, c->filter, err,
                  c->message);
      failures++;
    }
  }
  assert_int_equal(failures, 0);
}

/* `n` copies of `unit`, then `middle`, then `n` copies of `tail`. */
static char *
repeat(const char *unit, int n, const char *middle, const char *tail)
{
  size_t cap = (strlen(unit) + strlen(tail)) * (size_t)n + strlen(middle) + 1;
  char *s = malloc(cap);
  size_t len = 0;

  assert_non_null(s);
  s[0] = '\0';
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(s + len, cap - len, "%s", unit);
  len += (size_t)snprintf(s + len, cap - len, "%s", middle);
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(s + len, cap - len, "%s", tail);
  return s;
}

static void
nesting_limit(void **state)
{
  struct scope_filter *f = NULL;
  char err[128];
  json_t *attrs = json_of("{`a`: 1}");
  char *text;

  (void)state;
  /* 64 parentheses are fine, the 65th is refused where it opens */
  text = repeat("(", 64, "a eq 1", ")");
  assert_int_equal(scope_filter_parse(text, &f, err, sizeof(err)), 0);
  assert_int_equal(scope_filter_match(f, attrs), 1);
  scope_filter_free(f);
  free(text);
  text = repeat("(", 65, "a eq 1", ")");
  assert_int_equal(scope_filter_parse(text, &f, err, sizeof(err)), -1);
  assert_null(f);
  assert_string_equal(err, "column 65: nesting deeper than 64");
  free(text);

  /* the same for 'not', and for both mixed */
  text = repeat("not ", 64, "a eq 1", "");
  assert_int_equal(scope_filter_parse(text, &f, err, sizeof(err)), 0);
  assert_int_equal(scope_filter_match(f, attrs), 1); /* an even count */
  scope_filter_free(f);
  free(text);
  text = repeat("not ", 65, "a eq 1", "");
  assert_int_equal(scope_filter_parse(text, &f, err, sizeof(err)), -1);
  assert_string_equal(err, "column 257: nesting deeper than 64");
  free(text);
  text = repeat("not (", 32, "a eq 2", ")");
  assert_int_equal(scope_filter_parse(text, &f, err, sizeof(err)), 0);
  assert_int_equal(scope_filter_match(f, attrs), 0);
  scope_filter_free(f);
  free(text);
  text = repeat("not (", 33, "a eq 2", ")");
  assert_int_equal(scope_filter_parse(text, &f, err, sizeof(err)), -1);
  assert_string_equal(err, "column 161: nesting deeper than 64");
  free(text);

  /* siblings do not add up: depth is how deep, not how many */
  text = repeat("(a eq 1) or ", 600, "(a eq 2)", "");
  assert_int_equal(scope_filter_parse(text, &f, err, sizeof(err)), 0);
  assert_int_equal(scope_filter_match(f, attrs), 1);
  scope_filter_free(f);
  free(text);
  json_decref(attrs);
}

/* A value a source tenant writes can be huge: contains() on it is one
 * pass (a naive search for 'aaa...ab' in 'aaa...a' would take the value's
 * length times the text's, minutes here), and in() on a long list too. */
static void
huge_values(void **state)
{
  size_t big = 4u << 20, word = 8000;
  char *value = malloc(big + 1), *text = malloc(word + 64);
  json_t *attrs;
  struct scope_filter *f = NULL;
  char err[128];

  (void)state;
  assert_non_null(value);
  assert_non_null(text);
  memset(value, 'a', big);
  value[big] = '\0';
  attrs = json_pack("{s:s}", "x", value);
  assert_non_null(attrs);
  memcpy(text, "contains(x, '", 13);
  memset(text + 13, 'A', word - 1);
  memcpy(text + 13 + word - 1, "b')", 4);
  assert_int_equal(scope_filter_parse(text, &f, err, sizeof(err)), 0);
  assert_int_equal(scope_filter_match(f, attrs), 0);
  scope_filter_free(f);
  /* the same text that is there, at the very end */
  value[big - 1] = 'B';
  json_object_set_new(attrs, "x", json_string(value));
  assert_int_equal(scope_filter_parse(text, &f, err, sizeof(err)), 0);
  assert_int_equal(scope_filter_match(f, attrs), 1);
  scope_filter_free(f);
  json_decref(attrs);
  free(value);
  free(text);
}

static void
length_limit(void **state)
{
  struct scope_filter *f = NULL;
  char err[128];
  char *text = malloc(8194);
  json_t *attrs = json_of("{`a`: 1}");

  (void)state;
  assert_non_null(text);
  /* a long chain of or up to exactly 8192 bytes */
  memset(text, ' ', 8192);
  for (size_t at = 0; at + 20 <= 8192; at += 10)
    memcpy(text + at, at == 0 ? "a eq 2   " : "or a eq 2", 9);
  memcpy(text + 8192 - 10, "or a eq 1 ", 10);
  text[8192] = '\0';
  assert_int_equal(scope_filter_parse(text, &f, err, sizeof(err)), 0);
  assert_int_equal(scope_filter_match(f, attrs), 1);
  scope_filter_free(f);
  /* one byte more is refused, before anything else is looked at */
  text[8192] = ' ';
  text[8193] = '\0';
  f = (struct scope_filter *)text;
  assert_int_equal(scope_filter_parse(text, &f, err, sizeof(err)), -1);
  assert_null(f);
  assert_string_equal(err, "filter longer than 8192 bytes");
  free(text);
  json_decref(attrs);
}

static void
parse_edges(void **state)
{
  char err[16];
  struct scope_filter *f = (struct scope_filter *)err; /* not NULL */
  json_t *attrs = json_of("{`department`: `Sales`}");

  (void)state;

  /* NULL text: refused like an empty one */
  assert_int_equal(scope_filter_parse(NULL, &f, err, sizeof(err)), -1);
  assert_null(f);
  assert_string_equal(err, "empty filter");
  /* no room for a message, or none wanted: still refused, nothing
   * written past the buffer */
  assert_int_equal(scope_filter_parse("a eq", &f, NULL, 0), -1);
  assert_int_equal(scope_filter_parse("a eq", &f, err, 0), -1);
  assert_int_equal(scope_filter_parse("a eq", &f, err, sizeof(err)), -1);
  assert_string_equal(err, "column 5: unexp");
  assert_int_equal(scope_filter_parse("a eq 'x", &f, err, 4), -1);
  assert_string_equal(err, "col");
  /* a message is cleared on success */
  assert_int_equal(
      scope_filter_parse("department eq 'sales'", &f, err, sizeof(err)), 0);
  assert_string_equal(err, "");
  assert_int_equal(scope_filter_match(f, attrs), 1);
  assert_int_equal(scope_filter_match(f, NULL), 0);
  scope_filter_free(f);
  /* no filter takes everyone; freeing none is fine */
  assert_int_equal(scope_filter_match(NULL, attrs), 1);
  scope_filter_free(NULL);
  json_decref(attrs);
}

struct sources_case {
  const char *filter;
  const char *want; /* JSON array */
};

static const struct sources_case sources_cases[] = {
    {"department eq 'x'", "[`department`]"},
    {"department eq 'x' or Department ne 'y' and startsWith(mail, 'a') and "
     "onPremisesExtensionAttributes/extensionAttribute1 eq 'z' or "
     "not (city eq null) or MAIL eq 'q' or "
     "onPremisesExtensionAttributes/extensionAttribute2 eq 'w' or "
     "endsWith(proxyAddresses, 'b')",
     "[`department`, `mail`, `onPremisesExtensionAttributes`, `city`, "
     "`proxyAddresses`]"},
    {"not not (a eq 1 and (b eq 2 or (c/d eq 3)))", "[`a`, `b`, `c`]"},
    {"city in ('x') or contains(mail, 'y') or CITY in (1)",
     "[`city`, `mail`]"},
};

/* Case i gave `got` where `want` was expected (both taken). */
static void
expect_json(size_t i, json_t *got, json_t *want)
{
  assert_non_null(got);
  if (!json_equal(got, want)) {
    char *text = json_dumps(got, 0);
    print_error("case %zu: got %s\n", i, text);
    free(text);
    fail();
  }
  json_decref(got);
  json_decref(want);
}

/* Each clause on its own, written back as the filter says it. */
static const struct {
  const char *filter, *attrs, *want;
} clauses_cases[] = {
    {"department eq 'Sales' and not (jobTitle eq 'Intern')",
     "{\"department\": \"sales\", \"jobTitle\": \"Intern\"}",
     "[{\"clause\": \"department eq 'Sales'\", \"result\": true},"
     " {\"clause\": \"jobTitle eq 'Intern'\", \"result\": true}]"},
    {"startsWith(mail, 'a') or endsWith(mail, '.org')",
     "{\"mail\": \"bob@x.org\"}",
     "[{\"clause\": \"startsWith(mail, 'a')\", \"result\": false},"
     " {\"clause\": \"endsWith(mail, '.org')\", \"result\": true}]"},
    {"city ne null and surname eq 'O''Brien'", "{\"surname\": \"o'brien\"}",
     "[{\"clause\": \"city ne null\", \"result\": false},"
     " {\"clause\": \"surname eq 'O''Brien'\", \"result\": true}]"},
    {"onPremisesExtensionAttributes/extensionAttribute1 eq 'x' or "
     "employeeId eq 42 or accountEnabled eq false",
     "{\"onPremisesExtensionAttributes\": {\"extensionAttribute1\": \"X\"},"
     " \"employeeId\": 42, \"accountEnabled\": true}",
     "[{\"clause\": \"onPremisesExtensionAttributes/extensionAttribute1 eq "
     "'x'\", \"result\": true},"
     " {\"clause\": \"employeeId eq 42\", \"result\": true},"
     " {\"clause\": \"accountEnabled eq false\", \"result\": false}]"},
    {"city in ('Bern', 'O''Hare', 3, null, true) or contains(mail, 'x')",
     "{\"city\": \"bern\", \"mail\": \"a@b\"}",
     "[{\"clause\": \"city in ('Bern', 'O''Hare', 3, null, true)\","
     " \"result\": true},"
     " {\"clause\": \"contains(mail, 'x')\", \"result\": false}]"},
};

static void
filter_clauses(void **state)
{
  json_t *none;

  (void)state;
  for (size_t i = 0; i < sizeof(clauses_cases) / sizeof(clauses_cases[0]);
       i++) {
    struct scope_filter *f = NULL;
    char err[256];
    json_t *attrs = json_of(clauses_cases[i].attrs);
    json_t *got, *want = json_of(clauses_cases[i].want);

    assert_int_equal(
        scope_filter_parse(clauses_cases[i].filter, &f, err, sizeof(err)), 0);
    got = scope_filter_clauses(f, attrs);
    expect_json(i, got, want);
    json_decref(attrs);
    scope_filter_free(f);
  }
  none = scope_filter_clauses(NULL, NULL);
  assert_non_null(none);
  assert_int_equal(json_array_size(none), 0);
  json_decref(none);
}

static void
filter_sources(void **state)
{
  json_t *none;

  (void)state;
  for (size_t i = 0; i < sizeof(sources_cases) / sizeof(sources_cases[0]);
       i++) {
    struct scope_filter *f = NULL;
    char err[256];
    json_t *got, *want = json_of(sources_cases[i].want);

    assert_int_equal(
        scope_filter_parse(sources_cases[i].filter, &f, err, sizeof(err)), 0);
    got = scope_filter_sources(f);
    expect_json(i, got, want);
    scope_filter_free(f);
  }
  none = scope_filter_sources(NULL);
  assert_non_null(none);
  assert_true(json_is_array(none));
  assert_int_equal(json_array_size(none), 0);
  json_decref(none);
}

struct default_case {
  const char *attrs; /* NULL: the JSON value null is not even given */
  const char *why;   /* NULL: in scope */
};

#define OK_BASE "`userType`: `Member`, `accountEnabled`: true, `mail`: `a@b`"

static const struct default_case default_cases[] = {
    {"{" OK_BASE "}", NULL},
    {"{" OK_BASE ", `creationType`: null, `onPremisesExtensionAttributes`: "
     "{`extensionAttribute1`: `x`, `extensionAttribute15`: null}}",
     NULL},
    {"{`userType`: `member`, `accountEnabled`: true, `mail`: `a@b`}", NULL},
    {"{`USERTYPE`: `MEMBER`, `AccountEnabled`: true, `Mail`: `a@b`}", NULL},
    {"{" OK_BASE ", `creationType`: `LocalAccount`}", NULL},
    /* userType */
    {"{`userType`: `Guest`, `accountEnabled`: true, `mail`: `a@b`}",
     "userType is not Member"},
    {"{`accountEnabled`: true, `mail`: `a@b`}", "userType is not Member"},
    {"{`userType`: null, `accountEnabled`: true, `mail`: `a@b`}",
     "userType is not Member"},
    {"{`userType`: [`Member`], `accountEnabled`: true, `mail`: `a@b`}",
     "userType is not Member"},
    {"{`userType`: `Members`, `accountEnabled`: true, `mail`: `a@b`}",
     "userType is not Member"},
    {"{}", "userType is not Member"},
    {"[]", "userType is not Member"},
    {NULL, "userType is not Member"},
    /* accountEnabled */
    {"{`userType`: `Member`, `accountEnabled`: false, `mail`: `a@b`}",
     "disabled"},
    {"{`userType`: `Member`, `mail`: `a@b`}", "disabled"},
    {"{`userType`: `Member`, `accountEnabled`: `true`, `mail`: `a@b`}",
     "disabled"},
    {"{`userType`: `Member`, `accountEnabled`: 1, `mail`: `a@b`}", "disabled"},
    /* mail */
    {"{`userType`: `Member`, `accountEnabled`: true}", "no mail"},
    {"{`userType`: `Member`, `accountEnabled`: true, `mail`: null}",
     "no mail"},
    {"{`userType`: `Member`, `accountEnabled`: true, `mail`: ``}", "no mail"},
    {"{`userType`: `Member`, `accountEnabled`: true, `mail`: [`a@b`]}",
     "no mail"},
    /* creationType */
    {"{" OK_BASE ", `creationType`: `Invitation`}", "invited guest"},
    {"{" OK_BASE ", `creationType`: `INVITATION`}", "invited guest"},
    /* the anchor in any of extensionAttribute1..15 */
    {"{" OK_BASE ", `onPremisesExtensionAttributes`: "
     "{`extensionAttribute15`: `galbridge:t:o`}}",
     "galbridge copy"},
    {"{" OK_BASE ", `onPremisesExtensionAttributes`: "
     "{`extensionAttribute1`: `GalBridge:x`}}",
     "galbridge copy"},
    {"{" OK_BASE ", `onPremisesExtensionAttributes`: "
     "{`extensionattribute7`: `galbridge:`}}",
     "galbridge copy"},
    {"{" OK_BASE ", `onPremisesExtensionAttributes`: "
     "{`extensionAttribute7`: `x galbridge:y`, `extensionAttribute16`: "
     "`galbridge:y`, `extensionAttribute8`: `galbridge`, "
     "`extensionAttribute9`: [`galbridge:y`]}}",
     NULL},
    {"{" OK_BASE ", `extensionAttribute1`: `galbridge:y`}", NULL},
    /* the first reason wins */
    {"{`userType`: `Guest`, `accountEnabled`: false}",
     "userType is not Member"},
    {"{`userType`: `Member`, `accountEnabled`: false}", "disabled"},
    {"{`userType`: `Member`, `accountEnabled`: true, `creationType`: "
     "`Invitation`}",
     "no mail"},
    {"{" OK_BASE ", `creationType`: `Invitation`, "
     "`onPremisesExtensionAttributes`: {`extensionAttribute1`: `galbridge:`}}",
     "invited guest"},
};

static void
default_table(void **state)
{
  int failures = 0;

  (void)state;
  for (size_t i = 0; i < sizeof(default_cases) / sizeof(default_cases[0]);
       i++) {
    const struct default_case *c = &default_cases[i];
    json_t *attrs = c->attrs != NULL ? json_of(c->attrs) : NULL;
    const char *why = "untouched";
    int got = scope_default_match(attrs, &why);
    int want = c->why == NULL;

    if (got != want || (c->why == NULL && why != NULL) ||
        (c->why != NULL && (why == NULL || strcmp(why, c->why) != 0))) {
      print_error("case %zu: %s: got %d (%s), want %d (%s)\n", i,
                  c->attrs != NULL ? c->attrs : "NULL", got,
                  why != NULL ? why : "NULL", want,
                  c->why != NULL ? c->why : "NULL");
      failures++;
    }
    /* why is optional */
    if (scope_default_match(attrs, NULL) != want) {
      print_error("case %zu: differs without why\n", i);
      failures++;
    }
    json_decref(attrs);
  }
  assert_int_equal(failures, 0);
}

/* The default scope of a groupcontact link: mail-enabled groups with an
 * address, whatever their kind; the person rules play no part. */
static void
group_default(void **state)
{
  static const struct {
    const char *attrs;
    const char *why;
  } cases[] = {
      /* distribution list */
      {"{`mailEnabled`: true, `securityEnabled`: false, `groupTypes`: [], "
       "`mail`: `dl@contoso.example`}",
       NULL},
      /* Microsoft 365 group */
      {"{`mailEnabled`: true, `groupTypes`: [`Unified`], "
       "`mail`: `team@contoso.example`}",
       NULL},
      /* mail-enabled security group; no userType, no accountEnabled */
      {"{`mailEnabled`: true, `securityEnabled`: true, "
       "`mail`: `sec@contoso.example`}",
       NULL},
      /* security group */
      {"{`mailEnabled`: false, `securityEnabled`: true, `mail`: null}",
       "not mail-enabled"},
      {"{`mailEnabled`: `true`, `mail`: `x@contoso.example`}",
       "not mail-enabled"},
      {"{`mail`: `x@contoso.example`}", "not mail-enabled"},
      {"{`mailEnabled`: true}", "no mail"},
      {"{`mailEnabled`: true, `mail`: ``}", "no mail"},
      {"{`mailEnabled`: true, `mail`: 7}", "no mail"},
      {"[]", "not mail-enabled"},
  };
  int failures = 0;

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    json_t *attrs = json_of(cases[i].attrs);
    const char *why = "untouched";
    int got = scope_group_match(attrs, &why);
    int want = cases[i].why == NULL;

    if (got != want || (want && why != NULL) ||
        (!want && (why == NULL || strcmp(why, cases[i].why) != 0)) ||
        scope_group_match(attrs, NULL) != want) {
      print_error("case %zu: %s: got %d (%s)\n", i, cases[i].attrs, got,
                  why != NULL ? why : "NULL");
      failures++;
    }
    json_decref(attrs);
  }
  assert_int_equal(scope_group_match(NULL, NULL), 0);
  assert_int_equal(failures, 0);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(filter_match_table),
      cmocka_unit_test(filter_error_table),
      cmocka_unit_test(nesting_limit),
      cmocka_unit_test(length_limit),
      cmocka_unit_test(huge_values),
      cmocka_unit_test(parse_edges),
      cmocka_unit_test(filter_sources),
      cmocka_unit_test(filter_clauses),
      cmocka_unit_test(default_table),
      cmocka_unit_test(group_default),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
