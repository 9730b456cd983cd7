"""The PostgreSQL schema's migration (chatroom_server.cluster.pgschema) on a real
PostgreSQL: step 6 makes the index of messages by pair one of the DMs only, on a new
database and on one of schema 5 with messages in it, and finds itself done if run again."""

from __future__ import annotations

from typing import Any

import psycopg

from chatroom_server.cluster import pgschema
from chatroom_server.cluster.pg import PgDatabase, PgMessageLog
from chatroom_server.messagelog import NewMessage


def indexes(db: psycopg.Connection[Any]) -> dict[str, str]:
    rows = db.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'chat_messages'"
    ).fetchall()
    return {str(name): str(sql) for name, sql in rows}


def schema(db: psycopg.Connection[Any]) -> str:
    row = db.execute("SELECT value FROM chat_meta WHERE key = 'schema'").fetchone()
    assert row is not None
    return str(row[0])


def assert_partial(db: psycopg.Connection[Any]) -> None:
    found = indexes(db)
    assert "chat_messages_by_pair" not in found
    assert found["chat_dms_by_pair"].endswith("(pair, seq) WHERE (pair IS NOT NULL)")
    assert schema(db) == str(pgschema.SCHEMA_VERSION) == "6"


def test_a_new_database_has_only_the_dms_in_its_pair_index(pg_url: str) -> None:
    PgDatabase(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as db:
        assert_partial(db)


def test_a_schema_5_database_is_migrated_and_a_dm_history_uses_the_index(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as db:
        epoch = pgschema.migrate(db, pgschema.PG_STEPS[:5])
        assert "chat_messages_by_pair" in indexes(db)
        assert schema(db) == "5"
    pg = PgDatabase(pg_url)  # migrates to 6, messages in place
    log = PgMessageLog(pg, publish=lambda stored: None)
    try:
        assert pg.epoch == epoch
        log.append(
            [NewMessage("alice", None, "public", 1.0), NewMessage("alice", "Bob", "dm", 2.0)]
        )
        page, _ = log.history("bob", before=None, after=None, limit=10, with_user="ALICE")
        assert [m.body for m in page] == ["dm"]
    finally:
        log.close()
        pg.close()
    with psycopg.connect(pg_url, autocommit=True) as db:
        assert_partial(db)
        # A DM history's query is one the partial index answers (the planner may
        # prefer a scan of so small a table: not allowed here).
        db.execute("SET enable_seqscan = off")
        plan = db.execute(
            "EXPLAIN SELECT seq FROM chat_messages WHERE pair = 'alice bob' ORDER BY seq DESC"
        ).fetchall()
        assert "chat_dms_by_pair" in " ".join(str(r[0]) for r in plan)
        # The step again (a node that crashed after it, before its version was
        # written) finds itself done; a migration with nothing to do changes nothing.
        with db.transaction():
            db.execute(pgschema.PG_STEPS[5].sql)
        assert pgschema.migrate(db) == epoch
        assert_partial(db)
