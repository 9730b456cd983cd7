"""What the threaded :class:`~chatroom_bots.Bot` and the :class:`~chatroom_bots.AsyncBot`
share: routing a message to a command, help, admission, storage, and what an error
turns into (the loop guard and who really joined: :mod:`chatroom_bots.guard`); what a
bot has (its registrations, plugins and schedules) is :mod:`chatroom_bots.pluginhost`'s.

Threads (the threaded bot; the asyncio bot does all of this on its loop):

- ``_plugins`` and ``_index`` (command name -> command) are replaced whole, never
  changed in place (copy-on-write): the client's dispatch thread reads them with no lock
  while a reload swaps them. ``_registry_lock`` serialises the writers and guards what
  was loaded from where (``_sources``, ``_modules``, ``failed_plugins``). A reload
  imports the new code on the caller's thread (the watcher's, for ``--reload``), outside
  the handlers' turn, so a module that hangs at import holds up no handler; only the
  swap runs on the turn.
- :class:`~chatroom_bots.guard.Presence` and :class:`~chatroom_bots.guard.LoopGuard`
  each have a lock of their own.
- The store has its own lock (:mod:`chatroom_bots.storage`); ``_store_lock`` guards
  opening it.
- Cooldowns belong to the code that runs commands (one at a time).
- No user code (handlers, hooks, converters) runs under any of these locks.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from chatroom import (
    Broadcast,
    DirectMessage,
    Disconnect,
    MessageTooLong,
    Receipt,
    Reconnected,
    RoomInfo,
    UsersChanged,
)
from chatroom.botcommands import BotCommand
from chatroom.protocol import username_key
from chatroom.rooms import LOBBY, room_key
from chatroom_bots.checks import AllowList
from chatroom_bots.clock import Clock, as_clock
from chatroom_bots.commands import (
    MAX_NAME_ECHO,
    ArgumentError,
    Command,
    CommandError,
    CommandSpec,
    Group,
    words,
)
from chatroom_bots.context import Message, room_of
from chatroom_bots.conversations import Conversations
from chatroom_bots.converters import BadArgument
from chatroom_bots.guard import LoopGuard, Presence, mention_of, split_reply
from chatroom_bots.pluginhost import PluginHost
from chatroom_bots.plugins import Plugin
from chatroom_bots.storage import Store
from chatroom_bots.turns import Stopping, TooBusy

__all__ = ["TO_TEXT", "BotBase", "Invocation", "OnCooldown", "ToText", "Unknown"]

log = logging.getLogger("chatroom_bots.bot")

F = TypeVar("F", bound=Callable[..., Any])


class OnCooldown(CommandError):
    """The command ran too recently; ``warn`` is False when the user was told already."""

    def __init__(self, message: str, retry_after: float, warn: bool) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.warn = warn


@dataclass(frozen=True)
class Unknown:
    """A DM naming a command the bot does not have: ``reply`` says so."""

    reply: str


class ToText:
    """A message for the text handlers (a DM, or a public message that mentions us)."""


TO_TEXT = ToText()


@dataclass(frozen=True)
class Invocation:
    """A message that names a command: which, as typed, and the text after its name."""

    command: Command
    plugin: Plugin | None
    invoked_with: str
    args: str


class BotBase(PluginHost):
    """Registration, plugins and routing; see the module docstring. Subclasses add the
    connection and the running of handlers (:class:`~chatroom_bots.Bot`,
    :class:`~chatroom_bots.AsyncBot`)."""

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
    ) -> None:
        self.name = name
        self.prefix = prefix
        self.dm_commands = dm_commands  # False: DMs go to on_text handlers verbatim
        self.max_reply = max_reply
        self.clock = as_clock(clock)
        # Messages of one user queued or being handled at once, at most: a user who sends
        # faster than the bot answers loses the excess, not everyone else their turn.
        self.max_pending = max_pending
        self._pending_lock = threading.Lock()  # guards _pending and _dropping
        self._pending: dict[str, int] = {}
        self._dropping: set[str] = set()  # users told about in the log already
        self.presence = Presence(rejoin_grace)
        self.guard = LoopGuard(replies_per_minute)
        self.conversations = Conversations(max_conversations)
        self._store_spec = store
        self._store: Store | None = store if isinstance(store, Store) else None
        self._store_lock = threading.Lock()
        super().__init__({"help": Command(self._help, "help", help="list the commands", raw=True)})
        # The test harness's: called with the receipt of every message the bot sends and
        # the room it went to (None: a DM, or lobby).
        self._sent_observers: list[Callable[[Receipt, str | None], None]] = []

    # ------------------------------------------------------------------ compat

    @property
    def rejoin_grace(self) -> float:
        return self.presence.rejoin_grace

    @property
    def replies_per_minute(self) -> int:
        return self.guard.replies_per_minute

    @property
    def _clock(self) -> Callable[[], float]:
        return self.clock.monotonic

    # ------------------------------------------------------------------ storage

    @property
    def store(self) -> Store:
        """The bot's persistent key-value store (:mod:`~chatroom_bots.storage`), in
        ``store=`` (default ``<name>.store.sqlite`` here), opened at first use."""
        with self._store_lock:
            if self._store is None:
                spec = self._store_spec
                if isinstance(spec, Store):
                    self._store = spec
                else:
                    self._store = Store(
                        spec if spec is not None else Path(f"{self.name}.store.sqlite")
                    )
            return self._store

    def use_store(self, store: Store | str | Path) -> None:
        """Keep state in ``store`` from now on (before the bot uses its store)."""
        with self._store_lock:
            self._store_spec = store
            self._store = store if isinstance(store, Store) else None

    def allow_list(self, name: str) -> AllowList:
        """The allow-list ``name``, kept in the store (:func:`~chatroom_bots.checks.allowed`)."""
        return AllowList(self.store.namespace("chatroom_bots.allow"), name)

    def use_clock(self, clock: Clock) -> None:
        """Read time from ``clock`` (a test's :class:`~chatroom_bots.clock.FakeClock`);
        before the bot starts."""
        self.clock = clock

    # ------------------------------------------------------------------ routing

    def _handlers(self, kind: str) -> list[tuple[Plugin, Callable[..., Any]]]:
        return [(p, fn) for p in self._plugins for fn in getattr(p, kind)]

    def middleware(self) -> list[Callable[..., Any]]:
        return [mw for p in self._plugins for mw in p.middleware]

    def find(self, name: str) -> tuple[Command, Plugin | None] | None:
        return self._index.get(name.lower())

    def route(
        self, text: str, private: bool, mention: str | None
    ) -> Invocation | Unknown | ToText | None:
        """What a message asks for: an :class:`Invocation`, :data:`TO_TEXT` (for the text
        handlers), :class:`Unknown` (a command we do not have), or None (nothing)."""
        text = text.strip()
        body: str | None = None
        from_prefix = False
        if text.startswith(self.prefix) and (self.dm_commands or not private):
            body, from_prefix = text[len(self.prefix) :], True
        elif mention is not None:
            body = mention
        if body is not None:
            body = body.strip()
            end = 0
            while end < len(body) and not body[end].isspace():
                end += 1
            word, args = body[:end], body[end:]
            found = self.find(word)
            if found is not None:
                cmd, plugin = found
                if isinstance(cmd, Group):
                    cmd, args = cmd.resolve(args)
                return Invocation(cmd, plugin, word.lower(), args)
            if from_prefix:
                if not private:
                    return None  # in public another bot may own that command
                return Unknown(self._unknown(word))
        if private or mention is not None:
            return TO_TEXT
        return None

    def _unknown(self, word: str) -> str:
        shown = word if len(word) <= MAX_NAME_ECHO else word[: MAX_NAME_ECHO - 1] + "…"
        text = f"I don't know {self.prefix}{shown}; try {self.prefix}help"
        close = difflib.get_close_matches(word.lower(), list(self._index), n=1, cutoff=0.75)
        if close:
            text += f" (did you mean {self.prefix}{close[0]}?)"
        return text

    def _help(self, msg: Message, args: str) -> str:
        """``!help`` lists the commands; ``!help CMD`` shows one."""
        if args.strip():
            try:
                names = list(words(args))
            except BadArgument:
                names = args.split()
            found = self.find(names[0].removeprefix(self.prefix))
            if found is None:
                return self._unknown(names[0].removeprefix(self.prefix))
            cmd = found[0]
            if isinstance(cmd, Group) and len(names) > 1:
                cmd, _ = cmd.resolve(" ".join(names[1:]))
            return cmd.help_text(self.prefix)
        lines = [
            f"{self.prefix}{c.name}: {c.help}" if c.help else f"{self.prefix}{c.name}"
            for c in self.commands()
        ]
        return "; ".join(lines)

    def commands(self) -> list[Command]:
        """Every command (not the hidden ones), sorted by name, aliases once."""
        seen = {id(c): c for c, _ in self._index.values() if not c.hidden}
        return sorted(seen.values(), key=lambda c: c.name)

    def describe(self) -> list[CommandSpec]:
        """The commands as msgspec structs (``msgspec.json.encode(bot.describe())``): what
        the bot announces to the server so that a REPL completes its commands."""
        return [c.describe(self.prefix) for c in self.commands()]

    def announcement(self) -> tuple[BotCommand, ...]:
        """:meth:`describe` as the protocol's frames (docs/PROTOCOL.md §Bot commands)."""
        return msgspec.convert(msgspec.to_builtins(self.describe()), tuple[BotCommand, ...])

    def _announce_soon(self) -> None:
        """The commands changed (a plugin came or went): announce them again, if the bot
        is online (the subclasses)."""

    # ------------------------------------------------------------------ events

    # What each bot makes contexts of (Context, AsyncContext), and how it notes that a
    # message was handled (the test harness waits on that): the subclass's.
    _context_type: Callable[..., Any]

    def _mark_seen(self, seq: int | None) -> None:
        raise NotImplementedError

    def _incoming(self, event: Broadcast | DirectMessage) -> Any | None:
        """The context for a message from the client's hook, or None for one to let be
        (marked seen): our own, a public one replayed, or our own words coming back."""
        if username_key(event.sender) == username_key(self.name):
            return None
        new = self._context_type
        if isinstance(event, Broadcast):
            if event.replayed:
                # Said in public while we were away: the room has moved on, and an answer
                # now would be out of place. DMs are different: they were meant for us.
                log.debug("not answering %s's public message from while we were away", event.sender)
                self._mark_seen(event.seq)
                return None
            mention = mention_of(event.message, self.name)
            return new(self, event.sender, event.message, False, mention, room_of(event), event.seq)
        if self.guard.is_own_words(event.sender, event.message, self.clock.monotonic()):
            log.info("ignoring %s: it repeats what we said to them", event.sender)
            self._mark_seen(event.seq)
            return None
        return new(self, event.sender, event.message, True, None, None, event.seq, event.replayed)

    def _dispatch(self, msg: Any) -> Any | Unknown | None:
        """What to do with ``msg``: None (nothing: the answer to a question a handler
        waits for, a message not for us, or one over its sender's limit), a context with
        its command (run it), :class:`Unknown` (say so), or ``msg`` itself (the text
        handlers). Admitted work must end with :meth:`_finished`."""
        if self.conversations.offer(msg.conversation_key, msg.text):
            return None
        route = self.route(msg.text, msg.private, msg.mention)
        if route is None or not self._admit(msg.sender):
            return None
        if isinstance(route, Invocation):
            return dataclasses.replace(
                msg,
                command=route.command,
                invoked_with=route.invoked_with,
                args=route.args,
                plugin=route.plugin,
                extras={},
            )
        return route if isinstance(route, Unknown) else msg

    def _arrivals(self, event: UsersChanged) -> list[tuple[str, list[Callable[..., Any]], str]]:
        """(user, handlers, "joined" or "left") for each real arrival and departure
        (:class:`~chatroom_bots.guard.Presence`) that has handlers."""
        joined, left = self.presence.changed(
            self.name, event.users, event.joined, event.left, self.clock.monotonic()
        )
        jobs = []
        for names, kind, what in (
            (joined, "join_handlers", "joined"),
            (left, "leave_handlers", "left"),
        ):
            handlers = [fn for _, fn in self._handlers(kind)]
            if handlers:
                jobs += [(name, handlers, what) for name in names]
        return jobs

    def _lost_server(self, event: Disconnect) -> None:
        if event.will_reconnect:
            self.presence.lost(self.clock.monotonic())
            log.warning("lost the server (%s); reconnecting", event.reason)

    def _back_online(self, event: Reconnected) -> None:
        self.presence.reset(event.result.users)
        log.info("back online; %d users", len(event.result.users))

    def _reply_parts(self, msg: Any, text: str) -> list[str]:
        """``text`` in pieces of at most ``max_reply`` to answer ``msg`` with; none if the
        loop guard says the sender has had enough replies this minute."""
        if not text or getattr(self, "client", None) is None:
            return []
        if not self.guard.allow_reply(msg.sender, self.clock.monotonic()):
            log.warning(
                "not answering %s: %d replies in the last minute",
                msg.sender,
                self.guard.replies_per_minute,
            )
            return []
        return split_reply(text, self.max_reply)

    def _resplit(self, parts: list[str], i: int, exc: MessageTooLong) -> list[str]:
        """The server refused ``parts[i]`` as too long: the rest split to its limit (or
        ``exc`` raised again if it tells nothing new)."""
        if not self._learn_limit(exc):
            raise exc
        return parts[:i] + split_reply(" ".join(parts[i:]), self.max_reply)

    def _sent(self, receipt: Receipt, room: str | None) -> None:
        lobby = room is None or room_key(room) == LOBBY
        for fn in self._sent_observers:
            fn(receipt, None if lobby else room)

    # ------------------------------------------------------------------ running commands

    def _admit(self, sender: str) -> bool:
        """Count a message of ``sender`` in (False: they have ``max_pending`` already)."""
        key = username_key(sender)
        with self._pending_lock:
            n = self._pending.get(key, 0)
            if n >= self.max_pending:
                first = key not in self._dropping
                self._dropping.add(key)
            else:
                self._pending[key] = n + 1
                self._dropping.discard(key)
                return True
        if first:
            log.warning(
                "%s: %s has %d messages waiting; dropping more until they are answered",
                self.name,
                sender,
                n,
            )
        return False

    def _finished(self, sender: str) -> None:
        key = username_key(sender)
        with self._pending_lock:
            n = self._pending.get(key, 0) - 1
            if n > 0:
                self._pending[key] = n
            else:
                self._pending.pop(key, None)

    def _checks(self, cmd: Command) -> list[Callable[[Any], object]]:
        """The checks that guard ``cmd``, in the order they run."""
        checks: list[Callable[[Any], object]] = []
        node: Command | None = cmd
        while node is not None:  # a group's checks guard its subcommands too
            checks.extend(node.checks)
            node = node.parent
        return checks

    def _verdict(self, ctx: Any, result: object) -> None:
        if result is False:
            raise CommandError(f"you may not use {self.prefix}{ctx.command.qualified_name}")

    def _gate(self, ctx: Any) -> None:
        """Checks, then the cooldown (the threaded bot's: no check may need awaiting)."""
        for check in self._checks(ctx.command):
            result = check(ctx)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError(f"{check!r} must be awaited: it is for an AsyncBot")
            self._verdict(ctx, result)
        self._cooldown_gate(ctx)

    def _cooldown_gate(self, ctx: Any) -> None:
        """The cooldown (not consumed: only a success uses it)."""
        cmd: Command = ctx.command
        if cmd.cooldowns is not None:
            now = self.clock.monotonic()
            key = cmd.cooldowns.key(ctx.sender, ctx.place)
            wait = cmd.cooldowns.retry_after(key, now)
            if wait > 0:
                warn = cmd.cooldowns.should_warn(key, now)
                raise OnCooldown(
                    f"wait {wait:.1f} s before {self.prefix}{cmd.qualified_name} again", wait, warn
                )

    def _used(self, ctx: Any) -> None:
        cmd: Command = ctx.command
        if cmd.cooldowns is not None:
            now = self.clock.monotonic()
            cmd.cooldowns.consume(cmd.cooldowns.key(ctx.sender, ctx.place), now)

    def _error_reply(self, ctx: Any, exc: BaseException) -> str | None:
        """What a command's failure tells the user (None: nothing)."""
        name = f"{self.prefix}{ctx.command.qualified_name}"
        if isinstance(exc, OnCooldown):
            return f"{ctx.sender}: {exc}" if exc.warn else None
        if isinstance(exc, ArgumentError):
            return f"{ctx.sender}: {exc.problem}; usage: {exc.command.usage(self.prefix)}"
        if isinstance(exc, CommandError):
            return f"{ctx.sender}: {exc}"
        if isinstance(exc, TooBusy):
            return f"{ctx.sender}: too many conversations at once; try {name} again soon"
        if isinstance(exc, Stopping):
            return None
        log.error("command %s failed on %r", name, ctx.text, exc_info=exc)
        return f"{ctx.sender}: sorry, {name} failed"

    def _learn_limit(self, exc: MessageTooLong) -> bool:
        """A reply over the server's limit (docs/PROTOCOL.md §Limits; the client refused
        it unsent): use the limit from now on. False if that does not help."""
        if exc.limit is None or exc.limit >= self.max_reply or exc.limit < 1:
            return False
        log.info(
            "%s: the server takes %d characters a message; replies are cut to that",
            self.name,
            exc.limit,
        )
        self.max_reply = exc.limit
        return True

    def _no_answer(self, ctx: Any, timeout: float) -> str:
        name = f"{self.prefix}{ctx.command.qualified_name}" if ctx.command else "the question"
        return f"no answer within {timeout:g} s; {name} gave up"

    @property
    def users(self) -> tuple[str, ...]:
        raise NotImplementedError

    # ------------------------------------------------------------------ rooms

    @property
    def rooms(self) -> tuple[RoomInfo, ...]:
        """The rooms the bot is in (``lobby`` not included; empty on a server without
        rooms): the client's, kept by the server's room events."""
        client = getattr(self, "client", None)
        return client.rooms if client is not None else ()

    def room(self, name: str) -> RoomInfo | None:
        """The room ``name`` (any case), if the bot is in it."""
        key = room_key(name)
        return next((r for r in self.rooms if room_key(r.name) == key), None)

    def role(self, user: str, room: str | None) -> str | None:
        """``user``'s role in ``room`` (``owner``, ``op``, ``voice``, ``member``), as the
        bot sees it from inside; None if either is not in it, or for ``lobby``."""
        if room is None or room_key(room) == LOBBY:
            return None
        info = self.room(room)
        if info is None:
            return None
        key = username_key(user)
        for name, role in info.roles.items():
            if username_key(name) == key:
                return role
        if any(username_key(m) == key for m in info.members):
            return "member"
        return None
