# galbridge — build, test and install.
#
#   make            build ./galbridge
#   make deps       install the Debian 12 packages the build and tests need
#   make check      lint, build, then every test: unit (cmocka), fakecloud's
#                   own, integration, reliability (small), fuzz (short);
#                   each runs even if one failed, a table ends it
#   make asan       the same suite with AddressSanitizer + UBSan
#   make lint       clang-format check, cppcheck, banned calls
#   make demo       fakecloud with two demo tenants + galbridge against it
#   make demo-shell the same set up and one round done, left running for
#                   commands by hand (make demo-stop ends it)
#   make install    honours PREFIX and DESTDIR
#   make deb        a Debian package, build/galbridge_VERSION_ARCH.deb

# This Makefile's directory (before any include changes MAKEFILE_LIST).
TOP := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system

CC ?= cc
PKG_CONFIG ?= pkg-config
PYTHON ?= /usr/bin/python3
BUILD ?= build

PKGS := libcurl jansson libuv sqlite3 openssl inih
WARN := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes \
	-Wmissing-prototypes
PKG_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS))
PKG_LIBS = $(shell $(PKG_CONFIG) --libs $(PKGS))
CMOCKA_CFLAGS = $(shell $(PKG_CONFIG) --cflags cmocka)
CMOCKA_LIBS = $(shell $(PKG_CONFIG) --libs cmocka)

CFLAGS ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) -Iinclude $(PKG_CFLAGS) \
	$(CFLAGS) $(EXTRA_CFLAGS)
ALL_LDFLAGS = $(LDFLAGS) $(EXTRA_LDFLAGS)

SRCS := $(wildcard src/*.c)
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
LIB_OBJS := $(LIB_SRCS:src/%.c=$(BUILD)/%.o)
TEST_SRCS := $(wildcard tests/unit/test_*.c)
TESTS := $(TEST_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

# Debian 12 packages: build, unit tests, fakecloud and its tests, and
# mandoc for the man page checks of the install tests, dpkg-dev for
# dpkg-shlibdeps (make deb).
DEB_PKGS := gcc make pkg-config libcurl4-openssl-dev libjansson-dev \
	libuv1-dev libsqlite3-dev libssl-dev libinih-dev libcmocka-dev \
	python3 python3-cryptography python3-pytest clang libclang-rt-14-dev \
	mandoc dpkg-dev
LINT_PKGS := clang-format cppcheck

.PHONY: all deps deps-lint check unit-check fakecloud-check \
	integration-check reliability-check reliability valgrind asan lint \
	demo demo-shell demo-stop install deb clean \
	bench

all: galbridge

# Copy then rename: a running ./galbridge (a demo, a benchmark) keeps its
# old file and never makes the build fail with "Text file busy".
galbridge: $(BUILD)/galbridge
	cp $< $@.tmp
	mv -f $@.tmp $@

$(BUILD)/galbridge: $(BUILD)/main.o $(BUILD)/libgalbridge.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(ALL_LDFLAGS) $(PKG_LIBS) -lm

$(BUILD)/libgalbridge.a: $(LIB_OBJS)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: src/%.c | $(BUILD)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libgalbridge.a $(wildcard tests/unit/*.h) \
		| $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) $(CMOCKA_CFLAGS) -o $@ $< $(BUILD)/libgalbridge.a \
		$(ALL_LDFLAGS) $(CMOCKA_LIBS) $(PKG_LIBS) -lm

$(BUILD) $(BUILD)/tests:
	mkdir -p $@

-include $(LIB_OBJS:.o=.d) $(BUILD)/main.d

deps:
	@sh tests/deps.sh $(DEB_PKGS) $(LINT_PKGS)

deps-lint:
	@sh tests/deps.sh $(LINT_PKGS)

unit-check: $(TESTS)
	@set -e; for t in $(TESTS); do \
		echo "== $$t"; \
		(cd tests/unit && $(TEST_WRAPPER) ../../$$t); \
	done

fakecloud-check:
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/fakecloud

integration-check: $(BUILD)/galbridge
	GALBRIDGE=$(CURDIR)/$(BUILD)/galbridge \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

# The crash and state-directory tests, small by default; `make
# reliability` runs them at full size.
reliability-check: $(BUILD)/galbridge
	GALBRIDGE=$(CURDIR)/$(BUILD)/galbridge \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/reliability

# Every suite runs even when one before it failed; tests/check.sh prints
# the table of results at the end and fails if any suite failed. Each
# entry is NAME:TARGET.
CHECK_SUITES := lint:lint build:all unit:unit-check \
	fakecloud:fakecloud-check integration:integration-check \
	reliability:reliability-check fuzz:fuzz-check
check_name = $(word 1,$(subst :, ,$(1)))
check_target = $(word 2,$(subst :, ,$(1)))

check: deps
	@sh $(TOP)tests/check.sh $(foreach s,$(CHECK_SUITES), \
		"$(call check_name,$(s))=$(MAKE) $(call check_target,$(s))")

SAN := -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=all
asan: deps
	$(MAKE) BUILD=build/asan CFLAGS="-O1 -g" EXTRA_CFLAGS="$(SAN)" \
		EXTRA_LDFLAGS="$(SAN)" build/asan/galbridge
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(MAKE) BUILD=build/asan CFLAGS="-O1 -g" EXTRA_CFLAGS="$(SAN)" \
		EXTRA_LDFLAGS="$(SAN)" unit-check integration-check

lint:
	@sh tests/lint.sh

demo: deps
	$(MAKE) all
	$(PYTHON) tests/demo.py

# fakecloud with the demo tenants, a config in demo-shell/ and a first
# round, then the commands to try by hand; fakecloud keeps running until
# `make demo-stop`.
demo-shell: deps
	$(MAKE) all
	$(PYTHON) tests/demo.py --shell

demo-stop:
	$(PYTHON) tests/demo.py --stop

bench: all
	@sh tests/deps.sh time
	$(PYTHON) bench/delta-read.py --users 2000
	$(PYTHON) bench/delta-read.py --users 20000
	$(PYTHON) bench/guest-round.py --users 2000
	$(PYTHON) bench/latency.py --interval 30 --changes 20
	$(PYTHON) bench/daemon-idle.py --rounds 1000
	$(PYTHON) bench/first-round.py --users 10000 --time-factor 10
	$(PYTHON) bench/budget-models.py --users 2000 --skip-burst
	$(PYTHON) bench/budget-models.py --users 10000
	$(PYTHON) bench/idle.py --sizes 10000,100000 --rounds 100
	$(PYTHON) bench/change-burst.py --users 100000 --changes 1000
	$(PYTHON) bench/scale.py --sizes 10000,50000,100000
	$(PYTHON) bench/contacts.py --users 1000 --latency-ms 200
	$(PYTHON) bench/interval.py --users 10000 --contact-users 2000

install: galbridge
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(SYSCONFDIR)/galbridge
	install -m 0755 galbridge $(DESTDIR)$(BINDIR)/galbridge
	install -m 0644 man/galbridge.8 $(DESTDIR)$(MANDIR)/man8/galbridge.8
	install -m 0644 man/galbridge.conf.5 \
		$(DESTDIR)$(MANDIR)/man5/galbridge.conf.5
	install -m 0644 etc/galbridge.conf.example \
		$(DESTDIR)$(SYSCONFDIR)/galbridge/galbridge.conf.example
	@if [ -f systemd/galbridge.service ]; then \
		install -d $(DESTDIR)$(UNITDIR); \
		sed 's|/usr/local/bin/galbridge|$(BINDIR)/galbridge|' \
			systemd/galbridge.service > $(DESTDIR)$(UNITDIR)/galbridge.service; \
		chmod 0644 $(DESTDIR)$(UNITDIR)/galbridge.service; \
	fi

# The package is made from `make install PREFIX=/usr` into a staging
# tree (pkg/deb.sh says what goes in it). -o galbridge: the binary the
# prerequisite made (or, in a test, the one put there) is the one packaged.
deb: galbridge
	rm -rf $(BUILD)/deb
	$(MAKE) -s -f $(TOP)Makefile -o galbridge install PREFIX=/usr \
		DESTDIR=$(abspath $(BUILD))/deb/stage
	sh $(TOP)pkg/deb.sh $(TOP) $(BUILD)/deb/stage $(BUILD)

clean:
	rm -rf build galbridge

# The reliability report (tests/reliability/README.md): every fault class
# at full size, the crash test with 50 kills, the fuzzers for FUZZ_SECONDS
# each, the suite under ASan/UBSan and under valgrind; one table at the end.
reliability: all
	$(PYTHON) tests/reliability/report.py

# The integration suite with galbridge under valgrind (slow: run it by
# hand or from `make reliability`, not in `make check`).
valgrind: $(BUILD)/galbridge
	@sh tests/deps.sh valgrind
	GALBRIDGE_REAL=$(CURDIR)/$(BUILD)/galbridge \
	GALBRIDGE=$(CURDIR)/tests/valgrind-galbridge.sh \
	GALBRIDGE_THROTTLE_GRACE_MS=1000 \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

# By its full path: the Makefile may be run with -f from elsewhere.
include $(TOP)tests/fuzz/fuzz.mk
