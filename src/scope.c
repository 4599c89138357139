/*
 * scope — see include/scope.h.
 *
 * The filter is parsed once by recursive descent into a small tree and
 * evaluated per object. The grammar, loosest binding first:
 *
 *   filter  := or END
 *   or      := and ('or' and)*
 *   and     := unary ('and' unary)*
 *   unary   := 'not' unary | primary
 *   primary := '(' or ')'
 *            | ('startsWith' | 'endsWith' | 'contains')
 *                '(' path ',' STRING ')'
 *            | path ('eq' | 'ne') literal
 *            | path 'in' '(' literal (',' literal)* ')'
 *   literal := STRING | INTEGER | true | false | null
 *   path    := NAME ('/' NAME)*       NAME = [A-Za-z_][A-Za-z0-9_]*
 *
 * Invariants that keep bad input from hurting the daemon:
 *
 * - The text is at most SCOPE_FILTER_MAX bytes of valid UTF-8, and only
 *   '(' and 'not' recurse, at most SCOPE_DEPTH_MAX deep; 'and' and 'or'
 *   chains are loops that build n-ary nodes. So the tree, and the
 *   recursion of evaluation and freeing, stay shallow whatever the input.
 * - Tokens are lexed one at a time, so the error reported is always the
 *   leftmost one. Columns count characters (UTF-8 code points) from 1.
 * - Evaluation never fails: a missing attribute is null, a value of the
 *   wrong type simply does not match.
 * - Evaluation is linear in the size of the attributes: `in` compares
 *   each value with each literal of its list (both bounded by the text),
 *   and contains() is a Knuth-Morris-Pratt search whose table is built
 *   at parse time, so a huge value written into a source tenant costs
 *   one pass, never length times length, and nothing is allocated.
 *
 * `ne` is exactly `not eq`, which gives the documented array rule (ne
 * holds when no element is equal) and makes `attr ne 'x'` true when attr
 * is absent, as in OData. Case folding is ASCII only: 'SALES' equals
 * 'sales', but 'É' does not equal 'é' (they are compared byte for byte).
 * `path in (a, b)` is `path eq a or path eq b` (OData's in operator), so
 * on an array it holds when any element equals any literal, and `not
 * (path in (...))` holds when none does.
 */
#include "scope.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

#define SCOPE_FILTER_MAX 8192
#define SCOPE_DEPTH_MAX 64
#define SCOPE_NAME_SHOWN 64 /* longest name quoted back in a message */

_Static_assert(sizeof(json_int_t) == sizeof(long long),
               "integer literals are parsed as long long");

enum node_kind {
  N_OR,
  N_AND,
  N_NOT,
  N_EQ,
  N_NE,
  N_STARTS,
  N_ENDS,
  N_CONTAINS,
  N_IN
};

enum lit_kind { L_STRING, L_INT, L_TRUE, L_FALSE, L_NULL };

struct literal {
  enum lit_kind kind;
  char *str; /* L_STRING: decoded text, NUL-terminated */
  size_t len;
  json_int_t num; /* L_INT */
};

struct node {
  enum node_kind kind;
  struct node **kids; /* N_OR, N_AND: nkids >= 2; N_NOT: 1 */
  size_t nkids;
  char **seg; /* comparisons and functions: the attribute path */
  size_t nseg;
  struct literal lit;   /* comparisons: right side; functions: the text */
  struct literal *lits; /* N_IN: the list, nlits >= 1 */
  size_t nlits;
  size_t *kmp; /* N_CONTAINS: the failure table of lit (lit.len entries) */
};

struct scope_filter {
  struct node *root;
};

/* ---------------------------------------------------------------------
 * Text helpers
 */

static int
is_name_start(char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int
is_name_char(char c)
{
  return is_name_start(c) || (c >= '0' && c <= '9');
}

static int
is_space(char c)
{
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}

/* ---------------------------------------------------------------------
 * The tree
 */

static void
node_free(struct node *node)
{
  if (node == NULL)
    return;
  for (size_t i = 0; i < node->nkids; i++)
    node_free(node->kids[i]);
  free(node->kids);
  for (size_t i = 0; i < node->nseg; i++)
    free(node->seg[i]);
  free(node->seg);
  free(node->lit.str);
  for (size_t i = 0; i < node->nlits; i++)
    free(node->lits[i].str);
  free(node->lits);
  free(node->kmp);
  free(node);
}

static struct node *
node_new(enum node_kind kind)
{
  struct node *node = calloc(1, sizeof(*node));

  if (node != NULL)
    node->kind = kind;
  return node;
}

/* Append `kid` to `node`; on failure frees `kid` and returns -1. */
static int
node_add(struct node *node, struct node *kid)
{
  struct node **kids =
      realloc(node->kids, (node->nkids + 1) * sizeof(*node->kids));

  if (kids == NULL) {
    node_free(kid);
    return -1;
  }
  kids[node->nkids++] = kid;
  node->kids = kids;
  return 0;
}

/* ---------------------------------------------------------------------
 * Lexer
 */

enum tok_kind { T_END, T_NAME, T_STRING, T_INT, T_LPAREN, T_RPAREN, T_COMMA };

struct token {
  enum tok_kind kind;
  size_t start, len; /* bytes of the text */
  int has_slash;     /* T_NAME: a path a/b */
  char *str;         /* T_STRING: decoded, owned until taken */
  size_t slen;
  json_int_t num; /* T_INT */
};

struct parser {
  const char *text;
  size_t pos; /* first byte not yet lexed */
  struct token tok;
  int depth;
  char *err;
  size_t errlen;
  int failed;
};

/* 1-based column of byte offset `off`, counting code points. */
static size_t
column(const struct parser *p, size_t off)
{
  size_t col = 1;

  for (size_t i = 0; i < off; i++)
    if (((unsigned char)p->text[i] & 0xc0) != 0x80)
      col++;
  return col;
}

/* Record the first error, prefixed by the column of byte `off`. */
static void fail(struct parser *p, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
fail(struct parser *p, size_t off, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (p->failed)
    return;
  p->failed = 1;
  if (p->err == NULL || p->errlen == 0)
    return;
  n = snprintf(p->err, p->errlen, "column %zu: ", column(p, off));
  if (n < 0 || (size_t)n >= p->errlen)
    return;
  va_start(ap, fmt);
  vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
  va_end(ap);
}

static void
fail_oom(struct parser *p)
{
  if (p->failed)
    return;
  p->failed = 1;
  if (p->err != NULL && p->errlen > 0)
    snprintf(p->err, p->errlen, "out of memory");
}

/* Hints for characters people reach for out of habit from other filter
 * languages. */
static const char *
hint(const char *s)
{
  if (s[0] == '=')
    return " (use 'eq')";
  if ((s[0] == '!' && s[1] == '=') || (s[0] == '<' && s[1] == '>'))
    return " (use 'ne')";
  if (s[0] == '!')
    return " (use 'not')";
  if (s[0] == '&')
    return " (use 'and')";
  if (s[0] == '|')
    return " (use 'or')";
  if (s[0] == '"')
    return " (strings take single quotes)";
  return "";
}

static int
lex_string(struct parser *p)
{
  const char *t = p->text;
  size_t start = p->pos, i = p->pos + 1, n = 0;
  char *buf;

  /* The decoded text is never longer than the rest of the input. */
  buf = malloc(strlen(t + i) + 1);
  if (buf == NULL) {
    fail_oom(p);
    return -1;
  }
  for (;;) {
    if (t[i] == '\0') {
      free(buf);
      fail(p, start, "unterminated string");
      return -1;
    }
    if (t[i] == '\'') {
      if (t[i + 1] != '\'')
        break;
      i++; /* a doubled quote stands for one */
    }
    buf[n++] = t[i++];
  }
  buf[n] = '\0';
  p->tok.kind = T_STRING;
  p->tok.str = buf;
  p->tok.slen = n;
  p->pos = i + 1;
  return 0;
}

static int
lex_int(struct parser *p)
{
  const char *t = p->text;
  size_t start = p->pos, i = p->pos;
  int neg = 0;
  json_int_t v = 0;
  /* Accumulate negatively so that the most negative value fits too. */
  const json_int_t min = LLONG_MIN;

  if (t[i] == '-') {
    neg = 1;
    i++;
  }
  for (; t[i] >= '0' && t[i] <= '9'; i++) {
    int d = t[i] - '0';
    if (v < (min + d) / 10) {
      fail(p, start, "integer out of range");
      return -1;
    }
    v = v * 10 - d;
  }
  if (is_name_char(t[i])) {
    fail(p, start, "invalid number");
    return -1;
  }
  if (!neg) {
    if (v == min) {
      fail(p, start, "integer out of range");
      return -1;
    }
    v = -v;
  }
  p->tok.kind = T_INT;
  p->tok.num = v;
  p->pos = i;
  return 0;
}

/* Lex the next token into p->tok, dropping the current one. */
static int
advance(struct parser *p)
{
  const char *t = p->text;
  size_t i = p->pos;

  free(p->tok.str);
  memset(&p->tok, 0, sizeof(p->tok));
  while (is_space(t[i]))
    i++;
  p->pos = i;
  p->tok.start = i;
  if (t[i] == '\0') {
    p->tok.kind = T_END;
  } else if (t[i] == '(' || t[i] == ')' || t[i] == ',') {
    p->tok.kind = t[i] == '(' ? T_LPAREN : t[i] == ')' ? T_RPAREN : T_COMMA;
    p->pos = i + 1;
  } else if (t[i] == '\'') {
    if (lex_string(p) < 0)
      return -1;
  } else if ((t[i] >= '0' && t[i] <= '9') ||
             (t[i] == '-' && t[i + 1] >= '0' && t[i + 1] <= '9')) {
    if (lex_int(p) < 0)
      return -1;
  } else if (is_name_start(t[i])) {
    p->tok.kind = T_NAME;
    for (;;) {
      while (is_name_char(t[i]))
        i++;
      if (t[i] != '/')
        break;
      if (!is_name_start(t[i + 1])) {
        fail(p, i + 1, "expected an attribute name after '/'");
        return -1;
      }
      p->tok.has_slash = 1;
      i++;
    }
    p->pos = i;
  } else {
    unsigned char c = (unsigned char)t[i];
    if (c >= 0x21 && c < 0x7f)
      fail(p, i, "unexpected character '%c'%s", c, hint(t + i));
    else if (c >= 0x80)
      fail(p, i, "unexpected character '%.*s'",
           (int)text_utf8_seq((const unsigned char *)t + i, strlen(t + i)),
           t + i);
    else
      fail(p, i, "unexpected character 0x%02x", c);
    return -1;
  }
  p->tok.len = p->pos - p->tok.start;
  return 0;
}

/* ---------------------------------------------------------------------
 * Parser
 */

static int
is_word(const struct parser *p, const char *word)
{
  return p->tok.kind == T_NAME &&
         text_ci_equal(p->text + p->tok.start, p->tok.len, word, strlen(word));
}

static int
is_keyword(const struct parser *p)
{
  static const char *const words[] = {"and",  "or",    "not",  "eq", "ne",
                                      "true", "false", "null", "in"};

  for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
    if (is_word(p, words[i]))
      return 1;
  return 0;
}

/* "Expected `what`" at the current token. */
static void
expected(struct parser *p, const char *what)
{
  if (p->tok.kind == T_END)
    fail(p, p->tok.start, "unexpected end of filter, expected %s", what);
  else
    fail(p, p->tok.start, "expected %s", what);
}

/* At a token that should be the ')' matching the '(' at byte `open`. */
static int
close_paren(struct parser *p, size_t open, const char *otherwise)
{
  if (p->tok.kind == T_RPAREN)
    return advance(p);
  if (p->tok.kind == T_END)
    fail(p, p->tok.start, "missing ')' to close '(' at column %zu",
         column(p, open));
  else
    fail(p, p->tok.start, "expected %s", otherwise);
  return -1;
}

/* The current T_NAME token as a path stored in `node`. */
static int
take_path(struct parser *p, struct node *node)
{
  const char *s = p->text + p->tok.start, *end = s + p->tok.len;
  size_t n = 1;

  for (const char *c = s; c < end; c++)
    if (*c == '/')
      n++;
  node->seg = calloc(n, sizeof(*node->seg));
  if (node->seg == NULL)
    goto out;
  while (node->nseg < n) {
    const char *slash = memchr(s, '/', (size_t)(end - s));
    size_t len = (size_t)((slash != NULL ? slash : end) - s);
    char *seg = malloc(len + 1);
    if (seg == NULL)
      goto out;
    memcpy(seg, s, len);
    seg[len] = '\0';
    node->seg[node->nseg++] = seg;
    s += len + 1;
  }
  return 0;
out:
  fail_oom(p);
  return -1;
}

/* Shown name of the current token, for messages: "%.*s". */
static int
shown_len(const struct parser *p)
{
  return p->tok.len > SCOPE_NAME_SHOWN ? SCOPE_NAME_SHOWN : (int)p->tok.len;
}

static struct node *parse_or(struct parser *p);

static const char *
function_name(enum node_kind kind)
{
  return kind == N_STARTS ? "startsWith"
         : kind == N_ENDS ? "endsWith"
                          : "contains";
}

/* ASCII lower case, as text_ci_equal folds. */
static unsigned char
fold(unsigned char c)
{
  return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

/* contains(): the Knuth-Morris-Pratt failure table of the (case-folded)
 * text, so that evaluation is one pass over the value. */
static int
kmp_table(struct node *node)
{
  const unsigned char *w = (const unsigned char *)node->lit.str;
  size_t k = 0;

  if (node->lit.len == 0)
    return 0;
  node->kmp = calloc(node->lit.len, sizeof(*node->kmp));
  if (node->kmp == NULL)
    return -1;
  for (size_t i = 1; i < node->lit.len; i++) {
    while (k > 0 && fold(w[i]) != fold(w[k]))
      k = node->kmp[k - 1];
    if (fold(w[i]) == fold(w[k]))
      k++;
    node->kmp[i] = k;
  }
  return 0;
}

/* startsWith(path, 'text'), endsWith(...) or contains(...); the current
 * token is the function's name, followed by '('. */
static struct node *
parse_function(struct parser *p, enum node_kind kind)
{
  const char *name = function_name(kind);
  struct node *node = node_new(kind);
  size_t open;
  char what[96];

  if (node == NULL) {
    fail_oom(p);
    return NULL;
  }
  if (advance(p) < 0)
    goto out;
  open = p->tok.start; /* the '(' the caller saw */
  if (advance(p) < 0)
    goto out;
  if (p->tok.kind != T_NAME || is_keyword(p)) {
    snprintf(what, sizeof(what), "an attribute as the first argument of %s",
             name);
    expected(p, what);
    goto out;
  }
  if (take_path(p, node) < 0 || advance(p) < 0)
    goto out;
  if (p->tok.kind != T_COMMA) {
    snprintf(what, sizeof(what), "',' after the attribute in %s", name);
    expected(p, what);
    goto out;
  }
  if (advance(p) < 0)
    goto out;
  if (p->tok.kind != T_STRING) {
    snprintf(what, sizeof(what), "a string as the second argument of %s",
             name);
    expected(p, what);
    goto out;
  }
  node->lit.kind = L_STRING;
  node->lit.str = p->tok.str;
  node->lit.len = p->tok.slen;
  p->tok.str = NULL;
  if (kind == N_CONTAINS && kmp_table(node) < 0) {
    fail_oom(p);
    goto out;
  }
  if (advance(p) < 0)
    goto out;
  snprintf(what, sizeof(what), "')' after the arguments of %s", name);
  if (close_paren(p, open, what) < 0)
    goto out;
  return node;
out:
  node_free(node);
  return NULL;
}

/* The current token as a literal into `lit` (a string is taken from
 * the token). Returns 0, or -1 when it is not one (nothing recorded). */
static int
take_literal(struct parser *p, struct literal *lit)
{
  if (p->tok.kind == T_STRING) {
    lit->kind = L_STRING;
    lit->str = p->tok.str;
    lit->len = p->tok.slen;
    p->tok.str = NULL;
  } else if (p->tok.kind == T_INT) {
    lit->kind = L_INT;
    lit->num = p->tok.num;
  } else if (is_word(p, "true")) {
    lit->kind = L_TRUE;
  } else if (is_word(p, "false")) {
    lit->kind = L_FALSE;
  } else if (is_word(p, "null")) {
    lit->kind = L_NULL;
  } else {
    return -1;
  }
  return 0;
}

#define LITERAL_WHAT "a value ('text', a number, true, false or null)"

/* The list of `path in (...)`; the current token is 'in'. */
static int
parse_in_list(struct parser *p, struct node *node)
{
  size_t open;

  if (advance(p) < 0)
    return -1;
  if (p->tok.kind != T_LPAREN) {
    expected(p, "'(' after 'in'");
    return -1;
  }
  open = p->tok.start;
  for (;;) {
    struct literal *lits;

    if (advance(p) < 0)
      return -1;
    lits = realloc(node->lits, (node->nlits + 1) * sizeof(*lits));
    if (lits == NULL) {
      fail_oom(p);
      return -1;
    }
    node->lits = lits;
    memset(&lits[node->nlits], 0, sizeof(*lits));
    if (take_literal(p, &lits[node->nlits]) < 0) {
      expected(p, node->nlits == 0 ? LITERAL_WHAT " in the list of 'in'"
                                   : LITERAL_WHAT " after ','");
      return -1;
    }
    node->nlits++;
    if (advance(p) < 0)
      return -1;
    if (p->tok.kind != T_COMMA)
      break;
  }
  if (close_paren(p, open, "',' or ')' in the list of 'in'") < 0)
    return -1;
  return 0;
}

/* path ('eq' | 'ne') literal, or path 'in' '(' literals ')'; the current
 * token is the path. */
static struct node *
parse_comparison(struct parser *p)
{
  struct node *node = node_new(N_EQ);
  const char *op;
  char what[128];

  if (node == NULL) {
    fail_oom(p);
    return NULL;
  }
  if (take_path(p, node) < 0)
    goto out;
  snprintf(what, sizeof(what), "'eq', 'ne' or 'in' after '%.*s'", shown_len(p),
           p->text + p->tok.start);
  if (advance(p) < 0)
    goto out;
  if (is_word(p, "eq")) {
    op = "eq";
  } else if (is_word(p, "ne")) {
    node->kind = N_NE;
    op = "ne";
  } else if (is_word(p, "in")) {
    node->kind = N_IN;
    if (parse_in_list(p, node) < 0)
      goto out;
    return node;
  } else {
    expected(p, what);
    goto out;
  }
  if (advance(p) < 0)
    goto out;
  if (take_literal(p, &node->lit) < 0) {
    snprintf(what, sizeof(what), LITERAL_WHAT " after '%s'", op);
    expected(p, what);
    goto out;
  }
  if (advance(p) < 0)
    goto out;
  return node;
out:
  node_free(node);
  return NULL;
}

/* Is the current name directly followed by '(' (spaces allowed)? */
static int
followed_by_paren(const struct parser *p)
{
  size_t i = p->pos;

  while (is_space(p->text[i]))
    i++;
  return p->text[i] == '(';
}

static struct node *
parse_primary(struct parser *p)
{
  const char *operand = "an attribute, a function, 'not' or '('";

  if (p->tok.kind == T_LPAREN) {
    size_t open = p->tok.start;
    struct node *inner;

    if (++p->depth > SCOPE_DEPTH_MAX) {
      fail(p, open, "nesting deeper than %d", SCOPE_DEPTH_MAX);
      return NULL;
    }
    if (advance(p) < 0)
      return NULL;
    inner = parse_or(p);
    if (inner == NULL)
      return NULL;
    if (close_paren(p, open, "'and', 'or' or ')'") < 0) {
      node_free(inner);
      return NULL;
    }
    p->depth--;
    return inner;
  }
  if (p->tok.kind != T_NAME || is_keyword(p)) {
    expected(p, operand);
    return NULL;
  }
  if (!p->tok.has_slash && followed_by_paren(p)) {
    if (is_word(p, "startsWith"))
      return parse_function(p, N_STARTS);
    if (is_word(p, "endsWith"))
      return parse_function(p, N_ENDS);
    if (is_word(p, "contains"))
      return parse_function(p, N_CONTAINS);
    fail(p, p->tok.start, "unknown function '%.*s'", shown_len(p),
         p->text + p->tok.start);
    return NULL;
  }
  return parse_comparison(p);
}

static struct node *
parse_unary(struct parser *p)
{
  struct node *node, *kid;

  if (!is_word(p, "not"))
    return parse_primary(p);
  if (++p->depth > SCOPE_DEPTH_MAX) {
    fail(p, p->tok.start, "nesting deeper than %d", SCOPE_DEPTH_MAX);
    return NULL;
  }
  node = node_new(N_NOT);
  if (node == NULL) {
    fail_oom(p);
    return NULL;
  }
  if (advance(p) < 0) {
    node_free(node);
    return NULL;
  }
  kid = parse_unary(p);
  if (kid == NULL || node_add(node, kid) < 0) {
    if (kid != NULL)
      fail_oom(p);
    node_free(node);
    return NULL;
  }
  p->depth--;
  return node;
}

/* One level of a left-to-right chain `sub (word sub)*`, as one n-ary node
 * of `kind` when there are two or more operands. */
static struct node *
parse_chain(struct parser *p, enum node_kind kind, const char *word,
            struct node *(*sub)(struct parser *))
{
  struct node *first = sub(p), *chain, *kid;

  if (first == NULL || !is_word(p, word))
    return first;
  chain = node_new(kind);
  if (chain == NULL || node_add(chain, first) < 0) {
    if (chain == NULL)
      node_free(first);
    node_free(chain);
    fail_oom(p);
    return NULL;
  }
  while (is_word(p, word)) {
    if (advance(p) < 0)
      goto out;
    kid = sub(p);
    if (kid == NULL)
      goto out;
    if (node_add(chain, kid) < 0) {
      fail_oom(p);
      goto out;
    }
  }
  return chain;
out:
  node_free(chain);
  return NULL;
}

static struct node *
parse_and(struct parser *p)
{
  return parse_chain(p, N_AND, "and", parse_unary);
}

static struct node *
parse_or(struct parser *p)
{
  return parse_chain(p, N_OR, "or", parse_and);
}

int
scope_filter_parse(const char *text, struct scope_filter **out, char *err,
                   size_t errlen)
{
  int result = -1;
  struct parser p = {.text = text, .err = err, .errlen = errlen};
  struct node *root = NULL;
  size_t len;

  if (err != NULL && errlen > 0)
    err[0] = '\0';
  if (out == NULL)
    return -1;
  *out = NULL;
  if (text == NULL) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "empty filter");
    return -1;
  }
  len = strnlen(text, SCOPE_FILTER_MAX + 1);
  if (len > SCOPE_FILTER_MAX) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "filter longer than %d bytes", SCOPE_FILTER_MAX);
    return -1;
  }
  for (size_t i = 0; i < len;) {
    size_t n = text_utf8_seq((const unsigned char *)text + i, len - i);
    if (n == 0) {
      fail(&p, i, "invalid UTF-8");
      return -1;
    }
    i += n;
  }
  if (advance(&p) < 0)
    goto out;
  if (p.tok.kind == T_END) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "empty filter");
    goto out;
  }
  root = parse_or(&p);
  if (root == NULL)
    goto out;
  if (p.tok.kind == T_RPAREN) {
    fail(&p, p.tok.start, "unexpected ')'");
    goto out;
  }
  if (p.tok.kind != T_END) {
    expected(&p, "'and' or 'or'");
    goto out;
  }
  *out = calloc(1, sizeof(**out));
  if (*out == NULL) {
    fail_oom(&p);
    goto out;
  }
  (*out)->root = root;
  root = NULL;
  result = 0;
out:
  node_free(root);
  free(p.tok.str);
  return result;
}

void
scope_filter_free(struct scope_filter *filter)
{
  if (filter == NULL)
    return;
  node_free(filter->root);
  free(filter);
}

/* ---------------------------------------------------------------------
 * Evaluation
 */

/* attrs[name]: the exact key if there is one, else the first key equal
 * ignoring ASCII case (in the object's order). Borrowed, or NULL. */
static json_t *
lookup(const json_t *obj, const char *name)
{
  const char *key;
  json_t *value;
  size_t len = strlen(name);

  if (!json_is_object(obj))
    return NULL;
  value = json_object_get(obj, name);
  if (value != NULL)
    return value;
  /* json_object_foreach wants a non-const object; it does not modify it. */
  json_object_foreach((json_t *)obj, key, value)
  {
    if (text_ci_equal(key, strlen(key), name, len))
      return value;
  }
  return NULL;
}

static int
is_bool_text(const json_t *s, int truth)
{
  const char *want = truth ? "true" : "false";

  return text_ci_equal(json_string_value(s), json_string_length(s), want,
                       strlen(want));
}

/* One non-array value (never NULL) against a literal. */
static int
scalar_eq(const json_t *v, const struct literal *lit)
{
  switch (lit->kind) {
  case L_NULL:
    return json_is_null(v);
  case L_STRING:
    if (json_is_string(v))
      return text_ci_equal(json_string_value(v), json_string_length(v),
                           lit->str, lit->len);
    if (json_is_boolean(v))
      return text_ci_equal(lit->str, lit->len,
                           json_is_true(v) ? "true" : "false",
                           json_is_true(v) ? 4 : 5);
    return 0;
  case L_INT:
    return json_is_integer(v) && json_integer_value(v) == lit->num;
  case L_TRUE:
  case L_FALSE:
    if (json_is_boolean(v))
      return json_is_true(v) == (lit->kind == L_TRUE);
    if (json_is_string(v))
      return is_bool_text(v, lit->kind == L_TRUE);
    return 0;
  }
  return 0;
}

/* `v eq lit`, v NULL when absent. An empty array counts as null. */
static int
value_eq(const json_t *v, const struct literal *lit)
{
  size_t i;
  json_t *elem;

  if (v == NULL || json_is_null(v))
    return lit->kind == L_NULL;
  if (json_is_array(v)) {
    if (json_array_size(v) == 0)
      return lit->kind == L_NULL;
    json_array_foreach(v, i, elem)
    {
      if (scalar_eq(elem, lit))
        return 1;
    }
    return 0;
  }
  return scalar_eq(v, lit);
}

static int
affix(const json_t *v, const struct literal *lit, int at_end)
{
  const char *s = json_string_value(v);
  size_t len = json_string_length(v);

  if (s == NULL || len < lit->len)
    return 0;
  return text_ci_equal(at_end ? s + len - lit->len : s, lit->len, lit->str,
                       lit->len);
}

/* contains(): `node`'s text in the string `v`, ignoring ASCII case. */
static int
contains(const json_t *v, const struct node *node)
{
  const unsigned char *s = (const unsigned char *)json_string_value(v);
  const unsigned char *w = (const unsigned char *)node->lit.str;
  size_t len = json_string_length(v), k = 0;

  if (s == NULL)
    return 0;
  if (node->lit.len == 0)
    return 1;
  for (size_t i = 0; i < len; i++) {
    while (k > 0 && fold(s[i]) != fold(w[k]))
      k = node->kmp[k - 1];
    if (fold(s[i]) == fold(w[k]))
      k++;
    if (k == node->lit.len)
      return 1;
  }
  return 0;
}

/* A function's test on one value (not an array). */
static int
function_one(const json_t *v, const struct node *node)
{
  if (node->kind == N_CONTAINS)
    return contains(v, node);
  return affix(v, &node->lit, node->kind == N_ENDS);
}

static int
value_function(const json_t *v, const struct node *node)
{
  size_t i;
  json_t *elem;

  if (json_is_array(v)) {
    json_array_foreach(v, i, elem)
    {
      if (function_one(elem, node))
        return 1;
    }
    return 0;
  }
  return v != NULL && function_one(v, node);
}

/* `v in (lits)`: v eq any of them. */
static int
value_in(const json_t *v, const struct node *node)
{
  for (size_t i = 0; i < node->nlits; i++)
    if (value_eq(v, &node->lits[i]))
      return 1;
  return 0;
}

/* Apply the leaf test of `node` to the value at node's path from segment
 * `i` on, below `v`. An array met part-way matches when any of its
 * elements does (an element that is not an object has no attributes, and
 * an empty array is like an absent value); a string, number or the like
 * part-way means the attribute is absent. Recursion is bounded by the
 * number of segments: arrays are only looked into one level. */
static int
test_path(const json_t *v, const struct node *node, size_t i)
{
  size_t k;
  json_t *elem;

  if (i == node->nseg) {
    if (node->kind == N_STARTS || node->kind == N_ENDS ||
        node->kind == N_CONTAINS)
      return value_function(v, node);
    if (node->kind == N_IN)
      return value_in(v, node);
    return value_eq(v, &node->lit);
  }
  if (json_is_array(v) && json_array_size(v) > 0) {
    json_array_foreach(v, k, elem)
    {
      if (test_path(lookup(elem, node->seg[i]), node, i + 1))
        return 1;
    }
    return 0;
  }
  return test_path(lookup(v, node->seg[i]), node, i + 1);
}

static int
eval(const struct node *node, const json_t *attrs)
{
  switch (node->kind) {
  case N_OR:
    for (size_t i = 0; i < node->nkids; i++)
      if (eval(node->kids[i], attrs))
        return 1;
    return 0;
  case N_AND:
    for (size_t i = 0; i < node->nkids; i++)
      if (!eval(node->kids[i], attrs))
        return 0;
    return 1;
  case N_NOT:
    return !eval(node->kids[0], attrs);
  case N_NE:
    return !test_path(attrs, node, 0);
  case N_EQ:
  case N_STARTS:
  case N_ENDS:
  case N_CONTAINS:
  case N_IN:
    return test_path(attrs, node, 0);
  }
  return 0;
}

int
scope_filter_match(const struct scope_filter *filter, const json_t *attrs)
{
  if (filter == NULL)
    return 1;
  return eval(filter->root, json_is_object(attrs) ? attrs : NULL);
}

static int
add_sources(const struct node *node, json_t *names)
{
  size_t i;
  json_t *name;
  const char *seg;

  for (i = 0; i < node->nkids; i++)
    if (add_sources(node->kids[i], names) < 0)
      return -1;
  if (node->nseg == 0)
    return 0;
  seg = node->seg[0];
  json_array_foreach(names, i, name)
  {
    if (text_ci_equal(json_string_value(name), json_string_length(name), seg,
                      strlen(seg)))
      return 0;
  }
  return json_array_append_new(names, json_string(seg));
}

json_t *
scope_filter_sources(const struct scope_filter *filter)
{
  json_t *names = json_array();

  if (names == NULL || filter == NULL)
    return names;
  if (add_sources(filter->root, names) < 0) {
    json_decref(names);
    return NULL;
  }
  return names;
}

/* A literal as the filter would write it (a quote doubled), in buf (a
 * long text cut short). Returns the length written. */
static size_t
literal_text(const struct literal *l, char *buf, size_t len)
{
  size_t k = 0;

  switch (l->kind) {
  case L_STRING:
    buf[k++] = '\'';
    for (size_t i = 0; i < l->len && k + 4 < len; i++) {
      if (l->str[i] == '\'')
        buf[k++] = '\'';
      buf[k++] = l->str[i];
    }
    buf[k++] = '\'';
    buf[k] = '\0';
    return k;
  case L_INT:
    snprintf(buf, len, "%lld", (long long)l->num);
    break;
  case L_TRUE:
    snprintf(buf, len, "true");
    break;
  case L_FALSE:
    snprintf(buf, len, "false");
    break;
  case L_NULL:
    snprintf(buf, len, "null");
    break;
  }
  return strlen(buf);
}

/* The clause a comparison or function node stands for, as the filter
 * would say it: "department eq 'Sales'", "startsWith(mail, 'a')",
 * "city in ('Bern', 'Basel')", in buf (long texts cut short). */
static void
clause_text(const struct node *node, char *buf, size_t len)
{
  char path[512], lit[512];
  size_t n = 0, k = 0;

  path[0] = '\0';
  for (size_t i = 0; i < node->nseg && n < sizeof(path); i++)
    n += (size_t)snprintf(path + n, sizeof(path) - n, "%s%s", i ? "/" : "",
                          node->seg[i]);
  if (node->kind == N_IN) {
    lit[k++] = '(';
    for (size_t i = 0; i < node->nlits && k + 8 < sizeof(lit); i++) {
      if (i > 0) {
        lit[k++] = ',';
        lit[k++] = ' ';
      }
      k += literal_text(&node->lits[i], lit + k, sizeof(lit) - k - 2);
    }
    lit[k++] = ')';
    lit[k] = '\0';
    snprintf(buf, len, "%s in %s", path, lit);
    return;
  }
  literal_text(&node->lit, lit, sizeof(lit));
  if (node->kind == N_STARTS || node->kind == N_ENDS ||
      node->kind == N_CONTAINS)
    snprintf(buf, len, "%s(%s, %s)", function_name(node->kind), path, lit);
  else
    snprintf(buf, len, "%s %s %s", path, node->kind == N_EQ ? "eq" : "ne",
             lit);
}

static int
add_clauses(const struct node *node, const json_t *attrs, json_t *out)
{
  char text[1100];

  if (node->kind == N_OR || node->kind == N_AND || node->kind == N_NOT) {
    for (size_t i = 0; i < node->nkids; i++)
      if (add_clauses(node->kids[i], attrs, out) != 0)
        return -1;
    return 0;
  }
  clause_text(node, text, sizeof(text));
  return json_array_append_new(out, json_pack("{s:s, s:b}", "clause", text,
                                              "result", eval(node, attrs)));
}

json_t *
scope_filter_clauses(const struct scope_filter *filter, const json_t *attrs)
{
  json_t *out = json_array();

  if (out == NULL || filter == NULL)
    return out;
  if (add_clauses(filter->root, attrs, out) != 0) {
    json_decref(out);
    return NULL;
  }
  return out;
}

/* ---------------------------------------------------------------------
 * Default scope
 */

static int
string_is(const json_t *v, const char *want)
{
  return json_is_string(v) &&
         text_ci_equal(json_string_value(v), json_string_length(v), want,
                       strlen(want));
}

static int
has_anchor(const json_t *attrs)
{
  static const char prefix[] = "galbridge:";
  const json_t *ext = lookup(attrs, "onPremisesExtensionAttributes");
  char name[32];

  for (int i = 1; i <= 15; i++) {
    const json_t *v;
    snprintf(name, sizeof(name), "extensionAttribute%d", i);
    v = lookup(ext, name);
    if (json_is_string(v) && json_string_length(v) >= sizeof(prefix) - 1 &&
        text_ci_equal(json_string_value(v), sizeof(prefix) - 1, prefix,
                      sizeof(prefix) - 1))
      return 1;
  }
  return 0;
}

/* The default scope's rules for a person, or its first reason. */
static const char *
person_refused(const json_t *attrs)
{
  const json_t *mail = lookup(attrs, "mail");

  if (!string_is(lookup(attrs, "userType"), "Member"))
    return "userType is not Member";
  if (!json_is_true(lookup(attrs, "accountEnabled")))
    return "disabled";
  if (!json_is_string(mail) || json_string_length(mail) == 0)
    return "no mail";
  if (string_is(lookup(attrs, "creationType"), "Invitation"))
    return "invited guest";
  return NULL;
}

int
scope_default_match(const json_t *attrs, const char **why)
{
  const char *reason = person_refused(attrs);

  if (reason == NULL && has_anchor(attrs))
    reason = SCOPE_WHY_COPY;
  if (why != NULL)
    *why = reason;
  return reason == NULL;
}

int
scope_person_match(const json_t *attrs, const char **why)
{
  const char *reason = person_refused(attrs);

  if (why != NULL)
    *why = reason;
  return reason == NULL;
}

int
scope_group_match(const json_t *attrs, const char **why)
{
  const json_t *mail = lookup(attrs, "mail");
  const char *reason = NULL;

  if (!json_is_true(lookup(attrs, "mailEnabled")))
    reason = "not mail-enabled";
  else if (!json_is_string(mail) || json_string_length(mail) == 0)
    reason = "no mail";
  if (why != NULL)
    *why = reason;
  return reason == NULL;
}
