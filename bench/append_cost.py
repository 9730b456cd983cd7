"""What storing a message costs the fan-out: :meth:`MessageLog.append` alone, this tree
against another git revision, alternating in one run.

    .venv/bin/python bench/append_cost.py [--base main] [--rounds 5] [--groups 3000]

In a small room at a quiet rate each message is a fan-out pass, and so a group commit,
of its own (docs/PERFORMANCE.md, "Issue 35 again"), so what one ``append`` costs is paid
once per message and shared by its few deliveries. Each side, in a fresh process and a
fresh database of 20,000 messages, stores ``--groups`` groups of one message and then
of ten, as the server's chat-load traffic makes them: room messages with a cid, and the
same with a fifth of them DMs. Reported: this thread's CPU (``time.thread_time``) per
group, the mean (WAL checkpoints included: they are part of the price) and the median,
each the median over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from abtree import THIS_TREE, base_tree, pythonpath

# (name, messages a group, share of DMs)
SHAPES = (("rooms, 1", 1, 0.0), ("rooms, 10", 10, 0.0), ("a fifth DMs, 1", 1, 0.2))


def worker(groups: int) -> dict[str, tuple[float, float]]:
    """In this process: each shape's (mean, median) µs of CPU per ``append``."""
    from chatroom_server.messagelog import MessageLog, NewMessage

    def message(i: int, dms: float) -> NewMessage:
        sender = f"user{i % 100}"
        if dms and i % round(1 / dms) == 0:
            return NewMessage(
                sender, f"user{(i + 1) % 100}", "a line of chat text " * 2, 1.0, f"c{i}"
            )
        return NewMessage(
            sender, None, "a line of chat text " * 2, 1.0, f"c{i}", room=f"r{i % 100}"
        )

    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, size, dms in SHAPES:
            mlog = MessageLog(Path(tmp) / f"{size}-{dms}.db")
            try:
                mlog.append([message(i, dms) for i in range(20_000)])
                n = 20_000
                took = []
                for _ in range(groups):
                    group = [message(n + k, dms) for k in range(size)]
                    n += size
                    began = time.thread_time()
                    mlog.append(group)
                    took.append(time.thread_time() - began)
            finally:
                mlog.close()
            out[name] = (1e6 * statistics.fmean(took), 1e6 * statistics.median(took))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="main", help="git revision for A (B is this tree)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--groups", type=int, default=3000)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.groups)))
        return
    got: dict[str, list[dict[str, list[float]]]] = {"A": [], "B": []}
    with base_tree(a.base) as tree:
        paths = {"A": pythonpath(tree), "B": THIS_TREE}
        for i in range(a.rounds):
            for v in ("A", "B"):
                env = {**os.environ, "PYTHONPATH": paths[v]}
                cmd = [sys.executable, __file__, "--worker", "--groups", str(a.groups)]
                res = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
                got[v].append(json.loads(res.stdout))
                print(f"round {i + 1} {v}: {got[v][-1]}", flush=True)
    load = os.getloadavg()[0]
    print(f"\nA = {a.base}, B = this tree; CPU µs per append, medians of {a.rounds} rounds")
    print(f"(load average {load:.1f} at the end)")
    print("| group | A mean | B mean | B/A | A median | B median | B/A |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, _, _ in SHAPES:
        am = statistics.median(r[name][0] for r in got["A"])
        bm = statistics.median(r[name][0] for r in got["B"])
        a50 = statistics.median(r[name][1] for r in got["A"])
        b50 = statistics.median(r[name][1] for r in got["B"])
        print(
            f"| {name} | {am:.1f} | {bm:.1f} | {bm / am:.2f} | {a50:.1f} | {b50:.1f} | "
            f"{b50 / a50:.2f} |"
        )


if __name__ == "__main__":
    main()
