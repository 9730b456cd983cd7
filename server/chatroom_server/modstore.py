"""Moderation in the database (docs/PROTOCOL.md §Moderation), for both message logs
(SQLite's, chatroom_server.messagelog, and PostgreSQL's, chatroom_server.cluster.pg),
written once as chatroom_server.roomstore is: ``p`` the table prefix, ``mark`` the
placeholder.

- ``room_bans`` and ``room_mutes``: the bans and mutes made and not undone (ended ones
  are kept until undone or replaced: the end is checked when it matters);
- ``audit``: one record per moderation action (who, what, to whom, where, when, why),
  written in the transaction that stores the action's room event, so the log and the
  audit never disagree; and the grants and revocations of server operators;
- ``operators``: the server operators, granted by ``chat-server admin grant`` only.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from chatroom.protocol import username_key
from chatroom.rooms import RoomEventKind, room_key
from chatroom_server.rooms import RoomChange

__all__ = [
    "PG_MODERATION",
    "SQLITE_MODERATION",
    "audit",
    "change_statements",
    "grant",
    "is_operator",
    "load",
    "operators",
    "revoke",
]

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS {p}room_bans (
    room_key  TEXT NOT NULL,
    user_key  TEXT NOT NULL,
    user_name TEXT NOT NULL,            -- canonical spelling
    room_name TEXT NOT NULL,
    by_name   TEXT NOT NULL,            -- the operator who banned
    ts        DOUBLE PRECISION NOT NULL,
    reason    TEXT,
    expires   DOUBLE PRECISION,         -- unix time; NULL: until unbanned
    PRIMARY KEY (room_key, user_key)
);
CREATE TABLE IF NOT EXISTS {p}room_mutes (
    room_key  TEXT NOT NULL,
    user_key  TEXT NOT NULL,
    user_name TEXT NOT NULL,
    room_name TEXT NOT NULL,
    by_name   TEXT NOT NULL,
    ts        DOUBLE PRECISION NOT NULL,
    reason    TEXT,
    expires   DOUBLE PRECISION,
    PRIMARY KEY (room_key, user_key)
);
CREATE TABLE IF NOT EXISTS {p}audit (
    seq     BIGINT,                     -- the action's room event; NULL for a grant
    ts      DOUBLE PRECISION NOT NULL,
    actor   TEXT NOT NULL,              -- who did it ('admin': chat-server admin)
    action  TEXT NOT NULL,              -- kick ban unban mute unmute mode grant revoke
    target  TEXT,                       -- to whom
    room    TEXT,
    reason  TEXT,
    detail  TEXT NOT NULL DEFAULT '{{}}'  -- JSON: a mode string and args, an end
);
CREATE INDEX IF NOT EXISTS {p}audit_by_ts ON {p}audit (ts);
CREATE TABLE IF NOT EXISTS {p}operators (
    user_key  TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    granted   DOUBLE PRECISION NOT NULL
);
"""

# chatroom_server.schema's step 4 and chatroom_server.cluster.pg's step 3.
SQLITE_MODERATION: Final = _TABLES.format(p="")
PG_MODERATION: Final = _TABLES.format(p="chat_")

_AUDITED: Final = frozenset(
    (
        RoomEventKind.KICK,
        RoomEventKind.BAN,
        RoomEventKind.UNBAN,
        RoomEventKind.MUTE,
        RoomEventKind.UNMUTE,
        RoomEventKind.MODE,
    )
)

Statement = tuple[str, tuple[object, ...]]


def change_statements(change: RoomChange, seq: int, p: str, mark: str) -> list[Statement]:
    """The moderation writes of a room change (chatroom_server.rooms.RoomChange) stored
    as ``seq``: its ban or mute rows and its audit record."""
    m = mark
    kind = change.event
    rk = room_key(change.room)
    out: list[Statement] = []
    who = change.by if kind is RoomEventKind.PART else change.user
    ends_mute = (RoomEventKind.PART, RoomEventKind.KICK, RoomEventKind.BAN, RoomEventKind.UNMUTE)
    if kind in ends_mute and who is not None:  # leaving, or being put out, ends a mute
        out.append(
            (
                f"DELETE FROM {p}room_mutes WHERE room_key = {m} AND user_key = {m}",
                (rk, username_key(who)),
            )
        )
    if kind in (RoomEventKind.BAN, RoomEventKind.MUTE) and change.user is not None:
        table = "room_bans" if kind is RoomEventKind.BAN else "room_mutes"
        out.append(
            (
                f"INSERT INTO {p}{table} VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m}, {m}) "
                "ON CONFLICT (room_key, user_key) DO UPDATE SET by_name = excluded.by_name, "
                "ts = excluded.ts, reason = excluded.reason, expires = excluded.expires",
                (
                    rk,
                    username_key(change.user),
                    change.user,
                    change.room,
                    change.by,
                    change.ts,
                    change.reason,
                    change.expires,
                ),
            )
        )
    elif kind is RoomEventKind.UNBAN and change.user is not None:
        out.append(
            (
                f"DELETE FROM {p}room_bans WHERE room_key = {m} AND user_key = {m}",
                (rk, username_key(change.user)),
            )
        )
    if kind in _AUDITED:
        detail: dict[str, object] = {}
        if change.modes is not None:
            detail["modes"] = change.modes
            detail["args"] = list(change.args)
        if change.expires is not None:
            detail["expires"] = change.expires
        out.append(
            (
                f"INSERT INTO {p}audit VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m}, {m})",
                (
                    seq,
                    change.ts,
                    change.by,
                    kind.value,
                    change.user,
                    change.room,
                    change.reason,
                    json.dumps(detail, separators=(",", ":")),
                ),
            )
        )
    return out


Query = Callable[[str], Sequence[Sequence[Any]]]
Row = tuple[str, str, str, float, str | None, float | None]


def load(query: Query, p: str) -> tuple[list[Row], list[Row]]:
    """Every ban and mute stored, as chatroom_server.moderation.Moderation.load takes
    them."""

    def rows(table: str) -> list[Row]:
        sql = f"SELECT room_name, user_name, by_name, ts, reason, expires FROM {p}{table}"
        return [
            (
                str(r[0]),
                str(r[1]),
                str(r[2]),
                float(r[3]),
                r[4],
                None if r[5] is None else float(r[5]),
            )
            for r in query(sql)
        ]

    return rows("room_bans"), rows("room_mutes")


# ---------------------------------------------------------------- server operators (SQLite)


def is_operator(db: sqlite3.Connection, user: str) -> bool:
    row = db.execute("SELECT 1 FROM operators WHERE user_key = ?", (username_key(user),))
    return row.fetchone() is not None


def operators(db: sqlite3.Connection) -> list[tuple[str, float]]:
    rows = db.execute("SELECT user_name, granted FROM operators ORDER BY user_key").fetchall()
    return [(str(r[0]), float(r[1])) for r in rows]


def grant(db: sqlite3.Connection, user: str, now: float | None = None) -> bool:
    """Make ``user`` (a canonical account name) a server operator, with its audit
    record; False if they are one already."""
    return _operator_change(db, "grant", user, time.time() if now is None else now)


def revoke(db: sqlite3.Connection, user: str, now: float | None = None) -> bool:
    """Take server operator from ``user``; False if they were not one."""
    return _operator_change(db, "revoke", user, time.time() if now is None else now)


def _operator_change(db: sqlite3.Connection, action: str, user: str, now: float) -> bool:
    # Explicit, so the change and its audit record are one transaction whatever the
    # connection's isolation level.
    db.execute("BEGIN IMMEDIATE")
    try:
        if action == "grant":
            cur = db.execute(
                "INSERT INTO operators VALUES (?, ?, ?) ON CONFLICT (user_key) DO NOTHING",
                (username_key(user), user, now),
            )
        else:
            cur = db.execute("DELETE FROM operators WHERE user_key = ?", (username_key(user),))
        if cur.rowcount == 0:
            db.execute("ROLLBACK")
            return False
        db.execute(
            "INSERT INTO audit (seq, ts, actor, action, target) VALUES (NULL, ?, 'admin', ?, ?)",
            (now, action, user),
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return True


# seq, ts, actor, action, target, room, reason, detail (JSON)
AuditRow = tuple[int | None, float, str, str, str | None, str | None, str | None, str]


def audit(db: sqlite3.Connection, room: str | None = None, limit: int = 100) -> list[AuditRow]:
    """The newest ``limit`` audit records (of ``room``), newest first."""
    sql = "SELECT seq, ts, actor, action, target, room, reason, detail FROM audit"
    args: tuple[object, ...] = ()
    if room is not None:
        sql += " WHERE lower(room) = ?"
        args = (room_key(room),)
    sql += " ORDER BY ts DESC, seq DESC LIMIT ?"
    return [
        (
            None if r[0] is None else int(r[0]),
            float(r[1]),
            str(r[2]),
            str(r[3]),
            r[4],
            r[5],
            r[6],
            str(r[7]),
        )
        for r in db.execute(sql, (*args, limit)).fetchall()
    ]
