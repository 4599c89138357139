/*
 * trust_run — `galbridge setup-trust LINK [--yes]` (see include/trust.h).
 *
 * One request at a time, in an order a person can follow: read the
 * target's settings for the source, then the source's for the target;
 * print the plan; with --yes, for the target then the source, POST the
 * partner entry if there is none (one that exists already by then is
 * taken as made) and PATCH what the plan changes; print each write as it
 * succeeds; then read both again and plan again: anything still missing
 * (a write the service took but did not keep) is a failure. The first
 * failure ends the run: what was written stays, and a second run plans
 * only what is still missing. Nothing is written without --yes, and
 * nothing at all when everything is set already.
 */
#include "trust.h"

#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "graph.h"

enum step {
  STEP_READ_TARGET,
  STEP_READ_SOURCE,
  STEP_CREATE_TARGET,
  STEP_PATCH_TARGET,
  STEP_CREATE_SOURCE,
  STEP_PATCH_SOURCE,
  STEP_VERIFY_TARGET,
  STEP_VERIFY_SOURCE,
  STEP_DONE,
};

struct side {
  const struct config_tenant *tenant;
  const struct config_tenant *partner;
  struct auth *auth;
  struct graph *graph;
  struct graph_policy policy;
  struct graph_policy again; /* read back after the writes */
};

struct setup {
  const struct config_link *link;
  FILE *out;
  int yes;
  struct side target, source;
  struct trust_names names;
  struct trust_plan plan;
  enum step step;
  int failed;
  int done;
};

static void next_step(struct setup *s);

static const char *
grant_for(enum step step)
{
  return step <= STEP_READ_SOURCE || step >= STEP_VERIFY_TARGET
             ? "Policy.Read.All (or Policy.ReadWrite.CrossTenantAccess, "
               "which setup-trust needs to write)"
             : "Policy.ReadWrite.CrossTenantAccess";
}

/* A failed request in tenant t: `what` (NULL: resp's message says it)
 * and, for a refusal, the permission to grant. Ends the run. */
static void
failure(struct setup *s, const struct config_tenant *t,
        const struct graph_response *resp, const char *what)
{
  if (what != NULL)
    fprintf(s->out, "FAIL  tenant %s: %s: %s\n", t->name, what, resp->errmsg);
  else
    fprintf(s->out, "FAIL  tenant %s: %s\n", t->name, resp->errmsg);
  if (resp->status == 401 || resp->status == 403)
    fprintf(s->out,
            "      -> in tenant %s (%s), grant the application Microsoft "
            "Graph permission %s and give admin consent\n",
            t->name, t->tenant_id, grant_for(s->step));
  fflush(s->out);
  s->failed = 1;
  s->step = STEP_DONE;
}

static void
print_write(struct setup *s, const struct trust_write *w)
{
  if (trust_write_empty(w)) {
    fprintf(s->out, "tenant %s (%s): already set\n", w->tenant, w->tenant_id);
    return;
  }
  if (w->create)
    fprintf(s->out,
            "tenant %s (%s): POST %s\n"
            "    %s: (no partner entry) -> %s\n",
            w->tenant, w->tenant_id, GRAPH_POLICY_PARTNERS,
            GRAPH_POLICY_FIELD_TENANT, w->partner_id);
  if (w->n_fields == 0)
    return;
  fprintf(s->out, "tenant %s (%s): PATCH %s/%s\n", w->tenant, w->tenant_id,
          GRAPH_POLICY_PARTNERS, w->partner_id);
  for (size_t i = 0; i < w->n_fields; i++)
    fprintf(s->out, "    %s: %s -> %s\n", w->fields[i].name, w->fields[i].was,
            w->fields[i].will);
}

static void
print_plan(struct setup *s)
{
  const struct trust_plan *p = &s->plan;

  fprintf(s->out, "link %s: guests of %s in %s\n", s->link->name,
          s->link->source->name, s->link->target->name);
  for (size_t i = 0; i < p->n_kept; i++)
    fprintf(s->out, "note  %s\n", p->kept[i].text);
  if (trust_plan_empty(p)) {
    fprintf(s->out,
            "link %s: cross-tenant access settings already set in %s and "
            "%s; nothing to change\n",
            s->link->name, s->link->target->name, s->link->source->name);
    s->step = STEP_DONE;
    return;
  }
  print_write(s, &p->target);
  print_write(s, &p->source);
  if (!s->yes) {
    fprintf(s->out, "nothing changed; run again with --yes\n");
    s->step = STEP_DONE;
  }
  fflush(s->out);
}

/* After the writes: what a new plan would still change is missing. */
static void
verify(struct setup *s)
{
  struct trust_plan again;
  const struct trust_write *w[2] = {&again.target, &again.source};

  trust_plan(&s->names, &s->target.again, &s->source.again, &again);
  for (size_t i = 0; i < 2; i++) {
    for (size_t k = 0; k < w[i]->n_fields; k++)
      fprintf(s->out, "FAIL  tenant %s: %s reads back as %s after the write\n",
              w[i]->tenant, w[i]->fields[k].name, w[i]->fields[k].was);
    if (w[i]->create)
      fprintf(s->out,
              "FAIL  tenant %s: the partner entry for %s is not there after "
              "the write\n",
              w[i]->tenant, w[i]->partner_id);
  }
  s->failed = !trust_plan_empty(&again);
}

static void
on_read(void *ctx, const struct graph_response *resp,
        const struct graph_policy *policy)
{
  struct setup *s = ctx;
  int verifying = s->step >= STEP_VERIFY_TARGET;
  int target = s->step == STEP_READ_TARGET || s->step == STEP_VERIFY_TARGET;
  struct side *side = target ? &s->target : &s->source;

  if (resp->result == GRAPH_ERR_CANCELLED)
    return;
  if (policy == NULL) {
    failure(s, side->tenant, resp,
            "cannot read its cross-tenant access settings");
  } else if (verifying) {
    side->again = *policy;
    if (s->step == STEP_VERIFY_SOURCE)
      verify(s);
  } else {
    side->policy = *policy;
    if (s->step == STEP_READ_SOURCE) {
      trust_plan(&s->names, &s->target.policy, &s->source.policy, &s->plan);
      print_plan(s);
    }
  }
  if (s->step != STEP_DONE)
    s->step++;
  next_step(s);
}

static void
on_write(void *ctx, const struct graph_response *resp)
{
  struct setup *s = ctx;
  int create = s->step == STEP_CREATE_TARGET || s->step == STEP_CREATE_SOURCE;
  int target = s->step <= STEP_PATCH_TARGET;
  const struct trust_write *w = target ? &s->plan.target : &s->plan.source;
  char what[256];

  if (resp->result == GRAPH_ERR_CANCELLED)
    return;
  snprintf(what, sizeof(what), "%s %s%s%s", create ? "POST" : "PATCH",
           GRAPH_POLICY_PARTNERS, create ? "" : "/",
           create ? "" : w->partner_id);
  if (resp->result != GRAPH_OK && !(create && graph_policy_conflict(resp))) {
    /* graph's message names the request. */
    failure(s, target ? s->target.tenant : s->source.tenant, resp, NULL);
    next_step(s);
    return;
  }
  fprintf(s->out, "done  tenant %s: %s%s\n", w->tenant, what,
          resp->result != GRAPH_OK ? " (the partner entry existed already)"
                                   : "");
  fflush(s->out);
  s->step++;
  next_step(s);
}

static void
next_step(struct setup *s)
{
  const struct trust_write *w;
  struct side *side;
  int rc = 0;

  for (;;) {
    switch (s->step) {
    case STEP_READ_TARGET:
    case STEP_READ_SOURCE:
    case STEP_VERIFY_TARGET:
    case STEP_VERIFY_SOURCE:
      side = s->step == STEP_READ_TARGET || s->step == STEP_VERIFY_TARGET
                 ? &s->target
                 : &s->source;
      rc =
          graph_policy_read(side->graph, side->partner->tenant_id, on_read, s);
      break;
    case STEP_CREATE_TARGET:
    case STEP_CREATE_SOURCE:
      w = s->step == STEP_CREATE_TARGET ? &s->plan.target : &s->plan.source;
      side = s->step == STEP_CREATE_TARGET ? &s->target : &s->source;
      if (!w->create) {
        s->step++;
        continue;
      }
      rc =
          graph_policy_partner_create(side->graph, w->partner_id, on_write, s);
      break;
    case STEP_PATCH_TARGET:
    case STEP_PATCH_SOURCE:
      w = s->step == STEP_PATCH_TARGET ? &s->plan.target : &s->plan.source;
      side = s->step == STEP_PATCH_TARGET ? &s->target : &s->source;
      if (w->n_fields == 0) {
        s->step++;
        continue;
      }
      rc = graph_policy_partner_patch(side->graph, w->partner_id, &w->patch,
                                      on_write, s);
      break;
    case STEP_DONE:
      if (!s->failed && s->yes && !trust_plan_empty(&s->plan))
        fprintf(s->out,
                "link %s: cross-tenant access settings written and read "
                "back\n",
                s->link->name);
      fflush(s->out);
      s->done = 1;
      return;
    }
    if (rc != 0) {
      fprintf(s->out, "FAIL  link %s: cannot send a request\n", s->link->name);
      s->failed = 1;
      s->step = STEP_DONE;
      continue;
    }
    return;
  }
}

static int
side_open(uv_loop_t *loop, struct http *http, struct side *side, FILE *out)
{
  char err[512];

  if (auth_new(loop, http, side->tenant, &side->auth, err, sizeof(err)) != 0) {
    fprintf(out, "FAIL  tenant %s: credentials: %s\n", side->tenant->name,
            err);
    return -1;
  }
  side->graph = graph_new(http, side->auth, side->tenant);
  return side->graph == NULL ? -1 : 0;
}

int
trust_setup_run(uv_loop_t *loop, struct http *http,
                const struct config_link *link, int yes, FILE *out)
{
  struct setup s = {.link = link, .out = out, .yes = yes};
  int result = -1;

  if (link->object != CONFIG_OBJECT_GUEST) {
    char line[512];
    trust_not_needed(link, line, sizeof(line));
    fprintf(out, "%s; nothing changed\n", line);
    return 0;
  }
  s.target.tenant = link->target;
  s.target.partner = link->source;
  s.source.tenant = link->source;
  s.source.partner = link->target;
  s.names = (struct trust_names){.link = link->name,
                                 .source = link->source->name,
                                 .source_id = link->source->tenant_id,
                                 .target = link->target->name,
                                 .target_id = link->target->tenant_id};
  if (side_open(loop, http, &s.target, out) != 0 ||
      side_open(loop, http, &s.source, out) != 0) {
    result = 1;
    goto out;
  }
  next_step(&s);
  while (!s.done && uv_run(loop, UV_RUN_ONCE) != 0)
    ;
  if (s.done)
    result = s.failed ? 1 : 0;
out:
  graph_free(s.target.graph);
  graph_free(s.source.graph);
  auth_free(s.target.auth);
  auth_free(s.source.auth);
  return result;
}
