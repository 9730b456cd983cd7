"""``bot.store``: persistent key-value state in a SQLite file the bot owns.

::

    bot.store["greeted"] = ["alice"]          # JSON values: str, numbers, lists, dicts, ...
    n = bot.store.change("count", lambda n: (n or 0) + 1)   # read-modify-write, atomic
    plugin.store["votes"]                     # each plugin has a namespace of its own

Values are encoded as JSON (msgspec), so what is read back is plain data: dicts, lists,
strings, numbers, booleans, None. Every write is committed when the call returns, so a bot
killed with SIGKILL loses nothing it stored (SQLite's WAL, ``synchronous=FULL``).

Threads: one connection per file, shared by every namespace, behind one lock
(``_Db.lock``); every method is safe from any thread and holds the lock for one SQLite
statement (or one transaction), so the asyncio bot may call it
on its loop. The file is opened on first use (a bot that never stores anything creates
no file), created readable by its owner only, and a second process on the same file
waits for SQLite's lock up to ``timeout`` seconds.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["Store", "StoreError"]

log = logging.getLogger(__name__)

# A value bigger than this is refused: a store is for a bot's state, not for files, and
# a bug that appends forever should fail loudly rather than fill the disk.
MAX_VALUE = 1 << 20
# Tries of a change() whose value other threads keep changing before it gives up.
_MAX_RETRIES = 100


class StoreError(Exception):
    """The store cannot be opened or a value cannot be stored; the message says why."""


class _Db:
    def __init__(self, path: Path | str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.lock = threading.Lock()  # guards conn and every use of it
        self.conn: sqlite3.Connection | None = None
        self.closed = False

    def open(self) -> sqlite3.Connection:
        """The connection, opened on first use (call with ``lock`` held)."""
        if self.conn is not None:
            return self.conn
        if self.closed:
            raise StoreError("the store is closed")
        path = self.path
        if str(path) != ":memory:":
            path = Path(path)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            conn = sqlite3.connect(path, timeout=self.timeout, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS kv ("
                " ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
                " PRIMARY KEY (ns, key)) WITHOUT ROWID"
            )
            conn.commit()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot use {self.path} as a bot store: {exc}") from None
        self.conn = conn
        return conn

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self.conn is not None:
                self.conn.close()
                self.conn = None


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _pack(key: str, value: Any) -> bytes:
    if not isinstance(key, str):
        raise TypeError(f"a store's keys are strings, not {type(key).__name__}")
    try:
        data = _encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise StoreError(f"cannot store {key!r}: {exc}") from None
    if len(data) > MAX_VALUE:
        raise StoreError(f"cannot store {key!r}: {len(data):,} bytes; the limit is {MAX_VALUE:,}")
    return data


class Store(MutableMapping[str, Any]):
    """A namespace of persistent key-value state (see the module docstring)."""

    def __init__(
        self, path: Path | str = ":memory:", namespace: str = "", *, timeout: float = 10.0
    ) -> None:
        self._db = _Db(path, timeout)
        self.namespace_name = namespace

    @classmethod
    def _sharing(cls, db: _Db, namespace: str) -> Store:
        store = cls.__new__(cls)
        store._db = db
        store.namespace_name = namespace
        return store

    @property
    def path(self) -> Path | str:
        return self._db.path

    def namespace(self, name: str) -> Store:
        """Another namespace in the same file (a plugin's own keys)."""
        return Store._sharing(self._db, name)

    def close(self) -> None:
        """Close the file (every namespace of it). Idempotent."""
        self._db.close()

    # ------------------------------------------------------------------ mapping

    def __getitem__(self, key: str) -> Any:
        with self._db.lock:
            row = (
                self._db.open()
                .execute(
                    "SELECT value FROM kv WHERE ns = ? AND key = ?", (self.namespace_name, key)
                )
                .fetchone()
            )
        if row is None:
            raise KeyError(key)
        return _decode(row[0])

    def __setitem__(self, key: str, value: Any) -> None:
        data = _pack(key, value)
        with self._db.lock:
            conn = self._db.open()
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?, ?, ?)",
                    (self.namespace_name, key, data),
                )

    def __delitem__(self, key: str) -> None:
        with self._db.lock:
            conn = self._db.open()
            with conn:
                cur = conn.execute(
                    "DELETE FROM kv WHERE ns = ? AND key = ?", (self.namespace_name, key)
                )
        if cur.rowcount == 0:
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        with self._db.lock:
            rows = (
                self._db.open()
                .execute("SELECT key FROM kv WHERE ns = ? ORDER BY key", (self.namespace_name,))
                .fetchall()
            )
        return iter([r[0] for r in rows])

    def __len__(self) -> int:
        with self._db.lock:
            row = (
                self._db.open()
                .execute("SELECT COUNT(*) FROM kv WHERE ns = ?", (self.namespace_name,))
                .fetchone()
            )
        return int(row[0])

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        with self._db.lock:
            row = (
                self._db.open()
                .execute("SELECT 1 FROM kv WHERE ns = ? AND key = ?", (self.namespace_name, key))
                .fetchone()
            )
        return row is not None

    def change(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """Replace the value at ``key`` with ``fn(value)`` (``fn(default)`` when absent) and
        return the new value. Atomic: two threads counting at once never lose a count.
        ``fn`` runs outside the store's lock (it may read the store), so it may run more
        than once when another thread changed the value meanwhile: keep it pure."""
        ns = self.namespace_name
        for _ in range(_MAX_RETRIES):
            with self._db.lock:
                row = (
                    self._db.open()
                    .execute("SELECT value FROM kv WHERE ns = ? AND key = ?", (ns, key))
                    .fetchone()
                )
            old = None if row is None else bytes(row[0])
            new = fn(default if old is None else _decode(old))
            data = _pack(key, new)
            with self._db.lock:
                conn = self._db.open()
                with conn:
                    row = conn.execute(
                        "SELECT value FROM kv WHERE ns = ? AND key = ?", (ns, key)
                    ).fetchone()
                    if (None if row is None else bytes(row[0])) != old:
                        continue  # changed meanwhile: compute again from the new value
                    conn.execute(
                        "INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?, ?, ?)",
                        (ns, key, data),
                    )
            return new
        raise StoreError(f"cannot change {key!r}: it kept changing under {_MAX_RETRIES} tries")

    def clear(self) -> None:
        with self._db.lock:
            conn = self._db.open()
            with conn:
                conn.execute("DELETE FROM kv WHERE ns = ?", (self.namespace_name,))

    def __repr__(self) -> str:
        return f"<Store {self._db.path} namespace={self.namespace_name!r}>"
