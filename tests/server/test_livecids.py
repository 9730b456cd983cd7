"""chatroom_server.livecids: the cids of a guest room's messages, which no log keeps."""

from __future__ import annotations

from chatroom_server.livecids import LiveCids


def test_a_resend_a_conflict_and_the_oldest_forgotten_past_the_bound() -> None:
    cids = LiveCids(kept=2)
    assert cids.check("Ana", "c1", "Room", "hi") is None  # new: remembered
    assert cids.check("ana", "c1", "room", "hi") is True  # any case: a resend
    assert cids.check("ana", "c1", "room", "other") is False  # another message
    assert cids.check("ana", "c1", "elsewhere", "hi") is False
    assert cids.check("bob", "c1", "room", "hi") is None  # cids are per sender
    assert cids.check("ana", "c2", "room", "x") is None  # a third: c1 of ana goes
    assert cids.check("ana", "c1", "room", "hi") is None
