"""Context switches and CPU per message of the server, from /proc, A/B of two trees.

    .venv/bin/python bench/thread_switches.py --base main [--rounds 3] [--rates 500]
        [--clients 1000] [--rooms 100] [--senders 100] [--seconds 10]

What a message costs the server besides its CPU: how often its threads go to sleep
(voluntary context switches: a reader back into ``recv``, a wait for the GIL or a lock)
and are put off the CPU (involuntary: preempted, on this shared box mostly by other
processes). Read from every thread's ``/proc/PID/task/TID/{stat,status}`` before and after
a step of bench/ab.py's workload (``--rooms 100`` of 1,000 clients: rooms of 10), summed
over the threads and divided by the messages sent; also the threads that did any work in
the step. A (git revision ``--base``) and B (this tree) alternate, as in bench/ab.py. The
load average is printed with each round: the involuntary switches, and the GIL waits that
follow a preempted holder, grow with it (docs/PERFORMANCE.md, "Issue 35 again").
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from ab import on_server
from abtree import ROOT, base_tree, pythonpath

from chatroom_bots.load import Swarm

TICK = os.sysconf("SC_CLK_TCK")

# Per thread id: (CPU ticks, voluntary switches, involuntary switches).
Threads = dict[str, tuple[int, int, int]]
# Per message: CPU µs, voluntary and involuntary switches; threads busy; p99 ms.
Row = tuple[float, float, float, int, float]


def threads(pid: int) -> Threads:
    out: Threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        cpu = int(fields[11]) + int(fields[12])  # utime + stime
        vol = int(status["voluntary_ctxt_switches"])
        invol = int(status["nonvoluntary_ctxt_switches"])
        out[tid] = (cpu, vol, invol)
    return out


def per_message(rate: float, seconds: float) -> Callable[[Swarm, int], Row]:
    def work(swarm: Swarm, pid: int) -> Row:
        swarm.step(rate, 2.0)  # warm: every room has had messages
        before = threads(pid)
        r = swarm.step(rate, seconds)
        after = threads(pid)
        msgs = max(1, r.sent_pm)
        cpu = vol = invol = busy = 0
        for tid, (c, v, n) in after.items():
            c0, v0, n0 = before.get(tid, (0, 0, 0))
            cpu, vol, invol = cpu + c - c0, vol + v - v0, invol + n - n0
            busy += int(c > c0 or v > v0)
        us = 1e6 * cpu / TICK / msgs
        return us, vol / msgs, invol / msgs, busy, r.latency_ms["p99"]

    return work


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="HEAD~1", help="git revision for A (B is this tree)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=500.0, help="messages/s")
    ap.add_argument("--seconds", type=float, default=10.0, help="of the measured step")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--senders", type=int, default=100)
    ap.add_argument("--rooms", type=int, default=100)
    args = ap.parse_args()
    got: dict[str, list[Row]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory() as tmp, base_tree(args.base) as tree:
        paths = {
            "A": pythonpath(tree, "sdk", "server", "bots"),
            "B": pythonpath(ROOT, "sdk", "server", "bots"),
        }
        for i in range(args.rounds):
            for side in ("A", "B"):
                row = on_server(
                    paths[side],
                    Path(tmp) / f"{side}{i}.db",
                    args.senders,
                    args.clients,
                    [],
                    per_message(args.rate, args.seconds),
                    rooms=args.rooms,
                )
                got[side].append(row)
                us, vol, invol, busy, p99 = row
                print(
                    f"round {i + 1} {side}: {us:.1f} µs/message, {vol:.2f} voluntary "
                    f"and {invol:.2f} involuntary switches/message, {busy} threads "
                    f"busy, p99 {p99:.1f} ms, load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    print(f"\nA = {args.base}, B = this tree; medians of {args.rounds} alternating rounds")
    print("| | CPU µs/message | voluntary/message | involuntary/message | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for side in ("A", "B"):
        cols = list(zip(*got[side], strict=True))
        med = [statistics.median(c) for c in cols]
        print(f"| {side} | {med[0]:.1f} | {med[1]:.2f} | {med[2]:.2f} | {med[4]:.1f} |")


if __name__ == "__main__":
    main()
