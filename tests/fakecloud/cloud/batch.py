"""Graph JSON batching: POST /{v}/$batch (json-batching.md, batch.txt)."""

import http.client
import json
import re
import sys
import urllib.parse

from .graph import check_params, graph_ok
from .knobs import count_stat
from .limits import limits_unit_header
from .server import dispatch
from .users import graph_request_kind
from .wire import (Reply, Request, b64url_decode, graph_error, graph_fail,
                   internal_error, route)


# Each inner request goes through dispatch() like a top-level one: the
# batch's own token authenticates it, inject_fault() sees it (req.batch_id
# set), it is counted in the tenant's stats by its own kind and logged on
# its own (entry "batch" = its id), before the $batch itself.  Inner
# answers come back in a shuffled order, as the service may send them.

BATCH_MAX = 20
BATCH_METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")
BATCH_WRITES = ("POST", "PATCH", "PUT")


def batch_bad(req, message):
    graph_fail(req, 400, "BadRequest", message)


def batch_header(headers, name):
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def batch_requests(req):
    """The batch body's requests, checked as a whole: any fault here fails
    the entire batch with 400 and nothing runs."""
    body = req.json_body()
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        batch_bad(req, "Invalid batch payload format.")
    if len(requests) > BATCH_MAX:
        batch_bad(req, f"The number of requests in the batch exceeds the "
                       f"limit of {BATCH_MAX}.")
    seen = set()
    for item in requests:
        if not isinstance(item, dict) or \
                not isinstance(item.get("id"), str) or not item["id"] or \
                not isinstance(item.get("url"), str) or \
                item.get("method") not in BATCH_METHODS or \
                not isinstance(item.get("headers", {}), dict) or \
                not isinstance(item.get("dependsOn", []), list):
            batch_bad(req, "Invalid batch payload format.")
        key = item["id"].lower()          # ids are case-insensitive
        if key in seen:
            batch_bad(req, f"Request id '{item['id']}' is not unique "
                           f"within the batch.")
        seen.add(key)
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", item["url"]):
            batch_bad(req, f"Request id '{item['id']}': the url must be "
                           f"relative, such as /users.")
        headers = item.get("headers", {})
        has_type = batch_header(headers, "Content-Type") is not None
        if ("body" in item and not has_type) or \
                (item["method"] in BATCH_WRITES and "body" not in item):
            # Observed text (msgraph-sdk-dotnet#2628).
            batch_bad(req, f"Write request id : {item['id']} does not "
                           f"contain Content-Type header or body.")
    for item in requests:
        for dep in item.get("dependsOn", []):
            if not isinstance(dep, str) or dep.lower() not in seen or \
                    dep.lower() == item["id"].lower():
                batch_bad(req, f"Request id '{item['id']}' depends on "
                               f"'{dep}', which is not in the batch.")
    return requests


def batch_order(req, requests):
    """Requests in an order where each comes after those it depends on
    (batch order otherwise); a cycle fails the batch."""
    done, order = set(), []
    pending = list(requests)
    while pending:
        ready = [r for r in pending
                 if all(d.lower() in done for d in r.get("dependsOn", []))]
        if not ready:
            batch_bad(req, "The dependsOn of the batch's requests form a "
                           "cycle.")
        for item in ready:
            done.add(item["id"].lower())
            order.append(item)
            pending.remove(item)
    return order


def batch_inner_request(req, item):
    """A Request for one inner request: its path under the batch's
    version, its own headers, the batch's Authorization."""
    parts = urllib.parse.urlsplit(item["url"])
    path = "/" + req.group(1) + "/" + parts.path.lstrip("/")
    headers = http.client.HTTPMessage()
    for name, value in item.get("headers", {}).items():
        if name.lower() != "authorization":
            headers[name] = str(value)
    if req.headers.get("Authorization") is not None:
        headers["Authorization"] = req.headers.get("Authorization")
    body = b""
    if "body" in item:
        kind = (batch_header(item.get("headers", {}), "Content-Type")
                or "").lower()
        value = item["body"]
        if "json" not in kind and isinstance(value, str):
            try:           # other media types come base64url-encoded
                value = b64url_decode(value.rstrip("="))
            except ValueError:
                value = value.encode("utf-8")
            body = value
        else:
            body = json.dumps(value).encode("utf-8")
    inner = Request(req.cloud, "graph", item["method"], path, parts.query,
                    headers, body, req.host)
    inner.batch_id = item["id"]
    # It arrived with its batch, not when its turn came under the lock.
    inner.arrived = req.arrived
    inner.on_connection = getattr(req, "on_connection", 0)
    inner.new_windows = req.new_windows   # stamped when the batch's answer
    # has left
    # The batch's token names the tenant, even for an inner request that
    # a fault answers before authentication.
    inner.tenant, inner.client_id = req.tenant, req.client_id
    return inner


def batch_record(inner, resp):
    """Count and log an inner request as Cloud.answer does a top-level
    one."""
    cloud = inner.cloud
    if inner.tenant is not None:
        kind = graph_request_kind(inner.method, inner.path)
        if kind is not None:
            count_stat(cloud, inner.tenant, kind)
    cloud.log_request(inner, resp)
    if cloud.verbose:
        query = "?" + inner.query if inner.query else ""
        print(f"fakecloud: graph {inner.method} {inner.path}{query} "
              f"(in $batch) -> {resp.status}", file=sys.stderr, flush=True)


def batch_run(inner):
    try:
        if re.match(r"^/(v1\.0|beta)/\$batch/?$", inner.path):
            graph_fail(inner, 400, "BadRequest",
                       "Nested batch requests are not supported.")
        resp = dispatch(inner)
    except Reply as reply:
        resp = reply.response
    except Exception:          # a bug here must not kill the listener
        resp = internal_error()
    limits_unit_header(inner, resp)
    batch_record(inner, resp)
    return resp


def batch_answer(item_id, resp):
    headers = {"Cache-Control": "no-cache"}
    headers.update(resp.headers)
    answer = {"id": item_id, "status": resp.status, "headers": headers}
    if resp.body is not None:
        headers.setdefault("Content-Type", resp.content_type)
        body = resp.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        answer["body"] = body
    return answer


@route("graph", "POST", r"^/(v1\.0|beta)/\$batch/?$")
def json_batch(req):
    if req.batch_id is not None:
        graph_fail(req, 400, "BadRequest",
                   "Nested batch requests are not supported.")
    check_params(req, set())
    requests = batch_requests(req)
    failed = set()
    answers = []
    for item in batch_order(req, requests):
        deps = [d.lower() for d in item.get("dependsOn", [])]
        if any(d in failed for d in deps):
            # Not run: a request it depends on failed (guessed text).
            resp = graph_error(req, 424, "FailedDependency",
                               "The request was not run because a request "
                               "it depends on failed.")
        else:
            resp = batch_run(batch_inner_request(req, item))
        if resp.status >= 400:
            failed.add(item["id"].lower())
        answers.append(batch_answer(item["id"], resp))
    req.cloud.rng.shuffle(answers)
    resp = graph_ok(req, {"responses": answers})
    resp.headers["Content-Type"] = "application/json"
    return resp
