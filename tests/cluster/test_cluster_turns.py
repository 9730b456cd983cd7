"""Turns on a cluster node (docs/CLUSTER.md, "Turns on a node"; fanturns.py): a room
message from the cluster's stream to more than ``LARGE`` of a node's members is owed to
them and sent in slices between the fan-out's passes, so a small room's message is not
held behind a large room's whole delivery. On real Redis and real PostgreSQL, two
nodes: the large room's members on one, its senders on the other. Every member gets
every message it may see once, in seq order, a member of both rooms gets the small
room's message after the large room's it is owed (one send), and a node killed mid-turn
loses its members nothing on resume (docs/PROTOCOL.md §Ordering, §Resume)."""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from chatroom.protocol import username_key
from chatroom_server.fanturns import LARGE
from chatroom_server.messagelog import Stored
from chatroom_server.outbox import Outbox
from tests.cluster.conftest import Cluster
from tests.helpers import PASSWORD, RawClient
from tests.server.test_fanturns_server import _drain, _in_order, _replay, _Senders, _seqs

pytestmark = pytest.mark.timeout(300)

T = 60.0
N = LARGE + 2  # the large room's members on the node that receives: over LARGE
_SEQ = re.compile(rb'"seq":(\d+)')


def _login(address: tuple[str, int], name: str, **extra: Any) -> tuple[RawClient, dict[str, Any]]:
    c = RawClient(address, timeout=T)
    c.send(command="login", username=name, password=PASSWORD, features=["rooms"], **extra)
    return c, c.expect("login_ok")


def _join(c: RawClient, *rooms: str) -> None:
    for room in rooms:
        c.send(command="join", room=room, id=f"j-{room}")
        c.until("room_info", id=f"j-{room}")


def _barrier(sender: RawClient, readers: list[RawClient], tag: str) -> None:
    """A lobby message from ``sender`` that every reader has read: their node has
    applied every room event stored before it (a node delivers in seq order)."""
    sender.send(command="pm", message=f"barrier {tag}", id=f"b-{tag}")
    sender.until("ack", id=f"b-{tag}")
    for r in readers:
        r.until("broadcast", message=f"barrier {tag}")


@contextmanager
def _rooms(
    a: tuple[str, int], b: tuple[str, int]
) -> Iterator[tuple[list[RawClient], RawClient, list[RawClient], RawClient, RawClient]]:
    """Room "big": three senders on ``a`` and ``N`` members (m0 ...) on ``b``; room
    "small": a talker on ``a``, s0 on ``b``; s1 on ``b`` is in both. All logged in,
    joined, and the joins read."""
    senders = []
    for i in range(3):
        c, _ = _login(a, f"big{i}")
        _join(c, "big")
        senders.append(c)
    talker, _ = _login(a, "talker")
    _join(talker, "small")
    members = []
    for i in range(N):
        c, _ = _login(b, f"m{i}")
        _join(c, "big")
        members.append(c)
    s0, _ = _login(b, "s0")
    _join(s0, "small")
    s1, _ = _login(b, "s1")
    _join(s1, "big", "small")
    everyone = [*senders, talker, *members, s0, s1]
    _barrier(talker, [c for c in everyone if c is not talker], "joined")
    for c in everyone:
        _drain(c, "joined")
    try:
        yield senders, talker, members, s0, s1
    finally:
        for c in everyone:
            c.close()


def _upto(c: RawClient, tag: str) -> list[dict[str, Any]]:
    """What ``c`` gets before the barrier ``tag`` (sent by :func:`_end`)."""
    got: list[dict[str, Any]] = []
    while (f := c.recv()).get("message") != f"barrier {tag}":
        got.append(f)
    return got


def _end(sender: RawClient, tag: str) -> None:
    """A lobby message after everything sent: a reader that has it has the rest."""
    sender.send(command="pm", message=f"barrier {tag}", id=f"b-{tag}")
    sender.until("ack", id=f"b-{tag}")


def _room_seqs(c: RawClient, tag: str) -> list[int]:
    """The seqs of the room messages sent to ``c`` before the barrier ``tag``."""
    return [f["seq"] for f in _upto(c, tag) if f.get("type") == "broadcast" and f.get("room")]


def test_a_small_rooms_message_goes_between_a_large_rooms_and_in_order(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages to the large room and one to the small room reach the receiving node in
    one read of the stream (its consumer held until all are published): the small
    room's member is handed its message before the large room's members have theirs
    (they are owed, in turns), the member of both gets it in the same send as the
    large room's messages it is owed, right after them, and everyone gets everything
    once, in seq order."""
    a, b = cluster.add(), cluster.add()
    with _rooms(a.address, b.address) as (senders, talker, members, s0, s1):
        # Who is handed what on b, in the order it is handed (Outbox.queue/offer are
        # the only ways in for a room message, under b's fan-out lock).
        handed: list[tuple[int, list[int]]] = []
        real_offer, real_queue = Outbox.offer, Outbox.queue

        def offer(self: Outbox, data: bytes) -> None:
            handed.append((id(self), [int(s) for s in _SEQ.findall(data)]))
            real_offer(self, data)

        def queue(self: Outbox, data: bytes) -> bool:
            handed.append((id(self), [int(s) for s in _SEQ.findall(data)]))
            return real_queue(self, data)

        monkeypatch.setattr(Outbox, "offer", offer)
        monkeypatch.setattr(Outbox, "queue", queue)
        by_key = b.server._by_key
        box = {name: id(by_key[username_key(name)].outbox) for name in ("s0", "s1")}
        box_members = {id(by_key[f"m{i}"].outbox) for i in range(N)}

        held, gate = threading.Event(), threading.Event()
        glue = b.server._node  # what the bus calls (chatroom_server.node)
        assert glue is not None
        real = glue.cluster_deliver

        def deliver(messages: list[Stored], inbox: set[int]) -> None:
            if not gate.is_set():
                held.set()
                gate.wait(T)  # the test opens it well before
            real(messages, inbox)

        monkeypatch.setattr(glue, "cluster_deliver", deliver)
        talker.send(command="pm", message="hold", id="hold")  # b's consumer waits in it
        talker.until("ack", id="hold")
        assert held.wait(T)
        big: list[int] = []
        for k in range(3):  # stored and published (before its ack), all of them
            senders[k].send(command="pm", room="big", message=f"big {k}", id=f"big{k}")
            big.append(int(senders[k].until("ack", id=f"big{k}")["seq"]))
        talker.send(command="pm", room="small", message="small", id="small")
        small = int(talker.until("ack", id="small")["seq"])
        gate.set()
        _end(talker, "end")

        assert _room_seqs(s0, "end") == [small]
        assert _room_seqs(s1, "end") == [*big, small]
        for c in members:
            assert _room_seqs(c, "end") == big
        # s0 was handed the small room's message before the large room's members had
        # their first message: they were owed it, and got it in turns after.
        first_small = handed.index((box["s0"], [small]))
        last_big = max(
            k for k, (ob, seqs) in enumerate(handed) if ob in box_members and big[0] in seqs
        )
        assert first_small < last_big
        # s1 was owed the large room's messages when the small one came: one send, in
        # seq order.
        assert [seqs for ob, seqs in handed if ob == box["s1"] and small in seqs] == [[*big, small]]


def test_two_rooms_flooded_together_reach_everyone_once_in_order(cluster: Cluster) -> None:
    """Three senders flood the large room while the talker floods the small one, all on
    the other node: each member has every message of its rooms once, in seq order (the
    member of both: both rooms' messages merged in seq order), nobody its own."""
    a, b = cluster.add(), cluster.add()
    with _rooms(a.address, b.address) as (senders, talker, members, s0, s1):
        flood = _Senders([*senders, talker], 60, rooms=("big", "big", "big", "small"))
        with flood:
            pass
        flood.all_acked()
        big = sorted(s for i in range(3) for s in flood.acked[i])
        small = flood.acked[3]
        _end(talker, "end")
        for c in members:
            frames = _upto(c, "end")
            _in_order(frames)
            assert _seqs(frames) == big
        frames = _upto(s0, "end")
        assert _seqs(frames, "small") == small and _seqs(frames) == []
        frames = _upto(s1, "end")
        _in_order(frames)
        assert _seqs(frames) == big and _seqs(frames, "small") == small


@pytest.mark.parametrize("how", [signal.SIGKILL])
def test_a_node_killed_mid_turn_then_its_members_resume_elsewhere(
    cluster: Cluster, how: signal.Signals
) -> None:
    """The receiving node is killed while it is sending the large room's messages in
    turns; each member resumes on the other node from the highest seq it had: with what
    it got before, every acknowledged message once, nothing out of order."""
    a = cluster.add()
    doomed = cluster.process()
    with _rooms(a.address, doomed.address) as (senders, talker, members, s0, s1):
        epoch = _login(a.address, "probe")[1]["epoch"]
        flood = _Senders([*senders, talker], 150, rooms=("big", "big", "big", "small"))
        watched = members[-1]
        before: dict[int, list[dict[str, Any]]] = {}
        with flood:
            # The receiving node is delivering: a member has a message of the flood.
            first = watched.until("broadcast")
            doomed.proc.send_signal(how)
            doomed.proc.wait(T)
        acked = flood.all_acked()
        receivers = [*members, s0, s1]
        names = [f"m{i}" for i in range(N)] + ["s0", "s1"]
        for k, c in enumerate(receivers):
            frames = [first] if c is watched else []
            while True:
                try:
                    frames.append(c.recv())
                except (EOFError, ConnectionResetError):
                    break
            _in_order(frames)
            before[k] = frames
        small = set(flood.acked[3])
        for k, name in enumerate(names):
            since = max(_seqs(before[k], None), default=0)
            c, ok = _login(a.address, name, since=since, epoch=epoch)
            assert ok["replay"]
            replay = _replay(c)
            c.close()
            _in_order(replay)
            assert all(s > since for s in _seqs(replay, None))
            got = _seqs(before[k], None) + _seqs(replay, None)
            assert len(got) == len(set(got)), name
            # Every acknowledged message of its rooms (s1 is in both).
            mine = {"s0": small, "s1": set(acked)}.get(name, set(acked) - small)
            assert mine <= set(got), (name, sorted(mine - set(got))[:5])
