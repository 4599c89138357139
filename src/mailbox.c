/*
 * mailbox — see include/mailbox.h.
 *
 * Each call owns a small context freed when its answer has been handled;
 * the store is written in one transaction per answer (all the pages of
 * one read), so a read that fails half-way leaves the mark where it was.
 */
#include "mailbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "log.h"

struct read {
  struct store *store;
  char *tenant;
  char *mark;
  time_t now;
  int full;
  mailbox_read_fn done;
  void *ctx;
};

int
mailbox_filter_date(const char *mark, char *out, size_t len)
{
  time_t t = mark != NULL ? http_parse_iso8601(mark) : 0;
  struct tm tm;

  if (t <= 0 || len < 20)
    return -1;
  t -= MAILBOX_OVERLAP;
  if (gmtime_r(&t, &tm) == NULL ||
      strftime(out, len, "%m/%d/%Y %H:%M:%S", &tm) == 0)
    return -1;
  return 0;
}

/* Keep one mailbox; its WhenChangedUTC may become the new mark. */
static int
keep(struct read *r, const json_t *m, char **newest, time_t *newest_t)
{
  const char *id = exo_recipient_id(m), *changed;
  json_t *rec = NULL;
  char err[256], *text;
  time_t t;
  int rc;

  if (id == NULL)
    return 0; /* nothing to tie it to a source object */
  if (exo_mailbox_record(m, &rec, err, sizeof(err)) != 0) {
    log_warning("source mailbox refused tenant=%s id=%s reason=\"%s\"",
                r->tenant, id, err);
    rec = json_pack("{s:s, s:s}", "id", id, "bad", err);
  }
  text = rec != NULL ? json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  if (text == NULL) {
    json_decref(rec);
    return -1;
  }
  rc = store_mailbox_put(r->store, r->tenant, id, text);
  free(text);
  changed = json_string_value(json_object_get(rec, "changed"));
  t = changed != NULL ? http_parse_iso8601(changed) : 0;
  if (rc == 0 && t > *newest_t) {
    char *copy = strdup(changed);
    if (copy == NULL)
      rc = -1;
    else {
      free(*newest);
      *newest = copy;
      *newest_t = t;
    }
  }
  json_decref(rec);
  return rc;
}

static void
read_free(struct read *r)
{
  free(r->tenant);
  free(r->mark);
  free(r);
}

static void
on_mailboxes(void *ctx, const struct exo_response *resp)
{
  struct read *r = ctx;
  char *newest = NULL;
  time_t newest_t = r->mark != NULL ? http_parse_iso8601(r->mark) : 0;
  const json_t *m;
  size_t i, n = 0;
  int rc = -1;

  if (resp->result != EXO_OK) {
    r->done(r->ctx, -1, resp->errmsg);
    read_free(r);
    return;
  }
  if (store_begin(r->store) != 0)
    goto out;
  json_array_foreach(resp->value, i, m)
  {
    if (keep(r, m, &newest, &newest_t) != 0) {
      store_rollback(r->store);
      goto out;
    }
    n++;
  }
  if (store_mailbox_mark_set(r->store, r->tenant,
                             newest != NULL ? newest : r->mark,
                             r->full ? r->now : 0) != 0 ||
      store_commit(r->store) != 0) {
    store_rollback(r->store);
    goto out;
  }
  rc = 0;
  log_info("source mailboxes read tenant=%s %s=%zu", r->tenant,
           r->full ? "all" : "changed", n);
out:
  free(newest);
  r->done(r->ctx, rc, rc == 0 ? NULL : "cannot keep the mailboxes read");
  read_free(r);
}

int
mailbox_read(struct store *store, struct exo *exo, const char *tenant_id,
             time_t now, mailbox_read_fn done, void *ctx)
{
  struct read *r = calloc(1, sizeof(*r));
  json_t *params = NULL;
  char filter[64], date[32];
  time_t full_at = 0;
  int rc = -1;

  if (r == NULL)
    return -1;
  r->store = store;
  r->now = now;
  r->done = done;
  r->ctx = ctx;
  r->tenant = strdup(tenant_id);
  if (r->tenant == NULL ||
      store_mailbox_mark_get(store, tenant_id, &r->mark, &full_at) != 0)
    goto out;
  r->full = r->mark == NULL || now - full_at >= MAILBOX_FULL_EVERY ||
            mailbox_filter_date(r->mark, date, sizeof(date)) != 0;
  params = json_pack("{s:s}", "ResultSize", "Unlimited");
  if (params == NULL)
    goto out;
  if (!r->full) {
    snprintf(filter, sizeof(filter), "WhenChangedUTC -ge '%s'", date);
    if (json_object_set_new(params, "Filter", json_string(filter)) != 0)
      goto out;
  }
  rc = exo_invoke_select(exo, "Get-Mailbox", params, EXO_MAILBOX_SELECT,
                         on_mailboxes, r);
out:
  json_decref(params);
  if (rc != 0)
    read_free(r);
  return rc;
}

struct domains {
  mailbox_domains_fn done;
  void *ctx;
};

static void
on_domains(void *ctx, const struct exo_response *resp)
{
  struct domains *d = ctx;
  json_t *list = NULL;
  char *initial = NULL;

  if (resp->result != EXO_OK)
    d->done(d->ctx, -1, NULL, NULL, resp->errmsg);
  else if (exo_accepted_domains(resp->value, &list, &initial) != 0)
    d->done(d->ctx, -1, NULL, NULL,
            "Get-AcceptedDomain names no initial domain");
  else
    d->done(d->ctx, 0, list, initial, NULL);
  json_decref(list);
  free(initial);
  free(d);
}

int
mailbox_domains(struct exo *exo, mailbox_domains_fn done, void *ctx)
{
  struct domains *d = calloc(1, sizeof(*d));

  if (d == NULL)
    return -1;
  d->done = done;
  d->ctx = ctx;
  if (exo_invoke(exo, "Get-AcceptedDomain", NULL, on_domains, d) != 0) {
    free(d);
    return -1;
  }
  return 0;
}
