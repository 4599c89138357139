#!/usr/bin/python3
"""fakecloud: a fake Microsoft cloud for galbridge's tests and demo.

Run:  /usr/bin/python3 tests/fakecloud/fakecloud.py --dir DIR
          [--seed FILE.json] [--admin-port N] [--verbose]
          [--record-raw] [--tls-fault KIND [--tls-fault-on SERVICES]]

At start it makes a throw-away CA and a server certificate for 127.0.0.1 /
localhost, writes DIR/ca.pem, listens with TLS on three ephemeral ports
(login = Microsoft identity platform token endpoint, graph = Microsoft Graph,
exchange = the Exchange Online admin API) and on one plain-HTTP admin port,
then writes DIR/ready.json atomically:

  {"pid", "ca_file", "login_url", "graph_url", "exchange_url", "admin_url"}

(A fourth TLS listener stands for "some other host" and records every
request that reaches it: GET /admin/faults names it; see "Faults from the
cloud" in cloud/faults.py.)

SIGTERM / SIGINT stop it cleanly (exit 0, ready.json removed).

For secrets and TLS tests (off by default; the environment variables
FAKECLOUD_RECORD_RAW=1, FAKECLOUD_TLS_FAULT and FAKECLOUD_TLS_FAULT_ON set
the same, so a test can use client.FakeCloud unchanged):
  --record-raw   every login/graph/exchange entry of the request log also
                 carries the request's raw "headers" ([name, value] pairs)
                 and "body" (text, undecodable bytes replaced);
  --tls-fault    serve a bad certificate: unknown-ca (signed by a CA that
                 is not in ca.pem), wrong-host (valid, but for
                 wrong-host.invalid only) or expired (valid names, expired
                 yesterday); --tls-fault-on names the listeners that serve
                 it (comma-separated login,graph,exchange; default all).
                 GET /admin/tls tells the fault and counts completed
                 and failed handshakes per listener (a client that checks
                 the host name after the handshake shows as a completed
                 handshake with no request).

Contract: every answer follows the shapes Microsoft documents (see
shared/MICROSOFT.md and shared/microsoft-fixtures/): key names and casing,
status codes, paging links.  Where Microsoft documents nothing, the shape
comes from public captures of the real service, and the comment says so.

Layout: this file is the entry point (the command line, the listeners,
ready.json); the rest is the package cloud/, one module per concern:
  - wire.py       Request, Response, the route table, every error body,
  - knobs.py      fault and behaviour switches (one table),
  - directory.py  state: tenants, users, groups, contacts, tokens, links,
  - server.py     dispatch, Cloud (all state, one lock), the listeners,
  - tls.py        the throw-away CA and server certificates,
  - login.py      the token endpoint,
  - graph.py      what Graph endpoints share; delta.py users/delta;
                  users.py users, deleted items, invitations; filters.py
                  $filter; objects.py groups and org contacts; batch.py
                  $batch,
  - limits.py     Graph's limits and throttling,
  - exchange.py   InvokeCommand and recipient views; cmdlets.py the
                  cmdlets and OPATH -Filter,
  - admin.py      the admin API,
  - faults.py     faults from the cloud (issue 6).
Endpoints register with @route (one function per endpoint, one per
Exchange cmdlet via @cmdlet) when the package is imported.

Everything a handler touches is guarded by Cloud.lock; a handler runs with
the lock held and its answer is serialised before the lock is released, so
handlers never copy state.
"""

import argparse
import json
import os
import signal
import sys
import threading

from cloud.limits import limits_unit_cost
from cloud.server import Cloud, Listener
from cloud.tls import TLS_FAULTS, make_tls

# What tests import from here (test_limits.py: fakecloud.limits_unit_cost).
__all__ = ["main", "limits_unit_cost"]


def write_json_atomic(path, data):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True,
                        help="directory for ca.pem and ready.json")
    parser.add_argument("--seed", help="seed JSON file loaded at start")
    parser.add_argument("--admin-port", type=int, default=0)
    parser.add_argument("--verbose", action="store_true",
                        help="one line per request on stderr")
    parser.add_argument("--record-raw", action="store_true",
                        default=os.environ.get("FAKECLOUD_RECORD_RAW") == "1",
                        help="keep raw request headers and bodies in the "
                             "request log")
    parser.add_argument("--tls-fault", choices=TLS_FAULTS,
                        default=os.environ.get("FAKECLOUD_TLS_FAULT") or None,
                        help="serve a certificate a client must refuse")
    parser.add_argument("--tls-fault-on",
                        default=os.environ.get("FAKECLOUD_TLS_FAULT_ON")
                        or "login,graph,exchange",
                        help="listeners with the bad certificate")
    args = parser.parse_args(argv)
    fault_on = [n.strip() for n in args.tls_fault_on.split(",") if n.strip()]
    if any(n not in ("login", "graph", "exchange") for n in fault_on):
        parser.error("--tls-fault-on takes login, graph and/or exchange")

    directory = os.path.abspath(args.dir)
    os.makedirs(directory, exist_ok=True)
    ready = os.path.join(directory, "ready.json")
    if os.path.exists(ready):
        os.unlink(ready)
    cloud = Cloud(verbose=args.verbose)
    cloud.record_raw = args.record_raw
    cloud.tls_fault = args.tls_fault
    if args.seed:
        with open(args.seed, encoding="utf-8") as f:
            cloud.load_seed(json.load(f))
    tls = {}
    if args.tls_fault is None:
        good = make_tls(directory)
    else:
        good, bad = make_tls(directory, args.tls_fault)
        tls = {name: bad for name in fault_on}

    listeners = {
        "login": Listener(0, "login", cloud, tls.get("login", good)),
        "graph": Listener(0, "graph", cloud, tls.get("graph", good)),
        "exchange": Listener(0, "exchange", cloud,
                             tls.get("exchange", good)),
        "admin": Listener(args.admin_port, "admin", cloud),
        "foreign": Listener(0, "foreign", cloud, good),  # fault tests
    }
    cloud.login_url = listeners["login"].url
    cloud.graph_url = listeners["graph"].url
    cloud.exchange_url = listeners["exchange"].url
    cloud.admin_url = listeners["admin"].url
    cloud.foreign_netloc = \
        f"localhost:{listeners['foreign'].server_address[1]}"
    def serve(name, server):
        thread = threading.Thread(target=server.serve_forever,
                                  kwargs={"poll_interval": 0.1},
                                  name=f"fakecloud-{name}", daemon=True)
        thread.start()

    def move_graph():
        # Called with cloud.lock held (an admin request).
        old = listeners["graph"]
        new = Listener(0, "graph", cloud, old.tls)
        listeners["graph"] = new
        cloud.graph_url = new.url
        serve("graph", new)

        def close_old():
            old.shutdown()
            old.server_close()
        threading.Thread(target=close_old, daemon=True).start()
        return cloud.graph_url

    cloud.move_graph = move_graph
    for name, server in listeners.items():
        serve(name, server)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    write_json_atomic(ready, {
        "pid": os.getpid(),
        "ca_file": os.path.join(directory, "ca.pem"),
        "login_url": cloud.login_url,
        "graph_url": cloud.graph_url,
        "exchange_url": cloud.exchange_url,
        "admin_url": cloud.admin_url,
    })
    while not stop.wait(0.5):
        pass
    for server in listeners.values():
        server.shutdown()
        server.server_close()
    try:
        os.unlink(ready)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
