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
class Exit:
    pass


@dataclass(frozen=True)
class Nothing:
    pass


@dataclass(frozen=True)
class Invalid:
    why: str


Action = SendPm | SendDm | AskPm | AskDm | Who | Help | Exit | Nothing | Invalid

# Words that complete at the start of a line, in the order they are offered.
COMMANDS = ("PM", "DM", "EX", "/pm", "/dm", "/msg", "/who", "/help", "/quit")
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
    if word == "/help" or word == "/?":
        return Help()
    if word.startswith("/"):
        return Invalid(f"unknown command {head}; type /help")
    return SendPm(text)
