/*
 * mapping — see include/mapping.h.
 *
 * Compilation: each `target = expression` line is parsed once, by a small
 * recursive-descent parser, into a tree of nodes (constants, attribute
 * paths, function calls, and comparisons under IIF). Everything that can be
 * checked without a source object is checked here — function names and
 * arity, Left()'s count, Replace()'s empty old text, where numbers and
 * comparisons may stand, nesting depth, expression length, UTF-8 of
 * constants — so that a bad mapping is a config error with file, line and
 * column, never a surprise at run time. The rules of a mapping are kept
 * sorted by target name (strcmp), the order of mapping_target().
 *
 * Evaluation walks the tree with values that are views: a string is a
 * (pointer, length) pair into the source object, into a constant of the
 * tree, or into a per-call scratch arena; an array is the borrowed jansson
 * array of the source. Only the results handed back become json_t. The
 * arena's first block lives on the stack and is reset after each target,
 * so the default mappings (plain attribute references) evaluate without a
 * single scratch allocation. Every value a function builds, and every
 * value handed back, is capped at MAPPING_VALUE_MAX bytes.
 *
 * Value rules (one place each): an empty string is null; an array counts
 * as null when it has no non-empty string element, and as a string it is
 * its first non-empty element; a boolean as a string is "true"/"false".
 * IIF's condition is false when null, the boolean false or the text
 * "false" (any case). Comparisons (==, !=, Switch keys) are case-sensitive
 * byte comparisons of those strings; null equals null.
 *
 * Case folding (ToLower/ToUpper) covers ASCII, Latin-1, Latin Extended-A,
 * basic Greek and Cyrillic — every pair whose UTF-8 lengths agree, so it
 * works in place; other characters are left as they are. Trim removes the
 * Unicode White_Space characters at both ends. Left() counts code points.
 */
#include "mapping.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datefmt.h"
#include "text.h"

#define MAPPING_EXPR_MAX 10000  /* characters of one expression (CTS's) */
#define MAPPING_DEPTH_MAX 32    /* nested function calls */
#define MAPPING_VALUE_MAX 65536 /* bytes of any value built or returned */
#define MAPPING_COUNT_MAX 65536 /* Left()'s count; more could never bite */

/* ---------------------------------------------------------------------
 * Target attributes per object kind
 */

struct target_def {
  const char *name;   /* canonical spelling */
  const char *source; /* default: the source attribute, or NULL */
  int is_array;       /* a collection of strings on the target */
};

struct kind_def {
  enum config_object object;
  const char *label; /* the config's spelling, for messages */
  const struct target_def *targets;
  size_t n_targets;
  const char *required;
  const char *why; /* why `required` cannot be dropped */
};

static const struct target_def guest_targets[] = {
    {"displayName", "displayName", 0},
    {"givenName", "givenName", 0},
    {"surname", "surname", 0},
    {"mail", "mail", 0},
    {"jobTitle", "jobTitle", 0},
    {"department", "department", 0},
    {"companyName", "companyName", 0},
    {"officeLocation", "officeLocation", 0},
    {"businessPhones", "businessPhones", 1},
    {"mobilePhone", "mobilePhone", 0},
    {"streetAddress", NULL, 0},
    {"city", "city", 0},
    {"state", NULL, 0},
    {"country", "country", 0},
    {"postalCode", NULL, 0},
    {"employeeId", NULL, 0},
    {"employeeType", NULL, 0},
    {"faxNumber", NULL, 0},
    {"otherMails", NULL, 1},
    {"preferredLanguage", NULL, 0},
    {"usageLocation", NULL, 0},
    {"extensionAttribute1", NULL, 0},
    {"extensionAttribute2", NULL, 0},
    {"extensionAttribute3", NULL, 0},
    {"extensionAttribute4", NULL, 0},
    {"extensionAttribute5", NULL, 0},
    {"extensionAttribute6", NULL, 0},
    {"extensionAttribute7", NULL, 0},
    {"extensionAttribute8", NULL, 0},
    {"extensionAttribute9", NULL, 0},
    {"extensionAttribute10", NULL, 0},
    {"extensionAttribute11", NULL, 0},
    {"extensionAttribute12", NULL, 0},
    {"extensionAttribute13", NULL, 0},
    {"extensionAttribute14", NULL, 0},
    {"extensionAttribute15", NULL, 0},
};

/* Exchange parameters (New-/Set-MailContact, -MailUser, Set-Contact,
 * Set-User): one table serves mail contacts and mail users. */
static const struct target_def exchange_targets[] = {
    {"Name", NULL, 0},
    {"ExternalEmailAddress", "mail", 0},
    {"DisplayName", "displayName", 0},
    {"FirstName", "givenName", 0},
    {"LastName", "surname", 0},
    {"Alias", NULL, 0},
    {"Company", "companyName", 0},
    {"Department", "department", 0},
    {"Title", "jobTitle", 0},
    {"Phone", "businessPhones", 0},
    {"MobilePhone", "mobilePhone", 0},
    {"Office", "officeLocation", 0},
    {"StreetAddress", "streetAddress", 0},
    {"City", "city", 0},
    {"StateOrProvince", "state", 0},
    {"PostalCode", "postalCode", 0},
    {"CountryOrRegion", "country", 0},
    {"EmailAddresses", NULL, 1}, /* extra addresses, no default */
    /* A mail user's primary address in the target: only with migration =
     * yes (planner_link_compile), which folds it into its addresses. */
    {"PrimarySmtpAddress", NULL, 0},
    /* A mail user's sign-in name (UPN) in the target: only with migration
     * = yes, in an accepted domain of the target. */
    {"MicrosoftOnlineServicesID", NULL, 0},
    {"CustomAttribute1", NULL, 0},
    {"CustomAttribute2", NULL, 0},
    {"CustomAttribute3", NULL, 0},
    {"CustomAttribute4", NULL, 0},
    {"CustomAttribute5", NULL, 0},
    {"CustomAttribute6", NULL, 0},
    {"CustomAttribute7", NULL, 0},
    {"CustomAttribute8", NULL, 0},
    {"CustomAttribute9", NULL, 0},
    {"CustomAttribute10", NULL, 0},
    {"CustomAttribute11", NULL, 0},
    {"CustomAttribute12", NULL, 0},
    {"CustomAttribute13", NULL, 0},
    {"CustomAttribute14", NULL, 0},
    {"CustomAttribute15", NULL, 0},
};

/* Mail contacts for the source's groups (groupcontact): a group has a
 * name and addresses, no person's fields. Alias has no default: it must
 * be unique in the target's Exchange organisation, where a group of the
 * same mailNickname ("sales") is likely; Exchange makes one from the
 * name when none is given ("Alias = mailNickname" in a mapping asks for
 * the group's own). */
static const struct target_def groupcontact_targets[] = {
    {"Name", NULL, 0},
    {"ExternalEmailAddress", "mail", 0},
    {"DisplayName", "displayName", 0},
    {"Alias", NULL, 0},
    {"EmailAddresses", NULL, 1}, /* extra addresses, no default */
    {"CustomAttribute1", NULL, 0},
    {"CustomAttribute2", NULL, 0},
    {"CustomAttribute3", NULL, 0},
    {"CustomAttribute4", NULL, 0},
    {"CustomAttribute5", NULL, 0},
    {"CustomAttribute6", NULL, 0},
    {"CustomAttribute7", NULL, 0},
    {"CustomAttribute8", NULL, 0},
    {"CustomAttribute9", NULL, 0},
    {"CustomAttribute10", NULL, 0},
    {"CustomAttribute11", NULL, 0},
    {"CustomAttribute12", NULL, 0},
    {"CustomAttribute13", NULL, 0},
    {"CustomAttribute14", NULL, 0},
    {"CustomAttribute15", NULL, 0},
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const struct kind_def kinds[] = {
    {CONFIG_OBJECT_GUEST, "guest", guest_targets, N_OF(guest_targets), "mail",
     "it is the address the guest is invited with"},
    {CONFIG_OBJECT_MAILCONTACT, "mailcontact", exchange_targets,
     N_OF(exchange_targets), "ExternalEmailAddress",
     "it is the address mail to the contact is sent to"},
    {CONFIG_OBJECT_MAILUSER, "mailuser", exchange_targets,
     N_OF(exchange_targets), "ExternalEmailAddress",
     "it is the address mail to the mail user is sent to"},
    {CONFIG_OBJECT_GROUPCONTACT, "groupcontact", groupcontact_targets,
     N_OF(groupcontact_targets), "ExternalEmailAddress",
     "it is the address mail to the group is sent to"},
};

/* ---------------------------------------------------------------------
 * Functions
 */

enum fn {
  FN_JOIN,
  FN_APPEND,
  FN_COALESCE,
  FN_TOLOWER,
  FN_TOUPPER,
  FN_TRIM,
  FN_REPLACE,
  FN_LEFT,
  FN_IIF,
  FN_SWITCH,
  FN_ISPRESENT,
  FN_NOT,
  FN_MID,
  FN_SPLIT,
  FN_WORD,
  FN_NORMALIZEDIACRITICS,
  FN_STRIPSPACES,
  FN_SELECTUNIQUEVALUE,
  FN_TOTITLECASE,
  FN_PCASE,
  FN_FORMATDATETIME,
  FN_ISNULLOREMPTY,
  FN_ISNULL,
};

struct fn_def {
  const char *name;
  size_t min, max; /* arguments; max 0: no upper bound */
};

static const struct fn_def fns[] = {
    [FN_JOIN] = {"Join", 2, 0},
    [FN_APPEND] = {"Append", 2, 0},
    [FN_COALESCE] = {"Coalesce", 1, 0},
    [FN_TOLOWER] = {"ToLower", 1, 1},
    [FN_TOUPPER] = {"ToUpper", 1, 1},
    [FN_TRIM] = {"Trim", 1, 1},
    [FN_REPLACE] = {"Replace", 3, 3},
    [FN_LEFT] = {"Left", 2, 2},
    [FN_IIF] = {"IIF", 3, 3},
    [FN_SWITCH] = {"Switch", 4, 0},
    [FN_ISPRESENT] = {"IsPresent", 1, 1},
    [FN_NOT] = {"Not", 1, 1},
    [FN_MID] = {"Mid", 3, 3},
    [FN_SPLIT] = {"Split", 2, 2},
    [FN_WORD] = {"Word", 3, 3},
    [FN_NORMALIZEDIACRITICS] = {"NormalizeDiacritics", 1, 1},
    [FN_STRIPSPACES] = {"StripSpaces", 1, 1},
    [FN_SELECTUNIQUEVALUE] = {"SelectUniqueValue", 2, 0},
    [FN_TOTITLECASE] = {"ToTitleCase", 1, 2},
    [FN_PCASE] = {"PCase", 1, 2},
    [FN_FORMATDATETIME] = {"FormatDateTime", 4, 4},
    [FN_ISNULLOREMPTY] = {"IsNullOrEmpty", 1, 1},
    [FN_ISNULL] = {"IsNull", 1, 1},
};

/* Targets SelectUniqueValue() may compute: values the target directory
 * holds once (addresses, sign-in names, aliases, Exchange names). */
static const char *const unique_targets[] = {
    "mail",  "ExternalEmailAddress",      "PrimarySmtpAddress",
    "Alias", "MicrosoftOnlineServicesID", "Name",
};

/* ---------------------------------------------------------------------
 * The tree
 */

enum node_kind { N_NULL, N_BOOL, N_STR, N_INT, N_ATTR, N_CALL, N_CMP };

struct seg {
  const char *name; /* into the node's path; not NUL-terminated */
  size_t len;
};

struct node {
  enum node_kind kind;
  size_t pos; /* byte offset in the expression, for messages */
  union {
    int b;    /* N_BOOL */
    long num; /* N_INT (only as Left()'s count) */
    struct {
      char *s;
      size_t n;
    } str; /* N_STR, quotes undone */
    struct {
      char *path; /* "a/b/c", NUL-terminated */
      struct seg *segs;
      size_t n;
    } attr;
    struct {
      enum fn fn;
      struct node **args;
      size_t n;
    } call;
    struct {
      int ne;
      struct node *l, *r;
    } cmp;
  } u;
};

struct rule {
  const char *target; /* canonical, static */
  int is_array;
  struct node *expr;
};

struct mapping {
  struct rule *rules; /* sorted by target (strcmp) */
  size_t n;
};

static void
node_free(struct node *n)
{
  if (n == NULL)
    return;
  switch (n->kind) {
  case N_STR:
    free(n->u.str.s);
    break;
  case N_ATTR:
    free(n->u.attr.path);
    free(n->u.attr.segs);
    break;
  case N_CALL:
    for (size_t i = 0; i < n->u.call.n; i++)
      node_free(n->u.call.args[i]);
    free(n->u.call.args);
    break;
  case N_CMP:
    node_free(n->u.cmp.l);
    node_free(n->u.cmp.r);
    break;
  default:
    break;
  }
  free(n);
}

/* ---------------------------------------------------------------------
 * Small string helpers (ASCII case rules, locale-independent)
 */

static int
lower_ascii(int c)
{
  return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int
ci_cmp(const char *a, const char *b)
{
  for (;; a++, b++) {
    int ca = lower_ascii((unsigned char)*a),
        cb = lower_ascii((unsigned char)*b);
    if (ca != cb || ca == '\0')
      return ca - cb;
  }
}

static int
is_ident_start(int c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int
is_ident(int c)
{
  return is_ident_start(c) || (c >= '0' && c <= '9');
}

/* ---------------------------------------------------------------------
 * Parser
 */

enum tok_kind {
  T_EOF,
  T_LPAREN,
  T_RPAREN,
  T_COMMA,
  T_EQ,
  T_NE,
  T_STRING,
  T_INT,
  T_IDENT,
};

struct tok {
  enum tok_kind kind;
  size_t pos, len; /* raw text in the expression */
};

struct parser {
  const char *s;
  size_t len;
  size_t pos; /* after the lookahead token */
  struct tok tok;
  int depth;
  const char *file;
  int line;
  char *err;
  size_t errlen;
};

static int parse_fail(struct parser *p, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets "file:line: column C: message"; C counts characters from 1. */
static int
parse_fail(struct parser *p, size_t pos, const char *fmt, ...)
{
  char msg[512];
  size_t col = 1;
  va_list ap;

  for (size_t i = 0; i < pos && i < p->len; i++) {
    if (((unsigned char)p->s[i] & 0xC0) != 0x80)
      col++;
  }
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  text_set_err(p->err, p->errlen, "%s:%d: column %zu: %s", p->file, p->line,
               col, msg);
  return -1;
}

/* A token's text for a message: quoted, at most 24 bytes, cut on a
 * character boundary; "end of expression" at the end. */
static const char *
describe(const struct parser *p, const struct tok *t, char *buf, size_t size)
{
  size_t n = t->len, cut;

  if (t->kind == T_EOF)
    return "end of expression";
  cut = n > 24 ? 24 : n;
  while (cut < n && cut > 0 &&
         ((unsigned char)p->s[t->pos + cut] & 0xC0) == 0x80)
    cut--;
  if (t->kind == T_STRING) /* already quoted */
    snprintf(buf, size, "%.*s%s", (int)cut, p->s + t->pos,
             cut < n ? "..." : "");
  else
    snprintf(buf, size, "'%.*s%s'", (int)cut, p->s + t->pos,
             cut < n ? "..." : "");
  return buf;
}

/* Reads the next token into p->tok. */
static int
lex(struct parser *p)
{
  const char *s = p->s;
  size_t i = p->pos, start;
  unsigned char c;

  while (i < p->len &&
         (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
    i++;
  start = i;
  p->tok.pos = start;
  if (i >= p->len) {
    p->tok.kind = T_EOF;
    p->tok.len = 0;
    p->pos = i;
    return 0;
  }
  c = (unsigned char)s[i];
  if (c == '(' || c == ')' || c == ',') {
    p->tok.kind = c == '(' ? T_LPAREN : c == ')' ? T_RPAREN : T_COMMA;
    i++;
  } else if (c == '=' || c == '!') {
    if (i + 1 >= p->len || s[i + 1] != '=')
      return parse_fail(
          p, start, "'%c' is not an operator; compare with '==' or '!='", c);
    p->tok.kind = c == '=' ? T_EQ : T_NE;
    i += 2;
  } else if (c == '"' || c == '\'') {
    for (i++;; i++) {
      if (i >= p->len)
        return parse_fail(p, start, "unterminated string (opened with %c)", c);
      if ((unsigned char)s[i] == c) {
        if (i + 1 < p->len && (unsigned char)s[i + 1] == c)
          i++; /* a doubled quote stands for one */
        else
          break;
      }
    }
    i++;
    p->tok.kind = T_STRING;
  } else if ((c >= '0' && c <= '9') || (c == '-' && i + 1 < p->len &&
                                        s[i + 1] >= '0' && s[i + 1] <= '9')) {
    for (i++; i < p->len && s[i] >= '0' && s[i] <= '9'; i++)
      ;
    p->tok.kind = T_INT;
  } else if (is_ident_start(c)) {
    for (;;) {
      while (i < p->len && is_ident((unsigned char)s[i]))
        i++;
      if (i + 1 < p->len && s[i] == '/' &&
          is_ident_start((unsigned char)s[i + 1]))
        i++;
      else
        break;
    }
    p->tok.kind = T_IDENT;
  } else {
    size_t len = text_utf8_seq((const unsigned char *)s + i, p->len - i);
    if (len == 0)
      return parse_fail(p, start, "unexpected byte 0x%02X (not UTF-8 text)",
                        c);
    if (c < 0x20 || c == 0x7F) /* never echo control bytes */
      return parse_fail(p, start, "unexpected control character 0x%02X", c);
    return parse_fail(p, start, "unexpected character '%.*s'", (int)len,
                      s + i);
  }
  p->tok.len = i - start;
  p->pos = i;
  return 0;
}

static struct node *
node_new(enum node_kind kind, size_t pos)
{
  struct node *n = calloc(1, sizeof(*n));
  if (n != NULL) {
    n->kind = kind;
    n->pos = pos;
  }
  return n;
}

static int
oom(struct parser *p)
{
  text_set_err(p->err, p->errlen, "%s:%d: out of memory", p->file, p->line);
  return -1;
}

/* A quoted constant, quotes undone. */
static int
make_string(struct parser *p, const struct tok *t, struct node **out)
{
  const char *s = p->s + t->pos;
  char q = s[0];
  size_t n = 0;
  struct node *node;

  if (!text_utf8_valid(s + 1, t->len - 2))
    return parse_fail(p, t->pos, "text constant is not valid UTF-8");
  node = node_new(N_STR, t->pos);
  if (node == NULL)
    return oom(p);
  node->u.str.s = malloc(t->len - 1);
  if (node->u.str.s == NULL) {
    free(node);
    return oom(p);
  }
  for (size_t i = 1; i + 1 < t->len; i++) {
    node->u.str.s[n++] = s[i];
    if (s[i] == q)
      i++; /* the lexer saw to it that quotes come in pairs here */
  }
  node->u.str.s[n] = '\0';
  node->u.str.n = n;
  *out = node;
  return 0;
}

static int
make_int(struct parser *p, const struct tok *t, struct node **out)
{
  const char *s = p->s + t->pos;
  int neg = s[0] == '-';
  long v = 0;

  for (size_t i = neg ? 1 : 0; i < t->len; i++) {
    v = v * 10 + (s[i] - '0');
    if (v > MAPPING_COUNT_MAX)
      return parse_fail(p, t->pos, "number %.*s is too large (at most %d)",
                        (int)t->len, s, MAPPING_COUNT_MAX);
  }
  *out = node_new(N_INT, t->pos);
  if (*out == NULL)
    return oom(p);
  (*out)->u.num = neg ? -v : v;
  return 0;
}

static int
make_attr(struct parser *p, const struct tok *t, struct node **out)
{
  struct node *n = node_new(N_ATTR, t->pos);
  size_t nseg = 1, k = 0, start = 0;
  char *path;

  if (n == NULL)
    return oom(p);
  for (size_t i = 0; i < t->len; i++)
    nseg += p->s[t->pos + i] == '/';
  path = malloc(t->len + 1);
  n->u.attr.segs = calloc(nseg, sizeof(*n->u.attr.segs));
  n->u.attr.path = path;
  if (path == NULL || n->u.attr.segs == NULL) {
    node_free(n);
    return oom(p);
  }
  memcpy(path, p->s + t->pos, t->len);
  path[t->len] = '\0';
  for (size_t i = 0; i <= t->len; i++) {
    if (i == t->len || path[i] == '/') {
      n->u.attr.segs[k].name = path + start;
      n->u.attr.segs[k].len = i - start;
      k++;
      start = i + 1;
    }
  }
  n->u.attr.n = nseg;
  *out = n;
  return 0;
}

/* What may stand where parse_expr() is called: a comparison (IIF's
 * condition), a number (Left's count; any later argument of Left too, so
 * that Left(x, 1, 2) is reported by its arity), or neither. IN_CMP: the
 * right side of a comparison, which leaves a following '==' to its caller
 * (no chains). */
enum { ALLOW_CMP = 1, ALLOW_INT = 2, IN_CMP = 4 };

static int parse_expr(struct parser *p, int allow, struct node **out);

static int
is_empty_const(const struct node *n)
{
  return n->kind == N_NULL || (n->kind == N_STR && n->u.str.n == 0);
}

/* check_arg() for the functions of issue 19: Mid, Word, Split,
 * FormatDateTime, ToTitleCase. */
static int
check_arg_more(struct parser *p, enum fn fn, size_t i, const struct node *arg)
{
  char why[160];

  if (fn == FN_MID && (i == 1 || i == 2)) {
    if (arg->kind != N_INT)
      return parse_fail(p, arg->pos,
                        "Mid()'s %s must be a whole number, e.g. Mid(x, 1, "
                        "3)",
                        i == 1 ? "start" : "length");
    if (arg->u.num < (i == 1 ? 1 : 0))
      return parse_fail(p, arg->pos,
                        i == 1 ? "Mid()'s start counts from 1, got %ld"
                               : "Mid()'s length must be 0 or more, got %ld",
                        arg->u.num);
  }
  if (fn == FN_WORD && i == 1 && arg->kind != N_INT)
    return parse_fail(p, arg->pos,
                      "Word()'s number must be a whole number, e.g. "
                      "Word(x, 2, \" \")");
  if (fn == FN_WORD && i == 2 && (arg->kind == N_INT || is_empty_const(arg)))
    return parse_fail(p, arg->pos,
                      "Word()'s delimiters must be text with at least one "
                      "character");
  if (fn == FN_SPLIT && i == 1 && is_empty_const(arg))
    return parse_fail(p, arg->pos, "Split()'s delimiter is empty");
  if (fn == FN_FORMATDATETIME && i == 1 && !is_empty_const(arg))
    return parse_fail(p, arg->pos,
                      "FormatDateTime()'s dateTimeStyles: only the default "
                      "is supported; leave it empty, e.g. FormatDateTime(x, "
                      ", \"yyyyMMdd\", \"yyyy-MM-dd\")");
  if (fn == FN_FORMATDATETIME && (i == 2 || i == 3)) {
    const char *which = i == 2 ? "input" : "output";
    if (arg->kind != N_STR)
      return parse_fail(p, arg->pos,
                        "FormatDateTime()'s %s format must be a quoted "
                        "constant",
                        which);
    if (datefmt_check(arg->u.str.s, arg->u.str.n, why, sizeof(why)) != 0)
      return parse_fail(p, arg->pos, "FormatDateTime()'s %s format: %s", which,
                        why);
  }
  if (fn == FN_TOTITLECASE && i == 1 && arg->kind == N_STR) {
    for (size_t k = 0; k < arg->u.str.n; k++) {
      char c = arg->u.str.s[k];
      if (!is_ident(c) && c != '-' && c != '_')
        return parse_fail(p, arg->pos,
                          "ToTitleCase()'s culture must be a culture name "
                          "such as \"en-US\"");
    }
  }
  return 0;
}

static int
arity_fail(struct parser *p, size_t pos, enum fn fn, size_t got)
{
  const struct fn_def *d = &fns[fn];

  if (fn == FN_SWITCH)
    return parse_fail(p, pos,
                      "Switch() takes a value, a default and key/value "
                      "pairs (4, 6, 8... arguments), got %zu",
                      got);
  if (d->min == d->max)
    return parse_fail(p, pos, "%s() takes %zu argument%s, got %zu", d->name,
                      d->min, d->min == 1 ? "" : "s", got);
  if (d->max != 0)
    return parse_fail(p, pos, "%s() takes %zu or %zu arguments, got %zu",
                      d->name, d->min, d->max, got);
  return parse_fail(p, pos, "%s() takes at least %zu argument%s, got %zu",
                    d->name, d->min, d->min == 1 ? "" : "s", got);
}

/* Checks that depend on the function and the argument's place. */
static int
check_arg(struct parser *p, enum fn fn, size_t i, const struct node *arg)
{
  if (fn == FN_LEFT && i == 1) {
    if (arg->kind != N_INT)
      return parse_fail(p, arg->pos,
                        "Left()'s count must be a whole number, e.g. "
                        "Left(x, 3)");
    if (arg->u.num < 0)
      return parse_fail(p, arg->pos,
                        "Left()'s count must be 0 or more, got %ld",
                        arg->u.num);
  }
  if (fn == FN_REPLACE && i == 1 &&
      (arg->kind == N_NULL || (arg->kind == N_STR && arg->u.str.n == 0)))
    return parse_fail(p, arg->pos,
                      "Replace()'s text to replace is empty; it would never "
                      "match");
  return check_arg_more(p, fn, i, arg);
}

/* name '(' args ')': `name` is the function's token, p->tok the '('. */
static int
parse_call(struct parser *p, const struct tok *name, struct node **out)
{
  struct node *n = NULL, *arg = NULL;
  size_t cap = 0, fn;
  int result = -1;

  for (fn = 0; fn < N_OF(fns); fn++) {
    if (text_ci_equal(fns[fn].name, strlen(fns[fn].name), p->s + name->pos,
                      name->len))
      break;
  }
  if (fn == N_OF(fns))
    return parse_fail(p, name->pos, "unknown function '%.*s'", (int)name->len,
                      p->s + name->pos);
  if (++p->depth > MAPPING_DEPTH_MAX)
    return parse_fail(p, name->pos, "functions nested more than %d deep",
                      MAPPING_DEPTH_MAX);
  if (fn == FN_SELECTUNIQUEVALUE && p->depth > 1)
    return parse_fail(p, name->pos,
                      "SelectUniqueValue() must be the whole expression, "
                      "not inside another function");
  n = node_new(N_CALL, name->pos);
  if (n == NULL) {
    oom(p);
    goto out;
  }
  n->u.call.fn = (enum fn)fn;
  if (lex(p) != 0) /* past '(' */
    goto out;
  if (p->tok.kind == T_RPAREN) {
    if (lex(p) != 0)
      goto out;
  } else {
    for (;;) {
      int allow = 0;
      char buf[64];

      if (fn == FN_IIF && n->u.call.n == 0)
        allow |= ALLOW_CMP;
      if ((fn == FN_LEFT || fn == FN_MID) && n->u.call.n >= 1)
        allow |= ALLOW_INT;
      if (fn == FN_WORD && n->u.call.n >= 1)
        allow |= ALLOW_INT;
      if (fn == FN_FORMATDATETIME && n->u.call.n == 1 &&
          p->tok.kind == T_COMMA) {
        /* FormatDateTime(x, , in, out): the styles left out, as
         * Microsoft writes it */
        arg = node_new(N_NULL, p->tok.pos);
        if (arg == NULL) {
          oom(p);
          goto out;
        }
      } else if (parse_expr(p, allow, &arg) != 0) {
        goto out;
      }
      if (n->u.call.n == cap) {
        size_t ncap = cap == 0 ? 4 : cap * 2;
        struct node **args =
            realloc(n->u.call.args, ncap * sizeof(*n->u.call.args));
        if (args == NULL) {
          oom(p);
          goto out;
        }
        n->u.call.args = args;
        cap = ncap;
      }
      n->u.call.args[n->u.call.n++] = arg;
      arg = NULL;
      if (check_arg(p, (enum fn)fn, n->u.call.n - 1,
                    n->u.call.args[n->u.call.n - 1]) != 0)
        goto out;
      if (p->tok.kind == T_RPAREN) {
        if (lex(p) != 0)
          goto out;
        break;
      }
      if (p->tok.kind != T_COMMA) {
        parse_fail(p, p->tok.pos, "expected ',' or ')' in %s(), found %s",
                   fns[fn].name, describe(p, &p->tok, buf, sizeof(buf)));
        goto out;
      }
      if (lex(p) != 0)
        goto out;
    }
  }
  if (n->u.call.n < fns[fn].min ||
      (fns[fn].max != 0 && n->u.call.n > fns[fn].max) ||
      (fn == FN_SWITCH && n->u.call.n % 2 != 0)) {
    arity_fail(p, name->pos, (enum fn)fn, n->u.call.n);
    goto out;
  }
  p->depth--;
  *out = n;
  n = NULL;
  result = 0;
out:
  node_free(arg);
  node_free(n);
  return result;
}

/* One value, with `allow` saying whether a comparison or a bare number may
 * stand here. On entry p->tok is the first token; on return, the one
 * after the expression. */
static int
parse_expr(struct parser *p, int allow, struct node **out)
{
  struct tok t = p->tok;
  struct node *n = NULL, *rhs = NULL, *cmp;
  char buf[64];

  *out = NULL;
  switch (t.kind) {
  case T_STRING:
    if (make_string(p, &t, &n) != 0 || lex(p) != 0)
      goto fail;
    break;
  case T_INT:
    if (!(allow & ALLOW_INT))
      return parse_fail(p, t.pos,
                        "a number is only allowed as a count or position of "
                        "Left(), Mid() or Word(); quote it to use it as "
                        "text");
    if (make_int(p, &t, &n) != 0 || lex(p) != 0)
      goto fail;
    break;
  case T_IDENT:
    if (lex(p) != 0)
      return -1;
    if (p->tok.kind == T_LPAREN) {
      if (parse_call(p, &t, &n) != 0)
        return -1;
    } else if (text_ci_equal(p->s + t.pos, t.len, "null", 4)) {
      n = node_new(N_NULL, t.pos);
    } else if (text_ci_equal(p->s + t.pos, t.len, "true", 4) ||
               text_ci_equal(p->s + t.pos, t.len, "false", 5)) {
      n = node_new(N_BOOL, t.pos);
      if (n != NULL)
        n->u.b = t.len == 4;
    } else if (make_attr(p, &t, &n) != 0) {
      return -1;
    }
    if (n == NULL)
      return oom(p);
    break;
  default:
    return parse_fail(p, t.pos, "expected a value, found %s",
                      describe(p, &t, buf, sizeof(buf)));
  }

  if ((p->tok.kind == T_EQ || p->tok.kind == T_NE) && !(allow & IN_CMP)) {
    struct tok op = p->tok;
    if (!(allow & ALLOW_CMP)) {
      parse_fail(p, op.pos,
                 "a comparison ('%s') is only allowed as IIF()'s condition",
                 op.kind == T_EQ ? "==" : "!=");
      goto fail;
    }
    if (lex(p) != 0 || parse_expr(p, IN_CMP, &rhs) != 0)
      goto fail;
    cmp = node_new(N_CMP, op.pos);
    if (cmp == NULL) {
      oom(p);
      goto fail;
    }
    cmp->u.cmp.ne = op.kind == T_NE;
    cmp->u.cmp.l = n;
    cmp->u.cmp.r = rhs;
    n = cmp;
  }
  *out = n;
  return 0;
fail:
  node_free(n);
  node_free(rhs);
  return -1;
}

/* An expression longer than MAPPING_EXPR_MAX characters: the error at
 * the first character too many. */
static int
too_many_chars(struct parser *p)
{
  size_t chars = 0, over = 0;

  if (p->len <= MAPPING_EXPR_MAX)
    return 0; /* fewer bytes than the limit: fewer characters too */
  for (size_t i = 0; i < p->len; i++) {
    if (((unsigned char)p->s[i] & 0xC0) != 0x80 &&
        ++chars == MAPPING_EXPR_MAX + 1)
      over = i;
  }
  if (chars <= MAPPING_EXPR_MAX)
    return 0;
  return parse_fail(p, over, "expression longer than %d characters (%zu)",
                    MAPPING_EXPR_MAX, chars);
}

/* The whole expression `text` of the entry at file:line. */
static int
parse(const char *text, const char *file, int line, struct node **out,
      char *err, size_t errlen)
{
  struct parser p = {
      .s = text, .file = file, .line = line, .err = err, .errlen = errlen};
  struct node *n = NULL;
  char buf[64];

  *out = NULL;
  p.len = text != NULL ? strlen(text) : 0;
  if (too_many_chars(&p) != 0)
    return -1;
  if (lex(&p) != 0)
    return -1;
  if (p.tok.kind == T_EOF) {
    text_set_err(err, errlen, "%s:%d: empty expression", file, line);
    return -1;
  }
  if (parse_expr(&p, 0, &n) != 0)
    return -1;
  if (p.tok.kind != T_EOF) {
    node_free(n);
    return parse_fail(&p, p.tok.pos,
                      "unexpected %s after the end of the expression",
                      describe(&p, &p.tok, buf, sizeof(buf)));
  }
  *out = n;
  return 0;
}

/* ---------------------------------------------------------------------
 * Compilation
 */

static const struct kind_def *
kind_find(enum config_object object)
{
  for (size_t i = 0; i < N_OF(kinds); i++) {
    if (kinds[i].object == object)
      return &kinds[i];
  }
  return NULL;
}

/* SelectUniqueValue() only where a value is held once in the target. */
static int
check_unique(const struct node *n, const struct kind_def *kind,
             const struct target_def *target, const char *file, int line,
             char *err, size_t errlen)
{
  if (n == NULL || n->kind != N_CALL || n->u.call.fn != FN_SELECTUNIQUEVALUE)
    return 0;
  for (size_t i = 0; i < N_OF(unique_targets); i++) {
    if (strcmp(unique_targets[i], target->name) == 0)
      return 0;
  }
  text_set_err(err, errlen,
               "%s:%d: SelectUniqueValue() picks a value no other object "
               "holds, which only means something for an attribute the "
               "target keeps unique (%s); '%s' is not one",
               file, line,
               kind->object == CONFIG_OBJECT_GUEST
                   ? "mail"
                   : "ExternalEmailAddress, PrimarySmtpAddress, Alias, "
                     "MicrosoftOnlineServicesID, Name",
               target->name);
  return -1;
}

static int
rule_cmp(const void *a, const void *b)
{
  return strcmp(((const struct rule *)a)->target,
                ((const struct rule *)b)->target);
}

int
mapping_compile(const struct config_mapping *section,
                enum config_object object, const char *file,
                struct mapping **out, char *err, size_t errlen)
{
  const struct kind_def *kind = kind_find(object);
  struct node **slot = NULL; /* per target of the kind's table */
  struct mapping *m = NULL;
  struct node *n = NULL;
  int result = -1;

  if (out != NULL)
    *out = NULL;
  if (out == NULL || kind == NULL) {
    text_set_err(err, errlen, "mapping: %s",
                 out == NULL ? "no place for the result"
                             : "unknown object kind");
    return -1;
  }
  if (file == NULL)
    file = "(config)";
  slot = calloc(kind->n_targets, sizeof(*slot));
  if (slot == NULL)
    goto nomem;
  for (size_t i = 0; i < kind->n_targets; i++) {
    if (kind->targets[i].source != NULL &&
        parse(kind->targets[i].source, "(built-in)", 0, &slot[i], err,
              errlen) != 0)
      goto out;
  }

  for (size_t e = 0; section != NULL && e < section->n_entries; e++) {
    const struct config_mapping_entry *entry = &section->entries[e];
    const char *target = entry->target != NULL ? entry->target : "";
    size_t t, best = 0, best_d = 3;

    for (t = 0; t < kind->n_targets; t++) {
      size_t d = text_distance(target, kind->targets[t].name);
      if (d == 0)
        break;
      if (d < best_d) {
        best = t;
        best_d = d;
      }
    }
    if (t == kind->n_targets) {
      if (best_d <= 2 && strlen(target) > 2)
        text_set_err(err, errlen,
                     "%s:%d: unknown target attribute '%s' for %s links; did "
                     "you mean '%s'?",
                     file, entry->line, target, kind->label,
                     kind->targets[best].name);
      else
        text_set_err(err, errlen,
                     "%s:%d: unknown target attribute '%s' for %s links", file,
                     entry->line, target, kind->label);
      goto out;
    }
    if (parse(entry->expr, file, entry->line, &n, err, errlen) != 0 ||
        check_unique(n, kind, &kind->targets[t], file, entry->line, err,
                     errlen) != 0)
      goto out;
    if (n->kind == N_NULL &&
        strcmp(kind->targets[t].name, kind->required) == 0) {
      text_set_err(err, errlen, "%s:%d: %s is required for %s links: %s", file,
                   entry->line, kind->required, kind->label, kind->why);
      goto out;
    }
    node_free(slot[t]);
    slot[t] = NULL;
    if (n->kind != N_NULL)
      slot[t] = n; /* `target = null` drops it */
    else
      node_free(n);
    n = NULL;
  }

  m = calloc(1, sizeof(*m));
  if (m == NULL)
    goto nomem;
  m->rules = calloc(kind->n_targets, sizeof(*m->rules));
  if (m->rules == NULL)
    goto nomem;
  for (size_t i = 0; i < kind->n_targets; i++) {
    if (slot[i] == NULL)
      continue;
    m->rules[m->n].target = kind->targets[i].name;
    m->rules[m->n].is_array = kind->targets[i].is_array;
    m->rules[m->n].expr = slot[i];
    slot[i] = NULL;
    m->n++;
  }
  qsort(m->rules, m->n, sizeof(*m->rules), rule_cmp);
  *out = m;
  m = NULL;
  result = 0;
  goto out;
nomem:
  text_set_err(err, errlen, "%s: out of memory compiling mappings", file);
out:
  node_free(n);
  for (size_t i = 0; slot != NULL && i < kind->n_targets; i++)
    node_free(slot[i]);
  free(slot);
  mapping_free(m);
  return result;
}

void
mapping_free(struct mapping *mapping)
{
  if (mapping == NULL)
    return;
  for (size_t i = 0; i < mapping->n; i++)
    node_free(mapping->rules[i].expr);
  free(mapping->rules);
  free(mapping);
}

size_t
mapping_count(const struct mapping *mapping)
{
  return mapping != NULL ? mapping->n : 0;
}

const char *
mapping_target(const struct mapping *mapping, size_t i)
{
  if (mapping == NULL || i >= mapping->n)
    return NULL;
  return mapping->rules[i].target;
}

/* Appends the top-level attribute names under n to `names` (a JSON array)
 * unless already there in any case. */
static int
collect_sources(const struct node *n, json_t *names)
{
  size_t i;
  json_t *v;

  switch (n->kind) {
  case N_ATTR:
    json_array_foreach(names, i, v)
    {
      if (text_ci_equal(json_string_value(v), json_string_length(v),
                        n->u.attr.segs[0].name, n->u.attr.segs[0].len))
        return 0;
    }
    return json_array_append_new(
        names, json_stringn(n->u.attr.segs[0].name, n->u.attr.segs[0].len));
  case N_CALL:
    for (i = 0; i < n->u.call.n; i++) {
      if (collect_sources(n->u.call.args[i], names) != 0)
        return -1;
    }
    return 0;
  case N_CMP:
    if (collect_sources(n->u.cmp.l, names) != 0)
      return -1;
    return collect_sources(n->u.cmp.r, names);
  default:
    return 0;
  }
}

static int
name_cmp(const void *a, const void *b)
{
  return ci_cmp(json_string_value(*(json_t *const *)a),
                json_string_value(*(json_t *const *)b));
}

json_t *
mapping_sources(const struct mapping *mapping)
{
  json_t *names = json_array(), *sorted = NULL;
  json_t **items = NULL;
  size_t n;

  if (names == NULL)
    return NULL;
  for (size_t i = 0; mapping != NULL && i < mapping->n; i++) {
    if (collect_sources(mapping->rules[i].expr, names) != 0)
      goto out;
  }
  /* Sorted (ignoring case) so that $select strings are stable. */
  n = json_array_size(names);
  if (n < 2)
    return names;
  items = malloc(n * sizeof(*items));
  sorted = json_array();
  if (items == NULL || sorted == NULL)
    goto out;
  for (size_t i = 0; i < n; i++)
    items[i] = json_array_get(names, i);
  qsort(items, n, sizeof(*items), name_cmp);
  for (size_t i = 0; i < n; i++) {
    if (json_array_append(sorted, items[i]) != 0)
      goto out;
  }
  free(items);
  json_decref(names);
  return sorted;
out:
  free(items);
  json_decref(sorted);
  json_decref(names);
  return NULL;
}

/* ---------------------------------------------------------------------
 * Evaluation
 */

/* Scratch memory for one evaluation: a bump allocator whose first block
 * is a buffer on mapping_eval()'s stack; more blocks come from malloc and
 * go at each reset. */
struct chunk {
  struct chunk *next;
  max_align_t data[];
};

#define ARENA_FIRST 4096
#define ARENA_CHUNK 16384

union first_block {
  max_align_t align;
  char b[ARENA_FIRST];
};

struct arena {
  char *p;
  size_t left;
  struct chunk *extra;
  union first_block *first;
};

static void
arena_init(struct arena *a, union first_block *first)
{
  a->p = first->b;
  a->left = sizeof(first->b);
  a->extra = NULL;
  a->first = first;
}

static void
arena_reset(struct arena *a)
{
  while (a->extra != NULL) {
    struct chunk *next = a->extra->next;
    free(a->extra);
    a->extra = next;
  }
  arena_init(a, a->first);
}

static void *
arena_alloc(struct arena *a, size_t n)
{
  const size_t align = sizeof(max_align_t);
  void *r;

  if (n > SIZE_MAX / 2)
    return NULL;
  n = (n + align - 1) / align * align;
  if (n == 0)
    n = align;
  if (n > a->left) {
    size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
    struct chunk *c = malloc(offsetof(struct chunk, data) + cap);
    if (c == NULL)
      return NULL;
    c->next = a->extra;
    a->extra = c;
    a->p = (char *)c->data;
    a->left = cap;
  }
  r = a->p;
  a->p += n;
  a->left -= n;
  return r;
}

enum vtype { V_NULL, V_STR, V_ARR, V_BOOL, V_LIST };

/* One element of a list a function built (Split): never empty. */
struct piece {
  const char *s;
  size_t n;
};

struct val {
  enum vtype t;
  int b;         /* V_BOOL */
  const char *s; /* V_STR: never empty */
  size_t n;
  const json_t *arr; /* V_ARR: strings and nulls, one non-empty at least */
  const struct piece *list; /* V_LIST: n pieces, at least one */
};

struct eval {
  const json_t *src;
  struct arena arena;
  const char *target; /* for messages */
  char *err;
  size_t errlen;
  mapping_taken_fn taken; /* SelectUniqueValue's question, or NULL */
  void *taken_arg;
  int exhausted; /* every SelectUniqueValue() candidate was taken */
};

static const struct val null_val = {V_NULL, 0, NULL, 0, NULL, NULL};

static struct val
str_val(const char *s, size_t n)
{
  struct val v = {n > 0 ? V_STR : V_NULL, 0, n > 0 ? s : NULL, n, NULL, NULL};
  return v;
}

static struct val
bool_val(int b)
{
  struct val v = {V_BOOL, b != 0, NULL, 0, NULL, NULL};
  return v;
}

/* The value as a string: 1 and (*s, *n) when it has one (non-empty). */
static int
text(const struct val *v, const char **s, size_t *n)
{
  switch (v->t) {
  case V_STR:
    *s = v->s;
    *n = v->n;
    return 1;
  case V_BOOL:
    *s = v->b ? "true" : "false";
    *n = v->b ? 4 : 5;
    return 1;
  case V_LIST:
    *s = v->list[0].s;
    *n = v->list[0].n;
    return 1;
  case V_ARR: {
    size_t i;
    json_t *e;
    json_array_foreach(v->arr, i, e)
    {
      if (json_string_length(e) > 0) {
        *s = json_string_value(e);
        *n = json_string_length(e);
        return 1;
      }
    }
    return 0;
  }
  default:
    return 0;
  }
}

static int eval_fail(struct eval *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
eval_fail(struct eval *e, const char *fmt, ...)
{
  char msg[256];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  text_set_err(e->err, e->errlen, "cannot map '%s': %s", e->target, msg);
  return -1;
}

static int
too_long(struct eval *e)
{
  return eval_fail(e, "value longer than %d bytes", MAPPING_VALUE_MAX);
}

static char *
scratch(struct eval *e, size_t n)
{
  char *p = arena_alloc(&e->arena, n);
  if (p == NULL)
    eval_fail(e, "out of memory");
  return p;
}

/* obj[name], preferring the exact spelling, else ignoring ASCII case. */
static const json_t *
get_ci(const json_t *obj, const char *name, size_t len)
{
  const json_t *v = json_object_getn(obj, name, len);
  /* jansson's iterator API takes a non-const object but does not change
   * it. */
  json_t *o = (json_t *)obj;

  if (v != NULL)
    return v;
  for (void *it = json_object_iter(o); it != NULL;
       it = json_object_iter_next(o, it)) {
    if (text_ci_equal(json_object_iter_key(it), json_object_iter_key_len(it),
                      name, len))
      return json_object_iter_value(it);
  }
  return NULL;
}

static int
eval_attr(struct eval *e, const struct node *n, struct val *out)
{
  const json_t *v = e->src;
  char *buf;
  int len;

  for (size_t i = 0; i < n->u.attr.n && v != NULL; i++) {
    if (!json_is_object(v)) {
      v = NULL; /* a path through a non-object leads nowhere */
      break;
    }
    v = get_ci(v, n->u.attr.segs[i].name, n->u.attr.segs[i].len);
  }
  *out = null_val;
  if (v == NULL)
    return 0;
  switch (json_typeof(v)) {
  case JSON_STRING:
    *out = str_val(json_string_value(v), json_string_length(v));
    return 0;
  case JSON_TRUE:
  case JSON_FALSE:
    *out = bool_val(json_is_true(v));
    return 0;
  case JSON_NULL:
    return 0;
  case JSON_INTEGER:
  case JSON_REAL:
    buf = scratch(e, 32);
    if (buf == NULL)
      return -1;
    if (json_is_integer(v))
      len = snprintf(buf, 32, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else
      len = snprintf(buf, 32, "%.17g", json_real_value(v));
    *out = str_val(buf, len > 0 && len < 32 ? (size_t)len : 0);
    return 0;
  case JSON_ARRAY: {
    size_t i, present = 0;
    json_t *el;
    json_array_foreach(v, i, el)
    {
      if (json_is_string(el))
        present += json_string_length(el) > 0;
      else if (!json_is_null(el))
        return eval_fail(e, "attribute '%s' holds an array of non-strings",
                         n->u.attr.path);
    }
    if (present > 0) {
      out->t = V_ARR;
      out->arr = v;
    }
    return 0;
  }
  default:
    return eval_fail(e, "attribute '%s' is an object, not a value",
                     n->u.attr.path);
  }
}

static int eval_node(struct eval *e, const struct node *n, struct val *out);

/* Join / Append: the parts are counted first, then copied. */
struct joiner {
  const char *sep;
  size_t seplen, parts, len;
  char *buf; /* NULL while counting */
};

static void
join_add(struct joiner *j, const char *s, size_t n)
{
  if (n == 0)
    return;
  if (j->parts++ > 0) {
    if (j->buf != NULL)
      memcpy(j->buf + j->len, j->sep, j->seplen);
    j->len += j->seplen;
  }
  if (j->buf != NULL)
    memcpy(j->buf + j->len, s, n);
  j->len += n;
}

static void
join_val(struct joiner *j, const struct val *v, int every)
{
  const char *s;
  size_t n, i;
  json_t *el;

  if (v->t == V_ARR && every) {
    json_array_foreach(v->arr, i, el)
    {
      join_add(j, json_string_value(el), json_string_length(el));
    }
  } else if (v->t == V_LIST && every) {
    for (i = 0; i < v->n; i++)
      join_add(j, v->list[i].s, v->list[i].n);
  } else if (text(v, &s, &n)) {
    join_add(j, s, n);
  }
}

/* Join(sep, a, ...) with every=1; Append(a, ...) with every=0. */
static int
eval_join(struct eval *e, const struct node *n, int every, struct val *out)
{
  const struct node *const *args = (const struct node *const *)n->u.call.args;
  size_t first = every ? 1 : 0, count = n->u.call.n - first;
  struct joiner j = {"", 0, 0, 0, NULL};
  struct val sep, *vals;

  *out = null_val;
  if (every) {
    if (eval_node(e, args[0], &sep) != 0)
      return -1;
    if (!text(&sep, &j.sep, &j.seplen)) {
      j.sep = "";
      j.seplen = 0;
    }
  }
  vals = arena_alloc(&e->arena, count * sizeof(*vals));
  if (vals == NULL)
    return eval_fail(e, "out of memory");
  for (size_t i = 0; i < count; i++) {
    if (eval_node(e, args[first + i], &vals[i]) != 0)
      return -1;
    if (!every && i == 0 && vals[0].t == V_NULL)
      return 0; /* Append to nothing is nothing */
    join_val(&j, &vals[i], every);
    if (j.len > MAPPING_VALUE_MAX)
      return too_long(e);
  }
  if (j.parts == 0)
    return 0;
  j.buf = scratch(e, j.len);
  if (j.buf == NULL)
    return -1;
  j.parts = j.len = 0;
  for (size_t i = 0; i < count; i++)
    join_val(&j, &vals[i], every);
  *out = str_val(j.buf, j.len);
  return 0;
}

/* Same-length case pairs: see the comment at the top of the file. */
static uint32_t
to_lower_cp(uint32_t c)
{
  if ((c >= 0xC0 && c <= 0xDE && c != 0xD7) || (c >= 0x391 && c <= 0x3A9) ||
      (c >= 0x410 && c <= 0x42F))
    return c == 0x3A2 ? c : c + 0x20;
  if (((c >= 0x100 && c <= 0x12F) || (c >= 0x132 && c <= 0x137) ||
       (c >= 0x14A && c <= 0x177)) &&
      c % 2 == 0)
    return c + 1;
  if (((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) && c % 2 == 1)
    return c + 1;
  if (c >= 0x400 && c <= 0x40F)
    return c + 0x50;
  if (c == 0x178)
    return 0xFF;
  if (c == 0x386)
    return 0x3AC;
  if (c >= 0x388 && c <= 0x38A)
    return c + 0x25;
  if (c == 0x38C)
    return 0x3CC;
  if (c == 0x38E || c == 0x38F)
    return c + 0x3F;
  return c;
}

static uint32_t
to_upper_cp(uint32_t c)
{
  if ((c >= 0xE0 && c <= 0xFE && c != 0xF7) || (c >= 0x3B1 && c <= 0x3C9) ||
      (c >= 0x430 && c <= 0x44F))
    return c == 0x3C2 ? 0x3A3 : c - 0x20;
  if (((c >= 0x101 && c <= 0x12F) || (c >= 0x133 && c <= 0x137) ||
       (c >= 0x14B && c <= 0x177)) &&
      c % 2 == 1)
    return c - 1;
  if (((c >= 0x13A && c <= 0x148) || (c >= 0x17A && c <= 0x17E)) && c % 2 == 0)
    return c - 1;
  if (c >= 0x450 && c <= 0x45F)
    return c - 0x50;
  if (c == 0xFF)
    return 0x178;
  if (c == 0x3AC)
    return 0x386;
  if (c >= 0x3AD && c <= 0x3AF)
    return c - 0x25;
  if (c == 0x3CC)
    return 0x38C;
  if (c == 0x3CD || c == 0x3CE)
    return c - 0x3F;
  return c;
}

static void
fold(char *s, size_t n, int upper)
{
  unsigned char *u = (unsigned char *)s;

  for (size_t i = 0; i < n;) {
    if (u[i] < 0x80) {
      if (upper && u[i] >= 'a' && u[i] <= 'z')
        u[i] -= 'a' - 'A';
      else if (!upper && u[i] >= 'A' && u[i] <= 'Z')
        u[i] += 'a' - 'A';
      i++;
    } else if ((u[i] & 0xE0) == 0xC0 && i + 1 < n) {
      uint32_t c = ((uint32_t)(u[i] & 0x1F) << 6) | (u[i + 1] & 0x3F);
      uint32_t f = upper ? to_upper_cp(c) : to_lower_cp(c);
      /* every pair above stays in U+0080..U+07FF: two bytes */
      u[i] = (unsigned char)(0xC0 | (f >> 6));
      u[i + 1] = (unsigned char)(0x80 | (f & 0x3F));
      i += 2;
    } else {
      i++; /* longer sequences are left alone, byte by byte */
    }
  }
}

static int
is_space_cp(uint32_t c)
{
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static struct val
trim(const char *s, size_t n)
{
  const unsigned char *u = (const unsigned char *)s;
  size_t len;

  while (n > 0 && is_space_cp(text_utf8_decode(u, n, &len))) {
    u += len;
    n -= len;
  }
  while (n > 0) {
    size_t start = n - 1;
    while (start > 0 && (u[start] & 0xC0) == 0x80)
      start--;
    if (!is_space_cp(text_utf8_decode(u + start, n - start, &len)))
      break;
    n = start;
  }
  return str_val((const char *)u, n);
}

static int
eval_replace(struct eval *e, const struct node *n, struct val *out)
{
  struct val a, from, to;
  const char *s, *old, *new = "", *p, *q, *end;
  size_t sn, on, nn = 0, count = 0, len;
  char *buf, *w;

  *out = null_val;
  if (eval_node(e, n->u.call.args[0], &a) != 0 ||
      eval_node(e, n->u.call.args[1], &from) != 0 ||
      eval_node(e, n->u.call.args[2], &to) != 0)
    return -1;
  if (!text(&a, &s, &sn))
    return 0;
  *out = str_val(s, sn);
  if (!text(&from, &old, &on))
    return 0; /* nothing to look for */
  if (!text(&to, &new, &nn)) {
    new = "";
    nn = 0;
  }
  end = s + sn;
  for (p = s; (q = memmem(p, (size_t)(end - p), old, on)) != NULL; p = q + on)
    count++;
  if (count == 0)
    return 0;
  len = sn - count * on + count * nn;
  if (len > MAPPING_VALUE_MAX)
    return too_long(e);
  buf = scratch(e, len);
  if (buf == NULL)
    return -1;
  w = buf;
  for (p = s; (q = memmem(p, (size_t)(end - p), old, on)) != NULL;
       p = q + on) {
    memcpy(w, p, (size_t)(q - p));
    w += q - p;
    memcpy(w, new, nn);
    w += nn;
  }
  memcpy(w, p, (size_t)(end - p));
  *out = str_val(buf, len);
  return 0;
}

static int
values_equal(const struct val *a, const struct val *b)
{
  const char *as, *bs;
  size_t an, bn;
  int ha = text(a, &as, &an), hb = text(b, &bs, &bn);

  if (!ha || !hb)
    return ha == hb;
  return an == bn && memcmp(as, bs, an) == 0;
}

static int
truthy(const struct val *v)
{
  const char *s;
  size_t n;

  if (!text(v, &s, &n))
    return 0;
  return !text_ci_equal(s, n, "false", 5);
}

static int eval_call_more(struct eval *e, const struct node *n,
                          struct val *out);

static int
eval_call(struct eval *e, const struct node *n, struct val *out)
{
  struct node *const *args = n->u.call.args;
  struct val a, b;
  const char *s;
  size_t sn;
  char *buf;

  *out = null_val;
  switch (n->u.call.fn) {
  case FN_JOIN:
    return eval_join(e, n, 1, out);
  case FN_APPEND:
    return eval_join(e, n, 0, out);
  case FN_COALESCE:
    for (size_t i = 0; i < n->u.call.n; i++) {
      if (eval_node(e, args[i], out) != 0)
        return -1;
      if (out->t != V_NULL)
        return 0;
    }
    return 0;
  case FN_TOLOWER:
  case FN_TOUPPER:
    if (eval_node(e, args[0], &a) != 0)
      return -1;
    if (!text(&a, &s, &sn))
      return 0;
    if (sn > MAPPING_VALUE_MAX)
      return too_long(e);
    buf = scratch(e, sn);
    if (buf == NULL)
      return -1;
    memcpy(buf, s, sn);
    fold(buf, sn, n->u.call.fn == FN_TOUPPER);
    *out = str_val(buf, sn);
    return 0;
  case FN_TRIM:
    if (eval_node(e, args[0], &a) != 0)
      return -1;
    if (text(&a, &s, &sn))
      *out = trim(s, sn);
    return 0;
  case FN_REPLACE:
    return eval_replace(e, n, out);
  case FN_LEFT: {
    size_t i = 0;
    long left = args[1]->u.num;
    if (eval_node(e, args[0], &a) != 0)
      return -1;
    if (!text(&a, &s, &sn))
      return 0;
    /* count lead bytes; source and constants are valid UTF-8 */
    for (; i < sn; i++) {
      if (((unsigned char)s[i] & 0xC0) != 0x80 && left-- == 0)
        break;
    }
    *out = str_val(s, i);
    return 0;
  }
  case FN_IIF: {
    int cond;
    const struct node *c = args[0];
    if (c->kind == N_CMP) {
      if (eval_node(e, c->u.cmp.l, &a) != 0 ||
          eval_node(e, c->u.cmp.r, &b) != 0)
        return -1;
      cond = values_equal(&a, &b) != c->u.cmp.ne;
    } else {
      if (eval_node(e, c, &a) != 0)
        return -1;
      cond = truthy(&a);
    }
    return eval_node(e, args[cond ? 1 : 2], out);
  }
  case FN_SWITCH:
    if (eval_node(e, args[0], &a) != 0)
      return -1;
    for (size_t i = 2; i + 1 < n->u.call.n; i += 2) {
      if (eval_node(e, args[i], &b) != 0)
        return -1;
      if (values_equal(&a, &b))
        return eval_node(e, args[i + 1], out);
    }
    return eval_node(e, args[1], out);
  case FN_ISPRESENT:
    if (eval_node(e, args[0], &a) != 0)
      return -1;
    *out = bool_val(a.t != V_NULL);
    return 0;
  default:
    return eval_call_more(e, n, out);
  }
  return 0;
}

/* ---------------------------------------------------------------------
 * The functions of issue 19: Not, Mid, Split, Word, NormalizeDiacritics,
 * StripSpaces, SelectUniqueValue, ToTitleCase, PCase, FormatDateTime,
 * IsNullOrEmpty, IsNull.
 */

/* Not(): false only for true (the boolean, or the text, any case). */
static int
is_true(const struct val *v)
{
  const char *s;
  size_t n;

  return text(v, &s, &n) && text_ci_equal(s, n, "true", 4);
}

/* Byte offset of code point number `cp` (from 0) in s[0..n), or n. */
static size_t
cp_offset(const char *s, size_t n, long cp)
{
  size_t i = 0;

  for (; i < n; i++) {
    if (((unsigned char)s[i] & 0xC0) != 0x80 && cp-- == 0)
      break;
  }
  return i;
}

static int
eval_mid(struct eval *e, const struct node *n, struct val *out)
{
  struct val a;
  const char *s;
  size_t sn, from, to;

  *out = null_val;
  if (eval_node(e, n->u.call.args[0], &a) != 0)
    return -1;
  if (!text(&a, &s, &sn))
    return 0;
  from = cp_offset(s, sn, n->u.call.args[1]->u.num - 1);
  to = from + cp_offset(s + from, sn - from, n->u.call.args[2]->u.num);
  *out = str_val(s + from, to - from);
  return 0;
}

/* s[0..n) with white space trimmed at both ends, appended to the list
 * unless empty. */
static void
add_piece(struct piece *list, size_t *count, const char *s, size_t n)
{
  struct val v = trim(s, n);

  if (v.t != V_NULL) {
    list[*count].s = v.s;
    list[*count].n = v.n;
    (*count)++;
  }
}

/* Split(a, delimiter): the pieces between delimiters, each trimmed (as
 * Microsoft's example shows), empty ones dropped. */
static int
eval_split(struct eval *e, const struct node *n, struct val *out)
{
  struct val a, d;
  const char *s, *delim, *p, *q, *end;
  size_t sn, dn, count = 1;
  struct piece *list;

  *out = null_val;
  if (eval_node(e, n->u.call.args[0], &a) != 0 ||
      eval_node(e, n->u.call.args[1], &d) != 0)
    return -1;
  if (!text(&a, &s, &sn))
    return 0;
  if (!text(&d, &delim, &dn)) {
    delim = NULL; /* no delimiter: one piece */
    dn = 0;
  }
  end = s + sn;
  for (p = s;
       delim != NULL && (q = memmem(p, (size_t)(end - p), delim, dn)) != NULL;
       p = q + dn)
    count++;
  list = arena_alloc(&e->arena, count * sizeof(*list));
  if (list == NULL)
    return eval_fail(e, "out of memory");
  count = 0;
  for (p = s;
       delim != NULL && (q = memmem(p, (size_t)(end - p), delim, dn)) != NULL;
       p = q + dn)
    add_piece(list, &count, p, (size_t)(q - p));
  add_piece(list, &count, p, (size_t)(end - p));
  if (count > 0) {
    out->t = V_LIST;
    out->list = list;
    out->n = count;
  }
  return 0;
}

/* Whether code point c is one of those of set[0..n). */
static int
in_set(uint32_t c, const char *set, size_t n)
{
  size_t len;

  for (size_t i = 0; i < n; i += len) {
    if (text_utf8_decode((const unsigned char *)set + i, n - i, &len) == c)
      return 1;
  }
  return 0;
}

/* Word(a, number, delimiters): the number-th (from 1) run of characters
 * that are not delimiters; null when there are fewer. */
static int
eval_word(struct eval *e, const struct node *n, struct val *out)
{
  struct val a, d;
  const char *s, *set;
  size_t sn, setn, len, start = 0;
  long want = n->u.call.args[1]->u.num, seen = 0;
  int inword = 0;

  *out = null_val;
  if (eval_node(e, n->u.call.args[0], &a) != 0 ||
      eval_node(e, n->u.call.args[2], &d) != 0)
    return -1;
  if (want < 1 || !text(&a, &s, &sn))
    return 0;
  if (!text(&d, &set, &setn)) {
    set = "";
    setn = 0;
  }
  for (size_t i = 0; i <= sn; i += len) {
    int delim = i == sn;
    len = 1;
    if (!delim)
      delim =
          in_set(text_utf8_decode((const unsigned char *)s + i, sn - i, &len),
                 set, setn);
    if (!delim && !inword) {
      inword = 1;
      start = i;
    } else if (delim && inword) {
      inword = 0;
      if (++seen == want) {
        *out = str_val(s + start, i - start);
        return 0;
      }
    }
  }
  return 0;
}

/* Microsoft's NormalizeDiacritics table, precomposed letters only; the
 * combining marks of the decomposed forms (U+0300..U+036F) are dropped
 * wherever they are. Sorted by code point. */
static const struct {
  uint16_t cp;
  char to[3];
} diacritics[] = {
    {0xC0, "A"},   {0xC1, "A"},   {0xC2, "A"},   {0xC3, "A"},   {0xC4, "A"},
    {0xC5, "A"},   {0xC6, "AE"},  {0xC7, "C"},   {0xC8, "E"},   {0xC9, "E"},
    {0xCA, "E"},   {0xCB, "E"},   {0xCC, "I"},   {0xCD, "I"},   {0xCE, "I"},
    {0xCF, "I"},   {0xD1, "N"},   {0xD2, "O"},   {0xD3, "O"},   {0xD4, "O"},
    {0xD5, "O"},   {0xD6, "O"},   {0xD8, "OE"},  {0xD9, "U"},   {0xDA, "U"},
    {0xDB, "U"},   {0xDC, "U"},   {0xDD, "Y"},   {0xDF, "ss"},  {0xE0, "a"},
    {0xE1, "a"},   {0xE2, "a"},   {0xE3, "a"},   {0xE4, "a"},   {0xE5, "a"},
    {0xE6, "ae"},  {0xE7, "c"},   {0xE8, "e"},   {0xE9, "e"},   {0xEA, "e"},
    {0xEB, "e"},   {0xEC, "i"},   {0xED, "i"},   {0xEE, "i"},   {0xEF, "i"},
    {0xF1, "n"},   {0xF2, "o"},   {0xF3, "o"},   {0xF4, "o"},   {0xF5, "o"},
    {0xF6, "o"},   {0xF8, "oe"},  {0xF9, "u"},   {0xFA, "u"},   {0xFB, "u"},
    {0xFC, "u"},   {0xFD, "y"},   {0xFF, "y"},   {0x100, "A"},  {0x101, "a"},
    {0x102, "A"},  {0x103, "a"},  {0x104, "A"},  {0x105, "a"},  {0x106, "C"},
    {0x107, "c"},  {0x10C, "C"},  {0x10D, "c"},  {0x10E, "D"},  {0x10F, "d"},
    {0x112, "E"},  {0x113, "e"},  {0x116, "E"},  {0x117, "e"},  {0x118, "E"},
    {0x119, "e"},  {0x11A, "E"},  {0x11B, "e"},  {0x11E, "G"},  {0x11F, "g"},
    {0x12A, "I"},  {0x12B, "i"},  {0x130, "I"},  {0x131, "i"},  {0x13D, "L"},
    {0x13E, "l"},  {0x141, "L"},  {0x142, "l"},  {0x143, "N"},  {0x144, "n"},
    {0x147, "N"},  {0x148, "n"},  {0x14C, "O"},  {0x14D, "o"},  {0x150, "O"},
    {0x151, "o"},  {0x152, "OE"}, {0x153, "oe"}, {0x158, "R"},  {0x159, "r"},
    {0x15A, "S"},  {0x15B, "s"},  {0x15E, "S"},  {0x15F, "s"},  {0x160, "S"},
    {0x161, "s"},  {0x162, "T"},  {0x163, "t"},  {0x164, "T"},  {0x165, "t"},
    {0x16A, "U"},  {0x16B, "u"},  {0x16E, "U"},  {0x16F, "u"},  {0x170, "U"},
    {0x171, "u"},  {0x178, "Y"},  {0x179, "Z"},  {0x17A, "z"},  {0x17B, "Z"},
    {0x17C, "z"},  {0x17D, "Z"},  {0x17E, "z"},  {0x1D5, "U"},  {0x1D6, "u"},
    {0x1DE, "A"},  {0x1DF, "a"},  {0x1E0, "A"},  {0x1E1, "a"},  {0x1E2, "AE"},
    {0x1E3, "ae"}, {0x1EC, "O"},  {0x1ED, "o"},  {0x218, "S"},  {0x219, "s"},
    {0x21A, "T"},  {0x21B, "t"},  {0x22A, "O"},  {0x22B, "o"},  {0x22C, "O"},
    {0x22D, "o"},  {0x230, "O"},  {0x231, "o"},  {0x232, "Y"},  {0x233, "y"},
    {0x1E0E, "D"}, {0x1E0F, "d"}, {0x1E14, "E"}, {0x1E15, "e"}, {0x1E16, "E"},
    {0x1E17, "e"}, {0x1E20, "G"}, {0x1E21, "g"}, {0x1E38, "L"}, {0x1E39, "l"},
    {0x1E3A, "L"}, {0x1E3B, "l"}, {0x1E48, "N"}, {0x1E49, "n"}, {0x1E50, "O"},
    {0x1E51, "o"}, {0x1E52, "O"}, {0x1E53, "o"}, {0x1E5C, "R"}, {0x1E5D, "r"},
    {0x1E5E, "R"}, {0x1E5F, "r"}, {0x1E6E, "T"}, {0x1E6F, "t"}, {0x1E72, "U"},
    {0x1E73, "u"}, {0x1E7A, "U"}, {0x1E7B, "u"}, {0x1E94, "Z"}, {0x1E95, "z"},
};

static const char *
diacritic_of(uint32_t c)
{
  size_t lo = 0, hi = N_OF(diacritics);

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (diacritics[mid].cp == c)
      return diacritics[mid].to;
    if (diacritics[mid].cp < c)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

/* NormalizeDiacritics and StripSpaces: neither ever makes text longer
 * (every replacement is at most as long as the letter it replaces). */
static int
eval_strip(struct eval *e, const struct node *n, int diacritics_too,
           struct val *out)
{
  struct val a;
  const char *s;
  size_t sn, len, w = 0;
  char *buf;

  *out = null_val;
  if (eval_node(e, n->u.call.args[0], &a) != 0)
    return -1;
  if (!text(&a, &s, &sn))
    return 0;
  buf = scratch(e, sn);
  if (buf == NULL)
    return -1;
  for (size_t i = 0; i < sn; i += len) {
    uint32_t c = text_utf8_decode((const unsigned char *)s + i, sn - i, &len);
    const char *to = NULL;
    if (!diacritics_too) {
      if (c != ' ') {
        memcpy(buf + w, s + i, len);
        w += len;
      }
      continue;
    }
    if (c >= 0x300 && c <= 0x36F)
      continue; /* a combining mark */
    to = diacritic_of(c);
    if (to != NULL && strlen(to) <= len) {
      memcpy(buf + w, to, strlen(to));
      w += strlen(to);
    } else {
      memcpy(buf + w, s + i, len);
      w += len;
    }
  }
  *out = str_val(buf, w);
  return 0;
}

/* A letter or digit for ToTitleCase/PCase: ASCII ones, and every
 * character from U+00C0 on but the Latin-1 signs (U+00D7, U+00F7), the
 * general punctuation block and white space. */
static int
is_word_cp(uint32_t c)
{
  if (c < 0x80)
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
  if (c < 0xC0 || c == 0xD7 || c == 0xF7 || (c >= 0x2000 && c <= 0x206F))
    return 0;
  return !is_space_cp(c);
}

/* Writes code point c, folded, at buf[*w]: same length (see fold()). */
static void
put_folded(char *buf, size_t *w, const char *s, size_t len, int upper)
{
  memcpy(buf + *w, s, len);
  fold(buf + *w, len, upper);
  *w += len;
}

/* ToTitleCase(a[, culture]) (pcase 0): .NET's TextInfo.ToTitleCase, the
 * first letter of each word upper case, the others lower case, but a word
 * all in capitals is left as it is (an acronym). PCase(a[, separators])
 * (pcase 1): every word so, capitals too; words end at the characters of
 * `separators` when given. */
static int
eval_title(struct eval *e, const struct node *n, int pcase, struct val *out)
{
  struct val a, sep = null_val;
  const char *s, *set = NULL;
  size_t sn, setn = 0, len, w = 0;
  char *buf;

  *out = null_val;
  if (eval_node(e, n->u.call.args[0], &a) != 0)
    return -1;
  if (pcase && n->u.call.n > 1) {
    if (eval_node(e, n->u.call.args[1], &sep) != 0)
      return -1;
    if (!text(&sep, &set, &setn))
      set = NULL;
  }
  if (!text(&a, &s, &sn))
    return 0;
  buf = scratch(e, sn);
  if (buf == NULL)
    return -1;
  for (size_t i = 0; i < sn;) {
    size_t start = i, end, k;
    int has_lower = 0;
    /* a word: [start, end) */
    for (end = i; end < sn; end += len) {
      uint32_t c =
          text_utf8_decode((const unsigned char *)s + end, sn - end, &len);
      int word = set != NULL ? !in_set(c, set, setn) : is_word_cp(c);
      if (!word)
        break;
      if (c < 0x80 ? (c >= 'a' && c <= 'z') : to_upper_cp(c) != c)
        has_lower = 1;
    }
    for (k = start; k < end; k += len) {
      text_utf8_decode((const unsigned char *)s + k, end - k, &len);
      if (!pcase && !has_lower)
        put_folded(buf, &w, s + k, len, 1); /* unchanged: all capitals */
      else
        put_folded(buf, &w, s + k, len, k == start);
    }
    if (end < sn) { /* the separator, as it is */
      text_utf8_decode((const unsigned char *)s + end, sn - end, &len);
      memcpy(buf + w, s + end, len);
      w += len;
      end += len;
    }
    i = end;
  }
  *out = str_val(buf, w);
  return 0;
}

static int
eval_datetime(struct eval *e, const struct node *n, struct val *out)
{
  const struct node *in = n->u.call.args[2], *outf = n->u.call.args[3];
  struct val a;
  const char *s;
  size_t sn, size = outf->u.str.n * 3 + 64, len;
  char *buf;
  int rc;

  *out = null_val;
  if (eval_node(e, n->u.call.args[0], &a) != 0)
    return -1;
  if (!text(&a, &s, &sn))
    return 0;
  if (size > MAPPING_VALUE_MAX)
    size = MAPPING_VALUE_MAX;
  buf = scratch(e, size);
  if (buf == NULL)
    return -1;
  rc = datefmt_convert(s, sn, in->u.str.s, in->u.str.n, outf->u.str.s,
                       outf->u.str.n, buf, size, &len);
  if (rc == -2)
    return too_long(e);
  if (rc != 0) /* the value is the tenant's: its length, never itself */
    return eval_fail(e,
                     "FormatDateTime(): the value (%zu bytes) is not a "
                     "date in the format \"%.*s\"",
                     sn, (int)(in->u.str.n > 64 ? 64 : in->u.str.n),
                     in->u.str.s);
  *out = str_val(buf, len);
  return 0;
}

/* SelectUniqueValue(c1, c2, ...): the candidate this person's copy already
 * holds, if one is and no other object holds it too (so the value chosen
 * when the copy was made stays, as Microsoft applies the function only at
 * creation, even once an earlier candidate comes free); else the first
 * candidate that is not null and not taken in the target (e->taken;
 * without one, the first not null). */
static int
eval_unique(struct eval *e, const struct node *n, struct val *out)
{
  size_t tried = 0;
  struct val first = null_val;
  int found = 0;

  *out = null_val;
  for (size_t i = 0; i < n->u.call.n; i++) {
    struct val v;
    const char *s;
    size_t sn;
    char *z;
    int rc;

    if (eval_node(e, n->u.call.args[i], &v) != 0)
      return -1;
    if (!text(&v, &s, &sn))
      continue;
    if (e->taken == NULL) {
      *out = str_val(s, sn);
      return 0;
    }
    if (sn > MAPPING_VALUE_MAX)
      return too_long(e);
    z = scratch(e, sn + 1);
    if (z == NULL)
      return -1;
    memcpy(z, s, sn);
    z[sn] = '\0';
    tried++;
    rc = e->taken(e->taken_arg, e->target, z);
    if (rc < 0)
      return eval_fail(e,
                       "SelectUniqueValue(): cannot tell whether candidate "
                       "%zu is taken in the target",
                       i + 1);
    if (rc == MAPPING_TAKEN_OWN) {
      *out = str_val(z, sn);
      return 0;
    }
    if (rc == 0 && !found) {
      first = str_val(z, sn);
      found = 1;
    }
  }
  if (found) {
    *out = first;
    return 0;
  }
  if (tried == 0)
    return 0;
  e->exhausted = 1;
  return eval_fail(e,
                   "SelectUniqueValue(): every candidate (%zu) is taken in "
                   "the target by another object",
                   tried);
}

static int
eval_call_more(struct eval *e, const struct node *n, struct val *out)
{
  struct val a;

  *out = null_val;
  switch (n->u.call.fn) {
  case FN_NOT:
    if (eval_node(e, n->u.call.args[0], &a) != 0)
      return -1;
    *out = bool_val(!is_true(&a));
    return 0;
  case FN_ISNULLOREMPTY:
  case FN_ISNULL: /* one and the same: an empty value is null here */
    if (eval_node(e, n->u.call.args[0], &a) != 0)
      return -1;
    *out = bool_val(a.t == V_NULL);
    return 0;
  case FN_MID:
    return eval_mid(e, n, out);
  case FN_SPLIT:
    return eval_split(e, n, out);
  case FN_WORD:
    return eval_word(e, n, out);
  case FN_NORMALIZEDIACRITICS:
    return eval_strip(e, n, 1, out);
  case FN_STRIPSPACES:
    return eval_strip(e, n, 0, out);
  case FN_TOTITLECASE:
    return eval_title(e, n, 0, out);
  case FN_PCASE:
    return eval_title(e, n, 1, out);
  case FN_FORMATDATETIME:
    return eval_datetime(e, n, out);
  case FN_SELECTUNIQUEVALUE:
    return eval_unique(e, n, out);
  default:
    return 0;
  }
}

static int
eval_node(struct eval *e, const struct node *n, struct val *out)
{
  switch (n->kind) {
  case N_STR:
    *out = str_val(n->u.str.s, n->u.str.n);
    return 0;
  case N_BOOL:
    *out = bool_val(n->u.b);
    return 0;
  case N_ATTR:
    return eval_attr(e, n, out);
  case N_CALL:
    return eval_call(e, n, out);
  default: /* null; numbers and comparisons are read by their parent */
    *out = null_val;
    return 0;
  }
}

static json_t *
new_string(struct eval *e, const char *s, size_t n)
{
  json_t *j;

  if (n > MAPPING_VALUE_MAX) {
    too_long(e);
    return NULL;
  }
  j = json_stringn(s, n);
  if (j == NULL)
    eval_fail(e, "out of memory");
  return j;
}

/* The target value of v (not null), a new reference, or NULL on error. */
static json_t *
to_json(struct eval *e, const struct val *v, int is_array)
{
  const char *s = NULL;
  size_t n = 0, i;
  json_t *arr, *el, *str;

  if (is_array && v->t == V_LIST) {
    arr = json_array();
    for (i = 0; arr != NULL && i < v->n; i++) {
      str = new_string(e, v->list[i].s, v->list[i].n);
      if (str == NULL || json_array_append_new(arr, str) != 0) {
        if (str != NULL)
          eval_fail(e, "out of memory");
        json_decref(arr);
        return NULL;
      }
    }
    if (arr == NULL)
      eval_fail(e, "out of memory");
    return arr;
  }
  if (!is_array || v->t != V_ARR) {
    if (!text(v, &s, &n)) /* cannot fail: v is not null */
      return NULL;
    str = new_string(e, s, n);
    if (!is_array || str == NULL)
      return str;
    arr = json_array();
    if (arr == NULL || json_array_append_new(arr, str) != 0) {
      json_decref(arr);
      eval_fail(e, "out of memory");
      return NULL;
    }
    return arr;
  }
  arr = json_array();
  if (arr == NULL) {
    eval_fail(e, "out of memory");
    return NULL;
  }
  json_array_foreach(v->arr, i, el)
  {
    if (json_string_length(el) == 0)
      continue; /* nulls and empty strings are no value */
    str = new_string(e, json_string_value(el), json_string_length(el));
    if (str == NULL || json_array_append_new(arr, str) != 0) {
      if (str != NULL)
        eval_fail(e, "out of memory");
      json_decref(arr);
      return NULL;
    }
  }
  return arr;
}

json_t *
mapping_eval(const struct mapping *mapping, const json_t *source, char *err,
             size_t errlen)
{
  return mapping_eval_taken(mapping, source, NULL, NULL, NULL, err, errlen);
}

json_t *
mapping_eval_taken(const struct mapping *mapping, const json_t *source,
                   mapping_taken_fn taken, void *arg, int *exhausted,
                   char *err, size_t errlen)
{
  union first_block first;
  struct eval e;
  json_t *result = NULL, *obj;

  if (exhausted != NULL)
    *exhausted = 0;
  if (mapping == NULL || !json_is_object(source)) {
    text_set_err(err, errlen, "mapping_eval: %s",
                 mapping == NULL ? "no mapping"
                                 : "source is not a JSON object");
    return NULL;
  }
  e.src = source;
  e.err = err;
  e.errlen = errlen;
  e.target = "";
  e.taken = taken;
  e.taken_arg = arg;
  e.exhausted = 0;
  arena_init(&e.arena, &first);
  obj = json_object();
  if (obj == NULL) {
    text_set_err(err, errlen, "mapping_eval: out of memory");
    return NULL;
  }
  for (size_t i = 0; i < mapping->n; i++) {
    const struct rule *r = &mapping->rules[i];
    struct val v;
    json_t *j;

    e.target = r->target;
    if (eval_node(&e, r->expr, &v) != 0) {
      if (exhausted != NULL)
        *exhausted = e.exhausted;
      goto out;
    }
    if (v.t != V_NULL) {
      j = to_json(&e, &v, r->is_array);
      if (j == NULL)
        goto out;
      if (json_object_set_new(obj, r->target, j) != 0) {
        eval_fail(&e, "out of memory");
        goto out;
      }
    }
    arena_reset(&e.arena);
  }
  result = obj;
  obj = NULL;
out:
  arena_reset(&e.arena);
  json_decref(obj);
  return result;
}
