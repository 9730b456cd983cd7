"""chat-load's bots: thousands of connections on one thread per worker process.

Every bot of a worker (without TLS) lives in its :class:`BotPool`: one epoll loop that
logs the bots in, reads what they receive, and sends the senders' messages when the
step's :class:`~chatroom_bots.load.poolbot.Schedule` says they are due. The bots'
connections, their sessions and what they read are
chatroom_bots.load.poolconn's (:class:`~chatroom_bots.load.poolconn.BotConnections`,
this class's base); a bot and what the pool is handed are chatroom_bots.load.poolbot's.
Here: the loop, the schedule, churn, and the other threads' interface.

Why one thread and not a :class:`~chatroom.ChatClient` each: that is a thread per bot, and
every delivery then wakes one of thousands of threads that all want the GIL, and every bot
keeps its own copy of the user list (docs/PERFORMANCE.md, "Holding 10,000 clients" and
"The generator", has what that cost). Here a delivery costs its share of one ``recv`` on
a thread that is already running, and no bot keeps a user list. Sending from the same
thread matters as much: senders driven from another thread wait for the GIL behind the
receive threads, and their sends go out late.

Churn (``chat-load run --churn R``): while a schedule plays, R bots a second (receivers
only: a sender cut mid-send would make "sent" mean nothing) have their connection reset
abruptly and reconnect at once with ``since`` (their session's cursor, which the fast path
keeps up to date, chatroom_bots.load.poolconn). Everything they missed comes back
replayed, and nothing they sent themselves; the Recorder counts every delivery, live or
replayed, against what each bot should have received over the run.

Threads: the loop thread (``load-bots``) owns every socket, every bot's state, the
schedule it is playing and the round's batch of deliveries (``_got``). Other threads
only call :meth:`BotPool.start`, :meth:`~BotPool.wait_logged_in`, :meth:`~BotPool.play`
and :meth:`~BotPool.close`, which talk to it through ``_stop`` (an Event), ``_plays`` (a
deque), a wake-up socket pair, and ``_done``; ``_failures`` and ``logged_in`` are
written by the loop and read after ``_done`` is set. Counters go to the worker's
Recorder (the Sink), which has its own lock.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import struct
import threading
import time
from collections import deque

from chatroom_bots.load.poolbot import (
    CLOSED,
    CONNECTING,
    ERR,
    IN,
    IN_OR_ERR,
    OUT,
    READY,
    Bot,
    Schedule,
    Sink,
)
from chatroom_bots.load.poolconn import BotConnections

__all__ = ["BotPool", "Schedule", "Sink"]

log = logging.getLogger(__name__)

# Readable bots handled between two looks at the schedule (a look is a clock read).
READS_BETWEEN_SENDS = 32
MAX_EVENTS = 1024  # per poll: the next poll gets the rest


class BotPool(BotConnections):
    """Logs in and runs bots; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        names: list[str],
        password: str,
        sink: Sink,
        *,
        concurrency: int = 32,
        timeout: float = 30.0,
        keepalive: float = 50.0,  # under the server's 120 s idle timeout, with margin
        max_frame: int = 64 * 1024 * 1024,
        churn: float = 0.0,
        keep: frozenset[int] = frozenset(),
        seed: int = 1,
        transport: str = "tcp",
        web_port: int | None = None,
        rooms: dict[int, tuple[str, ...]] | None = None,
    ) -> None:
        super().__init__(
            host,
            port,
            names,
            password,
            sink,
            timeout=timeout,
            keepalive=keepalive,
            max_frame=max_frame,
            transport=transport,
            web_port=web_port,
            rooms=rooms,
        )
        self._concurrency = max(1, concurrency)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._done = threading.Event()  # every bot logged in or failed
        self._todo: deque[int] = deque()
        self._plays: deque[Schedule] = deque()  # handed to the loop by play()
        self._orders: deque[str] = deque()  # "drop" / "rejoin", from drop_all()/rejoin_all()
        self._schedule: Schedule | None = None  # the one being played (loop thread)
        # Churn: bots cut per second while a schedule plays, never those in ``keep``.
        self._churn = churn
        self._keep = keep
        self._next_cut = 0.0
        self._rng = random.Random(seed)
        self._dropped: list[int] = []  # dropped by drop_all, waiting for rejoin_all
        self._thread = threading.Thread(target=self._run, name="load-bots", daemon=True)

    # ------------------------------------------------------------ other threads

    def start(self, bots: list[int]) -> None:
        self._cuttable = [i for i in bots if i not in self._keep] or [-1]
        self._todo.extend(bots)
        if not bots:
            self._done.set()
        self._thread.start()

    def wait_logged_in(self, stop: threading.Event) -> list[str]:
        """Block until every bot has logged in or failed (each has its own timeout), or
        ``stop`` is set; return the failures."""
        while not self._done.wait(0.5):
            if stop.is_set() or not self._thread.is_alive():
                break
        return list(self._failures)

    @property
    def failures(self) -> list[str]:
        """Logins that failed so far (a copy)."""
        return list(self._failures)

    def wait_caught_up(self, timeout: float) -> bool:
        """Block until no churned bot is still catching up (or ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while self.resuming and time.monotonic() < deadline:
            if self._stop.wait(0.05):
                return False
        return not self.resuming

    def drop_all(self) -> None:
        """Reset every connection at once (no goodbye), as a network blip does; the loop
        thread does it at its next wake-up. ``rejoin_all`` brings them back."""
        self._done.clear()
        self._orders.append("drop")
        self._wake()

    def rejoin_all(self) -> None:
        """Log every dropped bot in again (at the pool's login concurrency); then
        :meth:`wait_logged_in` returns once they all are."""
        self._done.clear()
        self._orders.append("rejoin")
        self._wake()

    def play(self, schedule: Schedule) -> None:
        """Send on ``schedule`` from the loop thread; it sets ``schedule.finished``."""
        self._plays.append(schedule)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # the loop is gone already (or its wake-up buffer is full: it will look)

    def close(self, timeout: float = 5.0) -> None:
        """Say exit on every connection, close them, join the loop thread."""
        self._stop.set()
        self._wake()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        self._wake_w.close()

    # ------------------------------------------------------------ loop thread

    def _run(self) -> None:
        poll = self._epoll.poll
        by_fd = self._by_fd
        wake_fd = self._wake_r.fileno()
        self._epoll.register(wake_fd, IN)
        next_check = time.monotonic() + 1.0
        try:
            while not self._stop.is_set():
                while self._todo and self._in_login < self._concurrency:
                    self._open(self._todo.popleft())
                if not self._todo and not self._in_login:
                    self._done.set()
                # Sends first, and again between reads: a send is late from its
                # intended time, so it never waits for a batch of reads it need not.
                timeout = self._send_due(0.5)
                for n, (fd, mask) in enumerate(poll(timeout, MAX_EVENTS), 1):
                    if n % READS_BETWEEN_SENDS == 0 and self._schedule is not None:
                        # A server that coalesces answers in bursts: hundreds of this
                        # pool's bots readable at once, over 10 ms of reads here at
                        # 1,000 clients (docs/PERFORMANCE.md, "Sends between reads").
                        self._send_due(0.0)
                    if fd == wake_fd:
                        self._wake_r.recv(4096)
                        if self._schedule is None and self._plays:
                            self._schedule = self._plays.popleft()
                        while self._orders:
                            self._order(self._orders.popleft())
                        continue
                    bot = by_fd.get(fd)
                    if bot is None:
                        continue  # dropped earlier in this round
                    # As ``selectors`` did: an error goes where the bot is listening.
                    if mask & OUT or (mask & ERR and bot.writing):
                        self._writable(bot)
                    if mask & IN_OR_ERR and bot.state not in (CLOSED, CONNECTING):
                        self._readable(bot)
                self._flush()
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + 1.0
                    self._check_timers(now)
        except Exception:
            log.exception("the bot loop failed")
            raise
        finally:
            self._goodbye()

    def _send_due(self, idle: float) -> float:
        """Send what the schedule says is due; return how long the loop may wait."""
        sched = self._schedule
        if sched is None:
            return idle
        now = time.monotonic()
        if self._churn > 0:
            idle = min(idle, self._churn_due(now))
        due = sched.next_due()
        burst = 0
        while due is not None and due <= now:
            burst += 1
            if burst > 256:  # far behind: let the reads in between (the lag is recorded)
                return 0.0
            idx, frame, room = sched.pop()
            bot = self._bots.get(idx)
            if bot is not None and bot.state == READY:  # else it failed to log in
                self._send(bot, frame, now)
                self._sink.sent(room, now - due, due)
            due = sched.next_due()
            now = time.monotonic()
        if due is None:
            self._schedule = None
            sched.finished.set()
            if self._plays:  # the next step was handed over early
                self._schedule = self._plays.popleft()
                return 0.0
            return idle
        return min(idle, due - now)

    def _order(self, order: str) -> None:
        if order == "drop":
            self._dropped = sorted(b.idx for b in self._bots.values() if b.state == READY)
            for idx in self._dropped:
                bot = self._bots[idx]
                with contextlib.suppress(OSError):
                    bot.sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                self._drop(bot)
            self.logged_in = 0
            self._done.set()
        elif order == "rejoin":
            self._todo.extend(self._dropped)  # fresh sessions: logins, not resumes
            self._dropped = []

    def _churn_due(self, now: float) -> float:
        """Cut the bots that are due; how long until the next one."""
        if not self._next_cut:
            self._next_cut = now + 1 / self._churn
        while self._next_cut <= now:
            self._next_cut += 1 / self._churn
            ready = [b for b in self._bots.values() if b.state == READY and b.idx not in self._keep]
            if ready:
                self._cut(self._rng.choice(ready), now)
        return self._next_cut - now

    def _cut(self, bot: Bot, now: float) -> None:
        """Reset the connection (RST, no goodbye), then reconnect with the same session:
        its re-login carries since, its cursor (docs/PROTOCOL.md §Resume)."""
        with contextlib.suppress(OSError):
            bot.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._drop(bot)
        bot.session.connection_lost()
        self.logged_in -= 1
        self.resuming += 1
        self._open(bot.idx, bot.session, started=now)

    def _goodbye(self) -> None:
        """Loop thread, at the end: exit on every logged-in connection, then close all."""
        for bot in list(self._bots.values()):
            if bot.state == READY and not bot.out:
                bye = bot.session.logout()
                try:
                    bot.sock.send(bot.link.wrap(bye) if bot.link is not None else bye)
                except OSError:
                    pass  # going anyway; the server notices the close
            self._drop(bot)
        self._epoll.close()
        self._wake_r.close()
        self._done.set()
