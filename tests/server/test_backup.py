"""chat-server backup and restore (chatroom_server.backup): a consistent copy while the
server writes, and a restore after which resuming clients are told that the seqs they
saw were reissued, instead of silently skipping them (issue 39's reproduction)."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from chatroom_server import schema
from chatroom_server.__main__ import main
from chatroom_server.backup import BackupError, backup, restore
from chatroom_server.dbfile import InUse
from chatroom_server.messagelog import MessageLog
from tests.helpers import PASSWORD, RawClient, connect, quiet_server


def _send(c: RawClient, n: int, prefix: str) -> list[int]:
    """``n`` public messages, each acked before the next; their seqs."""
    seqs = []
    for i in range(n):
        c.send(command="pm", message=f"{prefix}{i}", id=i)
        seqs.append(c.until("ack", id=i)["seq"])
    return seqs


def _resume(address: tuple[str, int], since: int, epoch: str) -> list[dict[str, Any]]:
    """Log in as alice resuming from ``since``: login_ok and every frame to replay_done."""
    c = RawClient(address)
    c.send(command="login", username="alice", password=PASSWORD, since=since, epoch=epoch)
    frames = [c.expect("login_ok")]
    while frames[-1]["type"] != "replay_done":
        frames.append(c.recv())
    return frames


def _restored_then_resumed(tmp_path: Path, put_back: str) -> list[dict[str, Any]]:
    """The issue's reproduction: alice has seen seq 20; the database goes back to a
    backup taken at seq 10; 15 new messages; alice resumes from 20."""
    path, saved = tmp_path / "chat.db", tmp_path / "at-10.db"
    with quiet_server(db_path=path) as srv:
        alice = RawClient(srv.address)
        ok = alice.login("alice")
        assert _send(alice, 10, "before") == list(range(1, 11))
        backup(path, saved)  # online, the server running
        assert _send(alice, 10, "lost")[-1] == 20
        srv.stop()
        if put_back == "restore":
            restore(saved, path)
        else:  # the backup file copied into place by hand, the server stopped
            for suffix in ("-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
            shutil.copyfile(saved, path)
        srv.start()
        bob = connect(srv.address, "bob")
        assert _send(bob, 15, "new")[-1] == 25
        return [ok, *_resume(srv.address, since=20, epoch=ok["epoch"])]


@pytest.mark.parametrize("put_back", ["restore", "copied backup file"])
def test_a_client_resuming_across_a_restore_is_told(tmp_path: Path, put_back: str) -> None:
    first_ok, ok, *rest = _restored_then_resumed(tmp_path, put_back)
    assert ok["seq"] == 25
    assert ok["epoch"] != first_ok["epoch"]  # a new epoch: alice's since is foreign
    # Not 21-25 in silence: told that nothing it holds can be resumed from.
    assert rest[0] == {"type": "replay_truncated", "oldest_seq": 26}
    assert [f for f in rest if f.get("replay")] == []
    assert rest[-1]["type"] == "replay_done" and rest[-1]["count"] == 0


def test_a_backup_while_messages_are_stored_is_consistent(tmp_path: Path) -> None:
    path, saved = tmp_path / "chat.db", tmp_path / "copy.db"
    stop, running = threading.Event(), threading.Event()
    acked: list[int] = []  # appended by the sender thread only
    with quiet_server(db_path=path) as srv:
        sender = connect(srv.address, "loud")
        _send(sender, 50, "warm")

        def keep_sending() -> None:
            i = 0
            while not stop.is_set():
                sender.send(command="pm", message=f"load{i}", id=f"l{i}")
                acked.append(sender.until("ack", id=f"l{i}")["seq"])
                i += 1
                if i == 20:
                    running.set()

        t = threading.Thread(target=keep_sending)
        t.start()
        try:
            assert running.wait(30)
            at_start = acked[-1]
            summary = backup(path, saved)  # while the sender keeps going
        finally:
            stop.set()
            t.join(timeout=30)
        assert not t.is_alive()
    db = sqlite3.connect(saved)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seqs = [r[0] for r in db.execute("SELECT seq FROM messages ORDER BY seq")]
    finally:
        db.close()
    # One snapshot: every seq from 1 to its newest, nothing torn, nothing missing.
    assert seqs == list(range(1, seqs[-1] + 1))
    assert at_start <= seqs[-1] <= acked[-1]
    assert summary.last_seq == seqs[-1]
    assert saved.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("copy")) == [
        "copy.db"
    ]  # one self-contained file


def test_restore_refuses_while_a_server_has_the_database(tmp_path: Path) -> None:
    path, saved = tmp_path / "chat.db", tmp_path / "b.db"
    with quiet_server(db_path=path) as srv:
        connect(srv.address, "alice")
        backup(path, saved)
        content = saved.read_bytes()
        with pytest.raises(InUse, match="stop it first"):
            restore(saved, path)
        assert saved.read_bytes() == content
        assert not list(tmp_path.glob("*.before-restore-*"))


def test_restore_keeps_the_database_it_replaces(tmp_path: Path) -> None:
    path, saved = tmp_path / "chat.db", tmp_path / "b.db"
    with quiet_server(db_path=path) as srv:
        alice = connect(srv.address, "alice")
        _send(alice, 3, "kept")
        backup(path, saved)
        _send(alice, 4, "later")
    done = restore(saved, path)
    assert done.summary.last_seq == 3 and done.summary.accounts == 1
    assert done.replaced is not None
    kept = MessageLog(done.replaced)
    try:
        assert kept.last_seq == 7  # what the restore replaced, all of it
    finally:
        kept.close()


def test_restore_upgrades_an_older_backup(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    db = sqlite3.connect(old, isolation_level=None)
    db.execute("CREATE TABLE accounts (name TEXT PRIMARY KEY COLLATE NOCASE, hash, created)")
    db.execute("INSERT INTO accounts VALUES ('alice', 'x', 1.0)")
    db.execute("PRAGMA user_version=1")
    db.close()
    done = restore(old, tmp_path / "chat.db")
    assert done.summary.version == schema.SCHEMA_VERSION
    assert done.summary.accounts == 1 and done.summary.epoch is not None


def test_backup_and_restore_refuse_what_is_not_a_chatroom_database(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE things (x)")
    db.close()
    with pytest.raises(BackupError, match="not a chatroom database"):
        backup(other, tmp_path / "b.db")
    with pytest.raises(BackupError, match="not a chatroom backup"):
        restore(other, tmp_path / "chat.db")
    with pytest.raises(BackupError, match="no database at"):
        backup(tmp_path / "missing.db", tmp_path / "b.db")
    assert not (tmp_path / "chat.db").exists() or (tmp_path / "chat.db").stat().st_size == 0


def test_the_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, saved = tmp_path / "chat.db", tmp_path / "b.db"
    MessageLog(path).close()
    assert main(["backup", str(saved), "--db", str(path)]) == 0
    assert f"backed up {path} to {saved}: schema version" in capsys.readouterr().out
    assert main(["backup", str(saved), "--db", str(path)]) == 1  # never overwrites
    assert "exists" in capsys.readouterr().err
    assert main(["restore", str(saved), "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "restored" in out and "new epoch" in out and "before-restore" in out
    assert main(["backup", str(saved), "--db", "postgresql://u@h/db"]) == 2
    assert "pg_dump" in capsys.readouterr().err


def test_new_epoch_on_a_sqlite_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "chat.db"
    mlog = MessageLog(path)
    before = mlog.epoch
    mlog.close()
    assert main(["new-epoch", "--db", str(path)]) == 0
    mlog = MessageLog(path)
    try:
        assert mlog.epoch != before
        assert f"new epoch {mlog.epoch}" in capsys.readouterr().out
    finally:
        mlog.close()
    with quiet_server(db_path=path) as srv:
        connect(srv.address, "alice")
        assert main(["new-epoch", "--db", str(path)]) == 1  # a server has it
        assert "stop it first" in capsys.readouterr().err
