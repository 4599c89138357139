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
#include <sys/file.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "log.h"
#include "text.h"

enum stmt_id {
  ST_BEGIN,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_SOURCE_GET,
  ST_SOURCE_PUT,
  ST_SOURCE_BAD,
  ST_SOURCE_COUNT,
  ST_DELTA_GET,
  ST_DELTA_START_FULL,
  ST_DELTA_START,
  ST_DELTA_FINISH,
  ST_MARK_UNSEEN,
  ST_LINK_OBJECTS,
  ST_LINK_OPS,
  ST_LINK_STATE,
  ST_PLAN_ROWS,
  ST_PLAN_ROW_ONE,
  ST_OP_PUT,
  ST_OP_DELETE,
  ST_OPS_LIST,
  ST_OP_SET_TARGET,
  ST_OP_FAIL,
  ST_TARGET_PUT,
  ST_TARGET_DELETE,
  ST_TARGET_STATE,
  ST_HELD_COUNT,
  ST_HELD_SET,
  ST_APPROVE,
  ST_HELD_CREATES,
  ST_APPROVE_CREATES,
  ST_SUCCESS,
  ST_CLEAR_FAILED,
  ST_RETRY_DUE,
  ST_DELTA_RESET,
  ST_UNVERIFIED,
  ST_SET_VISIBLE,
  ST_NOT_VISIBLE,
  ST_PLAN_ROWS_SINCE,
  ST_PLAN_CHANGED_CLEAR,
  ST_PLAN_CHANGED_FILL,
  ST_SEQ_NOW,
  ST_PLAN_MARK_GET,
  ST_PLAN_MARK_SET,
  ST_REPLAN_ADD,
  ST_REPLAN_CLEAR,
  ST_RUN_START,
  ST_RUN_DONE,
  ST_KEYS_CLEAR,
  ST_KEY_ADD,
  ST_KEY_LOOKUP,
  ST_KEYS_UNSEEN,
  ST_CLAIMS_OF,
  ST_CLAIMS_DROP,
  ST_CLAIM_ADD,
  ST_CLAIM_OTHERS,
  ST_TARGET_OWNER,
  ST_OP_SENT,
  ST_TAKE_UP,
  ST_SOURCE_STUB,
  ST_ANCHOR_KEYS,
  ST_LINK_EMPTY,
  ST_FAILS_DUE_REPLAN,
  ST_FAILS_DUE_DROP,
  ST_CLEAR_DECIDED,
  ST_STORE_EMPTY,
  ST_TARGETS_UNSEEN,
  ST_CLAIM_LINKS,
  ST_CLAIM_LINK_PARTNERS,
  ST_CLAIMS_DROP_LINK,
  ST_MAILBOX_PUT,
  ST_SOURCE_BUMP,
  ST_MAILBOX_GET,
  ST_MAILBOX_MARK_GET,
  ST_MAILBOX_MARK_SET,
  ST_TARGET_BY_ID,
  ST_TARGET_VISIBLE,
  ST_TARGET_RESTAMP,
  ST_LINK_COPIES,
  ST_MOVED_COPIES,
  ST_BUDGET_GET,
  ST_BUDGET_PUT,
  /* profile photos (photo table) */
  ST_PHOTOS_DUE,
  ST_PHOTO_PUT,
  ST_PHOTO_GET,
  ST_PHOTO_COUNTS,
  ST_LINK_KIND_GET,
  ST_LINK_KIND_SET,
  ST__COUNT
};

/* A plan row (struct store_plan_row, in plan_rows_step()'s order): the
 * source object s, its mailbox m, the link's target row t and op o, and
 * the target object g as the target tenant's own read shows it. ?1 link,
 * ?2 source tenant, ?3 target tenant. */
#define PLAN_ROW_COLUMNS                                                      \
  "SELECT s.id, s.attrs, s.removed, t.target_id, t.hash, t.applied,"          \
  " t.state, o.id, o.kind, o.hash, o.state, g.removed, g.attrs,"              \
  " o.last_error, s.bad, m.record, ms.id, ms.attrs, mt.target_id"
/* ms: the manager s names ("manager", graph_delta_merge), present and
 * not refused; mt: this link's active copy of it. Text that is not JSON
 * (a damaged row) names no manager rather than failing the statement;
 * the expression is schema 7's index's, word for word. */
#define PLAN_ROW_JOINS                                                        \
  " LEFT JOIN mailbox m ON m.tenant = ?2 AND m.id = s.id"                     \
  " LEFT JOIN target_object t ON t.link = ?1 AND t.source_id = s.id"          \
  " LEFT JOIN op o ON o.link = ?1 AND o.source_id = s.id"                     \
  " LEFT JOIN source_object g ON g.tenant = ?3 AND g.id = t.target_id"        \
  " LEFT JOIN source_object ms ON ms.tenant = ?2 AND ms.id ="                 \
  " (CASE WHEN json_valid(s.attrs) THEN json_extract(s.attrs,"                \
  " '$.manager') END) AND ms.removed = 0 AND ms.bad IS NULL"                  \
  " LEFT JOIN target_object mt ON mt.link = ?1 AND mt.source_id = ms.id"      \
  " AND mt.state = 'active' AND mt.target_id IS NOT NULL"

static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SOURCE_GET] = "SELECT attrs, removed FROM source_object"
                      " WHERE tenant = ?1 AND id = ?2",
    [ST_SOURCE_PUT] =
        "INSERT INTO source_object (tenant, id, attrs, removed, seen_gen,"
        " seq) VALUES (?1, ?2, ?3, ?4, ?5,"
        " (SELECT coalesce(max(seq), 0) + 1 FROM source_object))"
        " ON CONFLICT (tenant, id) DO UPDATE SET attrs = excluded.attrs,"
        " removed = excluded.removed, seen_gen = excluded.seen_gen,"
        " bad = NULL,"
        /* Only a change moves the object into the next incremental plan
         * (an object no longer refused is one). */
        " seq = CASE WHEN source_object.attrs IS excluded.attrs AND"
        " source_object.removed = excluded.removed AND"
        " source_object.bad IS NULL THEN source_object.seq"
        " ELSE excluded.seq END",
    /* A refused item: what is stored stays, but the object was seen and
     * why it was refused is kept (an object never stored gets no
     * attributes). */
    [ST_SOURCE_BAD] =
        "INSERT INTO source_object (tenant, id, attrs, removed, seen_gen,"
        " seq, bad) VALUES (?1, ?2, '{}', 0, ?3,"
        " (SELECT coalesce(max(seq), 0) + 1 FROM source_object), ?4)"
        " ON CONFLICT (tenant, id) DO UPDATE SET seen_gen = excluded.seen_gen,"
        " bad = excluded.bad,"
        " seq = CASE WHEN source_object.bad IS excluded.bad"
        " THEN source_object.seq ELSE excluded.seq END",
    [ST_SOURCE_COUNT] = "SELECT removed, count(*) FROM source_object"
                        " WHERE tenant = ?1 GROUP BY removed",
    [ST_DELTA_GET] = "SELECT delta_link, select_list, gen, full,"
                     " last_round, last_started, base_url FROM delta_state"
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
                        " last_round = ?3, base_url = ?4 WHERE tenant = ?1",
    [ST_MARK_UNSEEN] =
        "UPDATE source_object SET removed = 2,"
        " seq = (SELECT coalesce(max(seq), 0) + 1 FROM source_object)"
        " WHERE tenant = ?1 AND removed <> 2 AND seen_gen < ?2",
    [ST_LINK_OBJECTS] = "SELECT objects FROM link_state WHERE link = ?1",
    /* Refused: what the planner refused (kind fail), and conflicts the
     * executor found before writing (their errors say so). */
    [ST_LINK_OPS] = "SELECT state, state = 'failed' AND (kind = 'fail' OR"
                    " last_error LIKE 'conflict:%'), count(*) FROM op"
                    " WHERE link = ?1 GROUP BY 1, 2",
    [ST_LINK_STATE] = "SELECT deletes_held, last_success, run_started,"
                      " run_done FROM link_state WHERE link = ?1",
    [ST_PLAN_ROWS] = PLAN_ROW_COLUMNS
    " FROM source_object s" PLAN_ROW_JOINS
    " WHERE s.tenant = ?2 AND s.id > ?4 ORDER BY s.id LIMIT ?5",
    /* The same for one object, ?4. */
    [ST_PLAN_ROW_ONE] = PLAN_ROW_COLUMNS " FROM source_object s" PLAN_ROW_JOINS
                                         " WHERE s.tenant = ?2 AND s.id = ?4",
    /* The same, only for objects changed since seq ?6: the ids
     * ST_PLAN_CHANGED_FILL listed when the first chunk was asked for.
     * CROSS JOIN: from the changed ids to their rows, never a scan of the
     * tenant. */
    [ST_PLAN_ROWS_SINCE] = PLAN_ROW_COLUMNS
    " FROM temp.plan_changed c CROSS JOIN source_object s"
    " ON s.tenant = ?2 AND s.id = c.id" PLAN_ROW_JOINS
    " WHERE c.link = ?1 AND c.id > ?4 ORDER BY c.id LIMIT ?5",
    [ST_PLAN_CHANGED_CLEAR] = "DELETE FROM temp.plan_changed WHERE link = ?1",
    /* Objects changed since seq ?6: the source object itself, its target
     * object as the target tenant's delta saw it, or an outcome of the
     * executor that asks for a new decision. Listed once per plan, not
     * once per chunk (each chunk would otherwise gather them all again:
     * a first round's plan grew with the square of the tenant). */
    [ST_PLAN_CHANGED_FILL] =
        "INSERT OR IGNORE INTO temp.plan_changed (link, id)"
        " SELECT ?1, id FROM source_object WHERE tenant = ?2 AND seq > ?6"
        " UNION SELECT ?1, t2.source_id FROM source_object g2"
        " JOIN target_object t2 ON t2.link = ?1 AND t2.target_id = g2.id"
        " WHERE g2.tenant = ?3 AND g2.seq > ?6"
        /* the reports of a manager changed in the source (its scope):
         * one pass over the tenant's entries of source_manager_by_tenant
         * (no JSON read), not a scan of the tenant's rows for each
         * changed object (a join did that: 18 s for 2,000 new people) */
        " UNION SELECT ?1, r.id FROM source_object r WHERE r.tenant = ?2"
        " AND (CASE WHEN json_valid(r.attrs) THEN json_extract(r.attrs,"
        " '$.manager') END) IN (SELECT mg.id FROM source_object mg"
        " WHERE mg.tenant = ?2 AND mg.seq > ?6)"
        " UNION SELECT ?1, source_id FROM replan WHERE link = ?1",
    [ST_SEQ_NOW] = "SELECT coalesce(max(seq), 0) FROM source_object",
    /* A source mailbox's record: a new or different one makes its source
     * object changed for incremental planning (ST_SOURCE_BUMP). */
    [ST_MAILBOX_PUT] =
        "INSERT INTO mailbox (tenant, id, record) VALUES (?1, ?2, ?3)"
        " ON CONFLICT (tenant, id) DO UPDATE SET record = excluded.record"
        " WHERE mailbox.record IS NOT excluded.record",
    [ST_SOURCE_BUMP] =
        "UPDATE source_object SET"
        " seq = (SELECT coalesce(max(seq), 0) + 1 FROM source_object)"
        " WHERE tenant = ?1 AND id = ?2",
    [ST_TARGET_VISIBLE] = "SELECT exo_visible FROM target_object"
                          " WHERE link = ?1 AND source_id = ?2",
    [ST_TARGET_BY_ID] = "SELECT source_id, applied FROM target_object"
                        " WHERE link = ?1 AND target_id = ?2"
                        " AND state = 'active'",
    /* The stamps are no longer known to be on the copy: the next plan
     * sends them again (an empty hash never equals a decision's). */
    [ST_TARGET_RESTAMP] =
        "UPDATE target_object SET applied = json_remove(applied,"
        " '$.ExchangeGuid', '$.ArchiveGuid', '$.ProxyAddresses'), hash = ''"
        " WHERE link = ?1 AND source_id = ?2",
    [ST_MAILBOX_GET] = "SELECT record FROM mailbox WHERE tenant = ?1"
                       " AND id = ?2",
    [ST_MAILBOX_MARK_GET] = "SELECT mark, full_at FROM mailbox_read"
                            " WHERE tenant = ?1",
    /* migration-check: a link's copies with their source mailboxes. */
    [ST_LINK_COPIES] =
        "SELECT t.source_id, t.target_id, m.record FROM target_object t"
        " JOIN source_object s ON s.tenant = ?2 AND s.id = t.source_id"
        " JOIN mailbox m ON m.tenant = ?2 AND m.id = t.source_id"
        " WHERE t.link = ?1 AND t.state IN ('active', 'recovered') AND"
        " t.target_id IS NOT NULL AND s.removed = 0 ORDER BY t.source_id",
    /* Handed-off copies, with a reverse link's row for each. */
    [ST_MOVED_COPIES] =
        "SELECT f.source_id, f.target_id, r.state FROM target_object f"
        " LEFT JOIN target_object r ON r.link = ?2 AND"
        " r.source_id = f.target_id"
        " WHERE f.link = ?1 AND f.state = 'moved' AND f.target_id IS NOT NULL"
        " ORDER BY f.source_id",
    [ST_BUDGET_GET] = "SELECT limit_count, window, capacity, rate, model"
                      " FROM budget_learnt WHERE gate = ?1 AND bucket = ?2",
    [ST_BUDGET_PUT] =
        "INSERT INTO budget_learnt (gate, bucket, limit_count, window,"
        " capacity, rate, model) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        " ON CONFLICT (gate, bucket) DO UPDATE SET"
        " limit_count = excluded.limit_count, window = excluded.window,"
        " capacity = excluded.capacity, rate = excluded.rate,"
        " model = excluded.model",
    [ST_MAILBOX_MARK_SET] =
        "INSERT INTO mailbox_read (tenant, mark, full_at) VALUES (?1, ?2, ?3)"
        " ON CONFLICT (tenant) DO UPDATE SET mark = excluded.mark,"
        " full_at = CASE WHEN excluded.full_at > 0 THEN excluded.full_at"
        " ELSE mailbox_read.full_at END",
    [ST_LINK_KIND_GET] = "SELECT object, objects FROM link_state"
                         " WHERE link = ?1",
    [ST_LINK_KIND_SET] =
        "INSERT INTO link_state (link, object) VALUES (?1, ?2)"
        " ON CONFLICT (link) DO UPDATE SET object = excluded.object",
    [ST_PLAN_MARK_GET] = "SELECT plan_key, planned_seq FROM link_state"
                         " WHERE link = ?1",
    [ST_PLAN_MARK_SET] =
        "INSERT INTO link_state (link, plan_key, planned_seq)"
        " VALUES (?1, ?2, ?3) ON CONFLICT (link) DO UPDATE SET"
        " plan_key = excluded.plan_key, planned_seq = excluded.planned_seq",
    [ST_REPLAN_ADD] = "INSERT OR IGNORE INTO replan (link, source_id)"
                      " VALUES (?1, ?2)",
    [ST_REPLAN_CLEAR] = "DELETE FROM replan WHERE link = ?1",
    [ST_RUN_START] = "INSERT INTO link_state (link, run_started, run_done)"
                     " VALUES (?1, ?2, 0) ON CONFLICT (link) DO UPDATE SET"
                     " run_started = excluded.run_started, run_done = 0",
    [ST_RUN_DONE] = "UPDATE link_state SET run_done = run_done + ?2"
                    " WHERE link = ?1",
    [ST_OP_PUT] =
        "INSERT INTO op (link, source_id, kind, payload, desired, hash,"
        " state, target_id, created_at, last_error, next_try) VALUES (?1,"
        " ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (link,"
        " source_id) DO UPDATE SET"
        " kind = excluded.kind, payload = excluded.payload,"
        " desired = excluded.desired, hash = excluded.hash,"
        " state = excluded.state,"
        /* A create that replaces a create keeps the object the first one
         * invited: inviting again could make a second one. */
        " target_id = CASE WHEN excluded.kind = 'create' AND op.kind ="
        " 'create' THEN coalesce(op.target_id, excluded.target_id)"
        " ELSE excluded.target_id END,"
        /* A make replacing a make keeps when its request may have left
         * (a restore of a mail contact makes one anew too). */
        " sent_at = CASE WHEN excluded.kind IN ('create', 'restore') AND"
        " op.kind IN ('create', 'restore') THEN op.sent_at ELSE 0 END,"
        " sent_end = CASE WHEN excluded.kind IN ('create', 'restore') AND"
        " op.kind IN ('create', 'restore') THEN op.sent_end ELSE 0 END,"
        " attempts = 0, last_error = excluded.last_error,"
        " next_try = excluded.next_try, created_at = excluded.created_at",
    [ST_OP_DELETE] = "DELETE FROM op WHERE id = ?1",
    [ST_OPS_LIST] =
        "SELECT id, source_id, kind, payload, desired, hash, state, attempts,"
        " last_error, target_id, sent_at, next_try, sent_end FROM op"
        " WHERE link = ?1 AND"
        " state = ?2"
        " AND id > ?4 ORDER BY id LIMIT ?3",
    [ST_OP_SET_TARGET] = "UPDATE op SET target_id = ?2 WHERE id = ?1",
    /* A failure for good (?3) is tried again at ?4 (now) plus a backoff
     * (?5 the first time since the op was queued or resync; then ?5 plus
     * how long the op has been queued, so that the wait about doubles at
     * each failure; ?6 at most). */
    [ST_OP_FAIL] = "UPDATE op SET attempts = attempts + 1, last_error = ?2,"
                   " state = CASE WHEN ?3 THEN 'failed' ELSE state END,"
                   " next_try = CASE WHEN NOT ?3 THEN next_try"
                   " WHEN next_try = 0 THEN ?4 + ?5"
                   " ELSE ?4 + min(?6, max(?5, ?4 - created_at + ?5)) END"
                   " WHERE id = ?1 RETURNING next_try",
    [ST_TARGET_PUT] =
        "INSERT INTO target_object (link, source_id, target_id, hash,"
        " applied, state, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        " ON CONFLICT (link, source_id) DO UPDATE SET"
        /* Checked visible on the Exchange side stays so only while it is
         * the same object, active all along. */
        " exo_visible = CASE WHEN target_object.state = 'active' AND"
        " excluded.state = 'active' AND target_object.target_id ="
        " excluded.target_id THEN target_object.exo_visible ELSE 0 END,"
        " target_id = excluded.target_id, hash = excluded.hash,"
        " applied = excluded.applied, state = excluded.state,"
        " updated_at = excluded.updated_at",
    [ST_TARGET_DELETE] =
        "DELETE FROM target_object WHERE link = ?1 AND source_id = ?2",
    [ST_TARGET_STATE] = "UPDATE target_object SET state = ?3,"
                        " updated_at = ?4 WHERE link = ?1 AND source_id = ?2",
    /* Held deletes are the removals (delete, disable, hide); held
     * creates are counted and released apart (max_creates). */
    [ST_HELD_COUNT] =
        "SELECT count(*) FROM op WHERE link = ?1 AND state = 'held'"
        " AND kind IN ('delete', 'disable', 'hide')",
    [ST_HELD_SET] =
        "INSERT INTO link_state (link, deletes_held) VALUES (?1, ?2)"
        " ON CONFLICT (link) DO UPDATE SET deletes_held = "
        "excluded.deletes_held",
    [ST_APPROVE] = "UPDATE op SET state = 'pending' WHERE link = ?1"
                   " AND state = 'held'"
                   " AND kind IN ('delete', 'disable', 'hide')",
    [ST_HELD_CREATES] = "SELECT count(*) FROM op WHERE link = ?1 AND"
                        " state = 'held' AND kind = 'create'",
    [ST_APPROVE_CREATES] = "UPDATE op SET state = 'pending' WHERE link = ?1"
                           " AND state = 'held' AND kind = 'create'",
    [ST_SUCCESS] =
        "INSERT INTO link_state (link, last_success) VALUES (?1, ?2)"
        " ON CONFLICT (link) DO UPDATE SET last_success = "
        "excluded.last_success",
    [ST_CLEAR_FAILED] = "UPDATE op SET state = 'pending', attempts = 0,"
                        " next_try = 0 WHERE link = ?1 AND state = 'failed'"
                        " AND kind <> 'fail'",
    /* next_try stays: a further failure knows it is not the first. */
    [ST_RETRY_DUE] = "UPDATE op SET state = 'pending' WHERE link = ?1 AND"
                     " state = 'failed' AND next_try <= ?2 AND"
                     " kind NOT IN ('fail', 'conflict')",
    [ST_UNVERIFIED] = "SELECT source_id, target_id FROM target_object"
                      " WHERE link = ?1 AND state = 'active' AND"
                      " exo_visible = 0 AND target_id IS NOT NULL"
                      " ORDER BY updated_at LIMIT ?2",
    [ST_SET_VISIBLE] = "UPDATE target_object SET exo_visible = 1"
                       " WHERE link = ?1 AND source_id = ?2 AND"
                       " target_id = ?3",
    [ST_NOT_VISIBLE] = "SELECT count(*) FROM target_object WHERE link = ?1"
                       " AND state = 'active' AND exo_visible = 0",
    [ST_KEYS_CLEAR] = "DELETE FROM object_key WHERE tenant = ?1 AND id = ?2",
    [ST_KEY_ADD] = "INSERT OR IGNORE INTO object_key (tenant, key, id, value)"
                   " VALUES (?1, ?2, ?3, ?4)",
    [ST_KEY_LOOKUP] = "SELECT id, value FROM object_key"
                      " WHERE tenant = ?1 AND key = ?2 ORDER BY id",
    /* What a full read is about to mark deleted holds nothing any more. */
    [ST_KEYS_UNSEEN] =
        "DELETE FROM object_key WHERE tenant = ?1 AND id IN (SELECT id FROM"
        " source_object WHERE tenant = ?1 AND removed <> 2 AND"
        " seen_gen < ?2)",
    [ST_CLAIMS_OF] = "SELECT key FROM claim WHERE link = ?1 AND"
                     " source_id = ?2 AND target = ?3",
    [ST_CLAIMS_DROP] = "DELETE FROM claim WHERE link = ?1 AND source_id = ?2",
    [ST_CLAIM_ADD] = "INSERT OR IGNORE INTO claim (target, key, link,"
                     " source_id) VALUES (?1, ?2, ?3, ?4)",
    [ST_CLAIM_OTHERS] = "SELECT link, source_id FROM claim WHERE target = ?1"
                        " AND key = ?2 AND NOT (link = ?3 AND"
                        " source_id = ?4) ORDER BY link, source_id",
    /* A target object is someone's when a link's row names it, or an op
     * learnt it (an invitation whose result is not recorded yet). */
    [ST_TARGET_OWNER] = "SELECT link, source_id FROM target_object"
                        " WHERE target_id = ?1 AND NOT (link IS ?2 AND"
                        " source_id IS ?3) UNION SELECT link, source_id"
                        " FROM op WHERE target_id = ?1 AND NOT (link IS ?2"
                        " AND source_id IS ?3) LIMIT 1",
    [ST_OP_SENT] = "UPDATE op SET sent_at = ?2, sent_end = ?3 WHERE id = ?1",
    [ST_TAKE_UP] =
        "INSERT INTO target_object (link, source_id, target_id, hash,"
        " applied, state, updated_at) VALUES (?1, ?2, ?3, '', ?4,"
        " 'recovered', ?5) ON CONFLICT (link, source_id) DO NOTHING",
    /* A copy taken up for a source object the store does not know: it is
     * gone from the source (a full read would have seen it), so it is
     * recorded as deleted there and the copy is planned like any other
     * whose source object went. */
    [ST_SOURCE_STUB] =
        "INSERT INTO source_object (tenant, id, attrs, removed, seen_gen,"
        " seq) VALUES (?1, ?2, '{}', 2, 0,"
        " (SELECT coalesce(max(seq), 0) + 1 FROM source_object))"
        " ON CONFLICT (tenant, id) DO NOTHING",
    [ST_ANCHOR_KEYS] = "SELECT id, value FROM object_key WHERE tenant = ?1"
                       " AND key >= ?2 AND key < ?3 ORDER BY key, id",
    [ST_LINK_EMPTY] =
        "SELECT (SELECT count(*) FROM target_object WHERE link = ?1) +"
        " (SELECT count(*) FROM op WHERE link = ?1) +"
        " (SELECT count(*) FROM link_state WHERE link = ?1 AND"
        " plan_key IS NOT NULL)",
    /* Objects the planner refused are weighed again once their time
     * comes (a holder of their address may have gone meanwhile). */
    [ST_FAILS_DUE_REPLAN] =
        "INSERT OR IGNORE INTO replan (link, source_id) SELECT link,"
        " source_id FROM op WHERE link = ?1 AND kind = 'fail' AND"
        " state = 'failed' AND next_try <= ?2",
    [ST_FAILS_DUE_DROP] = "DELETE FROM op WHERE link = ?1 AND kind = 'fail'"
                          " AND state = 'failed' AND next_try <= ?2",
    [ST_CLEAR_DECIDED] = "DELETE FROM op WHERE link = ?1 AND kind = 'fail'",
    [ST_TARGETS_UNSEEN] =
        "SELECT t.target_id FROM target_object t WHERE t.link = ?1 AND"
        " t.state <> 'deleted' AND t.target_id IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM source_object g WHERE g.tenant = ?2 AND"
        " g.id = t.target_id AND g.seen_gen = ?3) ORDER BY t.target_id",
    [ST_CLAIM_LINKS] = "SELECT DISTINCT link FROM claim ORDER BY link",
    [ST_CLAIM_LINK_PARTNERS] =
        "INSERT OR IGNORE INTO replan (link, source_id) SELECT DISTINCT"
        " o.link, o.source_id FROM claim c JOIN claim o ON o.target ="
        " c.target AND o.key = c.key AND o.link <> c.link WHERE c.link = ?1",
    [ST_CLAIMS_DROP_LINK] = "DELETE FROM claim WHERE link = ?1",
    [ST_STORE_EMPTY] = "SELECT (SELECT count(*) FROM delta_state) +"
                       " (SELECT count(*) FROM target_object) +"
                       " (SELECT count(*) FROM op)",
    [ST_DELTA_RESET] = "UPDATE delta_state SET delta_link = NULL,"
                       " base_url = NULL WHERE tenant = ?1",
    /* A link's active copies whose photo check is due: never checked,
     * checked on another target object, or next_check come; with what
     * the target's own read holds of the copy, and the etag written on
     * it (only when on that same object). Source objects removed or
     * refused are not checked. */
    [ST_PHOTOS_DUE] =
        "SELECT t.source_id, t.target_id, t.applied, o.attrs,"
        " CASE WHEN p.target_id = t.target_id THEN p.etag END,"
        " CASE WHEN p.target_id = t.target_id THEN p.skipped_etag END,"
        " p.error"
        " FROM target_object t"
        " JOIN source_object s ON s.tenant = ?2 AND s.id = t.source_id"
        " AND s.removed = 0"
        " LEFT JOIN source_object o ON o.tenant = ?3 AND o.id = t.target_id"
        " LEFT JOIN photo p ON p.link = t.link AND p.source_id = t.source_id"
        " WHERE t.link = ?1 AND t.state = 'active' AND"
        " t.target_id IS NOT NULL AND (p.source_id IS NULL OR"
        " p.target_id IS NOT t.target_id OR p.next_check <= ?4)"
        " ORDER BY coalesce(p.next_check, 0), t.source_id LIMIT ?5",
    [ST_PHOTO_PUT] = "INSERT OR REPLACE INTO photo (link, source_id,"
                     " target_id, etag, checked_at, next_check, error,"
                     " skipped_etag) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_PHOTO_GET] = "SELECT target_id, etag, checked_at, next_check, error,"
                     " skipped_etag"
                     " FROM photo WHERE link = ?1 AND source_id = ?2",
    [ST_PHOTO_COUNTS] = "SELECT count(p.etag), count(p.error) FROM photo p"
                        " JOIN target_object t ON t.link = p.link AND"
                        " t.source_id = p.source_id AND"
                        " t.target_id = p.target_id AND t.state = 'active'"
                        " WHERE p.link = ?1",
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
          " hash TEXT NOT NULL,"
          " applied TEXT NOT NULL,"
          " state TEXT NOT NULL,"
          " updated_at INTEGER NOT NULL DEFAULT 0,"
          " exo_visible INTEGER NOT NULL DEFAULT 0,"
          " PRIMARY KEY (link, source_id)) WITHOUT ROWID;"
          "CREATE TABLE op ("
          " id INTEGER PRIMARY KEY,"
          " link TEXT NOT NULL,"
          " source_id TEXT NOT NULL,"
          " kind TEXT NOT NULL,"
          " payload TEXT NOT NULL,"
          " desired TEXT NOT NULL,"
          " hash TEXT NOT NULL,"
          " state TEXT NOT NULL DEFAULT 'pending',"
          " attempts INTEGER NOT NULL DEFAULT 0,"
          " last_error TEXT,"
          " target_id TEXT,"
          " created_at INTEGER NOT NULL DEFAULT 0,"
          " UNIQUE (link, source_id));"
          "CREATE INDEX op_link_state ON op (link, state);"
          "CREATE TABLE link_state ("
          " link TEXT PRIMARY KEY,"
          " deletes_held INTEGER NOT NULL DEFAULT 0,"
          " last_success INTEGER NOT NULL DEFAULT 0);",
    /* Incremental planning: a change sequence on source objects, each
     * link's plan mark, and objects the executor asks to decide again. */
    /* source_object becomes a rowid table: its rows (about 1 kB of
     * JSON) are too large for WITHOUT ROWID, which spilled most of them
     * to overflow pages (three times the size on disk). */
    [2] = "CREATE TABLE source_object2 ("
          " tenant TEXT NOT NULL,"
          " id TEXT NOT NULL,"
          " attrs TEXT NOT NULL,"
          " removed INTEGER NOT NULL DEFAULT 0,"
          " seen_gen INTEGER NOT NULL DEFAULT 0,"
          " seq INTEGER NOT NULL DEFAULT 0,"
          " PRIMARY KEY (tenant, id));"
          "INSERT INTO source_object2 (tenant, id, attrs, removed, seen_gen)"
          " SELECT tenant, id, attrs, removed, seen_gen FROM source_object;"
          "DROP TABLE source_object;"
          "ALTER TABLE source_object2 RENAME TO source_object;"
          "CREATE INDEX source_seq ON source_object (tenant, seq);"
          "CREATE INDEX target_by_id ON target_object (link, target_id);"
          "CREATE INDEX target_unverified ON target_object (link, updated_at)"
          " WHERE state = 'active' AND exo_visible = 0;"
          "ALTER TABLE link_state ADD COLUMN plan_key TEXT;"
          "ALTER TABLE link_state ADD COLUMN planned_seq INTEGER NOT NULL"
          " DEFAULT 0;"
          /* Progress of the link's current round, for status. */
          "ALTER TABLE link_state ADD COLUMN run_started INTEGER NOT NULL"
          " DEFAULT 0;"
          "ALTER TABLE link_state ADD COLUMN run_done INTEGER NOT NULL"
          " DEFAULT 0;"
          "CREATE TABLE replan ("
          " link TEXT NOT NULL,"
          " source_id TEXT NOT NULL,"
          " PRIMARY KEY (link, source_id)) WITHOUT ROWID;"
          /* The objects a link manages, kept by triggers so that status
           * and every round read one row instead of counting them. */
          "ALTER TABLE link_state ADD COLUMN objects INTEGER NOT NULL"
          " DEFAULT 0;"
          "INSERT OR IGNORE INTO link_state (link)"
          " SELECT DISTINCT link FROM target_object;"
          "UPDATE link_state SET objects = (SELECT count(*) FROM"
          " target_object t WHERE t.link = link_state.link AND"
          " t.state <> 'deleted');"
          "CREATE TRIGGER target_added AFTER INSERT ON target_object"
          " WHEN new.state <> 'deleted' BEGIN"
          " INSERT INTO link_state (link, objects) VALUES (new.link, 1)"
          " ON CONFLICT (link) DO UPDATE SET objects = objects + 1; END;"
          "CREATE TRIGGER target_removed AFTER DELETE ON target_object"
          " WHEN old.state <> 'deleted' BEGIN"
          " UPDATE link_state SET objects = objects - 1"
          " WHERE link = old.link; END;"
          "CREATE TRIGGER target_changed AFTER UPDATE OF state"
          " ON target_object WHEN (old.state <> 'deleted') <>"
          " (new.state <> 'deleted') BEGIN"
          " UPDATE link_state SET objects = objects +"
          " (CASE WHEN new.state <> 'deleted' THEN 1 ELSE -1 END)"
          " WHERE link = new.link; END;",
    /* The next change sequence is max(seq) + 1 over every tenant: an
     * index led by seq finds it at once, where (tenant, seq) made each
     * write of a source object scan the table (a first round quadratic
     * in the tenant's size). */
    [3] = "CREATE INDEX source_seq_all ON source_object (seq);",
    /* Trust (ownership, conflicts, honest failures):
     *  - op.sent_at: when a create's request may have left (written before
     *    it goes), and op.sent_end when its answer came (0: none came): an
     *    object found later holding the op's address was made by that
     *    request only if it was created between the two;
     *  - op.next_try: when an op failed for good is tried again;
     *  - delta_state.base_url: the Graph base URL its delta link came
     *    from (another base URL means a fresh full read);
     *  - source_object.bad: why the last item of an object was refused
     *    (a value galbridge cannot accept), NULL when it was accepted;
     *  - object_key: every stored object's addresses and anchors, so that
     *    a round can see, before it writes, who in the target holds an
     *    address or carries an anchor;
     *  - claim: the target addresses and source objects each link's
     *    objects stand for, so that two of them never write one object.
     * Every tenant is read again in full once (the delta links are
     * dropped): that fills object_key for what is stored already. */
    [4] = "ALTER TABLE op ADD COLUMN sent_at INTEGER NOT NULL DEFAULT 0;"
          "ALTER TABLE op ADD COLUMN sent_end INTEGER NOT NULL DEFAULT 0;"
          "ALTER TABLE op ADD COLUMN next_try INTEGER NOT NULL DEFAULT 0;"
          "ALTER TABLE delta_state ADD COLUMN base_url TEXT;"
          "ALTER TABLE source_object ADD COLUMN bad TEXT;"
          "CREATE TABLE object_key ("
          " tenant TEXT NOT NULL,"
          " key TEXT NOT NULL,"
          " id TEXT NOT NULL,"
          " value TEXT,"
          " PRIMARY KEY (tenant, key, id)) WITHOUT ROWID;"
          "CREATE INDEX object_key_by_id ON object_key (tenant, id);"
          "CREATE TABLE claim ("
          " target TEXT NOT NULL,"
          " key TEXT NOT NULL,"
          " link TEXT NOT NULL,"
          " source_id TEXT NOT NULL,"
          " PRIMARY KEY (target, key, link, source_id)) WITHOUT ROWID;"
          "CREATE INDEX claim_by_object ON claim (link, source_id);"
          /* Who owns a target object, by its id. */
          "CREATE INDEX target_object_id ON target_object (target_id);"
          "CREATE INDEX op_target_id ON op (target_id);"
          "UPDATE delta_state SET delta_link = NULL;",
    /* Version 5: what migration links read of the source's mailboxes.
     *  - mailbox: one record per source mailbox (exo_mailbox_record's
     *    shape), by its directory object id;
     *  - mailbox_read: per source tenant, the WhenChangedUTC mark the
     *    next incremental read starts from, and when the last full read
     *    was. */
    [5] = "CREATE TABLE mailbox ("
          " tenant TEXT NOT NULL,"
          " id TEXT NOT NULL,"
          " record TEXT NOT NULL,"
          " PRIMARY KEY (tenant, id));"
          "CREATE TABLE mailbox_read ("
          " tenant TEXT PRIMARY KEY,"
          " mark TEXT,"
          " full_at INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;",
    /* Version 6: what the client-side budget learnt of the service's
     * limits, per Graph gate (tenant id and application) and bucket
     * (writes, invitations, units), with the configured limit it was
     * learnt under. Existing state files start with nothing learnt. */
    [6] = "CREATE TABLE budget_learnt ("
          " gate TEXT NOT NULL,"
          " bucket TEXT NOT NULL,"
          " limit_count REAL NOT NULL,"
          " window REAL NOT NULL,"
          " capacity REAL NOT NULL,"
          " rate REAL NOT NULL,"
          " model TEXT NOT NULL,"
          " PRIMARY KEY (gate, bucket)) WITHOUT ROWID;",
    /* Managers (issue 19): a report's copy points at its manager's copy,
     * so a copy of a link made, remade, changed in state or forgotten
     * asks for a new decision on the reports of its source object (the
     * replan table), and a copy just made with a manager on its own (a
     * create never sends the manager). The indexes find the reports of a
     * manager (source_manager, for the triggers; by tenant, for the
     * reports of the changed objects of one plan: ST_PLAN_CHANGED_FILL),
     * and an object by id alone. */
    [7] = "CREATE INDEX IF NOT EXISTS source_by_id ON source_object (id);"
          "CREATE INDEX IF NOT EXISTS source_manager ON source_object"
          " ((CASE WHEN json_valid(attrs) THEN json_extract(attrs,"
          " '$.manager') END)) WHERE (CASE WHEN json_valid(attrs) THEN"
          " json_extract(attrs, '$.manager') END) IS NOT NULL;"
          "CREATE INDEX IF NOT EXISTS source_manager_by_tenant ON"
          " source_object (tenant, (CASE WHEN json_valid(attrs) THEN"
          " json_extract(attrs, '$.manager') END));"
          "CREATE TRIGGER IF NOT EXISTS manager_copy_added AFTER INSERT ON"
          " target_object BEGIN INSERT OR IGNORE INTO replan (link,"
          " source_id) SELECT new.link, id FROM source_object WHERE"
          " (CASE WHEN json_valid(attrs) THEN json_extract(attrs,"
          " '$.manager') END) = new.source_id UNION SELECT new.link, id"
          " FROM source_object WHERE id = new.source_id AND"
          " (CASE WHEN json_valid(attrs) THEN json_extract(attrs,"
          " '$.manager') END) IS NOT NULL; END;"
          "CREATE TRIGGER IF NOT EXISTS manager_copy_changed AFTER UPDATE OF"
          " state, target_id ON target_object WHEN old.state IS NOT"
          " new.state OR old.target_id IS NOT new.target_id BEGIN"
          " INSERT OR IGNORE INTO replan (link, source_id) SELECT new.link,"
          " id FROM source_object WHERE (CASE WHEN json_valid(attrs) THEN"
          " json_extract(attrs, '$.manager') END) = new.source_id; END;"
          "CREATE TRIGGER IF NOT EXISTS manager_copy_removed AFTER DELETE ON"
          " target_object BEGIN INSERT OR IGNORE INTO replan (link,"
          " source_id) SELECT old.link, id FROM source_object WHERE"
          " (CASE WHEN json_valid(attrs) THEN json_extract(attrs,"
          " '$.manager') END) = old.source_id; END;",
    /* Version 8: profile photos (photos = yes). Per copy, the source
     * photo's etag last written on it (NULL: none written), on which
     * target object, when it was last checked and is next due, why the
     * last check wrote nothing, if it failed, and the etag of a source
     * photo refused for good (too large, not an image), so that it is not
     * read again while it stays the same. Never the bytes. */
    [8] = "CREATE TABLE photo ("
          " link TEXT NOT NULL,"
          " source_id TEXT NOT NULL,"
          " target_id TEXT NOT NULL,"
          " etag TEXT,"
          " checked_at INTEGER NOT NULL DEFAULT 0,"
          " next_check INTEGER NOT NULL DEFAULT 0,"
          " error TEXT,"
          " skipped_etag TEXT,"
          " PRIMARY KEY (link, source_id)) WITHOUT ROWID;",
    /* Version 9: the object kind a link makes (config_object_name), recorded
     * at its first start: a link whose kind changes to or from groupcontact
     * while it holds copies is refused (store_link_kind_get). */
    [9] = "ALTER TABLE link_state ADD COLUMN object TEXT;",
};

struct store {
  sqlite3 *db;
  sqlite3_stmt *stmt[ST__COUNT];
  int in_tx;
  int failed; /* a statement failed since store_open(): see store_failed() */
  unsigned long long statements; /* run since store_open() */
};

/* SQLITE_TRACE_STMT: one call each time a statement starts running. */
static int
count_statement(unsigned type, void *ctx, void *p, void *x)
{
  (void)type;
  (void)p;
  (void)x;
  ((struct store *)ctx)->statements++;
  return 0;
}

unsigned long long
store_statements(const struct store *store)
{
  return store->statements;
}

struct store_lock {
  int fd;
};

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

/* " (<strerror>)" when the last error came from the file system (a full
 * or read-only disk says so plainly), else "". */
static const char *
os_error(sqlite3 *db, char *buf, size_t len)
{
  int code = sqlite3_errcode(db) & 0xff;
  int sys = sqlite3_system_errno(db);

  buf[0] = '\0';
  if (sys != 0 && (code == SQLITE_FULL || code == SQLITE_IOERR ||
                   code == SQLITE_CANTOPEN || code == SQLITE_READONLY))
    snprintf(buf, len, " (%s)", strerror(sys));
  return buf;
}

static int
fail(struct store *store, sqlite3_stmt *st, const char *what)
{
  char os[128];

  log_error("store: %s failed: %s%s", what, sqlite3_errmsg(store->db),
            os_error(store->db, os, sizeof(os)));
  store->failed = 1;
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

static const char *
col_text(sqlite3_stmt *st, int i)
{
  return (const char *)sqlite3_column_text(st, i);
}

static char *
col_strdup(sqlite3_stmt *st, int i)
{
  const unsigned char *s = sqlite3_column_text(st, i);
  return s == NULL ? NULL : strdup((const char *)s);
}

static int
read_version(struct store *store, int *version, char *err, size_t errlen)
{
  sqlite3_stmt *st = NULL;

  if (sqlite3_prepare_v2(store->db, "PRAGMA user_version", -1, &st, NULL) !=
          SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW) {
    text_set_err(err, errlen, "cannot read schema version: %s",
                 sqlite3_errmsg(store->db));
    sqlite3_finalize(st);
    return -1;
  }
  *version = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return 0;
}

static int
migrate(struct store *store, char *err, size_t errlen)
{
  int version = 0;
  char *msg = NULL;

  if (read_version(store, &version, err, errlen) != 0)
    return -1;
  while (version < STORE_SCHEMA_VERSION) {
    char pragma[64];
    int v;
    /* Another process may be migrating too (status beside a daemon's
     * first start): read the version again under the write lock. */
    if (sqlite3_exec(store->db, "BEGIN IMMEDIATE", NULL, NULL, &msg) !=
        SQLITE_OK) {
      text_set_err(err, errlen, "cannot begin a migration: %s",
                   msg != NULL ? msg : sqlite3_errmsg(store->db));
      sqlite3_free(msg);
      return -1;
    }
    if (read_version(store, &version, err, errlen) != 0) {
      sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
      return -1;
    }
    if (version >= STORE_SCHEMA_VERSION) {
      sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
      break;
    }
    v = version + 1;
    snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", v);
    if (sqlite3_exec(store->db, migrations[v], NULL, NULL, &msg) !=
            SQLITE_OK ||
        sqlite3_exec(store->db, pragma, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(store->db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
      text_set_err(err, errlen, "migration to schema version %d failed: %s", v,
                   msg != NULL ? msg : sqlite3_errmsg(store->db));
      sqlite3_free(msg);
      sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
      return -1;
    }
    log_info("store: migrated schema version=%d", v);
    version = v;
  }
  if (version > STORE_SCHEMA_VERSION) {
    text_set_err(
        err, errlen,
        "state.db has schema version %d, newer than this galbridge "
        "understands (%d); use a newer galbridge or a fresh state_dir",
        version, STORE_SCHEMA_VERSION);
    return -1;
  }
  return 0;
}

static int
make_state_dir(const char *state_dir, char *err, size_t errlen)
{
  /* Owner only: the database names every person synced. */
  if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
    text_set_err(err, errlen, "cannot create state_dir %s: %s", state_dir,
                 strerror(errno));
    return -1;
  }
  return 0;
}

/* Create `path` 0600 if it is missing, whatever the umask, and take group
 * and other access away if it has any. SQLite gives the -wal and -shm
 * files the database's mode, so they follow. Also the first clear error
 * of a read-only state_dir. */
static int
private_file(const char *path, char *err, size_t errlen)
{
  struct stat sb;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

  if (fd < 0) {
    text_set_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
    return -1;
  }
  if (fstat(fd, &sb) == 0 && (sb.st_mode & 077) != 0) {
    if (fchmod(fd, 0600) == 0)
      log_notice("store: %s was readable by others, now mode 0600", path);
    else
      log_warning("store: %s is readable by others and cannot be made "
                  "0600: %s",
                  path, strerror(errno));
  }
  close(fd);
  return 0;
}

int
store_lock(const char *state_dir, struct store_lock **out, int *busy,
           char *err, size_t errlen)
{
  struct store_lock *lock = NULL;
  char path[4096], pid[32];
  int fd, len;

  *out = NULL;
  if (busy != NULL)
    *busy = 0;
  if (make_state_dir(state_dir, err, errlen) != 0)
    return -1;
  if ((size_t)snprintf(path, sizeof(path), "%s/lock", state_dir) >=
      sizeof(path)) {
    text_set_err(err, errlen, "state_dir path too long");
    return -1;
  }
  fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    text_set_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
    return -1;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
      pid[n > 0 ? n : 0] = '\0';
      pid[strspn(pid, "0123456789")] = '\0';
      text_set_err(
          err, errlen,
          "state_dir %s is in use by another galbridge (pid %s): only "
          "one run or sync at a time may use it ('galbridge status', "
          "'plan' and 'explain' work meanwhile)",
          state_dir, pid[0] != '\0' ? pid : "unknown");
      if (busy != NULL)
        *busy = 1;
    } else {
      text_set_err(err, errlen, "cannot lock %s: %s", path, strerror(errno));
    }
    close(fd);
    return -1;
  }
  /* Who holds it, for the message above. Only informative: a full disk
   * may refuse it, and the lock holds all the same. */
  len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
    log_debug("store: cannot write the pid into %s: %s", path,
              strerror(errno));
  lock = malloc(sizeof(*lock));
  if (lock == NULL) {
    close(fd);
    text_set_err(err, errlen, "out of memory");
    return -1;
  }
  lock->fd = fd;
  *out = lock;
  return 0;
}

void
store_unlock(struct store_lock *lock)
{
  if (lock == NULL)
    return;
  close(lock->fd); /* releases the flock */
  free(lock);
}

int
store_failed(const struct store *store)
{
  return store != NULL && store->failed;
}

static int session_setup(struct store *store, char *err, size_t errlen);

int
store_open(const char *state_dir, struct store **out, char *err, size_t errlen)
{
  struct store *store = NULL;
  char path[4096], os[128];
  char *msg = NULL;
  int rc, result = -1;

  *out = NULL;
  if (make_state_dir(state_dir, err, errlen) != 0)
    return -1;
  if ((size_t)snprintf(path, sizeof(path), "%s/state.db", state_dir) >=
      sizeof(path)) {
    text_set_err(err, errlen, "state_dir path too long");
    return -1;
  }
  if (private_file(path, err, errlen) != 0)
    return -1;

  store = calloc(1, sizeof(*store));
  if (store == NULL) {
    text_set_err(err, errlen, "out of memory");
    return -1;
  }
  if (sqlite3_open_v2(path, &store->db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                          SQLITE_OPEN_NOMUTEX,
                      NULL) != SQLITE_OK) {
    text_set_err(err, errlen, "cannot open %s: %s%s", path,
                 store->db ? sqlite3_errmsg(store->db) : "out of memory",
                 store->db ? os_error(store->db, os, sizeof(os)) : "");
    goto out;
  }
  sqlite3_busy_timeout(store->db, 5000);
  sqlite3_extended_result_codes(store->db, 1);
  /* WAL: readers (status) never block the daemon's writes. synchronous
   * NORMAL in WAL mode keeps every commit atomic and consistent across a
   * crash of the process; only an OS crash may lose the last commits,
   * which the outbox and delta re-reads make up for. */
  /* Switching a new file to WAL takes an exclusive lock that the busy
   * timeout does not wait for: a `status` started while the daemon makes
   * the file tries again for a few seconds. */
  for (int tries = 0;; tries++) {
    rc = sqlite3_exec(store->db,
                      "PRAGMA journal_mode = WAL;"
                      "PRAGMA synchronous = NORMAL;"
                      "PRAGMA foreign_keys = ON;",
                      NULL, NULL, &msg);
    if ((rc & 0xff) != SQLITE_BUSY || tries >= 50)
      break;
    sqlite3_free(msg);
    msg = NULL;
    sqlite3_sleep(100);
  }
  if (rc != SQLITE_OK) {
    text_set_err(err, errlen, "cannot set up %s: %s%s", path,
                 msg ? msg : sqlite3_errmsg(store->db),
                 os_error(store->db, os, sizeof(os)));
    sqlite3_free(msg);
    goto out;
  }
  if (migrate(store, err, errlen) != 0 ||
      session_setup(store, err, errlen) != 0)
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

/* The connection's per-session set-up, shared by every way of opening. */
static int
session_setup(struct store *store, char *err, size_t errlen)
{
  char *msg = NULL;

  sqlite3_busy_timeout(store->db, 5000);
  sqlite3_trace_v2(store->db, SQLITE_TRACE_STMT, count_statement, store);
  sqlite3_extended_result_codes(store->db, 1);
  /* The changed objects of the plan under way, per link (this connection
   * only: see store_plan_rows). A temporary table: a read-only
   * connection may have one too. */
  if (sqlite3_exec(store->db,
                   "CREATE TEMP TABLE plan_changed (link TEXT NOT NULL,"
                   " id TEXT NOT NULL, PRIMARY KEY (link, id))"
                   " WITHOUT ROWID",
                   NULL, NULL, &msg) != SQLITE_OK) {
    text_set_err(err, errlen, "cannot set up the store: %s",
                 msg ? msg : sqlite3_errmsg(store->db));
    sqlite3_free(msg);
    return -1;
  }
  return 0;
}

/* A private database that no other process sees and that vanishes on
 * close: SQLite keeps an anonymous one in memory and spills it to a
 * deleted temporary file when it grows. */
static int
open_private(struct store *store, char *err, size_t errlen)
{
  if (sqlite3_open_v2("", &store->db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                          SQLITE_OPEN_NOMUTEX,
                      NULL) != SQLITE_OK) {
    text_set_err(err, errlen, "cannot open a private database: %s",
                 store->db ? sqlite3_errmsg(store->db) : "out of memory");
    return -1;
  }
  return 0;
}

int
store_open_readonly(const char *state_dir, int copy, struct store **out,
                    int *missing, char *err, size_t errlen)
{
  struct store *store = NULL;
  sqlite3 *disk = NULL;
  sqlite3_backup *bk;
  char path[4096], uri[4200], os[128];
  struct stat sb;
  int version = 0, result = -1, copied = 0;

  *out = NULL;
  *missing = 0;
  if ((size_t)snprintf(path, sizeof(path), "%s/state.db", state_dir) >=
      sizeof(path)) {
    text_set_err(err, errlen, "state_dir path too long");
    return -1;
  }
  store = calloc(1, sizeof(*store));
  if (store == NULL) {
    text_set_err(err, errlen, "out of memory");
    return -1;
  }
  if (stat(path, &sb) != 0) {
    if (errno != ENOENT) {
      text_set_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
      goto out;
    }
    /* Nothing on disk: an empty state, made nowhere but here. */
    *missing = 1;
    if (open_private(store, err, errlen) != 0 ||
        migrate(store, err, errlen) != 0)
      goto out;
    goto ready;
  }
  /* A database readable by others is made private all the same (its
   * mode, not its content). */
  if ((sb.st_mode & 077) != 0) {
    if (chmod(path, 0600) == 0)
      log_notice("store: %s was readable by others, now mode 0600", path);
    else
      log_warning("store: %s is readable by others and cannot be made "
                  "0600: %s",
                  path, strerror(errno));
  }
  /* mode=ro: SQLite never creates, writes or checkpoints the file (a
   * running daemon's WAL is read as it stands). */
  snprintf(uri, sizeof(uri), "file:%s?mode=ro", path);
  if (sqlite3_open_v2(uri, &disk,
                      SQLITE_OPEN_READONLY | SQLITE_OPEN_URI |
                          SQLITE_OPEN_NOMUTEX,
                      NULL) != SQLITE_OK) {
    text_set_err(err, errlen, "cannot open %s: %s%s", path,
                 disk ? sqlite3_errmsg(disk) : "out of memory",
                 disk ? os_error(disk, os, sizeof(os)) : "");
    goto out;
  }
  sqlite3_busy_timeout(disk, 5000);
  store->db = disk;
  if (read_version(store, &version, err, errlen) != 0)
    goto out;
  store->db = NULL;
  if (version > STORE_SCHEMA_VERSION) {
    text_set_err(err, errlen,
                 "state.db has schema version %d, newer than this galbridge "
                 "understands (%d)",
                 version, STORE_SCHEMA_VERSION);
    goto out;
  }
  if (!copy && version == STORE_SCHEMA_VERSION) {
    store->db = disk;
    disk = NULL;
    goto ready;
  }
  /* A copy to work on (or to bring to this schema) without touching the
   * file. */
  if (open_private(store, err, errlen) != 0)
    goto out;
  bk = sqlite3_backup_init(store->db, "main", disk, "main");
  if (bk != NULL) {
    /* finish() frees the handle whatever it returns: called once. */
    int step = sqlite3_backup_step(bk, -1);
    int fin = sqlite3_backup_finish(bk);
    bk = NULL;
    copied = step == SQLITE_DONE && fin == SQLITE_OK;
  }
  if (!copied) {
    text_set_err(err, errlen, "cannot copy %s: %s", path,
                 sqlite3_errmsg(store->db));
    goto out;
  }
  if (migrate(store, err, errlen) != 0)
    goto out;
ready:
  if (session_setup(store, err, errlen) != 0)
    goto out;
  *out = store;
  store = NULL;
  result = 0;
out:
  sqlite3_close(disk);
  store_close(store);
  return result;
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
  /* A failed COMMIT (SQLITE_FULL, SQLITE_IOERR) may have rolled back
   * already. */
  if (sqlite3_get_autocommit(store->db))
    return;
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
store_source_bad(struct store *store, const char *tenant_id, const char *id,
                 const char *bad, long long gen)
{
  sqlite3_stmt *st = prep(store, ST_SOURCE_BAD);

  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant_id);
  bind_text(st, 2, id);
  sqlite3_bind_int64(st, 3, gen);
  bind_text(st, 4, bad);
  return exec_stmt(store, st, "recording a refused source object");
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
store_object_keys_put(struct store *store, const char *tenant_id,
                      const char *id, const char *const *keys,
                      const char *const *values, size_t n)
{
  sqlite3_stmt *st = prep(store, ST_KEYS_CLEAR);

  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant_id);
  bind_text(st, 2, id);
  if (exec_stmt(store, st, "clearing an object's keys") != 0)
    return -1;
  for (size_t i = 0; i < n; i++) {
    st = prep(store, ST_KEY_ADD);
    if (st == NULL)
      return -1;
    bind_text(st, 1, tenant_id);
    bind_text(st, 2, keys[i]);
    bind_text(st, 3, id);
    bind_text(st, 4, values[i]);
    if (exec_stmt(store, st, "writing an object's keys") != 0)
      return -1;
  }
  return 0;
}

int
store_object_lookup(struct store *store, const char *tenant_id,
                    const char *key, store_key_fn fn, void *ctx)
{
  sqlite3_stmt *st = prep(store, ST_KEY_LOOKUP);
  int rc, stop = 0;

  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant_id);
  bind_text(st, 2, key);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    stop = fn(ctx, col_text(st, 0), col_text(st, 1));
    if (stop != 0)
      break;
  }
  if (stop == 0 && rc != SQLITE_DONE)
    return fail(store, st, "looking an object up");
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return stop;
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
    out->base_url = col_strdup(st, 6);
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
  free(state->base_url);
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
                   const char *delta_link, const char *base_url, long long gen,
                   time_t now, long long *unseen)
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
    st = prep(store, ST_KEYS_UNSEEN);
    if (st == NULL)
      return -1;
    bind_text(st, 1, tenant_id);
    sqlite3_bind_int64(st, 2, gen);
    if (exec_stmt(store, st, "forgetting unseen objects' keys") != 0)
      return -1;
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
  bind_text(st, 4, base_url);
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
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    out->objects = sqlite3_column_int64(st, 0);
  else if (rc != SQLITE_DONE) /* DONE: the link has never run */
    return fail(store, st, "counting target objects");
  sqlite3_reset(st);

  st = prep(store, ST_LINK_OPS);
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *state = (const char *)sqlite3_column_text(st, 0);
    long long n = sqlite3_column_int64(st, 2);
    if (state != NULL && strcmp(state, "failed") == 0)
      out->failed += n;
    else
      out->pending += n;
    if (state != NULL && strcmp(state, "held") == 0)
      out->held += n;
    if (sqlite3_column_int(st, 1))
      out->refused += n;
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
    out->run_started = (time_t)sqlite3_column_int64(st, 2);
    out->run_done = sqlite3_column_int64(st, 3);
  } else if (rc != SQLITE_DONE) {
    return fail(store, st, "reading link state");
  }
  sqlite3_reset(st);
  return store_link_held_creates(store, link, &out->creates_held);
}

int
store_link_held_creates(struct store *store, const char *link, long long *held)
{
  sqlite3_stmt *st = prep(store, ST_HELD_CREATES);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  if (sqlite3_step(st) != SQLITE_ROW)
    return fail(store, st, "counting held creates");
  *held = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

int
store_link_approve_creates(struct store *store, const char *link,
                           long long *released)
{
  sqlite3_stmt *st = prep(store, ST_APPROVE_CREATES);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  if (exec_stmt(store, st, "releasing held creates") != 0)
    return -1;
  if (released != NULL)
    *released = sqlite3_changes64(store->db);
  return 0;
}

/* --- the reconciler --- */

/* The names the database holds, by value. */
static const char *const op_kind_names[] = {
    [STORE_OP_NONE] = "none",          [STORE_OP_CREATE] = "create",
    [STORE_OP_UPDATE] = "update",      [STORE_OP_DELETE] = "delete",
    [STORE_OP_DISABLE] = "disable",    [STORE_OP_HIDE] = "hide",
    [STORE_OP_RESTORE] = "restore",    [STORE_OP_ADOPT] = "adopt",
    [STORE_OP_TAKEOVER] = "take-over", [STORE_OP_FAIL] = "fail",
    [STORE_OP_CONFLICT] = "conflict",
};
static const char *const op_state_names[] = {
    [STORE_OP_PENDING] = "pending",
    [STORE_OP_HELD] = "held",
    [STORE_OP_FAILED] = "failed",
};
#define N_NAMES(a) (sizeof(a) / sizeof((a)[0]))

const char *
store_op_kind_name(enum store_op_kind kind)
{
  if ((size_t)kind >= N_NAMES(op_kind_names))
    return "unknown";
  return op_kind_names[kind];
}

const char *
store_op_state_name(enum store_op_state state)
{
  if ((size_t)state >= N_NAMES(op_state_names))
    return "unknown";
  return op_state_names[state];
}

/* The index of `name` in names[0..n), or -1. */
static int
name_index(const char *const *names, size_t n, const char *name)
{
  for (size_t i = 0; name != NULL && i < n; i++) {
    if (strcmp(name, names[i]) == 0)
      return (int)i;
  }
  return -1;
}

int
store_op_kind_parse(const char *name, enum store_op_kind *out)
{
  int i = name_index(op_kind_names, N_NAMES(op_kind_names), name);

  if (i < 0)
    return -1;
  *out = (enum store_op_kind)i;
  return 0;
}

int
store_op_state_parse(const char *name, enum store_op_state *out)
{
  int i = name_index(op_state_names, N_NAMES(op_state_names), name);

  if (i < 0)
    return -1;
  *out = (enum store_op_state)i;
  return 0;
}

/* The kind and state of op `id` of `link` from columns kind_col and
 * state_col of the row `st` is on. A name this galbridge does not know
 * is logged with the op it belongs to; the caller resets `st`. */
static int
op_columns(sqlite3_stmt *st, int kind_col, int state_col, const char *link,
           long long id, enum store_op_kind *kind, enum store_op_state *state)
{
  const char *k = col_text(st, kind_col);

  if (store_op_kind_parse(k, kind) != 0) {
    log_error("store: op of unknown kind link=%s op_id=%lld kind=\"%s\"", link,
              id, k != NULL ? k : "(null)");
    return -1;
  }
  k = col_text(st, state_col);
  if (store_op_state_parse(k, state) != 0) {
    log_error("store: op in unknown state link=%s op_id=%lld state=\"%s\"",
              link, id, k != NULL ? k : "(null)");
    return -1;
  }
  return 0;
}

static int plan_rows_step(struct store *store, sqlite3_stmt *st,
                          const char *link, store_plan_fn fn, void *ctx);

int
store_plan_rows(struct store *store, const char *link,
                const char *source_tenant, const char *target_tenant,
                long long since, const char *after_id, size_t limit,
                store_plan_fn fn, void *ctx)
{
  sqlite3_stmt *st;

  /* Changed objects: listed when the first chunk is asked for, then read
   * in chunks like the rest. */
  if (since >= 0 && (after_id == NULL || after_id[0] == '\0')) {
    sqlite3_stmt *clear = prep(store, ST_PLAN_CHANGED_CLEAR);
    sqlite3_stmt *fill = prep(store, ST_PLAN_CHANGED_FILL);

    if (clear == NULL || fill == NULL)
      return -1;
    bind_text(clear, 1, link);
    if (exec_stmt(store, clear, "listing changed objects") != 0)
      return -1;
    bind_text(fill, 1, link);
    bind_text(fill, 2, source_tenant);
    bind_text(fill, 3, target_tenant);
    sqlite3_bind_int64(fill, 6, since);
    if (exec_stmt(store, fill, "listing changed objects") != 0)
      return -1;
  }
  st = prep(store, since < 0 ? ST_PLAN_ROWS : ST_PLAN_ROWS_SINCE);
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, source_tenant);
  bind_text(st, 3, target_tenant);
  bind_text(st, 4, after_id != NULL ? after_id : "");
  sqlite3_bind_int64(st, 5, limit > 0 ? (sqlite3_int64)limit : -1);
  if (since >= 0)
    sqlite3_bind_int64(st, 6, since);
  return plan_rows_step(store, st, link, fn, ctx);
}

int
store_plan_row_one(struct store *store, const char *link,
                   const char *source_tenant, const char *target_tenant,
                   const char *source_id, store_plan_fn fn, void *ctx)
{
  sqlite3_stmt *st = prep(store, ST_PLAN_ROW_ONE);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, source_tenant);
  bind_text(st, 3, target_tenant);
  bind_text(st, 4, source_id);
  return plan_rows_step(store, st, link, fn, ctx);
}

/* Each row of a prepared and bound plan-row statement to fn. */
static int
plan_rows_step(struct store *store, sqlite3_stmt *st, const char *link,
               store_plan_fn fn, void *ctx)
{
  int rc, stop = 0;

  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct store_plan_row row = {
        .source_id = col_text(st, 0),
        .attrs = col_text(st, 1),
        .removed = sqlite3_column_int(st, 2),
        .target_id = col_text(st, 3),
        .hash = col_text(st, 4),
        .applied = col_text(st, 5),
        .state = col_text(st, 6),
        .op_id = sqlite3_column_int64(st, 7),
        .op_hash = col_text(st, 9),
        .target_removed = sqlite3_column_int(st, 11),
        .target_attrs = col_text(st, 12),
        .op_error = col_text(st, 13),
        .bad = col_text(st, 14),
        .mailbox = col_text(st, 15),
        .manager_id = col_text(st, 16),
        .manager_attrs = col_text(st, 17),
        .manager_target = col_text(st, 18),
    };
    if (row.op_id != 0 && op_columns(st, 8, 10, link, row.op_id, &row.op_kind,
                                     &row.op_state) != 0) {
      stop = -1;
      break;
    }
    stop = fn(ctx, &row);
    if (stop != 0)
      break;
  }
  if (stop == 0 && rc != SQLITE_DONE)
    return fail(store, st, "reading objects to plan");
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return stop;
}

int
store_link_run_start(struct store *store, const char *link, time_t now)
{
  sqlite3_stmt *st = prep(store, ST_RUN_START);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)now);
  return exec_stmt(store, st, "starting a link's round");
}

int
store_seq_now(struct store *store, long long *seq)
{
  sqlite3_stmt *st = prep(store, ST_SEQ_NOW);

  if (st == NULL)
    return -1;
  if (sqlite3_step(st) != SQLITE_ROW)
    return fail(store, st, "reading the change sequence");
  *seq = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  return 0;
}

/* The text (*text a new string, NULL when NULL or no row) and the integer
 * of the one row statement `id` gives for `link`. */
static int
link_row(struct store *store, enum stmt_id id, const char *link, char **text,
         long long *num, const char *what)
{
  sqlite3_stmt *st = prep(store, id);
  int rc;

  *text = NULL;
  *num = 0;
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *text = col_strdup(st, 0);
    *num = sqlite3_column_int64(st, 1);
    if (sqlite3_column_type(st, 0) != SQLITE_NULL && *text == NULL) {
      sqlite3_reset(st);
      log_error("store: out of memory");
      return -1;
    }
  } else if (rc != SQLITE_DONE) {
    return fail(store, st, what);
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

int
store_link_kind_get(struct store *store, const char *link, char **kind,
                    long long *objects)
{
  return link_row(store, ST_LINK_KIND_GET, link, kind, objects,
                  "reading the link's object kind");
}

int
store_link_kind_set(struct store *store, const char *link, const char *kind)
{
  sqlite3_stmt *st = prep(store, ST_LINK_KIND_SET);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, kind);
  return exec_stmt(store, st, "recording the link's object kind");
}

int
store_plan_mark_get(struct store *store, const char *link, char **key,
                    long long *planned_seq)
{
  return link_row(store, ST_PLAN_MARK_GET, link, key, planned_seq,
                  "reading the plan mark");
}

int
store_plan_mark_set(struct store *store, const char *link, const char *key,
                    long long planned_seq)
{
  sqlite3_stmt *st = prep(store, ST_PLAN_MARK_SET);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, key);
  sqlite3_bind_int64(st, 3, planned_seq);
  if (exec_stmt(store, st, "saving the plan mark") != 0)
    return -1;
  st = prep(store, ST_REPLAN_CLEAR);
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  return exec_stmt(store, st, "clearing objects to plan again");
}

int
store_op_put(struct store *store, const char *link, const char *source_id,
             enum store_op_kind kind, const char *payload, const char *desired,
             const char *hash, enum store_op_state state,
             const char *target_id, const char *error, time_t next_try,
             time_t now)
{
  sqlite3_stmt *st = prep(store, ST_OP_PUT);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, source_id);
  bind_text(st, 3, store_op_kind_name(kind));
  bind_text(st, 4, payload);
  bind_text(st, 5, desired);
  bind_text(st, 6, hash);
  bind_text(st, 7, store_op_state_name(state));
  bind_text(st, 8, target_id);
  sqlite3_bind_int64(st, 9, (sqlite3_int64)now);
  bind_text(st, 10, error);
  sqlite3_bind_int64(st, 11, (sqlite3_int64)next_try);
  return exec_stmt(store, st, "writing an operation");
}

int
store_op_delete(struct store *store, long long op_id)
{
  sqlite3_stmt *st = prep(store, ST_OP_DELETE);

  if (st == NULL)
    return -1;
  sqlite3_bind_int64(st, 1, op_id);
  return exec_stmt(store, st, "deleting an operation");
}

void
store_ops_free(struct store_op *ops, size_t n)
{
  for (size_t i = 0; ops != NULL && i < n; i++) {
    free(ops[i].source_id);
    free(ops[i].payload);
    free(ops[i].desired);
    free(ops[i].hash);
    free(ops[i].last_error);
    free(ops[i].target_id);
  }
  free(ops);
}

int
store_ops_list(struct store *store, const char *link,
               enum store_op_state state, size_t max, struct store_op **ops,
               size_t *n)
{
  return store_ops_list_after(store, link, state, 0, max, ops, n);
}

int
store_ops_list_after(struct store *store, const char *link,
                     enum store_op_state state, long long after_id, size_t max,
                     struct store_op **ops, size_t *n)
{
  sqlite3_stmt *st = prep(store, ST_OPS_LIST);
  struct store_op *list = NULL;
  size_t count = 0, cap = 0;
  int rc;

  *ops = NULL;
  *n = 0;
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, store_op_state_name(state));
  sqlite3_bind_int64(st, 3, (sqlite3_int64)max);
  sqlite3_bind_int64(st, 4, after_id);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct store_op *op;
    if (count == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      struct store_op *grown = realloc(list, ncap * sizeof(*list));
      if (grown == NULL) {
        store_ops_free(list, count);
        sqlite3_reset(st);
        log_error("store: out of memory listing operations");
        return -1;
      }
      list = grown;
      cap = ncap;
    }
    op = &list[count++];
    memset(op, 0, sizeof(*op));
    op->id = sqlite3_column_int64(st, 0);
    if (op_columns(st, 2, 6, link, op->id, &op->kind, &op->state) != 0) {
      store_ops_free(list, count);
      sqlite3_reset(st);
      sqlite3_clear_bindings(st);
      return -1;
    }
    op->source_id = col_strdup(st, 1);
    op->payload = col_strdup(st, 3);
    op->desired = col_strdup(st, 4);
    op->hash = col_strdup(st, 5);
    op->attempts = sqlite3_column_int(st, 7);
    op->last_error = col_strdup(st, 8);
    op->target_id = col_strdup(st, 9);
    op->sent_at = sqlite3_column_int64(st, 10);
    op->sent_end = sqlite3_column_int64(st, 12);
    op->next_try = (time_t)sqlite3_column_int64(st, 11);
  }
  if (rc != SQLITE_DONE) {
    store_ops_free(list, count);
    return fail(store, st, "listing operations");
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  *ops = list;
  *n = count;
  return 0;
}

int
store_op_set_target(struct store *store, long long op_id,
                    const char *target_id)
{
  sqlite3_stmt *st = prep(store, ST_OP_SET_TARGET);

  if (st == NULL)
    return -1;
  sqlite3_bind_int64(st, 1, op_id);
  bind_text(st, 2, target_id);
  return exec_stmt(store, st, "recording an operation's target");
}

int
store_op_fail(struct store *store, long long op_id, int permanent,
              const char *error, time_t now, time_t *next_try)
{
  sqlite3_stmt *st = prep(store, ST_OP_FAIL);
  time_t next = 0;
  int rc;

  if (next_try != NULL)
    *next_try = 0;
  if (st == NULL)
    return -1;
  sqlite3_bind_int64(st, 1, op_id);
  bind_text(st, 2, error);
  sqlite3_bind_int(st, 3, permanent != 0);
  sqlite3_bind_int64(st, 4, (sqlite3_int64)now);
  sqlite3_bind_int64(st, 5, STORE_RETRY_BASE);
  sqlite3_bind_int64(st, 6, STORE_RETRY_CAP);
  /* RETURNING: step to completion so the write is done before reset. */
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    next = (time_t)sqlite3_column_int64(st, 0);
  if (rc != SQLITE_DONE)
    return fail(store, st, "recording a failed operation");
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  if (next_try != NULL && permanent)
    *next_try = next;
  return 0;
}

int
store_ops_retry_due(struct store *store, const char *link, time_t now,
                    long long *requeued)
{
  sqlite3_stmt *st = prep(store, ST_RETRY_DUE);

  if (requeued != NULL)
    *requeued = 0;
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)now);
  if (exec_stmt(store, st, "retrying failed operations") != 0)
    return -1;
  if (requeued != NULL)
    *requeued = sqlite3_changes64(store->db);
  return 0;
}

/* One op's success inside the open transaction. */
static int
op_done(struct store *store, const char *link, const struct store_done *d,
        time_t now)
{
  sqlite3_stmt *st;

  if (d->state == NULL) {
    /* The object is to be decided again from scratch, changed or not. */
    st = prep(store, ST_REPLAN_ADD);
    if (st == NULL)
      return -1;
    bind_text(st, 1, link);
    bind_text(st, 2, d->source_id);
    if (exec_stmt(store, st, "queueing an object to plan again") != 0)
      return -1;
    st = prep(store, ST_TARGET_DELETE);
    if (st == NULL)
      return -1;
    bind_text(st, 1, link);
    bind_text(st, 2, d->source_id);
  } else if (d->applied == NULL) {
    st = prep(store, ST_TARGET_STATE);
    if (st == NULL)
      return -1;
    bind_text(st, 1, link);
    bind_text(st, 2, d->source_id);
    bind_text(st, 3, d->state);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)now);
  } else {
    st = prep(store, ST_TARGET_PUT);
    if (st == NULL)
      return -1;
    bind_text(st, 1, link);
    bind_text(st, 2, d->source_id);
    bind_text(st, 3, d->target_id);
    bind_text(st, 4, d->hash);
    bind_text(st, 5, d->applied);
    bind_text(st, 6, d->state);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)now);
  }
  if (exec_stmt(store, st, "writing a target object") != 0 ||
      store_op_delete(store, d->op_id) != 0)
    return -1;
  return 0;
}

int
store_ops_complete(struct store *store, const char *link,
                   const struct store_done *done, size_t n, time_t now)
{
  sqlite3_stmt *st;

  if (n == 0)
    return 0;
  if (store_begin(store) != 0)
    return -1;
  for (size_t i = 0; i < n; i++) {
    if (op_done(store, link, &done[i], now) != 0)
      goto out;
  }
  st = prep(store, ST_RUN_DONE);
  if (st == NULL)
    goto out;
  bind_text(st, 1, link);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)n);
  if (exec_stmt(store, st, "counting progress") != 0 ||
      store_commit(store) != 0)
    goto out;
  return 0;
out:
  store_rollback(store);
  return -1;
}

int
store_op_complete(struct store *store, long long op_id, const char *link,
                  const char *source_id, const char *target_id,
                  const char *hash, const char *applied, const char *state,
                  time_t now)
{
  struct store_done d = {op_id, source_id, target_id, hash, applied, state};

  return store_ops_complete(store, link, &d, 1, now);
}

int
store_link_count_held(struct store *store, const char *link, long long *held)
{
  sqlite3_stmt *st = prep(store, ST_HELD_COUNT);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  if (sqlite3_step(st) != SQLITE_ROW)
    return fail(store, st, "counting held deletes");
  *held = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  st = prep(store, ST_HELD_SET);
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  sqlite3_bind_int64(st, 2, *held);
  return exec_stmt(store, st, "recording held deletes");
}

int
store_link_approve(struct store *store, const char *link, long long *released)
{
  sqlite3_stmt *st = prep(store, ST_APPROVE);
  long long held;
  int own_tx = !store->in_tx; /* else part of the caller's transaction */

  if (st == NULL || (own_tx && store_begin(store) != 0))
    return -1;
  bind_text(st, 1, link);
  if (exec_stmt(store, st, "releasing held deletes") != 0)
    goto out;
  if (released != NULL)
    *released = sqlite3_changes64(store->db);
  if (store_link_count_held(store, link, &held) != 0 ||
      (own_tx && store_commit(store) != 0))
    goto out;
  return 0;
out:
  if (own_tx)
    store_rollback(store);
  return -1;
}

int
store_link_success(struct store *store, const char *link, time_t now)
{
  sqlite3_stmt *st = prep(store, ST_SUCCESS);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)now);
  return exec_stmt(store, st, "recording a link's success");
}

int
store_link_clear_failed(struct store *store, const char *link,
                        long long *cleared)
{
  sqlite3_stmt *st = prep(store, ST_CLEAR_FAILED);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  if (exec_stmt(store, st, "clearing failed operations") != 0)
    return -1;
  if (cleared != NULL)
    *cleared = sqlite3_changes64(store->db);
  /* What the planner refused is decided again by the full weighing that
   * follows. */
  st = prep(store, ST_CLEAR_DECIDED);
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  if (exec_stmt(store, st, "clearing refused objects") != 0)
    return -1;
  if (cleared != NULL)
    *cleared += sqlite3_changes64(store->db);
  return 0;
}

int
store_delta_reset(struct store *store, const char *tenant_id)
{
  sqlite3_stmt *st = prep(store, ST_DELTA_RESET);

  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant_id);
  return exec_stmt(store, st, "resetting the delta link");
}

int
store_unverified(struct store *store, const char *link, size_t max,
                 struct store_pair **pairs, size_t *n)
{
  sqlite3_stmt *st = prep(store, ST_UNVERIFIED);
  struct store_pair *list;
  size_t count = 0;
  int rc;

  *pairs = NULL;
  *n = 0;
  if (st == NULL)
    return -1;
  list = calloc(max ? max : 1, sizeof(*list));
  if (list == NULL)
    return -1;
  bind_text(st, 1, link);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW && count < max) {
    list[count].a = col_strdup(st, 0);
    list[count].b = col_strdup(st, 1);
    count++;
  }
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
    store_pairs_free(list, count);
    return fail(store, st, "listing objects to check on Exchange");
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  *pairs = list;
  *n = count;
  return 0;
}

void
store_pairs_free(struct store_pair *pairs, size_t n)
{
  for (size_t i = 0; pairs != NULL && i < n; i++) {
    free(pairs[i].a);
    free(pairs[i].b);
  }
  free(pairs);
}

int
store_set_exo_visible(struct store *store, const char *link,
                      const char *source_id, const char *target_id)
{
  sqlite3_stmt *st = prep(store, ST_SET_VISIBLE);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, source_id);
  bind_text(st, 3, target_id);
  return exec_stmt(store, st, "recording Exchange-side visibility");
}

int
store_count_not_visible(struct store *store, const char *link,
                        long long *count)
{
  sqlite3_stmt *st = prep(store, ST_NOT_VISIBLE);

  *count = 0;
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  if (sqlite3_step(st) != SQLITE_ROW)
    return fail(store, st, "counting objects not yet visible");
  *count = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

/* --- ownership, claims, recovery --- */

int
store_replan_add(struct store *store, const char *link, const char *source_id)
{
  sqlite3_stmt *st = prep(store, ST_REPLAN_ADD);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, source_id);
  return exec_stmt(store, st, "queueing an object to plan again");
}

typedef int (*store_claim_fn)(void *ctx, const char *link,
                              const char *source_id);

/* fn gets every other (link, source id) claiming `key` in `target`,
 * borrowed; it returns 0 to go on, non-zero to stop (returned as is). */
static int
store_claim_others(struct store *store, const char *target, const char *key,
                   const char *link, const char *source_id, store_claim_fn fn,
                   void *ctx)
{
  sqlite3_stmt *st = prep(store, ST_CLAIM_OTHERS);
  int rc, stop = 0;

  if (st == NULL)
    return -1;
  bind_text(st, 1, target);
  bind_text(st, 2, key);
  bind_text(st, 3, link);
  bind_text(st, 4, source_id);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    stop = fn(ctx, col_text(st, 0), col_text(st, 1));
    if (stop != 0)
      break;
  }
  if (stop == 0 && rc != SQLITE_DONE)
    return fail(store, st, "reading claims");
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return stop;
}

struct first_claim {
  char *link, *source_id;
  int failed;
};

static int
first_claim(void *ctx, const char *link, const char *source_id)
{
  struct first_claim *f = ctx;

  f->link = strdup(link);
  f->source_id = strdup(source_id);
  f->failed = f->link == NULL || f->source_id == NULL;
  return 1;
}

int
store_claim_first(struct store *store, const char *target, const char *key,
                  const char *link, const char *source_id, char **other_link,
                  char **other_id)
{
  struct first_claim f = {0};
  int rc =
      store_claim_others(store, target, key, link, source_id, first_claim, &f);

  *other_link = *other_id = NULL;
  if (rc < 0 || f.failed) {
    free(f.link);
    free(f.source_id);
    return -1;
  }
  *other_link = f.link;
  *other_id = f.source_id;
  return rc > 0;
}

struct replan_ctx {
  struct store *store;
  const char *link; /* the claiming link: its partners are counted */
  size_t same;
  int failed;
};

static int
replan_other(void *ctx, const char *link, const char *source_id)
{
  struct replan_ctx *rc = ctx;

  if (store_replan_add(rc->store, link, source_id) != 0) {
    rc->failed = 1;
    return 1;
  }
  if (strcmp(link, rc->link) == 0)
    rc->same++;
  return 0;
}

static int
key_in(const char *key, const char *const *keys, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    if (strcmp(keys[i], key) == 0)
      return 1;
  }
  return 0;
}

int
store_claims_put(struct store *store, const char *target, const char *link,
                 const char *source_id, const char *const *keys, size_t n,
                 size_t *replanned)
{
  struct replan_ctx rc = {.store = store, .link = link};
  sqlite3_stmt *st;
  char **old = NULL;
  size_t n_old = 0, cap = 0;
  int step, result = -1;

  if (replanned != NULL)
    *replanned = 0;
  st = prep(store, ST_CLAIMS_OF);
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, source_id);
  bind_text(st, 3, target);
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    if (n_old == cap) {
      size_t ncap = cap ? cap * 2 : 4;
      char **grown = realloc(old, ncap * sizeof(*old));
      if (grown == NULL) {
        sqlite3_reset(st);
        goto out;
      }
      old = grown;
      cap = ncap;
    }
    old[n_old] = col_strdup(st, 0);
    if (old[n_old++] == NULL) {
      sqlite3_reset(st);
      goto out;
    }
  }
  if (step != SQLITE_DONE) {
    fail(store, st, "reading claims");
    goto out;
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);

  /* Whoever else holds a key this object gives up or takes is weighed
   * again: a conflict may have begun or ended. Unchanged keys wake no
   * one (two objects in conflict must not wake each other forever). */
  for (size_t i = 0; i < n_old; i++) {
    if (!key_in(old[i], keys, n) &&
        store_claim_others(store, target, old[i], link, source_id,
                           replan_other, &rc) != 0)
      goto out;
  }
  for (size_t i = 0; i < n; i++) {
    if (!key_in(keys[i], (const char *const *)old, n_old) &&
        store_claim_others(store, target, keys[i], link, source_id,
                           replan_other, &rc) != 0)
      goto out;
  }
  if (rc.failed)
    goto out;
  st = prep(store, ST_CLAIMS_DROP);
  if (st == NULL)
    goto out;
  bind_text(st, 1, link);
  bind_text(st, 2, source_id);
  if (exec_stmt(store, st, "dropping claims") != 0)
    goto out;
  for (size_t i = 0; i < n; i++) {
    st = prep(store, ST_CLAIM_ADD);
    if (st == NULL)
      goto out;
    bind_text(st, 1, target);
    bind_text(st, 2, keys[i]);
    bind_text(st, 3, link);
    bind_text(st, 4, source_id);
    if (exec_stmt(store, st, "writing a claim") != 0)
      goto out;
  }
  if (replanned != NULL)
    *replanned = rc.same;
  result = 0;
out:
  for (size_t i = 0; i < n_old; i++)
    free(old[i]);
  free(old);
  return result;
}

int
store_target_owner(struct store *store, const char *target_id,
                   const char *but_link, const char *but_source_id,
                   char **link, char **source_id)
{
  sqlite3_stmt *st = prep(store, ST_TARGET_OWNER);
  int rc;

  *link = *source_id = NULL;
  if (st == NULL)
    return -1;
  bind_text(st, 1, target_id);
  bind_text(st, 2, but_link);
  bind_text(st, 3, but_source_id);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *link = col_strdup(st, 0);
    *source_id = col_strdup(st, 1);
    if (*link == NULL || *source_id == NULL) {
      free(*link);
      free(*source_id);
      *link = *source_id = NULL;
      sqlite3_reset(st);
      return -1;
    }
  } else if (rc != SQLITE_DONE) {
    return fail(store, st, "looking up a target object's owner");
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

int
store_op_sent(struct store *store, long long op_id, time_t sent,
              time_t answered)
{
  sqlite3_stmt *st = prep(store, ST_OP_SENT);

  if (st == NULL)
    return -1;
  sqlite3_bind_int64(st, 1, op_id);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)sent);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)answered);
  return exec_stmt(store, st, "recording when a create was sent");
}

int
store_take_up(struct store *store, const char *link, const char *source_tenant,
              const char *source_id, const char *target_id,
              const char *applied, time_t now, int *taken)
{
  sqlite3_stmt *st = prep(store, ST_TAKE_UP);

  *taken = 0;
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, source_id);
  bind_text(st, 3, target_id);
  bind_text(st, 4, applied);
  sqlite3_bind_int64(st, 5, (sqlite3_int64)now);
  if (exec_stmt(store, st, "taking up a copy") != 0)
    return -1;
  *taken = sqlite3_changes64(store->db) > 0;
  if (!*taken)
    return 0;
  st = prep(store, ST_SOURCE_STUB);
  if (st == NULL)
    return -1;
  bind_text(st, 1, source_tenant);
  bind_text(st, 2, source_id);
  if (exec_stmt(store, st, "recording a source object gone") != 0)
    return -1;
  return store_replan_add(store, link, source_id);
}

int
store_anchor_keys(struct store *store, const char *tenant_id,
                  const char *prefix, store_key_fn fn, void *ctx)
{
  sqlite3_stmt *st = prep(store, ST_ANCHOR_KEYS);
  size_t n = strlen(prefix);
  char *end = malloc(n + 1);
  int rc, stop = 0;

  if (st == NULL || end == NULL || n == 0) {
    free(end);
    return -1;
  }
  /* Every key starting with prefix: [prefix, prefix with its last byte
   * one higher). */
  memcpy(end, prefix, n + 1);
  end[n - 1] = (char)(end[n - 1] + 1);
  bind_text(st, 1, tenant_id);
  bind_text(st, 2, prefix);
  bind_text(st, 3, end);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    stop = fn(ctx, col_text(st, 0), col_text(st, 1));
    if (stop != 0)
      break;
  }
  free(end);
  if (stop == 0 && rc != SQLITE_DONE)
    return fail(store, st, "listing anchors");
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return stop;
}

int
store_link_empty(struct store *store, const char *link, int *empty)
{
  sqlite3_stmt *st = prep(store, ST_LINK_EMPTY);

  *empty = 0;
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  if (sqlite3_step(st) != SQLITE_ROW)
    return fail(store, st, "checking whether a link has any state");
  *empty = sqlite3_column_int64(st, 0) == 0;
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

int
store_fails_due(struct store *store, const char *link, time_t now)
{
  sqlite3_stmt *st = prep(store, ST_FAILS_DUE_REPLAN);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)now);
  if (exec_stmt(store, st, "queueing refused objects") != 0)
    return -1;
  st = prep(store, ST_FAILS_DUE_DROP);
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)now);
  return exec_stmt(store, st, "dropping refused objects due again");
}

int
store_is_empty(struct store *store, int *empty)
{
  sqlite3_stmt *st = prep(store, ST_STORE_EMPTY);

  *empty = 0;
  if (st == NULL)
    return -1;
  if (sqlite3_step(st) != SQLITE_ROW)
    return fail(store, st, "checking whether the state is empty");
  *empty = sqlite3_column_int64(st, 0) == 0;
  sqlite3_reset(st);
  return 0;
}

int
store_targets_unseen(struct store *store, const char *link,
                     const char *tenant_id, long long gen, store_id_fn fn,
                     void *ctx)
{
  sqlite3_stmt *st = prep(store, ST_TARGETS_UNSEEN);
  int rc, stop = 0;

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, tenant_id);
  sqlite3_bind_int64(st, 3, gen);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    stop = fn(ctx, col_text(st, 0));
    if (stop != 0)
      break;
  }
  if (stop == 0 && rc != SQLITE_DONE)
    return fail(store, st, "listing copies not seen");
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return stop;
}

int
store_claims_forget_links(struct store *store,
                          int (*keep)(void *ctx, const char *link), void *ctx,
                          size_t *forgotten)
{
  sqlite3_stmt *st = prep(store, ST_CLAIM_LINKS);
  char **gone = NULL;
  size_t n = 0, cap = 0;
  int rc, result = -1;

  *forgotten = 0;
  if (st == NULL)
    return -1;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *link = col_text(st, 0);
    if (link == NULL || keep(ctx, link))
      continue;
    if (n == cap) {
      size_t ncap = cap ? cap * 2 : 4;
      char **grown = realloc(gone, ncap * sizeof(*gone));
      if (grown == NULL)
        break;
      gone = grown;
      cap = ncap;
    }
    if ((gone[n] = strdup(link)) == NULL)
      break;
    n++;
  }
  if (rc != SQLITE_DONE) {
    if (rc != SQLITE_ROW)
      fail(store, st, "listing the links that claim");
    sqlite3_reset(st);
    goto out;
  }
  sqlite3_reset(st);
  if (n == 0) {
    result = 0;
    goto out;
  }
  if (store_begin(store) != 0)
    goto out;
  for (size_t i = 0; i < n; i++) {
    st = prep(store, ST_CLAIM_LINK_PARTNERS);
    if (st == NULL)
      goto rollback;
    bind_text(st, 1, gone[i]);
    if (exec_stmt(store, st, "queueing the partners of a link gone") != 0)
      goto rollback;
    st = prep(store, ST_CLAIMS_DROP_LINK);
    if (st == NULL)
      goto rollback;
    bind_text(st, 1, gone[i]);
    if (exec_stmt(store, st, "forgetting a link's claims") != 0)
      goto rollback;
  }
  if (store_commit(store) != 0)
    goto rollback;
  *forgotten = n;
  result = 0;
  goto out;
rollback:
  store_rollback(store);
out:
  for (size_t i = 0; i < n; i++)
    free(gone[i]);
  free(gone);
  return result;
}

/* ------------------------------------------------------------------ */
/* Source mailboxes (migration links)                                  */

int
store_mailbox_put(struct store *store, const char *tenant, const char *id,
                  const char *record)
{
  sqlite3_stmt *st = prep(store, ST_MAILBOX_PUT);

  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant);
  bind_text(st, 2, id);
  bind_text(st, 3, record);
  if (exec_stmt(store, st, "saving a source mailbox") != 0)
    return -1;
  if (sqlite3_changes(store->db) == 0)
    return 0;
  st = prep(store, ST_SOURCE_BUMP);
  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant);
  bind_text(st, 2, id);
  return exec_stmt(store, st, "marking a source object changed");
}

int
store_mailbox_get(struct store *store, const char *tenant, const char *id,
                  char **record)
{
  sqlite3_stmt *st = prep(store, ST_MAILBOX_GET);
  int rc;

  *record = NULL;
  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant);
  bind_text(st, 2, id);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *record = col_strdup(st, 0);
    if (*record == NULL) {
      sqlite3_reset(st);
      log_error("store: out of memory");
      return -1;
    }
  } else if (rc != SQLITE_DONE) {
    return fail(store, st, "reading a source mailbox");
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

int
store_mailbox_mark_get(struct store *store, const char *tenant, char **mark,
                       time_t *full_at)
{
  sqlite3_stmt *st = prep(store, ST_MAILBOX_MARK_GET);
  int rc;

  *mark = NULL;
  *full_at = 0;
  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *mark = col_strdup(st, 0);
    *full_at = (time_t)sqlite3_column_int64(st, 1);
    if (sqlite3_column_type(st, 0) != SQLITE_NULL && *mark == NULL) {
      sqlite3_reset(st);
      log_error("store: out of memory");
      return -1;
    }
  } else if (rc != SQLITE_DONE) {
    return fail(store, st, "reading the mailbox mark");
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

int
store_mailbox_mark_set(struct store *store, const char *tenant,
                       const char *mark, time_t full_at)
{
  sqlite3_stmt *st = prep(store, ST_MAILBOX_MARK_SET);

  if (st == NULL)
    return -1;
  bind_text(st, 1, tenant);
  bind_text(st, 2, mark);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)full_at);
  return exec_stmt(store, st, "saving the mailbox mark");
}

int
store_budget_get(struct store *store, const char *gate, const char *bucket,
                 struct store_budget *out, int *found)
{
  sqlite3_stmt *st = prep(store, ST_BUDGET_GET);
  const char *model;
  int rc;

  memset(out, 0, sizeof *out);
  *found = 0;
  if (st == NULL)
    return -1;
  bind_text(st, 1, gate);
  bind_text(st, 2, bucket);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    out->limit = sqlite3_column_double(st, 0);
    out->window = sqlite3_column_double(st, 1);
    out->capacity = sqlite3_column_double(st, 2);
    out->rate = sqlite3_column_double(st, 3);
    model = col_text(st, 4);
    /* Another version's model, or a damaged row: nothing learnt. */
    if (model != NULL &&
        (strcmp(model, "bucket") == 0 || strcmp(model, "window") == 0)) {
      out->window_model = strcmp(model, "window") == 0;
      *found = 1;
    }
  } else if (rc != SQLITE_DONE) {
    return fail(store, st, "reading what the budget learnt");
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

int
store_budget_put(struct store *store, const char *gate, const char *bucket,
                 const struct store_budget *in)
{
  sqlite3_stmt *st = prep(store, ST_BUDGET_PUT);

  if (st == NULL)
    return -1;
  bind_text(st, 1, gate);
  bind_text(st, 2, bucket);
  sqlite3_bind_double(st, 3, in->limit);
  sqlite3_bind_double(st, 4, in->window);
  sqlite3_bind_double(st, 5, in->capacity);
  sqlite3_bind_double(st, 6, in->rate);
  bind_text(st, 7, in->window_model ? "window" : "bucket");
  return exec_stmt(store, st, "saving what the budget learnt");
}

int
store_link_copies(struct store *store, const char *link,
                  const char *source_tenant, store_copy_fn fn, void *ctx)
{
  sqlite3_stmt *st = prep(store, ST_LINK_COPIES);
  int rc, stop = 0;

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, source_tenant);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct store_copy_row row = {.source_id = col_text(st, 0),
                                 .target_id = col_text(st, 1),
                                 .record = col_text(st, 2)};
    if (row.source_id == NULL || row.target_id == NULL || row.record == NULL)
      continue;
    stop = fn(ctx, &row);
    if (stop != 0)
      break;
  }
  if (stop == 0 && rc != SQLITE_DONE)
    return fail(store, st, "listing a link's copies and their mailboxes");
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return stop;
}

int
store_moved_copies(struct store *store, const char *link, const char *reverse,
                   store_moved_fn fn, void *ctx)
{
  sqlite3_stmt *st = prep(store, ST_MOVED_COPIES);
  int rc, stop = 0;

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, reverse);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct store_moved_row row = {.source_id = col_text(st, 0),
                                  .target_id = col_text(st, 1),
                                  .reverse_state = col_text(st, 2)};
    if (row.source_id == NULL || row.target_id == NULL)
      continue;
    stop = fn(ctx, &row);
    if (stop != 0)
      break;
  }
  if (stop == 0 && rc != SQLITE_DONE)
    return fail(store, st, "listing a link's handed-off copies");
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return stop;
}

int
store_target_by_id(struct store *store, const char *link,
                   const char *target_id, char **source_id, char **applied)
{
  sqlite3_stmt *st = prep(store, ST_TARGET_BY_ID);
  int rc;

  *source_id = NULL;
  *applied = NULL;
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, target_id);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *source_id = col_strdup(st, 0);
    *applied = col_strdup(st, 1);
    if (*source_id == NULL || *applied == NULL) {
      free(*source_id);
      free(*applied);
      *source_id = *applied = NULL;
      sqlite3_reset(st);
      log_error("store: out of memory");
      return -1;
    }
  } else if (rc != SQLITE_DONE) {
    return fail(store, st, "reading a copy by its target id");
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

int
store_target_visible(struct store *store, const char *link,
                     const char *source_id, int *visible)
{
  sqlite3_stmt *st = prep(store, ST_TARGET_VISIBLE);
  int rc;

  *visible = -1;
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, source_id);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    *visible = sqlite3_column_int(st, 0) != 0;
  else if (rc != SQLITE_DONE)
    return fail(store, st, "reading whether a copy was seen visible");
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

int
store_target_restamp(struct store *store, const char *link,
                     const char *source_id)
{
  sqlite3_stmt *st = prep(store, ST_TARGET_RESTAMP);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, source_id);
  if (exec_stmt(store, st, "forgetting a copy's stamps") != 0)
    return -1;
  return store_replan_add(store, link, source_id);
}

/* --- profile photos --- */

void
store_photo_rows_free(struct store_photo_row *rows, size_t n)
{
  for (size_t i = 0; rows != NULL && i < n; i++) {
    free(rows[i].source_id);
    free(rows[i].target_id);
    free(rows[i].applied);
    free(rows[i].target_attrs);
    free(rows[i].etag);
    free(rows[i].skipped_etag);
    free(rows[i].error);
  }
  free(rows);
}

int
store_photos_due(struct store *store, const char *link,
                 const char *source_tenant, const char *target_tenant,
                 time_t now, size_t max, struct store_photo_row **rows,
                 size_t *n)
{
  sqlite3_stmt *st = prep(store, ST_PHOTOS_DUE);
  struct store_photo_row *list;
  size_t count = 0;
  int rc;

  *rows = NULL;
  *n = 0;
  if (st == NULL)
    return -1;
  list = calloc(max ? max : 1, sizeof(*list));
  if (list == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, source_tenant);
  bind_text(st, 3, target_tenant);
  sqlite3_bind_int64(st, 4, (sqlite3_int64)now);
  sqlite3_bind_int64(st, 5, (sqlite3_int64)max);
  while (count < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    list[count].source_id = col_strdup(st, 0);
    list[count].target_id = col_strdup(st, 1);
    list[count].applied = col_strdup(st, 2);
    list[count].target_attrs = col_strdup(st, 3);
    list[count].etag = col_strdup(st, 4);
    list[count].skipped_etag = col_strdup(st, 5);
    list[count].error = col_strdup(st, 6);
    count++;
  }
  if (count < max && rc != SQLITE_DONE) {
    store_photo_rows_free(list, count);
    return fail(store, st, "listing copies whose photo is due");
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  *rows = list;
  *n = count;
  return 0;
}

int
store_photo_put(struct store *store, const char *link, const char *source_id,
                const struct store_photo *photo)
{
  sqlite3_stmt *st = prep(store, ST_PHOTO_PUT);

  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, source_id);
  bind_text(st, 3, photo->target_id);
  bind_text(st, 4, photo->etag);
  sqlite3_bind_int64(st, 5, (sqlite3_int64)photo->checked_at);
  sqlite3_bind_int64(st, 6, (sqlite3_int64)photo->next_check);
  bind_text(st, 7, photo->error);
  bind_text(st, 8, photo->skipped_etag);
  return exec_stmt(store, st, "recording a photo check");
}

int
store_photo_get(struct store *store, const char *link, const char *source_id,
                struct store_photo *out, int *found)
{
  sqlite3_stmt *st = prep(store, ST_PHOTO_GET);
  int rc;

  memset(out, 0, sizeof(*out));
  *found = 0;
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  bind_text(st, 2, source_id);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *found = 1;
    out->target_id = col_strdup(st, 0);
    out->etag = col_strdup(st, 1);
    out->checked_at = (time_t)sqlite3_column_int64(st, 2);
    out->next_check = (time_t)sqlite3_column_int64(st, 3);
    out->error = col_strdup(st, 4);
    out->skipped_etag = col_strdup(st, 5);
  } else if (rc != SQLITE_DONE) {
    return fail(store, st, "reading a copy's photo state");
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}

void
store_photo_clear(struct store_photo *photo)
{
  free((char *)photo->target_id);
  free((char *)photo->etag);
  free((char *)photo->error);
  free((char *)photo->skipped_etag);
  memset(photo, 0, sizeof(*photo));
}

int
store_photo_counts(struct store *store, const char *link, long long *written,
                   long long *failed)
{
  sqlite3_stmt *st = prep(store, ST_PHOTO_COUNTS);

  *written = *failed = 0;
  if (st == NULL)
    return -1;
  bind_text(st, 1, link);
  if (sqlite3_step(st) != SQLITE_ROW)
    return fail(store, st, "counting photos");
  *written = sqlite3_column_int64(st, 0);
  *failed = sqlite3_column_int64(st, 1);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return 0;
}
