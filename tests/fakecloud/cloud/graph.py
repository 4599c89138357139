"""Graph: what every Graph endpoint shares.

Authentication (every Graph request needs a live Graph token, which names
the tenant and the app), the 200 answer with Graph's headers, checks of
query options ($select of user properties, $top, the advanced query
parameters), the properties and default $select sets of
microsoft.graph.user (v1.0), and the object views plain GETs return.  The
endpoints are in delta.py, users.py, objects.py and batch.py.
"""

from .wire import GRAPH_JSON, Response, bearer, graph_fail


# users/delta without $select returns this set (users-delta-api-example1),
# and so do GET /users/{id} and directoryObject collections for users.
DEFAULT_USER_SELECT = [
    "businessPhones", "displayName", "givenName", "jobTitle", "mail",
    "mobilePhone", "officeLocation", "preferredLanguage", "surname",
    "userPrincipalName",
]
DEFAULT_GROUP_SELECT = [
    "displayName", "description", "mail", "mailEnabled", "mailNickname",
    "securityEnabled", "groupTypes",
]

# Properties of microsoft.graph.user (v1.0).  $select of anything else is a
# 400, as the real service answers; properties a seed invents are accepted
# too (Tenant.extra_props).
USER_PROPERTIES = [
    "aboutMe", "accountEnabled", "ageGroup", "assignedLicenses",
    "assignedPlans", "birthday", "businessPhones", "city", "companyName",
    "consentProvidedForMinor", "country", "createdDateTime", "creationType",
    "deletedDateTime", "department", "displayName", "employeeHireDate",
    "employeeId", "employeeLeaveDateTime", "employeeOrgData",
    "employeeType", "externalUserState", "externalUserStateChangeDateTime",
    "faxNumber", "givenName", "hireDate", "identities", "imAddresses",
    "interests", "isResourceAccount", "jobTitle",
    "lastPasswordChangeDateTime", "legalAgeGroupClassification",
    "licenseAssignmentStates", "mail", "mailNickname", "mobilePhone",
    "mySite", "officeLocation", "onPremisesDistinguishedName",
    "onPremisesDomainName", "onPremisesExtensionAttributes",
    "onPremisesImmutableId", "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors", "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier", "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName", "otherMails", "passwordPolicies",
    "passwordProfile", "pastProjects", "postalCode", "preferredDataLocation",
    "preferredLanguage", "preferredName", "provisionedPlans",
    "proxyAddresses", "responsibilities", "schools", "securityIdentifier",
    "showInAddressList", "signInSessionsValidFromDateTime", "skills",
    "state", "streetAddress", "surname", "usageLocation",
    "userPrincipalName", "userType",
]

GRAPH_WWW_AUTH = ('Bearer realm="", authorization_uri="https://login.'
                  'microsoftonline.com/common/oauth2/authorize", '
                  'client_id="00000003-0000-0000-c000-000000000000"')

EXTENSION_NAMES = [f"extensionAttribute{n}" for n in range(1, 16)]


def graph_authenticate(req):
    """Every Graph request needs a live Graph token; it names the tenant."""
    token, reason = req.cloud.check_token(bearer(req))
    if token is not None and token.kind != "graph":
        reason = "audience"
    message = {
        "empty": "Access token is empty.",
        "expired": "Access token has expired or is not yet valid.",
        "audience": "Access token validation failure. Invalid audience.",
        "invalid": "Access token validation failure.",
    }.get(reason)
    if message is not None:
        graph_fail(req, 401, "InvalidAuthenticationToken", message,
                   {"WWW-Authenticate": GRAPH_WWW_AUTH})
    req.token = token
    req.tenant = req.cloud.tenants[token.tenant_id]
    req.client_id = token.client_id


def graph_ok(req, body, headers=None):
    resp = Response(200, body, headers)
    resp.headers.setdefault("Content-Type", GRAPH_JSON)
    resp.headers.setdefault("OData-Version", "4.0")
    resp.headers.setdefault("Cache-Control", "no-cache")
    return resp


def check_params(req, allowed):
    for name in req.params:
        if name not in allowed:
            graph_fail(req, 400, "Request_BadRequest",
                       f"Unrecognized query argument specified: '{name}'.")


def parse_select(req, text, properties, type_name):
    """$select list -> canonical property names (id left out: it always
    comes).  Unknown names answer 400 like the service."""
    known = {p.lower(): p for p in properties}
    out = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        canon = known.get(name.lower())
        if canon is None and name.lower() != "id":
            graph_fail(req, 400, "BadRequest",
                       f"Parsing OData Select and Expand failed: Could not "
                       f"find a property named '{name}' on type "
                       f"'microsoft.graph.{type_name}'.")
        if canon is not None and canon not in out:
            out.append(canon)
    return out


def parse_user_select(req, text):
    """parse_select() of user properties, and those a seed invented."""
    return parse_select(req, text,
                        USER_PROPERTIES + sorted(req.tenant.extra_props),
                        "user")


def select_suffix(select):
    """The "(a,b)" of an @odata.context; id alone when nothing else."""
    return "(" + (",".join(select) or "id") + ")"


def object_view(props, select, oid, odata_type=None):
    """A directory object as a plain GET returns it: @odata.type first when
    in a mixed collection, unset selected properties as null."""
    view = {}
    if odata_type:
        view["@odata.type"] = odata_type
        view["id"] = oid
    for name in select:
        view[name] = props.get(name)
    if not odata_type:
        view["id"] = oid
    return view


def not_found_text(key):
    """The observed Request_ResourceNotFound message template."""
    return (f"Resource '{key}' does not exist or one of its queried "
            f"reference-property objects are not present.")


def graph_no_content():
    return Response(204)


def advanced_params(req):
    level = (req.headers.get("ConsistencyLevel") or "").strip().lower()
    count = req.params.get("count", "").strip().lower() == "true"
    return level == "eventual", count


def parse_top(req):
    top = req.params.get("top", "100")
    if not top.isdigit() or not 1 <= int(top) <= 999:
        graph_fail(req, 400, "Request_BadRequest",
                   f"Invalid page size specified: '{top}'. Must be between "
                   f"1 and 999 inclusive.")
    return int(top)
