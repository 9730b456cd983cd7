"""Server-wide moderation at login (docs/PROTOCOL.md §Moderation, "Server-wide"): the
accounts banned from the whole server, and whether new accounts may be registered (off
while under attack, as Ergo's DEFCON). Both are set by ``chat-server admin`` on the
database (chatroom_server.adminctl) and read here at each login, so that a change made
beside the running server applies at the next login, with no reload.

The tables (``server_bans``, ``server_settings``) are schema step 5 (chatroom_server.schema);
a cluster's PostgreSQL has none yet, and a cluster node runs without a gate.

Threads: logins run on every reader thread; the one SQLite connection is used under
``_lock`` (each use is one indexed read, microseconds).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from chatroom.protocol import username_key
from chatroom_server import modstore

__all__ = [
    "SQLITE_SERVER_GATE",
    "ServerBan",
    "ServerGate",
    "ban",
    "bans",
    "set_registrations",
    "unban",
]

SQLITE_SERVER_GATE: Final = """
CREATE TABLE IF NOT EXISTS server_bans (
    user_key  TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    ts        DOUBLE PRECISION NOT NULL,
    reason    TEXT,
    expires   DOUBLE PRECISION           -- unix time; NULL: until unbanned
);
CREATE TABLE IF NOT EXISTS server_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class ServerBan:
    user: str
    ts: float
    reason: str | None
    expires: float | None

    def text(self) -> str:
        until = ""
        if self.expires is not None:
            until = " until " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.expires))
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.user} is banned from this server{until}{why}"


class ServerGate:
    """The login-time checks on one SQLite database (module docstring)."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=timeout, check_same_thread=False)  # _lock

    def banned(self, user: str, now: float) -> ServerBan | None:
        """``user``'s server ban in force at ``now``, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT user_name, ts, reason, expires FROM server_bans WHERE user_key = ?",
                (username_key(user),),
            ).fetchone()
        if row is None or (row[3] is not None and now >= float(row[3])):
            return None
        return ServerBan(str(row[0]), float(row[1]), row[2], row[3])

    def registrations_open(self) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM server_settings WHERE key = 'registrations'"
            ).fetchone()
        return row is None or row[0] != "closed"

    def is_operator(self, user: str) -> bool:
        """Whether ``user`` is a server operator (chatroom_server.modstore's table)."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM operators WHERE user_key = ?", (username_key(user),)
            ).fetchone()
        return row is not None

    def audit(self, room: str | None, limit: int) -> list[modstore.AuditRow]:
        """The newest ``limit`` audit records (chatroom_server.modstore.audit)."""
        with self._lock:
            return modstore.audit(self._db, room, limit)

    def close(self) -> None:
        with self._lock:
            self._db.close()


# ---------------------------------------------------------------- chat-server admin


def _audit(
    db: sqlite3.Connection, now: float, action: str, target: str | None, reason: str | None
) -> None:
    db.execute(
        "INSERT INTO audit (seq, ts, actor, action, target, reason) "
        "VALUES (NULL, ?, 'admin', ?, ?, ?)",
        (now, action, target, reason),
    )


def ban(
    db: sqlite3.Connection, user: str, reason: str | None, expires: float | None, now: float
) -> None:
    """Ban ``user`` (canonical) from the server (replacing a ban), with its audit record."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "INSERT INTO server_bans VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_key) DO UPDATE "
            "SET ts = excluded.ts, reason = excluded.reason, expires = excluded.expires",
            (username_key(user), user, now, reason, expires),
        )
        _audit(db, now, "server-ban", user, reason)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def unban(db: sqlite3.Connection, user: str, now: float) -> bool:
    """End ``user``'s server ban; False if there was none."""
    db.execute("BEGIN IMMEDIATE")
    try:
        cur = db.execute("DELETE FROM server_bans WHERE user_key = ?", (username_key(user),))
        if cur.rowcount:
            _audit(db, now, "server-unban", user, None)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return bool(cur.rowcount)


def bans(db: sqlite3.Connection, now: float) -> list[ServerBan]:
    rows = db.execute(
        "SELECT user_name, ts, reason, expires FROM server_bans "
        "WHERE expires IS NULL OR expires > ? ORDER BY user_key",
        (now,),
    ).fetchall()
    return [ServerBan(str(r[0]), float(r[1]), r[2], r[3]) for r in rows]


def set_registrations(db: sqlite3.Connection, open_: bool, now: float) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "INSERT INTO server_settings VALUES ('registrations', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            ("open" if open_ else "closed",),
        )
        _audit(db, now, "registrations-" + ("open" if open_ else "closed"), None, None)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
