"""Moderation in the database (docs/PROTOCOL.md §Moderation), for both message logs
(SQLite's, chatroom_server.messagelog, and PostgreSQL's, chatroom_server.cluster.pg),
written once as chatroom_server.roomstore is: ``p`` the table prefix, ``mark`` the
placeholder.

- ``room_bans`` and ``room_mutes``: the bans and mutes made and not undone (ended ones
  are kept until undone or replaced: the end is checked when it matters);
- ``audit``: one record per moderation action (who, what, to whom, where, when, why),
  written in the transaction that stores the action's room event, so the log and the
  audit never disagree; and the grants and revocations of server operators;
- ``operators``: the server operators, granted by ``chat-server admin grant`` only;
- ``server_bans``, ``address_bans`` and ``server_settings``: server-wide moderation
  (chatroom_server.servergate, which reads and writes them on either database).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final

from chatroom.protocol import username_key
from chatroom.rooms import RoomEventKind, room_key
from chatroom_server.rooms import RoomChange

__all__ = [
    "PG_MODERATION",
    "PG_ROOM_ADDRESS_BANS",
    "PG_SERVER_GATE",
    "SQLITE_ADDRESS_BANS",
    "SQLITE_MODERATION",
    "SQLITE_ROOM_ADDRESS_BANS",
    "SQLITE_SERVER_GATE",
    "change_statements",
    "is_operator",
    "load",
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

_GATE: Final = """
CREATE TABLE IF NOT EXISTS {p}server_bans (
    user_key  TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    ts        DOUBLE PRECISION NOT NULL,
    reason    TEXT,
    expires   DOUBLE PRECISION           -- unix time; NULL: until unbanned
);
CREATE TABLE IF NOT EXISTS {p}server_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_ADDRESSES: Final = """
CREATE TABLE IF NOT EXISTS {p}address_bans (
    network   TEXT PRIMARY KEY,          -- canonical CIDR (network()): 203.0.113.0/24
    ts        DOUBLE PRECISION NOT NULL,
    reason    TEXT,
    expires   DOUBLE PRECISION           -- unix time; NULL: until unbanned
);
"""

_ROOM_ADDRESSES: Final = """
CREATE TABLE IF NOT EXISTS {p}room_address_bans (
    room_key  TEXT NOT NULL,
    network   TEXT NOT NULL,            -- canonical CIDR (servergate.network())
    room_name TEXT NOT NULL,
    by_name   TEXT NOT NULL,            -- the server operator who banned it
    ts        DOUBLE PRECISION NOT NULL,
    reason    TEXT,
    expires   DOUBLE PRECISION,         -- unix time; NULL: until unbanned
    PRIMARY KEY (room_key, network)
);
"""

# A room's bans of addresses (docs/PROTOCOL.md §Bans by address): chatroom_server.schema's
# step 7, chatroom_server.cluster.pg's step 5.
SQLITE_ROOM_ADDRESS_BANS: Final[str] = _ROOM_ADDRESSES.format(p="")
PG_ROOM_ADDRESS_BANS: Final[str] = _ROOM_ADDRESSES.format(p="chat_")

# Server-wide (chatroom_server.servergate): chatroom_server.schema's steps 5 and 6,
# chatroom_server.cluster.pg's step 4.
SQLITE_SERVER_GATE: Final[str] = _GATE.format(p="")
SQLITE_ADDRESS_BANS: Final[str] = _ADDRESSES.format(p="")
PG_SERVER_GATE: Final[str] = _GATE.format(p="chat_") + _ADDRESSES.format(p="chat_")

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
    if change.address is not None and kind is RoomEventKind.BAN:
        out.append(
            (
                f"INSERT INTO {p}room_address_bans VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m}) "
                "ON CONFLICT (room_key, network) DO UPDATE SET by_name = excluded.by_name, "
                "ts = excluded.ts, reason = excluded.reason, expires = excluded.expires",
                (
                    rk,
                    change.address,
                    change.room,
                    change.by,
                    change.ts,
                    change.reason,
                    change.expires,
                ),
            )
        )
    elif change.address is not None and kind is RoomEventKind.UNBAN:
        out.append(
            (
                f"DELETE FROM {p}room_address_bans WHERE room_key = {m} AND network = {m}",
                (rk, change.address),
            )
        )
    elif kind in (RoomEventKind.BAN, RoomEventKind.MUTE) and change.user is not None:
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
        if change.address is not None:
            detail["address"] = change.address
        out.append(
            (
                f"INSERT INTO {p}audit VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m}, {m})",
                (
                    seq,
                    change.ts,
                    change.by,
                    kind.value,
                    change.user if change.address is None else change.address,
                    change.room,
                    change.reason,
                    json.dumps(detail, separators=(",", ":")),
                ),
            )
        )
    return out


Query = Callable[[str], Sequence[Sequence[Any]]]
Row = tuple[str, str, str, float, str | None, float | None]


def load(query: Query, p: str) -> tuple[list[Row], list[Row], list[Row]]:
    """Every ban, mute and room's address ban stored (the network in the user's place),
    as chatroom_server.moderation.Moderation.load takes them."""

    def rows(table: str, user: str = "user_name") -> list[Row]:
        sql = f"SELECT room_name, {user}, by_name, ts, reason, expires FROM {p}{table}"
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

    return rows("room_bans"), rows("room_mutes"), rows("room_address_bans", "network")


# ---------------------------------------------------------------- server operators (SQLite)
# Granted, revoked and listed on either database by chatroom_server.servergate.


def is_operator(db: sqlite3.Connection, user: str) -> bool:
    row = db.execute("SELECT 1 FROM operators WHERE user_key = ?", (username_key(user),))
    return row.fetchone() is not None
