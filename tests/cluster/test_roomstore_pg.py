"""Rooms in PostgreSQL's message log: the scenario of tests/server/test_roomstore.py on a
real PostgreSQL, and a database from before rooms upgraded in place."""

from __future__ import annotations

import psycopg

from chatroom_server.cluster.pg import PgDatabase, PgMessageLog
from chatroom_server.messagelog import NewMessage
from chatroom_server.rooms import RoomBook
from tests.server.test_roomstore import replay, scenario, texts


def test_rooms_in_the_postgres_log(pg_url: str) -> None:
    pg = PgDatabase(pg_url)
    log = PgMessageLog(pg, publish=lambda stored: None)
    try:
        scenario(log)
    finally:
        log.close()
        pg.close()
    # Another node (a restart) finds every room as it was.
    pg = PgDatabase(pg_url)
    try:
        book = RoomBook()
        book.load(*PgMessageLog(pg, publish=lambda stored: None).load_rooms())
        assert [r.name for r in book.rooms_of("ALICE")] == ["Dev"]
        assert not book.is_member("bob", "dev")
    finally:
        pg.close()


def test_a_postgres_log_from_before_rooms_is_upgraded(pg_url: str) -> None:
    pg = PgDatabase(pg_url)
    log = PgMessageLog(pg, publish=lambda stored: None)
    try:
        log.append(
            [NewMessage("alice", None, "old public", 1.0), NewMessage("alice", "bob", "dm", 2.0)]
        )
    finally:
        log.close()
        pg.close()
    # Back to the schema of version 1: no room columns, no room tables.
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("ALTER TABLE chat_messages DROP COLUMN room, DROP COLUMN event")
        db.execute("DROP TABLE chat_rooms, chat_room_members, chat_room_invites")
        db.execute("UPDATE chat_meta SET value = '1' WHERE key = 'schema'")
    pg = PgDatabase(pg_url)
    log = PgMessageLog(pg, publish=lambda stored: None)
    try:
        assert texts(replay(log, "bob", 0, 2, rooms=False)) == ["lobby:old public", "dm:dm"]
        page, _ = log.history("bob", before=None, after=None, limit=10, with_user=None)
        assert texts(page) == ["lobby:old public"]
    finally:
        log.close()
        pg.close()
