"""Several nodes as one room (docs/CLUSTER.md), on real Redis and real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

from chatroom import Broadcast, ChatClient
from tests.cluster.conftest import (
    REDIS_URL,
    Cluster,
    PrivatePostgres,
    PrivateRedis,
    pg_database,
)
from tests.helpers import PASSWORD, RawClient, connect

T = 10.0


def broadcasts(c: RawClient, n: int) -> list[dict[str, Any]]:
    """The next ``n`` public messages ``c`` receives (other frames skipped)."""
    return [c.until("broadcast") for _ in range(n)]


def users_list(c: RawClient) -> list[str]:
    c.send(command="users", id="u")
    return list(c.until("users", id="u")["users"])


def test_public_messages_reach_every_node_once_in_one_seq_order(cluster: Cluster) -> None:
    nodes = [cluster.add() for _ in range(3)]
    clients = [connect(n.address, f"user{i}") for i, n in enumerate(nodes)]
    readers = [connect(n.address, f"reader{i}") for i, n in enumerate(nodes)]
    per_sender = 30

    def send(i: int) -> None:
        for k in range(per_sender):
            clients[i].send(command="pm", message=f"{i}:{k}", id=k)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T)
    total = 3 * per_sender
    seen = [broadcasts(r, total) for r in readers]
    orders = [[(m["seq"], m["message"]) for m in got] for got in seen]
    assert orders[0] == orders[1] == orders[2]  # the same messages, in the same order
    seqs = [s for s, _ in orders[0]]
    assert seqs == sorted(seqs) and len(set(seqs)) == total  # in seq order, once each
    assert seqs == list(range(seqs[0], seqs[0] + total))  # and no gap
    for i, c in enumerate(clients):
        # Each sender gets everyone's but its own, in the same order as the readers.
        got = [(m["seq"], m["message"]) for m in broadcasts(c, total - per_sender)]
        assert got == [x for x in orders[0] if not x[1].startswith(f"{i}:")]


def test_dms_cross_nodes_and_wait_for_an_offline_user(cluster: Cluster) -> None:
    a, b, c = cluster.add(), cluster.add(), cluster.add()
    alice = connect(a.address, "alice")
    bob = connect(b.address, "bob")
    # Whether a DM is queued is node a's view of presence, which follows the stream: it
    # lags b's login (and c's exit below) by however long a's consumer takes. Once
    # alice has been told, a knows.
    alice.until("users", joined="bob")
    alice.send(command="dm", to="BOB", message="hi bob", id=1)
    ack = alice.until("ack", id=1)
    assert ack["to"] == "bob" and not ack.get("queued")
    dm = bob.until("dm")
    assert (dm["from"], dm["message"], dm["seq"]) == ("alice", "hi bob", ack["seq"])
    bob.send(command="dm", to="alice", message="hi alice", id=2)
    assert alice.until("dm")["message"] == "hi alice"

    carol = connect(c.address, "carol")
    carol.send(command="exit")
    carol.wait_closed()
    alice.until("users", left="carol")
    alice.send(command="dm", to="carol", message="while you were away", id=3)
    assert alice.until("ack", id=3)["queued"] is True
    carol = RawClient(b.address)
    carol.send(command="login", username="carol", password=PASSWORD)
    assert carol.expect("login_ok")["replay"] is True
    missed = carol.until("dm")
    assert (missed["message"], missed.get("replay")) == ("while you were away", True)
    assert carol.until("replay_done")["count"] == 1


def test_one_user_list_everywhere_and_takeover_across_nodes(cluster: Cluster) -> None:
    a, b = cluster.add(), cluster.add()
    alice = connect(a.address, "alice")
    bob = connect(b.address, "bob")
    # Node a hears of bob's login from the stream, after his login_ok: its push says
    # when (asking before it raced the stream under load).
    alice.until("users", joined="bob")
    assert users_list(alice) == users_list(bob) == ["alice", "bob"]
    # alice logs in on node b: node a's session ends, and nobody sees her leave.
    again = RawClient(b.address)
    again.send(command="login", username="alice", password=PASSWORD)
    ok = again.expect("login_ok")
    assert ok["users"] == ["alice", "bob"]
    frames = alice.wait_closed()
    assert frames[-1] == {"type": "bye", "reason": "session_replaced"}
    bob.send(command="pm", message="still here?", id=9)
    bob.until("ack", id=9)
    assert again.until("broadcast")["message"] == "still here?"  # the new session is live
    assert users_list(bob) == ["alice", "bob"]
    # A node that joins later starts with the cluster's list.
    c = cluster.add()
    late = connect(c.address, "carol")
    assert users_list(late) == ["alice", "bob", "carol"]
    again.until("users", joined="carol")  # b has it too (its consumer may lag c's login)
    # Leaving on one node is seen on every other.
    bob.send(command="exit")
    bob.wait_closed()
    assert late.until("users", left="bob")["users"] == ["alice", "carol"]
    assert again.until("users", left="bob")["users"] == ["alice", "carol"]


def test_a_killed_node_s_users_leave_once_everywhere_and_leave_no_ghost(
    cluster: Cluster,
) -> None:
    a = cluster.add()
    victim = cluster.process()
    watcher = connect(a.address, "watcher")
    doomed = [connect(victim.address, f"doomed{i}") for i in range(3)]
    assert len(doomed) == 3
    for i in range(3):
        watcher.until("users", joined=f"doomed{i}")
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(T)
    left: list[str] = []
    while len(left) < 3:  # within the node timeout (2 s) plus a heartbeat
        frame = watcher.until("users")
        if frame.get("left"):
            left.append(frame["left"])
    assert sorted(left) == ["doomed0", "doomed1", "doomed2"]
    assert users_list(watcher) == ["watcher"]
    # Restarted (a new process, a new node), nobody from before is a ghost.
    again = cluster.process()
    fresh = connect(again.address, "fresh")
    assert users_list(fresh) == ["fresh", "watcher"]
    # And nobody left twice: the next thing the watcher sees is fresh joining.
    assert watcher.until("users")["joined"] == "fresh"


def test_an_sdk_client_fails_over_and_resumes_with_no_gap(cluster: Cluster) -> None:
    a = cluster.process()
    b = cluster.add()
    talker = connect(b.address, "talker")
    got: list[Broadcast] = []
    moved = threading.Event()
    client = ChatClient(hosts=[a.address, b.address], reconnect=True, reconnect_max_delay=0.2)
    client.on_broadcast(got.append)
    client.on_reconnect(lambda e: moved.set())
    with client:
        client.login("mover", PASSWORD)
        with client.expect(Broadcast, check=lambda m: m.message == "before 4") as w:
            for k in range(5):
                talker.send(command="pm", message=f"before {k}", id=k)
            w.wait(T)
        a.proc.send_signal(signal.SIGKILL)
        for k in range(5):  # sent while the client is between nodes
            talker.send(command="pm", message=f"during {k}", id=10 + k)
            talker.until("ack", id=10 + k)
        assert moved.wait(T)
        assert (client.host, client.port) == b.address
        with client.expect(Broadcast, check=lambda m: m.message == "after") as w:
            talker.send(command="pm", message="after", id=99)
            w.wait(T)
        client.close()
    messages = [m.message for m in got]
    assert messages == [f"before {k}" for k in range(5)] + [f"during {k}" for k in range(5)] + [
        "after"
    ]
    seqs = [m.seq or 0 for m in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # resumed with no gap


def test_redis_restarted_mid_traffic_loses_and_repeats_nothing(
    private_redis: PrivateRedis, pg_url: str, redis_prefix: str
) -> None:
    cluster = Cluster(private_redis.url, pg_url, redis_prefix)
    with cluster.stack:
        a, b = cluster.add(), cluster.add()
        alice = connect(a.address, "alice")
        bob = connect(b.address, "bob")
        acked: list[tuple[int, str]] = []
        refused: list[str] = []
        noticed = threading.Event()  # alice's node refused a send: it saw the outage
        enough = threading.Event()
        restarted = threading.Event()

        def talk() -> None:
            k = 0
            while not enough.is_set():
                k += 1
                alice.send(command="pm", message=f"m{k}", id=k)
                reply = alice.recv()
                while reply["type"] not in ("ack", "error") or reply.get("id") != k:
                    reply = alice.recv()
                if reply["type"] == "ack":
                    acked.append((reply["seq"], f"m{k}"))
                    if restarted.is_set() and len(acked) >= 5 and acked[-5][0] > after:
                        enough.set()
                else:
                    assert reply["code"] == "unavailable"
                    refused.append(f"m{k}")
                    noticed.set()

        after = 1 << 62
        talker = threading.Thread(target=talk)
        talker.start()
        try:
            first = bob.until("broadcast")  # traffic flows
            private_redis.stop()
            # Logins need Redis (one session per user): refused meanwhile.
            late = RawClient(b.address)
            late.send(command="login", username="late", password=PASSWORD, id="l")
            assert late.until("error", id="l")["code"] == "unavailable"
            # Down until node a has seen it too. A node notices an outage only when a
            # call of its own fails: had Redis come back before a's next call, redis-py
            # would reconnect in silence (its pool replaces a connection the server
            # closed), nothing would be refused, and wait_available() below would wait
            # for nothing. Under load that happened (a's threads were not scheduled).
            assert noticed.wait(T), "node a never refused a send while Redis was down"
            private_redis.start()
            for node in (a, b):  # each notices by itself
                assert node.server._bus is not None
                assert node.server._bus.wait_available(T)
            after = max((s for s, _ in acked), default=0)
            restarted.set()
            assert enough.wait(T)
        finally:
            enough.set()
            talker.join(T)
        assert refused, "the outage was not noticed"
        seen = [(m["seq"], m["message"]) for m in [first, *more(bob, acked[-1][0])]]
        # Every acked message, once, in seq order; nothing refused.
        assert seen == acked


def more(c: RawClient, last_seq: int) -> list[dict[str, Any]]:
    """The broadcasts ``c`` gets up to the one with ``last_seq``."""
    out: list[dict[str, Any]] = []
    while not out or out[-1]["seq"] < last_seq:
        out.append(c.until("broadcast"))
    return out


def test_check_and_configuration_errors(cluster: Cluster) -> None:
    base = [sys.executable, "-m", "chatroom_server"]
    ok = subprocess.run(
        [
            *base,
            "--cluster",
            cluster.redis,
            "--cluster-prefix",
            cluster.prefix,
            "--check",
            "--db",
            cluster.db,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert "PostgreSQL" in ok.stdout and "0 accounts" in ok.stdout
    assert "redis" in ok.stdout and "0 node(s) alive" in ok.stdout
    sqlite = subprocess.run(
        [*base, "--cluster", cluster.redis, "--db", "chat.db", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sqlite.returncode == 1
    assert "--cluster needs a PostgreSQL --db" in sqlite.stderr
    no_redis = subprocess.run(
        [*base, "--cluster", "redis://127.0.0.1:1/0", "--db", cluster.db, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert no_redis.returncode == 1
    assert "cannot reach Redis" in no_redis.stderr


def test_postgres_down_answers_unavailable_and_recovers(
    private_postgres: PrivatePostgres, redis_prefix: str
) -> None:
    with pg_database(private_postgres.url) as db:
        cluster = Cluster(REDIS_URL, db, redis_prefix)
        with cluster.stack:
            a, b = cluster.add(), cluster.add()
            alice = connect(a.address, "alice")
            bob = connect(b.address, "bob")
            private_postgres.stop()
            alice.send(command="pm", message="into the void", id=1)
            assert alice.until("error", id=1)["code"] == "unavailable"
            late = RawClient(b.address)
            late.send(command="login", username="late", password=PASSWORD, id=2)
            assert late.until("error", id=2)["code"] == "unavailable"
            bob.send(command="dm", to="alice", message="hello?", id=3)
            assert bob.until("error", id=3)["code"] == "unavailable"
            private_postgres.start()
            # Nobody was disconnected; the nodes reconnect by themselves.
            alice.send(command="pm", message="back", id=4)
            ack = alice.until("ack", id=4)
            got = bob.until("broadcast")
            assert (got["message"], got["seq"]) == ("back", ack["seq"])
            late.send(command="login", username="late", password=PASSWORD, id=5)
            assert late.until("login_ok")["username"] == "late"


def test_a_node_stopped_past_the_timeout_rejoins_cleanly(cluster: Cluster) -> None:
    a = cluster.add()
    sleeper = cluster.process()
    watcher = connect(a.address, "watcher")
    napper = connect(sleeper.address, "napper")
    moved = connect(sleeper.address, "moved")
    watcher.until("users", joined="moved")
    sleeper.proc.send_signal(signal.SIGSTOP)
    try:
        # Past the 2 s timeout the others strike it off: its users leave.
        left = {watcher.until("users")["left"] for _ in range(2)}
        assert left == {"napper", "moved"}
        # One of them logs in elsewhere meanwhile.
        elsewhere = RawClient(a.address)
        elsewhere.send(command="login", username="moved", password=PASSWORD)
        elsewhere.expect("login_ok")
        watcher.until("users", joined="moved")
    finally:
        sleeper.proc.send_signal(signal.SIGCONT)
    # Continued, it claims back the user nobody took, and hands over the other.
    assert watcher.until("users")["joined"] == "napper"
    assert moved.wait_closed()[-1] == {"type": "bye", "reason": "session_replaced"}
    assert users_list(watcher) == users_list(napper) == ["moved", "napper", "watcher"]
    napper.send(command="pm", message="I was asleep", id=1)
    napper.until("ack", id=1)
    assert watcher.until("broadcast")["message"] == "I was asleep"


def test_a_resend_with_its_cid_is_stored_and_delivered_once(cluster: Cluster) -> None:
    a, b = cluster.add(), cluster.add()
    alice = connect(a.address, "alice")
    bob = connect(b.address, "bob")
    # Twice in one read (one group), then again later (a resend after a lost ack).
    twice = b"".join(
        json.dumps({"command": "pm", "message": "once", "cid": "c1", "id": i}).encode() + b"\n"
        for i in (1, 2)
    )
    alice.send_raw(twice)
    seqs = {alice.until("ack", id=i)["seq"] for i in (1, 2)}
    alice.send(command="pm", message="once", cid="c1", id=3)
    seqs.add(alice.until("ack", id=3)["seq"])
    alice.send(command="dm", to="bob", message="dm once", cid="c2", id=4)
    alice.send(command="dm", to="bob", message="dm once", cid="c2", id=5)
    dm_seqs = {alice.until("ack", id=i)["seq"] for i in (4, 5)}
    alice.send(command="pm", message="marker", id=6)
    alice.until("ack", id=6)
    assert len(seqs) == 1 and len(dm_seqs) == 1
    got: list[str] = []
    while not got or got[-1] != "marker":
        frame = bob.recv()
        if frame["type"] in ("broadcast", "dm"):
            got.append(frame["message"])
    assert got == ["once", "dm once", "marker"]


def test_check_in_process(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    from chatroom_server.__main__ import main

    args = ["--cluster", cluster.redis, "--cluster-prefix", cluster.prefix, "--db", cluster.db]
    assert main([*args, "--check"]) == 0
    out = capsys.readouterr().out
    assert "PostgreSQL postgresql://" in out and "0 node(s) alive" in out
