"""Profile photos onto guest and mail user copies (issue 19, photos).

The real galbridge against fakecloud: a source person's photo lands on
their copy; an unchanged photo is neither read again ($value) nor sent
again, across a restart too; a changed one is sent again; a removed one
is deleted from the copy; one too large, or not the image it says it is,
fails alone while the others are copied; a 403 on writes is explained
once and tried again later; a contact link with photos = yes is a
configuration error.  Time passing (photo_interval) is simulated by
making the stored checks due.
"""

import json
import os
import signal
import sqlite3

import client as fc

PNG = b"\x89PNG\r\n\x1a\n" + b"png photo" * 20


def jpeg(n):
    return b"\xff\xd8\xff\xe0" + (b"photo of %d " % n) * 20


def photo_env(make_env, users=12, object_name="guest", extra=""):
    env = make_env(users=users)
    env.write_config(link_extra="photos = yes\nphoto_interval = 3600\n"
                     + extra)
    if object_name != "guest":
        text = open(env.conf).read().replace("object = guest",
                                             "object = " + object_name)
        with open(env.conf, "w") as f:
            f.write(text)
    return env


def sync(env):
    r = env.run("sync")
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def make_due(env):
    """photo_interval has passed for every copy."""
    db = sqlite3.connect(os.path.join(env.state_dir, "state.db"))
    try:
        db.execute("UPDATE photo SET next_check = 0")
        db.commit()
    finally:
        db.close()


def photo_requests(env, since, method=None, value=None):
    out = []
    for e in env.cloud.log(service="graph", since=since):
        if "/photo" not in e["path"]:
            continue
        if method is not None and e["method"] != method:
            continue
        if value is not None and e["path"].endswith("/$value") != value:
            continue
        out.append(e)
    return out


def last_seq(env):
    log = env.cloud.log()
    return log[-1]["seq"] if log else 0


def copy_of(env, sid):
    copies = env.copies().get(sid)
    assert copies and len(copies) == 1, sid
    return copies[0]


def target_photo(env, sid):
    return env.cloud.photo(env.tenants["fabrikam"]["id"],
                           copy_of(env, sid)["id"])


def check_copied(env, kind_name, make_env):
    src = env.source["id"]
    people = sorted(env.in_scope())
    assert len(people) >= 4
    with_photo = people[:3]
    for n, sid in enumerate(with_photo):
        env.cloud.set_photo(src, sid, jpeg(n))
    env.cloud.set_photo(src, people[3], PNG, "image/png")
    r = sync(env)
    for n, sid in enumerate(with_photo):
        got = target_photo(env, sid)
        assert got is not None, (kind_name, sid)
        assert got["bytes"] == jpeg(n)
        assert got["contentType"] == "image/jpeg"
    assert target_photo(env, people[3])["contentType"] == "image/png"
    # People without a photo get none.
    for sid in people[4:]:
        assert target_photo(env, sid) is None
    assert "photos checked" in r.stderr
    return people


def test_photos_copied_to_guest_copies(make_env):
    env = photo_env(make_env)
    check_copied(env, "guest", make_env)


def test_photos_copied_to_mail_user_copies(make_env):
    env = photo_env(make_env, object_name="mailuser")
    people = check_copied(env, "mailuser", make_env)
    # The copies are the Exchange mail users galbridge made.
    fab = env.tenants["fabrikam"]["id"]
    kinds = {r["ExternalDirectoryObjectId"]: r["RecipientTypeDetails"]
             for r in env.cloud.recipients(fab)}
    assert kinds[copy_of(env, people[0])["id"]] == "MailUser"


def test_unchanged_not_read_nor_sent_changed_sent_removed_deleted(make_env):
    env = photo_env(make_env)
    src = env.source["id"]
    people = sorted(env.in_scope())
    a, b, c = people[:3]
    for n, sid in enumerate((a, b, c)):
        env.cloud.set_photo(src, sid, jpeg(n))
    sync(env)
    first = {sid: target_photo(env, sid)["etag"] for sid in (a, b, c)}

    # Not due yet: no photo request at all.
    seq = last_seq(env)
    sync(env)
    assert photo_requests(env, seq) == []

    # Due, unchanged: metadata read for each copy, nothing else.
    make_due(env)
    seq = last_seq(env)
    sync(env)
    meta = photo_requests(env, seq, "GET", value=False)
    assert len(meta) == len(people)
    # 20 to a $batch: every metadata read was inside one.
    assert all("batch" in e for e in meta)
    batches = [e for e in env.cloud.log(service="graph", since=seq)
               if e["path"] == "/v1.0/$batch"]
    assert 1 <= len(batches) <= (len(people) + 19) // 20 + 1
    assert photo_requests(env, seq, "GET", value=True) == []
    assert photo_requests(env, seq, "PUT") == []
    assert {sid: target_photo(env, sid)["etag"]
            for sid in (a, b, c)} == first

    # Changed (b) and removed (c): b read and sent once, c deleted once.
    env.cloud.set_photo(src, b, jpeg(42))
    env.cloud.delete_photo(src, c)
    make_due(env)
    seq = last_seq(env)
    sync(env)
    values = photo_requests(env, seq, "GET", value=True)
    assert [e["path"] for e in values] == [f"/v1.0/users/{b}/photo/$value"]
    puts = photo_requests(env, seq, "PUT")
    assert [e["path"] for e in puts] == [
        "/v1.0/users/%s/photo/$value" % copy_of(env, b)["id"]]
    dels = photo_requests(env, seq, "DELETE")
    assert [e["path"] for e in dels] == [
        "/v1.0/users/%s/photo/$value" % copy_of(env, c)["id"]]
    assert target_photo(env, b)["bytes"] == jpeg(42)
    assert target_photo(env, c) is None
    assert target_photo(env, a)["etag"] == first[a]

    # The 1x1 answer of "no photo" is read as no photo too: c stays
    # without one, nothing is deleted again, a person who never had one
    # gets nothing.
    env.cloud.set_knobs(photo_absent="1x1")
    make_due(env)
    seq = last_seq(env)
    sync(env)
    assert photo_requests(env, seq, "DELETE") == []
    assert photo_requests(env, seq, "PUT") == []
    assert photo_requests(env, seq, "GET", value=True) == []


def test_restart_does_not_resend(make_env):
    env = photo_env(make_env)
    src = env.source["id"]
    people = sorted(env.in_scope())
    for n, sid in enumerate(people[:4]):
        env.cloud.set_photo(src, sid, jpeg(n))
    sync(env)
    # A new process (the state on disk), every check due.
    make_due(env)
    seq = last_seq(env)
    with env.started("run") as proc:
        fc.wait_for(lambda: len(photo_requests(env, seq, "GET",
                                               value=False)) >= len(people),
                    timeout=60, what="photo checks after a restart")
        proc.terminate()
        proc.communicate(timeout=30)
    assert photo_requests(env, seq, "PUT") == []
    assert photo_requests(env, seq, "GET", value=True) == []


def test_too_large_and_not_an_image_fail_alone(make_env):
    env = photo_env(make_env, extra="photo_max_bytes = 2048\n")
    src = env.source["id"]
    people = sorted(env.in_scope())
    big, html, liar, fine = people[:4]
    env.cloud.set_photo(src, big, b"\xff\xd8\xff" + b"x" * 4096)
    env.cloud.set_photo(src, html, b"<script>alert(1)</script>",
                        "text/html\x1b[2J")
    env.cloud.set_photo(src, liar, b"GIF89a not a jpeg", "image/jpeg")
    env.cloud.set_photo(src, fine, jpeg(7))
    r = sync(env)   # the round succeeds: the photos failed alone
    assert target_photo(env, fine)["bytes"] == jpeg(7)
    for sid in (big, html, liar):
        assert target_photo(env, sid) is None, sid
    err = r.stderr
    assert "source_id=%s" % big in err and "photo_max_bytes = 2048" in err
    assert "source_id=%s" % html in err and "(text/html?[2J)" in err
    assert "\x1b" not in err
    assert "source_id=%s" % liar in err
    assert "not the image/jpeg it says it is" in err
    assert "<script>" not in err
    # status counts them; explain gives one person's reason.
    st = [l for l in env.status()["links"]
          if l["name"] == "contoso-to-fabrikam"][0]
    assert st["photos"] == {"written": 1, "failed": 3}
    assert "photos: 1 copies carry a photo galbridge wrote, 3 failed" \
        in env.run("status").stdout
    r = env.run("explain", "contoso-to-fabrikam", big, "--json")
    assert r.returncode == 0, r.stderr
    ph = json.loads(r.stdout)["target"]["photo"]
    assert ph["etag_written"] is None
    assert "photo_max_bytes" in ph["error"]
    assert ph["next_check"] is not None
    r = env.run("explain", "contoso-to-fabrikam", fine)
    assert "photo: written, source etag" in r.stdout

    # Checked again, unchanged: a refused photo is not read again.
    make_due(env)
    seq = last_seq(env)
    sync(env)
    assert photo_requests(env, seq, "GET", value=True) == []
    assert env.status()["links"][0]["photos"] == {"written": 1, "failed": 3}
    # Once the source's photo is one that fits, it is copied.
    env.cloud.set_photo(src, big, jpeg(3))
    make_due(env)
    seq = last_seq(env)
    sync(env)
    assert [e["path"] for e in photo_requests(env, seq, "GET", value=True)] \
        == [f"/v1.0/users/{big}/photo/$value"]
    assert target_photo(env, big)["bytes"] == jpeg(3)
    assert env.status()["links"][0]["photos"] == {"written": 2, "failed": 2}


def test_write_refused_403_is_explained_and_retried(make_env):
    env = photo_env(make_env)
    src = env.source["id"]
    people = sorted(env.in_scope())
    env.cloud.set_photo(src, people[0], jpeg(1))
    env.cloud.set_photo(src, people[1], jpeg(2))
    env.cloud.set_knobs(photo_write_forbidden=True)
    r = sync(env)
    assert r.stderr.count("photo writes refused by the target tenant") == 1
    assert "ProfilePhoto.ReadWrite.All" in r.stderr
    assert "photoUpdateSettings" in r.stderr
    assert target_photo(env, people[0]) is None
    # Allowed again and the retry time come: copied.
    env.cloud.set_knobs(photo_write_forbidden=False)
    make_due(env)
    sync(env)
    assert target_photo(env, people[0])["bytes"] == jpeg(1)
    assert target_photo(env, people[1])["bytes"] == jpeg(2)


def test_contact_link_with_photos_is_a_config_error(make_env):
    env = photo_env(make_env, object_name="mailcontact")
    r = env.run("check-config")
    assert r.returncode == 78, r.stdout + r.stderr
    assert "photos applies only to links with object = guest or mailuser" \
        in r.stderr
    assert "contacts have no photo in Graph" in r.stderr


def test_photos_off_by_default_reads_no_photo(make_env):
    env = make_env(users=6)
    env.cloud.set_photo(env.source["id"], sorted(env.in_scope())[0], jpeg(1))
    seq = last_seq(env)
    sync(env)
    assert photo_requests(env, seq) == []


def test_copy_whose_anchor_was_changed_by_hand_gets_no_photo(make_env):
    """A copy whose anchor the target shows changed (someone pointed it at
    another person) is not written while galbridge cannot prove it is
    that person's copy; the others are."""
    env = photo_env(make_env)
    src, fab = env.source["id"], env.tenants["fabrikam"]["id"]
    people = sorted(env.in_scope())
    a, b, other = people[:3]
    sync(env)
    copy_b = copy_of(env, b)
    env.cloud.patch_user(fab, copy_b["id"], {
        "onPremisesExtensionAttributes": {
            "extensionAttribute15": "galbridge:%s:%s" % (src, other)}})
    env.cloud.set_photo(src, a, jpeg(1))
    env.cloud.set_photo(src, b, jpeg(2))
    make_due(env)
    seq = last_seq(env)
    r = env.run("sync")
    puts = [e["path"] for e in photo_requests(env, seq, "PUT")]
    assert "/v1.0/users/%s/photo/$value" % copy_b["id"] not in puts
    assert env.cloud.photo(fab, copy_b["id"]) is None
    assert target_photo(env, a)["bytes"] == jpeg(1)
    assert "source_id=%s" % b in r.stderr
    assert "anchor was changed in the target" in r.stderr


def stalled_photo(env, n):
    """The first person gets photo jpeg(n), whose first read hangs for
    20 s; the people, sorted."""
    people = sorted(env.in_scope())
    env.cloud.set_photo(env.source["id"], people[0], jpeg(n))
    env.cloud.set_faults({"kind": "stall", "ms": 20000, "method": "GET",
                          "path": r"/photo/\$value$", "count": 1})
    return people


def wait_stalled(env):
    fc.wait_for(lambda: env.cloud.faults()["rules"][0]["fired"] >= 1,
                timeout=60, what="the photo read stalled")


def test_stop_mid_photo_pass(make_env):
    """SIGTERM while a photo is being read: galbridge stops at once and
    cleanly (no check of that photo recorded as done), and the next round
    copies it."""
    env = photo_env(make_env)
    people = stalled_photo(env, 5)
    with env.started("run") as proc:
        wait_stalled(env)
        proc.terminate()
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
    assert target_photo(env, people[0]) is None
    db = sqlite3.connect(os.path.join(env.state_dir, "state.db"))
    try:
        row = db.execute("SELECT etag FROM photo WHERE source_id = ?",
                         (people[0],)).fetchone()
    finally:
        db.close()
    assert row is None or row[0] is None
    env.cloud.set_faults()
    sync(env)
    assert target_photo(env, people[0])["bytes"] == jpeg(5)


def test_reload_mid_photo_pass(make_env):
    """SIGHUP while a photo read hangs: the new configuration is applied
    at once (the photo check is not waited for), and the photo is copied
    by the new configuration's rounds."""
    from test_daemon import Daemon
    env = photo_env(make_env)
    people = stalled_photo(env, 6)
    d = Daemon(env)
    try:
        d.wait_key("READY=1")
        wait_stalled(env)
        d.signal(signal.SIGHUP)
        d.wait_log(r"configuration reloaded", timeout=10)
        env.cloud.set_faults()
        fc.wait_for(lambda: target_photo(env, people[0]) is not None,
                    timeout=30, what="the photo copied after the reload")
        assert target_photo(env, people[0])["bytes"] == jpeg(6)
    finally:
        assert d.stop() == 0
