"""The delivery loop the fan-out and a cluster node share (chatroom_server.delivery), on
real sockets: each recipient its share in entry order, nobody their own public message,
a direct entry to its recipient only, frames queued earlier kept ahead, and the
deliveries counted as frames handed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chatroom_server.delivery import Entry, deliver
from chatroom_server.fanitems import Member
from tests.helpers import SocketMember, socket_members


@pytest.fixture
def members() -> Iterator[list[SocketMember]]:
    with socket_members(4) as made:
        yield made


def test_one_sender_reaches_everyone_else(members: list[SocketMember]) -> None:
    a, b, c, d = members
    again: Member | None = d  # the sender's new session (docs/RELIABILITY.md F1)
    n = deliver(members, [((a, again), None, b"1\n2\n", 2)])
    assert n == 4  # two frames to b and c
    assert b.lines(2) == c.lines(2) == [b"1", b"2"]
    assert a.nothing_more() and d.nothing_more()


def test_shares_keep_entry_order_and_skip_only_their_own(members: list[SocketMember]) -> None:
    a, b, c, d = members
    entries: list[Entry] = [
        ((a,), None, b"a1\n", 1),
        ((None,), None, b"x1\n", 1),  # a sender not on this node
        ((b,), c, b"dm-b-c\n", 1),  # a direct entry: to c only, b not skipped
        ((b,), None, b"b1\n", 1),
        ((a,), None, b"a2\n", 1),
    ]
    reached: list[Member] = []
    n = deliver(members, entries, reached)
    assert a.lines(2) == [b"x1", b"b1"]
    assert b.lines(3) == [b"a1", b"x1", b"a2"]
    assert c.lines(5) == [b"a1", b"x1", b"dm-b-c", b"b1", b"a2"]
    assert d.lines(4) == [b"a1", b"x1", b"b1", b"a2"]
    assert n == 2 + 3 + 5 + 4
    assert set(reached) == {a, b, c}  # the senders and the recipient, not d
    for m in members:
        assert m.nothing_more()


def test_a_direct_entry_to_someone_not_in_the_roster_reaches_nobody(
    members: list[SocketMember],
) -> None:
    a, b, c, _ = members
    n = deliver([a, b], [((a,), c, b"dm\n", 1), ((a,), None, b"pub\n", 1)])
    assert n == 1
    assert b.lines(1) == [b"pub"]
    assert a.nothing_more() and c.nothing_more()


def test_frames_queued_earlier_stay_ahead(members: list[SocketMember]) -> None:
    """A cluster node's room rows are queued (Outbox.queue) before a later run is
    offered: they must reach the client first (seq order)."""
    a, b, _, _ = members
    assert b.outbox.queue(b"room\n")
    deliver([a, b], [((a,), None, b"lobby\n", 1)])
    assert b.lines(2) == [b"room", b"lobby"]


def test_nothing_to_send_counts_nothing(members: list[SocketMember]) -> None:
    a, b, _, _ = members
    assert deliver([a, b], [((a,), None, b"", 0)]) == 0  # a batch of resends only
    assert deliver([a, b], []) == 0
    assert a.nothing_more() and b.nothing_more()
