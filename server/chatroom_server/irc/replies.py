"""How an IRC session answers its own client: a numeric (:class:`Numerics`), lines
sent in order with the answers the server sends (:class:`Replies`), the 461 of a
command short of parameters, and the NOTICE that refuses a parameter the gateway
cannot pass on. Written once here for every half of a session (channels, operators,
queries, the session itself) and for its renderer, which needs only the numerics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from chatroom_server.irc.parse import plain

if TYPE_CHECKING:
    from chatroom_server.irc.core import Connection, Core


class Numerics:
    """A numeric addressed to this client (Modern IRC, "Numerics")."""

    name: str  # the server's, in prefixes
    nick: str  # the client's: "*" until it has one

    def numeric(self, code: str, *params: str, text: str | None = None) -> str:
        tail = f" :{text}" if text is not None else ""
        return f":{self.name} {code} {self.nick}{''.join(' ' + p for p in params)}{tail}"


class Replies(Numerics):
    """Answers made by the session itself, on its reader thread."""

    server: Core
    conn: Connection

    def reply(self, *lines: str) -> None:
        """Lines made here (numerics, PONG, ...), each ended with CRLF."""
        data = "".join(line + "\r\n" for line in lines).encode()
        # An IrcOutbox, or a web connection's outbox speaking IRC over WebSocket
        # (chatroom_server.web): either frames IRC lines as its transport needs. Through
        # the server, so that a 411 for one line does not overtake the 403 of the
        # PRIVMSG before it, which the fan-out answers (chatroom_server.fanout, "Rooms").
        self.server.send_ordered(self.conn, data)

    def num(self, code: str, *params: str, text: str | None = None) -> None:
        self.reply(self.numeric(code, *params, text=text))

    def need(self, params: Sequence[str], n: int, cmd: str) -> bool:
        """At least ``n`` parameters, the last of them not empty; else 461."""
        if len(params) < n or (n and not params[n - 1]):
            self.num("461", cmd, text="Not enough parameters")
            return False
        return True

    def text_param(self, what: str, text: str) -> str | None:
        """A reason or a topic for the server: ``text`` without mIRC formatting, which
        IRC clients put in them and IRC servers pass on, but which the server's
        commands refuse (one line of printable text, docs/PROTOCOL.md §Moderation,
        §Rooms): the words stay, bold and colours go. None, after a NOTICE naming it,
        for a text with another control character (a bell, a CTCP delimiter)."""
        text = plain(text)
        if text.isprintable():
            return text
        bad = next(c for c in text if not c.isprintable())
        self.refuse(
            what,
            f"not sent: the text has the control character U+{ord(bad):04X} (mIRC "
            "formatting is dropped, other control characters are refused)",
        )
        return None

    def refuse(self, what: str, why: str) -> None:
        """A NOTICE that ``what`` (``KICK #dev bob``) was not done and why: for what
        IRC has no numeric."""
        self.reply(f":{self.name} NOTICE {self.nick} :{what}: {why}")
