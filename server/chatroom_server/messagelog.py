"""The durable message log (docs/PROTOCOL.md §Message log): every public message and DM,
numbered by one server-wide ``seq``, in the SQLite file beside the accounts.

Writes: :meth:`MessageLog.append` stores one *group* of messages (everything the fan-out
took from its queue in one pass, chatroom_server.fanout) in one transaction: seqs are
assigned in queue order, so the order of seqs is the order of delivery, and the ack and
the delivery of every message in the group wait for that one commit, never for a commit
per message. WAL with ``synchronous=NORMAL``: a commit is a ``write`` to the WAL, which
survives the process being killed (SIGKILL); ``durability="full"`` fsyncs every group as
well, for power loss.

Reads (resume, history, offline DMs) go through a small pool of read connections, so they
never wait for the writer and the writer never waits for them (WAL readers see the last
commit). A replay reads a page at a time (:meth:`MessageLog.replay_page`), each a short
query of its own, as its client takes them. Pruning (:meth:`MessageLog.prune`) deletes
in small batches on a connection of its own.

Threads and ownership:

- The writer connection ``_db`` and everything written with it (``last_seq``,
  ``_inbox_users``) belong to whoever holds the fan-out's lock: :meth:`append` and
  :meth:`has_inbox` are only called under it. ``last_seq`` and ``oldest_seq`` are read
  anywhere (an int read is atomic; a stale one is older, never newer, than the truth).
  ``_inbox_users`` names every user with DMs waiting, and maybe some whose inbox was
  emptied since (:meth:`has_inbox` finds out).
- ``_readers`` is a queue of connections: a reader takes one, queries, puts it back.
- ``_prune_db`` belongs to whoever holds ``_prune_lock``: the pruning thread, or an
  operator's ``chat-server admin prune`` on the admin endpoint's thread.
- ``_inbox_db`` deletes DMs from the inbox once they reached their reader (any reader
  thread, under ``_inbox_lock``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from chatroom.protocol import username_key
from chatroom.rooms import LOBBY, room_key
from chatroom_server import modstore, roomstore, schema
from chatroom_server.dbfile import InUse, create_private, hold, release
from chatroom_server.rooms import RoomChange

log = logging.getLogger(__name__)

# The tables are chatroom_server.schema's (versions and upgrades).
_COLUMNS: Final = "seq, ts, sender, recipient, body, cid, room, event"
_INSERT: Final = (
    "INSERT INTO messages (seq, ts, sender, recipient, pair, body, cid, room, event) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The same where the group is stored as if no cid of it were stored yet
# (MessageLog._append_new): a row whose cid is (the only uniqueness a row of ours can
# break; seqs are only ever past the last) is left out, which its count tells.
_INSERT_NEW: Final = _INSERT + " ON CONFLICT DO NOTHING"
# A group of up to this many messages, none a room event or a DM for the inbox, is
# stored as new by one multi-row INSERT in autocommit (MessageLog._append_new): a
# transaction of its own, with no BEGIN and COMMIT calls around it. Past it, by
# executemany in a transaction (SQLite binds at most 32,766 parameters; 9 a row).
_ONE_STATEMENT: Final = 32
_INSERT_ROWS: Final = {
    n: _INSERT.replace(
        "(?, ?, ?, ?, ?, ?, ?, ?, ?)", ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * n)
    )
    for n in range(2, _ONE_STATEMENT + 1)
}
# A replay's queries: what the user may see (chatroom_server.roomstore.visible_sql: on a
# v1 connection lobby and their DMs; with rooms, their rooms too), or the DMs waiting in
# their inbox. The start skips the newest ``limit`` and takes the next.
_VISIBLE: Final = {
    rooms: "seq > ? AND seq <= ? AND "
    + roomstore.visible_sql("", "?", "sender", "recipient", rooms)
    for rooms in (False, True)
}
_REPLAY_START: Final = {
    rooms: f"SELECT seq FROM messages WHERE {v} ORDER BY seq DESC LIMIT 1 OFFSET ?"
    for rooms, v in _VISIBLE.items()
}
_REPLAY_PAGE: Final = {
    rooms: f"SELECT {_COLUMNS} FROM messages WHERE {v} ORDER BY seq"
    for rooms, v in _VISIBLE.items()
}
_INBOX_START: Final = (
    "SELECT seq FROM inbox WHERE user = ? AND seq > ? AND seq <= ? "
    "ORDER BY seq DESC LIMIT 1 OFFSET ?"
)
_INBOX_PAGE: Final = (
    f"SELECT {', '.join('m.' + c for c in _COLUMNS.split(', '))} FROM inbox i "
    "JOIN messages m ON m.seq = i.seq WHERE i.user = ? AND i.seq > ? AND i.seq <= ? "
    "ORDER BY i.seq"
)
# What a replayed row costs beyond its text, in a page's budget (its frame's other
# fields); a page of short messages is then not thousands of rows.
ROW_OVERHEAD: Final = 100


class StorageError(Exception):
    """Storing or reading messages failed (disk full, database locked past the timeout,
    read-only file): answered with ``unavailable``; nothing was stored or delivered."""


@dataclass(slots=True)
class NewMessage:
    """A message to store: ``to`` is None for a public one. ``inbox``: the DM's recipient
    is offline (decided by the caller under the fan-out lock), so it waits for them."""

    sender: str
    to: str | None
    body: str
    ts: float
    cid: str | None = None
    inbox: bool = False
    # A public message's room (None: lobby), canonical spelling.
    room: str | None = None
    # A room event (docs/PROTOCOL.md §Rooms): its change; ``sender`` is who made it,
    # ``to`` whom it names, ``body`` the change's detail (RoomChange.detail).
    change: RoomChange | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored message as read back; ``cid`` is the one its sender gave (a replay shows
    it to that sender only, docs/PROTOCOL.md §Resume)."""

    seq: int
    ts: float
    sender: str
    to: str | None
    body: str
    cid: str | None = None
    room: str | None = None  # a public row's room (every row before rooms: lobby)
    event: str | None = None  # a room event's kind; its body is JSON (chatroom_server.rooms)


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A resend of a cid already stored by that sender: the original's seq and recipient."""

    seq: int
    to: str | None


@dataclass(frozen=True, slots=True)
class Conflict:
    """A cid that sender already stored with another message (another command,
    recipient or text; docs/PROTOCOL.md §Idempotent sends): refused, nothing stored.
    ``seq`` is the stored one's."""

    seq: int


# What :meth:`MessageLog.append` says of each message: its new seq, or why it has none.
Outcome = int | Duplicate | Conflict


def same_message(to: str | None, body: str, m: NewMessage) -> bool:
    """Whether ``m`` repeats the message stored under its cid (recipient ``to``, text
    ``body``): the same command (public or DM), recipient (in any case) and text."""
    if (to is None) != (m.to is None):
        return False
    return body == m.body and (to is None or username_key(to) == username_key(m.to or ""))


def resend(seq: int, to: str | None, body: str, m: NewMessage) -> Duplicate | Conflict:
    """What a message whose cid is stored (``seq``, ``to``, ``body``) is."""
    return Duplicate(seq, to) if same_message(to, body, m) else Conflict(seq)


def pair_key(a: str, b: str) -> str:
    """The conversation between two users, whoever sent: the same for (a, b) and (b, a)."""
    x, y = sorted((username_key(a), username_key(b)))
    return f"{x} {y}"


def history_sql(
    table: str,
    mark: str,
    user: str,
    before: int | None,
    after: int | None,
    with_user: str | None,
    room: str = LOBBY,
    from_seq: int = 0,
) -> tuple[str, list[object]]:
    """A history page's query (docs/PROTOCOL.md §history) for either database (``mark``:
    its parameter placeholder), and its arguments but the LIMIT, which is last. Without
    ``with_user``, the messages of ``room`` from seq ``from_seq`` on (room events are
    not in history)."""
    args: list[object]
    if with_user is None:
        where = ["pair IS NULL", f"lower(room) = {mark}", "event IS NULL"]
        args = [room_key(room)]
        if from_seq > 0:
            where.append(f"seq >= {mark}")
            args.append(from_seq)
    else:
        where = [f"pair = {mark}"]
        args = [pair_key(user, with_user)]
    if before is not None:
        where.append(f"seq < {mark}")
        args.append(before)
    if after is not None:
        where.append(f"seq > {mark}")
        args.append(after)
    order = "ASC" if after is not None else "DESC"
    sql = (
        f"SELECT {_COLUMNS} FROM {table} WHERE {' AND '.join(where)} "
        f"ORDER BY seq {order} LIMIT {mark}"
    )
    return sql, args


def history_page(
    rows: Sequence[Sequence[Any]], limit: int, descending: bool
) -> tuple[list[Stored], bool]:
    """Up to ``limit + 1`` rows as the page (ascending) and whether another exists."""
    more = len(rows) > limit
    page = list(rows[:limit])
    if descending:
        page.reverse()
    return [Stored(*r) for r in page], more


def _who(user: str, rooms: bool) -> tuple[str, ...]:
    """The parameters of a replay's visibility (roomstore.visible_sql) after the range."""
    return (user, user, username_key(user), user) if rooms else (user, user)


class MessageLog:
    """See the module docstring."""

    def __init__(
        self,
        path: str | Path,
        *,
        durability: str = "normal",
        readers: int = 4,
        busy_timeout: float = 5.0,
    ) -> None:
        if durability not in ("normal", "full"):
            raise ValueError(f"durability is 'normal' or 'full', not {durability!r}")
        self.path = Path(path)
        self._sync = durability.upper()
        self._busy = busy_timeout
        create_private(self.path)  # every DM in plain text: this user's only
        try:
            self._hold = hold(self.path)  # chatroom_server.dbfile
        except InUse as exc:
            raise StorageError(str(exc)) from exc
        try:
            self._db = self._connect()
        except sqlite3.Error as exc:
            release(self._hold)
            raise StorageError(f"cannot open the message log in {self.path}: {exc}") from exc
        try:
            # Creates the log with its epoch, or upgrades it; a restored database gets
            # a new epoch here (chatroom_server.schema).
            schema.migrate(self._db, self.path)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            self.epoch = str(row[0])
            lo, hi = self._db.execute("SELECT min(seq), max(seq) FROM messages").fetchone()
            self.last_seq: int = hi or 0
            self.oldest_seq: int = lo or 1  # the oldest seq still stored (or the next one)
            self._inbox_users = {
                username_key(r[0]) for r in self._db.execute("SELECT DISTINCT user FROM inbox")
            }
        except (sqlite3.Error, schema.SchemaError) as exc:
            self._db.close()
            release(self._hold)
            raise StorageError(f"cannot open the message log in {self.path}: {exc}") from exc
        self._readers: queue.Queue[sqlite3.Connection] = queue.Queue()
        for _ in range(readers):
            self._readers.put(self._connect())
        self._prune_db = self._connect()
        self._prune_lock = threading.Lock()  # guards _prune_db
        # The inbox's deletions, from the reader threads whose clients received the DMs.
        self._inbox_db = self._connect()
        self._inbox_lock = threading.Lock()  # guards _inbox_db

    def describe(self) -> str:
        n = self.last_seq - self.oldest_seq + 1 if self.last_seq else 0
        return f"{n} messages stored (seq {self.oldest_seq}..{self.last_seq}), epoch {self.epoch}"

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=self._busy
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._sync}")
        return db

    def close(self) -> None:
        self._db.close()
        self._prune_db.close()
        with self._inbox_lock:
            self._inbox_db.close()
        while True:
            try:
                self._readers.get_nowait().close()
            except queue.Empty:
                break
        release(self._hold)

    # ------------------------------------------------------------ writer (fan-out lock)

    def append(self, messages: Sequence[NewMessage]) -> list[Outcome]:
        """Store a group in one transaction: for each message its new seq, or the
        :class:`Duplicate` it repeats, or the :class:`Conflict` its cid is. Raises
        :class:`StorageError`; then nothing of the group is stored. Only under the
        fan-out's lock.

        Nearly every group repeats no stored cid, so it is first stored as if none did
        (:meth:`_append_new`: no lookup per message, and a group of up to 32 messages
        with no room event or inbox DM is a single statement); only if the cids' unique
        index says otherwise is it stored again the careful way
        (:meth:`_append_checked`)."""
        try:
            inbox = self._append_new(messages)
            if inbox is not None:
                first = self.last_seq + 1
                out: list[Outcome] = list(range(first, first + len(messages)))
                self.last_seq += len(messages)
            else:
                out, inbox = self._append_checked(messages)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")  # nothing of the group is kept
            raise StorageError(str(exc)) from exc
        for user, _ in inbox:
            self._inbox_users.add(username_key(user))
        return out

    def _rows(
        self, m: NewMessage, seq: int, rows: list[tuple[object, ...]], inbox: list[tuple[str, int]]
    ) -> None:
        """``m`` as the row ``seq`` (and its inbox entry, if it waits for its recipient)."""
        change = m.change
        if change is None:
            pair = None if m.to is None else pair_key(m.sender, m.to)
            room = m.room or LOBBY if m.to is None else None
            rows.append((seq, m.ts, m.sender, m.to, pair, m.body, m.cid, room, None))
        else:
            ev = change.event.value
            rows.append((seq, m.ts, m.sender, m.to, None, m.body, None, change.room, ev))
            for sql, args in roomstore.change_statements(change, seq, "", "?"):
                self._db.execute(sql, args)
        if m.inbox and m.to is not None:
            inbox.append((m.to, seq))

    def _append_new(self, messages: Sequence[NewMessage]) -> list[tuple[str, int]] | None:
        """Store the group, every message under the next seq, if none of its cids is
        stored already (nor used twice in it): then the inbox entries it wrote. None if
        one is: then nothing was stored. Raises sqlite3.Error, inside its transaction."""
        db = self._db
        rows: list[tuple[object, ...]] = []
        inbox: list[tuple[str, int]] = []
        m = messages[0] if len(messages) == 1 else None
        if m is not None and m.change is None and not (m.inbox and m.to is not None):
            # One statement is a transaction of its own in autocommit mode, as atomic and
            # as durable as BEGIN ... COMMIT, and two calls into SQLite fewer (each lets
            # go of the GIL): the common group where rooms are small and quiet.
            self._rows(m, self.last_seq + 1, rows, inbox)
            return inbox if db.execute(_INSERT_NEW, rows[0]).rowcount == 1 else None
        if len(messages) <= _ONE_STATEMENT and all(
            x.change is None and not (x.inbox and x.to is not None) for x in messages
        ):
            # One statement, one transaction: all its rows or none (statement
            # atomicity), and two calls into SQLite fewer than BEGIN ... COMMIT, 10-15 %
            # of a small group's price (docs/PERFORMANCE.md, "Groups in one statement").
            for seq, x in enumerate(messages, self.last_seq + 1):
                self._rows(x, seq, rows, inbox)
            try:
                db.execute(_INSERT_ROWS[len(rows)], [v for row in rows for v in row])
            except sqlite3.IntegrityError:
                # A cid stored already or twice in the group (the only uniqueness a row
                # of ours can break): nothing was stored; the careful path sorts it out,
                # and raises if it was anything else.
                return None
            return inbox
        db.execute("BEGIN IMMEDIATE")
        for seq, m in enumerate(messages, self.last_seq + 1):
            self._rows(m, seq, rows, inbox)
        if db.executemany(_INSERT_NEW, rows).rowcount != len(rows):
            db.execute("ROLLBACK")  # a cid is stored (or twice in the group)
            return None
        if inbox:
            db.executemany("INSERT INTO inbox VALUES (?, ?)", inbox)
        db.execute("COMMIT")
        return inbox

    def _append_checked(
        self, messages: Sequence[NewMessage]
    ) -> tuple[list[Outcome], list[tuple[str, int]]]:
        """Store the group, each message's cid looked up first (a resend or a conflict
        gets no seq); the outcomes and the inbox entries written. Raises sqlite3.Error,
        inside its transaction."""
        db = self._db
        seq = self.last_seq
        out: list[Outcome] = []
        rows: list[tuple[object, ...]] = []
        inbox: list[tuple[str, int]] = []
        # cids stored in this group: (sender key, cid) -> (seq, recipient, text)
        seen: dict[tuple[str, str], tuple[int, str | None, str]] = {}
        db.execute("BEGIN IMMEDIATE")
        for m in messages:
            if m.cid is not None:
                key = (username_key(m.sender), m.cid)
                stored = seen.get(key) or self._stored_cid(m.sender, m.cid)
                if stored is not None:
                    out.append(resend(*stored, m))
                    continue
            seq += 1
            if m.cid is not None:
                seen[(username_key(m.sender), m.cid)] = (seq, m.to, m.body)
            self._rows(m, seq, rows, inbox)
            out.append(seq)
        db.executemany(_INSERT, rows)
        if inbox:
            db.executemany("INSERT INTO inbox VALUES (?, ?)", inbox)
        db.execute("COMMIT")
        self.last_seq = seq
        return out, inbox

    def _stored_cid(self, sender: str, cid: str) -> tuple[int, str | None, str] | None:
        row = self._db.execute(
            "SELECT seq, recipient, body FROM messages WHERE sender = ? AND cid = ?",
            (sender, cid),
        ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def has_inbox(self, user: str) -> bool:
        """Whether DMs wait for ``user`` (fan-out lock held). ``_inbox_users`` may name
        users whose inbox was emptied since (:meth:`inbox_received` runs on any
        thread): looked up then, and forgotten if so."""
        key = username_key(user)
        if key not in self._inbox_users:
            return False
        try:
            row = self._db.execute("SELECT 1 FROM inbox WHERE user = ? LIMIT 1", (user,))
            waiting = row.fetchone() is not None
        except sqlite3.Error as exc:
            log.error("cannot look for DMs waiting for %s: %s", user, exc)
            return True  # the replay says what it can read
        if not waiting:
            self._inbox_users.discard(key)
        return waiting

    # ------------------------------------------------------------ inbox (any thread)

    def maybe_inbox(self, user: str) -> bool:
        """Whether DMs may wait for ``user`` (False: none do), from any thread."""
        return username_key(user) in self._inbox_users

    def inbox_received(self, user: str, after: int, upto: int) -> int:
        """The DMs waiting for ``user`` with ``after < seq <= upto`` have reached them:
        out of the inbox; how many. Raises :class:`StorageError`."""
        with self._inbox_lock:
            try:
                cur = self._inbox_db.execute(
                    "DELETE FROM inbox WHERE user = ? AND seq > ? AND seq <= ?",
                    (user, after, upto),
                )
            except sqlite3.Error as exc:
                raise StorageError(str(exc)) from exc
            return cur.rowcount

    # ------------------------------------------------------------ readers (any thread)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        try:
            db = self._readers.get(timeout=self._busy)
        except queue.Empty:
            raise StorageError("no database connection free for reading") from None
        try:
            yield db
        except sqlite3.Error as exc:
            raise StorageError(str(exc)) from exc
        finally:
            self._readers.put(db)

    def replay_start(
        self,
        user: str,
        since: int,
        upto: int,
        limit: int,
        inbox: bool = False,
        rooms: bool = False,
    ) -> int | None:
        """Where a replay of at most ``limit`` messages starts when more wait: the seq
        after which the newest ``limit`` of those ``user`` may see with ``since < seq
        <= upto`` begin (None: no more than ``limit`` wait). ``inbox``: only the DMs
        waiting for them (docs/PROTOCOL.md §Resume, §Offline DMs); ``rooms``: a
        protocol-v2 connection's, whose user sees their rooms too (§Rooms)."""
        sql = _INBOX_START if inbox else _REPLAY_START[rooms]
        args = (user, since, upto, limit) if inbox else (since, upto, *_who(user, rooms), limit)
        with self._reader() as db:
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
        """The next page of a replay (``after < seq <= upto``, ascending; ``inbox`` as
        for :meth:`replay_start`): rows until their texts pass ``budget`` characters, at
        least one. A replay is read a page at a time as its client takes it
        (chatroom_server.server), so no replay holds more than a page of the log in
        memory, and no read connection is held while the client reads."""
        sql = _INBOX_PAGE if inbox else _REPLAY_PAGE[rooms]
        args = (user, after, upto) if inbox else (after, upto, *_who(user, rooms))
        out: list[Stored] = []
        with self._reader() as db:
            cur = db.execute(sql, args)
            try:
                # Stepped one row at a time: SQLite reads no further than we ask.
                for row in cur:
                    out.append(Stored(*row))
                    budget -= len(row[4]) + ROW_OVERHEAD
                    if budget <= 0:
                        break
            finally:
                cur.close()
        return out

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
        """A page (docs/PROTOCOL.md §history): ``room``'s messages from ``from_seq`` on
        (what the caller may read, chatroom_server.rooms.RoomBook.readable_from), or the
        DMs between ``user`` and ``with_user``. Newest ``limit`` without a cursor or with
        ``before``; the oldest after ``after`` with it. Ascending, and whether another
        page exists in the direction paged."""
        sql, args = history_sql("messages", "?", user, before, after, with_user, room, from_seq)
        with self._reader() as db:
            rows = db.execute(sql, (*args, limit + 1)).fetchall()
        return history_page(rows, limit, descending=after is None)

    def load_rooms(self) -> roomstore.Loaded:
        """Every room, membership and invite (chatroom_server.rooms.RoomBook.load)."""
        with self._reader() as db:
            return roomstore.load(lambda sql: db.execute(sql).fetchall(), "")

    def load_moderation(self) -> tuple[list[modstore.Row], list[modstore.Row], list[modstore.Row]]:
        """Every ban, mute and address ban (chatroom_server.moderation.Moderation.load)."""
        with self._reader() as db:
            return modstore.load(lambda sql: db.execute(sql).fetchall(), "")

    def is_operator(self, user: str) -> bool:
        """Whether ``user`` is a server operator now (``chat-server admin grant``, which
        may run beside the server: read at each use)."""
        with self._reader() as db:
            return modstore.is_operator(db, user)

    # ------------------------------------------------------------ retention (pruner)

    def prune(
        self,
        *,
        now: float,
        max_age: float | None,
        max_count: int | None,
        batch: int = 500,
        pause: Callable[[], bool] = lambda: False,
    ) -> int:
        """:meth:`_prune`, one at a time."""
        with self._prune_lock:
            return self._prune(
                now=now, max_age=max_age, max_count=max_count, batch=batch, pause=pause
            )

    def _prune(
        self,
        *,
        now: float,
        max_age: float | None,
        max_count: int | None,
        batch: int,
        pause: Callable[[], bool],
    ) -> int:
        """Delete messages older than ``max_age`` seconds or beyond the newest
        ``max_count``, ``batch`` at a time, each batch its own short transaction, so
        traffic never waits long for the write lock. ``pause()`` between batches returns
        True to stop early (shutdown). The newest message is always kept, so the sequence
        continues after a restart. Returns how many were deleted."""
        db = self._prune_db
        deleted = 0
        try:
            cutoff_seq = 0  # delete seq < cutoff_seq
            if max_count is not None:
                cutoff_seq = self.last_seq - max_count + 1
            if max_age is not None:
                # Messages are appended in time order, so "older than" is a seq prefix.
                (old,) = db.execute(
                    "SELECT max(seq) FROM messages WHERE ts < ?", (now - max_age,)
                ).fetchone()
                if old is not None:
                    cutoff_seq = max(cutoff_seq, old + 1)
            cutoff_seq = min(cutoff_seq, self.last_seq)  # the newest stays
            if cutoff_seq <= self.oldest_seq:
                return 0
            while True:
                cur = db.execute(
                    "DELETE FROM messages WHERE seq IN "
                    "(SELECT seq FROM messages WHERE seq < ? ORDER BY seq LIMIT ?)",
                    (cutoff_seq, batch),
                )
                n = cur.rowcount
                deleted += n
                if n:
                    db.execute("DELETE FROM inbox WHERE seq < ?", (cutoff_seq,))
                lo = db.execute("SELECT min(seq) FROM messages").fetchone()[0]
                self.oldest_seq = lo if lo is not None else self.last_seq + 1
                if n < batch or pause():
                    break
        except sqlite3.Error as exc:
            log.warning("pruning the message log failed (will retry): %s", exc)
        if deleted:
            log.info("pruned %d messages; the oldest kept is seq %d", deleted, self.oldest_seq)
        return deleted

    def stats(self) -> dict[str, int]:
        """Rows and bytes, for the docs' "bytes per message"."""
        with self._reader() as db:
            (count,) = db.execute("SELECT count(*) FROM messages").fetchone()
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            (size,) = db.execute("PRAGMA page_size").fetchone()
        return {"messages": int(count), "bytes": int(pages) * int(size)}
