"""Checks: who may run a command, and where.

::

    @bot.command()
    @dm_only()
    @allowed("admins")
    def shutdown(ctx: Context) -> str: ...

A check is a predicate ``(ctx) -> bool``; when it says no, the user gets its message
(``alice: !shutdown works by DM only``) and the command does not run (nor count against a
cooldown). Checks run in order, after the middleware and before the arguments are parsed,
on the thread (or the event loop) that runs the command. :func:`check` makes one of any
predicate; a predicate may also raise :class:`CheckFailure` with a message of its own.

Rooms (docs/PROTOCOL.md §Rooms): :func:`room_only` (in a room, or in the rooms named)
and :func:`room_operator` (the sender is an ``owner`` or ``op`` of the room the command
came from, as the bot, a member, sees the roles).

Server operators (docs/PROTOCOL.md §Moderation): :func:`server_operator` asks the server
(``whois``, §whois) when the command runs, once a command however many checks ask, and
keeps the answer no longer than the command: a ``chat-server admin revoke`` holds from
the next command on. In an :class:`~chatroom_bots.AsyncBot` the question is awaited, so
a predicate may return an awaitable there.

Allow-lists are named sets of users kept in the bot's store (so they survive restarts and
a command can edit them): ``bot.allow_list("admins").add("alice")``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from chatroom.errors import ChatError
from chatroom.protocol import username_key
from chatroom.rooms import room_key
from chatroom_bots.commands import Command, CommandError
from chatroom_bots.storage import Store

__all__ = [
    "OPERATOR_ROLES",
    "AllowList",
    "CheckFailure",
    "allowed",
    "check",
    "dm_only",
    "public_only",
    "room_only",
    "room_operator",
    "server_operator",
]

log = logging.getLogger(__name__)

# The roles that make a member one of a room's operators (docs/PROTOCOL.md §Rooms).
OPERATOR_ROLES = frozenset({"owner", "op"})

F = TypeVar("F")  # a function, or a Command (a group)
Predicate = Callable[[Any], object]


class CheckFailure(CommandError):
    """A check said no; the message is the reply."""


def _command_name(ctx: Any) -> str:
    cmd = getattr(ctx, "command", None)
    name = cmd.qualified_name if cmd is not None else "that"
    return f"{ctx.bot.prefix}{name}"


def check(predicate: Predicate, message: str | None = None) -> Callable[[F], F]:
    """A check from ``predicate(ctx)``; ``message`` (``{command}`` is replaced) is the
    reply when it is false."""

    def refuse(ctx: Any) -> CheckFailure:
        text = message or "you may not use {command} here"
        return CheckFailure(text.format(command=_command_name(ctx)))

    async def settle(ctx: Any, answer: Awaitable[object]) -> None:
        if not await answer:
            raise refuse(ctx)

    def run(ctx: Any) -> Awaitable[None] | None:
        answer = predicate(ctx)
        if inspect.isawaitable(answer):
            return settle(ctx, answer)  # an AsyncBot awaits it (core._gate refuses it)
        if not answer:
            raise refuse(ctx)
        return None

    def apply(fn: F) -> F:
        command = fn if isinstance(fn, Command) else getattr(fn, "__chat_command__", None)
        if command is not None:
            command.checks.append(run)
        else:
            # Applied below @bot.command(): decorators run bottom-up, so the command
            # picks these up when it is made; keep them in the order they are written.
            existing = list(getattr(fn, "__bot_checks__", ()))
            fn.__bot_checks__ = [run, *existing]  # type: ignore[attr-defined]
        return fn

    return apply


def dm_only() -> Callable[[F], F]:
    """The command works in a direct message only."""
    return check(lambda ctx: ctx.private, "{command} works by DM only")


def public_only() -> Callable[[F], F]:
    """The command works in public only: the lobby or a room."""
    return check(lambda ctx: not ctx.private, "{command} works in public only")


def room_only(*rooms: str) -> Callable[[F], F]:
    """The command works in a room (not the lobby, not a DM); given names, in those
    rooms only (any case)."""
    keys = frozenset(room_key(r) for r in rooms)

    def where(ctx: Any) -> bool:
        room = None if ctx.private else ctx.room
        return room is not None and (not keys or room_key(room) in keys)

    places = ", ".join(rooms) if rooms else "a room"
    return check(where, "{command} works in " + places + " only")


def room_operator() -> Callable[[F], F]:
    """Only the room's operators (its ``owner`` and ``op`` members) may run the
    command, in that room."""
    return check(
        lambda ctx: ctx.role in OPERATOR_ROLES, "{command} is for the room's operators only"
    )


# Where a context keeps the server's answer for the rest of its command (ctx.extras).
_OPERATOR_KEY = "chatroom_bots.server_operator"


def _whois_failed(ctx: Any, exc: ChatError) -> CheckFailure:
    log.warning("could not ask the server whether %s is an operator: %s", ctx.sender, exc)
    return CheckFailure(f"could not check that you are a server operator ({exc})")


def _is_server_operator(ctx: Any) -> bool | Awaitable[bool]:
    """The server's answer for the sender, asked once a command (ctx.extras)."""
    known = ctx.extras.get(_OPERATOR_KEY)
    if known is not None:
        return bool(known)
    client = ctx.bot.client
    if client is None:
        raise CheckFailure("the bot is not connected")
    try:
        answer = client.whois(ctx.sender)
    except ChatError as exc:
        raise _whois_failed(ctx, exc) from exc
    if not inspect.isawaitable(answer):
        ctx.extras[_OPERATOR_KEY] = answer.server_operator
        return bool(answer.server_operator)

    async def awaited() -> bool:
        try:
            whois = await answer
        except ChatError as exc:
            raise _whois_failed(ctx, exc) from exc
        ctx.extras[_OPERATOR_KEY] = whois.server_operator
        return bool(whois.server_operator)

    return awaited()


def server_operator() -> Callable[[F], F]:
    """Only the server's operators (``chat-server admin grant``) may run the command;
    the server is asked when it runs (see the module docstring)."""
    return check(_is_server_operator, "{command} is for server operators only")


def allowed(list_name: str) -> Callable[[F], F]:
    """Only the users on the bot's allow-list ``list_name`` may run the command."""
    return check(
        lambda ctx: ctx.sender in ctx.bot.allow_list(list_name),
        "{command} is for " + list_name + " only",
    )


class AllowList:
    """A named set of users in the bot's store: case-insensitive, persistent, and safe
    from any thread (each change is one store update)."""

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self._key = name

    def _names(self) -> list[str]:
        value: object = self._store.get(self._key, [])
        return [str(n) for n in value] if isinstance(value, list) else []

    def __contains__(self, user: object) -> bool:
        if not isinstance(user, str):
            return False
        key = username_key(user)
        return any(username_key(n) == key for n in self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def add(self, user: str) -> None:
        def change(names: Any) -> list[str]:
            new = [str(n) for n in names or []]
            if all(username_key(n) != username_key(user) for n in new):
                new.append(user)
            return new

        self._store.change(self._key, change)

    def discard(self, user: str) -> None:
        self._store.change(
            self._key,
            lambda names: [n for n in names or [] if username_key(n) != username_key(user)],
        )
