"""SIGKILL of a server whose sessions are parked (logged in on the admission thread, no
thread of their own: chatroom_server.firstlook ``FirstLook.first``) in the middle of a
flood of public messages: after the restart each session resumes (docs/PROTOCOL.md
§Resume) and has seen every acknowledged message exactly once, live or replayed
(§Message log, "Durable acks"); nobody's stream holds a message twice."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PASSWORD, RawClient, ServerProcess

ARGS = ("--users-interval", "0", "--rate-limit", "off", "--password-hash", "load-test")
PARKED = 60
SENT = 400


def login_frame(name: str, **more: Any) -> bytes:
    frame = {"command": "login", "username": name, "password": PASSWORD, **more}
    return json.dumps(frame).encode() + b"\n"


class Parked:
    """A returning user that logs in (in one packet: the admission thread's login) and
    then only reads: its connection stays parked on the server."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seqs: list[int] = []  # every broadcast's seq, live and replayed
        self.seen = 0  # the highest seq seen: a resume's since
        self.epoch = ""

    def login(self, address: tuple[str, int], resume: bool) -> RawClient:
        c = RawClient(address)
        more: dict[str, Any] = {"features": ["users_delta"]}
        if resume:
            more.update(since=self.seen, epoch=self.epoch)
        c.send_raw(login_frame(self.name, **more))
        ok = c.expect("login_ok", username=self.name)
        self.epoch = ok["epoch"]
        if ok.get("replay"):
            self.read(c, until="replay_done")
        return c

    def read(self, c: RawClient, until: str | None = None) -> None:
        """Frames until one of type ``until`` (None: until the server closes)."""
        while True:
            try:
                f = c.recv()
            except (EOFError, ConnectionResetError):
                assert until is None, f"{self.name}: closed before {until}"
                return
            if f["type"] == "broadcast":
                self.seqs.append(f["seq"])
                self.seen = max(self.seen, f["seq"])
            if f["type"] == until:
                return


@pytest.mark.timeout(180)
def test_sigkill_with_parked_sessions_mid_flood_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "parked.db"
    users = [Parked(f"p{i}") for i in range(PARKED)]
    acked: set[int] = set()
    with ServerProcess(db, *ARGS) as server:
        for u in users:  # registered: a returning user's login is the admission thread's
            with RawClient(server.address) as c:
                c.send_raw(login_frame(u.name))
                u.epoch = c.expect("login_ok")["epoch"]
        # No since (a resume's replay would start the connection's thread): parked.
        conns = [u.login(server.address, resume=False) for u in users]
        sender = RawClient(server.address)
        sender.login("flood")
        frames = (
            json.dumps({"command": "pm", "message": f"m{i}", "cid": f"c{i}", "id": i}).encode()
            + b"\n"
            for i in range(SENT)
        )
        sender.send_raw(b"".join(frames))
        while len(acked) < SENT // 4:  # well under way, more in flight
            f = sender.recv()
            if f["type"] == "ack":
                acked.add(f["seq"])
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        for f in sender.wait_closed():  # the acks that made it out before the kill
            if f["type"] == "ack":
                acked.add(f["seq"])
        sender.close()
        for u, c in zip(users, conns, strict=True):
            u.read(c)  # what reached it before the kill
            c.close()
    assert acked
    with ServerProcess(db, *ARGS) as server:
        for u in users:
            u.login(server.address, resume=True).close()
    for u in users:
        twice = [seq for seq, n in Counter(u.seqs).items() if n > 1]
        assert not twice, f"{u.name} got {twice} twice"
        missing = acked - set(u.seqs)
        assert not missing, f"{u.name} never got acked {sorted(missing)[:10]}"
