"""What one room message costs the server from its bytes to its last delivery, in one
process: the per-message Python path of issue 35, A/B of two trees.

    .venv/bin/python bench/msg_path.py --base main [--rounds 5] [--mode irc,json]
        [--rooms 20] [--size 10] [--messages 4000] [--profile]

A real :class:`~chatroom_server.ChatServer` (the message log on, SQLite in a temp dir,
flood control off) with ``--rooms`` rooms of ``--size`` members, half of them IRC
clients and half JSON ones, each a real loopback TCP connection whose far end a drain
thread reads as soon as anything arrives (epoll). Each room's first member is a
sender: an IRC client in ``--mode irc``, a JSON one in ``--mode json``. Its lines (a
``PRIVMSG #rN :...``, or a ``pm`` frame to ``rN`` with an ``id``) are not sent over
its socket: this thread hands them to the server as its reader thread would hand what
it read (chatroom_server.listeners, ``serve``: the IRC session's ``receive_data`` or the
runner's ``frames``, then ``flush_batch``), one message a read, the rooms in turn, so
every message is alone in its read and, the fan-out's lock being free, in its pass on
this thread: the line decoded and parsed, the command table and its rules, the
handler, the fan-out's pass with the room check, the message log's commit, and the
nine deliveries and the ack. The sender's own reader thread sleeps in ``recv``
meanwhile (its client sends nothing), so this thread is the only one on its session.

Reports, per message, this thread's CPU (``time.thread_time``: the sending path), of
it the read's part (up to the hand-over to the fan-out), the process's CPU less the
drain thread's (the server's: with any pass the fan-out's helper took, and the
flusher's and the log's threads), and the read's part alone in a warm loop with no
pass between (``hot``: its Python, steadier than the rest on a shared box). A (git
revision ``--base``) and B (this tree, or ``--new``) run in child processes,
alternating; the ratio is of the medians.
``--profile`` runs this tree once under cProfile on the sending thread and prints
where a message's Python goes (the top functions by own time, per message).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from abtree import THIS_TREE, base_tree, pythonpath

PASSWORD = "bench-password"
BODY = "a line of chat text, as long as most lines people type in a room"


def _lines(sock: socket.socket, buf: bytearray, until: bytes, timeout: float = 30.0) -> None:
    """Read (blocking) until ``until`` has arrived; what came is dropped."""
    sock.settimeout(timeout)
    while until not in buf:
        got = sock.recv(65536)
        if not got:
            raise ConnectionError(f"closed before {until!r}: {bytes(buf[-300:])!r}")
        buf += got
    del buf[:]


def _irc(address: tuple[str, int], nick: str, room: str) -> socket.socket:
    s = socket.create_connection(address)
    buf = bytearray()
    s.sendall(f"PASS {PASSWORD}\r\nNICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
    _lines(s, buf, b" 001 ")
    s.sendall(f"JOIN #{room}\r\n".encode())
    _lines(s, buf, b" 366 ")  # end of NAMES: joined
    return s


def _json(address: tuple[str, int], name: str, room: str) -> socket.socket:
    s = socket.create_connection(address)
    buf = bytearray()
    login = {"command": "login", "username": name, "password": PASSWORD}
    s.sendall(json.dumps(login | {"features": ["rooms"]}).encode() + b"\n")
    _lines(s, buf, b'"login_ok"')
    s.sendall(json.dumps({"command": "join", "room": room}).encode() + b"\n")
    _lines(s, buf, b'"room_info"')
    return s


class _Drain(threading.Thread):
    """Reads every client socket as soon as it has something (epoll); never sleeps
    longer than 20 ms with nothing to read."""

    def __init__(self, socks: list[socket.socket]) -> None:
        super().__init__(name="drain", daemon=True)
        self.sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)
        self.stop = threading.Event()
        self.bytes = 0

    def run(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.02):
                s: Any = key.fileobj
                try:
                    while got := s.recv(1 << 16):
                        self.bytes += len(got)
                except BlockingIOError:
                    pass

    def cpu(self) -> float:
        return _cpu(self)


def child(args: argparse.Namespace, mode: str) -> dict[str, float]:
    """CPU µs per room message of this interpreter's chatroom_server."""
    from chatroom.protocol import username_key
    from chatroom_server import ChatServer, ServerConfig, fanout

    # Every pass on this thread: on a loaded box a thread preempted for 5 ms would hand
    # its pass to the helper, whose CPU this thread does not see, and whose later
    # passes would gather several messages (fewer sends each): another workload.
    fanout.READER_BUDGET = 3600.0

    with tempfile.TemporaryDirectory() as tmp:
        config = ServerConfig(
            db_path=Path(tmp) / "chat.db",
            host="127.0.0.1",
            port=0,
            irc_port=0,
            password_hash="load-test",
            rate_limit=None,
            users_interval=0,
            idle_timeout=0,
            # No pacing: a pass is paced once rounds cost over a threshold, which a
            # thread preempted on a loaded box reaches, and a paced pass goes to the
            # helper and gathers messages: another workload (as the budget, above).
            coalesce=0,
        )
        srv: Any = ChatServer(config)
        srv.start()
        socks: list[socket.socket] = []
        drain: _Drain | None = None
        try:
            irc_addr = srv.irc_addresses[0]
            senders: list[tuple[Any, str]] = []
            for r in range(args.rooms):
                room = f"r{r}"
                for k in range(args.size):
                    name = f"u{r}x{k}"
                    irc = (k % 2 == 0) if k else mode == "irc"
                    join = _irc if irc else _json
                    socks.append(join(irc_addr if irc else srv.address, name, room))
                    if k == 0:
                        senders.append((name, room))
            presence = srv._presence
            conns = [presence.online(username_key(name)) for name, _ in senders]
            listeners = srv._listeners
            frames, flush_batch = listeners._frames, listeners._flush_batch
            clock = listeners._clock
            drain = _Drain(socks)
            drain.start()

            def line(i: int) -> bytes:
                room = senders[i % len(senders)][1]
                if mode == "irc":
                    return f"PRIVMSG #{room} :{BODY} {i}\r\n".encode()
                pm = {"command": "pm", "room": room, "message": f"{BODY} {i}", "id": i}
                return json.dumps(pm).encode() + b"\n"

            read = 0.0  # this thread's CPU up to the hand-over to the fan-out

            def one(i: int) -> None:
                # What ChatServer's reader thread does with a read (listeners.serve).
                nonlocal read
                conn = conns[i % len(conns)]
                got = line(i)
                t = time.thread_time()
                conn.last_rx = clock()
                if conn.irc is not None:
                    closing = None if conn.irc.receive_data(got) else "closed by server"
                else:
                    closing = frames(conn, got)
                read += time.thread_time() - t
                if conn.batch:
                    flush_batch(conn)
                assert closing is None, closing

            for i in range(args.rooms * 5):  # warm: every sender announced, caches full
                one(i)
            prof: Any = None
            if args.profile_child:
                import cProfile

                prof = cProfile.Profile()  # perf_counter: thread_time is a syscall a call
            cpu = read = 0.0
            h0 = _cpu(srv._b.fanout._helper)
            d0, r0 = drain.cpu(), resource.getrusage(resource.RUSAGE_SELF)
            for i in range(args.messages):
                t = time.thread_time()
                if prof is not None:
                    prof.enable()
                one(i)
                if prof is not None:
                    prof.disable()
                cpu += time.thread_time() - t
            r1, d1 = resource.getrusage(resource.RUSAGE_SELF), drain.cpu()
            proc = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime) - (d1 - d0)
            hot = _read_alone(conns, line, frames)
            if prof is not None:
                _report(prof, args.messages)
            h1 = _cpu(srv._b.fanout._helper)
            n = args.messages
            return {
                "thread": 1e6 * cpu / n,
                "read": 1e6 * read / n,
                "server": 1e6 * proc / n,
                "helper": 1e6 * (h1 - h0) / n,  # passes the helper took (the joins' start it)
                "hot": hot,
            }
        finally:
            if drain is not None:
                drain.stop.set()
                drain.join(5)
            srv.stop()
            for s in socks:
                s.close()


def _read_alone(conns: list[Any], line: Callable[[int], bytes], frames: Any) -> float:
    """The read's part alone, µs per message, best of five passes of 1,000: the same
    calls with no pass between them (the read's batch dropped, never handed over), so
    its Python in a warm loop, without the sends' wake-ups and the caches they leave
    cold, which make ``read`` in the whole path two to four times this and noisy."""
    from chatroom_server.conn import UNUSED

    reads = [(conns[i % len(conns)], line(i)) for i in range(1000)]
    best = float("inf")
    for _ in range(5):
        t = time.thread_time()
        for conn, data in reads:
            if conn.irc is not None:
                conn.irc.receive_data(data)
            else:
                frames(conn, data)
            conn.batch = conn.acks = conn.msgs = conn.rids = conn.events = UNUSED
        best = min(best, (time.thread_time() - t) / 1000)
    return 1e6 * best


def _cpu(thread: threading.Thread | None) -> float:
    """A thread's CPU seconds so far (0 for none)."""
    if thread is None or thread.ident is None or not thread.is_alive():
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _report(prof: Any, n: int) -> None:
    """The functions with the most own time, per message (stderr)."""
    import pstats

    st = pstats.Stats(prof)
    rows = []
    for (fn, line, name), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, f"{Path(fn).name}:{line}({name})"))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(f"profile: {1e6 * total / n:.1f} µs/message in Python under cProfile", file=sys.stderr)
    print("  own µs/msg  cum µs/msg  calls/msg  function", file=sys.stderr)
    for tt, ct, nc, where in rows[:45]:
        row = f"{1e6 * tt / n:10.2f}  {1e6 * ct / n:10.2f}  {nc / n:9.2f}  {where}"
        print("  " + row, file=sys.stderr)


def _run(mode: str, passed: list[str], path: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, *passed],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode:
        sys.exit(f"the child failed ({path}):\n{out.stderr[-3000:]}")
    got: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="main", help="git revision for A (B is this tree)")
    ap.add_argument("--new", help="git revision for B instead of this tree (a cut in a series)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mode", default="irc,json", help="the senders: irc, json or both")
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--size", type=int, default=10, help="members of a room")
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--profile", action="store_true", help="this tree once, under cProfile")
    ap.add_argument("--child", choices=("irc", "json"), help=argparse.SUPPRESS)
    ap.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args, args.child)))
        return
    passed = ["--rooms", str(args.rooms), "--size", str(args.size)]
    passed += ["--messages", str(args.messages)]
    modes = args.mode.split(",")
    if args.profile:
        for mode in modes:
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--profile-child", *passed],
                env={**os.environ, "PYTHONPATH": THIS_TREE},
                check=True,
                capture_output=True,
                text=True,
                timeout=900,
            )
            print(f"== {mode}\n{out.stderr}{out.stdout}")
        return
    got: dict[tuple[str, str, str], list[float]] = {}
    loads = [os.getloadavg()[0]]
    with base_tree(args.base) as base, contextlib.ExitStack() as more:
        new = THIS_TREE if args.new is None else pythonpath(more.enter_context(base_tree(args.new)))
        paths = {"A": pythonpath(base), "B": new}
        for i in range(args.rounds):
            for mode in modes:
                for v in ("A", "B"):
                    r = _run(mode, passed, paths[v])
                    for k, us in r.items():
                        got.setdefault((v, mode, k), []).append(us)
                    print(
                        f"round {i + 1} {v} {mode}: thread {r['thread']:.1f} (read "
                        f"{r['read']:.1f}, alone {r['hot']:.1f}), server {r['server']:.1f} (helper "
                        f"{r['helper']:.1f}) µs/message",
                        flush=True,
                    )
            loads.append(os.getloadavg()[0])
    med = {k: statistics.median(x) for k, x in got.items()}
    print(
        f"\nA = {args.base}, B = {args.new or 'this tree'}; {args.rooms} rooms of "
        f"{args.size}, CPU µs per message, medians of {args.rounds} rounds "
        f"(load average {min(loads):.1f}-{max(loads):.1f})"
    )
    print("| sender | measure | A | B | B/A |")
    print("| --- | --- | ---: | ---: | ---: |")
    for mode in modes:
        for k in ("thread", "read", "hot", "server"):
            a, b = med[("A", mode, k)], med[("B", mode, k)]
            print(f"| {mode} | {k} | {a:.1f} | {b:.1f} | {b / a:.3f} |")


if __name__ == "__main__":
    main()
