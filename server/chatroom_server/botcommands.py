"""What bots announced (docs/PROTOCOL.md §Bot commands): each bot's commands, held for
the session that announced them and dropped when it ends.

Per node: in a cluster, a client sees the bots connected to its own node (the
announcements are small and short-lived; carrying them over the bus is not worth it yet).

Bounds: an announcement's size is checked before it gets here
(:func:`chatroom.botcommands.validate_bot_commands`); one per user (a later one, from any
session of theirs, replaces it); at most ``max_bots`` at once, after which a new bot's
announcement is refused with ``unavailable``. So a hostile client holds at most
:data:`~chatroom.botcommands.MAX_BOT_COMMANDS_BYTES` here, and all of them together
``max_bots`` times that.

Threads: the connections' reader threads announce and ask, the reaper forgets;
``_lock`` guards ``_bots`` and is held for dict operations only.
"""

from __future__ import annotations

import threading

from chatroom.botcommands import MAX_BOTS, BotCommand, BotCommands, BotCommandsCommand, BotEntry
from chatroom.errors import ErrorCode
from chatroom.protocol import Ack, ErrorEvent, encode, username_key

__all__ = ["BotDirectory", "bot_commands_reply"]


class BotDirectory:
    """The announcements, by user (see the module docstring)."""

    def __init__(self, max_bots: int = MAX_BOTS) -> None:
        self.max_bots = max_bots
        self._lock = threading.Lock()  # guards _bots
        # username key -> (the session that announced, what it announced)
        self._bots: dict[str, tuple[object, BotEntry]] = {}

    def announce(
        self, session: object, user: str, prefix: str, commands: tuple[BotCommand, ...]
    ) -> bool:
        """Set ``user``'s announcement, made by ``session`` (no commands: withdraw it).
        False if the server holds ``max_bots`` others already."""
        key = username_key(user)
        with self._lock:
            if not commands:
                self._bots.pop(key, None)
                return True
            if key not in self._bots and len(self._bots) >= self.max_bots:
                return False
            self._bots[key] = (session, BotEntry(user=user, prefix=prefix, commands=commands))
            return True

    def forget(self, session: object) -> None:
        """``session`` ended: drop what it announced (not a newer session's)."""
        user = getattr(session, "username", None)
        if user is None:
            return
        key = username_key(user)
        with self._lock:
            held = self._bots.get(key)
            if held is not None and held[0] is session:
                del self._bots[key]

    def lookup(self, user: str | None = None) -> tuple[BotEntry, ...]:
        """Every announcement, sorted by user ignoring case, or ``user``'s (if any)."""
        with self._lock:
            if user is not None:
                held = self._bots.get(username_key(user))
                return () if held is None else (held[1],)
            entries = [entry for _, entry in self._bots.values()]
        return tuple(sorted(entries, key=lambda e: e.user.lower()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._bots)


def bot_commands_reply(bots: BotDirectory, session: object, cmd: BotCommandsCommand) -> bytes:
    """The server's handler (``_bot_commands``): run ``cmd`` for the logged-in
    ``session`` and return its reply frame."""
    if cmd.commands is None:
        return encode(BotCommands(bots=bots.lookup(cmd.user), id=cmd.id))
    user = getattr(session, "username", None)
    assert user is not None  # the command table checks the login
    if not bots.announce(session, user, cmd.prefix, cmd.commands):
        why = f"this server holds the commands of {bots.max_bots} bots already"
        return encode(ErrorEvent(code=ErrorCode.UNAVAILABLE, message=why, id=cmd.id))
    return encode(Ack(command="bot_commands", id=cmd.id))
