"""Rooms on every node of a cluster (docs/CLUSTER.md §Rooms), on real Redis and real
PostgreSQL: a room made on one node is the same room on the others, its messages and
events reach its members on every node once, in seq order, a user resumes across rooms
on another node after theirs is killed, and a restarted node has every room back."""

from __future__ import annotations

import signal
import time
from typing import Any

from chatroom.rooms import Role, RoomEventKind
from chatroom.testing import TestServer
from chatroom_server.cluster.pg import PgDatabase, PgMessageLog
from chatroom_server.messagelog import NewMessage
from chatroom_server.rooms import RoomChange
from tests.cluster.conftest import Cluster
from tests.helpers import PASSWORD, RawClient, connect

T = 10.0


def v2(address: tuple[str, int], name: str, **extra: Any) -> tuple[RawClient, dict[str, Any]]:
    """A rooms client, logged in; its login_ok."""
    c = RawClient(address)
    c.send(command="login", username=name, password=PASSWORD, features=["rooms"], **extra)
    return c, c.expect("login_ok")


def settle(c: RawClient) -> None:
    """Everything sent to ``c`` so far has arrived: a ping's pong follows it."""
    c.send(command="ping", id="settle")
    c.until("pong", id="settle")


def barrier(sender: RawClient, *readers: RawClient, tag: str) -> int:
    """A lobby message from ``sender``, seen by every reader: each reader's node has
    then applied every room event stored before it (a node delivers in seq order)."""
    sender.send(command="pm", message=f"barrier {tag}", id=f"b-{tag}")
    seq = int(sender.until("ack", id=f"b-{tag}")["seq"])
    for r in readers:
        r.until("broadcast", message=f"barrier {tag}")
    return seq


def upto(c: RawClient, last: str) -> list[tuple[int | None, str | None, str]]:
    """The broadcasts ``c`` gets up to the one saying ``last``: (seq if in a room,
    room, text)."""
    out: list[tuple[int | None, str | None, str]] = []
    while not out or out[-1][2] != last:
        f = c.until("broadcast")
        room = f.get("room")
        out.append((f["seq"] if room else None, room, f["message"]))
    return out


def replayed(c: RawClient) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        f = c.recv()
        if f["type"] == "replay_done":
            return out
        out.append(f)


def test_a_room_made_on_one_node_is_the_same_room_on_the_other(cluster: Cluster) -> None:
    a, b = cluster.add(), cluster.add()
    alice, _ = v2(a.address, "alice")
    bob, _ = v2(b.address, "bob")
    carol = connect(b.address, "carol")  # protocol v1: sees lobby only
    alice.send(command="join", room="Dev", id=1)
    made = alice.until("room_info", id=1)
    assert made["info"]["roles"] == {"alice": "owner"} and made["seq"] > 0
    barrier(alice, bob, carol, tag="made")

    bob.send(command="join", room="dev", id=2)
    info = bob.until("room_info", id=2)["info"]
    assert (info["name"], info["members"]) == ("Dev", ["alice", "bob"])
    assert info["roles"] == {"alice": "owner"}
    ev = alice.until("room_event")
    assert (ev["event"], ev["by"], ev["room"]) == ("join", "bob", "Dev")

    # A message from each node reaches the member on the other one, once; nothing of
    # dev reaches carol, nobody gets their own back.
    bob.send(command="pm", room="dev", message="from b", id=3)
    bob.send(command="pm", message="end b", id=4)
    ack_b = bob.until("ack", id=3)
    assert upto(alice, "end b") == [(ack_b["seq"], "Dev", "from b"), (None, None, "end b")]
    alice.send(command="pm", room="Dev", message="from a", id=5)
    alice.send(command="pm", message="end a", id=6)
    ack_a = alice.until("ack", id=5)
    assert upto(bob, "end a") == [(ack_a["seq"], "Dev", "from a"), (None, None, "end a")]
    assert [m for _, _, m in upto(carol, "end a")] == ["end b", "end a"]

    # Room state changes apply on every node: a topic from b, a limit from a, and the
    # limit checked on b.
    bob.send(command="topic", room="dev", topic="ship it", id=60)
    assert bob.until("error", id=60)["code"] == "not_operator"  # +t, and bob is none
    alice.send(command="mode", room="dev", modes="+l", args=["2"], id=7)
    alice.until("ack", id=7)
    assert bob.until("room_event", event="mode")["modes"] == "+l"
    dave, _ = v2(b.address, "dave")
    barrier(alice, dave, tag="limit")
    dave.send(command="join", room="dev", id=8)
    assert dave.until("error", id=8)["code"] == "room_full"
    bob.send(command="part", room="dev", id=9)
    bob.until("ack", id=9)
    assert alice.until("room_event", event="part")["by"] == "bob"
    barrier(alice, dave, tag="parted")
    dave.send(command="join", room="dev", id=10)
    assert dave.until("room_info", id=10)["info"]["members"] == ["alice", "dave"]

    # A join and a message right behind it, not waiting for the reply (as IRC clients
    # send JOIN then PRIVMSG): the message finds the member.
    # Moderation from a, on a member at b: b's copy has the ban.
    alice.send(command="ban", room="dev", user="dave", reason="spam", id=13)
    alice.until("ack", id=13)
    ban = dave.until("room_event", event="ban")
    assert (ban["room"], ban["user"], ban["by"]) == ("Dev", "dave", "alice")
    dave.send(command="pm", room="dev", message="still here?", id=14)
    assert dave.until("error", id=14)["code"] == "not_in_room"
    dave.send(command="join", room="dev", id=15)
    assert dave.until("error", id=15)["code"] == "banned"

    for k in range(20):
        dave.send(command="join", room=f"fast{k}", id=f"j{k}")
        dave.send(command="pm", room=f"fast{k}", message="at once", id=f"p{k}")
    for k in range(20):
        assert dave.until("ack", id=f"p{k}")["room"] == f"fast{k}"


def test_resume_across_rooms_on_another_node_and_a_restarted_node(cluster: Cluster) -> None:
    doomed = cluster.process()
    b: TestServer = cluster.add()
    talker, _ = v2(b.address, "talker")
    for k, room in enumerate(("red", "blue")):
        talker.send(command="join", room=room, id=f"j{k}")
        talker.until("room_info", id=f"j{k}")
    alice, ok = v2(doomed.address, "alice")
    barrier(talker, alice, tag="rooms")
    for k, room in enumerate(("red", "blue")):
        alice.send(command="join", room=room, id=f"j{k}")
        alice.until("room_info", id=f"j{k}")
    seen = barrier(talker, alice, tag="joined")

    doomed.proc.send_signal(signal.SIGKILL)
    doomed.proc.wait(T)
    sent: list[tuple[int, str | None, str]] = []
    rooms: tuple[str | None, ...] = ("red", "blue", None)
    for k in range(6):  # while alice is between nodes: two rooms and lobby
        where = rooms[k % 3]
        extra = {} if where is None else {"room": where}
        talker.send(command="pm", message=f"away {k}", id=f"p{k}", **extra)
        sent.append((int(talker.until("ack", id=f"p{k}")["seq"]), where, f"away {k}"))

    # On the other node, from the one cursor: every room's messages, none twice.
    alice, ok = v2(b.address, "alice", since=seen, epoch=None)
    assert sorted(r["name"] for r in ok["rooms"]) == ["blue", "red"] and ok["replay"]
    got = [f for f in replayed(alice) if f["type"] == "broadcast"]
    assert [(f["seq"], f.get("room"), f["message"]) for f in got] == sent
    talker.send(command="pm", room="red", message="live", id="live")
    live_seq = talker.until("ack", id="live")["seq"]
    assert alice.until("broadcast")["seq"] == live_seq  # live right after, no gap

    # A node started now rebuilds the rooms from PostgreSQL: the memberships, and
    # messages from the other node reach its members.
    fresh = cluster.process()
    alice.send(command="exit")
    alice.wait_closed(T)
    alice, ok = v2(fresh.address, "alice")
    assert {r["name"]: r["members"] for r in ok["rooms"]} == {
        "blue": ["alice", "talker"],
        "red": ["alice", "talker"],
    }
    talker.send(command="pm", room="blue", message="to the fresh node", id="f")
    seq = talker.until("ack", id="f")["seq"]
    got1 = alice.until("broadcast")
    assert (got1["seq"], got1["room"], got1["message"]) == (seq, "blue", "to the fresh node")
    # And a room made on the fresh node is on the other one.
    alice.send(command="join", room="green", id="g")
    alice.until("room_info", id="g")
    barrier(alice, talker, tag="green")
    talker.send(command="join", room="green", id="g2")
    assert talker.until("room_info", id="g2")["info"]["members"] == ["alice", "talker"]


def test_room_rows_whose_publication_was_lost_are_applied_from_postgres(
    cluster: Cluster,
) -> None:
    """A node that died between its commit and its XADD: the others read its room
    event and room message from PostgreSQL (the gap fill) and apply them in order."""
    a, b = cluster.add(), cluster.add()
    alice, _ = v2(a.address, "alice")
    watcher, _ = v2(b.address, "watcher")
    alice.send(command="join", room="dev", id=1)
    alice.until("room_info", id=1)
    barrier(alice, watcher, tag="made")

    pg = PgDatabase(cluster.db)
    try:
        silent = PgMessageLog(pg, publish=lambda stored: None)  # stores, never publishes
        join = RoomChange("dev", RoomEventKind.JOIN, "bob", role=Role.MEMBER, ts=time.time())
        (join_seq,) = silent.append([NewMessage("bob", None, join.detail(), join.ts, change=join)])
        (pm_seq,) = silent.append(
            [NewMessage("bob", None, "lost and found", time.time(), room="dev")]
        )
        silent.close()
    finally:
        pg.close()

    ev = alice.until("room_event")  # within the consumer's once-a-second check
    assert (ev["event"], ev["by"], ev["seq"]) == ("join", "bob", join_seq)
    got = alice.until("broadcast")
    assert (got["message"], got["room"], got["seq"]) == ("lost and found", "dev", pm_seq)
    # b applied the join too: its copy of dev has bob.
    barrier(alice, watcher, tag="after")
    watcher.send(command="members", room="dev", id=2)
    assert watcher.until("room_info", id=2)["info"]["members"] == ["alice", "bob"]


def test_an_outsider_speaks_in_a_minus_n_room_from_any_node(cluster: Cluster) -> None:
    # docs/PROTOCOL.md §Modes: -n lets a non-member send; each node checks it on its
    # copy of the room, so the mode must reach every copy, and the members on every
    # node get the message once while the outsider gets its ack and nothing else.
    a, b = cluster.add(), cluster.add()
    alice, _ = v2(a.address, "alice")
    bob, _ = v2(b.address, "bob")
    carol, _ = v2(b.address, "carol")
    dave, _ = v2(a.address, "dave")
    alice.send(command="join", room="dev", id=1)
    alice.until("room_info", id=1)
    bob.send(command="join", room="dev", id=2)
    bob.until("room_info", id=2)
    alice.send(command="mode", room="dev", modes="-n", id=3)
    alice.until("ack", id=3)
    barrier(alice, bob, carol, dave, tag="n")
    for who, name, i in ((carol, "carol", 4), (dave, "dave", 5)):
        who.send(command="pm", room="dev", message=f"from {name}", cid=f"c-{name}", id=i)
        seq = who.until("ack", id=i)["seq"]
        for member in (alice, bob):
            got = member.until("broadcast", room="dev")
            assert (got["message"], got["seq"], got["from"]) == (f"from {name}", seq, name)
        # A resend of the same cid (the SDK after a reconnect) is the same message.
        who.send(command="pm", room="dev", message=f"from {name}", cid=f"c-{name}", id=i + 10)
        assert who.until("ack", id=i + 10)["seq"] == seq
    barrier(alice, bob, tag="end")
    for who in (carol, dave):  # an outsider: its acks, and nothing of the room
        while (f := who.recv()).get("message") != "barrier end":
            assert f.get("room") is None, f
    alice.send(command="history", room="dev", id=20)
    texts = [m["message"] for m in alice.until("history", id=20)["messages"]]
    assert texts.count("from carol") == 1 and texts.count("from dave") == 1
