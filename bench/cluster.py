"""The cluster against one process, in one run (docs/CLUSTER.md, docs/PERFORMANCE.md).

The same bots and the same steps against three set-ups, one after the other:

- ``embedded``: one chat-server on SQLite (the default, no services);
- ``1 node``: one cluster node on PostgreSQL and Redis (the cluster path, no hop);
- ``3 nodes``: three cluster nodes, the bots spread over them, so two thirds of the
  deliveries cross from one node to another through Redis.

Per rate: delivered/s, latency p50/p99 (send to arrival, on the generator's clock, so a
cross-node hop is in it), lost, and CPU per delivery of the chat-server processes and of
Redis + PostgreSQL (the cluster path's cost). ``--hold N`` instead logs N bots in over
three nodes, checks every node reports the same N-user list, and sends a probe.

    .venv/bin/python bench/cluster.py [--clients 100] [--senders 10] [--rates 100,400,1000]
    .venv/bin/python bench/cluster.py --hold 10000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import redis
from common import SERVERS, wait_idle

from chatroom.testing import ServerProcess
from chatroom_bots.load import LoadConfig, Swarm, procstat

REDIS = "redis://127.0.0.1:6379/0"
PG = "postgresql://postgres@127.0.0.1:5432/postgres"
HASHES = ("--password-hash", "load-test")
PROBE = re.compile(r"probe\d+")  # users_seen's clients


def cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        got = procstat.sample(pid)
        if got is not None:
            total += got.cpu_seconds
    return total


def service_pids() -> list[int]:
    """Redis's pid and every PostgreSQL process (the postmaster and its backends)."""
    pids = [int(redis.Redis.from_url(REDIS).info("server")["process_id"])]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if (d / "comm").read_text().strip() == "postgres":
                    pids.append(int(d.name))
    return pids


@contextlib.contextmanager
def database() -> Iterator[str]:
    name = f"chat_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        r = redis.Redis.from_url(REDIS)
        keys = list(r.scan_iter(f"{name}:*", count=1000))
        if keys:
            r.delete(*keys)


@contextlib.contextmanager
def servers(kind: str, tmp: Path) -> Iterator[list[ServerProcess]]:
    """``embedded``, or ``cluster-N``: N nodes on a fresh database and prefix."""
    base = [*SERVERS["ours"], *HASHES, "--max-connections", "20000"]
    with contextlib.ExitStack() as stack:
        if kind == "embedded":
            db = str(tmp / f"{secrets.token_hex(4)}.db")
            nodes = [stack.enter_context(ServerProcess(cmd=[*base, "--port", "0", "--db", db]))]
        else:
            url = stack.enter_context(database())
            prefix = url.rsplit("/", 1)[1]
            cluster = ["--cluster", REDIS, "--cluster-prefix", prefix, "--db", url]
            n = int(kind.split("-")[1])
            nodes = [
                stack.enter_context(ServerProcess(cmd=[*base, "--port", "0", *cluster]))
                for _ in range(n)
            ]
        yield nodes


def fanout(args: argparse.Namespace) -> None:
    rates = [float(x) for x in args.rates.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("embedded", "cluster-1", "cluster-3"):
            with servers(kind, Path(tmp)) as nodes:
                pids = [n.pid for n in nodes]
                hosts = ",".join(f"127.0.0.1:{n.port}" for n in nodes)
                cfg = LoadConfig(
                    host=hosts,
                    port=nodes[0].port,
                    clients=args.clients,
                    senders=args.senders,
                    processes=2,
                    drain=2.0,
                )
                with Swarm(cfg) as swarm:
                    for pid in pids:
                        wait_idle(pid)
                    for rate in rates:
                        svc = service_pids() if kind != "embedded" else []
                        c0, s0 = cpu(pids), cpu(svc)
                        r = swarm.step(rate, args.duration)
                        c1, s1 = cpu(pids), cpu(svc)
                        row = {
                            "setup": kind,
                            "rate": rate,
                            "delivered_per_s": r.delivered / args.duration,
                            "p50_ms": r.latency_ms.get("p50"),
                            "p99_ms": r.latency_ms.get("p99"),
                            "lost": r.lost,
                            "server_us_per_delivery": 1e6 * (c1 - c0) / max(1, r.delivered),
                            "services_us_per_delivery": 1e6 * (s1 - s0) / max(1, r.delivered),
                        }
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    print(
        "\n| set-up | msg/s | delivered/s | p50 ms | p99 ms | lost | servers µs/delivery "
        "| Redis+PostgreSQL µs/delivery |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for x in rows:
        print(
            f"| {x['setup']} | {x['rate']:.0f} | {x['delivered_per_s']:,.0f} | "
            f"{x['p50_ms']:.1f} | {x['p99_ms']:.1f} | {x['lost']} | "
            f"{x['server_us_per_delivery']:.1f} | {x['services_us_per_delivery']:.1f} |"
        )


def users_seen(port: int) -> int:
    """How many bots this node lists: from the login_ok of a fresh v1 client (no
    users_delta), which is the node's live list."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        login = {"command": "login", "username": f"probe{port}", "password": "probe password"}
        s.sendall(json.dumps(login).encode() + b"\n")
        buf = b""
        while True:
            line, nl, rest = buf.partition(b"\n")
            if not nl:
                # 64 KiB, not 1 MiB: above glibc's mmap threshold every recv is an mmap
                # (docs/PERFORMANCE.md, "Reads of 64 KiB, not 256").
                data = s.recv(65536)
                if not data:
                    raise ConnectionError(f"node {port} closed before login_ok")
                buf += data
                continue
            buf = rest
            frame = json.loads(line)
            if frame.get("type") == "login_ok":
                return sum(1 for u in frame["users"] if not PROBE.fullmatch(u))


def hold(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, servers("cluster-3", Path(tmp)) as nodes:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in nodes)
        cfg = LoadConfig(
            host=hosts, port=nodes[0].port, clients=args.hold, senders=1, processes=2, drain=3
        )
        with Swarm(cfg) as swarm:
            login = swarm.login
            print(
                f"{login.logged_in} of {args.hold} logged in over 3 nodes in "
                f"{login.login_seconds:.1f} s ({login.logged_in / login.login_seconds:.0f}/s), "
                f"{len(login.login_failures)} failed"
            )
            for n in nodes:
                wait_idle(n.pid, timeout=120)
            seen = [users_seen(n.port) for n in nodes]
            print(f"users each node lists (bots only): {seen}")
            r = swarm.step(1.0, 3.0)
            rss = [procstat.sample(n.pid) for n in nodes]
            print(
                f"probe: {r.delivered} deliveries, lost {r.lost}, p50 "
                f"{r.latency_ms.get('p50', 0):.0f} ms p99 {r.latency_ms.get('p99', 0):.0f} ms; "
                "node RSS MiB "
                + ", ".join(f"{s.rss_bytes / 2**20:.0f}" for s in rss if s is not None)
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--senders", type=int, default=10)
    ap.add_argument("--rates", default="100,400,1000", help="public messages/s")
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--hold", type=int, help="log this many bots in over 3 nodes instead")
    args = ap.parse_args()
    socket.setdefaulttimeout(None)
    if args.hold:
        hold(args)
    else:
        fanout(args)


if __name__ == "__main__":
    main()
