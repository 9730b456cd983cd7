"""``AsyncBot``: the same bot on the asyncio client (:class:`chatroom.aio.AsyncChatClient`).

::

    bot = AsyncBot("weather")

    @bot.command()
    async def forecast(ctx: AsyncContext, *, city: str) -> str:
        '''The forecast for CITY.'''
        return await fetch_forecast(city)        # aiohttp, an async database, ...

    asyncio.run(bot.run(port=5050, password="..."))

Everything :class:`~chatroom_bots.Bot` has (typed commands, checks, cooldowns, middleware,
schedules, storage, plugins, the loop guard, on_join/on_leave), with ``async def``
handlers that are awaited and ``await ctx.reply(...)``, ``await ctx.ask(...)``.

Concurrency: everything runs on the event loop the bot was started on. The client's hooks
(plain functions, so quick) route each event and start a task for each command, text
message, join, leave and scheduled run: tasks start in arrival order and interleave only
where they await, so a handler waiting in ``ctx.ask`` or on the network holds up no other.
A plain ``def`` handler runs on the loop: keep it quick (or ``await asyncio.to_thread``).
Middleware here is ``async def mw(ctx, call_next)`` (``await call_next()``); the ones in
:mod:`chatroom_bots.middleware` work in both bots. Store calls are quick SQLite
statements made on the loop. :meth:`stop` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from chatroom import (
    AuthError,
    Broadcast,
    ChatError,
    ConnectFailed,
    DirectMessage,
    Disconnect,
    MessageTooLong,
    Reconnected,
    RoomInfo,
    UsersChanged,
)
from chatroom.aio import AsyncChatClient
from chatroom.protocol import DEFAULT_PORT
from chatroom_bots.clock import Clock
from chatroom_bots.context import AsyncContext
from chatroom_bots.conversations import AsyncQuestion, NoAnswer
from chatroom_bots.core import BotBase, Unknown
from chatroom_bots.schedules import AsyncScheduler, Job, record_failure
from chatroom_bots.storage import Store
from chatroom_bots.turns import Stopping, TooBusy

__all__ = ["AsyncBot", "AsyncContext"]

log = logging.getLogger("chatroom_bots.bot")

# How long stopping lets the tasks under way finish before they are cancelled.
STOP_GRACE = 5.0


class AsyncBot(BotBase):
    """A bot on :class:`chatroom.aio.AsyncChatClient`; see the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        prefix: str = "!",
        dm_commands: bool = True,
        replies_per_minute: int = 20,
        rejoin_grace: float = 120.0,
        clock: Clock | Callable[[], float] | None = None,
        store: Store | str | Path | None = None,
        max_reply: int = 4000,
        max_conversations: int = 1000,
        max_pending: int = 10,
    ) -> None:
        super().__init__(
            name,
            prefix=prefix,
            dm_commands=dm_commands,
            replies_per_minute=replies_per_minute,
            rejoin_grace=rejoin_grace,
            clock=clock,
            store=store,
            max_reply=max_reply,
            max_conversations=max_conversations,
            max_pending=max_pending,
        )
        self.client: AsyncChatClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._online: asyncio.Event | None = None
        self._scheduler: AsyncScheduler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._busy = 0  # tasks running, less those waiting for an answer
        self._idle: asyncio.Event | None = None  # set while _busy == 0
        self._seen_seq = 0
        self._seen: asyncio.Event | None = None  # set whenever _seen_seq moves

    # ------------------------------------------------------------------ talking

    @property
    def users(self) -> tuple[str, ...]:
        return self.client.users if self.client is not None else ()

    async def say(self, text: str, *, room: str | None = None) -> None:
        """A public message: in the lobby, or in ``room`` (one the bot is in)."""
        assert self.client is not None, "the bot is not running"
        self._sent(await self.client.pm(text, room=room), room)

    async def tell(self, user: str, text: str) -> None:
        """A direct message."""
        assert self.client is not None, "the bot is not running"
        self.guard.remember(user, text, self.clock.monotonic())
        self._sent(await self.client.dm(user, text), None)

    async def join(self, room: str, *, key: str | None = None) -> RoomInfo:
        """Join ``room`` (creating it: the bot owns it then). Membership lasts: the bot
        is in its rooms again at every login (docs/PROTOCOL.md §Rooms)."""
        assert self.client is not None, "the bot is not running"
        return await self.client.join(room, key=key)

    async def part(self, room: str, *, reason: str | None = None) -> None:
        """Leave ``room``."""
        assert self.client is not None, "the bot is not running"
        await self.client.part(room, reason=reason)

    async def _announce(self) -> None:
        """As :meth:`chatroom_bots.Bot._announce`."""
        client = self.client
        if client is None:
            return
        try:
            await client.announce_commands(self.announcement(), prefix=self.prefix)
        except ChatError as exc:
            log.warning("%s: could not announce the commands: %s", self.name, exc)

    def _announce_soon(self) -> None:
        # Plugins are swapped on the bot's loop; before it runs, start() announces.
        loop = self._loop
        online = self._online
        if loop is None or online is None or not online.is_set():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._spawn(self._announce(), "bot-announce")
        else:
            loop.call_soon_threadsafe(self._spawn, self._announce(), "bot-announce")

    async def _reply(self, msg: AsyncContext, text: str) -> None:
        parts = self._reply_parts(msg, text)
        i = 0
        try:
            while i < len(parts):
                try:
                    if msg.private:
                        await self.tell(msg.sender, parts[i])
                    else:
                        await self.say(parts[i], room=msg.room)
                except MessageTooLong as exc:
                    parts = self._resplit(parts, i, exc)
                    continue
                i += 1
        except ChatError as exc:
            log.warning("could not answer %s: %s", msg.sender, exc)

    async def _ask(self, ctx: AsyncContext, question: str, timeout: float) -> str:
        key = ctx.conversation_key
        q = AsyncQuestion(self.clock, timeout)
        if not self.conversations.open(key, q):
            raise TooBusy
        try:
            await ctx.reply(question)
            self._set_busy(-1)  # waiting for an answer is not work under way
            try:
                answer = await q.wait()
            finally:
                self._set_busy(+1)
        finally:
            self.conversations.close(key, q)
        if answer is None:
            raise NoAnswer(self._no_answer(ctx, timeout), timeout)
        return answer

    # ------------------------------------------------------------------ hooks (the loop)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        self._set_busy(+1)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            self._set_busy(-1)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s: task %s failed", self.name, t.get_name(), exc_info=t.exception())

        task.add_done_callback(done)

    def _set_busy(self, delta: int) -> None:
        self._busy += delta
        if self._idle is not None:
            if self._busy == 0:
                self._idle.set()
            else:
                self._idle.clear()

    def _mark_seen(self, seq: int | None) -> None:
        if seq is not None and seq > self._seen_seq:
            self._seen_seq = seq
            if self._seen is not None:
                self._seen.set()

    _context_type = AsyncContext

    def _on_message(self, event: Broadcast | DirectMessage) -> None:
        """A public message or a DM (the client's hook): routed here, run as a task."""
        msg = self._incoming(event)
        if msg is None:
            return
        try:
            what = self._dispatch(msg)
            if what is None:
                return
            if isinstance(what, Unknown):
                job = msg.reply(what.reply)
            elif what.command is not None:
                job = self._invoke(what)
            else:
                job = self._text(msg)
            self._spawn(self._counted(msg.sender, job), "bot-handler")
        finally:
            self._mark_seen(msg.seq)

    async def _counted(self, sender: str, job: Coroutine[Any, Any, None]) -> None:
        try:
            await job
        except asyncio.CancelledError:
            raise
        except BaseException:
            # SystemExit from a handler: its bug; raised out of a task it would end the
            # whole event loop.
            log.exception("%s: a handler failed", self.name)
        finally:
            self._finished(sender)

    def _on_users(self, event: UsersChanged) -> None:
        for name, handlers, what in self._arrivals(event):
            self._spawn(self._presence(name, handlers, what), f"bot-{what}")

    def _on_disconnect(self, event: Disconnect) -> None:
        if self._online is not None:
            self._online.clear()
        self._lost_server(event)

    def _on_reconnect(self, event: Reconnected) -> None:
        self._back_online(event)
        if self._online is not None:
            self._online.set()
        self._spawn(self._announce(), "bot-announce")  # a new session: it has none

    # ------------------------------------------------------------------ handlers (tasks)

    async def _invoke(self, ctx: AsyncContext) -> None:
        try:
            answer = await self._call_chain(ctx)
        except Exception as exc:  # noqa: BLE001 - _error_reply logs what is a bug
            answer = self._error_reply(ctx, exc)
        if answer is not None and answer != "":
            await ctx.reply(str(answer))

    async def _call_chain(self, ctx: AsyncContext) -> Any:
        chain = self.middleware()

        async def call(i: int) -> Any:
            if i == len(chain):
                return await self._run_command(ctx)
            result = chain[i](ctx, lambda: call(i + 1))
            return await result if inspect.isawaitable(result) else result

        return await call(0)

    async def _run_command(self, ctx: AsyncContext) -> Any:
        cmd = ctx.command
        assert cmd is not None
        for check in self._checks(cmd):  # as core._gate, awaiting what a check returns
            result = check(ctx)
            self._verdict(ctx, await result if inspect.isawaitable(result) else result)
        self._cooldown_gate(ctx)
        args, kwargs = cmd.parse(ctx, ctx.args)  # a group without a handler raises here
        assert cmd.fn is not None
        answer = cmd.fn(ctx, *args, **kwargs)
        if inspect.isawaitable(answer):
            answer = await answer
        self._used(ctx)
        return answer

    async def _text(self, msg: AsyncContext) -> None:
        for _, fn in self._handlers("text_handlers"):
            try:
                answer = fn(msg)
                if inspect.isawaitable(answer):
                    answer = await answer
            except Stopping:
                return
            except NoAnswer as exc:
                answer = f"{msg.sender}: {exc}"
            except Exception:
                log.exception("%s: text handler %s failed", self.name, getattr(fn, "__name__", fn))
                continue
            if answer:
                await msg.reply(str(answer))

    async def _presence(self, name: str, handlers: list[Callable[..., Any]], what: str) -> None:
        log.info("%s: %s %s", self.name, name, what)
        for fn in handlers:
            try:
                result = fn(name)
                if inspect.isawaitable(result):
                    await result
            except ChatError as exc:
                closing = self.client is None or self._stopped is None or self._stopped.is_set()
                level = logging.DEBUG if closing else logging.WARNING
                log.log(level, "%s: %s handler for %s: %s", self.name, what, name, exc)
            except Stopping:
                return
            except Exception:
                log.exception("%s: %s handler for %s failed", self.name, what, name)

    # ------------------------------------------------------------------ schedules

    def _add_job(self, job: Job) -> bool:
        if self._scheduler is None:
            return False
        self._scheduler.add_job(job)
        return True

    def _remove_job(self, job: Job) -> None:
        job.cancel()

    def _submit_job(self, job: Job) -> None:
        scheduler = self._scheduler
        assert scheduler is not None and self._online is not None
        online = self._online

        async def run() -> None:
            try:
                if not online.is_set():
                    log.info("%s: schedule %s waits for the connection", self.name, job.name)
                    await online.wait()
                fn = job.spec.fn
                result = fn(self) if job.spec.takes_bot else fn()
                if inspect.isawaitable(result):
                    await result
            except Stopping:
                pass
            except Exception as exc:  # noqa: BLE001 - record_failure logs it
                record_failure(job, exc)
            finally:
                scheduler.done(job)

        self._spawn(run(), f"bot-schedule-{job.name}")

    # ------------------------------------------------------------------ plugins

    def request_reload(self, source: str) -> None:
        """Reload ``source`` (the watcher's thread): import it here, then swap it in on
        the bot's loop. A module that hangs at import holds up this thread only."""
        loaded = self._import_logged(source)
        if loaded is None:
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            self._install_logged(source, loaded)
        else:
            loop.call_soon_threadsafe(self._install_logged, source, loaded)

    # ------------------------------------------------------------------ test harness

    async def settle(self, seq: int | None, timeout: float) -> bool:
        """As :meth:`chatroom_bots.Bot.settle`, on the bot's loop."""
        try:
            async with asyncio.timeout(timeout):
                while seq is not None and self._seen_seq < seq:
                    assert self._seen is not None
                    self._seen.clear()
                    await self._seen.wait()
                assert self._idle is not None
                while True:
                    await self._idle.wait()
                    if self._scheduler is not None:
                        await self._scheduler.settle(timeout)
                    await asyncio.sleep(0)  # tasks the settling started get going
                    if self._busy == 0:
                        return True
        except TimeoutError:
            return False

    # ------------------------------------------------------------------ running

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        password: str,
        **client_options: Any,
    ) -> AsyncChatClient:
        """Connect (retrying until :meth:`stop`), log in, start the schedules."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._online = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._seen = asyncio.Event()
        client_options.setdefault("reconnect", True)
        client_options.setdefault("rooms", True)  # a server without them: the lobby only
        client = AsyncChatClient(host, port, **client_options)
        client.on_broadcast(self._on_message)
        client.on_dm(self._on_message)
        client.on_users(self._on_users)
        client.on_disconnect(self._on_disconnect)
        client.on_reconnect(self._on_reconnect)
        self.client = client
        delay = 0.25
        while True:
            try:
                await client.connect()
                break
            except ConnectFailed as exc:
                log.warning("%s; retrying in %.1f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopped.wait()
                if self._stopped.is_set():
                    raise
                delay = min(delay * 2, 10.0)
        try:
            result = await client.login(self.name, password)
        except AuthError:
            await client.close()
            raise
        self.presence.reset(result.users)
        self.name = result.username
        self._online.set()
        await self._announce()
        self._scheduler = AsyncScheduler(self.clock, self._submit_job)
        self._schedule_all()
        self._scheduler.start()
        log.info("%s is online at %s:%d; %d users", result.username, host, port, len(result.users))
        return client

    async def run(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        password: str,
        **client_options: Any,
    ) -> None:
        """:meth:`start`, then serve until :meth:`stop` (or the task is cancelled)."""
        try:
            await self.start(host, port, password=password, **client_options)
        except ConnectFailed:
            return
        try:
            assert self._stopped is not None
            await self._stopped.wait()
        finally:
            await self.shutdown()
            log.info("%s stopped", self.name)

    def stop(self) -> None:
        """End :meth:`run` (safe from any thread)."""
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None:
            loop.call_soon_threadsafe(stopped.set)

    async def shutdown(self) -> None:
        """Stop the schedules, the questions, the tasks (cancelled after a grace), the
        client."""
        if self._stopped is not None:
            self._stopped.set()
        await asyncio.to_thread(self._stop_watching)  # joins the watcher's thread
        if self._scheduler is not None:
            await self._scheduler.stop()
            self._scheduler = None
        self._jobs.clear()
        self.conversations.cancel_all()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=STOP_GRACE)
        if self.client is not None:
            await self.client.close()

    @contextlib.asynccontextmanager
    async def running(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        password: str,
        **client_options: Any,
    ) -> AsyncIterator[AsyncChatClient]:
        client = await self.start(host, port, password=password, **client_options)
        try:
            yield client
        finally:
            await self.shutdown()
