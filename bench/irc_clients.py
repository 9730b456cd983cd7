"""The IRC client swarm of bench/irc_fanout.py and bench/join_flood.py: clients that
register and JOIN in windows the servers can take, and the receivers' epoll loop that
sends a step's messages open-loop and times every delivery (docs/PERFORMANCE.md).

A worker runs in a generator process of its own (``worker``); the kernel's arrival
time of each read (SO_TIMESTAMPNS, ``kernel_time``) gives the server's share of a
latency without the generator's own delays.
"""

from __future__ import annotations

import selectors
import socket
import struct
import time
from multiprocessing.connection import Connection

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
