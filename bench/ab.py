"""A/B: the server of another git revision against this working tree, in one run.

Run-to-run noise on this shared 2-core box is often 30 % or more, so a server change is
judged by alternating the two servers (A, B, A, B, ...) on the same fan-out steps in the
same minutes, and comparing server CPU per 1,000 deliveries and p99, step by step.

    .venv/bin/python bench/ab.py --base HEAD~1 [--rounds 3] [--rates 200,800,1500]
                                 [--senders 10] [--clients 100] [--pm-fraction 1]
                                 [--rooms R [--room-sizes uniform|zipf]]
                                 [--a-args "..."] [--b-args "..."]
                                 [--a-sched normal|batch] [--b-sched normal|batch]
                                 [--search START [--step-seconds 6]]

``--a-args``/``--b-args`` add server options to one side: ``--base HEAD --b-args
"--coalesce-ms 0"`` compares one setting of the same code. ``--a-sched``/``--b-sched``
set one side's generator (chat-load ``--sched``; both sides run this tree's generator):
``--base HEAD --a-sched normal`` compares the generator's policies on one server.

``--pm-fraction 0 --senders 100`` is make bench's DM pairs: every bot sends direct
messages only, each to one other bot.

``--rooms R`` puts the bots in R rooms (chat-load ``--rooms``; ``--room-sizes zipf`` for
one large room and many small ones), every public message to one of its sender's rooms:
``--clients 1000 --rooms 100 --senders 100`` is 100 rooms of 10, each with a sender.

``--search START`` asks instead how much each side sustains: from START messages/s the
rate rises 1.6x a step until one is not sustainable (something lost or errored, p99 at
or over 50 ms, or over 1 % of sends more than 10 ms late: make bench's rule), then two
geometric bisections; per round the highest sustainable deliveries/s of each side, and
the ratio of the medians.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from abtree import base_tree, pythonpath
from common import cpu_seconds, start_server, wait_idle
from run_bench import step_up

from chatroom_bots.load import LoadConfig, Swarm
from chatroom_bots.load.rooms import Distribution
from chatroom_bots.load.worker import SCHED_POLICIES, SchedPolicy

T = TypeVar("T")


def on_server(
    pythonpath: str | None,
    db: Path,
    senders: int,
    clients: int,
    extra: list[str],
    work: Callable[[Swarm, int], T],
    sched: SchedPolicy = LoadConfig.sched,
    pm_fraction: float = 1.0,
    rooms: int = 0,
    room_sizes: Distribution = "uniform",
) -> T:
    """``work(swarm, server_pid)`` with ``clients`` bots logged in to a fresh server."""
    env = {"PYTHONPATH": pythonpath} if pythonpath else None  # ahead of this tree's install
    # load-test hashes: 1,000 argon2id logins at full cost would take half a minute.
    hashes = ("--password-hash", "load-test")
    args = (*hashes, *extra)
    with start_server("ours", db.parent, *args, db=db.stem, env=env) as (proc, port):
        cfg = LoadConfig(
            port=port,
            clients=clients,
            senders=senders,
            processes=2,
            drain=1.0,
            sched=sched,
            pm_fraction=pm_fraction,
            rooms=rooms,
            room_sizes=room_sizes,
        )
        with Swarm(cfg) as swarm:
            wait_idle(proc.pid)
            return work(swarm, proc.pid)


def at_rates(
    rates: list[float], seconds: float
) -> Callable[[Swarm, int], list[tuple[float, float]]]:
    """(server CPU ms per 1,000 deliveries, p99 ms) at each rate."""

    def work(swarm: Swarm, pid: int) -> list[tuple[float, float]]:
        out = []
        for rate in rates:
            cpu0 = cpu_seconds(pid)
            r = swarm.step(rate, seconds)
            cpu = cpu_seconds(pid) - cpu0
            out.append((1e6 * cpu / max(1, r.delivered), r.latency_ms["p99"]))
        return out

    return work


def search(start: float, seconds: float) -> Callable[[Swarm, int], float]:
    """The highest sustainable deliveries/s (0 if not even ``start`` is)."""

    def work(swarm: Swarm, pid: int) -> float:
        best = step_up(swarm, start, 1.6, cap=1e6, seconds=seconds)["best"]
        return float(best["deliveries_per_s"]) if best else 0.0

    return work


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="HEAD~1", help="git revision for A (B is this tree)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rates", default="200,800,1500", help="messages/s, 100 bots")
    ap.add_argument("--clients", type=int, default=100, help="bots logged in")
    ap.add_argument("--senders", type=int, default=10, help="of the bots")
    ap.add_argument(
        "--pm-fraction", type=float, default=1.0, help="public messages; the rest are DMs"
    )
    ap.add_argument("--rooms", type=int, default=0, help="bots in this many rooms")
    ap.add_argument("--room-sizes", choices=("uniform", "zipf"), default="uniform")
    ap.add_argument("--a-args", default="", help="extra server options for A")
    ap.add_argument("--b-args", default="", help="extra server options for B")
    for side in ("a", "b"):
        ap.add_argument(
            f"--{side}-sched",
            choices=SCHED_POLICIES,
            default=LoadConfig.sched,
            help=f"the generator's scheduling policy for {side.upper()} (chat-load --sched)",
        )
    ap.add_argument(
        "--search",
        type=float,
        metavar="START",
        help="find each side's highest sustainable rate from START msg/s instead",
    )
    ap.add_argument(
        "--step-seconds",
        type=float,
        help="seconds of sending per step (default 2; 6 with --search, as the anchors)",
    )
    a = ap.parse_args()
    extra = {"A": shlex.split(a.a_args), "B": shlex.split(a.b_args)}
    sched: dict[str, SchedPolicy] = {"A": a.a_sched, "B": a.b_sched}
    rates = [float(x) for x in a.rates.split(",")]
    seconds = a.step_seconds or (6.0 if a.search else 2.0)
    fixed: dict[str, list[list[tuple[float, float]]]] = {"A": [], "B": []}
    found: dict[str, list[float]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory() as tmp, base_tree(a.base) as base:
        paths = {"A": pythonpath(base), "B": None}  # B: this tree, as this process has it
        for i in range(a.rounds):
            for v in ("A", "B"):
                db = Path(tmp) / f"{v}{i}.db"
                print(f"round {i + 1} {v}:", flush=True)
                if a.search:
                    work = search(a.search, seconds)
                    found[v].append(
                        on_server(
                            paths[v],
                            db,
                            a.senders,
                            a.clients,
                            extra[v],
                            work,
                            sched[v],
                            a.pm_fraction,
                            a.rooms,
                            a.room_sizes,
                        )
                    )
                    print(f"  sustained {found[v][-1]:,.0f} deliveries/s", flush=True)
                else:
                    got = on_server(
                        paths[v],
                        db,
                        a.senders,
                        a.clients,
                        extra[v],
                        at_rates(rates, seconds),
                        sched[v],
                        a.pm_fraction,
                        a.rooms,
                        a.room_sizes,
                    )
                    fixed[v].append(got)
                    print(f"  {got}", flush=True)
    a_is = f"{a.base} {a.a_args}, generator {a.a_sched}".strip()
    b_is = f"this tree {a.b_args}, generator {a.b_sched}".strip()
    mix = "" if a.pm_fraction == 1 else f", {a.pm_fraction:g} of messages public"
    if a.rooms:
        mix += f", {a.rooms} rooms ({a.room_sizes})"
    print(f"\nA = {a_is}, B = {b_is}; {a.clients} clients, {a.senders} senders{mix}")
    if a.search:
        ma, mb = statistics.median(found["A"]), statistics.median(found["B"])
        print(f"highest sustainable deliveries/s, {a.rounds} alternating rounds:")
        print("| | each round | median |")
        print("| --- | --- | --- |")
        for v, m in (("A", ma), ("B", mb)):
            print(f"| {v} | {', '.join(f'{x:,.0f}' for x in found[v])} | {m:,.0f} |")
        print(f"B/A: {mb / ma:.2f}" if ma else "B/A: A sustained none of the steps")
        return
    print(f"medians of {a.rounds} alternating runs")
    print("| msg/s | CPU ms/1k A | CPU ms/1k B | B/A | p99 ms A | p99 ms B |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, rate in enumerate(rates):
        ca = statistics.median(r[k][0] for r in fixed["A"])
        cb = statistics.median(r[k][0] for r in fixed["B"])
        pa = statistics.median(r[k][1] for r in fixed["A"])
        pb = statistics.median(r[k][1] for r in fixed["B"])
        print(f"| {rate:.0f} | {ca:.2f} | {cb:.2f} | {cb / ca:.2f} | {pa:.2f} | {pb:.2f} |")


if __name__ == "__main__":
    main()
