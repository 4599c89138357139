"""Graph profile photos of users (profilephoto-get, -update, -delete).

GET /users/{id}/photo answers the metadata: @odata.mediaContentType,
@odata.mediaEtag (a new one with each upload), id "WxH", width, height.
A user without a photo answers 404 ImageNotFound, or, with the
photo_absent knob set to "1x1", 200 with id "1x1", image/gif and an empty
@odata.mediaEtag (the doc sample); galbridge must read both as "no
photo".  GET .../photo/$value answers the bytes with their Content-Type
(404 when none), PUT or PATCH .../photo/$value stores a photo (at most
4 MB, image/jpeg or image/png; 200), DELETE .../photo/$value removes it
(204).  The photo_write_forbidden knob makes writes answer 403, as a
missing ProfilePhoto.ReadWrite.All or a photoUpdateSettings source of
onPremises would.  The admin API sets, reads and removes a user's photo
(base64 in JSON).  Guesses are marked in README.md.
"""

import base64
import binascii
import hashlib

from .graph import graph_no_content, graph_ok
from .knobs import KNOBS, Knob
from .users import graph_user
from .wire import Response, admin_fail, graph_fail, route

PHOTO = r"^/(v1\.0|beta)/users/([^/]+)/photo"
# profilephoto-update: "The size of the photo you can update to is
# limited to 4 MB."  Read here as 4 * 1024 * 1024 (which MB is [guess]).
PHOTO_MAX = 4 * 1024 * 1024
PHOTO_TYPES = ("image/jpeg", "image/png")

KNOBS["photo_absent"] = Knob(
    "404", lambda v: v in ("404", "1x1"), None,
    "how GET /users/{id}/photo answers for a user without a photo: 404 "
    "ImageNotFound, or 200 with id 1x1 and an empty @odata.mediaEtag")
KNOBS["photo_write_forbidden"] = Knob(
    False, lambda v: isinstance(v, bool), None,
    "true: PUT/PATCH/DELETE of a user's photo answer 403 "
    "Authorization_RequestDenied (no ProfilePhoto.ReadWrite.All, or "
    "photoUpdateSettings source onPremises)")


def photos_of(tenant):
    """The tenant's photos: user id -> {"data", "type", "etag"}."""
    return tenant.__dict__.setdefault("photos", {})


def new_etag(tenant, data):
    """A quoted 8-hex-digit etag ("\\"BA09D118\\"" in the doc), new for
    each upload even of the same bytes."""
    tenant.__dict__["photo_serial"] = tenant.__dict__.get("photo_serial",
                                                          0) + 1
    digest = hashlib.sha256(data + str(tenant.photo_serial).encode())
    return '"' + digest.hexdigest()[:8].upper() + '"'


def store_photo(tenant, user_id, data, ctype):
    photos_of(tenant)[user_id] = {"data": data, "type": ctype,
                                  "etag": new_etag(tenant, data)}


def no_photo(req):
    graph_fail(req, 404, "ImageNotFound",
               "Exception of type 'Microsoft.Fast.Profile.Core.Exception."
               "ImageNotFoundException' was thrown.")


def context(req, user):
    return (f"{req.cloud.graph_url}/{req.group(1)}/$metadata#users"
            f"('{user.id}')/photo/$entity")


@route("graph", "GET", PHOTO + "$")
def get_photo(req):
    user = graph_user(req)
    photo = photos_of(req.tenant).get(user.id)
    if photo is None:
        if req.cloud.knobs["photo_absent"] != "1x1":
            no_photo(req)
        return graph_ok(req, {
            "@odata.context": context(req, user),
            "@odata.mediaContentType": "image/gif",
            "@odata.mediaEtag": "", "id": "1x1", "width": 1, "height": 1})
    # The fake does not decode images: every photo is 240x240.
    return graph_ok(req, {
        "@odata.context": context(req, user),
        "@odata.mediaContentType": photo["type"],
        "@odata.mediaEtag": photo["etag"], "id": "240x240", "width": 240,
        "height": 240})


@route("graph", "GET", PHOTO + r"/\$value$")
def get_photo_value(req):
    user = graph_user(req)
    photo = photos_of(req.tenant).get(user.id)
    if photo is None:
        no_photo(req)
    return Response(200, photo["data"], {"Content-Type": photo["type"]},
                    content_type=photo["type"])


def check_write(req):
    if req.cloud.knobs["photo_write_forbidden"]:
        graph_fail(req, 403, "Authorization_RequestDenied",
                   "Insufficient privileges to complete the operation.")


def put_photo_value(req):
    user = graph_user(req)
    check_write(req)
    ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip()
    data = req.body or b""
    if ctype.lower() not in PHOTO_TYPES:
        graph_fail(req, 400, "ErrorInvalidImage",
                   "The image content type is not supported.")
    if len(data) > PHOTO_MAX:
        graph_fail(req, 413, "RequestEntityTooLarge",
                   "The photo is larger than the 4 MB limit.")
    if not data:
        graph_fail(req, 400, "ErrorInvalidImage", "The image is empty.")
    store_photo(req.tenant, user.id, data, ctype.lower())
    return Response(200)


for _method in ("PUT", "PATCH"):
    route("graph", _method, PHOTO + r"/\$value$")(put_photo_value)


@route("graph", "DELETE", PHOTO + r"/\$value$")
def delete_photo_value(req):
    user = graph_user(req)
    check_write(req)
    if photos_of(req.tenant).pop(user.id, None) is None:
        no_photo(req)
    return graph_no_content()


# -- admin: a source user's photo, as a tenant admin would set it --------

ADMIN_PHOTO = r"^/admin/tenants/([^/]+)/users/([^/]+)/photo$"


def admin_target(req):
    tenant = req.cloud.find_tenant(req.group(1))
    if tenant is None:
        admin_fail(404, f"no tenant {req.group(1)}")
    user = tenant.users.get(req.group(2).lower())
    if user is None:
        admin_fail(404, f"no user {req.group(2)}")
    return tenant, user


@route("admin", "PUT", ADMIN_PHOTO)
def admin_put_photo(req):
    """{"data": base64, "contentType": any text}: no check of size or
    type (a hostile source tenant's photo can be anything)."""
    tenant, user = admin_target(req)
    body = req.json_body()
    if not isinstance(body, dict) or not isinstance(body.get("data"), str) \
            or not isinstance(body.get("contentType"), str):
        admin_fail(400, "body must be {\"data\": base64, \"contentType\"}")
    try:
        data = base64.b64decode(body["data"], validate=True)
    except (binascii.Error, ValueError):
        admin_fail(400, "data is not base64")
    store_photo(tenant, user.id, data, body["contentType"])
    return admin_view(tenant, user.id)


def admin_view(tenant, user_id):
    photo = photos_of(tenant)[user_id]
    return Response(200, {"contentType": photo["type"],
                          "etag": photo["etag"], "size": len(photo["data"]),
                          "data": base64.b64encode(photo["data"]).decode()})


@route("admin", "GET", ADMIN_PHOTO)
def admin_get_photo(req):
    tenant, user = admin_target(req)
    if user.id not in photos_of(tenant):
        admin_fail(404, f"no photo for {user.id}")
    return admin_view(tenant, user.id)


@route("admin", "DELETE", ADMIN_PHOTO)
def admin_delete_photo(req):
    tenant, user = admin_target(req)
    photos_of(tenant).pop(user.id, None)
    return Response(204)
