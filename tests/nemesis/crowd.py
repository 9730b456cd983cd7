"""The crowd: a few hundred cheap members that only read, so that the faults land while
rooms of more than 128 members are sent in turns (chatroom_server.fanturns) and lobby
and one big room carry hundreds of recipients a message.

Each member is a plain socket (no SDK: no threads of its own) that logs in with rooms
on (and ``users_delta`` + ``lazy_users``, docs/PROTOCOL.md §lazy_users, so a storm of
reconnects costs no lists), joins :data:`HALL` and, one in three, one of the small
rooms, and then only reads, pinging now and then to stay under the idle timeout. When
its connection ends (a node killed, a cut, a takeover) it logs in again on the next
node, **resuming** with ``since`` = the highest seq it has received (after
``replay_done``: ``login_ok``'s seq, docs/PROTOCOL.md §Resume): a crowd member's
connections form one chain from its first login to the end of the run.

Every frame each member's connections read and write goes into the history as the
drivers' do (``ConnOpen``, ``FrameOut``, ``FrameIn``, ``ConnClose``), so the checker
applies its rules to every member: seqs increasing on a connection, nothing twice on
a chain, a replay within ``(since, login_ok seq]``, every stored message of lobby and of
the member's rooms received (``lost`` otherwise), nothing of a room it is not in
(``room_leak``), no DM at all (``misdelivered``), and the final marker reached
(``stuck``). The members are listed in the run's ``Meta.options["crowd"]``.

Threads: one (``nemesis-crowd``) owns every member's socket and state; the history is
the only thing shared (it has its own lock). ``stop`` ends the thread.
"""

from __future__ import annotations

import json
import logging
import random
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.nemesis.history import ConnClose, ConnOpen, History

__all__ = ["HALL", "Crowd", "crowd_names"]

log = logging.getLogger(__name__)

HALL = "hall"
PASSWORD = "nemesis crowd"
PING_EVERY = 30.0  # seconds; the server's idle timeout is 120 s (§Timeouts)
LOGIN_TIMEOUT = 10.0  # no login_ok by then: that connection is given up
FEATURES = ["rooms", "users_delta", "lazy_users"]


def crowd_names(n: int) -> list[str]:
    return [f"crowd{k:03d}" for k in range(1, n + 1)]


@dataclass
class _Member:
    user: str
    client: int
    rooms: list[str]  # the rooms it joins (HALL first)
    joined: set[str] = field(default_factory=set)  # rooms a join of it was answered in
    sock: socket.socket | None = None
    conn: int = 0
    buf: bytes = b""
    logged_in: bool = False
    login_sent_at: float = 0.0
    replaying: bool = False
    # The chain's cursor: the highest seq received; after replay_done, at least
    # login_ok's seq. None before the first login_ok (the first login has no since).
    since: int | None = None
    epoch: str | None = None
    top: int = 0  # login_ok's seq of the current connection
    next_try: float = 0.0  # monotonic: when to connect again
    last_ping: float = 0.0
    join_sent_at: float = 0.0
    node: int = 0  # the index of the address it tries next
    connections: int = 0
    received: int = 0


class Crowd:
    """``n`` members on ``addresses`` (the clients' links: the faults reach them)."""

    def __init__(
        self,
        names: Sequence[str],
        addresses: Sequence[tuple[str, int]],
        history: History,
        seed: int,
        small_rooms: Sequence[str] = (),
    ) -> None:
        self.addresses = list(addresses)
        self.history = history
        self.rng = random.Random(f"{seed}/crowd")
        self.members: list[_Member] = []
        for k, name in enumerate(names):
            rooms = [HALL]
            if small_rooms and self.rng.random() < 1 / 3:
                rooms.append(self.rng.choice(list(small_rooms)))
            # Four in five start on the first node and move on together as it fails
            # them: a cluster's node then holds most of the room (over 128 of it),
            # not a third; the rest are spread over the nodes.
            first = k % len(self.addresses) if k % 5 == 4 else 0
            m = _Member(name, history.new_client(), rooms, node=first)
            self.members.append(m)
        self.stop = threading.Event()
        self.errors: list[str] = []  # the thread's own failures, read once it has ended
        self._sel = selectors.DefaultSelector()
        self._by_fd: dict[int, _Member] = {}
        self.thread = threading.Thread(target=self._main, name="nemesis-crowd", daemon=True)

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self.thread.start()

    def ready(self) -> int:
        """How many members are logged in and have been answered every join (read from
        another thread: a snapshot, good enough to wait on)."""
        return sum(1 for m in self.members if m.logged_in and len(m.joined) == len(m.rooms))

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready() == len(self.members):
                return True
            if self.stop.wait(0.2):  # polled: the crowd's thread has no condition to share
                return False
        return False

    def stats(self) -> dict[str, int]:
        return {
            "crowd members": len(self.members),
            "crowd connections": sum(m.connections for m in self.members),
            "crowd frames received": sum(m.received for m in self.members),
        }

    # ------------------------------------------------------------------ the thread

    def _main(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # a bug of the harness: the run reports it
            log.exception("the crowd failed")
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            for m in self.members:
                self._close(m, again=False, exit_=True)
            self._sel.close()

    def _loop(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            for m in self.members:
                if m.sock is None and now >= m.next_try:
                    self._connect(m)
                elif m.sock is not None:
                    if not m.logged_in and now - m.login_sent_at > LOGIN_TIMEOUT:
                        self._close(m)  # given up: a new connection, a new login
                    elif m.logged_in and now - m.last_ping > PING_EVERY:
                        self._send(m, {"command": "ping"})
                        m.last_ping = now
                    elif m.logged_in and now - m.join_sent_at > 5.0:
                        self._join(m)  # a join refused or unanswered: again
            for key, _ in self._sel.select(timeout=0.2):
                member = self._by_fd.get(key.fd)
                if member is not None:
                    self._read(member)

    def _connect(self, m: _Member) -> None:
        address = self.addresses[m.node % len(self.addresses)]
        m.node += 1
        try:
            sock = socket.create_connection(address, timeout=2.0)
        except OSError:
            m.next_try = time.monotonic() + self.rng.uniform(0.5, 2.0)
            return
        sock.setblocking(False)
        h = self.history
        m.sock, m.buf, m.logged_in, m.replaying = sock, b"", False, False
        m.conn = h.new_conn()
        m.connections += 1
        h.add(ConnOpen(t=h.now(), user=m.user, client=m.client, conn=m.conn, address=str(address)))
        self._by_fd[sock.fileno()] = m
        self._sel.register(sock, selectors.EVENT_READ)
        login: dict[str, Any] = {
            "command": "login",
            "username": m.user,
            "password": PASSWORD,
            "features": FEATURES,
            "id": "login",
        }
        if m.since is not None:
            login.update(since=m.since, epoch=m.epoch)
        m.login_sent_at = m.last_ping = time.monotonic()
        self._send(m, login)

    def _send(self, m: _Member, frame: dict[str, Any]) -> None:
        sock = m.sock
        if sock is None:
            return
        self.history.frame_out(m.user, m.client, m.conn, frame)
        data = json.dumps(frame).encode() + b"\n"
        try:
            # Small frames into an empty send buffer: a blocking write of them never
            # waits on anything but a dead peer, which the timeout bounds.
            sock.settimeout(2.0)
            sock.sendall(data)
        except OSError:
            self._close(m)
        else:
            sock.setblocking(False)

    def _close(self, m: _Member, again: bool = True, exit_: bool = False) -> None:
        sock = m.sock
        if sock is None:
            return
        if exit_ and m.logged_in:
            self._send(m, {"command": "exit"})
            sock = m.sock
            if sock is None:
                return
        m.sock = None
        self._by_fd.pop(sock.fileno(), None)
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass  # never registered, or already gone
        sock.close()
        h = self.history
        h.add(ConnClose(t=h.now(), user=m.user, client=m.client, conn=m.conn))
        m.logged_in = False
        if again:
            m.next_try = time.monotonic() + self.rng.uniform(0.2, 2.0)

    def _read(self, m: _Member) -> None:
        sock = m.sock
        if sock is None:
            return
        try:
            data = sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            self._close(m)
            return
        if not data:
            self._close(m)
            return
        m.buf += data
        while m.sock is not None and b"\n" in m.buf:
            line, _, m.buf = m.buf.partition(b"\n")
            try:
                frame = json.loads(line)
            except ValueError:
                frame = {"type": "unreadable", "line": line[:200].decode(errors="replace")}
            if isinstance(frame, dict):
                self._frame(m, frame)

    def _frame(self, m: _Member, f: dict[str, Any]) -> None:
        self.history.frame_in(m.user, m.client, m.conn, f)
        m.received += 1
        kind, seq = f.get("type"), f.get("seq")
        if kind == "login_ok" and f.get("id") == "login":
            m.logged_in = True
            m.top = int(seq) if isinstance(seq, int) else 0
            m.epoch = f.get("epoch") if isinstance(f.get("epoch"), str) else m.epoch
            m.replaying = bool(f.get("replay"))
            if not m.replaying:
                self._caught_up(m)
            self._join(m)
        elif kind == "error" and f.get("id") == "login":
            self._close(m)  # unavailable during a fault: again, on the next node
        elif kind == "replay_done":
            m.replaying = False
            self._caught_up(m)
        elif kind == "room_info" and str(f.get("id", "")).startswith("join-"):
            k = int(str(f["id"])[5:])
            if 0 <= k < len(m.rooms):
                m.joined.add(m.rooms[k])
        elif kind in ("broadcast", "dm", "room_event") and isinstance(seq, int):
            if m.since is None or seq > m.since:
                m.since = seq
        elif kind == "bye":
            self._close(m)

    def _join(self, m: _Member) -> None:
        """Join each of its rooms no join was answered in yet (a member already answers
        as for any room one is in, without a seq: docs/PROTOCOL.md §Rooms)."""
        m.join_sent_at = time.monotonic()
        for k, room in enumerate(m.rooms):
            if room not in m.joined:
                self._send(m, {"command": "join", "room": room, "id": f"join-{k}"})

    @staticmethod
    def _caught_up(m: _Member) -> None:
        """Everything up to login_ok's seq has arrived (§Resume)."""
        if m.since is None or m.top > m.since:
            m.since = m.top
