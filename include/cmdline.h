/*
 * cmdline — galbridge's command line: `galbridge [-c FILE] COMMAND
 * [ARGS]`, as galbridge(8) describes it.
 *
 * One parser over two tables (the options, and each command's options,
 * operand, synopsis and one-line help) reads the whole line; the usage
 * summary, each command's --help and every error message come from the
 * same tables. What it prints goes to stdout (help, version) or stderr
 * (errors, each naming what was expected, then the usage). main.c maps
 * the command's id to its handler.
 */
#ifndef GALBRIDGE_CMDLINE_H
#define GALBRIDGE_CMDLINE_H

/* Option bits (struct cmdline's `given`). */
#define OPT_CONFIG (1u << 0)
#define OPT_HELP (1u << 1)
#define OPT_VERSION (1u << 2)
#define OPT_LINK (1u << 3)
#define OPT_JSON (1u << 4)
#define OPT_CSV (1u << 5)
#define OPT_YES (1u << 6)
#define OPT_USER (1u << 7)

enum cmdline_command {
  CMDLINE_RUN,
  CMDLINE_SYNC,
  CMDLINE_PLAN,
  CMDLINE_STATUS,
  CMDLINE_CHECK_CONFIG,
  CMDLINE_DOCTOR,
  CMDLINE_APPROVE_DELETES,
  CMDLINE_RESYNC,
  CMDLINE_MIGRATION_CHECK,
  CMDLINE_SETUP_TRUST,
  CMDLINE_EXPLAIN,
  CMDLINE_APPROVE_CREATES,
  CMDLINE_COMMANDS /* how many */
};

struct command; /* a row of the command table (cmdline.c) */

/* What the command line gave a command. */
struct cmdline {
  enum cmdline_command command;
  const struct command *cmd; /* its row: the parser's own */
  const char *path;          /* -c FILE, or the default (set it first) */
  const char *link;          /* --link NAME, or NULL */
  const char *user;          /* --user WHO (with --link), or NULL */
  const char *operand;       /* LINK, or NULL */
  const char *who;           /* explain's WHO, or NULL */
  int json, csv;             /* --json, --csv */
  int yes;                   /* --yes */
  unsigned given;            /* the options given, OPT_* bits */
};

enum cmdline_result {
  CMDLINE_OK,    /* cl holds a command to run */
  CMDLINE_EXIT,  /* help or the version was printed: exit 0 */
  CMDLINE_USAGE, /* an error was printed: exit 2 */
};

/* Parse argv into cl (whose path holds the default config file). Options
 * act in the order given: the last -c wins; -h prints help when reached,
 * -V the version. */
int cmdline_parse(int argc, char **argv, struct cmdline *cl);

#endif
