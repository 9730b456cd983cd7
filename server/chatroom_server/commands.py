"""The client commands the server runs, declared once each (docs/ARCHITECTURE.md, "Adding
a command").

Each row of :data:`COMMANDS` names a command's type (its wire tag, docs/PROTOCOL.md
§Commands), the server's handler for it, and the properties every command's run checks
in one place (:meth:`Dispatch.run`) instead of in each handler: whether it needs a login,
and whether it flushes the pending batch of public messages first, so that what it
answers or sends cannot overtake them (docs/PROTOCOL.md §Ordering). As in ergo's
``irc/commands.go``: a table of ``{handler, usablePreReg, ...}`` checked once in
``Command.Run``.

A handler is named, not referenced, so that this table needs no import of the server;
:meth:`Dispatch.bind` checks every name once, when the server is made, and fails there
for a name with no handler. Each run looks the handler up by name, as a method call
would: a subclass or a test may replace one. A handler takes the connection and the
command; one that may end the session (``ends`` in its row) returns whether to keep
the connection, the others return nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from chatroom.botcommands import BotCommandsCommand
from chatroom.errors import ProtocolError
from chatroom.moderation import (
    AuditCommand,
    BanCommand,
    BansCommand,
    KickCommand,
    KillCommand,
    MuteCommand,
    UnbanCommand,
    UnmuteCommand,
)
from chatroom.protocol import (
    ClientCommand,
    DmCommand,
    ErrorCode,
    ExitCommand,
    HistoryCommand,
    LoginCommand,
    LogoutCommand,
    PingCommand,
    PmCommand,
    UsersCommand,
)
from chatroom.rooms import (
    InviteCommand,
    JoinCommand,
    MembersCommand,
    ModeCommand,
    PartCommand,
    RoomsCommand,
    TopicCommand,
)
from chatroom.whois import WhoisCommand


@dataclass(frozen=True)
class Command:
    """One client command: how the server runs it."""

    type: type[ClientCommand]
    handler: str  # the name of the server's method: (conn, cmd)
    needs_login: bool = True
    ends: bool = False  # the handler may end the session: it returns whether to keep it
    # Run the pending batch of public messages first: what this command answers or
    # sends must not overtake them (a DM to one of their recipients, a reply to their
    # sender). Only pm, which adds to the batch, does not.
    flushes_batch: bool = True


COMMANDS: tuple[Command, ...] = (
    # pm first: the hot path (the table is a dict, but it reads in order of traffic).
    Command(PmCommand, "_public", flushes_batch=False),
    Command(DmCommand, "_dm"),
    Command(LoginCommand, "_login", needs_login=False, ends=True),  # refuses a second login
    Command(HistoryCommand, "_history"),
    Command(UsersCommand, "_users"),
    Command(PingCommand, "_ping", needs_login=False),
    Command(ExitCommand, "_exit", needs_login=False, ends=True),
    Command(LogoutCommand, "_exit", needs_login=False, ends=True),  # an alias of exit
    Command(AuditCommand, "_audit"),  # server operators only (docs/PROTOCOL.md §Moderation)
    Command(KillCommand, "_kill", ends=True),  # server operators only; may end oneself
    # Rooms (docs/PROTOCOL.md §Rooms): one handler, unknown to a connection without them.
    *(
        Command(t, "_room")
        for t in (
            JoinCommand,
            PartCommand,
            RoomsCommand,
            TopicCommand,
            InviteCommand,
            ModeCommand,
            MembersCommand,
            # Moderation (docs/PROTOCOL.md §Moderation): checked in the room service.
            KickCommand,
            BanCommand,
            UnbanCommand,
            BansCommand,
            MuteCommand,
            UnmuteCommand,
        )
    ),
    Command(BotCommandsCommand, "_bot_commands"),  # docs/PROTOCOL.md §Bot commands
    Command(WhoisCommand, "_whois"),  # docs/PROTOCOL.md §whois
)


class Connection(Protocol):
    """What the dispatch reads of a connection: whether it is logged in, and whether
    it has public messages waiting to be handed to the fan-out."""

    @property
    def username(self) -> str | None: ...
    @property
    def batch(self) -> list[bytes]: ...


C = TypeVar("C", bound=Connection)
Handler = Callable[[Any, Any], bool | None]


@dataclass(frozen=True, slots=True)
class _Row:
    handler: str
    needs_login: bool
    flushes_batch: bool
    ends: bool


class Dispatch(Generic[C]):
    """The table bound to one server: runs a validated command on a connection."""

    __slots__ = ("_flush", "_server", "_table")

    def __init__(
        self, server: object, table: Mapping[type, _Row], flush: Callable[[C], None]
    ) -> None:
        self._server = server
        self._table = table
        self._flush = flush

    @classmethod
    def bind(
        cls, server: object, flush: Callable[[C], None], commands: tuple[Command, ...] = COMMANDS
    ) -> Dispatch[C]:
        """The table for ``server``; ``flush`` hands a connection's pending batch to the
        fan-out. Raises AttributeError for a handler ``server`` does not have."""
        table: dict[type, _Row] = {}
        for row in commands:
            if row.type in table:
                raise ValueError(f"{row.type.__name__} is declared twice")
            if not callable(getattr(server, row.handler)):
                raise AttributeError(f"{row.handler} of {server!r} is not callable")
            table[row.type] = _Row(row.handler, row.needs_login, row.flushes_batch, row.ends)
        return cls(server, table, flush)

    def run(self, conn: C, cmd: ClientCommand) -> bool:
        """Run ``cmd`` (decoded and validated) for ``conn``; False closes the connection.
        Raises ProtocolError for a command that needs a login before one."""
        row = self._table.get(type(cmd))
        if row is None:
            # A command type no row declares (every one does; a test's table may not).
            tag = cmd.__struct_config__.tag
            raise ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"unknown command {tag!r}", cmd.id)
        if row.flushes_batch and conn.batch:
            self._flush(conn)
        if row.needs_login and conn.username is None:
            raise ProtocolError(ErrorCode.NOT_LOGGED_IN, "log in first", cmd.id)
        handler: Handler = getattr(self._server, row.handler)
        if row.ends:
            return bool(handler(conn, cmd))
        handler(conn, cmd)
        return True
