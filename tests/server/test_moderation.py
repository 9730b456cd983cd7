"""chatroom_server.moderation through the room service: bans and mutes that end, what
a ban or kick leaves of a membership, and the model rebuilt from the database as it
was. Simulated time (each command one second after the last); no sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chatroom.errors import ProtocolError
from chatroom_server.messagelog import MessageLog
from chatroom_server.moderation import Moderation
from chatroom_server.rooms import RoomBook
from chatroom_server.roomservice import RoomService
from tests.server.test_roomservice import World


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    log = MessageLog(tmp_path / "chat.db", readers=1)
    world = World(log)
    world.do("Alice", command="join", room="dev")
    world.do("Bob", command="join", room="dev")
    world.do("Carol", command="join", room="dev")
    yield world
    log.close()


def test_a_ban_with_a_duration_ends_by_itself(w: World) -> None:
    reply, event, to = w.change("Alice", command="ban", room="dev", user="bob", duration=5)
    assert (reply["command"], reply["to"]) == ("ban", "Bob")
    assert event["expires"] == event["ts"] + 5 and to == {"bob", "carol"}
    assert "Bob" not in w.service.book.members_of("dev")
    w.refused("banned", "Bob", command="join", room="dev")  # at +1
    w.ts += 2
    w.refused("banned", "Bob", command="join", room="dev")  # at +4
    reply, _, _ = w.change("Bob", command="join", room="dev")  # at +5: it has ended
    assert reply["type"] == "room_info"
    banned = w.answer("Alice", command="bans", room="dev")
    assert banned == {"type": "bans", "room": "dev"}  # ended bans are not listed


def test_a_mute_ends_by_itself_and_when_its_member_leaves(w: World) -> None:
    w.do("Alice", command="mute", room="dev", user="carol", duration=2)
    svc = w.service
    with pytest.raises(ProtocolError, match="muted you"):
        svc.recipients("dev", "Carol", now=w.ts + 1)
    assert svc.recipients("dev", "Carol", now=w.ts + 2) is not None
    w.do("Alice", command="mute", room="dev", user="carol")
    w.do("Carol", command="part", room="dev")
    w.do("Carol", command="join", room="dev")
    assert svc.recipients("dev", "Carol", now=w.ts) is not None


def test_bans_and_mutes_are_rebuilt_from_the_database(w: World) -> None:
    w.do("Alice", command="ban", room="dev", user="bob", reason="spam")
    w.do("Alice", command="mute", room="dev", user="carol", duration=100)
    mod = Moderation()
    mod.load(*w.log.load_moderation())
    book = RoomBook()
    book.load(*w.log.load_rooms())
    again = RoomService(book, mod)
    assert again.moderation.bans("dev", w.ts) == w.service.moderation.bans("dev", w.ts)
    with pytest.raises(ProtocolError, match="muted you"):
        again.recipients("dev", "Carol", now=w.ts)
    w.do("Alice", command="unban", room="dev", user="bob")
    w.do("Alice", command="unmute", room="dev", user="carol")
    mod = Moderation()
    mod.load(*w.log.load_moderation())
    assert mod.bans("dev", w.ts) == ()
