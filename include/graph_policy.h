/*
 * graph_policy — a tenant's cross-tenant access settings for one partner
 * tenant (Graph /v1.0/policies/crossTenantAccessPolicy), as plain data:
 * the reads doctor and setup-trust make, the writes setup-trust makes,
 * and the JSON shapes of both (CROSS-TENANT-ACCESS.md §1).
 *
 * A read is the partner list with each partner's identitySynchronization
 * ($expand; followed through @odata.nextLink, at most
 * GRAPH_POLICY_PAGES pages; without $expand if the service refuses it)
 * and the default configuration. Whatever the partner leaves null
 * inherits from the default: graph_policy_effective() says which applies.
 * automaticUserConsentSettings null counts as false (the default's are
 * always false and read-only).
 *
 * Writes name only what they change: a new partner is POSTed with its
 * tenantId alone; a PATCH carries automaticUserConsentSettings whole
 * (both members: the one not changed as it was read, since whether the
 * service keeps a member a PATCH leaves out is not documented) and a
 * b2bCollaboration* setting whole (usersAndGroups allowed for AllUsers,
 * applications as they applied when read). inboundTrust,
 * identitySynchronization and the default configuration are never
 * written.
 */
#ifndef GALBRIDGE_GRAPH_POLICY_H
#define GALBRIDGE_GRAPH_POLICY_H

#include <jansson.h>
#include <stddef.h>

#include "graph.h"

/* At most this many pages of the partner list are read. */
#define GRAPH_POLICY_PAGES 100
/* The longest applications member (compact JSON) kept to write back. */
#define GRAPH_POLICY_APPS_MAX 1024

/* A b2bCollaborationInbound/Outbound setting, for users and groups. */
enum graph_b2b {
  GRAPH_B2B_UNSET,   /* null (a partner's: the default applies) */
  GRAPH_B2B_ALLOWED, /* allowed for AllUsers */
  GRAPH_B2B_BLOCKED, /* blocked for AllUsers */
  GRAPH_B2B_LISTED,  /* allowed for listed users or groups only, or
                        blocked for listed ones only */
};

/* automaticUserConsentSettings members, identitySynchronization. */
enum graph_flag { GRAPH_FLAG_NULL = -1, GRAPH_FLAG_FALSE, GRAPH_FLAG_TRUE };

struct graph_b2b_setting {
  enum graph_b2b users;
  /* its applications member, compact JSON ("" when null or absent) */
  char applications[GRAPH_POLICY_APPS_MAX];
};

/* One tenant's settings for one partner tenant. */
struct graph_policy {
  int partner;                  /* a partner entry exists */
  enum graph_flag auto_inbound; /* automaticUserConsentSettings */
  enum graph_flag auto_outbound;
  struct graph_b2b_setting inbound, outbound; /* the partner's */
  struct graph_b2b_setting default_inbound, default_outbound;
  /* identitySynchronization.userSyncInbound.isSyncAllowed: an enum
   * graph_flag (GRAPH_FLAG_NULL: no such policy), or
   * GRAPH_POLICY_SYNC_UNKNOWN when it could not be read (no $expand) */
  int sync_allowed;
};

#define GRAPH_POLICY_SYNC_UNKNOWN (-2)

/* The setting that applies: the partner's, or the default's when the
 * partner has none or leaves it null. `from_default` (may be NULL) says
 * which. */
const struct graph_b2b_setting *
graph_policy_effective(const struct graph_policy *p, int inbound,
                       int *from_default);

/* Parse a crossTenantAccessPolicyB2BSetting (borrowed; JSON null or
 * NULL is GRAPH_B2B_UNSET). Returns 0, or -1 with a message in err (not
 * an object, accessType not allowed/blocked, targets not a list,
 * applications too long to keep). */
int graph_policy_parse_b2b(const json_t *value, struct graph_b2b_setting *out,
                           char *err, size_t len)
    __attribute__((warn_unused_result));

/* Parse a partner object (borrowed) into p's partner fields (partner,
 * auto_*, inbound, outbound, sync_allowed from identitySynchronization
 * when the object has that key). Returns 0 or -1 with err. */
int graph_policy_parse_partner(const json_t *obj, struct graph_policy *p,
                               char *err, size_t len)
    __attribute__((warn_unused_result));

/* Parse the default configuration (borrowed) into p's default_*. */
int graph_policy_parse_default(const json_t *obj, struct graph_policy *p,
                               char *err, size_t len)
    __attribute__((warn_unused_result));

/* `policy` is the tenant's settings for the partner (NULL on error:
 * resp says which; a permission refused is resp->status 403). resp->
 * errmsg names the request that failed. */
typedef void (*graph_policy_fn)(void *ctx, const struct graph_response *resp,
                                const struct graph_policy *policy);

/* Read the settings of graph's tenant for `partner_id` (a tenant GUID;
 * copied). Returns 0, or -1 when the callback will never be called. */
int graph_policy_read(struct graph *graph, const char *partner_id,
                      graph_policy_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* What a PATCH of a partner changes. */
struct graph_policy_patch {
  int set_auto; /* send automaticUserConsentSettings, both members: */
  enum graph_flag auto_inbound, auto_outbound;
  /* send b2bCollaborationInbound/Outbound: usersAndGroups allowed for
   * AllUsers, applications as in the setting given (NULL: none) */
  const struct graph_b2b_setting *allow_inbound, *allow_outbound;
};

/* The PATCH body for `patch` (a new reference), or NULL on allocation
 * failure or an applications member that is not JSON. */
json_t *graph_policy_patch_body(const struct graph_policy_patch *patch);

/* POST a partner entry for `partner_id` (201 expected). A partner that
 * exists already answers graph_policy_conflict(). */
int graph_policy_partner_create(struct graph *graph, const char *partner_id,
                                graph_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* Whether resp says the partner exists already (409, or the code
 * Request_MultipleObjectsWithSameKeyValue). */
int graph_policy_conflict(const struct graph_response *resp);

/* PATCH the partner entry for `partner_id` (204 expected). */
int graph_policy_partner_patch(struct graph *graph, const char *partner_id,
                               const struct graph_policy_patch *patch,
                               graph_done_fn done, void *ctx)
    __attribute__((warn_unused_result));

/* The path the requests go to and the fields they write, as
 * setup-trust prints them. */
#define GRAPH_POLICY_PARTNERS "/v1.0/policies/crossTenantAccessPolicy/partners"
#define GRAPH_POLICY_FIELD_TENANT "tenantId"
#define GRAPH_POLICY_FIELD_AUTO_IN                                            \
  "automaticUserConsentSettings.inboundAllowed"
#define GRAPH_POLICY_FIELD_AUTO_OUT                                           \
  "automaticUserConsentSettings.outboundAllowed"
#define GRAPH_POLICY_FIELD_B2B_IN "b2bCollaborationInbound.usersAndGroups"
#define GRAPH_POLICY_FIELD_B2B_OUT "b2bCollaborationOutbound.usersAndGroups"

#endif
