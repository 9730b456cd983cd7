"""chatroom_server.schema: the database records its version; an older one is upgraded in
place after a copy is taken, a newer one is refused untouched, and no data is lost.
Upgraded from every schema this project shipped, written here as the servers wrote them
(from git history: server/chatroom_server/accounts.py and messagelog.py)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from chatroom_server import schema
from chatroom_server.accounts import LOAD_TEST_HASHER, AccountStore, AccountStoreError
from chatroom_server.messagelog import MessageLog, NewMessage, StorageError
from tests.helpers import PASSWORD, connect, quiet_server

# bd10986 (protocol v1's foundation) to today: the accounts, user_version 1.
SHIPPED_ACCOUNTS = """
CREATE TABLE IF NOT EXISTS accounts (
    name     TEXT PRIMARY KEY COLLATE NOCASE,  -- registered spelling; unique ignoring case
    hash     TEXT NOT NULL,                    -- argon2id PHC string, parameters included
    created  REAL NOT NULL
)
"""
# 10d24b0 (the durable message log) to today: beside the accounts, no version of its own.
SHIPPED_LOG = """
CREATE TABLE IF NOT EXISTS messages (
    seq       INTEGER PRIMARY KEY,          -- one order for the whole server
    ts        REAL NOT NULL,                -- server clock, seconds since the epoch
    sender    TEXT NOT NULL COLLATE NOCASE, -- canonical spelling
    recipient TEXT COLLATE NOCASE,          -- NULL: public; else the DM's recipient
    pair      TEXT,                         -- DMs: both names lower-cased, sorted, ' '-joined
    body      TEXT NOT NULL,
    cid       TEXT                          -- the sender's idempotency key, if any
);
CREATE INDEX IF NOT EXISTS messages_by_pair ON messages (pair, seq);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_cid ON messages (sender, cid)
    WHERE cid IS NOT NULL;
-- DMs stored while their recipient was offline, not yet sent to them.
CREATE TABLE IF NOT EXISTS inbox (
    user TEXT NOT NULL COLLATE NOCASE,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (user, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
EPOCH = "0123456789abcdef"


def _accounts(db: sqlite3.Connection) -> None:
    db.execute(SHIPPED_ACCOUNTS)
    db.execute(
        "INSERT INTO accounts VALUES (?, ?, ?)", ("Alice", LOAD_TEST_HASHER.hash(PASSWORD), 1.0)
    )
    db.execute("PRAGMA user_version=1")


def _log(db: sqlite3.Connection) -> None:
    db.executescript(SHIPPED_LOG)
    db.execute("INSERT INTO meta VALUES ('epoch', ?)", (EPOCH,))
    db.executemany(
        "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(seq, 100.0 + seq, "Alice", None, None, f"m{seq}", f"c{seq}") for seq in range(3, 9)]
        + [(9, 109.0, "Alice", "bob", "alice bob", "a dm", None)],
    )
    db.execute("INSERT INTO inbox VALUES ('bob', 9)")


def _accounts_and_log(db: sqlite3.Connection) -> None:
    _accounts(db)
    _log(db)


def _versioned(db: sqlite3.Connection) -> None:
    """Schema version 2 (80344bf..): the same tables, numbered; before rooms."""
    _accounts_and_log(db)
    db.execute("PRAGMA user_version=2")


def _v7(db: sqlite3.Connection) -> None:
    """Schema version 7 (rooms' address bans, .. issue 35's step): steps 1-7 as those
    servers ran them, DMs and public messages indexed by ``pair`` alike."""
    for step in schema.STEPS[:7]:
        db.executescript(step.sql)
    db.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (EPOCH,))
    db.execute(
        "INSERT INTO accounts VALUES (?, ?, ?)", ("Alice", LOAD_TEST_HASHER.hash(PASSWORD), 1.0)
    )
    db.executemany(
        "INSERT INTO messages (seq, ts, sender, recipient, pair, body, cid, room) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (seq, 100.0 + seq, "Alice", None, None, f"m{seq}", f"c{seq}", "lobby")
            for seq in range(3, 9)
        ]
        + [(9, 109.0, "Alice", "bob", "alice bob", "a dm", None, None)],
    )
    db.execute("INSERT INTO inbox VALUES ('bob', 9)")
    db.execute("PRAGMA user_version=7")


# Every state a shipped server left a database in: name -> (how to make it, has accounts,
# has the log).
SHIPPED: dict[str, tuple[Callable[[sqlite3.Connection], None], bool, bool]] = {
    "v1 accounts (bd10986.., or --history off)": (_accounts, True, False),
    "v1 accounts and message log (10d24b0..)": (_accounts_and_log, True, True),
    "v0 message log alone (MessageLog as a library)": (_log, False, True),
    "v2 accounts and message log (80344bf..)": (_versioned, True, True),
    "v7 rooms, moderation, bans (..issue 35)": (_v7, True, True),
}
# The columns each table was shipped with: what an upgrade must keep as it was (a later
# step may add columns, as rooms added ``room`` and ``event`` to messages).
_SHIPPED_COLUMNS = {"messages": "seq, ts, sender, recipient, pair, body, cid"}


def _make(path: Path, build: Callable[[sqlite3.Connection], None]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")  # as the shipped servers opened it
    build(db)
    db.close()


def _dump(path: Path) -> list[tuple[str, list[tuple[object, ...]]]]:
    """Every row of every table of the shipped schemas that ``path`` has."""
    db = sqlite3.connect(path)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return [
            (t, sorted(db.execute(f"SELECT {_SHIPPED_COLUMNS.get(t, '*')} FROM {t}").fetchall()))
            for t in ("accounts", "messages", "inbox", "meta")
            if t in tables
        ]
    finally:
        db.close()


def _indexes(path: Path) -> dict[str, str]:
    """Every index's name and the SQL that made it (none for a table's own)."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
        return {name: sql for name, sql in rows if sql is not None}
    finally:
        db.close()


def _version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return schema.version_of(db)
    finally:
        db.close()


@pytest.mark.parametrize("shipped", list(SHIPPED))
def test_every_shipped_schema_upgrades_in_place_after_a_copy(tmp_path: Path, shipped: str) -> None:
    build, has_accounts, has_log = SHIPPED[shipped]
    path = tmp_path / "chat.db"
    _make(path, build)
    before = _dump(path)
    old_version = _version(path)

    store = AccountStore(path, LOAD_TEST_HASHER)
    mlog = MessageLog(path)
    try:
        assert _version(path) == schema.SCHEMA_VERSION
        # Nothing dropped: every row there before is there after.
        after = dict(_dump(path))
        for table, rows in before:
            if table == "meta":
                assert set(rows) <= set(after["meta"])
            else:
                assert after[table] == rows
        if has_accounts:
            assert store.authenticate("alice", PASSWORD)[1]
        if has_log:
            # An upgrade is not a restore: clients resume across it.
            assert mlog.epoch == EPOCH
            assert (mlog.oldest_seq, mlog.last_seq) == (3, 9)
            assert mlog.append([NewMessage("Alice", None, "after", 200.0)]) == [10]
            # Every public message from before rooms is lobby's (docs/PROTOCOL.md §Rooms).
            page, _ = mlog.history("bob", before=None, after=None, limit=100, with_user=None)
            assert [m.body for m in page] == [f"m{seq}" for seq in range(3, 9)] + ["after"]
            assert {m.room for m in page} == {"lobby"}
            assert mlog.has_inbox("bob")
            assert [m.seq for m in mlog.replay_page("bob", 0, 10, 10_000, inbox=True)] == [9]
            dms, _ = mlog.history("bob", before=None, after=None, limit=9, with_user="ALICE")
            assert [(m.seq, m.body) for m in dms] == [(9, "a dm")]
            # Version 8: the DMs' index holds the DMs only (schema._DM_INDEX).
            assert _indexes(path)["dms_by_pair"].endswith("WHERE pair IS NOT NULL")
            assert "messages_by_pair" not in _indexes(path)
    finally:
        mlog.close()
        store.close()

    # The copy taken first is the database as it was, whole, in one file.
    (saved,) = tmp_path.glob(f"chat.db.v{old_version}-*.bak")
    assert saved.stat().st_mode & 0o777 == 0o600
    assert _version(saved) == old_version
    copied = dict(_dump(saved))
    for table, rows in before:
        if table == "meta":
            # marked as a backup: opened as a live database, it gets a new epoch
            assert copied["meta"] == sorted([*rows, (schema.RESTORE_MARK, _mark(saved))])
        else:
            assert copied[table] == rows
    assert not list(tmp_path.glob("*.partial"))


def _mark(path: Path) -> object:
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (schema.RESTORE_MARK,)).fetchone()
        assert row is not None
        return row[0]
    finally:
        db.close()


def test_an_upgraded_database_serves_logins_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    _make(path, _accounts_and_log)
    with quiet_server(db_path=path, password_hash="load-test") as srv:
        alice = connect(srv.address)
        alice.send(command="login", username="alice", password=PASSWORD, since=5, epoch=EPOCH)
        ok = alice.expect("login_ok")
        assert (ok["new_user"], ok["seq"], ok["epoch"]) == (False, 9, EPOCH)
        replayed = []
        while (frame := alice.recv())["type"] != "replay_done":
            if frame.get("replay"):
                replayed.append(frame["seq"])
        assert replayed == [6, 7, 8, 9]


def test_a_new_database_is_created_at_the_current_version_without_a_copy(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    AccountStore(path).close()
    MessageLog(path).close()
    assert _version(path) == schema.SCHEMA_VERSION
    assert [p.name for p in tmp_path.iterdir() if ".bak" in p.name] == []


def test_a_current_database_is_opened_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    _make(path, _accounts_and_log)
    AccountStore(path).close()
    MessageLog(path).close()
    AccountStore(path).close()  # no second upgrade, no second copy
    assert len(list(tmp_path.glob("*.bak"))) == 1


def test_a_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    _make(path, _accounts_and_log)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION + 1}")
    db.close()
    content = path.read_bytes()
    with pytest.raises(AccountStoreError, match="from a newer chatroom server"):
        AccountStore(path)
    with pytest.raises(StorageError, match="from a newer chatroom server"):
        MessageLog(path)
    assert path.read_bytes() == content
    assert not list(tmp_path.glob("*.bak"))


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE things (x)")
    db.close()
    with pytest.raises(AccountStoreError, match="not a chatroom database"):
        AccountStore(path)
    assert not list(tmp_path.glob("*.bak"))


def test_the_upgrade_is_logged_with_the_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "chat.db"
    _make(path, _accounts)
    caplog.set_level(logging.INFO, logger="chatroom_server.schema")
    AccountStore(path).close()
    (saved,) = tmp_path.glob("*.bak")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"schema version 1, upgrading to {schema.SCHEMA_VERSION}" in text
    assert str(saved) in text


def test_steps_are_numbered_one_by_one() -> None:
    assert [s.version for s in schema.STEPS] == list(range(1, len(schema.STEPS) + 1))


def test_check_says_what_the_start_will_upgrade_and_touches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from chatroom_server.__main__ import main

    path = tmp_path / "chat.db"
    _make(path, _accounts_and_log)
    content = path.read_bytes()
    assert main(["--check", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 accounts, 7 messages (last seq 9)" in out
    assert f"will upgrade it to schema version {schema.SCHEMA_VERSION}" in out
    assert path.read_bytes() == content and _version(path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["chat.db"]
