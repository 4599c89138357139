"""galbridge explain LINK WHO: why one person is or is not in the target's
address list, read from the state and the tenants without writing either;
and `plan` and `explain` beside a running daemon."""
import json
import os
import re

import client as fc
from test_daemon import Daemon

LINK = "contoso-to-fabrikam"


def explain(env, who, *args):
    return env.run("explain", LINK, who, *args)


def explain_json(env, who):
    r = explain(env, who, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def src_user(env, **props):
    base = {"displayName": "Person", "givenName": "P", "surname": "Q",
            "userType": "Member", "accountEnabled": True}
    base.update(props)
    return env.cloud.create_user(env.source["id"], base)


def state_bytes(env):
    """The state database and its WAL as bytes: explain writes neither
    (SQLite may leave an empty WAL file beside a database it reads)."""
    out = {}
    for name in ("state.db", "state.db-wal"):
        path = os.path.join(env.state_dir, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                out[name] = f.read()
    if not out.get("state.db-wal"):
        out.pop("state.db-wal", None)
    return out


def test_copy_in_scope_with_its_mapped_values(make_env):
    env = make_env(users=10)
    assert env.run("sync").returncode == 0
    person = sorted(env.in_scope().values(), key=lambda u: u["id"])[0]
    guest = env.copies()[person["id"]][0]
    before = state_bytes(env)
    writes = env.writes()

    doc = explain_json(env, person["mail"].upper())
    assert doc["link"] == LINK
    assert doc["who"] == person["mail"].upper()
    assert doc["source"]["id"] == person["id"]
    assert doc["source"]["tenant"] == "contoso"
    assert doc["source"]["tenant_id"] == env.source["id"]
    assert doc["source"]["mail"] == person["mail"]
    assert doc["source"]["userPrincipalName"] == \
        person["userPrincipalName"]
    assert doc["source"]["state"] == "present"
    assert doc["source"]["refused"] is None
    assert doc["scope"]["in_scope"] is True
    assert doc["scope"]["present"] is True
    assert doc["scope"]["default"] == {"result": True, "why": None}
    assert doc["scope"]["scope_group"] is None
    assert doc["scope"]["scope_filter"] is None
    assert doc["mapped"]["displayName"] == person["displayName"]
    assert doc["mapped"]["mail"] == person["mail"]
    assert doc["mapped"]["jobTitle"] == person["jobTitle"]
    assert doc["target"]["id"] == guest["id"]
    assert doc["target"]["kind"] == "guest"
    assert doc["target"]["state"] == "active"
    assert doc["target"]["in_target"] == "present"
    assert doc["target"]["applied"]["displayName"] == guest["displayName"]
    assert doc["target"]["observed"]["userType"] == "Guest"
    assert doc["target"]["exchange_visible"] in (True, False)
    assert doc["target_tenant"] == "fabrikam"
    assert doc["outbox"] == []
    assert doc["conflicts"] == []
    assert doc["migration"] is None
    assert doc["next"] == {"action": "none", "held": False, "queued": False,
                           "reason": "up to date", "changes": None,
                           "target_id": guest["id"]}

    # By the copy's id in the target, in text: the same person.
    r = explain(env, guest["id"])
    assert r.returncode == 0, r.stderr
    assert "source:    %s in contoso, present" % person["id"] in r.stdout
    assert "scope:     in scope" in r.stdout
    assert '  displayName: "%s"' % person["displayName"] in r.stdout
    assert "target:    guest %s, state active" % guest["id"] in r.stdout
    assert "next round: none: up to date" in r.stdout

    # A source change: the next round's update, attribute by attribute.
    env.cloud.patch_user(env.source["id"], person["id"],
                         {"jobTitle": "Chief Explainer"})
    doc = explain_json(env, person["id"])
    assert doc["next"]["action"] == "update"
    assert doc["next"]["changes"] == {"jobTitle": "Chief Explainer"}
    assert doc["mapped"]["jobTitle"] == "Chief Explainer"
    # Nothing was written to a tenant or to the state.
    assert env.writes() == writes
    assert state_bytes(env) == before
    assert env.copies()[person["id"]][0]["jobTitle"] == person["jobTitle"]


def test_out_of_scope_by_group(make_env):
    env = make_env(users=10)
    people = sorted(env.in_scope().values(), key=lambda u: u["id"])
    group = env.cloud.create_group(env.source["id"], {
        "displayName": "Synced", "members": [u["id"] for u in people[:3]]})
    env.write_config(link_extra="scope_group = %s\n" % group["id"])
    assert env.run("sync").returncode == 0
    inside, outside = people[0], people[5]

    doc = explain_json(env, inside["id"])
    assert doc["scope"]["in_scope"] is True
    assert doc["scope"]["scope_group"] == {"id": group["id"].lower(),
                                           "member": True}
    assert doc["target"]["state"] == "active"

    doc = explain_json(env, outside["userPrincipalName"])
    assert doc["source"]["id"] == outside["id"]
    assert doc["scope"]["in_scope"] is False
    assert doc["scope"]["default"]["result"] is True
    assert doc["scope"]["scope_group"] == {"id": group["id"].lower(),
                                           "member": False}
    assert doc["scope"]["why"] == "not a member of scope_group"
    assert doc["target"] is None
    assert doc["next"]["action"] == "none"
    assert doc["next"]["reason"] == "not a member of scope_group"
    r = explain(env, outside["id"])
    assert r.returncode == 0, r.stderr
    assert "scope:     not in scope: not a member of scope_group" in r.stdout
    assert "  scope_group            not a member (group %s)" % \
        group["id"].lower() in r.stdout
    assert "target:    none (no copy in fabrikam)" in r.stdout

    # Added to the group: the next round would create the copy.
    env.cloud.patch_group(env.source["id"], group["id"],
                          add=[outside["id"]])
    doc = explain_json(env, outside["id"])
    assert doc["scope"]["in_scope"] is True
    assert doc["next"]["action"] == "create"


def test_out_of_scope_by_filter_clause_by_clause(make_env):
    env = make_env(users=10)
    people = sorted(env.in_scope().values(), key=lambda u: u["id"])
    dept = people[0]["department"]
    env.write_config(link_extra="scope_filter = department eq '%s' and "
                     "not startsWith(jobTitle, 'Intern')\n" % dept)
    assert env.run("sync").returncode == 0
    other = next(u for u in people if u["department"] != dept)
    doc = explain_json(env, other["mail"])
    f = doc["scope"]["scope_filter"]
    assert f["filter"] == ("department eq '%s' and not "
                           "startsWith(jobTitle, 'Intern')" % dept)
    assert f["result"] is False
    assert f["clauses"] == [
        {"clause": "department eq '%s'" % dept, "result": False},
        {"clause": "startsWith(jobTitle, 'Intern')",
         "result": other["jobTitle"].lower().startswith("intern")}]
    assert doc["scope"]["in_scope"] is False
    assert doc["scope"]["why"] == "scope_filter does not match"
    assert doc["target"] is None
    r = explain(env, other["mail"])
    assert "  scope_filter           no match: department eq" in r.stdout
    assert "    no    department eq '%s'" % dept in r.stdout

    same = explain_json(env, people[0]["id"])
    assert same["scope"]["scope_filter"]["clauses"][0]["result"] is True
    assert same["scope"]["in_scope"] is \
        (not people[0]["jobTitle"].lower().startswith("intern"))


def test_failed_op_with_its_last_error(make_env):
    env = make_env(users=10)
    assert env.run("sync").returncode == 0
    sid = sorted(env.copies())[0]
    guest = env.copies()[sid][0]
    env.cloud.set_knobs(fail_patch_for=[guest["id"]])
    env.cloud.patch_user(env.source["id"], sid, {"jobTitle": "Refused"})
    assert env.run("sync").returncode == 1
    doc = explain_json(env, sid)
    assert len(doc["outbox"]) == 1
    op = doc["outbox"][0]
    assert op["kind"] == "update"
    assert op["state"] == "failed"
    assert op["attempts"] >= 1
    assert "Authorization_RequestDenied" in op["last_error"]
    assert op["next_try"] is not None
    assert doc["next"]["queued"] is True
    assert doc["next"]["action"] == "none"
    assert doc["next"]["reason"].startswith(
        "its update failed for good and waits for its next try (or "
        "resync): ")
    assert "Authorization_RequestDenied" in doc["next"]["reason"]
    r = explain(env, sid)
    assert re.search(r"outbox:    #\d+ update failed, \d+ attempts, last "
                     r"error: .*Authorization_RequestDenied", r.stdout), \
        r.stdout


def test_conflict_and_ambiguous(make_env):
    env = make_env(users=5)
    a = src_user(env, displayName="Ann Lower", mail="ann.same@contoso.com",
                 userPrincipalName="ann.lower@contoso.com")
    b = src_user(env, displayName="Ann Upper", mail="Ann.Same@Contoso.com",
                 userPrincipalName="ann.upper@contoso.com")
    assert env.run("sync").returncode == 1

    # Both hold the address: WHO by it is ambiguous, both are listed.
    r = explain(env, "ann.same@contoso.com")
    assert r.returncode == 1
    assert r.stdout == ""
    assert "2 people in link %s match" % LINK in r.stderr
    assert a["id"] in r.stderr and b["id"] in r.stderr

    doc = explain_json(env, "ANN.LOWER@contoso.com")
    assert doc["source"]["id"] == a["id"]
    assert doc["scope"]["in_scope"] is True
    assert doc["target"] is None
    assert doc["conflicts"] == [{"claim": "addr:ann.same@contoso.com",
                                 "link": LINK, "source_id": b["id"]}]
    assert doc["next"]["action"] == "fail"
    assert b["id"] in doc["next"]["reason"]
    assert doc["next"]["reason"].startswith("conflict: address")
    assert [o["kind"] for o in doc["outbox"]] == ["fail"]
    r = explain(env, a["id"])
    assert ("conflict:  addr:ann.same@contoso.com also claimed by link %s, "
            "source object %s" % (LINK, b["id"])) in r.stdout
    assert "next round: fail: conflict: address" in r.stdout


def test_nobody_and_usage(make_env):
    env = make_env(users=5)
    assert env.run("sync").returncode == 0
    r = explain(env, "nobody@nowhere.example")
    assert r.returncode == 1
    assert r.stdout == ""
    assert "nobody in link %s matches 'nobody@nowhere.example'" % LINK \
        in r.stderr
    r = env.run("explain", "no-such-link", "x")
    assert r.returncode == 2
    assert "no link named 'no-such-link'" in r.stderr
    r = env.run("explain", LINK)
    assert r.returncode == 2
    assert "explain needs a second argument" in r.stderr
    r = env.run("explain", LINK, "a", "b")
    assert r.returncode == 2
    assert "unexpected argument 'b'" in r.stderr


def test_plan_and_explain_while_the_daemon_runs(make_env):
    env = make_env(users=20)
    d = Daemon(env)
    try:
        d.wait_key("READY=1")
        fc.wait_for(lambda: set(env.copies()) == set(env.in_scope()),
                    timeout=60, what="first round")
        rounds = len(re.findall(r"link round done link=", d.log()))
        person = sorted(env.in_scope().values(), key=lambda u: u["id"])[0]
        env.cloud.patch_user(env.source["id"], person["id"],
                             {"department": "Beside The Daemon"})
        for _ in range(3):
            r = env.run("plan", "--json")
            assert r.returncode in (0, 1, 3), r.stderr
            plan = json.loads(r.stdout)
            assert plan["links"][0]["name"] == LINK
            r = explain(env, person["id"], "--json")
            assert r.returncode == 0, r.stderr
            doc = json.loads(r.stdout)
            assert doc["source"]["id"] == person["id"]
            assert doc["mapped"]["department"] == "Beside The Daemon"
            assert doc["target"]["id"] == \
                env.copies()[person["id"]][0]["id"]
        # The daemon was not disturbed: later rounds finish and apply
        # the change, and nothing in its log says the state was busy.
        fc.wait_for(lambda: env.copies()[person["id"]][0]
                    .get("department") == "Beside The Daemon",
                    timeout=60, what="change applied")
        fc.wait_for(lambda: len(re.findall(r"link round done link=",
                                           d.log())) >= rounds + 2,
                    timeout=60, what="two more rounds")
        assert "SQLITE_BUSY" not in d.log()
        assert "database is locked" not in d.log()
        assert d.proc.poll() is None
        doc = explain_json(env, person["id"])
        assert doc["next"]["action"] == "none"
    finally:
        d.stop()
    assert d.proc.returncode == 0
