/*
 * notify — see include/notify.h.
 *
 * The protocol as sd_notify(3) describes it: each message is one datagram
 * of newline-separated KEY=VALUE lines, sent on an AF_UNIX SOCK_DGRAM
 * socket to the address in $NOTIFY_SOCKET, either an absolute path or,
 * when it starts with '@', a name in Linux's abstract namespace (the '@'
 * becomes a NUL byte and the address length excludes any terminator). The
 * kernel attaches our credentials itself (systemd sets SO_PASSCRED on its
 * end), so a plain sendto(2) is enough.
 *
 * Invariants: `fd` is -1 exactly when the protocol is off, and then every
 * send is a successful no-op. The socket is non-blocking and sends use
 * MSG_NOSIGNAL, so a stalled or vanished service manager can neither block
 * the loop nor raise SIGPIPE. The watchdog timer is unref'd: it pings while
 * the loop has other work, and never keeps the loop alive on its own.
 */
#include "notify.h"

#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* One datagram; systemd reads notifications into a buffer of about this
 * size, and ours are a handful of short lines. */
#define NOTIFY_MSG_MAX 4096
/* STATUS= text beyond this is cut (at a UTF-8 character boundary). */
#define NOTIFY_STATUS_MAX 1024

struct notify {
  uv_loop_t *loop; /* borrowed; NULL: no watchdog possible */
  int fd;          /* -1: protocol off */
  struct sockaddr_un addr;
  socklen_t addrlen;
  uv_timer_t timer; /* initialised iff loop != NULL */
};

/* Fill n->addr from $NOTIFY_SOCKET's value. Returns 0, or -1 with the
 * reason logged. */
static int
parse_address(struct notify *n, const char *value)
{
  size_t len = strlen(value);

  memset(&n->addr, 0, sizeof(n->addr));
  n->addr.sun_family = AF_UNIX;
  if (value[0] == '@') {
    /* Abstract: a leading NUL, then the name; no terminator counted. */
    if (len == 1) {
      log_warning("notify disabled: NOTIFY_SOCKET names no abstract socket");
      return -1;
    }
    if (len > sizeof(n->addr.sun_path)) {
      log_warning("notify disabled: NOTIFY_SOCKET too long len=%zu max=%zu",
                  len, sizeof(n->addr.sun_path));
      return -1;
    }
    memcpy(n->addr.sun_path + 1, value + 1, len - 1);
    n->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    return 0;
  }
  if (value[0] != '/') {
    /* Relative paths and other transports (vsock:) are not supported. */
    log_warning("notify disabled: NOTIFY_SOCKET is neither an absolute path "
                "nor an abstract name");
    return -1;
  }
  if (len >= sizeof(n->addr.sun_path)) {
    log_warning("notify disabled: NOTIFY_SOCKET too long len=%zu max=%zu", len,
                sizeof(n->addr.sun_path) - 1);
    return -1;
  }
  memcpy(n->addr.sun_path, value, len + 1);
  n->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
  return 0;
}

struct notify *
notify_open(uv_loop_t *loop)
{
  struct notify *n = calloc(1, sizeof(*n));
  const char *value;

  if (n == NULL)
    return NULL;
  n->loop = loop;
  n->fd = -1;
  if (loop != NULL) {
    /* Cannot fail on Linux; checked anyway so close stays uniform. */
    if (uv_timer_init(loop, &n->timer) != 0) {
      free(n);
      return NULL;
    }
    uv_handle_set_data((uv_handle_t *)&n->timer, n);
    uv_unref((uv_handle_t *)&n->timer);
  }

  value = getenv("NOTIFY_SOCKET");
  if (value == NULL || value[0] == '\0')
    return n;
  if (parse_address(n, value) != 0)
    return n;
  n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (n->fd < 0)
    log_warning("notify disabled: socket: %s", strerror(errno));
  return n;
}

static void
on_timer_closed(uv_handle_t *handle)
{
  free(uv_handle_get_data(handle));
}

void
notify_close(struct notify *n)
{
  if (n == NULL)
    return;
  if (n->fd >= 0)
    close(n->fd);
  n->fd = -1;
  if (n->loop == NULL) {
    free(n);
    return;
  }
  uv_close((uv_handle_t *)&n->timer, on_timer_closed);
}

int
notify_enabled(const struct notify *n)
{
  return n != NULL && n->fd >= 0;
}

/* Send len bytes of msg as one datagram. */
static int
send_datagram(struct notify *n, const char *msg, size_t len)
{
  ssize_t sent;

  do {
    sent = sendto(n->fd, msg, len, MSG_NOSIGNAL,
                  (const struct sockaddr *)&n->addr, n->addrlen);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) {
    log_debug("notify send failed error=\"%s\"", strerror(errno));
    return -1;
  }
  if ((size_t)sent != len) {
    log_debug("notify send short sent=%zd len=%zu", sent, len);
    return -1;
  }
  return 0;
}

/* Format into buf; -1 (logged) when it does not fit. */
static int format_message(char *buf, size_t size, size_t *len, const char *fmt,
                          va_list ap) __attribute__((format(printf, 4, 0)));

static int
format_message(char *buf, size_t size, size_t *len, const char *fmt,
               va_list ap)
{
  int r = vsnprintf(buf, size, fmt, ap);

  if (r < 0 || (size_t)r >= size) {
    log_debug("notify message too long max=%zu", size - 1);
    return -1;
  }
  *len = (size_t)r;
  return 0;
}

int
notify_send(struct notify *n, const char *fmt, ...)
{
  char msg[NOTIFY_MSG_MAX];
  size_t len;
  va_list ap;
  int r;

  if (!notify_enabled(n))
    return 0;
  va_start(ap, fmt);
  r = format_message(msg, sizeof(msg), &len, fmt, ap);
  va_end(ap);
  if (r != 0)
    return -1;
  return send_datagram(n, msg, len);
}

int
notify_ready(struct notify *n)
{
  return notify_send(n, "READY=1");
}

int
notify_reloading(struct notify *n)
{
  struct timespec ts;
  uint64_t usec;

  if (!notify_enabled(n))
    return 0;
  /* systemd (Type=notify-reload) pairs the reload with this timestamp. */
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
    log_debug("notify clock_gettime failed error=\"%s\"", strerror(errno));
    return -1;
  }
  usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
  return notify_send(n, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, usec);
}

int
notify_stopping(struct notify *n)
{
  return notify_send(n, "STOPPING=1");
}

int
notify_status(struct notify *n, const char *fmt, ...)
{
  /* One byte beyond the limit, to see whether the cut splits a UTF-8
   * character (the byte after it is then a continuation byte). */
  char text[NOTIFY_STATUS_MAX + 2];
  va_list ap;
  int r;
  size_t len;

  if (!notify_enabled(n))
    return 0;
  va_start(ap, fmt);
  r = vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  if (r < 0)
    return -1;
  len = (size_t)r;
  if (len > NOTIFY_STATUS_MAX) {
    len = NOTIFY_STATUS_MAX;
    while (len > 0 && ((unsigned char)text[len] & 0xc0) == 0x80)
      len--;
    text[len] = '\0';
  }
  /* Each line of a message is a field: a newline would start a new one. */
  for (size_t i = 0; i < len; i++) {
    if (text[i] == '\n' || text[i] == '\r')
      text[i] = ' ';
  }
  return notify_send(n, "STATUS=%s", text);
}

static void
on_watchdog(uv_timer_t *timer)
{
  struct notify *n = uv_handle_get_data((uv_handle_t *)timer);

  /* A failure is logged at debug by the send; systemd acts on silence. */
  (void)notify_send(n, "WATCHDOG=1");
}

/* $WATCHDOG_USEC when it is meant for this process, else 0. */
static uint64_t
watchdog_usec_from_env(void)
{
  const char *usec_s = getenv("WATCHDOG_USEC");
  const char *pid_s = getenv("WATCHDOG_PID");
  unsigned long long usec, pid;
  char *end;

  if (usec_s == NULL)
    return 0;
  if (pid_s != NULL) {
    errno = 0;
    pid = strtoull(pid_s, &end, 10);
    if (errno != 0 || end == pid_s || *end != '\0' || pid_s[0] == '-' ||
        pid != (unsigned long long)getpid()) {
      log_debug("notify watchdog not for this process watchdog_pid=%.20s",
                pid_s);
      return 0;
    }
  }
  errno = 0;
  usec = strtoull(usec_s, &end, 10);
  if (errno != 0 || end == usec_s || *end != '\0' || usec_s[0] == '-' ||
      usec == 0) {
    log_warning("notify watchdog disabled: bad WATCHDOG_USEC=%.32s", usec_s);
    return 0;
  }
  return (uint64_t)usec;
}

uint64_t
notify_watchdog_start(struct notify *n)
{
  uint64_t usec, interval_ms;

  if (!notify_enabled(n) || n->loop == NULL)
    return 0;
  usec = watchdog_usec_from_env();
  if (usec == 0)
    return 0;
  /* Ping at half the timeout, as sd_watchdog_enabled(3) recommends;
   * rounded down to whole milliseconds, at least one. */
  interval_ms = usec / 2 / 1000;
  if (interval_ms == 0)
    interval_ms = 1;
  if (uv_timer_start(&n->timer, on_watchdog, interval_ms, interval_ms) != 0)
    return 0;
  log_debug("notify watchdog started watchdog_usec=%" PRIu64
            " interval_ms=%" PRIu64,
            usec, interval_ms);
  return usec;
}
