/*
 * config — the INI file: parse, validate, defaults, dump.
 *
 * libinih lexes the file; each section kind has one table of keys (type,
 * default, bounds, whether SIGHUP may change it) from which parsing,
 * validation, `check-config`'s dump and the reload check all come.
 * Every error carries `file:line: message`. A config is immutable once
 * loaded: a reload builds a new one and swaps it in only if it loads,
 * passes planner_check_config() and config_reload_check() accepts it
 * (DESIGN.md invariant 5).
 *
 * The structs below are plain data, read freely by every module; only
 * config.c writes them.
 */
#ifndef GALBRIDGE_CONFIG_H
#define GALBRIDGE_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "log.h"

#define CONFIG_DEFAULT_PATH "/etc/galbridge/galbridge.conf"
#define CONFIG_DEFAULT_STATE_DIR "/var/lib/galbridge"
#define CONFIG_DEFAULT_INTERVAL 30
#define CONFIG_DEFAULT_MAX_DELETES 500
/* The share guard (max_delete_share): a round deleting more than this
 * percentage of a link's copies is held, once it deletes more than
 * CONFIG_DELETE_SHARE_FLOOR (on a small link a few deletes are a large
 * share and no sign of a mistake). */
#define CONFIG_DEFAULT_MAX_DELETE_SHARE 100 /* off: max_deletes alone */
#define CONFIG_DELETE_SHARE_FLOOR 10
/* The create burst guard (max_creates): more new copies than this in one
 * round are held, except in a link's first round (planner.h). */
#define CONFIG_DEFAULT_MAX_CREATES 500
/* Graph documents a 4 MB limit for a photo upload (profilephoto-update)
 * without saying whether MB is 10^6 or 2^20 bytes: the smaller one. */
#define CONFIG_PHOTO_MAX_BYTES 4000000
#define CONFIG_DEFAULT_PHOTO_INTERVAL 86400
#define CONFIG_DEFAULT_ANCHOR "extensionAttribute15"
/* Microsoft Graph's documented limits (throttling-limits.md): directory
 * writes per app per tenant, invitations per tenant, and resource units
 * per app per tenant (the quota of the smallest tenants, under 50 users;
 * 5,000 from 50 users, 8,000 over 500). */
#define CONFIG_DEFAULT_GRAPH_WRITE_LIMIT "3000/150s"
#define CONFIG_DEFAULT_INVITATION_LIMIT "150/5s"
#define CONFIG_DEFAULT_GRAPH_UNIT_LIMIT "3500/10s"

enum config_cloud {
  CONFIG_CLOUD_GLOBAL,
  CONFIG_CLOUD_USGOVHIGH,
  CONFIG_CLOUD_DOD,
  CONFIG_CLOUD_CHINA,
};

/* A tenant id (a GUID, 36) and "#groups", with room to spare. */
#define CONFIG_SOURCE_KEY_MAX 64

enum config_object {
  CONFIG_OBJECT_GUEST,
  CONFIG_OBJECT_MAILCONTACT,
  CONFIG_OBJECT_MAILUSER,
  /* mail contacts in the target for the source's mail-enabled groups
   * (read from groups/delta): a mail contact link in all but its source
   * read, default mapping and default scope */
  CONFIG_OBJECT_GROUPCONTACT,
};

enum config_on_delete {
  CONFIG_ON_DELETE_DELETE,
  CONFIG_ON_DELETE_DISABLE,
  CONFIG_ON_DELETE_HIDE,
  CONFIG_ON_DELETE_KEEP,
};

/* Whether a link may take over a target object galbridge did not make. */
/* What a migration-ready MailUser's ExternalEmailAddress points at: the
 * source mailbox's primary SMTP address (what Microsoft's validation
 * script expects) or its address in the source's initial
 * (.onmicrosoft.com) domain (the cross-tenant migration doc's example). */
enum config_migration_external {
  CONFIG_MIGRATION_EXTERNAL_PRIMARY,
  CONFIG_MIGRATION_EXTERNAL_INITIAL,
};

enum config_adopt {
  CONFIG_ADOPT_NO,   /* never: such an object is a conflict */
  CONFIG_ADOPT_MAIL, /* one of the link's kind holding the address */
};

/* A rate limit as written "COUNT/WINDOWs": count requests per window
 * seconds; "off" (count 0) sets no limit on the client side. */
struct config_rate {
  long count;  /* 0: off, else 2..10000000 */
  long window; /* seconds, 1..86400 (0 when off) */
};

struct config_tenant {
  char *name;      /* section name: [tenant NAME] */
  char *tenant_id; /* lower-case GUID */
  char *client_id; /* lower-case GUID */
  /* Exactly one of client_secret_file and certificate_file is set. Paths
   * are absolute: a relative one was resolved at load time against
   * $CREDENTIALS_DIRECTORY, or the config file's directory when that is
   * unset or empty. The files were checked to exist, be regular, readable
   * and closed to group and others (a certificate file only when it also
   * holds the key). Their contents are never read by config. */
  char *client_secret_file;
  char *certificate_file;
  char *key_file; /* NULL: the key is in certificate_file */
  enum config_cloud cloud;
  /* Base URLs "scheme://host[:port]" (no trailing slash), never NULL:
   * the override when given, else the cloud's default host. */
  char *login_url;
  char *graph_url;
  char *exchange_url;
  char *ca_file; /* NULL: system trust store; relative: config's dir */
  /* exchange = yes: the app may use Exchange Online here (guests' GAL
   * visibility is then also checked and fixed on the Exchange side); mail
   * contact and mail user links use Exchange whatever it says. */
  int exchange;
  long exchange_max_in_flight; /* Exchange calls at once, 1..64 (4) */
  /* Client-side pacing of Graph requests to this tenant, shared by every
   * link that writes there (default: the documented limits). */
  struct config_rate graph_write_limit;
  struct config_rate invitation_limit;
  struct config_rate graph_resource_unit_limit;
  int line; /* line of the section header */
};

struct config_mapping_entry {
  char *target; /* target attribute */
  char *expr;   /* expression text, parsed by the mapping module; no two
                   entries of a mapping share a target (any case) */
  int line;
};

struct config_mapping {
  char *name;
  struct config_mapping_entry *entries;
  size_t n_entries;
  int line;
};

struct config_link {
  char *name;
  const struct config_tenant *source; /* borrowed from the same config */
  const struct config_tenant *target;
  enum config_object object;
  int user_type_member; /* user_type = member (guest links) */
  /* scope_group, exclude_group: NULL, or one or more lower-case GUIDs
   * as "g1,g2" (config_guid_at() reads them). */
  char *scope_group;
  char *exclude_group;
  char *scope_filter;                   /* NULL or expression text */
  const struct config_mapping *mapping; /* NULL: built-in defaults */
  char *anchor;                         /* "extensionAttribute1".."15" */
  enum config_on_delete on_delete;
  enum config_adopt adopt;
  /* migration = yes (mail user links only; the source tenant has
   * exchange = yes): every copy of a source mailbox is kept ready for
   * Microsoft's cross-tenant mailbox migration (ExchangeGuid,
   * ArchiveGuid, X500 addresses, an address in the target's initial
   * domain). */
  int migration;
  enum config_migration_external migration_external;
  long max_deletes;
  long max_delete_share; /* percent, 1..100 (100: no share guard) */
  long max_creates;
  long interval; /* seconds; [galbridge] interval when not set */
  int line;
  /* manager = yes (default): each copy's manager is the link's copy of
   * its source manager, or none; no: galbridge leaves managers alone. */
  int manager;
  /* photos = yes (guest and mail user links only: a mail contact has no
   * photo in Graph): each copy gets its source person's profile photo,
   * checked every photo_interval seconds, none over photo_max_bytes. */
  int photos;
  long photo_max_bytes;
  long photo_interval;
  /* What the link's source objects are stored and anchored under: the
   * source's tenant id, or "<tenant id>#groups" for object = groupcontact
   * (groups/delta has its own delta link and its own objects, and a
   * group's copy its own anchor namespace: "galbridge:<tenant
   * id>#groups:<group id>", which no user link's listing matches). */
  char source_key[CONFIG_SOURCE_KEY_MAX];
};

struct config {
  char *path;
  char *state_dir;
  enum log_level log_level;
  long interval;
  char *metrics_file; /* NULL if unset */
  /* The key of the proof in anchors (anchor.h), checked like a client
   * secret file (absolute once loaded); NULL: anchors carry no proof and
   * only the state proves what galbridge made. Read by anchor_key_load,
   * never by config. */
  char *anchor_key_file;
  struct config_tenant *tenants;
  size_t n_tenants;
  struct config_link *links;
  size_t n_links;
  struct config_mapping *mappings;
  size_t n_mappings;
};

/* The GUIDs of a scope_group or exclude_group value. */
#define CONFIG_GUID_LEN 36
/* Each group is listed again every round (its transitive members, paged):
 * twenty lists cost twenty listings a round. For more, nest the groups in
 * one: members of nested groups count. */
#define CONFIG_GUIDS_MAX 20
#define CONFIG_GUIDS_SEP ","
/* How many GUIDs `list` holds (0 for NULL). */
size_t config_guids_count(const char *list);
/* The i-th GUID of `list` (from 0) copied into out; returns out, or NULL
 * (out untouched) past the end. */
const char *config_guid_at(const char *list, size_t i,
                           char out[CONFIG_GUID_LEN + 1]);

/* Parse and validate `path`. On success *out is a new config (free with
 * config_free) and 0 is returned. On failure returns -1, *out is NULL and
 * `err` holds "file:line: message" (or "file: message" when no line
 * applies), e.g. "galbridge.conf:12: unknown key 'intervall' in [link
 * a-to-b]; did you mean 'interval'?". Only the first error is reported;
 * "file" is `path` as given. `err` may be NULL or short (the message is
 * cut, always NUL-terminated). A NULL `path` or `out` returns -1. Reads
 * $CREDENTIALS_DIRECTORY; stats but never reads secret files. Never
 * exits, never prints; aborts only when out of memory. */
int config_load(const char *path, struct config **out, char *err,
                size_t errlen) __attribute__((warn_unused_result));
void config_free(struct config *cfg); /* NULL is fine */

/* config_load() on `len` bytes of file text already in memory (for the
 * fuzz targets): `path` stands for the file in messages and cfg->path,
 * and relative paths resolve against `dir` (absolute, not checked) as
 * they would against the file's directory. A NULL `text` reads as
 * empty; a NULL `dir` returns -1. Otherwise the same contract. */
int config_load_buffer(const char *path, const char *dir, const char *text,
                       size_t len, struct config **out, char *err,
                       size_t errlen) __attribute__((warn_unused_result));

/* Write the effective configuration (defaults filled in, secret file
 * paths shown but never their contents) as INI to `fp`. Comments stand on
 * lines of their own, so the output loads back as the same config. Does
 * nothing when either argument is NULL. */
void config_dump(const struct config *cfg, FILE *fp);

/* config_dump() with the keys a reload cannot change marked: after each
 * [galbridge], [tenant] and [link] header, one comment line names them
 * and what a change takes instead, e.g. "# a reload cannot change source,
 * target, object, anchor (make a new link, or restart galbridge)". What
 * check-config prints; it loads back as the same config too. */
void config_dump_marked(const struct config *cfg, FILE *fp);

/* Whether `next` may replace `old` in a running daemon (SIGHUP). The key
 * tables decide: every key not marked reloadable must keep its value in
 * [galbridge] and in each [tenant] and [link] both configs have (by
 * name); sections may come and go. A [link]'s source and target compare
 * by their tenants' tenant_id. Returns 0 when nothing such changed, else
 * -1 with the first change (tenants, then links, then [galbridge]) in
 * `err` (may be NULL or short), "file" being next's path:
 *   "file:line: tenant 'NAME': tenant_id cannot change on reload (restart
 *   galbridge)", "file:line: link 'NAME': anchor cannot change on reload
 *   (make a new link, or restart galbridge)" (line: the section header's),
 *   "file: state_dir cannot change without a restart (OLD -> NEW)".
 * A NULL config returns -1. */
int config_reload_check(const struct config *old, const struct config *next,
                        char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The section of that name (borrowed from cfg), or NULL; NULL-safe. */
const struct config_tenant *config_tenant_find(const struct config *cfg,
                                               const char *name);
const struct config_link *config_link_find(const struct config *cfg,
                                           const char *name);

/* Commands that sync or plan to (check-config, sync, plan, run, and a
 * reload of run) need at least one [link]: returns 0 when cfg has one,
 * else -1 with "file: no [link] sections: nothing to sync" in `err` (may
 * be NULL or short). A config without links is otherwise valid: doctor
 * checks its tenants. */
int config_require_links(const struct config *cfg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Whether links a and b may both write one person's object: the same
 * source and target tenants (by tenant id) and the same object kind, or
 * a guest and a mail user link (both make Graph users in the target, and
 * a mail user's CustomAttributeN is its extensionAttributeN, where both
 * keep their anchor). Whatever their scopes: who is in scope is known
 * only from the tenant's data. NULL-safe; a link never overlaps itself. */
int config_links_overlap(const struct config_link *a,
                         const struct config_link *b);

/* Write one "file:line: warning: ..." line to `fp` (NULL: count only) for
 * each pair of links of cfg that overlap (config_links_overlap), naming
 * both and their lines; returns the number of pairs. check-config prints
 * them to stderr: a person in scope of both is a conflict for both links,
 * and nothing is written for them. */
size_t config_warn_overlaps(const struct config *cfg, FILE *fp);

/* The config file's spelling of an object kind ("guest", "mailcontact",
 * "mailuser", "groupcontact"); "unknown" for a value outside the enum.
 * Static string. */
const char *config_object_name(enum config_object object);

/* Whether the link makes mail contacts in the target (object =
 * mailcontact or groupcontact): Exchange's New-/Set-/Remove-MailContact,
 * the contacts listed on Exchange's side. NULL-safe (0). */
int config_link_contacts(const struct config_link *link);

/* What the link's source objects are stored and anchored under (see
 * struct config_link's source_key); a link not made by config_load()
 * whose source_key is empty reads as its source's tenant id. Borrowed
 * from the link. */
const char *config_link_source_key(const struct config_link *link);

#endif
