"""IRC fan-out: the same workload, sent by IRC clients, to our gateway and to ngircd,
side by side in one run (docs/IRC.md, docs/PERFORMANCE.md).

N IRC clients register (PASS, NICK, USER), join the channel, and S of them send PRIVMSG
to it open-loop at R messages/s in total, each message carrying its intended send time
(CLOCK_MONOTONIC, the same in every process here). Every other client is a recipient,
so a step expects R x (N - 1) deliveries a second. Receivers run on an epoll loop in
``--procs`` processes (2), which read and drop what the JOINs sent them before the first
step. Per step: delivered/s, lost (not delivered within ``--drain`` s of its end),
p50/p99 from the intended send time and from the actual send, the server's and the
generator's CPU per delivery, and how late the generator's sends went out; with
``--by-size`` the latency per class of room size, with ``--passes`` our fan-out's pass
times. Sustainable = nothing lost and p99 under 50 ms. Beside it, ``p50/p99_kernel``:
from the actual send to the line's arrival in the recipient's socket (the kernel's
timestamp, SO_TIMESTAMPNS), the server's share without the generator's own delays,
which at 10,000 clients in one process are tens of ms (``kernel_time``).

    .venv/bin/python bench/irc_fanout.py [--clients 100] [--senders 10]
                                         [--rates 1000,2000,4000,8000] [--duration 4]
                                         [--room-size 10 | --zipf ROOMS]
                                         [--base REV] [--rounds 3] [--turns 32,64]

Rooms (issue 35): ``--room-size K`` puts the clients in channels of K (``#r0``, ``#r1``,
...), ``--zipf R`` in R channels whose sizes follow Zipf's law (the k-th room 1/k of the
first's: one large room and many small ones; every room at least 2). Every room gets the
same share of the messages, in turn, sent by its first member; a message is expected by
the room's other members. The turn goes by size, the largest room first, unless
``--shuffle SEED`` draws the order (the same for every server of the run): by size the
largest rooms' messages come together. ``--base REV`` runs our server of another git revision too
(as bench/ab.py does), and ``--rounds`` alternates the servers (ours, base, ngircd, ours,
...) to print medians per step: the box is noisy, and only alternating runs compare.
``--turns 32,64,4ms`` runs ours once per value of fanturns.py's tuning knob
(``CHATROOM_FANOUT_TURN``, docs/OPERATIONS.md) in each round instead of once, and with
``--by-size`` prints the medians of the rounds per room size class, a column per server.

ngircd runs with MaxPenaltyTime = 0 (no flood penalties, as the performance anchors
measured it) and our server with --rate-limit off: the flood control is not what is
measured. ``--guests`` registers our clients as guests (docs/IRC.md, ``--irc-guests``):
an account's user is in ``#lobby`` too, so each arrival is a JOIN to everyone, and
10,000 arrivals (issue 35) are 10^8 lines that no client reads while the rest register
(the server drops them as stalled); a guest is in its room only, as an ngircd client is.
Needs Debian's ngircd (make bench-irc installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from abtree import base_tree, pythonpath
from common import SERVERS
from irc_clients import free_port, worker
from irc_ngircd import installed, ngircd
from irc_report import by_size, report

from chatroom.testing import ServerProcess
from chatroom_bots.load import procstat

CHANNEL = "#lobby"
TURN = "turn="  # a kind of ours run with a turn policy (--turns)
TURN_ENV = "CHATROOM_FANOUT_TURN"  # chatroom_server.fanturns.TURN_ENV


def rooms_of(args: argparse.Namespace) -> list[int]:
    """The sizes of the rooms (one room of everyone without --room-size or --zipf)."""
    n = args.clients
    if args.zipf:
        weights = [1 / k for k in range(1, args.zipf + 1)]
        sizes = [max(2, int(n * w / sum(weights))) for w in weights]
        sizes[0] += n - sum(sizes)  # the rest (or the excess) in the large room
        if sizes[0] < 2:
            sys.exit(f"{n} clients are too few for {args.zipf} rooms of at least 2")
        return sizes
    if args.room_size:
        if n % args.room_size:
            sys.exit("--clients must be a multiple of --room-size")
        return [args.room_size] * (n // args.room_size)
    return [n]


def run(
    kind: str, args: argparse.Namespace, tmp: Path, base: Path | None = None
) -> list[dict[str, float]]:
    port = free_port()
    if kind in ("ours", "base") or kind.startswith(TURN):
        cmd = [
            *SERVERS["ours"],
            *("--password-hash", "load-test", "--irc-port", str(port)),
            *("--port", "0", "--db", str(tmp / f"irc-{time.monotonic_ns()}.db")),
            *("--idle-timeout", "0"),
            *(["--irc-guests"] if args.guests else []),
            *(["--admin-port", str(admin)] if (admin := free_port() if args.passes else 0) else []),
        ]
        env = None
        if kind.startswith(TURN):  # fanturns.py's knob (docs/OPERATIONS.md)
            env = {**os.environ, TURN_ENV: kind[len(TURN) :]}
        if kind == "base":
            assert base is not None
            env = {**os.environ, "PYTHONPATH": pythonpath(base)}
        with ServerProcess(cmd=cmd, env=env) as server:
            return measure(server.pid, [port], args, admin)
    # Several ports: each has ngircd's accept queue of 10 (register_many).
    ports = [port, *(free_port() for _ in range(args.ngircd_ports - 1))]
    with ngircd(tmp, ports) as pid:
        return measure(pid, ports, args)


def answer(pipe: Connection, proc: mp.process.BaseProcess, most: float = 900) -> Any:
    """The worker's next message; an error if it died first (not a hang: the other
    workers would hold their thousands of connections open for ever)."""
    end = time.monotonic() + most
    while not pipe.poll(1.0):
        if not proc.is_alive():
            raise RuntimeError(f"a generator process died (exit code {proc.exitcode})")
        if time.monotonic() > end:
            raise TimeoutError("a generator process did not answer")
    return pipe.recv()


def passes(admin: int) -> dict[str, float]:
    """Our fan-out's passes so far by how long they took (cumulative, le -> count), from
    the admin endpoint's /metrics (docs/OPERATIONS.md)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10).read()
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line.startswith("chat_fanout_pass_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[le] = float(line.rsplit(" ", 1)[1])
    return out


def measure(
    pid: int, ports: list[int], args: argparse.Namespace, admin: int = 0
) -> list[dict[str, float]]:
    ctx = mp.get_context("spawn")
    sizes = rooms_of(args)
    one_room = len(sizes) == 1
    clients: list[tuple[str, str]] = []  # (nick, channel)
    firsts: list[int] = []  # each room's first client
    for r, size in enumerate(sizes):
        firsts.append(len(clients))
        channel = CHANNEL if one_room else f"#r{r}"
        clients += [(f"b{len(clients) + j}", channel) for j in range(size)]
    # The message slots: one room, its first ``--senders`` clients in turn (as before);
    # rooms, each room once (sent by its first member). Slot -> (client, room).
    if one_room:
        slots = [(i, 0) for i in range(args.senders)]
    else:
        slots = [(first, r) for r, first in enumerate(firsts)]
        if args.shuffle is not None:
            # In size order the largest rooms' messages come together, ten of them in the
            # first 10 ms of every second at 1,000 msg/s: a burst of some 4,000 writes
            # that no room's own rate makes (docs/PERFORMANCE.md, "Where a large room's
            # message waits"). A seeded order spreads them as unrelated rooms would; every
            # server of the run gets the same order.
            random.Random(args.shuffle).shuffle(slots)
    # The generator's processes, each a contiguous share of the clients (so a room's
    # members are mostly in one process: a big room's message is a burst there).
    procs_n = max(1, args.procs)
    cuts = [len(clients) * k // procs_n for k in range(procs_n + 1)]
    pipes, procs = [], []
    for lo, hi in itertools.pairwise(cuts):
        mine = {k: (c - lo, clients[c][1]) for k, (c, _) in enumerate(slots) if lo <= c < hi}
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker, args=(ports, clients[lo:hi], mine, len(slots), child))
        p.start()
        pipes.append(parent)
        procs.append(p)
    for pipe, p in zip(pipes, procs, strict=True):
        assert answer(pipe, p) == "registered"
    for pipe, p in zip(pipes, procs, strict=True):  # one process at a time (join_all)
        pipe.send("join")
        assert answer(pipe, p) == "joined"
    for pipe in pipes:
        pipe.send("drain")
    drained = sum(answer(pipe, p) for pipe, p in zip(pipes, procs, strict=True))
    print(f"   read {drained / 1e6:.1f} MB sent to the clients before the first step", flush=True)
    rows = []
    try:
        for rate in [float(r) for r in args.rates.split(",")]:
            before = passes(admin) if admin else {}
            cpu0 = procstat.sample(pid)
            gen0 = [procstat.sample(p.pid) for p in procs]
            t0 = time.monotonic() + 0.3
            for pipe in pipes:
                pipe.send((t0, t0 + args.duration, rate, args.drain))
            results = [pipe.recv() for pipe in pipes]
            cpu1 = procstat.sample(pid)
            gen1 = [procstat.sample(p.pid) for p in procs]
            per_slot: dict[int, int] = {}
            for r in results:
                for slot, n in r[0].items():
                    per_slot[slot] = per_slot.get(slot, 0) + n
            delivered = sum(r[1] for r in results)
            lat = sorted(x for r in results for x in r[2])
            late = sorted(x for r in results for x in r[4])
            from_sent = sorted(x for r in results for x in r[5])
            kernel = sorted(x for r in results for x in r[6])
            expected = sum(n * (sizes[slots[k][1]] - 1) for k, n in per_slot.items())
            gen_cpu = sum(
                (b.cpu_seconds if b else 0) - (a.cpu_seconds if a else 0)
                for a, b in zip(gen0, gen1, strict=True)
            )
            row = {
                "rate": rate,
                "delivered_per_s": delivered / args.duration,
                "lost": max(0, expected - delivered),
                "p50_ms": 1e3 * statistics.median(lat) if lat else 0.0,
                "p99_ms": 1e3 * lat[int(0.99 * (len(lat) - 1))] if lat else 0.0,
                "cpu_us": 1e6
                * ((cpu1.cpu_seconds if cpu1 else 0) - (cpu0.cpu_seconds if cpu0 else 0))
                / max(1, delivered),
                # The generator's own share: its CPU per delivery, and how late its sends
                # went out (p99): a late send is the generator's latency, not the server's.
                "gen_cpu_us": 1e6 * gen_cpu / max(1, delivered),
                "gen_late_p99_ms": 1e3 * late[int(0.99 * (len(late) - 1))] if late else 0.0,
                "p99_from_sent_ms": 1e3 * from_sent[int(0.99 * (len(from_sent) - 1))]
                if from_sent
                else 0.0,
                # From the actual send to the arrival in the socket (kernel_time).
                "p50_kernel_ms": 1e3 * statistics.median(kernel) if kernel else 0.0,
                "p99_kernel_ms": 1e3 * kernel[int(0.99 * (len(kernel) - 1))] if kernel else 0.0,
            }
            rows.append(row)
            print(row, flush=True)
            if admin:  # how long the step's fan-out passes took (whose latency is it?)
                after = passes(admin)
                diff = {le: after[le] - before.get(le, 0) for le in after}
                print("   fan-out passes, at most le s:", diff, flush=True)
            if args.by_size and not one_room:
                row.update(by_size(sizes, results))
    finally:
        for pipe in pipes:
            pipe.send("stop")
        for p in procs:
            p.join(10)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--senders", type=int, default=10, help="in one room (not with rooms)")
    ap.add_argument("--rates", default="1000,2000,4000,8000")
    ap.add_argument("--duration", type=float, default=4.0)
    rooms = ap.add_mutually_exclusive_group()
    rooms.add_argument("--room-size", type=int, default=0, help="channels of this many")
    rooms.add_argument("--zipf", type=int, default=0, metavar="ROOMS", help="Zipf sizes")
    ap.add_argument("--base", help="also our server of this git revision (bench/ab.py's way)")
    ap.add_argument("--rounds", type=int, default=1, help="alternating runs of every server")
    ap.add_argument(
        "--guests",
        action="store_true",
        help="our clients as guests (--irc-guests): in their room only, as on ngircd",
    )
    ap.add_argument("--no-ngircd", action="store_true", help="ours (and --base) only")
    ap.add_argument("--ngircd-only", action="store_true", help="ngircd only")
    ap.add_argument("--procs", type=int, default=2, help="the generator's processes")
    ap.add_argument(
        "--passes", action="store_true", help="ours: its fan-out passes' times per step"
    )
    ap.add_argument(
        "--drain", type=float, default=2.0, help="s to wait for deliveries after a step"
    )
    ap.add_argument(
        "--ngircd-ports", type=int, default=8, help="ngircd's listening ports (register_many)"
    )
    ap.add_argument("--by-size", action="store_true", help="latency per room size class")
    ap.add_argument(
        "--shuffle",
        type=int,
        metavar="SEED",
        help="rooms' turns to send in an order drawn with SEED, not by size (with rooms)",
    )
    ap.add_argument(
        "--turns",
        metavar="SPECS",
        help="ours once per turn policy, e.g. 32,64,4ms (fanturns.py's $" + TURN_ENV + ")",
    )
    args = ap.parse_args()
    ours = [TURN + spec for spec in args.turns.split(",")] if args.turns else ["ours"]
    kinds = [*ours, *(["base"] if args.base else []), *([] if args.no_ngircd else ["ngircd"])]
    if args.ngircd_only:
        kinds = ["ngircd"]
    if "ngircd" in kinds and not installed():
        sys.exit("ngircd is not installed: make bench-irc installs it")
    sizes = rooms_of(args)
    table: dict[str, list[list[dict[str, float]]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        base = stack.enter_context(base_tree(args.base)) if args.base else None
        for i in range(args.rounds):
            for kind in kinds:
                print(f"== round {i + 1}: {kind}", flush=True)
                table[kind].append(run(kind, args, Path(tmp), base))
    names = {"ours": "ours (this tree)", "base": f"ours at {args.base}", "ngircd": "ngircd"}
    names |= {k: f"ours, {TURN_ENV}={k[len(TURN) :]}" for k in kinds if k.startswith(TURN)}
    report(args, sizes, names, table)


if __name__ == "__main__":
    main()
