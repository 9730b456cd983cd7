"""``ChatClient``: a connection to a chatroom server, with hooks for what arrives.

Every protocol decision (request ids, login and re-login, the user list, keepalive,
turning frames into events) is :class:`chatroom.session.ClientSession`'s, which has no
I/O; this module is the threads' layer over it: the receive and dispatch threads, how a
request waits for its reply, connecting and reconnecting. What both clients do around
the session is written once, in :mod:`chatroom._shell` (state, routing the session's
events, the cursor file), :mod:`chatroom._requests` and :mod:`chatroom._room_api` (the
requests), :mod:`chatroom._hooks` and :mod:`chatroom._waiters`; the socket calls are
:mod:`chatroom._sockio`'s.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar, cast, overload

from chatroom._requests import RequestMethods
from chatroom._room_api import RoomMethods
from chatroom._shell import ClientShell, CursorMark
from chatroom._sockio import SocketCalls, connect, shutdown
from chatroom._waiters import MESSAGE_EVENTS, Waiter
from chatroom.errors import (
    ChatError,
    ChatTimeout,
    ConnectFailed,
    ConnectionLost,
    FrameTooLarge,
    UsageError,
)
from chatroom.events import Disconnect
from chatroom.hosts import in_turn, none_answered
from chatroom.protocol import DEFAULT_PORT, ClientCommand, ServerEvent
from chatroom.session import (
    ClientSession,
    Ended,
    Refused,
    Reply,
    disconnect_reason,
    reconnect_delay,
)

__all__ = ["ChatClient", "Waiter"]

log = logging.getLogger(__name__)

E = TypeVar("E")
R = TypeVar("R", bound=ServerEvent)

_STOP: Final = object()  # dispatcher sentinel


class _Pending:
    """A request waiting for its reply (filled in by the receive thread)."""

    __slots__ = ("done", "error", "reply")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: Reply | None = None
        self.error: ChatError | None = None


class ChatClient(ClientShell, RequestMethods, RoomMethods):
    """A connection to a chatroom server.

    ::

        client = ChatClient("127.0.0.1", 5050)

        @client.on_dm
        def answer(event: DirectMessage) -> None:
            client.dm(event.sender, "got it")

        client.connect()
        client.login("alice", "correct horse")
        client.run_forever()

    **Rooms** (docs/PROTOCOL.md §Rooms): with ``rooms=True`` the client asks for them at
    login; then :attr:`rooms` are the rooms we are in, kept up to date, ``pm`` and
    ``history`` take ``room=``, every ``Broadcast`` says its ``room``, and ``join``,
    ``part``, ``list_rooms``, ``room_info``, ``members``, ``topic``, ``set_topic``,
    ``invite`` and ``mode`` work (chatroom._room_api). Without it the client is in
    ``lobby`` only and sees exactly what a protocol-v1 client sees.

    **The user list** (:attr:`users`) follows the server's pushes. With
    ``lazy_users=True`` the login's answer carries how many users and not who
    (docs/PROTOCOL.md §lazy_users, for bots: in an arrival storm the names are most of a
    login's cost): :attr:`user_count` is right at once, :attr:`users` only once the
    list the client asks for right after the login has come.

    **Hooks.** Register with the decorators ``on_broadcast``, ``on_dm``, ``on_dm_sent``,
    ``on_users``, ``on_room_event``, ``on_disconnect``, ``on_reconnect``, ``on_notice``
    and ``on_error``, or subclass and override the method of the same name
    (``def on_dm(self, event): ...``).
    Several hooks per event run in registration order (an override first).

    **Threading contract.**

    - The client owns two threads. The *receive thread* reads the socket, answers keepalive,
      matches replies to requests by ``id``, updates :attr:`users`, and resolves
      :meth:`wait_for` waiters; it never runs hooks. The *dispatch thread* runs every hook,
      one at a time, in the order the events arrived. So a hook may call any client
      method, blocking ones included (``dm()`` waits for its ack, read meanwhile by the
      receive thread), and a slow hook never stops acks and pongs from being read; it
      only delays later hooks.
    - ``inline_hooks=True`` runs hooks on the receive thread instead (one thread per
      client, for swarms of thousands): hooks must then be quick and must not call
      blocking methods, which raise :class:`UsageError` there.
    - A hook that raises is reported to ``on_error`` hooks (default: logged with the
      traceback); it never kills a thread. ``wait_for`` ``check`` functions run on the
      receive thread and must be quick.
    - Every public method is safe from any thread. Every blocking call has a timeout
      (``timeout``, default 10 s) and raises :class:`ChatTimeout` (a ``TimeoutError``),
      never hangs. ``close()`` is idempotent, callable from a hook or any thread, and joins
      the client's threads (except the one it is called on).
    - No hook or ``check`` runs while the client holds a lock. ``_lock`` guards
      ``_session`` (the protocol state: ids, credentials, user list, keepalive clocks),
      ``_pending`` (request id → reply slot), ``_waiters``, ``_sock`` and the state
      flags; ``_send_lock`` serialises writes to the socket so concurrent frames never
      interleave, and is taken before ``_lock`` when both are held; with TLS, every call
      into the SSL object also holds the lock of ``_io``
      (:class:`chatroom._sockio.SocketCalls`), innermost. The hooks (``_hooks``,
      :class:`chatroom._hooks.Hooks`) have a lock of their own, taken only to register
      one: the dispatching thread reads them without it. What the shell
      (:mod:`chatroom._shell`) keeps for the cursor file belongs to the thread that
      runs the hooks, as its comments say.

    **Liveness.** When nothing has arrived for ``keepalive`` seconds the client sends a
    ``ping``; if nothing arrives for ``timeout`` seconds more, the connection is dead and
    is reported as a disconnect. With ``reconnect=True``, a lost connection is retried with
    exponential backoff and jitter (capped at ``reconnect_max_delay``), the client logs in
    again with the same credentials, and ``on_reconnect`` runs with the fresh user list;
    never after ``bad_credentials``, ``session_replaced`` or :meth:`close`.
    """

    def __init__(
        self,
        host: str | Sequence[str | tuple[str, int]] = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        hosts: Sequence[str | tuple[str, int]] | None = None,
        timeout: float = 10.0,
        keepalive: float = 30.0,
        reconnect: bool = False,
        reconnect_max_delay: float = 30.0,
        inline_hooks: bool = False,
        tls: bool | ssl.SSLContext = False,
        ca_file: str | None = None,
        max_frame: int = 64 * 1024 * 1024,
        resume_from: int | None = None,
        cursor_file: str | Path | None = None,
        rooms: bool = False,
        lazy_users: bool = False,
    ) -> None:
        self._lock = threading.Lock()  # see the class docstring for what it guards
        super().__init__(  # chatroom._shell: the addresses, the session, the cursor file
            host,
            port,
            hosts=hosts,
            timeout=timeout,
            keepalive=keepalive,
            reconnect=reconnect,
            reconnect_max_delay=reconnect_max_delay,
            tls=tls,
            ca_file=ca_file,
            max_frame=max_frame,
            resume_from=resume_from,
            cursor_file=cursor_file,
            rooms=rooms,
            lazy_users=lazy_users,
            log=log,
        )
        self.keepalive = keepalive
        self.inline_hooks = inline_hooks
        self._send_lock = threading.Lock()  # one writer on the socket at a time
        self._io = SocketCalls(self._ssl is not None)  # sendall under _send_lock
        self._sock: socket.socket | None = None
        self._pending: dict[int, _Pending] = {}
        self._waiters: list[Waiter[Any]] = []
        self._closing = False
        self._stop = threading.Event()  # set by close(): every loop ends
        self._closed = threading.Event()  # set once the receive thread has finished
        self._events: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._receiver: threading.Thread | None = None
        self._dispatcher: threading.Thread | None = None

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def closed(self) -> bool:
        """True from the moment :meth:`close` is called (or the client ended for good,
        reconnects used up): requests then raise :class:`UsageError`."""
        return self._closing or self._stop.is_set()

    # ------------------------------------------------------------------ lifecycle

    def connect(self) -> ChatClient:
        """Open the connection and start the client's threads.

        Raises :class:`ConnectFailed` (a ``ConnectionError``) if the server cannot be reached.
        """
        with self._lock:
            if self._stop.is_set():
                raise UsageError("this client is closed; make a new ChatClient")
            if self._receiver is not None:
                raise UsageError("already connected")
            self._receiver = threading.Thread(
                target=self._receive_loop, name=f"chat-recv-{id(self):x}", daemon=True
            )
        try:
            sock = self._open_socket()
        except ConnectFailed:
            with self._lock:
                self._receiver = None
            raise
        with self._lock:
            self._sock = sock
            self._session.connection_made(time.monotonic())  # b"": nothing to log in yet
        if not self.inline_hooks:
            self._dispatcher = threading.Thread(
                target=self._dispatch_loop, name=f"chat-hooks-{id(self):x}", daemon=True
            )
            self._dispatcher.start()
        self._receiver.start()
        return self

    def _open_socket(self) -> socket.socket:
        """A connection to the first address that answers, from ``_next_address`` on."""
        failures: list[ConnectFailed] = []
        for k, (host, port) in in_turn(self.addresses, self._next_address):
            try:
                sock = self._open_one(host, port)
            except ConnectFailed as exc:
                failures.append(exc)
                continue
            self._next_address = k
            self.host, self.port = host, port
            return sock
        raise none_answered(failures)

    def _open_one(self, host: str, port: int) -> socket.socket:
        """One address; every connection and reconnect opens here (tests/nemesis taps
        the socket at this seam)."""
        return connect(host, port, self._ssl, self.timeout, self._tick)

    @property
    def _tick(self) -> float:
        return min(self.timeout, self.keepalive / 2) if self.keepalive > 0 else self.timeout

    def __enter__(self) -> ChatClient:
        if self._receiver is None:
            self.connect()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self, timeout: float | None = None) -> None:
        """Log out (if logged in), close the connection and join the client's threads.

        Idempotent; safe from any thread, hooks included; returns within ``timeout``
        (default: the client's timeout).
        """
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        with self._lock:
            first = not self._closing
            self._closing = True
            sock, logged_in = self._sock, self._session.logged_in
            goodbye = self._session.logout() if first and logged_in else b""
        if goodbye and sock is not None:
            # Say goodbye so the server announces our departure at once; the receive
            # thread sees the bye and the close.
            try:
                self._send(goodbye)
            except ChatError as exc:
                log.debug("could not send exit: %s", exc)
            if not self._on_receive_thread():
                self._closed.wait(min(1.0, t))
        self._stop.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            shutdown(sock)
        here = threading.current_thread()
        if self._receiver is not None and self._receiver is not here and self._receiver.ident:
            self._receiver.join(max(0.0, deadline - time.monotonic()))
        if self._dispatcher is not None:
            if first:
                self._events.put(_STOP)
            if self._dispatcher is not here:
                self._dispatcher.join(max(0.0, deadline - time.monotonic()))
                if self._dispatcher.is_alive():
                    log.warning("a hook is still running after close(); not waiting for it")
        if first and (self._dispatcher is None or not self._dispatcher.is_alive()):
            self._save_cursor(force=True)

    def run_forever(self) -> None:
        """Block until the client is closed (by a hook, another thread, or for good by the
        server). Ctrl-C closes the client and returns."""
        if self._receiver is None:
            raise UsageError("connect() first")
        try:
            while not self._closed.wait(0.5):
                pass
        except KeyboardInterrupt:
            log.info("interrupted")
        finally:
            self.close()

    # ------------------------------------------------------------------ requests

    def send_command(self, cmd: ClientCommand) -> None:
        """Write one command without waiting for any reply (no ``id``: a refusal comes as
        a :class:`ServerNotice`). For load generators and other fire-and-forget senders;
        safe from inline hooks."""
        with self._lock:
            data = self._session.send(cmd)
        self._send(data)

    def send_frames(self, data: bytes) -> None:
        """Write pre-encoded, complete frames as they are, without waiting for a reply:
        for load generators that encode once and send many times. What the bytes say is
        the caller's business; a frame cut in half breaks the connection."""
        if not data.endswith(b"\n"):
            raise UsageError("send_frames() takes whole frames, each ending in a newline")
        self._send(data)

    @overload
    def expect(self, *, check: Callable[[Any], bool] | None = None) -> Waiter[Any]: ...
    @overload
    def expect(self, __t: type[E], *, check: Callable[[E], bool] | None = None) -> Waiter[E]: ...
    @overload
    def expect(  # two or more types: one type is the overload above, even with a lambda
        self,
        __t1: type[Any],
        __t2: type[Any],
        *types: type[Any],
        check: Callable[[Any], bool] | None = None,
    ) -> Waiter[Any]: ...

    def expect(self, *types: type[Any], check: Callable[[Any], bool] | None = None) -> Waiter[Any]:
        """Start waiting for an event (see :class:`Waiter`); ``types`` default to the
        message events."""
        w: Waiter[Any] = Waiter(self, types or MESSAGE_EVENTS, check)
        with self._lock:
            self._waiters = [*self._waiters, w]
        return w

    def wait_for(
        self,
        event_type: type[E],
        check: Callable[[E], bool] | None = None,
        timeout: float | None = None,
    ) -> E:
        """Block until an event of ``event_type`` (``Broadcast``, ``DirectMessage``,
        ``DmSent``, ``UsersChanged``, ``Disconnect``, ``Reconnected``, ``ServerNotice``)
        for which ``check`` is true arrives *after this call*; raise :class:`ChatTimeout`
        after ``timeout`` seconds; to catch the answer to something you do, make the
        waiter first with :meth:`expect`."""
        return self.expect(event_type, check=check).wait(timeout)

    def _remove_waiter(self, w: Waiter[Any]) -> None:
        with self._lock:
            if w in self._waiters:
                self._waiters = [x for x in self._waiters if x is not w]

    def _on_receive_thread(self) -> bool:
        return threading.current_thread() is self._receiver

    def _request(
        self, reply_type: type[R], build: Callable[[ClientSession], tuple[int, bytes]]
    ) -> R:
        """Send the request ``build`` makes (with a fresh id) and wait for its reply."""
        return cast(R, self._call(build).event)

    def _call(self, build: Callable[[ClientSession], tuple[int, bytes]]) -> Reply:
        if self._on_receive_thread():
            raise UsageError(
                "blocking calls are not allowed in inline hooks (inline_hooks=True): "
                "they would wait for a reply only this thread can read"
            )
        pending = _Pending()
        with self._lock:
            if self._sock is None:
                if self._closing or self._stop.is_set():
                    raise UsageError("the client is closed")
                if self._receiver is None:
                    raise UsageError("connect() first")
                raise ConnectionLost("network", "not connected (reconnecting)")
            rid, data = build(self._session)
            self._pending[rid] = pending
        try:
            self._send(data)
            if not pending.done.wait(self.timeout):
                raise ChatTimeout(f"no reply to request {rid} within {self.timeout:g} s")
        finally:
            with self._lock:
                self._pending.pop(rid, None)
                self._session.forget_request(rid)
        if pending.error is not None:
            raise pending.error
        assert pending.reply is not None
        return pending.reply

    def _send(self, data: bytes) -> None:
        with self._lock:
            sock = self._sock
        if sock is None:
            raise ConnectionLost("network", "not connected")
        try:
            with self._send_lock:
                self._io.sendall(sock, data, self._tick)
                with self._lock:
                    self._session.data_sent(time.monotonic())
        except TimeoutError as exc:
            shutdown(sock)  # a partial frame may be on the wire: the stream is unusable
            raise ChatTimeout(f"send did not complete within {self._tick:g} s") from exc
        except OSError as exc:
            shutdown(sock)
            raise ConnectionLost("network", f"send failed: {exc}") from exc

    # ------------------------------------------------------------------ receive thread

    def _receive_loop(self) -> None:
        attempt = 0
        try:
            while True:
                with self._lock:
                    sock = self._sock
                assert sock is not None
                disconnect = self._read_until_closed(sock)
                with self._lock:
                    retry = (
                        self.reconnect
                        and not self._closing
                        and self._session.may_reconnect(disconnect.reason)
                    )
                self._lose_connection(sock, disconnect, retry)
                if not retry:
                    return
                sock = self._reconnect(attempt)
                if sock is None:
                    return
                attempt += 1
        finally:
            self._closed.set()
            # The server is gone for good and nobody called close(): end the dispatcher
            # after the Disconnect event it has queued.
            if not self._closing and not self.inline_hooks and self._dispatcher is not None:
                self._stop.set()
                self._events.put(_STOP)

    def _read_until_closed(self, sock: socket.socket) -> Disconnect:
        ended: str | None = None
        error: Exception | None = None
        while True:
            try:
                ping = self._keepalive()
            except ChatTimeout as exc:
                error = exc
                break
            if ping:
                try:
                    self._send(ping)
                except ChatError as exc:
                    error = exc
                    break
            try:
                data = self._io.recv(sock, self._tick)
            except TimeoutError:
                if self._stop.is_set():
                    break
                continue
            except OSError as exc:
                error = exc
                break
            if not data:
                break
            try:
                events, control = self._take_in(data)
            except FrameTooLarge as exc:
                error = exc
                break
            if control:
                try:
                    self._send(control)
                except ChatError as exc:
                    log.debug("could not send %r: %s", control, exc)
            for event in events:
                out = self._route(event)
                if type(out) is Ended:
                    assert isinstance(out, Ended)
                    ended = out.reason
                    error = out.error or error  # a ban's words (Disconnect.error)
                elif out is not None:
                    self._emit(out)
            mark = self._cursor_mark()
            if mark is not None:
                self._emit(mark)  # behind the events it covers
            if ended is not None:
                break  # nothing follows an end (a refused re-login's connection stays open)
        return Disconnect(disconnect_reason(ended, self._closing or self._stop.is_set()), error)

    def _settle(self, event: Reply | Refused) -> None:
        with self._lock:
            pending = self._pending.get(event.rid)
        if pending is None:
            return
        if type(event) is Reply:
            pending.reply = event
        else:
            pending.error = event.error  # type: ignore[union-attr]
        pending.done.set()

    def _listening(self) -> bool:
        return bool(self._waiters)

    def _lose_connection(self, sock: socket.socket, disconnect: Disconnect, retry: bool) -> None:
        with self._lock:
            self._sock = None
            failed = self._session.connection_lost(resend=retry)
            pending = [p for rid in failed if (p := self._pending.pop(rid, None)) is not None]
        sock.close()
        failure = ConnectionLost(disconnect.reason)
        for p in pending:
            p.error = failure
            p.done.set()
        self._log_disconnect(disconnect)
        self._emit(Disconnect(disconnect.reason, disconnect.error, retry))

    def _reconnect(self, attempt: int) -> socket.socket | None:
        """Receive thread: back off, reconnect, send the login. None when closed."""
        self._next_node()
        while True:
            if self._stop.wait(reconnect_delay(attempt, self.reconnect_max_delay)):
                return None
            attempt += 1
            try:
                sock = self._open_socket()
            except ConnectFailed as exc:
                log.info("reconnect attempt %d failed: %s", attempt, exc)
                continue
            with self._lock:
                if self._stop.is_set() or not self._session.can_relogin:
                    sock.close()
                    return None
                self._sock = sock
                login = self._session.connection_made(time.monotonic())
            try:
                self._send(login)
            except ChatError as exc:
                log.info("reconnect attempt %d failed: %s", attempt, exc)
                with self._lock:
                    self._sock = None
                    self._session.connection_lost()
                sock.close()
                continue
            return sock

    # ------------------------------------------------------------------ dispatch

    def _emit(self, event: object) -> None:
        """Receive thread: resolve waiters, then hand the event to the hooks."""
        if type(event) is CursorMark:
            if self.inline_hooks:
                self._hooks_done(event.seq)
            else:
                self._events.put(event)
            return
        with self._lock:
            waiters = self._waiters
        taken = [w for w in waiters if w._offer(event)]  # user code: outside the lock
        if taken:
            with self._lock:
                self._waiters = [w for w in self._waiters if w not in taken]
        if self.inline_hooks:
            self._hooks.run(event)
        else:
            self._events.put(event)

    def _dispatch_loop(self) -> None:
        while True:
            dirty = self._cursor_saved != self._hooked
            try:
                event = self._events.get(timeout=0.1 if dirty else 1.0)
            except queue.Empty:
                if dirty:
                    self._save_cursor()
                # Events queued between the get's timeout and this check (a ban's
                # notice and Disconnect, then _closed) still go to the hooks: only an
                # empty queue read after both flags ends the loop here.
                if self._stop.is_set() and self._closed.is_set() and self._events.empty():
                    return
                continue
            if event is _STOP:
                self._save_cursor(force=True)
                return
            if type(event) is CursorMark:
                self._hooks_done(event.seq)
                continue
            self._hooks.run(event)
