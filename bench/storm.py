"""Everyone at once: N clients connect and log in with no pacing (issue 41).

A load balancer restart, a Wi-Fi drop or a server restart sends every client back in
the same second. ``chat-load churn --drop-all`` rejoins with a bounded number of logins
in flight per generator process; this tool does not pace at all: each of ``--processes``
generator processes opens all its connections at once on one epoll loop and sends each
login the moment its connect completes. Per storm it reports:

- the time from the start to the last ``login_ok`` (every client asks for
  ``users_delta`` and ``lazy_users``, docs/PROTOCOL.md §Extensions: its ``login_ok``
  says how many users, not who; ``--names``: without ``lazy_users``, every ``login_ok``
  lists everyone), and to the median one; how long the generator took to issue its
  ``connect`` calls;
- the time to the last client *on everyone's list*: every client's view of the user
  count (its ``login_ok``'s ``count`` or names, then each delta's ``count``) has
  reached everyone;
- what was lost: clients refused, reset, answered with an error, or without
  ``login_ok`` after ``--timeout`` seconds;
- the ping round trips of a few *stayers*, logged in before the storm, that ping every
  20 ms on their own connections throughout (p50, p99, max);
- server RSS per held client (RSS with everyone in minus RSS before the storm);
- the server's CPU time (user + system) from the start to the last client's report: on
  a box shared with other work the wall times follow the share of the cores the server
  gets, and this is the figure that does not;
- the kernel's listen-queue overflows and SYN retransmissions meanwhile (counted for
  the whole machine): a connection whose SYN or ACK found the accept queue full is
  retried after 1 s, then 3 s, 7 s.

Two storms per server: a first-time *registration* storm (new names; the server runs
with ``--password-hash load-test`` as every bench here, docs/SECURITY.md), then, after
everyone has closed and the server is idle again, a *return* storm (the same accounts).
The same run states its own floor: the same generator against a trivial epoll server
(:func:`floor_server`, one thread, no passwords) that answers every login at once and
tells everyone the count every 0.25 s.

    .venv/bin/python bench/storm.py [--clients 10000] [--processes 2] [--rounds 1]
                                    [--base REV] [--server-args "..."] [--no-floor]
                                    [--a-args "..."] [--names]

``--base REV`` alternates the server of another git revision (A) with this tree's (B),
round by round, as bench/ab.py does; ``--a-args`` adds options to A alone
(``--base HEAD --a-args "--login-slots 0"`` compares one setting of the same code).
Every figure is printed with the load average at its start: the box is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import multiprocessing as mp
import os
import re
import select
import shlex
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from abtree import THIS_TREE, base_tree, pythonpath
from common import cpu_seconds, rss_kib, start_server, wait_idle

PASSWORD = "storm-password-1"
_COUNT = re.compile(rb'"count":(\d+)')
_USERS = b'"users":['
_LOGIN_OK = b'{"type":"login_ok"'
_DELTA = b'{"type":"users_delta"'
_ERROR = b'{"type":"error"'
_BYE = b'{"type":"bye"'


# What every client asks for at login (main: without lazy_users with --names).
LAZY = b'["users_delta","lazy_users"]'
NAMES = b'["users_delta"]'


def login_frame(name: str, features: bytes = LAZY) -> bytes:
    return b'{"command":"login","username":"%s","password":"%s","features":%s}\n' % (
        name.encode(),
        PASSWORD.encode(),
        features,
    )


def users_in(frame: bytes) -> int:
    """How many users a login_ok counts (lazy_users) or lists, without decoding the
    names (they hold no , or ])."""
    at = frame.find(_USERS)
    if at < 0:
        m = _COUNT.search(frame)
        return int(m.group(1)) if m else 0
    at += len(_USERS)
    end = frame.index(b"]", at)
    return 0 if end == at else frame.count(b",", at, end) + 1


# ------------------------------------------------------------------- the generator


@dataclass
class Result:
    """One generator process's storm: monotonic times (CLOCK_MONOTONIC is the same in
    every process on the machine)."""

    ok: int = 0
    last_ok: float = 0.0
    ok_times: list[float] = field(default_factory=list)  # every login_ok's arrival
    connects_issued: float = 0.0  # when the last connect() had been called
    full: int = 0  # clients whose view reached everyone
    last_full: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)


class _Client:
    __slots__ = ("buf", "done", "full", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.done = False  # login_ok seen
        self.full = False  # its view of the count reached everyone


def storm_worker(
    port: int,
    names: list[str],
    everyone: int,
    start_at: float,
    timeout: float,
    out: Connection,
    features: bytes = LAZY,
) -> None:
    """Connect and log in every name at ``start_at``, unpaced; hold them until told to
    close (``out`` receives "close"), then report."""
    frames = [login_frame(n, features) for n in names]
    ep = select.epoll()
    res = Result()
    clients: dict[int, _Client] = {}
    pending: dict[int, bytes] = {}  # fd -> login frame not yet sent (connect in progress)

    def fail(fd: int, why: str) -> None:
        res.failures[why] = res.failures.get(why, 0) + 1
        c = clients.pop(fd)
        pending.pop(fd, None)
        with contextlib.suppress(OSError):
            ep.unregister(fd)
        c.sock.close()

    delay = start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    for frame in frames:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = s.connect_ex(("127.0.0.1", port))
        fd = s.fileno()
        clients[fd] = _Client(s)
        if err == 0:
            s.send(frame)
            ep.register(fd, select.EPOLLIN)
        elif err == errno.EINPROGRESS:
            pending[fd] = frame
            ep.register(fd, select.EPOLLOUT)
        else:
            fail(fd, f"connect: {os.strerror(err)}")
    res.connects_issued = time.monotonic()
    deadline = start_at + timeout
    n = len(frames)
    while (res.full < n - sum(res.failures.values())) and time.monotonic() < deadline:
        for fd, _ in ep.poll(0.2, 1024):
            c = clients.get(fd)
            if c is None:
                continue
            login = pending.pop(fd, None)
            if login is not None:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(fd, f"connect: {os.strerror(err)}")
                    continue
                c.sock.send(login)  # a login is far smaller than any socket buffer
                ep.modify(fd, select.EPOLLIN)
                continue
            try:
                data = c.sock.recv(1 << 20)
            except OSError as exc:
                fail(fd, f"recv: {exc.strerror}")
                continue
            if not data:
                fail(fd, "closed by the server" if c.done else "closed before login_ok")
                continue
            buf = c.buf + data if c.buf else data
            start = 0
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    break
                line = buf[start:nl]
                start = nl + 1
                now = time.monotonic()
                if line.startswith(_LOGIN_OK):
                    c.done = True
                    res.ok += 1
                    res.last_ok = max(res.last_ok, now)
                    res.ok_times.append(now)
                    seen = users_in(line)
                elif line.startswith(_DELTA):
                    m = _COUNT.search(line)
                    seen = int(m.group(1)) if m else 0
                elif line.startswith(_ERROR) or line.startswith(_BYE):
                    why = line[:120].decode(errors="replace")
                    res.failures[why] = res.failures.get(why, 0) + 1
                    continue
                else:
                    continue
                if not c.full and seen >= everyone:
                    c.full = True
                    res.full += 1
                    res.last_full = max(res.last_full, now)
            c.buf = buf[start:]
    missing = n - res.full - sum(res.failures.values())
    if missing:
        no_ok = sum(1 for c in clients.values() if not c.done)
        res.failures["no login_ok in time"] = no_ok
        if missing - no_ok:
            res.failures["never saw everyone"] = missing - no_ok
    out.send(res)
    out.recv()  # "close": held until the parent has measured the server's memory
    for c in clients.values():
        c.sock.close()
    ep.close()


# ------------------------------------------------------------------- the stayers


class Stayers:
    """A few clients logged in before the storm, pinging every ``period`` s on one
    thread; round trips in ms while :meth:`measuring`. Also watches the user count."""

    def __init__(self, port: int, count: int, period: float = 0.02, features: bytes = LAZY) -> None:
        self.period = period
        self._socks = []
        self._bufs: dict[int, bytes] = {}
        self._sent: dict[int, float] = {}
        self.rtts: list[float] = []
        self.recording = False
        self.count = 0  # the last count the first stayer saw
        self.count_changed = threading.Event()
        self._stop = threading.Event()
        for i in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(login_frame(f"stayer{i}", features))
            got = b""
            while b"\n" not in got:
                got += s.recv(65536)
            if not got.startswith(_LOGIN_OK):
                raise RuntimeError(f"stayer{i}: {got[:200]!r}")
            s.setblocking(False)
            self._socks.append(s)
            self._bufs[s.fileno()] = got[got.index(b"\n") + 1 :]
        self._thread = threading.Thread(target=self._run, name="stayers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ep = select.epoll()
        for s in self._socks:
            ep.register(s.fileno(), select.EPOLLIN)
        by_fd = {s.fileno(): s for s in self._socks}
        first = self._socks[0].fileno() if self._socks else -1
        next_ping = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_ping:
                for fd, s in by_fd.items():
                    if fd not in self._sent:  # one ping in flight per stayer
                        self._sent[fd] = now
                        s.send(b'{"command":"ping"}\n')
                next_ping = now + self.period
            for fd, _ in ep.poll(max(0.0, next_ping - time.monotonic())):
                try:
                    data = by_fd[fd].recv(1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    raise RuntimeError("a stayer was disconnected")
                buf = self._bufs[fd] + data
                *lines, self._bufs[fd] = buf.split(b"\n")
                t = time.monotonic()
                for line in lines:
                    if line.startswith(b'{"type":"pong"'):
                        sent = self._sent.pop(fd, None)
                        if sent is not None and self.recording:
                            self.rtts.append((t - sent) * 1e3)
                    elif fd == first and line.startswith(_DELTA):
                        m = _COUNT.search(line)
                        if m:
                            self.count = int(m.group(1))
                            self.count_changed.set()
        ep.close()

    def wait_count(self, want: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count != want:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.count_changed.wait(min(left, 0.5))
            self.count_changed.clear()
        return True

    @contextlib.contextmanager
    def measuring(self) -> Iterator[list[float]]:
        self.rtts = []
        self.recording = True
        try:
            yield self.rtts
        finally:
            self.recording = False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self._socks:
            s.close()


# ------------------------------------------------------------------- one storm


def tcp_counters() -> dict[str, int]:
    """The kernel's listen-queue overflows and SYN retransmissions (the whole network
    namespace: other programs' connections count too)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, vals in zip(lines[::2], lines[1::2], strict=True):
        if head.startswith("TcpExt:"):
            got = dict(zip(head.split()[1:], map(int, vals.split()[1:]), strict=True))
            return {k: got.get(k, 0) for k in ("ListenOverflows", "TCPSynRetrans")}
    return {}


@dataclass
class Storm:
    kind: str
    clients: int
    to_last_ok: float
    to_median_ok: float
    connects_took: float
    tcp: dict[str, int]
    to_all_listed: float | None
    lost: dict[str, int]
    ping: tuple[float, float, float] | None  # p50, p99, max ms
    kib_per_client: float | None
    cpu: float | None  # the server's CPU seconds during the storm
    load: float

    def line(self, who: str) -> str:
        listed = "-" if self.to_all_listed is None else f"{self.to_all_listed:.2f} s"
        ping = "-" if self.ping is None else "/".join(f"{x:.1f}" for x in self.ping)
        kib = "-" if self.kib_per_client is None else f"{self.kib_per_client:.1f}"
        cpu = "-" if self.cpu is None else f"{self.cpu:.2f} s"
        lost = sum(self.lost.values())
        return (
            f"| {who} | {self.kind} | {self.clients:,} | {self.connects_took:.2f} s "
            f"| {self.to_median_ok:.2f} s | {self.to_last_ok:.2f} s | {listed} | {lost} "
            f"| {ping} | {kib} | {cpu} | {self.tcp.get('ListenOverflows', 0):,} "
            f"| {self.tcp.get('TCPSynRetrans', 0):,} | {self.load:.1f} |"
        )


def run_storm(
    port: int,
    kind: str,
    names: list[str],
    processes: int,
    everyone: int,
    timeout: float,
    stayers: Stayers | None,
    pid: int | None,
    features: bytes = LAZY,
) -> Storm:
    ctx = mp.get_context("fork")
    shares = [names[i::processes] for i in range(processes)]
    load = os.getloadavg()[0]
    rss0 = rss_kib(pid) if pid else 0
    cpu0 = cpu_seconds(pid) if pid else 0.0
    tcp0 = tcp_counters()
    start_at = time.monotonic() + 0.5  # every worker forked and ready by then
    pipes, procs = [], []
    for share in shares:
        mine, theirs = ctx.Pipe()
        p = ctx.Process(
            target=storm_worker,
            args=(port, share, everyone, start_at, timeout, theirs, features),
        )
        p.start()
        pipes.append(mine)
        procs.append(p)
    measuring: contextlib.AbstractContextManager[list[float]] = (
        stayers.measuring() if stayers else contextlib.nullcontext([])
    )
    with measuring as rtts:
        results: list[Result] = [pipe.recv() for pipe in pipes]
    tcp = {k: v - tcp0.get(k, 0) for k, v in tcp_counters().items()}
    cpu = cpu_seconds(pid) - cpu0 if pid else None
    kib = None
    if pid:
        kib = (rss_kib(pid) - rss0) / max(1, sum(r.ok for r in results))
    for pipe in pipes:
        pipe.send("close")
    for p in procs:
        p.join(30)
    lost: dict[str, int] = {}
    for r in results:
        for why, n in r.failures.items():
            lost[why] = lost.get(why, 0) + n
    full = sum(r.full for r in results)
    ping = None
    if rtts:
        q = statistics.quantiles(rtts, n=100, method="inclusive")
        ping = (statistics.median(rtts), q[98], max(rtts))
    return Storm(
        kind=kind,
        clients=len(names),
        to_last_ok=max(r.last_ok for r in results) - start_at,
        to_median_ok=statistics.median(t for r in results for t in r.ok_times) - start_at
        if any(r.ok_times for r in results)
        else 0.0,
        connects_took=max(r.connects_issued for r in results) - start_at,
        tcp=tcp,
        to_all_listed=(max(r.last_full for r in results) - start_at)
        if full == len(names)
        else None,
        lost=lost,
        ping=ping,
        kib_per_client=kib,
        cpu=cpu,
        load=load,
    )


def storms_on(
    port: int,
    pid: int | None,
    n: int,
    processes: int,
    stayers: int,
    timeout: float,
    features: bytes = LAZY,
) -> list[Storm]:
    """A registration storm, everyone out, then a return storm, against one server."""
    stay = Stayers(port, stayers, features=features) if stayers else None
    try:
        names = [f"storm{i:05d}" for i in range(n)]
        got = []
        if pid:
            wait_idle(pid)
        for kind in ("register", "return"):
            got.append(
                run_storm(port, kind, names, processes, n + stayers, timeout, stay, pid, features)
            )
            if stay is not None and not stay.wait_count(stayers, 60):
                print(f"  (the stayers still see {stay.count} users)", flush=True)
            if pid:
                wait_idle(pid)
        return got
    finally:
        if stay is not None:
            stay.close()


# ------------------------------------------------------------------- the floor


def floor_server(port_out: Connection) -> None:
    """The trivial server: one epoll thread, every login answered at once with a
    ``login_ok`` naming only its user, and every 0.25 s (if anyone came or went) one
    ``users_delta`` with the count to everyone: about the window our server's
    publisher reaches with 10,000 subscribers (roster.py); at 0.1 s the generator's
    reads of the deltas made the floor's storm slower. No passwords, no storage."""
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(65535)
    lst.setblocking(False)
    port_out.send(lst.getsockname()[1])
    ep = select.epoll()
    ep.register(lst.fileno(), select.EPOLLIN)
    socks: dict[int, socket.socket] = {}
    bufs: dict[int, bytes] = {}
    logged: set[int] = set()
    dirty = False
    next_push = time.monotonic()
    while True:
        for fd, _ in ep.poll(0.05):
            if fd == lst.fileno():
                while True:
                    try:
                        s, _ = lst.accept()
                    except BlockingIOError:
                        break
                    s.setblocking(False)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    socks[s.fileno()] = s
                    bufs[s.fileno()] = b""
                    ep.register(s.fileno(), select.EPOLLIN)
                continue
            s = socks[fd]
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                s.close()
                del socks[fd], bufs[fd]
                if fd in logged:
                    logged.discard(fd)
                    dirty = True
                continue
            buf = bufs[fd] + data
            *lines, bufs[fd] = buf.split(b"\n")
            for line in lines:
                if b'"login"' in line:
                    name = re.search(rb'"username":"([^"]*)"', line)
                    who = name.group(1) if name else b"?"
                    logged.add(fd)
                    dirty = True
                    s.send(
                        b'{"type":"login_ok","username":"%s","new_user":false,"users":["%s"],'
                        b'"version":1,"features":["users_delta"]}\n' % (who, who)
                    )
                elif b'"ping"' in line:
                    s.send(b'{"type":"pong"}\n')
        now = time.monotonic()
        if dirty and now >= next_push:
            frame = b'{"type":"users_delta","count":%d}\n' % len(logged)
            for fd in logged:
                with contextlib.suppress(OSError):
                    socks[fd].send(frame)
            dirty = False
            next_push = now + 0.25


@contextlib.contextmanager
def floor() -> Iterator[int]:
    ctx = mp.get_context("fork")
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=floor_server, args=(theirs,), daemon=True)
    p.start()
    try:
        yield mine.recv()
    finally:
        p.kill()
        p.join(5)


# ------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clients", type=int, default=10_000)
    ap.add_argument("--processes", type=int, default=2, help="generator processes")
    ap.add_argument("--stayers", type=int, default=3, help="clients pinging throughout")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0, help="s per storm")
    ap.add_argument("--base", help="git revision for A, alternated with this tree (B)")
    ap.add_argument("--server-args", default="", help="extra options for our server")
    ap.add_argument("--a-args", default="", help="with --base: extra options for A alone")
    ap.add_argument("--no-floor", action="store_true", help="skip the trivial server")
    ap.add_argument(
        "--port", type=int, help="storm a server already running here (a profiler's) instead"
    )
    ap.add_argument("--pid", type=int, help="with --port: that server's pid, for RSS")
    ap.add_argument(
        "--names", action="store_true", help="clients without lazy_users: names in login_ok"
    )
    ap.add_argument("--a-names", action="store_true", help="with --base: --names for A alone")
    a = ap.parse_args()
    features = NAMES if a.names else LAZY
    if a.port:
        for s in storms_on(a.port, a.pid, a.clients, a.processes, a.stayers, a.timeout, features):
            print(s.line(f"port {a.port}"), flush=True)
        return
    extra = ["--password-hash", "load-test", *shlex.split(a.server_args)]
    rows: list[tuple[str, Storm]] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        # Each side's code by PYTHONPATH, this tree's too: left to the venv, "this
        # tree" ran whatever the venv has installed (an editable install of another
        # checkout, as often as not).
        sides: list[tuple[str, str]] = [("this tree", THIS_TREE)]
        if a.base:
            tree = stack.enter_context(base_tree(a.base))
            a_label = " ".join(x for x in ("A", a.base, a.a_args, "(names)" * a.a_names) if x)
            sides.insert(0, (a_label, pythonpath(tree)))
            sides[1] = ("B this tree", THIS_TREE)
        for i in range(a.rounds):
            if not a.no_floor:
                with floor() as port:
                    for s in storms_on(
                        port, None, a.clients, a.processes, a.stayers, a.timeout, features
                    ):
                        rows.append(("floor", s))
                        print(s.line("floor"), flush=True)
            for who, path in sides:
                env = {"PYTHONPATH": path}
                base = path != THIS_TREE
                db = f"s{i}{who[0]}"
                mine = [*extra, *shlex.split(a.a_args)] if base else extra
                asks = NAMES if base and a.a_names else features
                with start_server("ours", Path(tmp), *mine, db=db, env=env) as (proc, port):
                    for s in storms_on(
                        port, proc.pid, a.clients, a.processes, a.stayers, a.timeout, asks
                    ):
                        rows.append((who, s))
                        print(s.line(who), flush=True)
                        if s.lost:
                            print(f"  lost: {s.lost}", flush=True)
    print(
        f"\n{a.clients:,} clients from {a.processes} processes, unpaced, {a.stayers} stayers "
        "pinging every 20 ms"
    )
    print(
        "| server | storm | clients | connects issued | median login_ok | last login_ok "
        "| all on everyone's list | lost | stayers' ping p50/p99/max ms | KiB per client "
        "| server CPU | listen overflows | SYN retransmits | load |"
    )
    print("| --- " * 14 + "|")
    for who, s in rows:
        print(s.line(who))


if __name__ == "__main__":
    main()
