"""galbridge sync --link LINK --user WHO: one person now, read from the
source with GET /users/{id}, planned and written through the same outbox
and guards as a round, nobody else touched."""
import re

import client as fc
from test_daemon import Daemon

LINK = "contoso-to-fabrikam"


def sync_user(env, who):
    return env.run("sync", "--link", LINK, "--user", who)


def src_user(env, **props):
    base = {"displayName": "Person", "givenName": "P", "surname": "Q",
            "userType": "Member", "accountEnabled": True}
    base.update(props)
    return env.cloud.create_user(env.source["id"], base)


def user_gets(env, since=None):
    """GET /users/{id} requests made to the source (contoso)."""
    return [e for e in env.cloud.log(service="graph", since=since)
            if e["method"] == "GET"
            and re.match(r"^/v1\.0/users/[^/?]+$", e["path"])
            and e["tenant"] in (None, env.source["id"])]


def test_one_fixed_attribute_now_and_nobody_else(make_env):
    env = make_env(users=10)
    assert env.run("sync").returncode == 0
    people = sorted(env.in_scope().values(), key=lambda u: u["id"])
    fixed, other = people[0], people[1]
    env.cloud.patch_user(env.source["id"], fixed["id"],
                         {"jobTitle": "Fixed By Admin"})
    env.cloud.patch_user(env.source["id"], other["id"],
                         {"jobTitle": "Changed Too"})
    writes = env.writes()
    guest = env.copies()[fixed["id"]][0]
    env.cloud.clear_log()

    r = sync_user(env, fixed["mail"].upper())
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        "link %s (contoso -> fabrikam, guest):\n"
        "  person   %s <%s> (source %s)\n"
        "  update   %s (target %s)\n"
        "             jobTitle: \"%s\" -> \"Fixed By Admin\"\n"
        "  result   done; target %s (active)\n"
        % (LINK, fixed["displayName"], fixed["mail"], fixed["id"],
           fixed["displayName"], guest["id"], fixed["jobTitle"],
           guest["id"]))
    # One GET of that user with the link's $select; no delta read of it.
    gets = user_gets(env)
    assert len(gets) == 1 and gets[0]["path"].endswith(fixed["id"])
    assert "$select=" in gets[0]["query"].replace("%24", "$")
    assert not env.delta_requests()
    assert env.copies()[fixed["id"]][0]["jobTitle"] == "Fixed By Admin"
    assert env.copies()[other["id"]][0]["jobTitle"] == other["jobTitle"]
    assert env.writes()["patches"] == writes["patches"] + 1

    # Again: nothing to do. The next round still takes the other change.
    r = sync_user(env, fixed["id"])
    assert r.returncode == 0, r.stderr
    assert "  result   nothing to do; target %s (active)" % guest["id"] \
        in r.stdout
    assert env.writes()["patches"] == writes["patches"] + 1
    assert env.run("sync").returncode == 0
    assert env.copies()[other["id"]][0]["jobTitle"] == "Changed Too"
    assert env.writes()["patches"] == writes["patches"] + 2


def test_a_new_person_by_upn_is_created(make_env):
    env = make_env(users=5)
    assert env.run("sync").returncode == 0
    new = src_user(env, displayName="New Hire", mail="new.hire@contoso.com",
                   userPrincipalName="nhire@contoso.onmicrosoft.com")
    r = sync_user(env, "nhire@contoso.onmicrosoft.com")
    assert r.returncode == 0, r.stderr
    assert "  create   New Hire <new.hire@contoso.com> (source %s)" % \
        new["id"] in r.stdout
    copies = env.copies()
    assert len(copies[new["id"]]) == 1
    assert copies[new["id"]][0]["mail"] == "new.hire@contoso.com"
    assert "  result   done; target %s (active)" % \
        copies[new["id"]][0]["id"] in r.stdout


def test_guards_hold_for_one_person(make_env):
    env = make_env(users=5)
    assert env.run("sync").returncode == 0
    a = src_user(env, displayName="Ann Lower", mail="ann.same@contoso.com",
                 userPrincipalName="ann.lower@contoso.com")
    b = src_user(env, displayName="Ann Upper", mail="Ann.Same@Contoso.com",
                 userPrincipalName="ann.upper@contoso.com")
    # The other Ann is known to the state: her claim stands in the way.
    assert env.run("sync").returncode == 1
    writes = env.writes()
    r = sync_user(env, a["id"])
    assert r.returncode == 1
    assert "  result   refused: conflict: address ann.same@contoso.com is " \
        "also the address of source object %s" % b["id"] in r.stdout
    assert a["id"] not in env.copies()
    assert env.writes() == writes

    # An address two users hold names nobody.
    r = sync_user(env, "ann.same@contoso.com")
    assert r.returncode == 1
    assert "several users of source contoso hold the address" in r.stderr

    # Out of scope and never copied: nothing to do, and why.
    off = src_user(env, displayName="Off", mail="off@contoso.com",
                   accountEnabled=False)
    r = sync_user(env, off["id"])
    assert r.returncode == 0, r.stderr
    assert "  result   nothing to do: disabled" in r.stdout
    assert off["id"] not in env.copies()


def test_a_failed_write_is_said_with_its_error(make_env):
    env = make_env(users=5)
    assert env.run("sync").returncode == 0
    sid = sorted(env.copies())[0]
    guest = env.copies()[sid][0]
    env.cloud.set_knobs(fail_patch_for=[guest["id"]])
    env.cloud.patch_user(env.source["id"], sid, {"jobTitle": "Refused"})
    r = sync_user(env, sid)
    assert r.returncode == 1
    assert re.search(r"  result   update failed for good \(tried again "
                     r"after its backoff, or at once after 'galbridge resync "
                     r"%s'\): .*Authorization_RequestDenied" % LINK,
                     r.stdout), r.stdout


def test_nobody_usage_and_a_running_daemon(make_env):
    env = make_env(users=5)
    assert env.run("sync").returncode == 0
    r = sync_user(env, "nobody@contoso.com")
    assert r.returncode == 1
    assert "no such user (Request_ResourceNotFound); nothing was changed" \
        in r.stderr
    assert "nothing done" in r.stdout
    r = env.run("sync", "--user", "x@contoso.com")
    assert r.returncode == 2
    assert "--user needs --link" in r.stderr
    r = env.run("sync", "--link", "nope", "--user", "x@contoso.com")
    assert r.returncode == 2
    assert "no link named 'nope'" in r.stderr

    person = sorted(env.in_scope().values(), key=lambda u: u["id"])[0]
    d = Daemon(env)
    try:
        d.wait_key("READY=1")
        fc.wait_for(lambda: "link round done" in d.log(), timeout=60,
                    what="a daemon round")
        r = sync_user(env, person["id"])
        assert r.returncode == 1
        assert "in use by another galbridge (pid %d)" % d.proc.pid \
            in r.stderr
        assert d.proc.poll() is None
    finally:
        d.stop()
    assert d.proc.returncode == 0
