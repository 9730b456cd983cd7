"""chatroom.rooms: the frames of docs/PROTOCOL.md §Rooms, room names, mode strings. No I/O."""

from __future__ import annotations

import json

import msgspec
import pytest

from chatroom.errors import ErrorCode, ProtocolError, RoomError, error_for_code
from chatroom.protocol import (
    Ack,
    Broadcast,
    FrameDecoder,
    HistoryCommand,
    Limits,
    LoginOk,
    PmCommand,
    UsersDelta,
    decode_command,
    decode_event,
    encode,
    validate_command,
)
from chatroom.rooms import (
    InviteCommand,
    JoinCommand,
    MembersCommand,
    ModeChange,
    ModeCommand,
    PartCommand,
    RoomEvent,
    RoomInfo,
    RoomInfoReply,
    RoomList,
    RoomListing,
    RoomsCommand,
    TopicCommand,
    apply_event,
    format_modes,
    is_valid_room,
    parse_modes,
    room_key,
)

COMMANDS = [
    JoinCommand(room="dev", id=1),
    JoinCommand(room="Secret", key="s3cr3t", id="j"),
    PartCommand(room="dev", reason="bye now"),
    RoomsCommand(id=2),
    TopicCommand(room="dev"),
    TopicCommand(room="dev", topic="release on Friday"),
    TopicCommand(room="dev", topic=""),
    InviteCommand(room="dev", user="bob"),
    ModeCommand(room="dev"),
    ModeCommand(room="dev", modes="+kl-t", args=("key", "10")),
    MembersCommand(room="dev", id=3),
    PmCommand(message="hi", room="dev", cid="c1"),
    HistoryCommand(room="dev", before=10, limit=5),
]

EVENTS = [
    RoomInfoReply(
        info=RoomInfo(
            name="dev",
            topic="t",
            topic_by="alice",
            modes="+iklt",
            key="k",
            limit=5,
            members=("alice", "bob"),
            roles={"alice": "owner"},
        ),
        seq=51,
        id=1,
    ),
    RoomInfoReply(info=RoomInfo(name="dev")),
    RoomList(rooms=(RoomListing(name="dev", count=2, topic="t", modes="+t", joined=True),), id=2),
    RoomList(rooms=()),
    RoomEvent(room="dev", event="join", by="bob", ts=1.5, seq=52),
    RoomEvent(room="dev", event="part", by="bob", ts=1.5, seq=53, reason="later", replayed=True),
    RoomEvent(room="dev", event="topic", by="alice", ts=2.0, seq=54, topic="new"),
    RoomEvent(room="dev", event="mode", by="alice", ts=2.0, seq=55, modes="+o", args=("bob",)),
    RoomEvent(room="dev", event="invite", by="alice", ts=2.0, seq=56, user="carol"),
    Ack(command="join", room="dev", seq=57, id=4),
    Broadcast(sender="bob", message="hi", ts=3.0, seq=58, room="dev"),
    UsersDelta(count=3, joined=("x",), room="lobby"),
    LoginOk(
        username="alice",
        new_user=False,
        users=("alice",),
        version=2,
        features=("rooms",),
        rooms=(RoomInfo(name="dev", members=("alice",), roles={"alice": "owner"}),),
    ),
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: type(c).__name__)
def test_room_commands_round_trip(cmd: object) -> None:
    frame = encode(cmd)  # type: ignore[arg-type]
    assert frame.endswith(b"\n") and frame.count(b"\n") == 1
    assert decode_command(frame[:-1]) == cmd
    validate_command(decode_command(frame[:-1]), Limits())


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_room_events_round_trip(event: object) -> None:
    frame = encode(event)  # type: ignore[arg-type]
    assert decode_event(frame[:-1]) == event


def test_room_frames_fed_one_byte_at_a_time() -> None:
    stream = b"".join(encode(e) for e in EVENTS)
    dec = FrameDecoder(4096)
    frames: list[bytes] = []
    for i in range(len(stream)):
        frames += dec.feed(stream[i : i + 1])
    assert [decode_event(f) for f in frames] == EVENTS
    assert dec.pending == 0


def test_wire_names_and_v1_frames_unchanged() -> None:
    # A v1 connection's frames carry no room field: each is left out when absent.
    assert json.loads(encode(Broadcast(sender="a", message="m", ts=1.0, seq=2))) == {
        "type": "broadcast",
        "from": "a",
        "message": "m",
        "ts": 1.0,
        "seq": 2,
    }
    assert b"room" not in encode(Ack(command="pm", seq=3))
    assert b"rooms" not in encode(LoginOk(username="a", new_user=False, users=("a",)))
    ev = json.loads(encode(RoomEvent(room="r", event="part", by="b", ts=1.0, replayed=True)))
    assert ev == {
        "type": "room_event",
        "room": "r",
        "event": "part",
        "by": "b",
        "ts": 1.0,
        "replay": True,
    }
    reply = json.loads(encode(EVENTS[0]))
    assert reply["info"]["roles"] == {"alice": "owner"} and reply["seq"] == 51


def test_a_brief_login_ok_keeps_its_rooms() -> None:
    ok = EVENTS[-1]
    brief = decode_event(encode(ok)[:-1], users=False)
    assert isinstance(brief, LoginOk) and brief.users == () and brief.rooms == ok.rooms  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["lobby", "a", "Dev-Team_2", "9" * 32])
def test_valid_room_names(name: str) -> None:
    assert is_valid_room(name)


@pytest.mark.parametrize("name", ["", "#dev", "-x", "_x", "a b", "a" * 33, "é", "dev\n"])
def test_invalid_room_names(name: str) -> None:
    assert not is_valid_room(name)
    with pytest.raises(ProtocolError) as err:
        validate_command(JoinCommand(room=name, id=9), Limits())
    assert err.value.code == ErrorCode.INVALID_ROOM and err.value.request_id == 9
    for cmd in (PmCommand(message="x", room=name), HistoryCommand(room=name)):
        with pytest.raises(ProtocolError) as err:
            validate_command(cmd, Limits())
        assert err.value.code == ErrorCode.INVALID_ROOM


def test_room_names_fold_case() -> None:
    assert room_key("Dev") == room_key("DEV") == "dev"


def test_parse_modes() -> None:
    assert parse_modes("+kl-t", ["key", "10"]) == (
        ModeChange(True, "k", "key"),
        ModeChange(True, "l", "10"),
        ModeChange(False, "t"),
    )
    assert parse_modes("-kl+o-v", ["bob", "carol"]) == (
        ModeChange(False, "k"),
        ModeChange(False, "l"),
        ModeChange(True, "o", "bob"),
        ModeChange(False, "v", "carol"),
    )
    assert parse_modes("+iHs") == tuple(ModeChange(True, c) for c in "iHs")


@pytest.mark.parametrize(
    ("modes", "args"),
    [
        ("", []),
        ("ik", []),
        ("+", []),
        ("+x", []),
        ("+k", []),
        ("+k", ["has space"]),
        ("+k", ["a" * 24]),
        ("+l", ["0"]),
        ("+l", ["ten"]),
        ("+l", ["100001"]),
        ("+o", ["#bad"]),
        ("+i", ["extra"]),
    ],
)
def test_bad_mode_strings(modes: str, args: list[str]) -> None:
    with pytest.raises(ProtocolError) as err:
        validate_command(ModeCommand(room="r", modes=modes, args=tuple(args), id=5), Limits())
    assert err.value.code == ErrorCode.BAD_REQUEST and err.value.request_id == 5


def test_format_modes_is_canonical() -> None:
    assert format_modes("tHki") == "+iktH"
    assert format_modes("") == ""


@pytest.mark.parametrize(
    "cmd",
    [
        TopicCommand(room="r", topic="x" * 391),
        TopicCommand(room="r", topic="two\nlines"),
        PartCommand(room="r", reason="x" * 301),
        InviteCommand(room="r", user="no one"),
        ModeCommand(room="r", args=("x",)),
        JoinCommand(room="r", key="k" * 24),
        HistoryCommand(room="r", with_user="bob"),
    ],
)
def test_room_command_rules(cmd: object) -> None:
    with pytest.raises(ProtocolError) as err:
        validate_command(cmd, Limits())  # type: ignore[arg-type]
    assert err.value.code == ErrorCode.BAD_REQUEST


def test_room_error_codes_map_to_room_error() -> None:
    for code in (
        "no_such_room",
        "not_in_room",
        "invite_only",
        "bad_key",
        "room_full",
        "invalid_room",
        "not_operator",
        "too_many_rooms",
    ):
        assert ErrorCode(code) == code
        assert type(error_for_code(code, "m")) is RoomError


def test_missing_room_field_is_bad_request() -> None:
    with pytest.raises(ProtocolError) as err:
        decode_command(b'{"command":"join","id":3}')
    assert err.value.code == ErrorCode.BAD_REQUEST and err.value.request_id == 3
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"name":"x","count":"two"}', type=RoomListing)


def test_apply_event_renames_a_member_and_drops_one_who_quit() -> None:
    from chatroom.rooms import apply_event

    info = RoomInfo(name="g", members=("alice", "bob"), roles={"alice": "op"})
    renamed = apply_event(info, RoomEvent(room="g", event="nick", by="alice", user="Zed", ts=1.0))
    assert renamed.members == ("bob", "Zed") and renamed.roles == {"Zed": "op"}
    quit_ = apply_event(renamed, RoomEvent(room="g", event="quit", by="zed", ts=2.0))
    assert quit_.members == ("bob",) and quit_.roles == {}


def test_a_client_keeps_voice_alongside_op_as_the_server_does() -> None:
    """apply_event follows docs/PROTOCOL.md §Modes as chatroom_server.rooms does: +v
    of an op is listed in ``voiced``; -o leaves a voiced op ``voice``."""

    def mode(info: RoomInfo, modes: str, *args: str) -> RoomInfo:
        event = RoomEvent(room="dev", event="mode", by="alice", ts=1.0, modes=modes, args=args)
        return apply_event(info, event)

    info = RoomInfo(name="dev", members=("alice", "bob"), roles={"alice": "owner"})
    info = mode(info, "+ov", "bob", "bob")
    assert (info.roles, info.voiced) == ({"alice": "owner", "bob": "op"}, ("bob",))
    info = mode(info, "+v", "alice")
    assert info.voiced == ("alice", "bob")
    info = mode(info, "-o", "bob")
    assert (info.roles, info.voiced) == ({"alice": "owner", "bob": "voice"}, ("alice",))
    info = mode(info, "-v", "bob")
    assert (info.roles, info.voiced) == ({"alice": "owner"}, ("alice",))
    renamed = apply_event(info, RoomEvent(room="dev", event="nick", by="alice", user="Al", ts=2.0))
    assert renamed.voiced == ("Al",)
    gone = RoomEvent(room="dev", event="part", by="alice", ts=2.0)
    assert apply_event(info, gone).voiced == ()
