"""How an IRC session answers its own client: a numeric (:class:`Numerics`), lines
sent in order with the answers the server sends (:class:`Replies`), the 461 of a
command short of parameters, and the NOTICE that refuses a parameter the gateway
cannot pass on. Written once here for every half of a session (channels, operators,
queries, the session itself) and for its renderer, which needs only the numerics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

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
