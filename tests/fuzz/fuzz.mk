# tests/fuzz/fuzz.mk — libFuzzer targets for the parsers that read hostile
# input (see tests/fuzz/README.md). Included by the Makefile; also works
# alone: make -f tests/fuzz/fuzz.mk fuzz-check
#
#   make fuzz         each target for FUZZ_SECONDS (60) on its corpus
#   make fuzz-check   each target's regressions once, then FUZZ_CHECK_SECONDS
#                     (5) of fuzzing each; fails on any crash, leak or
#                     sanitizer report
#
# Everything is built with clang into FUZZ_BUILD (build/fuzz): src/*.c but
# main.c with ASan, UBSan and libFuzzer's coverage, each target linked with
# libFuzzer's main. New inputs libFuzzer finds go to FUZZ_BUILD/corpus;
# tests/fuzz/corpus is only read (copy an interesting find there by hand).
# A crash is saved as FUZZ_BUILD/crash-<target>-<hash>: fix the code, then
# move the file to tests/fuzz/regressions/<target>/.

FUZZ_CC ?= clang
FUZZ_BUILD ?= build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_CHECK_SECONDS ?= 5
FUZZ_TARGETS := config mapping scope graph_delta exo_error retry_after \
	auth_token

PKG_CONFIG ?= pkg-config
FUZZ_PKGS := libcurl jansson libuv sqlite3 openssl inih
# src/ is built warning-clean by gcc (the Makefile's -Werror); clang has
# a few warnings of its own, shown here but not fatal, so that a clang-only
# nit never stops the fuzzers. The fuzz targets themselves get -Werror.
FUZZ_WARN := -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes \
	-Wmissing-prototypes
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE $(FUZZ_WARN) -Iinclude \
	$(shell $(PKG_CONFIG) --cflags $(FUZZ_PKGS)) -O1 -g $(FUZZ_SAN)
FUZZ_LIBS := $(shell $(PKG_CONFIG) --libs $(FUZZ_PKGS)) -lm
FUZZ_LIB_SRCS := $(filter-out src/main.c,$(wildcard src/*.c))
FUZZ_LIB_OBJS := $(FUZZ_LIB_SRCS:src/%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_BINS := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
# Run options shared by both rules: a hang or a runaway allocation is a
# finding too; leaks are detected (libFuzzer's default, said out loud).
FUZZ_RUN_OPTS := -timeout=10 -rss_limit_mb=2048 -detect_leaks=1 \
	-print_final_stats=1

.PHONY: fuzz fuzz-check fuzz-build

fuzz-build: $(FUZZ_BINS)

$(FUZZ_BUILD)/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c \
		-o $@ $<

$(FUZZ_BUILD)/libgalbridge.a: $(FUZZ_LIB_OBJS)
	rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h \
		$(FUZZ_BUILD)/libgalbridge.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Werror -fsanitize=fuzzer -o $@ $< \
		$(FUZZ_BUILD)/libgalbridge.a $(FUZZ_LIBS)

-include $(FUZZ_LIB_OBJS:.o=.d)

# Dictionaries (tests/fuzz/<target>.dict) are used when present.
fuzz_dict = $(if $(wildcard tests/fuzz/$(1).dict),-dict=tests/fuzz/$(1).dict)

fuzz: $(FUZZ_BINS)
	@set -e; $(foreach t,$(FUZZ_TARGETS), \
		echo "== fuzz_$(t): $(FUZZ_SECONDS)s"; \
		mkdir -p $(FUZZ_BUILD)/corpus/$(t); \
		$(FUZZ_BUILD)/fuzz_$(t) $(FUZZ_RUN_OPTS) $(call fuzz_dict,$(t)) \
			-max_total_time=$(FUZZ_SECONDS) \
			-artifact_prefix=$(FUZZ_BUILD)/crash-$(t)- \
			$(FUZZ_BUILD)/corpus/$(t) tests/fuzz/corpus/$(t);)

# Regressions run file by file (libFuzzer runs each named file once); the
# short fuzzing run writes what it finds to a scratch directory only.
fuzz-check: $(FUZZ_BINS)
	@set -e; $(foreach t,$(FUZZ_TARGETS), \
		echo "== fuzz_$(t): regressions, then $(FUZZ_CHECK_SECONDS)s"; \
		if [ -n "$$(ls -A tests/fuzz/regressions/$(t) 2>/dev/null)" ]; \
		then $(FUZZ_BUILD)/fuzz_$(t) $(FUZZ_RUN_OPTS) \
			tests/fuzz/regressions/$(t)/*; fi; \
		rm -rf $(FUZZ_BUILD)/check/$(t); \
		mkdir -p $(FUZZ_BUILD)/check/$(t); \
		$(FUZZ_BUILD)/fuzz_$(t) $(FUZZ_RUN_OPTS) $(call fuzz_dict,$(t)) \
			-max_total_time=$(FUZZ_CHECK_SECONDS) \
			-artifact_prefix=$(FUZZ_BUILD)/crash-$(t)- \
			$(FUZZ_BUILD)/check/$(t) tests/fuzz/corpus/$(t);)
