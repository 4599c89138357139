"""The naive approach, for comparison: what a first script does.

One request after another on one kept-alive connection: for every person
in scope, an invitation and then one PATCH with the attributes (through
beta, for showInAddressList), no batching, no pacing; a 429 or 503 is
waited out for its Retry-After and the request sent again. It does the
same work as galbridge's first round of a guest link into an empty target
(the same people, the same attributes), so the two can be compared on the
same fakecloud in the same sitting. naive_update_round() is its later
rounds: everything listed again (no delta), one PATCH per difference.
"""
import time
import urllib.parse

ATTRS = ("givenName", "surname", "jobTitle", "department", "companyName",
         "officeLocation", "mobilePhone", "city", "country")


def _send(cloud, counts, method, url, token, body=None):
    while True:
        counts["requests"] += 1
        reply = cloud.request(method, url,
                              headers={"Authorization": "Bearer " + token},
                              json_body=body)
        if reply.status in (429, 503):
            counts["throttled"] += 1
            wait = reply.headers.get("Retry-After") or "1"
            time.sleep(float(wait))
            continue
        return reply


def _patch(cloud, counts, token, version, user, props):
    """PATCH target user `user` through Graph `version`, counted as a
    write; raises unless it answers 204."""
    reply = _send(cloud, counts, "PATCH",
                  cloud.graph_url + "/" + version + "/users/" +
                  urllib.parse.quote(user), token, props)
    counts["writes"] += 1
    if reply.status != 204:
        raise RuntimeError("patch: %d %s" % (reply.status,
                                             reply.body[:200]))


def _source_users(cloud, token, counts):
    url = (cloud.graph_url + "/v1.0/users?$top=999&$select=id,displayName,"
           "mail,userType,accountEnabled," + ",".join(ATTRS))
    users = []
    while url:
        reply = _send(cloud, counts, "GET", url, token)
        if reply.status != 200:
            raise RuntimeError("listing users: %d" % reply.status)
        body = reply.json()
        users.extend(body["value"])
        url = body.get("@odata.nextLink")
    return users


def _counts():
    return {"requests": 0, "throttled": 0, "writes": 0}


def _tokens(env, counts):
    """Tokens for contoso (read) and fabrikam (write): two requests."""
    tokens = [env.cloud.access_token(t["id"], t["client_id"], t["secret"])
              for t in (env.tenants["contoso"], env.tenants["fabrikam"])]
    counts["requests"] += 2
    return tokens


def naive_round(env, in_scope):
    """Copy the people whose ids are in `in_scope` from contoso into
    fabrikam as guests. Returns a dict of figures."""
    cloud, counts, t0 = env.cloud, _counts(), time.monotonic()
    token_src, token_dst = _tokens(env, counts)
    people = [u for u in _source_users(cloud, token_src, counts)
              if u["id"] in in_scope]
    for person in people:
        invite = {"invitedUserEmailAddress": person["mail"],
                  "invitedUserDisplayName": person["displayName"],
                  "inviteRedirectUrl": "https://myapps.microsoft.com",
                  "sendInvitationMessage": False}
        reply = _send(cloud, counts, "POST",
                      cloud.graph_url + "/v1.0/invitations", token_dst,
                      invite)
        counts["writes"] += 1
        if reply.status != 201:
            raise RuntimeError("invitation: %d %s" % (reply.status,
                                                      reply.body[:200]))
        guest = reply.json()["invitedUser"]["id"]
        patch = {k: person.get(k) for k in ATTRS if person.get(k)}
        patch["onPremisesExtensionAttributes"] = {
            "extensionAttribute15": "naive:" + person["id"]}
        patch["showInAddressList"] = True
        _patch(cloud, counts, token_dst, "beta", guest, patch)
    counts["seconds"] = time.monotonic() - t0
    counts["objects"] = len(people)
    return counts


def _target_guests(cloud, token, counts, prefix):
    """{source id: guest} of the target's users anchored with `prefix`."""
    url = (cloud.graph_url + "/v1.0/users?$top=999&$select=id,"
           "onPremisesExtensionAttributes," + ",".join(ATTRS))
    guests = {}
    while url:
        reply = _send(cloud, counts, "GET", url, token)
        if reply.status != 200:
            raise RuntimeError("listing guests: %d" % reply.status)
        body = reply.json()
        for u in body["value"]:
            ext = u.get("onPremisesExtensionAttributes") or {}
            anchor = ext.get("extensionAttribute15") or ""
            if anchor.startswith(prefix):
                guests[anchor[len(prefix):].split(":")[0]] = u
        url = body.get("@odata.nextLink")
    return guests


def naive_update_round(env, in_scope):
    """A later round of the naive script over a target galbridge filled:
    both tenants listed in full (no delta), then one PATCH after another
    for each person whose attributes differ. Returns a dict of figures."""
    cloud, counts, t0 = env.cloud, _counts(), time.monotonic()
    src = env.tenants["contoso"]
    token_src, token_dst = _tokens(env, counts)
    people = [u for u in _source_users(cloud, token_src, counts)
              if u["id"] in in_scope]
    guests = _target_guests(cloud, token_dst, counts,
                            "galbridge:%s:" % src["id"])
    for person in people:
        guest = guests.get(person["id"])
        if guest is None:
            continue
        patch = {k: person.get(k) for k in ATTRS
                 if person.get(k) and person.get(k) != guest.get(k)}
        if not patch:
            continue
        _patch(cloud, counts, token_dst, "v1.0", guest["id"], patch)
    counts["seconds"] = time.monotonic() - t0
    counts["objects"] = len(people)
    return counts
