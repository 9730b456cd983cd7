"""The bots' connections in the pool (chatroom_bots.load.pool): opening one (TCP or
WebSocket), the login and the rooms it joins, writing, reading what it receives, its
keepalive, and its end. :class:`BotPool` adds the loop that drives these and the
threads' interface, and is the only class that derives from :class:`BotConnections`
(a base class rather than an object of its own: the loop calls these on every epoll
event, and they share every counter with it).

Each bot is a :class:`~chatroom.session.ClientSession`, the SDK's I/O-free client, which
decides everything about login, errors, ``bye`` and keepalive; this adds only a fast
path for counting deliveries (chatroom_bots.load.peek), which keeps the session's cursor
up to date through the session's own rules (``message_seq`` for every delivery,
``acked`` for every ack), so a bot cut by churn resumes from it.

Threads: everything here belongs to the pool's loop thread (``load-bots``);
``logged_in`` and ``resuming`` are read by other threads (a stale read is a count a
moment old), ``_failures`` after the pool's ``_done`` is set, and ``_stop`` is set by
:meth:`BotPool.close`. Counters go to the worker's Recorder (the Sink), which has its
own lock.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import threading
import time

from chatroom import Broadcast, DirectMessage, Disconnect, Reconnected, ServerNotice
from chatroom.errors import ChatTimeout, FrameTooLarge
from chatroom.hosts import parse_hosts
from chatroom.protocol import LoginOk, split_block
from chatroom.rooms import JoinCommand, PartCommand
from chatroom.session import BadFrame, ClientSession, Ended, Refused, Reply, SessionEvent
from chatroom_bots.load.peek import ACK, DELIVERIES, IGNORED, peek_block
from chatroom_bots.load.poolbot import (
    CLOSED,
    CONNECTING,
    IN,
    JOINING,
    LOGGING_IN,
    OUT,
    READY,
    STARTING,
    Bot,
    Sink,
)
from chatroom_bots.load.recorder import Delivery
from chatroom_bots.load.rooms import reconcile
from chatroom_bots.load.wslink import WsClosed, WsLink

log = logging.getLogger(__name__)


class BotConnections:
    """The bots' sockets and sessions; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        names: list[str],
        password: str,
        sink: Sink,
        *,
        timeout: float,
        keepalive: float,
        max_frame: int,
        transport: str,
        web_port: int | None,
        rooms: dict[int, tuple[str, ...]] | None,
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
        self._timeout = timeout
        self._keepalive = keepalive
        self._max_frame = max_frame
        # epoll itself, not ``selectors``: its select() builds a key and a tuple per
        # event in Python, 0.5 µs of the generator's ~11 per delivery at 10,000 bots
        # (docs/PERFORMANCE.md, "10,000 clients: where the CPU goes"). Linux only, as
        # the server is.
        self._epoll = select.epoll()
        self._by_fd: dict[int, Bot] = {}  # the bots' registered fds
        self._bots: dict[int, Bot] = {}
        self._stop = threading.Event()  # closing: a lost connection is not reported
        # Deliveries read in this round of the loop, for the sink in one call (_flush).
        self._got: list[Delivery] = []
        self.resuming = 0  # bots cut and not caught up yet (loop thread; read anywhere)
        self._in_login = 0
        self.logged_in = 0
        self._failures: list[str] = []

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
            # No user list: 10,000 bots each keeping a 10,000-name list is 10^8 entries;
            # nor the names in login_ok, which in a rejoin of 10,000 are 1.5 GB for the
            # server to send and the generator to skip (docs/PROTOCOL.md §lazy_users).
            session = ClientSession(
                keepalive=self._keepalive,
                timeout=self._timeout,
                max_frame=self._max_frame,
                track_users=False,
                rooms=self._rooms is not None,
                lazy_users=True,
            )
        link = WsLink(self._ws_host, int(addr[1])) if ws else None
        bot = Bot(idx, sock, session, resuming, link)
        if started is not None:
            bot.started = started  # a cut: caught-up time counts from the cut
        self._bots[idx] = bot
        if not resuming:
            self._in_login += 1
        err = sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            self._fail(bot, f"cannot connect: {errno.errorcode.get(err, err)}")
            return
        self._epoll.register(sock.fileno(), OUT)
        self._by_fd[sock.fileno()] = bot

    def _writable(self, bot: Bot) -> None:
        if bot.state == CONNECTING:
            err = bot.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._fail(bot, f"cannot connect: {errno.errorcode.get(err, err)}")
                return
            bot.state = LOGGING_IN
            if bot.link is not None:
                # The login waits for the handshake's answer (_readable).
                self._send(bot, bot.link.handshake(), time.monotonic(), raw=True)
                return
            self._hello(bot)
            return
        self._send(bot, b"", time.monotonic())  # flush what was left

    def _hello(self, bot: Bot) -> None:
        now = time.monotonic()
        hello = bot.session.connection_made(now)  # a re-login with since, after a cut
        if not hello:
            _, hello = bot.session.login(self._names[bot.idx], self._password)
        self._send(bot, hello, now)

    def _send(self, bot: Bot, data: bytes, now: float, raw: bool = False) -> None:
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
            self._epoll.modify(bot.sock.fileno(), IN | OUT if want else IN)

    def _readable(self, bot: Bot) -> None:
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
        if bot.state == JOINING:
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

    def _event(self, bot: Bot, frame: bytes) -> bool:
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
                bot.state = READY
                bot.resuming = False
                self.resuming -= 1
                self.logged_in += 1
                self._sink.resumed(int((time.monotonic() - bot.started) * 1e6))
            elif isinstance(event, Refused):
                if bot.state == LOGGING_IN:
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

    def _join_rooms(self, bot: Bot) -> bool:
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
        bot.state = JOINING
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

    def _ready(self, bot: Bot) -> None:
        """A new bot logged in (and in its rooms): counted, and its login timed."""
        bot.state = READY
        self._in_login -= 1
        self.logged_in += 1
        self._sink.login_time(int((time.monotonic() - bot.started) * 1e6))

    def _check_timers(self, now: float) -> None:
        for bot in list(self._bots.values()):
            if bot.state in STARTING:
                if now - bot.started > self._timeout:
                    self._fail(bot, f"no login_ok within {self._timeout:g} s")
            elif bot.state == READY:
                try:
                    ping = bot.session.keepalive(now)  # the server closes silent clients
                except ChatTimeout as exc:
                    self._lost(bot, str(exc))
                    continue
                if ping:
                    self._send(bot, ping, now)

    def _fail(self, bot: Bot, why: str) -> None:
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

    def _lost(self, bot: Bot, why: str) -> None:
        """A connection that ended; during login it is a failed login."""
        if bot.state in STARTING:
            self._fail(bot, why)
            return
        self._drop(bot)
        self.logged_in -= 1
        if not self._stop.is_set():
            log.warning("%s: %s", self._names[bot.idx], why)
            self._sink.disconnected(Disconnect("network", ConnectionError(why)))

    def _drop(self, bot: Bot) -> None:
        bot.state = CLOSED
        self._bots.pop(bot.idx, None)
        fd = bot.sock.fileno()
        if self._by_fd.get(fd) is bot:  # not when connect failed at once
            del self._by_fd[fd]
            self._epoll.unregister(fd)
        bot.sock.close()
