"""Server-wide moderation at login (docs/PROTOCOL.md §Moderation, "Server-wide"): the
accounts and the addresses banned from the whole server, whether new accounts may be
registered (off while under attack, as Ergo's DEFCON), who the server operators are,
and the audit log they read. All are set by ``chat-server admin`` on the database
(chatroom_server.adminctl) and read here at each login, so that a change made beside
the running server applies at the next login, with no reload.

Written once for both databases, as chatroom_server.modstore is: an :class:`Sql` is
SQLite's file (:class:`SqliteSql`) or a cluster's PostgreSQL
(chatroom_server.cluster.pg.PgSql), the tables prefixed ``Sql.prefix`` and the SQL
written with ``?``. The tables are chatroom_server.modstore's ``server_bans``,
``address_bans``, ``server_settings``, ``operators`` and ``audit``.

A session already open when its account or address is banned is ended by
:meth:`ServerGate.watch`: every node reads the bans once a second and, when they
changed, ends its own sessions that they name (an ``error`` ``banned`` saying why,
then ``bye`` ``disconnected``). So a ban made with ``chat-server admin`` on any node's
database reaches every node, with no message between nodes.

Threads: logins run on every reader thread and the watch on its own; each use of the
database is one short statement (SQLite: on the one connection, under ``_lock``;
PostgreSQL: a pooled connection each). The watch scans a copy of the sessions it is
handed, never the server's live roster (``Presence.sessions``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from chatroom.errors import RequestId
from chatroom.protocol import Bye, ByeReason, encode, username_key
from chatroom.rooms import room_key
from chatroom_server.accounts import AccountStoreBusy
from chatroom_server.session import BannedError, refusal_frame

__all__ = [
    "AddressBan",
    "AuditRow",
    "BadAddress",
    "GateUnavailable",
    "LoginGate",
    "Networks",
    "ServerBan",
    "ServerGate",
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
    "revoke",
    "set_registrations",
    "unban",
    "unban_address",
]

log = logging.getLogger(__name__)

# How often each node reads the bans to end the sessions a new one names.
WATCH_INTERVAL: Final = 1.0
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


def _sql(sql: Sql, text: str) -> str:
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
        # A v4 client on a dual-stack socket is seen by its plain v4 address (_ip).
        mapped = net.network_address.ipv4_mapped
        net = ipaddress.ip_network(f"{mapped}/{max(0, net.prefixlen - 96)}")
    least = MIN_PREFIX[net.version]
    if net.prefixlen < least:
        raise BadAddress(f"{net} is too wide: a ban names at most a /{least} (IPv{net.version})")
    return str(net)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])  # no IPv6 zone
    except ValueError:
        return None  # not an IP connection (a test's socketpair): no address ban applies
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _in_force(rows: Iterable[tuple[Any, ...]], now: float) -> list[tuple[Any, ...]]:
    return [r for r in rows if r[-1] is None or now < float(r[-1])]


# ServerGate.at_login's statement: the address bans' marker, the registrations setting
# and the user's server ban, each by its primary key.
_AT_LOGIN: Final = (
    "SELECT m.value, r.value, b.user_name, b.ts, b.reason, b.expires FROM (SELECT 1 AS one) AS o"
    " LEFT JOIN {p}server_settings AS m ON m.key = 'address_bans'"
    " LEFT JOIN {p}server_settings AS r ON r.key = 'registrations'"
    " LEFT JOIN {p}server_bans AS b ON b.user_key = ?"
)


@dataclass(frozen=True, slots=True)
class LoginGate:
    """What :meth:`ServerGate.at_login` read for a login's later decisions, kept by
    that login alone (never between logins)."""

    stored_ban: ServerBan | None  # the user's, in force or not
    registrations_open: bool

    def banned(self, now: float) -> ServerBan | None:
        """The user's server ban in force at ``now``, if any (as ServerGate.banned)."""
        ban = self.stored_ban
        if ban is None or (ban.expires is not None and now >= float(ban.expires)):
            return None
        return ban


class Session(Protocol):
    """What the watch reads of a server connection (chatroom_server.conn.Conn)."""

    username: str | None
    ip: str

    @property
    def outbox(self) -> Any: ...


_BYE_DISCONNECTED: Final = encode(Bye(reason=ByeReason.DISCONNECTED))


class ServerGate:
    """The login-time checks on one database (module docstring)."""

    def __init__(self, sql: Sql, close: Callable[[], None] = lambda: None) -> None:
        self.sql = sql
        self._close = close
        # The address bans as of their version marker (:func:`ban_address`), indexed;
        # read by every login thread and the watch, replaced whole: under _lock.
        self._lock = threading.Lock()
        self._version: str | None = None  # _lock
        self._networks = Networks(())  # _lock

    @classmethod
    def sqlite(cls, path: Path, timeout: float = 5.0) -> ServerGate:
        sql = SqliteSql.open(path, timeout)
        return cls(sql, sql.close)

    def banned(self, user: str, now: float) -> ServerBan | None:
        """``user``'s server ban in force at ``now``, if any."""
        rows = self.sql.rows(
            _sql(
                self.sql,
                "SELECT user_name, ts, reason, expires FROM {p}server_bans WHERE user_key = ?",
            ),
            (username_key(user),),
        )
        live = _in_force(rows, now)
        if not live:
            return None
        return ServerBan(str(live[0][0]), float(live[0][1]), live[0][2], live[0][3])

    def address_banned(self, ip: str, now: float) -> AddressBan | None:
        """The address ban in force at ``now`` whose network holds ``ip``, if any (the
        narrowest). One indexed read of the bans' version marker; the bans themselves
        are read again only when it moved."""
        return self.networks().match(ip, now)

    def networks(self) -> Networks:
        """Every address ban stored, as of now (its version marker read now)."""
        rows = self.sql.rows(
            _sql(self.sql, "SELECT value FROM {p}server_settings WHERE key = 'address_bans'")
        )
        return self._networks_at(str(rows[0][0]) if rows else "")

    def _networks_at(self, version: str) -> Networks:
        """The address bans as of the version marker ``version``, just read."""
        with self._lock:
            if version == self._version:
                return self._networks
        # A change between the two reads is harmless: the next read of the marker
        # differs from the version this one is kept with, and reads them again.
        fresh = Networks(_address_rows(self.sql))
        with self._lock:
            self._version, self._networks = version, fresh
        return fresh

    def at_login(self, ip: str, user: str, now: float, rid: RequestId) -> LoginGate:
        """At every login and registration, before its password: ``banned`` if ``ip``
        is (as :meth:`check_address`), else what the login decides later, once its
        password is checked: ``user``'s server ban and whether registrations are open.
        All read in one statement, which a login pays for on the admission thread in an
        arrival storm (each statement gives the GIL up and waits for it back:
        docs/PERFORMANCE.md); the address bans themselves are read again only when
        their marker moved. Read now, never kept between logins: a ban or a closing
        written by ``chat-server admin`` a moment ago applies to this login."""
        rows = self.sql.rows(_sql(self.sql, _AT_LOGIN), (username_key(user),))
        # One row always: the LEFT JOINs hang off a row of one's own.
        marker, registrations, *ban = rows[0]
        found = self._networks_at("" if marker is None else str(marker)).match(ip, now)
        if found is not None:
            raise BannedError(found.refusal(ip), rid, found.reason, found.expires)
        stored = None
        if ban[0] is not None:
            stored = ServerBan(str(ban[0]), float(ban[1]), ban[2], ban[3])
        return LoginGate(stored, registrations != "closed")

    def check_address(self, ip: str, now: float, rid: RequestId) -> None:
        """At every login, before its password (a banned address learns nothing of
        accounts) and before a registration: ``banned`` if ``ip`` is."""
        found = self.address_banned(ip, now)
        if found is not None:
            raise BannedError(found.refusal(ip), rid, found.reason, found.expires)

    def registrations_open(self) -> bool:
        rows = self.sql.rows(
            _sql(self.sql, "SELECT value FROM {p}server_settings WHERE key = 'registrations'")
        )
        return not rows or rows[0][0] != "closed"

    def is_operator(self, user: str) -> bool:
        """Whether ``user`` is a server operator (chatroom_server.modstore's table)."""
        rows = self.sql.rows(
            _sql(self.sql, "SELECT 1 FROM {p}operators WHERE user_key = ?"),
            (username_key(user),),
        )
        return bool(rows)

    def operator_keys(self) -> frozenset[str]:
        """Every server operator's username key, in one read (IRC WHO's ``*``)."""
        return frozenset(username_key(name) for name, _ in operators(self.sql))

    def audit(self, room: str | None, limit: int) -> list[AuditRow]:
        """The newest ``limit`` audit records (:func:`audit`)."""
        return audit(self.sql, room, limit)

    def record(
        self,
        now: float,
        actor: str,
        action: str,
        target: str,
        reason: str | None,
        detail: dict[str, str],
    ) -> None:
        """An audit record of a server operator's action on the server (``kill``), in
        a transaction of its own; GateUnavailable if it cannot be written."""
        with self.sql.transaction() as execute:
            execute(
                _sql(
                    self.sql,
                    "INSERT INTO {p}audit (seq, ts, actor, action, target, reason, detail) "
                    "VALUES (NULL, ?, ?, ?, ?, ?, ?)",
                ),
                (now, actor, action, target, reason, json.dumps(detail, separators=(",", ":"))),
            )

    def watch(
        self,
        sessions: Callable[[], Sequence[Session]],
        stopping: threading.Event,
        clock: Callable[[], float] = time.time,
        interval: float = WATCH_INTERVAL,
    ) -> None:
        """Until ``stopping``: end the sessions a new ban names (module docstring).
        ``sessions`` returns a list this thread may keep (a copy: Presence.sessions
        takes it under the presence's lock), never a live structure of another
        thread's. The sessions are scanned when the bans read differ from the last read, and at the
        read after that, for a login that checked the database just before the ban was
        stored and was not yet among ``sessions`` at the first scan."""
        seen: object = None
        rescan = failing = False
        while not stopping.wait(interval):
            try:
                now = clock()
                names = {
                    username_key(str(r[0])): ServerBan(str(r[0]), float(r[1]), r[2], r[3])
                    for r in _in_force(
                        self.sql.rows(
                            _sql(
                                self.sql,
                                "SELECT user_name, ts, reason, expires FROM {p}server_bans",
                            )
                        ),
                        now,
                    )
                }
                nets = self.networks()
            except AccountStoreBusy as exc:
                if not failing:  # once per outage, not every second
                    log.warning("cannot read the server bans now (will retry): %s", exc)
                failing = True
                continue
            if failing:
                log.info("reading the server bans again")
                failing = False
            current = (sorted(names), nets)  # the same Networks until the marker moves
            changed = current != seen
            seen = current
            if changed or rescan:
                _end_banned(sessions(), names, nets, now)
            rescan = changed

    def close(self) -> None:
        self._close()


class Networks:
    """Address bans indexed for matching: by IP version and prefix length, a dict from
    the network's first address (an int) to its ban. Matching an address is one dict
    lookup per prefix length in use, narrowest first, whatever the number of bans (a
    list of networks cost 20 ms a login at 1,000 bans: bench/gate_cost.py)."""

    __slots__ = ("_by_length", "_lengths")

    def __init__(self, bans: Iterable[AddressBan]) -> None:
        self._by_length: dict[tuple[int, int], dict[int, AddressBan]] = {}
        for ban in bans:
            net = ipaddress.ip_network(ban.network)
            table = self._by_length.setdefault((net.version, net.prefixlen), {})
            table[int(net.network_address)] = ban
        self._lengths = sorted(self._by_length, key=lambda k: -k[1])

    def __bool__(self) -> bool:
        return bool(self._lengths)

    def match(self, ip: str, now: float) -> AddressBan | None:
        """The narrowest ban in force at ``now`` whose network holds ``ip``."""
        if not self._lengths:
            return None
        addr = _ip(ip)
        if addr is None:
            return None
        value, bits = int(addr), addr.max_prefixlen
        for version, length in self._lengths:
            if version != addr.version:
                continue
            first = value >> (bits - length) << (bits - length)
            ban = self._by_length[version, length].get(first)
            if ban is not None and (ban.expires is None or now < ban.expires):
                return ban
        return None


def _end_banned(
    sessions: Sequence[Session], names: dict[str, ServerBan], nets: Networks, now: float
) -> None:
    for conn in sessions:
        user = conn.username
        if user is None:
            continue
        why: BannedError | None = None
        name_ban = names.get(username_key(user))
        if name_ban is not None:
            why = BannedError(name_ban.text(), None, name_ban.reason, name_ban.expires)
        else:
            net_ban = nets.match(conn.ip, now)
            if net_ban is not None:
                why = BannedError(net_ban.refusal(conn.ip), None, net_ban.reason, net_ban.expires)
        if why is not None:
            log.warning("ending %s's session (%s): %s", user, conn.ip, why.message)
            conn.outbox.finish(refusal_frame(why) + _BYE_DISCONNECTED)


# ---------------------------------------------------------------- chat-server admin


def _audit(
    execute: Execute, sql: Sql, now: float, action: str, target: str | None, reason: str | None
) -> None:
    execute(
        _sql(
            sql,
            "INSERT INTO {p}audit (seq, ts, actor, action, target, reason) "
            "VALUES (NULL, ?, 'admin', ?, ?, ?)",
        ),
        (now, action, target, reason),
    )


def account(sql: Sql, name: str) -> str | None:
    """The canonical spelling of the account ``name``, if there is one."""
    rows = sql.rows(
        _sql(sql, f"SELECT name FROM {{p}}accounts WHERE {sql.account_key} = ?"),
        (username_key(name),),
    )
    return str(rows[0][0]) if rows else None


def ban(sql: Sql, user: str, reason: str | None, expires: float | None, now: float) -> None:
    """Ban ``user`` (canonical) from the server (replacing a ban), with its audit record."""
    with sql.transaction() as execute:
        execute(
            _sql(
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
            _sql(sql, "DELETE FROM {p}server_bans WHERE user_key = ?"), (username_key(user),)
        )
        if n:
            _audit(execute, sql, now, "server-unban", user, None)
    return bool(n)


def bans(sql: Sql, now: float) -> list[ServerBan]:
    rows = sql.rows(
        _sql(
            sql,
            "SELECT user_name, ts, reason, expires FROM {p}server_bans "
            "WHERE expires IS NULL OR expires > ? ORDER BY user_key",
        ),
        (now,),
    )
    return [ServerBan(str(r[0]), float(r[1]), r[2], r[3]) for r in rows]


def address_bans(sql: Sql, now: float) -> list[AddressBan]:
    """The address bans in force at ``now``, by network."""
    return [b for b in _address_rows(sql) if b.expires is None or now < b.expires]


def _address_rows(sql: Sql) -> list[AddressBan]:
    rows = sql.rows(
        _sql(sql, "SELECT network, ts, reason, expires FROM {p}address_bans ORDER BY network")
    )
    return [AddressBan(str(r[0]), float(r[1]), r[2], r[3]) for r in rows]


def _moved(execute: Execute, sql: Sql) -> None:
    """A new version marker for the address bans, in the transaction that changes them
    (ServerGate.networks reads the bans again when it moves)."""
    execute(
        _sql(
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
            _sql(
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
        n = execute(_sql(sql, "DELETE FROM {p}address_bans WHERE network = ?"), (net,))
        if n:
            _moved(execute, sql)
            _audit(execute, sql, now, "address-unban", net, None)
    return bool(n)


def set_registrations(sql: Sql, open_: bool, now: float) -> None:
    state = "open" if open_ else "closed"
    with sql.transaction() as execute:
        execute(
            _sql(
                sql,
                "INSERT INTO {p}server_settings VALUES ('registrations', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            ),
            (state,),
        )
        _audit(execute, sql, now, "registrations-" + state, None, None)


def operators(sql: Sql) -> list[tuple[str, float]]:
    rows = sql.rows(_sql(sql, "SELECT user_name, granted FROM {p}operators ORDER BY user_key"))
    return [(str(r[0]), float(r[1])) for r in rows]


def grant(sql: Sql, user: str, now: float | None = None) -> bool:
    """Make ``user`` (a canonical account name) a server operator, with its audit
    record; False if they are one already."""
    now = time.time() if now is None else now
    with sql.transaction() as execute:
        n = execute(
            _sql(
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
        n = execute(_sql(sql, "DELETE FROM {p}operators WHERE user_key = ?"), (username_key(user),))
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
        for r in sql.rows(_sql(sql, text), (*args, limit))
    ]
