/*
 * notify — the systemd notify protocol, written by hand as chrony does
 * (no libsystemd): datagrams to $NOTIFY_SOCKET (a path, or an abstract
 * socket when it starts with '@').
 *
 * Without NOTIFY_SOCKET every call is a no-op that succeeds, so the daemon
 * runs the same under systemd, in a terminal and in tests. When
 * WATCHDOG_USEC is set (and WATCHDOG_PID is unset or this process),
 * notify_watchdog_start() sends WATCHDOG=1 every WATCHDOG_USEC/2 from a
 * timer on the loop itself: a wedged loop stops the pings and systemd
 * restarts the service.
 */
#ifndef GALBRIDGE_NOTIFY_H
#define GALBRIDGE_NOTIFY_H

#include <stdint.h>
#include <uv.h>

struct notify;

/* Read the environment and open the socket. Returns NULL only on
 * allocation failure; a bad NOTIFY_SOCKET (relative, too long for
 * sun_path) is logged once and disables the protocol. `loop` may be NULL
 * (no watchdog then). */
struct notify *notify_open(uv_loop_t *loop);
/* Close the socket and the watchdog timer; the struct is freed in the
 * timer's close callback (run the loop afterwards). NULL is fine. */
void notify_close(struct notify *n);

/* Whether NOTIFY_SOCKET is in use. */
int notify_enabled(const struct notify *n);

/* Send one message, e.g. "READY=1\nSTATUS=..." (lines joined by '\n').
 * Returns 0, or -1 (logged at debug) when the datagram could not be sent;
 * never blocks. */
int notify_send(struct notify *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

int notify_ready(struct notify *n);     /* READY=1 */
int notify_reloading(struct notify *n); /* RELOADING=1 + MONOTONIC_USEC */
int notify_stopping(struct notify *n);  /* STOPPING=1 */
/* STATUS=<text>, text one line (newlines are folded to spaces). */
int notify_status(struct notify *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Start the watchdog pings if WATCHDOG_USEC asks for them; returns
 * WATCHDOG_USEC (the timeout; pings go every half of it, in whole ms, at
 * least 1 ms), or 0 when there is no watchdog: protocol off, no loop,
 * WATCHDOG_USEC unset or not a positive integer (logged), or WATCHDOG_PID
 * naming another process. Calling it again restarts the timer. */
uint64_t notify_watchdog_start(struct notify *n);

#endif
