"""The manager relationship: Graph's manager endpoints, the admin's.

GET /users/{id}/manager, PUT and DELETE /users/{id}/manager/$ref
(user-post-manager.md, user-delete-manager.md, user-list-manager.md),
with the answers the service gives; users/delta shows a change as
"manager@delta" (delta.py).  Set-Contact and Set-User -Manager
(cmdlets.py) change the same relationship.  The admin API reads and sets
it for tests: GET/PUT /admin/tenants/{t}/users/{id}/manager and
/admin/tenants/{t}/contacts/{id}/manager with {"manager": id | null}.

Error answers beyond the documented 204 are marked in ../README.md.
"""

import re

from .directory import User
from .graph import graph_no_content, graph_ok, not_found_text
from .objects import org_contact_view
from .users import graph_user, user_view
from .wire import Reply, Response, admin_fail, bad_body, graph_fail, route


MANAGER = r"^/(v1\.0|beta)/users/([^/]+)/manager"
# The read URL of a directory object, as @odata.id carries it.
REF = re.compile(r"^https?://[^/]+/(?:v1\.0|beta)/(?:users|contacts|"
                 r"directoryObjects)/([0-9A-Fa-f-]{36})/?$")


def manager_view(req, version, obj):
    """The manager as GET /users/{id}/manager returns it: the directory
    object with its @odata.type."""
    if isinstance(obj, User):
        body = user_view(req, obj, ["displayName", "mail",
                                    "userPrincipalName"], version,
                         "#microsoft.graph.user")
    else:
        body = dict(org_contact_view(obj, version))
        body["@odata.type"] = "#microsoft.graph.orgContact"
    body["@odata.context"] = (f"{req.cloud.graph_url}/{version}/"
                              f"$metadata#directoryObjects/$entity")
    return body


@route("graph", "GET", MANAGER + "$")
def get_manager(req):
    user = graph_user(req)
    obj = (req.tenant.find_directory_object(user.manager)
           if user.manager else None)
    if obj is None:
        graph_fail(req, 404, "Request_ResourceNotFound",
                   not_found_text("manager"))
    return graph_ok(req, manager_view(req, req.group(1), obj))


@route("graph", "PUT", MANAGER + r"/\$ref$")
def put_manager(req):
    user = graph_user(req)
    body = req.json_body()
    ref = body.get("@odata.id") if isinstance(body, dict) else None
    if not isinstance(ref, str):
        raise Reply(bad_body(req))
    match = REF.match(ref)
    if match is None:
        graph_fail(req, 400, "Request_BadRequest",
                   f"Invalid object identifier '{ref}'.")
    manager = req.tenant.find_directory_object(match.group(1))
    if manager is None:
        graph_fail(req, 404, "Request_ResourceNotFound",
                   not_found_text(match.group(1)))
    if manager is user:
        graph_fail(req, 400, "Request_BadRequest",
                   "A user cannot be their own manager.")
    req.tenant.set_manager(user, manager.id)
    return graph_no_content()


@route("graph", "DELETE", MANAGER + r"/\$ref$")
def delete_manager(req):
    user = graph_user(req)
    if user.manager is None:
        graph_fail(req, 404, "Request_ResourceNotFound",
                   not_found_text("manager"))
    req.tenant.set_manager(user, None)
    return graph_no_content()


# -- admin ----------------------------------------------------------------

ADMIN_OBJ = r"^/admin/tenants/([^/]+)/(users|contacts)/([^/]+)/manager$"


def admin_target(req):
    tenant = req.cloud.find_tenant(req.group(1))
    if tenant is None:
        admin_fail(404, f"no tenant {req.group(1)}")
    table = tenant.users if req.group(2) == "users" else tenant.contacts
    obj = table.get(req.group(3).lower())
    if obj is None:
        admin_fail(404, f"no {req.group(2)[:-1]} {req.group(3)}")
    return tenant, obj


@route("admin", "GET", ADMIN_OBJ)
def admin_get_manager(req):
    _, obj = admin_target(req)
    return Response(200, {"manager": obj.manager})


@route("admin", "PUT", ADMIN_OBJ)
def admin_put_manager(req):
    """Set an object's manager to any id (a test may name one no object
    has: a hostile source), or clear it with null."""
    tenant, obj = admin_target(req)
    body = req.json_body()
    if not isinstance(body, dict) or "manager" not in body:
        admin_fail(400, 'body must be {"manager": id | null}')
    value = body["manager"]
    if value is not None and not isinstance(value, str):
        admin_fail(400, "manager must be a string or null")
    tenant.set_manager(obj, value.lower() if value else None)
    return Response(200, {"manager": obj.manager})
