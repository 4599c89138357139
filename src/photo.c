/*
 * photo — see include/photo.h.
 *
 * A pass is a list of items (one per copy due) and one pump: it starts
 * metadata reads while fewer than PHOTO_CHECKS are in flight, and photo
 * transfers (read the bytes, then PUT; or a DELETE) while fewer than
 * PHOTO_TRANSFERS are. Each item ends in exactly one store_photo_put()
 * (unless the pass was cancelled) and one count in the stats. The pass
 * is freed when its last item has ended and its caller was told, or,
 * once cancelled, when its last request came back.
 */
#include "photo.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "planner.h"

enum item_state {
  ITEM_WAIT_CHECK, /* its metadata read not started */
  ITEM_CHECKING,
  ITEM_WAIT_XFER, /* a transfer to do, not started */
  ITEM_XFER,
  ITEM_DONE,
};

struct item {
  struct photo_pass *pass;
  struct store_photo_row row;
  enum item_state state;
  char *new_etag; /* the source's etag, when a copy is to be made */
  int remove;     /* the transfer is a DELETE */
};

struct photo_pass {
  struct store *store;
  struct graph *source, *target;
  const struct config_link *link;
  time_t now;
  struct item *items;
  size_t n, next_check, ended;
  int checks, xfers; /* in flight */
  int cancelled;
  int pumping;
  int refused_logged; /* the 403 explanation was logged in this pass */
  struct photo_stats stats;
  photo_done_fn done;
  void *ctx;
};

static void pump(struct photo_pass *p);

const char *
photo_type(const char *content_type)
{
  static const char *const types[] = {"image/jpeg", "image/png"};
  size_t n;

  if (content_type == NULL)
    return NULL;
  while (*content_type == ' ')
    content_type++;
  n = strcspn(content_type, "; ");
  for (size_t i = 0; i < 2; i++) {
    if (n == strlen(types[i]) && strncasecmp(content_type, types[i], n) == 0)
      return types[i];
  }
  return NULL;
}

int
photo_type_matches(const char *content_type, const void *data, size_t len)
{
  static const unsigned char jpeg[] = {0xff, 0xd8, 0xff};
  static const unsigned char png[] = {0x89, 'P',  'N',  'G',
                                      '\r', '\n', 0x1a, '\n'};
  const char *t = photo_type(content_type);

  if (t == NULL || data == NULL)
    return 0;
  if (strcmp(t, "image/jpeg") == 0)
    return len >= sizeof(jpeg) && memcmp(data, jpeg, sizeof(jpeg)) == 0;
  return len >= sizeof(png) && memcmp(data, png, sizeof(png)) == 0;
}

time_t
photo_next_check(const struct config_link *link, const char *source_id,
                 time_t now)
{
  uint32_t h = 2166136261u; /* FNV-1a */
  long spread = link->photo_interval / 10;

  for (const char *c = source_id; *c != '\0'; c++)
    h = (h ^ (unsigned char)*c) * 16777619u;
  return now + link->photo_interval -
         (spread > 0 ? (time_t)(h % (uint32_t)spread) : 0);
}

/* Record the item's outcome: `etag` is what is now written on the copy
 * (NULL: none), `skipped` the source etag refused for good (NULL: none),
 * `error` why nothing was written (NULL: it went well), `next` when it
 * is due again. */
static void
record(struct item *it, const char *etag, const char *skipped,
       const char *error, time_t next)
{
  struct photo_pass *p = it->pass;
  struct store_photo ph = {.target_id = it->row.target_id,
                           .etag = etag,
                           .checked_at = p->now,
                           .next_check = next,
                           .error = error,
                           .skipped_etag = skipped};

  if (p->cancelled)
    return;
  if (store_photo_put(p->store, p->link->name, it->row.source_id, &ph) != 0)
    log_warning("cannot record a photo check link=%s source_id=%s",
                p->link->name, it->row.source_id);
}

static time_t
retry_at(const struct photo_pass *p)
{
  long wait = p->link->photo_interval < PHOTO_RETRY ? p->link->photo_interval
                                                    : PHOTO_RETRY;
  return p->now + wait;
}

static void
end_item(struct item *it)
{
  it->state = ITEM_DONE;
  it->pass->ended++;
}

/* A failure of this person's photo alone: logged, recorded, tried again
 * at `next`. `skipped` counts it as refused rather than failed. */
static void item_fail(struct item *it, int skipped, time_t next,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
item_fail(struct item *it, int skipped, time_t next, const char *fmt, ...)
{
  struct photo_pass *p = it->pass;
  char why[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(why, sizeof(why), fmt, ap);
  va_end(ap);
  if (!p->cancelled)
    log_warning("photo not copied link=%s source_id=%s target_id=%s "
                "reason=\"%s\"",
                p->link->name, it->row.source_id, it->row.target_id, why);
  /* What was written stays written: the etag is kept. A photo refused
   * for good is not read again while its etag stays the same. */
  record(it, it->row.etag, skipped ? it->new_etag : NULL, why, next);
  if (skipped)
    p->stats.skipped++;
  else
    p->stats.failed++;
  end_item(it);
}

/* The target refused a write with 403: a permission or the tenant's
 * photo policy. Explained once a pass. */
static void
write_refused(struct item *it, const struct graph_response *resp)
{
  struct photo_pass *p = it->pass;

  if (!p->refused_logged && !p->cancelled) {
    p->refused_logged = 1;
    log_warning("photo writes refused by the target tenant link=%s "
                "tenant=%s status=403 code=%s (the app needs "
                "ProfilePhoto.ReadWrite.All or User.ReadWrite.All there, "
                "and the tenant's photoUpdateSettings must let cloud "
                "services update photos; tried again later)",
                p->link->name, p->link->target->name, resp->code);
  }
  item_fail(it, 0, retry_at(p), "target refused the photo (HTTP 403 %s)",
            resp->code);
}

static void
on_written(void *ctx, const struct graph_response *resp)
{
  struct item *it = ctx;
  struct photo_pass *p = it->pass;

  p->xfers--;
  if (resp->result == GRAPH_ERR_CANCELLED || p->cancelled) {
    end_item(it);
  } else if (resp->result == GRAPH_OK || (it->remove && resp->status == 404)) {
    /* A DELETE of a photo already gone leaves what was wanted. */
    record(it, it->remove ? NULL : it->new_etag, NULL, NULL,
           photo_next_check(p->link, it->row.source_id, p->now));
    if (it->remove)
      p->stats.removed++;
    else
      p->stats.written++;
    log_debug("photo %s link=%s source_id=%s target_id=%s",
              it->remove ? "removed" : "written", p->link->name,
              it->row.source_id, it->row.target_id);
    end_item(it);
  } else if (resp->status == 403) {
    write_refused(it, resp);
  } else {
    item_fail(it, 0,
              resp->transient
                  ? retry_at(p)
                  : photo_next_check(p->link, it->row.source_id, p->now),
              "%s", resp->errmsg);
  }
  pump(p);
}

/* A value from the network made fit for a log line: printable ASCII,
 * anything else as '?', cut to len - 1 bytes; "none" for NULL. */
static void
printable(const char *v, char *buf, size_t len)
{
  size_t i = 0;

  if (v == NULL)
    v = "none";
  for (; v[i] != '\0' && i + 1 < len; i++)
    buf[i] = v[i] >= 0x20 && v[i] < 0x7f ? v[i] : '?';
  buf[i] = '\0';
}

static void
on_bytes(void *ctx, const struct graph_response *resp)
{
  struct item *it = ctx;
  struct photo_pass *p = it->pass;
  const char *type;

  if (resp->result == GRAPH_ERR_CANCELLED || p->cancelled) {
    p->xfers--;
    end_item(it);
  } else if (resp->result == GRAPH_ERR_TOO_LARGE) {
    p->xfers--;
    item_fail(it, 1, photo_next_check(p->link, it->row.source_id, p->now),
              "photo over photo_max_bytes = %ld", p->link->photo_max_bytes);
  } else if (resp->result != GRAPH_OK) {
    p->xfers--;
    item_fail(it, 0, retry_at(p), "reading the source photo: %s",
              resp->errmsg);
  } else if ((type = photo_type(resp->content_type)) == NULL) {
    char shown[65];
    p->xfers--;
    printable(resp->content_type, shown, sizeof(shown));
    item_fail(it, 1, photo_next_check(p->link, it->row.source_id, p->now),
              "source photo is not image/jpeg or image/png (%s)", shown);
  } else if (!photo_type_matches(type, resp->raw, resp->raw_len)) {
    p->xfers--;
    item_fail(it, 1, photo_next_check(p->link, it->row.source_id, p->now),
              "source photo is not the %s it says it is", type);
  } else if (graph_photo_put(p->target, it->row.target_id, type, resp->raw,
                             resp->raw_len, on_written, it) != 0) {
    p->xfers--;
    item_fail(it, 0, retry_at(p), "cannot send the photo");
  }
  /* else: the PUT holds the transfer slot (and a copy of the bytes; this
   * answer's go when the callback returns) */
  pump(p);
}

static void
start_xfer(struct item *it)
{
  struct photo_pass *p = it->pass;
  int rc;

  it->state = ITEM_XFER;
  p->xfers++;
  if (it->remove)
    rc = graph_photo_delete(p->target, it->row.target_id, on_written, it);
  else
    rc = graph_photo_get(p->source, it->row.source_id,
                         (size_t)p->link->photo_max_bytes, on_bytes, it);
  if (rc != 0) {
    p->xfers--;
    item_fail(it, 0, retry_at(p), "cannot start a photo request");
  }
}

static void
on_meta(void *ctx, const struct graph_response *resp,
        const struct graph_photo *photo)
{
  struct item *it = ctx;
  struct photo_pass *p = it->pass;

  p->checks--;
  if (resp->result == GRAPH_ERR_CANCELLED || p->cancelled) {
    end_item(it);
  } else if (photo == NULL) {
    if (resp->status == 403 && !p->refused_logged) {
      p->refused_logged = 1;
      log_warning("photo reads refused by the source tenant link=%s "
                  "tenant=%s status=403 code=%s (the app needs "
                  "User.Read.All or ProfilePhoto.Read.All there)",
                  p->link->name, p->link->source->name, resp->code);
    }
    item_fail(it, 0,
              resp->transient || resp->status == 403
                  ? retry_at(p)
                  : photo_next_check(p->link, it->row.source_id, p->now),
              "reading the photo's metadata: %s", resp->errmsg);
  } else {
    p->stats.checked++;
    if (!photo->present && it->row.etag == NULL) {
      record(it, NULL, NULL, NULL,
             photo_next_check(p->link, it->row.source_id, p->now));
      p->stats.unchanged++;
      end_item(it);
    } else if (photo->present && it->row.etag != NULL &&
               strcmp(photo->etag, it->row.etag) == 0) {
      record(it, it->row.etag, NULL, NULL,
             photo_next_check(p->link, it->row.source_id, p->now));
      p->stats.unchanged++;
      end_item(it);
    } else if (photo->present && it->row.skipped_etag != NULL &&
               strcmp(photo->etag, it->row.skipped_etag) == 0) {
      /* The photo refused last time, unchanged: not read again. */
      log_debug("photo still refused link=%s source_id=%s reason=\"%s\"",
                p->link->name, it->row.source_id,
                it->row.error != NULL ? it->row.error : "");
      record(it, it->row.etag, it->row.skipped_etag, it->row.error,
             photo_next_check(p->link, it->row.source_id, p->now));
      p->stats.skipped++;
      end_item(it);
    } else {
      it->remove = !photo->present;
      if (photo->present) {
        it->new_etag = strdup(photo->etag);
        if (it->new_etag == NULL) {
          item_fail(it, 0, retry_at(p), "out of memory");
          pump(p);
          return;
        }
      }
      it->state = ITEM_WAIT_XFER;
    }
  }
  pump(p);
}

/* Whether galbridge may write on this copy: its last written anchor is
 * this person's (with its proof when a key is set), and the target's own
 * read, when it has one, shows that same anchor. NULL when it may, else
 * the reason (static). */
static const char *
unproven(const struct photo_pass *p, const struct item *it,
         const struct anchor_key *key)
{
  const struct config_link *link = p->link;
  json_t *applied =
      json_loads(it->row.applied ? it->row.applied : "", 0, NULL);
  const char *value =
      json_string_value(json_object_get(applied, planner_anchor_attr(link)));
  char *plain = anchor_plain(link->source->tenant_id, it->row.source_id);
  char *theirs = anchor_parse(value, NULL);
  const char *why = NULL;

  if (plain == NULL || theirs == NULL || strcmp(plain, theirs) != 0)
    why = "the copy carries no anchor of this person";
  else if (key != NULL && !anchor_proven(key, link->target->tenant_id,
                                         config_object_name(link->object),
                                         value, it->row.target_id))
    why = "the copy's anchor has no proof galbridge made it";
  if (why == NULL && it->row.target_attrs != NULL) {
    json_t *t = json_loads(it->row.target_attrs, 0, NULL);
    const char *seen =
        json_is_object(t) ? graph_user_extension(t, link->anchor) : NULL;
    if (json_is_object(t) && (seen == NULL || strcmp(seen, value) != 0))
      why = "the copy's anchor was changed in the target";
    json_decref(t);
  }
  free(plain);
  free(theirs);
  json_decref(applied);
  return why;
}

static void
finish(struct photo_pass *p)
{
  for (size_t i = 0; i < p->n; i++) {
    free(p->items[i].row.source_id);
    free(p->items[i].row.target_id);
    free(p->items[i].row.applied);
    free(p->items[i].row.target_attrs);
    free(p->items[i].row.etag);
    free(p->items[i].row.skipped_etag);
    free(p->items[i].row.error);
    free(p->items[i].new_etag);
  }
  free(p->items);
  free(p);
}

static void
pump(struct photo_pass *p)
{
  if (p->pumping)
    return; /* an answer that came at once: the outer pump goes on */
  p->pumping = 1;
  while (!p->cancelled && p->checks < PHOTO_CHECKS && p->next_check < p->n) {
    struct item *it = &p->items[p->next_check++];
    if (it->state != ITEM_WAIT_CHECK)
      continue;
    it->state = ITEM_CHECKING;
    p->checks++;
    if (graph_photo_meta(p->source, it->row.source_id, on_meta, it) != 0) {
      p->checks--;
      item_fail(it, 1, photo_next_check(p->link, it->row.source_id, p->now),
                "the source id is no object id");
    }
  }
  for (size_t i = 0; !p->cancelled && p->xfers < PHOTO_TRANSFERS && i < p->n;
       i++) {
    if (p->items[i].state == ITEM_WAIT_XFER)
      start_xfer(&p->items[i]);
  }
  p->pumping = 0;
  if (p->checks > 0 || p->xfers > 0)
    return;
  if (p->cancelled) {
    finish(p);
    return;
  }
  if (p->ended < p->n)
    return; /* not reached: with nothing in flight every item has ended */
  {
    if (p->stats.checked + p->stats.skipped + p->stats.failed > 0)
      log_info("photos checked link=%s checked=%lu unchanged=%lu "
               "written=%lu removed=%lu skipped=%lu failed=%lu",
               p->link->name, p->stats.checked, p->stats.unchanged,
               p->stats.written, p->stats.removed, p->stats.skipped,
               p->stats.failed);
    p->done(p->ctx, &p->stats);
  }
  finish(p);
}

int
photo_pass_start(struct store *store, struct graph *source,
                 struct graph *target, const struct config_link *link,
                 const struct anchor_key *key, time_t now, photo_done_fn done,
                 void *ctx, struct photo_pass **out)
{
  struct photo_pass *p = calloc(1, sizeof(*p));
  struct store_photo_row *rows = NULL;
  size_t n = 0;

  *out = NULL;
  if (p == NULL)
    return -1;
  if (store_photos_due(store, link->name, link->source->tenant_id,
                       link->target->tenant_id, now, PHOTO_ROUND_MAX, &rows,
                       &n) != 0) {
    free(p);
    return -1;
  }
  p->items = calloc(n > 0 ? n : 1, sizeof(*p->items));
  if (p->items == NULL) {
    store_photo_rows_free(rows, n);
    free(p);
    return -1;
  }
  p->store = store;
  p->source = source;
  p->target = target;
  p->link = link;
  p->now = now;
  p->done = done;
  p->ctx = ctx;
  p->n = n;
  for (size_t i = 0; i < n; i++) {
    struct item *it = &p->items[i];
    const char *why;
    it->pass = p;
    it->row = rows[i];
    memset(&rows[i], 0, sizeof(rows[i]));
    it->state = ITEM_WAIT_CHECK;
    why = unproven(p, it, key);
    if (why != NULL)
      item_fail(it, 1, photo_next_check(link, it->row.source_id, now), "%s",
                why);
  }
  store_photo_rows_free(rows, n);
  *out = p;
  pump(p); /* with nothing to ask, `done` comes before this returns */
  return 0;
}

void
photo_pass_cancel(struct photo_pass *pass)
{
  if (pass == NULL)
    return;
  pass->cancelled = 1;
  if (pass->checks == 0 && pass->xfers == 0)
    finish(pass);
}
