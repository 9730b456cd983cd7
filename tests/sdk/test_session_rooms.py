"""The client session's rooms (docs/PROTOCOL.md §Rooms), with no server: bytes in,
events out. The rooms it keeps, the cursor across rooms, replies and room events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatroom.protocol import Broadcast, PmCommand
from chatroom.rooms import (
    JoinCommand,
    MembersCommand,
    PartCommand,
    RoomEvent,
    RoomInfo,
    TopicCommand,
)
from chatroom.session import ClientSession, Reply, SessionEvent


def frame(**fields: Any) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def feed(s: ClientSession, data: bytes, *, bytewise: bool = False) -> list[SessionEvent]:
    if not bytewise:
        return s.receive_data(data, 0.0)
    events: list[SessionEvent] = []
    for i in range(len(data)):
        events += s.receive_data(data[i : i + 1], 0.0)
    return events


DEV = {
    "name": "Dev",
    "topic": "ship it",
    "topic_by": "alice",
    "modes": "+t",
    "members": ["alice", "bob"],
    "roles": {"alice": "owner"},
}


def in_rooms(**extra: Any) -> ClientSession:
    s = ClientSession(rooms=True)
    s.connection_made(0.0)
    rid, data = s.login("alice", "correct horse")
    assert json.loads(data)["features"] == ["users_delta", "rooms"]
    ok = dict(
        type="login_ok",
        username="alice",
        new_user=False,
        users=["alice", "bob"],
        version=2,
        features=["users_delta", "rooms"],
        rooms=[DEV],
        seq=10,
        epoch="e",
        id=rid,
    )
    (reply,) = feed(s, frame(**{**ok, **extra}))
    assert isinstance(reply, Reply)
    return s


def event(seq: int, **fields: Any) -> bytes:
    return frame(type="room_event", ts=1.0, seq=seq, **fields)


def test_without_rooms_nothing_is_asked_and_nothing_is_on() -> None:
    s = ClientSession()
    _, data = s.login("alice", "correct horse")
    assert json.loads(data)["features"] == ["users_delta"]
    assert not s.want_rooms and not s.rooms_on and s.rooms == ()


def test_login_ok_gives_the_rooms(caplog: pytest.LogCaptureFixture) -> None:
    s = in_rooms()
    assert s.rooms_on and s.cursor == 10
    (dev,) = s.rooms
    assert dev.name == "Dev" and dev.members == ("alice", "bob") and dev.roles == {"alice": "owner"}
    assert s.room("DEV") is dev and s.room("nope") is None
    assert "newer client" not in caplog.text  # version 2 is this SDK's


def test_a_server_that_did_not_turn_rooms_on() -> None:
    s = in_rooms(features=["users_delta"], version=1, rooms=[])
    assert s.want_rooms and not s.rooms_on and s.rooms == ()


@pytest.mark.parametrize("bytewise", [False, True])
def test_room_events_move_the_cursor_and_the_rooms(bytewise: bool) -> None:
    s = in_rooms()
    data = b"".join(
        [
            event(11, room="Dev", event="join", by="carol"),
            frame(type="broadcast", message="hi", ts=1.0, seq=12, room="Dev", **{"from": "carol"}),
            event(13, room="Dev", event="topic", by="bob", topic="new"),
            event(14, room="Dev", event="mode", by="alice", modes="+kol", args=["pw", "bob", "5"]),
            event(15, room="Dev", event="part", by="carol", reason="bye"),
            event(13, room="Dev", event="topic", by="bob", topic="again"),  # a duplicate
            event(16, room="Dev", event="some_later_kind", by="bob"),
        ]
    )
    events = feed(s, data, bytewise=bytewise)
    assert [type(e) for e in events] == [
        RoomEvent,
        Broadcast,
        RoomEvent,
        RoomEvent,
        RoomEvent,
        RoomEvent,
    ]
    assert isinstance(events[1], Broadcast) and events[1].room == "Dev"
    assert s.cursor == 16
    dev = s.room("dev")
    assert dev == RoomInfo(
        name="Dev",
        topic="new",
        topic_by="bob",
        modes="+ktl",
        key="pw",
        limit=5,
        members=("alice", "bob"),
        roles={"alice": "owner", "bob": "op"},
    )
    feed(s, event(17, room="Dev", event="mode", by="alice", modes="-o-k", args=["bob"]))
    dev = s.room("dev")
    assert dev is not None and dev.roles == {"alice": "owner"} and dev.modes == "+tl"


def test_join_reply_adds_the_room_and_its_seq_is_ours() -> None:
    s = in_rooms()
    rid, data = s.request(JoinCommand(room="ops", key="k"))
    assert json.loads(data) == {"command": "join", "room": "ops", "key": "k", "id": rid}
    info = {"name": "ops", "modes": "+t", "members": ["alice"], "roles": {"alice": "owner"}}
    (reply,) = feed(s, frame(type="room_info", info=info, seq=11, id=rid))
    assert isinstance(reply, Reply)
    assert [r.name for r in s.rooms] == ["Dev", "ops"] and s.cursor == 11
    # Our own join, replayed after a cut, is not passed back.
    assert feed(s, event(11, room="ops", event="join", by="alice", replay=True)) == []
    # A members reply for a room we are not in adds nothing; for one we are in, updates.
    rid, _ = s.request(MembersCommand(room="Zoo"))
    feed(s, frame(type="room_info", info={"name": "Zoo", "members": ["bob"]}, id=rid))
    assert [r.name for r in s.rooms] == ["Dev", "ops"]
    rid, _ = s.request(MembersCommand(room="ops"))
    feed(s, frame(type="room_info", info={**info, "members": ["alice", "bob"]}, id=rid))
    assert s.room("OPS").members == ("alice", "bob")  # type: ignore[union-attr]


def test_parting_drops_the_room_by_reply_or_by_event() -> None:
    s = in_rooms()
    rid, _ = s.request(PartCommand(room="dev", reason="later"))
    (reply,) = feed(s, frame(type="ack", command="part", room="Dev", seq=11, id=rid))
    assert isinstance(reply, Reply) and s.rooms == () and s.cursor == 11
    s = in_rooms()
    # Another session of ours parted: the event says so.
    (ev,) = feed(s, event(11, room="Dev", event="part", by="ALICE"))
    assert isinstance(ev, RoomEvent) and s.rooms == ()
    # Ours joined elsewhere: the room is back, with us in it until a members reply.
    feed(s, event(12, room="Dev", event="join", by="alice"))
    assert s.room("dev") == RoomInfo(name="Dev", members=("alice",))


def test_room_events_in_a_replay_are_counted() -> None:
    s = ClientSession(rooms=True)
    rid, _ = s.login("alice", "correct horse", since=3)
    ok = frame(
        type="login_ok",
        username="alice",
        new_user=False,
        users=["alice"],
        version=2,
        features=["rooms"],
        rooms=[DEV],
        seq=6,
        epoch="e",
        replay=True,
        id=rid,
    )
    assert feed(s, ok) == []
    events = feed(
        s,
        event(4, room="Dev", event="topic", by="bob", topic="t", replay=True)
        + frame(
            type="broadcast", message="m", ts=1.0, seq=5, room="Dev", replay=True, **{"from": "bob"}
        )
        + frame(type="replay_done", count=2, seq=6),
    )
    assert [type(e).__name__ for e in events] == ["RoomEvent", "Broadcast", "Reply"]
    done = events[-1]
    assert isinstance(done, Reply) and done.result is not None and done.result.replayed == 2
    assert s.room("dev").topic == "t" and s.cursor == 6  # type: ignore[union-attr]


def test_room_fields_on_requests() -> None:
    s = in_rooms()
    _, data = s.request(PmCommand(message="hi", room="Dev"))
    assert json.loads(data)["room"] == "Dev"
    _, data = s.request(TopicCommand(room="Dev", topic=""))
    assert json.loads(data) == {"command": "topic", "room": "Dev", "topic": "", "id": 3}
