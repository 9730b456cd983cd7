"""chat-load's bots: thousands of connections on one thread per worker process.

Every bot of a worker (without TLS) lives in its :class:`BotPool`: one epoll loop that
logs the bots in, reads what they receive, and sends the senders' messages when the
step's :class:`Schedule` says they are due. Each bot is a
:class:`~chatroom.session.ClientSession`, the SDK's I/O-free client, which decides
everything about login, errors, ``bye`` and keepalive; the pool adds only a fast path
for counting deliveries.

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
keeps up to date through the session's own rules: ``message_seq`` for every delivery,
``acked`` for every ack). Everything they missed comes back replayed, and nothing they
sent themselves; the Recorder counts every delivery, live or replayed, against what each
bot should have received over the run.

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
import errno
import logging
import random
import select
import socket
import struct
import threading
import time
from collections import deque
from typing import Protocol

from chatroom import Broadcast, DirectMessage, Disconnect, Reconnected, ServerNotice
from chatroom.errors import ChatTimeout, FrameTooLarge
from chatroom.hosts import parse_hosts
from chatroom.protocol import LoginOk, split_block
from chatroom.rooms import JoinCommand, PartCommand
from chatroom.session import BadFrame, ClientSession, Ended, Refused, Reply, SessionEvent
from chatroom_bots.load.peek import ACK, DELIVERIES, IGNORED, peek_block
from chatroom_bots.load.recorder import Delivery
from chatroom_bots.load.rooms import reconcile
from chatroom_bots.load.wslink import WsClosed, WsLink

log = logging.getLogger(__name__)


# Readable bots handled between two looks at the schedule (a look is a clock read).
READS_BETWEEN_SENDS = 32
# epoll's event bits; an error or a hang-up is read or written to find out what it is.
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP
_IN_OR_ERR = _IN | _ERR
_MAX_EVENTS = 1024  # per poll: the next poll gets the rest


class Schedule(Protocol):
    """The sends of one step (chatroom_bots.load.worker.SendSchedule), played by the loop."""

    finished: threading.Event  # set by the loop when the step's last send is out

    def next_due(self) -> float | None:
        """``time.monotonic()`` of the next send; None when the step is over."""

    def pop(self) -> tuple[int, bytes, int | None]:
        """The next send (bot, frame, its room: None for a DM), advancing the schedule."""


# _JOINING: logged in, putting itself in its rooms of the plan (--rooms); ready after.
_CONNECTING, _LOGGING_IN, _JOINING, _READY, _CLOSED = range(5)
_STARTING = (_CONNECTING, _LOGGING_IN, _JOINING)


class Sink(Protocol):
    """Where the pool reports (chatroom_bots.load.recorder.Recorder)."""

    def sent(self, room: int | None, lag: float, due: float) -> None: ...
    def deliveries(self, batch: list[Delivery]) -> None:
        """Messages received: (bot, message, ``time.monotonic()`` µs at arrival, the
        frame's room) each, in the order they arrived for each bot."""

    def error(self, _: object = None) -> None: ...
    def disconnected(self, event: Disconnect) -> None: ...
    def login_time(self, micros: int) -> None: ...
    def replayed(self, n: int) -> None: ...
    def resumed(self, micros: int) -> None: ...


class _Bot:
    __slots__ = (
        "idx",
        "link",
        "out",
        "pending",
        "resuming",
        "session",
        "sock",
        "started",
        "state",
        "writing",
    )

    def __init__(
        self,
        idx: int,
        sock: socket.socket,
        session: ClientSession,
        resuming: bool,
        link: WsLink | None = None,
    ) -> None:
        self.idx = idx
        self.sock = sock
        self.link = link  # over WebSocket (--transport ws): its framing (wslink.py)
        self.session = session
        self.resuming = resuming  # cut by churn, logging in again with since
        self.state = _CONNECTING
        self.started = time.monotonic()
        self.out = b""  # bytes the kernel did not take yet (rare: we send little)
        self.writing = True  # registered for EVENT_WRITE (to connect, or to flush out)
        self.pending: dict[int, str] = {}  # _JOINING: request id -> "join ROOM" / "part ROOM"


class BotPool:
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
        # Several addresses (a cluster's nodes, "a:5050,b:5051"): bot i uses node i mod n.
        self._addrs = [
            socket.getaddrinfo(h, p, type=socket.SOCK_STREAM)[0] for h, p in parse_hosts(host, port)
        ]
        # --transport ws: every bot over WebSocket to the web port; mixed: the odd ones.
        self._transport = transport
        self._ws_host = str(self._addrs[0][4][0])
        self._ws_addr = (
            socket.getaddrinfo(self._ws_host, web_port or port, type=socket.SOCK_STREAM)[0]
            if transport != "tcp"
            else None
        )
        self._names = names
        # --rooms: bot -> the rooms it must be in (protocol v2); None: lobby only (v1).
        self._rooms = rooms
        self._password = password
        self._sink = sink
        self._concurrency = max(1, concurrency)
        self._timeout = timeout
        self._keepalive = keepalive
        self._max_frame = max_frame
        # epoll itself, not ``selectors``: its select() builds a key and a tuple per
        # event in Python, 0.5 µs of the generator's ~11 per delivery at 10,000 bots
        # (docs/PERFORMANCE.md, "10,000 clients: where the CPU goes"). Linux only, as
        # the server is.
        self._epoll = select.epoll()
        self._by_fd: dict[int, _Bot] = {}  # the bots' registered fds
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = threading.Event()
        self._done = threading.Event()  # every bot logged in or failed
        self._todo: deque[int] = deque()
        self._plays: deque[Schedule] = deque()  # handed to the loop by play()
        self._orders: deque[str] = deque()  # "drop" / "rejoin", from drop_all()/rejoin_all()
        self._schedule: Schedule | None = None  # the one being played (loop thread)
        self._bots: dict[int, _Bot] = {}
        # Deliveries read in this round of the loop, for the sink in one call (_flush).
        self._got: list[Delivery] = []
        # Churn: bots cut per second while a schedule plays, never those in ``keep``.
        self._churn = churn
        self._keep = keep
        self._next_cut = 0.0
        self._rng = random.Random(seed)
        self.resuming = 0  # bots cut and not caught up yet (loop thread; read anywhere)
        self._dropped: list[int] = []  # dropped by drop_all, waiting for rejoin_all
        self._in_login = 0
        self.logged_in = 0
        self._failures: list[str] = []
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
        self._epoll.register(wake_fd, _IN)
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
                for n, (fd, mask) in enumerate(poll(timeout, _MAX_EVENTS), 1):
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
                    if mask & _OUT or (mask & _ERR and bot.writing):
                        self._writable(bot)
                    if mask & _IN_OR_ERR and bot.state not in (_CLOSED, _CONNECTING):
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
            if bot is not None and bot.state == _READY:  # else it failed to log in
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
            self._dropped = sorted(b.idx for b in self._bots.values() if b.state == _READY)
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
            ready = [
                b for b in self._bots.values() if b.state == _READY and b.idx not in self._keep
            ]
            if ready:
                self._cut(self._rng.choice(ready), now)
        return self._next_cut - now

    def _cut(self, bot: _Bot, now: float) -> None:
        """Reset the connection (RST, no goodbye), then reconnect with the same session:
        its re-login carries since, its cursor (docs/PROTOCOL.md §Resume)."""
        with contextlib.suppress(OSError):
            bot.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._drop(bot)
        bot.session.connection_lost()
        self.logged_in -= 1
        self.resuming += 1
        self._open(bot.idx, bot.session, started=now)

    def _open(
        self, idx: int, session: ClientSession | None = None, started: float | None = None
    ) -> None:
        ws = self._transport == "ws" or (self._transport == "mixed" and idx % 2 == 1)
        if ws:
            assert self._ws_addr is not None
            family, kind, proto, _, addr = self._ws_addr
        else:
            family, kind, proto, _, addr = self._addrs[idx % len(self._addrs)]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        resuming = session is not None
        if session is None:
            # No user list: 10,000 bots each keeping a 10,000-name list is 10^8 entries.
            session = ClientSession(
                keepalive=self._keepalive,
                timeout=self._timeout,
                max_frame=self._max_frame,
                track_users=False,
                rooms=self._rooms is not None,
            )
        link = WsLink(self._ws_host, int(addr[1])) if ws else None
        bot = _Bot(idx, sock, session, resuming, link)
        if started is not None:
            bot.started = started  # a cut: caught-up time counts from the cut
        self._bots[idx] = bot
        if not resuming:
            self._in_login += 1
        err = sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            self._fail(bot, f"cannot connect: {errno.errorcode.get(err, err)}")
            return
        self._epoll.register(sock.fileno(), _OUT)
        self._by_fd[sock.fileno()] = bot

    def _writable(self, bot: _Bot) -> None:
        if bot.state == _CONNECTING:
            err = bot.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._fail(bot, f"cannot connect: {errno.errorcode.get(err, err)}")
                return
            bot.state = _LOGGING_IN
            if bot.link is not None:
                # The login waits for the handshake's answer (_readable).
                self._send(bot, bot.link.handshake(), time.monotonic(), raw=True)
                return
            self._hello(bot)
            return
        self._send(bot, b"", time.monotonic())  # flush what was left

    def _hello(self, bot: _Bot) -> None:
        now = time.monotonic()
        hello = bot.session.connection_made(now)  # a re-login with since, after a cut
        if not hello:
            _, hello = bot.session.login(self._names[bot.idx], self._password)
        self._send(bot, hello, now)

    def _send(self, bot: _Bot, data: bytes, now: float, raw: bool = False) -> None:
        """Write now what the kernel takes; keep the rest for EVENT_WRITE. The epoll
        registration changes only when that need does (not a syscall per send).
        ``raw``: bytes for the socket as they are (else a WebSocket bot's are framed)."""
        if bot.link is not None and data and not raw:
            data = bot.link.wrap(data)
        buf = bot.out + data if bot.out else data
        try:
            sent = bot.sock.send(buf) if buf else 0
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lost(bot, f"send failed: {exc}")
            return
        bot.out = buf[sent:]
        bot.session.data_sent(now)
        want = bool(bot.out)
        if want != bot.writing:
            bot.writing = want
            self._epoll.modify(bot.sock.fileno(), _IN | _OUT if want else _IN)

    def _readable(self, bot: _Bot) -> None:
        try:
            # 64 KiB, not more: CPython allocates the whole size for each recv, and
            # above glibc's mmap threshold (128 KiB) that is an mmap, a page fault and
            # an munmap per read: recv(262144) cost 16 µs more than recv(65536) here,
            # per read, and at 1,000 clients most reads carry one delivery.
            data = bot.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(bot, f"network error: {exc}")
            return
        if not data:
            self._lost(bot, "the server closed the connection")
            return
        if bot.link is not None:
            try:
                data, back, opened = bot.link.unwrap(data)
            except WsClosed as exc:
                self._lost(bot, str(exc))
                return
            if back:
                self._send(bot, back, time.monotonic(), raw=True)
            if opened:
                self._hello(bot)
            if not data:
                return
        now = time.monotonic()
        arrived = int(now * 1e6)
        try:
            block = bot.session.feed_block(data, now)
        except FrameTooLarge as exc:
            self._lost(bot, str(exc))
            return
        if not block:
            return
        if bot.state == _JOINING:
            # Every frame through the session: the fast path below would take the
            # replies to the bot's parts (acks) for itself.
            for frame in split_block(block):
                if not self._event(bot, frame):
                    return
            return
        # The fast path (chatroom_bots.load.peek): the deliveries join the loop round's
        # batch for the sink, and only what is not a delivery, an ack or ignored takes
        # the SDK's decode, in order.
        frames, peeks = peek_block(block)
        got = self._got
        session = bot.session
        replayed = 0
        for i, peek in enumerate(peeks):
            if peek is not None:
                if peek.message is not None and peek.type in DELIVERIES:
                    if peek.seq is not None:
                        # The session's cursor, kept here since these frames skip its
                        # decode: a re-login after a cut resumes from it. Our own
                        # messages replayed are not deliveries; a duplicate from the
                        # server is, for the Recorder to count (no dedupe here).
                        if session.message_seq(peek.seq) == "own":
                            continue
                        replayed += peek.replay
                    got.append((bot.idx, peek.message, arrived, peek.room))
                    continue
                if peek.type == ACK:
                    if peek.seq is not None:
                        session.acked(peek.seq)  # the bots never DM themselves
                    continue
                if peek.type in IGNORED:
                    continue
            if frames is None:  # the decode matched line for line: no blank lines
                frames = split_block(block)
            self._flush()  # deliveries before an event stay before it
            got = self._got
            if not self._event(bot, frames[i]):
                return
        if replayed:
            self._sink.replayed(replayed)

    def _flush(self) -> None:
        """Hand the deliveries read so far to the sink, in one call."""
        if self._got:
            self._sink.deliveries(self._got)
            self._got = []

    def _event(self, bot: _Bot, frame: bytes) -> bool:
        """One frame through the session; False once the bot is gone."""
        events: list[SessionEvent] = []
        bot.session.handle_frame(frame, events)
        for event in events:
            if isinstance(event, Broadcast | DirectMessage):
                room = event.room if isinstance(event, Broadcast) else None
                arrived = int(time.monotonic() * 1e6)
                self._sink.deliveries([(bot.idx, event.message, arrived, room)])
            elif isinstance(event, Reply):
                if isinstance(event.event, LoginOk):
                    if not self._join_rooms(bot):
                        return False
                elif bot.pending.pop(event.rid, None) is not None and not bot.pending:
                    self._ready(bot)
            elif isinstance(event, Reconnected):  # a cut bot caught up (after replay_done)
                bot.state = _READY
                bot.resuming = False
                self.resuming -= 1
                self.logged_in += 1
                self._sink.resumed(int((time.monotonic() - bot.started) * 1e6))
            elif isinstance(event, Refused):
                if bot.state == _LOGGING_IN:
                    self._fail(bot, str(event.error))
                    return False
                if event.rid in bot.pending:
                    self._fail(bot, f"{bot.pending[event.rid]}: {event.error}")
                    return False
                self._sink.error()
            elif isinstance(event, Ended):
                self._lost(bot, f"bye: {event.reason}")
                return False
            elif isinstance(event, BadFrame):
                log.warning("bad frame from the server: %s", event.error)
                self._sink.error()
            elif isinstance(event, ServerNotice):  # a refused id-less send
                self._sink.error()
        return True

    def _join_rooms(self, bot: _Bot) -> bool:
        """After login_ok: with --rooms, part what the plan does not give the bot and
        join what it does (ready once every reply is in); else ready now. False if the
        server offers no rooms."""
        if self._rooms is None:
            self._ready(bot)
            return True
        session = bot.session
        if not session.rooms_on:
            self._fail(bot, "the server offers no rooms (it runs with --history off?)")
            return False
        bot.state = _JOINING
        leave, join = reconcile((r.name for r in session.rooms), self._rooms[bot.idx])
        requests = [PartCommand(room=r) for r in leave] + [JoinCommand(room=r) for r in join]
        data = b""
        for cmd in requests:
            rid, frame = session.request(cmd)
            bot.pending[rid] = f"{type(cmd).__struct_config__.tag} {cmd.room}"
            data += frame
        if data:
            self._send(bot, data, time.monotonic())
        else:
            self._ready(bot)
        return True

    def _ready(self, bot: _Bot) -> None:
        """A new bot logged in (and in its rooms): counted, and its login timed."""
        bot.state = _READY
        self._in_login -= 1
        self.logged_in += 1
        self._sink.login_time(int((time.monotonic() - bot.started) * 1e6))

    def _check_timers(self, now: float) -> None:
        for bot in list(self._bots.values()):
            if bot.state in _STARTING:
                if now - bot.started > self._timeout:
                    self._fail(bot, f"no login_ok within {self._timeout:g} s")
            elif bot.state == _READY:
                try:
                    ping = bot.session.keepalive(now)  # the server closes silent clients
                except ChatTimeout as exc:
                    self._lost(bot, str(exc))
                    continue
                if ping:
                    self._send(bot, ping, now)

    def _fail(self, bot: _Bot, why: str) -> None:
        """A login that did not succeed."""
        if bot.resuming:  # a churned bot that could not come back: an error, not a login
            bot.resuming = False
            self.resuming -= 1
            self._drop(bot)
            log.warning("%s: could not resume: %s", self._names[bot.idx], why)
            self._sink.disconnected(Disconnect("network", ConnectionError(why)))
            return
        self._failures.append(f"{self._names[bot.idx]}: {why}")
        self._in_login -= 1
        self._drop(bot)

    def _lost(self, bot: _Bot, why: str) -> None:
        """A connection that ended; during login it is a failed login."""
        if bot.state in _STARTING:
            self._fail(bot, why)
            return
        self._drop(bot)
        self.logged_in -= 1
        if not self._stop.is_set():
            log.warning("%s: %s", self._names[bot.idx], why)
            self._sink.disconnected(Disconnect("network", ConnectionError(why)))

    def _drop(self, bot: _Bot) -> None:
        bot.state = _CLOSED
        self._bots.pop(bot.idx, None)
        fd = bot.sock.fileno()
        if self._by_fd.get(fd) is bot:  # not when connect failed at once
            del self._by_fd[fd]
            self._epoll.unregister(fd)
        bot.sock.close()

    def _goodbye(self) -> None:
        """Loop thread, at the end: exit on every logged-in connection, then close all."""
        for bot in list(self._bots.values()):
            if bot.state == _READY and not bot.out:
                bye = bot.session.logout()
                try:
                    bot.sock.send(bot.link.wrap(bye) if bot.link is not None else bye)
                except OSError:
                    pass  # going anyway; the server notices the close
            self._drop(bot)
        self._epoll.close()
        self._wake_r.close()
        self._done.set()
