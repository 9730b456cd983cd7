"""``python -m tests.nemesis --seed S --duration 600 --target cluster|single|both``
``python -m tests.nemesis --check nemesis-runs/cluster-S/history.jsonl``

Runs the nemesis (docs/RELIABILITY.md): prints the seed first (the same seed, duration
and target replay the same faults), then the counts of operations and faults and every
anomaly, writes the history, the report and the processes' logs under ``--out``, and
exits 1 if the checker found an anomaly or the harness could not complete a step.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.nemesis.checker import check
from tests.nemesis.clients import DriverSettings
from tests.nemesis.harness import RunConfig, RunResult, run
from tests.nemesis.history import Meta, Op, describe, load
from tests.nemesis.report import write_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.nemesis",
        description="Randomised faults against the chat server, and a checker of what "
        "every client saw (docs/RELIABILITY.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--seed", type=int, help="the fault schedule's seed (default: random)")
    p.add_argument(
        "--duration",
        type=float,
        default=600.0,
        help="seconds of faults (per target with --target both: split in two)",
    )
    p.add_argument("--target", choices=["cluster", "single", "both"], default="cluster")
    p.add_argument("--users", type=int, default=8, help="simulated users")
    p.add_argument(
        "--crowd",
        type=int,
        default=0,
        help="members that only read, in lobby and a big room (and a third in a small "
        "room): over 128, both are sent in turns (tests/nemesis/crowd.py); 0: none",
    )
    p.add_argument(
        "--rate", type=float, default=DriverSettings.rate, help="operations per second per user"
    )
    p.add_argument(
        "--node-timeout", type=float, default=3.0, help="the cluster nodes' --node-timeout"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("nemesis-runs"),
        help="where each run's directory (history, report, logs) goes",
    )
    p.add_argument(
        "--check",
        type=Path,
        metavar="HISTORY",
        help="run nothing: check a recorded history.jsonl again and print what the checker "
        "finds, with the operations involved",
    )
    p.add_argument(
        "--report",
        type=Path,
        metavar="HTML",
        help="with --check: also write the run's HTML report again, to this file",
    )
    return p


def recheck(path: Path, html: Path | None = None) -> int:
    """``--check``: the checker on a recorded history, every anomaly with its events;
    with ``html``, the report again (from what the history's Meta says of the run)."""
    events = load(path)
    result = check(events)
    meta = next((e for e in events if isinstance(e, Meta)), None)
    if html is not None and meta is not None:
        config = RunConfig(
            seed=meta.seed,
            duration=meta.duration,
            target=meta.target,
            out=path.parent,
            users=len(meta.users),
            node_timeout=float(meta.options.get("node_timeout", 3.0)),
        )
        seconds = max((e.t for e in events), default=0.0)
        marker = next((e.seq for e in events if isinstance(e, Op) and e.kind == "marker"), None)
        outcome = RunResult(config, path.parent, events, [], result, [], seconds, marker)
        write_report(outcome, html)
        print(f"report: {html}")
    for k, v in result.stats.items():
        print(f"  {k}: {v}")
    for note in result.notes:
        print(f"note: {note}")
    print(f"anomalies: {len(result.anomalies)}")
    for a in result.anomalies:
        print(f"\n{a.describe()}")
        for ev in a.events:
            print(f"    {describe(ev, 70)}")
    return 1 if result.anomalies else 0


def report(result: RunResult) -> None:
    c, res = result.config, result.check
    print(
        f"\n== {c.target}, seed {c.seed}: {'OK' if result.ok else 'FAILED'} "
        f"({result.seconds:.0f} s)"
    )
    ops = {k: v for k, v in res.stats.items() if k.startswith("op ")}
    faults = {k[6:]: v for k, v in res.stats.items() if k.startswith("fault ")}
    print("operations: " + ", ".join(f"{k[3:]} {v}" for k, v in ops.items()))
    print(f"faults ({sum(faults.values())}): " + ", ".join(f"{k} {v}" for k, v in faults.items()))
    for key in (
        "messages stored (seen)",
        "deliveries (wire)",
        "deliveries (hooks)",
        "required receipts",
        "connections",
        "chains",
        "history pages",
        "final log",
        "crowd members",
        "crowd connections",
        "crowd frames received",
    ):
        if key in res.stats:
            print(f"  {key}: {res.stats[key]}")
    for p in result.problems + res.notes:
        print(f"problem: {p}")
    for p in result.not_exercised:
        print(f"not exercised: {p}")
    print(f"anomalies: {len(res.anomalies)}")
    for a in res.anomalies:
        print(f"  {a.describe()}")
    print(f"history, report and logs: {result.directory}")
    print(f"replay: {c.replay_command()}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.check is not None:
        return recheck(args.check, args.report)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**9)
    targets = ["cluster", "single"] if args.target == "both" else [args.target]
    duration = args.duration / len(targets)
    print(
        f"nemesis seed {seed} (replay: --seed {seed} --duration {args.duration:g} "
        f"--target {args.target})",
        flush=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=args.out / f"nemesis-{seed}.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s",
    )
    failed = False
    for target in targets:
        config = RunConfig(
            seed=seed,
            duration=duration,
            target=target,
            out=args.out,
            users=args.users,
            node_timeout=args.node_timeout,
            crowd=args.crowd,
            settings=DriverSettings(rate=args.rate),
        )
        start = time.monotonic()

        def progress(text: str, start: float = start) -> None:
            print(f"[{time.monotonic() - start:6.1f} s] {text}", flush=True)

        result = run(config, progress)
        report(result)
        failed = failed or not result.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
