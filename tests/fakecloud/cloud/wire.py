"""The wire: what every service module needs to take a request and answer.

Request is one parsed HTTP request (query options folded to lower case
without their "$"), Response a status, a JSON or bytes body and headers,
and Reply the exception a handler raises, however deep, to answer at once.
ROUTES is the route table handlers fill with @route at import time and
server.dispatch() reads.  The error bodies follow each service's
documented shape: Graph's {"error": {"code", "message", "innerError"}},
the identity platform's AADSTS body, Exchange's "Error executing cmdlet",
and the admin API's plain {"error"}.  Nothing here holds state.
"""

import base64
import datetime
import json
import re
import sys
import time
import traceback
import urllib.parse
import uuid


GRAPH_JSON = ("application/json;odata.metadata=minimal;odata.streaming=true;"
              "IEEE754Compatible=false;charset=utf-8")
EXO_JSON = GRAPH_JSON
AAD_HEADERS = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache",
               "Content-Type": "application/json; charset=utf-8"}


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def iso_ms(ts):
    return (datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Response:
    def __init__(self, status, body=None, headers=None,
                 content_type="application/json"):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.content_type = content_type
        self.drop = False          # reserved: close without answering

    def encode(self):
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        text = json.dumps(self.body, ensure_ascii=False,
                          separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (a user's value can hold one: the directory
            # stores UTF-16) cannot be UTF-8; Graph, a .NET service, sends
            # it as a \ud800 escape, as ensure_ascii does.
            return json.dumps(self.body, separators=(",", ":")).encode(
                "ascii")


class Reply(Exception):
    """Raised by a handler (or a helper deep inside one) to answer now."""

    def __init__(self, response):
        super().__init__(response.status)
        self.response = response


class Request:
    def __init__(self, cloud, service, method, path, query, headers, body,
                 host):
        self.cloud = cloud
        self.service = service
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.host = host
        self.arrived = time.monotonic()     # before waiting for the lock
        # Throttle windows this request opened: they count from when the
        # answer has left (Handler), which the client cannot see sooner.
        self.new_windows = []
        self.match = None
        self.tenant = None          # Tenant the request acts on, if known
        self.client_id = None
        self.token = None
        self.request_id = str(uuid.uuid4())
        self.client_request_id = (headers.get("client-request-id")
                                  or self.request_id)
        self.batch_id = None        # its id, for an inner request of $batch
        self.units = 0              # resource units the limits charged
        # Query options: "$select" and "select" are the same option.
        self.params = {}
        for key, value in urllib.parse.parse_qsl(query,
                                                 keep_blank_values=True):
            self.params[key.lower().lstrip("$")] = value

    def group(self, n):
        return urllib.parse.unquote(self.match.group(n))

    def json_body(self):
        try:
            return json.loads(self.body.decode("utf-8")) if self.body else None
        except (UnicodeDecodeError, ValueError):
            raise Reply(bad_body(self)) from None

    def form(self):
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))


ROUTES = {"login": [], "graph": [], "exchange": [], "admin": []}


def route(service, method, pattern):
    """Register fn(req) -> Response for METHOD on paths matching pattern."""
    def register(fn):
        ROUTES[service].append((method, re.compile(pattern), fn))
        return fn
    return register


def bearer(req):
    auth = (req.headers.get("Authorization") or "").strip()
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "bearer":
        return auth and "\0"       # non-empty but not a bearer token
    return value.strip()


def bad_body(req):
    if req.service == "graph":
        return graph_error(req, 400, "BadRequest",
                           "Unable to read JSON request payload. Please "
                           "ensure Content-Type header is set and payload "
                           "is of valid JSON format.")
    if req.service == "exchange":
        return exo_error(400, "BadRequest", "Ex4A1B2C",
                         "System.ArgumentException",
                         "The request body is not valid JSON.")
    return admin_error(400, "body is not valid JSON")


def graph_date():
    return utcnow().strftime("%Y-%m-%dT%H:%M:%S")


def graph_error(req, status, code, message, headers=None):
    """Graph error body: {"error": {"code", "message", "innerError":
    {"date", "request-id", "client-request-id"}}} (errors.md, fixtures)."""
    body = {"error": {"code": code, "message": message, "innerError": {
        "date": graph_date(), "request-id": req.request_id,
        "client-request-id": req.client_request_id}}}
    return Response(status, body, headers)


def graph_fail(req, status, code, message, headers=None):
    raise Reply(graph_error(req, status, code, message, headers))


def graph_throttled(req, seconds):
    """429 TooManyRequests in the documented shape
    (error-429-throttled.json) with Retry-After."""
    body = {"error": {
        "code": "TooManyRequests",
        "innerError": {"code": "429", "date": graph_date(),
                       "message": "Please retry after",
                       "request-id": req.request_id, "status": "429"},
        "message": "Please retry again later."}}
    return Response(429, body, {"Retry-After": str(seconds)})


def aad_error_response(req, status, error, code, text):
    """Identity platform error body (reference-error-codes.md sample and
    token-error-invalid-scope.json)."""
    trace = str(uuid.uuid4())
    corr = req.headers.get("client-request-id") or str(uuid.uuid4())
    stamp = utcnow().strftime("%Y-%m-%d %H:%M:%SZ")
    body = {
        "error": error,
        "error_description": (f"AADSTS{code}: {text}\r\nTrace ID: {trace}"
                              f"\r\nCorrelation ID: {corr}\r\nTimestamp: "
                              f"{stamp}"),
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    return Response(status, body, AAD_HEADERS)


def aad_fail(req, status, error, code, text):
    raise Reply(aad_error_response(req, status, error, code, text))


def exo_error(status, code, err_id, exc_type, text):
    """Exchange admin API error, as captured from the real service:
    details[0].message is "id|exception type|text"; note the lower-case
    "innererror" there (unlike Graph's "innerError")."""
    body = {"error": {
        "code": code,
        "message": "Error executing cmdlet",
        "details": [{"code": "Client", "target": "",
                     "message": f"{err_id}|{exc_type}|{text}"}],
        "innererror": {
            "message": "Error executing cmdlet",
            "type": ("Microsoft.Exchange.Admin.OData.Core."
                     "ODataServiceException"),
        },
    }}
    return Response(status, body)


def internal_error():
    """The answer to a request whose handler raised an unexpected
    exception (a bug here must not kill the listener): its traceback on
    stderr, and a 500.  Call it from the except block."""
    traceback.print_exc(file=sys.stderr)
    return Response(500, {"error": {
        "code": "InternalServerError",
        "message": "fakecloud: unhandled exception"}})


def admin_error(status, message):
    return Response(status, {"error": message})


def admin_fail(status, message):
    raise Reply(admin_error(status, message))
