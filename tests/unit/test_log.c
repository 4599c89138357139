/*
 * Unit tests: log levels, names, filtering, one line per event, and the
 * journald prefix chosen from JOURNAL_STREAM.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

struct capture {
  int n;
  enum log_level level;
  char line[512];
};

static void
sink(void *ctx, enum log_level level, const char *line)
{
  struct capture *c = ctx;
  c->n++;
  c->level = level;
  snprintf(c->line, sizeof(c->line), "%s", line);
}

static void
level_names(void **state)
{
  static const struct {
    enum log_level level;
    const char *name;
  } cases[] = {
      {LOG_LEVEL_ERROR, "error"},   {LOG_LEVEL_WARNING, "warning"},
      {LOG_LEVEL_NOTICE, "notice"}, {LOG_LEVEL_INFO, "info"},
      {LOG_LEVEL_DEBUG, "debug"},
  };

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    assert_string_equal(log_level_name(cases[i].level), cases[i].name);
  assert_string_equal(log_level_name((enum log_level)42), "unknown");
}

static void
filtering_and_one_line(void **state)
{
  struct capture c = {0};

  (void)state;
  log_set_sink(sink, &c);
  log_set_level(LOG_LEVEL_NOTICE);
  log_info("dropped");
  assert_int_equal(c.n, 0);
  log_warning("round failed source=%s status=%d", "contoso", 429);
  assert_int_equal(c.n, 1);
  assert_int_equal(c.level, LOG_LEVEL_WARNING);
  assert_string_equal(c.line, "round failed source=contoso status=429");
  /* A value carrying newlines cannot forge a second event. */
  log_error("bad value=%s", "a\nerror: forged\r");
  assert_string_equal(c.line, "bad value=a error: forged ");
  log_set_level(LOG_LEVEL_DEBUG);
  log_debug("now kept");
  assert_int_equal(c.n, 3);
  log_set_sink(NULL, NULL);
  log_set_level(LOG_LEVEL_INFO);
}

/* Run log_msg with stderr redirected to a file and return what it wrote. */
static void
capture_stderr(const char *journal, char *out, size_t outlen)
{
  char path[] = "/tmp/galbridge-log-XXXXXX";
  int fd = mkstemp(path), saved = dup(STDERR_FILENO);
  struct stat st;
  char env[64];
  ssize_t n;

  assert_true(fd >= 0 && saved >= 0);
  dup2(fd, STDERR_FILENO);
  if (journal != NULL) {
    fstat(fd, &st);
    snprintf(env, sizeof(env), "%s", journal);
    if (strcmp(journal, "match") == 0)
      snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)st.st_dev,
               (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", env, 1);
  } else {
    unsetenv("JOURNAL_STREAM");
  }
  log_init();
  log_notice("hello key=value");
  dup2(saved, STDERR_FILENO);
  close(saved);
  n = pread(fd, out, outlen - 1, 0);
  out[n > 0 ? n : 0] = '\0';
  close(fd);
  unlink(path);
  unsetenv("JOURNAL_STREAM");
  log_init();
}

static void
journald_prefix_only_for_the_journal(void **state)
{
  char buf[256];

  (void)state;
  capture_stderr("match", buf, sizeof(buf));
  assert_string_equal(buf, "<5>hello key=value\n");

  /* JOURNAL_STREAM naming another file: a terminal-style line. */
  capture_stderr("1:1", buf, sizeof(buf));
  assert_non_null(strstr(buf, "Z notice: hello key=value\n"));
  assert_int_equal(buf[4], '-');

  capture_stderr(NULL, buf, sizeof(buf));
  assert_non_null(strstr(buf, "Z notice: hello key=value\n"));
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(level_names),
      cmocka_unit_test(filtering_and_one_line),
      cmocka_unit_test(journald_prefix_only_for_the_journal),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
