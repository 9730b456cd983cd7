"""Nothing lost, nothing twice, on the cluster (docs/PROTOCOL.md §Offline DMs,
§Idempotent sends, §Resume): the same promises as one process, on real Redis and real
PostgreSQL."""

from __future__ import annotations

import signal
from pathlib import Path

from chatroom_server.cluster.pg import PgDatabase, PgMessageLog
from chatroom_server.messagelog import Conflict, Duplicate, MessageLog, NewMessage
from tests.cluster.conftest import Cluster
from tests.helpers import connect
from tests.server.test_messagelog import (
    cid_conflicts,
    login,
    own_messages_replayed_with_their_cid,
    replay,
)
from tests.server.test_offline_dms import (
    drops_lose_nothing,
    nothing_waits,
    queue_dms,
    read_a_little,
    reset,
    waiting,
)
from tests.server.test_replay import small_window


def test_a_cid_reused_with_another_message_is_a_conflict(cluster: Cluster) -> None:
    a, b = cluster.add(), cluster.add()
    zoe, carol = connect(b.address, "zoe"), connect(b.address, "carol")
    cid_conflicts(connect(a.address, "reuser"), zoe, carol)


def test_a_cid_conflict_within_one_group_and_against_the_stored(pg_url: str) -> None:
    pg = PgDatabase(pg_url)
    try:
        mlog = PgMessageLog(pg, publish=lambda stored: None)
        (seq,) = mlog.append([NewMessage("ann", "zoe", "hi", 1.0, cid="X")])
        assert isinstance(seq, int)
        got = mlog.append(
            [
                NewMessage("ann", "carol", "hi", 2.0, cid="X"),  # stored: other recipient
                NewMessage("ann", None, "a", 2.0, cid="Y"),
                NewMessage("ann", None, "b", 2.0, cid="Y"),  # this group: other text
                NewMessage("ANN", "ZOE", "hi", 2.0, cid="X"),  # a resend, any case
                NewMessage("bob", "carol", "hi", 2.0, cid="X"),  # another sender's cid
            ]
        )
        assert got == [Conflict(seq), seq + 1, Conflict(seq + 1), Duplicate(seq, "zoe"), seq + 2]
        mlog.close()
    finally:
        pg.close()


def test_replayed_own_messages_carry_their_cid(cluster: Cluster) -> None:
    a, b = cluster.add(), cluster.add()
    own_messages_replayed_with_their_cid(a.address, b.address)


def test_replay_pages_are_the_same_on_both_databases(pg_url: str, tmp_path: Path) -> None:
    """A page ends at the first message that takes it past its budget (texts plus a
    fixed cost per row), in SQLite and in PostgreSQL alike."""
    msgs = [
        NewMessage("ann" if i % 3 else "bob", None if i % 4 else "cid", "t" * (50 * i), 1.0 + i)
        for i in range(60)
    ]
    msgs += [NewMessage("bob", "cid", f"waiting {i}", 100.0 + i, inbox=True) for i in range(7)]
    lite = MessageLog(tmp_path / "p.db")
    pg = PgDatabase(pg_url)
    try:
        pgl = PgMessageLog(pg, publish=lambda stored: None)
        assert lite.append(msgs) == pgl.append(msgs)
        for user, inbox in (("cid", False), ("ann", False), ("cid", True)):
            for budget in (1, 500, 3000, 10**6):
                pages = []
                for log in (lite, pgl):
                    after, seqs = 0, []
                    while rows := log.replay_page(user, after, 67, budget, inbox=inbox):
                        seqs.append([m.seq for m in rows])
                        after = rows[-1].seq
                    pages.append(seqs)
                assert pages[0] == pages[1], (user, inbox, budget)
                assert sum(map(len, pages[0])) == (7 if inbox else 67 if user == "cid" else 55)
            for limit in (0, 3, 100):
                start = [log.replay_start(user, 0, 67, limit, inbox=inbox) for log in (lite, pgl)]
                assert start[0] == start[1], (user, inbox, limit)
        pgl.close()
    finally:
        lite.close()
        pg.close()


def test_a_replay_from_postgresql_is_streamed_as_the_client_reads(cluster: Cluster) -> None:
    pg = PgDatabase(cluster.db)
    try:
        stored = PgMessageLog(pg, publish=lambda stored: None)
        stored.append(
            [NewMessage("writer", None, f"{i} {'z' * 3900}", 1.0 + i) for i in range(600)]
        )
        stored.close()
    finally:
        pg.close()
    node = cluster.add(max_output=256 * 1024, send_buffer=16384)
    with small_window(node.address) as late:
        ok = login(late, "late", since=0)
        assert ok["seq"] == 600
        assert late.recv()["seq"] == 1  # the replay has begun; the client stops reading
        backlog = node.server._by_key["late"].outbox.backlog
        assert backlog <= 128 * 1024, backlog  # a page, not the 2.4 MB of the replay
        got, done, _ = replay(late)
        assert [f["seq"] for f in got] == list(range(2, 601))
        assert done == {"type": "replay_done", "count": 600, "seq": 600}


def test_a_drop_at_any_moment_loses_no_queued_dm(cluster: Cluster) -> None:
    a, b = cluster.add(), cluster.add()
    watcher = connect(b.address, "watcher")

    def gone(name: str) -> None:
        watcher.until("users", left=name)

    drops_lose_nothing(a.address, b.address, wait_gone=gone)


def test_a_killed_node_mid_replay_loses_no_queued_dm(cluster: Cluster) -> None:
    """300 DMs queued for bob; he logs in on a node and reads two; the node is killed:
    on another node he gets all 300, then after his exit none again."""
    a = cluster.add()
    victim = cluster.process()
    seqs = queue_dms(a.address, "bob", 300)
    bob, got = read_a_little(victim.address, "bob", 2)
    assert got == seqs[:2]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    bob.close()
    assert [f["seq"] for f in waiting(a.address, "bob")] == seqs
    nothing_waits(a.address, "bob")


def test_a_resume_on_another_node_gets_the_rest_exactly_once(cluster: Cluster) -> None:
    a, b = cluster.add(), cluster.add()
    seqs = queue_dms(a.address, "bob", 50)
    c, got = read_a_little(a.address, "bob", 5)
    reset(c)
    rest = waiting(b.address, "bob", since=got[-1])
    assert [f["seq"] for f in rest] == seqs[5:]
    nothing_waits(a.address, "bob")
