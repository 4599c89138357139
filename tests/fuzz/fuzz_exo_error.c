/*
 * fuzz_exo_error — the Exchange error decoder (exo_decode_error in
 * src/exo.c) on arbitrary response bodies.
 *
 * The body is passed as the fuzzer gives it, not NUL-terminated, so a
 * read past `len` is an ASan report. Each body is decoded into buffers of
 * the sizes exo.c uses, into tiny ones (1 to 4 bytes, where a cut falls
 * inside a UTF-8 sequence) and into zero-length ones (left alone).
 *
 * Checks: no crash, leak or sanitizer report; every field is NUL-
 * terminated within its buffer, one line without control characters, and
 * valid UTF-8 (invalid input bytes become '?', cuts never split a
 * character); when the decoder says it found the "id|type|text" form, the
 * id and the type are not empty.
 */
#include <stdlib.h>
#include <string.h>

#include "exo.h"
#include "fuzz.h"

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid.
 * Written apart from src/text.c on purpose: the oracle must not share the
 * code it checks. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
  size_t len;
  unsigned cp;

  if (s[0] < 0x80)
    return 1;
  if (s[0] >= 0xc2 && s[0] <= 0xdf)
    len = 2;
  else if (s[0] >= 0xe0 && s[0] <= 0xef)
    len = 3;
  else if (s[0] >= 0xf0 && s[0] <= 0xf4)
    len = 4;
  else
    return 0;
  if (len > n)
    return 0;
  cp = s[0] & (0x7f >> len);
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
      (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
    return 0;
  return len;
}

static void
check_field(const char *buf, size_t size)
{
  const unsigned char *s = (const unsigned char *)buf;
  size_t n;

  if (size == 0)
    return;
  n = strnlen(buf, size);
  if (n >= size)
    abort(); /* not terminated */
  for (size_t i = 0; i < n;) {
    size_t len = utf8_len(s + i, n - i);

    if (len == 0 || s[i] < 0x20 || s[i] == 0x7f)
      abort();
    i += len;
  }
}

static void
decode(const uint8_t *data, size_t size, size_t idlen, size_t exlen,
       size_t textlen)
{
  char id[80], ex[256], text[1024];
  int rc;

  /* Canaries: a zero-length buffer must be left alone. */
  memset(id, 'I', sizeof(id));
  memset(ex, 'E', sizeof(ex));
  memset(text, 'T', sizeof(text));
  rc = exo_decode_error((const char *)data, size, id, idlen, ex, exlen, text,
                        textlen);
  if (rc != 0 && rc != -1)
    abort();
  /* The "id|type|text" form means an id and a type to branch on (in a
   * buffer that holds at least one character of any width). */
  if (rc == 0 &&
      ((idlen > 4 && id[0] == '\0') || (exlen > 4 && ex[0] == '\0')))
    abort();
  if ((idlen == 0 && id[0] != 'I') || (exlen == 0 && ex[0] != 'E') ||
      (textlen == 0 && text[0] != 'T'))
    abort();
  check_field(id, idlen);
  check_field(ex, exlen);
  check_field(text, textlen);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  decode(data, size, 64, 256, 1024);
  decode(data, size, 1, 2, 3);
  decode(data, size, 4, 3, 2);
  decode(data, size, 0, 0, 0);
  decode(data, size, 80, 0, 17);
  return 0;
}
