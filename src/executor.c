/*
 * executor — see include/executor.h.
 *
 * Each op becomes a job, a small state machine driven by graph callbacks:
 *
 *   create:  find by anchor ─▶ find by mail ─▶ invite ─▶ patch (all
 *            attributes, anchor, visible) ─▶ complete
 *            (a find that succeeds skips to the patch: adoption)
 *   update:  patch changed attributes ─▶ complete
 *   restore: restore from deleted items ─▶ patch all ─▶ complete
 *   delete / disable / hide: one request ─▶ complete
 *
 * The object id learnt from an invitation is recorded in the op at once,
 * so a replay after a crash goes straight to the patch.
 */
#include "executor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "exo.h"
#include "planner.h"

#define LAG_TRIES 8
#define LAG_BASE_MS 500
#define LAG_CAP_MS 4000

enum step {
  /* Exchange (mail contacts, mail users) */
  STEP_X_FIND,
  STEP_X_NEW,
  STEP_X_FIND_OWN, /* New-* refused: is the clash our own earlier New? */
  STEP_X_SET_ALL,
  STEP_X_SET_MAIL_ALL,
  STEP_X_UPDATE,
  STEP_X_UPDATE_MAIL,
  STEP_X_REMOVE,
  STEP_X_HIDE,
  /* Graph (guests) */
  STEP_FIND_ANCHOR,
  STEP_FIND_MAIL,
  STEP_INVITE,
  STEP_PATCH_FULL,
  STEP_PATCH,
  STEP_DELETE,
  STEP_RESTORE,
};

struct job {
  struct executor *ex;
  struct store_op op;
  enum planner_kind kind;
  enum step step;
  json_t *desired;
  json_t *payload;
  char *target_id;
  int fresh; /* the object was just invited: a 404 is replication lag */
  int revive;
  int lag_tries;
  uv_timer_t timer;
  int timer_live;
  /* Exchange: New-* refused (own_try 1: looked up by Name, 2: by
   * address); new_error is its message, reported if the clash is not ours */
  int own_try;
  char *new_error;
};

struct executor {
  uv_loop_t *loop;
  struct store *store;
  struct graph *graph;
  struct exo *exo; /* mail contacts and mail users */
  const struct config_link *link;
  int max_in_flight;
  int running, stopping, pumping;
  /* The outbox is read OPS_CHUNK ops at a time (ids above last_id), so
   * memory does not grow with a first round's size. */
  struct store_op *ops;
  size_t n_ops, next;
  long long last_id;
  int exhausted;        /* no pending op left after last_id */
  size_t total;         /* pending when the run started */
  size_t started_ops;   /* jobs started in this run */
  char last_error[256]; /* of the last op left pending */
  int in_flight;
  struct executor_stats stats;
  executor_done_fn done;
  void *ctx;
  uv_timer_t kick;
  int closing;
  time_t started, last_progress;
};

static void job_step(struct job *job);
static void pump(struct executor *ex);

struct executor *
executor_new(uv_loop_t *loop, struct store *store, struct graph *target,
             struct exo *exo, const struct config_link *link,
             int max_in_flight)
{
  struct executor *ex = calloc(1, sizeof(*ex));

  if (ex == NULL)
    return NULL;
  ex->loop = loop;
  ex->store = store;
  ex->graph = target;
  ex->exo = exo;
  ex->link = link;
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
  uv_timer_init(loop, &ex->kick);
  ex->kick.data = ex;
  return ex;
}

static void
on_kick_closed(uv_handle_t *h)
{
  free(h->data);
}

void
executor_free(struct executor *ex)
{
  if (ex == NULL)
    return;
  store_ops_free(ex->ops, ex->n_ops);
  ex->ops = NULL;
  ex->n_ops = 0;
  uv_close((uv_handle_t *)&ex->kick, on_kick_closed);
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
  return ex->last_error;
}

static void
finish(struct executor *ex)
{
  executor_done_fn done = ex->done;

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
  free(job->op.kind);
  free(job->op.payload);
  free(job->op.desired);
  free(job->op.hash);
  free(job->op.state);
  free(job->op.last_error);
  free(job->op.target_id);
  json_decref(job->desired);
  json_decref(job->payload);
  free(job->target_id);
  free(job->new_error);
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
complete(struct job *job, const char *state, int with_values)
{
  struct executor *ex = job->ex;

  progress(ex);
  if (store_op_complete(ex->store, job->op.id, ex->link->name,
                        job->op.source_id, job->target_id, job->op.hash,
                        with_values ? job->op.desired : NULL, state,
                        time(NULL)) != 0) {
    /* The op stays in the outbox: the next round replays it. */
    ex->stats.transient++;
    unrecorded(ex);
  } else {
    ex->stats.done++;
    log_debug("op done link=%s op=%s source_id=%s target_id=%s",
              ex->link->name, job->op.kind, job->op.source_id,
              job->target_id ? job->target_id : "-");
  }
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
              ex->link->name, job->op.kind, job->op.source_id, error,
              (long long)(next_try > now ? next_try - now : 0));
  } else {
    ex->stats.transient++;
    snprintf(ex->last_error, sizeof(ex->last_error), "%s", error);
    /* Counted in the round's line (pending=N), which names the last
     * error; one line per op here would flood the log in a throttling
     * storm. */
    log_debug("op will be retried link=%s op=%s source_id=%s error=\"%s\"",
              ex->link->name, job->op.kind, job->op.source_id, error);
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

/* A 404 for an object invited moments ago: wait and try again. */
static int
retry_lag(struct job *job)
{
  uint64_t delay;

  if (!job->fresh || job->lag_tries >= LAG_TRIES)
    return 0;
  delay = (uint64_t)LAG_BASE_MS << job->lag_tries;
  if (delay > LAG_CAP_MS)
    delay = LAG_CAP_MS;
  job->lag_tries++;
  log_debug("replication lag, retrying link=%s source_id=%s in=%llums",
            job->ex->link->name, job->op.source_id, (unsigned long long)delay);
  uv_timer_start(&job->timer, on_lag_timer, delay, 0);
  return 1;
}

static void
on_patched(void *ctx, const struct graph_response *resp)
{
  struct job *job = ctx;

  if (resp->result == GRAPH_OK) {
    if (job->step == STEP_PATCH_FULL) {
      if (job->kind == PLANNER_RESTORE)
        job->ex->stats.restored++;
    } else if (job->kind == PLANNER_UPDATE) {
      job->ex->stats.updated++;
    } else {
      job->ex->stats.deleted++;
    }
    if (job->kind == PLANNER_DISABLE)
      complete(job, "disabled", 0);
    else if (job->kind == PLANNER_HIDE)
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
    job->step = STEP_FIND_ANCHOR;
    job_step(job);
    return;
  }
  fail_resp(job, resp);
}

static void
on_invited(void *ctx, const struct graph_response *resp, const char *user_id)
{
  struct job *job = ctx;

  if (resp->result != GRAPH_OK) {
    fail_resp(job, resp);
    return;
  }
  job->target_id = strdup(user_id);
  if (job->target_id == NULL ||
      store_op_set_target(job->ex->store, job->op.id, user_id) != 0) {
    fail(job, 0, "cannot record the invited user");
    return;
  }
  job->ex->stats.created++;
  job->fresh = 1;
  job->step = STEP_PATCH_FULL;
  job_step(job);
}

static const char *
desired_str(const struct job *job, const char *key)
{
  return json_string_value(json_object_get(job->desired, key));
}

static void
on_found(void *ctx, const struct graph_response *resp,
         const struct graph_user_ref *found)
{
  struct job *job = ctx;
  const char *anchor = desired_str(job, job->ex->link->anchor);
  char msg[512];

  if (resp->result != GRAPH_OK) {
    fail_resp(job, resp);
    return;
  }
  if (found == NULL) {
    if (job->step == STEP_FIND_ANCHOR) {
      job->step = job->target_id != NULL ? STEP_PATCH_FULL : STEP_FIND_MAIL;
      if (job->target_id != NULL)
        job->fresh = 1;
    } else {
      job->step = STEP_INVITE;
    }
    job_step(job);
    return;
  }
  if (job->step == STEP_FIND_MAIL) {
    if (found->anchor != NULL &&
        strncasecmp(found->anchor, "galbridge:", 10) == 0 &&
        (anchor == NULL || strcasecmp(found->anchor, anchor) != 0)) {
      snprintf(msg, sizeof(msg),
               "address %s is already used by another galbridge copy "
               "(%s, anchor %s): not overwritten",
               desired_str(job, "mail"), found->id, found->anchor);
      fail(job, 1, msg);
      return;
    }
    if (found->creation_type == NULL ||
        strcasecmp(found->creation_type, "Invitation") != 0) {
      snprintf(msg, sizeof(msg),
               "address %s belongs to '%s' (%s), a %s of the target tenant "
               "that galbridge did not make: not overwritten",
               desired_str(job, "mail"),
               found->display_name ? found->display_name : "?", found->id,
               found->user_type ? found->user_type : "user");
      fail(job, 1, msg);
      return;
    }
  }
  log_debug("adopting existing target object link=%s source_id=%s "
            "target_id=%s by=%s",
            job->ex->link->name, job->op.source_id, found->id,
            job->step == STEP_FIND_ANCHOR ? "anchor" : "mail");
  free(job->target_id);
  job->target_id = strdup(found->id);
  if (job->target_id == NULL) {
    fail(job, 0, "out of memory");
    return;
  }
  job->ex->stats.adopted++;
  job->step = STEP_PATCH_FULL;
  job_step(job);
}

static void
job_step(struct job *job)
{
  struct executor *ex = job->ex;
  json_t *body = NULL;
  int rc = -1;

  switch (job->step) {
  case STEP_FIND_ANCHOR:
    rc = graph_user_find(ex->graph, ex->link->anchor,
                         desired_str(job, ex->link->anchor), ex->link->anchor,
                         on_found, job);
    break;
  case STEP_FIND_MAIL:
    rc = graph_user_find(ex->graph, "mail", desired_str(job, "mail"),
                         ex->link->anchor, on_found, job);
    break;
  case STEP_INVITE:
    rc = graph_invite(ex->graph, desired_str(job, "mail"),
                      desired_str(job, "displayName"),
                      ex->link->user_type_member, on_invited, job);
    break;
  case STEP_PATCH_FULL:
    body = json_deep_copy(job->desired);
    if (body == NULL)
      break;
    json_object_set_new(body, "showInAddressList", json_true());
    if (job->revive)
      json_object_set_new(body, "accountEnabled", json_true());
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
    "DisplayName", "FirstName",       "LastName", "Company",
    "Department",  "Title",           "Phone",    "MobilePhone",
    "Office",      "StreetAddress",   "City",     "StateOrProvince",
    "PostalCode",  "CountryOrRegion", NULL};

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
  int contact = job->ex->link->object == CONFIG_OBJECT_MAILCONTACT;

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

/* The object id of a recipient in a cmdlet's answer. */
static const char *
recipient_id(const json_t *value)
{
  json_t *r = json_array_get(value, 0);
  const char *id =
      json_string_value(json_object_get(r, "ExternalDirectoryObjectId"));

  if (id == NULL || id[0] == '\0')
    id = json_string_value(json_object_get(r, "Guid"));
  return id;
}

/* Whether recipient r, found by the Name or address a refused New-* asked
 * for, is the one an earlier New-* of this op made before a crash or a
 * store failure kept its id from the outbox: its Name ends in this source
 * object's suffix (exo_unique_name) and it carries no anchor, or ours.
 * Anything else is someone else's and is left alone. */
static int
own_recipient(const struct job *job, const json_t *r)
{
  const char *attr = planner_anchor_attr(job->ex->link);
  const char *anchor = json_string_value(json_object_get(r, attr));
  const char *mine = desired_str(job, attr);
  const char *name = json_string_value(json_object_get(r, "Name"));
  char *hex = exo_unique_name(NULL, job->op.source_id);
  size_t n, h;
  int own = 0;

  if (hex == NULL || name == NULL)
    goto out;
  if (anchor != NULL && anchor[0] != '\0' &&
      (mine == NULL || strcasecmp(anchor, mine) != 0))
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

static void
on_x(void *ctx, const struct exo_response *resp)
{
  struct job *job = ctx;
  const char *id;

  switch (job->step) {
  case STEP_X_FIND:
    if (resp->result != EXO_OK) {
      x_fail(job, resp);
      return;
    }
    id = recipient_id(resp->value);
    if (id != NULL) {
      free(job->target_id);
      job->target_id = strdup(id);
      job->ex->stats.adopted++;
      job->fresh = 1;
      job->step = STEP_X_SET_ALL;
    } else {
      job->step = job->target_id != NULL ? STEP_X_SET_ALL : STEP_X_NEW;
    }
    x_step(job);
    return;
  case STEP_X_NEW:
    if (resp->result == EXO_ERR_CMDLET && !resp->transient &&
        job->own_try == 0) {
      /* Refused for good, most often because the Name or address is
       * taken: perhaps by our own New- whose answer never reached the
       * outbox (a crash, a full disk). Look before failing. */
      job->new_error = strdup(resp->errmsg);
      job->own_try = 1;
      job->step = STEP_X_FIND_OWN;
      x_step(job);
      return;
    }
    if (resp->result != EXO_OK) {
      x_fail(job, resp);
      return;
    }
    id = recipient_id(resp->value);
    if (id == NULL) {
      fail(job, 0, "New- cmdlet answer has no recipient id");
      return;
    }
    free(job->target_id);
    job->target_id = strdup(id);
    if (job->target_id == NULL ||
        store_op_set_target(job->ex->store, job->op.id, id) != 0) {
      fail(job, 0, "cannot record the new recipient");
      return;
    }
    job->ex->stats.created++;
    job->fresh = 1;
    job->step = STEP_X_SET_ALL;
    x_step(job);
    return;
  case STEP_X_FIND_OWN:
    if (resp->result == EXO_OK && json_array_size(resp->value) == 1 &&
        own_recipient(job, json_array_get(resp->value, 0)) &&
        (id = recipient_id(resp->value)) != NULL) {
      log_notice("adopting the recipient an interrupted create made "
                 "link=%s source_id=%s target_id=%s",
                 job->ex->link->name, job->op.source_id, id);
      free(job->target_id);
      job->target_id = strdup(id);
      if (job->target_id == NULL ||
          store_op_set_target(job->ex->store, job->op.id, id) != 0) {
        fail(job, 0, "cannot record the adopted recipient");
        return;
      }
      job->ex->stats.adopted++;
      job->fresh = 1;
      job->step = STEP_X_SET_ALL;
      x_step(job);
      return;
    }
    if (resp->result != EXO_OK && !not_found(resp)) {
      x_fail(job, resp);
      return;
    }
    if (job->own_try == 1 &&
        desired_str(job, "ExternalEmailAddress") != NULL) {
      job->own_try = 2; /* now by address */
      x_step(job);
      return;
    }
    fail(job, 1,
         job->new_error != NULL ? job->new_error : "New- cmdlet refused");
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
  case STEP_X_UPDATE_MAIL:
    if (resp->result != EXO_OK)
      break;
    if (job->kind == PLANNER_UPDATE)
      job->ex->stats.updated++;
    else if (job->kind == PLANNER_RESTORE)
      job->ex->stats.restored++;
    complete(job, "active", 1);
    return;
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
    complete(job, job->kind == PLANNER_DISABLE ? "disabled" : "hidden", 0);
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
    job->fresh = 1;
    job->step = STEP_X_NEW;
    x_step(job);
    return;
  }
  if (not_found(resp) && job->kind != PLANNER_CREATE &&
      job->kind != PLANNER_RESTORE) {
    /* Removed by hand: forget it; the next round makes it again. */
    log_warning("target recipient gone, it will be made again link=%s "
                "source_id=%s target_id=%s",
                job->ex->link->name, job->op.source_id, job->target_id);
    complete(job, NULL, 0);
    return;
  }
  x_fail(job, resp);
}

/* "smtp:a@b" for each address (secondary; any prefix the source had is
 * dropped). New reference. */
static json_t *
smtp_list(const json_t *addresses)
{
  json_t *out = json_array(), *v;
  size_t i;
  char buf[512];

  json_array_foreach((json_t *)addresses, i, v)
  {
    const char *a = json_string_value(v);
    if (a == NULL)
      continue;
    if (strncasecmp(a, "smtp:", 5) == 0)
      a += 5;
    if (strchr(a, ':') != NULL || strchr(a, '@') == NULL)
      continue; /* X500:, SIP: and the like are not extra mail */
    snprintf(buf, sizeof(buf), "smtp:%s", a);
    json_array_append_new(out, json_string(buf));
  }
  return out;
}

/* Set-* parameters from `from`: those `pick` accepts; Identity first. */
static json_t *
x_params(const struct job *job, const json_t *from, int mail)
{
  json_t *p = json_pack("{s:s}", "Identity", job->target_id), *v;
  const char *key;

  if (p == NULL)
    return NULL;
  json_object_foreach((json_t *)from, key, v)
  {
    if (strcmp(key, "accountEnabled") == 0 || strcmp(key, "Name") == 0 ||
        strcmp(key, "EmailAddresses@removed") == 0)
      continue;
    if (strcmp(key, "EmailAddresses") == 0) {
      if (mail) {
        json_t *add = smtp_list(v);
        json_t *rm =
            smtp_list(json_object_get(from, "EmailAddresses@removed"));
        json_object_set_new(p, key,
                            exo_multivalue(json_array_size(add) ? add : NULL,
                                           json_array_size(rm) ? rm : NULL));
        json_decref(add);
        json_decref(rm);
      }
      continue;
    }
    if (strcmp(key, "showInAddressList") == 0) {
      if (mail)
        json_object_set_new(p, "HiddenFromAddressListsEnabled",
                            json_boolean(!json_is_true(v)));
      continue;
    }
    if (is_mail_param(key) == mail)
      json_object_set(p, key, v);
  }
  return p;
}

static void
x_step(struct job *job)
{
  struct executor *ex = job->ex;
  const char *anchor_attr = planner_anchor_attr(ex->link);
  json_t *params = NULL, *src;
  const char *cmdlet = NULL;
  char *name = NULL, *quoted = NULL, *filter = NULL;
  int rc = -1, skip = 0;
  size_t n;

  switch (job->step) {
  case STEP_X_FIND:
    quoted = graph_odata_quote(desired_str(job, anchor_attr));
    n = quoted ? strlen(quoted) + 64 : 0;
    filter = quoted ? malloc(n) : NULL;
    if (filter == NULL)
      break;
    /* PowerShell's quoting doubles a quote too, like OData's. */
    snprintf(filter, n, "%s -eq %s", anchor_attr, quoted);
    params = json_pack("{s:s, s:i}", "Filter", filter, "ResultSize", 2);
    cmdlet = x_cmdlet(job, "Get", 0);
    break;
  case STEP_X_NEW:
    name = exo_unique_name(desired_str(job, "DisplayName"), job->op.source_id);
    params = name ? json_pack("{s:s}", "Name", name) : NULL;
    for (size_t i = 0; params != NULL && x_new_params[i] != NULL; i++) {
      json_t *v = json_object_get(job->desired, x_new_params[i]);
      if (v != NULL)
        json_object_set(params, x_new_params[i], v);
    }
    cmdlet = x_cmdlet(job, "New", 0);
    break;
  case STEP_X_FIND_OWN:
    if (job->own_try == 1) {
      name =
          exo_unique_name(desired_str(job, "DisplayName"), job->op.source_id);
      params = name ? json_pack("{s:s}", "Identity", name) : NULL;
    } else {
      params = json_pack("{s:s}", "Identity",
                         desired_str(job, "ExternalEmailAddress"));
    }
    cmdlet = x_cmdlet(job, "Get", 0);
    break;
  case STEP_X_SET_ALL:
  case STEP_X_SET_MAIL_ALL:
    src = json_deep_copy(job->desired);
    if (src != NULL)
      json_object_set_new(src, "showInAddressList", json_true());
    params = src ? x_params(job, src, job->step == STEP_X_SET_MAIL_ALL) : NULL;
    json_decref(src);
    cmdlet = x_cmdlet(job, "Set", job->step == STEP_X_SET_MAIL_ALL);
    break;
  case STEP_X_UPDATE:
  case STEP_X_UPDATE_MAIL:
    params = x_params(job, job->payload, job->step == STEP_X_UPDATE_MAIL);
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
  if (rc != 0)
    fail(job, 1, "cannot build the Exchange request");
}

static void
x_start(struct job *job)
{
  switch (job->kind) {
  case PLANNER_CREATE:
  case PLANNER_RESTORE: /* Exchange keeps no deleted recipients */
    job->step = STEP_X_FIND;
    break;
  case PLANNER_UPDATE:
    job->step = STEP_X_UPDATE;
    break;
  case PLANNER_DELETE:
    job->step = STEP_X_REMOVE;
    break;
  case PLANNER_DISABLE:
  case PLANNER_HIDE:
    job->step = STEP_X_HIDE;
    break;
  default:
    fail(job, 1, "op of unknown kind");
    return;
  }
  x_step(job);
}

static void
job_start(struct executor *ex, struct store_op *op)
{
  struct job *job = calloc(1, sizeof(*job));

  if (job == NULL)
    return;
  job->ex = ex;
  job->op = *op;
  memset(op, 0, sizeof(*op)); /* the job owns the strings now */
  uv_timer_init(ex->loop, &job->timer);
  job->timer.data = job;
  ex->in_flight++;

  job->desired = json_loads(job->op.desired, 0, NULL);
  job->payload = json_loads(job->op.payload, 0, NULL);
  if (job->op.target_id != NULL)
    job->target_id = strdup(job->op.target_id);
  if (!json_is_object(job->desired) || !json_is_object(job->payload) ||
      planner_kind_parse(job->op.kind, &job->kind) != 0) {
    fail(job, 1, "op in the outbox is not readable");
    return;
  }
  if (job->kind != PLANNER_CREATE && job->target_id == NULL) {
    fail(job, 1, "op has no target object id");
    return;
  }
  if (ex->link->object != CONFIG_OBJECT_GUEST) {
    x_start(job);
    return;
  }
  switch (job->kind) {
  case PLANNER_CREATE:
    job->step = STEP_FIND_ANCHOR;
    break;
  case PLANNER_UPDATE:
  case PLANNER_DISABLE:
  case PLANNER_HIDE:
    if (json_object_size(job->payload) == 0) {
      complete(job, "active", 1);
      return;
    }
    job->step = STEP_PATCH;
    break;
  case PLANNER_DELETE:
    job->step = STEP_DELETE;
    break;
  case PLANNER_RESTORE:
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
  if (store_ops_list_after(ex->store, ex->link->name, "pending", ex->last_id,
                           OPS_CHUNK, &ex->ops, &ex->n_ops) != 0) {
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
    ex->started_ops++;
    job_start(ex, &ex->ops[ex->next++]);
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
  ex->last_error[0] = '\0';
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
  uv_timer_start(&ex->kick, on_kick, 0, 0);
  return 0;
}
