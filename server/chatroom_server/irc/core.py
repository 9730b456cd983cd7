"""What the IRC gateway reads of the server: :class:`Core`, the public face the server
shows a transport (chatroom_server.server.ChatServer implements it), and the
:class:`Connection` it hands the gateway. The gateway (chatroom_server.irc) reaches the
server through these only, never through its private names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from chatroom.protocol import ClientCommand
from chatroom.rooms import RoomInfo
from chatroom_server.config import ServerConfig
from chatroom_server.outbox import Outbox
from chatroom_server.session import SessionRules


class Peer(Protocol):
    """What a query reads of another IRC session (IrcSession): each field one
    attribute, set by its own reader thread."""

    user: str | None
    realname: str
    away: str | None
    in_lobby: bool
    invisible: bool
    wallops: bool  # user mode +w


class Connection(Protocol):
    """What the gateway reads of the server's connection object."""

    outbox: Outbox
    username: str | None
    frames: int
    rules: SessionRules
    oper: bool  # an O-line made it a server operator (chatroom_server.olines)


class Lines(Protocol):
    """An IRC connection's outbox (IrcOutbox, or a web one speaking IRC)."""

    def send_irc(self, data: bytes) -> bool: ...


class Runner(Protocol):
    """The server's command path (chatroom_server.runner.CommandRunner), which a
    transport calls directly: a line or a command goes through no other hop."""

    def meter(self, conn: Any) -> bool | None:
        """Count one line against flood control: True allowed, False over the rate,
        None flooding (the connection's bye is on its way: close it)."""

    def run_command(self, conn: Any, cmd: ClientCommand, allowed: bool) -> bool:
        """Run a command through the server's command path; False closes."""


class Core(Protocol):
    """What the IRC gateway may ask of the server (chatroom_server.server.ChatServer).
    ``conn`` is the server's own connection object, which the gateway hands back."""

    @property
    def config(self) -> ServerConfig: ...

    @property
    def runner(self) -> Runner:
        """The command path every line and command of the gateway goes through."""

    def names(self) -> tuple[str, ...]: ...

    def irc_ident(self, name: str) -> tuple[str, str]: ...

    def irc_peer(self, name: str) -> Peer | None:
        """The IRC session of ``name`` online (its USER fields, its AWAY), or None."""

    def rooms_of(self, name: str) -> tuple[RoomInfo, ...]:
        """The rooms ``name`` is in (WHOIS's 319)."""

    def room_info(self, user: str, room: str) -> RoomInfo | None:
        """A room as ``members`` shows it to ``user`` (WHO #room); None: none for them."""

    def is_server_operator(self, name: str) -> bool:
        """WHOIS's 313: ``name`` is a server operator now (docs/PROTOCOL.md §whois)."""

    def check_password(self, conn: Any, name: str, password: str) -> bool | None:
        """SASL: the password is ``name``'s; None: close the connection."""

    def guest_login(self, conn: Any, name: str) -> bool | None:
        """--irc-guests: a session under a nick no account has; None: it has one."""

    def rename_guest(self, conn: Any, new: str, done: Callable[[], None]) -> str:
        """A guest's NICK: ``ok`` (``done`` run once the session is ``new``'s, before
        anyone is told), ``in_use``, or why not."""

    def send_ordered(self, conn: Any, data: bytes) -> None:
        """Lines the gateway made itself, sent behind what the connection's earlier
        lines handed the server and is still on its way (a room message's refusal).
        Only on the connection's reader thread."""

    def oper(self, conn: Any, name: str, password: str) -> str:
        """OPER (chatroom_server.irc.operators): ``ok`` (an O-line, or one's own operator
        account), ``password`` (wrong), ``none`` or ``unavailable``."""

    def operators_online(self) -> frozenset[str]:
        """The username keys of the server operators online (WHO's ``*``)."""

    def wallops(self, line: str) -> bool:
        """An operator's WALLOPS line, to the ``+w`` IRC clients of every node; False:
        of this node only (a cluster's Redis is unreachable)."""
