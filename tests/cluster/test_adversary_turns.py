"""A member of a large room that never reads, on the cluster node that owes the room's
messages to its members in turns (fanturns.py, docs/CLUSTER.md "Turns on a node"): the
other members keep getting theirs, every message once and in order, and the stalled
one is let go once past its allowance, as on one server."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from tests.cluster.conftest import Cluster
from tests.cluster.test_cluster_turns import N, _end, _join, _login, _rooms, _upto
from tests.server.test_fanturns_server import _in_order, _Senders, _seqs

pytestmark = pytest.mark.timeout(300)

T = 60.0


def test_a_large_rooms_member_that_never_reads_holds_up_no_one_in_turns(
    cluster: Cluster,
) -> None:
    a = cluster.add()
    b = cluster.add(max_output=64 * 1024, send_buffer=16384)
    sender, _ = _login(a.address, "sender")
    _join(sender, "big")
    stuck, _ = _login(b.address, "stuck")
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    _join(stuck, "big")
    readers = []
    for i in range(N - 1):  # with stuck: N members on b, over LARGE: sent in turns
        c, _ = _login(b.address, f"r{i}")
        _join(c, "big")
        readers.append(c)
    # Every reader has had every join: it is a member before the first message.
    sender.send(command="pm", room="big", message="start", id="start")
    sender.until("ack", id="start")
    for c in readers:
        c.until("broadcast", message="start")
    text = "y" * 1000
    # 200 KB to each member, 20 KB at a time as the readers take them: far past stuck's
    # buffers and its 64 KiB allowance, never near a reader's (its kernel buffer holds
    # a round).
    n, chunk = 200, 20
    for start in range(0, n, chunk):
        frames = [
            json.dumps({"command": "pm", "room": "big", "message": f"{i} {text}", "id": i}).encode()
            + b"\n"
            for i in range(start, start + chunk)
        ]
        sender.send_raw(b"".join(frames))
        for c in readers:
            for i in range(start, start + chunk):
                f = c.until("broadcast")
                assert f["message"].startswith(f"{i} "), (i, f["message"][:12])
    # Let go: its socket ends once what it was sent before is read.
    stuck.sock.settimeout(T)
    try:
        while stuck.sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    stuck.close()
    for c in readers:
        c.close()
    sender.close()


def test_a_part_and_a_join_mid_turn_split_the_large_rooms_messages_at_their_seqs(
    cluster: Cluster,
) -> None:
    """While the receiving node sends the large room's flood in turns, one member parts
    it and another user joins it there: the parting member gets every message stored
    before its part, all of them before its part's ack, and nothing of the room after
    (docs/PROTOCOL.md §Rooms); the joiner gets every message stored after its join
    and none before; the other members get every message once, in order."""
    a = cluster.add()
    b = cluster.add()
    with _rooms(a.address, b.address) as (senders, talker, members, s0, _):
        parter, watched = members[0], members[-1]
        flood = _Senders(senders, 100)
        with flood:
            first = watched.until("broadcast")  # the node is delivering the flood
            parter.send(command="part", room="big", id="p")
            s0.send(command="join", room="big", id="j")
            before_part: list[dict[str, Any]] = []
            while (f := parter.recv()).get("id") != "p":
                before_part.append(f)
            assert f["type"] == "ack", f
            part_seq = f["seq"]
            while (f := s0.recv()).get("id") != "j":
                pass  # nothing of big before its join's reply (checked below)
            assert f["type"] == "room_info" and f.get("joined"), f
            join_seq = f["seq"]
        acked = set(flood.all_acked())
        # Mid-flood, both: messages stored on either side of each.
        assert min(acked) < part_seq < max(acked) and min(acked) < join_seq < max(acked)
        _end(talker, "end")
        after_part = _upto(parter, "end")
        got = _seqs(before_part, "big")
        assert got == sorted(s for s in acked if s < part_seq), "lost or twice before its part"
        assert _seqs(after_part, "big") == [], "a room message after its part's ack"
        joined = _seqs(_upto(s0, "end"), "big")
        assert joined == sorted(s for s in acked if s > join_seq)
        frames = [first, *_upto(watched, "end")]
        _in_order(frames)
        assert set(_seqs(frames, "big")) == acked
