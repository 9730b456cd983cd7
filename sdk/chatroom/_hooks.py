"""Hooks, written once for both clients.

:class:`chatroom.ChatClient` (threads) and :class:`chatroom.aio.AsyncChatClient` (asyncio)
register hooks and route events to them the same way; what differs is who runs the hooks
and when, and each client states that contract where it lives (client.py's class
docstring, aio.py's module docstring). Here, once:

- :class:`HookMethods`: the ``on_*`` decorators, one per hook kind
  (:data:`chatroom.events.HOOK_KINDS`);
- :class:`Hooks`: one client's hooks by kind, a subclass's methods of the same name
  first; :meth:`Hooks.run` runs them for one event on the calling thread,
  :meth:`Hooks.run_async` awaits the ``async def`` ones, and a hook that raises is
  reported to the ``on_error`` hooks (:class:`~chatroom.events.HookError`) or logged.

Waiting for one event (``wait_for``) is :mod:`chatroom._waiters`'.

Not one source generated for both clients (httpcore's ``unasync``): the clients differ in
more than ``async`` and ``await`` (threads and locks against tasks and futures), so only
the hook loop would be generated, and it is a dozen lines.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from chatroom.errors import UsageError
from chatroom.events import (
    HOOK_KINDS,
    KIND_OF,
    Broadcast,
    DirectMessage,
    Disconnect,
    DmSent,
    HookError,
    Reconnected,
    RoomEvent,
    ServerNotice,
    UsersChanged,
)

__all__ = ["HookMethods", "Hooks"]

E = TypeVar("E")
Hook = Callable[[Any], object]
# One per kind, so that a decorated function keeps its own type and a hook that takes
# the wrong event is a type error.
F = TypeVar("F", bound=Hook)
OnBroadcast = TypeVar("OnBroadcast", bound=Callable[[Broadcast], object])
OnDm = TypeVar("OnDm", bound=Callable[[DirectMessage], object])
OnDmSent = TypeVar("OnDmSent", bound=Callable[[DmSent], object])
OnUsers = TypeVar("OnUsers", bound=Callable[[UsersChanged], object])
OnRoomEvent = TypeVar("OnRoomEvent", bound=Callable[[RoomEvent], object])
OnDisconnect = TypeVar("OnDisconnect", bound=Callable[[Disconnect], object])
OnReconnect = TypeVar("OnReconnect", bound=Callable[[Reconnected], object])
OnNotice = TypeVar("OnNotice", bound=Callable[[ServerNotice], object])
OnError = TypeVar("OnError", bound=Callable[[HookError], object])


class Hooks:
    """One client's hooks, by kind.

    :meth:`add` may be called from any thread, events being dispatched meanwhile. Each
    kind's hooks are a tuple that :meth:`add` replaces under ``_lock`` (copy-on-write):
    a dispatcher reads the current tuple without the lock, so no hook ever runs under it.
    """

    __slots__ = ("_by_kind", "_lock", "_log")

    def __init__(self, client: object, log: logging.Logger) -> None:
        self._lock = threading.Lock()  # taken by add() only; never held while calling out
        self._log = log  # the client's logger: its records keep the client's name
        self._by_kind: dict[str, tuple[Hook, ...]] = {k: () for k in HOOK_KINDS}
        # A subclass's method of the same name (``def on_dm(self, event)``) is a hook,
        # run before the decorated ones.
        for kind in HOOK_KINDS:
            name = f"on_{kind}"
            if getattr(type(client), name) is not getattr(HookMethods, name):
                self._by_kind[kind] = (getattr(client, name),)

    def add(self, kind: str, fn: F) -> F:
        if not callable(fn):
            raise UsageError(f"on_{kind} needs a callable, got {fn!r}")
        with self._lock:
            self._by_kind[kind] = (*self._by_kind[kind], fn)
        return fn

    def __getitem__(self, kind: str) -> tuple[Hook, ...]:
        """The hooks of ``kind`` as of now (a snapshot)."""
        return self._by_kind[kind]

    def wants(self, event: object) -> bool:
        """Whether some hook would run for ``event``."""
        kind = KIND_OF.get(type(event))
        return kind is not None and bool(self._by_kind[kind])

    def run(self, event: object) -> None:
        """Run the hooks for ``event`` on this thread, in registration order."""
        kind = KIND_OF.get(type(event))
        if kind is None:
            return
        for hook in self._by_kind[kind]:
            try:
                hook(event)
            except Exception as exc:  # noqa: BLE001 - reported, never kills the dispatcher
                failure = self._failed(kind, event, exc)
                if failure is not None:
                    self.run(failure)

    async def run_async(self, event: object) -> None:
        """:meth:`run` for asyncio: an ``async def`` hook is awaited before the next one
        runs; a plain one is called. A cancel (a BaseException) ends the run."""
        kind = KIND_OF.get(type(event))
        if kind is None:
            return
        for hook in self._by_kind[kind]:
            try:
                result = hook(event)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - reported, never kills the hook task
                failure = self._failed(kind, event, exc)
                if failure is not None:
                    await self.run_async(failure)

    def _failed(self, kind: str, event: object, exc: Exception) -> HookError | None:
        """A hook raised: the :class:`HookError` for the ``on_error`` hooks, or None once
        it is logged (an ``on_error`` hook raised, or there is none: the default)."""
        if kind == "error":
            self._log.error("on_error hook failed", exc_info=exc)
            return None
        if not self._by_kind["error"]:
            self._log.error("on_%s hook raised on %r", kind, event, exc_info=exc)
            return None
        return HookError(f"on_{kind}", event, exc)


class HookMethods:
    """The ``on_*`` decorators of both clients. Each registers ``fn`` for one kind of
    event and returns it; several hooks per event run in registration order. For the
    asyncio client ``fn`` may be an ``async def`` function (awaited) or a plain one.
    A subclass may override a method of the same name instead: that method is a hook."""

    _hooks: Hooks

    def on_broadcast(self, fn: OnBroadcast) -> OnBroadcast:
        """Register a hook for public messages from other users (and our own, replayed,
        when another session or an earlier run of this program sent them)."""
        return self._hooks.add("broadcast", fn)

    def on_dm(self, fn: OnDm) -> OnDm:
        """Register a hook for direct messages others sent us (never one we sent: those
        go to ``on_dm_sent``)."""
        return self._hooks.add("dm", fn)

    def on_dm_sent(self, fn: OnDmSent) -> OnDmSent:
        """Register a hook for direct messages this user sent, passed back by the server
        (see :class:`~chatroom.events.DmSent`): replayed from before a reconnect or a
        restart, or to ourselves."""
        return self._hooks.add("dm_sent", fn)

    def on_users(self, fn: OnUsers) -> OnUsers:
        """Register a hook for user-list pushes (``event.joined``/``event.left`` say why)."""
        return self._hooks.add("users", fn)

    def on_room_event(self, fn: OnRoomEvent) -> OnRoomEvent:
        """Register a hook for changes to our rooms (``rooms=True``, docs/PROTOCOL.md
        §Rooms): joins, parts, topics, modes, invites (``event.event`` says which); the
        client's ``rooms`` already show the change when the hook runs."""
        return self._hooks.add("room_event", fn)

    def on_disconnect(self, fn: OnDisconnect) -> OnDisconnect:
        """Register a hook for the end of a connection (see
        :class:`~chatroom.events.Disconnect`)."""
        return self._hooks.add("disconnect", fn)

    def on_reconnect(self, fn: OnReconnect) -> OnReconnect:
        """Register a hook for a successful automatic reconnect and re-login."""
        return self._hooks.add("reconnect", fn)

    def on_notice(self, fn: OnNotice) -> OnNotice:
        """Register a hook for server errors that answer no waiting request (replies to
        ``wait=False`` sends, ``server_full``, ...)."""
        return self._hooks.add("notice", fn)

    def on_error(self, fn: OnError) -> OnError:
        """Register a hook for exceptions raised by other hooks (replaces the default log)."""
        return self._hooks.add("error", fn)
