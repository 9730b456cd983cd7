"""Offline DMs are never lost (docs/PROTOCOL.md §Offline DMs): a DM acked ``queued``
waits in its recipient's inbox until they have provably received it, whatever happens to
the connection or the server meanwhile; a client that resumes with ``since`` gets each
exactly once. Raw sockets on a real server (SIGKILL in tests/server/test_crash.py)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest

from chatroom.testing import TestServer
from chatroom_server.messagelog import StorageError
from tests.helpers import RawClient, connect
from tests.server.test_messagelog import login, replay

Address = tuple[str, int]


def queue_dms(address: Address, to: str, n: int, sender: str = "writer") -> list[int]:
    """``n`` DMs to ``to``, who is offline: every ack says ``queued``; their seqs."""
    with RawClient(address) as away:  # the account exists
        login(away, to)
    w = connect(address, sender)
    w.send_raw(
        b"".join(
            b'{"command":"dm","to":"%s","message":"dm %d","id":%d}\n' % (to.encode(), i, i)
            for i in range(n)
        )
    )
    seqs = []
    for i in range(n):
        ack = w.until("ack", id=i)
        assert ack["queued"] is True, ack
        seqs.append(ack["seq"])
    w.close()
    return seqs


def read_a_little(address: Address, name: str, n: int = 3) -> tuple[RawClient, list[int]]:
    """Log in without ``since`` and read the first ``n`` replayed DMs only."""
    c = RawClient(address)
    assert login(c, name)["replay"] is True
    got = [c.until("dm")["seq"] for _ in range(n)]
    return c, got


def reset(c: RawClient) -> None:
    """The connection drops: a reset, as a network failure or a killed client gives."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.sock.close()


def waiting(address: Address, name: str, **extra: Any) -> list[dict[str, Any]]:
    """Log in (``extra``: since, ...), read the whole replay, and log out with ``exit``
    (the DMs in it reached the client); the DMs replayed."""
    with RawClient(address) as c:
        ok = login(c, name, **extra)
        got: list[dict[str, Any]] = []
        if ok.get("replay"):
            got, _, _ = replay(c)
        c.send(command="exit")
        assert c.wait_closed()[-1] == {"type": "bye", "reason": "exit"}
    return [f for f in got if f["type"] == "dm"]


def nothing_waits(address: Address, name: str) -> None:
    with RawClient(address) as c:
        assert "replay" not in login(c, name)  # no replay at all: nothing waits
        c.expect("users", joined=name)


def drops_lose_nothing(
    address: Address, other: Address | None = None, wait_gone: Callable[[str], None] = print
) -> None:
    """bob has 300 DMs waiting; each way a session can end without proof leaves them
    all waiting; a clean exit after the whole replay ends it. ``other``: a second
    address of the same room to log in on; ``wait_gone(name)``: until the server has
    seen that session end."""
    again = other or address
    seqs = queue_dms(address, "bob", 300)
    c, got = read_a_little(address, "bob")
    assert got == seqs[:3]
    reset(c)  # a drop mid-replay
    wait_gone("bob")
    c, got = read_a_little(again, "bob")
    assert got == seqs[:3]  # all of them, from the first
    c.close()  # closed without an exit
    wait_gone("bob")
    c = RawClient(address)
    login(c, "bob")
    replay(c)  # read it all ...
    reset(c)  # ... but the connection drops before the client can say so
    wait_gone("bob")
    assert [f["seq"] for f in waiting(again, "bob")] == seqs  # all 300, once each, in order
    nothing_waits(address, "bob")  # the exit proved them received


def test_a_drop_at_any_moment_loses_no_queued_dm(server: TestServer) -> None:
    def gone(name: str) -> None:
        watcher.until("users", left=name)

    watcher = connect(server.address, "watcher")
    drops_lose_nothing(server.address, wait_gone=gone)


def test_a_resume_gets_the_rest_exactly_once(server: TestServer) -> None:
    seqs = queue_dms(server.address, "bob", 50)
    c, got = read_a_little(server.address, "bob", 5)
    reset(c)
    # The client has everything up to the fifth: the replay gives the 45 after it.
    rest = waiting(server.address, "bob", since=got[-1])
    assert [f["seq"] for f in rest] == seqs[5:]
    nothing_waits(server.address, "bob")


def test_only_an_exit_proves_a_replay_received(server: TestServer) -> None:
    """A client may read the bytes and die before it shows them: its kernel then closes
    the connection as an orderly close would. Only its exit says it has them."""
    seqs = queue_dms(server.address, "bob", 20)
    watcher = connect(server.address, "watcher")
    for _ in range(2):
        with RawClient(server.address) as c:
            login(c, "bob")
            got, _, _ = replay(c)
            assert [f["seq"] for f in got] == seqs
        watcher.until("users", left="bob")  # closed without a word: sent again
    assert [f["seq"] for f in waiting(server.address, "bob")] == seqs
    nothing_waits(server.address, "bob")


def test_a_session_taken_over_mid_replay_leaves_them_waiting(server: TestServer) -> None:
    seqs = queue_dms(server.address, "bob", 100)
    c, _ = read_a_little(server.address, "bob")
    got = waiting(server.address, "bob")  # the takeover: the first session gets bye
    assert [f["seq"] for f in got] == seqs
    c.close()
    nothing_waits(server.address, "bob")


def test_a_replay_received_while_the_inbox_cannot_be_cleared_is_not_sent_again(
    server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/RELIABILITY.md F2: the exit proves the replay received, but the disk is full
    and the inbox rows cannot be deleted. The server keeps that proof: the next login
    without ``since`` (after the disk has room again) does not replay those DMs, and
    gets every DM queued since, once."""
    mlog = server.server._log
    assert mlog is not None
    with RawClient(server.address) as c:  # alice has an account and a cursor
        cursor = login(c, "alice")["seq"]
    first = queue_dms(server.address, "alice", 2, sender="bob")
    real = mlog.inbox_received

    def disk_full(*_: Any) -> Any:
        raise StorageError("database or disk is full")

    monkeypatch.setattr(mlog, "inbox_received", disk_full)
    assert [f["seq"] for f in waiting(server.address, "alice", since=cursor)] == first
    monkeypatch.setattr(mlog, "inbox_received", real)  # the disk has room again
    later = queue_dms(server.address, "alice", 1, sender="bob")
    assert [f["seq"] for f in waiting(server.address, "alice")] == later
    nothing_waits(server.address, "alice")


def test_a_fresh_login_s_replay_received_while_the_disk_is_full_is_not_sent_again(
    server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F2 for a replay of the inbox alone: the same proof, kept the same way; and until
    the exit nothing is taken as received (a drop while the disk is full loses none)."""
    mlog = server.server._log
    assert mlog is not None
    seqs = queue_dms(server.address, "alice", 3, sender="bob")

    def disk_full(*_: Any) -> Any:
        raise StorageError("database or disk is full")

    monkeypatch.setattr(mlog, "inbox_received", disk_full)
    watcher = connect(server.address, "watcher")
    c, got = read_a_little(server.address, "alice", 3)
    assert got == seqs
    c.close()  # no exit: no proof
    watcher.until("users", left="alice")
    assert [f["seq"] for f in waiting(server.address, "alice")] == seqs
    assert waiting(server.address, "alice") == []  # the proof, kept in memory
    monkeypatch.undo()
    nothing_waits(server.address, "alice")
