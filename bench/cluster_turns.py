"""A small room's latency on a two-node cluster while a large room bursts, A/B of two
trees in one run (docs/PERFORMANCE.md, "Turns on a cluster node").

    .venv/bin/python bench/cluster_turns.py [--base main] [--rounds 3] [--large 400]
        [--burst 20] [--bursts 10] [--interval 0.5] [--probes 50]

Two cluster nodes (real processes on this box's PostgreSQL and Redis, a fresh database
and prefix per round). Node 2 holds ``--large`` members of room "big" and one member of
room "small" (the probe); node 1 holds big's sender and small's talker, so every message
crosses the cluster's stream (docs/CLUSTER.md). Every ``--interval`` s the sender sends
``--burst`` messages to big at once (node 2 owes ``burst x large`` writes), ``--bursts``
times, while the talker sends ``--probes`` messages a second to small. Each message
carries its send time; the probe's reads give the small room's latency, one big
member's (the last to join) the large room's. Latency is from the send to the data's
arrival in the reader's socket (the kernel's timestamp), so the bench's own reading is
not in it, the box's load is: compare only the two sides of one run. The server of git
revision ``--base`` (A) and this tree's (B) alternate, A, B, A, B, ...; per side the
medians of the rounds' p50 and p99, and the median of each round's B/A p99 ratio (B
against the A just before it); and node 2's CPU per delivery it made over the run (its
process's, from /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from abtree import base_tree, pythonpath
from common import cpu_seconds, wait_idle
from irc_clients import _ANC, SO_TIMESTAMPNS, kernel_time

from cluster import servers

PASSWORD = "bench password"
_BROADCAST = b'"type":"broadcast"'


def login(port: int, name: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    frame: dict[str, object] = {
        "command": "login",
        "username": name,
        "password": PASSWORD,
        "features": ["rooms"],
    }
    request(s, frame, b'"login_ok"')
    return s


def request(s: socket.socket, frame: dict[str, object], answer: bytes) -> None:
    """Send ``frame`` on a blocking socket and read until ``answer`` appears."""
    s.sendall(json.dumps(frame).encode() + b"\n")
    buf = b""
    while answer not in buf:
        data = s.recv(65536)
        if not data:
            raise ConnectionError(f"closed before {answer!r}: {buf[-200:]!r}")
        buf += data


def pm(room: str | None, text: str) -> bytes:
    frame: dict[str, object] = {"command": "pm", "message": text}
    if room is not None:
        frame["room"] = room
    return json.dumps(frame).encode() + b"\n"


class Drain:
    """One thread reading and discarding what the crowd's sockets get (counting their
    broadcasts, to see nothing is lost)."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.broadcasts = 0  # written by the thread only
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def add(self, s: socket.socket) -> None:
        """Read ``s`` from now on: a member that has joined, so that the joins after it
        (a line each to every member, n²/2 in all) do not fill its outbox until the
        server drops it as a slow reader."""
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ)

    def _run(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.2):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    data = s.recv(1 << 20)
                except (BlockingIOError, ConnectionError):
                    continue
                self.broadcasts += data.count(_BROADCAST)


class Timed:
    """A reader of one socket recording each room message's latency (its text is
    ``"<tag> <time.monotonic() at send>"``) to the kernel's arrival time in the socket
    (SO_TIMESTAMPNS, bench/irc_clients.py's ``kernel_time``: the servers' share, without
    this process's delays in reading), and the lobby messages it sees."""

    def __init__(self, s: socket.socket, room: str) -> None:
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.s = s
        self.room = room
        self.latencies: list[float] = []
        self.lobby: list[str] = []
        self.seen = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buf = b""
        realtime = time.time() - time.monotonic()
        while True:
            try:
                data, anc, _, _ = self.s.recvmsg(1 << 16, _ANC)
            except OSError:
                return
            if not data:
                return
            now = kernel_time(anc, realtime, time.monotonic())
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if _BROADCAST not in line:
                    continue
                f = json.loads(line)
                with self.seen:
                    if f.get("room") == self.room:
                        self.latencies.append(now - float(f["message"].split()[1]))
                    elif f.get("room") is None:
                        self.lobby.append(f["message"])
                    self.seen.notify_all()

    def wait(self, pred: object, timeout: float) -> bool:
        with self.seen:
            return self.seen.wait_for(pred, timeout)  # type: ignore[arg-type]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return 1e3 * xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def one_round(args: argparse.Namespace, tmp: Path, env: dict[str, str] | None) -> dict[str, float]:
    with servers("cluster-2", tmp, env) as (n1, n2):
        sender, talker = login(n1.port, "sender"), login(n1.port, "talker")
        request(sender, {"command": "join", "room": "big", "id": 1}, b'"room_info"')
        request(talker, {"command": "join", "room": "small", "id": 1}, b'"room_info"')
        drain = Drain()
        drain.add(sender)
        crowd = []
        for i in range(args.large - 1):
            s = login(n2.port, f"m{i}")
            request(s, {"command": "join", "room": "big", "id": 1}, b'"room_info"')
            drain.add(s)
            crowd.append(s)
        watched = login(n2.port, "watched")  # the last to join: one big member, timed
        request(watched, {"command": "join", "room": "big", "id": 1}, b'"room_info"')
        probe = login(n2.port, "probe")
        request(probe, {"command": "join", "room": "small", "id": 1}, b'"room_info"')
        small, big = Timed(probe, "small"), Timed(watched, "big")
        drain.add(talker)
        talker.sendall(pm(None, "ready"))  # node 2 has applied every join before it
        # Behind the joins: a line each to every member, n²/2 in all.
        if not (
            small.wait(lambda: "ready" in small.lobby, 300)
            and big.wait(lambda: "ready" in big.lobby, 300)
        ):
            raise RuntimeError(
                f"node 2 did not deliver the joins within 300 s ({drain.broadcasts})"
            )
        for pid in (n1.pid, n2.pid):
            wait_idle(pid)
        duration = args.bursts * args.interval
        probes = int(duration * args.probes)

        def talk() -> None:
            start = time.perf_counter()
            for k in range(probes):
                wake = start + k / args.probes
                time.sleep(max(0.0, wake - time.perf_counter()))
                talker.sendall(pm("small", f"p{k} {time.monotonic()!r}"))

        t = threading.Thread(target=talk, daemon=True)
        cpu0 = cpu_seconds(n2.pid)
        t.start()
        start = time.perf_counter()
        for k in range(args.bursts):
            time.sleep(max(0.0, start + k * args.interval - time.perf_counter()))
            now = repr(time.monotonic())
            sender.sendall(b"".join(pm("big", f"b{k}.{j} {now}") for j in range(args.burst)))
        t.join(duration + 60)
        sent_big = args.bursts * args.burst
        ok = small.wait(lambda: len(small.latencies) >= probes, 120) and big.wait(
            lambda: len(big.latencies) >= sent_big, 120
        )
        cpu = cpu_seconds(n2.pid) - cpu0
        drain.stop.set()
        drain.thread.join(5)
        for s in [*crowd, sender, talker, probe, watched]:
            s.close()
        if not ok:
            raise RuntimeError(
                f"lost: small {len(small.latencies)}/{probes}, big {len(big.latencies)}/{sent_big}"
            )
        return {
            "small_p50": pct(small.latencies, 0.5),
            "small_p99": pct(small.latencies, 0.99),
            "big_p50": pct(big.latencies, 0.5),
            "big_p99": pct(big.latencies, 0.99),
            # Node 2's CPU per delivery it made (the large room's and the probe's).
            "node2_us": 1e6 * cpu / (sent_big * args.large + probes),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="main", help="git revision for A (B is this tree)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--large", type=int, default=400, help="big's members on node 2")
    ap.add_argument("--burst", type=int, default=20, help="messages to big at once")
    ap.add_argument("--bursts", type=int, default=10)
    ap.add_argument("--interval", type=float, default=0.5, help="s between bursts")
    ap.add_argument("--probes", type=float, default=50, help="small's messages a second")
    args = ap.parse_args()
    got: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory() as tmp, base_tree(args.base) as tree:
        env = {"A": {**os.environ, "PYTHONPATH": pythonpath(tree)}, "B": None}
        for i in range(args.rounds):
            for side in ("A", "B"):
                r = one_round(args, Path(tmp), env[side])
                got[side].append(r)
                load = os.getloadavg()[0]
                print(
                    f"round {i + 1} {side}: small p50/p99 {r['small_p50']:.1f}/"
                    f"{r['small_p99']:.1f} ms, big {r['big_p50']:.1f}/{r['big_p99']:.1f} ms, "
                    f"node 2 {r['node2_us']:.1f} µs/delivery "
                    f"(load average {load:.1f})",
                    flush=True,
                )
    print(
        f"\nA = {args.base}, B = this tree; {args.large} members of big on node 2, bursts "
        f"of {args.burst} every {args.interval} s from node 1, small probed "
        f"{args.probes:.0f}/s; medians of {args.rounds} rounds (ms)"
    )
    print("| side | small p50 | small p99 | big p50 | big p99 | node 2 µs/delivery |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for side in ("A", "B"):
        m = {k: statistics.median(r[k] for r in got[side]) for k in got[side][0]}
        print(
            f"| {side} | {m['small_p50']:.1f} | {m['small_p99']:.1f} | {m['big_p50']:.1f} "
            f"| {m['big_p99']:.1f} | {m['node2_us']:.1f} |"
        )
    ratios = [b["small_p99"] / a["small_p99"] for a, b in zip(got["A"], got["B"], strict=True)]
    print(f"small p99 B/A: {statistics.median(ratios):.2f} (median of the rounds' ratios)")


if __name__ == "__main__":
    main()
