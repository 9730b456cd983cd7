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
    .venv/bin/python bench/cluster.py --base main [--rounds 3] [--nodes 1] [--search 200]

``--base REV`` is an A/B of the cluster path (docs/PERFORMANCE.md: run-to-run noise here
is 30 % and more, so only alternation in one run compares): the server of git revision
REV (A) and this tree's (B), alternating A, B, A, B, ... ``--rounds`` times, each on a
fresh database and prefix with ``--nodes`` nodes; per rate the servers' CPU µs per
delivery, p99 and deliveries/s (at a rate beyond what the box sustains: the most the
cluster path delivers), and with ``--search START`` the highest sustainable
deliveries/s (bench/run_bench.py's rule), with the ratios B/A of the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import secrets
import socket
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import redis
from abtree import base_tree, pythonpath
from common import SERVERS, wait_idle
from run_bench import step_up

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
def servers(
    kind: str, tmp: Path, env: dict[str, str] | None = None
) -> Iterator[list[ServerProcess]]:
    """``embedded``, or ``cluster-N``: N nodes on a fresh database and prefix; ``env``
    for the server processes (A/B: another tree's PYTHONPATH)."""
    base = [*SERVERS["ours"], *HASHES, "--max-connections", "20000"]
    with contextlib.ExitStack() as stack:
        if kind == "embedded":
            db = str(tmp / f"{secrets.token_hex(4)}.db")
            cmd = [*base, "--port", "0", "--db", db]
            nodes = [stack.enter_context(ServerProcess(cmd=cmd, env=env))]
        else:
            url = stack.enter_context(database())
            prefix = url.rsplit("/", 1)[1]
            cluster = ["--cluster", REDIS, "--cluster-prefix", prefix, "--db", url]
            n = int(kind.split("-")[1])
            nodes = [
                stack.enter_context(ServerProcess(cmd=[*base, "--port", "0", *cluster], env=env))
                for _ in range(n)
            ]
        yield nodes


def load_config(args: argparse.Namespace, nodes: list[ServerProcess]) -> LoadConfig:
    """The swarm for ``nodes``: its clients spread over all of them (``--clients``,
    ``--senders``), two generator processes, 2 s of drain after each step."""
    return LoadConfig(
        host=",".join(f"127.0.0.1:{n.port}" for n in nodes),
        port=nodes[0].port,
        clients=args.clients,
        senders=args.senders,
        processes=2,
        drain=2.0,
    )


def fanout(args: argparse.Namespace) -> None:
    rates = [float(x) for x in args.rates.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("embedded", "cluster-1", "cluster-3"):
            with servers(kind, Path(tmp)) as nodes:
                pids = [n.pid for n in nodes]
                with Swarm(load_config(args, nodes)) as swarm:
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


def ab_round(
    args: argparse.Namespace, tmp: Path, env: dict[str, str] | None
) -> tuple[list[tuple[float, float, float]], float]:
    """One side's turn: (servers' µs per delivery, p99 ms, deliveries/s) per rate, and
    the highest sustainable deliveries/s (0 without ``--search``)."""
    with servers(f"cluster-{args.nodes}", tmp, env) as nodes:
        pids = [n.pid for n in nodes]
        with Swarm(load_config(args, nodes)) as swarm:
            for pid in pids:
                wait_idle(pid)
            fixed = []
            for rate in [float(x) for x in args.rates.split(",")]:
                c0 = cpu(pids)
                r = swarm.step(rate, args.duration)
                us = 1e6 * (cpu(pids) - c0) / max(1, r.delivered)
                per_s = r.delivered / args.duration
                fixed.append((us, r.latency_ms.get("p99", 0.0), per_s))
                print(
                    f"    rate {rate:.0f}: {us:.1f} µs/delivery, {per_s:,.0f} deliveries/s, "
                    f"p99 {fixed[-1][1]:.1f} ms, lost {r.lost}",
                    flush=True,
                )
            best = 0.0
            if args.search:
                got = step_up(swarm, args.search, 1.6, cap=1e6, seconds=args.duration)["best"]
                best = float(got["deliveries_per_s"]) if got else 0.0
            return fixed, best


def paired(fixed: dict[str, list[list[tuple[float, float, float]]]], k: int, i: int) -> float:
    """The median over rounds of B's value over A's (rate ``k``, field ``i``): each B
    against the A run just before it, so the box's load drifting over the run cancels
    out, which a ratio of the two medians does not."""
    return statistics.median(
        b[k][i] / a[k][i] for a, b in zip(fixed["A"], fixed["B"], strict=True) if a[k][i]
    )


def ab(args: argparse.Namespace) -> None:
    rates = [float(x) for x in args.rates.split(",")]
    fixed: dict[str, list[list[tuple[float, float, float]]]] = {"A": [], "B": []}
    found: dict[str, list[float]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory() as tmp, base_tree(args.base) as tree:
        env = {"A": {"PYTHONPATH": pythonpath(tree)}, "B": None}
        for i in range(args.rounds):
            for v in ("A", "B"):
                print(f"round {i + 1} {v}:", flush=True)
                got, best = ab_round(args, Path(tmp), env[v])
                fixed[v].append(got)
                found[v].append(best)
                if args.search:
                    print(f"  sustained {best:,.0f} deliveries/s", flush=True)
    print(
        f"\nA = {args.base}, B = this tree; {args.nodes} node(s), {args.clients} clients, "
        f"{args.senders} senders; medians of {args.rounds} rounds"
    )
    print(
        "| msg/s | A µs/delivery | B µs/delivery | B/A | A p99 ms | B p99 ms "
        "| A deliveries/s | B deliveries/s | B/A |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for k, rate in enumerate(rates):
        a_us = statistics.median(r[k][0] for r in fixed["A"])
        b_us = statistics.median(r[k][0] for r in fixed["B"])
        a_p99 = statistics.median(r[k][1] for r in fixed["A"])
        b_p99 = statistics.median(r[k][1] for r in fixed["B"])
        a_n = statistics.median(r[k][2] for r in fixed["A"])
        b_n = statistics.median(r[k][2] for r in fixed["B"])
        print(
            f"| {rate:.0f} | {a_us:.1f} | {b_us:.1f} | {paired(fixed, k, 0):.2f} | "
            f"{a_p99:.1f} | {b_p99:.1f} | {a_n:,.0f} | {b_n:,.0f} | {paired(fixed, k, 2):.2f} |"
        )
    print("(B/A: the median of each round's ratio, B against the A just before it)")
    if args.search:
        a_best, b_best = statistics.median(found["A"]), statistics.median(found["B"])
        print(
            f"sustained deliveries/s: A {a_best:,.0f}, B {b_best:,.0f}, "
            f"B/A {b_best / max(1.0, a_best):.2f} (per round A {found['A']}, B {found['B']})"
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
    ap.add_argument("--base", help="A/B: git revision for A (B is this tree)")
    ap.add_argument("--rounds", type=int, default=3, help="A/B: rounds of A then B")
    ap.add_argument("--nodes", type=int, default=1, help="A/B: cluster nodes per side")
    ap.add_argument("--search", type=float, help="A/B: also the sustainable rate, from this")
    args = ap.parse_args()
    socket.setdefaulttimeout(None)
    if args.hold:
        hold(args)
    elif args.base:
        ab(args)
    else:
        fanout(args)


if __name__ == "__main__":
    main()
