"""A/B: the server of another git revision against this working tree, in one run.

Run-to-run noise on this shared 2-core box is often 30 % or more, so a server change is
judged by alternating the two servers (A, B, A, B, ...) on the same fan-out steps in the
same minutes, and comparing server CPU per 1,000 deliveries and p99, step by step.

    .venv/bin/python bench/ab.py --base HEAD~1 [--rounds 3] [--rates 200,800,1500]
                                 [--senders 10] [--clients 100]
                                 [--a-args "..."] [--b-args "..."]

``--a-args``/``--b-args`` add server options to one side: ``--base HEAD --b-args
"--coalesce-ms 0"`` compares one setting of the same code.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import tempfile
from pathlib import Path

from common import cpu_seconds, start_server, wait_idle

from chatroom_bots.load import LoadConfig, Swarm

ROOT = Path(__file__).resolve().parent.parent


def measure(
    pythonpath: str | None,
    db: Path,
    rates: list[float],
    senders: int,
    clients: int,
    extra: list[str],
) -> list[tuple[float, float]]:
    """(server CPU ms per 1,000 deliveries, p99 ms) at each rate, with ``clients`` bots."""
    env = {"PYTHONPATH": pythonpath} if pythonpath else None  # ahead of this tree's install
    # load-test hashes: 1,000 argon2id logins at full cost would take half a minute.
    hashes = ("--password-hash", "load-test")
    args = (*hashes, *extra)
    with start_server("ours", db.parent, *args, db=db.stem, env=env) as (proc, port):
        cfg = LoadConfig(port=port, clients=clients, senders=senders, processes=2, drain=1.0)
        out = []
        with Swarm(cfg) as swarm:
            wait_idle(proc.pid)
            for rate in rates:
                cpu0 = cpu_seconds(proc.pid)
                r = swarm.step(rate, 2.0)
                cpu = cpu_seconds(proc.pid) - cpu0
                out.append((1e6 * cpu / max(1, r.delivered), r.latency_ms["p99"]))
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="HEAD~1", help="git revision for A (B is this tree)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rates", default="200,800,1500", help="messages/s, 100 bots")
    ap.add_argument("--clients", type=int, default=100, help="bots logged in")
    ap.add_argument("--senders", type=int, default=10, help="of the bots")
    ap.add_argument("--a-args", default="", help="extra server options for A")
    ap.add_argument("--b-args", default="", help="extra server options for B")
    a = ap.parse_args()
    extra = {"A": shlex.split(a.a_args), "B": shlex.split(a.b_args)}
    rates = [float(x) for x in a.rates.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), a.base],
            check=True,
        )
        try:
            runs: dict[str, list[list[tuple[float, float]]]] = {"A": [], "B": []}
            paths = {"A": f"{tree}/server:{tree}/sdk", "B": None}
            for i in range(a.rounds):
                for v in ("A", "B"):
                    db = Path(tmp) / f"{v}{i}.db"
                    runs[v].append(measure(paths[v], db, rates, a.senders, a.clients, extra[v]))
                    print(f"round {i + 1} {v}: {runs[v][-1]}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)])
    a_is = f"{a.base} {a.a_args}".strip()
    b_is = f"this tree {a.b_args}".strip()
    print(f"\nA = {a_is}, B = {b_is}; medians of {a.rounds} alternating runs")
    print("| msg/s | CPU ms/1k A | CPU ms/1k B | B/A | p99 ms A | p99 ms B |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, rate in enumerate(rates):
        ca = statistics.median(r[k][0] for r in runs["A"])
        cb = statistics.median(r[k][0] for r in runs["B"])
        pa = statistics.median(r[k][1] for r in runs["A"])
        pb = statistics.median(r[k][1] for r in runs["B"])
        print(f"| {rate:.0f} | {ca:.2f} | {cb:.2f} | {cb / ca:.2f} | {pa:.2f} | {pb:.2f} |")


if __name__ == "__main__":
    main()
