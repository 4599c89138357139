/*
 * fuzz_config — the config parser (src/config.c) on arbitrary file text.
 *
 * The input is the whole galbridge.conf, handed to config_load_buffer(),
 * so nothing is written per input. Secret and certificate paths are
 * resolved against a private directory made once in /tmp (removed at
 * exit) holding `secret`, `cert.pem`, `key.pem` (mode 0600) and `ca.pem`,
 * so inputs naming those files get past the file checks into the link and
 * mapping passes.
 *
 * Checks beyond "no crash, no leak, no sanitizer report": an error always
 * comes back as a non-empty message (also cut to 16 bytes); a config that
 * loads dumps to text that loads back and dumps identically (config.h:
 * "the output loads back as the same config"); every link's mapping and
 * scope filter go through mapping_compile() and scope_filter_parse() as
 * the scheduler does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"
#include "mapping.h"
#include "scope.h"

static char dir[64];
static const char *const files[] = {"secret", "cert.pem", "key.pem", "ca.pem"};

static void
remove_dir(void)
{
  char path[128];

  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
    snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
    unlink(path);
  }
  rmdir(dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
  char path[128];

  (void)argc;
  (void)argv;
  unsetenv("CREDENTIALS_DIRECTORY");
  snprintf(dir, sizeof(dir), "/tmp/galbridge-fuzz-config.XXXXXX");
  if (mkdtemp(dir) == NULL)
    abort();
  atexit(remove_dir);
  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
    fp = fopen(path, "w");
    if (fp == NULL)
      abort();
    fputs("not read by config\n", fp);
    fclose(fp);
    if (chmod(path, i == 3 ? 0644 : 0600) != 0)
      abort();
  }
  return 0;
}

/* config_dump() into a new string (free it). */
static char *
dump(const struct config *cfg, size_t *len)
{
  char *text = NULL;
  FILE *fp = open_memstream(&text, len);

  if (fp == NULL)
    abort();
  config_dump(cfg, fp);
  if (fclose(fp) != 0)
    abort();
  return text;
}

static void
compile_links(const struct config *cfg)
{
  for (size_t i = 0; i < cfg->n_links; i++) {
    const struct config_link *link = &cfg->links[i];
    struct mapping *mapping = NULL;
    struct scope_filter *filter = NULL;
    char err[256];

    if (mapping_compile(link->mapping, link->object, cfg->path, &mapping, err,
                        sizeof(err)) == 0)
      mapping_free(mapping);
    if (link->scope_filter != NULL &&
        scope_filter_parse(link->scope_filter, &filter, err, sizeof(err)) == 0)
      scope_filter_free(filter);
  }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct config *cfg = NULL, *again = NULL;
  char err[512], small[16];
  char *text1, *text2;
  size_t len1, len2;

  if (config_load_buffer("fuzz.conf", dir, (const char *)data, size, &cfg, err,
                         sizeof(err)) != 0) {
    if (cfg != NULL || err[0] == '\0')
      abort();
    if (config_load_buffer("fuzz.conf", dir, (const char *)data, size, &cfg,
                           small, sizeof(small)) == 0 ||
        strnlen(small, sizeof(small)) >= sizeof(small))
      abort();
    return 0;
  }
  compile_links(cfg);
  text1 = dump(cfg, &len1);
  if (config_load_buffer("fuzz.conf", dir, text1, len1, &again, err,
                         sizeof(err)) != 0) {
    fprintf(stderr, "dump does not load back: %s\n--- dump:\n%s", err, text1);
    abort();
  }
  text2 = dump(again, &len2);
  if (len1 != len2 || memcmp(text1, text2, len1) != 0) {
    fprintf(stderr, "dump changed on reload\n--- first:\n%s--- second:\n%s",
            text1, text2);
    abort();
  }
  free(text1);
  free(text2);
  config_free(again);
  config_free(cfg);
  return 0;
}
