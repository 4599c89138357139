/*
 * log — leveled, one-line events on stderr.
 *
 * Each event is one line: a short message, then key=value fields, as
 * `round done source=contoso pages=3 users=2000`. Under journald (the
 * JOURNAL_STREAM variable names stderr) each line starts with a "<N>"
 * priority prefix so that `journalctl -p warning` works; otherwise with an
 * ISO 8601 timestamp and the level's name.
 *
 * Callers never pass a token, secret or private key: nothing here can tell
 * one from text.
 */
#ifndef GALBRIDGE_LOG_H
#define GALBRIDGE_LOG_H

#include <stdarg.h>

/* syslog(3) priorities, so they double as journald prefixes. */
enum log_level {
  LOG_LEVEL_ERROR = 3,
  LOG_LEVEL_WARNING = 4,
  LOG_LEVEL_NOTICE = 5,
  LOG_LEVEL_INFO = 6,
  LOG_LEVEL_DEBUG = 7,
};

/* Decide the output style from the environment (JOURNAL_STREAM against
 * stderr's device and inode). Call once at start-up; safe to call again. */
void log_init(void);

/* Events above `level` are dropped. Default LOG_LEVEL_INFO. */
void log_set_level(enum log_level level);
/* "error", "warning", "notice", "info" or "debug"; "unknown" for a value
 * outside the enum. (Config files name levels through config.c's table.) */
const char *log_level_name(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LEVEL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

/* Tests: send lines to a callback instead of stderr (NULL restores). */
typedef void (*log_sink_fn)(void *ctx, enum log_level level, const char *line);
void log_set_sink(log_sink_fn fn, void *ctx);

#endif
