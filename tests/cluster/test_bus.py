"""The Redis side of the cluster alone (chatroom_server.cluster.bus and its parts), on
real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
import redis

from chatroom_server.cluster.bus import ClusterBus
from chatroom_server.cluster.consumer import Consumer, stored
from chatroom_server.messagelog import NewMessage, Stored
from chatroom_server.rooms import RoomBook
from tests.cluster.conftest import REDIS_URL


class Server:
    """What the bus calls on a server: a record of it."""

    def __init__(self) -> None:
        self.local: list[str] = []
        self.joined: list[str] = []
        self.left: list[str] = []
        self.dropped: list[str] = []

    def cluster_deliver(self, messages: list[Stored], inbox: set[int]) -> None:
        raise AssertionError("no messages in these tests")

    def cluster_joined(self, name: str) -> None:
        self.joined.append(name)

    def cluster_left(self, name: str) -> None:
        self.left.append(name)

    def cluster_local_names(self) -> list[str]:
        return list(self.local)

    def cluster_drop(self, name: str) -> None:
        self.dropped.append(name)

    def cluster_operator(self, fields: dict[str, str]) -> None:
        raise AssertionError("no operator entries in these tests")


@pytest.fixture
def bus(redis_prefix: str) -> Iterator[ClusterBus]:
    b = ClusterBus(REDIS_URL, prefix=redis_prefix, node_name="test")
    b.snapshot()
    yield b
    b.disconnect()


def presence(prefix: str) -> dict[bytes, bytes]:
    return cast(dict[bytes, bytes], redis.Redis.from_url(REDIS_URL).hgetall(f"{prefix}:presence"))


def test_the_resync_leaves_a_login_in_progress_alone(bus: ClusterBus) -> None:
    """Found at 10,000 logins over three nodes: a resync between a login's claim and its
    session reaching the server's maps released the user, and every other node dropped
    them from its list until the next resync."""
    server = Server()
    bus.claim("alice")  # claimed; the session is not in the server's maps yet
    bus.roster.resync(server)
    assert b"alice" in presence(bus.prefix)
    server.local.append("alice")
    bus.settled("alice")
    bus.roster.resync(server)  # here and claimed: nothing to repair
    assert b"alice" in presence(bus.prefix)
    server.local.clear()  # gone without a release (a crash between the two)
    bus.roster.resync(server)
    assert b"alice" not in presence(bus.prefix)  # the leftover is released


def test_the_resync_repairs_both_sides(bus: ClusterBus, redis_prefix: str) -> None:
    server = Server()
    r = redis.Redis.from_url(REDIS_URL)
    # Another node's user that this node never heard of, and one it wrongly still lists.
    r.hset(f"{redis_prefix}:presence", "bob", "other/1|bob")
    bus.roster._owners["carol"] = "other/1"
    # This node's own user, lost by Redis (it restarted empty).
    server.local.append("dave")
    bus.roster.resync(server)
    assert server.joined == ["bob"]
    assert server.left == ["carol"]
    assert presence(redis_prefix)[b"dave"].startswith(bus.node.encode())
    # Dave logged in on another node meanwhile: this node's session is the one to go.
    r.hset(f"{redis_prefix}:presence", "dave", "other/1|dave")
    bus.roster.resync(server)
    assert server.dropped == ["dave"]


def test_the_stream_carries_rooms_and_room_events(bus: ClusterBus, redis_prefix: str) -> None:
    """What a node publishes is what the others read: a public message's room, a room
    event's room and kind, and lobby for a message that names none (docs/PROTOCOL.md
    §Rooms)."""
    book = RoomBook()
    join = book.join("alice", "Dev", None)
    assert join is not None
    bus.publish(
        [
            (1, NewMessage("alice", None, "hello lobby", 1.0)),
            (2, NewMessage("alice", None, join.detail(), 2.0, change=join)),
            (3, NewMessage("alice", None, "hello dev", 3.0, room="Dev")),
            (4, NewMessage("alice", "bob", "psst", 4.0)),
        ]
    )
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    entries = cast(list[tuple[str, dict[str, str]]], r.xrange(f"{redis_prefix}:log"))
    got = [stored(fields) for _, fields in entries]
    assert [(m.seq, m.room, m.event, m.to) for m in got if m is not None] == [
        (1, "lobby", None, None),
        (2, "Dev", "join", None),
        (3, "Dev", None, None),
        (4, None, None, "bob"),
    ]


class Recorder(Server):
    """A server that records what the bus hands it: (seqs, the inbox seqs)."""

    def __init__(self) -> None:
        super().__init__()
        self.delivered: list[tuple[list[int], set[int]]] = []

    def cluster_deliver(self, messages: list[Stored], inbox: set[int]) -> None:
        self.delivered.append(([m.seq for m in messages], inbox))


def test_dms_a_gap_fill_reads_back_may_have_waited_in_the_inbox(bus: ClusterBus) -> None:
    """Found by the nemesis (seed 4020, cluster; docs/RELIABILITY.md F6): a node struck
    off by a Redis partition delivered a DM queued for its user (the sender's node saw
    them offline) by reading it back from PostgreSQL, told the server it had not waited
    in the inbox, so the user's clean exit did not clear it, and their next fresh login
    got it again. Whether a row waited is not in the database: every DM read back is
    handed over as one that may have (its receipt then clears it, if it is there)."""
    rows = {
        1: Stored(1, 1.0, "alice", None, "hello"),
        2: Stored(2, 2.0, "alice", "bob", "psst"),
        3: Stored(3, 3.0, "carol", None, "hi"),
    }
    server = Recorder()
    consumer = Consumer(
        bus.link,
        bus.keys.log,
        bus.roster,
        server,
        last_id="0-0",
        last_seq=lambda: 0,
        stored_seq=lambda: 3,
        read_range=lambda after, upto: [rows[s] for s in range(after + 1, upto + 1)],
    )
    consumer.catch_up()  # a quiet stream: the last publications were lost
    assert server.delivered == [([1, 2, 3], {2})]
    # A publication arriving after a gap: the gap is read back the same way, and the
    # stream's own queued flag is kept.
    server.delivered.clear()
    consumer.deliver([Stored(4, 4.0, "dave", "bob", "later")], {4})
    assert server.delivered == [([1, 2, 3, 4], {2, 4})]


def test_an_entry_older_than_this_nodes_claim_ends_no_session_here(redis_prefix: str) -> None:
    """Found by the nemesis with a crowd (docs/RELIABILITY.md F13): node 3, back from a
    partition from Redis, claimed back a user whose connection had just been cut (a
    ``j`` entry); the client logged in on node 1, which was paused, and whose consumer
    read node 3's entry only after its own claim of that user: it took it for a newer
    login and ended the session it had just begun (``session_replaced``, after which the
    SDK does not reconnect). An entry before this node's own claim in the stream is
    older than that claim, whichever node wrote it."""
    here = ClusterBus(REDIS_URL, prefix=redis_prefix, node_name="here")
    there = ClusterBus(REDIS_URL, prefix=redis_prefix, node_name="there")
    try:
        here.snapshot()
        there.snapshot()
        server = Server()
        there.claim("alice")  # the older claim, not yet read here
        assert here.claim("alice") == there.node  # taken over from there
        server.local.append("alice")
        here.settled("alice")
        r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        entries = cast(list[tuple[str, dict[str, str]]], r.xrange(f"{redis_prefix}:log"))
        assert [f["k"] for _, f in entries] == ["j", "t"]
        for entry_id, fields in entries:  # as the consumer reads them, late
            here.roster.apply(server, fields, entry_id)
        assert server.joined == []  # alice's session here stays
        assert here.online("alice")
        # A claim there after this node's is a takeover as ever.
        there.claim("alice")
        last = cast(list[tuple[str, dict[str, str]]], r.xrevrange(f"{redis_prefix}:log", count=1))
        here.roster.apply(server, last[0][1], last[0][0])
        assert server.joined == ["alice"]
    finally:
        here.disconnect()
        there.disconnect()
