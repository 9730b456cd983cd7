"""Members of a room that never read, while the room is flooded (docs/PROTOCOL.md
§Limits, §Rooms): the server holds at most their allowance for them and then drops
them (one with a thread, one parked: logged in on the admission thread,
chatroom_server.firstlook ``FirstLook.first``), the member who reads gets every message
in order and the sender every ack, and a dropped member that resumes gets what it had
not read, once."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PASSWORD, RawClient, quiet_server
from tests.server.test_early_login import parking

ALLOWANCE = 64 * 1024
N, CHUNK = 600, 10
BIG = "z" * 3000  # N of them: far past a deaf member's kernel buffers and allowance
EPOCHS: dict[str, str] = {}  # each user's last login_ok's epoch


def v2(srv: Any, name: str, **more: Any) -> RawClient:
    c = RawClient(srv.address)
    frame = {"command": "login", "username": name, "password": PASSWORD, "features": ["rooms"]}
    c.send_raw(json.dumps({**frame, **more}).encode() + b"\n")
    EPOCHS[name] = c.expect("login_ok", username=name)["epoch"]
    return c


def deaf(c: RawClient) -> RawClient:
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return c


def joined(c: RawClient, rid: str) -> None:
    c.send(command="join", room="dev", id=rid)
    c.until("room_info", id=rid)


def seqs_until_closed(c: RawClient) -> list[int]:
    """The seqs of the room's messages that reached ``c`` before the server closed it
    (a frame the drop cut in half is not one)."""
    return [f["seq"] for f in c.wait_closed() if f.get("type") == "broadcast"]


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Any]:
    with quiet_server(
        tmp_path / "db", password_hash="load-test", max_output=ALLOWANCE, send_buffer=8192
    ) as s:
        yield s


def test_deaf_members_of_a_flooded_room_are_dropped_and_hurt_nobody(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    threaded = deaf(v2(srv, "threaded"))
    joined(threaded, "j1")
    with v2(srv, "parked") as c:  # a member, then a returning one: parked
        joined(c, "j2")
    done = parking(srv, monkeypatch)
    parked = deaf(v2(srv, "parked"))
    assert done.get(timeout=10) == "parked"
    reader = v2(srv, "reader")
    joined(reader, "j3")
    sender = v2(srv, "sender")
    joined(sender, "j4")

    got: list[int] = []
    acked: list[int] = []
    gone: set[str] = set()  # who left, as the reader heard it
    # Sent a chunk (30 KB) at a time as the reader takes them: the reader, which keeps
    # up, is never the one over its allowance, however slow this machine.
    for start in range(0, N, CHUNK):
        frames = [
            json.dumps({"command": "pm", "room": "dev", "message": f"{i} {BIG}", "id": i}) + "\n"
            for i in range(start, start + CHUNK)
        ]
        sender.send_raw("".join(frames).encode())
        while len(acked) < start + CHUNK:
            f = sender.recv()
            if f.get("type") == "ack":
                assert f["id"] == len(acked)
                acked.append(f["seq"])
        while len(got) < start + CHUNK:
            f = reader.recv()
            if f.get("type") == "broadcast":
                assert (f["room"], f["message"]) == ("dev", f"{len(got)} {BIG}")
                got.append(f["seq"])
            elif f.get("type") == "users" and "left" in f:
                gone.add(f["left"])
    assert got == acked
    # Both deaf members were dropped (their sessions ended: the reader saw them leave).
    while not {"threaded", "parked"} <= gone:
        gone.add(reader.until("users").get("left", ""))
    assert "threaded" not in srv.server.online and "parked" not in srv.server.online

    # Each comes back with a resume from the last message it read whole: the rest of
    # the room's messages, once, in order.
    for name, c in (("threaded", threaded), ("parked", parked)):
        before = seqs_until_closed(c)
        c.close()
        assert before == acked[: len(before)]
        since = before[-1] if before else 0
        with v2(srv, name, since=since, epoch=EPOCHS[name]) as back:
            replayed = []
            while (f := back.recv()).get("type") != "replay_done":
                if f.get("type") == "broadcast":
                    replayed.append(f["seq"])
        assert before + replayed == acked, name
