"""fakecloud models users' profile photos (galbridge issue 19, photos).

Run:  /usr/bin/python3 -m pytest tests/fakecloud/test_photos.py -q

GET /users/{id}/photo (metadata: @odata.mediaEtag new with each upload;
no photo as 404 ImageNotFound or, with the photo_absent knob, 200 "1x1"
with an empty etag), GET/PUT/PATCH/DELETE .../photo/$value with the
documented size limit and content types, the 403 of photo_write_forbidden
and the admin API.  One real fakecloud per module (conftest.py), reset
and seeded before each test.
"""

import base64

import pytest

SRC = "aaaaaaaa-0000-4000-8000-00000000c001"
APP = "bbbbbbbb-0000-4000-8000-00000000c001"
SECRET = "s3cret"
ALICE = "11111111-0000-4000-8000-000000000001"
BOB = "11111111-0000-4000-8000-000000000002"
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg-bytes" * 10
PNG = b"\x89PNG\r\n\x1a\n" + b"png-bytes" * 10


def seed():
    return {"tenants": [
        {"id": SRC, "domain": "contoso.onmicrosoft.com",
         "apps": [{"client_id": APP, "secrets": [SECRET]}],
         "users": [
             {"id": ALICE, "displayName": "Alice",
              "userPrincipalName": "alice@contoso.onmicrosoft.com",
              "mail": "alice@contoso.com"},
             {"id": BOB, "displayName": "Bob",
              "userPrincipalName": "bob@contoso.onmicrosoft.com",
              "mail": "bob@contoso.com"}]},
    ]}


@pytest.fixture
def fc(cloud):
    cloud.reset()
    cloud.seed(seed())
    return cloud


def call(fc, method, path, body=None, headers=None):
    token = fc.access_token(SRC, APP, SECRET)
    h = {"Authorization": "Bearer " + token}
    h.update(headers or {})
    return fc.request(method, fc.graph_url + "/v1.0" + path, headers=h,
                      body=body)


def error_code(reply, status):
    assert reply.status == status, reply.body
    err = reply.json()["error"]
    assert set(err) == {"code", "message", "innerError"}
    return err["code"]


def test_metadata_of_a_photo_and_its_etag_changes_with_each_upload(fc):
    first = fc.set_photo(SRC, ALICE, JPEG)
    reply = call(fc, "GET", f"/users/{ALICE}/photo")
    assert reply.status == 200
    meta = reply.json()
    assert meta["@odata.mediaContentType"] == "image/jpeg"
    assert meta["@odata.mediaEtag"] == first["etag"]
    assert meta["@odata.mediaEtag"].startswith('"')
    assert meta["id"] == "240x240" and meta["width"] == 240
    assert meta["@odata.context"].endswith(f"users('{ALICE}')/photo/$entity")
    second = fc.set_photo(SRC, ALICE, JPEG)
    assert second["etag"] != first["etag"]          # same bytes, new upload
    assert call(fc, "GET", f"/users/{ALICE}/photo").json()[
        "@odata.mediaEtag"] == second["etag"]


def test_no_photo_is_404_image_not_found_or_1x1_with_an_empty_etag(fc):
    reply = call(fc, "GET", f"/users/{BOB}/photo")
    assert error_code(reply, 404) == "ImageNotFound"
    assert error_code(call(fc, "GET", f"/users/{BOB}/photo/$value"),
                      404) == "ImageNotFound"
    fc.set_knobs(photo_absent="1x1")
    meta = call(fc, "GET", f"/users/{BOB}/photo").json()
    assert meta["id"] == "1x1" and meta["@odata.mediaEtag"] == ""
    assert meta["@odata.mediaContentType"] == "image/gif"
    # $value still has nothing to give
    assert call(fc, "GET", f"/users/{BOB}/photo/$value").status == 404


def test_unknown_user_is_request_resource_not_found(fc):
    other = "22222222-0000-4000-8000-000000000009"
    assert error_code(call(fc, "GET", f"/users/{other}/photo"),
                      404) == "Request_ResourceNotFound"


def test_value_returns_the_bytes_with_their_content_type(fc):
    fc.set_photo(SRC, ALICE, PNG, "image/png")
    reply = call(fc, "GET", f"/users/{ALICE}/photo/$value")
    assert reply.status == 200
    assert reply.header("Content-Type") == "image/png"
    assert reply.body == PNG


def test_put_and_patch_store_a_photo_and_delete_removes_it(fc):
    reply = call(fc, "PUT", f"/users/{BOB}/photo/$value", JPEG,
                 {"Content-Type": "image/jpeg"})
    assert reply.status == 200
    got = fc.photo(SRC, BOB)
    assert got["bytes"] == JPEG and got["contentType"] == "image/jpeg"
    reply = call(fc, "PATCH", f"/users/{BOB}/photo/$value", PNG,
                 {"Content-Type": "image/png"})
    assert reply.status == 200
    assert fc.photo(SRC, BOB)["etag"] != got["etag"]
    assert call(fc, "DELETE", f"/users/{BOB}/photo/$value").status == 204
    assert fc.photo(SRC, BOB) is None
    assert error_code(call(fc, "DELETE", f"/users/{BOB}/photo/$value"),
                      404) == "ImageNotFound"


def test_upload_over_4_mb_is_refused(fc):
    big = b"\xff\xd8\xff" + b"x" * (4 * 1024 * 1024)
    reply = call(fc, "PUT", f"/users/{BOB}/photo/$value", big,
                 {"Content-Type": "image/jpeg"})
    assert error_code(reply, 413) == "RequestEntityTooLarge"
    assert fc.photo(SRC, BOB) is None
    exact = b"\xff\xd8\xff" + b"x" * (4 * 1024 * 1024 - 3)
    assert call(fc, "PUT", f"/users/{BOB}/photo/$value", exact,
                {"Content-Type": "image/jpeg"}).status == 200


@pytest.mark.parametrize("ctype", ["text/html", "image/gif",
                                   "application/octet-stream", ""])
def test_upload_of_another_content_type_is_refused(fc, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    reply = call(fc, "PUT", f"/users/{BOB}/photo/$value", JPEG, headers)
    assert error_code(reply, 400) == "ErrorInvalidImage"
    assert fc.photo(SRC, BOB) is None


def test_write_forbidden_knob_answers_403_and_changes_nothing(fc):
    fc.set_photo(SRC, ALICE, JPEG)
    fc.set_knobs(photo_write_forbidden=True)
    reply = call(fc, "PUT", f"/users/{ALICE}/photo/$value", PNG,
                 {"Content-Type": "image/png"})
    assert error_code(reply, 403) == "Authorization_RequestDenied"
    assert error_code(call(fc, "DELETE", f"/users/{ALICE}/photo/$value"),
                      403) == "Authorization_RequestDenied"
    assert fc.photo(SRC, ALICE)["bytes"] == JPEG
    # reads still work
    assert call(fc, "GET", f"/users/{ALICE}/photo").status == 200


def test_metadata_through_batch(fc):
    fc.set_photo(SRC, ALICE, JPEG)
    token = fc.access_token(SRC, APP, SECRET)
    reply = fc.request("POST", fc.graph_url + "/v1.0/$batch",
                       headers={"Authorization": "Bearer " + token},
                       json_body={"requests": [
                           {"id": "1", "method": "GET",
                            "url": f"/users/{ALICE}/photo"},
                           {"id": "2", "method": "GET",
                            "url": f"/users/{BOB}/photo"}]})
    assert reply.status == 200
    answers = {a["id"]: a for a in reply.json()["responses"]}
    assert answers["1"]["status"] == 200
    assert answers["1"]["body"]["@odata.mediaEtag"] == \
        fc.photo(SRC, ALICE)["etag"]
    assert answers["2"]["status"] == 404
    assert answers["2"]["body"]["error"]["code"] == "ImageNotFound"


def test_admin_sets_any_bytes_and_type(fc):
    view = fc.set_photo(SRC, ALICE, b"<html>", "text/html")
    assert view["contentType"] == "text/html" and view["size"] == 6
    assert base64.b64decode(view["data"]) == b"<html>"
    reply = call(fc, "GET", f"/users/{ALICE}/photo/$value")
    assert reply.header("Content-Type") == "text/html"
    fc.delete_photo(SRC, ALICE)
    assert fc.photo(SRC, ALICE) is None
