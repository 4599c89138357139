/*
 * store — see include/store.h.
 *
 * Prepared statements are made once per open database and reset after
 * each use. Migrations are a list of SQL scripts indexed by the version
 * they lead to; store_open() applies those above the file's user_version,
 * each in one transaction together with the version bump, so a crash
 * mid-migration leaves the older schema intact.
 */
#include "store.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"

enum stmt_id {
  ST_BEGIN,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_SOURCE_GET,
  ST_SOURCE_PUT,
  ST_SOURCE_COUNT,
  ST_DELTA_GET,
  ST_DELTA_START_FULL,
  ST_DELTA_START,
  ST_DELTA_FINISH,
  ST_MARK_UNSEEN,
  ST_LINK_OBJECTS,
  ST_LINK_OPS,
  ST_LINK_STATE,
  ST__COUNT
};

static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SOURCE_GET] = "SELECT attrs, removed FROM source_object"
                      " WHERE tenant = ?1 AND id = ?2",
    [ST_SOURCE_PUT] =
        "INSERT INTO source_object (tenant, id, attrs, removed, seen_gen)"
        " VALUES (?1, ?2, ?3, ?4, ?5)"
        " ON CONFLICT (tenant, id) DO UPDATE SET attrs = excluded.attrs,"
        " removed = excluded.removed, seen_gen = excluded.seen_gen",
    [ST_SOURCE_COUNT] = "SELECT removed, count(*) FROM source_object"
                        " WHERE tenant = ?1 GROUP BY removed",
    [ST_DELTA_GET] = "SELECT delta_link, select_list, gen, full,"
                     " last_round, last_started FROM delta_state"
                     " WHERE tenant = ?1",
    [ST_DELTA_START_FULL] =
        "INSERT INTO delta_state (tenant, delta_link, select_list, gen,"
        " full, last_round, last_started) VALUES (?1, NULL, ?2, 1, 1, 0, ?3)"
        " ON CONFLICT (tenant) DO UPDATE SET delta_link = NULL,"
        " select_list = excluded.select_list, gen = gen + 1, full = 1,"
        " last_started = excluded.last_started RETURNING gen",
    [ST_DELTA_START] = "UPDATE delta_state SET last_started = ?2"
                       " WHERE tenant = ?1",
    [ST_DELTA_FINISH] = "UPDATE delta_state SET delta_link = ?2, full = 0,"
                        " last_round = ?3 WHERE tenant = ?1",
    [ST_MARK_UNSEEN] = "UPDATE source_object SET removed = 2"
                       " WHERE tenant = ?1 AND removed <> 2"
                       " AND seen_gen < ?2",
    [ST_LINK_OBJECTS] = "SELECT count(*) FROM target_object WHERE link = ?1",
    [ST_LINK_OPS] = "SELECT state, count(*) FROM op WHERE link = ?1"
                    " GROUP BY state",
    [ST_LINK_STATE] = "SELECT deletes_held, last_success FROM link_state"
                      " WHERE link = ?1",
};

/* migrations[v] leads from version v-1 to v. */
static const char *const migrations[STORE_SCHEMA_VERSION + 1] = {
    [1] = "CREATE TABLE source_object ("
          " tenant TEXT NOT NULL,"
          " id TEXT NOT NULL,"
          " attrs TEXT NOT NULL,"
          " removed INTEGER NOT NULL DEFAULT 0,"
          " seen_gen INTEGER NOT NULL DEFAULT 0,"
          " PRIMARY KEY (tenant, id)) WITHOUT ROWID;"
          "CREATE TABLE delta_state ("
          " tenant TEXT PRIMARY KEY,"
          " delta_link TEXT,"
          " select_list TEXT,"
          " gen INTEGER NOT NULL DEFAULT 0,"
          " full INTEGER NOT NULL DEFAULT 0,"
          " last_round INTEGER NOT NULL DEFAULT 0,"
          " last_started INTEGER NOT NULL DEFAULT 0);"
          "CREATE TABLE target_object ("
          " link TEXT NOT NULL,"
          " source_id TEXT NOT NULL,"
          " target_id TEXT,"
          " applied_hash TEXT,"
          " PRIMARY KEY (link, source_id));"
          "CREATE TABLE op ("
          " id INTEGER PRIMARY KEY,"
          " link TEXT NOT NULL,"
          " kind TEXT NOT NULL,"
          " source_id TEXT NOT NULL,"
          " payload TEXT,"
          " state TEXT NOT NULL DEFAULT 'pending',"
          " attempts INTEGER NOT NULL DEFAULT 0,"
          " last_error TEXT);"
          "CREATE INDEX op_link ON op (link, state);"
          "CREATE TABLE link_state ("
          " link TEXT PRIMARY KEY,"
          " deletes_held INTEGER NOT NULL DEFAULT 0,"
          " last_success INTEGER NOT NULL DEFAULT 0);",
};

struct store {
  sqlite3 *db;
  sqlite3_stmt *stmt[ST__COUNT];
  int in_tx;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;
  if (err == NULL || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static sqlite3_stmt *
prep(struct store *store, enum stmt_id id)
{
  sqlite3_stmt *st = store->stmt[id];

  if (st == NULL) {
    if (sqlite3_prepare_v3(store->db, stmt_sql[id], -1,
                           SQLITE_PREPARE_PERSISTENT, &st,
                           NULL) != SQLITE_OK) {
      log_error("store: cannot prepare statement: %s",
                sqlite3_errmsg(store->db));
      return NULL;
    }
    store->stmt[id] = st;
  }
  return st;
}

static int
fail(struct store *store, sqlite3_stmt *st, const char *what)
{
  log_error("store: %s failed: %s", what, sqlite3_errmsg(store->db));
  if (st != NULL)
    sqlite3_reset(st);
  return -1;
}

/* Run a statement that returns no rows. */
static int
exec_stmt(struct store *store, sqlite3_stmt *st, const char *what)
{
  int rc = sqlite3_step(st);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW)
    return fail(store, st, what);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

static int
bind_text(sqlite3_stmt *st, int i, const char *s)
{
  if (s == NULL)
    return sqlite3_bind_null(st, i);
  return sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
}

static char *
col_strdup(sqlite3_stmt *st, int i)
{
  const unsigned char *s = sqlite3_column_text(st, i);
  return s == NULL ? NULL : strdup((const char *)s);
}

static int
migrate(struct store *store, char *err, size_t errlen)
{
  sqlite3_stmt *st = NULL;
  int version = 0;
  char *msg = NULL;

  if (sqlite3_prepare_v2(store->db, "PRAGMA user_version", -1, &st, NULL) !=
          SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW) {
    set_err(err, errlen, "cannot read schema version: %s",
            sqlite3_errmsg(store->db));
    sqlite3_finalize(st);
    return -1;
  }
  version = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);

  if (version > STORE_SCHEMA_VERSION) {
    set_err(err, errlen,
            "state.db has schema version %d, newer than this galbridge "
            "understands (%d); use a newer galbridge or a fresh state_dir",
            version, STORE_SCHEMA_VERSION);
    return -1;
  }

  for (int v = version + 1; v <= STORE_SCHEMA_VERSION; v++) {
    char pragma[64];
    snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", v);
    if (sqlite3_exec(store->db, "BEGIN IMMEDIATE", NULL, NULL, &msg) !=
            SQLITE_OK ||
        sqlite3_exec(store->db, migrations[v], NULL, NULL, &msg) !=
            SQLITE_OK ||
        sqlite3_exec(store->db, pragma, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(store->db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
      set_err(err, errlen, "migration to schema version %d failed: %s", v,
              msg != NULL ? msg : sqlite3_errmsg(store->db));
      sqlite3_free(msg);
      sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
      return -1;
    }
    log_info("store: migrated schema version=%d", v);
  }
  return 0;
}

int
store_open(const char *state_dir, struct store **out, char *err, size_t errlen)
{
  struct store *store = NULL;
  char path[4096];
  char *msg = NULL;
  int result = -1;

  *out = NULL;
  if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
    set_err(err, errlen, "cannot create state_dir %s: %s", state_dir,
            strerror(errno));
    return -1;
  }
  if ((size_t)snprintf(path, sizeof(path), "%s/state.db", state_dir) >=
      sizeof(path)) {
    set_err(err, errlen, "state_dir path too long");
    return -1;
  }

  store = calloc(1, sizeof(*store));
  if (store == NULL) {
    set_err(err, errlen, "out of memory");
    return -1;
  }
  if (sqlite3_open_v2(path, &store->db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                          SQLITE_OPEN_NOMUTEX,
                      NULL) != SQLITE_OK) {
    set_err(err, errlen, "cannot open %s: %s", path,
            store->db ? sqlite3_errmsg(store->db) : "out of memory");
    goto out;
  }
  sqlite3_busy_timeout(store->db, 5000);
  sqlite3_extended_result_codes(store->db, 1);
  /* WAL: readers (status) never block the daemon's writes. synchronous
   * NORMAL in WAL mode keeps every commit atomic and consistent across a
   * crash of the process; only an OS crash may lose the last commits,
   * which the outbox and delta re-reads make up for. */
  if (sqlite3_exec(store->db,
                   "PRAGMA journal_mode = WAL;"
                   "PRAGMA synchronous = NORMAL;"
                   "PRAGMA foreign_keys = ON;",
                   NULL, NULL, &msg) != SQLITE_OK) {
    set_err(err, errlen, "cannot set up %s: %s", path,
            msg ? msg : sqlite3_errmsg(store->db));
    sqlite3_free(msg);
    goto out;
  }
  if (migrate(store, err, errlen) != 0)
    goto out;
  result = 0;

out:
  if (result != 0) {
    store_close(store);
    return -1;
  }
  *out = store;
  return 0;
}

void
store_close(struct store *store)
{
  if (store == NULL)
    return;
  if (store->in_tx)
    store_rollback(store);
  for (int i = 0; i < ST__COUNT; i++)
    sqlite3_finalize(store->stmt[i]);
  sqlite3_close(store->db);
  free(store);
}

int
store_begin(struct store *store)
{
  sqlite3_stmt *st = prep(store, ST_BEGIN);
  if (st == NULL || exec_stmt(store, st, "begin") != 0)
    return -1;
  store->in_tx = 1;
  return 0;
}

int
store_commit(struct store *store)
{
  sqlite3_stmt *st = prep(store, ST_COMMIT);
  if (st == NULL || exec_stmt(store, st, "commit") != 0)
    return -1;
  store->in_tx = 0;
  return 0;
}

void
store_rollback(struct store *store)
{
  sqlite3_stmt *st;

  if (!store->in_tx)
    return;
  store->in_tx = 0;
  st = prep(store, ST_ROLLBACK);
  if (st != NULL)
    (void)exec_stmt(store, st, "rollback");
}

int
store_source_get(struct store *store, const char *tenant_id, const char *id,
                 char **attrs, int *removed)
{
  sqlite3_stmt *st = prep(store, ST_SOURCE_GET);
  int rc;

  *attrs = NULL;
  *removed = STORE_PRESENT;
  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant_id);
  bind_text(st, 2, id);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *attrs = col_strdup(st, 0);
    *removed = sqlite3_column_int(st, 1);
    if (*attrs == NULL) {
      sqlite3_reset(st);
      log_error("store: out of memory reading source object");
      return -1;
    }
  } else if (rc != SQLITE_DONE) {
    return fail(store, st, "reading a source object");
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

int
store_source_put(struct store *store, const char *tenant_id, const char *id,
                 const char *attrs, int removed, long long gen)
{
  sqlite3_stmt *st = prep(store, ST_SOURCE_PUT);

  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant_id);
  bind_text(st, 2, id);
  bind_text(st, 3, attrs);
  sqlite3_bind_int(st, 4, removed);
  sqlite3_bind_int64(st, 5, gen);
  return exec_stmt(store, st, "writing a source object");
}

int
store_source_count(struct store *store, const char *tenant_id,
                   struct store_source_counts *out)
{
  sqlite3_stmt *st = prep(store, ST_SOURCE_COUNT);
  int rc;

  memset(out, 0, sizeof(*out));
  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant_id);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    long long n = sqlite3_column_int64(st, 1);
    switch (sqlite3_column_int(st, 0)) {
    case STORE_PRESENT:
      out->present = n;
      break;
    case STORE_SOFT_DELETED:
      out->soft_deleted = n;
      break;
    default:
      out->deleted += n;
      break;
    }
  }
  if (rc != SQLITE_DONE)
    return fail(store, st, "counting source objects");
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

int
store_delta_get(struct store *store, const char *tenant_id,
                struct store_delta_state *out)
{
  sqlite3_stmt *st = prep(store, ST_DELTA_GET);
  int rc;

  memset(out, 0, sizeof(*out));
  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant_id);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    out->delta_link = col_strdup(st, 0);
    out->select = col_strdup(st, 1);
    out->gen = sqlite3_column_int64(st, 2);
    out->full = sqlite3_column_int(st, 3);
    out->last_round = (time_t)sqlite3_column_int64(st, 4);
    out->last_started = (time_t)sqlite3_column_int64(st, 5);
  } else if (rc != SQLITE_DONE) {
    return fail(store, st, "reading delta state");
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

void
store_delta_state_clear(struct store_delta_state *state)
{
  free(state->delta_link);
  free(state->select);
  memset(state, 0, sizeof(*state));
}

int
store_delta_start_full(struct store *store, const char *tenant_id,
                       const char *select, time_t now, long long *gen)
{
  sqlite3_stmt *st = prep(store, ST_DELTA_START_FULL);
  int rc;

  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant_id);
  bind_text(st, 2, select);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)now);
  rc = sqlite3_step(st);
  if (rc != SQLITE_ROW)
    return fail(store, st, "starting a full read");
  *gen = sqlite3_column_int64(st, 0);
  /* RETURNING: step to completion so the write is done before reset. */
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    ;
  if (rc != SQLITE_DONE)
    return fail(store, st, "starting a full read");
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

int
store_delta_start(struct store *store, const char *tenant_id, time_t now)
{
  sqlite3_stmt *st = prep(store, ST_DELTA_START);

  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant_id);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)now);
  return exec_stmt(store, st, "starting a delta round");
}

int
store_delta_finish(struct store *store, const char *tenant_id,
                   const char *delta_link, long long gen, time_t now,
                   long long *unseen)
{
  struct store_delta_state state;
  sqlite3_stmt *st;
  int was_full;

  if (unseen != NULL)
    *unseen = 0;
  if (store_delta_get(store, tenant_id, &state) != 0)
    return -1;
  was_full = state.full;
  store_delta_state_clear(&state);

  if (was_full) {
    st = prep(store, ST_MARK_UNSEEN);
    if (st == NULL)
      return -1;
    bind_text(st, 1, tenant_id);
    sqlite3_bind_int64(st, 2, gen);
    if (exec_stmt(store, st, "marking unseen objects") != 0)
      return -1;
    if (unseen != NULL)
      *unseen = sqlite3_changes64(store->db);
  }

  st = prep(store, ST_DELTA_FINISH);
  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant_id);
  bind_text(st, 2, delta_link);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)now);
  if (exec_stmt(store, st, "saving the delta link") != 0)
    return -1;
  if (sqlite3_changes64(store->db) != 1) {
    log_error("store: no delta state for tenant=%s", tenant_id);
    return -1;
  }
  return 0;
}

int
store_link_counts(struct store *store, const char *link,
                  struct store_link_counts *out)
{
  sqlite3_stmt *st;
  int rc;

  memset(out, 0, sizeof(*out));

  st = prep(store, ST_LINK_OBJECTS);
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  if (sqlite3_step(st) != SQLITE_ROW)
    return fail(store, st, "counting target objects");
  out->objects = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);

  st = prep(store, ST_LINK_OPS);
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *state = (const char *)sqlite3_column_text(st, 0);
    if (state != NULL && strcmp(state, "failed") == 0)
      out->failed += sqlite3_column_int64(st, 1);
    else
      out->pending += sqlite3_column_int64(st, 1);
  }
  if (rc != SQLITE_DONE)
    return fail(store, st, "counting operations");
  sqlite3_reset(st);

  st = prep(store, ST_LINK_STATE);
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    out->deletes_held = sqlite3_column_int64(st, 0);
    out->last_success = (time_t)sqlite3_column_int64(st, 1);
  } else if (rc != SQLITE_DONE) {
    return fail(store, st, "reading link state");
  }
  sqlite3_reset(st);
  return 0;
}
