"""What a line typed at the ``chat>`` prompt means. Plain functions, no I/O.

The seed's operation prompt works literally (``PM``, ``DM``, ``EX``, any case), with
one-line forms for fast typists (``PM hello``, ``DM bob hi``) and IRC-style slash commands.
Plain text without a command is a public message; ``//text`` sends ``/text`` literally.
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
    "Nothing",
    "SendDm",
    "SendPm",
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
class Nothing:
    pass


@dataclass(frozen=True)
class Invalid:
    why: str


Action = SendPm | SendDm | AskPm | AskDm | Who | Help | HistoryOf | Exit | Nothing | Invalid

# Words that complete at the start of a line, in the order they are offered.
COMMANDS = ("PM", "DM", "EX", "/pm", "/dm", "/msg", "/who", "/history", "/help", "/quit")
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
