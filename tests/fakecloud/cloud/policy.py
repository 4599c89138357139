"""Cross-tenant access settings: /v1.0/policies/crossTenantAccessPolicy.

The policy root, its default configuration (GET, PATCH), its partner
configurations (list, POST, GET, PATCH, DELETE) and each partner's
identitySynchronization (CTS inbound) policy (PUT, GET, PATCH, DELETE),
as CROSS-TENANT-ACCESS.md §1 describes them, on Tenant.xtap (an Xtap,
made with the service defaults on first use).  The admin API and the
seed ("crossTenantAccess": {"default": {...}, "partners": [{...}]}) set
them for tests and the demo.

Documented: the status codes of §1.1 (201 + object for POST, 204 for
PATCH, PUT and DELETE), the shapes (§1.2-§1.4, fixtures/), 409
Request_MultipleObjectsWithSameKeyValue for an identitySynchronization
that exists, Directory_ObjectNotFound for a PATCH of what does not
exist, Authorization_RequestDenied (fault kind "deny"), 400
Request_BadRequest "Invalid property" for a wrongly cased key.  Guesses
(README.md): the 404 status of an absent partner or sync policy, the
409 status of a POST of an existing partner, that a PATCH replaces a
complex property whole (members it leaves out become null), the 400 of
a DELETE of a partner that still has a sync policy, null for
identitySynchronization in a $expand list when there is none.
"""

import copy
import re

from .graph import check_params, graph_no_content, graph_ok
from .knobs import KNOBS, Knob, _int_at_least
from .wire import Response, graph_fail, route


BASE = r"^/v1\.0/policies/crossTenantAccessPolicy"
GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")

KNOBS["policy_partners_page_size"] = Knob(
    100, _int_at_least(1), None,
    "partner configurations per page of GET /policies/"
    "crossTenantAccessPolicy/partners (server-chosen; the rest through "
    "@odata.nextLink)")


def b2b_setting(access, user_target="AllUsers",
                app_target="AllApplications"):
    """A crossTenantAccessPolicyB2BSetting for everyone and every app."""
    return {"usersAndGroups": {"accessType": access, "targets": [
                {"target": user_target, "targetType": "user"}]},
            "applications": {"accessType": access, "targets": [
                {"target": app_target, "targetType": "application"}]}}


def service_default():
    """GET /default of a tenant nobody changed (G-DEF-GET; the
    automaticUserConsentSettings are always false there, G-DEF-RES)."""
    return {
        "isServiceDefault": True,
        "inboundTrust": {"isMfaAccepted": False,
                         "isCompliantDeviceAccepted": False,
                         "isHybridAzureADJoinedDeviceAccepted": False},
        "automaticUserConsentSettings": {"inboundAllowed": False,
                                         "outboundAllowed": False},
        "b2bCollaborationOutbound": b2b_setting("allowed"),
        "b2bCollaborationInbound": b2b_setting("allowed"),
        "b2bDirectConnectOutbound": b2b_setting("blocked"),
        "b2bDirectConnectInbound": b2b_setting("blocked"),
    }


# The partner's properties in the order the 201 of §1.4 lists them, and
# the complex ones whose members a PATCH names.
PARTNER_PROPS = [
    "tenantId", "isServiceProvider", "inboundTrust",
    "b2bCollaborationOutbound", "b2bCollaborationInbound",
    "b2bDirectConnectOutbound", "b2bDirectConnectInbound",
    "tenantRestrictions", "crossCloudMeetingConfiguration",
    "automaticUserConsentSettings", "isInMultiTenantOrganization",
]
IN_OUT = ("crossCloudMeetingConfiguration", "automaticUserConsentSettings")
B2B = ("b2bCollaborationOutbound", "b2bCollaborationInbound",
       "b2bDirectConnectOutbound", "b2bDirectConnectInbound",
       "tenantRestrictions")
DEFAULT_WRITABLE = ("inboundTrust", "b2bCollaborationOutbound",
                    "b2bCollaborationInbound", "b2bDirectConnectOutbound",
                    "b2bDirectConnectInbound", "tenantRestrictions",
                    "invitationRedemptionIdentityProviderConfiguration")
SYNC_PROPS = ("tenantId", "displayName", "userSyncInbound")


def new_partner(tid):
    partner = {name: None for name in PARTNER_PROPS}
    partner["tenantId"] = tid
    for name in IN_OUT:
        partner[name] = {"inboundAllowed": None, "outboundAllowed": None}
    partner["isInMultiTenantOrganization"] = False
    return partner


class Xtap:
    """default: the default configuration; partners: tenant id ->
    partner (PARTNER_PROPS); sync: tenant id -> identitySynchronization
    ({"tenantId", "displayName", "userSyncInbound"})."""

    def __init__(self):
        self.default = service_default()
        self.partners = {}
        self.sync = {}


def xtap(tenant):
    if getattr(tenant, "xtap", None) is None:
        tenant.xtap = Xtap()
    return tenant.xtap


# -- checks ------------------------------------------------------------------

def bad(req, message):
    graph_fail(req, 400, "Request_BadRequest", message)


def check_in_out(req, name, value):
    if value is None:
        return
    if not isinstance(value, dict):
        bad(req, f"Invalid value for property '{name}'.")
    for key, v in value.items():
        if key not in ("inboundAllowed", "outboundAllowed"):
            bad(req, f"Invalid property '{key}'.")
        if v is not None and not isinstance(v, bool):
            bad(req, f"Invalid value for property '{key}'.")


def check_targets(req, name, config):
    if config is None:
        return
    if not isinstance(config, dict):
        bad(req, f"Invalid value for property '{name}'.")
    for key in config:
        if key not in ("accessType", "targets"):
            bad(req, f"Invalid property '{key}'.")
    if config.get("accessType") not in ("allowed", "blocked"):
        bad(req, "Invalid value for property 'accessType'.")
    targets = config.get("targets")
    if not isinstance(targets, list) or not targets or not all(
            isinstance(t, dict) and isinstance(t.get("target"), str)
            and t.get("targetType") in ("user", "group", "application")
            and set(t) <= {"target", "targetType"} for t in targets):
        bad(req, "Invalid value for property 'targets'.")


def check_b2b(req, name, value):
    if value is None:
        return
    if not isinstance(value, dict):
        bad(req, f"Invalid value for property '{name}'.")
    for key, config in value.items():
        if key not in ("usersAndGroups", "applications"):
            bad(req, f"Invalid property '{key}'.")
        check_targets(req, key, config)


def check_body(req, body, allowed):
    """The body as a dict, each key one of `allowed` (case-sensitive, as
    the service: M365DSC-6065) with a value of its type."""
    if not isinstance(body, dict):
        bad(req, "Invalid request body.")
    for name, value in body.items():
        if name not in allowed:
            bad(req, f"Invalid property '{name}'.")
        if name in IN_OUT:
            check_in_out(req, name, value)
        elif name in B2B:
            check_b2b(req, name, value)
        elif name == "inboundTrust" and value is not None and \
                not isinstance(value, dict):
            bad(req, "Invalid value for property 'inboundTrust'.")
        elif name == "isServiceProvider" and value is not None and \
                not isinstance(value, bool):
            bad(req, "Invalid value for property 'isServiceProvider'.")
    return body


def apply_patch(obj, body):
    """A PATCH sets each property it names; a complex value replaces the
    old one whole (a guess: §1.4 leaves it open)."""
    for name, value in body.items():
        if name in IN_OUT and value is not None:
            value = {"inboundAllowed": value.get("inboundAllowed"),
                     "outboundAllowed": value.get("outboundAllowed")}
        obj[name] = copy.deepcopy(value)


def not_found(req):
    graph_fail(req, 404, "Directory_ObjectNotFound",
               "Unable to read the company information from the directory.")


def find_partner(req):
    partner = xtap(req.tenant).partners.get(req.group(1).lower())
    if partner is None:
        not_found(req)
    return partner


def context(req, what):
    return f"{req.cloud.graph_url}/v1.0/$metadata#{what}"


def sync_view(sync):
    return {name: copy.deepcopy(sync.get(name)) for name in SYNC_PROPS}


def partner_view(req, partner, select=None, expand=False):
    names = PARTNER_PROPS if select is None else select
    view = {name: copy.deepcopy(partner.get(name)) for name in names}
    if expand:
        sync = xtap(req.tenant).sync.get(partner["tenantId"])
        view["identitySynchronization"] = (sync_view(sync) if sync
                                           else None)
    return view


def parse_select(req):
    if "select" not in req.params:
        return None
    known = {p.lower(): p for p in PARTNER_PROPS}
    out = []
    for raw in req.params["select"].split(","):
        name = raw.strip()
        if not name:
            continue
        if name.lower() not in known:
            graph_fail(req, 400, "BadRequest",
                       f"Parsing OData Select and Expand failed: Could not "
                       f"find a property named '{name}' on type 'microsoft."
                       f"graph.crossTenantAccessPolicyConfigurationPartner"
                       f"'.")
        out.append(known[name.lower()])
    if "tenantId" not in out:
        out.insert(0, "tenantId")
    return out


def parse_expand(req):
    expand = req.params.get("expand")
    if expand is None:
        return False
    if expand.strip().lower() != "identitysynchronization":
        graph_fail(req, 400, "BadRequest",
                   f"Parsing OData Select and Expand failed: Could not find "
                   f"a property named '{expand.strip()}' on type 'microsoft."
                   f"graph.crossTenantAccessPolicyConfigurationPartner'.")
    return True


# -- the policy and its default ------------------------------------------------

@route("graph", "GET", BASE + r"/?$")
def policy_get(req):
    check_params(req, {"select"})
    return graph_ok(req, {
        "@odata.context": context(req, "policies/crossTenantAccessPolicy/"
                                       "$entity"),
        "displayName": "CrossTenantAccessPolicy",
        "definition": [], "allowedCloudEndpoints": []})


@route("graph", "GET", BASE + r"/default/?$")
def default_get(req):
    check_params(req, set())
    body = {"@odata.context": context(req, "policies/crossTenantAccessPolicy"
                                           "/default/$entity")}
    body.update(copy.deepcopy(xtap(req.tenant).default))
    return graph_ok(req, body)


@route("graph", "PATCH", BASE + r"/default/?$")
def default_patch(req):
    body = req.json_body()
    if isinstance(body, dict) and "automaticUserConsentSettings" in body:
        # G-DEF-RES: "always false and cannot be updated".
        bad(req, "Property 'automaticUserConsentSettings' is read-only and "
                 "cannot be set.")
    check_body(req, body, DEFAULT_WRITABLE)
    default = xtap(req.tenant).default
    apply_patch(default, body)
    default["isServiceDefault"] = False
    return graph_no_content()


# -- partners ------------------------------------------------------------------

@route("graph", "GET", BASE + r"/partners/?$")
def partners_list(req):
    cloud, tenant = req.cloud, req.tenant
    check_params(req, {"select", "expand", "skiptoken"})
    if "skiptoken" in req.params:
        link = cloud.get_link(req.params["skiptoken"], "partners", tenant.id)
        if link is None:
            bad(req, "Invalid paging token.")
        state = link.data
    else:
        state = {"select": parse_select(req), "expand": parse_expand(req),
                 "offset": 0, "ids": sorted(xtap(tenant).partners)}
    size = cloud.knobs["policy_partners_page_size"]
    page = state["ids"][state["offset"]:state["offset"] + size]
    partners = xtap(tenant).partners
    body = {"@odata.context": context(req, "policies/crossTenantAccessPolicy"
                                           "/partners"),
            "value": [partner_view(req, partners[tid], state["select"],
                                   state["expand"])
                      for tid in page if tid in partners]}
    end = state["offset"] + size
    if end < len(state["ids"]):
        token = cloud.new_link("partners", tenant.id,
                               dict(state, offset=end))
        body["@odata.nextLink"] = (
            f"{cloud.graph_url}/v1.0/policies/crossTenantAccessPolicy/"
            f"partners?$skiptoken={token}")
    return graph_ok(req, body)


@route("graph", "POST", BASE + r"/partners/?$")
def partners_post(req):
    body = check_body(req, req.json_body(), PARTNER_PROPS)
    tid = body.get("tenantId")
    if not isinstance(tid, str) or not GUID.match(tid):
        bad(req, "Invalid value for property 'tenantId'.")
    tid = tid.lower()
    policy = xtap(req.tenant)
    if tid in policy.partners:
        graph_fail(req, 409, "Request_MultipleObjectsWithSameKeyValue",
                   "Another object with the same value for property "
                   "tenantId already exists.")
    partner = new_partner(tid)
    apply_patch(partner, {k: v for k, v in body.items()
                          if k not in ("tenantId",
                                       "isInMultiTenantOrganization")})
    policy.partners[tid] = partner
    view = {"@odata.context": context(req, "policies/crossTenantAccessPolicy"
                                           "/partners/$entity")}
    view.update(partner_view(req, partner))
    resp = Response(201, view)
    resp.headers["Content-Type"] = ("application/json;odata.metadata="
                                    "minimal;odata.streaming=true;"
                                    "IEEE754Compatible=false;charset=utf-8")
    resp.headers["OData-Version"] = "4.0"
    return resp


@route("graph", "GET", BASE + r"/partners/([^/]+)/?$")
def partner_get(req):
    check_params(req, {"select", "expand"})
    select, expand = parse_select(req), parse_expand(req)
    partner = find_partner(req)
    body = {"@odata.context": context(req, "policies/crossTenantAccessPolicy"
                                           "/partners/$entity")}
    body.update(partner_view(req, partner, select, expand))
    return graph_ok(req, body)


@route("graph", "PATCH", BASE + r"/partners/([^/]+)/?$")
def partner_patch(req):
    body = check_body(req, req.json_body(),
                      [p for p in PARTNER_PROPS
                       if p not in ("tenantId",
                                    "isInMultiTenantOrganization")])
    apply_patch(find_partner(req), body)
    return graph_no_content()


@route("graph", "DELETE", BASE + r"/partners/([^/]+)/?$")
def partner_delete(req):
    partner = find_partner(req)
    policy = xtap(req.tenant)
    if partner["tenantId"] in policy.sync:
        bad(req, "The partner configuration has a user synchronization "
                 "policy: delete it first.")
    del policy.partners[partner["tenantId"]]
    return graph_no_content()


# -- identitySynchronization ---------------------------------------------------

SYNC = BASE + r"/partners/([^/]+)/identitySynchronization/?$"


def check_sync_body(req, body):
    if not isinstance(body, dict):
        bad(req, "Invalid request body.")
    for name, value in body.items():
        if name not in ("displayName", "userSyncInbound"):
            bad(req, f"Invalid property '{name}'.")
        if name == "displayName" and value is not None and \
                not isinstance(value, str):
            bad(req, "Invalid value for property 'displayName'.")
        if name == "userSyncInbound" and value is not None and not (
                isinstance(value, dict) and set(value) <= {"isSyncAllowed"}
                and isinstance(value.get("isSyncAllowed"), bool)):
            bad(req, "Invalid value for property 'userSyncInbound'.")
    return body


def find_sync(req):
    partner = find_partner(req)
    sync = xtap(req.tenant).sync.get(partner["tenantId"])
    if sync is None:
        not_found(req)
    return sync


@route("graph", "PUT", SYNC)
def sync_put(req):
    body = check_sync_body(req, req.json_body())
    partner = find_partner(req)
    policy = xtap(req.tenant)
    if partner["tenantId"] in policy.sync:
        message = ("A conflicting object with one or more of the specified "
                   "property values is present in the directory.")
        graph_fail(req, 409, "Request_MultipleObjectsWithSameKeyValue",
                   message)
    policy.sync[partner["tenantId"]] = {
        "tenantId": partner["tenantId"],
        "displayName": body.get("displayName"),
        "userSyncInbound": copy.deepcopy(body.get("userSyncInbound")
                                         or {"isSyncAllowed": False})}
    return graph_no_content()


@route("graph", "GET", SYNC)
def sync_get(req):
    check_params(req, {"select"})
    sync = find_sync(req)
    body = {"@odata.context": context(
        req, "policies/crossTenantAccessPolicy/partners('%s')/"
             "identitySynchronization/$entity" % sync["tenantId"])}
    body.update(sync_view(sync))
    return graph_ok(req, body)


@route("graph", "PATCH", SYNC)
def sync_patch(req):
    body = check_sync_body(req, req.json_body())
    sync = find_sync(req)
    for name, value in body.items():
        sync[name] = copy.deepcopy(value)
    return graph_no_content()


@route("graph", "DELETE", SYNC)
def sync_delete(req):
    sync = find_sync(req)
    del xtap(req.tenant).sync[sync["tenantId"]]
    return graph_no_content()


# -- seed and admin ------------------------------------------------------------

def seed_policy(tenant, spec):
    """A seed's "crossTenantAccess": {"default"?: properties to change,
    "partners"?: [partner properties, "identitySynchronization"?]}.
    ValueError."""
    if spec is None:
        return
    if not isinstance(spec, dict) or set(spec) - {"default", "partners"}:
        raise ValueError('crossTenantAccess must be {"default"?, '
                         '"partners"?}')
    policy = xtap(tenant)
    if spec.get("default"):
        policy.default.update(copy.deepcopy(spec["default"]))
        policy.default["isServiceDefault"] = False
    for data in spec.get("partners", []):
        if not isinstance(data, dict) or not isinstance(
                data.get("tenantId"), str):
            raise ValueError("every partner needs a tenantId")
        data = dict(data)
        sync = data.pop("identitySynchronization", None)
        unknown = set(data) - set(PARTNER_PROPS)
        if unknown:
            raise ValueError(f"unknown partner properties: {sorted(unknown)}")
        tid = data["tenantId"].lower()
        partner = new_partner(tid)
        for name, value in data.items():
            if name in IN_OUT and value is not None:
                partner[name].update(value)
            elif name != "tenantId":
                partner[name] = copy.deepcopy(value)
        policy.partners[tid] = partner
        if sync is not None:
            policy.sync[tid] = {
                "tenantId": tid, "displayName": sync.get("displayName"),
                "userSyncInbound": copy.deepcopy(
                    sync.get("userSyncInbound") or {"isSyncAllowed": False})}


def policy_dump(tenant):
    """The whole policy, for GET /admin/tenants/{tid}/cross-tenant-access:
    {"default", "partners": [partner + "identitySynchronization"]}."""
    policy = xtap(tenant)
    partners = []
    for tid in sorted(policy.partners):
        view = copy.deepcopy(policy.partners[tid])
        sync = policy.sync.get(tid)
        view["identitySynchronization"] = copy.deepcopy(sync)
        partners.append(view)
    return {"default": copy.deepcopy(policy.default), "partners": partners}


def policy_replace(tenant, spec):
    """PUT /admin/tenants/{tid}/cross-tenant-access: the service defaults,
    then the spec as in a seed.  ValueError."""
    old = getattr(tenant, "xtap", None)
    tenant.xtap = None
    try:
        seed_policy(tenant, spec)
    except ValueError:
        tenant.xtap = old
        raise
    xtap(tenant)
