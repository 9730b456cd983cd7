"""The commands bots announced (docs/PROTOCOL.md §bot_commands), for the REPL: Tab
completes ``!roll`` and its arguments, and the toolbar shows the usage and help of the
bot command being typed. Plain functions over :class:`~chatroom.botcommands.BotEntry`,
and :class:`BotCommandsCache`, what the REPL last heard from the server.

Arguments complete from what a parameter announces: its ``choices``; online users for a
``user``; our rooms for a ``room``. Others (numbers, free text) have nothing to offer
but the hint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from chatroom import ChatClient, ChatError
from chatroom.botcommands import BotCommand, BotEntry, BotParam

__all__ = ["BotCommandsCache", "complete_bot", "hint"]

log = logging.getLogger(__name__)

# Seconds after which the REPL asks again even if no one came or went (a bot that
# reloaded a plugin announces again without leaving).
REFRESH = 30.0

Candidate = tuple[str, str]  # (the text, what to show beside it)


def _find(commands: Iterable[BotCommand], word: str) -> BotCommand | None:
    low = word.lower()
    for cmd in commands:
        if cmd.name.lower() == low or low in (a.lower() for a in cmd.aliases):
            return cmd
    return None


def _resolve(
    words: Sequence[str], bots: Sequence[BotEntry]
) -> tuple[BotEntry, BotCommand, int] | None:
    """The bot command the line starts with, a subcommand resolved, and how many words
    it took (1, or 2 with a subcommand)."""
    head = words[0]
    for entry in bots:
        if head.startswith(entry.prefix) and len(head) > len(entry.prefix):
            cmd = _find(entry.commands, head[len(entry.prefix) :])
            if cmd is None:
                continue
            if cmd.subcommands and len(words) > 2:
                sub = _find(cmd.subcommands, words[1])
                if sub is not None:
                    return entry, sub, 2
            return entry, cmd, 1
    return None


def _param(cmd: BotCommand, index: int) -> BotParam | None:
    if index < len(cmd.params):
        return cmd.params[index]
    last = cmd.params[-1] if cmd.params else None
    return last if last is not None and (last.greedy or last.many) else None


def _meta(entry: BotEntry, cmd: BotCommand) -> str:
    return f"{entry.user}: {cmd.help or cmd.usage}"


def complete_bot(
    text: str,
    bots: Sequence[BotEntry],
    users: Callable[[str], list[str]],
    rooms: Iterable[str] = (),
) -> tuple[int, list[Candidate]] | None:
    """Completions of a bot command and its arguments for the text before the cursor:
    ``(length of the word being completed, candidates)``; None if the line is not a bot
    command (the REPL's own completion applies). ``users(prefix)``: online users ranked."""
    words = text.split(" ")
    if not words[0] or not bots:
        return None
    if len(words) == 1:
        word = words[0]
        found: dict[str, str] = {}
        for entry in bots:
            if not word.startswith(entry.prefix):
                continue
            typed = word[len(entry.prefix) :].lower()
            for cmd in entry.commands:
                if cmd.name.lower().startswith(typed):
                    found.setdefault(entry.prefix + cmd.name, _meta(entry, cmd))
        if not found:
            return None
        return len(word), sorted(found.items())
    resolved = _resolve(words, bots)
    if resolved is None:
        return None
    entry, cmd, used = resolved
    current = words[-1]
    if cmd.subcommands and used == 1 and len(words) == 2:
        subs = [
            (c.name, _meta(entry, c))
            for c in cmd.subcommands
            if c.name.lower().startswith(current.lower())
        ]
        return len(current), subs
    param = _param(cmd, len(words) - 1 - used)
    if param is None:
        return len(current), []
    meta = f"{param.name} ({param.type})"
    if param.choices:
        low = current.lower()
        return len(current), [(c, meta) for c in param.choices if c.lower().startswith(low)]
    if param.type == "user":
        return len(current), [(u, meta) for u in users(current.removeprefix("@"))]
    if param.type == "room":
        low = current.lstrip("#").lower()
        return len(current), [(r, meta) for r in rooms if r.lower().startswith(low)]
    return len(current), []


def hint(text: str, bots: Sequence[BotEntry]) -> str | None:
    """The usage and help of the bot command the line starts with, and which argument
    comes next, for the toolbar; None if it is not one."""
    words = text.lstrip().split(" ")
    if not words[0] or not bots:
        return None
    resolved = _resolve(words, bots)
    if resolved is None:
        return None
    entry, cmd, used = resolved
    shown = f"{cmd.usage}" + (f": {cmd.help}" if cmd.help else "") + f" ({entry.user})"
    if len(words) > used:
        param = _param(cmd, len(words) - 1 - used)
        if param is not None:
            shown += f" | next: {param.name} ({param.type})"
    return shown


class BotCommandsCache:
    """What bots the server says announced what, asked again when someone came or went
    (:meth:`stale`) or every :data:`REFRESH` seconds. The REPL's thread calls
    :meth:`refresh` before each prompt; the asking happens on a short-lived thread of its
    own (one at a time, bounded by the client's timeout), so a prompt never waits for the
    server. ``_lock`` guards everything below it (the completer and the toolbar read
    ``_bots`` from prompt_toolkit's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._bots: tuple[BotEntry, ...] = ()
        self._stale = True
        self._at = 0.0
        self._asking = False
        self._off = False  # the server does not know bot_commands: ask no more

    def stale(self) -> None:
        with self._lock:
            self._stale = True

    def get(self) -> tuple[BotEntry, ...]:
        with self._lock:
            return self._bots

    def wait_for(
        self, ready: Callable[[tuple[BotEntry, ...]], bool], timeout: float
    ) -> tuple[BotEntry, ...]:
        """The bots once ``ready(bots)`` (tests; TimeoutError after ``timeout`` s)."""
        with self._lock:
            if not self._lock.wait_for(lambda: ready(self._bots), timeout):
                raise TimeoutError(f"the bots' commands are still {self._bots}")
            return self._bots

    def refresh(self, client: ChatClient) -> threading.Thread | None:
        """Ask the server, if it is time and no question is out; the thread asking."""
        now = time.monotonic()
        with self._lock:
            if self._off or self._asking or (not self._stale and now - self._at < REFRESH):
                return None
            self._asking, self._stale, self._at = True, False, now
        thread = threading.Thread(
            target=self._ask, args=(client,), name="repl-bot-commands", daemon=True
        )
        thread.start()
        return thread

    def _ask(self, client: ChatClient) -> None:
        bots: tuple[BotEntry, ...] | None = None
        off = False
        try:
            bots = client.bot_commands()
        except ChatError as exc:  # a failure keeps what we had
            off = getattr(exc, "code", None) == "unknown_command"  # an older server
            log.debug("cannot fetch the bots' commands: %s", exc)
        finally:
            with self._lock:
                self._asking = False
                self._off = self._off or off
                if bots is not None:
                    self._bots = bots
                self._lock.notify_all()
