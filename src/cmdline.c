/*
 * cmdline — see include/cmdline.h.
 *
 * galbridge [-c FILE] COMMAND [ARGS]. Two tables say it all: opts[] the
 * options, commands[] each command's options, operand, synopsis, one-line
 * help and id (main.c maps ids to handlers). One parser reads both parts of a
 * line; the usage summary, each command's --help and every error come from the
 * tables, so a new command is one row. Before the command the global options
 * (-c, -h, -V); after it the command's own, -c and -h, mixed with its operand
 * in any order. Options act in the order given: the last -c wins, -h
 * prints help when reached. Like getopt_long it takes "-cFILE",
 * "--config=FILE", "--config FILE", a unique prefix of a long name and
 * "--" to end the options; unlike it, its errors say what was expected.
 */
#include "cmdline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "text.h"
#include "version.h"

/* Whether a command takes LINK, and then WHO (explain): the arguments
 * commands take. */
enum operand {
  OPERAND_NONE,
  OPERAND_OPTIONAL,
  OPERAND_NEEDED,
  OPERAND_LINK_WHO /* LINK WHO, both needed */
};

/* A row of the command table. */
struct command {
  const char *name;
  unsigned opts;      /* its own options, besides OPTS_ANY_COMMAND */
  unsigned exclusive; /* of those, the ones that exclude each other */
  enum operand operand;
  const char *synopsis; /* what follows the name */
  const char *help;     /* one line, as galbridge(8) has it */
  enum cmdline_command id;
};

#define OPTS_GLOBAL (OPT_CONFIG | OPT_HELP | OPT_VERSION)
#define OPTS_ANY_COMMAND (OPT_CONFIG | OPT_HELP)

#define WHO_WHAT "a person: object id, mail or user principal name"
#define HELP_COLUMN 21    /* where an option's help starts */
#define SUMMARY_COLUMN 23 /* where a command's help starts in usage() */
#define WIDTH 79

struct opt {
  unsigned id;
  char short_name; /* 0: a long form only */
  const char *long_name;
  const char *arg;  /* its value as help shows it; NULL: a flag */
  const char *what; /* what that value is, for "needs a value" */
  const char *help;
};

static const struct opt opts[] = {
    {OPT_CONFIG, 'c', "config", "FILE", "a config file",
     "config file (default " CONFIG_DEFAULT_PATH ")"},
    {OPT_HELP, 'h', "help", NULL, NULL, "this help"},
    {OPT_VERSION, 'V', "version", NULL, NULL, "version"},
    {OPT_LINK, 0, "link", "NAME", "a link name", "only the link NAME"},
    {OPT_USER, 0, "user", "WHO", WHO_WHAT,
     "only the person WHO of link NAME (an object id, mail or user "
     "principal name in its source): read now, planned and written at once"},
    {OPT_JSON, 0, "json", NULL, NULL, "print one JSON object"},
    {OPT_CSV, 0, "csv", NULL, NULL,
     "print the CSV that New-MigrationBatch takes: the ready people's "
     "target addresses"},
    {OPT_YES, 0, "yes", NULL, NULL,
     "write the changes (without it nothing is changed)"},
};

static const struct command commands[] = {
    {"run", 0, 0, OPERAND_NONE, "", "run as a daemon in the foreground",
     CMDLINE_RUN},
    {"sync", OPT_LINK | OPT_USER, 0, OPERAND_NONE,
     "[--link NAME [--user WHO]]",
     "one round of every link (or of link NAME, or of its person WHO), then "
     "exit",
     CMDLINE_SYNC},
    {"plan", OPT_LINK | OPT_JSON, 0, OPERAND_NONE, "[--link NAME] [--json]",
     "show what the next round would change; nothing is written to any "
     "tenant",
     CMDLINE_PLAN},
    {"status", OPT_JSON, 0, OPERAND_NONE, "[--json]",
     "per link and source: objects, pending work", CMDLINE_STATUS},
    {"check-config", 0, 0, OPERAND_NONE, "",
     "validate and print the effective config", CMDLINE_CHECK_CONFIG},
    {"doctor", 0, 0, OPERAND_NONE, "",
     "check credentials and permissions online", CMDLINE_DOCTOR},
    {"approve-deletes", 0, 0, OPERAND_NEEDED, "LINK",
     "release the deletes held for LINK", CMDLINE_APPROVE_DELETES},
    {"approve-creates", 0, 0, OPERAND_NEEDED, "LINK",
     "release the creates held for LINK (max_creates)",
     CMDLINE_APPROVE_CREATES},
    {"resync", 0, 0, OPERAND_NEEDED, "LINK",
     "read LINK's source and target again in full and retry its failed "
     "operations",
     CMDLINE_RESYNC},
    {"explain", OPT_JSON, 0, OPERAND_LINK_WHO, "LINK WHO [--json]",
     "why WHO (an object id, mail or user principal name in LINK's source "
     "or target) is or is not in the target's address list, and what the "
     "next round would do; read-only",
     CMDLINE_EXPLAIN},
    {"migration-check", OPT_JSON | OPT_CSV, OPT_JSON | OPT_CSV,
     OPERAND_OPTIONAL, "[LINK] [--json | --csv]",
     "whether the people of the migration links (or LINK) can be moved "
     "now, and the fix for each failure; read-only",
     CMDLINE_MIGRATION_CHECK},
    {"setup-trust", OPT_YES, 0, OPERAND_NEEDED, "LINK [--yes]",
     "print the cross-tenant access settings LINK's guests need that are "
     "missing in its two tenants; with --yes, write them",
     CMDLINE_SETUP_TRUST},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))
#define OPERAND_WHAT "a link name"

/* Prints text with the cursor at column `col`, words wrapped at WIDTH
 * onto lines indented by `indent`, and ends the line. */
static void
print_wrapped(FILE *fp, const char *text, int col, int indent)
{
  const char *p = text;
  int first = 1;

  while (*p != '\0') {
    int len = (int)strcspn(p, " ");
    if (!first && col + 1 + len > WIDTH) {
      col = fprintf(fp, "\n%*s", indent, "") - 1;
    } else if (!first) {
      fputc(' ', fp);
      col++;
    }
    col += fprintf(fp, "%.*s", len, p);
    first = 0;
    p += len;
    while (*p == ' ')
      p++;
  }
  fputc('\n', fp);
}

/* The left column, then the help from `column` (on a line of its own
 * when the left one reaches it). */
static void
print_row(FILE *fp, int left, int column, const char *help)
{
  if (left + 1 >= column) {
    fputc('\n', fp);
    left = 0;
  }
  fprintf(fp, "%*s", column - left, "");
  print_wrapped(fp, help, column, column);
}

static void
print_options(FILE *fp, unsigned which)
{
  for (size_t i = 0; i < N_OPTS; i++) {
    const struct opt *o = &opts[i];
    int n;
    if ((o->id & which) == 0)
      continue;
    if (o->short_name != 0)
      n = fprintf(fp, "  -%c, --%s", o->short_name, o->long_name);
    else
      n = fprintf(fp, "      --%s", o->long_name);
    if (o->arg != NULL)
      n += fprintf(fp, " %s", o->arg);
    print_row(fp, n, HELP_COLUMN, o->help);
  }
}

static void
usage(FILE *fp)
{
  fprintf(fp, "usage: galbridge [-c FILE] COMMAND [ARGS]\n"
              "       galbridge COMMAND --help\n"
              "\n"
              "commands:\n");
  for (size_t i = 0; i < N_COMMANDS; i++) {
    const struct command *c = &commands[i];
    int n = fprintf(fp, "  %s%s%s", c->name, c->synopsis[0] ? " " : "",
                    c->synopsis);
    print_row(fp, n, SUMMARY_COLUMN, c->help);
  }
  fprintf(fp, "\noptions:\n");
  print_options(fp, OPTS_GLOBAL);
  fprintf(fp, "\n-c may come after the command too; the last one given "
              "wins.\n");
}

static void
command_usage_line(FILE *fp, const struct command *c)
{
  fprintf(fp, "usage: galbridge [-c FILE] %s%s%s\n", c->name,
          c->synopsis[0] ? " " : "", c->synopsis);
}

/* `galbridge COMMAND --help`: galbridge(8)'s synopsis and one line. */
static void
command_help(FILE *fp, const struct command *c)
{
  command_usage_line(fp, c);
  fputc('\n', fp);
  print_wrapped(fp, c->help, 0, 0);
  fprintf(fp, "\n%s:\n",
          c->operand != OPERAND_NONE ? "arguments and options" : "options");
  if (c->operand != OPERAND_NONE)
    print_row(fp, fprintf(fp, "  LINK"), HELP_COLUMN,
              "the name of a [link NAME] section of the config");
  if (c->operand == OPERAND_LINK_WHO)
    print_row(fp, fprintf(fp, "  WHO"), HELP_COLUMN,
              "an object id, mail or user principal name of the link's "
              "source or target");
  print_options(fp, c->opts);
  print_options(fp, OPTS_ANY_COMMAND);
}

/* What a command line error prints after its message. */
static int
usage_error(const struct command *c)
{
  if (c == NULL)
    usage(stderr);
  else
    command_usage_line(stderr, c);
  return CMDLINE_USAGE;
}

/* The nearest of n names to `name`, when near enough to suggest: at most two
 * edits away and shorter, as edits, than the name less one (so "x" suggests
 * nothing), or a prefix of three letters or more; else NULL. */
static const char *
nearest(const char *name, const char *const *names, size_t n)
{
  const char *best = NULL;
  size_t best_d = SIZE_MAX;

  for (size_t i = 0; i < n; i++) {
    const char *cand = names[i];
    size_t d = text_distance(name, cand);
    if (strlen(name) >= 3 && strncmp(cand, name, strlen(name)) == 0)
      d = 1;
    if (d < best_d) {
      best_d = d;
      best = cand;
    }
  }
  return best_d <= 2 && best_d + 1 < strlen(name) ? best : NULL;
}

static const char *
nearest_command(const char *name)
{
  const char *names[N_COMMANDS];

  for (size_t i = 0; i < N_COMMANDS; i++)
    names[i] = commands[i].name;
  return nearest(name, names, N_COMMANDS);
}

static const struct command *
command_find(const char *name)
{
  for (size_t i = 0; i < N_COMMANDS; i++) {
    if (strcmp(commands[i].name, name) == 0)
      return &commands[i];
  }
  return NULL;
}

/* An option that exists but not where it was given. */
static int
misplaced(const struct opt *o, const char *given, const struct command *c)
{
  if (c != NULL) {
    fprintf(stderr, "galbridge: %s has no option '%s'\n", c->name, given);
    return usage_error(c);
  }
  fprintf(stderr, "galbridge: option '%s' goes after a command that takes it",
          given);
  for (size_t i = 0, n = 0; i < N_COMMANDS; i++) {
    if (commands[i].opts & o->id)
      fprintf(stderr, "%s%s", n++ == 0 ? " (" : ", ", commands[i].name);
  }
  fprintf(stderr, ")\n");
  return usage_error(NULL);
}

/* --name (len bytes of arg + 2) is no option: say so, and name the
 * nearest option allowed there or, before the command, the nearest
 * command ("--status": the command status). */
static int
unknown_long(const char *arg, size_t len, unsigned allowed,
             const struct command *c)
{
  const char *names[N_OPTS], *near;
  char name[64];
  size_t n = 0;

  for (size_t i = 0; i < N_OPTS; i++) {
    if (opts[i].id & allowed)
      names[n++] = opts[i].long_name;
  }
  snprintf(name, sizeof(name), "%.*s", (int)len, arg + 2);
  fprintf(stderr, "galbridge: unknown option '--%s'", name);
  near = nearest(name, names, n);
  if (near != NULL)
    fprintf(stderr, " (did you mean '--%s'?)", near);
  else if (c == NULL && (near = nearest_command(name)) != NULL)
    fprintf(stderr, " (did you mean the command '%s'?)", near);
  fputc('\n', stderr);
  return usage_error(c);
}

/* The option --name (len bytes of it: a unique prefix will do), or NULL
 * with the error printed. */
static const struct opt *
find_long(const char *arg, size_t len, unsigned allowed,
          const struct command *c)
{
  const struct opt *hit = NULL, *other = NULL;
  int hits = 0;

  if (len == 0) { /* "--=..." */
    unknown_long(arg, len, allowed, c);
    return NULL;
  }
  for (size_t i = 0; i < N_OPTS; i++) {
    const struct opt *o = &opts[i];
    if (strncmp(o->long_name, arg + 2, len) != 0)
      continue;
    if (strlen(o->long_name) == len)
      return (o->id & allowed) ? o : (misplaced(o, arg, c), NULL);
    if (o->id & allowed) {
      hit = o;
      hits++;
    } else {
      other = o;
    }
  }
  if (hits == 1)
    return hit;
  if (hits > 1) {
    fprintf(stderr, "galbridge: option '%.*s' is ambiguous:", (int)len + 2,
            arg);
    for (size_t i = 0; i < N_OPTS; i++) {
      if ((opts[i].id & allowed) &&
          strncmp(opts[i].long_name, arg + 2, len) == 0)
        fprintf(stderr, " --%s", opts[i].long_name);
    }
    fputc('\n', stderr);
    usage_error(c);
    return NULL;
  }
  if (other != NULL) {
    misplaced(other, arg, c);
    return NULL;
  }
  unknown_long(arg, len, allowed, c);
  return NULL;
}

static const struct opt *
find_short(char ch, unsigned allowed, const struct command *c)
{
  for (size_t i = 0; i < N_OPTS; i++) {
    const struct opt *o = &opts[i];
    char given[3] = {'-', ch, '\0'};
    if (o->short_name != ch)
      continue;
    if (o->id & allowed)
      return o;
    misplaced(o, given, c);
    return NULL;
  }
  fprintf(stderr, "galbridge: unknown option '-%c'\n", ch);
  usage_error(c);
  return NULL;
}

/* Does what option o says; `value` is its value or NULL for a flag. */
static int
apply(const struct opt *o, const char *value, struct cmdline *cl)
{
  cl->given |= o->id;
  switch (o->id) {
  case OPT_CONFIG:
    cl->path = value;
    break;
  case OPT_LINK:
    cl->link = value;
    break;
  case OPT_USER:
    cl->user = value;
    break;
  case OPT_JSON:
    cl->json = 1;
    break;
  case OPT_CSV:
    cl->csv = 1;
    break;
  case OPT_YES:
    cl->yes = 1;
    break;
  case OPT_HELP:
    if (cl->cmd != NULL)
      command_help(stdout, cl->cmd);
    else
      usage(stdout);
    return CMDLINE_EXIT;
  case OPT_VERSION:
    printf("galbridge %s\n", GALBRIDGE_VERSION);
    return CMDLINE_EXIT;
  }
  return CMDLINE_OK;
}

static int
needs_value(const struct opt *o, const char *given, const struct command *c)
{
  fprintf(stderr, "galbridge: option '%s' needs a value (%s)\n", given,
          o->what);
  return usage_error(c);
}

/* One argument that starts with '-' (not "-" or "--"), and its value from
 * argv[*i + 1] when it needs one (then *i moves past it). */
static int
parse_option(int argc, char **argv, int *i, unsigned allowed,
             struct cmdline *cl)
{
  const char *arg = argv[*i];
  const struct command *c = cl->cmd;
  const struct opt *o;

  if (arg[1] == '-') {
    const char *eq = strchr(arg, '=');
    size_t len = eq != NULL ? (size_t)(eq - arg - 2) : strlen(arg + 2);
    const char *value;
    char given[64];
    o = find_long(arg, len, allowed, c);
    if (o == NULL)
      return CMDLINE_USAGE;
    snprintf(given, sizeof(given), "--%s", o->long_name);
    if (o->arg == NULL) {
      if (eq == NULL)
        return apply(o, NULL, cl);
      fprintf(stderr, "galbridge: option '%s' takes no value\n", given);
      return usage_error(c);
    }
    value = eq != NULL ? eq + 1 : *i + 1 < argc ? argv[++*i] : NULL;
    if (value == NULL || value[0] == '\0')
      return needs_value(o, given, c);
    return apply(o, value, cl);
  }
  /* A cluster of short options, the last of them perhaps with a value. */
  for (const char *p = arg + 1; *p != '\0'; p++) {
    char given[3] = {'-', *p, '\0'};
    const char *value;
    int rc;
    o = find_short(*p, allowed, c);
    if (o == NULL)
      return CMDLINE_USAGE;
    if (o->arg == NULL) {
      rc = apply(o, NULL, cl);
      if (rc != CMDLINE_OK)
        return rc;
      continue;
    }
    value = p[1] != '\0' ? p + 1 : *i + 1 < argc ? argv[++*i] : NULL;
    if (value == NULL || value[0] == '\0')
      return needs_value(o, given, c);
    return apply(o, value, cl);
  }
  return CMDLINE_OK;
}

/* The part after the command: its options and operand, in any order. */
static int
parse_command(int argc, char **argv, int i, struct cmdline *cl)
{
  const struct command *c = cl->cmd;
  unsigned allowed = c->opts | OPTS_ANY_COMMAND, both;
  int options = 1;

  for (; i < argc; i++) {
    const char *arg = argv[i];
    int rc;
    if (options && strcmp(arg, "--") == 0) {
      options = 0;
      continue;
    }
    if (options && arg[0] == '-' && arg[1] != '\0') {
      rc = parse_option(argc, argv, &i, allowed, cl);
      if (rc != CMDLINE_OK)
        return rc;
      continue;
    }
    if (c->operand == OPERAND_LINK_WHO && cl->operand != NULL &&
        cl->who == NULL) {
      cl->who = arg;
      continue;
    }
    if (c->operand == OPERAND_NONE || cl->operand != NULL) {
      fprintf(stderr, "galbridge: unexpected argument '%s'\n", arg);
      return usage_error(c);
    }
    cl->operand = arg;
  }
  both = cl->given & c->exclusive;
  if (both & (both - 1)) {
    const char *names[2];
    size_t n = 0;
    for (size_t k = 0; k < N_OPTS && n < 2; k++) {
      if (both & opts[k].id)
        names[n++] = opts[k].long_name;
    }
    fprintf(stderr, "galbridge: --%s and --%s cannot be combined\n", names[0],
            names[1]);
    return usage_error(c);
  }
  if ((c->operand == OPERAND_NEEDED || c->operand == OPERAND_LINK_WHO) &&
      cl->operand == NULL) {
    fprintf(stderr, "galbridge: %s needs an argument (%s)\n", c->name,
            OPERAND_WHAT);
    return usage_error(c);
  }
  if ((cl->given & OPT_USER) && !(cl->given & OPT_LINK)) {
    fprintf(stderr, "galbridge: --user needs --link (the link whose "
                    "source WHO is in)\n");
    return usage_error(c);
  }
  if (c->operand == OPERAND_LINK_WHO && cl->who == NULL) {
    fprintf(stderr, "galbridge: %s needs a second argument (%s)\n", c->name,
            WHO_WHAT);
    return usage_error(c);
  }
  return CMDLINE_OK;
}

int
cmdline_parse(int argc, char **argv, struct cmdline *cl)
{
  const char *name;
  int i, rc;

  for (i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--") == 0) {
      i++;
      break;
    }
    if (arg[0] != '-' || arg[1] == '\0')
      break;
    rc = parse_option(argc, argv, &i, OPTS_GLOBAL, cl);
    if (rc != CMDLINE_OK)
      return rc;
  }
  if (i >= argc) {
    if (argc > 1)
      fprintf(stderr, "galbridge: a command is needed after the options\n");
    return usage_error(NULL);
  }
  name = argv[i];
  cl->cmd = command_find(name);
  if (cl->cmd == NULL) {
    const char *near = nearest_command(name);
    fprintf(stderr, "galbridge: unknown command '%s'", name);
    if (near != NULL)
      fprintf(stderr, " (did you mean '%s'?)", near);
    fputc('\n', stderr);
    return usage_error(NULL);
  }
  rc = parse_command(argc, argv, i + 1, cl);
  if (rc == CMDLINE_OK)
    cl->command = cl->cmd->id;
  return rc;
}
