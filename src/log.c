/*
 * log — see include/log.h.
 *
 * journald detection follows sd_journal_stream_fd's convention: when
 * JOURNAL_STREAM ("dev:ino") matches stderr's device and inode, stderr is
 * connected to the journal and lines take a "<N>" priority prefix (journald
 * adds its own timestamps). Otherwise lines get an ISO 8601 UTC timestamp
 * and the level's name, for a terminal or a file.
 *
 * A line is formatted in one buffer and written with one write(2), so
 * concurrent writers (tests, a child) never interleave mid-line.
 */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static enum log_level current_level = LOG_LEVEL_INFO;
static int to_journal;
static log_sink_fn sink_fn;
static void *sink_ctx;

static const char *const level_names[] = {
    [LOG_LEVEL_ERROR] = "error",   [LOG_LEVEL_WARNING] = "warning",
    [LOG_LEVEL_NOTICE] = "notice", [LOG_LEVEL_INFO] = "info",
    [LOG_LEVEL_DEBUG] = "debug",
};

void
log_init(void)
{
  const char *js = getenv("JOURNAL_STREAM");
  struct stat st;
  unsigned long long dev, ino;

  to_journal = 0;
  if (js == NULL || fstat(STDERR_FILENO, &st) != 0)
    return;
  if (sscanf(js, "%llu:%llu", &dev, &ino) != 2)
    return;
  to_journal = (dev == (unsigned long long)st.st_dev &&
                ino == (unsigned long long)st.st_ino);
}

void
log_set_level(enum log_level level)
{
  current_level = level;
}

const char *
log_level_name(enum log_level level)
{
  if (level < LOG_LEVEL_ERROR || level > LOG_LEVEL_DEBUG)
    return "unknown";
  return level_names[level];
}

void
log_set_sink(log_sink_fn fn, void *ctx)
{
  sink_fn = fn;
  sink_ctx = ctx;
}

void
log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
  char line[LOG_LINE_MAX];
  size_t len = 0;
  int n;
  int saved_errno = errno;

  if (level > current_level)
    return;

  if (sink_fn == NULL) {
    if (to_journal) {
      n = snprintf(line, sizeof(line), "<%d>", (int)level);
    } else {
      struct timeval tv;
      struct tm tm;
      gettimeofday(&tv, NULL);
      gmtime_r(&tv.tv_sec, &tm);
      n = snprintf(
          line, sizeof(line),
          "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s: ", tm.tm_year + 1900,
          tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
          (long)(tv.tv_usec / 1000), log_level_name(level));
    }
    if (n > 0)
      len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
  }

  n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
  if (n > 0)
    len += (size_t)n < sizeof(line) - len ? (size_t)n : sizeof(line) - len - 1;

  /* One event, one line: fold any newline a caller's value carried. */
  for (size_t i = 0; i < len; i++) {
    if (line[i] == '\n' || line[i] == '\r')
      line[i] = ' ';
  }

  if (sink_fn != NULL) {
    sink_fn(sink_ctx, level, line);
  } else {
    if (len >= sizeof(line) - 1)
      len = sizeof(line) - 2;
    line[len++] = '\n';
    /* Best effort: a log line that cannot be written has nowhere to go. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
  }
  errno = saved_errno;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  log_vmsg(level, fmt, ap);
  va_end(ap);
}
