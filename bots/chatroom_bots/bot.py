"""``Bot``: the thin layer that makes a chatroom bot short.

::

    bot = Bot("dice")

    @bot.command("roll", help="!roll NdM: roll N dice with M sides", cooldown=1.0)
    def roll(msg: Message, args: str) -> str:
        ...
        return f"{msg.sender} rolled {total}"   # the reply goes back the way it came

    bot.run(port=5050, password="...")

What it adds over :class:`chatroom.ChatClient`, and nothing more:

- ``!command args`` handlers in public and direct messages; in public also
  ``@botname command args``. A handler's return value is the reply: by DM to a DM, in
  public to a public message. ``BadArguments`` becomes a helpful reply, any other exception
  a short apology and a logged traceback. ``!help`` is built in.
- Per-user cooldowns per command.
- ``on_join``/``on_leave`` for real arrivals and departures: not the users already online
  when the bot starts, not itself, not a session takeover, and not everyone reconnecting
  after a server restart (``rejoin_grace``). A ``ChatError`` from one (a greeting that
  cannot go out) is logged as a warning, or at debug while the bot stops; any other
  exception is the handler's bug and the SDK logs its traceback.
- A loop guard: the bot never answers itself, never answers its own words coming back from
  the same user (two echo bots cannot ping-pong), and caps replies per user per minute.
- Reconnect on by default; :meth:`run` keeps trying to connect until stopped.

Threading: every handler runs on the client's dispatch thread, one at a time, so handlers
may call blocking client methods and need no locks of their own. ``_lock`` guards the
bookkeeping shared with :meth:`stop` and the caller's thread (``_online``, ``_lost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from chatroom import (
    AuthError,
    Broadcast,
    ChatClient,
    ChatError,
    ConnectFailed,
    DirectMessage,
    Disconnect,
    Reconnected,
    UsersChanged,
)
from chatroom.protocol import DEFAULT_PORT, username_key

__all__ = ["BadArguments", "Bot", "Command", "Message"]

log = logging.getLogger(__name__)


class BadArguments(Exception):
    """Raise from a command handler: the message is sent back to the user as the reply."""


@dataclass(frozen=True)
class Message:
    """A message the bot received, with a :meth:`reply` that goes back the way it came."""

    bot: Bot = field(repr=False)
    sender: str
    text: str
    private: bool  # True for a DM, False for a public message
    mention: str | None = None  # public "@bot rest": the rest; else None

    def reply(self, text: str) -> None:
        """Answer by DM to a DM, in public to a public message."""
        self.bot._reply(self, text)


# A handler returns the reply (or None); an ``async def`` handler is awaited on the bot's
# event loop thread (Bot._await), so it may await aiohttp, an async database, ...
Reply = str | Awaitable[str | None] | None
Handler = Callable[[Message, str], Reply]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    help: str = ""
    cooldown: float = 0.0


class Bot:
    def __init__(
        self,
        name: str,
        *,
        prefix: str = "!",
        dm_commands: bool = True,
        replies_per_minute: int = 20,
        rejoin_grace: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.prefix = prefix
        self.dm_commands = dm_commands  # False: DMs go to on_text handlers verbatim
        self.replies_per_minute = replies_per_minute
        self.rejoin_grace = rejoin_grace
        self._clock = clock
        self._commands: dict[str, Command] = {}
        self._text_handlers: list[Callable[[Message], Reply]] = []
        self._join_handlers: list[Callable[[str], None]] = []
        self._leave_handlers: list[Callable[[str], None]] = []
        self._lock = threading.Lock()  # guards _online and _lost
        self._online: set[str] = set()  # lower-cased names
        self._lost: dict[str, float] = {}  # online when we lost the server -> when
        # Dispatch thread (and tell(), called from handlers) only:
        self._last_used: dict[tuple[str, str], float] = {}
        self._warned: dict[tuple[str, str], float] = {}
        self._sent: dict[str, deque[tuple[float, str]]] = defaultdict(deque)
        self._budget: dict[str, deque[float]] = defaultdict(deque)
        self._stop = threading.Event()
        # Async handlers run on this loop, in a thread of its own, started at first use;
        # the dispatch thread waits for each (up to handler_timeout s).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self.handler_timeout = 30.0
        self.client: ChatClient | None = None
        self.command("help", help="list the commands")(self._help)

    # ------------------------------------------------------------------ registration

    def command(
        self, name: str, *, help: str = "", cooldown: float = 0.0
    ) -> Callable[[Handler], Handler]:
        """Register ``fn(msg, args) -> reply or None`` for ``!name args``."""

        def register(fn: Handler) -> Handler:
            self._commands[name.lower()] = Command(name.lower(), fn, help, cooldown)
            return fn

        return register

    def on_text(self, fn: Callable[[Message], Reply]) -> Callable[[Message], Reply]:
        """Register a handler for messages that are not commands; its return is the reply.
        Public messages reach it only when they mention the bot (``@name ...``)."""
        self._text_handlers.append(fn)
        return fn

    def on_join(self, fn: Callable[[str], None]) -> Callable[[str], None]:
        """Register ``fn(username)`` for users who really arrive (see module docstring)."""
        self._join_handlers.append(fn)
        return fn

    def on_leave(self, fn: Callable[[str], None]) -> Callable[[str], None]:
        """Register ``fn(username)`` for users who leave."""
        self._leave_handlers.append(fn)
        return fn

    # ------------------------------------------------------------------ talking

    def say(self, text: str) -> None:
        """A public message."""
        assert self.client is not None, "the bot is not running"
        self.client.pm(text)

    def tell(self, user: str, text: str) -> None:
        """A direct message."""
        assert self.client is not None, "the bot is not running"
        self._remember(user, text)
        self.client.dm(user, text)

    def _remember(self, user: str, text: str) -> None:
        """Keep what we DM a user for a minute, to recognise it if it comes back."""
        now = self._clock()
        sent = self._sent[username_key(user)]
        sent.append((now, text))
        while len(sent) > 20 or (sent and now - sent[0][0] > 60):
            sent.popleft()

    def _reply(self, msg: Message, text: str) -> None:
        if not text or self.client is None:
            return
        now = self._clock()
        key = username_key(msg.sender)
        budget = self._budget[key]
        while budget and now - budget[0] > 60:
            budget.popleft()
        if len(budget) >= self.replies_per_minute:
            log.warning("not answering %s: %d replies in the last minute", msg.sender, len(budget))
            return
        budget.append(now)
        try:
            if msg.private:
                self.tell(msg.sender, text)
                log.info("%s: answered %s by DM: %.80s", self.name, msg.sender, text)
            else:
                self.client.pm(text)
                log.info("%s: answered %s in public: %.80s", self.name, msg.sender, text)
        except ChatError as exc:
            log.warning("could not answer %s: %s", msg.sender, exc)

    def _is_own_words(self, sender: str, text: str) -> bool:
        """True if ``text`` is something we recently sent to ``sender`` (an echo of us)."""
        now = self._clock()
        return any(now - t < 60 and s == text for t, s in self._sent.get(username_key(sender), ()))

    # ------------------------------------------------------------------ dispatch thread

    def _on_broadcast(self, event: Broadcast) -> None:
        if username_key(event.sender) == username_key(self.name):
            return
        if event.replayed:
            # Said in public while we were away: the room has moved on, and an answer
            # now would be out of place. DMs are different: they were meant for us.
            log.debug("not answering %s's public message from while we were away", event.sender)
            return
        mention = _mention(event.message, self.name)
        self._handle(Message(self, event.sender, event.message, False, mention))

    def _on_dm(self, event: DirectMessage) -> None:
        if username_key(event.sender) == username_key(self.name):
            return
        if self._is_own_words(event.sender, event.message):
            log.info("ignoring %s: it repeats what we said to them", event.sender)
            return
        self._handle(Message(self, event.sender, event.message, True))

    def _handle(self, msg: Message) -> None:
        text = msg.text.strip()
        body: str | None = None
        from_prefix = False
        if text.startswith(self.prefix) and (self.dm_commands or not msg.private):
            body, from_prefix = text[len(self.prefix) :], True
        elif msg.mention is not None:
            body = msg.mention
        if body is not None:
            word, _, args = body.strip().partition(" ")
            cmd = self._commands.get(word.lower())
            if cmd is not None:
                self._run(cmd, msg, args.strip())
                return
            if from_prefix:
                if msg.private:  # in public another bot may own that command
                    msg.reply(f"I don't know {self.prefix}{word}; try {self.prefix}help")
                return
        if msg.private or msg.mention is not None:
            for fn in self._text_handlers:
                msg.reply(self._await(fn(msg)) or "")

    def _await(self, result: str | Awaitable[str | None] | None) -> str | None:
        """A handler's reply: as is, or, from an ``async def`` handler, awaited on the
        bot's loop (TimeoutError after ``handler_timeout`` s; the coroutine is cancelled)."""
        if not inspect.isawaitable(result):
            return result
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(
                target=self._loop.run_forever, name=f"bot-{self.name}-async", daemon=True
            )
            self._loop_thread.start()

        async def run() -> str | None:
            return await result

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return future.result(self.handler_timeout)
        except TimeoutError:
            future.cancel()
            raise

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._loop_thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()
            self._loop = self._loop_thread = None

    def _run(self, cmd: Command, msg: Message, args: str) -> None:
        now = self._clock()
        key = (cmd.name, username_key(msg.sender))
        if cmd.cooldown and now - self._last_used.get(key, -1e9) < cmd.cooldown:
            if now - self._warned.get(key, -1e9) >= cmd.cooldown:
                self._warned[key] = now
                wait = cmd.cooldown - (now - self._last_used[key])
                msg.reply(f"{msg.sender}: wait {wait:.1f} s before {self.prefix}{cmd.name} again")
            return
        try:
            answer = self._await(cmd.handler(msg, args))
        except BadArguments as exc:
            msg.reply(f"{msg.sender}: {exc}")  # a rejected call does not use the cooldown
            return
        except Exception:
            log.exception("command %s%s failed on %r", self.prefix, cmd.name, msg.text)
            msg.reply(f"{msg.sender}: sorry, {self.prefix}{cmd.name} failed")
            return
        self._last_used[key] = now
        if answer:
            msg.reply(answer)

    def _help(self, msg: Message, args: str) -> str:
        lines = [
            f"{self.prefix}{c.name}: {c.help}" if c.help else f"{self.prefix}{c.name}"
            for c in sorted(self._commands.values(), key=lambda c: c.name)
        ]
        return "; ".join(lines)

    def _on_users(self, event: UsersChanged) -> None:
        now = self._clock()
        me = username_key(self.name)
        with self._lock:
            before = self._online
            self._online = {username_key(u) for u in event.users}
            joined = []
            for name in event.joined:
                key = username_key(name)
                lost_at = self._lost.pop(key, None)
                if key == me or key in before:
                    continue  # ourselves, or a takeover of a session that never left
                if lost_at is not None and now - lost_at < self.rejoin_grace:
                    continue  # someone coming back after a server restart
                joined.append(name)
            left = [n for n in event.left if username_key(n) != me and username_key(n) in before]
        for names, handlers, what in (
            (joined, self._join_handlers, "joined"),
            (left, self._leave_handlers, "left"),
        ):
            for name in names:
                if handlers:
                    log.info("%s: %s %s", self.name, name, what)
                for fn in handlers:
                    try:
                        fn(name)
                    except ChatError as exc:
                        # A greeting that could not be said is not a bug in the handler:
                        # the bot is stopping (users leave as it goes), or the server is.
                        closing = self.client is None or self.client.closed
                        level = logging.DEBUG if closing else logging.WARNING
                        log.log(level, "%s: %s handler for %s: %s", self.name, what, name, exc)

    def _on_disconnect(self, event: Disconnect) -> None:
        if event.will_reconnect:
            now = self._clock()
            with self._lock:
                self._lost.update({u: now for u in self._online})
            log.warning("lost the server (%s); reconnecting", event.reason)

    def _on_reconnect(self, event: Reconnected) -> None:
        with self._lock:
            self._online = {username_key(u) for u in event.result.users}
        log.info("back online; %d users", len(event.result.users))

    # ------------------------------------------------------------------ running

    def start(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        password: str,
        **client_options: Any,
    ) -> ChatClient:
        """Connect (retrying until :meth:`stop`), log in, and return the running client.

        Raises :class:`chatroom.AuthError` if the server refuses the name or password.
        """
        client_options.setdefault("reconnect", True)
        client = ChatClient(host, port, **client_options)
        client.on_broadcast(self._on_broadcast)
        client.on_dm(self._on_dm)
        client.on_users(self._on_users)
        client.on_disconnect(self._on_disconnect)
        client.on_reconnect(self._on_reconnect)
        self.client = client
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
        with self._lock:
            self._online = {username_key(u) for u in result.users}
        self.name = result.username
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
            client.close()
            self._stop_loop()
            log.info("%s stopped", self.name)

    def stop(self) -> None:
        """End :meth:`run` (safe from any thread or a signal handler)."""
        self._stop.set()

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
            client.close()
            self._stop_loop()


def _mention(text: str, name: str) -> str | None:
    """``"@echo hi"`` addressed to ``echo`` -> ``"hi"``; else None. Case-insensitive."""
    t = text.lstrip()
    tag = "@" + name
    if not t.lower().startswith(tag.lower()):
        return None
    rest = t[len(tag) :]
    if rest and rest[0] not in " :,":
        return None  # "@echoes" is not "@echo"
    return rest.lstrip(" :,")
