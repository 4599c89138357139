/*
 * executor — see include/executor.h.
 *
 * Each op becomes a job, a small state machine driven by graph and exo
 * callbacks:
 *
 *   create:  (object known from the state) ─────────────────┐
 *            who holds the address ─▶ invite (or New-*) ─▶ patch all
 *            (attributes, the anchor stamped for the object, visible)
 *            ─▶ complete
 *   adopt:   who holds the address (still the one planned) ─▶ patch all
 *   update:  patch changed attributes ─▶ (a guest's manager: PUT or
 *            DELETE manager/$ref) ─▶ complete
 *   restore: restore from deleted items ─▶ patch all ─▶ complete
 *   delete / disable / hide: one request ─▶ complete
 *
 * Before anything is made, the target is asked who holds the address
 * (users, contacts and groups on Graph; any recipient on Exchange). The
 * job goes on with a holder only when it can prove the holder is its own:
 * the object its op names (the state), one carrying this person's anchor
 * with its proof, or one this op's own earlier request made (made after
 * the op's sent time, of the link's kind, without another anchor: a
 * crash between the request and its record), or one the link adopts
 * (adopt = mail, of its own kind). Anything else is a conflict: the op
 * fails with the holder named and nothing is written. The time a create
 * leaves is committed before it goes, and the object id it made as soon
 * as it is known, so a replay takes up that object and no other.
 */
#include "executor.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "anchor.h"
#include "log.h"
#include "exo.h"
#include "migration.h"
#include "planner.h"

#define LAG_TRIES 8
#define LAG_BASE_MS 500
#define LAG_CAP_MS 4000

/* A holder made by this op's own earlier request was made after its
 * sent time and before its answer came; the clocks of galbridge and the
 * service may differ by this much. */
#define SENT_SKEW 300
/* A request whose answer never came (a crash, a stop) lived at most
 * this long (every retry and Retry-After of the http layer included). */
#define SENT_LIFE 3600

enum step {
  /* Exchange (mail contacts, mail users) */
  STEP_X_FIND,  /* its copies by anchor (a lost state, a crash) */
  STEP_X_CHECK, /* every recipient holding the address */
  STEP_X_NEW,
  STEP_X_SET_ALL,
  STEP_X_SET_MAIL_ALL,
  STEP_X_UPDATE,
  STEP_X_UPDATE_MAIL,
  STEP_X_REMOVE,
  STEP_X_HIDE,
  STEP_X_GUARD, /* migration links: may the object be changed at all? */
  STEP_X_STAMP, /* migration links: a made copy's stamps, once anchored */
  STEP_X_TAKE,  /* a take-over: the former source object, as it is now */
  /* Graph (guests) */
  STEP_CHECK, /* who holds the address */
  STEP_INVITE,
  STEP_PATCH_FULL,
  STEP_PATCH,
  STEP_DELETE,
  STEP_RESTORE,
  STEP_MANAGER, /* an update's manager: PUT or DELETE manager/$ref */
};

struct job {
  struct executor *ex;
  struct store_op op;
  enum store_op_kind kind; /* the op's, as the job goes on */
  enum step step;
  json_t *desired;
  json_t *payload;
  char *target_id;
  int fresh; /* the object was just invited: a 404 is replication lag */
  int revive;
  int lag_tries;
  uv_timer_t timer;
  int timer_live;
  char *unproven; /* Exchange: an object with its anchor but no proof */
  int made;       /* Exchange: this job's own New-* made the object */
  int direct;     /* Exchange: New-* sent with no lookup before it */
  int guarded;    /* migration links: its Get-User said it may change */
  enum step after_guard;
  int manager;      /* guests: an update that sets or clears the manager */
  char *manager_id; /* the manager's copy, NULL: clear it */
};

struct executor {
  uv_loop_t *loop;
  struct store *store;
  struct graph *graph;
  struct exo *exo; /* mail contacts and mail users */
  const struct config_link *link;
  const struct anchor_key *key;
  int max_in_flight;
  int running, stopping, pumping;
  /* The outbox is read OPS_CHUNK ops at a time (ids above last_id), so
   * memory does not grow with a first round's size. */
  struct store_op *ops;
  size_t n_ops, next;
  long long last_id;
  int exhausted;      /* no pending op left after last_id */
  size_t total;       /* pending when the run started */
  const char *only;   /* executor_only(): one source object's ops */
  size_t started_ops; /* jobs started in this run */
  char *last_error;   /* of the last op left pending, or NULL */
  int in_flight;
  struct executor_stats stats;
  executor_done_fn done;
  void *ctx;
  uv_timer_t kick;
  /* Successes not yet written: recorded together, in one transaction,
   * at the end of the loop turn that saw them (or once DONE_BATCH have
   * gathered), rather than one transaction each. Until then each op stays
   * in the outbox, its target id on it: a crash replays it, and
   * store_target_owner() still sees the object as taken. */
  struct done_rec *dq;
  size_t n_dq, cap_dq;
  uv_check_t flush;
  int handles; /* of kick and flush, not yet closed */
  int closing;
  time_t started, last_progress;
};

/* One success waiting in the queue; strings owned. */
struct done_rec {
  long long op_id;
  enum store_op_kind kind;
  char *source_id;
  char *target_id;
  char *hash;
  char *applied;
  const char *state; /* static */
};

#define DONE_BATCH 256

static void job_step(struct job *job);
static void pump(struct executor *ex);
static void flush(struct executor *ex);

/* The executor is freed once its last handle is closed. */
static void
on_closed(uv_handle_t *h)
{
  struct executor *ex = h->data;

  if (--ex->handles == 0)
    free(ex);
}

struct executor *
executor_new(uv_loop_t *loop, struct store *store, struct graph *target,
             struct exo *exo, const struct config_link *link,
             const struct anchor_key *key, int max_in_flight)
{
  struct executor *ex = calloc(1, sizeof(*ex));

  if (ex == NULL)
    return NULL;
  /* First: without it the executor cannot be, and nothing else is made
   * before it to be undone. */
  if (uv_timer_init(loop, &ex->kick) != 0) {
    free(ex);
    return NULL;
  }
  ex->kick.data = ex;
  ex->handles = 1;
  if (uv_check_init(loop, &ex->flush) != 0) {
    uv_close((uv_handle_t *)&ex->kick, on_closed);
    return NULL;
  }
  ex->flush.data = ex;
  ex->handles = 2;
  ex->loop = loop;
  ex->store = store;
  ex->graph = target;
  ex->exo = exo;
  ex->link = link;
  ex->key = key;
  ex->max_in_flight = max_in_flight > 0 ? max_in_flight : 8;
  /* Guest ops read and write through Graph's $batch (finds, PATCHes and
   * DELETEs of a loop tick share batches of GRAPH_BATCH_MAX): run enough
   * ops at once that each in-flight slot can fill a batch. Without
   * batching (allocation failure) ops go one by one as before. */
  if (link->object == CONFIG_OBJECT_GUEST && target != NULL) {
    if (graph_batch_enable(target, loop) == 0)
      ex->max_in_flight *= GRAPH_BATCH_MAX;
    else
      log_warning("link=%s: Graph $batch not available, writing one "
                  "request at a time",
                  link->name);
  }
  return ex;
}

void
executor_free(struct executor *ex)
{
  if (ex == NULL)
    return;
  flush(ex);
  free(ex->dq);
  ex->dq = NULL;
  store_ops_free(ex->ops, ex->n_ops);
  ex->ops = NULL;
  ex->n_ops = 0;
  free(ex->last_error);
  ex->last_error = NULL;
  uv_close((uv_handle_t *)&ex->kick, on_closed);
  uv_close((uv_handle_t *)&ex->flush, on_closed);
}

void
executor_progress(const struct executor *ex, size_t *done, size_t *total,
                  double *rate)
{
  time_t now = time(NULL);

  *done = *total = 0;
  *rate = 0;
  if (!ex->running)
    return;
  *done = ex->started_ops - (size_t)ex->in_flight;
  *total = ex->total > ex->started_ops ? ex->total : ex->started_ops;
  *rate = (double)ex->stats.done / (double)(now - ex->started + 1);
}

void
executor_stop(struct executor *ex)
{
  ex->stopping = 1;
}

const char *
executor_last_error(const struct executor *ex)
{
  return ex->last_error != NULL ? ex->last_error : "";
}

static void
finish(struct executor *ex)
{
  executor_done_fn done = ex->done;

  flush(ex); /* the round's results are in the state before it ends */
  ex->running = 0;
  store_ops_free(ex->ops, ex->n_ops);
  ex->ops = NULL;
  ex->n_ops = ex->next = 0;
  ex->exhausted = 1;
  if (done != NULL)
    done(ex->ctx, &ex->stats);
}

static void
on_job_timer_closed(uv_handle_t *h)
{
  struct job *job = h->data;
  free(job);
}

static void
job_free(struct job *job)
{
  struct executor *ex = job->ex;

  free(job->op.source_id);
  free(job->op.payload);
  free(job->op.desired);
  free(job->op.hash);
  free(job->op.last_error);
  free(job->op.target_id);
  json_decref(job->desired);
  json_decref(job->payload);
  free(job->target_id);
  free(job->unproven);
  free(job->manager_id);
  uv_close((uv_handle_t *)&job->timer, on_job_timer_closed);
  ex->in_flight--;
  pump(ex);
}

/* Long runs (a first round of thousands) say how far they are. */
static void
progress(struct executor *ex)
{
  time_t now = time(NULL);
  size_t done, total;
  double rate;

  if (now - ex->last_progress < 5)
    return;
  ex->last_progress = now;
  executor_progress(ex, &done, &total, &rate);
  log_info("link progress link=%s done=%zu/%zu failed=%lu rate=%.0f/s",
           ex->link->name, done, total, ex->stats.failed, rate);
}

/* The store could not record an outcome (a full or read-only disk): it
 * would not record the next ones either, so start no more operations. */
static void
unrecorded(struct executor *ex)
{
  if (!ex->stopping)
    log_error("cannot record results, starting no more operations link=%s",
              ex->link->name);
  ex->stopping = 1;
}

static void
done_rec_free(struct done_rec *r)
{
  free(r->source_id);
  free(r->target_id);
  free(r->hash);
  free(r->applied);
}

/* Write the queued successes in one transaction. When that fails, every
 * op of them stays in the outbox (the next round replays them) and no
 * more are started. */
static void
flush(struct executor *ex)
{
  struct store_done *d;
  size_t n = ex->n_dq;
  int rc;

  uv_check_stop(&ex->flush);
  if (n == 0)
    return;
  ex->n_dq = 0;
  d = calloc(n, sizeof(*d));
  if (d == NULL) {
    rc = -1;
  } else {
    for (size_t i = 0; i < n; i++)
      d[i] = (struct store_done){ex->dq[i].op_id,     ex->dq[i].source_id,
                                 ex->dq[i].target_id, ex->dq[i].hash,
                                 ex->dq[i].applied,   ex->dq[i].state};
    rc = store_ops_complete(ex->store, ex->link->name, d, n, time(NULL));
    free(d);
  }
  if (rc != 0) {
    ex->stats.transient += n;
    unrecorded(ex);
  } else {
    ex->stats.done += n;
  }
  for (size_t i = 0; i < n; i++) {
    struct done_rec *r = &ex->dq[i];
    if (rc == 0)
      log_debug("op done link=%s op=%s source_id=%s target_id=%s",
                ex->link->name, store_op_kind_name(r->kind), r->source_id,
                r->target_id ? r->target_id : "-");
    done_rec_free(r);
  }
}

static void
on_flush(uv_check_t *h)
{
  flush(h->data);
}

/* The op succeeded: its result joins the queue (flush), the job ends. */
static void
complete(struct job *job, const char *state, int with_values)
{
  struct executor *ex = job->ex;
  struct done_rec *r;

  progress(ex);
  if (ex->n_dq == ex->cap_dq) {
    size_t cap = ex->cap_dq ? ex->cap_dq * 2 : 16;
    struct done_rec *dq = realloc(ex->dq, cap * sizeof(*dq));
    if (dq == NULL) {
      /* The op stays in the outbox: the next round replays it. */
      ex->stats.transient++;
      job_free(job);
      return;
    }
    ex->dq = dq;
    ex->cap_dq = cap;
  }
  r = &ex->dq[ex->n_dq++];
  *r = (struct done_rec){.op_id = job->op.id,
                         .kind = job->op.kind,
                         .source_id = job->op.source_id,
                         .target_id = job->target_id,
                         .hash = job->op.hash,
                         .applied = with_values ? job->op.desired : NULL,
                         .state = state};
  /* The queue owns them now. */
  job->op.source_id = NULL;
  job->target_id = NULL;
  job->op.hash = NULL;
  if (with_values)
    job->op.desired = NULL;
  if (ex->n_dq >= DONE_BATCH)
    flush(ex);
  else
    uv_check_start(&ex->flush, on_flush);
  job_free(job);
}

static void
fail(struct job *job, int permanent, const char *error)
{
  struct executor *ex = job->ex;
  time_t now = time(NULL), next_try = 0;

  if (store_op_fail(ex->store, job->op.id, permanent, error, now, &next_try) !=
      0) {
    log_error("cannot record a failed op link=%s source_id=%s", ex->link->name,
              job->op.source_id);
    unrecorded(ex);
  }
  if (permanent) {
    ex->stats.failed++;
    /* Tried again after a long backoff (status shows when). */
    log_error("op failed link=%s op=%s source_id=%s error=\"%s\" "
              "retry_in=%llds",
              ex->link->name, store_op_kind_name(job->op.kind),
              job->op.source_id, error,
              (long long)(next_try > now ? next_try - now : 0));
  } else {
    ex->stats.transient++;
    /* A copy of the whole text (none when memory is short). */
    free(ex->last_error);
    ex->last_error = strdup(error);
    /* Counted in the round's line (pending=N), which names the last
     * error; one line per op here would flood the log in a throttling
     * storm. */
    log_debug("op will be retried link=%s op=%s source_id=%s error=\"%s\"",
              ex->link->name, store_op_kind_name(job->op.kind),
              job->op.source_id, error);
  }
  job_free(job);
}

static void
fail_resp(struct job *job, const struct graph_response *resp)
{
  if (resp->result == GRAPH_ERR_AUTH) {
    /* Not this op's fault: it waits, and no more ops start now. */
    job->ex->stopping = 1;
    fail(job, 0, resp->errmsg);
    return;
  }
  fail(job, !graph_error_transient(resp), resp->errmsg);
}

static void
on_lag_timer(uv_timer_t *t)
{
  job_step(t->data);
}

/* A 404 for an object invited moments ago: wait and try again. Returns 1
 * when the job was taken over (it waits, or it was left pending for a
 * later round because the timer would not start), 0 when it is no lag. */
static int
retry_lag(struct job *job)
{
  uint64_t delay;
  int rc;

  if (!job->fresh || job->lag_tries >= LAG_TRIES)
    return 0;
  delay = (uint64_t)LAG_BASE_MS << job->lag_tries;
  if (delay > LAG_CAP_MS)
    delay = LAG_CAP_MS;
  job->lag_tries++;
  log_debug("replication lag, retrying link=%s source_id=%s in=%llums",
            job->ex->link->name, job->op.source_id, (unsigned long long)delay);
  rc = uv_timer_start(&job->timer, on_lag_timer, delay, 0);
  if (rc != 0)
    fail(job, 0, "cannot wait for the target to catch up (timer)");
  return 1;
}

static void
on_patched(void *ctx, const struct graph_response *resp)
{
  struct job *job = ctx;

  if (resp->result == GRAPH_OK && job->step == STEP_PATCH && job->manager) {
    /* The attributes are written: now the manager, then complete. */
    job->step = STEP_MANAGER;
    job_step(job);
    return;
  }
  if (resp->result == GRAPH_OK) {
    if (job->step == STEP_PATCH_FULL) {
      if (job->kind == STORE_OP_RESTORE)
        job->ex->stats.restored++;
    } else if (job->kind == STORE_OP_UPDATE) {
      job->ex->stats.updated++;
    } else {
      job->ex->stats.deleted++;
    }
    if (job->kind == STORE_OP_DISABLE)
      complete(job, "disabled", 0);
    else if (job->kind == STORE_OP_HIDE)
      complete(job, "hidden", 0);
    else
      complete(job, "active", 1);
    return;
  }
  if (resp->result == GRAPH_ERR_HTTP && resp->status == 404) {
    if (retry_lag(job))
      return;
    if (job->step == STEP_PATCH_FULL && job->fresh) {
      fail(job, 0, resp->errmsg);
      return;
    }
    /* Deleted by hand in the target: forget it, the next round makes it
     * again (or, if it is out of scope, has nothing to do). */
    log_warning("target object gone, it will be made again link=%s "
                "source_id=%s target_id=%s",
                job->ex->link->name, job->op.source_id, job->target_id);
    complete(job, NULL, 0);
    return;
  }
  fail_resp(job, resp);
}

/* A copy's manager set (PUT) or cleared (DELETE). A DELETE answered 404
 * had none to clear: done. A PUT answered 404 or 400 names an object
 * the target does not have as the manager (its copy deleted by hand):
 * the op fails, and the manager's own op makes the copy again, after
 * which the store asks for a new decision on this report. */
static void
on_manager(void *ctx, const struct graph_response *resp)
{
  struct job *job = ctx;

  if (resp->result == GRAPH_OK ||
      (job->manager_id == NULL && resp->result == GRAPH_ERR_HTTP &&
       resp->status == 404)) {
    job->ex->stats.updated++;
    complete(job, "active", 1);
    return;
  }
  fail_resp(job, resp);
}

static void
on_deleted(void *ctx, const struct graph_response *resp)
{
  struct job *job = ctx;

  if (resp->result == GRAPH_OK ||
      (resp->result == GRAPH_ERR_HTTP && resp->status == 404)) {
    job->ex->stats.deleted++;
    complete(job, "deleted", 0);
    return;
  }
  fail_resp(job, resp);
}

static void
on_restored(void *ctx, const struct graph_response *resp)
{
  struct job *job = ctx;

  if (resp->result == GRAPH_OK) {
    job->step = STEP_PATCH_FULL;
    job->revive = 1;
    job_step(job);
    return;
  }
  if (resp->result == GRAPH_ERR_HTTP &&
      (resp->status == 404 || resp->status == 400)) {
    /* No longer in deleted items (purged, or restored by hand): make or
     * find it as for a new object. */
    log_notice("deleted target object cannot be restored, making it anew "
               "link=%s source_id=%s",
               job->ex->link->name, job->op.source_id);
    free(job->target_id);
    job->target_id = NULL;
    job->kind = STORE_OP_CREATE;
    job->step = STEP_CHECK;
    job_step(job);
    return;
  }
  fail_resp(job, resp);
}

static const char *
desired_str(const struct job *job, const char *key)
{
  return json_string_value(json_object_get(job->desired, key));
}

static void conflict(struct job *job, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The object is somebody else's, or galbridge cannot prove it is its
 * own: the op fails (retried much later, see store_op_fail) and nothing
 * is written. */
static void
conflict(struct job *job, const char *fmt, ...)
{
  char *msg = NULL;
  va_list ap;
  int n;

  /* Sized from what it names (addresses, names and ids, each bounded
   * where it was read): never cut. */
  va_start(ap, fmt);
  n = vasprintf(&msg, fmt, ap);
  va_end(ap);
  if (n < 0) {
    fail(job, 0, "out of memory");
    return;
  }
  fail(job, 1, msg);
  free(msg);
}

/* Whether target object `id` is recorded for another object (of this
 * link or another): 1, and *who (a new string) names it; else 0 and
 * *who NULL. When the state cannot tell, or memory is short, the job
 * fails (transient) and -1 is returned: nothing is written on a check
 * that could not be made. */
static int
owned_elsewhere(struct job *job, const char *id, char **who)
{
  char *link = NULL, *sid = NULL;
  int other = 0;

  *who = NULL;
  if (store_target_owner(job->ex->store, id, job->ex->link->name,
                         job->op.source_id, &link, &sid) != 0) {
    fail(job, 0, "cannot look up who owns a target object");
    return -1;
  }
  if (link != NULL) {
    other = 1;
    if (asprintf(who, "the copy of source object %s (link %s)", sid, link) <
        0) {
      *who = NULL;
      fail(job, 0, "out of memory");
      other = -1;
    }
  }
  free(link);
  free(sid);
  return other;
}

/* The plain anchor this op stamps ("galbridge:<tenant>:<id>"). New
 * string. */
static char *
own_plain(const struct job *job)
{
  return anchor_parse(desired_str(job, planner_anchor_attr(job->ex->link)),
                      NULL);
}

/* Whether `value`, found on object `id`, is this op's anchor with its
 * proof. */
static int
own_proven(const struct job *job, const char *plain, const char *value,
           const char *id)
{
  char *p = anchor_parse(value, NULL);
  int ours =
      p != NULL && plain != NULL && strcmp(p, plain) == 0 &&
      anchor_proven(job->ex->key, job->ex->link->target->tenant_id,
                    config_object_name(job->ex->link->object), value, id);
  free(p);
  return ours;
}

/* Whether `value` is no anchor, or this op's plain one. */
static int
no_other_anchor(const char *plain, const char *value)
{
  char *p = anchor_parse(value, NULL);
  int ok = p == NULL || (plain != NULL && strcmp(p, plain) == 0);

  free(p);
  return ok;
}

/* Before anything is made: does another object (of this link or of
 * another with the same target) claim what this one stands for? The
 * planner refuses such objects, but another link may have planned its
 * claim after this op was queued; then neither is written. Returns 1
 * (and fails the job) when one does, or when the state cannot tell. */
static int
claimed_elsewhere(struct job *job)
{
  const struct config_link *link = job->ex->link;
  char *keys[PLANNER_CLAIMS_MAX];
  size_t n = 0;
  int found = 0;

  /* A check that cannot be made stops the write (transient). */
  if (planner_claim_keys(link, job->op.source_id, job->desired, keys, &n) !=
      0) {
    found = 1;
    fail(job, 0, "cannot list what the object stands for");
  }
  for (size_t i = 0; i < n && !found; i++) {
    char *olink = NULL, *oid = NULL;
    int rc =
        store_claim_first(job->ex->store, link->target->tenant_id, keys[i],
                          link->name, job->op.source_id, &olink, &oid);
    if (rc < 0) {
      found = 1;
      fail(job, 0, "cannot look up the claims of other objects");
    } else if (rc > 0) {
      found = 1;
      conflict(job,
               strcmp(olink, link->name) == 0
                   ? "conflict: source object %s of this link stands for "
                     "the same target object (%s); not written"
                   : "conflict: source object %s of link %s stands for the "
                     "same target object; not written",
               oid, olink);
    }
    free(olink);
    free(oid);
  }
  for (size_t i = 0; i < n; i++)
    free(keys[i]);
  return found;
}

/* Go on with object `id`: record it in the op at once (a crash from here
 * replays onto it, and only it). */
static int
take(struct job *job, const char *id, const char *how)
{
  if (job->target_id == NULL || strcmp(job->target_id, id) != 0) {
    free(job->target_id);
    job->target_id = strdup(id);
    if (job->target_id == NULL ||
        store_op_set_target(job->ex->store, job->op.id, id) != 0) {
      fail(job, 0, "cannot record the target object");
      return -1;
    }
  }
  if (strcmp(how, "adopted") == 0) {
    job->ex->stats.adopted++;
    log_notice("adopting a target object galbridge did not make link=%s "
               "source_id=%s target_id=%s (adopt = mail)",
               job->ex->link->name, job->op.source_id, id);
  } else if (strcmp(how, "taken over") == 0) {
    job->ex->stats.adopted++;
    log_notice("taking over the former source object of a person whose "
               "mailbox moved, as this link's copy link=%s source_id=%s "
               "target_id=%s",
               job->ex->link->name, job->op.source_id, id);
  } else if (strcmp(how, "its own") == 0) {
    job->ex->stats.adopted++;
    log_info("taking up galbridge's own copy link=%s source_id=%s "
             "target_id=%s",
             job->ex->link->name, job->op.source_id, id);
  }
  job->fresh = 1;
  return 0;
}

/* The anchor stamped for the object now known, in what is sent and in
 * what the op records as applied. */
static int
stamp(struct job *job)
{
  const char *attr = planner_anchor_attr(job->ex->link);
  char *plain = own_plain(job), *value = NULL, *text = NULL;
  int rc = -1;

  if (plain == NULL)
    return -1;
  value = anchor_stamp(job->ex->key, job->ex->link->target->tenant_id,
                       config_object_name(job->ex->link->object), plain,
                       job->target_id);
  if (value == NULL ||
      json_object_set_new(job->desired, attr, json_string(value)) != 0)
    goto out;
  text = json_dumps(job->desired, JSON_COMPACT | JSON_SORT_KEYS);
  if (text == NULL)
    goto out;
  free(job->op.desired);
  job->op.desired = text;
  rc = 0;
out:
  free(plain);
  free(value);
  return rc;
}

/* Whether an object created at `created` (the service's clock) can be
 * what this op's last create request made: created after it left and
 * before its answer came (or, when none came, within SENT_LIFE). A user
 * invited by hand after a failed invitation is not. */
static int
made_by_request(const struct job *job, time_t created)
{
  time_t sent = (time_t)job->op.sent_at, end;

  if (sent == 0 || created == 0 || created + SENT_SKEW < sent)
    return 0;
  end = job->op.sent_end != 0 ? (time_t)job->op.sent_end : sent + SENT_LIFE;
  return created <= end + SENT_SKEW;
}

/* The answer of a create request came without an object: what it may
 * have made was made before now. */
static void
answered(struct job *job)
{
  if (job->op.sent_at == 0)
    return;
  job->op.sent_end = (long long)time(NULL);
  if (store_op_sent(job->ex->store, job->op.id, (time_t)job->op.sent_at,
                    (time_t)job->op.sent_end) != 0)
    log_warning("cannot record the answer of a create link=%s source_id=%s",
                job->ex->link->name, job->op.source_id);
}

/* Nobody holds the address: an adoption has lost its object, and an
 * object with this person's anchor but no proof stands in the way;
 * otherwise the create may go, the time it leaves committed first (the
 * proof for a replay that finds what it made). Returns 0 when it may go
 * on; otherwise the job has ended. */
static int
may_make(struct job *job, const char *address)
{
  if (job->kind == STORE_OP_ADOPT) {
    conflict(job,
             "conflict: the object to adopt (%s) no longer holds address "
             "%s; not written",
             job->target_id ? job->target_id : "?", address);
    return -1;
  }
  if (job->unproven != NULL) {
    conflict(job,
             "conflict: target object %s carries this person's anchor but "
             "nothing proves galbridge made it (edited by hand, or made "
             "without this anchor_key_file); left alone",
             job->unproven);
    return -1;
  }
  job->op.sent_at = (long long)time(NULL);
  job->op.sent_end = 0;
  if (store_op_sent(job->ex->store, job->op.id, (time_t)job->op.sent_at, 0) !=
      0) {
    fail(job, 0, "cannot record the create before sending it");
    return -1;
  }
  return 0;
}

static void
on_invited(void *ctx, const struct graph_response *resp, const char *user_id)
{
  struct job *job = ctx;
  char *who;
  int other;

  if (resp->result != GRAPH_OK) {
    answered(job);
    fail_resp(job, resp);
    return;
  }
  /* An invitation of an address someone holds answers with that user:
   * never patched unless it is this op's. */
  if ((other = owned_elsewhere(job, user_id, &who)) < 0)
    return;
  if (other) {
    answered(job);
    conflict(job,
             "conflict: the invitation of %s answered with %s (%s); not "
             "written",
             desired_str(job, "mail"), user_id, who);
    free(who);
    return;
  }
  if (take(job, user_id, "invited") != 0)
    return;
  job->ex->stats.created++;
  job->step = STEP_PATCH_FULL;
  job_step(job);
}

/* Who holds the address a create (or an adoption) needs. */
static void
on_checked(void *ctx, const struct graph_response *resp,
           const struct graph_holder *h, size_t n)
{
  struct job *job = ctx;
  const struct config_link *link = job->ex->link;
  const char *mail = desired_str(job, "mail");
  char *plain, *who = NULL;
  size_t i;
  int other;

  if (resp->result != GRAPH_OK) {
    fail_resp(job, resp);
    return;
  }
  plain = own_plain(job);
  /* Its own first: the object its op names, its proven anchor, or what
   * its own earlier invitation made. */
  for (i = 0; i < n; i++) {
    int invited = h[i].creation_type != NULL &&
                  strcasecmp(h[i].creation_type, "Invitation") == 0;
    if (strcmp(h[i].kind, "user") != 0 || (h[i].other_only && !invited))
      continue;
    if ((other = owned_elsewhere(job, h[i].id, &who)) != 0) {
      if (other > 0)
        conflict(job, "conflict: address %s is held by %s; not written", mail,
                 who);
      goto out;
    }
    if (job->target_id != NULL && strcmp(h[i].id, job->target_id) == 0 &&
        job->kind != STORE_OP_ADOPT)
      break;
    if (own_proven(job, plain, h[i].anchor, h[i].id))
      break;
    if (invited && made_by_request(job, h[i].created) &&
        no_other_anchor(plain, h[i].anchor))
      break;
  }
  if (i < n) {
    if (take(job, h[i].id, "its own") == 0) {
      job->step = STEP_PATCH_FULL;
      job_step(job);
    }
    goto out;
  }
  for (i = 0; i < n; i++) {
    int invited = h[i].creation_type != NULL &&
                  strcasecmp(h[i].creation_type, "Invitation") == 0;
    /* An other mail is no unique address: it stands in the way only on
     * an invited user (whom an invitation of it answers with). */
    if (h[i].other_only && !invited)
      continue;
    if (strcmp(h[i].kind, "user") == 0 && link->adopt == CONFIG_ADOPT_MAIL &&
        invited &&
        (job->kind != STORE_OP_ADOPT ||
         (job->target_id != NULL && strcmp(job->target_id, h[i].id) == 0)) &&
        no_other_anchor(plain, h[i].anchor)) {
      if (take(job, h[i].id, "adopted") == 0) {
        job->step = STEP_PATCH_FULL;
        job_step(job);
      }
      goto out;
    }
    conflict(job,
             "conflict: address %s is held by %s '%s' (%s), which galbridge "
             "did not make; not written%s",
             mail,
             strcmp(h[i].kind, "user") != 0 ? h[i].kind
             : h[i].creation_type != NULL &&
                     strcasecmp(h[i].creation_type, "Invitation") == 0
                 ? "the invited user"
                 : "the user",
             h[i].display_name ? h[i].display_name : "?", h[i].id,
             strcmp(h[i].kind, "user") == 0 && link->adopt == CONFIG_ADOPT_NO
                 ? " (adopt = mail on the link takes invited users over)"
                 : "");
    goto out;
  }
  /* Nobody: invite (its sent time committed first). */
  if (may_make(job, mail) == 0) {
    job->step = STEP_INVITE;
    job_step(job);
  }
out:
  free(plain);
  free(who);
}

static void
job_step(struct job *job)
{
  struct executor *ex = job->ex;
  json_t *body = NULL;
  int rc = -1;

  switch (job->step) {
  case STEP_CHECK:
    rc = graph_address_holders(ex->graph, desired_str(job, "mail"),
                               ex->link->anchor, on_checked, job);
    break;
  case STEP_INVITE:
    rc = graph_invite(ex->graph, desired_str(job, "mail"),
                      desired_str(job, "displayName"),
                      ex->link->user_type_member, on_invited, job);
    break;
  case STEP_PATCH_FULL:
    body = stamp(job) == 0 ? json_deep_copy(job->desired) : NULL;
    if (body == NULL ||
        json_object_set_new(body, "showInAddressList", json_true()) != 0 ||
        (job->revive &&
         json_object_set_new(body, "accountEnabled", json_true()) != 0))
      break;
    rc = graph_user_patch(ex->graph, job->target_id, body, on_patched, job);
    break;
  case STEP_PATCH:
    rc = graph_user_patch(ex->graph, job->target_id, job->payload, on_patched,
                          job);
    break;
  case STEP_DELETE:
    rc = graph_user_delete(ex->graph, job->target_id, on_deleted, job);
    break;
  case STEP_RESTORE:
    rc = graph_user_restore(ex->graph, job->target_id, on_restored, job);
    break;
  case STEP_MANAGER:
    rc = graph_user_manager_set(ex->graph, job->target_id, job->manager_id,
                                on_manager, job);
    break;
  default: /* Exchange steps run in x_step() */
    break;
  }
  json_decref(body);
  if (rc != 0)
    fail(job, 1, "cannot build the request (bad object id or address)");
}

/* --- Exchange: mail contacts and mail users ---
 *
 *   create:  find by anchor (-Filter on CustomAttributeN) ─▶ New-* with a
 *            unique Name ─▶ Set-Contact/Set-User (address-book fields) ─▶
 *            Set-MailContact/Set-MailUser (anchor, visible) ─▶ complete
 *   update:  Set-Contact/Set-User and/or Set-Mail* with what changed
 *   delete:  Remove-*;  disable / hide: Set-Mail* hidden from the GAL
 *   restore: Exchange keeps no deleted recipients: made anew
 *
 * An address another recipient holds fails New-* with Exchange's own
 * error naming it: that op fails for good, nothing else is touched. Only
 * recipients found by galbridge's anchor are ever changed or removed. */

static const char *const x_new_params[] = {"ExternalEmailAddress",
                                           "DisplayName",
                                           "FirstName",
                                           "LastName",
                                           "Alias",
                                           NULL};
static const char *const x_contact_params[] = {
    "DisplayName", "FirstName", "LastName", "Company", "Department", "Title",
    "Phone", "MobilePhone", "Office", "StreetAddress", "City",
    "StateOrProvince", "PostalCode", "CountryOrRegion",
    /* the manager's copy (its identity), or null: $null clears it */
    "Manager", NULL};

static int
in_list(const char *const *list, const char *key)
{
  for (size_t i = 0; list[i] != NULL; i++) {
    if (strcmp(list[i], key) == 0)
      return 1;
  }
  return 0;
}

/* Parameters of a Set-Mail* call: everything that is not an address-book
 * field of Set-Contact/Set-User. */
static int
is_mail_param(const char *key)
{
  return !in_list(x_contact_params, key);
}

static const char *
x_cmdlet(const struct job *job, const char *verb, int mail)
{
  int contact = config_link_contacts(job->ex->link);

  if (strcmp(verb, "New") == 0)
    return contact ? "New-MailContact" : "New-MailUser";
  if (strcmp(verb, "Get") == 0)
    return contact ? "Get-MailContact" : "Get-MailUser";
  if (strcmp(verb, "Remove") == 0)
    return contact ? "Remove-MailContact" : "Remove-MailUser";
  if (mail)
    return contact ? "Set-MailContact" : "Set-MailUser";
  return contact ? "Set-Contact" : "Set-User";
}

static void x_step(struct job *job);

static void
x_fail(struct job *job, const struct exo_response *resp)
{
  if (resp->result == EXO_ERR_AUTH) {
    job->ex->stopping = 1;
    fail(job, 0, resp->errmsg);
    return;
  }
  fail(job,
       !(resp->transient || resp->result == EXO_ERR_NETWORK ||
         resp->result == EXO_ERR_CANCELLED ||
         resp->result == EXO_ERR_PROTOCOL),
       resp->errmsg);
}

static int
not_found(const struct exo_response *resp)
{
  return resp->result == EXO_ERR_CMDLET &&
         strstr(resp->exception, "ManagementObjectNotFound") != NULL;
}

/* A New-* refused because a recipient already holds its address or its
 * Name. */
static int
taken_already(const struct exo_response *resp)
{
  return resp->result == EXO_ERR_CMDLET &&
         (strstr(resp->exception, "ProxyAddressExists") != NULL ||
          strstr(resp->exception, "ADObjectAlreadyExists") != NULL ||
          strstr(resp->exception, "WLCDManagedMemberExists") != NULL);
}

/* The Name this op's New-* asks for ends in the source object's suffix
 * (exo_unique_name). */
static int
own_name(const struct job *job, const json_t *r)
{
  const char *name = json_string_value(json_object_get(r, "Name"));
  char *hex = exo_unique_name(NULL, job->op.source_id);
  size_t n, h;
  int own = 0;

  if (hex == NULL || name == NULL)
    goto out;
  n = strlen(name);
  h = strlen(hex);
  own = strcmp(name, hex) == 0 ||
        (n >= h + 3 && strncmp(name + n - h - 3, " (", 2) == 0 &&
         strncmp(name + n - h - 1, hex, h) == 0 && name[n - 1] == ')');
out:
  free(hex);
  return own;
}

/* RecipientTypeDetails of the link's own kind. */
static const char *
x_kind(const struct job *job)
{
  return config_link_contacts(job->ex->link) ? "MailContact" : "MailUser";
}

/* Whether recipient r carries this op's anchor with its proof (for its
 * directory object id or its Exchange Guid). */
static int
x_own_proven(const struct job *job, const char *plain, const json_t *r)
{
  const char *value = json_string_value(
      json_object_get(r, planner_anchor_attr(job->ex->link)));
  const char *ids[] = {
      json_string_value(json_object_get(r, "ExternalDirectoryObjectId")),
      json_string_value(json_object_get(r, "Guid"))};

  for (size_t i = 0; i < 2; i++) {
    if (ids[i] != NULL && ids[i][0] != '\0' &&
        own_proven(job, plain, value, ids[i]))
      return 1;
  }
  return 0;
}

/* Its copies found by their anchor (Get-Mail* -Filter ... -like). */
static void
x_found(struct job *job, const struct exo_response *resp)
{
  char *plain = own_plain(job);
  const json_t *r;
  size_t i;
  int other;

  json_array_foreach(resp->value, i, r)
  {
    const char *id = exo_recipient_id(r);
    const char *value = json_string_value(
        json_object_get(r, planner_anchor_attr(job->ex->link)));
    char *theirs = anchor_parse(value, NULL), *who = NULL;
    int same = theirs != NULL && plain != NULL && strcmp(theirs, plain) == 0;

    free(theirs);
    if (id == NULL || !same)
      continue; /* -like matched a longer id: another person's */
    if (x_own_proven(job, plain, r) &&
        (other = owned_elsewhere(job, id, &who)) <= 0) {
      if (other == 0 && take(job, id, "its own") == 0) {
        job->step = STEP_X_SET_ALL;
        x_step(job);
      }
      free(plain);
      return;
    }
    free(who); /* another object's: not taken up */
    if (job->unproven == NULL)
      job->unproven = strdup(id);
  }
  free(plain);
  job->step = STEP_X_CHECK;
  x_step(job);
}

/* Every recipient holding the address (Get-Recipient -Filter
 * EmailAddresses): its own, adoptable, or in the way. */
static void
x_checked(struct job *job, const struct exo_response *resp)
{
  const struct config_link *link = job->ex->link;
  const char *address = desired_str(job, "ExternalEmailAddress");
  const char *attr = planner_anchor_attr(link);
  char *plain = own_plain(job), *who = NULL;
  const json_t *r;
  size_t i;
  int other;

  json_array_foreach(resp->value, i, r)
  {
    const char *id = exo_recipient_id(r);
    const char *type =
        json_string_value(json_object_get(r, "RecipientTypeDetails"));
    const char *anchor = json_string_value(json_object_get(r, attr));
    time_t created = exo_recipient_created(r);
    int same_kind = type != NULL && strcmp(type, x_kind(job)) == 0;

    if (id == NULL)
      continue;
    if ((other = owned_elsewhere(job, id, &who)) != 0) {
      if (other > 0)
        conflict(job, "conflict: address %s is held by %s; not written",
                 address, who);
      goto out;
    }
    if (job->kind != STORE_OP_ADOPT && same_kind &&
        ((job->target_id != NULL && strcmp(job->target_id, id) == 0) ||
         x_own_proven(job, plain, r) ||
         (made_by_request(job, created) && no_other_anchor(plain, anchor) &&
          own_name(job, r)))) {
      if (take(job, id, "its own") == 0) {
        job->step = STEP_X_SET_ALL;
        x_step(job);
      }
      goto out;
    }
    if (link->adopt == CONFIG_ADOPT_MAIL && same_kind &&
        (job->kind != STORE_OP_ADOPT ||
         (job->target_id != NULL && strcmp(job->target_id, id) == 0)) &&
        no_other_anchor(plain, anchor)) {
      if (take(job, id, "adopted") == 0) {
        job->step = STEP_X_SET_ALL;
        x_step(job);
      }
      goto out;
    }
    conflict(job,
             "conflict: address %s is held by the %s '%s' (%s), which "
             "galbridge did not make; not written%s",
             address, type ? type : "recipient",
             json_string_value(json_object_get(r, "DisplayName"))
                 ?: json_string_value(json_object_get(r, "Name")) ?: "?",
             id,
             same_kind && link->adopt == CONFIG_ADOPT_NO
                 ? " (adopt = mail on the link would take it over)"
                 : "");
    goto out;
  }
  /* Nobody: make it (its sent time committed first). */
  if (may_make(job, address) == 0) {
    job->step = STEP_X_NEW;
    x_step(job);
  }
out:
  free(plain);
  free(who);
}

/* A migration link's stamps from `attrs` (a new object; those absent
 * left out), or NULL when memory is short. */
static json_t *
stamps_of(const json_t *attrs)
{
  json_t *out = json_object(), *v;

  for (size_t i = 0; out != NULL && i < MIGRATION_STAMP_KEYS; i++) {
    const char *key = migration_stamp_keys[i];
    v = json_object_get(attrs, key);
    if (v != NULL && json_object_set(out, key, v) != 0) {
      json_decref(out);
      out = NULL;
    }
  }
  return out;
}

/* Remove a migration link's stamps from `attrs` (migration.h). */
static void
unstamped(json_t *attrs)
{
  for (size_t i = 0; i < MIGRATION_STAMP_KEYS; i++)
    json_object_del(attrs, migration_stamp_keys[i]);
}

/* Whether the step the guard stands before writes migration stamps. */
static int
stamping(const struct job *job)
{
  if (job->after_guard == STEP_X_REMOVE || job->after_guard == STEP_X_HIDE)
    return 0;
  return migration_stamps(job->after_guard == STEP_X_UPDATE ? job->payload
                                                            : job->desired);
}

/* A migration link changes an object it did not just make only when the
 * object is still what a move needs (migration_target_refused): a
 * licensed one, a mailbox (a move done, or made by hand), one that had a
 * mailbox, one synchronised from on-premises is left exactly as it is,
 * and the op fails with the reason and the fix. */
static void
x_guarded(struct job *job, const json_t *user)
{
  struct exo_user_state st;
  char why[512];

  if (user == NULL || exo_user_state(user, &st) != 0) {
    fail(job, 0, "Get-User answer has no RecipientTypeDetails");
    return;
  }
  if (strcasecmp(st.type, "UserMailbox") == 0 && job->kind != STORE_OP_ADOPT &&
      job->kind != STORE_OP_CREATE) {
    /* galbridge's copy became a mailbox: the move is done (or it was
     * licensed by hand). Its person is the target's own now: nothing is
     * written on it, and the link no longer manages it (state "moved"). */
    log_notice("copy is a mailbox now, handed off: galbridge no longer "
               "manages it and changed nothing link=%s source_id=%s "
               "target_id=%s",
               job->ex->link->name, job->op.source_id, job->target_id);
    job->ex->stats.moved++;
    complete(job, "moved", 0);
    return;
  }
  /* A licence or a former mailbox matters only to a stamp (a licensed
   * copy still gets a new department, or is removed); an object of
   * another type, or one synchronised from on-premises, is never
   * changed. */
  if ((stamping(job) || st.dir_synced ||
       strcasecmp(st.type, "MailUser") != 0) &&
      migration_target_refused(&st, why, sizeof(why))) {
    conflict(job, "not changed: %s", why);
    return;
  }
  job->guarded = 1;
  job->step = job->after_guard;
  x_step(job);
}

/* A take-over (planner.h): the former source object of a person whose
 * mailbox moved to this link's source is taken as the person's copy only
 * while Exchange shows what the move left: a mail user, not synchronised
 * from on-premises, carrying no other anchor, whose external address is
 * an address of the moved mailbox (the move sets it so). Anything else
 * is left alone and reported. */
static void
x_take(struct job *job, const json_t *r)
{
  const struct config_link *link = job->ex->link;
  const char *id = exo_recipient_id(r);
  const char *type =
      json_string_value(json_object_get(r, "RecipientTypeDetails"));
  const char *external =
      json_string_value(json_object_get(r, "ExternalEmailAddress"));
  const char *anchor =
      json_string_value(json_object_get(r, planner_anchor_attr(link)));
  char *plain = own_plain(job), *text = NULL, *who = NULL;
  json_t *attrs = NULL;
  int removed, other;

  if (id == NULL || strcmp(id, job->target_id) != 0) {
    conflict(job,
             "not taken over: Exchange answered for another object "
             "than %s; left alone",
             job->target_id);
    goto out;
  }
  if ((other = owned_elsewhere(job, id, &who)) != 0) {
    if (other > 0)
      conflict(job, "not taken over: %s is %s; left alone", id, who);
    goto out;
  }
  if (store_source_get(job->ex->store, config_link_source_key(link),
                       job->op.source_id, &text, &removed) != 0) {
    fail(job, 0, "cannot read the source object");
    goto out;
  }
  attrs = text ? json_loads(text, 0, NULL) : NULL;
  if (type == NULL || strcmp(type, "MailUser") != 0)
    conflict(job,
             "not taken over: the former source object %s is a %s, not the "
             "mail user a move leaves; left alone",
             id, type ? type : "recipient of unknown type");
  else if (json_is_true(json_object_get(r, "IsDirSynced")))
    conflict(job,
             "not taken over: the former source object %s is synchronised "
             "from on-premises; left alone",
             id);
  else if (!no_other_anchor(plain, anchor))
    conflict(job,
             "not taken over: the former source object %s carries another "
             "anchor; left alone",
             id);
  else if (!json_is_object(attrs) || external == NULL ||
           !graph_user_holds(attrs, strncasecmp(external, "smtp:", 5) == 0
                                        ? external + 5
                                        : external))
    conflict(job,
             "not taken over: the former source object %s forwards to %s, "
             "no address of the moved mailbox; left alone",
             id, external ? external : "nowhere");
  else if (take(job, id, "taken over") == 0) {
    job->step = STEP_X_SET_ALL;
    x_step(job);
  }
out:
  json_decref(attrs);
  free(text);
  free(plain);
  free(who);
}

static void
on_x(void *ctx, const struct exo_response *resp)
{
  struct job *job = ctx;
  const char *id;
  char *who;
  int other;

  switch (job->step) {
  case STEP_X_TAKE:
    if (resp->result == EXO_OK) {
      x_take(job, json_array_get(resp->value, 0));
      return;
    }
    if (!not_found(resp))
      break;
    /* Present in the directory (the planner saw it) yet no mail user:
     * not what a move leaves, so nothing is taken, nor made in its
     * stead. */
    conflict(job,
             "not taken over: the former source object %s is no mail "
             "user; left alone",
             job->target_id);
    return;
  case STEP_X_FIND:
  case STEP_X_CHECK:
    if (resp->result != EXO_OK) {
      x_fail(job, resp);
      return;
    }
    if (job->step == STEP_X_FIND)
      x_found(job, resp);
    else
      x_checked(job, resp);
    return;
  case STEP_X_NEW:
    if (resp->result != EXO_OK) {
      answered(job);
      if (job->direct && taken_already(resp)) {
        /* Something holds the address or the name: who, and whether it
         * may be taken, is for the lookup the direct create skipped. */
        job->direct = 0;
        job->step = STEP_X_CHECK;
        x_step(job);
        return;
      }
      x_fail(job, resp);
      return;
    }
    id = exo_recipient_id(json_array_get(resp->value, 0));
    if (id == NULL) {
      answered(job);
      fail(job, 0, "New- cmdlet answer has no recipient id");
      return;
    }
    if ((other = owned_elsewhere(job, id, &who)) != 0) {
      answered(job);
      if (other > 0)
        conflict(job, "conflict: New- answered with %s (%s); not written", id,
                 who);
      free(who);
      return;
    }
    if (take(job, id, "new") != 0)
      return;
    job->ex->stats.created++;
    job->made = 1;
    job->step = STEP_X_SET_ALL;
    x_step(job);
    return;
  case STEP_X_SET_ALL:
  case STEP_X_UPDATE:
    if (resp->result != EXO_OK)
      break;
    job->step =
        job->step == STEP_X_SET_ALL ? STEP_X_SET_MAIL_ALL : STEP_X_UPDATE_MAIL;
    x_step(job);
    return;
  case STEP_X_SET_MAIL_ALL:
    if (resp->result == EXO_OK && migration_stamps(job->desired)) {
      /* Anchored and visible: the stamps go on their own, so that a
       * stamp Exchange refuses (an X500 address another recipient
       * holds) leaves a provable copy, not a bare one. */
      job->step = STEP_X_STAMP;
      x_step(job);
      return;
    }
    /* fall through */
  case STEP_X_UPDATE_MAIL:
  case STEP_X_STAMP:
    if (resp->result != EXO_OK)
      break;
    if (job->kind == STORE_OP_UPDATE)
      job->ex->stats.updated++;
    else if (job->kind == STORE_OP_RESTORE)
      job->ex->stats.restored++;
    complete(job, "active", 1);
    return;
  case STEP_X_GUARD:
    if (resp->result != EXO_OK && !not_found(resp))
      break;
    if (resp->result == EXO_OK) {
      x_guarded(job, json_array_get(resp->value, 0));
      return;
    }
    /* Gone: as the step it stood for would have found it. */
    job->step = job->after_guard;
    break;
  case STEP_X_REMOVE:
    if (resp->result == EXO_OK || not_found(resp)) {
      job->ex->stats.deleted++;
      complete(job, "deleted", 0);
      return;
    }
    break;
  case STEP_X_HIDE:
    if (resp->result != EXO_OK)
      break;
    job->ex->stats.deleted++;
    complete(job, job->kind == STORE_OP_DISABLE ? "disabled" : "hidden", 0);
    return;
  default:
    break;
  }
  if (not_found(resp) && job->step == STEP_X_SET_ALL && !job->fresh) {
    /* The recipient the op knew of is gone (a restore: Exchange keeps no
     * deleted recipients; or removed by hand): make it anew. */
    log_notice("target recipient gone, making it anew link=%s source_id=%s "
               "target_id=%s",
               job->ex->link->name, job->op.source_id, job->target_id);
    free(job->target_id);
    job->target_id = NULL;
    job->kind = STORE_OP_CREATE;
    job->step = STEP_X_CHECK;
    x_step(job);
    return;
  }
  if (not_found(resp) && job->kind != STORE_OP_CREATE &&
      job->kind != STORE_OP_RESTORE && job->kind != STORE_OP_ADOPT) {
    /* Removed by hand: forget it; the next round makes it again. */
    log_warning("target recipient gone, it will be made again link=%s "
                "source_id=%s target_id=%s",
                job->ex->link->name, job->op.source_id, job->target_id);
    complete(job, NULL, 0);
    return;
  }
  x_fail(job, resp);
}

/* Set-* parameters from `from`: those `pick` accepts; Identity first.
 * NULL when they cannot be made, with *why a static reason (NULL when
 * there is none to give). */
static json_t *
x_params(const struct job *job, const json_t *from, int mail, const char **why)
{
  json_t *p = json_pack("{s:s}", "Identity", job->target_id), *v;
  json_t *add = NULL, *rm = NULL;
  json_t *result = NULL;
  const char *key;
  int rc = 0;

  *why = NULL;
  if (p == NULL)
    return NULL;
  json_object_foreach((json_t *)from, key, v)
  {
    if (strcmp(key, "accountEnabled") == 0 || strcmp(key, "Name") == 0 ||
        strcmp(key, "EmailAddresses@removed") == 0 ||
        strcmp(key, "PrimarySmtpAddress") == 0)
      continue;
    if (strcmp(key, "ProxyAddresses") == 0) {
      /* A migration link's whole list (migration.h): it replaces the
       * addresses the object had. */
      if (mail && json_object_set(p, "EmailAddresses", v) != 0) {
        *why = "out of memory";
        goto out;
      }
      continue;
    }
    if (strcmp(key, "EmailAddresses") == 0) {
      if (!mail)
        continue;
      if (exo_smtp_addresses(v, &add, why) != 0 ||
          exo_smtp_addresses(json_object_get(from, "EmailAddresses@removed"),
                             &rm, why) != 0)
        goto out;
      rc =
          json_object_set_new(p, key,
                              exo_multivalue(json_array_size(add) ? add : NULL,
                                             json_array_size(rm) ? rm : NULL));
      json_decref(add);
      json_decref(rm);
      add = rm = NULL;
    } else if (strcmp(key, "showInAddressList") == 0) {
      if (mail)
        rc = json_object_set_new(p, "HiddenFromAddressListsEnabled",
                                 json_boolean(!json_is_true(v)));
    } else if (is_mail_param(key) == mail) {
      rc = json_object_set(p, key, v);
    }
    /* The keys are the op's own (valid UTF-8 from its JSON): only memory
     * can be short. */
    if (rc != 0) {
      *why = "out of memory";
      goto out;
    }
  }
  result = p;
  p = NULL;
out:
  json_decref(add);
  json_decref(rm);
  json_decref(p);
  return result;
}

/* Whether the step about to run must first ask Get-User (x_guarded). */
static int
needs_guard(const struct job *job)
{
  return job->ex->link->migration && !job->made && !job->guarded &&
         job->target_id != NULL &&
         (job->step == STEP_X_SET_ALL || job->step == STEP_X_UPDATE ||
          job->step == STEP_X_REMOVE || job->step == STEP_X_HIDE);
}

static void
x_step(struct job *job)
{
  struct executor *ex = job->ex;
  const char *anchor_attr = planner_anchor_attr(ex->link);
  json_t *params = NULL, *src;
  const char *cmdlet = NULL;
  char *name = NULL, *quoted = NULL, *filter = NULL, *plain = NULL;
  const char *why = NULL; /* why the parameters cannot be made */
  int rc = -1, skip = 0;
  size_t n;

  if (needs_guard(job)) {
    job->after_guard = job->step;
    job->step = STEP_X_GUARD;
  }
  switch (job->step) {
  case STEP_X_GUARD:
    params = json_pack("{s:s}", "Identity", job->target_id);
    cmdlet = "Get-User";
    break;
  case STEP_X_TAKE:
    params = json_pack("{s:s}", "Identity", job->target_id);
    cmdlet = "Get-MailUser";
    break;
  case STEP_X_FIND:
    /* The plain anchor and anything after it (its proof). */
    plain = own_plain(job);
    if (plain != NULL) {
      n = strlen(plain) + 2;
      name = malloc(n);
      if (name != NULL)
        snprintf(name, n, "%s*", plain);
    }
    quoted = name ? graph_odata_quote(name) : NULL;
    n = quoted ? strlen(quoted) + 64 : 0;
    filter = quoted ? malloc(n) : NULL;
    if (filter == NULL)
      break;
    /* PowerShell's quoting doubles a quote too, like OData's. */
    snprintf(filter, n, "%s -like %s", anchor_attr, quoted);
    params = json_pack("{s:s, s:i}", "Filter", filter, "ResultSize", 10);
    cmdlet = x_cmdlet(job, "Get", 0);
    break;
  case STEP_X_CHECK:
    n = strlen(desired_str(job, "ExternalEmailAddress") ?: "") + 8;
    name = malloc(n);
    if (name != NULL)
      snprintf(name, n, "smtp:%s",
               desired_str(job, "ExternalEmailAddress") ?: "");
    quoted = name != NULL && strncasecmp(name + 5, "smtp:", 5) == 0
                 ? graph_odata_quote(name + 5)
             : name != NULL ? graph_odata_quote(name)
                            : NULL;
    n = quoted ? strlen(quoted) + 64 : 0;
    filter = quoted ? malloc(n) : NULL;
    if (filter == NULL)
      break;
    snprintf(filter, n, "EmailAddresses -eq %s", quoted);
    params = json_pack("{s:s, s:i}", "Filter", filter, "ResultSize", 10);
    cmdlet = "Get-Recipient";
    break;
  case STEP_X_NEW:
    name = exo_unique_name(desired_str(job, "DisplayName"), job->op.source_id);
    params = name ? json_pack("{s:s}", "Name", name) : NULL;
    for (size_t i = 0; params != NULL && x_new_params[i] != NULL; i++) {
      json_t *v = json_object_get(job->desired, x_new_params[i]);
      if (v != NULL && json_object_set(params, x_new_params[i], v) != 0) {
        json_decref(params); /* incomplete: not sent */
        params = NULL;
      }
    }
    cmdlet = x_cmdlet(job, "New", 0);
    break;
  case STEP_X_SET_ALL:
  case STEP_X_SET_MAIL_ALL:
    src = stamp(job) == 0 ? json_deep_copy(job->desired) : NULL;
    if (src != NULL &&
        json_object_set_new(src, "showInAddressList", json_true()) != 0) {
      json_decref(src); /* incomplete: not sent */
      src = NULL;
    }
    if (src != NULL && job->step == STEP_X_SET_MAIL_ALL)
      unstamped(src); /* STEP_X_STAMP sends them */
    params = src ? x_params(job, src, job->step == STEP_X_SET_MAIL_ALL, &why)
                 : NULL;
    json_decref(src);
    cmdlet = x_cmdlet(job, "Set", job->step == STEP_X_SET_MAIL_ALL);
    break;
  case STEP_X_STAMP:
    src = stamps_of(job->desired);
    params = src ? x_params(job, src, 1, &why) : NULL;
    json_decref(src);
    cmdlet = x_cmdlet(job, "Set", 1);
    break;
  case STEP_X_UPDATE:
  case STEP_X_UPDATE_MAIL:
    params =
        x_params(job, job->payload, job->step == STEP_X_UPDATE_MAIL, &why);
    cmdlet = x_cmdlet(job, "Set", job->step == STEP_X_UPDATE_MAIL);
    /* Nothing of that kind changed: skip the call. */
    skip = params != NULL && json_object_size(params) <= 1;
    break;
  case STEP_X_REMOVE:
    params = json_pack("{s:s, s:b}", "Identity", job->target_id, "Confirm", 0);
    cmdlet = x_cmdlet(job, "Remove", 0);
    break;
  case STEP_X_HIDE:
    params = json_pack("{s:s, s:b}", "Identity", job->target_id,
                       "HiddenFromAddressListsEnabled", 1);
    cmdlet = x_cmdlet(job, "Set", 1);
    break;
  default:
    break;
  }
  if (skip) {
    struct exo_response ok = {
        .result = EXO_OK, .error_id = "", .exception = "", .errmsg = ""};
    json_decref(params);
    on_x(job, &ok);
    return;
  }
  if (params != NULL && cmdlet != NULL)
    rc = exo_invoke(ex->exo, cmdlet, params, on_x, job);
  json_decref(params);
  free(name);
  free(quoted);
  free(filter);
  free(plain);
  if (rc != 0)
    fail(job, 1, why != NULL ? why : "cannot build the Exchange request");
}

static void
x_start(struct job *job)
{
  switch (job->kind) {
  case STORE_OP_RESTORE:
    /* Exchange keeps no deleted recipients: made anew. The id the op
     * names is the deleted one, or the one its own New-* made before a
     * crash: the lookups tell, as for any create. */
    job->kind = STORE_OP_CREATE;
    job->step = STEP_X_FIND;
    break;
  case STORE_OP_CREATE:
    /* An object the op learnt (its New-* answered before a crash) is
     * its own. A create that never sent its New-* goes straight to it:
     * the round's own reads (the listing of the link's recipients, the
     * target's users) showed the planner nothing of this person's, and
     * Exchange refuses a New-* whose address or Name another recipient
     * holds, which then takes the lookups below. One whose New-* may
     * have gone (a crash before its answer was recorded) looks for its
     * copies by anchor first, then by address. */
    job->fresh = job->target_id != NULL;
    if (job->target_id != NULL) {
      job->step = STEP_X_SET_ALL;
    } else if (job->op.sent_at == 0) {
      if (may_make(job, desired_str(job, "ExternalEmailAddress")) != 0)
        return;
      job->direct = 1;
      job->step = STEP_X_NEW;
    } else {
      job->step = STEP_X_FIND;
    }
    break;
  case STORE_OP_ADOPT:
    job->step = STEP_X_CHECK;
    break;
  case STORE_OP_TAKEOVER:
    job->step = STEP_X_TAKE;
    break;
  case STORE_OP_UPDATE:
    job->step = STEP_X_UPDATE;
    break;
  case STORE_OP_DELETE:
    job->step = STEP_X_REMOVE;
    break;
  case STORE_OP_DISABLE:
  case STORE_OP_HIDE:
    job->step = STEP_X_HIDE;
    break;
  default:
    fail(job, 1, "op of unknown kind");
    return;
  }
  x_step(job);
}

/* A guest update's manager is no attribute of the PATCH: taken out of
 * the payload into job->manager (a PUT of the reference, or a DELETE
 * when it is null), sent once the PATCH, if any, succeeded. Returns 0,
 * or -1 when memory is short. */
static int
take_manager(struct job *job)
{
  json_t *m = json_object_get(job->payload, "manager");

  if (m == NULL)
    return 0;
  job->manager = 1;
  if (json_is_string(m)) {
    job->manager_id = strdup(json_string_value(m));
    if (job->manager_id == NULL)
      return -1;
  }
  return json_object_del(job->payload, "manager");
}

static void
job_start(struct executor *ex, struct store_op *op)
{
  struct job *job = calloc(1, sizeof(*job));
  int rc;

  if (job == NULL)
    return;
  /* Before the job takes the op: without a timer it cannot be freed by
   * job_free(), and the op stays pending for a later round as when
   * memory is short. */
  rc = uv_timer_init(ex->loop, &job->timer);
  if (rc != 0) {
    log_warning("op not started link=%s source_id=%s error=\"%s\"",
                ex->link->name, op->source_id, uv_strerror(rc));
    free(job);
    return;
  }
  job->ex = ex;
  job->op = *op;
  memset(op, 0, sizeof(*op)); /* the job owns the strings now */
  job->timer.data = job;
  ex->in_flight++;

  job->desired = json_loads(job->op.desired, 0, NULL);
  job->payload = json_loads(job->op.payload, 0, NULL);
  if (job->op.target_id != NULL)
    job->target_id = strdup(job->op.target_id);
  job->kind = job->op.kind;
  if (!json_is_object(job->desired) || !json_is_object(job->payload)) {
    fail(job, 1, "op in the outbox is not readable");
    return;
  }
  if (job->kind != STORE_OP_CREATE && job->target_id == NULL) {
    fail(job, 1, "op has no target object id");
    return;
  }
  /* Nothing is made, nor adopted, for an object another one claims. */
  if (((job->kind == STORE_OP_CREATE && job->target_id == NULL) ||
       job->kind == STORE_OP_ADOPT || job->kind == STORE_OP_TAKEOVER) &&
      claimed_elsewhere(job))
    return;
  if (ex->link->object != CONFIG_OBJECT_GUEST) {
    x_start(job);
    return;
  }
  switch (job->kind) {
  case STORE_OP_CREATE:
    /* An object the op learnt (its invitation answered before a crash)
     * is its own: patched straight away. */
    job->fresh = job->target_id != NULL;
    job->step = job->target_id != NULL ? STEP_PATCH_FULL : STEP_CHECK;
    break;
  case STORE_OP_ADOPT:
    job->step = STEP_CHECK;
    break;
  case STORE_OP_UPDATE:
  case STORE_OP_DISABLE:
  case STORE_OP_HIDE:
    if (take_manager(job) != 0) {
      fail(job, 0, "out of memory");
      return;
    }
    if (json_object_size(job->payload) == 0 && job->manager) {
      job->step = STEP_MANAGER;
      break;
    }
    if (json_object_size(job->payload) == 0) {
      complete(job, "active", 1);
      return;
    }
    job->step = STEP_PATCH;
    break;
  case STORE_OP_DELETE:
    job->step = STEP_DELETE;
    break;
  case STORE_OP_RESTORE:
    job->step = STEP_RESTORE;
    break;
  default:
    fail(job, 1, "op of unknown kind");
    return;
  }
  job_step(job);
}

#define OPS_CHUNK 1000

/* The next chunk of the outbox; 0 when there is none (or it cannot be
 * read: the ops stay for the next round). */
static int
refill(struct executor *ex)
{
  if (ex->exhausted)
    return 0;
  store_ops_free(ex->ops, ex->n_ops); /* every one handed to a job */
  ex->ops = NULL;
  ex->n_ops = ex->next = 0;
  if (store_ops_list_after(ex->store, ex->link->name, STORE_OP_PENDING,
                           ex->last_id, OPS_CHUNK, &ex->ops,
                           &ex->n_ops) != 0) {
    log_error("cannot read the outbox link=%s", ex->link->name);
    ex->exhausted = 1;
    return 0;
  }
  if (ex->n_ops == 0) {
    ex->exhausted = 1;
    return 0;
  }
  ex->last_id = ex->ops[ex->n_ops - 1].id;
  return 1;
}

/* Start ops up to the bound. Jobs that end at once call back in here:
 * the flag keeps that from recursing once per op. */
static void
pump(struct executor *ex)
{
  if (ex->pumping)
    return;
  ex->pumping = 1;
  while (!ex->stopping && ex->in_flight < ex->max_in_flight &&
         (ex->next < ex->n_ops || refill(ex))) {
    struct store_op *op = &ex->ops[ex->next++];
    if (ex->only != NULL && strcmp(op->source_id, ex->only) != 0)
      continue; /* another person's: left for the link's round */
    ex->started_ops++;
    job_start(ex, op);
  }
  ex->pumping = 0;
  if (ex->running && ex->in_flight == 0 &&
      (ex->stopping || (ex->next >= ex->n_ops && ex->exhausted)))
    finish(ex);
}

static void
on_kick(uv_timer_t *t)
{
  pump(t->data);
}

void
executor_only(struct executor *ex, const char *source_id)
{
  ex->only = source_id;
}

int
executor_run(struct executor *ex, executor_done_fn done, void *ctx)
{
  struct store_link_counts c;

  if (ex->running)
    return -1;
  if (store_link_counts(ex->store, ex->link->name, &c) != 0)
    return -1;
  ex->ops = NULL;
  ex->n_ops = ex->next = 0;
  ex->last_id = 0;
  ex->exhausted = 0;
  ex->total = c.pending > 0 ? (size_t)c.pending : 0;
  ex->started_ops = 0;
  memset(&ex->stats, 0, sizeof(ex->stats));
  free(ex->last_error);
  ex->last_error = NULL;
  ex->started = ex->last_progress = time(NULL);
  ex->done = done;
  ex->ctx = ctx;
  ex->running = 1;
  ex->stopping = 0;
  if (ex->link->object != CONFIG_OBJECT_GUEST && ex->exo == NULL &&
      ex->total > 0) {
    log_error("link=%s: no Exchange client for its target; %zu ops wait",
              ex->link->name, ex->total);
    ex->exhausted = 1;
  }
  /* Start from the loop: the callback must never run inside this call. */
  if (uv_timer_start(&ex->kick, on_kick, 0, 0) != 0) {
    ex->running = 0;
    ex->done = NULL;
    ex->ctx = NULL;
    return -1;
  }
  return 0;
}
