/*
 * Tests for config: a full config with every key, defaults, the exact
 * `file:line: message` of every error config_load can give, the libinih
 * quirks it must hide (inline ';', indentation, long lines), secret file
 * modes, $CREDENTIALS_DIRECTORY and the dump.
 *
 * Every test works in one temporary directory made by the group set-up:
 * config files are written there with mkstemp(3), next to fixture files
 * whose modes the secret checks look at. "@DIR@" in a config text or an
 * expected message stands for that directory's real path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "planner.h"

#define EXAMPLE_PATH "../../etc/galbridge.conf.example"

/* Short, so that paths built from it fit their buffers (mkdtemp in /tmp). */
static char dir[256];

/* ---------------------------------------------------------------------
 * Helpers
 */

/* tmpl with every "@DIR@" replaced by the test directory; free it. */
static char *
expand(const char *tmpl)
{
  size_t dlen = strlen(dir), cap = strlen(tmpl) + 1, n = 0;
  char *out;

  for (const char *p = tmpl; (p = strstr(p, "@DIR@")) != NULL; p += 5)
    cap += dlen;
  out = malloc(cap);
  assert_non_null(out);
  while (*tmpl != '\0') {
    if (strncmp(tmpl, "@DIR@", 5) == 0) {
      memcpy(out + n, dir, dlen);
      n += dlen;
      tmpl += 5;
    } else {
      out[n++] = *tmpl++;
    }
  }
  out[n] = '\0';
  return out;
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  assert_int_equal(fputs(text, fp) >= 0, 1);
  assert_int_equal(fclose(fp), 0);
  assert_int_equal(chmod(path, mode), 0);
}

/* A new config file (mkstemp) in the test directory holding `text` after
 * expansion; returns its path, to free. */
static char *
write_config(const char *text)
{
  char *path = malloc(PATH_MAX);
  char *body = expand(text);
  FILE *fp;
  int fd;

  assert_non_null(path);
  snprintf(path, PATH_MAX, "%s/galbridge.conf.XXXXXX", dir);
  fd = mkstemp(path);
  assert_true(fd >= 0);
  fp = fdopen(fd, "w");
  assert_non_null(fp);
  assert_int_equal(fwrite(body, 1, strlen(body), fp), strlen(body));
  assert_int_equal(fclose(fp), 0);
  free(body);
  return path;
}

/* Load `text`; it must succeed. */
static struct config *
load_ok(const char *text)
{
  char err[1024];
  struct config *cfg = NULL;
  char *path = write_config(text);
  int rc = config_load(path, &cfg, err, sizeof(err));

  if (rc != 0)
    fail_msg("config_load failed: %s", err);
  assert_non_null(cfg);
  assert_string_equal(cfg->path, path);
  unlink(path);
  free(path);
  return cfg;
}

/* Load `text`; it must fail with "PATH:LINE: MESSAGE" exactly. */
static void
load_fails(const char *text, int line, const char *message)
{
  char err[1024], want[2048];
  struct config *cfg = (struct config *)&cfg; /* must be reset to NULL */
  char *path = write_config(text);
  char *msg = expand(message);
  int rc = config_load(path, &cfg, err, sizeof(err));

  if (line > 0)
    snprintf(want, sizeof(want), "%s:%d: %s", path, line, msg);
  else
    snprintf(want, sizeof(want), "%s: %s", path, msg);
  assert_int_equal(rc, -1);
  assert_null(cfg);
  assert_string_equal(err, want);
  unlink(path);
  free(path);
  free(msg);
}

static char *
dump_string(const struct config *cfg)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&buf, &len);

  assert_non_null(fp);
  config_dump(cfg, fp);
  assert_int_equal(fclose(fp), 0);
  return buf;
}

static int
remove_entry(const char *path, const struct stat *st, int flag,
             struct FTW *ftw)
{
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int
group_setup(void **state)
{
  char tmpl[] = "/tmp/galbridge-test-config.XXXXXX";
  char path[PATH_MAX + 64];
  char *real;

  (void)state;
  /* Under systemd these tests could inherit a credentials directory. */
  unsetenv("CREDENTIALS_DIRECTORY");
  if (mkdtemp(tmpl) == NULL)
    return -1;
  real = realpath(tmpl, NULL);
  if (real == NULL)
    return -1;
  if (strlen(real) >= sizeof(dir)) {
    free(real);
    return -1;
  }
  snprintf(dir, sizeof(dir), "%s", real);
  free(real);

  /* Fixture files: contents are never read, only their modes matter. */
  static const struct {
    const char *name;
    mode_t mode;
  } files[] = {
      {"ok.secret", 0600},     {"loose.secret", 0644}, {"group.secret", 0640},
      {"cert.pem", 0644},      {"key.pem", 0600},      {"certkey.pem", 0600},
      {"loosecert.pem", 0644}, {"ca.pem", 0644},
  };
  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
    FILE *fp;
    snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
    fp = fopen(path, "w");
    if (fp == NULL)
      return -1;
    fputs("not a real secret\n", fp);
    fclose(fp);
    if (chmod(path, files[i].mode) != 0)
      return -1;
  }
  snprintf(path, sizeof(path), "%s/adir", dir);
  if (mkdir(path, 0700) != 0)
    return -1;
  snprintf(path, sizeof(path), "%s/creds", dir);
  if (mkdir(path, 0700) != 0)
    return -1;
  return 0;
}

static int
group_teardown(void **state)
{
  (void)state;
  unsetenv("CREDENTIALS_DIRECTORY");
  return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---------------------------------------------------------------------
 * Building blocks for configs. TENANT_A is lines 1-4, TENANT_B lines 5-8,
 * so a section after both starts at line 9.
 */

#define GUID_A "11111111-1111-1111-1111-111111111111"
#define GUID_B "22222222-2222-2222-2222-222222222222"
#define GUID_C "33333333-3333-3333-3333-333333333333"

#define TENANT_A                                                              \
  "[tenant a]\n"                                                              \
  "tenant_id = " GUID_A "\n"                                                  \
  "client_id = " GUID_B "\n"                                                  \
  "client_secret_file = ok.secret\n"
#define TENANT_B                                                              \
  "[tenant b]\n"                                                              \
  "tenant_id = " GUID_B "\n"                                                  \
  "client_id = " GUID_C "\n"                                                  \
  "certificate_file = certkey.pem\n"
#define TENANTS TENANT_A TENANT_B

/* ---------------------------------------------------------------------
 * A full config: every key set.
 */

static const char full_config[] =
    "; galbridge test configuration\n"
    "# every key set\n"
    "[galbridge]\n"
    "state_dir = /var/lib/galbridge-test\n"
    "log_level = debug\n"
    "interval = 120\n"
    "metrics_file = /run/galbridge/metrics.prom\n"
    "\n"
    "[tenant contoso]\n"
    "tenant_id = AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE\n"
    "client_id = 0123abcd-0000-4000-8000-0000000000ff\n"
    "client_secret_file = ok.secret\n"
    "cloud = usgovhigh\n"
    "login_url = https://login.example.test:8443/\n"
    "graph_url = https://Graph.Example.TEST:8444\n"
    "exchange_url = https://[::1]:8445\n"
    "ca_file = ca.pem\n"
    "\n"
    "[tenant fabrikam]\n"
    "tenant_id = " GUID_B "\n"
    "client_id = " GUID_C "\n"
    "certificate_file = @DIR@/cert.pem\n"
    "key_file = key.pem\n"
    "cloud = china\n"
    "\n"
    "[mapping contoso-people]\n"
    "displayName = Append(displayName, \" (Contoso)\")\n"
    "department = Join(\"; \", department, companyName)\n"
    "\n"
    "[link contoso-to-fabrikam]\n"
    "source = contoso\n"
    "target = fabrikam\n"
    "object = guest\n"
    "user_type = member\n"
    "scope_group = FFFFFFFF-0000-0000-0000-000000000001\n"
    "scope_filter = department eq 'Sales' ; and a # too\n"
    "mapping = contoso-people\n"
    "anchor = ExtensionAttribute7\n"
    "on_delete = hide\n"
    "adopt = no\n"
    "manager = yes\n"
    "max_deletes = 0\n"
    "max_delete_share = 100%\n"
    "max_creates = 500\n"
    "interval = 300\n"
    "\n"
    "[link fabrikam-to-contoso]\n"
    "source = fabrikam\n"
    "target = contoso\n"
    "object = mailcontact\n"
    "on_delete = keep\n"
    "max_deletes = 1000000\n";

static void
test_full_config(void **state)
{
  struct config *cfg = load_ok(full_config);
  const struct config_tenant *c, *f;
  const struct config_link *l;
  char *path;

  (void)state;
  assert_string_equal(cfg->state_dir, "/var/lib/galbridge-test");
  assert_int_equal(cfg->log_level, LOG_LEVEL_DEBUG);
  assert_int_equal(cfg->interval, 120);
  assert_string_equal(cfg->metrics_file, "/run/galbridge/metrics.prom");

  assert_int_equal(cfg->n_tenants, 2);
  c = config_tenant_find(cfg, "contoso");
  assert_ptr_equal(c, &cfg->tenants[0]);
  assert_string_equal(c->name, "contoso");
  assert_int_equal(c->line, 9);
  assert_string_equal(c->tenant_id, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
  assert_string_equal(c->client_id, "0123abcd-0000-4000-8000-0000000000ff");
  path = expand("@DIR@/ok.secret");
  assert_string_equal(c->client_secret_file, path);
  free(path);
  assert_null(c->certificate_file);
  assert_null(c->key_file);
  assert_int_equal(c->cloud, CONFIG_CLOUD_USGOVHIGH);
  assert_string_equal(c->login_url, "https://login.example.test:8443");
  assert_string_equal(c->graph_url, "https://graph.example.test:8444");
  assert_string_equal(c->exchange_url, "https://[::1]:8445");
  path = expand("@DIR@/ca.pem");
  assert_string_equal(c->ca_file, path);
  free(path);

  f = config_tenant_find(cfg, "fabrikam");
  assert_ptr_equal(f, &cfg->tenants[1]);
  assert_null(f->client_secret_file);
  path = expand("@DIR@/cert.pem");
  assert_string_equal(f->certificate_file, path);
  free(path);
  path = expand("@DIR@/key.pem");
  assert_string_equal(f->key_file, path);
  free(path);
  assert_int_equal(f->cloud, CONFIG_CLOUD_CHINA);
  assert_string_equal(f->login_url, "https://login.chinacloudapi.cn");
  assert_string_equal(f->graph_url, "https://microsoftgraph.chinacloudapi.cn");
  assert_string_equal(f->exchange_url, "https://partner.outlook.cn");
  assert_null(f->ca_file);

  assert_int_equal(cfg->n_mappings, 1);
  assert_string_equal(cfg->mappings[0].name, "contoso-people");
  assert_int_equal(cfg->mappings[0].line, 26);
  assert_int_equal(cfg->mappings[0].n_entries, 2);
  assert_string_equal(cfg->mappings[0].entries[0].target, "displayName");
  assert_string_equal(cfg->mappings[0].entries[0].expr,
                      "Append(displayName, \" (Contoso)\")");
  assert_int_equal(cfg->mappings[0].entries[0].line, 27);
  assert_string_equal(cfg->mappings[0].entries[1].target, "department");
  assert_string_equal(cfg->mappings[0].entries[1].expr,
                      "Join(\"; \", department, companyName)");
  assert_int_equal(cfg->mappings[0].entries[1].line, 28);

  assert_int_equal(cfg->n_links, 2);
  l = config_link_find(cfg, "contoso-to-fabrikam");
  assert_ptr_equal(l, &cfg->links[0]);
  assert_int_equal(l->line, 30);
  assert_ptr_equal(l->source, c);
  assert_ptr_equal(l->target, f);
  assert_int_equal(l->object, CONFIG_OBJECT_GUEST);
  assert_int_equal(l->user_type_member, 1);
  assert_string_equal(l->scope_group, "ffffffff-0000-0000-0000-000000000001");
  assert_string_equal(l->scope_filter, "department eq 'Sales' ; and a # too");
  assert_ptr_equal(l->mapping, &cfg->mappings[0]);
  assert_string_equal(l->anchor, "extensionAttribute7");
  assert_int_equal(l->on_delete, CONFIG_ON_DELETE_HIDE);
  assert_int_equal(l->max_deletes, 0);
  assert_int_equal(l->interval, 300);

  l = config_link_find(cfg, "fabrikam-to-contoso");
  assert_ptr_equal(l, &cfg->links[1]);
  assert_ptr_equal(l->source, f);
  assert_ptr_equal(l->target, c);
  assert_int_equal(l->object, CONFIG_OBJECT_MAILCONTACT);
  assert_int_equal(l->user_type_member, 0);
  assert_null(l->scope_group);
  assert_null(l->scope_filter);
  assert_null(l->mapping);
  assert_string_equal(l->anchor, "extensionAttribute15");
  assert_int_equal(l->on_delete, CONFIG_ON_DELETE_KEEP);
  assert_int_equal(l->max_deletes, 1000000);
  assert_int_equal(l->interval, 120); /* [galbridge] interval */

  assert_null(config_tenant_find(cfg, "nobody"));
  assert_null(config_tenant_find(cfg, NULL));
  assert_null(config_link_find(cfg, "contoso"));
  assert_null(config_link_find(NULL, "contoso-to-fabrikam"));
  config_free(cfg);
}

/* No [galbridge] section, nothing optional: every default. The [galbridge]
 * interval that a link inherits may come after the link. */
static void
test_defaults(void **state)
{
  struct config *cfg;
  const struct config_link *l;
  const struct config_tenant *t;

  (void)state;
  cfg = load_ok("[link a-to-b]\nsource = a\ntarget = b\nobject = guest\n"
                "[link b-to-a]\nsource = b\ntarget = a\n"
                "object = mailuser\n" TENANTS);
  assert_string_equal(cfg->state_dir, CONFIG_DEFAULT_STATE_DIR);
  assert_int_equal(cfg->log_level, LOG_LEVEL_INFO);
  assert_int_equal(cfg->interval, CONFIG_DEFAULT_INTERVAL);
  assert_null(cfg->metrics_file);
  t = config_tenant_find(cfg, "a");
  assert_non_null(t);
  assert_int_equal(t->cloud, CONFIG_CLOUD_GLOBAL);
  assert_string_equal(t->login_url, "https://login.microsoftonline.com");
  assert_string_equal(t->graph_url, "https://graph.microsoft.com");
  assert_string_equal(t->exchange_url, "https://outlook.office365.com");
  assert_null(t->ca_file);
  l = config_link_find(cfg, "a-to-b");
  assert_non_null(l);
  assert_ptr_equal(l->source, t);
  assert_int_equal(l->user_type_member, 0);
  assert_null(l->scope_group);
  assert_null(l->scope_filter);
  assert_null(l->mapping);
  assert_string_equal(l->anchor, CONFIG_DEFAULT_ANCHOR);
  assert_int_equal(l->on_delete, CONFIG_ON_DELETE_DELETE);
  assert_int_equal(l->max_deletes, CONFIG_DEFAULT_MAX_DELETES);
  assert_int_equal(l->interval, CONFIG_DEFAULT_INTERVAL);
  assert_int_equal(config_link_find(cfg, "b-to-a")->object,
                   CONFIG_OBJECT_MAILUSER);
  config_free(cfg);

  cfg =
      load_ok("[link a-to-b]\nsource = a\ntarget = b\nobject = guest\n" TENANTS
              "[galbridge]\ninterval = 7\n");
  assert_int_equal(cfg->interval, 7);
  assert_int_equal(cfg->links[0].interval, 7);
  config_free(cfg);

  /* An empty file is a valid config with nothing to do. */
  cfg = load_ok("");
  assert_int_equal(cfg->n_tenants, 0);
  assert_int_equal(cfg->n_links, 0);
  assert_int_equal(cfg->n_mappings, 0);
  config_free(cfg);
}

static void
test_cloud_hosts(void **state)
{
  static const struct {
    const char *cloud;
    enum config_cloud value;
    const char *login, *graph, *exchange;
  } cases[] = {
      {"global", CONFIG_CLOUD_GLOBAL, "https://login.microsoftonline.com",
       "https://graph.microsoft.com", "https://outlook.office365.com"},
      {"usgovhigh", CONFIG_CLOUD_USGOVHIGH, "https://login.microsoftonline.us",
       "https://graph.microsoft.us", "https://outlook.office365.us"},
      {"dod", CONFIG_CLOUD_DOD, "https://login.microsoftonline.us",
       "https://dod-graph.microsoft.us", "https://webmail.apps.mil"},
      {"china", CONFIG_CLOUD_CHINA, "https://login.chinacloudapi.cn",
       "https://microsoftgraph.chinacloudapi.cn",
       "https://partner.outlook.cn"},
  };
  char text[512];

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct config *cfg;
    snprintf(text, sizeof(text), TENANT_A "cloud = %s\n", cases[i].cloud);
    cfg = load_ok(text);
    assert_int_equal(cfg->tenants[0].cloud, cases[i].value);
    assert_string_equal(cfg->tenants[0].login_url, cases[i].login);
    assert_string_equal(cfg->tenants[0].graph_url, cases[i].graph);
    assert_string_equal(cfg->tenants[0].exchange_url, cases[i].exchange);
    config_free(cfg);
  }
  /* An override replaces one host; the others keep the cloud's. */
  {
    struct config *cfg =
        load_ok(TENANT_A "cloud = dod\ngraph_url = https://127.0.0.1:9\n");
    assert_string_equal(cfg->tenants[0].login_url,
                        "https://login.microsoftonline.us");
    assert_string_equal(cfg->tenants[0].graph_url, "https://127.0.0.1:9");
    assert_string_equal(cfg->tenants[0].exchange_url,
                        "https://webmail.apps.mil");
    config_free(cfg);
  }
}

/* Each enum value reads back in the file's own spelling: check-config's
 * dump is where a user sees them (config_object_name is the one name
 * function other modules need). */
static void
test_names(void **state)
{
  static const char *const clouds[] = {"global", "usgovhigh", "dod", "china"};
  static const char *const policies[] = {"delete", "disable", "hide", "keep"};
  char text[512], want[64];

  (void)state;
  for (size_t i = 0; i < sizeof(clouds) / sizeof(clouds[0]); i++) {
    struct config *cfg;
    char *dump;
    snprintf(text, sizeof(text), TENANT_A "cloud = %s\n", clouds[i]);
    cfg = load_ok(text);
    dump = dump_string(cfg);
    snprintf(want, sizeof(want), "\ncloud = %s\n", clouds[i]);
    if (strstr(dump, want) == NULL)
      fail_msg("no \"%s\" in:\n%s", want + 1, dump);
    free(dump);
    config_free(cfg);
  }
  for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++) {
    struct config *cfg;
    char *dump;
    snprintf(text, sizeof(text),
             TENANTS "[link l]\nsource = a\ntarget = b\nobject = guest\n"
                     "on_delete = %s\n",
             policies[i]);
    cfg = load_ok(text);
    dump = dump_string(cfg);
    snprintf(want, sizeof(want), "\non_delete = %s\n", policies[i]);
    if (strstr(dump, want) == NULL)
      fail_msg("no \"%s\" in:\n%s", want + 1, dump);
    free(dump);
    config_free(cfg);
  }
  assert_string_equal(config_object_name(CONFIG_OBJECT_GUEST), "guest");
  assert_string_equal(config_object_name(CONFIG_OBJECT_MAILCONTACT),
                      "mailcontact");
  assert_string_equal(config_object_name(CONFIG_OBJECT_MAILUSER), "mailuser");
  assert_string_equal(config_object_name(CONFIG_OBJECT_GROUPCONTACT),
                      "groupcontact");
  assert_string_equal(config_object_name((enum config_object) - 1), "unknown");
}

/* object = groupcontact: a contact link whose objects are stored (and
 * anchored) under "<tenant id>#groups"; every other kind under the
 * tenant id. */
static void
test_groupcontact(void **state)
{
  struct config *cfg;
  const struct config_link *g, *c, *u;

  (void)state;
  cfg = load_ok(TENANTS "[link g]\nsource = a\ntarget = b\n"
                        "object = groupcontact\n"
                        "scope_filter = groupTypes eq 'Unified'\n"
                        "[link c]\nsource = a\ntarget = b\n"
                        "object = mailcontact\n"
                        "[link u]\nsource = a\ntarget = b\n"
                        "object = mailuser\n");
  g = config_link_find(cfg, "g");
  c = config_link_find(cfg, "c");
  u = config_link_find(cfg, "u");
  assert_int_equal(g->object, CONFIG_OBJECT_GROUPCONTACT);
  assert_string_equal(g->source_key, GUID_A "#groups");
  assert_string_equal(c->source_key, GUID_A);
  assert_string_equal(u->source_key, GUID_A);
  assert_int_equal(g->manager, 0); /* a group has none */
  assert_int_equal(c->manager, 1);
  assert_true(config_link_contacts(g));
  assert_true(config_link_contacts(c));
  assert_false(config_link_contacts(u));
  assert_false(config_link_contacts(NULL));
  /* Contacts of people and of groups never write one object. */
  assert_false(config_links_overlap(g, c));
  config_free(cfg);
}

/* ---------------------------------------------------------------------
 * The lexer: what libinih would get wrong on its own.
 */

static void
test_lexing(void **state)
{
  struct config *cfg;

  (void)state;
  /* ';' and '#' inside values survive, even after a blank; a line that
   * starts with either (after indentation) is a comment; indentation does
   * not continue the previous value; CRLF and a BOM are accepted. */
  cfg = load_ok("\xef\xbb\xbf; comment\r\n"
                "  # indented comment\r\n" TENANTS "[mapping m]\r\n"
                "  displayName = Join(\" ; \", givenName, surname) \r\n"
                "\tcompanyName = \"R#D; Ltd\"\r\n"
                "    ; a comment between entries\r\n"
                "department=Replace(department,\"#\",\";\")\r\n"
                "[link l]\nsource = a\ntarget = b\nobject = guest\n"
                "scope_filter = mail ne '' ; # both\n"
                "mapping = m\n");
  assert_int_equal(cfg->mappings[0].n_entries, 3);
  assert_string_equal(cfg->mappings[0].entries[0].target, "displayName");
  assert_string_equal(cfg->mappings[0].entries[0].expr,
                      "Join(\" ; \", givenName, surname)");
  assert_int_equal(cfg->mappings[0].entries[0].line, 12);
  assert_string_equal(cfg->mappings[0].entries[1].expr, "\"R#D; Ltd\"");
  assert_int_equal(cfg->mappings[0].entries[1].line, 13);
  assert_string_equal(cfg->mappings[0].entries[2].expr,
                      "Replace(department,\"#\",\";\")");
  assert_int_equal(cfg->mappings[0].entries[2].line, 15);
  assert_string_equal(cfg->links[0].scope_filter, "mail ne '' ; # both");
  config_free(cfg);

  /* Section names longer than libinih's 50-byte buffer are kept whole. */
  cfg = load_ok("[mapping a-mapping-name-that-is-well-over-fifty-"
                "characters-long]\nmail = mail\n");
  assert_string_equal(cfg->mappings[0].name,
                      "a-mapping-name-that-is-well-over-fifty-characters-"
                      "long");
  config_free(cfg);
}

/* Key lines longer than libinih's buffer (INI_MAX_LINE is 200 in Debian
 * 12's libinih 55: 198 bytes plus '\n' and NUL) are split by the reader
 * itself, so the limit is ours: CONFIG_LINE_MAX (65536) bytes, continued
 * lines joined. Never a silent cut. */
static void
test_long_lines(void **state)
{
  char text[4096];
  struct config *cfg;

  (void)state;
  /* "state_dir = /" is 13 bytes: 185 more make 198, libinih's longest. */
  snprintf(text, sizeof(text), "[galbridge]\nstate_dir = /%0185d\n", 0);
  cfg = load_ok(text);
  assert_int_equal(strlen(cfg->state_dir), 186);
  config_free(cfg);

  /* One byte more, and far more: the reader splits the line itself. */
  snprintf(text, sizeof(text), "[galbridge]\n\nstate_dir = /%0186d\n", 0);
  cfg = load_ok(text);
  assert_int_equal(strlen(cfg->state_dir), 187);
  config_free(cfg);
  snprintf(text, sizeof(text), "[galbridge]\n   state_dir   =   /%03000d  \n",
           0);
  cfg = load_ok(text);
  assert_int_equal(strlen(cfg->state_dir), 3001);
  config_free(cfg);

  /* Errors in a long line still name it and its key. */
  snprintf(text, sizeof(text), "[galbridge]\n\nstate_dirx = /%0300d\n", 0);
  load_fails(text, 3,
             "unknown key 'state_dirx' in [galbridge]; did you mean "
             "'state_dir'?");

  /* Comments never reach libinih, so they may be as long as they like. */
  memset(text, 'x', 3000);
  text[0] = '#';
  snprintf(text + 3000, sizeof(text) - 3000, "\n[galbridge]\n");
  cfg = load_ok(text);
  config_free(cfg);
}

/* A 10,000-character mapping expression and a long scope filter, each on
 * one line; the longest line allowed and one byte more. */
static void
test_long_values(void **state)
{
  size_t big = 70000;
  char *text = malloc(big + 1024), *expr = malloc(10001), *filter;
  struct config *cfg;
  size_t n;

  (void)state;
  assert_non_null(text);
  assert_non_null(expr);
  expr[0] = '\'';
  memset(expr + 1, 'x', 9998);
  expr[9999] = '\'';
  expr[10000] = '\0';
  filter = malloc(6001);
  assert_non_null(filter);
  for (n = 0; n + 20 <= 6000; n += 20)
    memcpy(filter + n, "mail ne 'a@b.xx' or ", 20);
  memcpy(filter + n - 4, "    ", 4); /* drop the last " or " */
  filter[n - 4] = '\0';
  snprintf(text, big + 1024,
           TENANTS "[mapping m]\ndisplayName = %s\n"
                   "[link l]\nsource = a\ntarget = b\nobject = guest\n"
                   "mapping = m\nscope_filter = %s\n",
           expr, filter);
  cfg = load_ok(text);
  assert_string_equal(cfg->mappings[0].entries[0].expr, expr);
  assert_int_equal(cfg->mappings[0].entries[0].line, 10);
  assert_string_equal(cfg->links[0].scope_filter, filter);
  config_free(cfg);

  /* 65536 bytes is the longest key line; one more is an error. */
  n = (size_t)snprintf(text, big + 1024, "[galbridge]\nstate_dir = /");
  memset(text + n, 'd', 65536 - 13);
  n += 65536 - 13;
  memcpy(text + n, "\n", 2);
  cfg = load_ok(text);
  assert_int_equal(strlen(cfg->state_dir), 65536 - 12);
  config_free(cfg);
  memcpy(text + n, "d\n", 3);
  load_fails(text, 2,
             "line too long (more than 65536 bytes, continued lines joined)");
  free(filter);
  free(expr);
  free(text);
}

/* A line ending in '\' goes on on the next: joined with one space, blanks
 * around the pieces dropped, ';' and '#' kept; errors name the key's
 * line. */
static void
test_continued_lines(void **state)
{
  struct config *cfg;

  (void)state;
  cfg = load_ok(TENANTS "[mapping m]\n"
                        "displayName = Join(' ',  \\\n"
                        "     givenName,\\\r\n"
                        "\t# not a comment here\\\n"
                        "  ; nor here  \\\n"
                        "    surname)\n"
                        "jobTitle = jobTitle\n"
                        "[link l]\nsource = a\ntarget = b\nobject = guest\n"
                        "mapping = m\n"
                        "scope_filter = department eq 'Sales' \\\n"
                        "  or department eq 'R&D; Labs'\n");
  assert_string_equal(cfg->mappings[0].entries[0].expr,
                      "Join(' ', givenName, # not a comment here ; nor here "
                      "surname)");
  assert_int_equal(cfg->mappings[0].entries[0].line, 10);
  assert_string_equal(cfg->mappings[0].entries[1].expr, "jobTitle");
  assert_int_equal(cfg->mappings[0].entries[1].line, 15);
  assert_string_equal(cfg->links[0].scope_filter,
                      "department eq 'Sales' or department eq 'R&D; Labs'");
  config_free(cfg);

  load_fails("[galbridge]\nstate_dirx = \\\n  /var/lib/x\n", 2,
             "unknown key 'state_dirx' in [galbridge]; did you mean "
             "'state_dir'?");
  load_fails("[galbridge]\nstate_dir = /var/\\\n\nlog_level = info\n", 3,
             "empty line where the value of line 2 goes on ('\\' at the end "
             "of the line before)");
  load_fails("[galbridge]\nstate_dir = /var/\\\n", 2,
             "the value goes on ('\\' at the end of the line) past the end "
             "of the file");
  load_fails("[galbridge]\nstate_dir = /var/\\\n  li\x01\n", 3,
             "control character 0x01 in line");
  /* an indented line without '\' before it is a key line, as before */
  load_fails("[galbridge]\nstate_dir = /var/lib\n  x\n", 3,
             "expected 'key = value', a [section] header or a comment");
}

static void
test_normalised_values(void **state)
{
  struct config *cfg;

  (void)state;
  cfg =
      load_ok(TENANT_A "login_url = HTTPS://LOGIN.EXAMPLE/\n"
                       "graph_url = https://[::1]\n"
                       "exchange_url = https://ex.example:443\n" TENANT_B
                       "[link l]\nsource = a\ntarget = b\n"
                       "object = mailuser\nanchor = EXTENSIONATTRIBUTE1\n"
                       "scope_group = ABCDEF01-2345-6789-ABCD-EF0123456789\n");
  assert_string_equal(cfg->tenants[0].login_url, "https://login.example");
  assert_string_equal(cfg->tenants[0].graph_url, "https://[::1]");
  assert_string_equal(cfg->tenants[0].exchange_url, "https://ex.example:443");
  assert_string_equal(cfg->links[0].anchor, "extensionAttribute1");
  assert_string_equal(cfg->links[0].scope_group,
                      "abcdef01-2345-6789-abcd-ef0123456789");
  config_free(cfg);
}

/* ---------------------------------------------------------------------
 * Every error, with its exact line and message.
 */

struct bad_case {
  const char *what;
  const char *text;
  int line;
  const char *message;
};

#define LINK_AB "[link l]\nsource = a\ntarget = b\nobject = guest\n"

static const struct bad_case bad_cases[] = {
    /* sections */
    {"unknown kind, close", "[tenent a]\n", 1,
     "unknown section kind 'tenent' (expected galbridge, tenant, link or "
     "mapping); did you mean 'tenant'?"},
    {"unknown kind", "\n[foo]\n", 2,
     "unknown section kind 'foo' (expected galbridge, tenant, link or "
     "mapping)"},
    {"duplicate tenant", TENANT_A "\n[tenant a]\n", 6,
     "duplicate section [tenant a] (first at line 1)"},
    {"duplicate galbridge", "[galbridge]\n[galbridge]\n", 2,
     "duplicate section [galbridge] (first at line 1)"},
    {"duplicate mapping", "[mapping m]\nmail = mail\n[mapping m]\n", 3,
     "duplicate section [mapping m] (first at line 1)"},
    {"galbridge named", "[galbridge main]\n", 1, "[galbridge] takes no name"},
    {"tenant unnamed", "[tenant]\n", 1,
     "[tenant] needs a name, as in [tenant NAME]"},
    {"bad name", "[link a/b]\n", 1,
     "bad link name 'a/b': use letters, digits, '.', '-' and '_', starting "
     "with a letter or digit"},
    {"name too long",
     "[link "
     "a1234567890123456789012345678901234567890123456789012345678901234]\n",
     1, "section name longer than 64 characters"},
    {"unclosed header", "[tenant a\n", 1,
     "section header lacks its closing ']'"},
    {"text after header", "[tenant a] x\n", 1,
     "unexpected text after ']' in section header"},
    {"empty header", "[ ]\n", 1, "empty section header"},
    /* lines */
    {"key before section", "interval = 5\n", 1,
     "'interval' comes before any [section] header"},
    {"no equals", "[galbridge]\ninterval 5\n", 2,
     "expected 'key = value', a [section] header or a comment"},
    {"colon separator", "[galbridge]\ninterval: 5\n", 2,
     "expected 'key = value', a [section] header or a comment"},
    {"no key", "[galbridge]\n = 5\n", 2, "missing key before '='"},
    {"control character", "[galbridge]\ninterval = 5\x01\n", 2,
     "control character 0x01 in line"},
    /* keys */
    {"unknown key, close", "[galbridge]\nintervall = 5\n", 2,
     "unknown key 'intervall' in [galbridge]; did you mean 'interval'?"},
    {"unknown key, case", TENANT_A "Tenant_ID = x\n", 5,
     "unknown key 'Tenant_ID' in [tenant a]; did you mean 'tenant_id'?"},
    {"unknown key", LINK_AB "frequency = 5\n", 5,
     "unknown key 'frequency' in [link l]"},
    {"duplicate key", "[galbridge]\ninterval = 5\n\ninterval = 6\n", 4,
     "duplicate key 'interval' in [galbridge] (first at line 2)"},
    {"empty value", "[galbridge]\nstate_dir =\n", 2,
     "empty value for 'state_dir' in [galbridge]"},
    {"empty value in mapping", "[mapping m]\nmail = \n", 2,
     "empty value for 'mail' in [mapping m]"},
    /* [galbridge] values */
    {"relative state_dir", "[galbridge]\nstate_dir = var/lib\n", 2,
     "state_dir 'var/lib' must be an absolute path"},
    {"relative metrics_file", "[galbridge]\nmetrics_file = m.prom\n", 2,
     "metrics_file 'm.prom' must be an absolute path"},
    {"unknown log_level", "[galbridge]\nlog_level = verbose\n", 2,
     "unknown log_level 'verbose' (expected error, warning, notice, info or "
     "debug)"},
    {"interval word", "[galbridge]\ninterval = ten\n", 2,
     "interval 'ten' is not a whole number"},
    {"interval unit", "[galbridge]\ninterval = 60s\n", 2,
     "interval '60s' is not a whole number"},
    {"interval sign", "[galbridge]\ninterval = +60\n", 2,
     "interval '+60' is not a whole number"},
    {"interval zero", "[galbridge]\ninterval = 0\n", 2,
     "interval 0 is out of range (1..86400)"},
    {"exchange not yes or no", TENANT_A "exchange = maybe\n", 5,
     "unknown exchange 'maybe' (expected no or yes)"},
    {"exchange_max_in_flight zero", TENANT_A "exchange_max_in_flight = 0\n", 5,
     "exchange_max_in_flight 0 is out of range (1..64)"},
    {"write limit without unit", TENANT_A "graph_write_limit = 3000/150\n", 5,
     "graph_write_limit '3000/150' is not COUNT/SECONDSs (for example "
     "3000/150s) or off"},
    {"write limit in minutes", TENANT_A "graph_write_limit = 3000/2.5m\n", 5,
     "graph_write_limit '3000/2.5m' is not COUNT/SECONDSs (for example "
     "3000/150s) or off"},
    {"write limit count one", TENANT_A "graph_write_limit = 1/10s\n", 5,
     "graph_write_limit: count 1 is out of range (2..10000000)"},
    {"invitation window zero", TENANT_A "invitation_limit = 150/0s\n", 5,
     "invitation_limit: window 0s is out of range (1..86400s)"},
    {"invitation limit sign", TENANT_A "invitation_limit = -150/5s\n", 5,
     "invitation_limit '-150/5s' is not COUNT/SECONDSs (for example "
     "3000/150s) or off"},
    {"interval high", "[galbridge]\ninterval = 86401\n", 2,
     "interval 86401 is out of range (1..86400)"},
    {"interval overflow", "[galbridge]\ninterval = 99999999999999999999\n", 2,
     "interval 99999999999999999999 is out of range (1..86400)"},
    /* [tenant] values */
    {"bad tenant_id", "[tenant a]\ntenant_id = contoso.com\n", 2,
     "tenant_id 'contoso.com' is not a GUID (8-4-4-4-12 hexadecimal "
     "digits)"},
    {"bad client_id", "[tenant a]\nclient_id = {" GUID_A "}\n", 2,
     "client_id '{" GUID_A "}' is not a GUID (8-4-4-4-12 hexadecimal "
     "digits)"},
    {"guid non-hex",
     "[tenant a]\ntenant_id = 1111111g-1111-1111-1111-"
     "111111111111\n",
     2,
     "tenant_id '1111111g-1111-1111-1111-111111111111' is not a GUID "
     "(8-4-4-4-12 hexadecimal digits)"},
    {"unknown cloud", TENANT_A "cloud = azure\n", 5,
     "unknown cloud 'azure' (expected global, usgovhigh, dod or china)"},
    {"http url", TENANT_A "graph_url = http://graph.example:8443\n", 5,
     "graph_url 'http://graph.example:8443' must use https: plain http would "
     "carry tokens in clear (it is taken only for 127.0.0.1, localhost and "
     "[::1])"},
    {"http url to a private address", TENANT_A "login_url = http://10.0.0.1\n",
     5,
     "login_url 'http://10.0.0.1' must use https: plain http would carry "
     "tokens in clear (it is taken only for 127.0.0.1, localhost and "
     "[::1])"},
    {"http url to a loopback look-alike",
     TENANT_A "login_url = http://localhost.evil.example\n", 5,
     "login_url 'http://localhost.evil.example' must use https: plain http "
     "would carry tokens in clear (it is taken only for 127.0.0.1, "
     "localhost and [::1])"},
    {"url with path",
     TENANT_A "graph_url = https://graph.microsoft.com/v1.0\n", 5,
     "graph_url 'https://graph.microsoft.com/v1.0' must be "
     "https://host[:port] with no path, query or fragment"},
    {"url with query", TENANT_A "login_url = https://login.example?x=1\n", 5,
     "login_url 'https://login.example?x=1' must be https://host[:port] with "
     "no path, query or fragment"},
    {"url scheme", TENANT_A "exchange_url = ftp://x.example\n", 5,
     "exchange_url 'ftp://x.example' is not https://host[:port]"},
    {"url no host", TENANT_A "login_url = https://\n", 5,
     "login_url 'https://' is not https://host[:port]"},
    {"url port zero", TENANT_A "login_url = https://h.example:0\n", 5,
     "login_url 'https://h.example:0' is not https://host[:port]"},
    {"url port high", TENANT_A "login_url = https://h.example:65536\n", 5,
     "login_url 'https://h.example:65536' is not https://host[:port]"},
    {"url userinfo", TENANT_A "login_url = https://u@h.example\n", 5,
     "login_url 'https://u@h.example' must be https://host[:port] with no "
     "path, query or fragment"},
    {"tenant without tenant_id",
     "[tenant a]\nclient_id = " GUID_A "\nclient_secret_file = ok.secret\n", 1,
     "[tenant a] needs tenant_id"},
    {"tenant without client_id",
     "\n[tenant a]\ntenant_id = " GUID_A "\nclient_secret_file = ok.secret\n",
     2, "[tenant a] needs client_id"},
    {"secret and certificate", TENANT_A "certificate_file = certkey.pem\n", 5,
     "[tenant a] sets both client_secret_file and certificate_file; keep "
     "one"},
    {"neither secret nor certificate",
     "[tenant a]\ntenant_id = " GUID_A "\nclient_id = " GUID_B "\n", 1,
     "[tenant a] needs client_secret_file or certificate_file"},
    {"key_file without certificate", TENANT_A "key_file = key.pem\n", 5,
     "key_file needs certificate_file (it holds that certificate's private "
     "key)"},
    {"secret mode 0644",
     "[tenant a]\ntenant_id = " GUID_A "\nclient_id = " GUID_B
     "\nclient_secret_file = loose.secret\n",
     4,
     "client_secret_file @DIR@/loose.secret is accessible by group or "
     "others (mode 0644); run chmod 600 on it"},
    {"secret mode 0640",
     "[tenant a]\ntenant_id = " GUID_A "\nclient_id = " GUID_B
     "\nclient_secret_file = @DIR@/group.secret\n",
     4,
     "client_secret_file @DIR@/group.secret is accessible by group or "
     "others (mode 0640); run chmod 600 on it"},
    {"secret missing",
     "[tenant a]\ntenant_id = " GUID_A "\nclient_id = " GUID_B
     "\nclient_secret_file = nope.secret\n",
     4, "client_secret_file @DIR@/nope.secret: No such file or directory"},
    {"secret absolute missing",
     "[tenant a]\ntenant_id = " GUID_A "\nclient_id = " GUID_B
     "\nclient_secret_file = /nonexistent/galbridge.secret\n",
     4,
     "client_secret_file /nonexistent/galbridge.secret: No such file or "
     "directory"},
    {"secret is a directory",
     "[tenant a]\ntenant_id = " GUID_A "\nclient_id = " GUID_B
     "\nclient_secret_file = adir\n",
     4, "client_secret_file @DIR@/adir is not a regular file"},
    {"certificate holding the key, loose",
     "[tenant a]\ntenant_id = " GUID_A "\nclient_id = " GUID_B
     "\ncertificate_file = loosecert.pem\n",
     4,
     "certificate_file @DIR@/loosecert.pem is accessible by group or "
     "others (mode 0644); run chmod 600 on it"},
    {"key_file loose",
     "[tenant a]\ntenant_id = " GUID_A "\nclient_id = " GUID_B
     "\ncertificate_file = cert.pem\nkey_file = loose.secret\n",
     5,
     "key_file @DIR@/loose.secret is accessible by group or others (mode "
     "0644); run chmod 600 on it"},
    {"certificate missing",
     "[tenant a]\ntenant_id = " GUID_A "\nclient_id = " GUID_B
     "\ncertificate_file = nope.pem\nkey_file = key.pem\n",
     4, "certificate_file @DIR@/nope.pem: No such file or directory"},
    {"ca_file missing", TENANT_A "ca_file = nope-ca.pem\n", 5,
     "ca_file @DIR@/nope-ca.pem: No such file or directory"},
    {"ca_file directory", TENANT_A "ca_file = @DIR@/adir\n", 5,
     "ca_file @DIR@/adir is not a regular file"},
    /* [mapping] */
    {"duplicate target",
     "[mapping m]\ndisplayName = a\nmail = b\n"
     "DisplayName = c\n",
     4,
     "duplicate target attribute 'DisplayName' in [mapping m] (first at "
     "line 2)"},
    {"bad target", "[mapping m]\ndisplay name = a\n", 2,
     "'display name' in [mapping m] is not an attribute name (letters, "
     "digits, '_' and '.')"},
    /* [link] */
    {"link without source", TENANTS "[link l]\ntarget = b\nobject = guest\n",
     9, "[link l] needs source"},
    {"link without target", TENANTS "[link l]\nsource = a\nobject = guest\n",
     9, "[link l] needs target"},
    {"link without object", TENANTS "[link l]\nsource = a\ntarget = b\n", 9,
     "[link l] needs object"},
    {"unknown source",
     TENANTS "[link l]\nsource = c\ntarget = b\n"
             "object = guest\n",
     10, "source 'c' names no [tenant c]"},
    {"unknown target",
     "[link l]\nsource = a\ntarget = x\nobject = guest\n" TENANTS, 3,
     "target 'x' names no [tenant x]"},
    {"source is target",
     TENANTS "[link l]\nsource = a\nobject = guest\n"
             "target = a\n",
     12, "source and target are both 'a'; a link joins two different tenants"},
    {"unknown object", TENANTS "[link l]\nobject = user\n", 10,
     "unknown object 'user' (expected guest, mailcontact, mailuser or "
     "groupcontact)"},
    {"scope_group on group contacts",
     TENANTS "[link l]\nsource = a\ntarget = b\nobject = groupcontact\n"
             "scope_group = " GUID_C "\n",
     13,
     "scope_group does not apply to links with object = groupcontact "
     "(their objects are groups, not people): scope them with "
     "scope_filter"},
    {"exclude_group on group contacts",
     TENANTS "[link l]\nsource = a\ntarget = b\nobject = groupcontact\n"
             "exclude_group = " GUID_C "\n",
     13,
     "exclude_group does not apply to links with object = groupcontact "
     "(their objects are groups, not people): scope them with "
     "scope_filter"},
    {"manager on group contacts",
     TENANTS "[link l]\nsource = a\ntarget = b\nobject = groupcontact\n"
             "manager = yes\n",
     13,
     "manager does not apply to links with object = groupcontact (their "
     "objects are groups, not people)"},
    {"photos on group contacts",
     TENANTS "[link l]\nsource = a\ntarget = b\nobject = groupcontact\n"
             "photos = yes\n",
     13,
     "photos applies only to links with object = guest or mailuser: "
     "contacts have no photo in Graph (this link has object = "
     "groupcontact)"},
    {"user_type on group contacts",
     TENANTS "[link l]\nsource = a\ntarget = b\nobject = groupcontact\n"
             "user_type = member\n",
     13,
     "user_type applies only to links with object = guest (this one has "
     "object = groupcontact)"},
    {"migration on group contacts",
     TENANTS "[link l]\nsource = a\ntarget = b\nobject = groupcontact\n"
             "migration = yes\n",
     13,
     "migration applies only to links with object = mailuser (this one has "
     "object = groupcontact)"},
    {"unknown user_type", TENANTS LINK_AB "user_type = admin\n", 13,
     "unknown user_type 'admin' (expected guest or member)"},
    {"user_type on contacts",
     TENANTS "[link l]\nsource = a\ntarget = b\nuser_type = member\n"
             "object = mailcontact\n",
     12,
     "user_type applies only to links with object = guest (this one has "
     "object = mailcontact)"},
    {"migration on guests", TENANTS LINK_AB "migration = yes\n", 13,
     "migration applies only to links with object = mailuser (this one has "
     "object = guest)"},
    {"migration_external on contacts",
     TENANTS "[link l]\nsource = a\ntarget = b\nobject = mailcontact\n"
             "migration_external = initial\n",
     13,
     "migration_external applies only to links with object = mailuser (this "
     "one has object = mailcontact)"},
    {"migration without source exchange",
     TENANTS "[link l]\nsource = a\ntarget = b\nobject = mailuser\n"
             "migration = yes\n",
     13,
     "migration = yes reads the source's mailboxes from Exchange Online: set "
     "exchange = yes in [tenant a] (and give the app the View-Only "
     "Recipients role there)"},
    {"unknown migration_external",
     TENANTS "[link l]\nsource = a\ntarget = b\nobject = mailuser\n"
             "migration_external = target\n",
     13, "unknown migration_external 'target' (expected primary or initial)"},
    {"scope_group empty item",
     TENANTS LINK_AB "scope_group = " GUID_A ",, " GUID_B "\n", 13,
     "scope_group: empty item in '" GUID_A ",, " GUID_B "' (GUIDs "
     "separated by commas or blanks)"},
    {"scope_group trailing comma",
     TENANTS LINK_AB "scope_group = " GUID_A ",\n", 13,
     "scope_group: empty item in '" GUID_A ",' (GUIDs separated by commas "
     "or blanks)"},
    {"scope_group second not a GUID",
     TENANTS LINK_AB "scope_group = " GUID_A " sales\n", 13,
     "scope_group 'sales' is not a GUID (8-4-4-4-12 hexadecimal digits)"},
    {"scope_group twice in the list",
     TENANTS LINK_AB "scope_group = " GUID_A ", " GUID_B " " GUID_A "\n", 13,
     "scope_group names " GUID_A " twice"},
    {"exclude_group not a GUID", TENANTS LINK_AB "exclude_group = x\n", 13,
     "exclude_group 'x' is not a GUID (8-4-4-4-12 hexadecimal digits)"},
    {"exclude_group also a scope_group",
     TENANTS LINK_AB "scope_group = " GUID_B ", " GUID_A "\n"
                     "exclude_group = " GUID_C " " GUID_A "\n",
     14,
     "exclude_group " GUID_A " is also a scope_group: it would take nobody "
     "of that group"},
    {"max_delete_share zero", TENANTS LINK_AB "max_delete_share = 0%\n", 13,
     "max_delete_share 0% is out of range (1%..100%)"},
    {"max_delete_share over", TENANTS LINK_AB "max_delete_share = 101\n", 13,
     "max_delete_share 101% is out of range (1%..100%)"},
    {"max_delete_share word", TENANTS LINK_AB "max_delete_share = ten\n", 13,
     "max_delete_share 'ten' is not a percentage (for example 10%)"},
    {"max_delete_share fraction", TENANTS LINK_AB "max_delete_share = 2.5%\n",
     13, "max_delete_share '2.5%' is not a percentage (for example 10%)"},
    {"max_creates negative", TENANTS LINK_AB "max_creates = -1\n", 13,
     "max_creates -1 is out of range (0..1000000)"},
    {"bad scope_group", TENANTS LINK_AB "scope_group = sales\n", 13,
     "scope_group 'sales' is not a GUID (8-4-4-4-12 hexadecimal digits)"},
    {"unknown mapping", TENANTS LINK_AB "mapping = m\n", 13,
     "mapping 'm' names no [mapping m]"},
    {"anchor 16", TENANTS LINK_AB "anchor = extensionAttribute16\n", 13,
     "anchor 'extensionAttribute16' must be one of extensionAttribute1 .. "
     "extensionAttribute15"},
    {"anchor 0", TENANTS LINK_AB "anchor = extensionAttribute0\n", 13,
     "anchor 'extensionAttribute0' must be one of extensionAttribute1 .. "
     "extensionAttribute15"},
    {"anchor 01", TENANTS LINK_AB "anchor = extensionAttribute01\n", 13,
     "anchor 'extensionAttribute01' must be one of extensionAttribute1 .. "
     "extensionAttribute15"},
    {"anchor other", TENANTS LINK_AB "anchor = CustomAttribute1\n", 13,
     "anchor 'CustomAttribute1' must be one of extensionAttribute1 .. "
     "extensionAttribute15"},
    {"unknown on_delete", TENANTS LINK_AB "on_delete = purge\n", 13,
     "unknown on_delete 'purge' (expected delete, disable, hide or keep)"},
    {"max_deletes negative", TENANTS LINK_AB "max_deletes = -1\n", 13,
     "max_deletes -1 is out of range (0..1000000)"},
    {"max_deletes high", TENANTS LINK_AB "max_deletes = 1000001\n", 13,
     "max_deletes 1000001 is out of range (0..1000000)"},
    {"max_deletes word", TENANTS LINK_AB "max_deletes = many\n", 13,
     "max_deletes 'many' is not a whole number"},
    {"link interval zero", TENANTS LINK_AB "interval = 0\n", 13,
     "interval 0 is out of range (1..86400)"},
    /* photos: bounds, and none on a mail contact link */
    {"photos word", TENANTS LINK_AB "photos = maybe\n", 13,
     "unknown photos 'maybe' (expected no or yes)"},
    {"photo_max_bytes over Graph's 4 MB",
     TENANTS LINK_AB "photo_max_bytes = 4194304\n", 13,
     "photo_max_bytes 4194304 is out of range (1024..4000000)"},
    {"photo_interval short", TENANTS LINK_AB "photo_interval = 59\n", 13,
     "photo_interval 59 is out of range (60..2592000)"},
    {"photos on a contact link",
     TENANTS "[link l]\nsource = a\ntarget = b\nobject = mailcontact\n"
             "photos = yes\n",
     13,
     "photos applies only to links with object = guest or mailuser: "
     "contacts have no photo in Graph (this link has object = "
     "mailcontact)"},
    {"photo_interval on a contact link",
     TENANTS "[link l]\nsource = a\ntarget = b\nobject = mailcontact\n"
             "photos = no\nphoto_interval = 600\n",
     13,
     "photos applies only to links with object = guest or mailuser: "
     "contacts have no photo in Graph (this link has object = "
     "mailcontact)"},
    /* The first error wins, in file order. */
    {"first error wins", "[tenant a]\ncloud = azure\n[foo]\n", 2,
     "unknown cloud 'azure' (expected global, usgovhigh, dod or china)"},
    {"sections checked in file order",
     "[link l]\nsource = x\ntarget = b\nobject = guest\n[tenant a]\n", 2,
     "source 'x' names no [tenant x]"},
};

/* Plain http is taken for loopback hosts only (local proxies, tests). */
static void
test_loopback_http(void **state)
{
  struct config *cfg;

  (void)state;
  cfg = load_ok(TENANT_A "login_url = http://127.0.0.1:8080\n"
                         "graph_url = http://LOCALHOST:8081/\n"
                         "exchange_url = http://[::1]:8082\n");
  assert_string_equal(cfg->tenants[0].login_url, "http://127.0.0.1:8080");
  assert_string_equal(cfg->tenants[0].graph_url, "http://localhost:8081");
  assert_string_equal(cfg->tenants[0].exchange_url, "http://[::1]:8082");
  config_free(cfg);
}

static void
test_bad_configs(void **state)
{
  (void)state;
  for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
    print_message("bad config: %s\n", bad_cases[i].what);
    load_fails(bad_cases[i].text, bad_cases[i].line, bad_cases[i].message);
  }
}

/* A NUL byte cannot sit in a C string literal of the table above. */
static void
test_nul_byte(void **state)
{
  static const char text[] = "[galbridge]\ninterval = 5\0\n";
  char err[1024], want[PATH_MAX + 64];
  struct config *cfg = NULL;
  char *path = malloc(PATH_MAX);
  FILE *fp;
  int fd;

  (void)state;
  assert_non_null(path);
  snprintf(path, PATH_MAX, "%s/nul.conf.XXXXXX", dir);
  fd = mkstemp(path);
  assert_true(fd >= 0);
  fp = fdopen(fd, "w");
  assert_non_null(fp);
  assert_int_equal(fwrite(text, 1, sizeof(text) - 1, fp), sizeof(text) - 1);
  assert_int_equal(fclose(fp), 0);
  assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
  snprintf(want, sizeof(want), "%s:2: control character 0x00 in line", path);
  assert_string_equal(err, want);
  assert_null(cfg);
  unlink(path);
  free(path);
}

/* ---------------------------------------------------------------------
 * Secret files and systemd credentials.
 */

static void
test_credentials_directory(void **state)
{
  char creds[PATH_MAX + 16], secret[PATH_MAX + 64], want[PATH_MAX + 64];
  struct config *cfg;

  (void)state;
  snprintf(creds, sizeof(creds), "%s/creds", dir);
  snprintf(secret, sizeof(secret), "%s/contoso.secret", creds);
  write_file(secret, "x\n", 0600);

  /* Set: relative credential paths resolve there; ca_file, which is no
   * credential, still resolves against the config file's directory. */
  assert_int_equal(setenv("CREDENTIALS_DIRECTORY", creds, 1), 0);
  cfg = load_ok("[tenant a]\ntenant_id = " GUID_A "\nclient_id = " GUID_B
                "\nclient_secret_file = contoso.secret\nca_file = ca.pem\n");
  assert_string_equal(cfg->tenants[0].client_secret_file, secret);
  snprintf(want, sizeof(want), "%s/ca.pem", dir);
  assert_string_equal(cfg->tenants[0].ca_file, want);
  config_free(cfg);

  /* A file next to the config is not found while the variable is set. */
  load_fails(TENANT_A, 4,
             "client_secret_file @DIR@/creds/ok.secret: No such file or "
             "directory (relative paths are looked up in "
             "$CREDENTIALS_DIRECTORY)");
  /* Absolute paths ignore it. */
  cfg = load_ok("[tenant a]\ntenant_id = " GUID_A "\nclient_id = " GUID_B
                "\nclient_secret_file = @DIR@/ok.secret\n");
  snprintf(want, sizeof(want), "%s/ok.secret", dir);
  assert_string_equal(cfg->tenants[0].client_secret_file, want);
  config_free(cfg);

  /* Mode checks apply there as well. */
  assert_int_equal(chmod(secret, 0604), 0);
  load_fails("[tenant a]\ntenant_id = " GUID_A "\nclient_id = " GUID_B
             "\nclient_secret_file = contoso.secret\n",
             4,
             "client_secret_file @DIR@/creds/contoso.secret is accessible by "
             "group or others (mode 0604); run chmod 600 on it");
  assert_int_equal(chmod(secret, 0600), 0);

  /* Empty counts as unset. */
  assert_int_equal(setenv("CREDENTIALS_DIRECTORY", "", 1), 0);
  cfg = load_ok(TENANT_A);
  snprintf(want, sizeof(want), "%s/ok.secret", dir);
  assert_string_equal(cfg->tenants[0].client_secret_file, want);
  config_free(cfg);

  /* Unset: relative to the config file's directory. */
  assert_int_equal(unsetenv("CREDENTIALS_DIRECTORY"), 0);
  load_fails("[tenant a]\ntenant_id = " GUID_A "\nclient_id = " GUID_B
             "\nclient_secret_file = contoso.secret\n",
             4,
             "client_secret_file @DIR@/contoso.secret: No such file or "
             "directory");
  unlink(secret);
}

/* ---------------------------------------------------------------------
 * config_load's own edges.
 */

static void
test_load_edges(void **state)
{
  char err[1024], want[PATH_MAX + 64], path[PATH_MAX + 32];
  char small[24];
  struct config *cfg = (struct config *)&cfg;
  char *conf;

  (void)state;
  snprintf(path, sizeof(path), "%s/missing.conf", dir);
  assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
  assert_null(cfg);
  snprintf(want, sizeof(want), "%s: No such file or directory", path);
  assert_string_equal(err, want);

  /* A directory is not a config file. */
  assert_int_equal(config_load(dir, &cfg, err, sizeof(err)), -1);
  snprintf(want, sizeof(want), "%s: Is a directory", dir);
  assert_string_equal(err, want);

  /* No error buffer, or a tiny one: still fails, never overflows. */
  conf = write_config("[foo]\n");
  assert_int_equal(config_load(conf, &cfg, NULL, 0), -1);
  assert_null(cfg);
  memset(small, 'Z', sizeof(small));
  assert_int_equal(config_load(conf, &cfg, small, 8), -1);
  assert_int_equal(strlen(small), 7);
  assert_int_equal(small[8], 'Z');
  assert_memory_equal(small, conf, 7);
  unlink(conf);
  free(conf);

  assert_int_equal(config_load(NULL, &cfg, err, sizeof(err)), -1);
  assert_null(cfg);
  assert_true(strlen(err) > 0);
  assert_int_equal(config_load(path, NULL, err, sizeof(err)), -1);

  /* Files over 1 MiB are refused before parsing. */
  {
    char *big = malloc(1024 * 1024 + 2);
    assert_non_null(big);
    memset(big, '#', 1024 * 1024 + 1);
    big[1024 * 1024 + 1] = '\0';
    conf = write_config(big);
    free(big);
    assert_int_equal(config_load(conf, &cfg, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: larger than 1048576 bytes", conf);
    assert_string_equal(err, want);
    unlink(conf);
    free(conf);
  }

  config_free(NULL);
  config_dump(NULL, stdout);
}

/* ---------------------------------------------------------------------
 * The dump.
 */

static const char full_dump[] =
    "\n[galbridge]\n"
    "state_dir = /var/lib/galbridge-test\n"
    "log_level = debug\n"
    "interval = 120\n"
    "metrics_file = /run/galbridge/metrics.prom\n"
    "# anchor_key_file is not set\n"
    "\n[tenant contoso]\n"
    "tenant_id = aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\n"
    "client_id = 0123abcd-0000-4000-8000-0000000000ff\n"
    "# client_secret_file names a secret; its contents are never shown\n"
    "client_secret_file = @DIR@/ok.secret\n"
    "# certificate_file is not set\n"
    "# key_file is not set\n"
    "cloud = usgovhigh\n"
    "login_url = https://login.example.test:8443\n"
    "graph_url = https://graph.example.test:8444\n"
    "exchange_url = https://[::1]:8445\n"
    "ca_file = @DIR@/ca.pem\n"
    "exchange = no\n"
    "exchange_max_in_flight = 4\n"
    "graph_write_limit = 3000/150s\n"
    "invitation_limit = 150/5s\n"
    "graph_resource_unit_limit = 3500/10s\n"
    "\n[tenant fabrikam]\n"
    "tenant_id = 22222222-2222-2222-2222-222222222222\n"
    "client_id = 33333333-3333-3333-3333-333333333333\n"
    "# client_secret_file is not set\n"
    "certificate_file = @DIR@/cert.pem\n"
    "# key_file names a secret; its contents are never shown\n"
    "key_file = @DIR@/key.pem\n"
    "cloud = china\n"
    "login_url = https://login.chinacloudapi.cn\n"
    "graph_url = https://microsoftgraph.chinacloudapi.cn\n"
    "exchange_url = https://partner.outlook.cn\n"
    "# ca_file is not set\n"
    "exchange = no\n"
    "exchange_max_in_flight = 4\n"
    "graph_write_limit = 3000/150s\n"
    "invitation_limit = 150/5s\n"
    "graph_resource_unit_limit = 3500/10s\n"
    "\n[mapping contoso-people]\n"
    "displayName = Append(displayName, \" (Contoso)\")\n"
    "department = Join(\"; \", department, companyName)\n"
    "\n[link contoso-to-fabrikam]\n"
    "source = contoso\n"
    "target = fabrikam\n"
    "object = guest\n"
    "user_type = member\n"
    "scope_group = ffffffff-0000-0000-0000-000000000001\n"
    "# exclude_group is not set\n"
    "scope_filter = department eq 'Sales' ; and a # too\n"
    "mapping = contoso-people\n"
    "anchor = extensionAttribute7\n"
    "on_delete = hide\n"
    "adopt = no\n"
    "manager = yes\n"
    "max_deletes = 0\n"
    "max_delete_share = 100%\n"
    "max_creates = 500\n"
    "interval = 300\n"
    "photos = no\n"
    "photo_max_bytes = 4000000\n"
    "photo_interval = 86400\n"
    "\n[link fabrikam-to-contoso]\n"
    "source = fabrikam\n"
    "target = contoso\n"
    "object = mailcontact\n"
    "# scope_group is not set\n"
    "# exclude_group is not set\n"
    "# scope_filter is not set\n"
    "# mapping is not set\n"
    "anchor = extensionAttribute15\n"
    "on_delete = keep\n"
    "adopt = no\n"
    "manager = yes\n"
    "max_deletes = 1000000\n"
    "max_delete_share = 100%\n"
    "max_creates = 500\n"
    "interval = 120\n";

/* scope_group and exclude_group: one GUID as before, or several by
 * commas and/or blanks, stored "g1,g2" lower-case and read back one by
 * one; max_delete_share with or without its '%'. */
static void
test_group_lists(void **state)
{
  struct config *cfg;
  const struct config_link *l;
  char g[CONFIG_GUID_LEN + 1];
  char *text = NULL;
  size_t len = 0;
  FILE *fp;

  (void)state;
  cfg = load_ok(TENANTS LINK_AB "scope_group = " GUID_A " ,\t" GUID_B
                                "  ABCDEF01-2345-6789-ABCD-EF0123456789\n"
                                "exclude_group = " GUID_C "\n"
                                "max_delete_share = 25\nmax_creates = 0\n");
  l = &cfg->links[0];
  assert_int_equal(config_guids_count(l->scope_group), 3);
  assert_string_equal(l->scope_group, GUID_A
                      "," GUID_B ",abcdef01-2345-6789-abcd-ef0123456789");
  assert_string_equal(config_guid_at(l->scope_group, 0, g), GUID_A);
  assert_string_equal(config_guid_at(l->scope_group, 1, g), GUID_B);
  assert_string_equal(config_guid_at(l->scope_group, 2, g),
                      "abcdef01-2345-6789-abcd-ef0123456789");
  assert_null(config_guid_at(l->scope_group, 3, g));
  assert_int_equal(config_guids_count(l->exclude_group), 1);
  assert_string_equal(config_guid_at(l->exclude_group, 0, g), GUID_C);
  assert_int_equal(l->max_delete_share, 25);
  assert_int_equal(l->max_creates, 0);
  assert_int_equal(config_guids_count(NULL), 0);
  assert_null(config_guid_at(NULL, 0, g));
  /* the dump shows the list as stored, and it loads back the same */
  fp = open_memstream(&text, &len);
  assert_non_null(fp);
  config_dump(cfg, fp);
  assert_int_equal(fclose(fp), 0);
  assert_non_null(strstr(text, "\nscope_group = " GUID_A "," GUID_B
                               ",abcdef01-2345-6789-abcd-ef0123456789\n"));
  assert_non_null(strstr(text, "\nmax_delete_share = 25%\n"));
  config_free(cfg);
  free(text);

  /* twenty groups are fine (on a line longer than libinih's), and their
   * dump loads back; twenty-one are too many */
  {
    char conf[4096];
    size_t n;
    snprintf(conf, sizeof(conf), "%s%s", TENANTS LINK_AB, "scope_group =");
    for (int i = 0; i < 20; i++) {
      n = strlen(conf);
      snprintf(conf + n, sizeof(conf) - n,
               " 0000%04d-0000-0000-0000-000000000000", i);
    }
    n = strlen(conf);
    snprintf(conf + n, sizeof(conf) - n, "\n");
    cfg = load_ok(conf);
    assert_int_equal(config_guids_count(cfg->links[0].scope_group), 20);
    assert_string_equal(config_guid_at(cfg->links[0].scope_group, 19, g),
                        "00000019-0000-0000-0000-000000000000");
    fp = open_memstream(&text, &len);
    assert_non_null(fp);
    config_dump(cfg, fp);
    assert_int_equal(fclose(fp), 0);
    config_free(cfg);
    cfg = load_ok(strstr(text, "[tenant a]"));
    assert_int_equal(config_guids_count(cfg->links[0].scope_group), 20);
    config_free(cfg);
    free(text);
    snprintf(conf + n, sizeof(conf) - n,
             ",00009999-0000-0000-0000-000000000000\n");
    load_fails(conf, 13,
               "scope_group: more than 20 groups (nest them in one group: "
               "members of nested groups count)");
  }
}

/* The Graph budget keys: documented defaults, a value, and off. */
static void
test_rate_limits(void **state)
{
  struct config *cfg = load_ok(TENANT_A "[tenant b]\n"
                                        "tenant_id = " GUID_B "\n"
                                        "client_id = " GUID_A "\n"
                                        "client_secret_file = ok.secret\n"
                                        "graph_write_limit = 300/15s\n"
                                        "invitation_limit = off\n"
                                        "graph_resource_unit_limit = "
                                        "8000/10s\n");
  const struct config_tenant *a = config_tenant_find(cfg, "a");
  const struct config_tenant *b = config_tenant_find(cfg, "b");

  (void)state;
  assert_int_equal(a->graph_write_limit.count, 3000);
  assert_int_equal(a->graph_write_limit.window, 150);
  assert_int_equal(a->invitation_limit.count, 150);
  assert_int_equal(a->invitation_limit.window, 5);
  assert_int_equal(b->graph_write_limit.count, 300);
  assert_int_equal(b->graph_write_limit.window, 15);
  assert_int_equal(b->invitation_limit.count, 0);
  assert_int_equal(b->invitation_limit.window, 0);
  assert_int_equal(a->graph_resource_unit_limit.count, 3500);
  assert_int_equal(a->graph_resource_unit_limit.window, 10);
  assert_int_equal(b->graph_resource_unit_limit.count, 8000);
  assert_int_equal(b->graph_resource_unit_limit.window, 10);
  config_free(cfg);
}

static void
test_dump(void **state)
{
  struct config *cfg = load_ok(full_config), *again;
  char *text = dump_string(cfg), *text2, *want = expand(full_dump);
  const char *body, *body2;
  char header[PATH_MAX + 128];

  (void)state;
  /* The header names the file; the rest is the effective config. */
  snprintf(header, sizeof(header),
           "# Effective configuration read from %s,\n"
           "# with defaults filled in and relative file names resolved.\n",
           cfg->path);
  assert_memory_equal(text, header, strlen(header));
  body = text + strlen(header);
  assert_string_equal(body, want);
  /* Nothing from inside a secret file, which say "not a real secret". */
  assert_null(strstr(text, "real secret"));

  /* The dump reads back as the same configuration. */
  again = load_ok(body);
  text2 = dump_string(again);
  body2 = strstr(text2, "\n[galbridge]");
  assert_non_null(body2);
  assert_string_equal(body2, want);

  free(text);
  free(text2);
  free(want);
  config_free(cfg);
  config_free(again);
}

static void
test_dump_certificate_with_key(void **state)
{
  struct config *cfg = load_ok(TENANT_B);
  char *text = dump_string(cfg);
  char *want = expand("# certificate_file names a secret; its contents are "
                      "never shown\ncertificate_file = @DIR@/certkey.pem\n");

  (void)state;
  /* Without key_file the certificate file holds the key: a secret. */
  assert_non_null(strstr(text, want));
  free(want);
  free(text);
  config_free(cfg);
}

/* ---------------------------------------------------------------------
 * The shipped example loads, given the secret files it names.
 */

static void
test_example(void **state)
{
  char creds[PATH_MAX + 16], p[PATH_MAX + 64], err[1024];
  static const char *const secrets[] = {"contoso.secret", "fabrikam.crt",
                                        "fabrikam.key", "anchor.key"};
  struct config *cfg = NULL;

  (void)state;
  if (access(EXAMPLE_PATH, R_OK) != 0)
    fail_msg("%s not found (run from tests/unit)", EXAMPLE_PATH);
  snprintf(creds, sizeof(creds), "%s/creds", dir);
  for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
    snprintf(p, sizeof(p), "%s/%s", creds, secrets[i]);
    write_file(p, "x\n", 0600);
  }
  assert_int_equal(setenv("CREDENTIALS_DIRECTORY", creds, 1), 0);
  if (config_load(EXAMPLE_PATH, &cfg, err, sizeof(err)) != 0)
    fail_msg("example: %s", err);
  assert_int_equal(cfg->n_tenants, 2);
  assert_int_equal(cfg->n_links, 2);
  assert_int_equal(cfg->n_mappings, 1);
  assert_non_null(cfg->tenants[0].client_secret_file);
  assert_non_null(cfg->tenants[1].certificate_file);
  assert_non_null(cfg->tenants[1].key_file);
  assert_non_null(cfg->anchor_key_file);
  /* Two links in opposite directions. */
  assert_ptr_equal(cfg->links[0].source, cfg->links[1].target);
  assert_ptr_equal(cfg->links[0].target, cfg->links[1].source);
  config_free(cfg);
  assert_int_equal(unsetenv("CREDENTIALS_DIRECTORY"), 0);
  for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
    snprintf(p, sizeof(p), "%s/%s", creds, secrets[i]);
    unlink(p);
  }
}

/* config_load_buffer (the fuzz target's entry): the same config as from
 * the file, relative paths resolved against the given directory, errors
 * named after the given path. */
static void
test_load_buffer(void **state)
{
  char *text = expand(full_config);
  char *path = write_config(full_config);
  struct config *from_file = NULL, *from_buf = NULL;
  char err[1024], *d1, *d2;

  (void)state;
  assert_int_equal(config_load(path, &from_file, err, sizeof(err)), 0);
  assert_int_equal(config_load_buffer(path, dir, text, strlen(text), &from_buf,
                                      err, sizeof(err)),
                   0);
  d1 = dump_string(from_file);
  d2 = dump_string(from_buf);
  assert_string_equal(d1, d2);
  free(d1);
  free(d2);
  config_free(from_file);
  config_free(from_buf);

  from_buf = (struct config *)&from_buf;
  assert_int_equal(config_load_buffer("mem.conf", dir, "[galbridge]\nx = 1\n",
                                      18, &from_buf, err, sizeof(err)),
                   -1);
  assert_null(from_buf);
  assert_string_equal(err, "mem.conf:2: unknown key 'x' in [galbridge]");
  from_buf = (struct config *)&from_buf;
  assert_int_equal(
      config_load_buffer("mem.conf", NULL, "", 0, &from_buf, err, sizeof(err)),
      -1);
  assert_null(from_buf);
  assert_string_equal(err, "mem.conf: config_load_buffer: no directory");
  unlink(path);
  free(path);
  free(text);
}

/* ---------------------------------------------------------------------
 * What the commands that sync check beyond loading: a link at all, and
 * links that may take the same person.
 */

/* migration = yes on a mail user link whose source has Exchange: on, with
 * the primary address as the default; off everywhere else. */
static void
test_migration_keys(void **state)
{
  static const char text[] =
      "[tenant a]\ntenant_id = " GUID_A "\nclient_id = " GUID_B "\n"
      "client_secret_file = ok.secret\nexchange = yes\n" TENANT_B
      "[link mu]\nsource = a\ntarget = b\nobject = mailuser\n"
      "migration = yes\n"
      "[link mu2]\nsource = a\ntarget = b\nobject = mailuser\n"
      "anchor = extensionAttribute14\nmigration = yes\n"
      "migration_external = initial\n"
      "[link g]\nsource = b\ntarget = a\nobject = guest\n";
  struct config *cfg;

  (void)state;
  cfg = load_ok(text);
  assert_true(config_link_find(cfg, "mu")->migration);
  assert_int_equal(config_link_find(cfg, "mu")->migration_external,
                   CONFIG_MIGRATION_EXTERNAL_PRIMARY);
  assert_true(config_link_find(cfg, "mu2")->migration);
  assert_int_equal(config_link_find(cfg, "mu2")->migration_external,
                   CONFIG_MIGRATION_EXTERNAL_INITIAL);
  assert_false(config_link_find(cfg, "g")->migration);
  config_free(cfg);
}

/* photos = yes on guest and mail user links: its defaults and values. */
static void
test_photo_keys(void **state)
{
  static const char text[] =
      TENANTS "[link g]\nsource = a\ntarget = b\nobject = guest\n"
              "[link mu]\nsource = a\ntarget = b\nobject = mailuser\n"
              "anchor = extensionAttribute14\nphotos = yes\n"
              "photo_max_bytes = 1024\nphoto_interval = 3600\n"
              "[link mc]\nsource = a\ntarget = b\nobject = mailcontact\n"
              "anchor = extensionAttribute13\n";
  struct config *cfg;
  char *dump = NULL;
  size_t len = 0;
  FILE *fp;

  (void)state;
  cfg = load_ok(text);
  assert_false(config_link_find(cfg, "g")->photos);
  assert_int_equal(config_link_find(cfg, "g")->photo_max_bytes, 4000000);
  assert_int_equal(config_link_find(cfg, "g")->photo_interval, 86400);
  assert_true(config_link_find(cfg, "mu")->photos);
  assert_int_equal(config_link_find(cfg, "mu")->photo_max_bytes, 1024);
  assert_int_equal(config_link_find(cfg, "mu")->photo_interval, 3600);
  assert_false(config_link_find(cfg, "mc")->photos);
  fp = open_memstream(&dump, &len);
  assert_non_null(fp);
  config_dump(cfg, fp);
  assert_int_equal(fclose(fp), 0);
  /* A contact link's dump shows none of them. */
  assert_null(strstr(strstr(dump, "[link mc]"), "photo"));
  assert_non_null(strstr(dump, "photos = yes\nphoto_max_bytes = 1024\n"));
  free(dump);
  config_free(cfg);
}

static void
test_link_checks(void **state)
{
  /* Sections at lines 1 (g1), 5 (g2), 10 (mu), 15 (mc), 19 (back) and 23
   * (mc2, through another app in tenant a: the same source). */
  static const char text[] =
      "[link g1]\nsource = a\ntarget = b\nobject = guest\n"
      "[link g2]\nsource = a\ntarget = b\nobject = guest\n"
      "anchor = extensionAttribute14\n"
      "[link mu]\nsource = a\ntarget = b\nobject = mailuser\n"
      "anchor = extensionAttribute13\n"
      "[link mc]\nsource = a\ntarget = b\nobject = mailcontact\n"
      "[link back]\nsource = b\ntarget = a\nobject = guest\n"
      "[link mc2]\nsource = a2\ntarget = b\nobject = mailcontact\n"
      "anchor = extensionAttribute12\n" TENANTS
      "[tenant a2]\ntenant_id = " GUID_A "\nclient_id = " GUID_C "\n"
      "client_secret_file = ok.secret\n";
  static const struct {
    const char *a, *b;
    int overlap;
  } pairs[] = {
      {"g1", "g2", 1},   /* same kind, same tenants */
      {"mu", "g1", 1},   /* a mail user and a guest link */
      {"g2", "mu", 1},   /* a guest and a mail user link */
      {"mc", "mc2", 1},  /* tenants compared by id, not by section name */
      {"g1", "mc", 0},   /* other kinds */
      {"mu", "mc", 0},   /* a mail user and a mail contact link */
      {"g1", "back", 0}, /* the opposite direction */
      {"g1", "g1", 0},   /* itself */
  };
  struct config *cfg;
  char err[1024], want[4096], *out = NULL;
  size_t len = 0;
  FILE *fp;

  (void)state;
  cfg = load_ok("");
  assert_int_equal(config_require_links(cfg, err, sizeof(err)), -1);
  snprintf(want, sizeof(want), "%s: no [link] sections: nothing to sync",
           cfg->path);
  assert_string_equal(err, want);
  assert_int_equal(config_require_links(cfg, NULL, 0), -1);
  assert_int_equal(config_warn_overlaps(cfg, NULL), 0);
  config_free(cfg);
  cfg = load_ok(TENANTS);
  assert_int_equal(config_require_links(cfg, err, sizeof(err)), -1);
  config_free(cfg);
  assert_int_equal(config_require_links(NULL, err, sizeof(err)), -1);

  cfg = load_ok(text);
  assert_int_equal(config_require_links(cfg, err, sizeof(err)), 0);
  for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
    assert_int_equal(config_links_overlap(config_link_find(cfg, pairs[i].a),
                                          config_link_find(cfg, pairs[i].b)),
                     pairs[i].overlap);
  assert_false(config_links_overlap(NULL, config_link_find(cfg, "g1")));

  assert_int_equal(config_warn_overlaps(cfg, NULL), 4);
  fp = open_memstream(&out, &len);
  assert_non_null(fp);
  assert_int_equal(config_warn_overlaps(cfg, fp), 4);
  assert_int_equal(fclose(fp), 0);
#define CONFLICT                                                              \
  "; a person in scope of both is a conflict for both links and nothing is "  \
  "written for them (keep the scopes apart with scope_group or "              \
  "scope_filter)\n"
#define USERS                                                                 \
  "both make users in tenant 'b' for people of tenant 'a' (guests and mail "  \
  "users are both Graph users there, and a mail user's CustomAttributeN "     \
  "is the user's extensionAttributeN, where both keep their anchor)"
  snprintf(want, sizeof(want),
           "%1$s:5: warning: links 'g1' (line 1) and 'g2' (line 5) both make "
           "guest objects in tenant 'b' for people of tenant 'a'" CONFLICT
           "%1$s:10: warning: links 'g1' (line 1) and 'mu' (line 10) " USERS
               CONFLICT
           "%1$s:10: warning: links 'g2' (line 5) and 'mu' (line 10) " USERS
               CONFLICT
           "%1$s:23: warning: links 'mc' (line 15) and 'mc2' (line 23) both "
           "make mailcontact objects in tenant 'b' for people of tenant "
           "'a'" CONFLICT,
           cfg->path);
#undef CONFLICT
#undef USERS
  assert_string_equal(out, want);
  free(out);
  config_free(cfg);
}

/* ---------------------------------------------------------------------
 * planner_check_config: each link's mapping and scope filter compile, with the
 * messages the scheduler gave when it made this check.
 */

static void
test_config_check(void **state)
{
  /* The link's header is line 9 (after TENANTS), its mapping line 14. */
  static const struct {
    const char *link, *mapping;
    int line;
    const char *message;
  } cases[] = {
      {"mapping = m\n", "[mapping m]\ndisplayName = Left(surname)\n", 15,
       "column 1: Left() takes 2 arguments, got 1"},
      {"mapping = m\n", "[mapping m]\nextensionAttribute15 = mail\n", 9,
       "link 'l' maps extensionAttribute15, which it uses as its anchor"},
      {"scope_filter = department eq\n", "", 9,
       "link 'l': scope_filter: column 14: unexpected end of filter, "
       "expected a value"},
      {"mapping = m\n", "[mapping m]\njobTitle = favouriteColour\n", 9,
       "link 'l' reads source attribute 'favouriteColour', which galbridge "
       "does not read from a tenant (it reads: "},
  };
  char text[1024], err[2048], want[1024];
  struct config *cfg;

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    snprintf(text, sizeof(text), "%s%s%s%s", TENANTS, LINK_AB, cases[i].link,
             cases[i].mapping);
    cfg = load_ok(text);
    assert_int_equal(planner_check_config(cfg, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:%d: %s", cfg->path, cases[i].line,
             cases[i].message);
    if (strncmp(err, want, strlen(want)) != 0)
      fail_msg("case %zu: got \"%s\", want \"%s...\"", i, err, want);
    config_free(cfg);
  }
  cfg = load_ok(TENANTS LINK_AB "mapping = m\nscope_filter = mail ne ''\n"
                                "[mapping m]\njobTitle = department\n");
  assert_int_equal(planner_check_config(cfg, err, sizeof(err)), 0);
  config_free(cfg);
}

/* ---------------------------------------------------------------------
 * config_reload_check: the key tables decide what a reload may change.
 */

/* The running config of the reload cases: [galbridge] at line 1, tenants
 * a (line 3 with one [galbridge] key) and b (7), link l (11), through
 * RELOAD_BASE(...) with a changed line where a case needs one. */
#define RELOAD_BASE(GALBRIDGE, TENANT_A_ID, LINK_KEYS)                        \
  "[galbridge]\n" GALBRIDGE "[tenant a]\n"                                    \
  "tenant_id = " TENANT_A_ID "\n"                                             \
  "client_id = " GUID_B "\n"                                                  \
  "client_secret_file = ok.secret\n" TENANT_B "[link l]\n" LINK_KEYS
#define RELOAD_STATE "state_dir = /var/lib/galbridge-one\n"
#define RELOAD_GLOBAL "[galbridge]\n" RELOAD_STATE
#define RELOAD_LINK "source = a\ntarget = b\nobject = guest\n"
#define RELOAD_ALL RELOAD_BASE(RELOAD_STATE, GUID_A, RELOAD_LINK)

static void
test_reload_check(void **state)
{
  /* For each: the new config, the line (0: none) and message of the
   * refusal, or NULL for a reload that may go ahead. */
  static const struct {
    const char *text;
    int line;
    const char *message;
  } cases[] = {
      /* Every key that needs a restart. */
      {RELOAD_BASE("state_dir = /var/lib/galbridge-two\n", GUID_A,
                   RELOAD_LINK),
       0,
       "state_dir cannot change without a restart (/var/lib/galbridge-one "
       "-> /var/lib/galbridge-two)"},
      {RELOAD_BASE("", GUID_A, RELOAD_LINK), 0,
       "state_dir cannot change without a restart (/var/lib/galbridge-one "
       "-> /var/lib/galbridge)"},
      {RELOAD_BASE(RELOAD_STATE, GUID_C, RELOAD_LINK), 3,
       "tenant 'a': tenant_id cannot change on reload (restart galbridge)"},
      {RELOAD_BASE(RELOAD_STATE, GUID_A,
                   "source = b\ntarget = a\nobject = guest\n"),
       11,
       "link 'l': source cannot change on reload (make a new link, or "
       "restart galbridge)"},
      {RELOAD_BASE(RELOAD_STATE, GUID_A,
                   "source = a\ntarget = c\nobject = guest\n"
                   "[tenant c]\ntenant_id = " GUID_C "\nclient_id = " GUID_A
                   "\nclient_secret_file = ok.secret\n"),
       11,
       "link 'l': target cannot change on reload (make a new link, or "
       "restart galbridge)"},
      {RELOAD_BASE(RELOAD_STATE, GUID_A,
                   "source = a\ntarget = b\nobject = mailuser\n"),
       11,
       "link 'l': object cannot change on reload (make a new link, or "
       "restart galbridge)"},
      {RELOAD_BASE(RELOAD_STATE, GUID_A,
                   RELOAD_LINK "anchor = extensionAttribute3\n"),
       11,
       "link 'l': anchor cannot change on reload (make a new link, or "
       "restart galbridge)"},
      /* Tenants before links, links before [galbridge]. */
      {RELOAD_BASE("state_dir = /srv\n", GUID_C,
                   "source = b\ntarget = a\nobject = guest\n"),
       3, "tenant 'a': tenant_id cannot change on reload (restart galbridge)"},
      {RELOAD_BASE("state_dir = /srv\n", GUID_A,
                   "source = b\ntarget = a\nobject = guest\n"),
       11,
       "link 'l': source cannot change on reload (make a new link, or "
       "restart galbridge)"},
      /* Reloadable keys, and sections that come and go. */
      {RELOAD_ALL, 0, NULL},
      {RELOAD_BASE(RELOAD_STATE "log_level = debug\ninterval = 5\n"
                                "metrics_file = /run/m.prom\n"
                                "anchor_key_file = ok.secret\n",
                   GUID_A,
                   RELOAD_LINK "user_type = member\nscope_group = " GUID_C
                               "\nscope_filter = mail ne ''\nmapping = m\n"
                               "anchor = extensionAttribute15\n"
                               "on_delete = keep\nadopt = mail\n"
                               "max_deletes = 3\ninterval = 7\n"
                               "[mapping m]\njobTitle = department\n"),
       0, NULL},
      {RELOAD_GLOBAL TENANT_B "[tenant a]\ntenant_id = " GUID_A
                              "\nclient_id = " GUID_C
                              "\ncertificate_file = certkey.pem\n"
                              "cloud = china\nca_file = ca.pem\n"
                              "exchange = yes\nexchange_max_in_flight = 9\n"
                              "graph_write_limit = off\n"
                              "invitation_limit = 10/1s\n"
                              "graph_resource_unit_limit = 9/9s\n"
                              "[link l]\n" RELOAD_LINK,
       0, NULL},
      /* The source renamed, the same tenant: the same identity. */
      {RELOAD_BASE(RELOAD_STATE, GUID_A,
                   "source = a2\ntarget = b\nobject = guest\n"
                   "[tenant a2]\ntenant_id = " GUID_A "\nclient_id = " GUID_C
                   "\nclient_secret_file = ok.secret\n"),
       0, NULL},
      {RELOAD_GLOBAL TENANTS "[link other]\n" RELOAD_LINK
                             "anchor = extensionAttribute3\n",
       0, NULL},
      {RELOAD_GLOBAL "[tenant c]\ntenant_id = " GUID_C "\nclient_id = " GUID_A
                     "\nclient_secret_file = ok.secret\n",
       0, NULL},
  };
  struct config *old = load_ok(RELOAD_ALL), *next;
  char err[1024], want[2048];

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    next = load_ok(cases[i].text);
    snprintf(err, sizeof(err), "untouched");
    if (cases[i].message == NULL) {
      if (config_reload_check(old, next, err, sizeof(err)) != 0)
        fail_msg("case %zu refused: %s", i, err);
      assert_string_equal(err, "untouched");
    } else {
      if (cases[i].line > 0)
        snprintf(want, sizeof(want), "%s:%d: %s", next->path, cases[i].line,
                 cases[i].message);
      else
        snprintf(want, sizeof(want), "%s: %s", next->path, cases[i].message);
      assert_int_equal(config_reload_check(old, next, err, sizeof(err)), -1);
      assert_string_equal(err, want);
      /* A NULL or short err is cut, never overrun. */
      assert_int_equal(config_reload_check(old, next, NULL, 0), -1);
      assert_int_equal(config_reload_check(old, next, err, 5), -1);
      assert_int_equal(strlen(err), 4);
    }
    config_free(next);
  }
  assert_int_equal(config_reload_check(old, NULL, err, sizeof(err)), -1);
  assert_int_equal(config_reload_check(NULL, old, NULL, 0), -1);
  config_free(old);
}

/* A copy of text (to free) without its "# a reload cannot change" lines. */
static char *
without_marks(const char *text)
{
  static const char mark[] = "# a reload cannot change ";
  char *out = malloc(strlen(text) + 1), *o = out;

  assert_non_null(out);
  while (*text != '\0') {
    const char *eol = strchr(text, '\n');
    size_t n = eol != NULL ? (size_t)(eol - text) + 1 : strlen(text);
    if (strncmp(text, mark, sizeof(mark) - 1) != 0) {
      memcpy(o, text, n);
      o += n;
    }
    text += n;
  }
  *o = '\0';
  return out;
}

/* check-config's dump marks the keys a reload cannot change, one comment
 * line after each section's header, and still loads back. */
static void
test_dump_marked(void **state)
{
  struct config *cfg = load_ok(full_config), *again;
  char *plain = dump_string(cfg), *marked = NULL, *text2 = NULL, *stripped;
  char *want = expand(full_dump);
  size_t len = 0, len2 = 0;
  const char *body;
  FILE *fp;
  static const char *const marks[] = {
      "\n[galbridge]\n# a reload cannot change state_dir (restart "
      "galbridge)\nstate_dir = ",
      "\n[tenant contoso]\n# a reload cannot change tenant_id (restart "
      "galbridge)\ntenant_id = ",
      "\n[tenant fabrikam]\n# a reload cannot change tenant_id (restart "
      "galbridge)\ntenant_id = ",
      "\n[mapping contoso-people]\ndisplayName = ",
      "\n[link contoso-to-fabrikam]\n# a reload cannot change source, "
      "target, object, anchor (make a new link, or restart galbridge)\n"
      "source = ",
      "\n[link fabrikam-to-contoso]\n# a reload cannot change source, "
      "target, object, anchor (make a new link, or restart galbridge)\n"
      "source = ",
  };

  (void)state;
  fp = open_memstream(&marked, &len);
  assert_non_null(fp);
  config_dump_marked(cfg, fp);
  config_dump_marked(NULL, fp);
  config_dump_marked(cfg, NULL);
  assert_int_equal(fclose(fp), 0);
  for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++)
    if (strstr(marked, marks[i]) == NULL)
      fail_msg("no \"%s\" in:\n%s", marks[i], marked);
  /* Only those lines differ from the plain dump. */
  stripped = without_marks(marked);
  assert_string_equal(stripped, plain);

  /* It loads back as the same configuration. */
  body = strstr(marked, "\n[galbridge]");
  assert_non_null(body);
  again = load_ok(body);
  fp = open_memstream(&text2, &len2);
  assert_non_null(fp);
  config_dump(again, fp);
  assert_int_equal(fclose(fp), 0);
  assert_non_null(strstr(text2, want));

  free(plain);
  free(marked);
  free(stripped);
  free(text2);
  free(want);
  config_free(cfg);
  config_free(again);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_config),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_group_lists),
      cmocka_unit_test(test_cloud_hosts),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_lexing),
      cmocka_unit_test(test_long_lines),
      cmocka_unit_test(test_long_values),
      cmocka_unit_test(test_continued_lines),
      cmocka_unit_test(test_normalised_values),
      cmocka_unit_test(test_loopback_http),
      cmocka_unit_test(test_bad_configs),
      cmocka_unit_test(test_nul_byte),
      cmocka_unit_test(test_credentials_directory),
      cmocka_unit_test(test_load_edges),
      cmocka_unit_test(test_rate_limits),
      cmocka_unit_test(test_dump),
      cmocka_unit_test(test_dump_certificate_with_key),
      cmocka_unit_test(test_example),
      cmocka_unit_test(test_load_buffer),
      cmocka_unit_test(test_link_checks),
      cmocka_unit_test(test_migration_keys),
      cmocka_unit_test(test_photo_keys),
      cmocka_unit_test(test_config_check),
      cmocka_unit_test(test_reload_check),
      cmocka_unit_test(test_dump_marked),
      cmocka_unit_test(test_groupcontact),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
