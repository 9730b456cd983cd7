"""Nothing lost, nothing twice, on the cluster (docs/PROTOCOL.md §Offline DMs,
§Idempotent sends, §Resume): the same promises as one process, on real Redis and real
PostgreSQL."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from chatroom.testing import TestServer
from chatroom_server.cluster.pg import PgDatabase, PgMessageLog
from chatroom_server.messagelog import Conflict, Duplicate, MessageLog, NewMessage, Stored
from tests.cluster.conftest import Cluster
from tests.helpers import PASSWORD, RawClient, connect
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


class _Behind:
    """Holds a node's deliveries from the cluster's stream until ``released``: the node
    falls behind the log, as after a partition or a pause (docs/RELIABILITY.md F3)."""

    def __init__(self, node: TestServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.released = threading.Event()
        glue = node.server._node  # what the bus calls (chatroom_server.node)
        assert glue is not None
        real = glue.cluster_deliver

        def held(messages: list[Stored], inbox: set[int]) -> None:
            self.released.wait(30)  # the test releases it (or ends) well before
            real(messages, inbox)

        monkeypatch.setattr(glue, "cluster_deliver", held)


def test_a_login_on_a_node_behind_the_log_waits_for_it(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F3: bob logs in on a node that has not delivered the last messages yet. Its cut
    (login_ok's seq) was where it stood, his replay stopped there, and the rest came
    live: the queued DM after the public messages, and on the SDK's side a cursor that
    jumped. The login now waits until the node has delivered what was stored before it;
    everything before login_ok's seq is in the replay or was not for him, nothing of it
    comes live."""
    a, b = cluster.add(), cluster.add()
    with RawClient(b.address) as c:  # bob's account; he is offline from here on
        login(c, "bob")
    behind = _Behind(b, monkeypatch)
    alice = connect(a.address, "alice")
    for i in range(3):
        alice.send(command="pm", message=f"public {i}", id=i)
        alice.until("ack", id=i)
    alice.send(command="dm", to="bob", message="waiting for you", id="dm")
    ack = alice.until("ack", id="dm")
    assert ack["queued"] is True
    bob = RawClient(b.address)
    bob.send(command="login", username="bob", password=PASSWORD)
    try:
        early: dict[str, Any] | None = bob.recv(timeout=1.0)  # the defect: at once
    except TimeoutError:
        early = None  # waiting for the node, as it should
    behind.released.set()
    ok = early or bob.recv()
    assert ok["type"] == "login_ok" and ok["replay"] is True
    assert ok["seq"] >= ack["seq"], "login_ok's seq is behind a message stored before it"
    got, done, _ = replay(bob)
    assert [(f["seq"], f["message"]) for f in got] == [(ack["seq"], "waiting for you")]
    assert done["seq"] == ok["seq"]
    alice.send(command="pm", message="after", id="after")
    alice.until("ack", id="after")
    live = bob.until("broadcast")
    assert live["message"] == "after"  # nothing stored before the login came live


def test_a_node_that_cannot_catch_up_refuses_the_login_for_now(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = cluster.add(), cluster.add()
    behind = _Behind(b, monkeypatch)
    b.server.catch_up_timeout = 0.2
    alice = connect(a.address, "alice")
    alice.send(command="pm", message="stored", id=1)
    alice.until("ack", id=1)
    bob = RawClient(b.address)
    bob.send(command="login", username="bob", password=PASSWORD, id=2)
    bob.expect_error("unavailable", id=2)  # another node may be up to date
    behind.released.set()
    bob.send(command="login", username="bob", password=PASSWORD, id=3)
    assert bob.expect("login_ok", id=3)["seq"] >= 1


def test_a_dm_to_someone_who_just_left_another_node_waits_for_them(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by h7 (docs/CLUSTER.md, "DMs go the same way"): carol exits on node c;
    before node a has applied her departure, alice DMs her there. Node a still sees her
    online, so the ack is not ``queued``; node c no longer has her. The DM was not put
    in the inbox, and her next login without ``since`` did not get it. Node a's view is
    held back here by holding her departure in its consumer until the DM is acked."""
    a, b, c = cluster.add(), cluster.add(), cluster.add()
    alice = connect(a.address, "alice")
    carol = connect(c.address, "carol")
    alice.until("users", joined="carol")
    bus = a.server._bus
    assert bus is not None
    gate, held = threading.Event(), threading.Event()
    apply = bus.roster.apply

    def slow(handler: Any, fields: dict[str, str], entry_id: str = "") -> None:
        if fields.get("k") == "l" and fields.get("u") == "carol":
            held.set()
            assert gate.wait(10)
        apply(handler, fields, entry_id)

    monkeypatch.setattr(bus.roster, "apply", slow)
    carol.send(command="exit")
    carol.wait_closed()
    assert held.wait(10)  # node a has not applied carol's departure yet
    alice.send(command="dm", to="carol", message="while you were away", id=3)
    ack = alice.until("ack", id=3)
    assert not ack.get("queued")  # the sender's node's view (docs/PROTOCOL.md §Offline DMs)
    gate.set()
    alice.until("users", left="carol")
    got = waiting(b.address, "carol")
    assert [(f["seq"], f["message"]) for f in got] == [(ack["seq"], "while you were away")]
    nothing_waits(b.address, "carol")  # once, after that clean exit


def test_a_dm_received_live_on_another_node_leaves_the_inbox_at_exit(
    cluster: Cluster,
) -> None:
    """Every DM waits in the inbox in a cluster (the test above); one that reached its
    recipient live leaves it when their session ends with ``exit``, as a replayed one
    does, and stays (sent again at the next login without ``since``) if it ends any
    other way: at least once, never lost (docs/PROTOCOL.md §Offline DMs)."""
    a, b = cluster.add(), cluster.add()
    alice = connect(a.address, "alice")
    # A recipient of its own for each ending: the sessions that check the inbox log in
    # and out under that name too, and a users frame left over from them must not pass
    # for the next recipient's login (the DM would then be sent before it is online).
    for ending, name in (("drop", "bob"), ("exit", "bea")):
        bob = connect(b.address, name)
        alice.until("users", joined=name)
        alice.send(command="dm", to=name, message=ending, id=ending)
        ack = alice.until("ack", id=ending)
        assert not ack.get("queued")
        assert bob.until("dm")["seq"] == ack["seq"]
        if ending == "drop":
            reset(bob)
            alice.until("users", left=name)
            got = waiting(b.address, name)  # ends with exit: the replay reached him
            assert [(f["seq"], f["message"]) for f in got] == [(ack["seq"], "drop")]
        else:
            bob.send(command="exit")
            bob.wait_closed()
            alice.until("users", left=name)
        nothing_waits(a.address, name)
