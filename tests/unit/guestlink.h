/*
 * guestlink — the link the planner tests plan for: guests from `source`
 * to `target`, anchored in extensionAttribute15, deletes on, with the
 * default guest mapping and the planner's view of the link. Included by
 * test_planner.c and test_incremental.c (after cmocka.h and planner.h).
 */
#ifndef GALBRIDGE_TEST_GUESTLINK_H
#define GALBRIDGE_TEST_GUESTLINK_H

/* Set up *link named `name` between the tenants (set up by the caller),
 * compile *mapping and point *pl at both. 0, or -1 when the mapping does
 * not compile (printed); the caller mapping_free()s *mapping. */
static inline int
guest_link_init(struct config_link *link, struct config_tenant *source,
                struct config_tenant *target, const char *name,
                long max_deletes, struct mapping **mapping,
                struct planner_link *pl)
{
  char err[256];

  link->name = (char *)name;
  link->source = source;
  link->target = target;
  link->object = CONFIG_OBJECT_GUEST;
  link->anchor = (char *)"extensionAttribute15";
  link->on_delete = CONFIG_ON_DELETE_DELETE;
  link->max_deletes = max_deletes;
  /* The other guards as configured by default; the guard tests set them
   * apart. */
  link->max_delete_share = CONFIG_DEFAULT_MAX_DELETE_SHARE;
  link->max_creates = CONFIG_DEFAULT_MAX_CREATES;
  if (mapping_compile(NULL, CONFIG_OBJECT_GUEST, "test.conf", mapping, err,
                      sizeof(err)) != 0) {
    print_error("mapping_compile: %s\n", err);
    return -1;
  }
  pl->link = link;
  pl->mapping = *mapping;
  return 0;
}

#endif
