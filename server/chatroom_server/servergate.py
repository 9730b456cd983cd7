"""Server-wide moderation at login (docs/PROTOCOL.md §Moderation, "Server-wide"): the
accounts and the addresses banned from the whole server, whether new accounts may be
registered (off while under attack, as Ergo's DEFCON), and who the server operators
are. All are set by ``chat-server admin`` on the database (chatroom_server.gatestore,
which holds the records, writes them and lists them, on SQLite's file or a cluster's
PostgreSQL) and read here at each login, so that a change made beside the running
server applies at the next login, with no reload. The store's names are re-exported
here: ``servergate.ban``, ``servergate.SqliteSql`` and the rest are what they were.

A session already open when its account or address is banned is ended by
:meth:`ServerGate.watch`: every node reads the bans once a second and, when they
changed, ends its own sessions that they name (an ``error`` ``banned`` saying why,
then ``bye`` ``disconnected``). So a ban made with ``chat-server admin`` on any node's
database reaches every node, with no message between nodes.

Threads: logins run on every reader thread and the watch on its own; each use of the
database is one short statement (chatroom_server.gatestore). The address bans, indexed
(:class:`Networks`), are kept under ``ServerGate._lock``. The watch scans a copy of the
sessions it is handed, never the server's live roster (``Presence.sessions``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from chatroom.errors import RequestId
from chatroom.protocol import Bye, ByeReason, encode, username_key
from chatroom_server.accounts import AccountStoreBusy
from chatroom_server.gatestore import (
    AddressBan,
    AuditRow,
    BadAddress,
    Execute,
    GateUnavailable,
    ServerBan,
    Sql,
    SqliteSql,
    account,
    address_bans,
    audit,
    ban,
    ban_address,
    bans,
    grant,
    network,
    operators,
    query,
    revoke,
    set_registrations,
    stored_address_bans,
    unban,
    unban_address,
)
from chatroom_server.session import BannedError, refusal_frame

# With the store's (chatroom_server.gatestore), importable from here as they were before
# the store was a module of its own: chat-server admin, the cluster's PgSql and tests.
__all__ = [
    "WATCH_INTERVAL",
    "AddressBan",
    "AuditRow",
    "BadAddress",
    "Execute",
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
            query(
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
            query(self.sql, "SELECT value FROM {p}server_settings WHERE key = 'address_bans'")
        )
        return self._networks_at(str(rows[0][0]) if rows else "")

    def _networks_at(self, version: str) -> Networks:
        """The address bans as of the version marker ``version``, just read."""
        with self._lock:
            if version == self._version:
                return self._networks
        # A change between the two reads is harmless: the next read of the marker
        # differs from the version this one is kept with, and reads them again.
        fresh = Networks(stored_address_bans(self.sql))
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
        rows = self.sql.rows(query(self.sql, _AT_LOGIN), (username_key(user),))
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
            query(self.sql, "SELECT value FROM {p}server_settings WHERE key = 'registrations'")
        )
        return not rows or rows[0][0] != "closed"

    def is_operator(self, user: str) -> bool:
        """Whether ``user`` is a server operator (chatroom_server.modstore's table)."""
        rows = self.sql.rows(
            query(self.sql, "SELECT 1 FROM {p}operators WHERE user_key = ?"),
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
                query(
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
                            query(
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
        for stored in bans:
            net = ipaddress.ip_network(stored.network)
            table = self._by_length.setdefault((net.version, net.prefixlen), {})
            table[int(net.network_address)] = stored
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
