"""The command table (chatroom_server.commands): every client command declared once,
its properties checked in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_args

import pytest

from chatroom.errors import ProtocolError
from chatroom.protocol import (
    ClientCommand,
    DmCommand,
    ErrorCode,
    ExitCommand,
    LoginCommand,
    PingCommand,
    PmCommand,
)
from chatroom.rooms import (
    InviteCommand,
    JoinCommand,
    MembersCommand,
    ModeCommand,
    PartCommand,
    RoomCommand,
    RoomsCommand,
    TopicCommand,
)
from chatroom_server.commands import COMMANDS, Command, Dispatch
from chatroom_server.server import ChatServer


@dataclass
class FakeConn:
    username: str | None = None
    batch: list[bytes] = field(default_factory=list)


@dataclass
class FakeServer:
    calls: list[tuple[str, Any]] = field(default_factory=list)
    flushed: list[list[bytes]] = field(default_factory=list)

    def handle(self, name: str) -> Any:
        def handler(conn: FakeConn, cmd: ClientCommand) -> bool | None:
            self.calls.append((name, cmd))
            return {"_exit": False, "_login": True}.get(name)  # the others return nothing

        return handler

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") and not name.startswith("__"):
            return self.handle(name)
        raise AttributeError(name)

    def flush(self, conn: FakeConn) -> None:
        self.flushed.append(conn.batch)
        conn.batch = []


def test_every_client_command_has_one_row() -> None:
    assert sorted(t.__name__ for t in get_args(ClientCommand)) == sorted(
        row.type.__name__ for row in COMMANDS
    )


def test_the_room_commands_have_one_handler() -> None:
    """It answers unknown_command itself to a connection without rooms, as a version-1
    server would (tests/server/test_rooms_server.py)."""
    server = FakeServer()
    dispatch: Dispatch[FakeConn] = Dispatch.bind(server, server.flush)
    conn = FakeConn(username="ann", batch=[b"pending"])
    commands: list[RoomCommand] = [
        RoomsCommand(),
        JoinCommand(room="a"),
        PartCommand(room="a"),
        TopicCommand(room="a"),
        InviteCommand(room="a", user="b"),
        ModeCommand(room="a"),
        MembersCommand(room="a"),
    ]
    assert {type(c) for c in commands} == set(get_args(RoomCommand))
    for cmd in commands:
        assert dispatch.run(conn, cmd) is True
    assert server.calls == [("_room", cmd) for cmd in commands]
    assert server.flushed == [[b"pending"]]  # what came before goes first


def test_a_command_no_row_declares_is_unknown() -> None:
    server = FakeServer()
    table = tuple(row for row in COMMANDS if row.handler != "_room")
    dispatch: Dispatch[FakeConn] = Dispatch.bind(server, server.flush, table)
    with pytest.raises(ProtocolError) as refused:
        dispatch.run(FakeConn(username="ann"), JoinCommand(room="a", id=1))
    assert refused.value.code == ErrorCode.UNKNOWN_COMMAND
    assert refused.value.request_id == 1 and server.calls == []


def test_the_server_has_every_handler() -> None:
    server = ChatServer()  # not started: binding needs no socket
    for row in COMMANDS:  # the handlers are chatroom_server.handlers'
        assert callable(getattr(server._handlers, row.handler)), row


def test_a_command_before_login_is_refused_unless_it_says_otherwise() -> None:
    server = FakeServer()
    dispatch: Dispatch[FakeConn] = Dispatch.bind(server, server.flush)
    conn = FakeConn()
    with pytest.raises(ProtocolError) as refused:
        dispatch.run(conn, DmCommand(to="bob", message="hi", id=7))
    assert (refused.value.code, refused.value.request_id) == (ErrorCode.NOT_LOGGED_IN, 7)
    assert dispatch.run(conn, PingCommand()) is True
    assert dispatch.run(conn, LoginCommand(username="ann")) is True
    assert [name for name, _ in server.calls] == ["_ping", "_login"]


def test_the_batch_is_flushed_before_anything_but_a_pm() -> None:
    server = FakeServer()
    dispatch: Dispatch[FakeConn] = Dispatch.bind(server, server.flush)
    conn = FakeConn(username="ann", batch=[b"queued"])
    dispatch.run(conn, PmCommand(message="more"))
    assert server.flushed == [] and conn.batch == [b"queued"]
    dispatch.run(conn, DmCommand(to="bob", message="hi"))
    assert server.flushed == [[b"queued"]] and conn.batch == []


def test_a_missing_handler_or_a_second_row_fails_when_bound() -> None:
    class NoHandlers:
        pass

    with pytest.raises(AttributeError):
        Dispatch.bind(NoHandlers(), lambda conn: None)
    twice = (Command(PingCommand, "_ping"), Command(PingCommand, "_pong"))
    with pytest.raises(ValueError, match="twice"):
        Dispatch.bind(FakeServer(), lambda conn: None, twice)


def test_only_a_handler_that_may_end_the_session_ends_it() -> None:
    server = FakeServer()
    dispatch: Dispatch[FakeConn] = Dispatch.bind(server, server.flush)
    conn = FakeConn(username="ann")
    assert dispatch.run(conn, PmCommand(message="hi")) is True  # its handler said None
    assert dispatch.run(conn, ExitCommand()) is False


def test_a_handler_replaced_on_the_server_is_the_one_run() -> None:
    """Handlers are looked up at each run, as a method call would be: a subclass or a
    test (monkeypatch) may replace one after the table is bound."""
    server = FakeServer()
    dispatch: Dispatch[FakeConn] = Dispatch.bind(server, server.flush)
    seen: list[ClientCommand] = []
    server.__dict__["_ping"] = lambda conn, cmd: seen.append(cmd)
    dispatch.run(FakeConn(), PingCommand(id=3))
    assert seen == [PingCommand(id=3)] and server.calls == []
