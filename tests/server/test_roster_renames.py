"""chatroom_server.roster: an IRC guest's NICK change in a users_delta (``renamed``),
only in the delta that shows it, and never without one that shows it."""

from __future__ import annotations

import threading
from collections import deque
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


class _Racing(deque[tuple[str, str]]):
    """The notes, with bea -> cat noted (renaming() takes no lock) just as a delta
    takes amy -> bea out of them."""

    def __init__(self, live: list[str]) -> None:
        super().__init__()
        self.live = live
        self.fired = False

    def popleft(self) -> tuple[str, str]:
        note = super().popleft()
        if note == ("amy", "bea") and not self.fired:
            self.fired = True
            self.live[0] = "bea"  # the rename lands after this delta read the list
            self.append(("bea", "cat"))
            self.live[0] = "cat"
        return note


def test_a_note_made_during_a_publication_chains_with_the_waiting_one() -> None:
    # amy -> bea is noted, not yet live, when a delta is made; bea -> cat is noted while
    # that delta runs. The next delta shows one rename, amy -> cat.
    live = ["amy", "watcher"]
    pub = UsersPublisher(lambda: list(live), stopping=threading.Event())
    member = _Member()
    with pub.subscribing(member):
        pass
    pub._publish()
    pub._renames = _Racing(live)
    pub.renaming("amy", "bea")
    pub._publish()  # nothing changed in the list it read: amy -> bea waits
    pub._publish()
    last = _deltas(member)[-1]
    assert (last.left, last.joined, last.renamed) == (("amy",), ("cat",), (("amy", "cat"),))
