"""Accounts and the message log in PostgreSQL, shared by every node of a cluster
(docs/CLUSTER.md).

The same contracts as the embedded SQLite stores (chatroom_server.accounts,
chatroom_server.messagelog), on psycopg 3 with a connection pool:

- **One order for the whole cluster.** :meth:`PgMessageLog.append` stores a group while
  holding a session-level advisory lock (:data:`SEQ_LOCK`), so groups from different
  nodes commit one after another and ``seq`` grows with commit order: a message with a
  higher seq is never visible before one with a lower seq. The node then publishes the
  group on the Redis stream (``publish``) *before* letting go of the lock, so the stream
  carries messages in seq order too. If publishing fails the messages are still stored
  (their acks say so) and every node fills the gap from here (chatroom_server.cluster.bus).
- **Delivered, not stored, is the login's cut.** ``last_seq`` here is the last seq this
  node has handed to its own clients; the bus's consumer thread advances it under the
  fan-out lock, which is what a resuming login's ``upto`` must be (docs/PROTOCOL.md
  §Resume).
- **Unreachable is ``unavailable``.** Every PostgreSQL failure becomes
  :class:`~chatroom_server.messagelog.StorageError` or
  :class:`~chatroom_server.accounts.AccountStoreBusy`, which the server answers with
  ``error`` ``unavailable``; the pool reconnects by itself when the database returns.
- **Schema created or migrated at start-up, never dropped**
  (chatroom_server.cluster.pgschema). Tables are prefixed ``chat_``.

Threads: the writer connection ``_writer`` belongs to whoever holds the fan-out lock
(as the SQLite writer does); reads take a pooled connection each.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import psycopg
from argon2 import PasswordHasher
from psycopg_pool import ConnectionPool, PoolTimeout

from chatroom.protocol import username_key
from chatroom.rooms import LOBBY
from chatroom_server import modstore, roomstore, servergate
from chatroom_server.accounts import (
    OWASP_HASHER,
    Account,
    AccountExists,
    AccountStore,
    AccountStoreBusy,
    AccountStoreError,
)
from chatroom_server.cluster import pgschema
from chatroom_server.cluster.pgschema import SCHEMA_VERSION as SCHEMA_VERSION
from chatroom_server.messagelog import (
    ROW_OVERHEAD,
    NewMessage,
    Outcome,
    StorageError,
    Stored,
    history_page,
    history_sql,
    pair_key,
    resend,
)

log = logging.getLogger(__name__)

# pg_advisory_lock key: 'chat' in ASCII (the schema's is pgschema.SCHEMA_LOCK).
SEQ_LOCK: Final = 0x63686174

_COLUMNS: Final = "seq, ts, sender, recipient, body, cid, room, event"
_INSERT: Final = (
    "INSERT INTO chat_messages (seq, ts, sender, sender_key, recipient, recipient_key, pair, "
    "body, cid, room, event) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
# What a user may see in a replay (chatroom_server.roomstore.visible_sql): lobby and the
# DMs they sent or received; with rooms (protocol v2), their rooms too. Parameters after
# the range: the user's key, twice, and with rooms twice more.
_VISIBLE: Final = {
    rooms: "seq > %s AND seq <= %s AND "
    + roomstore.visible_sql("chat_", "%s", "sender_key", "recipient_key", rooms)
    for rooms in (False, True)
}


def _who(key: str, rooms: bool) -> tuple[str, ...]:
    """The parameters of a replay's visibility (``_VISIBLE``) after the range."""
    return (key,) * (4 if rooms else 2)


class PgDatabase:
    """The pool every PostgreSQL user in one node shares; schema checked at open."""

    def __init__(self, url: str, *, max_size: int = 8, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        # The pool logs every failed reconnection; the server says once that the
        # database is unreachable (chatroom_server.fanout) and once that it is back.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))},
            # A connection the server dropped (a restart) is replaced, not handed out.
            check=ConnectionPool.check_connection,
            open=False,
            name="chat-pg",
        )
        try:
            self.pool.open(wait=True, timeout=timeout)
        except PoolTimeout as exc:
            self.pool.close()
            raise AccountStoreError(f"cannot connect to PostgreSQL at {url}: {exc}") from exc
        try:
            with self.pool.connection() as db:
                self.epoch = pgschema.migrate(db)
        except psycopg.Error as exc:
            self.pool.close()
            raise AccountStoreError(f"cannot set up the schema at {url}: {exc}") from exc

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; StorageError when none can be had or the query fails."""
        try:
            with self.pool.connection(timeout=self.timeout) as db:
                yield db
        except (psycopg.Error, PoolTimeout) as exc:
            raise StorageError(f"PostgreSQL: {exc}") from exc

    def describe(self) -> str:
        """The URL without its password."""
        try:
            info = psycopg.conninfo.conninfo_to_dict(self.url)
        except psycopg.ProgrammingError:
            return "postgresql"
        user, host = info.get("user", ""), info.get("host", "")
        return f"postgresql://{user}@{host}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    def close(self) -> None:
        self.pool.close()


class PgAccountStore(AccountStore):
    """:class:`~chatroom_server.accounts.AccountStore` on PostgreSQL: only the
    database calls differ (hashing, its threads and limits are the same)."""

    # An insert here is a round trip to PostgreSQL: never on a connection's thread.
    GROUP_COMMIT = False

    def __init__(self, database: PgDatabase, hasher: PasswordHasher = OWASP_HASHER) -> None:
        self._pg = database
        super().__init__(database.describe(), hasher)

    def _open(self) -> None:
        pass  # the schema is PgDatabase's

    def _close_db(self) -> None:
        pass  # the pool is closed by its owner

    def _worker_started(self) -> None:
        pass  # reads take a connection from the pool

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pg.connection() as db:
                yield db
        except StorageError as exc:
            raise AccountStoreBusy(f"the account database is unreachable ({exc})") from exc

    def get(self, name: str) -> Account | None:
        with self._conn() as db:
            row = db.execute(
                "SELECT name, hash FROM chat_accounts WHERE name_key = %s", (username_key(name),)
            ).fetchone()
        return Account(row[0], row[1]) if row else None

    def count(self) -> int:
        with self._conn() as db:
            row = db.execute("SELECT count(*) FROM chat_accounts").fetchone()
        return int(row[0]) if row else 0

    def _insert_later(self, name: str, password_hash: str) -> None:  # type: ignore[override]
        """No group commit here: PostgreSQL's own commits are the store's business."""
        self._insert(name, password_hash)

    def _insert(self, name: str, password_hash: str) -> None:
        with self._conn() as db:
            cur = db.execute(
                "INSERT INTO chat_accounts VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (username_key(name), name, password_hash, time.time()),
            )
            if cur.rowcount == 0:
                raise AccountExists(name)
        log.info("registered account %s", name)

    def _update_hash(self, name: str, password_hash: str) -> bool:
        with self._conn() as db:
            cur = db.execute(
                "UPDATE chat_accounts SET hash = %s WHERE name_key = %s",
                (password_hash, username_key(name)),
            )
            return cur.rowcount > 0

    def _delete(self, name: str) -> bool:
        with self._conn() as db:
            cur = db.execute("DELETE FROM chat_accounts WHERE name_key = %s", (username_key(name),))
            return cur.rowcount > 0

    def accounts(self) -> list[tuple[str, float]]:
        with self._conn() as db:
            rows = db.execute("SELECT name, created FROM chat_accounts ORDER BY name_key")
            return [(str(r[0]), float(r[1])) for r in rows.fetchall()]


Publish = Callable[[list[tuple[int, NewMessage]]], None]


class PgMessageLog:
    """:class:`~chatroom_server.messagelog.MessageLog`'s interface on PostgreSQL (see
    the module docstring for what differs: the advisory lock, publishing, the cut)."""

    def __init__(
        self, database: PgDatabase, publish: Publish, ready: Callable[[], None] = lambda: None
    ) -> None:
        self._pg = database
        self._publish = publish
        self._ready = ready  # raises StorageError when the messages could not be published
        self.epoch = database.epoch
        self._writer: psycopg.Connection[Any] | None = None  # fan-out lock holder's
        lo, hi = self._bounds()
        # The last seq handed to this node's clients: the bus sets it (module docstring).
        self.last_seq: int = hi
        self.oldest_seq: int = lo or hi + 1

    def _bounds(self) -> tuple[int, int]:
        with self._pg.connection() as db:
            row = db.execute("SELECT min(seq), max(seq) FROM chat_messages").fetchone()
        assert row is not None
        return int(row[0] or 0), int(row[1] or 0)

    def stored_seq(self) -> int:
        """The highest seq stored by any node (what the bus compares with what it has
        delivered, to find messages whose publication was lost)."""
        return self._bounds()[1]

    def describe(self) -> str:
        return f"{self._pg.describe()} (last seq {self.last_seq}), epoch {self.epoch}"

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(psycopg.Error):
                self._writer.close()
            self._writer = None

    # ------------------------------------------------------------ writer (fan-out lock)

    def _writer_conn(self) -> psycopg.Connection[Any]:
        if self._writer is None or self._writer.closed or self._writer.broken:
            self._writer = psycopg.connect(
                self._pg.url, autocommit=True, connect_timeout=max(1, int(self._pg.timeout))
            )
        return self._writer

    def _locked_writer(self) -> psycopg.Connection[Any]:
        """The writer connection, holding the seq lock. A connection that died since
        its last use (the database restarted) is replaced once before giving up."""
        for attempt in (1, 2):
            try:
                db = self._writer_conn()
                db.execute("SELECT pg_advisory_lock(%s)", (SEQ_LOCK,))
                return db
            except psycopg.Error as exc:
                self.close()
                if attempt == 2:
                    raise StorageError(f"PostgreSQL: {exc}") from exc
        raise AssertionError("unreachable")

    def append(self, messages: Sequence[NewMessage]) -> list[Outcome]:
        """Store a group (one transaction, seqs after every seq stored by any node), then
        publish it, all under the cluster's seq lock. StorageError: nothing stored."""
        self._ready()
        db = self._locked_writer()
        try:
            try:
                out, stored = self._insert(db, messages)
            except psycopg.Error as exc:
                raise StorageError(f"PostgreSQL: {exc}") from exc
            if stored:
                self._publish(stored)  # logs its own failures: the messages are stored
            return out
        finally:
            try:
                db.execute("SELECT pg_advisory_unlock(%s)", (SEQ_LOCK,))
            except psycopg.Error:
                self.close()  # the session, and with it the lock, ends

    def _insert(
        self, db: psycopg.Connection[Any], messages: Sequence[NewMessage]
    ) -> tuple[list[Outcome], list[tuple[int, NewMessage]]]:
        """One transaction in pipeline mode, two round trips: the highest seq and the
        resends among the group's cids (one query for all), then the inserts and COMMIT.
        The SDK puts a cid on every send, so a query per message would be the cost."""
        keyed = list({(username_key(m.sender), m.cid) for m in messages if m.cid is not None})
        out: list[Outcome] = []
        stored: list[tuple[int, NewMessage]] = []
        with db.pipeline(), db.transaction():
            top = db.execute("SELECT coalesce(max(seq), 0) FROM chat_messages")
            found = (
                db.execute(
                    "SELECT sender_key, cid, seq, recipient, body FROM chat_messages "
                    "WHERE (sender_key, cid) IN "
                    "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                    ([k for k, _ in keyed], [c for _, c in keyed]),
                )
                if keyed
                else None
            )
            row = top.fetchone()
            seq = int(row[0]) if row else 0
            # (sender key, cid) -> (seq, recipient, text): stored, or earlier in the group
            seen: dict[tuple[str, str | None], tuple[int, str | None, str]] = {
                (r[0], r[1]): (r[2], r[3], r[4]) for r in (found.fetchall() if found else ())
            }
            rows = []
            inbox = []
            changes: list[roomstore.Statement] = []
            for m in messages:
                sender_key = username_key(m.sender)
                if m.cid is not None:
                    before = seen.get((sender_key, m.cid))
                    if before is not None:
                        out.append(resend(*before, m))
                        continue
                seq += 1
                if m.cid is not None:
                    seen[(sender_key, m.cid)] = (seq, m.to, m.body)
                to_key = None if m.to is None else username_key(m.to)
                change = m.change
                if change is None:
                    pair = None if m.to is None else pair_key(m.sender, m.to)
                    room = (m.room or LOBBY) if m.to is None else None
                    event = None
                else:
                    pair, room, event = None, change.room, change.event.value
                    changes.extend(roomstore.change_statements(change, seq, "chat_", "%s"))
                rows.append(
                    (
                        seq,
                        m.ts,
                        m.sender,
                        sender_key,
                        m.to,
                        to_key,
                        pair,
                        m.body,
                        m.cid,
                        room,
                        event,
                    )
                )
                if m.inbox and to_key is not None:
                    inbox.append((to_key, seq))
                out.append(seq)
                stored.append((seq, m))
            with db.cursor() as cur:
                if rows:
                    cur.executemany(_INSERT, rows)
                for sql, args in changes:
                    cur.execute(sql, args)
                if inbox:
                    cur.executemany("INSERT INTO chat_inbox VALUES (%s, %s)", inbox)
        return out, stored

    def has_inbox(self, user: str) -> bool:
        try:
            with self._pg.connection() as db:
                row = db.execute(
                    "SELECT 1 FROM chat_inbox WHERE user_key = %s LIMIT 1", (username_key(user),)
                ).fetchone()
        except StorageError as exc:
            log.error("cannot look for DMs waiting for %s: %s", user, exc)
            return False
        return row is not None

    def maybe_inbox(self, user: str) -> bool:
        """Whether DMs may wait for ``user``: here the deletion is the lookup."""
        return True

    def inbox_received(self, user: str, after: int, upto: int) -> int:
        """As the SQLite log's: out of the inbox, ``after < seq <= upto``; how many."""
        with self._pg.connection() as db:
            cur = db.execute(
                "DELETE FROM chat_inbox WHERE user_key = %s AND seq > %s AND seq <= %s",
                (username_key(user), after, upto),
            )
            return cur.rowcount

    # ------------------------------------------------------------ readers (any thread)

    def replay_start(
        self,
        user: str,
        since: int,
        upto: int,
        limit: int,
        inbox: bool = False,
        rooms: bool = False,
    ) -> int | None:
        """As the SQLite log's (chatroom_server.messagelog.MessageLog.replay_start)."""
        key = username_key(user)
        if inbox:
            sql = (
                "SELECT seq FROM chat_inbox WHERE user_key = %s AND seq > %s AND seq <= %s "
                "ORDER BY seq DESC LIMIT 1 OFFSET %s"
            )
            args: tuple[object, ...] = (key, since, upto, limit)
        else:
            sql = (
                f"SELECT seq FROM chat_messages WHERE {_VISIBLE[rooms]} "
                "ORDER BY seq DESC LIMIT 1 OFFSET %s"
            )
            args = (since, upto, *_who(key, rooms), limit)
        with self._pg.connection() as db:
            row = db.execute(sql, args).fetchone()
        return None if row is None else int(row[0])

    def replay_page(
        self,
        user: str,
        after: int,
        upto: int,
        budget: int,
        inbox: bool = False,
        rooms: bool = False,
    ) -> list[Stored]:
        """As the SQLite log's: rows until their texts pass ``budget`` characters, at
        least one. The cut is made in PostgreSQL (a running sum), so no more than the
        page crosses the network or is held here."""
        key = username_key(user)
        if inbox:
            source = (
                f"SELECT {', '.join('m.' + c for c in _COLUMNS.split(', '))} FROM chat_inbox i "
                "JOIN chat_messages m ON m.seq = i.seq "
                "WHERE i.user_key = %s AND i.seq > %s AND i.seq <= %s"
            )
            args: tuple[object, ...] = (key, after, upto)
        else:
            source = f"SELECT {_COLUMNS} FROM chat_messages WHERE {_VISIBLE[rooms]}"
            args = (after, upto, *_who(key, rooms))
        sql = (
            f"SELECT {_COLUMNS} FROM (SELECT *, sum(length(body) + %s) OVER (ORDER BY seq) AS run "
            f"FROM ({source} ORDER BY seq LIMIT %s) AS s) AS page "
            "WHERE run - length(body) - %s < %s ORDER BY seq"
        )
        most = budget // ROW_OVERHEAD + 1  # rows that can fit at all
        with self._pg.connection() as db:
            rows = db.execute(sql, (ROW_OVERHEAD, *args, most, ROW_OVERHEAD, budget)).fetchall()
        return [Stored(*r) for r in rows]

    def range(self, after: int, upto: int) -> list[Stored]:
        """Every message with ``after < seq <= upto``, ascending (the bus's gap fill)."""
        with self._pg.connection() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM chat_messages WHERE seq > %s AND seq <= %s ORDER BY seq",
                (after, upto),
            ).fetchall()
        return [Stored(*r) for r in rows]

    def history(
        self,
        user: str,
        *,
        before: int | None,
        after: int | None,
        limit: int,
        with_user: str | None,
        room: str = LOBBY,
        from_seq: int = 0,
    ) -> tuple[list[Stored], bool]:
        sql, args = history_sql(
            "chat_messages", "%s", user, before, after, with_user, room, from_seq
        )
        with self._pg.connection() as db:
            rows = db.execute(sql, (*args, limit + 1)).fetchall()
        return history_page(rows, limit, descending=after is None)

    def load_rooms(self) -> roomstore.Loaded:
        """Every room, membership and invite (chatroom_server.rooms.RoomBook.load)."""
        with self._pg.connection() as db:
            return roomstore.load(lambda sql: db.execute(sql).fetchall(), "chat_")

    def load_room_state(
        self,
    ) -> tuple[roomstore.Loaded, tuple[list[modstore.Row], list[modstore.Row], list[modstore.Row]]]:
        """Rooms (as :meth:`load_rooms`) and bans and mutes (Moderation.load) as of one
        snapshot, and ``last_seq`` set to that snapshot's highest seq. A node starts
        from it: every room event after it reaches this node from the stream or the gap
        fill, and none in it is applied twice (a join applied twice is harmless, a
        creation applied twice would empty the room)."""
        with self._pg.connection() as db, db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = db.execute("SELECT coalesce(max(seq), 0) FROM chat_messages").fetchone()
            assert row is not None

            def query(sql: str) -> list[Any]:
                return db.execute(sql).fetchall()

            rooms = roomstore.load(query, "chat_")
            moderation = modstore.load(query, "chat_")
        self.last_seq = max(self.last_seq, int(row[0]))
        return rooms, moderation

    def is_operator(self, user: str) -> bool:
        """Whether ``user`` is a server operator now (read at each use, as SQLite's)."""
        with self._pg.connection() as db:
            row = db.execute(
                "SELECT 1 FROM chat_operators WHERE user_key = %s", (username_key(user),)
            ).fetchone()
        return row is not None

    def prune(
        self,
        *,
        now: float,
        max_age: float | None,
        max_count: int | None,
        batch: int = 500,
        pause: Callable[[], bool] = lambda: False,
    ) -> int:
        """As the SQLite log's: batches, the newest message always kept. Any node may
        run it; two at once delete disjoint rows or nothing."""
        deleted = 0
        try:
            lo, hi = self._bounds()
            cutoff = hi - max_count + 1 if max_count is not None else 0
            with self._pg.connection() as db:
                if max_age is not None:
                    row = db.execute(
                        "SELECT max(seq) FROM chat_messages WHERE ts < %s", (now - max_age,)
                    ).fetchone()
                    if row and row[0] is not None:
                        cutoff = max(cutoff, int(row[0]) + 1)
                cutoff = min(cutoff, hi)
                while cutoff > lo:
                    cur = db.execute(
                        "DELETE FROM chat_messages WHERE seq IN (SELECT seq FROM chat_messages "
                        "WHERE seq < %s ORDER BY seq LIMIT %s)",
                        (cutoff, batch),
                    )
                    n = cur.rowcount
                    deleted += n
                    if n:
                        db.execute("DELETE FROM chat_inbox WHERE seq < %s", (cutoff,))
                    if n < batch or pause():
                        break
            lo, hi = self._bounds()
            self.oldest_seq = lo or hi + 1
        except (StorageError, psycopg.Error) as exc:
            log.warning("pruning the message log failed (will retry): %s", exc)
        if deleted:
            log.info("pruned %d messages; the oldest kept is seq %d", deleted, self.oldest_seq)
        return deleted

    def stats(self) -> dict[str, int]:
        with self._pg.connection() as db:
            row = db.execute(
                "SELECT count(*), pg_total_relation_size('chat_messages') FROM chat_messages"
            ).fetchone()
        assert row is not None
        return {"messages": int(row[0]), "bytes": int(row[1])}


class PgSql:
    """chatroom_server.servergate's :class:`~chatroom_server.servergate.Sql` on
    PostgreSQL: a connection per use, from ``connect`` (a node's pool, or
    ``chat-server admin``'s own connection)."""

    prefix = "chat_"
    account_key = "name_key"

    def __init__(self, connect: Callable[[], contextlib.AbstractContextManager[Any]]) -> None:
        self._connect = connect

    @classmethod
    def pooled(cls, database: PgDatabase) -> PgSql:
        return cls(database.connection)

    def rows(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._connect() as db:
                return list(db.execute(sql, args).fetchall())
        except (StorageError, psycopg.Error) as exc:
            raise servergate.GateUnavailable(f"PostgreSQL: {exc}") from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[servergate.Execute]:
        try:
            with self._connect() as db, db.transaction():

                def execute(sql: str, args: tuple[object, ...]) -> int:
                    return int(db.execute(sql, args).rowcount)

                yield execute
        except (StorageError, psycopg.Error) as exc:
            raise servergate.GateUnavailable(f"PostgreSQL: {exc}") from exc
