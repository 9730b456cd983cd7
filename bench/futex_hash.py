"""GIL hand-overs while thousands of threads sleep in one lock, by futex hash size.

    .venv/bin/python bench/futex_hash.py [--sleepers 10000] [--processes 8]

What a mass disconnect looks like to the kernel: ``--sleepers`` threads asleep in one
lock (as the reset readers queued in ``ChatServer._ending`` are), while two other
threads hand the GIL back and forth (a lock round trip each way, as every blocking call
under contention does). Each measurement runs in a fresh process, because where the
kernel files a futex depends on its address: with Linux 6.16+'s default per-process
table (16 buckets on 2 cores), the GIL's futexes share the sleepers' bucket in some
processes and not in others, and every wait or wake-up on them then walks the sleepers'
chain with the bucket's spinlock held. ``widened`` sets the table to 32,768 buckets
first, as chat-server does (chatroom_server.futexhash).

Prints each process's microseconds per round trip and the time to wake all sleepers,
then the medians and worst cases of both settings. See docs/PERFORMANCE.md, "The futex
hash".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import _thread, json, sys, threading, time
from chatroom_server import futexhash
sleepers, widen, trips = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
if widen:
    futexhash.widen(32768)
threading.stack_size(64 * 1024)
gate = _thread.allocate_lock()
gate.acquire()
started, woken = [], []
def sleeper():
    started.append(1)
    gate.acquire()
    gate.release()
    woken.append(1)
for _ in range(sleepers):
    _thread.start_new_thread(sleeper, ())
deadline = time.monotonic() + 60
while len(started) < sleepers and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.2)  # the last of them from append() into the lock
a, b = _thread.allocate_lock(), _thread.allocate_lock()
a.acquire()
b.acquire()
def pong():
    for _ in range(trips):
        a.acquire()
        b.release()
t = threading.Thread(target=pong)
t.start()
began = time.perf_counter()
for _ in range(trips):
    a.release()
    b.acquire()
trip = (time.perf_counter() - began) / trips
t.join()
began = time.perf_counter()
gate.release()
while len(woken) < sleepers and time.perf_counter() - began < 60:
    time.sleep(0.005)
print(json.dumps({"slots": futexhash.slots(), "trip_us": trip * 1e6,
                  "wake_s": time.perf_counter() - began}))
"""


def run(sleepers: int, widen: bool, trips: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(sleepers), "1" if widen else "0", str(trips)],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sleepers", type=int, default=10_000)
    ap.add_argument("--processes", type=int, default=8, help="fresh processes per setting")
    ap.add_argument("--trips", type=int, default=5000, help="GIL round trips per process")
    args = ap.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"default": [], "widened": []}
    for i in range(args.processes):  # alternating, so a slow minute hits both
        for name in rows:
            r = run(args.sleepers, name == "widened", args.trips)
            rows[name].append(r)
            print(
                f"{name:8} process {i + 1}: {r['slots']:>6} buckets, "
                f"{r['trip_us']:7.1f} us per round trip, all woken in {r['wake_s']:.2f} s",
                flush=True,
            )
    print(f"\n{args.sleepers} threads asleep in one lock, {args.processes} processes each:")
    for name, rs in rows.items():
        trips = [r["trip_us"] for r in rs]
        wakes = [r["wake_s"] for r in rs]
        print(
            f"  {name:8} round trip median {statistics.median(trips):6.1f} us, "
            f"worst {max(trips):7.1f} us; wake-up median {statistics.median(wakes):.2f} s, "
            f"worst {max(wakes):.2f} s"
        )


if __name__ == "__main__":
    main()
