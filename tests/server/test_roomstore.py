"""Rooms in the message log (chatroom_server.roomstore): room events stored with their
state in one transaction, rebuilt at start-up, replay and history visibility per room,
and a log from before rooms upgraded in place. Temp SQLite files; the same scenario runs
on PostgreSQL in tests/cluster/test_roomstore_pg.py."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Union

from chatroom_server.messagelog import MessageLog, NewMessage, Stored
from chatroom_server.rooms import RoomBook, RoomChange

if TYPE_CHECKING:
    from chatroom_server.cluster.pg import PgMessageLog

Log = Union[MessageLog, "PgMessageLog"]


class Writer:
    """Stores changes and messages as the server will: check, append, apply."""

    def __init__(self, log: Log, book: RoomBook) -> None:
        self.log = log
        self.book = book
        self.ts = 1000.0

    def change(self, change: RoomChange | None) -> int:
        assert change is not None
        self.ts += 1
        change = replace(change, ts=self.ts)  # as the room service stamps it
        m = NewMessage(change.by, change.user, change.detail(), self.ts, change=change)
        (seq,) = self.log.append([m])
        assert isinstance(seq, int)
        self.book.apply(change, seq)
        return seq

    def say(self, sender: str, text: str, room: str | None = None, to: str | None = None) -> int:
        self.ts += 1
        (seq,) = self.log.append([NewMessage(sender, to, text, self.ts, room=room)])
        assert isinstance(seq, int)
        return seq


def texts(rows: list[Stored]) -> list[str]:
    """Each row as ``room:event`` for an event, ``room:text`` or ``dm:text``."""
    out = []
    for r in rows:
        if r.event is not None:
            out.append(f"{r.room}:{r.event}")
        elif r.to is not None:
            out.append(f"dm:{r.body}")
        else:
            out.append(f"{r.room}:{r.body}")
    return out


def replay(log: Log, user: str, since: int, upto: int, rooms: bool) -> list[Stored]:
    return log.replay_page(user, since, upto, 10**9, rooms=rooms)


def scenario(log: Log) -> None:
    """Everything the storage promises, on either database."""
    book = RoomBook()
    w = Writer(log, book)
    w.say("alice", "hello lobby")
    w.change(book.join("alice", "Dev", None))
    w.say("alice", "before bob", room="Dev")
    w.change(book.mode("alice", "dev", "+i", []))
    w.change(book.invite("alice", "dev", "Bob"))
    bob_join = w.change(book.join("bob", "DEV", None))
    w.say("bob", "bob here", room="Dev")
    w.say("alice", "psst", to="bob")
    w.change(book.topic("alice", "dev", "release Friday"))
    w.change(book.join("carol", "Other", None))
    top = w.say("carol", "not for bob", room="Other")

    # A protocol-v1 connection sees exactly what it did before rooms.
    assert texts(replay(log, "bob", 0, top, rooms=False)) == ["lobby:hello lobby", "dm:psst"]
    assert texts(replay(log, "carol", 0, top, rooms=False)) == ["lobby:hello lobby"]
    # With rooms: their rooms from their join (the join included), invites naming them.
    assert texts(replay(log, "bob", 0, top, rooms=True)) == [
        "lobby:hello lobby",
        "Dev:invite",
        "Dev:join",
        "Dev:bob here",
        "dm:psst",
        "Dev:topic",
    ]
    assert texts(replay(log, "BOB", bob_join, top, rooms=True)) == [
        "Dev:bob here",
        "dm:psst",
        "Dev:topic",
    ]
    assert texts(replay(log, "alice", 0, top, rooms=True)) == [
        "lobby:hello lobby",
        "Dev:join",
        "Dev:before bob",
        "Dev:mode",
        "Dev:invite",
        "Dev:join",
        "Dev:bob here",
        "dm:psst",
        "Dev:topic",
    ]
    # The replay's start counts what that user sees, and nothing else.
    assert log.replay_start("bob", 0, top, 3, rooms=True) == bob_join
    assert log.replay_start("bob", 0, top, 10, rooms=True) is None
    # A room event as read back: who, whom, what.
    invite = next(r for r in replay(log, "bob", 0, top, rooms=True) if r.event == "invite")
    assert (invite.sender, invite.to) == ("alice", "Bob")

    # History: messages only, from the reader's join; lobby's as before.
    def hist(user: str, room: str) -> list[str]:
        page, _ = log.history(
            user,
            before=None,
            after=None,
            limit=50,
            with_user=None,
            room=room,
            from_seq=book.readable_from(user, room),
        )
        return texts(page)

    assert hist("bob", "dev") == ["Dev:bob here"]
    assert hist("alice", "DEV") == ["Dev:before bob", "Dev:bob here"]
    assert hist("bob", "lobby") == ["lobby:hello lobby"]
    w.change(book.mode("alice", "dev", "+H", []))
    assert hist("bob", "dev") == ["Dev:before bob", "Dev:bob here"]

    # Voice beside op (docs/PROTOCOL.md §Modes) is stored too.
    w.change(book.mode("alice", "dev", "+ov", ["bob", "bob"]))
    w.change(book.mode("alice", "dev", "+v", ["alice"]))
    assert book.get("dev").info().voiced == ("alice", "bob")  # type: ignore[union-attr]

    # The stored state is the model's.
    again = RoomBook()
    again.load(*log.load_rooms())
    for name in ("dev", "other"):
        assert again.get(name).info() == book.get(name).info()  # type: ignore[union-attr]
    assert again.get("dev").invites == set()  # type: ignore[union-attr]  # used by the join
    assert again.readable_from("bob", "dev") == 0
    w.change(book.mode("alice", "dev", "-H", []))
    w.change(book.part("bob", "dev", "bye"))
    again = RoomBook()
    again.load(*log.load_rooms())
    assert again.get("dev").info() == book.get("dev").info()  # type: ignore[union-attr]
    assert not again.is_member("bob", "dev")


def test_rooms_in_the_sqlite_log(tmp_path: Path) -> None:
    log = MessageLog(tmp_path / "chat.db", readers=1)
    try:
        scenario(log)
        book = RoomBook()
        book.load(*log.load_rooms())
    finally:
        log.close()
    # A restart finds every room as it was.
    log = MessageLog(tmp_path / "chat.db", readers=1)
    try:
        after = RoomBook()
        after.load(*log.load_rooms())
        assert after.get("dev").info() == book.get("dev").info()  # type: ignore[union-attr]
        assert [r.name for r in after.rooms_of("alice")] == ["Dev"]
    finally:
        log.close()


# The message log's schema as shipped before rooms.
_BEFORE_ROOMS = """
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY, ts REAL NOT NULL, sender TEXT NOT NULL COLLATE NOCASE,
    recipient TEXT COLLATE NOCASE, pair TEXT, body TEXT NOT NULL, cid TEXT);
CREATE INDEX messages_by_pair ON messages (pair, seq);
CREATE UNIQUE INDEX messages_by_cid ON messages (sender, cid) WHERE cid IS NOT NULL;
CREATE TABLE inbox (user TEXT NOT NULL COLLATE NOCASE, seq INTEGER NOT NULL,
    PRIMARY KEY (user, seq)) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('epoch', '00112233aabbccdd');
INSERT INTO messages VALUES (1, 1.0, 'alice', NULL, NULL, 'old public', 'c1');
INSERT INTO messages VALUES (2, 2.0, 'alice', 'bob', 'alice bob', 'old dm', NULL);
"""


def test_a_log_from_before_rooms_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    db = sqlite3.connect(path)
    db.executescript(_BEFORE_ROOMS)
    db.close()
    log = MessageLog(path, readers=1)
    try:
        assert log.epoch == "00112233aabbccdd" and log.last_seq == 2
        rows = replay(log, "bob", 0, 2, rooms=False)
        assert texts(rows) == ["lobby:old public", "dm:old dm"]
        assert texts(replay(log, "bob", 0, 2, rooms=True)) == texts(rows)
        page, more = log.history("bob", before=None, after=None, limit=10, with_user=None)
        assert texts(page) == ["lobby:old public"] and not more
        # New rows go on from there, rooms and all.
        book = RoomBook()
        w = Writer(log, book)
        assert w.change(book.join("bob", "dev", None)) == 3
        assert w.say("bob", "new", room="dev") == 4
        assert texts(replay(log, "bob", 0, 4, rooms=True))[-2:] == ["dev:join", "dev:new"]
    finally:
        log.close()
    # Opening it again runs no step twice.
    MessageLog(path, readers=1).close()
