"""The server gate's records on the database (docs/PROTOCOL.md §Moderation,
"Server-wide"): the accounts and the addresses banned from the whole server, whether new
accounts may be registered, who the server operators are, and the audit log, as
``chat-server admin`` (chatroom_server.adminctl) writes and lists them. What a login
checks against them, and the watch that ends the sessions a new ban names, are
chatroom_server.servergate's, which re-exports these names.

Written once for both databases, as chatroom_server.modstore is: an :class:`Sql` is
SQLite's file (:class:`SqliteSql`) or a cluster's PostgreSQL
(chatroom_server.cluster.pg.PgSql), the tables prefixed ``Sql.prefix`` and the SQL
written with ``?`` (:func:`query`). The tables are chatroom_server.modstore's
``server_bans``, ``address_bans``, ``server_settings``, ``operators`` and ``audit``.
Every change is one transaction with its audit record.

Threads: each use of the database is one short statement or transaction (SQLite: on the
one connection, under ``SqliteSql._lock``; PostgreSQL: a pooled connection each).
"""

from __future__ import annotations

import ipaddress
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from chatroom.protocol import username_key
from chatroom.rooms import room_key
from chatroom_server.accounts import AccountStoreBusy

__all__ = [
    "MIN_PREFIX",
    "AddressBan",
    "AuditRow",
    "BadAddress",
    "Execute",
    "GateUnavailable",
    "ServerBan",
    "Sql",
    "SqliteSql",
    "account",
    "address_bans",
    "audit",
    "ban",
    "ban_address",
    "bans",
    "grant",
    "network",
    "operators",
    "query",
    "revoke",
    "set_registrations",
    "stored_address_bans",
    "unban",
    "unban_address",
]

# The widest address ban: a /0 (or a typo of one) would lock everybody out.
MIN_PREFIX: Final = {4: 8, 6: 16}

Execute = Callable[[str, tuple[object, ...]], int]  # one statement; its rowcount


class GateUnavailable(AccountStoreBusy):
    """The database cannot be read or written now: a login answers ``unavailable``."""


class BadAddress(ValueError):
    """Not an address or network a ban can name; the message says why."""


class Sql(Protocol):
    """One database, as this module uses it (module docstring)."""

    prefix: str  # of the table names: "" (SQLite) or "chat_" (PostgreSQL)
    account_key: str  # the accounts column that username_key() finds a name by

    def rows(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query; GateUnavailable if the database cannot answer."""
        ...

    def transaction(self) -> AbstractContextManager[Execute]:
        """Statements done together or not at all (committed when the block ends)."""
        ...


class SqliteSql:
    """:class:`Sql` on one SQLite connection, used under ``_lock``."""

    prefix = ""
    account_key = "name"  # COLLATE NOCASE: the key finds the name

    def __init__(self, db: sqlite3.Connection) -> None:
        self._lock = threading.Lock()
        self._db = db  # _lock

    @classmethod
    def open(cls, path: Path, timeout: float = 5.0) -> SqliteSql:
        return cls(
            sqlite3.connect(path, timeout=timeout, check_same_thread=False, isolation_level=None)
        )

    @classmethod
    def of(cls, db: sqlite3.Connection) -> SqliteSql:
        """On a connection of the caller's (chat-server admin, tests)."""
        return cls(db)

    def rows(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise GateUnavailable(f"the database: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[Execute]:
        with self._lock:
            db = self._db

            def execute(sql: str, args: tuple[object, ...]) -> int:
                return db.execute(sql, args).rowcount

            try:
                # Explicit, so a change and its audit record are one transaction.
                db.execute("BEGIN IMMEDIATE")
                yield execute
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise GateUnavailable(f"the database: {exc}") from exc
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()


def query(sql: Sql, text: str) -> str:
    """``text`` with the backend's table prefix (``{p}``) and placeholder."""
    out = text.format(p=sql.prefix)
    return out if sql.prefix == "" else out.replace("?", "%s")


@dataclass(frozen=True, slots=True)
class ServerBan:
    user: str
    ts: float
    reason: str | None
    expires: float | None

    def text(self) -> str:
        return f"{self.user} is banned from this server{_until(self.expires, self.reason)}"


@dataclass(frozen=True, slots=True)
class AddressBan:
    network: str  # canonical, as network() gives it
    ts: float
    reason: str | None
    expires: float | None

    def text(self) -> str:
        return f"{self.network} is banned from this server{_until(self.expires, self.reason)}"

    def refusal(self, ip: str) -> str:
        """What a client from ``ip`` is told."""
        where = ip if self.network in (f"{ip}/32", f"{ip}/128") else f"{ip} ({self.network})"
        return f"your address {where} is banned from this server{_until(self.expires, self.reason)}"


def _until(expires: float | None, reason: str | None) -> str:
    until = ""
    if expires is not None:
        until = " until " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
    return until + (f" ({reason})" if reason else "")


def network(text: str) -> str:
    """The canonical form of an address or CIDR network a ban may name (IPv4 or IPv6;
    an address alone is its own /32 or /128), or BadAddress saying what is wrong."""
    text = text.strip()
    shown = text if len(text) <= 60 else text[:60] + "…"
    if "%" in text:
        raise BadAddress(f"{shown}: a ban names an address without a zone (%...)")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            loose = ipaddress.ip_network(text, strict=False)
            raise BadAddress(f"{shown} has host bits set: did you mean {loose}?") from None
        raise BadAddress(
            f"{shown!r} is not an IPv4 or IPv6 address or network (e.g. 203.0.113.7, "
            "198.51.100.0/24, 2001:db8::/32)"
        ) from None
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None:
        # A v4 client on a dual-stack socket is matched by its plain v4 address (servergate).
        mapped = net.network_address.ipv4_mapped
        net = ipaddress.ip_network(f"{mapped}/{max(0, net.prefixlen - 96)}")
    least = MIN_PREFIX[net.version]
    if net.prefixlen < least:
        raise BadAddress(f"{net} is too wide: a ban names at most a /{least} (IPv{net.version})")
    return str(net)


# ---------------------------------------------------------------- chat-server admin


def _audit(
    execute: Execute, sql: Sql, now: float, action: str, target: str | None, reason: str | None
) -> None:
    execute(
        query(
            sql,
            "INSERT INTO {p}audit (seq, ts, actor, action, target, reason) "
            "VALUES (NULL, ?, 'admin', ?, ?, ?)",
        ),
        (now, action, target, reason),
    )


def account(sql: Sql, name: str) -> str | None:
    """The canonical spelling of the account ``name``, if there is one."""
    rows = sql.rows(
        query(sql, f"SELECT name FROM {{p}}accounts WHERE {sql.account_key} = ?"),
        (username_key(name),),
    )
    return str(rows[0][0]) if rows else None


def ban(sql: Sql, user: str, reason: str | None, expires: float | None, now: float) -> None:
    """Ban ``user`` (canonical) from the server (replacing a ban), with its audit record."""
    with sql.transaction() as execute:
        execute(
            query(
                sql,
                "INSERT INTO {p}server_bans VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_key) "
                "DO UPDATE SET ts = excluded.ts, reason = excluded.reason, "
                "expires = excluded.expires",
            ),
            (username_key(user), user, now, reason, expires),
        )
        _audit(execute, sql, now, "server-ban", user, reason)


def unban(sql: Sql, user: str, now: float) -> bool:
    """End ``user``'s server ban; False if there was none."""
    with sql.transaction() as execute:
        n = execute(
            query(sql, "DELETE FROM {p}server_bans WHERE user_key = ?"), (username_key(user),)
        )
        if n:
            _audit(execute, sql, now, "server-unban", user, None)
    return bool(n)


def bans(sql: Sql, now: float) -> list[ServerBan]:
    rows = sql.rows(
        query(
            sql,
            "SELECT user_name, ts, reason, expires FROM {p}server_bans "
            "WHERE expires IS NULL OR expires > ? ORDER BY user_key",
        ),
        (now,),
    )
    return [ServerBan(str(r[0]), float(r[1]), r[2], r[3]) for r in rows]


def address_bans(sql: Sql, now: float) -> list[AddressBan]:
    """The address bans in force at ``now``, by network."""
    return [b for b in stored_address_bans(sql) if b.expires is None or now < b.expires]


def stored_address_bans(sql: Sql) -> list[AddressBan]:
    """Every address ban stored, in force or not, by network."""
    rows = sql.rows(
        query(sql, "SELECT network, ts, reason, expires FROM {p}address_bans ORDER BY network")
    )
    return [AddressBan(str(r[0]), float(r[1]), r[2], r[3]) for r in rows]


def _moved(execute: Execute, sql: Sql) -> None:
    """A new version marker for the address bans, in the transaction that changes them
    (ServerGate.networks reads the bans again when it moves)."""
    execute(
        query(
            sql,
            "INSERT INTO {p}server_settings VALUES ('address_bans', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        ),
        (secrets.token_hex(8),),
    )


def ban_address(sql: Sql, net: str, reason: str | None, expires: float | None, now: float) -> None:
    """Ban the network ``net`` (as :func:`network` gives it; replacing a ban of it),
    with its audit record."""
    with sql.transaction() as execute:
        execute(
            query(
                sql,
                "INSERT INTO {p}address_bans VALUES (?, ?, ?, ?) ON CONFLICT (network) "
                "DO UPDATE SET ts = excluded.ts, reason = excluded.reason, "
                "expires = excluded.expires",
            ),
            (net, now, reason, expires),
        )
        _moved(execute, sql)
        _audit(execute, sql, now, "address-ban", net, reason)


def unban_address(sql: Sql, net: str, now: float) -> bool:
    """End the ban of ``net``; False if there was none."""
    with sql.transaction() as execute:
        n = execute(query(sql, "DELETE FROM {p}address_bans WHERE network = ?"), (net,))
        if n:
            _moved(execute, sql)
            _audit(execute, sql, now, "address-unban", net, None)
    return bool(n)


def set_registrations(sql: Sql, open_: bool, now: float) -> None:
    state = "open" if open_ else "closed"
    with sql.transaction() as execute:
        execute(
            query(
                sql,
                "INSERT INTO {p}server_settings VALUES ('registrations', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            ),
            (state,),
        )
        _audit(execute, sql, now, "registrations-" + state, None, None)


def operators(sql: Sql) -> list[tuple[str, float]]:
    rows = sql.rows(query(sql, "SELECT user_name, granted FROM {p}operators ORDER BY user_key"))
    return [(str(r[0]), float(r[1])) for r in rows]


def grant(sql: Sql, user: str, now: float | None = None) -> bool:
    """Make ``user`` (a canonical account name) a server operator, with its audit
    record; False if they are one already."""
    now = time.time() if now is None else now
    with sql.transaction() as execute:
        n = execute(
            query(
                sql,
                "INSERT INTO {p}operators VALUES (?, ?, ?) ON CONFLICT (user_key) DO NOTHING",
            ),
            (username_key(user), user, now),
        )
        if n:
            _audit(execute, sql, now, "grant", user, None)
    return bool(n)


def revoke(sql: Sql, user: str, now: float | None = None) -> bool:
    """Take server operator from ``user``; False if they were not one."""
    now = time.time() if now is None else now
    with sql.transaction() as execute:
        n = execute(
            query(sql, "DELETE FROM {p}operators WHERE user_key = ?"), (username_key(user),)
        )
        if n:
            _audit(execute, sql, now, "revoke", user, None)
    return bool(n)


# seq, ts, actor, action, target, room, reason, detail (JSON)
AuditRow = tuple[int | None, float, str, str, str | None, str | None, str | None, str]


def audit(sql: Sql, room: str | None = None, limit: int = 100) -> list[AuditRow]:
    """The newest ``limit`` audit records (of ``room``), newest first."""
    text = "SELECT seq, ts, actor, action, target, room, reason, detail FROM {p}audit"
    args: tuple[object, ...] = ()
    if room is not None:
        text += " WHERE lower(room) = ?"
        args = (room_key(room),)
    text += " ORDER BY ts DESC, seq DESC LIMIT ?"
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
        for r in sql.rows(query(sql, text), (*args, limit))
    ]
