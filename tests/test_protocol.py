"""chatroom.protocol: framing, typed messages, decoding errors, validation. No I/O."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatroom.errors import FrameTooLarge, ProtocolError
from chatroom.protocol import (
    Ack,
    Broadcast,
    DirectMessage,
    DmCommand,
    ErrorCode,
    ExitCommand,
    FrameDecoder,
    Limits,
    LoginCommand,
    LoginOk,
    LogoutCommand,
    PmCommand,
    UserList,
    UsersDelta,
    decode_command,
    decode_event,
    encode,
    is_valid_username,
    split_block,
    validate_command,
)


def test_frames_fed_one_byte_at_a_time() -> None:
    stream = (
        b'{"command":"ping"}\n\n{"command":"users"}\r\n  \n{"command":"pm","message":"a\\nb"}\n'
    )
    dec = FrameDecoder(100)
    frames = []
    for i in range(len(stream)):
        frames += dec.feed(stream[i : i + 1])
    assert frames == [
        b'{"command":"ping"}',
        b'{"command":"users"}',
        b'{"command":"pm","message":"a\\nb"}',
    ]
    assert dec.pending == 0


@given(
    st.lists(
        st.binary(min_size=1, max_size=40).filter(
            lambda b: b"\n" not in b and not b.isspace() and not b.endswith(b"\r")
        )
    ),
    st.data(),
)
def test_frames_survive_any_split(lines: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FrameDecoder(64)
    out: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += dec.feed(stream[prev:cut])
        prev = cut
    assert out == lines


def test_oversize_frame_detected_before_newline_arrives() -> None:
    dec = FrameDecoder(10)
    assert dec.feed(b"0123456789") == []
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(b"x")
    assert info.value.code == "too_large"


def test_oversize_frame_inside_one_chunk() -> None:
    with pytest.raises(FrameTooLarge):
        FrameDecoder(10).feed(b"ok\n" + b"y" * 11 + b"\nok\n")


def test_frame_at_exact_limit_is_fine() -> None:
    assert FrameDecoder(10).feed(b"0123456789\n") == [b"0123456789"]


@given(st.binary(max_size=200), st.data())
def test_feed_block_splits_as_feed_does(stream: bytes, data: st.DataObject) -> None:
    """Blocks, split with split_block, are the frames feed gives, for any stream and any
    cuts, and each block is whole lines."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    by_frame, by_block = FrameDecoder(1000), FrameDecoder(1000)
    frames: list[bytes] = []
    blocks: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        frames += by_frame.feed(stream[prev:cut])
        block = by_block.feed_block(stream[prev:cut])
        assert block == b"" or block.endswith(b"\n")
        blocks.append(block)
        prev = cut
    assert [f for b in blocks for f in split_block(b)] == frames
    assert by_block.pending == by_frame.pending


def test_feed_block_passes_whole_reads_on_and_checks_the_limit() -> None:
    read = b'{"type":"pong"}\n{"type":"pong"}\n'
    assert FrameDecoder(100).feed_block(read) is read  # no copy
    assert FrameDecoder(10).feed_block(b"0123456789\nok\n") == b"0123456789\nok\n"
    with pytest.raises(FrameTooLarge):
        FrameDecoder(10).feed_block(b"ok\n" + b"y" * 11 + b"\nok\n")
    with pytest.raises(FrameTooLarge):
        FrameDecoder(10).feed_block(b"ok\n" + b"y" * 11)


def test_commands_decode_to_their_types() -> None:
    assert decode_command(b'{"command":"pm","message":"hi","id":7}') == PmCommand(
        message="hi", id=7
    )
    assert decode_command(b'{"command":"dm","to":"Bob","message":"x","id":"a"}') == DmCommand(
        to="Bob", message="x", id="a"
    )
    assert decode_command(b'{"command":"login","username":"al"}') == LoginCommand(username="al")
    assert isinstance(decode_command(b'{"command":"logout"}'), ExitCommand)
    assert decode_command(b'{"command":"logout"}') == LogoutCommand()


def test_unknown_fields_and_a_type_field_are_ignored() -> None:
    cmd = decode_command(b'{"type":"command","command":"pm","message":"hi","extra":[1,{}]}')
    assert cmd == PmCommand(message="hi")


@pytest.mark.parametrize(
    ("frame", "code", "rid"),
    [
        (b"\xff\xfe", "bad_json", None),
        (b'{"command":"pm","message":"\xff"}', "bad_json", None),
        (b"not json", "bad_json", None),
        (b"[1,2]", "bad_json", None),
        (b'"pm"', "bad_json", None),
        (b'{"id":4}', "bad_request", 4),
        (b'{"command":5,"id":"x"}', "bad_request", "x"),
        (b'{"command":"dance","id":9}', "unknown_command", 9),
        (b'{"command":"pm","id":1}', "bad_request", 1),
        (b'{"command":"pm","message":5,"id":1}', "bad_request", 1),
        (b'{"command":"pm","message":"x","id":true}', "bad_request", None),
        (b'{"command":"pm","message":"x","id":[1]}', "bad_request", None),
        (b'{"command":"login","username":"a","password":1}', "bad_request", None),
        (b"[" * 100_000 + b"]" * 100_000, "bad_json", None),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "bad_json", None),
        (b'{"command":"pm","message":"x","id":' + b"9" * 5000 + b"}", "bad_json", None),
        (b"\x00\x00", "bad_json", None),
    ],
)
def test_bad_frames_get_the_right_code(frame: bytes, code: str, rid: object) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_command(frame)
    assert info.value.code == code
    assert info.value.request_id == rid
    assert str(info.value)


def test_events_round_trip_with_wire_names() -> None:
    b = Broadcast(sender="al", message="hi", ts=1.5)
    wire = json.loads(encode(b))
    assert wire == {"type": "broadcast", "from": "al", "message": "hi", "ts": 1.5}
    assert decode_event(encode(b)) == b
    d = DirectMessage(sender="al", to="bo", message="x", ts=2.0)
    assert json.loads(encode(d))["from"] == "al"
    assert decode_event(encode(d)) == d
    assert json.loads(encode(Ack(command="pm"))) == {"type": "ack", "command": "pm"}
    ok = LoginOk(username="al", new_user=False, users=("al",), id=3)
    assert json.loads(encode(ok)) == {
        "type": "login_ok",
        "username": "al",
        "new_user": False,
        "users": ["al"],
        "id": 3,
    }
    assert json.loads(encode(UserList(users=("a",), joined="a"))) == {
        "type": "users",
        "users": ["a"],
        "joined": "a",
    }


def test_users_delta_extension_on_the_wire() -> None:
    login = decode_command(b'{"command":"login","username":"a","password":"p","features":["x"]}')
    assert isinstance(login, LoginCommand) and login.features == ("x",)
    assert "features" not in json.loads(encode(LoginCommand(username="a")))  # v1 as before
    tick = decode_event(b'{"type":"users_delta","count":2}')
    assert tick == UsersDelta(count=2, joined=(), left=())
    assert json.loads(encode(UsersDelta(joined=("b",), count=2))) == {
        "type": "users_delta",
        "count": 2,
        "joined": ["b"],
    }
    with pytest.raises(ProtocolError) as bad:
        decode_event(b'{"type":"users_delta","count":-1}')
    assert bad.value.code == ErrorCode.BAD_REQUEST


def test_a_client_without_a_user_list_skips_login_oks_list() -> None:
    names = tuple(f"user{i:05d}" for i in range(1000))
    full = LoginOk(
        username="bot", new_user=False, users=names, features=("users_delta",), seq=7, id=3
    )
    frame = encode(full)[:-1]
    assert decode_event(frame) == full
    # Every other field as sent, and a bad one still refused as bad_request.
    assert decode_event(frame, users=False) == msgspec.structs.replace(full, users=())
    with pytest.raises(ProtocolError) as bad:
        decode_event(b'{"type":"login_ok","username":5,"new_user":true,"users":[]}', users=False)
    assert bad.value.code == ErrorCode.BAD_REQUEST
    # The reply to an explicit users request keeps its list; other types are as ever.
    reply = UserList(users=names[:3], id=4)
    assert decode_event(encode(reply)[:-1], users=False) == reply
    b = Broadcast(sender="al", message="hi", ts=1.0)
    assert decode_event(encode(b)[:-1], users=False) == b


def test_events_are_frozen_and_compare_by_value() -> None:
    b = Broadcast(sender="al", message="hi", ts=1.0)
    assert b == Broadcast(sender="al", message="hi", ts=1.0)
    assert hash(b) == hash(Broadcast(sender="al", message="hi", ts=1.0))
    with pytest.raises(AttributeError):
        setattr(b, "message", "changed")  # noqa: B010


def test_unknown_event_type_is_reported() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_event(b'{"type":"fireworks"}')
    assert info.value.code == "unknown_command"
    with pytest.raises(ProtocolError):
        decode_event(b'{"type":"broadcast","from":"","message":"x","ts":1}')


@pytest.mark.parametrize("name", ["a", "A", "0", "al_ice-2", "x" * 32])
def test_valid_usernames(name: str) -> None:
    assert is_valid_username(name)


@pytest.mark.parametrize("name", ["", "_a", "-a", "x" * 33, "a b", "é", "a\n", "a.b"])
def test_invalid_usernames(name: str) -> None:
    assert not is_valid_username(name)


def test_validation_codes() -> None:
    lim = Limits(max_message=5)
    validate_command(PmCommand(message="12345"), lim)
    for bad in ["", "  ", "123456"]:
        with pytest.raises(ProtocolError) as info:
            validate_command(PmCommand(message=bad, id=2), lim)
        assert (info.value.code, info.value.request_id) == (ErrorCode.BAD_REQUEST, 2)
    with pytest.raises(ProtocolError) as info:
        validate_command(LoginCommand(username="no way"), lim)
    assert info.value.code == ErrorCode.INVALID_USERNAME
    with pytest.raises(ProtocolError) as info:
        validate_command(LoginCommand(username="ok", password="x" * 1025), lim)
    assert info.value.code == ErrorCode.WEAK_PASSWORD


def test_msgspec_is_what_decodes() -> None:
    # The fast path must stay a typed msgspec decode (see docs/PERFORMANCE.md).
    assert isinstance(decode_command(b'{"command":"ping"}'), msgspec.Struct)
