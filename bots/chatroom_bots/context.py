"""What a handler is given: the message, who sent it, where, and how to answer.

``ctx.sender`` is who, ``ctx.private`` and ``ctx.room`` say where (a DM; or public: the
lobby, ``room=None``, or the room named, docs/PROTOCOL.md §Rooms), and every way of
answering goes back there:

- ``ctx.reply(text)``: by DM to a DM, in the room to a message in a room; a command's
  return value is sent the same way. ``ctx.role`` is the sender's role in the room.
- ``ctx.dm(text)``: by DM to the sender, wherever the command came from.
- ``ctx.ask(question, timeout=60)``: ask and wait for the answer
  (:mod:`chatroom_bots.conversations`).
- ``ctx.store``: the plugin's storage namespace (the bot's for its own commands).

:class:`Context` is the threaded bot's (its methods block); :class:`AsyncContext` the
asyncio bot's (``await ctx.reply(...)``). :class:`Message` is the 0.1 name for what a
handler received and is what ``on_text`` handlers still get; a :class:`Context` is a
:class:`Message`. All are frozen: ``ctx.extras`` is a dict for middleware to pass things
along.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from chatroom import Broadcast
from chatroom.protocol import username_key
from chatroom.rooms import LOBBY, room_key
from chatroom_bots.commands import Command
from chatroom_bots.plugins import Plugin
from chatroom_bots.storage import Store

__all__ = ["AsyncContext", "Context", "Message", "place_key", "room_of"]


def place_key(private: bool, sender: str, room: str | None) -> tuple[str, str]:
    """Where a message came from, as a key: a DM with a user, or a room (the lobby)."""
    if private:
        return ("dm", username_key(sender))
    return ("room", room_key(room) if room else LOBBY)


def room_of(event: Broadcast) -> str | None:
    """The room of a public message, as a context holds it: None for the lobby."""
    room = event.room
    return None if room is None or room_key(room) == LOBBY else room


@dataclass(frozen=True)
class _Fields:
    bot: Any = field(repr=False)
    sender: str
    text: str
    private: bool  # True for a DM, False for a public message
    mention: str | None = None  # public "@bot rest": the rest; else None
    room: str | None = None  # None: the lobby (or a DM); else the room, as the server spells it
    seq: int | None = None
    replayed: bool = False
    # Set for a command (keyword-only, so the 0.1 positional fields keep their places):
    command: Command | None = field(default=None, kw_only=True)
    invoked_with: str = field(default="", kw_only=True)  # the name or alias typed
    args: str = field(default="", kw_only=True)  # the text after the command's name
    plugin: Plugin | None = field(default=None, kw_only=True, repr=False)
    extras: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False, compare=False)

    @property
    def place(self) -> tuple[str, str]:
        return place_key(self.private, self.sender, self.room)

    @property
    def conversation_key(self) -> Hashable:
        """Where an answer to a question asked here comes from: this user, this place."""
        return (self.place, username_key(self.sender))

    @property
    def role(self) -> str | None:
        """The sender's role in the room (``owner``, ``op``, ``voice``, ``member``); None
        in a DM or the lobby."""
        if self.private:
            return None
        role: str | None = self.bot.role(self.sender, self.room)
        return role

    @property
    def store(self) -> Store:
        """The plugin's storage namespace, or the bot's for its own commands."""
        store: Store = self.bot.store
        if self.plugin is not None and self.plugin.name:
            return store.namespace(self.plugin.name)
        return store


@dataclass(frozen=True)
class Message(_Fields):
    """A message the bot received, with a :meth:`reply` that goes back the way it came."""

    # The 0.1 convention (chatroom_bots.commands): a handler whose first parameter is
    # annotated with this class itself takes the raw argument string.
    __raw_args__: ClassVar[bool] = True

    def reply(self, text: str) -> None:
        """Answer by DM to a DM, in the room (or the lobby) to a public message."""
        self.bot._reply(self, text)


@dataclass(frozen=True)
class Context(Message):
    """The threaded bot's context (see the module docstring)."""

    def dm(self, text: str) -> None:
        """A direct message to the sender, wherever the command came from."""
        self.bot.tell(self.sender, text)

    def ask(self, question: str, timeout: float = 60.0) -> str:
        """Ask the sender, here, and wait for the answer (:class:`NoAnswer` after
        ``timeout`` seconds of the bot's clock). Other handlers run meanwhile."""
        answer: str = self.bot._ask(self, question, timeout)
        return answer


@dataclass(frozen=True)
class AsyncContext(_Fields):
    """The asyncio bot's context: the same fields, and coroutines to answer."""

    async def reply(self, text: str) -> None:
        await self.bot._reply(self, text)

    async def dm(self, text: str) -> None:
        await self.bot.tell(self.sender, text)

    async def ask(self, question: str, timeout: float = 60.0) -> str:
        answer: str = await self.bot._ask(self, question, timeout)
        return answer
