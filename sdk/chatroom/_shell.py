"""What both clients do around their :class:`~chatroom.session.ClientSession`, written
once: the constructor's common part (addresses, TLS context, the session, the cursor
file, the hooks), the state they show, the routing of the session's events (a reply to
the request waiting for it, the rest to waiters and hooks), and the cursor file's
markers and writes.

:class:`chatroom.ChatClient` (threads) and :class:`chatroom.aio.AsyncChatClient`
(asyncio) subclass :class:`ClientShell` and add the I/O: who reads the socket, who runs
the hooks, how a request waits. Each states its threading contract where it lives
(client.py's class docstring, aio.py's module docstring). What differs is left to them
as three small methods: :meth:`ClientShell._settle` (hand a reply to the request
waiting for it), :meth:`ClientShell._listening` (whether a waiter or an iterator wants
events) and ``_lock`` (the threaded client's lock; a no-op on asyncio's one thread).
The routing returns what to pass on rather than passing it, because passing it on is a
call for the threads and an ``await`` for asyncio (chatroom._hooks says why there is no
generated second copy).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from chatroom._cursor import read_cursor, save_throttled
from chatroom._hooks import HookMethods, Hooks
from chatroom.errors import UsageError
from chatroom.events import Disconnect, HookError, Reconnected, ServerNotice, UsersChanged
from chatroom.hosts import parse_hosts
from chatroom.rooms import RoomInfo
from chatroom.session import (
    BadFrame,
    ClientSession,
    Ended,
    Refused,
    Reply,
    SessionEvent,
    UsersUpdated,
)
from chatroom.tls import client_context

__all__ = ["ClientShell", "CursorMark"]


class CursorMark:
    """A marker queued behind the events it covers: every message up to ``seq`` has been
    through the hooks once the hooks' runner takes it (then the cursor file says so)."""

    __slots__ = ("seq",)

    def __init__(self, seq: int) -> None:
        self.seq = seq


class ClientShell(HookMethods):
    """See the module docstring. ``log`` is the client's logger (its records keep the
    client's name)."""

    _lock: AbstractContextManager[object]  # the client's; guards _session (see above)

    def __init__(
        self,
        host: str | Sequence[str | tuple[str, int]],
        port: int,
        *,
        hosts: Sequence[str | tuple[str, int]] | None,
        timeout: float,
        keepalive: float,
        reconnect: bool,
        reconnect_max_delay: float,
        tls: bool | ssl.SSLContext,
        ca_file: str | None,
        max_frame: int,
        resume_from: int | None,
        cursor_file: str | Path | None,
        rooms: bool,
        log: logging.Logger,
        lazy_users: bool = False,
    ) -> None:
        if timeout <= 0:
            raise UsageError("timeout must be positive")
        self._log = log
        # Several addresses: nodes of one cluster (docs/CLUSTER.md), tried in order; a
        # reconnect starts from the one after the node it lost. ``host`` and ``port``
        # are the node connected to (the client's reading side updates them).
        self.addresses = parse_hosts(hosts if hosts is not None else host, port)
        self._next_address = 0
        self.host, self.port = self.addresses[0]
        self.timeout = timeout
        self.reconnect = reconnect
        self.reconnect_max_delay = reconnect_max_delay
        self._ssl = client_context(tls, ca_file)
        self._session = ClientSession(
            keepalive=keepalive,
            timeout=timeout,
            max_frame=max_frame,
            rooms=rooms,
            lazy_users=lazy_users,
        )
        # Resume (docs/PROTOCOL.md §Resume): where the first login starts. The cursor file
        # holds the seq up to which the hooks have run, so a restarted process catches up
        # exactly where it stopped. The reading side queues a CursorMark behind the events
        # it covers (_cursor_seen is its own); whoever runs the hooks writes the file
        # (_hooked, _cursor_saved and _cursor_at are theirs, then close()'s), atomically,
        # at most every 0.1 s and once more at close (chatroom._cursor).
        self.cursor_file = Path(cursor_file) if cursor_file is not None else None
        if self.cursor_file is not None:
            saved = read_cursor(self.cursor_file)
            if saved is not None:
                self._session.cursor, self._session.epoch = saved
        if resume_from is not None:
            self._session.cursor = resume_from
        self._cursor_saved = self._session.cursor  # what the file says
        self._cursor_seen = self._session.cursor  # the reading side's last marker
        self._hooked: int | None = None  # seq up to which the hooks have run
        self._cursor_at = 0.0
        self._hooks = Hooks(self, log)  # the on_* decorators (HookMethods) fill it

    # ------------------------------------------------------------------ state

    @property
    def users(self) -> tuple[str, ...]:
        """The active users as of the latest push or reply (a snapshot, sorted)."""
        with self._lock:
            return self._session.users

    @property
    def user_count(self) -> int:
        """How many users are active as of the latest push or reply: with
        ``lazy_users``, right before the names are (docs/PROTOCOL.md §lazy_users)."""
        with self._lock:
            return self._session.user_count

    @property
    def rooms_on(self) -> bool:
        """Whether this connection speaks rooms: made with ``rooms=True``, and the
        server turned them on at the last login."""
        return self._session.rooms_on

    @property
    def rooms(self) -> tuple[RoomInfo, ...]:
        """The rooms we are in (``lobby`` not included), as of the latest event (a
        snapshot, sorted ignoring case); empty without rooms (``rooms=True``)."""
        with self._lock:
            return self._session.rooms

    @property
    def username(self) -> str | None:
        """Our canonical name once logged in, else None."""
        return self._session.username

    @property
    def cursor(self) -> int | None:
        """Where a reconnect resumes: every message up to this seq has been, or is being,
        passed to the hooks, or is one this client sent. None: the server keeps no log."""
        return self._session.cursor

    # ------------------------------------------------------------------ the reading side

    def _keepalive(self) -> bytes:
        """A ping to send now, or b""; ChatTimeout once the server is silent too long."""
        with self._lock:
            return self._session.keepalive(time.monotonic())

    def _take_in(self, data: bytes) -> tuple[list[SessionEvent], bytes]:
        """Bytes read from the server: the session's events, and the control frames it
        wants sent first (FrameTooLarge: the connection is unusable)."""
        with self._lock:
            events = self._session.receive_data(data, time.monotonic())
            return events, self._session.data_to_send()

    def _route(self, event: SessionEvent) -> object | None:
        """One session event, on the reading side: a reply goes to the request waiting for
        it (:meth:`_settle`); what remains is returned for the caller to pass to waiters
        and hooks, or is the :class:`~chatroom.session.Ended` that ends the connection.
        None: nothing to pass on."""
        kind = type(event)
        if kind is Reply or kind is Refused:
            self._settle(event)  # type: ignore[arg-type]
            return None
        if kind is UsersUpdated:
            assert isinstance(event, UsersUpdated)
            # Only when a hook or a waiter could want it: sorting a big list for nobody
            # would cost a swarm client more than the delta itself.
            with self._lock:
                if not self._hooks["users"] and not self._listening():
                    return None
                users = self._session.users
            return UsersChanged(users, event.joined, event.left)
        if kind is Ended:
            return event
        if kind is BadFrame:
            assert isinstance(event, BadFrame)
            self._log.warning(
                "server sent a malformed frame (%s): %r", event.error, event.frame[:200]
            )
            return HookError("receive", event.frame, event.error)
        if kind is Reconnected:
            self._log.info("reconnected to %s:%d as %s", self.host, self.port, self.username)
        elif kind is ServerNotice:
            assert isinstance(event, ServerNotice)
            self._log.debug("server error: %s", event.error)
        return event

    def _settle(self, event: Reply | Refused) -> None:
        """Hand ``event`` to the request waiting for it, if one still is."""
        raise NotImplementedError  # the client's

    def _listening(self) -> bool:
        """Whether a waiter (or an ``events()`` iterator) takes events now; ``_lock``
        held."""
        raise NotImplementedError  # the client's

    def _cursor_mark(self) -> CursorMark | None:
        """After a read's events: the marker to queue behind them when the cursor moved
        and a cursor file is kept."""
        if self.cursor_file is None or self._session.cursor == self._cursor_seen:
            return None
        self._cursor_seen = self._session.cursor
        return None if self._cursor_seen is None else CursorMark(self._cursor_seen)

    def _next_node(self) -> None:
        """Before a reconnect: another node first, the one just lost may be dead or hung
        (docs/CLUSTER.md)."""
        self._next_address = (self._next_address + 1) % len(self.addresses)

    def _log_disconnect(self, disconnect: Disconnect) -> None:
        level = logging.DEBUG if disconnect.reason in ("exit", "closed") else logging.WARNING
        self._log.log(
            level,
            "disconnected from %s:%d: %s%s",
            self.host,
            self.port,
            disconnect.reason,
            f" ({disconnect.error})" if disconnect.error else "",
        )

    # ------------------------------------------------------------------ the hooks' side

    def _hooks_done(self, seq: int) -> None:
        """Whoever runs the hooks: every message up to ``seq`` went through them."""
        self._hooked = seq
        self._save_cursor()

    def _save_cursor(self, force: bool = False) -> None:
        """Write the cursor file atomically, at most every 0.1 s unless ``force``."""
        self._cursor_saved, self._cursor_at = save_throttled(
            self.cursor_file,
            self._hooked,
            self._session.epoch,
            self._cursor_saved,
            self._cursor_at,
            force,
        )
