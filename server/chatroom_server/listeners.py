"""The listeners and the connections' reader threads: the server's transport side.

:class:`Listeners` binds the JSON, IRC and web ports (TLS where configured), runs their
accept loops (the JSON port's on the ``chat-admission`` thread, or with no login slots
``chat-accept``; ``chat-irc``, ``chat-web``), admits each connection (the
per-address and total caps are the presence's, chatroom_server.presence) and hands it to
the :class:`~chatroom_server.admission.Admission` line, which starts its reader thread
once its client has said something and a login slot is free. The reader thread
(``serve``, started with ``_thread``: chatroom_server.readers) is the only thread that
reads its socket: the JSON line transport hands each read to the command runner
(chatroom_server.runner), an IRC or web connection to its session; at the end of each
read the batch of public messages goes to the fan-out (chatroom_server.replies). When the
connection ends, the thread hands it to the reaper (``Presence.depart``) and closes the
socket.

Threads and what they own here:

- Reader threads are counted without a lock (``next()`` on an ``itertools.count`` is
  one C call under the GIL): ``_reader_starts`` by the accept path before a thread
  starts, ``_reader_ends`` by each as its last step. The server's ``stop()``, once no
  more can start, takes the total (``stop_readers``) and an end of its own; whoever
  takes end number total + 1 sets ``_no_readers``. So a stop waits once instead of
  joining 10,000 threads one by one (each join a wait for the GIL), and the 10,000
  departing threads share no lock but one on purpose: ``_ending``, which a reader whose
  connection was reset holds while it ends, so that the rest of a mass reset sleep in it
  instead of asking for the GIL together (docs/PERFORMANCE.md, "One reset reader ending
  at a time").
- ``_readers`` (the running readers' handles): added by the accept thread, discarded by
  each reader as it ends (set operations are single C calls under the GIL; no lock).
- ``tls`` and ``rules``: set by ``start()``, replaced whole by a reload
  (chatroom_server.reload); a connection takes the ones current when it is accepted.
- ``handler_crashes``: written under the presence's lock.
- Each connection's ``Conn`` fields belong to its reader thread (chatroom_server.conn).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatroom.protocol import Bye, ByeReason, ErrorCode, ErrorEvent, LoginCommand, encode
from chatroom_server import logfmt, tlsconn
from chatroom_server.admission import Admission
from chatroom_server.config import ConfigError
from chatroom_server.conn import Conn
from chatroom_server.earlylogin import exempt
from chatroom_server.firstlook import FirstLook, ends
from chatroom_server.irc import IrcOutbox
from chatroom_server.outbox import Flusher, Outbox
from chatroom_server.readers import ReaderThread
from chatroom_server.web import WebOutbox

if TYPE_CHECKING:
    from chatroom_server.backends import Backends
    from chatroom_server.config import ServerConfig
    from chatroom_server.metrics import Tally
    from chatroom_server.presence import Presence
    from chatroom_server.replies import Replies
    from chatroom_server.runner import CommandRunner
    from chatroom_server.session import SessionRules
    from chatroom_server.storm import DepartureStorm

log = logging.getLogger(__name__)

_BYE_SHUTDOWN = encode(Bye(reason=ByeReason.SERVER_SHUTDOWN))

# The listen backlog: the kernel caps it at net.core.somaxconn (4096 on this machine).
# At 1024, an unpaced storm of 10,000 connects overflowed the accept queue tens of
# thousands of times, and each dropped SYN or ACK costs its client a retry 1, 3 or 7 s
# later (docs/PERFORMANCE.md, "Arrival storms").
LISTEN_BACKLOG = 65535

# Linux copies a listening socket's TCP_NODELAY and SO_SNDBUF to every socket accept()
# returns, so they are set once on the listener, not with a setsockopt per connection:
# each syscall on the accept thread gives the GIL up, and in an arrival storm getting it
# back means waiting behind the logins, while the listen queue fills (docs/PERFORMANCE.md,
# "Arrival storms"). Elsewhere, on each connection as before.
INHERITS_OPTIONS = sys.platform == "linux"

# Connections the admission thread admits per turn before it stops taking more out of
# the listen queue (Listeners._accept_some): a whole queue, drained between batches of
# logins (admission.BATCH). At 128 a turn, logins being slower than accepts, a storm's
# queue overflowed at a load of 30. Counted in admissions, not accepts: stopping the
# accepts after 4,096 left the connects that came meanwhile in the kernel's queue while
# those 4,096 were admitted (0.1-0.4 s in a storm), as many as the queue holds.
ACCEPT_BATCH = 4096
# Connections admitted between two looks at the listen queue (_accept_some): 16
# admissions are some 0.5 ms, in which a storm's connects (40 a millisecond here) fill
# 20-50 places of the kernel's 4096.
ADMIT_RUN = 16

# Bytes an idle connection's reader asks of recv(): enough for most commands in one read,
# small enough to live in CPython's small-object pools (memory per idle connection).
IDLE_RECV = 256


def tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain TCP; ConfigError if unusable."""
    if config.tls_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.tls_cert, config.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load the TLS certificate or key: {exc}") from exc
    return ctx


class Listeners:
    """The listening sockets, admission and the reader threads (module docstring)."""

    # What a reader hands each read to, and the end of a read to: given by use(), before
    # any connection is accepted (the runner runs logins, which need this object's
    # admission). Bound once, shared by every reader: a bound method made per reader
    # would be held by each idle thread (memory per connection, docs/PERFORMANCE.md).
    _frames: Callable[[Conn, bytes], str | None]
    _flush_batch: Callable[[Conn], None]

    def __init__(
        self,
        config: ServerConfig,
        backends: Backends,
        presence: Presence,
        replies: Replies,
        rules: SessionRules,
        stats: Tally,
        storm: DepartureStorm,
        stopping: threading.Event,
        attach: Callable[[Conn], None],
    ) -> None:
        self._config = config
        self._b = backends
        self._presence = presence
        self._replies = replies
        self.rules = rules  # replaced whole by a reload (module docstring)
        self._stats = stats
        self._storm = storm
        self._stopping = stopping
        self._attach = attach  # an IRC or web connection's session (the server's Core)
        self._clock = config.clock
        self.tls: ssl.SSLContext | None = None  # start(); replaced whole by a reload
        self.admission: Admission[Conn] = Admission(
            config.login_slots,
            self._start,
            self._never_started,
            lambda conn: conn.sock.fileno(),
            self._queued,
            first=self.first,
            resume=self._resume,
        )
        self._reader_starts = itertools.count(1)  # module docstring: no lock
        self._reader_ends = itertools.count(1)
        self._readers: set[ReaderThread] = set()  # module docstring: no lock
        self._ending = threading.Lock()  # held by the one reset reader ending (serve)
        self._stop_total = -1  # set once by stop_readers(), before its own end
        self._no_readers = threading.Event()
        self._numbers = itertools.count(1)
        self.handler_crashes = 0  # written under the presence's lock
        # The admission thread's look at a connection's first bytes: made by use().
        self.look: FirstLook | None = None
        self.listener: socket.socket | None = None  # the JSON port (start())
        # IRC listeners: (socket, with TLS); bound by start() when configured.
        self.irc_listeners: list[tuple[socket.socket, bool]] = []
        self.irc_addresses: list[tuple[str, int]] = []
        # The web port's listener (docs/WEB.md), bound by start() when configured.
        self.web_listener: socket.socket | None = None
        self.web_address: tuple[str, int] | None = None
        self.flusher: Flusher | None = None  # made by open(), once the ports are bound

    def use(
        self,
        runner: CommandRunner,
        early: Callable[[Conn, bytes], LoginCommand | str | None] | None = None,
    ) -> None:
        """The command runner the reader threads hand their reads to (``_frames``), and
        what tells the logins the admission thread may run itself (``first``)."""
        self._frames = runner.frames
        self._flush_batch = self._replies.flush_batch
        self.look = FirstLook(
            self._config,
            self.admission,
            early,
            runner.act,
            self._flush_batch,
            self._resume,
            functools.partial(self._end_threadless, dead=False),
            self._crashed,
        )

    def _crashed(self) -> None:
        """A handler raised (a bug): counted, under the presence's lock."""
        with self._presence.lock:
            self.handler_crashes += 1

    def bind_more(self) -> None:
        """Bind the IRC and web ports (the JSON one is bound already); on a failure,
        close every listener bound so far and raise."""
        assert self.listener is not None
        try:
            self.bind_irc()
            if self._config.web_port is not None:
                self.web_listener = self.bind(self._config.web_port)
                self.web_address = self.web_listener.getsockname()[:2]
        except BaseException:
            self.listener.close()
            for s, _ in self.irc_listeners:
                s.close()
            raise

    def open(self, spawn: Callable[[Callable[[], None], str], None]) -> None:
        """Start accepting on every bound port: the flusher, the admission line (which
        accepts the JSON port's connections too, with login slots) and the other
        accept loops, each a thread made by ``spawn``."""
        listener = self.listener
        assert listener is not None
        self.flusher = Flusher(self._clock)
        self.flusher.start()
        self.admission.open()
        if self.admission.slots:
            # Accepted on the admission thread, which logs them in (Admission.listen).
            listener.setblocking(False)
            self.admission.listen(listener.fileno(), lambda: self._accept_some(listener))
        else:
            spawn(lambda: self._accept_loop(listener), "chat-accept")
        spawn(self._admit_and_log_in, "chat-admission")
        for sock, tls in self.irc_listeners:
            spawn(functools.partial(self._accept_loop, sock, True, tls), "chat-irc")
            log.info("IRC%s on %s:%d", " (TLS)" if tls else "", *sock.getsockname()[:2])
        if self.web_listener is not None:
            web = self.web_listener
            spawn(lambda: self._accept_loop(web, web=True), "chat-web")
            scheme = "https" if self.tls is not None else "http"
            log.info("web client on %s://%s:%d/", scheme, *web.getsockname()[:2])

    def _admit_and_log_in(self) -> None:
        """The ``chat-admission`` thread, which must never wait (its early logins queue
        for the fan-out without waiting for it: FanOut.never_waits)."""
        self._b.fanout.never_waits()
        self.admission.run()

    def close(self) -> None:
        """Stopping: no more connections; those waiting in line are closed
        (``_never_started``)."""
        listeners = [self.listener, self.web_listener, *(s for s, _ in self.irc_listeners)]
        for listener in listeners:
            if listener is not None:
                with contextlib.suppress(OSError):
                    listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
                listener.close()
        self.admission.close()

    def stop_readers(self, deadline: float) -> None:
        """Stopping, once no reader can start: wait until every reader has ended (or the
        deadline, on time.monotonic()). Meanwhile this thread is the reaper (which has
        stopped): readers that began to leave before the stop wait for it
        (conn.left), and would otherwise wait out the grace."""
        bell = self._presence.reap_bell
        self._stop_total = next(self._reader_starts) - 1  # the accept loops are done
        self.reader_ended()  # stop()'s own end: total + 1 ends means all are done
        while not self._no_readers.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                left = len(self._readers)
                log.warning("%d connections still closing; stopping without them", left)
                break
            if bell.wait(remaining):
                bell.answer()
                self._presence.reap()
        self.join_readers(deadline - time.monotonic())

    def bind(self, port: int | None = None) -> socket.socket:
        family = socket.AF_INET6 if ":" in self._config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if INHERITS_OPTIONS:
                self._connection_options(sock)  # set once here, for every connection
            sock.bind((self._config.host, self._config.port if port is None else port))
            sock.listen(LISTEN_BACKLOG)
        except OSError:
            sock.close()
            raise
        return sock

    def bind_irc(self) -> None:
        c = self._config
        ports = []
        if c.irc_port is not None:
            ports.append((c.irc_port, False))
        if c.irc_tls_port is not None:
            if self.tls is None:
                raise ConfigError("--irc-tls-port needs --tls-cert")
            ports.append((c.irc_tls_port, True))
        if ports and (not c.irc_channel.startswith("#") or " " in c.irc_channel):
            raise ConfigError(f"--irc-channel {c.irc_channel!r}: a channel name starts with #")
        for port, tls in ports:
            try:
                sock = self.bind(port)
            except OSError:
                for s, _ in self.irc_listeners:
                    s.close()
                raise
            self.irc_listeners.append((sock, tls))
            self.irc_addresses.append(sock.getsockname()[:2])

    def _accept_loop(
        self, listener: socket.socket, irc: bool = False, tls: bool = True, *, web: bool = False
    ) -> None:
        while not self._stopping.is_set():
            got = self._accept_one(listener)
            if got is not None:
                self._admit(*got, irc, tls, web=web)

    def _accept_some(self, listener: socket.socket) -> None:
        """Admission thread: accept what waits on the JSON port, until a batch has been
        admitted (the epoll says so again if more wait). Accepted sockets are blocking
        (Linux's accept does not pass O_NONBLOCK on).

        In two steps: whatever waits comes out of the kernel's queue first, then is
        admitted ``ADMIT_RUN`` at a time, the queue emptied again between runs. An
        accept costs some 7 µs of CPU, an admission (its Conn and Outbox) 20-30 µs
        more: one after the other, a storm's 10,000 connects in 0.2 s outran them, and
        the kernel's queue (4096) overflowed, each overflow a client retrying its SYN
        1 s later (docs/PERFORMANCE.md, "Arrival storms"). Waiting here instead, in
        order, costs a connection nothing."""
        waiting: deque[tuple[socket.socket, str, str]] = deque()
        admitted = 0
        while True:
            # Each look bounded too: connects faster than accepts would keep it going.
            for _ in range(ACCEPT_BATCH if admitted < ACCEPT_BATCH else 0):
                got = self._accept_one(listener)
                if got is None:
                    break
                waiting.append(got)
            if not waiting:
                return
            for _ in range(min(ADMIT_RUN, len(waiting))):
                self._admit(*waiting.popleft())
                admitted += 1

    def _accept_one(self, listener: socket.socket) -> tuple[socket.socket, str, str] | None:
        """One accepted connection (its socket, address and ``ip:port``), or None: none
        waiting (a non-blocking listener), stopping, or the accept failed (EMFILE and
        friends: logged, and a pause of 0.1 s while the clients we have are served)."""
        try:
            sock, addr = listener.accept()
        except BlockingIOError:
            return None
        except OSError as exc:
            if not self._stopping.is_set():
                log.error("accept failed: %s", exc)
                self._stopping.wait(0.1)
            return None
        return sock, addr[0], f"{addr[0]}:{addr[1]}"

    def _admit(
        self,
        sock: socket.socket,
        ip: str,
        addr: str,
        irc: bool = False,
        tls: bool = True,
        *,
        web: bool = False,
    ) -> None:
        try:
            sock = self._prepare(sock, tls)
        except OSError as exc:
            # Its client reset it while it waited to be accepted: that connection is
            # gone, and this thread goes on accepting the others.
            log.info("%s went away before it was admitted: %s", addr, exc)
            sock.close()
            return
        num = next(self._numbers)
        assert self.flusher is not None
        outbox = (IrcOutbox if irc else WebOutbox if web else Outbox)(
            sock,
            self.flusher,
            limit=self._config.max_output,
            stall_timeout=self._config.stall_timeout,
            name=f"conn {num} ({addr})",
        )
        outbox.on_drop = self._dropped
        self._stats.add("accepted")
        now = self._clock()
        conn = Conn(num, sock, ip, addr, outbox, self.rules, now)
        if irc or web:
            self._attach(conn)  # its IrcSession or WebSession
        why = self._presence.admit(conn, exempt(self._config, ip))
        if why is not None:
            log.warning("refused %s: %s", addr, why)
            self._refuse(conn, why)
            return
        if conn.outbox.tls:
            # Its handshake runs a step at a time on the admission thread, as its client's
            # bytes come (tlsconn.shake).
            sock.setblocking(False)
        conn.thread = ReaderThread()
        self._readers.add(conn.thread)
        next(self._reader_starts)  # before it runs, so that a stop cannot miss it
        # Its thread starts once its client has said something and a login slot is
        # free (admission.py). IRC clients speak first too: the server says nothing
        # before a client's NICK and USER (or CAP LS), so none waits for it.
        self.admission.watch(conn)

    def _prepare(self, sock: socket.socket, tls: bool) -> socket.socket:
        """An accepted socket set up, and with TLS wrapped (OSError: its client reset
        it). Wrapping a socket whose peer has gone reads it (CPython's check for bytes
        sent before the handshake), which raises when it was reset."""
        if not INHERITS_OPTIONS:
            self._connection_options(sock)
        if self.tls is None or not tls:
            return sock
        try:
            # The handshake happens on the admission thread or the connection's own
            # (tlsconn), never here.
            return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except OSError as exc:
            tlsconn.close_half_made(exc)
            raise

    def _connection_options(self, sock: socket.socket) -> None:
        """No Nagle (every frame is sent whole, and late frames are latency) and the
        configured send buffer: on each connection, or once on the listener where
        accepted sockets inherit them (``INHERITS_OPTIONS``)."""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._config.send_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._config.send_buffer)

    @staticmethod
    def _queued(conn: Conn) -> None:
        """In line for a login slot: waiting for us, so the login timeout, which is
        the client's, does not count (``sweep``)."""
        conn.in_login = True

    def _start(self, conn: Conn) -> None:
        """Start ``conn``'s thread, which holds a login slot: the accept thread's or
        whoever passed its slot on (Admission.leave)."""
        assert conn.thread is not None
        conn.slot = True
        conn.in_login = False
        try:
            conn.thread.start(self.serve, conn)  # returns at once (readers.py)
        except RuntimeError as exc:
            conn.slot = False
            self._not_started(conn, exc)
            self.admission.leave()

    def first(self, conn: Conn) -> bool:
        """Admission thread: a connection's first bytes (FirstLook.first); True if it
        took the connection, False: it goes in line for a thread and a slot."""
        look = self.look
        return look is not None and look.first(conn)

    def _resume(self, conn: Conn) -> None:
        """Start the thread of a connection that needs no login slot: logged in on the
        admission thread (``first``), or with its early login refused. Admission
        thread, or the stopping one (Admission.close)."""
        assert conn.thread is not None
        try:
            conn.thread.start(self.serve, conn)  # returns at once (readers.py)
        except RuntimeError as exc:
            log.error("cannot start a thread for %s: %s", conn.addr, exc)
            self._end_threadless(conn)

    def _end_threadless(self, conn: Conn, *, dead: bool = True) -> None:
        """End a connection whose thread never ran, here, as ``serve``'s end would: the
        session (if any) ends and the socket closes, with nothing more sent. Admission
        thread (or the stopping one): a thread that could not start (``_resume``), or a
        TLS handshake that failed (FirstLook.first, not ``dead``: OpenSSL's alert, if
        it wrote one, is followed by a FIN)."""
        conn.unread = b""
        conn.later = ends
        self._b.fanout.settle(conn, timeout=0.0)
        self._presence.depart(conn)
        conn.outbox.close(linger=0.0, dead=dead)
        self._readers.discard(conn.thread)
        self.reader_ended()

    def _dropped(self, reason: str) -> None:
        """An outbox disconnected its slow client (chatroom_server.outbox)."""
        self._stats.add("drops")

    def _not_started(self, conn: Conn, exc: RuntimeError) -> None:
        """``conn``'s thread could not start ("can't start new thread": out of threads
        or memory)."""
        log.error("cannot start a thread for %s: %s", conn.addr, exc)
        self._readers.discard(conn.thread)
        self.reader_ended()
        self._presence.forget(conn)
        self._refuse(conn, "the server cannot take more connections")

    def _never_started(self, conn: Conn) -> None:
        """Stopping: ``conn`` waited in line for a login slot, and its thread never ran."""
        if conn.outbox.tls and not conn.handshaken:
            # No TLS session yet, so no bye can reach it: a write would only wait for a
            # handshake that is not coming, the linger long (tlsconn).
            conn.outbox.close(linger=0.0, dead=True)
        else:
            conn.outbox.finish(_BYE_SHUTDOWN)
            conn.outbox.close(linger=0.5)
        self._readers.discard(conn.thread)
        self._presence.forget(conn)
        self.reader_ended()

    def let_go(self, conn: Conn) -> None:
        """Reader thread: its login slot, if it holds one, to the next in line."""
        if conn.slot:
            conn.slot = False
            self.admission.leave()

    def reader_ended(self) -> None:
        if next(self._reader_ends) == self._stop_total + 1:
            self._no_readers.set()  # the last of them, after stop()'s own end
            self._presence.reap_bell.ring()  # stop() waits on the bell

    def _refuse(self, conn: Conn, why: str) -> None:
        if conn.outbox.tls and not conn.handshaken:
            # Closed before its handshake, with nothing sent (docs/PROTOCOL.md
            # §Timeouts): server_full through TLS meant a blocking handshake on the
            # accepting thread, which a client that never sent its ClientHello held
            # for good (the JSON port's accepts and early logins with it).
            conn.outbox.close(linger=0.0)
            return
        conn.outbox.send(encode(ErrorEvent(code=ErrorCode.SERVER_FULL, message=why)))
        conn.outbox.close(linger=0.5)

    def serve(self, conn: Conn) -> None:
        logfmt.serving(conn)  # this thread's log lines name it (--log-format json)
        log.debug("%r connected", conn)
        reason = "closed by client"
        dead = False  # a read failed: nothing more can reach the client
        recv: Callable[[int], bytes] = conn.sock.recv
        frames, flush_batch = self._frames, self._flush_batch  # shared (use())
        try:
            if conn.outbox.tls:
                if not conn.handshaken:  # no login slots, or its flight was STUCK (tlsconn)
                    self.let_go(conn)  # a handshake may wait for the client
                    if not tlsconn.handshake(conn, self._config.login_timeout):
                        return
                recv = tlsconn.receiver(conn)
            later, conn.later = conn.later, None
            if later is not None and not later():  # from its early login (first)
                reason = "closed by server"
                return
            data, conn.unread = conn.unread, b""  # read for it already (first)
            size = IDLE_RECV
            while True:
                try:
                    if data:
                        pass  # read by the admission thread, for this thread
                    elif not conn.slot:
                        data = recv(size)
                    elif conn.outbox.tls:  # no MSG_DONTWAIT through TLS
                        self.let_go(conn)
                        continue
                    else:
                        try:
                            data = conn.sock.recv(size, socket.MSG_DONTWAIT)
                        except BlockingIOError:
                            # Nothing to handle: the slot goes to the next in line while
                            # this thread waits for its client (admission.py).
                            self.let_go(conn)
                            continue
                except OSError as exc:
                    reason = f"network error: {exc}"
                    dead = True
                    break
                if not data:
                    break
                got, data = data, b""
                # A read that filled its buffer: more is coming, so read big; otherwise
                # wait small. A thread blocked in recv(n) holds an n-byte buffer all the
                # while, and most connections are idle most of the time.
                size = self._config.recv_size if len(got) == size else IDLE_RECV
                conn.last_rx = self._clock()
                if conn.username is None and not conn.slot:
                    # Before its login, asleep in line while a storm's logins run
                    # (admission.py); the login timeout does not count that wait.
                    conn.in_login = True
                    conn.slot = self.admission.enter(self._config.login_timeout)
                    conn.in_login = False
                if conn.web is not None:  # before irc: IRC over WebSocket is both
                    closing = None if conn.web.feed(got) else "closed by server"
                elif conn.irc is not None:
                    closing = None if conn.irc.receive_data(got) else "closed by server"
                else:
                    closing = frames(conn, got)
                if conn.batch:
                    flush_batch(conn)
                if conn.username is not None:
                    self.let_go(conn)  # logged in (or taken over): the next one's turn
                if closing is not None:
                    reason = closing
                    break
        except Exception:
            # A bug must cost one connection, never the server (docs/PROTOCOL.md §Errors).
            self._crashed()
            log.exception("handler for %r crashed; closing that connection", conn)
            reason = "handler error"
        finally:
            if conn.irc is not None:
                conn.irc.closed()  # WHOWAS
            self.let_go(conn)
            self._storm.begin()
            # A reset connection's thread ends one at a time (``_ending``): when 10,000
            # are reset at once, the rest wait in the lock, asleep, instead of all
            # asking for the GIL at once (docs/PERFORMANCE.md, "One reset reader ending
            # at a time"). A clean end may wait for the reaper (conn.left): not here.
            gated = dead and self._ending.acquire(timeout=self._config.shutdown_grace)
            try:
                # Its last messages go out before its departure is announced.
                self._b.fanout.settle(conn, timeout=self._config.shutdown_grace)
                if not dead and conn.username is not None and not self._stopping.is_set():
                    # A client that can still see its socket close sees it only once
                    # it is offline: a DM sent to it after that is queued for its next
                    # login, never handed to this closing connection and lost (the
                    # reaper does the leaving; a reset client resumes from its cursor).
                    conn.left = threading.Event()
                self._presence.depart(conn)
                if conn.left is not None:
                    conn.left.wait(self._config.shutdown_grace)
                conn.outbox.close(linger=self._config.shutdown_grace, dead=dead)
            finally:
                self._storm.end()
                self.reader_ended()
                self._readers.discard(conn.thread)
                if gated:
                    self._ending.release()
            log.debug("%r disconnected: %s", conn, reason)

    @property
    def reader_threads(self) -> int:
        """Connection threads that have not ended (a snapshot)."""
        return len(self._readers)

    def join_readers(self, timeout: float) -> bool:
        """Wait at most ``timeout`` s for the connection threads running now to end;
        True if they all have."""
        deadline = time.monotonic() + timeout
        return all(t.join(deadline - time.monotonic()) for t in list(self._readers))
