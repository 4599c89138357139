"""login: the identity platform's token endpoint,
POST /{tenant}/oauth2/v2.0/token (client credentials).

A client proves itself with a secret (in the form or as HTTP Basic) or
with a client assertion JWT signed by one of its app's certificates,
checked as certificate-credentials.md describes; the scope names one
resource, whose kind (graph or exchange) the access token carries.
Errors are AADSTS bodies with the codes and texts the service sends.
"""

import base64
import datetime
import json
import time
import urllib.parse

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .wire import AAD_HEADERS, Response, aad_fail, b64url_decode, route


CLOCK_SKEW = 300          # seconds allowed on client assertion nbf/exp
ASSERTION_MAX_LIFETIME = 86400

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# Resource (app ID URI) -> service kind, for every cloud in MICROSOFT.md.
# outlook.office.com is the host variant seen in public Exchange captures.
RESOURCES = {
    "https://graph.microsoft.com": "graph",
    "https://graph.microsoft.us": "graph",
    "https://dod-graph.microsoft.us": "graph",
    "https://microsoftgraph.chinacloudapi.cn": "graph",
    "https://outlook.office365.com": "exchange",
    "https://outlook.office.com": "exchange",
    "https://outlook.office365.us": "exchange",
    "https://webmail.apps.mil": "exchange",
    "https://partner.outlook.cn": "exchange",
}


def parse_scope(req, scope):
    """Returns (kind, resource) for a valid client-credentials scope."""
    resources = set()
    for item in scope.split():
        if not item.lower().endswith("/.default"):
            aad_fail(req, 400, "invalid_scope", 1002012,
                     f"The provided value for scope {item} is not valid. "
                     f"Client credential flows must have a scope value with "
                     f"/.default suffixed to the resource identifier "
                     f"(application ID URI).")
        resource = item[:-len("/.default")].lower()
        if resource not in RESOURCES:
            aad_fail(req, 400, "invalid_scope", 70011,
                     f"The provided value for the input parameter 'scope' is "
                     f"not valid. The scope {scope} is not valid.")
        resources.add(resource)
    if not resources:
        aad_fail(req, 400, "invalid_request", 900144,
                 "The request body must contain the following parameter: "
                 "'scope'.")
    if len(resources) > 1:
        aad_fail(req, 400, "invalid_scope", 700022,
                 f"The provided value for the input parameter scope is not "
                 f"valid because it contains more than one resource. Scope "
                 f"{scope} is not valid.")
    resource = resources.pop()
    return RESOURCES[resource], resource


def assertion_time(ts):
    return (datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%S.0000000Z"))


def verify_assertion(req, app, assertion, token_url):
    """Checks a client assertion JWT as the identity platform does
    (certificate-credentials.md); raises Reply on any failure."""
    def malformed():
        aad_fail(req, 400, "invalid_request", 50027,
                 "JWT token is invalid or malformed.")

    parts = assertion.split(".")
    if len(parts) != 3:
        malformed()
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError:
        malformed()
    if not isinstance(header, dict) or not isinstance(claims, dict):
        malformed()

    alg = header.get("alg")
    if alg == "RS256":
        thumb_name, digest = "x5t", "sha1"
    elif alg == "PS256":
        thumb_name, digest = "x5t#S256", "sha256"
    else:
        malformed()
    try:
        thumb = b64url_decode(header.get(thumb_name))
    except ValueError:
        malformed()
    thumb_hex = thumb.hex().upper()
    entry = next((c for c in app.certs if c[digest] == thumb), None)
    portal = (f"Please visit the Azure Portal, Graph Explorer or directly "
              f"use MS Graph to see configured keys for app Id "
              f"'{app.client_id}'.")
    if entry is None:
        aad_fail(req, 401, "invalid_client", 700027,
                 f"Client assertion contains an invalid signature. [Reason -"
                 f" The key was not found., Thumbprint of key used by client:"
                 f" '{thumb_hex}', {portal}]")
    cert = entry["cert"]
    public_key = cert.public_key()
    signed = (parts[0] + "." + parts[1]).encode("ascii")
    try:
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise InvalidSignature()
        if alg == "RS256":
            public_key.verify(signature, signed, padding.PKCS1v15(),
                              hashes.SHA256())
        else:
            public_key.verify(signature, signed,
                              padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                          salt_length=32),
                              hashes.SHA256())
    except InvalidSignature:
        start = cert.not_valid_before.strftime("%m/%d/%Y %H:%M:%S")
        end = cert.not_valid_after.strftime("%m/%d/%Y %H:%M:%S")
        aad_fail(req, 401, "invalid_client", 700027,
                 f"Client assertion failed signature validation. [Reason - "
                 f"Key was found, but use of the key to verify the signature "
                 f"failed., Thumbprint of key used by client: '{thumb_hex}', "
                 f"Found key 'Start={start}, End={end}', {portal}]")

    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if not isinstance(aud, str) or aud.lower() != token_url.lower():
        aad_fail(req, 401, "invalid_client", 50012,
                 "Client assertion audience claim does not match Realm "
                 "issuer.")
    iss, sub = claims.get("iss"), claims.get("sub")
    if not isinstance(iss, str) or not isinstance(sub, str) or \
            iss.lower() != sub.lower():
        aad_fail(req, 401, "invalid_client", 50048,
                 "Subject mismatches Issuer claim in the client assertion.")
    if iss.lower() != app.client_id:
        aad_fail(req, 401, "invalid_client", 700021,
                 "Client assertion application identifier doesn't match "
                 "'client_id' parameter. Review the documentation at "
                 "https://learn.microsoft.com/entra/identity-platform/"
                 "certificate-credentials .")
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        malformed()
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, (int, float)) or isinstance(exp, bool) or \
            not isinstance(nbf, (int, float)) or isinstance(nbf, bool):
        malformed()
    now = time.time()
    if exp <= now - CLOCK_SKEW or nbf > now + CLOCK_SKEW or \
            exp > now + ASSERTION_MAX_LIFETIME:
        aad_fail(req, 401, "invalid_client", 700024,
                 f"Client assertion is not within its valid time range. "
                 f"Current time: {assertion_time(now)}, assertion valid from "
                 f"{assertion_time(nbf)}, expiry time of assertion "
                 f"{assertion_time(exp)}. Review the documentation at "
                 f"https://learn.microsoft.com/entra/identity-platform/"
                 f"certificate-credentials .")


@route("login", "POST", r"^/([^/]+)/oauth2/v2\.0/token$")
def login_token(req):
    cloud = req.cloud
    segment = req.group(1)
    tenant = cloud.find_tenant(segment)
    if tenant is None:
        aad_fail(req, 400, "invalid_request", 90002,
                 f"Tenant '{segment}' not found. Check to make sure you have "
                 f"the correct tenant ID and are signing into the correct "
                 f"cloud. Check with your subscription administrator, this "
                 f"may happen if there are no active subscriptions for the "
                 f"tenant.")
    req.tenant = tenant
    form = req.form()

    # RFC 6749 2.3.1: the secret may come as HTTP Basic instead.
    basic_id = basic_secret = None
    auth = req.headers.get("Authorization") or ""
    if auth[:6].lower() == "basic ":
        try:
            pair = base64.b64decode(auth[6:].strip()).decode("utf-8")
            basic_id, _, basic_secret = pair.partition(":")
            basic_id = urllib.parse.unquote_plus(basic_id)
            basic_secret = urllib.parse.unquote_plus(basic_secret)
        except (ValueError, UnicodeDecodeError):
            pass

    def missing(name):
        aad_fail(req, 400, "invalid_request", 900144,
                 f"The request body must contain the following parameter: "
                 f"'{name}'.")

    client_id = (form.get("client_id") or basic_id or "").strip().lower()
    req.client_id = client_id or None
    grant = form.get("grant_type")
    if not grant:
        missing("grant_type")
    if grant != "client_credentials":
        aad_fail(req, 400, "unsupported_grant_type", 70003,
                 f"The app requested an unsupported grant type '{grant}'.")
    if not client_id:
        missing("client_id")
    if not form.get("scope"):
        missing("scope")
    app = tenant.apps.get(client_id)
    if app is None:
        aad_fail(req, 400, "unauthorized_client", 700016,
                 f"Application with identifier '{client_id}' was not found "
                 f"in the directory '{tenant.domain}'. This can happen if the "
                 f"application has not been installed by the administrator "
                 f"of the tenant or consented to by any user in the tenant. "
                 f"You may have sent your authentication request to the "
                 f"wrong tenant.")
    kind, resource = parse_scope(req, form["scope"])

    assertion = form.get("client_assertion")
    secret = form.get("client_secret", basic_secret)
    if assertion is not None:
        if form.get("client_assertion_type") != JWT_BEARER:
            aad_fail(req, 400, "invalid_request", 90014,
                     "The required field 'client_assertion_type' is missing "
                     "from the credential. Ensure that you have all the "
                     "necessary parameters for the login request.")
        # aud must be the token URL the client actually called.
        token_url = (f"https://{req.host}/{req.match.group(1)}"
                     f"/oauth2/v2.0/token")
        verify_assertion(req, app, assertion, token_url)
    elif secret is not None:
        if secret not in app.secrets:
            aad_fail(req, 401, "invalid_client", 7000215,
                     f"Invalid client secret provided. Ensure the secret "
                     f"being sent in the request is the client secret value, "
                     f"not the client secret ID, for a secret added to app "
                     f"'{client_id}'.")
    else:
        aad_fail(req, 401, "invalid_client", 7000218,
                 "The request body must contain the following parameter: "
                 "'client_assertion' or 'client_secret'.")

    access, lifetime = cloud.issue_token(tenant, client_id, kind, resource)
    return Response(200, {"token_type": "Bearer", "expires_in": lifetime,
                          "ext_expires_in": lifetime,
                          "access_token": access}, AAD_HEADERS)
