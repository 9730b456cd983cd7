"""The PostgreSQL schema of a cluster (docs/CLUSTER.md): its steps, and the migration
every node runs at start-up (chatroom_server.cluster.pg's ``PgDatabase``).

Created or migrated, never dropped, under an advisory lock of its own
(:data:`SCHEMA_LOCK`) so that nodes starting together do not race: the first to take
it runs the steps the database lacks, the others find them done. Tables are prefixed
``chat_``; the version and the database's epoch are rows of ``chat_meta``.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Final

import psycopg

from chatroom_server import modstore, roomstore
from chatroom_server.accounts import AccountStoreError
from chatroom_server.schema import Step

log = logging.getLogger(__name__)

# pg_advisory_lock key: 'chas' in ASCII (the seq lock, chatroom_server.cluster.pg's, is
# 'chat').
SCHEMA_LOCK: Final = 0x63686173

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS chat_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chat_accounts (
    name_key TEXT PRIMARY KEY,            -- username_key(name): unique ignoring case
    name     TEXT NOT NULL,               -- the registered spelling
    hash     TEXT NOT NULL,               -- argon2id PHC string
    created  DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_messages (
    seq           BIGINT PRIMARY KEY,     -- one order for the whole cluster
    ts            DOUBLE PRECISION NOT NULL,
    sender        TEXT NOT NULL,
    sender_key    TEXT NOT NULL,
    recipient     TEXT,                   -- NULL: public
    recipient_key TEXT,
    pair          TEXT,                   -- DMs: both keys, sorted, ' '-joined
    body          TEXT NOT NULL,
    cid           TEXT
);
CREATE INDEX IF NOT EXISTS chat_messages_by_pair ON chat_messages (pair, seq);
CREATE UNIQUE INDEX IF NOT EXISTS chat_messages_by_cid ON chat_messages (sender_key, cid)
    WHERE cid IS NOT NULL;
CREATE TABLE IF NOT EXISTS chat_inbox (
    user_key TEXT NOT NULL,
    seq      BIGINT NOT NULL,
    PRIMARY KEY (user_key, seq)
);
"""

# As SQLite's schema 8 (chatroom_server.schema's _DM_INDEX): every public message and
# room event has no ``pair``, and the full index wrote a (NULL, seq) entry for each, which
# no query reads (a DM history asks ``pair = %s``, which the partial index serves; public
# history, replay and pruning go by chat_messages_by_room or by seq). Named anew so that
# running the step again finds it done. Size and insert cost, before and after:
# docs/PERFORMANCE.md, "PostgreSQL's partial DM index" (bench/pg_pair_index.py).
_DM_INDEX: Final = """
DROP INDEX IF EXISTS chat_messages_by_pair;
CREATE INDEX IF NOT EXISTS chat_dms_by_pair ON chat_messages (pair, seq)
    WHERE pair IS NOT NULL;
"""

# The PostgreSQL schema's versions, as chatroom_server.schema's are SQLite's (numbered
# apart: version 1 here is all that SQLite's 1 and 2 hold). To add a step, append
# Step(N, "what", "SQL that only adds, and finds itself done if run again") here.
PG_STEPS: Final = (
    Step(1, "accounts and the message log", _SCHEMA),
    Step(2, "rooms", roomstore.PG_ROOMS),
    Step(3, "moderation", modstore.PG_MODERATION),
    Step(4, "server-wide bans, addresses and settings", modstore.PG_SERVER_GATE),
    Step(5, "rooms' address bans", modstore.PG_ROOM_ADDRESS_BANS),
    Step(6, "the index of messages by pair holds only DMs", _DM_INDEX),
)
SCHEMA_VERSION: Final = PG_STEPS[-1].version


def migrate(db: psycopg.Connection[Any], steps: tuple[Step, ...] = PG_STEPS) -> str:
    """Create or migrate the schema on ``db`` (an autocommit connection) up to the last
    of ``steps``, never dropping a table; the database's epoch. AccountStoreError if
    the database has a newer schema than this server knows."""
    latest = steps[-1].version
    db.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
    try:
        version = 0
        exists = db.execute("SELECT to_regclass('chat_meta')").fetchone()
        if exists and exists[0] is not None:
            row = db.execute("SELECT value FROM chat_meta WHERE key = 'schema'").fetchone()
            version = int(row[0]) if row else 0
            if version > latest:
                raise AccountStoreError(
                    f"the database has chatroom schema {version}; this server knows {latest}"
                )
        with db.transaction():
            for step in steps:
                if step.version > version:
                    db.execute(step.sql)
                    if version:
                        log.info("PostgreSQL schema %d: %s", step.version, step.what)
            if latest > version:
                db.execute(
                    "INSERT INTO chat_meta VALUES ('schema', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (str(latest),),
                )
            db.execute(
                "INSERT INTO chat_meta VALUES ('epoch', %s) ON CONFLICT DO NOTHING",
                (secrets.token_hex(8),),
            )
        row = db.execute("SELECT value FROM chat_meta WHERE key = 'epoch'").fetchone()
        assert row is not None
        return str(row[0])
    finally:
        db.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))
