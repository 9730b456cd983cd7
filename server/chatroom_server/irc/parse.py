"""IRC lines: their limits, parsing them, and the text helpers the gateway renders with
(chatroom_server.irc). Pure functions and one small decoder: no I/O, no server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

HOST: Final = "chatroom"  # every user's host part: user@host is name@chatroom
LINE: Final = 512  # bytes per line, CRLF included, tags excluded (RFC 1459)
MAX_SEQ: Final = 2**63 - 1  # the largest msgid (seq) the message log can hold
TAGS: Final = 8191  # bytes of IRCv3 tags a line may carry on top (message-tags)
CLIENT_TAGS: Final = 4094  # of which a client may send (message-tags: "4094 bytes")
# multi-prefix changes nothing here (a member has one role, so one prefix), so it is free
# to offer; userhost-in-names lists nick!user@host in NAMES; invite-notify shows a
# channel's members the INVITEs to it; echo-message sends a client's PRIVMSG and NOTICE
# back to it once the server has taken them (render.py, the ack).
CAPS: Final = (
    "message-tags",
    "sasl",
    "server-time",
    "draft/chathistory",
    "batch",
    "multi-prefix",
    "userhost-in-names",
    "invite-notify",
    "echo-message",
)
MOTD: Final = (
    "Welcome to the chatroom IRC gateway.",
    "This channel is the room: JSON and IRC users together.",
    "Your nick is your account name; PRIVMSG a nick for a direct message.",
)
BYE_TEXT: Final = {
    "exit": "Quit",
    "server_shutdown": "Server shutting down",
    "session_replaced": "Logged in from another connection",
    "timeout": "Ping timeout",
    "flood": "Excess flood",
}


# ------------------------------------------------------------------------------ parsing


@dataclass(slots=True)
class Message:
    """One IRC line: ``@tags :source COMMAND params...``."""

    command: str
    params: list[str] = field(default_factory=list)
    tags: str = ""
    source: str = ""


def too_long(raw: bytes) -> bool:
    """A line within the decoder's limit whose tags are past a client's: IRCv3
    message-tags allows a client 4094 bytes of them."""
    return raw.startswith(b"@") and len(raw.partition(b" ")[0]) - 1 > CLIENT_TAGS


def decode_line(raw: bytes) -> str:
    """A line's text: UTF-8, or Latin-1 for clients that send something else."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse(line: str) -> Message | None:
    """A line into its parts (Modern IRC, "Message format"); None for an empty one.
    CR, LF and NUL may be in no part of a message (RFC 1459, 2.3.1): they are dropped
    here, from every field, because the gateway relays fields (USER's real name in WHO
    and WHOIS, a PING token in PONG, a command in 421) and a CR inside a line ends the
    line for many clients: what follows would be a line the client made up."""
    tags = source = ""
    if "\r" in line or "\n" in line or "\0" in line:
        # Translated only when there is something to drop: ``translate`` looks every
        # character up in a dict (4 µs a chat line), three scans for them 0.15 µs.
        line = line.translate(_NOT_IN_A_LINE)
    rest = line.lstrip(" ")
    if rest.startswith("@"):
        tags, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    # The words are split on runs of spaces and the trailing parameter is what follows
    # the first " :" (a word's start): a split and a partition in C, not a loop of
    # partitions here (a PRIVMSG's parse was 3.4 µs, most of it that loop).
    if rest.startswith(":"):  # after a source with no command: all of it is trailing
        params = [rest[1:]]
    else:
        head, colon, trailing = rest.partition(" :")
        params = head.split(" ")
        if "" in params:  # runs of spaces (and a line of none but them)
            params = [word for word in params if word]
        if colon:
            params.append(trailing)
    if not params:
        return None
    return Message(params[0].upper(), params[1:], tags, source)


_NOT_IN_A_LINE: Final = {ord("\r"): None, ord("\n"): None, ord("\0"): None}


class LineDecoder:
    """Bytes in, lines out (CRLF or bare LF). A line over the limit is reported as
    ``None`` (the caller answers 417) and skipped up to its end."""

    def __init__(self, limit: int = LINE + TAGS) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | None]:
        if not self._buf and not self._skipping and data.endswith(b"\n"):
            # The usual read: whole lines, nothing left over from the last. Split in
            # one call instead of copying the buffer out a line at a time.
            limit = self._limit
            lines = data.split(b"\n")
            lines.pop()  # the empty tail after the last LF
            if len(lines) == 1:
                line = lines[0].rstrip(b"\r")
                return [None if len(line) > limit else line]
            stripped = [raw.rstrip(b"\r") for raw in lines]
            return [None if len(line) > limit else line for line in stripped]
        self._buf += data
        out: list[bytes | None] = []
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                # A trailing CR may be its line's end cut from its LF by a read: no part
                # of the line (stripped below), so a line of exactly the limit waits.
                if len(self._buf) - self._buf.endswith(b"\r") > self._limit:
                    if not self._skipping:
                        out.append(None)
                    self._skipping = True
                    self._buf.clear()
                return out
            line = bytes(self._buf[:i]).rstrip(b"\r")
            del self._buf[: i + 1]
            if self._skipping:
                self._skipping = False
                continue
            out.append(None if len(line) > self._limit else line)


def split_text(text: str, budget: int) -> Iterator[str]:
    """``text`` as lines of at most ``budget`` UTF-8 bytes: split at newlines, then at
    the last space that keeps at least half the budget, never inside a character."""
    for para in text.replace("\r", "").replace("\0", "").split("\n"):
        data = para.encode()
        while len(data) > budget:
            cut = budget
            while cut > 0 and data[cut] & 0xC0 == 0x80:  # a continuation byte
                cut -= 1
            space = data.rfind(b" ", 0, cut + 1)
            if space >= budget // 2:
                yield data[:space].decode()
                data = data[space + 1 :]
            else:
                yield data[:cut].decode()
                data = data[cut:]
        if data:
            yield data.decode()


def number(text: str) -> int | None:
    """A whole number written in ASCII digits, None for anything else. ``str.isdigit``
    also takes digits such as ``²`` that ``int()`` refuses; a number of over 19 digits is
    read as 10**19, past any seq (``int()`` refuses over 4,300 digits, and a line has
    room for more)."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text) if len(text) <= 19 else 10**19


# mIRC formatting (Modern IRC, "Formatting"): bold, colour (up to two digits, and a
# background after a comma), hex colour (six hex digits, the same), reset, monospace,
# reverse, italic, strikethrough, underline.
_FORMATTING: Final = re.compile(
    r"\x03(?:[0-9]{1,2}(?:,[0-9]{1,2})?)?"
    r"|\x04(?:[0-9A-Fa-f]{6}(?:,[0-9A-Fa-f]{6})?)?"
    r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)


def plain(text: str) -> str:
    """``text`` without mIRC formatting codes: the words stay, bold and colours go."""
    return _FORMATTING.sub("", text)


def iso_time(ts: float) -> str:
    """IRCv3 server-time: UTC, milliseconds, Z."""
    t = datetime.fromtimestamp(ts, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def mask(name: str) -> str:
    return f"{name}!{name}@{HOST}"


# A member's role as a NAMES prefix: owners and ops are IRC's operators.
_ROLE_PREFIX: Final = {"owner": "@", "op": "@", "voice": "+"}


def role_prefix(role: str, voiced: bool) -> str:
    """NAMES' and WHO's prefix for a member's ``role``; ``voiced``: an operator with
    voice too, shown (``@+``) to a client with multi-prefix (the caller says)."""
    return _ROLE_PREFIX.get(role, "") + ("+" if voiced and role in ("owner", "op") else "")
