/*
 * Tests for notify: a real AF_UNIX datagram socket stands in for systemd,
 * bound to a path or to an abstract name, and receives exactly the
 * datagrams sent (READY, RELOADING with a MONOTONIC_USEC taken between two
 * clock readings, STOPPING, STATUS folded to one line, multi-line
 * messages). Without NOTIFY_SOCKET everything is a silent no-op; a bad
 * address (too long, relative, empty abstract name) disables the protocol
 * with one warning, and the longest addresses that fit are accepted. The
 * watchdog's timer (found with uv_walk) repeats every WATCHDOG_USEC/2 in
 * whole ms, at least 1, and is unref'd; it pings at that pace while a timer
 * keeps the loop running for 100 ms (longer only on a starved machine),
 * never keeps the loop alive by itself, and stays off for another
 * process's WATCHDOG_PID or a bad WATCHDOG_USEC. Every test ends with
 * uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "notify.h"

/* The fake service manager: a bound datagram socket. */
struct rx {
  int fd;
  int abstract;
  char dir[64];
  char path[128];
};

static void
rx_open(struct rx *rx, int abstract)
{
  static unsigned serial;
  struct sockaddr_un addr;
  socklen_t addrlen;
  size_t len;

  memset(rx, 0, sizeof(*rx));
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  rx->abstract = abstract;
  if (abstract) {
    snprintf(rx->path, sizeof(rx->path), "@galbridge-test-notify-%ld-%u",
             (long)getpid(), serial++);
    len = strlen(rx->path);
    memcpy(addr.sun_path + 1, rx->path + 1, len - 1);
    addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  } else {
    snprintf(rx->dir, sizeof(rx->dir), "/tmp/galbridge-notify-XXXXXX");
    assert_non_null(mkdtemp(rx->dir));
    snprintf(rx->path, sizeof(rx->path), "%s/notify", rx->dir);
    len = strlen(rx->path);
    memcpy(addr.sun_path, rx->path, len + 1);
    addrlen = (socklen_t)sizeof(addr);
  }
  rx->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  assert_true(rx->fd >= 0);
  assert_int_equal(bind(rx->fd, (struct sockaddr *)&addr, addrlen), 0);
  assert_int_equal(setenv("NOTIFY_SOCKET", rx->path, 1), 0);
}

/* The next datagram, NUL-terminated; -1 when none is queued. */
static int
rx_recv(struct rx *rx, char *buf, size_t size)
{
  ssize_t n = recv(rx->fd, buf, size - 1, MSG_DONTWAIT);

  if (n < 0) {
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    buf[0] = '\0';
    return -1;
  }
  buf[n] = '\0';
  return (int)n;
}

static void
rx_expect(struct rx *rx, const char *want)
{
  char buf[8192];

  assert_true(rx_recv(rx, buf, sizeof(buf)) >= 0);
  assert_string_equal(buf, want);
}

static void
rx_expect_nothing(struct rx *rx)
{
  char buf[8192];

  assert_int_equal(rx_recv(rx, buf, sizeof(buf)), -1);
}

static void
rx_close(struct rx *rx)
{
  close(rx->fd);
  if (!rx->abstract) {
    unlink(rx->path);
    rmdir(rx->dir);
  }
}

/* Log lines captured by level. */
struct capture {
  int warnings, debugs, others;
  char last[512];
};

static struct capture logged;

static void
sink(void *ctx, enum log_level level, const char *line)
{
  struct capture *c = ctx;

  if (level == LOG_LEVEL_WARNING)
    c->warnings++;
  else if (level == LOG_LEVEL_DEBUG)
    c->debugs++;
  else
    c->others++;
  snprintf(c->last, sizeof(c->last), "%s", line);
}

static int
setup(void **state)
{
  (void)state;
  memset(&logged, 0, sizeof(logged));
  log_set_sink(sink, &logged);
  log_set_level(LOG_LEVEL_DEBUG);
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
  return 0;
}

static int
teardown(void **state)
{
  (void)state;
  log_set_sink(NULL, NULL);
  log_set_level(LOG_LEVEL_INFO);
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
  return 0;
}

static uint64_t
monotonic_usec(void)
{
  struct timespec ts;

  assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Close n and every handle, then check nothing is left on the loop. */
static void
finish(uv_loop_t *loop, struct notify *n)
{
  notify_close(n);
  assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(loop), 0);
}

static void
check_messages(int abstract)
{
  uv_loop_t loop;
  struct rx rx;
  struct notify *n;
  char buf[256];
  uint64_t before, after, stamp;
  char *end;
  const char *prefix = "RELOADING=1\nMONOTONIC_USEC=";

  assert_int_equal(uv_loop_init(&loop), 0);
  rx_open(&rx, abstract);
  n = notify_open(&loop);
  assert_non_null(n);
  assert_true(notify_enabled(n));

  assert_int_equal(notify_ready(n), 0);
  rx_expect(&rx, "READY=1");

  before = monotonic_usec();
  assert_int_equal(notify_reloading(n), 0);
  after = monotonic_usec();
  assert_true(rx_recv(&rx, buf, sizeof(buf)) > 0);
  assert_memory_equal(buf, prefix, strlen(prefix));
  errno = 0;
  stamp = strtoull(buf + strlen(prefix), &end, 10);
  assert_int_equal(errno, 0);
  assert_true(end != buf + strlen(prefix));
  assert_int_equal(*end, '\0');
  assert_true(stamp >= before);
  assert_true(stamp <= after);

  assert_int_equal(notify_stopping(n), 0);
  rx_expect(&rx, "STOPPING=1");

  assert_int_equal(
      notify_status(n, "round %d of %s\nfailed\r\nagain", 3, "contoso"), 0);
  rx_expect(&rx, "STATUS=round 3 of contoso failed  again");

  /* notify_send sends a multi-line message as one datagram. */
  assert_int_equal(notify_send(n, "READY=1\nSTATUS=%s", "up"), 0);
  rx_expect(&rx, "READY=1\nSTATUS=up");
  rx_expect_nothing(&rx);
  assert_int_equal(logged.warnings + logged.others, 0);

  finish(&loop, n);
  rx_close(&rx);
}

static void
messages_to_a_path(void **state)
{
  (void)state;
  check_messages(0);
}

static void
messages_to_an_abstract_name(void **state)
{
  (void)state;
  check_messages(1);
}

static void
long_status_is_cut_at_a_character(void **state)
{
  uv_loop_t loop;
  struct rx rx;
  struct notify *n;
  char text[1100], buf[2048];
  size_t len;

  (void)state;
  /* 1023 ASCII bytes then a two-byte character straddling the limit. */
  memset(text, 'x', 1023);
  memcpy(text + 1023, "\xc3\xa9tail", 7);
  assert_int_equal(uv_loop_init(&loop), 0);
  rx_open(&rx, 1);
  n = notify_open(&loop);
  assert_non_null(n);
  assert_int_equal(notify_status(n, "%s", text), 0);
  assert_true(rx_recv(&rx, buf, sizeof(buf)) > 0);
  len = strlen(buf);
  assert_int_equal(len, strlen("STATUS=") + 1023);
  assert_int_equal(buf[len - 1], 'x');
  finish(&loop, n);
  rx_close(&rx);
}

static void
without_notify_socket_nothing_happens(void **state)
{
  uv_loop_t loop;
  struct notify *n;

  (void)state;
  assert_int_equal(setenv("WATCHDOG_USEC", "20000", 1), 0);
  assert_int_equal(uv_loop_init(&loop), 0);
  n = notify_open(&loop);
  assert_non_null(n);
  assert_false(notify_enabled(n));
  assert_int_equal(notify_ready(n), 0);
  assert_int_equal(notify_reloading(n), 0);
  assert_int_equal(notify_stopping(n), 0);
  assert_int_equal(notify_status(n, "x"), 0);
  assert_int_equal(notify_send(n, "WATCHDOG=1"), 0);
  assert_int_equal(notify_watchdog_start(n), 0);
  assert_int_equal(logged.warnings + logged.debugs + logged.others, 0);
  finish(&loop, n);

  /* An empty NOTIFY_SOCKET is the same as none. */
  assert_int_equal(setenv("NOTIFY_SOCKET", "", 1), 0);
  assert_int_equal(uv_loop_init(&loop), 0);
  n = notify_open(&loop);
  assert_false(notify_enabled(n));
  assert_int_equal(logged.warnings, 0);
  finish(&loop, n);

  /* NULL is accepted where a notify is expected. */
  assert_false(notify_enabled(NULL));
  assert_int_equal(notify_ready(NULL), 0);
  notify_close(NULL);
}

static void
bad_addresses_disable_with_one_warning(void **state)
{
  char too_long_path[200], too_long_abstract[200];
  const char *const bad[] = {too_long_path, too_long_abstract,
                             "run/notify",  "notify",
                             "@",           "vsock:2:1234"};

  (void)state;
  /* sun_path holds 108 bytes: a path of 108 characters leaves no room for
   * its terminator; an abstract name of 108 bytes after the NUL does not
   * fit either. */
  too_long_path[0] = '/';
  memset(too_long_path + 1, 'p', 107);
  too_long_path[108] = '\0';
  too_long_abstract[0] = '@';
  memset(too_long_abstract + 1, 'a', 108);
  too_long_abstract[109] = '\0';

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    uv_loop_t loop;
    struct notify *n;

    memset(&logged, 0, sizeof(logged));
    assert_int_equal(setenv("NOTIFY_SOCKET", bad[i], 1), 0);
    assert_int_equal(setenv("WATCHDOG_USEC", "20000", 1), 0);
    assert_int_equal(uv_loop_init(&loop), 0);
    n = notify_open(&loop);
    assert_non_null(n);
    if (notify_enabled(n))
      fail_msg("accepted NOTIFY_SOCKET=%s", bad[i]);
    assert_int_equal(logged.warnings, 1);
    assert_non_null(strstr(logged.last, "notify disabled"));
    /* Later calls succeed silently: the warning was the only one. */
    assert_int_equal(notify_ready(n), 0);
    assert_int_equal(notify_status(n, "x"), 0);
    assert_int_equal(notify_watchdog_start(n), 0);
    assert_int_equal(logged.warnings, 1);
    finish(&loop, n);
  }
}

static void
longest_addresses_fit(void **state)
{
  char path[200], abstract[200];
  const char *const good[] = {path, abstract};

  (void)state;
  path[0] = '/';
  memset(path + 1, 'p', 106); /* 107 characters + terminator = 108 */
  path[107] = '\0';
  abstract[0] = '@';
  memset(abstract + 1, 'a', 107); /* NUL + 107 bytes = 108 */
  abstract[108] = '\0';
  for (size_t i = 0; i < 2; i++) {
    uv_loop_t loop;
    struct notify *n;

    memset(&logged, 0, sizeof(logged));
    assert_int_equal(setenv("NOTIFY_SOCKET", good[i], 1), 0);
    assert_int_equal(uv_loop_init(&loop), 0);
    n = notify_open(&loop);
    assert_true(notify_enabled(n));
    assert_int_equal(logged.warnings, 0);
    /* Nobody listens there: the send fails, logged at debug only. */
    assert_int_equal(notify_ready(n), -1);
    assert_int_equal(logged.warnings + logged.others, 0);
    assert_int_equal(logged.debugs, 1);
    assert_non_null(strstr(logged.last, "notify send failed"));
    finish(&loop, n);
  }
}

static void
message_too_long_is_refused(void **state)
{
  uv_loop_t loop;
  struct rx rx;
  struct notify *n;
  char big[5000];

  (void)state;
  memset(big, 'z', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  assert_int_equal(uv_loop_init(&loop), 0);
  rx_open(&rx, 1);
  n = notify_open(&loop);
  assert_int_equal(notify_send(n, "X_BIG=%s", big), -1);
  rx_expect_nothing(&rx);
  assert_int_equal(logged.debugs, 1);
  finish(&loop, n);
  rx_close(&rx);
}

/* The watchdog run: a poll handle drains the fake manager's socket as
 * datagrams arrive; a timer checks every `ms` of loop time and ends the
 * run once `want` pings came. A starved machine (a loaded CI runner,
 * valgrind) may need more than one period for that, up to RUN_CEILING_MS;
 * that ceiling is the failure, never a sleep. */
#define RUN_CEILING_MS 5000

struct run {
  struct rx *rx;
  uv_poll_t poll;
  uv_timer_t stop;
  int want, pings, others;
  uint64_t start_ms, elapsed_ms; /* loop time */
};

static void
on_readable(uv_poll_t *poll, int status, int events)
{
  struct run *run = uv_handle_get_data((uv_handle_t *)poll);
  char buf[256];

  (void)events;
  assert_int_equal(status, 0);
  while (rx_recv(run->rx, buf, sizeof(buf)) >= 0) {
    if (strcmp(buf, "WATCHDOG=1") == 0)
      run->pings++;
    else
      run->others++;
  }
}

static void
on_stop(uv_timer_t *timer)
{
  struct run *run = uv_handle_get_data((uv_handle_t *)timer);
  uv_loop_t *loop = uv_handle_get_loop((uv_handle_t *)timer);

  run->elapsed_ms = uv_now(loop) - run->start_ms;
  if (run->pings < run->want && run->elapsed_ms < RUN_CEILING_MS)
    return; /* the repeat brings us back */
  uv_close((uv_handle_t *)&run->poll, NULL);
  uv_close((uv_handle_t *)&run->stop, NULL);
  /* uv_run then returns non-zero if anything else still holds the loop
   * (a watchdog timer that is not unref'd), instead of running on. */
  uv_stop(loop);
}

/* Run the loop for ms milliseconds of loop time, or for as many more as it
 * takes to see `want` pings; count the datagrams. */
static void
run_for(uv_loop_t *loop, struct rx *rx, uint64_t ms, int want, struct run *run)
{
  memset(run, 0, sizeof(*run));
  run->rx = rx;
  run->want = want;
  assert_int_equal(uv_poll_init(loop, &run->poll, rx->fd), 0);
  assert_int_equal(uv_timer_init(loop, &run->stop), 0);
  uv_handle_set_data((uv_handle_t *)&run->poll, run);
  uv_handle_set_data((uv_handle_t *)&run->stop, run);
  assert_int_equal(uv_poll_start(&run->poll, UV_READABLE, on_readable), 0);
  uv_update_time(loop);
  run->start_ms = uv_now(loop);
  assert_int_equal(uv_timer_start(&run->stop, on_stop, ms, ms), 0);
  assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
}

/* Fail unless the loop holds exactly one timer besides the test's — the
 * watchdog's — repeating every repeat_ms and not keeping the loop alive. */
struct timers {
  int n;
  uint64_t repeat;
  int active, ref;
};

static void
count_timer(uv_handle_t *handle, void *arg)
{
  struct timers *t = arg;

  if (uv_handle_get_type(handle) != UV_TIMER)
    return;
  t->n++;
  t->repeat = uv_timer_get_repeat((uv_timer_t *)handle);
  t->active = uv_is_active(handle);
  t->ref = uv_has_ref(handle);
}

static void
expect_watchdog_timer(uv_loop_t *loop, uint64_t repeat_ms)
{
  struct timers t = {0};

  uv_walk(loop, count_timer, &t);
  assert_int_equal(t.n, 1);
  assert_true(t.active);
  assert_false(t.ref);
  assert_int_equal(t.repeat, repeat_ms);
}

static void
watchdog_pings_at_half_the_timeout(void **state)
{
  (void)state;
  /* WATCHDOG_PID unset, or naming this process. */
  for (int with_pid = 0; with_pid < 2; with_pid++) {
    uv_loop_t loop;
    struct rx rx;
    struct notify *n;
    struct run run;
    char pid[32];

    assert_int_equal(uv_loop_init(&loop), 0);
    rx_open(&rx, with_pid);
    assert_int_equal(setenv("WATCHDOG_USEC", "20000", 1), 0);
    if (with_pid) {
      snprintf(pid, sizeof(pid), "%ld", (long)getpid());
      assert_int_equal(setenv("WATCHDOG_PID", pid, 1), 0);
    }
    n = notify_open(&loop);
    assert_int_equal(notify_watchdog_start(n), 20000);
    expect_watchdog_timer(&loop, 10);
    /* Pings every 10 ms: about 10 in 100 ms; libuv never fires a timer
     * early, so never more than one per 10 ms of loop time. */
    run_for(&loop, &rx, 100, 3, &run);
    if (run.pings < 3 || (uint64_t)run.pings > run.elapsed_ms / 10 + 1)
      fail_msg("%d pings in %" PRIu64 " ms", run.pings, run.elapsed_ms);
    assert_int_equal(run.others, 0);
    finish(&loop, n);
    rx_close(&rx);
    unsetenv("WATCHDOG_PID");
  }
}

static void
watchdog_interval_rounding(void **state)
{
  static const struct {
    const char *usec;
    uint64_t repeat_ms;
  } cases[] = {
      {"1", 1},      /* half of 1 µs: 0 ms, raised to 1 */
      {"1999", 1},   /* 0.9995 ms */
      {"25999", 12}, /* 12.9995 ms, rounded down */
      {"26000", 13}, {"30000000", 15000},
  };

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uv_loop_t loop;
    struct rx rx;
    struct notify *n;

    assert_int_equal(uv_loop_init(&loop), 0);
    rx_open(&rx, 1);
    assert_int_equal(setenv("WATCHDOG_USEC", cases[i].usec, 1), 0);
    n = notify_open(&loop);
    assert_int_equal(notify_watchdog_start(n),
                     strtoull(cases[i].usec, NULL, 10));
    expect_watchdog_timer(&loop, cases[i].repeat_ms);
    finish(&loop, n);
    rx_close(&rx);
  }
}

static void
watchdog_interval_is_at_least_a_millisecond(void **state)
{
  uv_loop_t loop;
  struct rx rx;
  struct notify *n;
  struct run run;

  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  rx_open(&rx, 1);
  /* Half of 1 µs rounds to 0 ms; a 0 ms repeat would ping only once. */
  assert_int_equal(setenv("WATCHDOG_USEC", "1", 1), 0);
  n = notify_open(&loop);
  assert_int_equal(notify_watchdog_start(n), 1);
  run_for(&loop, &rx, 30, 3, &run);
  if (run.pings < 3 || (uint64_t)run.pings > run.elapsed_ms + 1)
    fail_msg("%d pings in %" PRIu64 " ms", run.pings, run.elapsed_ms);
  finish(&loop, n);
  rx_close(&rx);
}

static void
watchdog_does_not_keep_the_loop_alive(void **state)
{
  uv_loop_t loop;
  struct rx rx;
  struct notify *n;

  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  rx_open(&rx, 0);
  assert_int_equal(setenv("WATCHDOG_USEC", "20000", 1), 0);
  n = notify_open(&loop);
  assert_int_equal(notify_watchdog_start(n), 20000);
  /* Nothing else on the loop: it is not alive, and uv_run returns at
   * once without running a timer. */
  assert_false(uv_loop_alive(&loop));
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  rx_expect_nothing(&rx);
  finish(&loop, n);
  rx_close(&rx);
}

static void
watchdog_refused(void **state)
{
  char other_pid[32];
  const struct {
    const char *usec, *pid; /* NULL: unset */
    int warns;
  } cases[] = {
      {NULL, NULL, 0},
      {"20000", other_pid, 0},
      {"20000", "12x", 0},
      {"20000", "", 0},
      {"20000", "-1", 0},
      {"0", NULL, 1},
      {"abc", NULL, 1},
      {"", NULL, 1},
      {"-5", NULL, 1},
      {"20000ms", NULL, 1},
      {"99999999999999999999", NULL, 1},
  };

  (void)state;
  snprintf(other_pid, sizeof(other_pid), "%ld", (long)getppid());
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uv_loop_t loop;
    struct rx rx;
    struct notify *n;
    struct run run;

    memset(&logged, 0, sizeof(logged));
    assert_int_equal(uv_loop_init(&loop), 0);
    rx_open(&rx, 1);
    if (cases[i].usec != NULL)
      assert_int_equal(setenv("WATCHDOG_USEC", cases[i].usec, 1), 0);
    if (cases[i].pid != NULL)
      assert_int_equal(setenv("WATCHDOG_PID", cases[i].pid, 1), 0);
    n = notify_open(&loop);
    assert_true(notify_enabled(n));
    if (notify_watchdog_start(n) != 0)
      fail_msg("watchdog started: WATCHDOG_USEC=%s WATCHDOG_PID=%s",
               cases[i].usec ? cases[i].usec : "(unset)",
               cases[i].pid ? cases[i].pid : "(unset)");
    assert_int_equal(logged.warnings, cases[i].warns);
    run_for(&loop, &rx, 30, 0, &run);
    assert_int_equal(run.pings + run.others, 0);
    finish(&loop, n);
    rx_close(&rx);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
  }
}

static void
without_a_loop(void **state)
{
  struct rx rx;
  struct notify *n;

  (void)state;
  rx_open(&rx, 1);
  assert_int_equal(setenv("WATCHDOG_USEC", "20000", 1), 0);
  n = notify_open(NULL);
  assert_true(notify_enabled(n));
  assert_int_equal(notify_watchdog_start(n), 0);
  assert_int_equal(notify_ready(n), 0);
  rx_expect(&rx, "READY=1");
  notify_close(n); /* freed at once: no loop to run */
  rx_close(&rx);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(messages_to_a_path, setup, teardown),
      cmocka_unit_test_setup_teardown(messages_to_an_abstract_name, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(long_status_is_cut_at_a_character, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(without_notify_socket_nothing_happens,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(bad_addresses_disable_with_one_warning,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(longest_addresses_fit, setup, teardown),
      cmocka_unit_test_setup_teardown(message_too_long_is_refused, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(watchdog_pings_at_half_the_timeout,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(watchdog_interval_rounding, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          watchdog_interval_is_at_least_a_millisecond, setup, teardown),
      cmocka_unit_test_setup_teardown(watchdog_does_not_keep_the_loop_alive,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(watchdog_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(without_a_loop, setup, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
