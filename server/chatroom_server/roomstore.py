"""Rooms in the database (docs/PROTOCOL.md §Rooms), for both message logs: the SQLite
one (chatroom_server.messagelog) and PostgreSQL's (chatroom_server.cluster.pg).

What is stored:

- ``messages`` gains ``room``, the room of a public message or room event (canonical
  spelling; every row stored before rooms is ``lobby``'s, the column's default, and a
  DM's value means nothing), and ``event``, NULL for a message and the kind for a
  ``room_event`` row (``join``, ``part``, ...), whose ``sender`` is who did it,
  ``recipient`` whom it names (the invited, the kicked) and ``body`` the rest of the
  change as JSON (chatroom_server.rooms.RoomChange.detail).
- ``rooms``: a room's state (flags, key, limit, topic; ``flags`` keeps mode ``n`` as
  its absence, ``e``, so that rooms from before it are ``+n``:
  chatroom_server.rooms.stored_flags); ``room_members``: each
  membership, its role (``op+voice``, ``owner+voice`` for an operator voiced too:
  chatroom_server.rooms.stored_role) and the seq of the join; ``room_invites``:
  invites not used yet.

Every room event and the rows it changes are written in the one transaction that gives
the event its seq (:func:`change_statements`), so the model rebuilt at start-up
(:func:`load`) is what the log says happened.

The SQL here is written once for both databases: ``p`` is the table prefix (``""`` or
``"chat_"``) and ``mark`` the parameter placeholder (``?`` or ``%s``). Room and user
keys are stored lower-cased (``*_key`` columns), so no comparison depends on a
collation; messages are matched to rooms by ``lower(room)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from chatroom.protocol import username_key
from chatroom.rooms import LOBBY, RoomEventKind, room_key
from chatroom_server import modstore
from chatroom_server.rooms import NEW_ROOM_FLAGS, RoomChange, stored_flags, stored_role

__all__ = [
    "PG_ROOMS",
    "SQLITE_ROOMS",
    "change_statements",
    "load",
    "visible_sql",
]

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS {p}rooms (
    room_key     TEXT PRIMARY KEY,          -- the name lower-cased
    name         TEXT NOT NULL,             -- its creator's spelling
    flags        TEXT NOT NULL DEFAULT '',  -- the flag modes set: i t s H
    join_key     TEXT,                      -- +k (NULL: none)
    member_limit INTEGER,                   -- +l (NULL: none)
    topic        TEXT NOT NULL DEFAULT '',
    topic_by     TEXT,
    created_seq  BIGINT NOT NULL            -- the seq of the creator's join
);
CREATE TABLE IF NOT EXISTS {p}room_members (
    user_key  TEXT NOT NULL,
    room_key  TEXT NOT NULL,
    user_name TEXT NOT NULL,                -- canonical spelling
    role      TEXT NOT NULL,                -- owner, op, voice, member
    join_seq  BIGINT NOT NULL,              -- reads the room from here (unless +H)
    PRIMARY KEY (user_key, room_key)
);
CREATE INDEX IF NOT EXISTS {p}room_members_by_room ON {p}room_members (room_key);
CREATE TABLE IF NOT EXISTS {p}room_invites (
    room_key TEXT NOT NULL,
    user_key TEXT NOT NULL,
    user_name TEXT NOT NULL,
    seq      BIGINT NOT NULL,               -- the invite's room_event
    PRIMARY KEY (room_key, user_key)
);
"""
_INDEX: Final = (
    "CREATE INDEX IF NOT EXISTS {p}messages_by_room ON {p}messages (lower(room), seq) "
    "WHERE pair IS NULL;\n"
)

# The step that adds rooms to a SQLite message log (chatroom_server.schema's step 3, run
# once, as every step: ADD COLUMN is not idempotent in SQLite).
SQLITE_ROOMS: Final = (
    "ALTER TABLE messages ADD COLUMN room TEXT DEFAULT 'lobby';\n"
    "ALTER TABLE messages ADD COLUMN event TEXT;\n" + _TABLES.format(p="") + _INDEX.format(p="")
)
# The same for PostgreSQL (chatroom_server.cluster.pg's step 2), safe to run again; ADD
# COLUMN with a constant default rewrites no row there, as in SQLite.
PG_ROOMS: Final = (
    "ALTER TABLE chat_messages ADD COLUMN IF NOT EXISTS room TEXT DEFAULT 'lobby';\n"
    "ALTER TABLE chat_messages ADD COLUMN IF NOT EXISTS event TEXT;\n"
    + _TABLES.format(p="chat_")
    + _INDEX.format(p="chat_")
)

Statement = tuple[str, tuple[object, ...]]
# The room events a replay gives the user they name, member or not (§Moderation).
_NAMED: Final = "'invite', 'kick', 'ban', 'unban', 'mute', 'unmute'"


def change_statements(change: RoomChange, seq: int, p: str, mark: str) -> list[Statement]:
    """The writes that make ``change``, stored as the room event ``seq``, durable; run in
    the transaction that stores the event."""
    m = mark
    rk = room_key(change.room)
    out: list[Statement] = []
    kind = change.event
    if change.create:
        out.append(
            (
                f"INSERT INTO {p}rooms (room_key, name, flags, created_seq) "
                f"VALUES ({m}, {m}, {m}, {m})",
                (rk, change.room, stored_flags(NEW_ROOM_FLAGS), seq),
            )
        )
    if kind is RoomEventKind.JOIN:
        assert change.role is not None
        out.append(
            (
                f"INSERT INTO {p}room_members VALUES ({m}, {m}, {m}, {m}, {m}) "
                "ON CONFLICT (user_key, room_key) DO UPDATE SET role = excluded.role, "
                "join_seq = excluded.join_seq, user_name = excluded.user_name",
                (username_key(change.by), rk, change.by, change.role.value, seq),
            )
        )
        if change.invite_used:
            out.append(
                (
                    f"DELETE FROM {p}room_invites WHERE room_key = {m} AND user_key = {m}",
                    (rk, username_key(change.by)),
                )
            )
    elif kind in (RoomEventKind.PART, RoomEventKind.KICK, RoomEventKind.BAN):
        gone = change.by if kind is RoomEventKind.PART else change.user
        # A ban of an address names nobody: its members are put out by kicks of their
        # own (chatroom_server.roomwire).
        assert gone is not None or change.address is not None
        if gone is not None:
            out.append(
                (
                    f"DELETE FROM {p}room_members WHERE user_key = {m} AND room_key = {m}",
                    (username_key(gone), rk),
                )
            )
    elif kind is RoomEventKind.TOPIC:
        topic = change.topic or ""
        out.append(
            (
                f"UPDATE {p}rooms SET topic = {m}, topic_by = {m} WHERE room_key = {m}",
                (topic, change.by if topic else None, rk),
            )
        )
    elif kind is RoomEventKind.INVITE:
        assert change.user is not None
        out.append(
            (
                f"INSERT INTO {p}room_invites VALUES ({m}, {m}, {m}, {m}) "
                "ON CONFLICT (room_key, user_key) DO UPDATE SET seq = excluded.seq",
                (rk, username_key(change.user), change.user, seq),
            )
        )
    elif kind is RoomEventKind.MODE:
        assert change.after is not None
        after = change.after
        out.append(
            (
                f"UPDATE {p}rooms SET flags = {m}, join_key = {m}, member_limit = {m} "
                f"WHERE room_key = {m}",
                (stored_flags(after.flags), after.key, after.limit, rk),
            )
        )
        for user, role, voice in after.roles:
            out.append(
                (
                    f"UPDATE {p}room_members SET role = {m} "
                    f"WHERE user_key = {m} AND room_key = {m}",
                    (stored_role(role, voice), username_key(user), rk),
                )
            )
    # Bans, mutes and the audit record (chatroom_server.modstore), in this transaction.
    out.extend(modstore.change_statements(change, seq, p, mark))
    return out


Query = Callable[[str], Sequence[Sequence[Any]]]


Loaded = tuple[
    list[tuple[str, str, str | None, int | None, str, str | None, float | None, float | None]],
    list[tuple[str, str, str, int]],
    list[tuple[str, str]],
]


def load(query: Query, p: str) -> Loaded:
    """Every room, membership and invite, as chatroom_server.rooms.RoomBook.load takes
    them; ``query`` runs one SELECT and returns its rows."""
    # When each room was made and its topic set: the times of its creating join and of
    # its latest topic event, from the log (None once retention has dropped them).
    sql = (
        "SELECT r.name, r.flags, r.join_key, r.member_limit, r.topic, r.topic_by, "
        f"(SELECT m.ts FROM {p}messages m WHERE m.seq = r.created_seq), "
        f"(SELECT m.ts FROM {p}messages m WHERE lower(m.room) = r.room_key "
        "AND m.pair IS NULL AND m.event = 'topic' ORDER BY m.seq DESC LIMIT 1) "
        f"FROM {p}rooms r"
    )
    rooms = [
        (
            str(r[0]),
            str(r[1]),
            r[2],
            None if r[3] is None else int(r[3]),
            str(r[4]),
            r[5],
            None if r[6] is None else float(r[6]),
            None if r[7] is None or not r[4] else float(r[7]),
        )
        for r in query(sql)
    ]
    names = {room_key(r[0]): r[0] for r in rooms}
    members = [
        (names.get(str(r[0]), str(r[0])), str(r[1]), str(r[2]), int(r[3]))
        for r in query(f"SELECT room_key, user_name, role, join_seq FROM {p}room_members")
    ]
    invites = [
        (names.get(str(r[0]), str(r[0])), str(r[1]))
        for r in query(f"SELECT room_key, user_name FROM {p}room_invites")
    ]
    return rooms, members, invites


def visible_sql(p: str, mark: str, sender: str, recipient: str, rooms: bool) -> str:
    """The condition on a ``messages`` row for "this user may see it in a replay"
    (docs/PROTOCOL.md §Resume), with four parameters after the seq range: the user's
    name (or key) twice, then, with ``rooms``, the user's key and the name again.
    ``sender`` and ``recipient`` are the columns to compare the name with.

    Without ``rooms`` (a protocol-v1 connection): lobby's messages, and DMs the user
    sent or received. With it: also the messages and room events of every room the
    user is a member of, from their join on, and the invites and kicks naming them."""
    m = mark
    dm = f"(pair IS NOT NULL AND ({sender} = {m} OR {recipient} = {m}))"
    lobby = f"lower(room) = '{LOBBY}'"
    if not rooms:
        return f"({dm} OR (pair IS NULL AND {lobby} AND event IS NULL))"
    member = (
        f"EXISTS (SELECT 1 FROM {p}room_members mb WHERE mb.user_key = {m} "
        f"AND mb.room_key = lower({p}messages.room) AND mb.join_seq <= {p}messages.seq)"
    )
    named = f"(event IN ({_NAMED}) AND {recipient} = {m})"
    return f"({dm} OR (pair IS NULL AND ({lobby} OR {member} OR {named})))"
