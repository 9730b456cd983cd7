"""A client that never reads, on a cluster node (docs/CLUSTER.md: each node delivers
the stream's runs through the fan-out's loop, chatroom_server.delivery): it must not
hold up the node's other clients, for public messages and DMs alike, and it is let
go once past its allowance, as on one server."""

from __future__ import annotations

import json
import socket

from tests.cluster.conftest import Cluster
from tests.helpers import RawClient, connect


def test_a_client_that_never_reads_holds_up_no_one_on_its_node(cluster: Cluster) -> None:
    a = cluster.add(max_output=1024 * 1024)
    b = cluster.add()
    stuck = RawClient(a.address)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.login("stuck")
    reader = connect(a.address, "reader")
    sender = connect(b.address, "sender")
    reader.until("users", joined="sender")
    big = "z" * 3900
    # ~12 MB, far past stuck's kernel buffers and its 1 MiB allowance, sent 100 at a
    # time as the reader takes them: the reader, which keeps up, is never the one over
    # its allowance, however slow this machine. Every tenth is a DM to the reader,
    # which goes the inbox's way too.
    n, chunk = 3000, 100
    got = 0
    left_seen = False
    for start in range(0, n, chunk):
        frames = []
        for i in range(start, start + chunk):
            if i % 10 == 9:
                frame = {"command": "dm", "to": "reader", "message": f"{i} {big}"}
            else:
                frame = {"command": "pm", "message": f"{i} {big}"}
            frames.append(json.dumps(frame).encode() + b"\n")
        sender.send_raw(b"".join(frames))
        while got < start + chunk:
            f = reader.recv(timeout=60)
            if f["type"] in ("broadcast", "dm"):
                assert f["message"].startswith(f"{got} "), (got, f["message"][:20])
                assert f["type"] == ("dm" if got % 10 == 9 else "broadcast")
                got += 1
            elif f.get("left") == "stuck":
                left_seen = True
    if not left_seen:
        reader.until("users", left="stuck")
