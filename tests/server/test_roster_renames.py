"""chatroom_server.roster: an IRC guest's NICK change in a users_delta (``renamed``),
only in the delta that shows it, and never without one that shows it."""

from __future__ import annotations

import threading
from typing import Any

from chatroom.protocol import UsersDelta, decode_event
from chatroom_server.roster import UsersPublisher


class _Outbox:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def queue(self, data: bytes) -> bool:
        self.frames.append(data)
        return True

    def push(self) -> None:
        pass


class _Member:
    def __init__(self) -> None:
        self.username: str | None = "watcher"
        self.outbox: Any = _Outbox()


def test_renamed_only_in_the_delta_that_shows_the_rename() -> None:
    live = ["alice", "watcher"]
    pub = UsersPublisher(lambda: list(live), stopping=threading.Event())
    member = _Member()
    with pub.subscribing(member):
        pass
    pub._publish()  # the list as it is: alice and watcher
    pub.renaming("alice", "malice")  # noted before the live list shows it
    pub._publish()  # nothing changed yet: the note waits
    live[0] = "malice"
    pub.renaming("bob", "robert")  # a guest that renamed and left before anyone heard
    pub._publish()
    deltas = [decode_event(f) for f in member.outbox.frames]
    assert all(isinstance(d, UsersDelta) for d in deltas)
    last = deltas[-1]
    assert isinstance(last, UsersDelta)
    assert (last.left, last.joined, last.renamed) == (
        ("alice",),
        ("malice",),
        (("alice", "malice"),),
    )
    assert not pub._renames  # neither note is kept


def _deltas(member: _Member) -> list[UsersDelta]:
    out = []
    for f in member.outbox.frames:
        d = decode_event(f)
        assert isinstance(d, UsersDelta)
        out.append(d)
    return out


def test_renames_between_two_deltas_show_as_one() -> None:
    # A rename storm inside one publication window: the delta shows amy gone and cat
    # there, and that is one guest, amy, now cat (IRC: one NICK, not a QUIT and a JOIN).
    live = ["amy", "watcher"]
    pub = UsersPublisher(lambda: list(live), stopping=threading.Event())
    member = _Member()
    with pub.subscribing(member):
        pass
    pub._publish()
    pub.renaming("amy", "bea")
    live[0] = "bea"
    pub.renaming("bea", "cat")
    live[0] = "cat"
    pub._publish()
    last = _deltas(member)[-1]
    assert (last.left, last.joined, last.renamed) == (("amy",), ("cat",), (("amy", "cat"),))
    assert not pub._renames


def test_a_rename_undone_before_a_delta_leaves_no_note_behind() -> None:
    # amy -> bea -> amy between two deltas: nothing to show, and nothing kept, however
    # often (a storm would grow the notes without end), and no stale note that later
    # pairs amy's quit with a newcomer called bea as one guest renamed.
    live = ["amy", "watcher"]
    pub = UsersPublisher(lambda: list(live), stopping=threading.Event())
    member = _Member()
    with pub.subscribing(member):
        pass
    pub._publish()
    for _ in range(100):
        pub.renaming("amy", "bea")
        live[0] = "bea"
        pub.renaming("bea", "amy")
        live[0] = "amy"
    pub._publish()
    assert len(pub._renames) == 0
    live[0] = "bea"  # amy quit; another guest, bea, arrived
    pub._publish()
    last = _deltas(member)[-1]
    assert (last.left, last.joined, last.renamed) == (("amy",), ("bea",), ())
