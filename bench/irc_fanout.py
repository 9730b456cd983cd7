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
import itertools
import multiprocessing as mp
import os
import random
import selectors
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from common import SERVERS

from chatroom.testing import ServerProcess
from chatroom_bots.load import procstat

CHANNEL = "#lobby"
TURN = "turn="  # a kind of ours run with a turn policy (--turns)
TURN_ENV = "CHATROOM_FANOUT_TURN"  # chatroom_server.fanturns.TURN_ENV
ROOT = Path(__file__).resolve().parent.parent
NGIRCD = Path("/usr/sbin/ngircd")
PASSWORD = "bench-password"
# Linux's SO_TIMESTAMPNS (and SCM_TIMESTAMPNS), which the socket module does not name.
SO_TIMESTAMPNS = 35
_ANC = socket.CMSG_SPACE(16)  # one struct timespec


def register_many(
    ports: list[int], nicks: list[tuple[str, str]], window: int = 8
) -> list[socket.socket]:
    """Register ``nicks`` (the i-th on ``ports[i % len(ports)]``) with at most ``window``
    of them connected and not yet welcomed (001) per port.

    Why a window: ngircd listens with a backlog of 10 (``listen(sock, 10)`` in its
    conn.c, not configurable), so 250 connects at once overflowed its accept queue;
    each dropped SYN cost the (blocking, one after another) connect a 1 s
    retransmission, and 1,000 clients took 35-44 s to register (docs/PERFORMANCE.md,
    issue 35). A connection not yet welcomed may still be in that queue; with fewer
    than 10 of them, none is dropped. Registering one at a time instead took minutes
    of round trips at 10,000 (the window keeps 8 in flight); ngircd listens on several
    ports for the same reason (``ngircd_conf``), so that more can be."""
    socks: list[socket.socket | None] = [None] * len(nicks)
    sel = selectors.DefaultSelector()
    deadline = time.monotonic() + 30
    nxt = done = 0
    waiting = dict.fromkeys(ports, 0)  # per port: connected, not yet welcomed
    while done < len(nicks):
        while nxt < len(nicks) and waiting[ports[nxt % len(ports)]] < window:
            nick, port = nicks[nxt][0], ports[nxt % len(ports)]
            waiting[port] += 1
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(f"PASS {PASSWORD}\r\nNICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, (nxt, bytearray()))
            nxt += 1
        events = sel.select(1.0)
        if not events and time.monotonic() > deadline:
            raise TimeoutError(f"{nxt - done} clients not welcomed for 30 s")
        for key, _ in events:
            i, buf = key.data
            data = key.fileobj.recv(65536)  # type: ignore[union-attr]
            if not data:
                raise ConnectionError(f"closed while registering: {bytes(buf[-300:])!r}")
            buf += data
            if b" 001 " in buf:
                waiting[ports[i % len(ports)]] -= 1
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                sel.unregister(sock)
                sock.setblocking(True)
                socks[i] = sock
                done += 1
                deadline = time.monotonic() + 30  # 30 s without progress is a failure
    sel.close()
    return [s for s in socks if s is not None]


def join_all(socks: list[socket.socket], nicks: list[tuple[str, str]], batch: int = 50) -> None:
    """JOIN each client to its channel, ``batch`` at a time, and wait for every client's
    end of NAMES. Only once every process's clients are registered (``measure``): a
    JOIN to a room of 1,500 is a line to each member under our fan-out's lock, which
    is not fair, and 250 JOINs at once kept logins and other JOINs waiting past its
    10 s timeout on a loaded box (refused: "the fan-out is overloaded")."""
    for lo in range(0, len(socks), batch):
        group = socks[lo : lo + batch]
        joins = {
            s: f"JOIN {channel}\r\n".encode()
            for s, (_, channel) in zip(group, nicks[lo : lo + batch], strict=True)
        }
        for s, line in joins.items():
            s.sendall(line)
        wait_all(group, b" 366 ", retry=joins)


def wait_all(
    conns: list[socket.socket], marker: bytes, retry: dict[socket.socket, bytes] | None = None
) -> None:
    """Read every connection until ``marker`` arrives on it (30 s at most without
    progress: a JOIN to a room of 1,500 is a line to each member, and 250 of them
    take the server a while on a loaded box). ``retry``: each connection's command, to
    send again when our server says "try again" (a JOIN that waited 10 s for its
    fan-out's lock: "the fan-out is overloaded")."""
    sel = selectors.DefaultSelector()
    for s in conns:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
    deadline = time.monotonic() + 30
    pending = len(conns)
    while pending:
        if time.monotonic() > deadline:
            stuck = next(iter(sel.get_map().values())).data[-300:]
            raise TimeoutError(f"{pending} clients still waiting for {marker!r}: {bytes(stuck)!r}")
        for key, _ in sel.select(1.0):
            buf: bytearray = key.data
            data = key.fileobj.recv(65536)  # type: ignore[union-attr]
            if not data:
                raise ConnectionError(f"closed while waiting for {marker!r}: {bytes(buf[-300:])!r}")
            buf += data
            if marker in buf:
                sel.unregister(key.fileobj)
                pending -= 1
                deadline = time.monotonic() + 30
            elif retry and b" :try again" in buf:
                del buf[:]
                key.fileobj.sendall(retry[key.fileobj])  # type: ignore[index,union-attr]
    sel.close()
    for s in conns:
        s.setblocking(True)


def worker(
    ports: list[int],
    nicks: list[tuple[str, str]],
    senders: dict[int, tuple[int, str]],
    slots: int,
    pipe: Connection,
) -> None:
    """``nicks``: (nick, channel) of this process's clients; ``senders``: the message
    slots this process sends (slot -> its client's index, channel) out of ``slots``
    (message k of a step goes to slot k mod ``slots``)."""
    socks = register_many(ports, nicks)
    pipe.send("registered")
    if pipe.recv() != "join":
        return
    # JOIN only once registered (a JOIN before 001 is ERR_NOTREGISTERED).
    join_all(socks, nicks)
    for s in socks:
        s.setblocking(False)
        # The kernel's time of arrival, with every read (``kernel_time``).
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ, bytearray())
    pipe.send("joined")
    if pipe.recv() != "drain":  # once every process has joined (a room may span two)
        return
    pipe.send(drain_quiet(sel))
    while True:
        cmd = pipe.recv()
        if cmd == "stop":
            return
        t0, end, rate, drain = cmd
        lat: list[float] = []
        kernel: list[float] = []  # from the actual send to the arrival in the socket
        where: list[int] = []  # the room of each latency in ``lat``
        late: list[float] = []  # how far behind its schedule each send went out
        from_sent: list[float] = []  # each latency in ``lat`` from the actual send
        delivered = 0
        sent: dict[int, int] = {}
        # CLOCK_REALTIME (the kernel's stamps) to CLOCK_MONOTONIC (the schedule's).
        realtime = time.time() - time.monotonic()
        interval = 1 / rate
        next_send = t0
        k = 0
        while True:
            now = time.monotonic()
            if senders and next_send <= now and next_send < end:
                # Open loop: the message goes out (late if we are behind), stamped with
                # when it should have. Every process walks the whole schedule and sends
                # its own slots' messages.
                mine = senders.get(k % slots)
                if mine is not None:
                    i, channel = mine
                    # t: when it should have gone out (the open loop's schedule); s: when
                    # it did (the server's share of the latency is from s).
                    at = time.monotonic()
                    msg = f"PRIVMSG {channel} :t={next_send:.6f} s={at:.6f} x\r\n"
                    socks[i].send(msg.encode())
                    late.append(at - next_send)
                    sent[k % slots] = sent.get(k % slots, 0) + 1
                k += 1
                next_send = t0 + k * interval
                continue
            if now > end + drain:
                break
            timeout = max(0.0, min(next_send - now if senders else 0.05, 0.05))
            for key, _ in sel.select(timeout):
                buf: bytearray = key.data
                try:
                    data, anc, _, _ = key.fileobj.recvmsg(1 << 18, _ANC)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                buf += data
                arrived = time.monotonic()
                landed = kernel_time(anc, realtime, arrived)
                cut = buf.rfind(b"\n")
                if cut < 0:
                    continue
                for line in bytes(buf[: cut + 1]).split(b"\r\n"):
                    i = line.find(b":t=")
                    if i >= 0 and b" PRIVMSG " in line:
                        delivered += 1
                        j = line.index(b" s=", i)
                        lat.append(arrived - float(line[i + 3 : j]))
                        sent_at = float(line[j + 3 : line.index(b" ", j + 3)])
                        from_sent.append(arrived - sent_at)
                        # The server's share alone: from the actual send to the socket.
                        kernel.append(landed - sent_at)
                        c = line.find(b" #r")
                        where.append(int(line[c + 3 : line.index(b" ", c + 3)]) if c >= 0 else 0)
                    elif line.startswith(b"PING"):
                        key.fileobj.send(b"PONG" + line[4:] + b"\r\n")  # type: ignore[union-attr]
                del buf[: cut + 1]
        pipe.send((sent, delivered, lat, where, late, from_sent, kernel))


def kernel_time(anc: list[tuple[int, int, bytes]], realtime: float, default: float) -> float:
    """When the data of a ``recvmsg`` landed in the socket (its last segment: the latest
    of its lines' arrivals, so never early), on CLOCK_MONOTONIC. From the actual send to
    it is the server's (and the kernel's) share alone, without the generator's delays in
    sending and in reading: at 10,000 clients in one process, reading a message to a
    room of 1,335 is some 40 ms of the generator's CPU, which ``lat`` counts against
    the server (docs/PERFORMANCE.md)."""
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, ns = struct.unpack("qq", data[:16])
            return float(sec + ns / 1e9 - realtime)
    return default


def drain_quiet(sel: selectors.BaseSelector, quiet: float = 1.0, most: float = 300) -> int:
    """Read and drop what the clients were sent before the first step, until none of
    them gets anything for ``quiet`` s; the bytes read. A room's JOINs are a line to
    each member: n²/2 lines in a room of n, 1.1 million (some 80 MB) in the Zipf room
    of 1,515. Left unread, they sat in the sockets and the server's outboxes, and the
    first step's receivers read them first: seconds of latency that were the bench's
    own (docs/PERFORMANCE.md, issue 35)."""
    total = 0
    end = time.monotonic() + most
    while time.monotonic() < end:
        events = sel.select(quiet)
        if not events:
            break
        for key, _ in events:
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                data = sock.recv(1 << 18)
            except BlockingIOError:
                continue
            total += len(data)
            if b"PING" in data:  # a server's keepalive (ngircd's PingTimeout)
                for line in data.split(b"\r\n"):
                    if line.startswith(b"PING"):
                        sock.send(b"PONG" + line[4:] + b"\r\n")
    return total


def ngircd_conf(tmp: Path, ports: list[int]) -> Path:
    conf = tmp / "ngircd.conf"
    conf.write_text(
        f"""[Global]
Name = bench.chatroom
Info = bench
Listen = 127.0.0.1
Ports = {", ".join(map(str, ports))}
MotdPhrase = bench
Password = {PASSWORD}
[Limits]
MaxPenaltyTime = 0
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
PingTimeout = 600
PongTimeout = 600
[Options]
DNS = no
Ident = no
PAM = no
"""
    )
    return conf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
            env = {**os.environ, "PYTHONPATH": f"{base}/server:{base}/sdk"}
        with ServerProcess(cmd=cmd, env=env) as server:
            return measure(server.pid, [port], args, admin)
    exe = shutil.which("ngircd") or str(NGIRCD)
    # Several ports: each has ngircd's accept queue of 10 (register_many).
    ports = [port, *(free_port() for _ in range(args.ngircd_ports - 1))]
    proc = subprocess.Popen(
        [exe, "-n", "-f", str(ngircd_conf(tmp, ports))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                try:  # a bounded wait on the process: it exits or starts listening
                    proc.wait(0.05)
                except subprocess.TimeoutExpired:
                    continue
                raise RuntimeError("ngircd exited") from None
        return measure(proc.pid, ports, args)
    finally:
        proc.terminate()
        try:  # at 10,000 clients ngircd takes longer than this to say goodbye to each
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


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


Result = tuple[dict[int, int], int, list[float], list[int], list[float], list[float], list[float]]


CLASSES = [(2, 2), (3, 4), (5, 16), (17, 128), (129, 1 << 30)]


def class_name(lo: int, hi: int) -> str:
    return f"{lo}" if lo == hi else f"{lo}+" if hi == 1 << 30 else f"{lo}-{hi}"


def by_size(sizes: list[int], results: list[Result]) -> dict[str, float]:
    """The latency per class of room size (issue 35: whose messages are late?), printed,
    and as fields of the step's row (``p50_ms 129+``, ...) for the medians of rounds."""
    classes = CLASSES
    fields: dict[str, float] = {}
    lats: list[list[float]] = [[] for _ in classes]
    kernel: list[list[float]] = [[] for _ in classes]  # to the arrival in the socket
    of = [next(k for k, (lo, hi) in enumerate(classes) if lo <= s <= hi) for s in sizes]
    for r in results:
        for x, room, y in zip(r[2], r[3], r[6], strict=True):
            lats[of[room]].append(x)
            kernel[of[room]].append(y)
    for k, ((lo, hi), xs, ys) in enumerate(zip(classes, lats, kernel, strict=True)):
        if not xs:
            continue
        xs.sort()
        ys.sort()
        name = class_name(lo, hi)
        fields[f"p50_ms {name}"] = 1e3 * statistics.median(xs)
        fields[f"p99_ms {name}"] = 1e3 * xs[int(0.99 * (len(xs) - 1))]
        fields[f"p50_kernel_ms {name}"] = 1e3 * statistics.median(ys)
        fields[f"p99_kernel_ms {name}"] = 1e3 * ys[int(0.99 * (len(ys) - 1))]
        print(
            f"   rooms of {name}: {of.count(k)} rooms, {len(xs)} delivered, "
            f"p50 {1e3 * statistics.median(xs):.1f} ms, "
            f"p99 {1e3 * xs[int(0.99 * (len(xs) - 1))]:.1f} ms, max {1e3 * xs[-1]:.1f} ms; "
            f"to the socket p50 {fields[f'p50_kernel_ms {name}']:.1f}, "
            f"p99 {fields[f'p99_kernel_ms {name}']:.1f} ms",
            flush=True,
        )
    return fields


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
    if "ngircd" in kinds and shutil.which("ngircd") is None and not NGIRCD.exists():
        sys.exit("ngircd is not installed: make bench-irc installs it")
    sizes = rooms_of(args)
    table: dict[str, list[list[dict[str, float]]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        if args.base:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base), args.base],
                check=True,
            )
        try:
            for i in range(args.rounds):
                for kind in kinds:
                    print(f"== round {i + 1}: {kind}", flush=True)
                    table[kind].append(run(kind, args, Path(tmp), base))
        finally:
            if args.base:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)])
    shape = (
        f"{len(sizes)} rooms, sizes {min(sizes)}-{max(sizes)}"
        if len(sizes) > 1
        else f"one channel, {args.senders} senders"
    )
    names = {"ours": "ours (this tree)", "base": f"ours at {args.base}", "ngircd": "ngircd"}
    names |= {k: f"ours, {TURN_ENV}={k[len(TURN) :]}" for k in kinds if k.startswith(TURN)}
    print(f"\n{args.clients} IRC clients, {shape}, {args.duration:g} s per step", end="")
    print(f"; medians of {args.rounds} alternating rounds" if args.rounds > 1 else "")
    print("| server | msg/s | delivered/s | lost | p50 ms | p99 ms | server CPU µs/delivery |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    medians: dict[str, list[dict[str, float]]] = {}
    for kind, runs in table.items():
        medians[kind] = []
        for k in range(len(runs[0])):
            steps = [r[k] for r in runs]
            m = {f: statistics.median(x[f] for x in steps if f in x) for f in steps[0]}
            m["lost"] = max(x["lost"] for x in steps)
            medians[kind].append(m)
            spread = ""
            if len(steps) > 1:
                cpus = sorted(x["cpu_us"] for x in steps)
                spread = f" ({cpus[0]:.2f}-{cpus[-1]:.2f})"
            print(
                f"| {names[kind]} | {m['rate']:.0f} | {m['delivered_per_s']:,.0f} | "
                f"{m['lost']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
                f"{m['cpu_us']:.2f}{spread} |"
            )
    if args.by_size and len(sizes) > 1:
        print_by_size(names, medians, kernel=False)
        print_by_size(names, medians, kernel=True)
    for kind, rows in medians.items():
        ok = [r for r in rows if r["lost"] == 0 and r["p99_ms"] < 50]
        best = max(ok, key=lambda r: r["delivered_per_s"]) if ok else None
        print(
            f"{names[kind]}: max sustainable "
            + (
                f"{best['delivered_per_s']:,.0f} deliveries/s (p99 {best['p99_ms']:.1f} ms)"
                if best
                else "none of the steps"
            )
        )


def print_by_size(
    names: dict[str, str], medians: dict[str, list[dict[str, float]]], kernel: bool
) -> None:
    """p50 / p99 per class of room size, medians of the rounds, a column per server;
    ``kernel``: to the data's arrival in the socket (kernel_time)."""
    kinds = [k for k in medians if any(f.startswith("p99_ms ") for r in medians[k] for f in r)]
    to = "_kernel" if kernel else ""
    for k in range(len(medians[kinds[0]]) if kinds else 0):
        print(
            f"\nby room size at {medians[kinds[0]][k]['rate']:.0f} msg/s, p50 / p99 ms"
            + (", from the actual send to the arrival in the socket:" if kernel else ":")
        )
        print("| rooms | " + " | ".join(names[kind] for kind in kinds) + " |")
        print("| --- |" + " ---: |" * len(kinds))
        for lo, hi in [*CLASSES, (0, 0)]:
            name = class_name(lo, hi) if hi else ""
            key = f" {name}" if name else ""
            cells = []
            for kind in kinds:
                row = medians[kind][k]
                got = row.get(f"p50{to}_ms{key}"), row.get(f"p99{to}_ms{key}")
                cells.append("-" if None in got else f"{got[0]:.1f} / {got[1]:.1f}")
            print(f"| {name or 'all'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
