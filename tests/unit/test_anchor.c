/*
 * Tests for anchor: the plain form, parsing (a table of values that are
 * and are not anchors), stamps and their proof (bound to the key, the
 * target tenant, the kind and the target object), and the key file's
 * rules (mode, length, blanks).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "anchor.h"

#define TT "22222222-2222-2222-2222-222222222222"
#define SRC "11111111-1111-1111-1111-111111111111"
#define OBJ "aaaaaaaa-0000-0000-0000-000000000001"
#define OTHER "aaaaaaaa-0000-0000-0000-000000000002"

static void
plain_is_lower_case(void **state)
{
  char *p = anchor_plain("ABCDEF", "Id-X");

  (void)state;
  assert_string_equal(p, "galbridge:abcdef:id-x");
  free(p);
}

static void
parse_table(void **state)
{
  static const struct {
    const char *value;
    const char *plain; /* NULL: not an anchor */
    const char *proof;
  } cases[] = {
      {"galbridge:t:i", "galbridge:t:i", NULL},
      {"GalBridge:T:I", "galbridge:t:i", NULL},
      {"galbridge:t:i:1.abc", "galbridge:t:i", "1.abc"},
      {"galbridge:t:i:", "galbridge:t:i", ""},
      {"galbridge:t:i:x:y", "galbridge:t:i", "x:y"},
      {"galbridge:t:", NULL, NULL},
      {"galbridge::i", NULL, NULL},
      {"galbridge:t", NULL, NULL},
      {"galbridge:", NULL, NULL},
      {"galbridg:t:i", NULL, NULL},
      {"xgalbridge:t:i", NULL, NULL},
      {"", NULL, NULL},
  };

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *proof = "unset";
    char *plain = anchor_parse(cases[i].value, &proof);
    if (cases[i].plain == NULL) {
      assert_null(plain);
      assert_null(proof);
      continue;
    }
    assert_non_null(plain);
    assert_string_equal(plain, cases[i].plain);
    if (cases[i].proof == NULL)
      assert_null(proof);
    else
      assert_string_equal(proof, cases[i].proof);
    free(plain);
  }
  assert_null(anchor_parse(NULL, NULL));
}

static char dir[64];

static char *
key_file(const char *content, mode_t mode)
{
  static int n;
  char *path = malloc(128);
  int fd;

  snprintf(path, 128, "%s/key%d", dir, n++);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, content, strlen(content)),
                   (ssize_t)strlen(content));
  close(fd);
  chmod(path, mode);
  return path;
}

static struct anchor_key *
load(const char *content)
{
  struct anchor_key *key = NULL;
  char err[256];
  char *path = key_file(content, 0600);

  assert_int_equal(anchor_key_load(path, &key, err, sizeof(err)), 0);
  free(path);
  return key;
}

static void
stamp_and_prove(void **state)
{
  struct anchor_key *key = load("0123456789abcdef0123456789abcdef\n");
  struct anchor_key *other = load("another key of thirty-two bytes!!");
  char *plain = anchor_plain(SRC, OBJ);
  char *stamp = anchor_stamp(key, TT, "guest", plain, OBJ);
  char *bare = anchor_stamp(NULL, TT, "guest", plain, OBJ);

  (void)state;
  /* Readable first, then the proof. */
  assert_int_equal(strncmp(stamp, plain, strlen(plain)), 0);
  assert_int_equal(strncmp(stamp + strlen(plain), ":1.", 3), 0);
  assert_int_equal(strlen(stamp), strlen(plain) + 3 + 22);
  assert_string_equal(bare, plain);

  assert_int_equal(anchor_proven(key, TT, "guest", stamp, OBJ), 1);
  /* Another object, tenant, kind or key: no proof. */
  assert_int_equal(anchor_proven(key, TT, "guest", stamp, OTHER), 0);
  assert_int_equal(anchor_proven(key, SRC, "guest", stamp, OBJ), 0);
  assert_int_equal(anchor_proven(key, TT, "mailuser", stamp, OBJ), 0);
  assert_int_equal(anchor_proven(other, TT, "guest", stamp, OBJ), 0);
  assert_int_equal(anchor_proven(NULL, TT, "guest", stamp, OBJ), 0);
  /* A plain anchor or a changed one proves nothing. */
  assert_int_equal(anchor_proven(key, TT, "guest", plain, OBJ), 0);
  stamp[strlen(stamp) - 1] ^= 1;
  assert_int_equal(anchor_proven(key, TT, "guest", stamp, OBJ), 0);
  stamp[strlen(stamp) - 1] ^= 1;
  /* Case of the readable part and of ids does not matter; the proof's
   * does. */
  stamp[0] = 'G';
  assert_int_equal(anchor_proven(key, TT, "guest", stamp, OBJ), 1);
  assert_int_equal(anchor_proven(key, "22222222-2222-2222-2222-222222222222",
                                 "guest", stamp,
                                 "AAAAAAAA-0000-0000-0000-"
                                 "000000000001"),
                   1);
  free(plain);
  free(stamp);
  free(bare);
  anchor_key_free(key);
  anchor_key_free(other);
}

static void
key_file_rules(void **state)
{
  struct anchor_key *key = NULL;
  char err[256], *path;
  char big[5000];

  (void)state;
  path = key_file("0123456789abcdef0123456789abcdef", 0640);
  assert_int_equal(anchor_key_load(path, &key, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "group or others"));
  assert_null(strstr(err, "0123456789"));
  free(path);

  path = key_file("short key \n\n", 0600);
  assert_int_equal(anchor_key_load(path, &key, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "shorter than 16 bytes"));
  assert_null(strstr(err, "short key"));
  free(path);

  memset(big, 'k', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  path = key_file(big, 0600);
  assert_int_equal(anchor_key_load(path, &key, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "longer than 4096 bytes"));
  free(path);

  assert_int_equal(
      anchor_key_load("/nonexistent/galbridge.key", &key, err, sizeof(err)),
      -1);
  assert_non_null(strstr(err, "/nonexistent/galbridge.key"));
  assert_null(key);

  /* Trailing blanks are not part of the key. */
  {
    struct anchor_key *a = load("0123456789abcdef0123");
    struct anchor_key *b = load("0123456789abcdef0123 \r\n");
    char *stamp = anchor_stamp(a, TT, "guest", "galbridge:s:i", OBJ);
    assert_int_equal(anchor_proven(b, TT, "guest", stamp, OBJ), 1);
    free(stamp);
    anchor_key_free(a);
    anchor_key_free(b);
  }
}

static int
setup(void **state)
{
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/galbridge-anchor-XXXXXX");
  return mkdtemp(dir) == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
  char cmd[128];
  (void)state;
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(plain_is_lower_case),
      cmocka_unit_test(parse_table),
      cmocka_unit_test(stamp_and_prove),
      cmocka_unit_test(key_file_rules),
  };

  return cmocka_run_group_tests(tests, setup, teardown);
}
