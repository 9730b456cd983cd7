"""chat-load's receiving bots: thousands of connections on one thread per worker process.

The bots that send are :class:`~chatroom.ChatClient`\\ s. The ones that only receive (all
but the senders: 9,999 of 10,000 in a hold) run here instead, on the SDK's I/O-free
protocol layer (:class:`~chatroom.protocol.FrameDecoder`,
:func:`~chatroom.protocol.decode_event`) driven by one ``selectors`` (epoll) loop.

Why not a ChatClient each: that is a thread per bot, and every delivery then wakes one
of thousands of threads that all want the GIL. Measured on this 2-core machine, 10,000
such bots in two processes burned 1,060 s of system time in 657 s and never finished
logging in, and each process grew to 3 GB (every bot kept its own copy of a 7,000-name
user list). Here a delivery costs one ``recv`` on a thread that is already running,
several frames often arrive in one read, and no bot keeps a user list.

Threads: the loop thread (``load-receivers``) owns every socket and per-bot state. Other
threads only call :meth:`ReceiverPool.start`, :meth:`~ReceiverPool.wait_logged_in` and
:meth:`~ReceiverPool.close`, which talk to it through ``_stop`` (an Event), a wake-up
socket pair, and ``_done``; ``_failures`` and ``logged_in`` are written by the loop and
read after ``_done`` is set. Counters go to the worker's Recorder, which has its own lock.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
import time
from collections import deque
from typing import Protocol

from chatroom import Broadcast, DirectMessage, Disconnect
from chatroom.errors import FrameTooLarge, ProtocolError
from chatroom.protocol import (
    Bye,
    ErrorEvent,
    ExitCommand,
    Feature,
    FrameDecoder,
    LoginCommand,
    LoginOk,
    PingCommand,
    decode_event,
    encode,
)

log = logging.getLogger(__name__)

_PING = encode(PingCommand())
_EXIT = encode(ExitCommand())
_CONNECTING, _LOGGING_IN, _READY, _CLOSED = range(4)


class Sink(Protocol):
    """Where the pool reports (chatroom_bots.load.worker.Recorder)."""

    def delivery(self, receiver: int, message: str) -> None: ...
    def error(self, _: object = None) -> None: ...
    def disconnected(self, event: Disconnect) -> None: ...
    def login_time(self, micros: int) -> None: ...


class _Bot:
    __slots__ = ("decoder", "idx", "last_tx", "out", "sock", "started", "state")

    def __init__(self, idx: int, sock: socket.socket, max_frame: int) -> None:
        self.idx = idx
        self.sock = sock
        self.decoder = FrameDecoder(max_frame)
        self.state = _CONNECTING
        self.started = time.monotonic()
        self.last_tx = self.started
        self.out = b""  # bytes the kernel did not take yet (rare: we send little)


class ReceiverPool:
    """Logs in and runs receiving bots; see the module docstring."""

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
    ) -> None:
        self._addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        self._names = names
        self._password = password
        self._sink = sink
        self._concurrency = max(1, concurrency)
        self._timeout = timeout
        self._keepalive = keepalive
        self._max_frame = max_frame
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = threading.Event()
        self._done = threading.Event()  # every bot logged in or failed
        self._todo: deque[int] = deque()
        self._bots: dict[int, _Bot] = {}
        self._in_login = 0
        self.logged_in = 0
        self._failures: list[str] = []
        self._thread = threading.Thread(target=self._run, name="load-receivers", daemon=True)

    # ------------------------------------------------------------ other threads

    def start(self, bots: list[int]) -> None:
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

    def close(self, timeout: float = 5.0) -> None:
        """Say exit on every connection, close them, join the loop thread."""
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # the loop is gone already
        if self._thread.ident is not None:
            self._thread.join(timeout)
        self._wake_w.close()

    # ------------------------------------------------------------ loop thread

    def _run(self) -> None:
        sel = self._sel
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        next_check = time.monotonic() + 1.0
        try:
            while not self._stop.is_set():
                while self._todo and self._in_login < self._concurrency:
                    self._open(self._todo.popleft())
                if not self._todo and not self._in_login:
                    self._done.set()
                for key, mask in sel.select(timeout=0.5):
                    bot = key.data
                    if bot is None:
                        self._wake_r.recv(4096)
                        continue
                    if mask & selectors.EVENT_WRITE:
                        self._writable(bot)
                    if mask & selectors.EVENT_READ and bot.state != _CLOSED:
                        self._readable(bot)
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + 1.0
                    self._check_timers(now)
        except Exception:
            log.exception("the receiver loop failed")
            raise
        finally:
            self._goodbye()

    def _open(self, idx: int) -> None:
        family, kind, proto, _, addr = self._addr
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        bot = _Bot(idx, sock, self._max_frame)
        self._bots[idx] = bot
        self._in_login += 1
        err = sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            self._fail(bot, f"cannot connect: {errno.errorcode.get(err, err)}")
            return
        self._sel.register(sock, selectors.EVENT_WRITE, bot)

    def _writable(self, bot: _Bot) -> None:
        if bot.state == _CONNECTING:
            err = bot.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._fail(bot, f"cannot connect: {errno.errorcode.get(err, err)}")
                return
            bot.state = _LOGGING_IN
            self._sel.modify(bot.sock, selectors.EVENT_READ, bot)
            login = LoginCommand(
                username=self._names[bot.idx],
                password=self._password,
                features=(Feature.USERS_DELTA.value,),
            )
            self._send(bot, encode(login))
            return
        self._send(bot, b"")  # flush what was left

    def _send(self, bot: _Bot, data: bytes) -> None:
        buf = bot.out + data
        try:
            sent = bot.sock.send(buf) if buf else 0
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lost(bot, f"send failed: {exc}")
            return
        bot.out = buf[sent:]
        bot.last_tx = time.monotonic()
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if bot.out else 0)
        self._sel.modify(bot.sock, want, bot)

    def _readable(self, bot: _Bot) -> None:
        try:
            data = bot.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(bot, f"network error: {exc}")
            return
        if not data:
            self._lost(bot, "the server closed the connection")
            return
        try:
            frames = bot.decoder.feed(data)
        except FrameTooLarge as exc:
            self._lost(bot, str(exc))
            return
        for frame in frames:
            try:
                event = decode_event(frame)
            except ProtocolError as exc:
                if exc.code != "unknown_command":  # a type this version does not know
                    log.warning("bad frame from the server: %s", exc)
                    self._sink.error()
                continue
            if isinstance(event, Broadcast | DirectMessage):
                self._sink.delivery(bot.idx, event.message)
            elif isinstance(event, LoginOk):
                bot.state = _READY
                self._in_login -= 1
                self.logged_in += 1
                self._sink.login_time(int((time.monotonic() - bot.started) * 1e6))
            elif isinstance(event, ErrorEvent):
                if bot.state == _LOGGING_IN:
                    self._fail(bot, f"{event.code}: {event.message}")
                    return
                self._sink.error()
            elif isinstance(event, Bye):
                self._lost(bot, f"bye: {event.reason}")
                return

    def _check_timers(self, now: float) -> None:
        for bot in list(self._bots.values()):
            if bot.state in (_CONNECTING, _LOGGING_IN):
                if now - bot.started > self._timeout:
                    self._fail(bot, f"no login_ok within {self._timeout:g} s")
            elif bot.state == _READY and now - bot.last_tx > self._keepalive:
                self._send(bot, _PING)  # the server closes silent clients (§Timeouts)

    def _fail(self, bot: _Bot, why: str) -> None:
        """A login that did not succeed."""
        self._failures.append(f"{self._names[bot.idx]}: {why}")
        self._in_login -= 1
        self._drop(bot)

    def _lost(self, bot: _Bot, why: str) -> None:
        """A connection that ended; during login it is a failed login."""
        if bot.state in (_CONNECTING, _LOGGING_IN):
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
        try:
            self._sel.unregister(bot.sock)
        except (KeyError, ValueError):
            pass  # never registered (connect failed at once)
        bot.sock.close()

    def _goodbye(self) -> None:
        """Loop thread, at the end: exit on every logged-in connection, then close all."""
        for bot in list(self._bots.values()):
            if bot.state == _READY and not bot.out:
                try:
                    bot.sock.send(_EXIT)
                except OSError:
                    pass  # going anyway; the server notices the close
            self._drop(bot)
        self._sel.close()
        self._wake_r.close()
        self._done.set()
