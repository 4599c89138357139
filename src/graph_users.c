/*
 * graph_users — the target-side user operations: who holds an address
 * (graph_address_holders: users, contacts and groups), invitations,
 * PATCH, DELETE and restore of a user, a group's transitive members and
 * the tenant's user count. See include/graph.h.
 *
 * Each call keeps what its answer needs in a struct call (or, for the
 * three lookups of graph_address_holders, a struct holders that answers
 * once all three have) and decodes the answer into its own callback's
 * shape. Ids reach a URL only when they look like object ids; addresses
 * only quoted as OData literals and URL-encoded. Finds, invitations,
 * PATCHes, PUTs and DELETEs go through graph_submit(), so through $batch once
 * batching is on; a restore, the members and the count go alone.
 */
#include "graph_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct call {
  struct graph *graph;
  graph_id_fn id;
  graph_done_fn done;
  graph_members_fn members_done;
  graph_count_fn count_done;
  void *ctx;
  char *anchor_attr;
  json_t *members;
};

static struct call *
call_new(struct graph *graph, void *ctx)
{
  struct call *c = calloc(1, sizeof(*c));
  if (c != NULL) {
    c->graph = graph;
    c->ctx = ctx;
  }
  return c;
}

static void
call_free(struct call *c)
{
  free(c->anchor_attr);
  json_decref(c->members);
  free(c);
}

char *
graph_odata_quote(const char *value)
{
  size_t n = 3;
  char *out, *p;

  for (const char *s = value; *s != '\0'; s++)
    n += (*s == '\'') ? 2 : 1;
  out = malloc(n);
  if (out == NULL)
    return NULL;
  p = out;
  *p++ = '\'';
  for (const char *s = value; *s != '\0'; s++) {
    *p++ = *s;
    if (*s == '\'')
      *p++ = '\'';
  }
  *p++ = '\'';
  *p = '\0';
  return out;
}

int
graph_user_holds(const json_t *u, const char *address)
{
  static const char *const names[] = {"mail", "userPrincipalName"};
  const json_t *v;
  size_t i;

  if (address == NULL)
    return 0;
  for (i = 0; i < 2; i++) {
    const char *a = json_string_value(json_object_get(u, names[i]));
    if (a != NULL && strcasecmp(a, address) == 0)
      return 1;
  }
  json_array_foreach(json_object_get(u, "proxyAddresses"), i, v)
  {
    const char *a = json_string_value(v);
    if (a != NULL && strncasecmp(a, "smtp:", 5) == 0 &&
        strcasecmp(a + 5, address) == 0)
      return 1;
  }
  return 0;
}

/* The three lookups of graph_address_holders, answered in any order. */
struct holders {
  struct graph *graph;
  graph_holders_fn done;
  void *ctx;
  char *anchor_attr;
  char *address;
  int waiting;
  json_t *values[3]; /* users, contacts, groups */
  long status;       /* of the first lookup that failed, if any */
  int result;
  int transient, auth_permanent;
  char code[64];
  char errmsg[512];
};

static const char *const holder_kinds[3] = {"user", "contact", "group"};

static void
holders_finish(struct holders *h)
{
  struct graph_holder list[3 * GRAPH_HOLDERS_MAX];
  struct graph_response r = {.result = h->result,
                             .status = h->status,
                             .code = h->code,
                             .errmsg = h->errmsg,
                             .transient = h->transient,
                             .auth_permanent = h->auth_permanent};
  size_t n = 0;

  if (h->result == GRAPH_OK) {
    for (int k = 0; k < 3; k++) {
      json_t *v;
      size_t i;
      json_array_foreach(h->values[k], i, v)
      {
        const char *id = json_string_value(json_object_get(v, "id"));
        if (id == NULL || n == sizeof(list) / sizeof(list[0]))
          continue;
        list[n] = (struct graph_holder){
            .kind = holder_kinds[k],
            .id = id,
            .display_name =
                json_string_value(json_object_get(v, "displayName")),
            .creation_type =
                json_string_value(json_object_get(v, "creationType")),
            .user_type = json_string_value(json_object_get(v, "userType")),
            .anchor = h->anchor_attr != NULL
                          ? graph_user_extension(v, h->anchor_attr)
                          : NULL,
            .created = http_parse_iso8601(
                json_string_value(json_object_get(v, "createdDateTime"))),
            .other_only = k == 0 && !graph_user_holds(v, h->address),
        };
        n++;
      }
    }
  }
  h->done(h->ctx, &r, list, n);
  for (int k = 0; k < 3; k++)
    json_decref(h->values[k]);
  free(h->anchor_attr);
  free(h->address);
  free(h);
}

static void
on_holders(struct holders *h, int k, const struct graph_response *resp)
{
  json_t *value = json_object_get(resp->body, "value");

  if (h->result == GRAPH_OK && resp->result == GRAPH_OK &&
      !json_is_array(value)) {
    h->result = GRAPH_ERR_PROTOCOL;
    h->transient = 1;
    snprintf(h->errmsg, sizeof(h->errmsg),
             "%ss query answer has no \"value\" array", holder_kinds[k]);
  } else if (h->result == GRAPH_OK && resp->result != GRAPH_OK) {
    h->result = resp->result;
    h->status = resp->status;
    h->transient = graph_error_transient(resp);
    h->auth_permanent = resp->auth_permanent;
    snprintf(h->code, sizeof(h->code), "%s", resp->code ? resp->code : "");
    snprintf(h->errmsg, sizeof(h->errmsg), "%s", resp->errmsg);
  } else if (resp->result == GRAPH_OK) {
    h->values[k] = json_incref(value);
  }
  if (--h->waiting == 0)
    holders_finish(h);
}

static void
on_holders_users(void *ctx, const struct graph_response *resp)
{
  on_holders(ctx, 0, resp);
}

static void
on_holders_contacts(void *ctx, const struct graph_response *resp)
{
  on_holders(ctx, 1, resp);
}

static void
on_holders_groups(void *ctx, const struct graph_response *resp)
{
  on_holders(ctx, 2, resp);
}

/* "/<what>?$filter=<filter>&<rest>" with the filter URL-encoded. New
 * string. */
static char *
query_url(const char *what, const char *filter, const char *rest)
{
  char *encoded = http_urlencode(filter), *url;

  if (encoded == NULL)
    return NULL;
  url = graph_url_build("/%s?$filter=%s&%s", what, encoded, rest);
  free(encoded);
  return url;
}

int
graph_address_holders(struct graph *graph, const char *address,
                      const char *anchor_attr, graph_holders_fn done,
                      void *ctx)
{
  static const char eventual[] = "ConsistencyLevel: eventual";
  static const graph_done_fn answers[3] = {
      on_holders_users, on_holders_contacts, on_holders_groups};
  struct holders *h = NULL;
  char *quoted = NULL, *prefixed = NULL, *smtp = NULL;
  char *filter[2] = {0}, *url[3] = {0};
  int sent = 0, rc = -1;

  if (address == NULL || address[0] == '\0')
    return -1;
  quoted = graph_odata_quote(address);
  prefixed = graph_url_build("smtp:%s", address);
  if (quoted == NULL || prefixed == NULL)
    goto out;
  smtp = graph_odata_quote(prefixed);
  if (smtp == NULL)
    goto out;
  /* Users hold an address as mail, as a proxy address, or (an invited
   * user whose address another object had) in otherMails; contacts and
   * groups as mail or proxy address. Every one stands in the way. */
  filter[0] = graph_url_build("mail eq %s or userPrincipalName eq %s or "
                              "otherMails/any(x:x eq %s) or "
                              "proxyAddresses/any(x:x eq %s)",
                              quoted, quoted, quoted, smtp);
  filter[1] = graph_url_build("mail eq %s or proxyAddresses/any(x:x eq %s)",
                              quoted, smtp);
  if (filter[0] == NULL || filter[1] == NULL)
    goto out;
  url[0] = query_url("users", filter[0],
                     "$select=id,displayName,mail,userPrincipalName,"
                     "proxyAddresses,userType,creationType,createdDateTime,"
                     "onPremisesExtensionAttributes&$top=5");
  url[1] = query_url("contacts", filter[1],
                     "$select=id,displayName,mail&$count=true&$top=5");
  url[2] = query_url("groups", filter[1],
                     "$select=id,displayName,mail&$count=true&$top=5");
  h = calloc(1, sizeof(*h));
  if (url[0] == NULL || url[1] == NULL || url[2] == NULL || h == NULL)
    goto out;
  h->graph = graph;
  h->done = done;
  h->ctx = ctx;
  h->waiting = 3;
  h->result = GRAPH_OK;
  if ((anchor_attr != NULL &&
       (h->anchor_attr = strdup(anchor_attr)) == NULL) ||
      (h->address = strdup(address)) == NULL)
    goto out;
  /* Reads: through $batch when batching (round trips, not resource
   * units: each inner request counts on its own). Contacts' and groups'
   * address filters are advanced queries. */
  for (int k = 0; k < 3; k++) {
    if (graph_submit(graph, "GET", 0, url[k], NULL, k == 0 ? NULL : eventual,
                     answers[k], h) != 0)
      break;
    sent++;
  }
  if (sent < 3) {
    /* Those sent will answer: the ones that could not count as failed. */
    h->result = GRAPH_ERR_PROTOCOL;
    h->transient = 1;
    snprintf(h->errmsg, sizeof(h->errmsg), "cannot ask who holds %s", address);
    h->waiting -= 3 - sent;
    if (sent == 0)
      goto out;
    if (h->waiting == 0)
      holders_finish(h); /* those sent have answered already */
  }
  h = NULL;
  rc = 0;
out:
  if (h != NULL) {
    free(h->anchor_attr);
    free(h->address);
    free(h);
  }
  for (int k = 0; k < 3; k++)
    free(url[k]);
  free(quoted);
  free(prefixed);
  free(smtp);
  free(filter[0]);
  free(filter[1]);
  return rc;
}

static void
on_invite(void *ctx, const struct graph_response *resp)
{
  struct call *c = ctx;
  const char *id = json_string_value(
      json_object_get(json_object_get(resp->body, "invitedUser"), "id"));
  struct graph_response r = *resp;

  if (resp->result == GRAPH_OK && id == NULL) {
    r.result = GRAPH_ERR_PROTOCOL;
    r.transient = 1;
    r.errmsg = "invitation answer has no invitedUser.id";
  }
  c->id(c->ctx, &r, r.result == GRAPH_OK ? id : NULL);
  call_free(c);
}

int
graph_invite(struct graph *graph, const char *mail, const char *display_name,
             int as_member, graph_id_fn done, void *ctx)
{
  struct call *c = call_new(graph, ctx);
  json_t *body;
  int rc;

  if (c == NULL)
    return -1;
  c->id = done;
  body = json_pack("{s:s, s:s, s:b, s:s}", "invitedUserEmailAddress", mail,
                   "inviteRedirectUrl", "https://myapplications.microsoft.com",
                   "sendInvitationMessage", 0, "invitedUserType",
                   as_member ? "Member" : "Guest");
  if (body != NULL && display_name != NULL &&
      json_object_set_new(body, "invitedUserDisplayName",
                          json_string(display_name)) != 0) {
    json_decref(body); /* incomplete: not sent */
    body = NULL;
  }
  /* Through $batch when batching, as PATCHes and finds: each invitation
   * still gets its own answer (invitedUser.id) through on_invite. */
  rc = body == NULL ? -1
                    : graph_submit(graph, "POST", 0, "/invitations", body,
                                   NULL, on_invite, c);
  json_decref(body);
  if (rc != 0)
    call_free(c);
  return rc;
}

static void
on_plain(void *ctx, const struct graph_response *resp)
{
  struct call *c = ctx;
  c->done(c->ctx, resp);
  call_free(c);
}

/* METHOD prefix + id + suffix, e.g. "/v1.0/users/" id "". */
static int
user_call(struct graph *graph, const char *method, const char *prefix,
          const char *id, const char *suffix, const json_t *body,
          graph_done_fn done, void *ctx)
{
  struct call *c;
  char *url;
  int rc;

  /* Object ids are GUIDs; anything else must not reach a URL. */
  for (const char *p = id; *p != '\0'; p++) {
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
          (*p >= 'A' && *p <= 'F') || *p == '-'))
      return -1;
  }
  if (strlen(id) > 64)
    return -1;
  c = call_new(graph, ctx);
  if (c == NULL)
    return -1;
  c->done = done;
  url = graph_url_build("%s%s%s", prefix, id, suffix);
  /* PATCH and DELETE may go through $batch; a restore goes alone. */
  if (url == NULL)
    rc = -1;
  else if (strcmp(method, "POST") != 0 && strncmp(url, "/beta/", 6) == 0)
    rc = graph_submit(graph, method, 1, url + 5, body, NULL, on_plain, c);
  else if (strcmp(method, "POST") != 0 && strncmp(url, "/v1.0/", 6) == 0)
    rc = graph_submit(graph, method, 0, url + 5, body, NULL, on_plain, c);
  else
    rc = graph_request(graph, method, url, body, NULL, on_plain, c);
  free(url);
  if (rc != 0)
    call_free(c);
  return rc;
}

static int
is_anchor_attr(const char *attr)
{
  return strncmp(attr, "extensionAttribute", 18) == 0;
}

int
graph_user_patch(struct graph *graph, const char *user_id, const json_t *attrs,
                 graph_done_fn done, void *ctx)
{
  json_t *body = json_object(), *ext = json_object(), *v;
  const char *key;
  int beta = 0, rc = -1;

  if (body == NULL || ext == NULL)
    goto out;
  json_object_foreach((json_t *)attrs, key, v)
  {
    if (json_object_set(is_anchor_attr(key) ? ext : body, key, v) != 0)
      goto out;
    if (strcmp(key, "showInAddressList") == 0)
      beta = 1;
  }
  if (json_object_size(ext) > 0 &&
      json_object_set(body, "onPremisesExtensionAttributes", ext) != 0)
    goto out;
  rc = user_call(graph, "PATCH", beta ? "/beta/users/" : "/v1.0/users/",
                 user_id, "", body, done, ctx);
out:
  json_decref(body);
  json_decref(ext);
  return rc;
}

int
graph_user_delete(struct graph *graph, const char *user_id, graph_done_fn done,
                  void *ctx)
{
  return user_call(graph, "DELETE", "/v1.0/users/", user_id, "", NULL, done,
                   ctx);
}

int
graph_user_restore(struct graph *graph, const char *user_id,
                   graph_done_fn done, void *ctx)
{
  return user_call(graph, "POST", "/v1.0/directory/deletedItems/", user_id,
                   "/restore", NULL, done, ctx);
}

/* Whether `id` may go into a URL or a reference: a GUID's characters. */
static int
id_ok(const char *id)
{
  size_t n = strlen(id);

  return n > 0 && n <= 64 && strspn(id, "0123456789abcdefABCDEF-") == n;
}

int
graph_user_manager_set(struct graph *graph, const char *user_id,
                       const char *manager_id, graph_done_fn done, void *ctx)
{
  const char *base = graph->tenant->graph_url;
  size_t n = strlen(base);
  char *ref;
  json_t *body;
  int rc;

  if (manager_id == NULL)
    return user_call(graph, "DELETE", "/v1.0/users/", user_id, "/manager/$ref",
                     NULL, done, ctx);
  if (!id_ok(manager_id))
    return -1;
  /* The read URL of the manager, as Microsoft documents it
   * ("https://graph.microsoft.com/v1.0/users/{id}"), on the tenant's own
   * Graph endpoint (a national cloud has its own). */
  while (n > 0 && base[n - 1] == '/')
    n--;
  if (asprintf(&ref, "%.*s/v1.0/users/%s", (int)n, base, manager_id) < 0)
    return -1;
  body = json_pack("{s:s}", "@odata.id", ref);
  free(ref);
  if (body == NULL)
    return -1;
  rc = user_call(graph, "PUT", "/v1.0/users/", user_id, "/manager/$ref", body,
                 done, ctx);
  json_decref(body);
  return rc;
}

static void
on_members(void *ctx, const struct graph_response *resp)
{
  struct call *c = ctx;
  json_t *value = json_object_get(resp->body, "value"), *item;
  const char *next;
  size_t i;
  struct graph_response r = *resp;

  if (resp->result != GRAPH_OK)
    goto out;
  if (!json_is_array(value)) {
    r.result = GRAPH_ERR_PROTOCOL;
    r.transient = 1;
    r.errmsg = "transitiveMembers answer has no \"value\" array";
    goto out;
  }
  json_array_foreach(value, i, item)
  {
    const char *id = json_string_value(json_object_get(item, "id"));
    /* The id is parsed JSON, so valid UTF-8: only memory can be short,
     * and an incomplete set of members must not be taken as the whole. */
    if (id != NULL && json_object_set_new(c->members, id, json_true()) != 0) {
      r.result = GRAPH_ERR_PROTOCOL;
      r.transient = 1;
      r.errmsg = "out of memory holding transitiveMembers";
      goto out;
    }
  }
  next = json_string_value(json_object_get(resp->body, "@odata.nextLink"));
  if (next != NULL) {
    if (graph_request(c->graph, "GET", next, NULL, NULL, on_members, c) == 0)
      return;
    r.result = GRAPH_ERR_PROTOCOL;
    r.transient = 1;
    r.errmsg = "transitiveMembers nextLink outside the tenant's Graph host";
  }
out:
  c->members_done(c->ctx, &r, r.result == GRAPH_OK ? c->members : NULL);
  call_free(c);
}

int
graph_group_members(struct graph *graph, const char *group_id,
                    graph_members_fn done, void *ctx)
{
  struct call *c;
  char *url;
  int rc;

  /* Object ids are GUIDs: anything else, or longer than any id, must not
   * reach a URL (it was once cut to its first 64 characters). */
  for (const char *p = group_id; *p != '\0'; p++) {
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == '-'))
      return -1;
  }
  if (strlen(group_id) > 64)
    return -1;
  c = call_new(graph, ctx);
  if (c == NULL)
    return -1;
  c->members_done = done;
  c->members = json_object();
  url = graph_url_build(
      "/v1.0/groups/%s/transitiveMembers?$select=id&$top=999", group_id);
  rc = c->members == NULL || url == NULL
           ? -1
           : graph_request(graph, "GET", url, NULL, NULL, on_members, c);
  free(url);
  if (rc != 0)
    call_free(c);
  return rc;
}

static void
on_count(void *ctx, const struct graph_response *resp)
{
  struct call *c = ctx;
  json_t *n = json_object_get(resp->body, "@odata.count");
  struct graph_response r = *resp;
  long long count = -1;

  if (resp->result == GRAPH_OK) {
    if (json_is_integer(n) && json_integer_value(n) >= 0) {
      count = (long long)json_integer_value(n);
    } else {
      r.result = GRAPH_ERR_PROTOCOL;
      r.transient = 1;
      r.errmsg = "count answer has no \"@odata.count\" number";
    }
  }
  c->count_done(c->ctx, &r, count);
  call_free(c);
}

/* GET `url` (a $count query) and hand its @odata.count to `done`. */
static int
count_get(struct graph *graph, const char *url, graph_count_fn done, void *ctx)
{
  static const char *const eventual[] = {"ConsistencyLevel: eventual", NULL};
  struct call *c = call_new(graph, ctx);
  int rc;

  if (c == NULL)
    return -1;
  c->count_done = done;
  rc = graph_get(graph, url, eventual, on_count, c);
  if (rc != 0)
    call_free(c);
  return rc;
}

int
graph_user_count(struct graph *graph, graph_count_fn done, void *ctx)
{
  /* $count is an advanced query: ConsistencyLevel eventual; $top=1 and
   * $select=id keep the answer (and its resource units) small. */
  return count_get(graph, "/v1.0/users?$count=true&$top=1&$select=id", done,
                   ctx);
}

int
graph_group_count(struct graph *graph, graph_count_fn done, void *ctx)
{
  return count_get(graph, "/v1.0/groups?$count=true&$top=1&$select=id", done,
                   ctx);
}
