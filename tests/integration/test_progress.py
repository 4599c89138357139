"""`galbridge status` during a long round: progress and a finish estimate
from the rate so far, and nothing once the outbox is empty."""
import client as fc
from test_daemon import Daemon
from test_guests import check_converged


def test_status_shows_progress_and_estimate(make_env):
    env = make_env(users=60)
    # A small write budget on the target stretches the round over several
    # seconds at a steady pace.
    env.limits["fabrikam"] = ("40/5s", "off")
    env.write_config()
    d = Daemon(env)
    try:
        seen = fc.wait_for(
            lambda: [p for p in [env.status()["links"][0]["progress"]]
                     if p and p["done"] > 0 and p["finish_estimate"]],
            timeout=60, what="progress with an estimate")
        p = seen[0]
        assert p["pending"] > 0
        assert p["per_second"] > 0
        assert p["finish_estimate"] >= p["started"]
        text = env.run("status").stdout
        assert "this round:" in text and "estimated finish" in text
        d.wait_log(r"link round done link=contoso-to-fabrikam", timeout=120)
        link = env.status()["links"][0]
        assert link["pending"] == 0 and link["progress"] is None
        check_converged(env)
    finally:
        d.stop()


def test_long_first_read_streams(make_env):
    """A first read of many pages: what is stored is planned and written
    while reading goes on, and the round after the read finishes the job
    exactly (no duplicates, nobody missing). That last round is still the
    first fill: max_creates does not hold it, though the partial rounds
    made copies already."""
    env = make_env(users=400)
    env.write_config(link_extra="max_creates = 5\n")
    # 20 users a page: the source's first read is 20 pages, each slowed.
    env.cloud.set_knobs(delta_page_size=20, latency_ms=30)
    try:
        r = env.run("sync", timeout=300)
    finally:
        env.cloud.set_knobs(latency_ms=0)
    assert r.returncode == 0, r.stderr
    assert "link partial round done link=contoso-to-fabrikam" in r.stderr
    assert "creates held" not in r.stderr
    # fakecloud saw invitations (plain or inside a $batch) before the
    # source's last delta page.
    log = env.cloud.log()
    src = env.source["id"]
    pages = [e["seq"] for e in log if e["tenant"] == src
             and e["path"].endswith("/users/delta")]
    invites = [e["seq"] for e in log if e["path"].endswith("/invitations")]
    assert len(pages) >= 20 and invites and invites[0] < pages[-1], \
        r.stderr
    check_converged(env)
