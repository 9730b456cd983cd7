"""``AsyncChatClient``: the chatroom client for asyncio programs.

The same protocol core as :class:`chatroom.ChatClient`: every rule (request ids, login and
re-login with ``since``, when a reconnect is allowed, the user list, keepalive, the seq
cursor and resends by cid, frames into events) is :class:`chatroom.session.ClientSession`'s.
This module is only the asyncio I/O over it, as ``client.py`` is the threads' I/O; what
both clients do around the session is written once, in :mod:`chatroom._shell` (state,
routing the session's events, the cursor file), :mod:`chatroom._requests` and
:mod:`chatroom._room_api` (the requests), :mod:`chatroom._hooks` and
:mod:`chatroom._waiters`.

::

    async with AsyncChatClient("127.0.0.1", 5050, reconnect=True) as client:
        @client.on_dm
        async def answer(event: DirectMessage) -> None:
            await client.dm(event.sender, f"you said: {event.message}")

        await client.login("asyncbot", "a long enough password")
        await client.run_forever()

Hooks are registered as on :class:`chatroom.ChatClient`, by the same code: the ``on_*``
decorators, or a subclass's methods of the same name.

**Concurrency contract.** Everything runs on the event loop the client was connected on;
no threads. The *reader task* reads the socket, answers keepalive, resolves requests,
waiters and ``events()`` iterators, and queues events for the hooks; it never runs a
hook. The *hook task* runs the hooks one at a time, in the order the events arrived: an
``async def`` hook is awaited (it may await any client method: its ack is read
meanwhile by the reader task), a plain function is called (it runs on the loop, so it
must be quick). The hook queue holds ``hook_queue`` events (default 10,000); when it is
full the reader task waits for room, so it stops reading the socket until the hooks
catch up: nothing is dropped, TCP pushes back, and a server that gives up on a client
that slow lets it reconnect and resume; every ``timeout`` seconds of that it logs a
warning. The wait ends when there is room or the client closes. A hook that raises
goes to ``on_error`` hooks (default: logged). Cancelling the task that awaits
:meth:`run_forever`, or leaving the ``async with`` block, closes the client: no task
or socket is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast, overload

from chatroom._requests import AsyncRequestMethods
from chatroom._room_api import AsyncRoomMethods
from chatroom._shell import ClientShell, CursorMark
from chatroom._waiters import MESSAGE_EVENTS, AsyncWaiter
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
from chatroom.protocol import DEFAULT_PORT, ServerEvent
from chatroom.session import (
    ClientSession,
    Ended,
    Refused,
    Reply,
    disconnect_reason,
    reconnect_delay,
)

__all__ = ["AsyncChatClient"]

log = logging.getLogger(__name__)

E = TypeVar("E")
R = TypeVar("R", bound=ServerEvent)

_CLOSED = object()  # end of the hook queue and of events() iterators


class AsyncChatClient(ClientShell, AsyncRequestMethods, AsyncRoomMethods):
    """A connection to a chatroom server, for asyncio. See the module docstring; the
    options are :class:`~chatroom.client.ChatClient`'s (``lazy_users``: the login's
    answer carries how many users and not who, docs/PROTOCOL.md §lazy_users)."""

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
        tls: bool | ssl.SSLContext = False,
        ca_file: str | None = None,
        max_frame: int = 64 * 1024 * 1024,
        resume_from: int | None = None,
        cursor_file: str | Path | None = None,
        hook_queue: int = 10_000,
        rooms: bool = False,
        lazy_users: bool = False,
    ) -> None:
        # One task at a time touches the session (the concurrency contract): no lock.
        self._lock = contextlib.nullcontext()
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
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._waiters: list[AsyncWaiter[Any]] = []
        self._streams: list[asyncio.Queue[object]] = []  # one per events() iterator
        self._hook_queue: asyncio.Queue[object] = asyncio.Queue(hook_queue)
        self._read_task: asyncio.Task[None] | None = None
        self._hook_task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = asyncio.Event()
        self._closer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        return self._writer is not None

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> AsyncChatClient:
        """Open the connection and start the reader and hook tasks (ConnectFailed)."""
        if self._closing:
            raise UsageError("this client is closed; make a new AsyncChatClient")
        if self._read_task is not None:
            raise UsageError("already connected")
        await self._open()
        self._hook_task = asyncio.create_task(self._run_hooks(), name="chat-hooks")
        self._read_task = asyncio.create_task(self._read_loop(), name="chat-read")
        return self

    async def _open(self) -> None:
        """Connect to the first address that answers, from ``_next_address`` on."""
        failures: list[ConnectFailed] = []
        for k, (host, port) in in_turn(self.addresses, self._next_address):
            try:
                async with asyncio.timeout(self.timeout):  # not wait_for: see _call
                    self._reader, self._writer = await asyncio.open_connection(
                        host,
                        port,
                        ssl=self._ssl,
                        server_hostname=host if self._ssl else None,
                        limit=2**20,
                    )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                failures.append(ConnectFailed(f"cannot connect to {host}:{port}: {exc}"))
                continue
            self._next_address = k
            self.host, self.port = host, port
            break
        else:
            raise none_answered(failures)
        hello = self._session.connection_made(time.monotonic())  # a re-login, if any
        if hello:
            self._write(hello)

    async def __aenter__(self) -> AsyncChatClient:
        if self._read_task is None:
            await self.connect()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Log out (if logged in), close the connection, end the client's tasks.
        Idempotent; bounded by the client's timeout; always completes (a failure on the
        way is logged, never left to stop the rest of the closing)."""
        if self._closing:
            # Another close() is under way (or done): wait for it, but not for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self._closed.wait()
            return
        self._closing = True
        try:
            writer = self._writer
            if writer is not None and self._session.logged_in:
                with contextlib.suppress(ChatError, OSError, TimeoutError):
                    self._write(self._session.logout())
                    async with asyncio.timeout(1.0):
                        await writer.drain()
            current = asyncio.current_task()
            tasks = [t for t in (self._read_task, self._hook_task) if t and t is not current]
            for task in tasks:
                task.cancel()
            for task in tasks:
                try:
                    async with asyncio.timeout(self.timeout):
                        await task
                except (asyncio.CancelledError, TimeoutError):
                    pass  # cancelled, as asked (or stuck past the timeout: let it be)
                except Exception:
                    log.exception("the client's %s task failed", task.get_name())
            await self._close_writer()
            self._save_cursor(force=True)  # the hook task is over: what it ran, saved
        finally:
            self._fail_pending(ConnectionLost("closed", "the client was closed"))
            for q in self._streams:
                q.put_nowait(_CLOSED)
            self._closed.set()

    async def _close_writer(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def run_forever(self) -> None:
        """Wait until the client is closed (or the task is cancelled: then close it)."""
        try:
            await self._closed.wait()
        finally:
            await self.close()

    # ------------------------------------------------------------------ requests

    async def _request(
        self, reply_type: type[R], build: Callable[[ClientSession], tuple[int, bytes]]
    ) -> R:
        return cast(R, (await self._call(build)).event)

    async def _call(self, build: Callable[[ClientSession], tuple[int, bytes]]) -> Reply:
        if self._closing:
            raise UsageError("the client is closed")
        if self._read_task is None:
            raise UsageError("connect() first")
        if self._writer is None:
            raise ConnectionLost("network", "not connected (reconnecting)")
        rid, data = build(self._session)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self._write(data)
            # asyncio.timeout, never asyncio.wait_for: on 3.11 wait_for returns a result
            # that arrives with a cancel and swallows the cancel (close() then waited its
            # whole timeout for a hook task that had gone back to its queue).
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError as exc:
            raise ChatTimeout(f"no reply to request {rid} within {self.timeout:g} s") from exc
        finally:
            self._pending.pop(rid, None)
            self._session.forget_request(rid)

    def _write(self, data: bytes) -> None:
        if self._writer is None:
            raise ConnectionLost("network", "not connected")
        self._writer.write(data)
        self._session.data_sent(time.monotonic())

    # ------------------------------------------------------------------ waiting

    @overload
    def expect(self, *, check: Callable[[Any], bool] | None = None) -> AsyncWaiter[Any]: ...
    @overload
    def expect(
        self, __t: type[E], *, check: Callable[[E], bool] | None = None
    ) -> AsyncWaiter[E]: ...
    @overload
    def expect(  # two or more types: one type is the overload above, even with a lambda
        self,
        __t1: type[Any],
        __t2: type[Any],
        *types: type[Any],
        check: Callable[[Any], bool] | None = None,
    ) -> AsyncWaiter[Any]: ...

    def expect(
        self, *types: type[Any], check: Callable[[Any], bool] | None = None
    ) -> AsyncWaiter[Any]:
        """Start waiting for an event, before the action that causes it (see
        :class:`~chatroom._waiters.AsyncWaiter`); ``types`` default to the message
        events. ``with client.expect(T) as w: await client.dm(...); e = await w.wait()``."""
        waiter: AsyncWaiter[Any] = AsyncWaiter(self, types or MESSAGE_EVENTS, check)
        self._waiters.append(waiter)
        return waiter

    async def wait_for(
        self,
        event_type: type[E],
        check: Callable[[E], bool] | None = None,
        timeout: float | None = None,
    ) -> E:
        """The next event of ``event_type`` for which ``check`` is true that arrives
        *after this call* (ChatTimeout); to catch the answer to something you do, make
        the waiter first with :meth:`expect`."""
        return await self.expect(event_type, check=check).wait(timeout)

    def _remove_waiter(self, w: AsyncWaiter[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(w)

    async def events(self) -> AsyncGenerator[object, None]:
        """Every event from now on, as an alternative to hooks; ends when the client
        closes. Unbounded: read it, or the events pile up."""
        q: asyncio.Queue[object] = asyncio.Queue()
        self._streams.append(q)
        try:
            while True:
                event = await q.get()
                if event is _CLOSED:
                    return
                yield event
        finally:
            with contextlib.suppress(ValueError):
                self._streams.remove(q)

    # ------------------------------------------------------------------ reader task

    async def _read_loop(self) -> None:
        attempt = 0
        try:
            while True:
                disconnect = await self._read_until_closed()
                retry = (
                    self.reconnect
                    and not self._closing
                    and self._session.may_reconnect(disconnect.reason)
                )
                await self._lose_connection(disconnect, retry)
                if not retry:
                    return
                if not await self._reconnect(attempt):
                    return
                attempt += 1
        finally:
            if not self._closing:
                # The server is gone for good: close as close() would, in a task of its
                # own (close() waits for this one).
                self._closer = asyncio.create_task(self.close(), name="chat-close")

    async def _read_until_closed(self) -> Disconnect:
        reader = self._reader
        assert reader is not None
        ended: str | None = None
        error: Exception | None = None
        tick = max(0.05, min(self.timeout, self._session.keepalive_interval / 2 or self.timeout))
        while True:
            try:
                ping = self._keepalive()
            except ChatTimeout as exc:
                error = exc
                break
            if ping:
                self._write_quietly(ping)
            try:
                async with asyncio.timeout(tick):  # wakes for keepalive when quiet
                    data = await reader.read(65536)
            except TimeoutError:
                continue
            except (OSError, ssl.SSLError) as exc:
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
                self._write_quietly(control)
            for event in events:
                out = self._route(event)
                if type(out) is Ended:
                    assert isinstance(out, Ended)
                    ended = out.reason
                    error = out.error or error  # a ban's words (Disconnect.error)
                elif out is not None:
                    await self._emit(out)
            mark = self._cursor_mark()
            if mark is not None:
                await self._queue_for_hooks(mark)  # behind the events it covers
            if ended is not None:
                break  # nothing follows an end (a refused re-login's connection stays open)
        return Disconnect(disconnect_reason(ended, self._closing), error)

    def _write_quietly(self, data: bytes) -> None:
        try:
            self._write(data)
        except ChatError as exc:
            log.debug("could not send %r: %s", data[:60], exc)

    def _settle(self, event: Reply | Refused) -> None:
        future = self._pending.get(event.rid)
        if future is not None and not future.done():
            if type(event) is Reply:
                future.set_result(event)
            else:
                future.set_exception(event.error)  # type: ignore[union-attr]

    def _listening(self) -> bool:
        return bool(self._waiters or self._streams)

    async def _emit(self, event: object) -> None:
        """Resolve waiters and iterators, then queue the event for the hooks (waiting for
        room when the queue is full: the concurrency contract's backpressure)."""
        for waiter in list(self._waiters):  # wait() and the with block remove their own
            waiter._offer(event)
        for q in self._streams:
            q.put_nowait(event)
        if self._hooks.wants(event):
            await self._queue_for_hooks(event)

    async def _queue_for_hooks(self, event: object) -> None:
        """Wait for room in the hook queue (the backpressure of the concurrency contract);
        the wait ends when there is room or the client closes, and says every ``timeout``
        seconds that the hooks are behind, so a hook that never returns is not silent."""
        waited = 0.0
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    await self._hook_queue.put(event)
                return
            except TimeoutError:
                waited += self.timeout
                log.warning(
                    "hooks are %d events behind and none finished for %.0f s; "
                    "not reading from the server meanwhile",
                    self._hook_queue.qsize(),
                    waited,
                )

    async def _lose_connection(self, disconnect: Disconnect, retry: bool) -> None:
        await self._close_writer()
        failed = self._session.connection_lost(resend=retry)
        error = ConnectionLost(disconnect.reason)
        for rid in failed:
            future = self._pending.pop(rid, None)
            if future is not None and not future.done():
                future.set_exception(error)
        self._log_disconnect(disconnect)
        await self._emit(Disconnect(disconnect.reason, disconnect.error, retry))

    async def _reconnect(self, attempt: int) -> bool:
        self._next_node()
        while not self._closing:
            await asyncio.sleep(reconnect_delay(attempt, self.reconnect_max_delay))
            attempt += 1
            try:
                await self._open()  # sends the re-login with since
            except ConnectFailed as exc:
                log.info("reconnect attempt %d failed: %s", attempt, exc)
                continue
            return True
        return False

    def _fail_pending(self, error: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    # ------------------------------------------------------------------ hook task

    async def _run_hooks(self) -> None:
        while True:
            if self._cursor_saved == self._hooked:
                event = await self._hook_queue.get()
            else:
                try:
                    async with asyncio.timeout(0.1):  # then the cursor waiting is saved
                        event = await self._hook_queue.get()
                except TimeoutError:
                    self._save_cursor()
                    continue
            if type(event) is CursorMark:
                self._hooks_done(event.seq)
            else:
                await self._hooks.run_async(event)
