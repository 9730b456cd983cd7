"""chatroom_server.rooms: the room model and every check, without sockets or a database."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chatroom.errors import ProtocolError
from chatroom.rooms import Role, RoomEventKind
from chatroom_server.rooms import RoomBook, RoomChange


class Seqs:
    """Applies each change with the next seq, as the log would number it."""

    def __init__(self, book: RoomBook) -> None:
        self.book = book
        self.seq = 100

    def __call__(self, change: RoomChange | None) -> int:
        assert change is not None
        self.seq += 1
        self.book.apply(change, self.seq)
        return self.seq


def refused(code: str, call: Callable[[], object]) -> str:
    with pytest.raises(ProtocolError) as err:
        call()
    assert err.value.code == code, err.value.message
    assert err.value.message  # a clear message for people
    return err.value.message


@pytest.fixture
def book() -> RoomBook:
    return RoomBook(max_rooms=5, max_rooms_per_user=3)


def test_join_creates_a_room_whose_creator_owns_it(book: RoomBook) -> None:
    apply = Seqs(book)
    change = book.join("Alice", "Dev", None, rid=1)
    assert change is not None and change.create and change.role is Role.OWNER
    assert change.event is RoomEventKind.JOIN and change.by == "Alice"
    seq = apply(change)
    room = book.get("DEV")
    assert room is not None and room.name == "Dev" and room.modes == "+nt"
    assert room.member("alice") is not None and room.is_operator("ALICE")
    info = room.info()
    assert info.members == ("Alice",) and info.roles == {"Alice": "owner"}
    # Joining again changes nothing; so does joining lobby.
    assert book.join("alice", "dev", None) is None
    assert book.join("alice", "Lobby", None) is None
    # Another user joins as a member and reads from their join.
    bob_seq = apply(book.join("bob", "dev", None))
    assert book.get("dev").member("bob").role is Role.MEMBER  # type: ignore[union-attr]
    assert book.readable_from("bob", "dev") == bob_seq > seq
    assert [r.name for r in book.rooms_of("BOB")] == ["Dev"]
    assert book.is_member("bob", "lobby") and book.is_member("bob", "DEV")


def test_join_checks_in_order(book: RoomBook) -> None:
    apply = Seqs(book)
    apply(book.join("alice", "dev", None))
    apply(book.mode("alice", "dev", "+ikl", ["s3cr3t", "2"]))
    assert book.get("dev").modes == "+ikntl"  # type: ignore[union-attr]
    refused("invite_only", lambda: book.join("bob", "dev", "s3cr3t"))
    apply(book.mode("alice", "dev", "-i", []))
    refused("bad_key", lambda: book.join("bob", "dev", None))
    refused("bad_key", lambda: book.join("bob", "dev", "wrong"))
    apply(book.join("bob", "dev", "s3cr3t"))
    refused("room_full", lambda: book.join("carol", "dev", "s3cr3t"))


def test_an_invite_passes_i_k_and_l_once(book: RoomBook) -> None:
    apply = Seqs(book)
    apply(book.join("alice", "dev", None))
    apply(book.mode("alice", "dev", "+ikl", ["key", "1"]))
    inv = book.invite("alice", "dev", "Carol")
    assert inv is not None and inv.user == "Carol" and inv.event is RoomEventKind.INVITE
    apply(inv)
    join = book.join("carol", "dev", None)
    assert join is not None and join.invite_used
    apply(join)
    apply(book.part("carol", "dev", "bye"))
    refused("invite_only", lambda: book.join("carol", "dev", "key"))  # used up
    # Inviting a member changes nothing.
    assert book.invite("alice", "dev", "ALICE") is None


def test_part_and_lobby(book: RoomBook) -> None:
    apply = Seqs(book)
    apply(book.join("alice", "dev", None))
    part = book.part("ALICE", "dev", "later")
    assert part.by == "alice" and part.reason == "later"
    apply(part)
    assert book.rooms_of("alice") == [] and book.get("dev").members == {}  # type: ignore[union-attr]
    refused("not_in_room", lambda: book.part("alice", "dev", None))
    refused("no_such_room", lambda: book.part("alice", "nope", None))
    refused("bad_request", lambda: book.part("alice", "lobby", None))
    refused("not_operator", lambda: book.topic("alice", "lobby", "x"))
    assert book.readable_from("anyone", "lobby") == 0
    # An empty room is kept; with no operator left, the next to join becomes one.
    assert book.get("dev") is not None
    join = book.join("bob", "dev", None)
    assert join is not None and not join.create and join.role is Role.OP


def test_topic_and_plus_t(book: RoomBook) -> None:
    apply = Seqs(book)
    apply(book.join("alice", "dev", None))
    apply(book.join("bob", "dev", None))
    refused("not_operator", lambda: book.topic("bob", "dev", "mine"))
    refused("not_in_room", lambda: book.topic("carol", "dev", "x"))
    apply(book.topic("alice", "dev", "release Friday"))
    room = book.get("dev")
    assert room is not None and room.topic == "release Friday" and room.topic_by == "alice"
    apply(book.mode("alice", "dev", "-t", []))
    apply(book.topic("bob", "dev", ""))
    assert room.topic == "" and room.topic_by is None


def test_modes_need_an_operator_and_roles_change(book: RoomBook) -> None:
    apply = Seqs(book)
    apply(book.join("alice", "dev", None))
    apply(book.join("bob", "dev", None))
    apply(book.join("carol", "dev", None))
    refused("not_operator", lambda: book.mode("bob", "dev", "+i", []))
    refused("not_in_room", lambda: book.mode("alice", "dev", "+o", ["dave"]))
    refused("bad_request", lambda: book.mode("alice", "dev", "+q", []))
    change = book.mode("alice", "dev", "+ov", ["bob", "carol"])
    assert change.after is not None
    assert {u: r for u, r, _ in change.after.roles} == {"bob": Role.OP, "carol": Role.VOICE}
    apply(change)
    room = book.get("dev")
    assert room is not None
    assert room.info().roles == {"alice": "owner", "bob": "op", "carol": "voice"}
    # An op sets modes now; nobody changes the owner's role.
    apply(book.mode("bob", "dev", "+sH-v", ["carol"]))
    assert room.modes == "+ntsH" and room.member("carol").role is Role.MEMBER  # type: ignore[union-attr]
    refused("not_operator", lambda: book.mode("bob", "dev", "-o", ["alice"]))
    refused("not_operator", lambda: book.mode("alice", "dev", "-o", ["alice"]))
    apply(book.mode("alice", "dev", "-o", ["bob"]))
    assert not room.is_operator("bob")


def test_voice_alongside_op(book: RoomBook) -> None:
    """docs/PROTOCOL.md §Modes: +v of an operator keeps both (IRC's multi-prefix @+);
    -o leaves the voice, -v the role; the owner's voice changes, its role never."""
    apply = Seqs(book)
    apply(book.join("alice", "dev", None))
    apply(book.join("bob", "dev", None))
    room = book.get("dev")
    assert room is not None
    apply(book.mode("alice", "dev", "+vo", ["bob", "bob"]))
    assert room.info().roles["bob"] == "op" and room.info().voiced == ("bob",)
    apply(book.mode("alice", "dev", "+v", ["alice"]))
    assert room.info().voiced == ("alice", "bob")
    apply(book.mode("alice", "dev", "-o", ["bob"]))
    assert room.info().roles["bob"] == "voice" and room.info().voiced == ("alice",)
    apply(book.mode("alice", "dev", "+o-v", ["bob", "alice"]))  # voice kept with op
    info = room.info()
    assert (info.roles, info.voiced) == ({"alice": "owner", "bob": "op"}, ("bob",))
    apply(book.mode("alice", "dev", "-v", ["bob"]))
    assert room.info().voiced == () and room.info().roles["bob"] == "op"
    refused("not_operator", lambda: book.mode("bob", "dev", "-o", ["alice"]))


def test_history_visibility(book: RoomBook) -> None:
    apply = Seqs(book)
    apply(book.join("alice", "dev", None))
    bob = apply(book.join("bob", "dev", None))
    assert book.readable_from("bob", "dev") == bob
    refused("not_in_room", lambda: book.readable_from("carol", "dev"))
    refused("no_such_room", lambda: book.readable_from("carol", "nope"))
    apply(book.mode("alice", "dev", "+H", []))
    assert book.readable_from("bob", "dev") == 0


def test_secret_rooms_are_listed_to_members_only(book: RoomBook) -> None:
    apply = Seqs(book)
    apply(book.join("alice", "dev", None))
    apply(book.join("alice", "hidden", None))
    apply(book.mode("alice", "hidden", "+sk", ["pw"]))
    apply(book.join("bob", "Zoo", None))
    mine = book.listing("alice")
    assert [(r.name, r.count, r.joined) for r in mine] == [
        ("dev", 1, True),
        ("hidden", 1, True),
        ("Zoo", 1, False),
    ]
    assert [r.name for r in book.listing("bob")] == ["dev", "Zoo"]
    refused("no_such_room", lambda: book.visible_info("bob", "hidden"))
    assert book.visible_info("alice", "hidden").key == "pw"
    apply(book.mode("alice", "hidden", "-s", []))
    assert book.visible_info("bob", "hidden").key is None  # the key: members only


def test_caps(book: RoomBook) -> None:
    apply = Seqs(book)
    for name in ("a", "b", "c"):
        apply(book.join("alice", name, None))
    refused("too_many_rooms", lambda: book.join("alice", "d", None))
    apply(book.join("bob", "d", None))
    apply(book.join("bob", "e", None))
    assert len(book) == 5
    refused("too_many_rooms", lambda: book.join("bob", "f", None))
    apply(book.join("carol", "a", None))  # joining an existing room is fine


def test_load_rebuilds_the_model() -> None:
    book = RoomBook()
    book.load(
        rooms=[("Dev", "tH", "k", 10, "hi", "alice"), ("empty", "", None, None, "", None)],
        members=[("Dev", "alice", "owner", 5), ("dev", "Bob", "member", 9)],
        invites=[("Dev", "carol")],
    )
    room = book.get("dev")
    assert room is not None and room.modes == "+kntlH" and room.topic == "hi"
    assert room.info().members == ("alice", "Bob")
    assert book.readable_from("bob", "dev") == 0  # +H
    join = book.join("carol", "dev", None)
    assert join is not None and join.invite_used
    assert [r.name for r in book.rooms_of("BOB")] == ["Dev"]


def test_room_events_as_frames() -> None:
    book = RoomBook()
    change = book.join("alice", "dev", None)
    assert change is not None
    ev = change.frame(seq=7, ts=1.0)
    assert (ev.room, ev.event, ev.by, ev.seq) == ("dev", "join", "alice", 7)
    assert change.detail() == "{}"
    book.apply(change, 7)
    mode = book.mode("alice", "dev", "+kl", ["pw", "3"])
    assert mode.detail() == '{"modes":"+kl","args":["pw","3"]}'


def test_mode_n_is_stored_as_its_absence_so_older_rooms_are_plus_n() -> None:
    from chatroom_server.rooms import loaded_flags, stored_flags

    assert stored_flags({"n", "t"}) == "t" and stored_flags({"t", "H"}) == "Het"
    assert loaded_flags("t") == {"n", "t"} and loaded_flags("et") == {"t"}
    for flags in ({"n"}, set(), {"i", "n", "s", "m"}, {"H", "t"}):
        assert loaded_flags(stored_flags(flags)) == flags
