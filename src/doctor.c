/*
 * doctor — see include/doctor.h.
 *
 * The checks run one after another (a queue of steps), each a token
 * request, a Graph GET or an Exchange cmdlet, so that the output reads in
 * order and no tenant sees more than one request at a time. Before them,
 * the state is read (read-only: never created, written or locked, so a
 * running daemon is not disturbed) for stored delta links that a round
 * would not follow.
 *
 * For each guest link, after its reads: the target's cross-tenant access
 * settings for the source and the source's for the target (two reads,
 * each kept for the link), then the verdict of trust.c on what was read.
 * A read refused for want of Policy.Read.All is one note and the other
 * checks go on: galbridge syncs without that permission, so it is not a
 * failure. Of the verdict only a FAIL (B2B collaboration blocked: the
 * link's invitations are refused) makes doctor fail; WARN and note
 * lines do not.
 */
#include "doctor.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "exo.h"
#include "graph.h"
#include "log.h"
#include "store.h"
#include "trust.h"

enum check_kind {
  CHECK_TOKEN_GRAPH,
  CHECK_TOKEN_EXCHANGE,
  CHECK_GRAPH_READ,
  CHECK_EXO_READ,
  CHECK_POLICY_READ, /* a link's tenant's cross-tenant access settings */
  CHECK_TRUST,       /* the verdict on what those reads found */
};

struct check {
  enum check_kind kind;
  size_t tenant;          /* index into the tenants of the config */
  char subject[96];       /* "tenant contoso" or "link a-to-b" */
  char what[160];         /* what is tried */
  char url[256];          /* Graph path, or cmdlet name */
  const char *permission; /* what to grant when it fails */
  size_t link;            /* CHECK_POLICY_READ, CHECK_TRUST: which */
  int in_target;          /* CHECK_POLICY_READ: the target's settings */
};

/* A guest link's settings as read: [1] the target's, [0] the source's. */
struct link_trust {
  struct graph_policy policy[2];
  int have[2];
};

struct tenant_ctx {
  const struct config_tenant *tenant;
  struct auth *auth;
  struct graph *graph;
  struct exo *exo;
};

struct doctor {
  uv_loop_t *loop;
  struct http *http;
  const struct config *cfg;
  FILE *out;
  struct tenant_ctx *tc;
  struct check *checks;
  size_t n_checks, next;
  struct link_trust *trust; /* one per link */
  int failed;
  int warned;
  int done;
};

static void next_check(struct doctor *d);

enum hint {
  HINT_NONE,
  HINT_CREDENTIALS, /* the token request was refused */
  HINT_PERMISSION,  /* a token, but the read was refused */
};

static void
report(struct doctor *d, const struct check *c, int ok, const char *detail,
       enum hint hint)
{
  const struct config_tenant *t = d->tc[c->tenant].tenant;

  if (ok) {
    fprintf(d->out, "ok    %s: %s\n", c->subject, c->what);
    fflush(d->out);
    return;
  }
  d->failed = 1;
  fprintf(d->out, "FAIL  %s: %s: %s\n", c->subject, c->what, detail);
  if (hint == HINT_CREDENTIALS)
    fprintf(d->out,
            "      -> check tenant %s's tenant_id, client_id and its client "
            "secret or certificate (registered on the app, not expired)\n",
            t->name);
  else if (hint == HINT_PERMISSION && c->permission != NULL)
    fprintf(d->out,
            "      -> in tenant %s (%s), grant the application %s and give "
            "admin consent\n",
            t->name, t->tenant_id, c->permission);
  fflush(d->out);
}

static void
on_token(void *ctx, int result, const char *token, const char *errmsg)
{
  struct doctor *d = ctx;
  const struct check *c = &d->checks[d->next - 1];

  (void)token;
  if (result == AUTH_ERR_CANCELLED)
    return;
  report(d, c, result == AUTH_OK, errmsg,
         result == AUTH_ERR_CREDENTIALS ? HINT_CREDENTIALS : HINT_NONE);
  next_check(d);
}

static void
on_graph(void *ctx, const struct graph_response *resp)
{
  struct doctor *d = ctx;
  const struct check *c = &d->checks[d->next - 1];

  if (resp->result == GRAPH_ERR_CANCELLED)
    return;
  report(d, c, resp->result == GRAPH_OK, resp->errmsg,
         resp->result == GRAPH_ERR_AUTH && resp->auth_permanent
             ? HINT_CREDENTIALS
         : resp->status == 401 || resp->status == 403 ? HINT_PERMISSION
                                                      : HINT_NONE);
  next_check(d);
}

static void
on_exo(void *ctx, const struct exo_response *resp)
{
  struct doctor *d = ctx;
  const struct check *c = &d->checks[d->next - 1];

  if (resp->result == EXO_ERR_CANCELLED)
    return;
  report(d, c, resp->result == EXO_OK, resp->errmsg,
         resp->result == EXO_ERR_AUTH && resp->auth_permanent
             ? HINT_CREDENTIALS
         : resp->status == 401 || resp->status == 403 ? HINT_PERMISSION
                                                      : HINT_NONE);
  next_check(d);
}

static void
on_policy(void *ctx, const struct graph_response *resp,
          const struct graph_policy *policy)
{
  struct doctor *d = ctx;
  const struct check *c = &d->checks[d->next - 1];
  const struct config_tenant *t = d->tc[c->tenant].tenant;
  struct link_trust *lt = &d->trust[c->link];

  if (resp->result == GRAPH_ERR_CANCELLED)
    return;
  if (policy != NULL) {
    lt->policy[c->in_target] = *policy;
    lt->have[c->in_target] = 1;
  } else if (resp->status == 401 || resp->status == 403) {
    fprintf(d->out,
            "note  %s: %s not read: in tenant %s (%s), grant the "
            "application Microsoft Graph permission Policy.Read.All and "
            "give admin consent to have them checked\n",
            c->subject, c->what, t->name, t->tenant_id);
  } else {
    d->warned = 1;
    fprintf(d->out, "WARN  %s: %s not read: %s\n", c->subject, c->what,
            resp->errmsg);
  }
  fflush(d->out);
  next_check(d);
}

/* The verdict on link c->link from the settings read before it. */
static void
check_trust(struct doctor *d, const struct check *c)
{
  static const char *const level[] = {[TRUST_OK] = "ok",
                                      [TRUST_NOTE] = "note",
                                      [TRUST_WARN] = "WARN",
                                      [TRUST_FAIL] = "FAIL"};
  const struct config_link *l = &d->cfg->links[c->link];
  const struct link_trust *lt = &d->trust[c->link];
  struct trust_names names = {.link = l->name,
                              .source = l->source->name,
                              .source_id = l->source->tenant_id,
                              .target = l->target->name,
                              .target_id = l->target->tenant_id};
  struct trust_line lines[TRUST_LINES_MAX];
  size_t n;
  char text[512];

  if (l->object != CONFIG_OBJECT_GUEST) {
    trust_not_needed(l, text, sizeof(text));
    fprintf(d->out, "note  %s\n", text);
    fflush(d->out);
    return;
  }
  n = trust_check(&names, lt->have[1] ? &lt->policy[1] : NULL,
                  lt->have[0] ? &lt->policy[0] : NULL, lines, TRUST_LINES_MAX);
  for (size_t i = 0; i < n; i++) {
    fprintf(d->out, "%-4s  %s: %s\n", level[lines[i].level], c->subject,
            lines[i].text);
    if (lines[i].fix[0] != '\0')
      fprintf(d->out, "      -> %s\n", lines[i].fix);
    d->failed |= lines[i].level == TRUST_FAIL;
    d->warned |= lines[i].level == TRUST_WARN;
  }
  fflush(d->out);
}

static void
next_check(struct doctor *d)
{
  const struct check *c;
  struct tenant_ctx *tc;
  json_t *params;
  int rc = -1;

  if (d->next >= d->n_checks) {
    d->done = 1;
    return;
  }
  c = &d->checks[d->next++];
  tc = &d->tc[c->tenant];
  switch (c->kind) {
  case CHECK_TOKEN_GRAPH:
  case CHECK_TOKEN_EXCHANGE:
    auth_invalidate(tc->auth,
                    c->kind == CHECK_TOKEN_GRAPH ? AUTH_RESOURCE_GRAPH
                                                 : AUTH_RESOURCE_EXCHANGE,
                    NULL);
    rc = auth_token(tc->auth,
                    c->kind == CHECK_TOKEN_GRAPH ? AUTH_RESOURCE_GRAPH
                                                 : AUTH_RESOURCE_EXCHANGE,
                    on_token, d);
    break;
  case CHECK_GRAPH_READ:
    rc = graph_get(tc->graph, c->url, NULL, on_graph, d);
    break;
  case CHECK_EXO_READ:
    params = json_pack("{s:i}", "ResultSize", 1);
    rc = params ? exo_invoke(tc->exo, c->url, params, on_exo, d) : -1;
    json_decref(params);
    break;
  case CHECK_POLICY_READ:
    rc = graph_policy_read(tc->graph, c->url, on_policy, d);
    break;
  case CHECK_TRUST:
    check_trust(d, c);
    next_check(d);
    return;
  }
  if (rc != 0) {
    report(d, c, 0, "cannot start the check", HINT_NONE);
    next_check(d);
  }
}

static size_t
tenant_index(const struct config *cfg, const struct config_tenant *t)
{
  return (size_t)(t - cfg->tenants);
}

static struct check *
add(struct doctor *d, enum check_kind kind, size_t tenant, const char *noun,
    const char *name, const char *permission)
{
  struct check *c = &d->checks[d->n_checks++];

  c->kind = kind;
  c->tenant = tenant;
  snprintf(c->subject, sizeof(c->subject), "%s %s", noun, name);
  c->permission = permission;
  return c;
}

/* One check per group of a scope_group or exclude_group list (`key`):
 * each is read as a round reads it, so a group the app cannot read is
 * named here before it stops the link's rounds. */
static void
add_group_checks(struct doctor *d, size_t src, const struct config_link *l,
                 const char *key, const char *list)
{
  char group[CONFIG_GUID_LEN + 1];

  for (size_t i = 0; config_guid_at(list, i, group) != NULL; i++) {
    struct check *c = add(d, CHECK_GRAPH_READ, src, "link", l->name,
                          "Microsoft Graph permission GroupMember.Read.All");
    snprintf(c->what, sizeof(c->what), "read %s %s's members", key, group);
    snprintf(c->url, sizeof(c->url),
             "/v1.0/groups/%s/transitiveMembers?$top=1&$select=id", group);
  }
}

/* A note for each tenant whose stored delta link the next round will not
 * follow (its Graph base URL changed): that round reads it in full. */
static void
check_delta_links(const struct config *cfg, FILE *out)
{
  struct store *store = NULL;
  char err[512];
  int missing = 0;

  if (store_open_readonly(cfg->state_dir, 0, &store, &missing, err,
                          sizeof(err)) != 0) {
    fprintf(out, "note  state %s: cannot be read: %s\n", cfg->state_dir, err);
    return;
  }
  for (size_t i = 0; !missing && i < cfg->n_tenants; i++) {
    const struct config_tenant *t = &cfg->tenants[i];
    struct store_delta_state st;
    char was[256];

    if (store_delta_get(store, t->tenant_id, &st) != 0) {
      fprintf(out, "note  tenant %s: cannot read its delta state\n", t->name);
      continue;
    }
    if (st.delta_link != NULL &&
        !graph_delta_link_usable(t->graph_url, st.base_url, st.delta_link)) {
      graph_url_origin(st.base_url != NULL ? st.base_url : st.delta_link, was,
                       sizeof(was));
      fprintf(out,
              "note  tenant %s: stored delta link of %s will not be "
              "followed (graph_url is %s): its next round reads it in "
              "full\n",
              t->name, was, t->graph_url);
    }
    store_delta_state_clear(&st);
  }
  fflush(out);
  store_close(store);
}

int
doctor_run(uv_loop_t *loop, struct http *http, const struct config *cfg,
           FILE *out)
{
  struct doctor d = {.loop = loop, .http = http, .cfg = cfg, .out = out};
  char err[512];
  int result = -1;

  check_delta_links(cfg, out);
  d.tc = calloc(cfg->n_tenants + 1, sizeof(*d.tc));
  d.checks = calloc(2 * cfg->n_tenants +
                        (7 + 2 * CONFIG_GUIDS_MAX) * cfg->n_links + 1,
                    sizeof(*d.checks));
  d.trust = calloc(cfg->n_links + 1, sizeof(*d.trust));
  if (d.tc == NULL || d.checks == NULL || d.trust == NULL)
    goto out;
  for (size_t i = 0; i < cfg->n_tenants; i++) {
    struct tenant_ctx *tc = &d.tc[i];
    tc->tenant = &cfg->tenants[i];
    if (auth_new(loop, http, tc->tenant, &tc->auth, err, sizeof(err)) != 0) {
      fprintf(out, "FAIL  tenant %s: credentials: %s\n", tc->tenant->name,
              err);
      d.failed = 1;
      continue;
    }
    tc->graph = graph_new(http, tc->auth, tc->tenant);
    tc->exo = exo_new(loop, http, tc->auth, tc->tenant, 1);
    if (tc->graph == NULL || tc->exo == NULL)
      goto out;
  }

  for (size_t i = 0; i < cfg->n_tenants; i++) {
    struct check *c;
    int exchange = 0;
    if (d.tc[i].auth == NULL)
      continue;
    for (size_t j = 0; j < cfg->n_links; j++)
      exchange |= (cfg->links[j].target == &cfg->tenants[i] &&
                   cfg->links[j].object != CONFIG_OBJECT_GUEST);
    c = add(&d, CHECK_TOKEN_GRAPH, i, "tenant", cfg->tenants[i].name, NULL);
    snprintf(c->what, sizeof(c->what), "a Microsoft Graph token");
    if (exchange) {
      c = add(&d, CHECK_TOKEN_EXCHANGE, i, "tenant", cfg->tenants[i].name,
              NULL);
      snprintf(c->what, sizeof(c->what), "an Exchange Online token");
    }
  }
  for (size_t j = 0; j < cfg->n_links; j++) {
    const struct config_link *l = &cfg->links[j];
    size_t src = tenant_index(cfg, l->source);
    size_t dst = tenant_index(cfg, l->target);
    struct check *c;

    if (d.tc[src].auth == NULL || d.tc[dst].auth == NULL)
      continue;
    if (l->object != CONFIG_OBJECT_GROUPCONTACT) {
      c = add(&d, CHECK_GRAPH_READ, src, "link", l->name,
              "Microsoft Graph permission User.Read.All");
      snprintf(c->what, sizeof(c->what), "read the source's users (%s)",
               l->source->name);
      snprintf(c->url, sizeof(c->url), "/v1.0/users?$top=1&$select=id");
    } else {
      c = add(&d, CHECK_GRAPH_READ, src, "link", l->name,
              "Microsoft Graph permission GroupMember.Read.All (or "
              "Group.Read.All)");
      snprintf(c->what, sizeof(c->what), "read the source's groups (%s)",
               l->source->name);
      snprintf(c->url, sizeof(c->url), "/v1.0/groups?$top=1&$select=id");
    }
    add_group_checks(&d, src, l, "scope_group", l->scope_group);
    add_group_checks(&d, src, l, "exclude_group", l->exclude_group);
    c = add(&d, CHECK_GRAPH_READ, dst, "link", l->name,
            l->object == CONFIG_OBJECT_GUEST
                ? "Microsoft Graph permissions User.ReadWrite.All and "
                  "User.Invite.All"
                : "Microsoft Graph permission User.Read.All");
    snprintf(c->what, sizeof(c->what), "read the target's users (%s)",
             l->target->name);
    snprintf(c->url, sizeof(c->url), "/v1.0/users?$top=1&$select=id");
    if (l->object != CONFIG_OBJECT_GUEST) {
      c = add(&d, CHECK_EXO_READ, dst, "link", l->name,
              "Exchange Online permission Exchange.ManageAsApp, with the "
              "Recipient Management role (or Exchange Recipient "
              "Administrator) for its service principal,");
      snprintf(c->what, sizeof(c->what), "list %s in %s",
               config_link_contacts(l) ? "mail contacts" : "mail users",
               l->target->name);
      snprintf(c->url, sizeof(c->url), "%s",
               config_link_contacts(l) ? "Get-MailContact" : "Get-MailUser");
    }
    /* Then its cross-tenant access settings, and the verdict. */
    for (int in_target = 1; l->object == CONFIG_OBJECT_GUEST && in_target >= 0;
         in_target--) {
      const struct config_tenant *me = in_target ? l->target : l->source;
      const struct config_tenant *other = in_target ? l->source : l->target;
      c = add(&d, CHECK_POLICY_READ, in_target ? dst : src, "link", l->name,
              NULL);
      c->link = j;
      c->in_target = in_target;
      snprintf(c->what, sizeof(c->what),
               "tenant %s's cross-tenant access settings for %s", me->name,
               other->name);
      snprintf(c->url, sizeof(c->url), "%s", other->tenant_id);
    }
    c = add(&d, CHECK_TRUST, dst, "link", l->name, NULL);
    c->link = j;
  }

  next_check(&d);
  while (!d.done && uv_run(loop, UV_RUN_ONCE) != 0)
    ;
  if (!d.done)
    goto out;
  fprintf(out, "%s\n",
          d.failed   ? "doctor: some checks failed (see FAIL above); writes "
                       "are not tried here: the first sync exercises them"
          : d.warned ? "doctor: every check passed, with warnings (see WARN "
                       "above); writes are not tried here: the first sync "
                       "exercises them"
                     : "doctor: every check passed; writes are not tried "
                       "here: the first sync exercises them");
  result = d.failed ? 1 : 0;

out:
  for (size_t i = 0; d.tc != NULL && i < cfg->n_tenants; i++) {
    graph_free(d.tc[i].graph);
    exo_free(d.tc[i].exo);
    auth_free(d.tc[i].auth);
  }
  free(d.tc);
  free(d.checks);
  free(d.trust);
  return result;
}
