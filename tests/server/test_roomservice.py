"""chatroom_server.roomservice: each room command's answer, or its change stored as a
room_event and what then goes to whom. No sockets: the message log is a temp SQLite
file, appended to as the fan-out's writer would."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatroom.errors import ProtocolError
from chatroom.protocol import decode_command
from chatroom_server.messagelog import MessageLog
from chatroom_server.rooms import Members, RoomBook
from chatroom_server.roomservice import Answer, Delivery, RoomService, ToStore

ACCOUNTS = {"alice": "Alice", "bob": "Bob", "carol": "Carol"}


class World:
    """A service, its log, and a clock: ``run(user, frame)`` does what the server does."""

    def __init__(self, log: MessageLog) -> None:
        self.log = log
        self.service = RoomService(RoomBook())
        self.ts = 100.0

    def _do(self, who: str, frame: dict[str, Any]) -> Answer | Delivery:
        cmd = decode_command(json.dumps(frame).encode())
        self.ts += 1
        got = self.service.handle(who, cmd, self.ts, lambda n: ACCOUNTS.get(n.lower()))  # type: ignore[arg-type]
        if isinstance(got, Answer):
            return got
        assert isinstance(got, ToStore)
        (seq,) = self.log.append([got.message])
        assert isinstance(seq, int)
        return self.service.stored(got.change, seq, self.ts, frame.get("id"))

    def answer(self, who: str, **frame: Any) -> dict[str, Any]:
        """A command answered at once: its reply."""
        got = self._do(who, frame)
        assert isinstance(got, Answer), got
        out: dict[str, Any] = json.loads(got.frame)
        return out

    def change(self, who: str, **frame: Any) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
        """A command that stores a change: (its reply, the event, to whom)."""
        got = self._do(who, frame)
        assert isinstance(got, Delivery), got
        return json.loads(got.reply), json.loads(got.event), set(got.to)

    def do(self, who: str, **frame: Any) -> None:
        """A command whose outcome the test does not look at."""
        self._do(who, frame)

    def refused(self, code: str, who: str, **frame: Any) -> None:
        with pytest.raises(ProtocolError) as err:
            self._do(who, frame)
        assert err.value.code == code


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    log = MessageLog(tmp_path / "chat.db", readers=1)
    yield World(log)
    log.close()


def test_join_part_and_who_hears_of_it(w: World) -> None:
    reply, event, to = w.change("Alice", command="join", room="Dev", id=1)
    assert reply["type"] == "room_info" and reply["id"] == 1 and reply["seq"] == 1
    assert reply["info"] == {
        "name": "Dev",
        "modes": "+nt",
        "members": ["Alice"],
        "roles": {"Alice": "owner"},
        "created": 101.0,  # the join's time
    }
    assert event == {
        "type": "room_event",
        "room": "Dev",
        "event": "join",
        "by": "Alice",
        "ts": 101.0,
        "seq": 1,
    }
    assert to == set()  # nobody else is in it yet
    _, event, to = w.change("Bob", command="join", room="dev")
    assert event["by"] == "Bob" and to == {"alice"}
    # Again: nothing stored, the room as it is.
    again = w.answer("Bob", command="join", room="DEV", id=2)
    assert (
        again["type"] == "room_info"
        and "seq" not in again
        and again["info"]["members"] == ["Alice", "Bob"]
    )
    lobby = w.answer("Bob", command="join", room="lobby")
    assert lobby["info"] == {"name": "lobby", "modes": "+H"}
    reply, event, to = w.change("Bob", command="part", room="dev", reason="lunch", id=3)
    assert reply == {"type": "ack", "command": "part", "seq": 3, "room": "Dev", "id": 3}
    assert event["reason"] == "lunch" and to == {"alice"}  # those who stay
    w.refused("not_in_room", "Bob", command="part", room="dev")
    w.refused("bad_request", "Bob", command="part", room="lobby")


def test_reads_answer_at_once(w: World) -> None:
    w.do("Alice", command="join", room="Dev")
    w.do("Alice", command="topic", room="Dev", topic="ship it")
    rooms = w.answer("Bob", command="rooms", id=5)
    assert rooms == {
        "type": "rooms",
        "rooms": [{"name": "Dev", "count": 1, "topic": "ship it", "modes": "+nt"}],
        "id": 5,
    }
    members = w.answer("Bob", command="members", room="dev")
    assert members["info"]["members"] == ["Alice"]
    w.refused("not_in_room", "Bob", command="topic", room="dev")
    assert w.answer("Alice", command="topic", room="dev")["info"]["topic"] == "ship it"
    assert w.answer("Alice", command="mode", room="dev")["info"]["modes"] == "+nt"
    w.refused("no_such_room", "Bob", command="members", room="nope")


def test_changes_by_operators_and_invites(w: World) -> None:
    w.do("Alice", command="join", room="Dev")
    w.do("Bob", command="join", room="Dev")
    w.refused("not_operator", "Bob", command="mode", room="dev", modes="+i")
    reply, event, to = w.change("Alice", command="mode", room="dev", modes="+ik", args=["pw"])
    assert (
        reply["command"] == "mode"
        and event["modes"] == "+ik"
        and event["args"] == ["pw"]
        and to == {"bob"}
    )
    w.refused("unknown_user", "Alice", command="invite", room="dev", user="nobody")
    reply, event, to = w.change("Alice", command="invite", room="dev", user="CAROL")
    assert reply["to"] == "Carol" and event["user"] == "Carol" and to == {"bob", "carol"}
    # Inviting a member changes nothing.
    assert w.answer("Alice", command="invite", room="dev", user="bob") == {
        "type": "ack",
        "command": "invite",
        "to": "Bob",
        "room": "Dev",
        "unchanged": True,
    }
    _, event, to = w.change("Carol", command="join", room="dev")
    assert to == {"alice", "bob"}
    w.refused("invite_only", "Zed", command="join", room="dev", key="pw")


def test_who_gets_a_room_message_and_what_a_member_reads(w: World) -> None:
    w.do("Alice", command="join", room="Dev")
    _, bob_join, _ = w.change("Bob", command="join", room="Dev")
    s = w.service
    assert s.recipients(None, "Alice") is None and s.recipients("LOBBY", "x") is None
    assert s.recipients("dev", "Bob") == frozenset({"alice", "bob"})
    with pytest.raises(ProtocolError) as err:
        s.recipients("dev", "Carol", rid=4)
    assert err.value.code == "not_in_room" and err.value.request_id == 4
    assert s.room_name("DEV") == "Dev" and s.room_name(None) == "lobby"
    assert s.readable_from("bob", "dev") == bob_join["seq"] and s.readable_from("x", None) == 0
    stored = w.log.replay_page("bob", 0, 10, 10_000, rooms=True)
    frames = [s.event_frame(m, replayed=True) for m in stored if m.event is not None]
    assert [(f.room, f.event, f.by, f.replayed) for f in frames] == [("Dev", "join", "Bob", True)]


def test_a_room_messages_members_follow_every_change_between_two(w: World) -> None:
    # The members' keys are kept between messages (rooms.Members), never copied a
    # message: every change in between must show in the next message's set, and a set
    # handed out must stay what it was, as the copy did.
    w.do("Alice", command="join", room="Dev")
    s = w.service
    first = s.recipients("dev", "Alice")
    assert first == frozenset({"alice"})
    assert s.recipients("DEV", "ALICE") is first  # no change: the same set, any spelling
    assert s.speaker_room("dEv", "alice") is s.speaker_room("Dev", "Alice")
    w.do("Bob", command="join", room="DEV")  # a member joining mid-burst
    second = s.recipients("dev", "Alice")
    assert second == frozenset({"alice", "bob"}) and first == frozenset({"alice"})
    w.do("Carol", command="join", room="dev")
    w.do("Bob", command="part", room="dev")
    assert s.recipients("Dev", "Alice") == frozenset({"alice", "carol"})
    assert second == frozenset({"alice", "bob"})  # what was handed out stays
    w.do("Alice", command="kick", room="dev", user="carol")
    assert s.recipients("dev", "Alice") == frozenset({"alice"})
    with pytest.raises(ProtocolError) as err:
        s.recipients("dev", "Carol", rid=7)  # kicked between two of its messages
    assert (err.value.code, err.value.message) == ("not_in_room", "you are not in Dev")
    with pytest.raises(ProtocolError) as err:
        s.recipients("Nope", "Alice", rid=8)
    assert (err.value.code, err.value.message) == ("no_such_room", "there is no room Nope")


def test_the_kept_member_set_follows_a_guest_renamed(w: World) -> None:
    book = w.service.book
    change = book.join("visitor", "cafe", None, None, True)
    assert change is not None
    book.apply(change, 1)
    assert w.service.recipients("cafe", "visitor") == frozenset({"visitor"})
    book.rename("visitor", "Guest2")  # NICK between two messages (docs/IRC.md)
    assert w.service.recipients("CAFE", "guest2") == frozenset({"guest2"})
    room = book.get("cafe")
    assert room is not None
    kept = room.members.key_set()
    touches: tuple[Callable[[Members], object], ...] = (
        lambda m: m.update({}),
        lambda m: m.setdefault("x", m["guest2"]),
        lambda m: m.pop("x"),
        lambda m: m.__setitem__("y", m["guest2"]),
        lambda m: m.__delitem__("y"),
        lambda m: m.__ior__({}),
    )
    for touch in touches:
        touch(room.members)  # every way a dict changes drops the kept set
        assert room.members.key_set() is not kept
        assert room.members.key_set() == frozenset(room.members)
        kept = room.members.key_set()


def test_minus_n_lets_non_members_speak_but_not_the_banned(w: World) -> None:
    # docs/PROTOCOL.md §Modes: n (on at creation) keeps out messages from outside.
    w.do("Alice", command="join", room="Dev")
    s = w.service
    w.refused("no_such_room", "Alice", command="mode", room="nope", modes="-n")
    reply, event, _ = w.change("Alice", command="mode", room="dev", modes="-n")
    assert reply["command"] == "mode" and event["modes"] == "-n"
    assert w.answer("Bob", command="members", room="dev")["info"]["modes"] == "+t"
    # The members hear it; the sender, not one, is not among them (it has its ack).
    assert s.recipients("dev", "Carol") == frozenset({"alice"})
    w.do("Alice", command="ban", room="dev", user="carol")
    with pytest.raises(ProtocolError) as err:
        s.recipients("dev", "Carol", rid=5)
    assert err.value.code == "banned"
    w.do("Alice", command="mode", room="dev", modes="+m")
    with pytest.raises(ProtocolError) as err:
        s.recipients("dev", "Bob")  # +m: voice or operators only, outside or in
    assert err.value.code == "muted"
    w.do("Alice", command="mode", room="dev", modes="-m+n")
    with pytest.raises(ProtocolError) as err:
        s.recipients("dev", "Bob")
    assert err.value.code == "not_in_room"
