/*
 * Unit tests: what `galbridge status` reports of a link's failed
 * operations, read from a store of our own. The JSON form is built first
 * and the text read back from it, so a value JSON will not take (text
 * that is not UTF-8) must neither drop a failure from both nor make the
 * whole status fail: an error an older galbridge recorded cut inside a
 * character is shown without that broken tail.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "report.h"

#define LINK "a-to-b"
#define GOOD_ID "00000000-0000-4000-8000-000000000001"
#define CUT_ID "00000000-0000-4000-8000-000000000002"

struct fixture {
  char dir[64];
  struct store *store;
  struct config_tenant tenants[2];
  struct config_link link;
  struct config cfg;
};

static int
setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  char err[256];

  if (f == NULL)
    return -1;
  snprintf(f->dir, sizeof(f->dir), "/tmp/galbridge-report-XXXXXX");
  if (mkdtemp(f->dir) == NULL)
    return -1;
  if (store_open(f->dir, &f->store, err, sizeof(err)) != 0) {
    print_error("store_open: %s\n", err);
    return -1;
  }
  f->tenants[0].name = "a";
  f->tenants[0].tenant_id = "aaaaaaaa-1111-1111-1111-111111111111";
  f->tenants[0].graph_url = "https://graph.microsoft.com";
  f->tenants[1].name = "b";
  f->tenants[1].tenant_id = "bbbbbbbb-2222-2222-2222-222222222222";
  f->tenants[1].graph_url = "https://graph.microsoft.com";
  f->tenants[1].exchange = 1;
  f->link.name = LINK;
  f->link.source = &f->tenants[0];
  f->link.target = &f->tenants[1];
  f->link.object = CONFIG_OBJECT_GUEST;
  f->cfg.state_dir = f->dir;
  f->cfg.tenants = f->tenants;
  f->cfg.n_tenants = 2;
  f->cfg.links = &f->link;
  f->cfg.n_links = 1;
  *state = f;
  return 0;
}

static int
teardown(void **state)
{
  struct fixture *f = *state;
  static const char *const names[] = {"state.db", "state.db-wal",
                                      "state.db-shm", "lock"};
  char path[128];

  store_close(f->store);
  for (size_t i = 0; i < 4; i++) {
    snprintf(path, sizeof(path), "%s/%s", f->dir, names[i]);
    unlink(path);
  }
  rmdir(f->dir);
  free(f);
  return 0;
}

static void
put_failed(struct fixture *f, const char *source_id, const char *error)
{
  assert_int_equal(store_op_put(f->store, LINK, source_id, STORE_OP_UPDATE,
                                "{}", "{}", "h", STORE_OP_FAILED,
                                "cccccccc-3333-3333-3333-333333333333", error,
                                0, time(NULL)),
                   0);
}

/* report_status() into a new string. */
static char *
status(struct fixture *f, int as_json)
{
  char *text = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&text, &len);

  assert_non_null(fp);
  assert_int_equal(report_status(&f->cfg, f->store, 0, as_json, fp), 0);
  assert_int_equal(fclose(fp), 0);
  return text;
}

/* report_status() as JSON, parsed. */
static json_t *
status_json(struct fixture *f)
{
  char *text = status(f, 1);
  json_error_t jerr;
  json_t *root = json_loads(text, 0, &jerr);

  if (root == NULL)
    fail_msg("status is not JSON: %s", jerr.text);
  free(text);
  return root;
}

/* The error of the failure of `source_id` in the JSON status, or NULL
 * when it is not there. */
static const char *
failure_error(const json_t *root, const char *source_id)
{
  const json_t *link = json_array_get(json_object_get(root, "links"), 0);
  const json_t *failure;
  size_t i;

  json_array_foreach(json_object_get(link, "failures"), i, failure)
  {
    if (strcmp(json_string_value(json_object_get(failure, "source_id")),
               source_id) == 0)
      return json_string_value(json_object_get(failure, "error"));
  }
  return NULL;
}

static void
failures_listed(void **state)
{
  struct fixture *f = *state;
  json_t *root;

  put_failed(f, GOOD_ID, "HTTP 400 BadRequest: caf\xc3\xa9 refused");
  root = status_json(f);
  assert_string_equal(failure_error(root, GOOD_ID),
                      "HTTP 400 BadRequest: caf\xc3\xa9 refused");
  assert_int_equal(
      json_integer_value(json_object_get(
          json_array_get(json_object_get(root, "links"), 0), "failed")),
      1);
  json_decref(root);
}

/* Recorded cut by bytes inside the e-acute (as an older galbridge could cut
 * a Graph error message at 300 bytes): shown up to the character, in both
 * forms. */
static void
error_cut_inside_a_character(void **state)
{
  struct fixture *f = *state;
  json_t *root;
  char *text;

  put_failed(f, GOOD_ID, "HTTP 400 BadRequest: fine");
  put_failed(f, CUT_ID, "HTTP 400 BadRequest: caf\xc3");
  root = status_json(f);
  assert_string_equal(failure_error(root, GOOD_ID),
                      "HTTP 400 BadRequest: fine");
  assert_string_equal(failure_error(root, CUT_ID), "HTTP 400 BadRequest: caf");
  json_decref(root);

  text = status(f, 0);
  assert_non_null(strstr(text, "failed update of source object " CUT_ID
                               ": HTTP 400 BadRequest: caf; next try"));
  assert_non_null(strstr(text, "failed update of source object " GOOD_ID
                               ": HTTP 400 BadRequest: fine; next try"));
  free(text);
}

int
main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(failures_listed, setup, teardown),
      cmocka_unit_test_setup_teardown(error_cut_inside_a_character, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
