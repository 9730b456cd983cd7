"""What a line typed at the ``chat>`` prompt means. Plain functions, no I/O.

The seed's operation prompt works literally (``PM``, ``DM``, ``EX``, any case), with
one-line forms for fast typists (``PM hello``, ``DM bob hi``) and IRC-style slash commands.
Plain text without a command is a public message (to the current room); ``//text``
sends ``/text`` literally. Rooms (docs/PROTOCOL.md §Rooms): ``/join``, ``/part``,
``/rooms``, ``/topic``, ``/invite``, ``/mode``, ``/members``, ``/switch``, and
``#room text`` to say something in another room without switching.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "COMMANDS",
    "HELP",
    "Action",
    "AskDm",
    "AskPm",
    "Exit",
    "Help",
    "HistoryOf",
    "Invalid",
    "Invite",
    "Join",
    "Members",
    "Mode",
    "Nothing",
    "Part",
    "RoomPm",
    "Rooms",
    "SendDm",
    "SendPm",
    "Switch",
    "Topic",
    "Who",
    "parse",
]


@dataclass(frozen=True)
class SendPm:
    message: str


@dataclass(frozen=True)
class SendDm:
    to: str
    message: str


@dataclass(frozen=True)
class AskPm:
    """``PM`` alone: ask for the message."""


@dataclass(frozen=True)
class AskDm:
    """``DM`` alone (ask for the recipient, then the message) or ``DM bob`` (the message)."""

    to: str | None = None


@dataclass(frozen=True)
class Who:
    pass


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class HistoryOf:
    """``/history [N]`` (the room) or ``/history USER [N]`` (a DM conversation)."""

    user: str | None = None
    count: int = 20


@dataclass(frozen=True)
class Exit:
    pass


@dataclass(frozen=True)
class RoomPm:
    """``#room text``: a message to that room, the current room unchanged."""

    room: str
    message: str


@dataclass(frozen=True)
class Join:
    room: str
    key: str | None = None


@dataclass(frozen=True)
class Part:
    """``/part`` (the current room) or ``/part ROOM [reason]``."""

    room: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Rooms:
    pass


@dataclass(frozen=True)
class Switch:
    room: str


@dataclass(frozen=True)
class Topic:
    """``/topic`` reads the current room's; ``/topic text`` sets it; ``/topic #room
    [text]`` another room's. ``topic=""``: ``/topic -`` clears it."""

    room: str | None = None
    topic: str | None = None


@dataclass(frozen=True)
class Invite:
    user: str
    room: str | None = None


@dataclass(frozen=True)
class Mode:
    """``/mode`` reads; ``/mode +kl key 10`` sets (the current room, or ``#room`` first)."""

    room: str | None = None
    modes: str | None = None
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Members:
    room: str | None = None


@dataclass(frozen=True)
class Nothing:
    pass


@dataclass(frozen=True)
class Invalid:
    why: str


@dataclass(frozen=True)
class Moderate:
    """``/kick``, ``/ban``, ``/unban``, ``/mute``, ``/unmute``, ``/op``, ``/deop``,
    ``/voice``, ``/devoice`` USER (docs/PROTOCOL.md §Moderation): ``verb`` without its
    slash; ``room`` None for the current one; ``duration`` in seconds. ``user`` is an
    address for ``/ban`` and ``/unban`` of one (:func:`is_address`)."""

    verb: str
    user: str
    room: str | None = None
    duration: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Bans:
    room: str | None = None


Action = (
    SendPm
    | SendDm
    | AskPm
    | AskDm
    | Who
    | Help
    | HistoryOf
    | Exit
    | Nothing
    | Invalid
    | RoomPm
    | Join
    | Part
    | Rooms
    | Switch
    | Topic
    | Invite
    | Mode
    | Members
    | Moderate
    | Bans
)

# Words that complete at the start of a line, in the order they are offered.
COMMANDS = (
    "PM",
    "DM",
    "EX",
    "/pm",
    "/dm",
    "/msg",
    "/who",
    "/history",
    "/join",
    "/part",
    "/switch",
    "/rooms",
    "/topic",
    "/invite",
    "/mode",
    "/members",
    "/kick",
    "/ban",
    "/unban",
    "/bans",
    "/mute",
    "/unmute",
    "/op",
    "/deop",
    "/voice",
    "/devoice",
    "/help",
    "/quit",
)
# Commands whose next word is a room (Tab completes room names there).
ROOM_COMMANDS = frozenset(("/join", "/part", "/switch", "/members"))
_PM = {"pm", "/pm"}
_DM = {"dm", "/dm", "/msg"}
_EXIT = {"ex", "/quit", "/exit"}

HELP = """\
Commands (any case):
  PM                 ask for a message, then send it to everyone
  PM <text>          send <text> to everyone          (also /pm <text>)
  DM                 ask for a recipient (Tab completes), then the message
  DM <user> <text>   send <text> to <user> only       (also /dm, /msg)
  EX                 log out and quit                 (also /quit, Ctrl-D)
  /who               list who is online
  /history [N]       the N public messages before those shown (again: further back)
  /history <user> [N]  the same for your direct messages with <user>
Rooms (a server with rooms; your current room is in the toolbar, with unread counts):
  /join <room> [key] join a room (created if new: you own it) and switch to it
  /switch <room>     make <room> current: plain text and PM go there (/switch lobby)
  #<room> <text>     say <text> in <room> without switching
  /part [room] [why] leave a room (default: the current one)
  /rooms             the rooms you may join, with member counts
  /topic [text]      read or set the current room's topic (/topic - clears it)
  /invite <user>     let <user> into the current room (past +i, +k, +l)
  /mode [+ik-t ...]  read or change the current room's modes (operators)
  /members           who is in the current room
  Alt-N, Alt-P       the next, the previous of your rooms becomes current
  Messages from a room other than the current one are shown with its name: #dev.
Moderation (the room's operators; #room first for another room than the current one):
  /kick <user> [why]            remove <user> from the room (they may come back)
  /ban <user> [10m|2h|1d] [why] keep <user> out (for a time, or until /unban <user>)
  /ban <address>[/bits] [10m] [why]  server operators: keep out everyone from an IP
                                address or network, e.g. 203.0.113.7, 10.0.0.0/8
  /bans                         the room's bans
  /mute <user> [10m] [why]      keep <user> from speaking (until /unmute <user>)
  /op /deop /voice /devoice <user>  make or unmake an operator, a voiced member
  /help              this help
Anything else you type is sent to everyone as a public message; start a line with
// to send one that begins with a slash. Tab completes commands and usernames, Up
recalls earlier lines, Ctrl-C clears the line."""


def parse(line: str) -> Action:
    """Interpret one line typed at the command prompt."""
    text = line.strip()
    if not text:
        return Nothing()
    if text.startswith("//"):
        return SendPm(text[1:])
    head, _, rest = text.partition(" ")
    word = head.lower()
    rest = rest.strip()
    if word in _PM:
        return SendPm(rest) if rest else AskPm()
    if word in _DM:
        if not rest:
            return AskDm()
        to, _, message = rest.partition(" ")
        message = message.strip()
        return SendDm(to, message) if message else AskDm(to)
    if word in _EXIT:
        return Exit()
    if word == "/who":
        return Who()
    if word == "/history":
        return _history(rest)
    if word == "/help" or word == "/?":
        return Help()
    if head.startswith("#") and len(head) > 1:
        return RoomPm(head[1:], rest) if rest else Switch(head[1:])
    room_action = _room_command(word, rest)
    if room_action is not None:
        return room_action
    if word.startswith("/"):
        return Invalid(f"unknown command {head}; type /help")
    return SendPm(text)


def _history(rest: str) -> Action:
    words = rest.split()
    user: str | None = None
    if words and not words[0].isdigit():
        user = words.pop(0)
    if len(words) > 1 or (words and not words[0].isdigit()):
        return Invalid("usage: /history [user] [N]")
    count = int(words[0]) if words else 20
    if not 1 <= count <= 100:
        return Invalid("/history shows 1 to 100 messages at a time")
    return HistoryOf(user, count)


def _room(word: str) -> str:
    """A room as typed: ``#dev`` or ``dev``."""
    return word[1:] if word.startswith("#") else word


def _room_command(word: str, rest: str) -> Action | None:
    """The room commands; None for any other word."""
    words = rest.split()
    if word == "/join":
        if not words or len(words) > 2:
            return Invalid("usage: /join <room> [key]")
        return Join(_room(words[0]), words[1] if len(words) > 1 else None)
    if word == "/switch":
        return Switch(_room(words[0])) if len(words) == 1 else Invalid("usage: /switch <room>")
    if word == "/part":
        if not words:
            return Part()
        first, _, reason = rest.partition(" ")
        return Part(_room(first), reason.strip() or None)
    if word == "/rooms":
        return Rooms()
    if word == "/members":
        return Members(_room(words[0]) if words else None)
    if word == "/invite":
        if not 1 <= len(words) <= 2:
            return Invalid("usage: /invite <user> [room]")
        return Invite(words[0], _room(words[1]) if len(words) > 1 else None)
    room: str | None = None
    if word == "/topic":
        if words and words[0].startswith("#"):
            first, _, rest = rest.partition(" ")
            room = _room(first)
        text = rest.strip()
        return Topic(room, None if not text else ("" if text == "-" else text))
    if word in _MODERATE or word == "/bans":
        return _moderate(word, rest)
    if word == "/mode":
        if words and words[0].startswith("#"):
            room = _room(words.pop(0))
        if not words:
            return Mode(room)
        return Mode(room, words[0], tuple(words[1:]))
    return None


_MODERATE = frozenset(
    ("/kick", "/ban", "/unban", "/mute", "/unmute", "/op", "/deop", "/voice", "/devoice")
)
_TIMED = frozenset(("/ban", "/mute"))
_REASONED = frozenset(("/kick", "/ban", "/mute"))
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_of(word: str) -> int | None:
    """``90``, ``90s``, ``10m``, ``2h``, ``1d`` in seconds; None for anything else."""
    unit = _UNITS.get(word[-1:].lower())
    digits = word[:-1] if unit else word
    if not digits.isascii() or not digits.isdigit():
        return None
    return int(digits) * (unit or 1)


def _moderate(word: str, rest: str) -> Action:
    room: str | None = None
    if rest.startswith("#"):
        first, _, rest = rest.partition(" ")
        room = _room(first)
    if word == "/bans":
        return Bans(room) if not rest.strip() else Invalid("usage: /bans [#room]")
    user, _, rest = rest.strip().partition(" ")
    rest = rest.strip()
    if not user:
        extra = " [duration]" if word in _TIMED else ""
        why = " [reason]" if word in _REASONED else ""
        return Invalid(f"usage: {word} [#room] <user>{extra}{why}")
    duration = None
    if word in _TIMED and rest:
        first, _, after = rest.partition(" ")
        duration = duration_of(first)
        if duration is not None:
            rest = after.strip()
    if rest and word not in _REASONED:
        return Invalid(f"usage: {word} [#room] <user>")
    if is_address(user) and word not in ("/ban", "/unban"):
        return Invalid(f"{word} names a user; only /ban and /unban take an address")
    return Moderate(word[1:], user, room, duration, rest or None)


def is_address(word: str) -> bool:
    """An IP address or CIDR network (``/ban 10.0.0.0/8``): no username has ``.``,
    ``:`` or ``/`` in it. Its form is the server's to judge (a clear error)."""
    return any(c in word for c in ".:/")
