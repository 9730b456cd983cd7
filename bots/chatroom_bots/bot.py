"""``Bot``: a chatroom bot on the threaded client.

::

    bot = Bot("dice")

    @bot.command(aliases=["r"], cooldown=1.0)
    def roll(ctx: Context, dice: int = 1, sides: int = 6) -> str:
        '''Roll DICE dice with SIDES sides.'''
        rolls = [random.randint(1, sides) for _ in range(dice)]
        return f"{ctx.sender} rolled {sum(rolls)}"   # the reply goes back the way it came

    bot.run(port=5050, password="...")

docs/BOTS.md is the guide. What a bot does for its author:

- ``!command args`` in public and by DM, ``@botname command args`` in public; parameters
  from the signature (:mod:`~chatroom_bots.commands`), subcommands, aliases, a usage reply
  for wrong arguments, ``!help`` and ``!help CMD``. A handler's return value is the reply:
  by DM to a DM, in public to a public message. A :class:`CommandError` (``BadArguments``,
  a failed check) becomes a reply to the user; any other exception a short apology and a
  logged traceback.
- Checks, cooldowns, middleware, schedules, conversations (``ctx.ask``), storage
  (``bot.store``) and plugins, in the modules of the same names.
- ``on_join``/``on_leave`` for real arrivals and departures
  (:class:`~chatroom_bots.guard.Presence`). A ``ChatError`` from one (a greeting that
  cannot go out) is logged as a warning, or at debug while the bot stops.
- A loop guard: the bot never answers itself, never answers its own words coming back
  from the same user (two echo bots cannot ping-pong), and caps replies per user per
  minute.
- Reconnect on by default; :meth:`run` keeps trying to connect until stopped.

Threads: the client's dispatch thread routes each event (a command, an answer to a
question, a join) and never runs a handler. Handlers (commands, text, join/leave,
schedules, plugin reloads) run on worker threads one at a time, in arrival order
(:class:`~chatroom_bots.turns.TurnRunner`): they need no locks of their own, and one
waiting in ``ctx.ask`` lets the others run. ``async def`` handlers are awaited on an
event loop thread of the bot's own (``_loop``), started at first use. The scheduler has a
thread of its own; a schedule due while the bot is reconnecting waits in
``_offline_runs`` and is run on reconnect (``_online_lock`` guards both and ``_online``'s
changes). ``_seen_lock`` guards ``_seen_seq`` (the test harness's sync point).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from chatroom import (
    AuthError,
    Broadcast,
    ChatClient,
    ChatError,
    ConnectFailed,
    DirectMessage,
    Disconnect,
    MessageTooLong,
    Reconnected,
    RoomInfo,
    UsageError,
    UsersChanged,
)
from chatroom.protocol import DEFAULT_PORT
from chatroom.rooms import LOBBY
from chatroom_bots.clock import Clock
from chatroom_bots.commands import BadArguments, Command
from chatroom_bots.context import Context, Message
from chatroom_bots.conversations import NoAnswer, ThreadQuestion
from chatroom_bots.core import BotBase, Unknown
from chatroom_bots.schedules import Job, ThreadScheduler, record_failure
from chatroom_bots.storage import Store
from chatroom_bots.turns import Stopping, TooBusy, TurnRunner

__all__ = ["BadArguments", "Bot", "Command", "Context", "Message"]

log = logging.getLogger("chatroom_bots.bot")

# A handler's reply: a string, None, or (an ``async def`` handler) an awaitable of one.
Reply = str | Awaitable[str | None] | None
Handler = Callable[..., Reply]

# How long stop() lets the handler under way finish.
STOP_GRACE = 5.0


class Bot(BotBase):
    """A bot on :class:`chatroom.ChatClient`; see the module docstring."""

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
        max_conversations: int = 32,
        max_pending: int = 10,
        handler_timeout: float = 30.0,
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
        self.handler_timeout = handler_timeout
        self.client: ChatClient | None = None
        self._stop = threading.Event()  # run() returns
        self._online = threading.Event()  # logged in and connected
        self._online_lock = threading.Lock()  # guards _online's changes and _offline_runs
        self._offline_runs: list[Callable[[], None]] = []  # schedules due while offline
        self._runner = TurnRunner(name, max_conversations)
        self._scheduler: ThreadScheduler | None = None
        # Async handlers run on this loop, in a thread of its own, started at first use;
        # the handler's worker waits for each (up to handler_timeout s).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_lock = threading.Lock()  # guards starting and stopping _loop
        self._seen_lock = threading.Condition()
        self._seen_seq = 0  # the highest seq the dispatch thread has routed

    # ------------------------------------------------------------------ talking

    @property
    def users(self) -> tuple[str, ...]:
        """The users online now (the client's list)."""
        return self.client.users if self.client is not None else ()

    def say(self, text: str, *, room: str | None = None) -> None:
        """A public message: in the lobby, or in ``room`` (one the bot is in)."""
        assert self.client is not None, "the bot is not running"
        self._sent(self.client.pm(text, room=room), room)

    def tell(self, user: str, text: str) -> None:
        """A direct message."""
        assert self.client is not None, "the bot is not running"
        self.guard.remember(user, text, self.clock.monotonic())
        self._sent(self.client.dm(user, text), None)

    def join(self, room: str, *, key: str | None = None) -> RoomInfo:
        """Join ``room`` (creating it: the bot owns it then). Membership lasts: the bot
        is in its rooms again at every login (docs/PROTOCOL.md §Rooms)."""
        assert self.client is not None, "the bot is not running"
        return self.client.join(room, key=key)

    def part(self, room: str, *, reason: str | None = None) -> None:
        """Leave ``room``."""
        assert self.client is not None, "the bot is not running"
        self.client.part(room, reason=reason)

    def _announce(self) -> None:
        """Tell the server our commands (docs/PROTOCOL.md §Bot commands), for the REPL to
        complete them; each session starts without them, so at every login."""
        client = self.client
        if client is None or client.closed:
            return
        try:
            client.announce_commands(self.announcement(), prefix=self.prefix)
        except ChatError as exc:
            # An older server, or too many commands: the bot works the same, unannounced.
            log.warning("%s: could not announce the commands: %s", self.name, exc)

    def _announce_soon(self) -> None:
        if self._online.is_set():
            self._runner.submit(self._announce)

    def _reply(self, msg: Message, text: str) -> None:
        """Answer ``msg`` the way it came, in pieces of at most ``max_reply``."""
        parts = self._reply_parts(msg, text)
        i = 0
        try:
            while i < len(parts):
                try:
                    if msg.private:
                        self.tell(msg.sender, parts[i])
                    else:
                        self.say(parts[i], room=msg.room)
                except MessageTooLong as exc:
                    parts = self._resplit(parts, i, exc)
                    continue
                how = "by DM" if msg.private else f"in {msg.room or LOBBY}"
                log.info("%s: answered %s %s: %.80s", self.name, msg.sender, how, parts[i])
                i += 1
        except ChatError as exc:
            log.warning("could not answer %s: %s", msg.sender, exc)

    def _ask(self, ctx: Context, question: str, timeout: float) -> str:
        if self._loop_thread is not None and threading.current_thread() is self._loop_thread:
            raise UsageError("ctx.ask() blocks: from an async handler, use AsyncBot")
        if not self._runner.holds_turn():
            raise UsageError("ctx.ask() is for handlers (it waits for the user's answer)")
        key = ctx.conversation_key
        q = ThreadQuestion(self._runner, self.clock, timeout)
        if not self.conversations.open(key, q):
            raise TooBusy
        try:
            ctx.reply(question)
            answer = q.wait()
        finally:
            self.conversations.close(key, q)
        if answer is None:
            raise NoAnswer(self._no_answer(ctx, timeout), timeout)
        return answer

    # ------------------------------------------------------------------ dispatch thread

    _context_type = Context

    def _on_message(self, event: Broadcast | DirectMessage) -> None:
        """A public message or a DM (the client's hook): routed here, run in turn."""
        msg = self._incoming(event)
        if msg is None:
            return
        try:
            what = self._dispatch(msg)
            if what is None:
                return
            job: Callable[[], None]
            if isinstance(what, Unknown):
                job = functools.partial(msg.reply, what.reply)
            elif what.command is not None:
                job = functools.partial(self._invoke, what)
            else:
                job = functools.partial(self._text, msg)
            if not self._runner.submit(functools.partial(self._counted, msg.sender, job)):
                self._finished(msg.sender)  # stopping
        finally:
            self._mark_seen(msg.seq)

    def _counted(self, sender: str, job: Callable[[], None]) -> None:
        try:
            job()
        finally:
            self._finished(sender)

    def _mark_seen(self, seq: int | None) -> None:
        if seq is not None:
            with self._seen_lock:
                self._seen_seq = max(self._seen_seq, seq)
                self._seen_lock.notify_all()

    def _on_users(self, event: UsersChanged) -> None:
        for name, handlers, what in self._arrivals(event):
            self._runner.submit(functools.partial(self._presence_job, name, handlers, what))

    def _on_disconnect(self, event: Disconnect) -> None:
        with self._online_lock:
            self._online.clear()
        self._lost_server(event)

    def _on_reconnect(self, event: Reconnected) -> None:
        self._back_online(event)
        with self._online_lock:
            self._online.set()
            runs, self._offline_runs = self._offline_runs, []
        self._runner.submit(self._announce)  # a new session: it has none of them
        for run in runs:  # schedules that came due while we were away
            self._runner.submit(run)

    # ------------------------------------------------------------------ handlers (turns)

    def _invoke(self, ctx: Context) -> None:
        try:
            answer = self._call_chain(ctx)
        except Exception as exc:  # noqa: BLE001 - _error_reply logs what is a bug
            answer = self._error_reply(ctx, exc)
        if answer is not None and answer != "":
            ctx.reply(str(answer))

    def _call_chain(self, ctx: Context) -> Any:
        chain = self.middleware()

        def call(i: int) -> Any:
            if i == len(chain):
                return self._run_command(ctx)
            return chain[i](ctx, lambda: call(i + 1))

        return self._await(call(0))

    def _run_command(self, ctx: Context) -> Any:
        cmd = ctx.command
        assert cmd is not None
        self._gate(ctx)
        args, kwargs = cmd.parse(ctx, ctx.args)  # a group without a handler raises here
        assert cmd.fn is not None
        answer = self._await(cmd.fn(ctx, *args, **kwargs))
        self._used(ctx)
        return answer

    def _text(self, msg: Context) -> None:
        for _, fn in self._handlers("text_handlers"):
            try:
                answer = self._await(fn(msg))
            except Stopping:
                return
            except NoAnswer as exc:
                answer = f"{msg.sender}: {exc}"
            except Exception:
                log.exception("%s: text handler %s failed", self.name, getattr(fn, "__name__", fn))
                continue
            if answer:
                msg.reply(str(answer))

    def _presence_job(self, name: str, handlers: list[Callable[..., Any]], what: str) -> None:
        log.info("%s: %s %s", self.name, name, what)
        for fn in handlers:
            try:
                self._await(fn(name))
            except ChatError as exc:
                # A greeting that could not be said is not a bug in the handler: the bot
                # is stopping (users leave as it goes), or the server is.
                closing = self.client is None or self.client.closed
                level = logging.DEBUG if closing else logging.WARNING
                log.log(level, "%s: %s handler for %s: %s", self.name, what, name, exc)
            except Stopping:
                return
            except Exception:
                log.exception("%s: %s handler for %s failed", self.name, what, name)

    def _await(self, result: Any) -> Any:
        """A handler's result: as is, or, from an ``async def`` handler, awaited on the
        bot's loop (TimeoutError after ``handler_timeout`` s; the coroutine is cancelled)."""
        if not inspect.isawaitable(result):
            return result
        with self._loop_lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(
                    target=self._loop.run_forever, name=f"bot-{self.name}-async", daemon=True
                )
                self._loop_thread.start()
            loop = self._loop

        async def run() -> Any:
            return await result

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            return future.result(self.handler_timeout)
        except TimeoutError:
            future.cancel()
            raise

    def _stop_loop(self) -> None:
        with self._loop_lock:
            loop, thread = self._loop, self._loop_thread
            self._loop = self._loop_thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()

    # ------------------------------------------------------------------ schedules

    def _add_job(self, job: Job) -> bool:
        if self._scheduler is None:
            return False
        self._scheduler.add_job(job)
        return True

    def _remove_job(self, job: Job) -> None:
        job.cancel()

    def _submit_job(self, job: Job) -> None:
        """The scheduler's: run ``job`` on a turn once online; then plan its next run."""
        scheduler = self._scheduler
        assert scheduler is not None

        def run() -> None:
            try:
                fn = job.spec.fn
                self._await(fn(self) if job.spec.takes_bot else fn())
            except Stopping:
                pass
            except Exception as exc:  # noqa: BLE001 - record_failure logs it
                record_failure(job, exc)
            finally:
                scheduler.done(job)

        with self._online_lock:
            if not self._online.is_set():
                log.info("%s: schedule %s waits for the connection", self.name, job.name)
                self._offline_runs.append(run)
                return
        if not self._runner.submit(run):
            scheduler.done(job)

    # ------------------------------------------------------------------ plugins

    def request_reload(self, source: str) -> None:
        """Reload ``source`` (the watcher's thread): import it here, then swap it in on
        the bot's turn, when no handler is running. A module that hangs at import holds
        up this thread only; the bot goes on answering."""
        loaded = self._import_logged(source)
        if loaded is not None and not self._runner.submit(
            functools.partial(self._install_logged, source, loaded)
        ):
            self._install_logged(source, loaded)

    # ------------------------------------------------------------------ test harness

    def settle(self, seq: int | None, timeout: float) -> bool:
        """Wait until the bot has routed every message up to ``seq``, no handler runs or
        waits for its turn, and no schedule is due (the test harness's sync point)."""
        with self._seen_lock:
            if seq is not None and not self._seen_lock.wait_for(
                lambda: self._seen_seq >= seq, timeout
            ):
                return False
        if not self._runner.wait_idle(timeout):
            return False
        scheduler = self._scheduler
        if scheduler is not None and not scheduler.settle(timeout):
            return False
        return self._runner.wait_idle(timeout)

    # ------------------------------------------------------------------ running

    def start(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        password: str,
        **client_options: Any,
    ) -> ChatClient:
        """Connect (retrying until :meth:`stop`), log in, start the schedules, and return
        the running client. Raises :class:`chatroom.AuthError` if the server refuses the
        name or password."""
        client_options.setdefault("reconnect", True)
        client_options.setdefault("rooms", True)  # a server without them: the lobby only
        client = ChatClient(host, port, **client_options)
        client.on_broadcast(self._on_message)
        client.on_dm(self._on_message)
        client.on_users(self._on_users)
        client.on_disconnect(self._on_disconnect)
        client.on_reconnect(self._on_reconnect)
        self.client = client
        if self._runner.stopped:  # started again after a stop
            self._runner = TurnRunner(self.name, self.conversations.limit)
        delay = 0.25
        while True:
            try:
                client.connect()
                break
            except ConnectFailed as exc:
                log.warning("%s; retrying in %.1f s", exc, delay)
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, 10.0)
        try:
            result = client.login(self.name, password)
        except AuthError:
            client.close()
            raise
        self.presence.reset(result.users)
        self.name = result.username
        with self._online_lock:
            self._online.set()
        self._announce()
        self._scheduler = ThreadScheduler(self.clock, self._submit_job, self.name)
        self._schedule_all()
        self._scheduler.start()
        log.info(
            "%s is online at %s:%d%s; %d users",
            result.username,
            host,
            port,
            " (new account)" if result.new_user else "",
            len(result.users),
        )
        return client

    def run(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        password: str,
        **client_options: Any,
    ) -> None:
        """:meth:`start`, then serve until :meth:`stop` (or Ctrl-C), then log out."""
        try:
            client = self.start(host, port, password=password, **client_options)
        except ConnectFailed:
            return  # stopped while the server was unreachable
        try:
            while not self._stop.wait(0.5):
                if client.closed:
                    log.error("%s: the connection ended for good", self.name)
                    break
        except KeyboardInterrupt:
            pass
        finally:
            self._shutdown()
            log.info("%s stopped", self.name)

    def stop(self) -> None:
        """End :meth:`run` (safe from any thread or a signal handler)."""
        self._stop.set()

    def _shutdown(self) -> None:
        """Stop everything: the watcher, the schedules, the questions waiting for answers,
        the handlers (the one under way may finish), the client, the async loop."""
        self._stop_watching()
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        self._jobs.clear()
        self.conversations.cancel_all()
        self._runner.stop(STOP_GRACE)
        with self._online_lock:
            self._online.clear()
            self._offline_runs.clear()
        if self.client is not None:
            self.client.close()
        self._stop_loop()

    @contextlib.contextmanager
    def running(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        password: str,
        **client_options: Any,
    ) -> Iterator[ChatClient]:
        """The bot online for the ``with`` block (for tests and for embedding)."""
        client = self.start(host, port, password=password, **client_options)
        try:
            yield client
        finally:
            self._shutdown()
