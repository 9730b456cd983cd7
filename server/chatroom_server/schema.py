"""The SQLite database's schema, its version and its upgrades (docs/OPERATIONS.md,
Upgrades).

The version is SQLite's ``PRAGMA user_version``; :data:`STEPS` says what each version
adds. :func:`migrate` runs when a store opens the database (both stores call it; the
second finds nothing to do):

- a database from a **newer** server is refused with :class:`SchemaError`, untouched;
- an **older** one that holds anything is first copied beside itself
  (``chat.db.v1-20261207T011500.bak``, dbfile.copy), then upgraded in place, every step
  in one transaction, so that an upgrade is all done or not at all;
- a step only ever adds (tables, columns, indexes, rows), or replaces an index with
  another over the same rows: data is never dropped.

What this project shipped before versions meant anything: ``user_version`` 1 for the
accounts alone and also for accounts with the message log (the log set no version), and
0 for a message log opened without the accounts (a library use). Every step is written
to be a no-op on what a shipped server may already have created (``IF NOT EXISTS``,
``INSERT OR IGNORE``), so each of those upgrades the same way.

To add a step: append ``Step(N, "what it adds", "SQL")`` to :data:`STEPS` (N one more
than the last; SQL that only adds, safe to run on a database that has it already), and
add the schema it replaces to tests/server/test_schema.py's shipped schemas.

Also here: the **restore marker**. Every backup (chatroom_server.backup) is marked in
its copy; whatever opens a marked database as a live one gives its message log a new
epoch first, so that clients resuming with seqs from before the restore are told
(``replay_truncated``) instead of silently skipping the seqs the restored log reuses.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from chatroom_server import dbfile, modstore, roomstore

log = logging.getLogger(__name__)


class SchemaError(Exception):
    """The database is not one this server can use: from a newer server, or not a
    chatroom database at all."""


@dataclass(frozen=True, slots=True)
class Step:
    version: int  # the schema version this step brings the database to
    what: str  # for the log: what it adds
    sql: str  # a script that only adds, harmless where it exists already


_ACCOUNTS: Final = """
CREATE TABLE IF NOT EXISTS accounts (
    name     TEXT PRIMARY KEY COLLATE NOCASE,  -- registered spelling; unique ignoring case
    hash     TEXT NOT NULL,                    -- argon2id PHC string, parameters included
    created  REAL NOT NULL
);
"""

# The message log (chatroom_server.messagelog) and its epoch: created with the log, so a
# since from any other database (wiped, restored, another server's) is recognised.
_MESSAGE_LOG: Final = """
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
INSERT OR IGNORE INTO meta VALUES ('epoch', lower(hex(randomblob(8))));
"""

# Every public message and room event has no ``pair``, and a full index on it wrote one
# (NULL, seq) entry for each: a page more per commit, for entries no query reads (the DM
# history asks ``pair = ?``, which the partial index serves; public history, replay and
# pruning go by ``messages_by_room`` or by seq). One page fewer per group commit: 23
# against 29.5 µs for a commit of one public message (docs/PERFORMANCE.md, "Issue 35
# again"). Named anew so that running the step again finds it done, as every step must.
_DM_INDEX: Final = """
DROP INDEX IF EXISTS messages_by_pair;
CREATE INDEX IF NOT EXISTS dms_by_pair ON messages (pair, seq) WHERE pair IS NOT NULL;
"""

STEPS: Final = (
    Step(1, "accounts", _ACCOUNTS),
    Step(2, "the message log", _MESSAGE_LOG),
    Step(3, "rooms", roomstore.SQLITE_ROOMS),  # chatroom_server.roomstore
    Step(4, "moderation", modstore.SQLITE_MODERATION),  # chatroom_server.modstore
    Step(5, "server-wide bans and settings", modstore.SQLITE_SERVER_GATE),
    Step(6, "address bans", modstore.SQLITE_ADDRESS_BANS),
    Step(7, "rooms' address bans", modstore.SQLITE_ROOM_ADDRESS_BANS),
    Step(8, "the DMs' index without the public messages", _DM_INDEX),
)
SCHEMA_VERSION: Final = STEPS[-1].version
# Tables by which a database with no version is known to be a chatroom one.
_OURS: Final = frozenset({"accounts", "messages"})
# The restore marker's key in ``meta`` (module docstring).
RESTORE_MARK: Final = "restore_pending"


def version_of(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def migrate(db: sqlite3.Connection, path: Path) -> int | None:
    """Bring the database ``db`` (autocommit, the file ``path``) to
    :data:`SCHEMA_VERSION` and give it a new epoch if it was restored (module
    docstring); the version it had if it was upgraded, else None. Raises
    :class:`SchemaError`, or sqlite3.DatabaseError for a file that is no database."""
    # Reading first makes a non-database file fail before anything is written to it.
    version = version_of(db)
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{path} has schema version {version}, from a newer chatroom server; this one "
            f"knows up to {SCHEMA_VERSION}: run the newer server, or restore a backup "
            "taken before the upgrade (docs/OPERATIONS.md)"
        )
    tables = _tables(db)
    if version == 0 and tables and not tables & _OURS:
        raise SchemaError(f"{path} is not a chatroom database: it has other tables")
    restored = "meta" in tables and _restore_marked(db)
    if version == SCHEMA_VERSION and not restored:
        return None
    if version < SCHEMA_VERSION and tables:
        saved = backup_path(path, version)
        dbfile.copy(db, saved, mark=mark_restored)
        log.warning(
            "%s: schema version %d, upgrading to %d; a copy as it was is in %s",
            path,
            version,
            SCHEMA_VERSION,
            saved,
        )
    level = logging.INFO if tables else logging.DEBUG
    db.execute("BEGIN IMMEDIATE")
    try:
        # Again under the write lock: another store or process may have upgraded since.
        version = version_of(db)
        for step in STEPS:
            if step.version > version:
                _run_script(db, step.sql)
                # A new database's steps are no news.
                log.log(level, "%s: schema version %d: %s", path, step.version, step.what)
        if version < SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        if _restore_marked(db):
            renew_epoch(db)
            db.execute("DELETE FROM meta WHERE key = ?", (RESTORE_MARK,))
            log.warning(
                "%s was restored from a backup: new epoch, so clients resuming from before "
                "the restore are told (replay_truncated)",
                path,
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return version if version < SCHEMA_VERSION else None


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """``script`` statement by statement inside the caller's transaction
    (``executescript`` would commit it first)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""
    if statement.strip() and not statement.strip().startswith("--"):
        raise ValueError(f"an incomplete statement in a schema step: {statement!r}")


def _restore_marked(db: sqlite3.Connection) -> bool:
    row = db.execute("SELECT 1 FROM meta WHERE key = ?", (RESTORE_MARK,)).fetchone()
    return row is not None


def renew_epoch(db: sqlite3.Connection) -> str:
    """Give the message log a new epoch (in the caller's transaction); the new one."""
    db.execute(
        "INSERT OR REPLACE INTO meta VALUES ('epoch', lower(hex(randomblob(8))))",
    )
    return str(db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])


def mark_restored(db: sqlite3.Connection) -> None:
    """Mark a copy (dbfile.copy's ``mark``) so that it gets a new epoch when opened."""
    if "meta" in _tables(db):
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            (RESTORE_MARK, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        )


def backup_path(path: Path, version: int) -> Path:
    """Where the copy taken before an upgrade from ``version`` goes: beside the
    database, named for the version and the time."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    candidate = path.with_name(f"{path.name}.v{version}-{stamp}.bak")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.v{version}-{stamp}-{n}.bak")
    return candidate
