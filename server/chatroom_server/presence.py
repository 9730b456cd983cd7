"""Presence: who is connected, who is online, and their arrivals and departures.

:class:`Presence` owns the roster and the one lock that guards it (docs/ARCHITECTURE.md,
"Threads and locks"). ``Presence.lock`` guards ``by_key`` (logged-in connection per
lower-cased name), ``conns`` (every open connection; a connection's own thread discards
it without the lock as it ends, one C call under the GIL, see ``depart``), ``_per_ip``
(open connections per address), ``live`` (the logged-in names; in a cluster, on every
node), ``members`` (logged-in connections that have their ``login_ok``,
insertion-ordered), ``legacy`` (those of them without ``users_delta``), and the
snapshots ``_roster`` (``members`` as a tuple) and ``_names`` (``live`` as a tuple). A
login or departure changes the dicts in O(1) and only marks a snapshot stale (None); the
next reader rebuilds it once, under the lock (``roster()``, ``names()``), and readers of
a fresh one need no lock. So 10,000 clients dropping at once cost O(N) in all, not O(N)
each.

v1 user-list pushes are *queued* under the lock (``Outbox.queue``, no syscall) and sent
after it is let go (``push_all``). That serialises them, so every client sees the pushes
in the same order and ends on the same list (docs/PROTOCOL.md §Ordering), and a
``joined`` push always precedes the new user's first message. ``users_delta``
connections get theirs from the :class:`~chatroom_server.roster.UsersPublisher` (its own
lock, taken before this one; the fan-out's is taken before both).

The lock also guards ``guests`` (the nicks held by IRC guests, from the check that found
them free to the end of the guest's connection) and ``registering`` (names being
registered now): a guest and a registration of the same name exclude each other there
(``claim_guest``, ``begin_registering``; chatroom_server.login).

Departures go through the **reaper thread** (``chat-reaper``, ``reap_loop``), which takes
ended connections out of the roster and announces them (``reap``). A reader thread whose
connection ends only appends it to ``departed`` (no lock) and closes its socket: when
10,000 connections drop at once, 10,000 threads wake together, and any lock they all
took would be held by a thread the GIL keeps waiting while the rest queue behind it
(docs/PERFORMANCE.md, "Mass departures"). Arrivals' log lines take the same way
(``arrived``, ``log_arrivals``). Both deques are appended by reader threads without a
lock and popped only by the reaper (or by ``stop()``, once the reaper has stopped).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import msgspec

from chatroom.protocol import (
    PROTOCOL_VERSION,
    ROOMS_VERSION,
    Bye,
    ByeReason,
    Feature,
    LoginOk,
    RequestId,
    ServerLimits,
    UserList,
    encode,
    username_key,
)
from chatroom_server.doorbell import Doorbell
from chatroom_server.outbox import push_all
from chatroom_server.roster import SortedNames, UsersPublisher

if TYPE_CHECKING:
    from chatroom_server.backends import Backends
    from chatroom_server.botcommands import BotDirectory
    from chatroom_server.config import ServerConfig
    from chatroom_server.conn import Conn
    from chatroom_server.metrics import Tally
    from chatroom_server.storm import DepartureStorm

log = logging.getLogger(__name__)

_BYE_REPLACED = encode(Bye(reason=ByeReason.SESSION_REPLACED))


class Presence:
    """The roster, under its lock, and the ways in and out of it (module docstring)."""

    def __init__(
        self,
        config: ServerConfig,
        backends: Backends,
        stats: Tally,
        stopping: threading.Event,
        storm: DepartureStorm,
        bots: BotDirectory,
    ) -> None:
        self._config = config
        self._b = backends
        self._stats = stats
        self._stopping = stopping
        self._storm = storm
        self._bots = bots
        self.lock = threading.Lock()  # see the module docstring for what it guards
        # Notified (under the lock) as a connection leaves ``conns``: claim_guest waits
        # on it for a nick whose holder has hung up but is not reaped yet.
        self.freed = threading.Condition(self.lock)
        self.by_key: dict[str, Conn] = {}
        self.conns: set[Conn] = set()
        self._per_ip: dict[str, int] = {}  # open connections per address
        self.members: dict[Conn, None] = {}
        self.legacy: dict[Conn, None] = {}
        self._roster: tuple[Conn, ...] | None = ()  # None: stale (see roster())
        self.live = SortedNames()
        self._names: tuple[str, ...] | None = ()  # None: stale (see names())
        # --irc-guests: username key -> the guest connection holding that nick; and the
        # keys being registered now, with how many registrations (module docstring).
        self.guests: dict[str, Conn] = {}
        self.registering: dict[str, int] = {}
        # Ended connections for the reaper: appended by their reader thread without a
        # lock, popped only by the reaper (depart, reap_loop).
        self.departed: deque[Conn] = deque()
        # Log lines of logins, for the reaper to write (begin, log_arrivals): the same
        # hand-over. Appended by reader threads without a lock.
        self.arrived: deque[tuple[str, str, bool]] = deque()  # name, address, new
        self.reap_bell = Doorbell()  # rung by depart (and the server's stop())
        # What login_ok tells every client it must respect (docs/PROTOCOL.md §login).
        self._limits = ServerLimits(
            max_frame=config.limits.max_frame, max_message=config.limits.max_message
        )
        self.publisher = UsersPublisher(
            self.names,
            min_window=config.users_window,
            interval=config.users_interval,
            stopping=stopping,
        )

    # ---------------------------------------------------------------- snapshots

    def roster(self) -> tuple[Conn, ...]:
        """The logged-in connections with their login_ok (the fan-out's recipients): the
        snapshot, rebuilt under the lock if a login or departure made it stale."""
        r = self._roster
        if r is None:
            with self.lock:
                r = self._roster
                if r is None:
                    r = self._roster = tuple(self.members)
        return r

    def names(self) -> tuple[str, ...]:
        """The logged-in names, sorted ignoring case (a snapshot, as for roster())."""
        n = self._names
        if n is None:
            with self.lock:
                n = self.names_locked()
        return n

    def names_locked(self) -> tuple[str, ...]:
        n = self._names
        if n is None:
            n = self._names = self.live.snapshot()
        return n

    def connections(self) -> list[Conn]:
        """Every open connection (a copy)."""
        with self.lock:
            return list(self.conns)

    def sessions(self) -> list[Conn]:
        """The logged-in connections, those still waiting for their login_ok included
        (a copy, taken under the lock: the ban watch reads it on its own thread,
        chatroom_server.servergate)."""
        with self.lock:
            return list(self.by_key.values())

    @property
    def connection_count(self) -> int:
        with self.lock:
            return len(self.conns)

    def online(self, key: str) -> Conn | None:
        """The logged-in connection of the name with this key, if any."""
        with self.lock:
            return self.by_key.get(key)

    def spelled(self, name: str) -> str | None:
        """The list's spelling of ``name`` if it is online, on this node or, in a
        cluster, on any (the list has every node's users)."""
        with self.lock:
            return self.live.get(name)

    def holders(self, key: str) -> tuple[Conn | None, Conn | None]:
        """The logged-in connection and the IRC guest holding the name with this key,
        as of one moment."""
        with self.lock:
            return self.by_key.get(key), self.guests.get(key)

    def irc_ident(self, name: str) -> tuple[str, str]:
        """The username and real name an IRC client gave in USER, for WHO, WHOIS and
        NAMES; a JSON client's are its name."""
        conn = self.online(username_key(name))
        if conn is not None and conn.irc is not None and conn.irc.user:
            return conn.irc.user, conn.irc.realname or name
        return name, name

    # ---------------------------------------------------------------- connections

    def admit(self, conn: Conn, exempt: bool) -> str | None:
        """Count a new connection in, or why not (the server is full, or its address has
        too many; ``exempt``: not counted against its address)."""
        c = self._config
        ip = conn.ip
        with self.lock:
            if len(self.conns) >= c.max_connections:
                return "the server is full"
            if not exempt and self._per_ip.get(ip, 0) >= c.max_per_ip:
                return f"too many connections from {ip}"
            self.conns.add(conn)
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return None

    def forget(self, conn: Conn) -> None:
        with self.lock:
            self._forget_locked(conn)

    def _forget_locked(self, conn: Conn) -> None:
        """Out of the open connections and its address's count. Once per connection:
        the reaper's leave, or the server's admission when its thread could not start."""
        self.conns.discard(conn)
        if conn.irc is not None and conn.irc.guest is not None:
            self._release_guest_locked(conn, conn.irc.guest)
        self.freed.notify_all()
        n = self._per_ip.get(conn.ip, 0) - 1
        if n > 0:
            self._per_ip[conn.ip] = n
        else:
            self._per_ip.pop(conn.ip, None)

    # ---------------------------------------------------------------- names held

    def claim_guest(
        self, key: str, conn: Conn, hung_up: Callable[[Conn], bool] = lambda c: False
    ) -> bool:
        """--irc-guests: hold the nick with this key for ``conn``; False if a session, a
        guest or a registration has it (chatroom_server.login). A holder whose client
        has ``hung_up`` (as IRC clients and test suites do just before reusing the
        nick) is departing: the nick is free once the reaper has seen it go, which is
        waited for, up to the shutdown grace."""

        def held() -> bool:
            return key in self.by_key or key in self.guests or key in self.registering

        with self.lock:
            holder = self.by_key.get(key) or self.guests.get(key)
            if holder is not None and hung_up(holder):
                self.freed.wait_for(lambda: not held(), timeout=self._config.shutdown_grace)
            if held():
                return False
            self.guests[key] = conn
            return True

    def release_guest(self, conn: Conn, key: str) -> None:
        with self.lock:
            self._release_guest_locked(conn, key)

    def _release_guest_locked(self, conn: Conn, key: str) -> None:
        if self.guests.get(key) is conn:
            del self.guests[key]

    def rename_guest(self, conn: Conn, new: str) -> None:
        """The IRC guest ``conn`` is called ``new`` from now on (docs/IRC.md, NICK):
        ``new``'s key is held for it in ``guests`` already (claim_guest), unless only
        the case changes. Its session goes on under the new name: in the roster, the
        user list (whose next delta says ``renamed``) and v1 pushes. Run under the
        fan-out lock, with the rooms' change (chatroom_server.login.Login.rename)."""
        old = conn.username
        assert old is not None and conn.irc is not None
        old_key, new_key = username_key(old), username_key(new)
        self.publisher.renaming(old, new)  # before the live list shows it
        with self.lock:
            if self.by_key.get(old_key) is conn:
                del self.by_key[old_key]
            self.by_key[new_key] = conn
            if old_key != new_key:
                self._release_guest_locked(conn, old_key)
            conn.username = new
            conn.irc.guest = new_key
            self.live.discard(old)
            self.live.add(new)
            self._names = None
            self._roster = None
            legacy = self._push_users_locked(joined=new, left=old)
        conn.announced = False  # its next message announces the new name first
        push_all(c.outbox for c in legacy)
        self.publisher.changed()

    def guest_of(self, key: str) -> Conn | None:
        with self.lock:
            return self.guests.get(key)

    def begin_registering(self, key: str) -> bool:
        """A registration of the name with this key begins; False (and none begins) if
        an IRC guest holds the name."""
        with self.lock:
            if key in self.guests:
                return False
            self.registering[key] = self.registering.get(key, 0) + 1
            return True

    def end_registering(self, key: str) -> None:
        with self.lock:
            n = self.registering.pop(key) - 1
            if n:
                self.registering[key] = n

    # ---------------------------------------------------------------- arrivals

    def begin(
        self,
        conn: Conn,
        name: str,
        new_user: bool,
        rid: RequestId,
        seq: int | None = None,
        epoch: str | None = None,
        hold: bool = False,
    ) -> Callable[[], None]:
        """The session joins the roster, its login_ok queued; returns what sends it and
        ends a replaced session. The caller runs that after letting go of the fan-out
        lock, if it holds it: during a login storm every login waits for that lock, and
        a ``send`` of login_ok (150 KB with 10,000 online) or a log line under it gives
        the GIL up and queues for it again while all of them wait (docs/PERFORMANCE.md,
        "Mass arrivals")."""
        if conn.deltas:
            # Under the publisher's lock: login_ok lists (or counts, with lazy_users)
            # what the next delta applies to.
            with self.publisher.subscribing(conn, lazy=conn.lazy_users) as published:
                old, legacy = self._join(conn, name, new_user, rid, published, seq, epoch, hold)
        else:
            old, legacy = self._join(conn, name, new_user, rid, None, seq, epoch, hold)
            self.publisher.changed()

        def begun() -> None:
            # Queued frames keep their order, so whatever reached the new session
            # meanwhile still follows its login_ok.
            conn.outbox.push()
            self._stats.add("logins")
            push_all(c.outbox for c in legacy)
            if old is not None:
                log.info("%s logged in again from %s; replacing %r", name, conn.addr, old)
                old.outbox.finish(_BYE_REPLACED)
            elif log.isEnabledFor(logging.INFO):
                # Written by the reaper: 10,000 threads each taking the log handler's
                # lock for a write (which gives the GIL up, with the lock held) queued
                # behind one another for seconds in a rejoin (docs/PERFORMANCE.md,
                # "Mass arrivals").
                # Not rung for: the reaper writes them at its next look, within half a
                # second. A ring per arrival woke it for every few logins of a storm,
                # another thread asking for the GIL each time (docs/PERFORMANCE.md,
                # "Arrival storms").
                self.arrived.append((name, conn.addr, new_user))

        return begun

    def _join(
        self,
        conn: Conn,
        name: str,
        new_user: bool,
        rid: RequestId,
        published: SortedNames | None,
        seq: int | None,
        epoch: str | None,
        hold: bool,
    ) -> tuple[Conn | None, tuple[Conn, ...]]:
        """The session joins; returns the one it replaces and the v1 connections with a
        user-list push queued. login_ok is queued before the connection is in the
        roster, so no message can reach it ahead of its login_ok."""
        key = username_key(name)
        # Rooms: the user's, as the fan-out lock's holder sees them (a login with the
        # message log runs under it: login.Login._begin_logged).
        wire = self._b.rooms
        rooms = wire.rooms_of(name) if conn.rooms and wire is not None else ()
        version = ROOMS_VERSION if conn.rooms else PROTOCOL_VERSION
        with self.lock:
            old = self.by_key.get(key)
            self.by_key[key] = conn
            conn.username = name
            if old is not None:
                self.members.pop(old, None)
                self.legacy.pop(old, None)
            elif self.live.add(name):
                self._names = None
            features = (Feature.ROOMS.value,) if conn.rooms else ()
            count = None
            if published is None:
                users = self.names_locked()
                self.legacy[conn] = None
            elif conn.lazy_users:
                # How many, not who (docs/PROTOCOL.md §lazy_users): the names were the
                # largest part of a return storm's login, and O(N^2) bytes in all.
                users = ()
                count = len(published) + (name not in published)
                features = (Feature.USERS_DELTA.value, Feature.LAZY_USERS.value, *features)
            else:
                # An empty slot that SortedNames.frame_with fills with the names.
                users = cast(tuple[str, ...], msgspec.Raw(b"[]"))
                features = (Feature.USERS_DELTA.value, *features)
            ok = LoginOk(
                username=name,
                new_user=new_user,
                users=users,
                count=count,
                features=features,
                version=version,
                rooms=rooms,
                seq=seq,
                epoch=epoch,
                replay=hold,
                limits=self._limits,
                id=rid,
            )
            frame = encode(ok)
            if published is not None and count is None:
                frame = published.frame_with(name, frame)
            conn.outbox.queue(frame)
            if hold:
                conn.outbox.hold()  # until the replay is written (replay.Replay.replay)
            self.members[conn] = None
            self._roster = None
            legacy = self._push_users_locked(joined=name)
        return old, legacy

    def announce(self, conn: Conn) -> None:
        assert conn.username is not None
        self.publisher.announce(conn.username)
        conn.announced = True

    def log_arrivals(self) -> None:
        """Reaper thread: the logins since it last looked, a line each, or one line for
        a storm of them (as ``reap`` does departures)."""
        arrived = self.arrived
        logins: list[tuple[str, str, bool]] = []
        while True:
            try:
                logins.append(arrived.popleft())
            except IndexError:
                break
        if len(logins) <= 10:
            for name, addr, new_user in logins:
                log.info("%s logged in from %s%s", name, addr, " (new account)" * new_user)
        else:
            names = ", ".join(name for name, _, _ in logins[:10])
            log.info("%d users logged in: %s, ...", len(logins), names)

    # ---------------------------------------------------------------- departures

    def depart(self, conn: Conn) -> None:
        """Reader thread, at its end: hand ``conn`` to the reaper, taking no lock unless
        this is the first departure since the reaper last looked (doorbell.py). It
        leaves ``conns`` here, not in the reaper, so that once its thread has ended it
        is no longer counted open (``connection_count``, ``max_connections``)."""
        self.conns.discard(conn)  # a set's discard: one C call under the GIL, no lock
        self.departed.append(conn)
        self.reap_bell.ring()

    def reap_loop(self) -> None:
        """The reaper thread (``chat-reaper``)."""
        while not self._stopping.is_set():
            rung = self.reap_bell.wait(0.5)
            if rung:
                self.reap_bell.answer()
            self.log_arrivals()  # before the departures: one may be of the same user
            if rung:
                self.reap()
            self._storm.tick()  # the switch interval back once a storm is over

    def reap(self) -> None:
        """Every departure handed over so far: out of the roster, and announced."""
        departed = self.departed
        left: list[str] = []
        waiting: list[threading.Event] = []
        while True:
            try:
                conn = departed.popleft()
            except IndexError:  # empty (stop() may reap while the reaper ends)
                break
            name = self.leave(conn)
            if name is not None:
                left.append(name)
            if conn.left is not None:
                waiting.append(conn.left)
        if waiting:
            # A fan-out pass that chose them as a DM's recipient before they left sends
            # to them before it lets go of its lock; only then may they close.
            with contextlib.suppress(TimeoutError):
                self._b.fanout.exclusive(_nothing, timeout=self._config.shutdown_grace)
            for event in waiting:
                event.set()
        if not left:
            return
        self.publisher.changed()
        if len(left) <= 10:
            for name in left:
                log.info("%s left", name)
        else:  # a storm: one line, not thousands (each a write that yields the GIL)
            log.info("%d users left: %s, ...", len(left), ", ".join(left[:10]))

    def leave(self, conn: Conn) -> str | None:
        """Out of the roster (reaper thread); the name whose departure this is, if any."""
        name = conn.username
        rooms = self._b.rooms
        if conn.rooms and name and rooms is not None and self.online(username_key(name)) is conn:
            # Out of its guest rooms before its name is free, with IRC QUIT's reason.
            rooms.session_ended(name, None if conn.irc is None else conn.irc.quit_reason)
        self._bots.forget(conn)  # what it announced goes with it
        if conn.deltas:
            self.publisher.unsubscribe(conn)
        with self.lock:
            self._forget_locked(conn)
            name = conn.username
            if name is None or self.by_key.get(username_key(name)) is not conn:
                return None  # never logged in, or replaced by a newer session of theirs
            del self.by_key[username_key(name)]
            self.members.pop(conn, None)
            self.legacy.pop(conn, None)
            self._roster = None
            self.live.discard(name)
            self._names = None
            legacy = self._push_users_locked(left=name)
        push_all(c.outbox for c in legacy)
        bus = self._b.bus
        if bus is not None:
            bus.release(name)
        return name

    # ---------------------------------------------------------------- v1 user lists

    def _push_users_locked(
        self, joined: str | None = None, left: str | None = None
    ) -> tuple[Conn, ...]:
        """A v1 push to the connections without users_delta (docs/PROTOCOL.md §login):
        queued to each under the lock (so all see the pushes in one order), returned to
        be pushed once it is let go (``push_all``: sends release the GIL)."""
        if not self.legacy:
            return ()
        data = encode(UserList(users=self.names_locked(), joined=joined, left=left))
        legacy = tuple(self.legacy)
        for c in legacy:
            c.outbox.queue(data)
        return legacy

    def legacy_ticks(self) -> None:
        """The periodic v1 push (docs/PROTOCOL.md §Server pushes; ``chat-users-v1``)."""
        while not self._stopping.wait(self._config.users_interval):
            with self.lock:
                legacy = self._push_users_locked()
            push_all(c.outbox for c in legacy)

    # ---------------------------------------------------------------- the cluster
    # Other nodes' logins and departures (chatroom_server.node, the bus's consumer
    # thread), applied to ``live`` and this node's sessions.

    def seed(self, names: list[str]) -> None:
        """Cluster, at start: the names online on other nodes."""
        with self.lock:
            for name in names:
                self.live.add(name)
            self._names = None

    def joined_elsewhere(self, name: str) -> Conn | None:
        """``name`` logged in on another node: in the list; this node's session of
        theirs, if any, leaves the roster (without a departure: they are still online)
        and is returned for the caller to end."""
        key = username_key(name)
        legacy: tuple[Conn, ...] = ()
        with self.lock:
            old = self.by_key.pop(key, None)
            if old is not None:
                self.members.pop(old, None)
                self.legacy.pop(old, None)
                self._roster = None
            elif self.live.add(name):
                self._names = None
                legacy = self._push_users_locked(joined=name)
        push_all(c.outbox for c in legacy)
        return old

    def left_elsewhere(self, name: str) -> bool:
        """``name`` left another node; whether the list changed."""
        with self.lock:
            if username_key(name) in self.by_key:
                return False  # they are here now: a later login than the one that ended
            # The list's own spelling: a resync knows a departed user only by key.
            spelled = self.live.get(name)
            if spelled is None:
                return False
            self.live.discard(spelled)
            self._names = None
            legacy = self._push_users_locked(left=spelled)
        push_all(c.outbox for c in legacy)
        return True

    def local_names(self) -> list[str]:
        """The names logged in on this node."""
        with self.lock:
            return [c.username for c in self.by_key.values() if c.username is not None]


def _nothing() -> None:
    pass
