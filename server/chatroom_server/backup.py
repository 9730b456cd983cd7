"""``chat-server backup FILE`` and ``chat-server restore FILE`` (docs/OPERATIONS.md,
Backups).

A backup is SQLite's online backup API in one step (chatroom_server.dbfile.copy): a
consistent snapshot while the server keeps writing, in one self-contained file, 0600,
marked as a backup (chatroom_server.schema, the restore marker).

A restore writes a backup over the database, once nothing has it open (a running server
holds it: dbfile.hold), after keeping a copy of what it replaces, and gives the message
log a **new epoch**. Without that, the restored log hands out again the seqs that came
after the backup, to other messages, and a client that had seen them and resumes with
``since`` would be given only what lies beyond its old seq: it would never learn of the
messages that now carry the seqs it believes it has seen. With a new epoch its ``since``
is recognised as foreign, and it is told (``replay_truncated``; docs/PROTOCOL.md
§Resume).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chatroom_server import dbfile, schema

DEFAULT_DB = Path("chatroom.db")


class BackupError(Exception):
    """A backup or restore that cannot be made; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Summary:
    """What a database holds, for the commands' one line."""

    version: int
    accounts: int | None  # None: no such table
    messages: int | None
    last_seq: int | None
    epoch: str | None

    def __str__(self) -> str:
        parts = [f"schema version {self.version}"]
        if self.accounts is not None:
            parts.append(f"{self.accounts} accounts")
        if self.messages is not None:
            parts.append(f"{self.messages} messages (last seq {self.last_seq or 0})")
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}")
        return ", ".join(parts)


def summarize(db: sqlite3.Connection) -> Summary:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def one(sql: str) -> int | None:
        row = db.execute(sql).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    epoch = None
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        epoch = None if row is None else str(row[0])
    return Summary(
        version=schema.version_of(db),
        accounts=one("SELECT count(*) FROM accounts") if "accounts" in tables else None,
        messages=one("SELECT count(*) FROM messages") if "messages" in tables else None,
        last_seq=one("SELECT max(seq) FROM messages") if "messages" in tables else None,
        epoch=epoch,
    )


def pending_upgrade(path: Path) -> str | None:
    """What an existing database holds and the upgrade a server will make at start, if
    it needs one (``chat-server --check``, which touches nothing); else None."""
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None  # the stores say what is wrong with it
    try:
        summary = summarize(db)
    except sqlite3.Error:
        return None
    finally:
        db.close()
    if summary.version >= schema.SCHEMA_VERSION or (
        summary.accounts is None and summary.messages is None
    ):
        return None
    return (
        f"{summary}; the server will upgrade it to schema version {schema.SCHEMA_VERSION} "
        "when it starts, after a copy of it as it is (docs/OPERATIONS.md, Upgrades)"
    )


def _open_chatroom(path: Path, what: str) -> sqlite3.Connection:
    try:
        db = dbfile.connect_existing(path)
    except FileNotFoundError as exc:
        raise BackupError(str(exc)) from None
    try:
        summary = summarize(db)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise BackupError(f"{path} is not a chatroom {what}: {exc}") from None
    if summary.accounts is None and summary.messages is None:
        db.close()
        raise BackupError(f"{path} is not a chatroom {what}: it has no chatroom tables")
    return db


def backup(db_path: Path, dest: Path) -> Summary:
    """Copy the database at ``db_path`` (in use or not) to the new file ``dest``; what
    the copy holds. Raises :class:`BackupError`."""
    db = _open_chatroom(db_path, "database")
    try:
        db.execute("PRAGMA query_only=1")  # a backup never writes to what it copies
        try:
            dbfile.copy(db, dest, mark=schema.mark_restored)
        except (OSError, sqlite3.Error) as exc:
            raise BackupError(f"cannot write {dest}: {exc}") from None
    finally:
        db.close()
    copy = sqlite3.connect(dest)
    try:
        return summarize(copy)
    finally:
        copy.close()


@dataclass(frozen=True, slots=True)
class Restored:
    summary: Summary  # the database as restored, with its new epoch
    replaced: Path | None  # the copy of what was there before, if anything was


def restore(source: Path, db_path: Path) -> Restored:
    """Write the backup ``source`` over the database at ``db_path``, which nothing may
    have open, keeping a copy of what was there; upgrade it if it is older; new epoch.
    Raises :class:`BackupError` (and dbfile.InUse) with nothing changed."""
    src = _open_chatroom(source, "backup")
    try:
        if schema.version_of(src) > schema.SCHEMA_VERSION:
            raise BackupError(
                f"{source} has schema version {schema.version_of(src)}, from a newer "
                f"chatroom server; this one knows up to {schema.SCHEMA_VERSION}"
            )
        with dbfile.exclusive(db_path):
            replaced = _keep_current(db_path)
            dst = sqlite3.connect(db_path, isolation_level=None, timeout=10.0)
            try:
                src.backup(dst, pages=-1)
                dst.execute("PRAGMA journal_mode=WAL")
                # Marked even if the file was not made by chat-server backup (a copy of
                # a stopped server's file): the next step renews the epoch either way.
                schema.mark_restored(dst)
                schema.migrate(dst, db_path)
                summary = summarize(dst)
                dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                dst.close()
    finally:
        src.close()
    return Restored(summary, replaced)


def _keep_current(db_path: Path) -> Path | None:
    """A copy of the database a restore is about to replace, if it holds anything."""
    if not db_path.is_file() or db_path.stat().st_size == 0:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    kept = db_path.with_name(f"{db_path.name}.before-restore-{stamp}.bak")
    n = 1
    while kept.exists():
        n += 1
        kept = db_path.with_name(f"{db_path.name}.before-restore-{stamp}-{n}.bak")
    db = sqlite3.connect(db_path, isolation_level=None, timeout=10.0)
    try:
        dbfile.copy(db, kept, mark=schema.mark_restored)
    except (OSError, sqlite3.Error) as exc:
        raise BackupError(f"cannot keep a copy of {db_path} as {kept}: {exc}") from None
    finally:
        db.close()
    return kept


def _is_pg(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


PG_GUIDANCE = (
    "the cluster's database is PostgreSQL: back it up with pg_dump -Fc, and after a "
    "pg_restore run chat-server new-epoch before any node starts (docs/OPERATIONS.md, "
    "Backups)"
)


def new_epoch(db: str) -> str:
    """Give the message log at ``db`` (a SQLite file nothing has open, or the cluster's
    PostgreSQL URL, every node stopped) a new epoch; the new one. For a database put
    back by other means than ``chat-server restore``: a PostgreSQL dump restored."""
    if _is_pg(db):
        import psycopg

        try:
            with psycopg.connect(db, autocommit=True, connect_timeout=10) as pg:
                row = pg.execute(
                    "UPDATE chat_meta SET value = substr(md5(random()::text), 1, 16) "
                    "WHERE key = 'epoch' RETURNING value"
                ).fetchone()
        except psycopg.Error as exc:
            raise BackupError(f"PostgreSQL: {exc}") from None
        if row is None:
            raise BackupError("no chatroom message log in that database (no chat_meta epoch)")
        return str(row[0])
    path = Path(db)
    _open_chatroom(path, "database").close()
    with dbfile.exclusive(path):
        conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        try:
            schema.mark_restored(conn)
            schema.migrate(conn, path)  # renews it, as for any restored database
            row = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        finally:
            conn.close()
    if row is None:
        raise BackupError(f"{path} has no message log")
    return str(row[0])


def main(argv: Sequence[str]) -> int:
    """``chat-server backup FILE`` / ``restore FILE`` / ``new-epoch``; the exit status."""
    if argv[0] == "new-epoch":
        return _new_epoch_main(argv)
    p = argparse.ArgumentParser(prog=f"chat-server {argv[0]}")
    p.add_argument("file", type=Path, help="the backup file")
    p.add_argument("--db", default=str(DEFAULT_DB), help="the server's SQLite database")
    if argv[0] == "backup":
        p.description = (
            "Copy the database to FILE (a new file), consistently, while the server runs."
        )
    else:
        p.description = (
            "Replace the database with the backup FILE (the server must be stopped): the "
            "old one is kept beside it, and the log gets a new epoch so that resuming "
            "clients are told."
        )
    args = p.parse_args(argv[1:])
    if _is_pg(args.db):
        print(f"chat-server {argv[0]}: {PG_GUIDANCE}", file=sys.stderr)
        return 2
    db_path = Path(args.db)
    try:
        if argv[0] == "backup":
            summary = backup(db_path, args.file)
            print(f"backed up {db_path} to {args.file}: {summary}")
        else:
            done = restore(args.file, db_path)
            if done.replaced is not None:
                print(f"kept the database it replaced as {done.replaced}")
            print(f"restored {db_path} from {args.file}: {done.summary}")
            print("clients resuming from before the restore are told (new epoch)")
    except (BackupError, dbfile.InUse) as exc:
        print(f"chat-server {argv[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


def _new_epoch_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="chat-server new-epoch",
        description="Give the message log a new epoch, so that clients resuming from "
        "before are told (replay_truncated): after restoring the cluster's PostgreSQL "
        "from a dump, with every node stopped. chat-server restore does it itself.",
    )
    p.add_argument("--db", default=str(DEFAULT_DB), help="the SQLite file or PostgreSQL URL")
    args = p.parse_args(argv[1:])
    try:
        epoch = new_epoch(args.db)
    except (BackupError, dbfile.InUse) as exc:
        print(f"chat-server new-epoch: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        print(
            f"chat-server new-epoch: needs {exc.name}: pip install 'chatroom[cluster]'",
            file=sys.stderr,
        )
        return 1
    print(f"new epoch {epoch}: clients resuming from before are told")
    return 0
