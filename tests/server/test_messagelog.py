"""The durable message log (docs/PROTOCOL.md §Message log): seq, durable acks, resume,
idempotent sends, offline DMs, history, retention and storage failures. Raw sockets on a
real server, temp databases."""

from __future__ import annotations

import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from chatroom.errors import ProtocolError
from chatroom.protocol import HistoryCommand, Limits, LoginCommand, validate_command
from chatroom.testing import ServerProcess, TestServer
from chatroom_server.messagelog import Conflict, Duplicate, MessageLog, NewMessage, StorageError
from tests.helpers import PASSWORD, CutProxy, RawClient, connect, quiet_server


def login(c: RawClient, name: str, **extra: Any) -> dict[str, Any]:
    """Log in with extra login fields; returns login_ok (the joined push is left)."""
    c.send(command="login", username=name, password=PASSWORD, **extra)
    return c.expect("login_ok")


def replay(c: RawClient) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Read up to replay_done: (replayed messages, replay_done, other frames)."""
    got: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    while True:
        f = c.recv()
        if f["type"] == "replay_done":
            return got, f, other
        if f.get("replay"):
            got.append(f)
        else:
            other.append(f)


def frames_until(c: RawClient, done: Any) -> list[dict[str, Any]]:
    """Every frame until ``done(frames)`` is true."""
    got: list[dict[str, Any]] = []
    while not done(got):
        got.append(c.recv())
    return got


def count(frames: list[dict[str, Any]], *types: str) -> int:
    return sum(f["type"] in types for f in frames)


def test_seq_is_one_order_identical_at_every_recipient(server: TestServer) -> None:
    a, b, c = (connect(server.address, n) for n in ("a1", "b1", "c1"))
    a.until("users", joined="c1")
    b.until("users", joined="c1")
    for i in range(30):
        (a if i % 2 else b).send(command="pm", message=f"m{i}", id=i)
    c.send(command="dm", to="a1", message="psst", id="d")
    # a: 15 acks, b's 15 broadcasts and c's DM; b: 15 acks and a's 15; c: all 30 and an ack.
    at_a = frames_until(a, lambda fs: count(fs, "ack") == 15 and count(fs, "broadcast", "dm") == 16)
    at_b = frames_until(b, lambda fs: count(fs, "ack") == 15 and count(fs, "broadcast") == 15)
    at_c = frames_until(c, lambda fs: count(fs, "ack") == 1 and count(fs, "broadcast") == 30)
    seen = {
        name: [f["seq"] for f in fs if f["type"] in ("broadcast", "dm")]
        for name, fs in (("a", at_a), ("b", at_b), ("c", at_c))
    }
    for order in seen.values():
        assert order == sorted(order) and len(set(order)) == len(order)
    acks = {f["id"]: f["seq"] for f in at_a + at_b if f["type"] == "ack"}
    assert sorted(acks.values()) == seen["c"]  # every ack carries its message's seq
    assert set(seen["a"]) | set(seen["b"]) == set(seen["c"]) | {acks_dm(at_c)}
    # a sent the odd ones, b the even ones; each saw the other's, in one order.
    assert seen["b"] == [acks[i] for i in range(1, 30, 2)]
    assert [s for s in seen["a"] if s != acks_dm(at_c)] == [acks[i] for i in range(0, 30, 2)]


def acks_dm(frames: list[dict[str, Any]]) -> int:
    (seq,) = [f["seq"] for f in frames if f["type"] == "ack" and f.get("id") == "d"]
    return int(seq)


def test_login_ok_carries_seq_and_epoch_and_resume_with_nothing_missed(
    server: TestServer,
) -> None:
    a = connect(server.address, "alpha")
    a.send(command="pm", message="one", id=1)
    seq = a.expect("ack", id=1)["seq"]
    with RawClient(server.address) as b:
        ok = login(b, "beta", since=seq)
        assert ok["seq"] == seq and isinstance(ok["epoch"], str) and ok["epoch"]
        assert ok["replay"] is True  # replay_done follows
        got, done, _ = replay(b)
        assert got == [] and done == {"type": "replay_done", "count": 0, "seq": seq}
    with RawClient(server.address) as b:  # without since: no replay frames at all
        assert "replay" not in login(b, "beta")
        b.expect("users", joined="beta")


def test_resume_replays_what_was_missed_in_order_then_live(server: TestServer) -> None:
    a = connect(server.address, "sender")
    with RawClient(server.address) as b:
        cursor = login(b, "reader")["seq"]
    for i in range(5):
        a.send(command="pm", message=f"while away {i}", id=i)
    a.send(command="dm", to="reader", message="for you", id="dm")
    a.until("ack", id="dm")
    with RawClient(server.address) as b:
        ok = login(b, "reader", since=cursor, epoch=None)
        got, done, _ = replay(b)
        assert [f["message"] for f in got] == [*(f"while away {i}" for i in range(5)), "for you"]
        assert [f["seq"] for f in got] == sorted(f["seq"] for f in got)
        assert all(f["seq"] > cursor for f in got) and done["count"] == 6
        assert done["seq"] == ok["seq"] == got[-1]["seq"]
        a.send(command="pm", message="live", id="live")
        live = b.until("broadcast")
        assert live["message"] == "live" and "replay" not in live and live["seq"] > done["seq"]


def test_resume_while_another_client_sends_1000_has_no_gap_and_no_duplicate(
    server: TestServer,
) -> None:
    sender = connect(server.address, "firehose")
    with RawClient(server.address) as r:
        start = login(r, "resumer")["seq"]
    sender.send(command="pm", message="before", id="b")
    sender.until("ack", id="b")
    go = threading.Event()

    def blast() -> None:
        go.wait(10)
        for i in range(1000):
            sender.send(command="pm", message=f"n{i}")

    t = threading.Thread(target=blast, daemon=True)
    t.start()
    with RawClient(server.address) as r:
        go.set()  # the sends race the login and its replay
        login(r, "resumer", since=start)
        seqs: list[int] = []
        texts: list[str] = []
        while len(texts) < 1001:
            f = r.recv()
            if f["type"] == "broadcast":
                seqs.append(f["seq"])
                texts.append(f["message"])
        t.join(10)
        assert texts == ["before", *(f"n{i}" for i in range(1000))]  # no gap, no duplicate
        assert seqs == sorted(seqs) and len(set(seqs)) == 1001


def test_a_resend_with_the_same_cid_is_stored_once(server: TestServer) -> None:
    watcher = connect(server.address, "watcher")
    with connect(server.address, "flaky") as f:
        watcher.until("users", joined="flaky")
        f.send(command="pm", message="once", cid="c-1", id=1)
        first = f.expect("ack", id=1)
    # The connection was cut before the client saw its ack: it resends on a new one.
    with RawClient(server.address) as f:
        login(f, "flaky")
        f.send(command="pm", message="once", cid="c-1", id=2)
        again = f.until("ack", id=2)
        assert again["seq"] == first["seq"]
        f.send(command="dm", to="watcher", message="dm once", cid="c-2", id=3)
        f.send(command="dm", to="watcher", message="dm once", cid="c-2", id=4)
        a3, a4 = f.until("ack", id=3), f.until("ack", id=4)
        assert a3["seq"] == a4["seq"]
        f.send(command="pm", message="marker", id=5)
        f.until("ack", id=5)
    got = []
    while True:
        frame = watcher.recv()
        if frame["type"] in ("broadcast", "dm"):
            got.append(frame["message"])
            if frame["message"] == "marker":
                break
    assert got == ["once", "dm once", "marker"]
    watcher.send(command="history", limit=10, id="h")
    page = watcher.until("history", id="h")["messages"]
    assert [m["message"] for m in page] == ["once", "marker"]


def test_a_dm_right_after_a_goodbye_waits_for_the_next_login(server: TestServer) -> None:
    # The reaper does the leaving (chatroom_server.presence, Presence.reap): a client
    # that said exit sees its socket close only once it is offline, so a DM sent the
    # moment it is closed is queued, not handed to the closing connection and lost.
    writer = connect(server.address, "writer")
    for i in range(10):
        name = f"leaver{i}"
        leaver = connect(server.address, name)
        leaver.send(command="exit")
        leaver.wait_closed()
        writer.send(command="dm", to=name, message="just missed you", id=i)
        assert writer.until("ack", id=i)["queued"] is True, name
    writer.close()


def test_a_goodbye_leaves_the_roster_before_its_socket_closes(
    server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    presence = server.server._presence  # chatroom_server.presence
    real = presence.leave
    seen: list[tuple[str | None, bool]] = []

    def leave(conn: Any) -> str | None:
        seen.append((conn.username, conn.sock.fileno() != -1))  # the reaper thread
        return real(conn)

    monkeypatch.setattr(presence, "leave", leave)
    leaver = connect(server.address, "leaver")
    leaver.send(command="exit")
    leaver.wait_closed()
    assert seen == [("leaver", True)]  # left while its socket was still open


def test_offline_dm_is_delivered_once_at_next_login(server: TestServer) -> None:
    with connect(server.address, "away"):
        pass
    a = connect(server.address, "writer")
    a.send(command="dm", to="AWAY", message="while you were out", id=1)
    ack = a.expect("ack", id=1)
    assert ack["queued"] is True and ack["to"] == "away"
    with RawClient(server.address) as b:
        login(b, "away")
        got, done, _ = replay(b)
        assert [(f["type"], f["message"], f["from"]) for f in got] == [
            ("dm", "while you were out", "writer")
        ]
        assert done["count"] == 1 and got[0]["seq"] == ack["seq"]
        # The exit proves it received them (docs/PROTOCOL.md §Offline DMs; without one
        # they would wait for the next login: tests/server/test_offline_dms.py).
        b.send(command="exit")
        b.wait_closed()
    with RawClient(server.address) as b:
        login(b, "away")
        b.expect("users", joined="away")  # nothing replayed the second time
        b.send(command="ping", id="p")
        b.expect("pong", id="p")


def test_unknown_users_are_still_refused(server: TestServer) -> None:
    a = connect(server.address, "someone")
    a.send(command="dm", to="never-registered", message="x", id=1)
    a.expect_error("unknown_user", id=1)


def test_history_pages_back_and_forward(server: TestServer) -> None:
    a = connect(server.address, "pager")
    seqs = []
    for i in range(25):
        a.send(command="pm", message=f"p{i}", id=i)
        seqs.append(a.expect("ack", id=i)["seq"])
    a.send(command="history", limit=10, id="h1")
    page = a.expect("history", id="h1")
    assert [m["message"] for m in page["messages"]] == [f"p{i}" for i in range(15, 25)]
    assert page["has_more"] is True
    m = page["messages"][0]
    assert m["kind"] == "pm" and m["from"] == "pager" and "to" not in m and m["ts"] > 0
    a.send(command="history", before=page["messages"][0]["seq"], limit=10, id="h2")
    page2 = a.expect("history", id="h2")
    assert [m["message"] for m in page2["messages"]] == [f"p{i}" for i in range(5, 15)]
    a.send(command="history", before=page2["messages"][0]["seq"], limit=10, id="h3")
    page3 = a.expect("history", id="h3")
    assert [m["message"] for m in page3["messages"]] == [f"p{i}" for i in range(5)]
    assert page3["has_more"] is False
    a.send(command="history", after=seqs[19], limit=10, id="h4")
    fwd = a.expect("history", id="h4")
    assert [m["message"] for m in fwd["messages"]] == [f"p{i}" for i in range(20, 25)]
    assert fwd["has_more"] is False
    for bad in ({"limit": 0}, {"limit": 101}, {"before": -1}, {"with": "no spaces"}):
        a.send(command="history", id="bad", **bad)
        a.expect_error("bad_request", id="bad")


def test_nobody_reads_a_dm_they_neither_sent_nor_received(server: TestServer) -> None:
    ann, bob, eve = (connect(server.address, n) for n in ("ann", "bob", "eve"))
    ann.send(command="dm", to="bob", message="secret", id=1)
    ann.until("ack", id=1)
    bob.send(command="dm", to="ann", message="reply", id=2)
    bob.until("ack", id=2)
    eve.send(command="pm", message="public", id=3)
    cursor = eve.until("ack", id=3)["seq"] - 3
    for probe in ("ann", "bob", "eve"):
        eve.send(command="history", id=probe, **{"with": probe})
        assert eve.until("history", id=probe)["messages"] == []
    ann.send(command="history", id="ab", **{"with": "BOB"})
    assert [m["message"] for m in ann.until("history", id="ab")["messages"]] == [
        "secret",
        "reply",
    ]
    eve.close()
    with RawClient(server.address) as e:
        login(e, "eve", since=cursor)
        got, _, _ = replay(e)
        assert [f["message"] for f in got] == ["public"]


def test_replay_truncated_after_pruning(tmp_path: Path) -> None:
    now = [1_000_000.0]
    with quiet_server(
        db_path=tmp_path / "p.db", wall_clock=lambda: now[0], history_days=1.0
    ) as srv:
        a = connect(srv.address, "old")
        a.send(command="pm", message="ancient", id=1)
        first = a.expect("ack", id=1)["seq"]
        now[0] += 3 * 86400  # three days later
        a.send(command="pm", message="recent", id=2)
        recent = a.expect("ack", id=2)["seq"]
        assert srv.server.prune_history() == 1
        with RawClient(srv.address) as b:
            login(b, "late", since=first - 1)
            assert b.expect("replay_truncated") == {
                "type": "replay_truncated",
                "oldest_seq": recent,
            }
            got, done, _ = replay(b)
            assert [f["message"] for f in got] == ["recent"] and done["count"] == 1


def test_replay_limit_and_a_foreign_epoch(tmp_path: Path) -> None:
    with quiet_server(db_path=tmp_path / "r.db", replay_limit=3) as srv:
        a = connect(srv.address, "talker")
        for i in range(5):
            a.send(command="pm", message=f"t{i}", id=i)
            a.expect("ack", id=i)
        with RawClient(srv.address) as b:
            login(b, "listener", since=0)
            first = b.expect("replay_truncated")
            got, _, _ = replay(b)
            assert [f["message"] for f in got] == ["t2", "t3", "t4"]  # the newest three
            assert first["oldest_seq"] == got[0]["seq"]
        with RawClient(srv.address) as b:
            ok = login(b, "listener", since=2, epoch="not-this-database")
            assert b.expect("replay_truncated")["oldest_seq"] == ok["seq"] + 1
            got, done, _ = replay(b)
            assert got == [] and done["count"] == 0


def test_sigkill_after_acks_loses_nothing_and_seq_continues(tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    acked: list[int] = []
    with ServerProcess(db, "--users-interval", "0", "--rate-limit", "off") as server:
        with RawClient(server.address) as c:
            login(c, "durable")
            for i in range(200):
                c.send(command="pm", message=f"d{i}", id=i)
            for _ in range(200):
                acked.append(c.until("ack")["seq"])
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
    with ServerProcess(db, "--users-interval", "0") as server, RawClient(server.address) as c:
        ok = login(c, "durable")
        assert ok["seq"] == max(acked)
        stored: list[int] = []
        before = None
        while True:
            c.send(command="history", limit=100, id="h", **({"before": before} if before else {}))
            page = c.until("history", id="h")
            stored = [m["seq"] for m in page["messages"]] + stored
            if not page["has_more"]:
                break
            before = page["messages"][0]["seq"]
        assert stored == sorted(acked)
        c.send(command="pm", message="after restart", id="x")
        assert c.until("ack", id="x")["seq"] == max(acked) + 1


def test_storage_failure_is_unavailable_and_nothing_acked_is_lost(
    server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = connect(server.address, "writer2")
    b = connect(server.address, "reader2")
    a.until("users", joined="reader2")
    a.send(command="pm", message="kept", id=1)
    kept = a.expect("ack", id=1)["seq"]
    mlog = server.server._log
    assert mlog is not None
    real = mlog.append

    def disk_full(*_: Any) -> Any:
        raise StorageError("database or disk is full")

    monkeypatch.setattr(mlog, "append", disk_full)
    a.send(command="pm", message="lost", id=2)
    a.expect_error("unavailable", id=2)
    a.send(command="dm", to="reader2", message="lost too", id=3)
    a.expect_error("unavailable", id=3)
    monkeypatch.setattr(mlog, "append", real)  # the disk has room again
    a.send(command="pm", message="back", id=4)
    back = a.expect("ack", id=4)["seq"]
    assert back == kept + 1  # nothing was stored meanwhile, no seq was used
    got = [b.until("broadcast")["message"] for _ in range(2)]
    assert got == ["kept", "back"]
    b.send(command="history", id="h")
    assert [m["message"] for m in b.until("history", id="h")["messages"]] == ["kept", "back"]


def test_a_read_only_database_file_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    with quiet_server(db_path=db) as srv:
        a = connect(srv.address, "ro")
        a.send(command="pm", message="fine", id=1)
        a.expect("ack", id=1)
        # Another process holds the write lock past the busy timeout.
        other = sqlite3.connect(db, timeout=0)
        other.execute("BEGIN IMMEDIATE")
        mlog = srv.server._log
        assert isinstance(mlog, MessageLog)  # the SQLite log: its connection, below
        mlog._db.execute("PRAGMA busy_timeout = 50")
        try:
            a.send(command="pm", message="blocked", id=2)
            a.expect_error("unavailable", id=2)
        finally:
            other.execute("ROLLBACK")
            other.close()
        a.send(command="pm", message="recovered", id=3)
        a.expect("ack", id=3)
        assert srv.server.handler_crashes == 0


def test_history_off_keeps_v1_behaviour(tmp_path: Path) -> None:
    with quiet_server(db_path=tmp_path / "v1.db", history=False) as srv:
        a = connect(srv.address, "plain")
        a.send(command="pm", message="x", id=1)
        assert a.expect("ack", id=1) == {"type": "ack", "command": "pm", "id": 1}
        with RawClient(srv.address) as b:
            ok = login(b, "plain2", since=0)
            assert "seq" not in ok and "epoch" not in ok
            b.expect("users", joined="plain2")  # no replay without a log
            b.send(command="history", id="h")
            b.expect_error("unknown_command", id="h")


def test_paging_back_while_pruning_runs_stays_consistent(tmp_path: Path) -> None:
    """Pages asked for between pruning passes: ascending, no duplicates, and the walk
    ends (has_more false) at whatever is oldest by then."""
    with quiet_server(db_path=tmp_path / "pp.db", history_max=1000, history_days=None) as srv:
        a = connect(srv.address, "paging")
        for i in range(60):
            a.send(command="pm", message=f"x{i}", id=i)
        last = [a.until("ack", id=i)["seq"] for i in range(60)][-1]
        seen: list[int] = []
        before = None
        cap = 1000
        while True:
            extra: dict[str, int] = {"before": before} if before is not None else {}
            a.send(command="history", limit=10, id="h", **extra)
            page = a.until("history", id="h")
            seqs = [m["seq"] for m in page["messages"]]
            assert seqs == sorted(seqs) and not set(seqs) & set(seen)
            seen = seqs + seen
            # Between pages, retention shrinks to 25 messages, then 15, ...
            cap = max(5, min(cap, 45) - 10)
            mlog = srv.server._log
            assert mlog is not None
            mlog.prune(now=0.0, max_age=None, max_count=cap)
            if not page["has_more"]:
                break
            before = seqs[0]
        assert seen == sorted(seen) and seen[-1] == last
        a.send(command="history", limit=100, id="all")
        remaining = [m["seq"] for m in a.until("history", id="all")["messages"]]
        assert remaining == list(range(last - cap + 1, last + 1))


def test_a_seq_past_what_the_database_can_hold_is_a_bad_request(server: TestServer) -> None:
    """Seqs are 64-bit signed integers in both databases: a larger cursor is refused
    with bad_request by the protocol's validation, and the connection stays."""
    a = connect(server.address, "bounds")
    huge = 2**63
    for i, fields in enumerate(
        ({"before": huge}, {"after": huge}, {"after": 1, "before": huge}, {"before": 10**30})
    ):
        a.send(command="history", id=i, **fields)
        a.expect_error("bad_request", id=i)
    a.send(command="history", before=huge - 1, id="max")  # the largest seq there can be
    assert a.expect("history", id="max")["messages"] == []
    with RawClient(server.address) as b:
        b.send(command="login", username="bounds2", password=PASSWORD, since=huge, id="s")
        b.expect_error("bad_request", id="s")
        b.send(command="ping", id="p")
        b.expect("pong", id="p")
    a.send(command="ping", id="p")
    a.expect("pong", id="p")
    assert server.server.handler_crashes == 0
    # Commands the server builds itself (the IRC gateway's CHATHISTORY) are checked too.
    for cmd in (
        HistoryCommand(before=huge),
        HistoryCommand(after=-1),
        LoginCommand(username="x", since=huge),
    ):
        with pytest.raises(ProtocolError) as err:
            validate_command(cmd, Limits())
        assert err.value.code == "bad_request"


def cid_conflicts(c: RawClient, zoe: RawClient, carol: RawClient) -> None:
    """docs/PROTOCOL.md §Idempotent sends: a cid reused with another message (another
    recipient, another text, another command) is ``cid_conflict``; the first message
    stays the only one. Shared by the SQLite test here and the cluster's."""
    c.send(command="dm", to="zoe", message="for zoe", cid="D", id=1)
    first = c.until("ack", id=1)["seq"]
    c.send(command="dm", to="carol", message="for zoe", cid="D", id=2)  # another recipient
    assert c.until("error", id=2)["code"] == "cid_conflict"
    c.send(command="dm", to="zoe", message="changed", cid="D", id=3)  # another text
    assert c.until("error", id=3)["code"] == "cid_conflict"
    c.send(command="pm", message="for zoe", cid="D", id=4)  # another command
    err = c.until("error", id=4)
    assert err["code"] == "cid_conflict" and str(first) in err["message"]
    c.send(command="dm", to="ZOE", message="for zoe", cid="D", id=5)  # a true resend
    assert c.until("ack", id=5)["seq"] == first
    # Two public messages in one read are stored in one group: the second conflicts.
    c.send_raw(
        b'{"command":"pm","message":"one","cid":"G","id":6}\n'
        b'{"command":"pm","message":"two","cid":"G","id":7}\n'
    )
    group = c.until("ack", id=6)["seq"]
    assert c.until("error", id=7)["code"] == "cid_conflict"
    c.send(command="pm", message="marker", id=8)
    c.until("ack", id=8)
    for who, expected in ((zoe, ["for zoe", "one", "marker"]), (carol, ["one", "marker"])):
        got: list[str] = []
        while not got or got[-1] != "marker":
            frame = who.recv()
            if frame["type"] in ("broadcast", "dm"):
                got.append(frame["message"])
        assert got == expected
    c.send(command="history", id="h", **{"with": "carol"})
    assert c.until("history", id="h")["messages"] == []
    c.send(command="history", after=first - 1, id="all")
    stored = [(m["seq"], m["message"]) for m in c.until("history", id="all")["messages"]]
    assert stored == [(group, "one"), (group + 1, "marker")]


def test_a_cid_reused_with_another_message_is_a_conflict(server: TestServer) -> None:
    zoe, carol = connect(server.address, "zoe"), connect(server.address, "carol")
    c = connect(server.address, "reuser")
    cid_conflicts(c, zoe, carol)


def test_a_cid_conflict_within_one_group_and_against_the_stored(tmp_path: Path) -> None:
    mlog = MessageLog(tmp_path / "g.db")
    try:
        dm = NewMessage("ann", "zoe", "hi", 1.0, cid="X")
        (seq,) = mlog.append([dm])
        assert isinstance(seq, int)
        got = mlog.append(
            [
                NewMessage("ann", "carol", "hi", 2.0, cid="X"),  # stored: other recipient
                NewMessage("ann", None, "a", 2.0, cid="Y"),
                NewMessage("ann", None, "b", 2.0, cid="Y"),  # this group: other text
                NewMessage("ANN", "ZOE", "hi", 2.0, cid="X"),  # a resend, any case
                NewMessage("bob", "carol", "hi", 2.0, cid="X"),  # another sender's cid
            ]
        )
        assert got == [Conflict(seq), seq + 1, Conflict(seq + 1), Duplicate(seq, "zoe"), seq + 2]
    finally:
        mlog.close()


def test_a_group_stored_as_new_falls_back_when_a_cid_is_stored(tmp_path: Path) -> None:
    """MessageLog.append stores a group as if none of its cids were stored (one statement
    for a group of one); a resend found then costs the careful path, never a seq."""
    mlog = MessageLog(tmp_path / "g.db")
    try:
        assert mlog.append([NewMessage("ann", None, "a", 1.0, cid="A")]) == [1]
        # Alone: the single statement finds the cid stored, and nothing was written.
        assert mlog.append([NewMessage("Ann", None, "a", 2.0, cid="A")]) == [Duplicate(1, None)]
        assert mlog.append([NewMessage("ann", None, "other", 2.0, cid="A")]) == [Conflict(1)]
        # In a group, with a DM waiting in the inbox: rolled back, stored again in full.
        got = mlog.append(
            [
                NewMessage("ann", "zoe", "dm", 3.0, cid="B", inbox=True),
                NewMessage("ann", None, "a", 3.0, cid="A"),
                NewMessage("ann", None, "c", 3.0, cid="C"),
                NewMessage("ann", None, "c", 3.0, cid="C"),  # twice in the group
            ]
        )
        assert got == [2, Duplicate(1, None), 3, Duplicate(3, None)]
        assert mlog.last_seq == 3 and mlog.has_inbox("zoe")
        assert [m.seq for m in mlog.replay_page("zoe", 0, 3, 10_000, inbox=True)] == [2]
        # No gap in the seqs a fallback left.
        assert mlog.append([NewMessage("ann", None, "d", 4.0)]) == [4]
        page, _ = mlog.history("zoe", before=None, after=None, limit=10, with_user=None)
        assert [(m.seq, m.body) for m in page] == [(1, "a"), (3, "c"), (4, "d")]
        # A group in one multi-row statement: all new, stored; one stored cid in it (or
        # one twice), nothing stored by the statement and the careful path's outcomes.
        assert mlog.append([NewMessage("ann", None, f"e{k}", 5.0, f"E{k}") for k in range(3)]) == [
            5,
            6,
            7,
        ]
        got = mlog.append(
            [
                NewMessage("bob", None, "f", 6.0, cid="F"),
                NewMessage("ann", None, "e1", 6.0, cid="E1"),  # stored above
                NewMessage("bob", "zoe", "g", 6.0, cid="G"),
                NewMessage("bob", "zoe", "g", 6.0, cid="G"),  # twice in the group
            ]
        )
        assert got == [8, Duplicate(6, None), 9, Duplicate(9, "zoe")]
        # Past the one statement's size: a transaction, the same outcomes.
        big = [NewMessage("cy", None, f"h{k}", 7.0, f"H{k}") for k in range(40)]
        assert mlog.append(big) == list(range(10, 50))
        assert mlog.append([*big[:2], NewMessage("cy", None, "i", 8.0, "I")]) == [
            Duplicate(10, None),
            Duplicate(11, None),
            50,
        ]
        page, _ = mlog.history("zoe", before=None, after=None, limit=100, with_user=None)
        assert [m.seq for m in page] == [1, 3, *range(4, 9), *range(10, 51)]
    finally:
        mlog.close()


@pytest.mark.parametrize(("size", "dms"), [(1, False), (3, True), (3, False)])
def test_a_group_that_fails_stores_nothing(tmp_path: Path, size: int, dms: bool) -> None:
    """A group of one (a single statement), of more with DMs for the inbox (a
    transaction) or of more public messages (one multi-row statement) is all stored or
    none of it, and a failed one's seqs are used again."""
    path = tmp_path / "f.db"
    mlog = MessageLog(path)
    try:
        db = sqlite3.connect(path)
        db.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON messages WHEN NEW.body = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        db.commit()
        to = "zoe" if dms else None
        group = [NewMessage("ann", to, f"m{k}", 1.0, inbox=dms) for k in range(size - 1)]
        with pytest.raises(StorageError, match="boom"):
            mlog.append([*group, NewMessage("ann", None, "boom", 1.0, cid="X")])
        assert mlog.last_seq == 0 and not mlog.has_inbox("zoe")
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)
        db.execute("DROP TRIGGER boom")
        db.commit()
        db.close()
        assert mlog.append([NewMessage("ann", None, "ok", 2.0, cid="X")]) == [1]
    finally:
        mlog.close()


def own_messages_replayed_with_their_cid(address: tuple[str, int], *others: Any) -> None:
    """docs/PROTOCOL.md §Resume: a replayed message its resuming user sent carries the
    cid it was sent with, whether or not its ack arrived; nobody else's cid is shown.
    ``others``: more addresses of the same room (a cluster's nodes) to resume on."""
    bob = connect(address, "bob")
    with RawClient(address) as a:
        start = login(a, "alice")["seq"]
    proxy = CutProxy(address)
    try:
        with RawClient(proxy.address) as a:
            login(a, "alice")
            a.send(command="pm", message="acked", cid="p1", id=1)
            a.until("ack", id=1)
            a.send(command="dm", to="bob", message="to bob", cid="d1", id=2)
            a.until("ack", id=2)
            a.send(command="pm", message="no cid", id=3)
            a.until("ack", id=3)
            proxy.cut_on(b'"ack"')  # the next ack is lost with the connection
            a.send(command="pm", message="ack lost", cid="p2", id=4)
            with pytest.raises((EOFError, ConnectionError)):
                while True:
                    a.recv()
    finally:
        proxy.close()
    bob.send(command="pm", message="from bob", cid="b1", id=5)
    bob.until("ack", id=5)
    for where in (address, *others):
        with RawClient(where) as a:
            login(a, "alice", since=start)
            got, _, _ = replay(a)
            assert [(f["type"], f["message"], f.get("cid")) for f in got] == [
                ("broadcast", "acked", "p1"),
                ("dm", "to bob", "d1"),
                ("broadcast", "no cid", None),
                ("broadcast", "ack lost", "p2"),
                ("broadcast", "from bob", None),  # bob's cid is his own business
            ]
    bob.close()
    with RawClient(address) as b:
        login(b, "bob", since=start)
        got, _, _ = replay(b)
        assert [(f["message"], f.get("cid")) for f in got if f["from"] == "bob"] == [
            ("from bob", "b1")
        ]
        assert all("cid" not in f for f in got if f["from"] == "alice")


def test_replayed_own_messages_carry_their_cid(server: TestServer) -> None:
    own_messages_replayed_with_their_cid(server.address)
