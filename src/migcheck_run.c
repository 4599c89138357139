/*
 * migcheck — the reads and the report of migration-check (the evaluation
 * is migcheck.c's). See include/migcheck.h.
 *
 * Links are checked one after another, and each link's reads one after
 * another, as phases of a small state machine: step() starts the call of
 * the current phase (or runs a phase that needs none) and on_exo() keeps
 * its answer in galbridge's shapes and steps on. At most one request is
 * in flight, so the lines come out in order and no tenant is pressed. A
 * read that fails is a failed check of its own (naming the role to grant
 * when it was refused) and what depends on it is left out, never guessed.
 *
 * The state is opened read-only and never locked: the copies of each
 * link and their source mailboxes are read from it once, before the
 * link's reads. Nothing is written to any tenant.
 */
#include "migcheck.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "anchor.h"
#include "auth.h"
#include "log.h"
#include "migcheck_int.h"
#include "planner.h"
#include "store.h"

/* At most this many target objects are looked up one by one (copies the
 * MailUser listing did not show), and this many published-scope groups
 * read. */
#define LOOKUPS_MAX 200
#define SCOPES_MAX 16

enum phase {
  P_ORG_T,
  P_ORG_S,
  P_REL_T,
  P_ENDPOINTS,
  P_DOMAINS_T,
  P_REL_S,
  P_DOMAINS_S,
  P_SETUP,
  P_MEMBERS,
  P_MAILUSERS,
  P_USERS,
  P_LOOKUP,
  P_EVALUATE,
  P_TEST,
  P_END,
};

/* The Exchange roles a read needs (read-only ones). */
enum role {
  ROLE_CONFIG,     /* View-Only Configuration */
  ROLE_RECIPIENTS, /* View-Only Recipients */
  ROLE_MIGRATION,  /* Migration */
};

struct tenant_ctx {
  const struct config_tenant *tenant;
  struct auth *auth;
  struct exo *exo; /* NULL: no credentials (reported once per link) */
  int refused;     /* its credentials were refused: asked no more */
  char err[512];
};

struct copy {
  char *source_id;
  char *target_id;
  json_t *record;
};

/* One link's check. */
struct lcheck {
  const struct config_link *link;
  struct tenant_ctx *src, *dst;
  enum phase phase, waiting;
  json_t *report; /* {"name", "checks", "users"} */
  json_t *checks, *users;
  size_t printed; /* checks already written (table) */
  json_t *fixes;  /* fix text -> number of people */
  json_t *t_rels, *s_rels, *endpoints, *t_domains, *s_domains;
  char *t_initial;
  const json_t *s_rel, *endpoint; /* borrowed from s_rels, endpoints */
  json_t *members;                /* NULL: not known */
  int members_failed;
  size_t scope_next;
  json_t *mailusers; /* lower-case id -> exo_mailuser_record; NULL: unread */
  json_t *states;    /* lower-case id -> Get-User result; NULL: unread */
  int lookup_failed;
  struct copy *copies;
  size_t n_copies, lookup_next;
  size_t ready;
  const char *test_address; /* a ready person's target address */
};

struct migcheck {
  uv_loop_t *loop;
  struct http *http;
  const struct config *cfg;
  const struct config_link *const *links;
  size_t n_links, next_link;
  enum migcheck_format format;
  FILE *out, *err;
  struct store *store;
  int missing_state;
  struct tenant_ctx *tc;
  struct lcheck *lc; /* the link being checked */
  json_t *reports;   /* every link's report */
  int failed;        /* a check failed or a person is not ready */
  int result;        /* -1 once the checks cannot go on */
  int done;
};

static void step(struct migcheck *mc);

/* ------------------------------------------------------------------ */
/* Output                                                              */

/* Write the checks added since the last call (table only). */
static void
print_checks(struct migcheck *mc, struct lcheck *lc)
{
  for (; lc->printed < json_array_size(lc->checks); lc->printed++) {
    const json_t *c = json_array_get(lc->checks, lc->printed);
    const char *subject = json_string_value(json_object_get(c, "subject"));
    const char *what = json_string_value(json_object_get(c, "what"));
    const char *detail = json_string_value(json_object_get(c, "detail"));
    const char *fix = json_string_value(json_object_get(c, "fix"));

    if (!json_is_true(json_object_get(c, "ok")))
      mc->failed = 1;
    if (mc->format != MIGCHECK_TABLE)
      continue;
    if (json_is_true(json_object_get(c, "ok"))) {
      fprintf(mc->out, "ok    %s: %s\n", subject, what);
      continue;
    }
    fprintf(mc->out, "FAIL  %s: %s%s%s\n", subject, what,
            detail != NULL ? ": " : "", detail != NULL ? detail : "");
    if (fix != NULL)
      fprintf(mc->out, "      -> %s\n", fix);
  }
  if (mc->format == MIGCHECK_TABLE)
    fflush(mc->out);
}

static void
print_users(struct migcheck *mc, struct lcheck *lc)
{
  const json_t *u, *m, *n;
  const char *fix;
  size_t i, j;

  if (mc->format != MIGCHECK_TABLE)
    return;
  json_array_foreach(lc->users, i, u)
  {
    const char *from = json_string_value(json_object_get(u, "source_address"));
    const char *to = json_string_value(json_object_get(u, "target_address"));

    if (from == NULL)
      from = json_string_value(json_object_get(u, "source_id"));
    if (json_is_true(json_object_get(u, "ready"))) {
      fprintf(mc->out, "ok    user %s -> %s\n", from, to ? to : "?");
      continue;
    }
    fprintf(mc->out, "FAIL  user %s -> %s:", from, to ? to : "?");
    json_array_foreach(json_object_get(u, "missing"), j, m)
    {
      fprintf(mc->out, "%s %s", j > 0 ? ";" : "", json_string_value(m));
    }
    fputc('\n', mc->out);
  }
  json_object_foreach(lc->fixes, fix, n)
  {
    long long k = json_integer_value(n);
    fprintf(mc->out, "      -> %s (%lld user%s)\n", fix, k, k == 1 ? "" : "s");
  }
  fflush(mc->out);
}

static void
print_summary(struct migcheck *mc, struct lcheck *lc)
{
  size_t failed = 0, i;
  const json_t *c;

  json_array_foreach(lc->checks, i, c)
  {
    failed += !json_is_true(json_object_get(c, "ok"));
  }
  if (mc->format != MIGCHECK_TABLE)
    return;
  fprintf(mc->out, "link %s: %zu of %zu users ready; %zu check%s failed\n",
          lc->link->name, lc->ready, lc->n_copies, failed,
          failed == 1 ? "" : "s");
  fflush(mc->out);
}

/* The end of every link: the JSON object or the CSV. */
static int
print_end(struct migcheck *mc)
{
  size_t ready = 0, users = 0, failed = 0, i, j;
  const json_t *r, *u, *c;

  if (mc->format == MIGCHECK_JSON) {
    json_t *root = json_pack("{s:O}", "links", mc->reports);
    char *text = root != NULL ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    if (text == NULL)
      return -1;
    fprintf(mc->out, "%s\n", text);
    free(text);
    fflush(mc->out);
    return 0;
  }
  if (mc->format != MIGCHECK_CSV)
    return 0;
  /* New-MigrationBatch's CSV: the TARGET address of each ready person. */
  fprintf(mc->out, "EmailAddress\n");
  json_array_foreach(mc->reports, i, r)
  {
    json_array_foreach(json_object_get(r, "users"), j, u)
    {
      const char *to = json_string_value(json_object_get(u, "target_address"));
      users++;
      if (json_is_true(json_object_get(u, "ready")) && to != NULL) {
        fprintf(mc->out, "%s\n", to);
        ready++;
      }
    }
    json_array_foreach(json_object_get(r, "checks"), j, c)
    {
      failed += !json_is_true(json_object_get(c, "ok"));
    }
  }
  fflush(mc->out);
  fprintf(mc->err,
          "migration-check: %zu of %zu users ready (in the CSV); %zu "
          "check%s failed%s\n",
          ready, users, failed, failed == 1 ? "" : "s",
          failed > 0 || ready < users ? " (run it without --csv to see why)"
                                      : "");
  return 0;
}

/* ------------------------------------------------------------------ */
/* Reads                                                               */

static const char *
role_name(enum role role)
{
  switch (role) {
  case ROLE_RECIPIENTS:
    return "View-Only Recipients";
  case ROLE_MIGRATION:
    return "Migration";
  case ROLE_CONFIG:
  default:
    return "View-Only Configuration";
  }
}

/* A read that failed, as a check: with the role to grant when it was
 * refused, the credentials when no token came. */
static int
read_failed(struct lcheck *lc, struct tenant_ctx *tc, const char *what,
            enum role role, const struct exo_response *resp,
            const char *not_found_fix)
{
  const struct config_tenant *t = tc->tenant;
  const char *side = tc == lc->dst ? "target" : "source";
  char subject[256], fix[1024];
  const char *f = fix;

  snprintf(subject, sizeof(subject), "%s %s", side, t->name);
  if (resp->result == EXO_ERR_AUTH)
    snprintf(fix, sizeof(fix),
             "check tenant %s's tenant_id, client_id and its client secret "
             "or certificate (galbridge doctor checks them)",
             t->name);
  else if (migcheck_refused(resp->status, resp->exception, resp->errmsg))
    snprintf(fix, sizeof(fix),
             "in %s (%s), give galbridge's application the Exchange role "
             "%s (role group %s)",
             t->name, t->tenant_id, role_name(role),
             role == ROLE_MIGRATION ? "Recipient Management"
                                    : "View-Only Organization Management");
  else if (resp->result == EXO_ERR_CMDLET &&
           strstr(resp->exception, "NotFound") != NULL)
    f = not_found_fix;
  else
    snprintf(fix, sizeof(fix),
             "try again later (galbridge doctor checks the access to %s)",
             t->name);
  return migcheck_add(lc->checks, subject, 0, what, resp->errmsg, f);
}

static char *
lower_dup(const char *s)
{
  char *d = s != NULL ? strdup(s) : NULL;

  for (char *p = d; p != NULL && *p != '\0'; p++)
    *p = (char)tolower((unsigned char)*p);
  return d;
}

/* Set map[lower(key)] = v (a new reference taken). */
static int
put_lower(json_t *map, const char *key, json_t *v)
{
  char *k = lower_dup(key);
  int rc = k != NULL ? json_object_set_new(map, k, v) : -1;

  if (k == NULL)
    json_decref(v);
  free(k);
  return rc;
}

static json_t *
get_lower(const json_t *map, const char *key)
{
  char *k = lower_dup(key);
  json_t *v = k != NULL ? json_object_get(map, k) : NULL;

  free(k);
  return v;
}

static void on_exo(void *ctx, const struct exo_response *resp);

/* Start `cmdlet` in tc's tenant: 1 started, 0 skipped (no credentials:
 * reported when the link began; or it could not start: a failed check),
 * -1 out of memory. `params` is taken; NULL is an allocation that failed
 * (a cmdlet sent without its -Identity or -Filter would read everything),
 * so a call without parameters passes an empty object. */
static int
call(struct migcheck *mc, struct tenant_ctx *tc, const char *cmdlet,
     json_t *params, const char *select)
{
  struct lcheck *lc = mc->lc;
  char subject[256], what[256];
  int rc;

  if (params == NULL)
    return -1;
  if (tc->exo == NULL || tc->refused) {
    json_decref(params);
    return 0;
  }
  rc = exo_invoke_select(tc->exo, cmdlet, params, select, on_exo, mc);
  json_decref(params);
  if (rc == 0)
    return 1;
  snprintf(subject, sizeof(subject), "%s %s",
           tc == lc->dst ? "target" : "source", tc->tenant->name);
  snprintf(what, sizeof(what), "%s", cmdlet);
  return migcheck_add(lc->checks, subject, 0, what, "cannot start the call",
                      NULL) != 0
             ? -1
             : 0;
}

static int
keep_copy(void *ctx, const struct store_copy_row *row)
{
  struct lcheck *lc = ctx;
  struct copy *c;
  json_t *rec = json_loads(row->record, 0, NULL);

  if (!json_is_object(rec)) {
    json_decref(rec);
    rec = json_pack("{s:s}", "bad", "its stored record is not JSON");
  }
  c = realloc(lc->copies, (lc->n_copies + 1) * sizeof(*c));
  if (c == NULL || rec == NULL) {
    json_decref(rec);
    if (c != NULL)
      lc->copies = c;
    return -1;
  }
  lc->copies = c;
  c = &lc->copies[lc->n_copies];
  c->source_id = strdup(row->source_id);
  c->target_id = strdup(row->target_id);
  c->record = rec;
  lc->n_copies++;
  return c->source_id == NULL || c->target_id == NULL ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* Phases that read nothing                                            */

/* The set-up checks, once the set-up reads are in. */
static int
setup_checks(struct lcheck *lc)
{
  const json_t *t_rel = NULL;

  lc->s_rel =
      migcheck_find_relationship(lc->s_rels, lc->link->target->tenant_id);
  if (lc->t_rels != NULL) {
    t_rel =
        migcheck_find_relationship(lc->t_rels, lc->link->source->tenant_id);
    if (migcheck_target_relationship(lc->checks, lc->link, t_rel) != 0)
      return -1;
  }
  if (lc->endpoints != NULL &&
      migcheck_endpoint(lc->checks, lc->link, lc->endpoints, lc->s_domains,
                        lc->s_rel, &lc->endpoint) != 0)
    return -1;
  if (lc->s_rels != NULL &&
      migcheck_source_relationship(lc->checks, lc->link, lc->s_rel,
                                   lc->endpoint) != 0)
    return -1;
  if (lc->s_rel != NULL &&
      json_array_size(json_object_get(lc->s_rel, "scopes")) > 0) {
    lc->members = json_object();
    if (lc->members == NULL)
      return -1;
  }
  return 0;
}

/* Every person: ready, or what they miss. */
static int
evaluate(struct migcheck *mc, struct lcheck *lc)
{
  struct migration_target target = {.initial = lc->t_initial,
                                    .accepted = lc->t_domains,
                                    .external = lc->link->migration_external};
  struct migcheck_env env = {.link = lc->link,
                             .target = lc->t_domains != NULL ? &target : NULL,
                             .members = lc->members,
                             .scope = json_string_value(json_array_get(
                                 json_object_get(lc->s_rel, "scopes"), 0))};

  for (size_t i = 0; i < lc->n_copies; i++) {
    const struct copy *c = &lc->copies[i];
    const json_t *mu = get_lower(lc->mailusers, c->target_id);
    const json_t *raw = get_lower(lc->states, c->target_id), *m;
    struct exo_user_state st;
    json_t *missing = json_array(), *whats = json_array(),
           *fixes = json_array(), *u;
    size_t j;
    int rc = missing != NULL && whats != NULL && fixes != NULL ? 0 : -1;

    if (rc == 0 && lc->mailusers == NULL)
      rc = json_array_append_new(
          missing, json_pack("{s:s, s:s}", "what",
                             "its target MailUser could not be read", "fix",
                             "see the failed read above"));
    else if (rc == 0)
      rc = migcheck_user(
          &env, c->record, mu,
          raw != NULL && exo_user_state(raw, &st) == 0 ? &st : NULL, missing);
    json_array_foreach(missing, j, m)
    {
      const char *fix = migcheck_str(m, "fix");
      rc |= json_array_append(whats, json_object_get(m, "what"));
      rc |= json_array_append(fixes, json_object_get(m, "fix"));
      if (fix != NULL)
        rc |= json_object_set_new(
            lc->fixes, fix,
            json_integer(json_integer_value(json_object_get(lc->fixes, fix)) +
                         1));
    }
    u = json_pack(
        "{s:s, s:s?, s:s?, s:b, s:O, s:O}", "source_id", c->source_id,
        "source_address", migcheck_str(c->record, "primary"), "target_address",
        migcheck_str(mu, "primary"), "ready", json_array_size(missing) == 0,
        "missing", whats, "fixes", fixes);
    json_decref(missing);
    json_decref(whats);
    json_decref(fixes);
    if (rc != 0 || json_array_append_new(lc->users, u) != 0)
      return -1;
    if (json_array_size(json_object_get(u, "missing")) == 0) {
      lc->ready++;
      if (lc->test_address == NULL)
        lc->test_address = migcheck_str(mu, "primary");
    } else {
      mc->failed = 1;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* The state machine                                                   */

static void
lcheck_free(struct lcheck *lc)
{
  if (lc == NULL)
    return;
  for (size_t i = 0; i < lc->n_copies; i++) {
    free(lc->copies[i].source_id);
    free(lc->copies[i].target_id);
    json_decref(lc->copies[i].record);
  }
  free(lc->copies);
  json_decref(lc->report);
  json_decref(lc->fixes);
  json_decref(lc->t_rels);
  json_decref(lc->s_rels);
  json_decref(lc->endpoints);
  json_decref(lc->t_domains);
  json_decref(lc->s_domains);
  free(lc->t_initial);
  json_decref(lc->members);
  json_decref(lc->mailusers);
  json_decref(lc->states);
  free(lc);
}

static struct tenant_ctx *
ctx_of(struct migcheck *mc, const struct config_tenant *t)
{
  return &mc->tc[t - mc->cfg->tenants];
}

/* Begin the next link: its report, its copies from the state, and a
 * failed check for each of its tenants without credentials. 0, or -1. */
static int
link_begin(struct migcheck *mc)
{
  const struct config_link *link = mc->links[mc->next_link++];
  struct lcheck *lc = calloc(1, sizeof(*lc));
  struct tenant_ctx *sides[2];

  mc->lc = lc;
  if (lc == NULL)
    return -1;
  lc->link = link;
  lc->src = ctx_of(mc, link->source);
  lc->dst = ctx_of(mc, link->target);
  lc->fixes = json_object();
  lc->report =
      json_pack("{s:s, s:[], s:[]}", "name", link->name, "checks", "users");
  /* Borrowed: the report holds them. */
  lc->checks = json_object_get(lc->report, "checks");
  lc->users = json_object_get(lc->report, "users");
  if (lc->checks == NULL || lc->users == NULL || lc->fixes == NULL)
    return -1;
  if (mc->format == MIGCHECK_TABLE) {
    fprintf(mc->out, "link %s: mailboxes of %s (%s) moving to %s (%s)\n",
            link->name, link->source->name, link->source->tenant_id,
            link->target->name, link->target->tenant_id);
    fflush(mc->out);
  }
  if (!mc->missing_state &&
      store_link_copies(mc->store, link->name, link->source->tenant_id,
                        keep_copy, lc) != 0)
    return -1;
  sides[0] = lc->dst;
  sides[1] = lc->src;
  for (size_t i = 0; i < 2; i++) {
    char subject[256];
    if ((sides[i]->exo != NULL && !sides[i]->refused) ||
        (i == 1 && lc->src == lc->dst))
      continue;
    snprintf(subject, sizeof(subject), "%s %s", i == 0 ? "target" : "source",
             sides[i]->tenant->name);
    if (migcheck_add(lc->checks, subject, 0, "credentials", sides[i]->err,
                     "correct the tenant's section in the config "
                     "(galbridge check-config shows it)") != 0)
      return -1;
  }
  if (lc->n_copies == 0) {
    char subject[256];
    snprintf(subject, sizeof(subject), "link %s", link->name);
    if (migcheck_add(lc->checks, subject, 0,
                     "copies of source mailboxes in the state",
                     mc->missing_state ? "there is no state yet"
                                       : "the state holds none of this link",
                     "run galbridge sync (a copy is made for each person in "
                     "scope whose source mailbox has been read)") != 0)
      return -1;
  }
  print_checks(mc, lc);
  return 0;
}

/* The link's end: its people, the test's line, the summary. */
static int
link_end(struct migcheck *mc)
{
  struct lcheck *lc = mc->lc;

  print_checks(mc, lc);
  print_users(mc, lc);
  print_summary(mc, lc);
  if (json_array_append(mc->reports, lc->report) != 0)
    return -1;
  lcheck_free(lc);
  mc->lc = NULL;
  return 0;
}

/* The test of the endpoint, or why it is not run. 1 started, 0 not, -1. */
static int
start_test(struct migcheck *mc, struct lcheck *lc)
{
  char subject[256];

  if (lc->endpoint == NULL || migcheck_str(lc->endpoint, "name") == NULL ||
      lc->n_copies == 0)
    return 0; /* its failure is reported already */
  if (lc->test_address == NULL) {
    snprintf(subject, sizeof(subject), "target %s", lc->dst->tenant->name);
    return migcheck_add(lc->checks, subject, 0,
                        "Test-MigrationServerAvailability",
                        "not run: no ready user to test with",
                        "make a user ready first (see below)") != 0
               ? -1
               : 0;
  }
  return call(mc, lc->dst, "Test-MigrationServerAvailability",
              json_pack("{s:s, s:s}", "Endpoint",
                        migcheck_str(lc->endpoint, "name"), "TestMailbox",
                        lc->test_address),
              NULL);
}

/* Run the current phase: 1 a call is in flight, 0 go on, -1 stop. */
static int
run_phase(struct migcheck *mc)
{
  struct lcheck *lc = mc->lc;
  const json_t *scopes;
  enum phase p;

  if (lc == NULL) {
    if (mc->next_link >= mc->n_links) {
      if (print_end(mc) != 0)
        return -1;
      mc->done = 1;
      return 1;
    }
    return link_begin(mc);
  }
  /* The answer of a call started here belongs to phase p; a phase that
   * calls again (one per group, one per copy) sets lc->phase back. */
  p = lc->phase;
  lc->phase = p + 1;
  lc->waiting = p;
  switch (p) {
  case P_ORG_T:
    return call(mc, lc->dst, "Get-OrganizationConfig", json_object(), NULL);
  case P_ORG_S:
    return call(mc, lc->src, "Get-OrganizationConfig", json_object(), NULL);
  case P_REL_T:
    return call(mc, lc->dst, "Get-OrganizationRelationship", json_object(),
                NULL);
  case P_ENDPOINTS:
    return call(mc, lc->dst, "Get-MigrationEndpoint", json_object(), NULL);
  case P_DOMAINS_T:
    return call(mc, lc->dst, "Get-AcceptedDomain", json_object(), NULL);
  case P_REL_S:
    return call(mc, lc->src, "Get-OrganizationRelationship", json_object(),
                NULL);
  case P_DOMAINS_S:
    return call(mc, lc->src, "Get-AcceptedDomain", json_object(), NULL);
  case P_SETUP:
    if (setup_checks(lc) != 0)
      return -1;
    print_checks(mc, lc);
    return 0;
  case P_MEMBERS:
    scopes = json_object_get(lc->s_rel, "scopes");
    if (lc->members == NULL || lc->scope_next >= json_array_size(scopes) ||
        lc->scope_next >= SCOPES_MAX)
      return 0;
    lc->phase = P_MEMBERS; /* again, for the next group */
    return call(
        mc, lc->src, "Get-DistributionGroupMember",
        json_pack("{s:s, s:s}", "Identity",
                  json_string_value(json_array_get(scopes, lc->scope_next++)),
                  "ResultSize", "Unlimited"),
        EXO_MEMBER_SELECT);
  case P_MAILUSERS:
    if (lc->n_copies == 0)
      return 0;
    return call(mc, lc->dst, "Get-MailUser", planner_anchor_listing(lc->link),
                EXO_MAILUSER_SELECT);
  case P_USERS:
    if (lc->n_copies == 0)
      return 0;
    return call(mc, lc->dst, "Get-User",
                json_pack("{s:s, s:s}", "Filter",
                          "RecipientTypeDetails -eq 'MailUser'", "ResultSize",
                          "Unlimited"),
                EXO_USER_SELECT);
  case P_LOOKUP:
    /* Copies the listings did not show: each by its id (bounded). */
    while (lc->states != NULL && !lc->lookup_failed &&
           lc->lookup_next < lc->n_copies && lc->lookup_next < LOOKUPS_MAX) {
      const struct copy *c = &lc->copies[lc->lookup_next++];
      if (get_lower(lc->mailusers, c->target_id) != NULL ||
          get_lower(lc->states, c->target_id) != NULL)
        continue;
      lc->phase = P_LOOKUP;
      return call(mc, lc->dst, "Get-User",
                  json_pack("{s:s}", "Identity", c->target_id),
                  EXO_USER_SELECT);
    }
    return 0;
  case P_EVALUATE:
    return evaluate(mc, lc) != 0 ? -1 : 0;
  case P_TEST:
    return start_test(mc, lc);
  case P_END:
  default:
    return link_end(mc);
  }
}

static void
step(struct migcheck *mc)
{
  int rc = 0;

  while (rc == 0 && !mc->done)
    rc = run_phase(mc);
  if (rc < 0) {
    log_error("migration-check cannot go on: out of memory or the state "
              "could not be read");
    mc->result = -1;
    mc->done = 1;
  }
}

/* Keep one answer of the phase that asked. 0, or -1 out of memory. */
static int
keep(struct lcheck *lc, const struct exo_response *resp)
{
  const json_t *v = resp->value, *r;
  char detail[512], subject[256], what[512], fix[1024];
  json_t *set = NULL;
  int dehydrated, rc;
  size_t i;

  switch (lc->waiting) {
  case P_ORG_T:
  case P_ORG_S:
    dehydrated = exo_org_dehydrated(v);
    return migcheck_org(
        lc->checks, lc->waiting == P_ORG_T ? "target" : "source",
        lc->waiting == P_ORG_T ? lc->link->target : lc->link->source,
        dehydrated);
  case P_REL_T:
    return exo_relationships(v, &lc->t_rels);
  case P_REL_S:
    return exo_relationships(v, &lc->s_rels);
  case P_ENDPOINTS:
    return exo_endpoints(v, &lc->endpoints);
  case P_DOMAINS_T:
  case P_DOMAINS_S:
    if (lc->waiting == P_DOMAINS_T &&
        exo_accepted_domains(v, &lc->t_domains, &lc->t_initial) != 0) {
      snprintf(subject, sizeof(subject), "target %s", lc->dst->tenant->name);
      return migcheck_add(lc->checks, subject, 0, "accepted domains",
                          "none is marked as its initial domain", NULL);
    }
    if (lc->waiting == P_DOMAINS_S) {
      char *initial = NULL;
      if (exo_accepted_domains(v, &lc->s_domains, &initial) != 0)
        lc->s_domains = json_array(); /* only RemoteTenant is matched */
      free(initial);
    }
    return 0;
  case P_MEMBERS:
    if (exo_group_members(v, &set) != 0)
      return -1;
    rc = json_object_update(lc->members, set);
    json_decref(set);
    return rc;
  case P_MAILUSERS:
    lc->mailusers = json_object();
    if (lc->mailusers == NULL)
      return -1;
    json_array_foreach(v, i, r)
    {
      json_t *rec = NULL;
      if (exo_mailuser_record(r, &rec) == 0 &&
          put_lower(lc->mailusers,
                    json_string_value(json_object_get(rec, "id")), rec) != 0)
        return -1;
    }
    return 0;
  case P_USERS:
    lc->states = json_object();
    if (lc->states == NULL)
      return -1;
    json_array_foreach(v, i, r)
    {
      const char *id = exo_recipient_id(r);
      if (id != NULL && put_lower(lc->states, id, json_incref((json_t *)r)))
        return -1;
    }
    return 0;
  case P_LOOKUP:
    r = json_array_get(v, 0);
    return r == NULL ? 0
                     : put_lower(lc->states,
                                 lc->copies[lc->lookup_next - 1].target_id,
                                 json_incref((json_t *)r));
  case P_TEST:
    snprintf(subject, sizeof(subject), "target %s", lc->dst->tenant->name);
    snprintf(what, sizeof(what),
             "Test-MigrationServerAvailability -Endpoint '%s' -TestMailbox "
             "%s",
             migcheck_str(lc->endpoint, "name"), lc->test_address);
    snprintf(fix, sizeof(fix),
             "correct what the checks above say first; then check that "
             "the migration app (%s) is consented in %s "
             "(https://login.microsoftonline.com/%s/adminconsent?client_id="
             "%s&redirect_uri=https://office.com) and that the endpoint's "
             "credentials hold its current secret",
             migcheck_str(lc->endpoint, "appId")
                 ? migcheck_str(lc->endpoint, "appId")
                 : "?",
             lc->src->tenant->name, lc->src->tenant->tenant_id,
             migcheck_str(lc->endpoint, "appId")
                 ? migcheck_str(lc->endpoint, "appId")
                 : "<id>");
    rc = exo_availability(v, detail, sizeof(detail));
    return migcheck_add(lc->checks, subject, rc == 0, what,
                        rc < 0 ? "its answer has no Result" : detail, fix);
  default:
    return 0;
  }
}

/* What a read is, for its failed check, and the role it needs. */
static void
read_what(enum phase p, const char **what, enum role *role)
{
  static const char *const names[] = {
      [P_ORG_T] = "read the organization config (Get-OrganizationConfig)",
      [P_ORG_S] = "read the organization config (Get-OrganizationConfig)",
      [P_REL_T] = "read the organization relationships "
                  "(Get-OrganizationRelationship)",
      [P_REL_S] = "read the organization relationships "
                  "(Get-OrganizationRelationship)",
      [P_ENDPOINTS] = "read the migration endpoints (Get-MigrationEndpoint)",
      [P_DOMAINS_T] = "read the accepted domains (Get-AcceptedDomain)",
      [P_DOMAINS_S] = "read the accepted domains (Get-AcceptedDomain)",
      [P_MEMBERS] = "read a published-scope group's members "
                    "(Get-DistributionGroupMember)",
      [P_MAILUSERS] = "list the link's MailUsers (Get-MailUser)",
      [P_USERS] = "read the MailUsers' state (Get-User)",
      [P_LOOKUP] = "read a copy's target object (Get-User)",
      [P_TEST] = "test the migration endpoint "
                 "(Test-MigrationServerAvailability)",
  };

  *what = p < sizeof(names) / sizeof(names[0]) && names[p] ? names[p] : "?";
  *role = p == P_TEST                       ? ROLE_MIGRATION
          : p >= P_MEMBERS && p <= P_LOOKUP ? ROLE_RECIPIENTS
                                            : ROLE_CONFIG;
}

static void
on_exo(void *ctx, const struct exo_response *resp)
{
  struct migcheck *mc = ctx;
  struct lcheck *lc = mc->lc;
  struct tenant_ctx *tc;
  const char *what;
  char fix[512];
  enum role role;
  int rc = 0;

  if (resp->result == EXO_ERR_CANCELLED)
    return;
  tc = lc->waiting == P_ORG_S || lc->waiting == P_REL_S ||
               lc->waiting == P_DOMAINS_S || lc->waiting == P_MEMBERS
           ? lc->src
           : lc->dst;
  if (resp->result == EXO_OK) {
    rc = keep(lc, resp);
  } else if (lc->waiting == P_LOOKUP &&
             strstr(resp->exception, "NotFound") != NULL) {
    rc = 0; /* gone: its person shows no target MailUser */
  } else if (lc->waiting != P_LOOKUP || !lc->lookup_failed) {
    read_what(lc->waiting, &what, &role);
    snprintf(fix, sizeof(fix),
             "in %s: MailboxMovePublishedScopes must name mail-enabled "
             "security groups that exist",
             lc->src->tenant->name);
    rc = read_failed(lc, tc, what, role, resp,
                     lc->waiting == P_MEMBERS ? fix : NULL);
    /* Refused credentials: said once, the tenant is not asked again. */
    if (resp->result == EXO_ERR_AUTH && resp->auth_permanent) {
      tc->refused = 1;
      snprintf(tc->err, sizeof(tc->err), "refused (see above)");
    }
    if (lc->waiting == P_MEMBERS) {
      json_decref(lc->members); /* not known: membership is not checked */
      lc->members = NULL;
    }
    lc->lookup_failed |= lc->waiting == P_LOOKUP;
  }
  print_checks(mc, lc);
  if (rc != 0) {
    log_error("migration-check: out of memory");
    mc->result = -1;
    mc->done = 1;
    return;
  }
  step(mc);
}

/* ------------------------------------------------------------------ */

int
migcheck_run(uv_loop_t *loop, struct http *http, const struct config *cfg,
             const struct config_link *const *links, size_t n,
             enum migcheck_format format, FILE *out, FILE *err)
{
  struct migcheck mc = {.loop = loop,
                        .http = http,
                        .cfg = cfg,
                        .links = links,
                        .n_links = n,
                        .format = format,
                        .out = out,
                        .err = err};
  char why[512];
  int result = -1;

  if (store_open_readonly(cfg->state_dir, 0, &mc.store, &mc.missing_state, why,
                          sizeof(why)) != 0) {
    log_error("cannot read the state state_dir=%s error=\"%s\"",
              cfg->state_dir, why);
    return -1;
  }
  mc.tc = calloc(cfg->n_tenants + 1, sizeof(*mc.tc));
  mc.reports = json_array();
  if (mc.tc == NULL || mc.reports == NULL)
    goto out;
  for (size_t i = 0; i < n; i++) {
    const struct config_tenant *both[2] = {links[i]->source, links[i]->target};
    for (size_t k = 0; k < 2; k++) {
      struct tenant_ctx *tc = ctx_of(&mc, both[k]);
      if (tc->tenant != NULL)
        continue;
      tc->tenant = both[k];
      if (auth_new(loop, http, tc->tenant, &tc->auth, tc->err,
                   sizeof(tc->err)) != 0)
        continue;
      tc->exo = exo_new(loop, http, tc->auth, tc->tenant, 1);
      if (tc->exo == NULL)
        goto out;
    }
  }
  step(&mc);
  while (!mc.done && uv_run(loop, UV_RUN_ONCE) != 0)
    ;
  if (mc.done && mc.result == 0)
    result = mc.failed ? 1 : 0;

out:
  lcheck_free(mc.lc);
  for (size_t i = 0; mc.tc != NULL && i < cfg->n_tenants; i++) {
    exo_free(mc.tc[i].exo);
    auth_free(mc.tc[i].auth);
  }
  free(mc.tc);
  json_decref(mc.reports);
  store_close(mc.store);
  return result;
}
