"""What the metrics cost a delivery: the fan-out's bookkeeping per pass, and a scrape.

    .venv/bin/python bench/metrics_cost.py [--clients 100,1000] [--repeat 5]

The fan-out counts once per pass (chatroom_server.metrics), whatever the number of
recipients, so its cost per delivery is the per-pass cost divided by the deliveries a
pass makes. This times the exact statements a pass adds (two ``perf_counter`` calls, two
histogram observations, three additions and the recipients' product) in this thread's
CPU, and a whole ``/metrics`` scrape of an in-process server with N clients logged in
(which walks every connection once). End-to-end, ``bench/ab.py --base main --b-args
"--admin-port 19464"`` with a scraper alternates the servers; on a shared 2-core box its
noise (often 30 % or more) is far above what this measures.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time

from prometheus_client import CollectorRegistry, generate_latest

from chatroom.testing import running_server
from chatroom_server.admin_http import ServerCollector
from chatroom_server.metrics import FanOutStats


def per_pass_ns(passes: int = 200_000, repeat: int = 5) -> float:
    """CPU ns of a pass's bookkeeping (as FanOut._drain and _store do it)."""
    st = FanOutStats()
    run_frames = [[b"x"]]  # one batch of one message
    roster = 100
    results = []
    for _ in range(repeat):
        t0 = time.thread_time_ns()
        for _ in range(passes):
            began_pass = time.perf_counter()
            began = time.perf_counter()
            st.commit.observe(time.perf_counter() - began)
            st.messages += 1
            st.deliveries += sum(len(f) for f in run_frames) * max(0, roster - 1)
            st.passes += 1
            st.pass_time.observe(time.perf_counter() - began_pass)
        results.append((time.thread_time_ns() - t0) / passes)
    return statistics.median(results)


def scrape_ms(clients: int, repeat: int) -> float:
    """CPU ms of one /metrics body with ``clients`` logged in."""
    with running_server(users_interval=0, rate_limit=None, password_hash="load-test") as srv:
        conns = []
        for i in range(clients):
            c = socket.create_connection(srv.address, timeout=30)
            login = {"command": "login", "username": f"u{i}", "password": "correct horse"}
            c.sendall(json.dumps(login).encode() + b"\n")
            f = c.makefile("rb")
            while json.loads(f.readline())["type"] != "login_ok":
                pass
            conns.append(c)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ServerCollector(srv.server))
        results = []
        for _ in range(repeat):
            t0 = time.thread_time_ns()
            generate_latest(registry)
            results.append((time.thread_time_ns() - t0) / 1e6)
        for c in conns:
            c.close()
        return statistics.median(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", default="100,1000")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    ns = per_pass_ns(repeat=a.repeat)
    print(f"bookkeeping per fan-out pass: {ns:.0f} ns CPU")
    for n in (100, 1000):
        print(f"  per delivery at {n} recipients a pass: {ns / (n - 1):.1f} ns")
    for n in (int(x) for x in a.clients.split(",")):
        print(f"one scrape with {n} clients: {scrape_ms(n, a.repeat):.2f} ms CPU")


if __name__ == "__main__":
    main()
