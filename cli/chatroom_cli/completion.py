"""Tab completion of commands, online usernames, room names, and the commands bots
announced with their arguments (:mod:`chatroom_cli.bots`).

:func:`complete` is a plain function (tested on its own); :class:`ChatCompleter` adapts it
to prompt_toolkit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from chatroom.botcommands import BotEntry
from chatroom.protocol import username_key
from chatroom_cli.bots import complete_bot
from chatroom_cli.commands import COMMANDS, ROOM_COMMANDS

__all__ = ["ChatCompleter", "complete", "rank_users"]

_RECIPIENT_COMMANDS = {"dm", "/dm", "/msg", "/history", "/invite"}


def rank_users(
    prefix: str, users: Iterable[str], me: str | None, recent: Sequence[str] = ()
) -> list[str]:
    """Online users whose name starts with ``prefix`` ignoring case, ourselves left out,
    most recent correspondents first (most recent first), then the rest alphabetically."""
    p = username_key(prefix)
    mine = username_key(me) if me else None
    online = {k: u for u in users if (k := username_key(u)).startswith(p) and k != mine}
    first = [online.pop(k) for r in recent if (k := username_key(r)) in online]
    return first + sorted(online.values(), key=str.lower)


def complete(
    text: str,
    users: Iterable[str],
    me: str | None,
    recent: Sequence[str] = (),
    recipient_only: bool = False,
    rooms: Iterable[str] = (),
) -> tuple[int, list[str]]:
    """Completions for the text before the cursor: ``(length of the word being completed,
    candidates)``. ``recipient_only`` is the ``to:`` prompt, where the whole line is a name.
    ``rooms``: the user's rooms, completed after a room command and after ``#``.
    """
    if recipient_only:
        if " " in text.strip():
            return 0, []
        word = text.lstrip()
        return len(word), rank_users(word, users, me, recent)
    words = text.split(" ")
    if len(words) == 1 and words[0].startswith("#"):
        return len(words[0]), ["#" + r for r in _rank_rooms(words[0][1:], rooms)]
    if len(words) == 2 and words[0].lower() in ROOM_COMMANDS:
        return len(words[1]), _rank_rooms(words[1].lstrip("#"), rooms)
    if len(words) == 1:
        word = words[0]
        low = word.lower()
        cands = [c for c in COMMANDS if c.lower().startswith(low)]
        if word[:1].isupper():  # "P" -> "PM"; "p" -> "pm"
            cands = [c.upper() if not c.startswith("/") else c for c in cands]
        elif word and not word.startswith("/"):
            cands = [c.lower() for c in cands if not c.startswith("/")]
        return len(word), cands
    if len(words) == 2 and words[0].lower() in _RECIPIENT_COMMANDS:
        return len(words[1]), rank_users(words[1], users, me, recent)
    return 0, []


def _rank_rooms(prefix: str, rooms: Iterable[str]) -> list[str]:
    p = prefix.lower()
    return sorted((r for r in rooms if r.lower().startswith(p)), key=str.lower)


class ChatCompleter(Completer):
    """prompt_toolkit completer over a live source of users."""

    def __init__(
        self,
        users: Callable[[], Iterable[str]],
        me: Callable[[], str | None],
        recent: Callable[[], Sequence[str]],
        recipient_only: bool = False,
        rooms: Callable[[], Iterable[str]] = tuple,
        bots: Callable[[], Sequence[BotEntry]] = tuple,
    ) -> None:
        self._rooms = rooms
        self._bots = bots
        self._users = users
        self._me = me
        self._recent = recent
        self._recipient_only = recipient_only

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        text = document.text_before_cursor
        if not self._recipient_only:
            found = complete_bot(text, self._bots(), self._rank, self._rooms())
            if found is not None:  # a bot's command: its names, its arguments' values
                size, pairs = found
                for c, meta in pairs:
                    yield Completion(c + " ", start_position=-size, display=c, display_meta=meta)
                return
        size, cands = complete(
            text, self._users(), self._me(), self._recent(), self._recipient_only, self._rooms()
        )
        # A name after a command ("DM bo" -> "DM bob ") takes the space that follows it, so
        # the message is typed next; at the to: prompt the name is the whole line.
        after = " " if not self._recipient_only and " " in text.lstrip() else ""
        for c in cands:
            yield Completion(c + after, start_position=-size, display=c)

    def _rank(self, prefix: str) -> list[str]:
        return rank_users(prefix, self._users(), self._me(), self._recent())
