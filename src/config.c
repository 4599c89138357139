/*
 * config — see include/config.h.
 *
 * Each section kind has one table of keys (name, type, default, bounds,
 * flags such as "SIGHUP may change it"); parsing, defaults, validation,
 * config_dump() and config_reload_check() are all driven by those tables,
 * Redis-style, so adding a key is one line in a table plus a field in
 * config.h.
 *
 * Loading is three passes, each stopping at the first error so that the
 * message always names the line at fault:
 *   1. lexing: libinih splits `key = value` lines; our reader feeds it one
 *      line at a time, tracks line numbers and section headers itself;
 *   2. per key, as libinih hands it over: unknown / duplicate / empty key,
 *      then the type's check (GUID, enum, integer bounds, URL, anchor);
 *   3. per section, in file order, once the whole file is read: required
 *      keys, defaults, cross-references (links may name tenants defined
 *      further down) and the file checks (secret files must exist and be
 *      closed to group and others, as ssh demands of a private key).
 * planner_check_config() is a fourth, asked for by the caller on a loaded
 * config: each link's mapping and scope filter must compile, as the
 * scheduler will compile them. It lives in the planner because mapping
 * and scope are built on this module's structs (calling them from here
 * would make a cycle); config_load() holds expressions as text, so that
 * the file's syntax is checked (and tested, and fuzzed) apart from the
 * expression languages.
 *
 * libinih, as Debian 12 builds it (libinih 55), does not honour our file
 * contract by itself, so the reader (read_line) hands it pre-digested
 * lines. What the library does, and what we do about it:
 *   - inline comments: a ';' after whitespace ends the value (`x ; y`
 *     becomes `x`). The contract says only a line *starting* with ';' or
 *     '#' is a comment, and mapping constants or filters may hold "; ".
 *     The reader swaps ';' and '#' inside key lines for two control bytes
 *     (which the file itself may not contain) and the handler swaps them
 *     back, whichever INI_INLINE_COMMENT_PREFIXES the library was built
 *     with.
 *   - multi-line values: an indented line continues the previous value.
 *     The reader strips leading blanks, so indentation is just layout;
 *     our own continuation is a '\' at the end of a line (long_line()).
 *   - line length: lines longer than the library's buffer (INI_MAX_LINE,
 *     200 bytes in Debian's build) are cut and the tail is parsed as a new
 *     line. The reader knows the buffer size (libinih passes it), so a
 *     longer key line, and a continued one, never reaches libinih: the
 *     reader splits it into key and value as libinih would and calls the
 *     handler itself, giving libinih an empty line. Our limit is
 *     CONFIG_LINE_MAX bytes (a 10,000-character mapping expression, a
 *     long scope filter). Comment lines and section headers never reach
 *     libinih, so they have no limit.
 *   - line numbers: the header defaults INI_HANDLER_LINENO to 0, although
 *     Debian's library passes the number anyway; relying on that mismatch
 *     would be undefined behaviour, so the reader counts lines and the
 *     handler, called synchronously for the line just read, uses its count.
 *   - sections: the handler never hears of a section with no keys, a
 *     repeated section header is silently merged, and names are cut to 49
 *     bytes. The reader parses headers itself and gives libinih an empty
 *     line instead, so duplicates, empty sections and header line numbers
 *     are all ours.
 *   - errors: INI_STOP_ON_FIRST_ERROR is 0; the reader returns EOF after
 *     the first error, so parsing stops there whatever the build says.
 * Debian's build also exports these settings as run-time globals
 * (ini_allow_inline_comments, ini_max_line, ...); they are not upstream
 * API and are process-wide, so this file leaves them alone.
 *
 * Secrets: only stat(2) and access(2) touch secret files here; their
 * contents are never read, so no secret can reach an error message.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#include "text.h"

#define STR_(x) #x
#define STR(x) STR_(x)

#define CONFIG_FILE_MAX (1024 * 1024) /* bytes; a config is a few KiB */
/* Bytes of one key line, continued lines joined: room for a mapping
 * expression of 10,000 characters (4 bytes each at most) or a long
 * scope_filter. */
#define CONFIG_LINE_MAX 65536
#define KEYS_MAX 32 /* keys per section table */
#define SECTION_NAME_MAX 64
#define KIND_MAX 32
#define INTERVAL_MAX 86400
#define PHOTO_INTERVAL_MAX (30 * 86400)
#define MAX_DELETES_MAX 1000000
#define MAX_CREATES_MAX 1000000

/* What ';' and '#' become between read_line() and on_key(). */
#define ESC_SEMICOLON '\x1e'
#define ESC_HASH '\x1f'

_Static_assert(sizeof(enum config_cloud) == sizeof(int), "enum size");
_Static_assert(sizeof(enum config_object) == sizeof(int), "enum size");
_Static_assert(sizeof(enum config_on_delete) == sizeof(int), "enum size");
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum size");

/* ---------------------------------------------------------------------
 * Allocation: out of memory while reading a config is not recoverable in
 * any useful way, so these abort (STYLE.md allows it for x-allocators).
 */

static void *
xmalloc(size_t n)
{
  void *p = malloc(n ? n : 1);
  if (p == NULL)
    abort();
  return p;
}

static void *
xrealloc(void *p, size_t n)
{
  void *q = realloc(p, n ? n : 1);
  if (q == NULL)
    abort();
  return q;
}

static char *
xstrndup(const char *s, size_t n)
{
  char *p = xmalloc(n + 1);
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

static char *
xstrdup(const char *s)
{
  return xstrndup(s, strlen(s));
}

/* Grow *arr (of *cap elements of `size` bytes) to hold one more. */
static void
grow(void **arr, size_t *cap, size_t n, size_t size)
{
  if (n < *cap)
    return;
  *cap = *cap ? *cap * 2 : 4;
  *arr = xrealloc(*arr, *cap * size);
}

/* ---------------------------------------------------------------------
 * The tables.
 */

struct enum_value {
  const char *name;
  int value;
};

static const struct enum_value log_levels[] = {
    {"error", LOG_LEVEL_ERROR},   {"warning", LOG_LEVEL_WARNING},
    {"notice", LOG_LEVEL_NOTICE}, {"info", LOG_LEVEL_INFO},
    {"debug", LOG_LEVEL_DEBUG},   {NULL, 0},
};

static const struct enum_value clouds[] = {
    {"global", CONFIG_CLOUD_GLOBAL},
    {"usgovhigh", CONFIG_CLOUD_USGOVHIGH},
    {"dod", CONFIG_CLOUD_DOD},
    {"china", CONFIG_CLOUD_CHINA},
    {NULL, 0},
};

static const struct enum_value objects[] = {
    {"guest", CONFIG_OBJECT_GUEST},
    {"mailcontact", CONFIG_OBJECT_MAILCONTACT},
    {"mailuser", CONFIG_OBJECT_MAILUSER},
    {"groupcontact", CONFIG_OBJECT_GROUPCONTACT},
    {NULL, 0},
};

static const struct enum_value user_types[] = {
    {"guest", 0},
    {"member", 1},
    {NULL, 0},
};

static const struct enum_value yes_no[] = {
    {"no", 0},
    {"yes", 1},
    {NULL, 0},
};

static const struct enum_value adopts[] = {
    {"no", CONFIG_ADOPT_NO},
    {"mail", CONFIG_ADOPT_MAIL},
    {NULL, 0},
};

static const struct enum_value migration_externals[] = {
    {"primary", CONFIG_MIGRATION_EXTERNAL_PRIMARY},
    {"initial", CONFIG_MIGRATION_EXTERNAL_INITIAL},
    {NULL, 0},
};

static const struct enum_value on_deletes[] = {
    {"delete", CONFIG_ON_DELETE_DELETE},
    {"disable", CONFIG_ON_DELETE_DISABLE},
    {"hide", CONFIG_ON_DELETE_HIDE},
    {"keep", CONFIG_ON_DELETE_KEEP},
    {NULL, 0},
};

/* Default hosts per cloud (MICROSOFT.md), indexed by enum config_cloud. */
static const char *const login_hosts[] = {
    [CONFIG_CLOUD_GLOBAL] = "https://login.microsoftonline.com",
    [CONFIG_CLOUD_USGOVHIGH] = "https://login.microsoftonline.us",
    [CONFIG_CLOUD_DOD] = "https://login.microsoftonline.us",
    [CONFIG_CLOUD_CHINA] = "https://login.chinacloudapi.cn",
};
static const char *const graph_hosts[] = {
    [CONFIG_CLOUD_GLOBAL] = "https://graph.microsoft.com",
    [CONFIG_CLOUD_USGOVHIGH] = "https://graph.microsoft.us",
    [CONFIG_CLOUD_DOD] = "https://dod-graph.microsoft.us",
    [CONFIG_CLOUD_CHINA] = "https://microsoftgraph.chinacloudapi.cn",
};
static const char *const exchange_hosts[] = {
    [CONFIG_CLOUD_GLOBAL] = "https://outlook.office365.com",
    [CONFIG_CLOUD_USGOVHIGH] = "https://outlook.office365.us",
    [CONFIG_CLOUD_DOD] = "https://webmail.apps.mil",
    [CONFIG_CLOUD_CHINA] = "https://partner.outlook.cn",
};

enum key_type {
  TYPE_STRING,  /* free text, kept as written */
  TYPE_GUID,    /* 8-4-4-4-12 hex digits, any case; stored lower-case */
  TYPE_ENUM,    /* one of def->values; stored as int */
  TYPE_INT,     /* long within def->min..def->max */
  TYPE_PATH,    /* absolute path; need not exist yet */
  TYPE_FILE,    /* a file that must exist and be readable */
  TYPE_URL,     /* https://host[:port]; stored without trailing slash */
  TYPE_ANCHOR,  /* extensionAttribute1..15 */
  TYPE_TENANT,  /* name of a [tenant] section */
  TYPE_MAPPING, /* name of a [mapping] section */
  TYPE_RATE,    /* "COUNT/WINDOWs" or "off": struct config_rate */
  TYPE_GUIDS,   /* GUIDs, by commas or blanks; stored "g1,g2" lower-case */
  TYPE_PERCENT, /* "N%" (or N), N within def->min..def->max; a long */
};

/* Flags. KEY_RELOADABLE alone decides what a reload may change:
 * config_reload_check() refuses a new value of any other key in a
 * [galbridge], [tenant] or [link] already running, and
 * config_dump_marked() names those keys for check-config. */
#define KEY_REQUIRED 0x01u      /* missing: error at the section header */
#define KEY_RELOADABLE 0x02u    /* SIGHUP may change it (else: restart) */
#define KEY_CREDENTIAL 0x04u    /* relative path: $CREDENTIALS_DIRECTORY */
#define KEY_SECRET 0x08u        /* file holds a secret: no group/other bits */
#define KEY_HOLDS_KEY 0x10u     /* secret unless key_file is set */
#define KEY_GUEST_ONLY 0x20u    /* only for object = guest links */
#define KEY_INHERITS 0x40u      /* default: [galbridge] interval */
#define KEY_MAILUSER_ONLY 0x80u /* only for object = mailuser links */
#define KEY_NO_CONTACT 0x100u   /* not for mailcontact, groupcontact links */

struct key_def {
  const char *name;
  enum key_type type;
  size_t off;      /* field in the section's build struct (below) */
  size_t pub_off;  /* TYPE_TENANT/MAPPING: the pointer in the public one */
  const char *def; /* default as written; NULL: none */
  const struct enum_value *values;  /* TYPE_ENUM */
  long min, max;                    /* TYPE_INT */
  const char *const *cloud_default; /* TYPE_URL: default per cloud */
  unsigned flags;
};

/* While loading, a section is its public struct plus what only the loader
 * needs: the line of each key (0: not set) and, for links, the names that
 * become pointers once every section is known. The public struct comes
 * first, so an offset into it is also an offset into the build struct. */
struct tenant_in {
  struct config_tenant pub;
  int lines[KEYS_MAX];
};

struct link_in {
  struct config_link pub;
  char *source;
  char *target;
  char *mapping;
  int lines[KEYS_MAX];
};

#define T(f) offsetof(struct tenant_in, pub.f)
#define L(f) offsetof(struct link_in, pub.f)

static const struct key_def galbridge_keys[] = {
    {.name = "state_dir",
     .type = TYPE_PATH,
     .off = offsetof(struct config, state_dir),
     .def = CONFIG_DEFAULT_STATE_DIR},
    {.name = "log_level",
     .type = TYPE_ENUM,
     .off = offsetof(struct config, log_level),
     .def = "info",
     .values = log_levels,
     .flags = KEY_RELOADABLE},
    {.name = "interval",
     .type = TYPE_INT,
     .off = offsetof(struct config, interval),
     .def = STR(CONFIG_DEFAULT_INTERVAL),
     .min = 1,
     .max = INTERVAL_MAX,
     .flags = KEY_RELOADABLE},
    {.name = "metrics_file",
     .type = TYPE_PATH,
     .off = offsetof(struct config, metrics_file),
     .flags = KEY_RELOADABLE},
    {.name = "anchor_key_file",
     .type = TYPE_FILE,
     .off = offsetof(struct config, anchor_key_file),
     .flags = KEY_RELOADABLE | KEY_CREDENTIAL | KEY_SECRET},
};

static const struct key_def tenant_keys[] = {
    {.name = "tenant_id",
     .type = TYPE_GUID,
     .off = T(tenant_id),
     .flags = KEY_REQUIRED},
    {.name = "client_id",
     .type = TYPE_GUID,
     .off = T(client_id),
     .flags = KEY_REQUIRED | KEY_RELOADABLE},
    {.name = "client_secret_file",
     .type = TYPE_FILE,
     .off = T(client_secret_file),
     .flags = KEY_RELOADABLE | KEY_CREDENTIAL | KEY_SECRET},
    {.name = "certificate_file",
     .type = TYPE_FILE,
     .off = T(certificate_file),
     .flags = KEY_RELOADABLE | KEY_CREDENTIAL | KEY_HOLDS_KEY},
    {.name = "key_file",
     .type = TYPE_FILE,
     .off = T(key_file),
     .flags = KEY_RELOADABLE | KEY_CREDENTIAL | KEY_SECRET},
    {.name = "cloud",
     .type = TYPE_ENUM,
     .off = T(cloud),
     .def = "global",
     .values = clouds,
     .flags = KEY_RELOADABLE},
    {.name = "login_url",
     .type = TYPE_URL,
     .off = T(login_url),
     .cloud_default = login_hosts,
     .flags = KEY_RELOADABLE},
    {.name = "graph_url",
     .type = TYPE_URL,
     .off = T(graph_url),
     .cloud_default = graph_hosts,
     .flags = KEY_RELOADABLE},
    {.name = "exchange_url",
     .type = TYPE_URL,
     .off = T(exchange_url),
     .cloud_default = exchange_hosts,
     .flags = KEY_RELOADABLE},
    {.name = "ca_file",
     .type = TYPE_FILE,
     .off = T(ca_file),
     .flags = KEY_RELOADABLE},
    {.name = "exchange",
     .type = TYPE_ENUM,
     .off = T(exchange),
     .def = "no",
     .values = yes_no,
     .flags = KEY_RELOADABLE},
    {.name = "exchange_max_in_flight",
     .type = TYPE_INT,
     .off = T(exchange_max_in_flight),
     .def = "4",
     .min = 1,
     .max = 64,
     .flags = KEY_RELOADABLE},
    {.name = "graph_write_limit",
     .type = TYPE_RATE,
     .off = T(graph_write_limit),
     .def = CONFIG_DEFAULT_GRAPH_WRITE_LIMIT,
     .flags = KEY_RELOADABLE},
    {.name = "invitation_limit",
     .type = TYPE_RATE,
     .off = T(invitation_limit),
     .def = CONFIG_DEFAULT_INVITATION_LIMIT,
     .flags = KEY_RELOADABLE},
    {.name = "graph_resource_unit_limit",
     .type = TYPE_RATE,
     .off = T(graph_resource_unit_limit),
     .def = CONFIG_DEFAULT_GRAPH_UNIT_LIMIT,
     .flags = KEY_RELOADABLE},
};

/* source, target, object and anchor make a link's identity: the objects it
 * already made carry them, so changing one needs a restart (and usually a
 * new link). */
static const struct key_def link_keys[] = {
    {.name = "source",
     .type = TYPE_TENANT,
     .off = offsetof(struct link_in, source),
     .pub_off = offsetof(struct config_link, source),
     .flags = KEY_REQUIRED},
    {.name = "target",
     .type = TYPE_TENANT,
     .off = offsetof(struct link_in, target),
     .pub_off = offsetof(struct config_link, target),
     .flags = KEY_REQUIRED},
    {.name = "object",
     .type = TYPE_ENUM,
     .off = L(object),
     .values = objects,
     .flags = KEY_REQUIRED},
    {.name = "user_type",
     .type = TYPE_ENUM,
     .off = L(user_type_member),
     .def = "guest",
     .values = user_types,
     .flags = KEY_RELOADABLE | KEY_GUEST_ONLY},
    {.name = "scope_group",
     .type = TYPE_GUIDS,
     .off = L(scope_group),
     .flags = KEY_RELOADABLE},
    {.name = "exclude_group",
     .type = TYPE_GUIDS,
     .off = L(exclude_group),
     .flags = KEY_RELOADABLE},
    {.name = "scope_filter",
     .type = TYPE_STRING,
     .off = L(scope_filter),
     .flags = KEY_RELOADABLE},
    {.name = "mapping",
     .type = TYPE_MAPPING,
     .off = offsetof(struct link_in, mapping),
     .pub_off = offsetof(struct config_link, mapping),
     .flags = KEY_RELOADABLE},
    {.name = "anchor",
     .type = TYPE_ANCHOR,
     .off = L(anchor),
     .def = CONFIG_DEFAULT_ANCHOR},
    {.name = "on_delete",
     .type = TYPE_ENUM,
     .off = L(on_delete),
     .def = "delete",
     .values = on_deletes,
     .flags = KEY_RELOADABLE},
    {.name = "adopt",
     .type = TYPE_ENUM,
     .off = L(adopt),
     .def = "no",
     .values = adopts,
     .flags = KEY_RELOADABLE},
    {.name = "migration",
     .type = TYPE_ENUM,
     .off = L(migration),
     .def = "no",
     .values = yes_no,
     .flags = KEY_MAILUSER_ONLY},
    {.name = "migration_external",
     .type = TYPE_ENUM,
     .off = L(migration_external),
     .def = "primary",
     .values = migration_externals,
     .flags = KEY_RELOADABLE | KEY_MAILUSER_ONLY},
    {.name = "manager",
     .type = TYPE_ENUM,
     .off = L(manager),
     .def = "yes",
     .values = yes_no,
     .flags = KEY_RELOADABLE},
    {.name = "max_deletes",
     .type = TYPE_INT,
     .off = L(max_deletes),
     .def = STR(CONFIG_DEFAULT_MAX_DELETES),
     .min = 0,
     .max = MAX_DELETES_MAX,
     .flags = KEY_RELOADABLE},
    {.name = "max_delete_share",
     .type = TYPE_PERCENT,
     .off = L(max_delete_share),
     .def = STR(CONFIG_DEFAULT_MAX_DELETE_SHARE) "%",
     .min = 1,
     .max = 100,
     .flags = KEY_RELOADABLE},
    {.name = "max_creates",
     .type = TYPE_INT,
     .off = L(max_creates),
     .def = STR(CONFIG_DEFAULT_MAX_CREATES),
     .min = 0,
     .max = MAX_CREATES_MAX,
     .flags = KEY_RELOADABLE},
    {.name = "interval",
     .type = TYPE_INT,
     .off = L(interval),
     .min = 1,
     .max = INTERVAL_MAX,
     .flags = KEY_RELOADABLE | KEY_INHERITS},
    /* Photos: off by default, a check costs a request per person. */
    {.name = "photos",
     .type = TYPE_ENUM,
     .off = L(photos),
     .def = "no",
     .values = yes_no,
     .flags = KEY_RELOADABLE | KEY_NO_CONTACT},
    {.name = "photo_max_bytes",
     .type = TYPE_INT,
     .off = L(photo_max_bytes),
     .def = STR(CONFIG_PHOTO_MAX_BYTES),
     .min = 1024,
     .max = CONFIG_PHOTO_MAX_BYTES,
     .flags = KEY_RELOADABLE | KEY_NO_CONTACT},
    {.name = "photo_interval",
     .type = TYPE_INT,
     .off = L(photo_interval),
     .def = STR(CONFIG_DEFAULT_PHOTO_INTERVAL),
     .min = 60,
     .max = PHOTO_INTERVAL_MAX,
     .flags = KEY_RELOADABLE | KEY_NO_CONTACT},
};

#undef T
#undef L

#define N_KEYS(a) (sizeof(a) / sizeof((a)[0]))

_Static_assert(N_KEYS(galbridge_keys) <= KEYS_MAX, "KEYS_MAX");
_Static_assert(N_KEYS(tenant_keys) <= KEYS_MAX, "KEYS_MAX");
_Static_assert(N_KEYS(link_keys) <= KEYS_MAX, "KEYS_MAX");

enum kind { KIND_NONE, KIND_GALBRIDGE, KIND_TENANT, KIND_LINK, KIND_MAPPING };

struct section_def {
  const char *name;
  enum kind kind;
  int named; /* [kind NAME] rather than [kind] */
  const struct key_def *keys;
  size_t n_keys;
  const char *restart; /* what changing a key not KEY_RELOADABLE takes */
};

#define RESTART "restart galbridge"
static const struct section_def sections[] = {
    {"galbridge", KIND_GALBRIDGE, 0, galbridge_keys, N_KEYS(galbridge_keys),
     RESTART},
    {"tenant", KIND_TENANT, 1, tenant_keys, N_KEYS(tenant_keys), RESTART},
    {"link", KIND_LINK, 1, link_keys, N_KEYS(link_keys),
     "make a new link, or " RESTART},
    {"mapping", KIND_MAPPING, 1, NULL, 0, NULL},
};
#undef RESTART

/* ---------------------------------------------------------------------
 * The loader.
 */

struct order {
  enum kind kind;
  size_t index;
};

struct loader {
  const char *path;     /* as given, for messages */
  char *dir;            /* absolute directory of the config file */
  const char *cred_dir; /* $CREDENTIALS_DIRECTORY, NULL when unset */
  char *text;           /* the whole file */
  size_t len, pos;
  int lineno; /* line last handed to libinih */

  struct config *cfg; /* [galbridge] keys land here directly */
  int global_line;    /* 0: no [galbridge] section */
  int global_lines[KEYS_MAX];
  struct tenant_in *tenants;
  size_t n_tenants, cap_tenants;
  struct link_in *links;
  size_t n_links, cap_links;
  struct config_mapping *mappings;
  size_t n_mappings, cap_mappings;
  size_t *mapping_caps; /* entry capacity of each mapping */
  struct order *order;  /* sections in file order */
  size_t n_order, cap_order;

  enum kind cur_kind; /* section being read */
  size_t cur_index;

  int failed;
  char *err;
  size_t errlen;
};

/* Record the first error as "file:line: message" ("file: message" for
 * line 0). Returns -1 so callers can `return fail(...)`. */
static int fail(struct loader *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(struct loader *ld, int line, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (ld->failed)
    return -1;
  ld->failed = 1;
  if (ld->err == NULL || ld->errlen == 0)
    return -1;
  if (line > 0)
    n = snprintf(ld->err, ld->errlen, "%s:%d: ", ld->path, line);
  else
    n = snprintf(ld->err, ld->errlen, "%s: ", ld->path);
  if (n < 0 || (size_t)n >= ld->errlen)
    return -1;
  va_start(ap, fmt);
  vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
  va_end(ap);
  return -1;
}

static int
close_to(const char *word, const char *candidate)
{
  return text_distance(word, candidate) <= (strlen(candidate) >= 6 ? 2u : 1u);
}

/* "a, b, c or d" into buf. */
static const char *
list_values(const struct enum_value *values, char *buf, size_t size)
{
  size_t n = 0, used = 0;

  while (values[n].name != NULL)
    n++;
  buf[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    const char *sep = i == 0 ? "" : (i + 1 == n ? " or " : ", ");
    int w = snprintf(buf + used, size - used, "%s%s", sep, values[i].name);
    if (w < 0 || (size_t)w >= size - used)
      break;
    used += (size_t)w;
  }
  return buf;
}

static const char *
enum_name(const struct enum_value *values, int value)
{
  for (size_t i = 0; values[i].name != NULL; i++) {
    if (values[i].value == value)
      return values[i].name;
  }
  return "unknown";
}

static const struct section_def *
section_def(enum kind kind)
{
  for (size_t i = 0; i < N_KEYS(sections); i++) {
    if (sections[i].kind == kind)
      return &sections[i];
  }
  return NULL;
}

/* Where the current section keeps its values, and its name. */
static void
current(struct loader *ld, void **base, int **lines, const char **name)
{
  *base = NULL;
  *lines = NULL;
  *name = NULL;
  switch (ld->cur_kind) {
  case KIND_GALBRIDGE:
    *base = ld->cfg;
    *lines = ld->global_lines;
    break;
  case KIND_TENANT:
    *base = &ld->tenants[ld->cur_index];
    *lines = ld->tenants[ld->cur_index].lines;
    *name = ld->tenants[ld->cur_index].pub.name;
    break;
  case KIND_LINK:
    *base = &ld->links[ld->cur_index];
    *lines = ld->links[ld->cur_index].lines;
    *name = ld->links[ld->cur_index].pub.name;
    break;
  case KIND_MAPPING:
    *name = ld->mappings[ld->cur_index].name;
    break;
  case KIND_NONE:
    break;
  }
}

/* "[tenant contoso]" or "[galbridge]" into buf. */
static const char *
label(enum kind kind, const char *name, char *buf, size_t size)
{
  const struct section_def *sd = section_def(kind);
  const char *k = sd != NULL ? sd->name : "?";

  if (name != NULL)
    snprintf(buf, size, "[%s %s]", k, name);
  else
    snprintf(buf, size, "[%s]", k);
  return buf;
}

/* ---------------------------------------------------------------------
 * Value checks, one per type.
 */

static int
parse_int(struct loader *ld, const struct key_def *def, const char *text,
          int line, long *out)
{
  const char *digits = text[0] == '-' ? text + 1 : text;
  char *end;
  long v;

  if (!isdigit((unsigned char)digits[0]))
    return fail(ld, line, "%s '%s' is not a whole number", def->name, text);
  errno = 0;
  v = strtol(text, &end, 10);
  if (*end != '\0')
    return fail(ld, line, "%s '%s' is not a whole number", def->name, text);
  if (errno == ERANGE || v < def->min || v > def->max)
    return fail(ld, line, "%s %s is out of range (%ld..%ld)", def->name, text,
                def->min, def->max);
  *out = v;
  return 0;
}

/* https://host[:port], with at most a trailing '/', into a new string
 * without the slash and with the host in lower case. Plain http is taken
 * only for a loopback host (127.0.0.1, localhost, [::1]): a local proxy or
 * test server, where a token never crosses a network. */
static int
parse_url(struct loader *ld, const struct key_def *def, const char *text,
          int line, char **out)
{
  const char *host, *p, *end;
  char *url;
  int plain = 0;

  if (strncasecmp(text, "http://", 7) == 0) {
    plain = 1;
    host = p = text + 7;
  } else if (strncasecmp(text, "https://", 8) == 0) {
    host = p = text + 8;
  } else {
    return fail(ld, line, "%s '%s' is not https://host[:port]", def->name,
                text);
  }
  if (*p == '[') { /* IPv6 literal */
    p++;
    while (isxdigit((unsigned char)*p) || *p == ':' || *p == '.')
      p++;
    if (*p != ']' || p == host + 1)
      goto bad;
    p++;
  } else {
    while (isalnum((unsigned char)*p) || *p == '-' || *p == '.')
      p++;
    if (p == host || *host == '-' || *host == '.')
      goto bad;
  }
  if (plain && !text_is_loopback(host, (size_t)(p - host)))
    return fail(ld, line,
                "%s '%s' must use https: plain http would carry tokens "
                "in clear (it is taken only for 127.0.0.1, localhost and "
                "[::1])",
                def->name, text);
  if (*p == ':') {
    long port = 0;
    const char *digits = ++p;
    while (isdigit((unsigned char)*p) && p - digits < 6)
      port = port * 10 + (*p++ - '0');
    if (p == digits || port < 1 || port > 65535)
      goto bad;
  }
  end = p;
  if (*p == '/')
    p++;
  if (*p != '\0')
    return fail(ld, line,
                "%s '%s' must be https://host[:port] with no path, query or "
                "fragment",
                def->name, text);
  url = xstrndup(text, (size_t)(end - text));
  for (char *c = url; *c != '\0'; c++)
    *c = (char)tolower((unsigned char)*c);
  *out = url;
  return 0;
bad:
  return fail(ld, line, "%s '%s' is not https://host[:port]", def->name, text);
}

static int
parse_anchor(struct loader *ld, const struct key_def *def, const char *text,
             int line, char **out)
{
  static const char prefix[] = "extensionAttribute";
  const size_t plen = sizeof(prefix) - 1;
  const char *d = text + plen;
  long n = -1;
  char buf[sizeof(prefix) + 4];

  if (strncasecmp(text, prefix, plen) == 0) {
    if (d[0] >= '1' && d[0] <= '9' && d[1] == '\0')
      n = d[0] - '0';
    else if (d[0] == '1' && d[1] >= '0' && d[1] <= '5' && d[2] == '\0')
      n = 10 + (d[1] - '0');
  }
  if (n < 0)
    return fail(ld, line,
                "%s '%s' must be one of extensionAttribute1 .. "
                "extensionAttribute15",
                def->name, text);
  snprintf(buf, sizeof(buf), "%s%ld", prefix, n);
  *out = xstrdup(buf);
  return 0;
}

/* dir + "/" + rel, bounded by PATH_MAX. */
static int
join_path(struct loader *ld, const struct key_def *def, const char *dir,
          const char *rel, int line, char **out)
{
  size_t dlen = strlen(dir), rlen = strlen(rel);
  char *p;

  if (dlen + 1 + rlen + 1 > PATH_MAX)
    return fail(ld, line, "%s: path longer than %d bytes", def->name,
                PATH_MAX);
  p = xmalloc(dlen + 1 + rlen + 1);
  memcpy(p, dir, dlen);
  p[dlen] = '/';
  memcpy(p + dlen + 1, rel, rlen + 1);
  *out = p;
  return 0;
}

static void
set_string(void *base, size_t off, char *s)
{
  char **slot = (char **)((char *)base + off);
  *slot = s;
}

static void
set_int(void *base, size_t off, int v)
{
  memcpy((char *)base + off, &v, sizeof(v));
}

/* "COUNT/WINDOWs" (whole numbers: count 2..10000000, window 1..86400
 * seconds) or "off". */
static int
parse_rate(struct loader *ld, const struct key_def *def, const char *text,
           int line, struct config_rate *out)
{
  unsigned long long count = 0, window = 0;
  const char *p = text;
  int digits = 0;

  if (strcmp(text, "off") == 0) {
    out->count = 0;
    out->window = 0;
    return 0;
  }
  for (; isdigit((unsigned char)*p) && digits < 9; p++, digits++)
    count = count * 10 + (unsigned long long)(*p - '0');
  if (digits == 0 || *p != '/')
    goto bad;
  p++;
  for (digits = 0; isdigit((unsigned char)*p) && digits < 9; p++, digits++)
    window = window * 10 + (unsigned long long)(*p - '0');
  if (digits == 0 || strcmp(p, "s") != 0)
    goto bad;
  if (count < 2 || count > 10000000)
    return fail(ld, line, "%s: count %llu is out of range (2..10000000)",
                def->name, count);
  if (window < 1 || window > 86400)
    return fail(ld, line, "%s: window %llus is out of range (1..86400s)",
                def->name, window);
  out->count = (long)count;
  out->window = (long)window;
  return 0;
bad:
  return fail(ld, line,
              "%s '%s' is not COUNT/SECONDSs (for example 3000/150s) or off",
              def->name, text);
}

/* A list of group object ids, as scope_group and exclude_group take it:
 * GUIDs separated by commas and/or blanks (one GUID alone, as before, is
 * a list of one). A list rather than a repeated key, because the reader
 * refuses a key given twice in a section (a typo's guard that a repeated
 * key would have to give up) and one key keeps one line, one value, one
 * entry in check-config's dump and in the reload check. Stored lower-case
 * as "g1,g2" (CONFIG_GUIDS_SEP), which loads back as the same list and
 * is as short as the list can be written.
 * Empty items, a GUID given twice and more than CONFIG_GUIDS_MAX are
 * errors. */
static int
parse_guids(struct loader *ld, const struct key_def *def, const char *text,
            int line, char **out)
{
  const size_t stride = CONFIG_GUID_LEN + sizeof(CONFIG_GUIDS_SEP) - 1;
  char *list = xmalloc(CONFIG_GUIDS_MAX * stride + 1);
  size_t n = 0;
  const char *p = text;

  list[0] = '\0';
  for (;;) {
    char item[CONFIG_GUID_LEN + 1];
    size_t len;

    while (*p == ' ' || *p == '\t' || *p == '\n')
      p++;
    len = strcspn(p, ", \t\n");
    if (len == 0) {
      free(list);
      return fail(ld, line,
                  "%s: empty item in '%s' (GUIDs separated by "
                  "commas or blanks)",
                  def->name, text);
    }
    if (len != CONFIG_GUID_LEN) {
      free(list);
      return fail(ld, line,
                  "%s '%.*s' is not a GUID (8-4-4-4-12 hexadecimal digits)",
                  def->name, (int)(len > 64 ? 64 : len), p);
    }
    memcpy(item, p, len);
    item[len] = '\0';
    for (char *c = item; *c != '\0'; c++)
      *c = (char)tolower((unsigned char)*c);
    if (!text_is_guid(item)) {
      free(list);
      return fail(ld, line,
                  "%s '%.*s' is not a GUID (8-4-4-4-12 hexadecimal digits)",
                  def->name, (int)len, p);
    }
    for (size_t i = 0; i < n; i++) {
      if (memcmp(list + i * stride, item, CONFIG_GUID_LEN) == 0) {
        free(list);
        return fail(ld, line, "%s names %s twice", def->name, item);
      }
    }
    if (n == CONFIG_GUIDS_MAX) {
      free(list);
      return fail(ld, line,
                  "%s: more than %d groups (nest them in one group: "
                  "members of nested groups count)",
                  def->name, CONFIG_GUIDS_MAX);
    }
    if (n > 0)
      memcpy(list + n * stride - (stride - CONFIG_GUID_LEN), CONFIG_GUIDS_SEP,
             stride - CONFIG_GUID_LEN);
    memcpy(list + n * stride, item, CONFIG_GUID_LEN + 1);
    n++;
    p += len;
    while (*p == ' ' || *p == '\t' || *p == '\n')
      p++;
    if (*p == '\0')
      break;
    if (*p == ',')
      p++;
  }
  *out = list;
  return 0;
}

size_t
config_guids_count(const char *list)
{
  const size_t stride = CONFIG_GUID_LEN + sizeof(CONFIG_GUIDS_SEP) - 1;

  return list == NULL || *list == '\0'
             ? 0
             : (strlen(list) + stride - CONFIG_GUID_LEN) / stride;
}

const char *
config_guid_at(const char *list, size_t i, char out[CONFIG_GUID_LEN + 1])
{
  const size_t stride = CONFIG_GUID_LEN + sizeof(CONFIG_GUIDS_SEP) - 1;

  if (i >= config_guids_count(list))
    return NULL;
  memcpy(out, list + i * stride, CONFIG_GUID_LEN);
  out[CONFIG_GUID_LEN] = '\0';
  return out;
}

/* "10%" or "10", within def's bounds. */
static int
parse_percent(struct loader *ld, const struct key_def *def, const char *text,
              int line, long *out)
{
  long v = 0;
  size_t digits = 0;
  const char *p = text;

  for (; isdigit((unsigned char)*p) && digits < 4; p++, digits++)
    v = v * 10 + (*p - '0');
  if (digits == 0 || (*p != '\0' && strcmp(p, "%") != 0))
    return fail(ld, line, "%s '%s' is not a percentage (for example 10%%)",
                def->name, text);
  if (v < def->min || v > def->max)
    return fail(ld, line, "%s %ld%% is out of range (%ld%%..%ld%%)", def->name,
                v, def->min, def->max);
  *out = v;
  return 0;
}

/* Parse `text` as def's type into its field in `base`. Returns 0, or -1
 * with the error recorded against `line`. */
static int
parse_value(struct loader *ld, const struct key_def *def, void *base,
            const char *text, int line)
{
  char buf[128];
  char *s = NULL;

  switch (def->type) {
  case TYPE_STRING:
  case TYPE_TENANT:
  case TYPE_MAPPING:
    set_string(base, def->off, xstrdup(text));
    return 0;
  case TYPE_GUID:
    if (!text_is_guid(text))
      return fail(ld, line,
                  "%s '%s' is not a GUID (8-4-4-4-12 hexadecimal digits)",
                  def->name, text);
    s = xstrdup(text);
    for (char *c = s; *c != '\0'; c++)
      *c = (char)tolower((unsigned char)*c);
    set_string(base, def->off, s);
    return 0;
  case TYPE_GUIDS:
    if (parse_guids(ld, def, text, line, &s) != 0)
      return -1;
    set_string(base, def->off, s);
    return 0;
  case TYPE_PERCENT: {
    long v = 0;
    if (parse_percent(ld, def, text, line, &v) != 0)
      return -1;
    memcpy((char *)base + def->off, &v, sizeof(v));
    return 0;
  }
  case TYPE_ENUM:
    for (size_t i = 0; def->values[i].name != NULL; i++) {
      if (strcmp(text, def->values[i].name) == 0) {
        set_int(base, def->off, def->values[i].value);
        return 0;
      }
    }
    return fail(ld, line, "unknown %s '%s' (expected %s)", def->name, text,
                list_values(def->values, buf, sizeof(buf)));
  case TYPE_INT: {
    long v = 0;
    if (parse_int(ld, def, text, line, &v) != 0)
      return -1;
    memcpy((char *)base + def->off, &v, sizeof(v));
    return 0;
  }
  case TYPE_PATH:
    if (text[0] != '/')
      return fail(ld, line, "%s '%s' must be an absolute path", def->name,
                  text);
    set_string(base, def->off, xstrdup(text));
    return 0;
  case TYPE_FILE:
    if (text[0] == '/') {
      s = xstrdup(text);
    } else {
      const char *dir = (def->flags & KEY_CREDENTIAL) && ld->cred_dir != NULL
                            ? ld->cred_dir
                            : ld->dir;
      if (join_path(ld, def, dir, text, line, &s) != 0)
        return -1;
    }
    set_string(base, def->off, s);
    return 0;
  case TYPE_URL:
    if (parse_url(ld, def, text, line, &s) != 0)
      return -1;
    set_string(base, def->off, s);
    return 0;
  case TYPE_ANCHOR:
    if (parse_anchor(ld, def, text, line, &s) != 0)
      return -1;
    set_string(base, def->off, s);
    return 0;
  case TYPE_RATE: {
    struct config_rate r = {0, 0};
    if (parse_rate(ld, def, text, line, &r) != 0)
      return -1;
    memcpy((char *)base + def->off, &r, sizeof(r));
    return 0;
  }
  }
  return fail(ld, line, "%s: key of unknown type", def->name);
}

/* ---------------------------------------------------------------------
 * Pass 1 and 2: the reader and libinih's handler.
 */

static int
valid_name(const char *s)
{
  if (!isalnum((unsigned char)s[0]))
    return 0;
  for (; *s != '\0'; s++) {
    if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
      return 0;
  }
  return 1;
}

static void
push_order(struct loader *ld, enum kind kind, size_t index)
{
  grow((void **)&ld->order, &ld->cap_order, ld->n_order, sizeof(*ld->order));
  ld->order[ld->n_order].kind = kind;
  ld->order[ld->n_order].index = index;
  ld->n_order++;
}

/* Line of an earlier section of this kind and name, or 0. */
static int
find_section(const struct loader *ld, enum kind kind, const char *name)
{
  switch (kind) {
  case KIND_GALBRIDGE:
    return ld->global_line;
  case KIND_TENANT:
    for (size_t i = 0; i < ld->n_tenants; i++) {
      if (strcmp(ld->tenants[i].pub.name, name) == 0)
        return ld->tenants[i].pub.line;
    }
    return 0;
  case KIND_LINK:
    for (size_t i = 0; i < ld->n_links; i++) {
      if (strcmp(ld->links[i].pub.name, name) == 0)
        return ld->links[i].pub.line;
    }
    return 0;
  case KIND_MAPPING:
    for (size_t i = 0; i < ld->n_mappings; i++) {
      if (strcmp(ld->mappings[i].name, name) == 0)
        return ld->mappings[i].line;
    }
    return 0;
  case KIND_NONE:
    break;
  }
  return 0;
}

static void
open_section(struct loader *ld, const char *kind, const char *name)
{
  const struct section_def *sd = NULL;
  const int line = ld->lineno;
  char buf[SECTION_NAME_MAX + KIND_MAX + 8];
  int first;

  for (size_t i = 0; i < N_KEYS(sections); i++) {
    if (strcmp(kind, sections[i].name) == 0)
      sd = &sections[i];
  }
  if (sd == NULL) {
    char kinds[64];
    size_t used = 0;
    const char *near = NULL;
    for (size_t i = 0; i < N_KEYS(sections); i++) {
      const char *sep = i == 0 ? "" : i + 1 < N_KEYS(sections) ? ", " : " or ";
      int w = snprintf(kinds + used, sizeof(kinds) - used, "%s%s", sep,
                       sections[i].name);
      if (w > 0 && (size_t)w < sizeof(kinds) - used)
        used += (size_t)w;
      if (near == NULL && close_to(kind, sections[i].name))
        near = sections[i].name;
    }
    if (near != NULL)
      fail(ld, line,
           "unknown section kind '%s' (expected %s); did you mean '%s'?", kind,
           kinds, near);
    else
      fail(ld, line, "unknown section kind '%s' (expected %s)", kind, kinds);
    return;
  }
  if (!sd->named && *name != '\0') {
    fail(ld, line, "[%s] takes no name", sd->name);
    return;
  }
  if (sd->named && *name == '\0') {
    fail(ld, line, "[%s] needs a name, as in [%s NAME]", sd->name, sd->name);
    return;
  }
  if (sd->named && !valid_name(name)) {
    fail(ld, line,
         "bad %s name '%s': use letters, digits, '.', '-' and '_', starting "
         "with a letter or digit",
         sd->name, name);
    return;
  }
  first = find_section(ld, sd->kind, name);
  if (first != 0) {
    fail(ld, line, "duplicate section %s (first at line %d)",
         label(sd->kind, sd->named ? name : NULL, buf, sizeof(buf)), first);
    return;
  }

  ld->cur_kind = sd->kind;
  switch (sd->kind) {
  case KIND_GALBRIDGE:
    ld->global_line = line;
    ld->cur_index = 0;
    break;
  case KIND_TENANT:
    grow((void **)&ld->tenants, &ld->cap_tenants, ld->n_tenants,
         sizeof(*ld->tenants));
    memset(&ld->tenants[ld->n_tenants], 0, sizeof(*ld->tenants));
    ld->tenants[ld->n_tenants].pub.name = xstrdup(name);
    ld->tenants[ld->n_tenants].pub.line = line;
    ld->cur_index = ld->n_tenants++;
    break;
  case KIND_LINK:
    grow((void **)&ld->links, &ld->cap_links, ld->n_links, sizeof(*ld->links));
    memset(&ld->links[ld->n_links], 0, sizeof(*ld->links));
    ld->links[ld->n_links].pub.name = xstrdup(name);
    ld->links[ld->n_links].pub.line = line;
    ld->cur_index = ld->n_links++;
    break;
  case KIND_MAPPING: {
    size_t old_cap = ld->cap_mappings;
    grow((void **)&ld->mappings, &ld->cap_mappings, ld->n_mappings,
         sizeof(*ld->mappings));
    if (ld->cap_mappings != old_cap)
      ld->mapping_caps =
          xrealloc(ld->mapping_caps, ld->cap_mappings * sizeof(size_t));
    memset(&ld->mappings[ld->n_mappings], 0, sizeof(*ld->mappings));
    ld->mappings[ld->n_mappings].name = xstrdup(name);
    ld->mappings[ld->n_mappings].line = line;
    ld->mapping_caps[ld->n_mappings] = 0;
    ld->cur_index = ld->n_mappings++;
    break;
  }
  case KIND_NONE:
    return;
  }
  push_order(ld, sd->kind, ld->cur_index);
}

/* A header line "[kind NAME]" (leading and trailing blanks gone). */
static void
section_header(struct loader *ld, const char *line, size_t len)
{
  const char *p = line + 1, *end = line + len - 1, *k;
  char kind[KIND_MAX], name[SECTION_NAME_MAX + 1];
  size_t klen, nlen;

  if (len < 2 || *end != ']') {
    if (memchr(line, ']', len) != NULL)
      fail(ld, ld->lineno, "unexpected text after ']' in section header");
    else
      fail(ld, ld->lineno, "section header lacks its closing ']'");
    return;
  }
  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
    end--;
  k = p;
  while (p < end && *p != ' ' && *p != '\t')
    p++;
  klen = (size_t)(p - k);
  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  nlen = (size_t)(end - p);
  if (klen == 0) {
    fail(ld, ld->lineno, "empty section header");
    return;
  }
  if (klen >= sizeof(kind))
    klen = sizeof(kind) - 1; /* cannot match; open_section() says so */
  if (nlen > SECTION_NAME_MAX) {
    fail(ld, ld->lineno, "section name longer than %d characters",
         SECTION_NAME_MAX);
    return;
  }
  memcpy(kind, k, klen);
  kind[klen] = '\0';
  memcpy(name, p, nlen);
  name[nlen] = '\0';
  open_section(ld, kind, name);
}

static char *
blank_line(char *buf)
{
  buf[0] = '\n';
  buf[1] = '\0';
  return buf;
}

static int handle_key(struct loader *ld, const char *key, const char *value);

/* The next physical line for a continued value: its text without blanks
 * at either end in *line, *len; advances ld->pos and ld->lineno. -1 (the
 * error recorded) at the end of the file, on an empty line or a control
 * character. */
static int
continuation(struct loader *ld, const char **line, size_t *len)
{
  const char *s, *end, *nl;

  if (ld->pos >= ld->len)
    return fail(ld, ld->lineno,
                "the value goes on ('\\' at the end of the line) past the "
                "end of the file");
  s = ld->text + ld->pos;
  nl = memchr(s, '\n', ld->len - ld->pos);
  end = nl != NULL ? nl : ld->text + ld->len;
  ld->pos = (size_t)(end - ld->text) + (nl != NULL);
  ld->lineno++;
  if (end > s && end[-1] == '\r')
    end--;
  for (const char *p = s; p < end; p++) {
    unsigned char c = (unsigned char)*p;
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return fail(ld, ld->lineno, "control character 0x%02x in line", c);
  }
  while (s < end && (*s == ' ' || *s == '\t'))
    s++;
  while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
    end--;
  if (end == s)
    return fail(ld, ld->lineno,
                "empty line where the value of line %d goes on ('\\' at "
                "the end of the line before)",
                ld->lineno - 1);
  *line = s;
  *len = (size_t)(end - s);
  return 0;
}

/* A key line libinih cannot take: longer than its buffer, or continued
 * (ending in '\\': the lines that follow, up to one that does not end
 * so, are joined to it with one space). It is split as libinih splits a
 * line (key before the first '=', value after it, blanks around both
 * dropped) and handed to handle_key() with the number of its first line;
 * ld->lineno is left on its last. At most CONFIG_LINE_MAX bytes, joined.
 * Returns 0, or -1 with the error recorded. */
static int
long_line(struct loader *ld, const char *line, size_t len)
{
  char *joined = malloc(CONFIG_LINE_MAX + 1), *key, *value, *eq, *end;
  const int first = ld->lineno;
  size_t n = 0;
  int more, rc = -1;

  if (joined == NULL)
    return fail(ld, first, "out of memory");
  for (;;) {
    more = line[len - 1] == '\\';
    if (more) {
      len--;
      while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    }
    if (n + (n > 0) + len > CONFIG_LINE_MAX) {
      fail(ld, first,
           "line too long (more than %d bytes, continued lines joined)",
           CONFIG_LINE_MAX);
      goto out;
    }
    if (n > 0 && len > 0)
      joined[n++] = ' ';
    memcpy(joined + n, line, len);
    n += len;
    if (!more)
      break;
    if (continuation(ld, &line, &len) != 0)
      goto out;
  }
  joined[n] = '\0';
  eq = strchr(joined, '=');
  key = joined;
  end = eq;
  while (end > key && (end[-1] == ' ' || end[-1] == '\t'))
    end--;
  *end = '\0';
  value = eq + 1;
  while (*value == ' ' || *value == '\t')
    value++;
  {
    const int last = ld->lineno;
    ld->lineno = first; /* messages name the line the key is on */
    rc = handle_key(ld, key, value);
    ld->lineno = last;
  }
out:
  free(joined);
  return rc;
}

/* libinih's fgets-style reader: one line per call, ld->lineno counts them.
 * Comments, blank lines and section headers are handled here and passed
 * on as empty lines; key lines go on with ';' and '#' escaped. Returns
 * NULL (end of input) at the end or once an error is recorded. */
static char *
read_line(char *buf, int num, void *stream)
{
  struct loader *ld = stream;
  const char *line, *end, *nl, *eq, *colon;
  size_t len;

  if (ld->failed || ld->pos >= ld->len)
    return NULL;
  if (num < 3) {
    fail(ld, ld->lineno + 1, "libinih's line buffer is too small (%d)", num);
    return NULL;
  }
  line = ld->text + ld->pos;
  nl = memchr(line, '\n', ld->len - ld->pos);
  end = nl != NULL ? nl : ld->text + ld->len;
  ld->pos = (size_t)(end - ld->text) + (nl != NULL);
  ld->lineno++;

  if (ld->lineno == 1 && end - line >= 3 &&
      memcmp(line, "\xef\xbb\xbf", 3) == 0)
    line += 3; /* UTF-8 byte order mark */
  if (end > line && end[-1] == '\r')
    end--;
  for (const char *p = line; p < end; p++) {
    unsigned char c = (unsigned char)*p;
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      fail(ld, ld->lineno, "control character 0x%02x in line", c);
      return NULL;
    }
  }
  while (line < end && (*line == ' ' || *line == '\t'))
    line++;
  while (end > line && (end[-1] == ' ' || end[-1] == '\t'))
    end--;
  len = (size_t)(end - line);

  if (len == 0 || *line == ';' || *line == '#')
    return blank_line(buf);
  if (*line == '[') {
    section_header(ld, line, len);
    return ld->failed ? NULL : blank_line(buf);
  }
  eq = memchr(line, '=', len);
  colon = memchr(line, ':', len);
  if (eq == NULL || (colon != NULL && colon < eq)) {
    fail(ld, ld->lineno,
         "expected 'key = value', a [section] header or a comment");
    return NULL;
  }
  if (eq == line) {
    fail(ld, ld->lineno, "missing key before '='");
    return NULL;
  }
  if (line[len - 1] == '\\' || len + 2 > (size_t)num)
    return long_line(ld, line, len) == 0 ? blank_line(buf) : NULL;
  for (size_t i = 0; i < len; i++) {
    char c = line[i];
    buf[i] = c == ';' ? ESC_SEMICOLON : c == '#' ? ESC_HASH : c;
  }
  buf[len] = '\n';
  buf[len + 1] = '\0';
  return buf;
}

static char *
unescape_dup(const char *s)
{
  char *d = xstrdup(s);
  for (char *c = d; *c != '\0'; c++) {
    if (*c == ESC_SEMICOLON)
      *c = ';';
    else if (*c == ESC_HASH)
      *c = '#';
  }
  return d;
}

static int
valid_attribute(const char *s)
{
  if (!isalpha((unsigned char)s[0]))
    return 0;
  for (; *s != '\0'; s++) {
    if (!isalnum((unsigned char)*s) && *s != '_' && *s != '.')
      return 0;
  }
  return 1;
}

static int
mapping_entry(struct loader *ld, const char *target, const char *expr)
{
  struct config_mapping *m = &ld->mappings[ld->cur_index];
  struct config_mapping_entry *e;

  if (!valid_attribute(target))
    return fail(ld, ld->lineno,
                "'%s' in [mapping %s] is not an attribute name (letters, "
                "digits, '_' and '.')",
                target, m->name);
  for (size_t i = 0; i < m->n_entries; i++) {
    if (strcasecmp(m->entries[i].target, target) == 0)
      return fail(ld, ld->lineno,
                  "duplicate target attribute '%s' in [mapping %s] (first "
                  "at line %d)",
                  target, m->name, m->entries[i].line);
  }
  grow((void **)&m->entries, &ld->mapping_caps[ld->cur_index], m->n_entries,
       sizeof(*m->entries));
  e = &m->entries[m->n_entries++];
  e->target = xstrdup(target);
  e->expr = xstrdup(expr);
  e->line = ld->lineno;
  return 0;
}

static int
handle_key(struct loader *ld, const char *key, const char *value)
{
  const struct section_def *sd = section_def(ld->cur_kind);
  const int line = ld->lineno;
  char where[SECTION_NAME_MAX + KIND_MAX + 8];
  const char *name;
  void *base;
  int *lines;

  if (sd == NULL)
    return fail(ld, line, "'%s' comes before any [section] header", key);
  current(ld, &base, &lines, &name);
  label(ld->cur_kind, name, where, sizeof(where));
  if (*value == '\0')
    return fail(ld, line, "empty value for '%s' in %s", key, where);
  if (ld->cur_kind == KIND_MAPPING)
    return mapping_entry(ld, key, value);

  for (size_t i = 0; i < sd->n_keys; i++) {
    const struct key_def *def = &sd->keys[i];
    if (strcmp(key, def->name) != 0)
      continue;
    if (lines[i] != 0)
      return fail(ld, line, "duplicate key '%s' in %s (first at line %d)", key,
                  where, lines[i]);
    if (parse_value(ld, def, base, value, line) != 0)
      return -1;
    lines[i] = line;
    return 0;
  }
  for (size_t i = 0; i < sd->n_keys; i++) {
    if (close_to(key, sd->keys[i].name))
      return fail(ld, line, "unknown key '%s' in %s; did you mean '%s'?", key,
                  where, sd->keys[i].name);
  }
  return fail(ld, line, "unknown key '%s' in %s", key, where);
}

/* libinih's handler. `section` is ignored: the reader tracks sections. */
static int
on_key(void *user, const char *section, const char *name, const char *value)
{
  struct loader *ld = user;
  char *key, *val;
  int result;

  (void)section;
  if (ld->failed)
    return 0;
  key = unescape_dup(name);
  val = unescape_dup(value);
  result = handle_key(ld, key, val);
  free(key);
  free(val);
  return result == 0;
}

/* ---------------------------------------------------------------------
 * Pass 3: per section, once the whole file is known.
 */

/* Fill unset keys with their defaults. `cloud` (NULL outside tenants)
 * points at the section's cloud, which precedes the URLs in the table and
 * so is set by the time their per-cloud default is needed. */
static int
apply_defaults(struct loader *ld, const struct key_def *keys, size_t n,
               void *base, const int *lines, const enum config_cloud *cloud)
{
  for (size_t i = 0; i < n; i++) {
    const struct key_def *def = &keys[i];
    const char *text = def->def;
    if (lines[i] != 0)
      continue;
    if (def->flags & KEY_INHERITS) {
      memcpy((char *)base + def->off, &ld->cfg->interval, sizeof(long));
      continue;
    }
    if (def->cloud_default != NULL && cloud != NULL)
      text = def->cloud_default[*cloud];
    if (text == NULL)
      continue;
    /* A default that does not parse is a bug in the tables above. */
    if (parse_value(ld, def, base, text, 0) != 0)
      return -1;
  }
  return 0;
}

static int
check_required(struct loader *ld, const struct key_def *keys, size_t n,
               const int *lines, enum kind kind, const char *name, int line)
{
  char where[SECTION_NAME_MAX + KIND_MAX + 8];

  for (size_t i = 0; i < n; i++) {
    if ((keys[i].flags & KEY_REQUIRED) && lines[i] == 0)
      return fail(ld, line, "%s needs %s",
                  label(kind, name, where, sizeof(where)), keys[i].name);
  }
  return 0;
}

static size_t
key_index(const struct key_def *keys, size_t n, const char *name)
{
  for (size_t i = 0; i < n; i++) {
    if (strcmp(keys[i].name, name) == 0)
      return i;
  }
  return n; /* not reached for names in the tables */
}

static int
secret_key(const struct key_def *def, const struct config_tenant *t)
{
  return (def->flags & KEY_SECRET) ||
         ((def->flags & KEY_HOLDS_KEY) && t->key_file == NULL);
}

static int
check_file(struct loader *ld, const struct key_def *def, const char *path,
           int secret, int line)
{
  struct stat st;
  size_t dlen = ld->cred_dir != NULL ? strlen(ld->cred_dir) : 0;

  if (stat(path, &st) != 0) {
    int e = errno;
    if ((def->flags & KEY_CREDENTIAL) && dlen > 0 &&
        strncmp(path, ld->cred_dir, dlen) == 0 && path[dlen] == '/')
      return fail(ld, line,
                  "%s %s: %s (relative paths are looked up in "
                  "$CREDENTIALS_DIRECTORY)",
                  def->name, path, strerror(e));
    return fail(ld, line, "%s %s: %s", def->name, path, strerror(e));
  }
  if (!S_ISREG(st.st_mode))
    return fail(ld, line, "%s %s is not a regular file", def->name, path);
  if (secret && (st.st_mode & 077) != 0)
    return fail(ld, line,
                "%s %s is accessible by group or others (mode %04o); run "
                "chmod 600 on it",
                def->name, path, (unsigned)(st.st_mode & 07777));
  if (access(path, R_OK) != 0)
    return fail(ld, line, "%s %s cannot be read: %s", def->name, path,
                strerror(errno));
  return 0;
}

static int
finish_tenant(struct loader *ld, struct tenant_in *ti)
{
  const size_t n = N_KEYS(tenant_keys);
  struct config_tenant *t = &ti->pub;
  const int secret_line =
      ti->lines[key_index(tenant_keys, n, "client_secret_file")];
  const int cert_line =
      ti->lines[key_index(tenant_keys, n, "certificate_file")];
  const int key_line = ti->lines[key_index(tenant_keys, n, "key_file")];
  char where[SECTION_NAME_MAX + KIND_MAX + 8];

  label(KIND_TENANT, t->name, where, sizeof(where));
  if (check_required(ld, tenant_keys, n, ti->lines, KIND_TENANT, t->name,
                     t->line) != 0)
    return -1;
  if (secret_line != 0 && cert_line != 0)
    return fail(ld, secret_line > cert_line ? secret_line : cert_line,
                "%s sets both client_secret_file and certificate_file; "
                "keep one",
                where);
  if (secret_line == 0 && cert_line == 0)
    return fail(ld, t->line,
                "%s needs client_secret_file or "
                "certificate_file",
                where);
  if (key_line != 0 && cert_line == 0)
    return fail(ld, key_line,
                "key_file needs certificate_file (it holds that "
                "certificate's private key)");
  if (apply_defaults(ld, tenant_keys, n, ti, ti->lines, &t->cloud) != 0)
    return -1;
  for (size_t i = 0; i < n; i++) {
    const struct key_def *def = &tenant_keys[i];
    const char *path;
    if (def->type != TYPE_FILE || ti->lines[i] == 0)
      continue;
    memcpy(&path, (char *)ti + def->off, sizeof(path));
    if (check_file(ld, def, path, secret_key(def, t), ti->lines[i]) != 0)
      return -1;
  }
  return 0;
}

static size_t
tenant_index(const struct loader *ld, const char *name)
{
  for (size_t i = 0; i < ld->n_tenants; i++) {
    if (strcmp(ld->tenants[i].pub.name, name) == 0)
      return i;
  }
  return SIZE_MAX;
}

static size_t
mapping_index(const struct loader *ld, const char *name)
{
  for (size_t i = 0; i < ld->n_mappings; i++) {
    if (strcmp(ld->mappings[i].name, name) == 0)
      return i;
  }
  return SIZE_MAX;
}

/* What makes no sense for object = groupcontact: scope_group and
 * exclude_group (their members are read from the users' side; a group
 * link scopes its groups with scope_filter), manager (a group has
 * none). user_type, migration and the photo keys are refused for it by
 * finish_link() and check_photos(). */
static int
finish_groupcontact(struct loader *ld, struct link_in *li)
{
  static const char *const keys[] = {"scope_group", "exclude_group",
                                     "manager"};
  const size_t n = N_KEYS(link_keys);

  if (li->pub.object != CONFIG_OBJECT_GROUPCONTACT)
    return 0;
  li->pub.manager = 0;
  for (size_t i = 0; i < N_KEYS(keys); i++) {
    int line = li->lines[key_index(link_keys, n, keys[i])];
    if (line != 0)
      return fail(ld, line,
                  "%s does not apply to links with object = groupcontact "
                  "(their objects are groups, not people)%s",
                  keys[i], i < 2 ? ": scope them with scope_filter" : "");
  }
  return 0;
}

/* A group both in scope_group and in exclude_group would take nobody of
 * it: a mistake, refused at exclude_group's line. */
static int
check_groups_apart(struct loader *ld, struct link_in *li)
{
  const struct config_link *l = &li->pub;
  const int line =
      li->lines[key_index(link_keys, N_KEYS(link_keys), "exclude_group")];
  char a[CONFIG_GUID_LEN + 1], b[CONFIG_GUID_LEN + 1];

  for (size_t i = 0; config_guid_at(l->exclude_group, i, a) != NULL; i++)
    for (size_t j = 0; config_guid_at(l->scope_group, j, b) != NULL; j++)
      if (strcmp(a, b) == 0)
        return fail(ld, line,
                    "exclude_group %s is also a scope_group: it would take "
                    "nobody of that group",
                    a);
  return 0;
}

/* Photo keys on a mail contact link: Graph has no photo for an org
 * contact (profilephoto-get lists users, groups, teams and personal
 * contacts only), so nothing could be written. */
static int
check_photos(struct loader *ld, const struct link_in *li)
{
  static const char *const keys[] = {"photos", "photo_max_bytes",
                                     "photo_interval"};
  const size_t n = N_KEYS(link_keys);

  if (!config_link_contacts(&li->pub))
    return 0;
  for (size_t i = 0; i < N_KEYS(keys); i++) {
    int line = li->lines[key_index(link_keys, n, keys[i])];
    if (line != 0)
      return fail(ld, line,
                  "%s applies only to links with object = guest or "
                  "mailuser: contacts have no photo in Graph (this link "
                  "has object = %s)",
                  keys[i], config_object_name(li->pub.object));
  }
  return 0;
}

static int
finish_link(struct loader *ld, struct link_in *li)
{
  const size_t n = N_KEYS(link_keys);
  struct config_link *l = &li->pub;
  const int source_line = li->lines[key_index(link_keys, n, "source")];
  const int target_line = li->lines[key_index(link_keys, n, "target")];
  const int mapping_line = li->lines[key_index(link_keys, n, "mapping")];
  const int user_type_line = li->lines[key_index(link_keys, n, "user_type")];
  const int migration_line = li->lines[key_index(link_keys, n, "migration")];
  const int external_line =
      li->lines[key_index(link_keys, n, "migration_external")];

  if (check_required(ld, link_keys, n, li->lines, KIND_LINK, l->name,
                     l->line) != 0)
    return -1;
  if (apply_defaults(ld, link_keys, n, li, li->lines, NULL) != 0)
    return -1;
  if (tenant_index(ld, li->source) == SIZE_MAX)
    return fail(ld, source_line, "source '%s' names no [tenant %s]",
                li->source, li->source);
  if (tenant_index(ld, li->target) == SIZE_MAX)
    return fail(ld, target_line, "target '%s' names no [tenant %s]",
                li->target, li->target);
  if (strcmp(li->source, li->target) == 0)
    return fail(ld, target_line,
                "source and target are both '%s'; a link joins two "
                "different tenants",
                li->source);
  if (li->mapping != NULL && mapping_index(ld, li->mapping) == SIZE_MAX)
    return fail(ld, mapping_line, "mapping '%s' names no [mapping %s]",
                li->mapping, li->mapping);
  if (user_type_line != 0 && l->object != CONFIG_OBJECT_GUEST)
    return fail(ld, user_type_line,
                "user_type applies only to links with object = guest (this "
                "one has object = %s)",
                config_object_name(l->object));
  if ((migration_line != 0 || external_line != 0) &&
      l->object != CONFIG_OBJECT_MAILUSER)
    return fail(ld, migration_line != 0 ? migration_line : external_line,
                "%s applies only to links with object = mailuser (this one "
                "has object = %s)",
                migration_line != 0 ? "migration" : "migration_external",
                config_object_name(l->object));
  if (finish_groupcontact(ld, li) != 0 || check_groups_apart(ld, li) != 0)
    return -1;
  if (l->migration && !ld->tenants[tenant_index(ld, li->source)].pub.exchange)
    return fail(ld, migration_line,
                "migration = yes reads the source's mailboxes from Exchange "
                "Online: set exchange = yes in [tenant %s] (and give the "
                "app the View-Only Recipients role there)",
                li->source);
  return check_photos(ld, li);
}

/* Move the build structs into the public arrays and turn names into
 * pointers. Cannot fail: every name was checked by finish_link(). */
static void
publish(struct loader *ld)
{
  struct config *cfg = ld->cfg;

  cfg->tenants = xmalloc(ld->n_tenants * sizeof(*cfg->tenants));
  for (size_t i = 0; i < ld->n_tenants; i++)
    cfg->tenants[i] = ld->tenants[i].pub;
  cfg->n_tenants = ld->n_tenants;
  cfg->mappings = ld->mappings;
  cfg->n_mappings = ld->n_mappings;

  cfg->links = xmalloc(ld->n_links * sizeof(*cfg->links));
  for (size_t i = 0; i < ld->n_links; i++) {
    const struct link_in *li = &ld->links[i];
    struct config_link *l = &cfg->links[i];
    *l = li->pub;
    l->source = &cfg->tenants[tenant_index(ld, li->source)];
    l->target = &cfg->tenants[tenant_index(ld, li->target)];
    l->mapping = li->mapping != NULL
                     ? &cfg->mappings[mapping_index(ld, li->mapping)]
                     : NULL;
    snprintf(l->source_key, sizeof(l->source_key), "%s%s",
             l->source->tenant_id,
             l->object == CONFIG_OBJECT_GROUPCONTACT ? "#groups" : "");
  }
  cfg->n_links = ld->n_links;

  /* The strings now belong to cfg: leave loader_free() only the names
   * that links used to find their tenants and mapping. */
  for (size_t i = 0; i < ld->n_tenants; i++)
    memset(&ld->tenants[i].pub, 0, sizeof(ld->tenants[i].pub));
  for (size_t i = 0; i < ld->n_links; i++)
    memset(&ld->links[i].pub, 0, sizeof(ld->links[i].pub));
  ld->mappings = NULL;
  ld->n_mappings = 0;
}

/* ---------------------------------------------------------------------
 * Freeing.
 */

/* Free the strings a section's table put in `base` (a build struct). */
static void
free_fields(const struct key_def *keys, size_t n, void *base)
{
  for (size_t i = 0; i < n; i++) {
    char *s;
    if (keys[i].type == TYPE_ENUM || keys[i].type == TYPE_INT ||
        keys[i].type == TYPE_RATE || keys[i].type == TYPE_PERCENT)
      continue;
    memcpy(&s, (char *)base + keys[i].off, sizeof(s));
    free(s);
  }
}

static void
free_mappings(struct config_mapping *m, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < m[i].n_entries; j++) {
      free(m[i].entries[j].target);
      free(m[i].entries[j].expr);
    }
    free(m[i].entries);
    free(m[i].name);
  }
  free(m);
}

void
config_free(struct config *cfg)
{
  if (cfg == NULL)
    return;
  free_fields(galbridge_keys, N_KEYS(galbridge_keys), cfg);
  /* The tables' offsets are into the build structs; rebuild one around
   * each public struct (names outside it stay NULL) to free by table. */
  for (size_t i = 0; i < cfg->n_tenants; i++) {
    struct tenant_in ti;
    memset(&ti, 0, sizeof(ti));
    ti.pub = cfg->tenants[i];
    free_fields(tenant_keys, N_KEYS(tenant_keys), &ti);
    free(ti.pub.name);
  }
  free(cfg->tenants);
  for (size_t i = 0; i < cfg->n_links; i++) {
    struct link_in li;
    memset(&li, 0, sizeof(li));
    li.pub = cfg->links[i];
    free_fields(link_keys, N_KEYS(link_keys), &li);
    free(li.pub.name);
  }
  free(cfg->links);
  free_mappings(cfg->mappings, cfg->n_mappings);
  free(cfg->path);
  free(cfg);
}

static void
loader_free(struct loader *ld)
{
  for (size_t i = 0; i < ld->n_tenants; i++) {
    free_fields(tenant_keys, N_KEYS(tenant_keys), &ld->tenants[i]);
    free(ld->tenants[i].pub.name);
  }
  free(ld->tenants);
  for (size_t i = 0; i < ld->n_links; i++) {
    free_fields(link_keys, N_KEYS(link_keys), &ld->links[i]);
    free(ld->links[i].pub.name);
  }
  free(ld->links);
  free_mappings(ld->mappings, ld->n_mappings);
  free(ld->mapping_caps);
  free(ld->order);
  free(ld->text);
  free(ld->dir);
}

/* ---------------------------------------------------------------------
 * config_load
 */

/* The whole file into ld->text, refusing more than CONFIG_FILE_MAX. */
static int
read_file(struct loader *ld)
{
  FILE *fp = fopen(ld->path, "re");
  size_t cap = 4096, n = 0;
  int result = -1;

  if (fp == NULL)
    return fail(ld, 0, "%s", strerror(errno));
  ld->text = xmalloc(cap);
  for (;;) {
    size_t got = fread(ld->text + n, 1, cap - n, fp);
    n += got;
    if (n > CONFIG_FILE_MAX) {
      fail(ld, 0, "larger than %d bytes", CONFIG_FILE_MAX);
      goto out;
    }
    if (got == 0 || n < cap) {
      if (ferror(fp)) {
        fail(ld, 0, "%s", strerror(errno != 0 ? errno : EIO));
        goto out;
      }
      if (feof(fp))
        break;
    }
    if (n == cap) {
      cap = cap * 2 > CONFIG_FILE_MAX + 1 ? CONFIG_FILE_MAX + 1 : cap * 2;
      ld->text = xrealloc(ld->text, cap);
    }
  }
  ld->len = n;
  result = 0;
out:
  fclose(fp);
  return result;
}

/* The absolute directory holding the config file. */
static int
config_dir(struct loader *ld)
{
  char *real = realpath(ld->path, NULL);
  char *slash;

  if (real == NULL)
    return fail(ld, 0, "%s", strerror(errno));
  slash = strrchr(real, '/');
  if (slash == real)
    slash[1] = '\0'; /* the file is in / */
  else if (slash != NULL)
    *slash = '\0';
  ld->dir = real;
  return 0;
}

/* config_load() and config_load_buffer(): `text` NULL reads `path`. */
static int
load(const char *path, const char *dir, const char *text, size_t len,
     struct config **out, char *err, size_t errlen)
{
  struct loader ld;
  const char *creds = getenv("CREDENTIALS_DIRECTORY");
  int result = -1;
  int rc;

  memset(&ld, 0, sizeof(ld));
  ld.path = path != NULL ? path : "(null)";
  ld.err = err;
  ld.errlen = errlen;
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  if (out == NULL || path == NULL) {
    fail(&ld, 0, "config_load: no file name or result pointer");
    return -1;
  }
  *out = NULL;
  if (text != NULL && dir == NULL) {
    fail(&ld, 0, "config_load_buffer: no directory");
    return -1;
  }
  ld.cred_dir = creds != NULL && *creds != '\0' ? creds : NULL;
  ld.cfg = xmalloc(sizeof(*ld.cfg));
  memset(ld.cfg, 0, sizeof(*ld.cfg));
  ld.cfg->path = xstrdup(path);

  if (text != NULL) {
    if (len > CONFIG_FILE_MAX) {
      fail(&ld, 0, "larger than %d bytes", CONFIG_FILE_MAX);
      goto out;
    }
    ld.text = xmalloc(len + 1);
    memcpy(ld.text, text, len);
    ld.len = len;
    ld.dir = xstrdup(dir);
  } else if (read_file(&ld) != 0 || config_dir(&ld) != 0) {
    goto out;
  }

  rc = ini_parse_stream(read_line, &ld, on_key, &ld);
  if (ld.failed)
    goto out;
  if (rc == -2) {
    fail(&ld, 0, "out of memory");
    goto out;
  }
  if (rc != 0) { /* not expected: read_line pre-checks every line */
    fail(&ld, rc, "syntax error");
    goto out;
  }

  if (apply_defaults(&ld, galbridge_keys, N_KEYS(galbridge_keys), ld.cfg,
                     ld.global_lines, NULL) != 0)
    goto out;
  for (size_t i = 0; i < N_KEYS(galbridge_keys); i++) {
    const struct key_def *def = &galbridge_keys[i];
    const char *file;
    if (def->type != TYPE_FILE || ld.global_lines[i] == 0)
      continue;
    memcpy(&file, (char *)ld.cfg + def->off, sizeof(file));
    if (check_file(&ld, def, file, (def->flags & KEY_SECRET) != 0,
                   ld.global_lines[i]) != 0)
      goto out;
  }
  for (size_t i = 0; i < ld.n_order; i++) {
    const struct order *o = &ld.order[i];
    if (o->kind == KIND_TENANT &&
        finish_tenant(&ld, &ld.tenants[o->index]) != 0)
      goto out;
    if (o->kind == KIND_LINK && finish_link(&ld, &ld.links[o->index]) != 0)
      goto out;
  }
  publish(&ld);
  *out = ld.cfg;
  ld.cfg = NULL;
  result = 0;
out:
  config_free(ld.cfg);
  loader_free(&ld);
  return result;
}

int
config_load(const char *path, struct config **out, char *err, size_t errlen)
{
  return load(path, NULL, NULL, 0, out, err, errlen);
}

int
config_load_buffer(const char *path, const char *dir, const char *text,
                   size_t len, struct config **out, char *err, size_t errlen)
{
  if (text == NULL) {
    text = "";
    len = 0;
  }
  return load(path, dir, text, len, out, err, errlen);
}

/* ---------------------------------------------------------------------
 * config_dump
 */

/* The value of def's key in a public struct `base` as the file spells it
 * (in buf when it has to be made), or NULL when unset. TYPE_TENANT and
 * TYPE_MAPPING names live outside the public struct: those two read
 * def->pub_off, every other type def->off. */
static const char *
value_text(const struct key_def *def, const void *base, char *buf, size_t size)
{
  const char *field = (const char *)base;
  const char *s = NULL;
  int v;
  long l;

  switch (def->type) {
  case TYPE_ENUM:
    memcpy(&v, field + def->off, sizeof(v));
    return enum_name(def->values, v);
  case TYPE_INT:
    memcpy(&l, field + def->off, sizeof(l));
    snprintf(buf, size, "%ld", l);
    return buf;
  case TYPE_PERCENT:
    memcpy(&l, field + def->off, sizeof(l));
    snprintf(buf, size, "%ld%%", l);
    return buf;
  case TYPE_RATE: {
    struct config_rate r;
    memcpy(&r, field + def->off, sizeof(r));
    if (r.count == 0)
      return "off";
    snprintf(buf, size, "%ld/%lds", r.count, r.window);
    return buf;
  }
  case TYPE_TENANT: {
    const struct config_tenant *t;
    memcpy(&t, field + def->pub_off, sizeof(t));
    return t != NULL ? t->name : NULL;
  }
  case TYPE_MAPPING: {
    const struct config_mapping *m;
    memcpy(&m, field + def->pub_off, sizeof(m));
    return m != NULL ? m->name : NULL;
  }
  case TYPE_STRING:
  case TYPE_GUID:
  case TYPE_GUIDS:
  case TYPE_PATH:
  case TYPE_FILE:
  case TYPE_URL:
  case TYPE_ANCHOR:
    memcpy(&s, field + def->off, sizeof(s));
    break;
  }
  return s;
}

static int
shown(const struct key_def *def, const struct config_link *link)
{
  if (link == NULL)
    return 1;
  if ((def->flags & KEY_GUEST_ONLY) && link->object != CONFIG_OBJECT_GUEST)
    return 0;
  if (link->object == CONFIG_OBJECT_GROUPCONTACT &&
      (strcmp(def->name, "scope_group") == 0 ||
       strcmp(def->name, "exclude_group") == 0 ||
       strcmp(def->name, "manager") == 0))
    return 0; /* an error there (finish_groupcontact) */
  if ((def->flags & KEY_NO_CONTACT) && config_link_contacts(link))
    return 0;
  return !((def->flags & KEY_MAILUSER_ONLY) &&
           link->object != CONFIG_OBJECT_MAILUSER);
}

static void
dump_keys(FILE *fp, const struct key_def *keys, size_t n, const void *base,
          const struct config_tenant *tenant, const struct config_link *link)
{
  for (size_t i = 0; i < n; i++) {
    const struct key_def *def = &keys[i];
    char buf[64];
    const char *s;

    if (!shown(def, link))
      continue;
    s = value_text(def, base, buf, sizeof(buf));
    if (s == NULL) {
      fprintf(fp, "# %s is not set\n", def->name);
      continue;
    }
    /* The comment goes on a line of its own: a ';' after the value would
     * be part of the value (only a line starting with ';' or '#' is a
     * comment), and the dump must read back as the same config. */
    if (def->type == TYPE_FILE &&
        (tenant != NULL ? secret_key(def, tenant)
                        : (def->flags & KEY_SECRET) != 0))
      fprintf(fp, "# %s names a secret; its contents are never shown\n",
              def->name);
    fprintf(fp, "%s = %s\n", def->name, s);
  }
}

/* check-config's mark: one comment line naming the section's keys a
 * reload cannot change. */
static void
mark_restart(FILE *fp, enum kind kind, const struct config_link *link)
{
  const struct section_def *sd = section_def(kind);
  size_t n = 0;

  for (size_t i = 0; i < sd->n_keys; i++) {
    if ((sd->keys[i].flags & KEY_RELOADABLE) || !shown(&sd->keys[i], link))
      continue;
    fprintf(fp, "%s%s", n++ == 0 ? "# a reload cannot change " : ", ",
            sd->keys[i].name);
  }
  if (n > 0)
    fprintf(fp, " (%s)\n", sd->restart);
}

static void
dump(const struct config *cfg, FILE *fp, int marked)
{
  if (cfg == NULL || fp == NULL)
    return;
  fprintf(fp,
          "# Effective configuration read from %s,\n"
          "# with defaults filled in and relative file names resolved.\n",
          cfg->path);
  fprintf(fp, "\n[galbridge]\n");
  if (marked)
    mark_restart(fp, KIND_GALBRIDGE, NULL);
  dump_keys(fp, galbridge_keys, N_KEYS(galbridge_keys), cfg, NULL, NULL);
  for (size_t i = 0; i < cfg->n_tenants; i++) {
    const struct config_tenant *t = &cfg->tenants[i];
    fprintf(fp, "\n[tenant %s]\n", t->name);
    if (marked)
      mark_restart(fp, KIND_TENANT, NULL);
    dump_keys(fp, tenant_keys, N_KEYS(tenant_keys), t, t, NULL);
  }
  for (size_t i = 0; i < cfg->n_mappings; i++) {
    const struct config_mapping *m = &cfg->mappings[i];
    fprintf(fp, "\n[mapping %s]\n", m->name);
    for (size_t j = 0; j < m->n_entries; j++)
      fprintf(fp, "%s = %s\n", m->entries[j].target, m->entries[j].expr);
  }
  for (size_t i = 0; i < cfg->n_links; i++) {
    const struct config_link *l = &cfg->links[i];
    fprintf(fp, "\n[link %s]\n", l->name);
    if (marked)
      mark_restart(fp, KIND_LINK, l);
    dump_keys(fp, link_keys, N_KEYS(link_keys), l, NULL, l);
  }
}

void
config_dump(const struct config *cfg, FILE *fp)
{
  dump(cfg, fp, 0);
}

void
config_dump_marked(const struct config *cfg, FILE *fp)
{
  dump(cfg, fp, 1);
}

/* ---------------------------------------------------------------------
 * config_reload_check
 */

static int
same_string(const char *a, const char *b)
{
  if (a == NULL || b == NULL)
    return a == b;
  return strcmp(a, b) == 0;
}

/* Whether def's key holds the same value in the public structs a and b.
 * A tenant reference is the same when it names a tenant of the same
 * tenant_id, whatever its section is called. */
static int
same_value(const struct key_def *def, const void *a, const void *b)
{
  const char *fa = (const char *)a, *fb = (const char *)b;
  char ba[64], bb[64];

  switch (def->type) {
  case TYPE_ENUM:
    return memcmp(fa + def->off, fb + def->off, sizeof(int)) == 0;
  case TYPE_INT:
  case TYPE_PERCENT:
    return memcmp(fa + def->off, fb + def->off, sizeof(long)) == 0;
  case TYPE_RATE: {
    struct config_rate ra, rb;
    memcpy(&ra, fa + def->off, sizeof(ra));
    memcpy(&rb, fb + def->off, sizeof(rb));
    return ra.count == rb.count && ra.window == rb.window;
  }
  case TYPE_TENANT: {
    const struct config_tenant *ta, *tb;
    memcpy(&ta, fa + def->pub_off, sizeof(ta));
    memcpy(&tb, fb + def->pub_off, sizeof(tb));
    if (ta == NULL || tb == NULL)
      return ta == tb;
    return same_string(ta->tenant_id, tb->tenant_id);
  }
  case TYPE_MAPPING:
  case TYPE_STRING:
  case TYPE_GUID:
  case TYPE_GUIDS:
  case TYPE_PATH:
  case TYPE_FILE:
  case TYPE_URL:
  case TYPE_ANCHOR:
    break;
  }
  return same_string(value_text(def, a, ba, sizeof(ba)),
                     value_text(def, b, bb, sizeof(bb)));
}

/* The first key of the table, not reloadable, whose value differs between
 * the public structs old and next; NULL if none. */
static const struct key_def *
restart_change(const struct section_def *sd, const void *old, const void *next)
{
  for (size_t i = 0; i < sd->n_keys; i++) {
    const struct key_def *def = &sd->keys[i];
    if (!(def->flags & KEY_RELOADABLE) && !same_value(def, old, next))
      return def;
  }
  return NULL;
}

/* A named section's refusal: its header's line, its name and the key. */
static int
refuse_key(char *err, size_t errlen, const struct config *next,
           const struct section_def *sd, const char *name, int line,
           const struct key_def *def)
{
  text_set_err(err, errlen, "%s:%d: %s '%s': %s cannot change on reload (%s)",
               next->path, line, sd->name, name, def->name, sd->restart);
  return -1;
}

int
config_reload_check(const struct config *old, const struct config *next,
                    char *err, size_t errlen)
{
  const struct section_def *sd;
  const struct key_def *def;

  if (old == NULL || next == NULL) {
    text_set_err(err, errlen, "config_reload_check: no config");
    return -1;
  }
  sd = section_def(KIND_TENANT);
  for (size_t i = 0; i < next->n_tenants; i++) {
    const struct config_tenant *t = &next->tenants[i];
    const struct config_tenant *o = config_tenant_find(old, t->name);
    def = o != NULL ? restart_change(sd, o, t) : NULL;
    if (def != NULL)
      return refuse_key(err, errlen, next, sd, t->name, t->line, def);
  }
  sd = section_def(KIND_LINK);
  for (size_t i = 0; i < next->n_links; i++) {
    const struct config_link *l = &next->links[i];
    const struct config_link *o = config_link_find(old, l->name);
    def = o != NULL ? restart_change(sd, o, l) : NULL;
    if (def != NULL)
      return refuse_key(err, errlen, next, sd, l->name, l->line, def);
  }
  def = restart_change(section_def(KIND_GALBRIDGE), old, next);
  if (def != NULL) {
    char ba[64], bb[64];
    const char *a = value_text(def, old, ba, sizeof(ba));
    const char *b = value_text(def, next, bb, sizeof(bb));
    text_set_err(err, errlen,
                 "%s: %s cannot change without a restart (%s -> %s)",
                 next->path, def->name, a != NULL ? a : "not set",
                 b != NULL ? b : "not set");
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------------
 * Look-ups and names.
 */

const struct config_tenant *
config_tenant_find(const struct config *cfg, const char *name)
{
  if (cfg == NULL || name == NULL)
    return NULL;
  for (size_t i = 0; i < cfg->n_tenants; i++) {
    if (strcmp(cfg->tenants[i].name, name) == 0)
      return &cfg->tenants[i];
  }
  return NULL;
}

const struct config_link *
config_link_find(const struct config *cfg, const char *name)
{
  if (cfg == NULL || name == NULL)
    return NULL;
  for (size_t i = 0; i < cfg->n_links; i++) {
    if (strcmp(cfg->links[i].name, name) == 0)
      return &cfg->links[i];
  }
  return NULL;
}

int
config_require_links(const struct config *cfg, char *err, size_t errlen)
{
  if (cfg == NULL)
    return -1;
  if (cfg->n_links > 0)
    return 0;
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "%s: no [link] sections: nothing to sync",
             cfg->path);
  return -1;
}

int
config_links_overlap(const struct config_link *a, const struct config_link *b)
{
  if (a == NULL || b == NULL || a == b ||
      strcmp(a->source->tenant_id, b->source->tenant_id) != 0 ||
      strcmp(a->target->tenant_id, b->target->tenant_id) != 0)
    return 0;
  if (a->object == b->object)
    return 1;
  return (a->object == CONFIG_OBJECT_GUEST &&
          b->object == CONFIG_OBJECT_MAILUSER) ||
         (a->object == CONFIG_OBJECT_MAILUSER &&
          b->object == CONFIG_OBJECT_GUEST);
}

size_t
config_warn_overlaps(const struct config *cfg, FILE *fp)
{
  size_t n = 0;

  if (cfg == NULL)
    return 0;
  for (size_t j = 1; j < cfg->n_links; j++) {
    const struct config_link *b = &cfg->links[j];
    for (size_t i = 0; i < j; i++) {
      const struct config_link *a = &cfg->links[i];
      if (!config_links_overlap(a, b))
        continue;
      n++;
      if (fp == NULL)
        continue;
      fprintf(fp, "%s:%d: warning: links '%s' (line %d) and '%s' (line %d) ",
              cfg->path, b->line, a->name, a->line, b->name, b->line);
      if (a->object == b->object)
        fprintf(fp,
                "both make %s objects in tenant '%s' for people of "
                "tenant '%s'",
                config_object_name(a->object), a->target->name,
                a->source->name);
      else
        fprintf(fp,
                "both make users in tenant '%s' for people of tenant '%s' "
                "(guests and mail users are both Graph users there, and a "
                "mail user's CustomAttributeN is the user's "
                "extensionAttributeN, where both keep their anchor)",
                a->target->name, a->source->name);
      fprintf(fp, "; a person in scope of both is a conflict for both links "
                  "and nothing is written for them (keep the scopes apart "
                  "with scope_group or scope_filter)\n");
    }
  }
  return n;
}

const char *
config_object_name(enum config_object object)
{
  return enum_name(objects, (int)object);
}

const char *
config_link_source_key(const struct config_link *link)
{
  return link->source_key[0] != '\0' ? link->source_key
                                     : link->source->tenant_id;
}

int
config_link_contacts(const struct config_link *link)
{
  return link != NULL && (link->object == CONFIG_OBJECT_MAILCONTACT ||
                          link->object == CONFIG_OBJECT_GROUPCONTACT);
}
