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
