"""Replays streamed from the log (docs/PROTOCOL.md §Resume, §Offline DMs): a replay
holds a page of the log in the server, not the whole of it, whether or not its client
reads; live traffic waits behind it with no gap and no duplicate; the offline-DM inbox
keeps to the replay limit. Raw sockets on a real server, temp databases."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from chatroom_server.accounts import LOAD_TEST_HASHER, AccountStore
from chatroom_server.messagelog import MessageLog, NewMessage
from chatroom_server.outbox import Flusher, Outbox
from tests.helpers import PASSWORD, RawClient, connect, quiet_server
from tests.server.test_messagelog import login, replay

BIG = "z" * 3900  # a message near the default limit: a replay of 600 is 2.4 MB


def stored_log(db: Path, messages: list[NewMessage], *users: str) -> None:
    """A database with these accounts and messages, as a server would have left it."""
    store = AccountStore(db, LOAD_TEST_HASHER)
    for name in users:
        store.register(name, PASSWORD)
    store.close()
    mlog = MessageLog(db)
    mlog.append(messages)
    mlog.close()


def small_window(address: tuple[str, int]) -> RawClient:
    """A client whose receive buffer is small from the start (set before connecting, so
    its TCP window is small but never shrinks): the kernel holds little of what the
    server sends it, so what the server holds itself shows."""
    c = RawClient(address)
    c.sock.close()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(c.timeout)
    sock.connect(address)
    c.sock = sock
    return c


def test_a_replay_is_streamed_as_the_client_reads_and_live_traffic_follows(
    tmp_path: Path,
) -> None:
    db = tmp_path / "stream.db"
    stored_log(db, [NewMessage("writer", None, f"{i} {BIG}", 1.0 + i) for i in range(600)])
    limit = 256 * 1024
    # A small send buffer: the kernel takes little, so what the server holds shows.
    with quiet_server(db_path=db, max_output=limit, send_buffer=16384) as srv:
        writer = connect(srv.address, "writer")
        late = small_window(srv.address)
        ok = login(late, "late", since=0)
        assert ok["replay"] is True and ok["seq"] == 600
        first = late.recv()  # the replay has begun, and the client stops reading
        assert first["seq"] == 1 and first.get("replay") is True
        for i in range(5):  # live traffic meanwhile: held behind the replay
            writer.send(command="pm", message=f"live {i}", id=i)
            writer.until("ack", id=i)
        outbox = srv.server._by_key["late"].outbox
        # At any moment a page of the log at most, not the 2.4 MB of the replay.
        assert outbox.backlog <= limit // 2, outbox.backlog
        got = [first]
        while True:
            f = late.recv()
            got.append(f)
            if f["type"] == "broadcast" and f["message"] == "live 4":
                break
        replayed = [f for f in got if f.get("replay")]
        assert [f["seq"] for f in replayed] == list(range(1, 601))  # no gap, no duplicate
        assert all(f["message"].startswith(f"{f['seq'] - 1} ") for f in replayed)
        rest = [f for f in got[len(replayed) :] if f["type"] != "users"]
        assert rest[0] == {"type": "replay_done", "count": 600, "seq": 600}
        assert [(f["message"], f["seq"]) for f in rest[1:]] == [
            (f"live {i}", 601 + i) for i in range(5)
        ]
        assert srv.server.handler_crashes == 0


def test_a_client_that_never_reads_its_replay_is_dropped_after_the_stall_timeout(
    tmp_path: Path,
) -> None:
    db = tmp_path / "stall.db"
    stored_log(db, [NewMessage("writer", None, f"{i} {BIG}", 1.0 + i) for i in range(600)])
    with quiet_server(
        db_path=db, max_output=256 * 1024, send_buffer=16384, stall_timeout=0.5
    ) as srv:
        watcher = connect(srv.address, "watcher")
        stuck = RawClient(srv.address)
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        login(stuck, "stuck", since=0)
        watcher.until("users", joined="stuck")
        watcher.until("users", left="stuck")  # dropped, the server none the worse
        watcher.send(command="ping", id="p")
        watcher.until("pong", id="p")
        assert srv.server.handler_crashes == 0


def test_the_inbox_keeps_to_the_replay_limit_and_the_rest_waits(tmp_path: Path) -> None:
    with quiet_server(db_path=tmp_path / "limit.db", replay_limit=5) as srv:
        with connect(srv.address, "away"):
            pass
        writer = connect(srv.address, "writer")
        seqs = []
        for i in range(8):
            writer.send(command="dm", to="away", message=f"dm {i}", id=i)
            ack = writer.until("ack", id=i)
            assert ack["queued"] is True
            seqs.append(ack["seq"])
        with RawClient(srv.address) as away:
            login(away, "away")
            assert away.expect("replay_truncated") == {
                "type": "replay_truncated",
                "oldest_seq": seqs[3],
            }
            got, done, _ = replay(away)
            assert [f["message"] for f in got] == [f"dm {i}" for i in range(3, 8)]
            assert done == {"type": "replay_done", "count": 5, "seq": seqs[-1]}
            # The older ones are in the history all along.
            away.send(command="history", id="h", **{"with": "writer"})
            page = away.until("history", id="h")["messages"]
            assert [m["message"] for m in page] == [f"dm {i}" for i in range(8)]
            away.send(command="exit")
            away.wait_closed()
        with RawClient(srv.address) as away:  # the next login: the rest, not lost
            login(away, "away")
            got, done, _ = replay(away)
            assert [f["message"] for f in got] == [f"dm {i}" for i in range(3)]
            assert done["count"] == 3
            away.send(command="exit")
            away.wait_closed()
        with RawClient(srv.address) as away:  # and then nothing is waiting
            assert "replay" not in login(away, "away")
            away.expect("users", joined="away")


def test_many_non_reading_resumes_leave_the_server_serving(tmp_path: Path) -> None:
    """Twenty clients resume from 0 over a 2.4 MB log and read nothing: each holds a
    page (before, each held its whole replay: 48 MB); the room goes on meanwhile."""
    db = tmp_path / "many.db"
    stored_log(db, [NewMessage("writer", None, f"{i} {BIG}", 1.0 + i) for i in range(600)])
    with quiet_server(db_path=db, send_buffer=16384) as srv:
        talker = connect(srv.address, "talker")
        stalled: list[RawClient] = []
        done = threading.Event()

        def resume(i: int) -> None:
            c = RawClient(srv.address)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            login(c, f"reader{i}", since=0)
            c.recv()  # the replay has begun
            stalled.append(c)
            if len(stalled) == 20:
                done.set()

        threads = [threading.Thread(target=resume, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        assert done.wait(30)
        for t in threads:
            t.join(10)
        held = sum(c.outbox.backlog for c in srv.server.roster() if c.username != "talker")
        assert held <= 20 * 256 * 1024, held  # a page each, at most
        talker.send(command="pm", message="still here", id="x")
        assert talker.until("ack", id="x")["seq"] == 601


def test_the_outbox_streams_a_replay_ahead_of_held_frames() -> None:
    a, b = socket.socketpair()
    b.settimeout(5)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    flusher = Flusher()
    flusher.start()
    try:
        out = Outbox(a, flusher, limit=4096, name="test")
        out.queue(b"login_ok\n")  # queued under the server's lock, as _join does
        out.hold()
        assert out.send(b"live 1\n")
        pages = [b"".join(b"page %d line %05d\n" % (p, i) for i in range(400)) for p in range(5)]
        expected = b"login_ok\n" + b"".join(pages) + b"done\nlive 1\n"
        received = bytearray()

        def reader() -> None:
            while len(received) < len(expected):
                received.extend(b.recv(65536))

        t = threading.Thread(target=reader)
        t.start()
        for page in pages:  # each 7 KB, past the 4 KiB limit: none is held whole
            assert out.wait_drained(5.0)
            assert out.backlog <= 4096
            assert out.replay(page)
        assert out.release(b"done\n")
        t.join(10)
        assert bytes(received) == expected
        assert out.replay_unwritten == 0
    finally:
        flusher.stop()
        a.close()
        b.close()


def test_waiting_for_a_reader_ends_at_a_stall_or_a_goodbye() -> None:
    for how in ("stall", "bye"):
        a, b = socket.socketpair()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        flusher = Flusher()
        flusher.start()
        try:
            out = Outbox(a, flusher, name="test")
            dropped: list[str] = []
            out.on_drop = dropped.append
            out.hold()
            assert out.replay(b"x" * 1_000_000)  # far more than the kernel takes
            if how == "bye":
                threading.Thread(target=out.finish, args=(b"bye\n",)).start()
                assert not out.wait_drained(30.0)  # woken, not timed out
                assert dropped == []
            else:
                assert not out.wait_drained(0.2)
                assert dropped == ["no write progress for 0.2 s during a replay"]
        finally:
            flusher.stop()
            a.close()
            b.close()
