/*
 * graph_policy — see include/graph_policy.h.
 *
 * A read is a small state machine: the partner list's pages (with
 * $expand=identitySynchronization; a 400 to the first page starts again
 * without it), then the default configuration, then one callback. The
 * partner wanted is looked for on every page; the first one that names
 * it wins. Only this file knows the policy's JSON shapes.
 */
#include "graph_policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "text.h"

#define LIST_EXPAND GRAPH_POLICY_PARTNERS "?$expand=identitySynchronization"
#define DEFAULT_PATH "/v1.0/policies/crossTenantAccessPolicy/default"

/* --- parsing --- */

/* Whether a targets list names `keyword` (AllUsers) as a user target. */
static int
targets_all(const json_t *targets, const char *keyword)
{
  size_t i;
  const json_t *t;

  json_array_foreach(targets, i, t)
  {
    const char *name = json_string_value(json_object_get(t, "target"));
    if (name != NULL && strcasecmp(name, keyword) == 0)
      return 1;
  }
  return 0;
}

int
graph_policy_parse_b2b(const json_t *value, struct graph_b2b_setting *out,
                       char *err, size_t len)
{
  const json_t *users, *targets, *apps;
  const char *access;
  char *text;

  memset(out, 0, sizeof(*out));
  if (value == NULL || json_is_null(value))
    return 0;
  if (!json_is_object(value)) {
    text_set_err(err, len, "a B2B collaboration setting is not an object");
    return -1;
  }
  users = json_object_get(value, "usersAndGroups");
  if (users == NULL || json_is_null(users)) {
    out->users = GRAPH_B2B_UNSET;
  } else {
    access = json_string_value(json_object_get(users, "accessType"));
    targets = json_object_get(users, "targets");
    if (access == NULL || !json_is_array(targets) ||
        (strcmp(access, "allowed") != 0 && strcmp(access, "blocked") != 0)) {
      text_set_err(err, len,
                   "usersAndGroups has no accessType allowed or blocked "
                   "with a targets list");
      return -1;
    }
    if (targets_all(targets, "AllUsers"))
      out->users = access[0] == 'a' ? GRAPH_B2B_ALLOWED : GRAPH_B2B_BLOCKED;
    else
      out->users = GRAPH_B2B_LISTED;
  }
  apps = json_object_get(value, "applications");
  if (apps != NULL && !json_is_null(apps)) {
    text = json_dumps(apps, JSON_COMPACT | JSON_SORT_KEYS);
    if (text == NULL || strlen(text) >= sizeof(out->applications)) {
      free(text);
      text_set_err(err, len,
                   "a B2B collaboration applications list is "
                   "too long to keep");
      return -1;
    }
    memcpy(out->applications, text, strlen(text) + 1);
    free(text);
  }
  return 0;
}

static enum graph_flag
flag(const json_t *obj, const char *key)
{
  const json_t *v = json_object_get(obj, key);

  if (!json_is_boolean(v))
    return GRAPH_FLAG_NULL;
  return json_is_true(v) ? GRAPH_FLAG_TRUE : GRAPH_FLAG_FALSE;
}

int
graph_policy_parse_partner(const json_t *obj, struct graph_policy *p,
                           char *err, size_t len)
{
  const json_t *consent, *sync;

  if (!json_is_object(obj)) {
    text_set_err(err, len, "a partner configuration is not an object");
    return -1;
  }
  p->partner = 1;
  consent = json_object_get(obj, "automaticUserConsentSettings");
  p->auto_inbound = flag(consent, "inboundAllowed");
  p->auto_outbound = flag(consent, "outboundAllowed");
  if (graph_policy_parse_b2b(json_object_get(obj, "b2bCollaborationInbound"),
                             &p->inbound, err, len) != 0 ||
      graph_policy_parse_b2b(json_object_get(obj, "b2bCollaborationOutbound"),
                             &p->outbound, err, len) != 0)
    return -1;
  if (json_object_get(obj, "identitySynchronization") == NULL)
    return 0;
  sync = json_object_get(obj, "identitySynchronization");
  p->sync_allowed = json_is_object(sync)
                        ? (int)flag(json_object_get(sync, "userSyncInbound"),
                                    "isSyncAllowed")
                        : GRAPH_FLAG_NULL;
  return 0;
}

int
graph_policy_parse_default(const json_t *obj, struct graph_policy *p,
                           char *err, size_t len)
{
  if (!json_is_object(obj)) {
    text_set_err(err, len, "the default configuration is not an object");
    return -1;
  }
  return graph_policy_parse_b2b(
             json_object_get(obj, "b2bCollaborationInbound"),
             &p->default_inbound, err, len) != 0 ||
                 graph_policy_parse_b2b(
                     json_object_get(obj, "b2bCollaborationOutbound"),
                     &p->default_outbound, err, len) != 0
             ? -1
             : 0;
}

const struct graph_b2b_setting *
graph_policy_effective(const struct graph_policy *p, int inbound,
                       int *from_default)
{
  const struct graph_b2b_setting *own = inbound ? &p->inbound : &p->outbound;
  int dflt = !p->partner || own->users == GRAPH_B2B_UNSET;

  if (from_default != NULL)
    *from_default = dflt;
  if (!dflt)
    return own;
  return inbound ? &p->default_inbound : &p->default_outbound;
}

/* --- the read --- */

struct read {
  struct graph *graph;
  char partner_id[64];
  int expand; /* the list is read with $expand */
  int pages;
  int found;
  struct graph_policy policy;
  char errmsg[512];
  graph_policy_fn done;
  void *ctx;
};

static void
finish(struct read *r, const struct graph_response *resp, int ok)
{
  r->done(r->ctx, resp, ok ? &r->policy : NULL);
  free(r);
}

/* A failed answer: graph's message names the request already. */
static void
fail(struct read *r, const struct graph_response *resp)
{
  finish(r, resp, 0);
}

/* An answer that is not what Graph documents: `why`, naming `what`. */
static void
protocol(struct read *r, const struct graph_response *resp, const char *what,
         const char *why)
{
  struct graph_response out = *resp;

  out.result = GRAPH_ERR_PROTOCOL;
  out.transient = 1;
  snprintf(r->errmsg, sizeof(r->errmsg), "%s: %s", what, why);
  out.errmsg = r->errmsg;
  finish(r, &out, 0);
}

static void
on_default(void *ctx, const struct graph_response *resp)
{
  struct read *r = ctx;
  char err[256];

  if (resp->result == GRAPH_ERR_CANCELLED) {
    finish(r, resp, 0);
    return;
  }
  if (resp->result != GRAPH_OK) {
    fail(r, resp);
    return;
  }
  if (graph_policy_parse_default(resp->body, &r->policy, err, sizeof(err)) !=
      0) {
    protocol(r, resp, "GET " DEFAULT_PATH, err);
    return;
  }
  finish(r, resp, 1);
}

static int list_start(struct read *r);

static void
on_list(void *ctx, const struct graph_response *resp)
{
  struct read *r = ctx;
  const json_t *value = json_object_get(resp->body, "value"), *item;
  const char *next;
  char err[256];
  size_t i;

  if (resp->result == GRAPH_ERR_CANCELLED) {
    finish(r, resp, 0);
    return;
  }
  /* The documented form is $select=tenantId&$expand=...; should the
   * service refuse $expand alone, read the list without it. */
  if (resp->result != GRAPH_OK && resp->status == 400 && r->expand &&
      r->pages == 0) {
    r->expand = 0;
    if (list_start(r) == 0)
      return;
  }
  if (resp->result != GRAPH_OK) {
    fail(r, resp);
    return;
  }
  if (!json_is_array(value)) {
    protocol(r, resp, "GET " GRAPH_POLICY_PARTNERS,
             "the answer has no \"value\" array");
    return;
  }
  r->pages++;
  json_array_foreach(value, i, item)
  {
    const char *tid = json_string_value(json_object_get(item, "tenantId"));
    if (r->found || tid == NULL || strcasecmp(tid, r->partner_id) != 0)
      continue;
    r->found = 1;
    if (graph_policy_parse_partner(item, &r->policy, err, sizeof(err)) != 0) {
      protocol(r, resp, "GET " GRAPH_POLICY_PARTNERS, err);
      return;
    }
  }
  next = json_string_value(json_object_get(resp->body, "@odata.nextLink"));
  if (next != NULL && !r->found) {
    if (r->pages >= GRAPH_POLICY_PAGES) {
      protocol(r, resp, "GET " GRAPH_POLICY_PARTNERS,
               "more pages of partners than galbridge reads");
      return;
    }
    if (graph_get(r->graph, next, NULL, on_list, r) != 0)
      protocol(r, resp, "GET " GRAPH_POLICY_PARTNERS,
               "a nextLink outside the tenant's Graph host");
    return;
  }
  if (graph_get(r->graph, DEFAULT_PATH, NULL, on_default, r) != 0)
    protocol(r, resp, "GET " DEFAULT_PATH, "cannot send the request");
}

static int
list_start(struct read *r)
{
  if (!r->expand)
    r->policy.sync_allowed = GRAPH_POLICY_SYNC_UNKNOWN;
  return graph_get(r->graph, r->expand ? LIST_EXPAND : GRAPH_POLICY_PARTNERS,
                   NULL, on_list, r);
}

int
graph_policy_read(struct graph *graph, const char *partner_id,
                  graph_policy_fn done, void *ctx)
{
  struct read *r;

  if (partner_id == NULL || !text_is_guid(partner_id))
    return -1;
  r = calloc(1, sizeof(*r));
  if (r == NULL)
    return -1;
  r->graph = graph;
  snprintf(r->partner_id, sizeof(r->partner_id), "%s", partner_id);
  r->expand = 1;
  r->policy.auto_inbound = r->policy.auto_outbound = GRAPH_FLAG_NULL;
  r->policy.sync_allowed = GRAPH_FLAG_NULL;
  r->done = done;
  r->ctx = ctx;
  if (list_start(r) != 0) {
    free(r);
    return -1;
  }
  return 0;
}

/* --- writes --- */

static json_t *
flag_json(enum graph_flag f)
{
  return f == GRAPH_FLAG_NULL ? json_null() : json_boolean(f);
}

static int
set_allow(json_t *body, const char *key, const struct graph_b2b_setting *s)
{
  json_t *setting, *apps = NULL;

  setting = json_pack("{s:{s:s,s:[{s:s,s:s}]}}", "usersAndGroups",
                      "accessType", "allowed", "targets", "target", "AllUsers",
                      "targetType", "user");
  if (setting == NULL)
    return -1;
  if (s->applications[0] != '\0') {
    apps = json_loads(s->applications, 0, NULL);
    if (apps == NULL ||
        json_object_set_new(setting, "applications", apps) != 0) {
      json_decref(setting);
      return -1;
    }
  }
  return json_object_set_new(body, key, setting);
}

json_t *
graph_policy_patch_body(const struct graph_policy_patch *patch)
{
  json_t *body = json_object();

  if (body == NULL)
    return NULL;
  if (patch->set_auto &&
      json_object_set_new(body, "automaticUserConsentSettings",
                          json_pack("{s:o,s:o}", "inboundAllowed",
                                    flag_json(patch->auto_inbound),
                                    "outboundAllowed",
                                    flag_json(patch->auto_outbound))) != 0)
    goto fail;
  if (patch->allow_inbound != NULL &&
      set_allow(body, "b2bCollaborationInbound", patch->allow_inbound) != 0)
    goto fail;
  if (patch->allow_outbound != NULL &&
      set_allow(body, "b2bCollaborationOutbound", patch->allow_outbound) != 0)
    goto fail;
  return body;
fail:
  json_decref(body);
  return NULL;
}

int
graph_policy_partner_create(struct graph *graph, const char *partner_id,
                            graph_done_fn done, void *ctx)
{
  json_t *body;
  int rc;

  if (partner_id == NULL || !text_is_guid(partner_id))
    return -1;
  body = json_pack("{s:s}", "tenantId", partner_id);
  if (body == NULL)
    return -1;
  rc = graph_request(graph, "POST", GRAPH_POLICY_PARTNERS, body, NULL, done,
                     ctx);
  json_decref(body);
  return rc;
}

int
graph_policy_conflict(const struct graph_response *resp)
{
  return resp->result == GRAPH_ERR_HTTP &&
         (resp->status == 409 ||
          (resp->code != NULL &&
           strcmp(resp->code, "Request_MultipleObjectsWithSameKeyValue") ==
               0));
}

int
graph_policy_partner_patch(struct graph *graph, const char *partner_id,
                           const struct graph_policy_patch *patch,
                           graph_done_fn done, void *ctx)
{
  char url[256];
  json_t *body;
  int rc;

  if (partner_id == NULL || !text_is_guid(partner_id))
    return -1;
  body = graph_policy_patch_body(patch);
  if (body == NULL)
    return -1;
  snprintf(url, sizeof(url), "%s/%s", GRAPH_POLICY_PARTNERS, partner_id);
  rc = graph_request(graph, "PATCH", url, body, NULL, done, ctx);
  json_decref(body);
  return rc;
}
