"""Mass JOINs into a large room while it is flooded (issue 35; docs/PERFORMANCE.md).

A room of ``--members`` IRC guests (``#big``) gets ``--rate`` messages a second from one
of them, open-loop, each carrying its intended send time; while the flood runs,
``--joiners`` more guests JOIN it, ``--burst`` at a time (each wave once the last one's
joins are answered). Every JOIN is a line to each member, made under the fan-out's lock
(``FanOut.exclusive``, handed over in turn: chatroom_server.handover), between the
flood's turns (chatroom_server.fanturns). Measured, from one epoll loop that reads every
client:

- each JOIN's time from its send to its end of NAMES (366), p50 / p99 / max, and how
  many were refused ("try again": the fan-out did not change hands for 10 s);
- the flood's latency at every member (p50 / p99 / max) before and during the joins;
- lost or twice-delivered flood messages: each member must get every message sent after
  it joined once and in order (a joiner's first is whichever followed its JOIN), so a
  gap or a repeat in a member's sequence is counted.

    .venv/bin/python bench/join_flood.py [--members 500] [--joiners 1000] [--burst 100]
                                         [--rate 20] [--base REV] [--rounds 1]

``--base REV`` runs our server of another git revision too (bench/ab.py's way), and
``--rounds`` alternates the two. Load to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import statistics
import tempfile
import time
from pathlib import Path

from abtree import base_tree, pythonpath
from common import SERVERS
from irc_clients import _ANC, SO_TIMESTAMPNS, free_port, kernel_time, register_many, wait_all

from chatroom.testing import ServerProcess
from chatroom_bots.load import procstat

ROOM = "#big"


def pct(xs: list[float], q: float) -> float:
    return 1e3 * sorted(xs)[int(q * (len(xs) - 1))] if xs else 0.0


class Member:
    """One client's socket and what it read: the flood's numbers, in order."""

    __slots__ = ("buf", "got", "joined_at", "landed", "sent_join", "sock", "tries")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.got: list[int] = []  # the flood's message numbers, as they arrived
        self.sent_join = 0.0
        self.joined_at = 0.0
        self.landed = 0.0  # the kernel's arrival time of the read with the 366
        self.tries = 0


def measure(pid: int, port: int, args: argparse.Namespace) -> dict[str, float]:
    n = args.members + args.joiners
    nicks = [(f"j{i}", ROOM) for i in range(n)]
    socks = register_many([port], nicks)
    members = [Member(s) for s in socks]
    # The room, before the flood: JOINed 50 at a time, each wave answered.
    for lo in range(0, args.members, 50):
        group = socks[lo : min(lo + 50, args.members)]
        line = f"JOIN {ROOM}\r\n".encode()
        for s in group:
            s.sendall(line)
        wait_all(group, b" 366 ", retry={s: line for s in group})
    sel = selectors.DefaultSelector()
    for m in members:
        m.sock.setblocking(False)
        m.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sel.register(m.sock, selectors.EVENT_READ, m)
    # Drop what the room's JOINs sent (n²/2 lines) before measuring.
    while events := sel.select(1.0):
        for key, _ in events:
            try:
                key.fileobj.recv(1 << 18)  # type: ignore[union-attr]
            except BlockingIOError:
                pass
    sender = members[0]
    realtime = time.time() - time.monotonic()  # the kernel's clock to the monotonic one
    cpu0 = procstat.sample(pid)
    flood_lat: list[tuple[float, float]] = []  # (arrived, latency)
    join_times: list[float] = []
    refused = 0
    interval = 1 / args.rate
    t0 = time.monotonic() + 0.2
    joins_from = t0 + args.lead  # the flood alone first, then the joins
    waiting: list[Member] = []  # this wave's joiners not yet answered
    nxt_joiner = args.members
    k = 0  # the next flood message
    end: float | None = None  # the flood's end: once every joiner is in, plus ``--tail``
    while True:
        now = time.monotonic()
        if (end is None or now < end) and t0 + k * interval <= now:
            msg = f"PRIVMSG {ROOM} :t={t0 + k * interval:.6f} n={k} x\r\n".encode()
            sender.sock.send(msg)  # small, to a server that reads: never EAGAIN here
            k += 1
            continue
        if now >= joins_from and not waiting and nxt_joiner < n:
            wave = members[nxt_joiner : nxt_joiner + args.burst]
            nxt_joiner += len(wave)
            for m in wave:
                m.sent_join = time.monotonic()
                m.sock.send(f"JOIN {ROOM}\r\n".encode())
            waiting = list(wave)
        if end is None and nxt_joiner >= n and not waiting:
            end = now + args.tail
        if end is not None and now > end + args.drain:
            break
        timeout = max(0.0, min(t0 + k * interval - now, 0.05))
        for key, _ in sel.select(timeout):
            m = key.data
            try:
                data, anc, _, _ = m.sock.recvmsg(1 << 18, _ANC)
            except BlockingIOError:
                continue
            if not data:
                raise ConnectionError(f"closed by the server: {bytes(m.buf[-300:])!r}")
            arrived = time.monotonic()
            landed = kernel_time(anc, realtime, arrived)
            m.buf += data
            cut = m.buf.rfind(b"\n")
            if cut < 0:
                continue
            for line in bytes(m.buf[: cut + 1]).split(b"\r\n"):
                i = line.find(b":t=")
                if i >= 0 and b" PRIVMSG " in line:
                    j = line.index(b" n=", i)
                    flood_lat.append((arrived, arrived - float(line[i + 3 : j])))
                    m.got.append(int(line[j + 3 : line.index(b" ", j + 3)]))
                elif m.sent_join and not m.joined_at and b" 366 " in line:
                    m.joined_at = arrived
                    m.landed = landed
                    join_times.append(arrived - m.sent_join)
                    waiting.remove(m)
                elif m.sent_join and not m.joined_at and b" :try again" in line:
                    refused += 1
                    m.tries += 1
                    m.sock.send(f"JOIN {ROOM}\r\n".encode())
                elif line.startswith(b"PING"):
                    m.sock.send(b"PONG" + line[4:] + b"\r\n")
            del m.buf[: cut + 1]
    cpu1 = procstat.sample(pid)
    sel.close()
    # Every member: each message once, in order, none missing from its first to the last.
    lost = twice = disorder = 0
    for m in members[1:]:
        if not m.got:
            lost += k  # a member that got nothing at all
            continue
        first = m.got[0] if m.sent_join else 0
        twice += len(m.got) - len(set(m.got))
        disorder += sum(1 for a, b in zip(m.got, m.got[1:], strict=False) if b <= a)
        lost += len(set(range(first, k)) - set(m.got))
    for s in socks:
        s.close()
    during = [lat for at, lat in flood_lat if at >= joins_from and (end is None or at <= end)]
    before = [lat for at, lat in flood_lat if at < joins_from]
    # The server's share of a JOIN: to its 366's arrival in the socket, not to our read.
    to_socket = [m.landed - m.sent_join for m in members if m.joined_at]
    lines = sum(range(args.members, n))  # a JOIN line to each member, the joiner too
    cpu = (cpu1.cpu_seconds if cpu1 else 0) - (cpu0.cpu_seconds if cpu0 else 0)
    return {
        "flood_sent": k,
        "join_p50_ms": 1e3 * statistics.median(join_times) if join_times else 0.0,
        "join_p99_ms": pct(join_times, 0.99),
        "join_max_ms": pct(join_times, 1.0),
        "join_kernel_p50_ms": 1e3 * statistics.median(to_socket) if to_socket else 0.0,
        "join_kernel_p99_ms": pct(to_socket, 0.99),
        "joins_s": (max(m.joined_at for m in members if m.joined_at) - joins_from)
        if join_times
        else 0.0,
        "refused": refused,
        # The server's CPU a JOIN line (the flood's deliveries included, as many lines as
        # the JOINs' or more: 20 a second to up to 1,500 members), and a line of either.
        "cpu_us_line": 1e6 * cpu / max(1, lines),
        "flood_lines": len(flood_lat),
        "cpu_us_any_line": 1e6 * cpu / max(1, lines + len(flood_lat)),
        "flood_before_p99_ms": pct(before, 0.99),
        "flood_during_p50_ms": 1e3 * statistics.median(during) if during else 0.0,
        "flood_during_p99_ms": pct(during, 0.99),
        "flood_during_max_ms": pct(during, 1.0),
        "lost": lost,
        "twice": twice,
        "out_of_order": disorder,
    }


def run(kind: str, args: argparse.Namespace, tmp: Path, base: Path | None) -> dict[str, float]:
    port = free_port()
    cmd = [
        *SERVERS["ours"],
        *("--password-hash", "load-test", "--irc-port", str(port), "--irc-guests"),
        *("--port", "0", "--db", str(tmp / f"join-{time.monotonic_ns()}.db")),
        *("--idle-timeout", "0"),
    ]
    env = None
    if kind == "base":
        assert base is not None
        env = {**os.environ, "PYTHONPATH": pythonpath(base)}
    with ServerProcess(cmd=cmd, env=env) as server:
        return measure(server.pid, port, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--members", type=int, default=500, help="in the room before the flood")
    ap.add_argument("--joiners", type=int, default=1000, help="JOIN it during the flood")
    ap.add_argument("--burst", type=int, default=100, help="JOINs sent at once, per wave")
    ap.add_argument("--rate", type=float, default=20.0, help="flood messages a second")
    ap.add_argument("--lead", type=float, default=2.0, help="s of flood before the joins")
    ap.add_argument("--tail", type=float, default=1.0, help="s of flood after the joins")
    ap.add_argument("--drain", type=float, default=3.0, help="s to read after the flood")
    ap.add_argument("--base", help="also our server of this git revision")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    kinds = ["ours", *(["base"] if args.base else [])]
    table: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        base = stack.enter_context(base_tree(args.base)) if args.base else None
        for i in range(args.rounds):
            for kind in kinds:
                print(f"== round {i + 1}: {kind}", flush=True)
                row = run(kind, args, Path(tmp), base)
                print(row, flush=True)
                table[kind].append(row)
    names = {"ours": "ours (this tree)", "base": f"ours at {args.base}"}
    print(
        f"\n{args.joiners} JOINs ({args.burst} at a time) into a room of {args.members} "
        f"flooded at {args.rate:g} msg/s; medians of {args.rounds} round(s)"
    )
    fields = list(table[kinds[0]][0])
    print("| server | " + " | ".join(fields) + " |")
    print("| --- |" + " ---: |" * len(fields))
    for kind, rows in table.items():
        cells = []
        for f in fields:
            xs = [r[f] for r in rows]
            worst = f in ("lost", "twice", "out_of_order", "refused")
            v = max(xs) if worst else statistics.median(xs)
            whole = worst or f in ("flood_sent", "flood_lines")
            cells.append(f"{v:.0f}" if whole else f"{v:.1f}")
        print(f"| {names[kind]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
