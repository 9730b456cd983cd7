"""A member of a large room that never reads, on the cluster node that owes the room's
messages to its members in turns (fanturns.py, docs/CLUSTER.md "Turns on a node"): the
other members keep getting theirs, every message once and in order, and the stalled
one is let go once past its allowance, as on one server."""

from __future__ import annotations

import json
import socket

import pytest

from tests.cluster.conftest import Cluster
from tests.cluster.test_cluster_turns import N, _join, _login

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
