"""The frames of docs/PROTOCOL.md §Bot commands: a bot announces its commands and their
arguments for the rest of its session, and any client asks which bots are online with
which commands (the REPL completes ``!roll`` and its arguments from them).

One command, ``bot_commands``, in two forms, as ``topic`` reads or sets: with
``commands`` it sets the sender's announcement (an empty list withdraws it) and is
answered with an ``ack``; without, it asks, for one ``user`` or for every bot, and is
answered with a ``bot_commands`` event. The server holds what a bot announced until
its session ends; the bounds (:data:`MAX_BOT_COMMANDS_BYTES` a bot, :data:`MAX_BOTS` a
server) keep a hostile client from making it hold more.
"""

from __future__ import annotations

from typing import Final

import msgspec

from chatroom._wire import NAME_RE, _Command, _Event
from chatroom.errors import ErrorCode, ProtocolError, RequestId

__all__ = [
    "MAX_BOTS",
    "MAX_BOT_COMMANDS_BYTES",
    "MAX_PREFIX",
    "BotCommand",
    "BotCommands",
    "BotCommandsCommand",
    "BotEntry",
    "BotParam",
    "validate_bot_commands",
]

# An announcement's commands, JSON-encoded, at most: bench/bot_bench.py's bot (50 typed
# commands and !help) takes 8,404 bytes.
MAX_BOT_COMMANDS_BYTES: Final = 16 * 1024
# Bots a server holds announcements of at once (so at most 4 MiB in all).
MAX_BOTS: Final = 256
MAX_PREFIX: Final = 8  # characters of a command prefix ("!", "/", ".", ...)


class BotParam(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """One parameter of a command: ``type`` a short name for people (``number``,
    ``user``, ``room``, ``duration``, ...); ``default`` as text, absent when there is
    none; ``greedy`` takes the rest of the line, ``many`` every word left; ``choices``
    the words it takes, when it is a choice."""

    name: str
    type: str
    required: bool = True
    default: str | None = None
    greedy: bool = False
    many: bool = False
    choices: tuple[str, ...] = ()


class BotCommand(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """One command: its ``name`` (without the prefix), the ``usage`` line (with it), the
    first line of its ``help``, ``aliases``, ``params`` and ``subcommands``."""

    name: str
    usage: str
    help: str = ""
    aliases: tuple[str, ...] = ()
    params: tuple[BotParam, ...] = ()
    subcommands: tuple[BotCommand, ...] = ()


class BotEntry(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """A bot online and what it announced."""

    user: str
    prefix: str
    commands: tuple[BotCommand, ...] = ()


class BotCommandsCommand(_Command, tag="bot_commands", frozen=True):
    """With ``commands``: announce (replace) ours, answered by an ``ack``. Without: ask
    which bots have announced what (``user``: that one only), answered by
    :class:`BotCommands`."""

    commands: tuple[BotCommand, ...] | None = None
    prefix: str = "!"
    user: str | None = None


class BotCommands(_Event, tag="bot_commands", frozen=True):
    """The bots that announced commands, sorted by name ignoring case."""

    bots: tuple[BotEntry, ...] = ()
    id: RequestId = None


def validate_bot_commands(cmd: BotCommandsCommand) -> None:
    """The rules msgspec's types cannot express (``bad_request``)."""

    def bad(why: str) -> ProtocolError:
        return ProtocolError(ErrorCode.BAD_REQUEST, why, cmd.id)

    if cmd.commands is None:
        if cmd.user is not None and NAME_RE.fullmatch(cmd.user) is None:
            raise bad(f"no user can be named {cmd.user[:40]!r}")
        return
    if cmd.user is not None:
        raise bad("user is for asking; an announcement is the sender's own")
    if not 1 <= len(cmd.prefix) <= MAX_PREFIX or any(c.isspace() for c in cmd.prefix):
        raise bad(f"a prefix is 1-{MAX_PREFIX} characters, no spaces")
    size = len(msgspec.json.encode(cmd.commands))
    if size > MAX_BOT_COMMANDS_BYTES:
        raise bad(f"the commands take {size} bytes; the limit is {MAX_BOT_COMMANDS_BYTES}")
