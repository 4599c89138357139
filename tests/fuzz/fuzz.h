/*
 * Shared by the libFuzzer targets in this directory: the entry point's
 * prototype (the warning flags want one), two helpers to turn the
 * fuzzer's bytes, which are neither NUL-terminated nor text, into what the
 * parsers take, and the fixed JSON sample some targets check beside each
 * input. Each target is one file, fuzz_<target>.c; see README.md.
 *
 * The helpers abort when out of memory: a fuzz target has no better
 * answer, and libFuzzer reports the abort with the input that caused it.
 */
#ifndef GALBRIDGE_FUZZ_H
#define GALBRIDGE_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A NUL-terminated copy of n bytes (embedded NULs cut the string short,
 * as they would for any C caller). */
static inline char *
fuzz_strndup(const uint8_t *data, size_t n)
{
  char *s = malloc(n + 1);

  if (s == NULL)
    abort();
  if (n > 0)
    memcpy(s, data, n);
  s[n] = '\0';
  return s;
}

/* Split data at the first occurrence of `sep` (sep_len bytes): *head_len
 * gets the bytes before it; returns the offset just after it, or size
 * when it is absent (then the tail is empty). */
static inline size_t
fuzz_split(const uint8_t *data, size_t size, const char *sep, size_t sep_len,
           size_t *head_len)
{
  for (size_t i = 0; i + sep_len <= size; i++) {
    if (memcmp(data + i, sep, sep_len) == 0) {
      *head_len = i;
      return i + sep_len;
    }
  }
  *head_len = size;
  return size;
}

/* The target's fixed sample: `text` (JSON) parsed on the first call and
 * kept for the whole run, so a target has one sample and every call must
 * pass the same text. Borrowed reference. Aborts when text is not JSON,
 * which is a bug in the target. */
static inline json_t *
fuzz_sample(const char *text)
{
  static json_t *sample;

  if (sample == NULL) {
    sample = json_loads(text, 0, NULL);
    if (sample == NULL)
      abort();
  }
  return sample;
}

#endif
