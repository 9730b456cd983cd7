"""The server session without I/O (chatroom_server.session): bytes in, actions out,
no sockets, the clock driven by hand."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from chatroom.errors import ProtocolError
from chatroom.protocol import ErrorCode, Limits, LoginCommand, PingCommand, PmCommand
from chatroom_server.config import ServerConfig
from chatroom_server.session import BYE_FLOOD, Action, Close, Reply, ServerSession, SessionRules


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def session(clock: Clock | None = None, **config: Any) -> ServerSession:
    clock = clock or Clock()
    return ServerSession(SessionRules(replace(ServerConfig(), **config), clock), clock())


def frame(**fields: Any) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def error(action: Action) -> dict[str, Any]:
    assert isinstance(action, Reply), action
    event: dict[str, Any] = json.loads(action.data)
    assert event["type"] == "error"
    return event


def test_frames_in_commands_out_across_reads() -> None:
    s = session()
    data = frame(command="login", username="ann") + frame(command="ping", id=1)
    assert list(s.receive_data(data[:10])) == []
    assert list(s.receive_data(data[10:])) == [
        LoginCommand(username="ann"),
        PingCommand(id=1),
    ]
    assert s.frames == 2


def test_a_bad_frame_is_answered_and_counted_as_a_strike() -> None:
    s = session(max_errors_in_row=3)
    [reply] = s.receive_data(b"{nope\n")
    assert error(reply)["code"] == ErrorCode.BAD_JSON
    s.succeeded()  # a command ran in between: strikes start again
    actions = list(s.receive_data(b"{\n" * 3 + frame(command="ping")))
    assert [type(a) for a in actions] == [Reply, Reply, Reply, Close]
    assert s.errors_in_row == 3


def test_validation_happens_in_the_session() -> None:
    s = session(limits=Limits(max_message=5))
    [reply] = s.receive_data(frame(command="pm", message="too long", id="r"))
    assert (error(reply)["code"], error(reply)["id"]) == (ErrorCode.BAD_REQUEST, "r")
    assert list(s.receive_data(frame(command="pm", message="ok"))) == [PmCommand(message="ok")]


def test_the_pre_login_limit_closes() -> None:
    s = session(max_frames_before_login=2)
    actions = list(s.receive_data(frame(command="ping") * 4))
    assert actions[:2] == [PingCommand(), PingCommand()]
    assert error(actions[2])["code"] == ErrorCode.NOT_LOGGED_IN
    assert actions[3] == Close("no login")
    assert len(actions) == 4  # nothing after a Close


def test_a_login_in_the_same_read_lifts_the_pre_login_limit() -> None:
    """The actions are made as they are consumed: what the caller did with the last
    one (a login) counts for the next frame of the same read."""
    s = session(max_frames_before_login=1)
    actions = s.receive_data(frame(command="login", username="ann") + frame(command="ping"))
    assert next(actions) == LoginCommand(username="ann")
    s.username = "ann"
    assert list(actions) == [PingCommand()]


def test_over_the_rate_is_refused_without_a_strike() -> None:
    clock = Clock()
    s = session(clock, rate_limit=1.0, rate_burst=2)
    actions = list(s.receive_data(frame(command="ping") * 3))
    assert actions[:2] == [PingCommand(), PingCommand()]
    assert error(actions[2])["code"] == ErrorCode.RATE_LIMITED
    assert s.errors_in_row == 0
    clock.now += 1.0
    assert list(s.receive_data(frame(command="ping"))) == [PingCommand()]


def test_a_flood_closes_with_bye() -> None:
    clock = Clock()
    s = session(clock, rate_limit=1.0, rate_burst=1, flood_factor=2.0, flood_seconds=2)
    seconds = 0
    while not (
        closes := [a for a in s.receive_data(frame(command="ping") * 3) if type(a) is Close]
    ):
        clock.now += 1.0
        seconds += 1
    assert closes == [Close("flooding", BYE_FLOOD)]
    assert seconds == 1  # over 2 frames/s in 2 whole seconds in a row


def test_a_frame_too_large_closes() -> None:
    s = session(limits=Limits(max_frame=64))
    actions = list(s.receive_data(b"x" * 100))
    assert error(actions[0])["code"] == ErrorCode.TOO_LARGE
    assert actions[1] == Close("frame too large")


def test_a_handlers_refusal_counts_only_for_protocol_errors() -> None:
    s = session(max_errors_in_row=2)
    unavailable = ProtocolError(ErrorCode.UNAVAILABLE, "later", 1)
    assert [type(a) for a in s.refused(unavailable)] == [Reply]
    assert s.errors_in_row == 0
    twice = ProtocolError(ErrorCode.ALREADY_LOGGED_IN, "already", 2)
    assert [type(a) for a in s.refused(twice)] == [Reply]
    assert [type(a) for a in s.refused(twice)] == [Reply, Close]
