"""Waiting for one event (``wait_for``, ``expect``), for both clients.

A waiter sees the events that arrive after it was made, never earlier ones: a bot that
sends a request and only then calls ``wait_for`` can miss the answer that came in
between. ``expect`` makes the waiter *before* the action, and ``wait()`` after it
returns the event even if it arrived before ``wait()`` was called::

    with client.expect(DirectMessage, check=lambda e: e.sender == "echo") as reply:
        client.dm("echo", "ping")          # asyncio: await client.dm(...)
        event = reply.wait(timeout=5)      # asyncio: await reply.wait(timeout=5)

:class:`WaiterBase` decides, once for both, whether a waiter takes an event (its type,
then the user's ``check``); how a taken event reaches the one waiting is each client's:
:class:`Waiter` (:class:`chatroom.ChatClient`: a threading.Event the waiting thread
blocks on, public as ``chatroom.Waiter``) and :class:`AsyncWaiter`
(:class:`chatroom.aio.AsyncChatClient`: a future). The client's reading side offers
events to its waiters (:meth:`WaiterBase._offer`) with no lock held, since ``check`` is
user code.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, cast

from chatroom.errors import ChatTimeout, UsageError
from chatroom.events import DmSent, UsersChanged
from chatroom.protocol import Broadcast, DirectMessage

__all__ = ["MESSAGE_EVENTS", "AsyncWaiter", "Waiter", "WaiterBase"]

E = TypeVar("E")

# What ``expect()`` with no types waits for: the events a bot usually answers.
MESSAGE_EVENTS: tuple[type[Any], ...] = (Broadcast, DirectMessage, DmSent, UsersChanged)


class _Owner(Protocol):
    """What a :class:`Waiter` needs of its client."""

    timeout: float

    def _remove_waiter(self, w: Waiter[Any]) -> None: ...

    def _on_receive_thread(self) -> bool: ...


class _AsyncOwner(Protocol):
    """What an :class:`AsyncWaiter` needs of its client."""

    timeout: float

    def _remove_waiter(self, w: AsyncWaiter[Any]) -> None: ...


def _timed_out(types: tuple[type[Any], ...], t: float) -> ChatTimeout:
    return ChatTimeout(f"no {'/'.join(x.__name__ for x in types)} matched within {t:g} s")


class WaiterBase(Generic[E]):
    """A wait for the next event of ``types`` for which ``check`` is true. How a taken
    event reaches the one waiting (a threading.Event, a Future) is the client's."""

    def __init__(self, types: tuple[type[E], ...], check: Callable[[E], bool] | None) -> None:
        self.types = types
        self.check = check

    def _offer(self, event: object) -> bool:
        """Take ``event`` if it matches; True when this waiter is done with. Runs the
        user's ``check``, so the caller holds no lock; an exception from it is the
        waiter's outcome, raised where it waits."""
        if self._finished() or not isinstance(event, self.types):
            return False
        try:
            if self.check is not None and not self.check(event):
                return False
        except Exception as exc:  # noqa: BLE001 - raised where the waiter waits
            self._fail(exc)
        else:
            self._take(event)
        return True

    def _finished(self) -> bool:
        raise NotImplementedError

    def _take(self, event: E) -> None:
        raise NotImplementedError

    def _fail(self, error: Exception) -> None:
        raise NotImplementedError


class Waiter(WaiterBase[E]):
    """A pending :meth:`ChatClient.wait_for`. Create it *before* the action whose result
    you wait for (``with client.expect(...) as w: client.pm("x"); w.wait()``) so an event
    that arrives quickly is not missed. The receive thread offers it events (with no
    client lock held: ``check`` is user code); :meth:`wait` blocks the waiting thread."""

    def __init__(
        self,
        client: _Owner,
        types: tuple[type[E], ...],
        check: Callable[[E], bool] | None,
    ) -> None:
        super().__init__(types, check)
        self._client = client
        self._done = threading.Event()
        self._result: E | None = None
        self._error: BaseException | None = None

    def _finished(self) -> bool:
        return self._done.is_set()

    def _take(self, event: E) -> None:
        self._result = event
        self._done.set()

    def _fail(self, error: Exception) -> None:
        self._error = error  # re-raised by wait() in the waiting thread
        self._done.set()

    def wait(self, timeout: float | None = None) -> E:
        """The matching event; :class:`~chatroom.errors.ChatTimeout` after ``timeout``
        seconds (default: the client's timeout)."""
        if self._client._on_receive_thread():
            # The thread that would deliver the event: it would wait out the timeout.
            self._client._remove_waiter(self)
            raise UsageError("wait() would block the receive thread (inline hook)")
        t = self._client.timeout if timeout is None else timeout
        try:
            if not self._done.wait(t):
                raise _timed_out(self.types, t)
        finally:
            self._client._remove_waiter(self)
        if self._error is not None:
            raise self._error
        return cast(E, self._result)

    def __enter__(self) -> Waiter[E]:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client._remove_waiter(self)


class AsyncWaiter(WaiterBase[E]):
    """A pending :meth:`AsyncChatClient.wait_for`. Create it *before* the action whose
    result you wait for (``with client.expect(...) as w: await client.pm("x"); await
    w.wait()``; ``async with`` works too) so an event that arrives quickly is not missed:
    the reader task resolves its future as the event arrives, whether or not anyone
    awaits it yet (a future already done, or a wait that timed out, takes nothing more)."""

    def __init__(
        self,
        client: _AsyncOwner,
        types: tuple[type[E], ...],
        check: Callable[[E], bool] | None,
    ) -> None:
        super().__init__(types, check)
        self._client = client
        self.future: asyncio.Future[E] = asyncio.get_running_loop().create_future()

    def _finished(self) -> bool:
        return self.future.done()

    def _take(self, event: E) -> None:
        self.future.set_result(event)

    def _fail(self, error: Exception) -> None:
        self.future.set_exception(error)

    async def wait(self, timeout: float | None = None) -> E:
        """The matching event; :class:`~chatroom.errors.ChatTimeout` after ``timeout``
        seconds (default: the client's timeout)."""
        t = self._client.timeout if timeout is None else timeout
        try:
            # asyncio.timeout, not asyncio.wait_for: see AsyncChatClient._call
            async with asyncio.timeout(t):
                return await self.future
        except TimeoutError as exc:
            raise _timed_out(self.types, t) from exc
        finally:
            self._client._remove_waiter(self)

    def __enter__(self) -> AsyncWaiter[E]:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client._remove_waiter(self)

    async def __aenter__(self) -> AsyncWaiter[E]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._client._remove_waiter(self)
