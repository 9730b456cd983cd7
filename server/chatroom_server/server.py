"""The chat server's lifecycle: it makes its parts, starts them, and stops them.

:class:`ChatServer` is the front door (``start()``, ``stop()``, a context manager) and
nothing else: each job is a part of its own, made here and given only what it needs
(docs/ARCHITECTURE.md has the layers, the threads and locks, and one message's path):

- :mod:`~chatroom_server.listeners`: the ports, TLS, admission, the reader threads;
- :mod:`~chatroom_server.runner`: a session's actions carried out, through the command
  table (:mod:`~chatroom_server.commands`) to :mod:`~chatroom_server.handlers`;
- :mod:`~chatroom_server.replies`: a connection's own output in request order;
- :mod:`~chatroom_server.presence`: the roster and its lock, arrivals, departures (the
  ``chat-reaper`` thread), user lists;
- :mod:`~chatroom_server.login`: passwords, registrations, guests, a session's start;
- :mod:`~chatroom_server.replay`: the replay at login, history, retention
  (``chat-prune``);
- :mod:`~chatroom_server.housekeeping`: the timeouts (``chat-housekeeping``);
- :mod:`~chatroom_server.node`: a cluster node's callbacks (``chat-cluster``);
- :class:`~chatroom_server.backends.Backends`: what ``start()`` opens, shared by them.

The server answers the IRC gateway (irc.core.Core: the login checks, the names) and
the web transport by handing each question to its part; their lines and commands go to
the command runner directly (``runner``, irc.core.Runner), through no hop here.
Its own state: ``_threads`` (the threads it spawned, for stop() to join), written by
``start()`` before serving and read by ``stop()``; ``_stopping`` and ``_stopped``.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from chatroom.protocol import Bye, ByeReason, encode, username_key
from chatroom.rooms import RoomInfo
from chatroom_server.accounts import HASHERS, AccountStore, AccountStoreBusy
from chatroom_server.backends import Backends
from chatroom_server.botcommands import BotDirectory
from chatroom_server.config import ConfigError, ServerConfig
from chatroom_server.conn import Conn
from chatroom_server.fanout import FanOut
from chatroom_server.handlers import Handlers
from chatroom_server.housekeeping import Housekeeping
from chatroom_server.irc import IrcOutbox, IrcSession, Translations
from chatroom_server.listeners import Listeners, tls_context
from chatroom_server.login import Login
from chatroom_server.messagelog import MessageLog, StorageError
from chatroom_server.metrics import server_tally
from chatroom_server.moderation import Moderation
from chatroom_server.node import _ELSEWHERE, ClusterNode
from chatroom_server.noderooms import NodeRooms
from chatroom_server.presence import Presence
from chatroom_server.replay import Replay
from chatroom_server.replies import Replies
from chatroom_server.rooms import RoomBook
from chatroom_server.roomservice import RoomService
from chatroom_server.roomwire import RoomWire
from chatroom_server.runner import CommandRunner
from chatroom_server.servergate import ServerGate
from chatroom_server.serverops import ServerOps
from chatroom_server.session import SessionRules
from chatroom_server.storage import MessageStore
from chatroom_server.storm import DepartureStorm
from chatroom_server.web import WebOutbox, WebSession, load_static

if TYPE_CHECKING:
    from chatroom_server.admission import Admission
    from chatroom_server.cluster import ClusterBus, PgDatabase, PgMessageLog

log = logging.getLogger(__name__)

_BYE_SHUTDOWN = encode(Bye(reason=ByeReason.SERVER_SHUTDOWN))

# bench/session_cost.py makes connections by this name (and runs on older checkouts).
_Conn = Conn


class ChatServer:
    """A chat server; ``start()`` binds and returns, ``stop()`` shuts down cleanly."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = c = config or ServerConfig()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._storm = DepartureStorm(c.storm_switch_interval)
        self._bots = BotDirectory()  # docs/PROTOCOL.md §Bot commands (its own lock)
        self.stats = server_tally()  # the metrics' counts (chatroom_server.metrics)
        self._clock = c.clock
        self._wall = c.wall_clock
        self._threads: list[threading.Thread] = []
        self._pg: PgDatabase | None = None
        self._node: ClusterNode | None = None  # what the bus calls here (start())
        # Cluster: rooms as the stream applies them (chatroom_server.noderooms; start()).
        self._node_rooms: NodeRooms | None = None
        # IRC and web sessions (_attach): the channel's shared renderings, and the web
        # client's files, read once.
        self.irc_translations = Translations()
        self._web_files = load_static() if c.web_port is not None else {}
        self._web_origins = frozenset(c.web_origins)
        self.address: tuple[str, int] = (c.host, c.port)
        # The parts (module docstring), each given what it needs. What start() opens
        # is shared through one Backends; the fan-out reads the presence's roster.
        self._b = b = Backends()
        self._presence = presence = Presence(
            c, b, self.stats, self._stopping, self._storm, self._bots
        )
        b.fanout = FanOut(presence.roster, coalesce=c.coalesce)  # start() adds the log
        self._replies = replies = Replies(b)
        self._replay = Replay(c, b, self.stats, self._stopping, replies.reply)
        self._listeners = listeners = Listeners(
            c,
            b,
            presence,
            replies,
            SessionRules(c, self._clock),
            self.stats,
            self._storm,
            self._stopping,
            self._attach,
        )
        self._logins = Login(
            c,
            b,
            presence,
            self._replay,
            self.stats,
            self._stopping,
            listeners.admission,
            listeners.let_go,
            replies.send_error,
        )
        self._ops = ServerOps(c, b, presence)  # kill and WALLOPS (chatroom_server.serverops)
        self._handlers = Handlers(
            c, b, presence, self._logins, self._replay, replies, self._bots, self._ops
        )
        self._runner = CommandRunner(c, self._handlers, replies)
        listeners.use(self._runner, self._logins.early)
        self._housekeeping = Housekeeping(c, presence, self._stopping)
        # The parts' own, by the names the rest of the package and the tests know: the
        # same objects, never rebound (each part says what guards its own).
        self._lock = presence.lock
        self._by_key = presence.by_key
        self._conns = presence.conns
        self._publisher = presence.publisher
        self._admission: Admission[Conn] = listeners.admission

    # ---------------------------------------------------------------- what start() opened
    # By the names admin_http, reload and the tests read.

    @property
    def _store(self) -> AccountStore | None:
        return self._b.store

    @property
    def _gate(self) -> ServerGate | None:
        return self._b.gate

    @property
    def _log(self) -> MessageStore | None:
        return self._b.log

    @property
    def _rooms(self) -> RoomWire | None:
        return self._b.rooms

    @property
    def _bus(self) -> ClusterBus | None:
        return self._b.bus

    @property
    def _fanout(self) -> FanOut:
        return self._b.fanout

    @property
    def _listener(self) -> socket.socket | None:
        return self._listeners.listener

    @property
    def _tls(self) -> ssl.SSLContext | None:
        return self._listeners.tls

    @_tls.setter
    def _tls(self, ctx: ssl.SSLContext | None) -> None:  # a reload (chatroom_server.reload)
        self._listeners.tls = ctx

    def _tls_context(self) -> ssl.SSLContext | None:
        return tls_context(self.config)

    @property
    def _rules(self) -> SessionRules:
        return self._listeners.rules

    @_rules.setter
    def _rules(self, rules: SessionRules) -> None:  # a reload (chatroom_server.reload)
        self._listeners.rules = rules

    @property
    def catch_up_timeout(self) -> float:
        """Cluster: the longest a login waits for this node to deliver what was stored
        before it (Replay.catch_up)."""
        return self._replay.catch_up_timeout

    @catch_up_timeout.setter
    def catch_up_timeout(self, seconds: float) -> None:
        self._replay.catch_up_timeout = seconds

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> tuple[str, int]:
        """Open the database, bind, and start serving in background threads.

        Raises :class:`~chatroom_server.accounts.AccountStoreError` for an unusable
        credentials file and :class:`OSError` when the address cannot be bound.
        """
        self._listeners.tls = tls_context(self.config)
        if self.config.password_hash not in HASHERS:
            raise ConfigError(
                f"unknown password hash {self.config.password_hash!r}; one of {sorted(HASHERS)}"
            )
        if self.config.cluster is not None:
            return self._start_cluster()
        self._b.store = AccountStore(self.config.db_path, HASHERS[self.config.password_hash])
        # Server bans and closed registrations (chatroom_server.servergate): the store
        # made the schema, tables included.
        self._b.gate = ServerGate.sqlite(self.config.db_path)
        try:
            if self.config.history:
                self._b.log = MessageLog(self.config.db_path, durability=self.config.durability)
                self._b.fanout = FanOut(
                    self._presence.roster,
                    self._b.log,
                    self._by_key.get,
                    coalesce=self.config.coalesce,
                )
                self._b.rooms = self._open_rooms(self._b.log)
            self._listeners.listener = self._listeners.bind()
        except (OSError, StorageError):
            self._b.store.close()
            self._b.gate.close()
            if self._b.log is not None:
                self._b.log.close()
            raise
        return self._begin_serving()

    def _open_rooms(self, mlog: MessageLog | PgMessageLog) -> RoomWire:
        """The rooms as the log has them (docs/PROTOCOL.md §Rooms). In a cluster, as of
        one snapshot of PostgreSQL, applied on by the stream (chatroom_server.noderooms)."""
        c = self.config
        book = RoomBook(max_rooms=c.max_rooms, max_rooms_per_user=c.max_rooms_per_user)
        moderation = Moderation()
        if isinstance(mlog, MessageLog):
            book.load(*mlog.load_rooms())
            moderation.load(*mlog.load_moderation())
        else:
            rooms, bans = mlog.load_room_state()
            book.load(*rooms)
            moderation.load(*bans)
        service = RoomService(book, moderation)
        defer = None
        if not isinstance(mlog, MessageLog):
            self._node_rooms = NodeRooms(service, self._by_key.get)
            defer = self._node_rooms.defer

        def applied(seq: int, timeout: float) -> bool:
            """Cluster: until this node has delivered (so applied) ``seq``."""
            with self._replay.delivered:
                return self._replay.delivered.wait_for(lambda: mlog.last_seq >= seq, timeout)

        def account(name: str) -> str | None:
            assert self._b.store is not None
            found = self._b.store.get(name)
            if found is None:  # a guest online is named as an account is (§Guest rooms)
                guest = self._presence.guest_of(username_key(name))
                return None if guest is None else guest.username
            return found.name

        wire = RoomWire(
            service,
            mlog,
            self._b.fanout,
            self._by_key.get,
            account,
            self._wall,
            is_operator=mlog.is_operator,
            defer=defer,
            applied=applied,
        )
        if self._node_rooms is not None:
            # The consumer applies a ban of an address holding the fan-out lock; the
            # kicks of this node's members from it take that lock: another thread's.
            def address_banned(room: str) -> None:
                kicks = threading.Thread(
                    target=wire.kick_banned, args=([room],), name="address-kicks", daemon=True
                )
                kicks.start()

            self._node_rooms.address_banned = address_banned
        return wire

    def _start_cluster(self) -> tuple[str, int]:
        """docs/CLUSTER.md: accounts and the log in PostgreSQL, fan-out and presence
        through Redis; this node delivers what the stream carries, its own messages
        included, so every node delivers in the same seq order."""
        from chatroom_server.cluster import ClusterBus, PgAccountStore, PgDatabase, PgMessageLog
        from chatroom_server.cluster.pg import PgSql

        c = self.config
        if not c.cluster_db or not c.cluster_db.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                "--cluster needs a PostgreSQL --db (postgresql://USER@HOST/DBNAME): "
                "the nodes must share accounts and the message log"
            )
        if not c.history:
            raise ConfigError("--cluster needs the message log (drop --history off)")
        self._pg = PgDatabase(c.cluster_db)
        try:
            listener = self._listeners.listener = self._listeners.bind()
        except OSError:
            self._pg.close()
            raise
        assert c.cluster is not None
        bus = ClusterBus(
            c.cluster,
            prefix=c.cluster_prefix,
            node_name="{}:{}".format(*listener.getsockname()[:2]),
            ttl=c.node_timeout,
        )
        try:
            self._b.store = PgAccountStore(self._pg, HASHERS[c.password_hash])
            self._b.gate = ServerGate(PgSql.pooled(self._pg))
            # The stream position first, then the log's last seq: whatever is stored
            # in between is on the stream after that position, or filled from the log.
            remote = bus.snapshot()
            mlog = PgMessageLog(self._pg, publish=bus.publish, ready=bus.ready)
            self._b.log = mlog
            self._b.stored_seq = mlog.stored_seq
        except Exception:
            listener.close()
            bus.close()
            self._pg.close()
            raise
        self._b.bus = bus
        self._presence.seed(remote)
        self._b.fanout = FanOut(
            self._presence.roster,
            self._b.log,
            lambda key: _ELSEWHERE if bus.online(key) else None,
            coalesce=c.coalesce,
            deliver=False,
        )
        try:
            self._b.rooms = self._open_rooms(mlog)
        except StorageError:
            listener.close()
            bus.close()
            self._pg.close()
            raise
        address = self._begin_serving()
        self._node = ClusterNode(
            self._b, self._presence, self._replay.delivered, self._node_rooms, self._ops
        )
        bus.start(self._node, lambda: mlog.last_seq, mlog.stored_seq, mlog.range)
        log.info("cluster node %s, Redis key prefix %r", bus.node, c.cluster_prefix)
        return address

    def _begin_serving(self) -> tuple[str, int]:
        listeners = self._listeners
        assert listeners.listener is not None
        try:
            listeners.bind_more()
        except BaseException:
            # Nothing runs yet: close what start() opened, as its other failures do.
            for opened in (self._b.bus, self._b.store, self._b.log, self._pg):
                if opened is not None:
                    opened.close()
            raise
        self.address = listeners.listener.getsockname()[:2]
        listeners.open(self._spawn)
        self._spawn(self._publisher.run, "chat-users")
        self._spawn(self._presence.reap_loop, "chat-reaper")
        if self.config.users_interval > 0:
            self._spawn(self._presence.legacy_ticks, "chat-users-v1")
        self._spawn(self._housekeeping.run, "chat-housekeeping")
        if self._b.gate is not None:  # sessions a new ban names end (chatroom_server.servergate)
            gate, sessions = self._b.gate, self._presence.sessions
            self._spawn(lambda: gate.watch(sessions, self._stopping), "chat-bans")
        if self._b.log is not None:
            self._spawn(self._replay.prune_loop, "chat-prune")
        log.info("listening on %s:%d", *self.address)
        if self._b.log is not None:
            log.info("message log: %s", self._b.log.describe())
        else:
            log.info("message log: off (--history off): messages are not stored")
        return self.address

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _attach(self, conn: Conn) -> None:
        """An IRC or web connection's session, which asks this server (irc.session.Core;
        chatroom_server.web), as its outbox says (chatroom_server.listeners)."""
        outbox = conn.outbox
        if isinstance(outbox, IrcOutbox):
            conn.irc = outbox.session = IrcSession(
                self, conn, self.config.irc_channel, self.irc_translations
            )
        elif isinstance(outbox, WebOutbox):
            conn.web = outbox.session = WebSession(self, conn, self._web_files, self._web_origins)

    def __enter__(self) -> ChatServer:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (or the timeout passes)."""
        return self._stopped.wait(timeout)

    def _close_log(self, msglog: MessageStore) -> None:
        """Close the message log between two fan-out passes. Its writer runs under the
        fan-out's lock (MessageLog.append), on a reader or the fan-out's helper, and
        either may outlive the joins above (each has a timeout): closing a SQLite
        connection while another thread runs a statement on it can crash the process.
        If the lock cannot be had, the log is left open for the process's exit."""
        try:
            self._b.fanout.exclusive(msglog.close, timeout=5.0)
        except TimeoutError:
            log.warning("message log left open at stop: the fan-out is still busy")

    def stop(self) -> None:
        """Say ``bye`` (server_shutdown) to everyone, close everything, join the threads.

        Idempotent and bounded: returns within about ``shutdown_grace`` + 2 s.
        """
        if self._stopping.is_set():
            self._stopped.wait(self.config.shutdown_grace + 5)
            return
        self._stopping.set()
        self._storm.freeze()  # a storm under way goes on; none begins (storm.py)
        self._presence.reap_bell.ring()  # the reaper's wait ends now, not after its timeout
        self._publisher.wake()  # and the users publisher's
        log.info("shutting down")
        self._listeners.close()  # and those still in line for a login slot
        for t in self._threads:
            t.join(2.0)
        self._admission.release_resources()
        for conn in self._presence.connections():
            conn.outbox.finish(_BYE_SHUTDOWN)
        # Wait for them all at once, then join: a join of a thread still ending is
        # another wait for the GIL behind every other one (docs/PERFORMANCE.md, "Mass
        # departures"), while once the last reader is done the rest have a line or two
        # to run and are mostly gone by the time this thread runs again.
        self._listeners.stop_readers(time.monotonic() + self.config.shutdown_grace + 1.0)
        self._presence.log_arrivals()
        self._presence.reap()  # the reaper has stopped: the last departures, so nothing is left
        self._b.fanout.close()
        if self._listeners.flusher is not None:
            self._listeners.flusher.stop()
        if self._b.bus is not None:
            self._b.bus.close()
        if self._b.store is not None:
            self._b.store.close()
        if self._b.gate is not None:
            self._b.gate.close()
        if self._b.log is not None:
            self._close_log(self._b.log)
        if self._pg is not None:
            self._pg.close()
        self._storm.close()  # an embedding program gets its switch interval back
        log.info("stopped")
        self._stopped.set()

    # ---------------------------------------------------------------- for the transports
    # irc.session.Core (the IRC gateway) and chatroom_server.web ask these; each is a
    # part's.

    @property
    def runner(self) -> CommandRunner:
        """The command path (irc.core.Runner): the transports call it directly, the
        JSON line transport's reader threads (CommandRunner.frames), the IRC gateway
        (``meter``, ``run_command``) and the WebSocket transport (``handle``)."""
        return self._runner

    def send_ordered(self, conn: Conn, data: bytes) -> None:
        """irc.session.Core: the gateway's own lines, in order (Replies.send_ordered)."""
        self._replies.send_ordered(conn, data)

    def guest_login(self, conn: Conn, name: str) -> bool | None:
        """--irc-guests: a session under a nick no account has (Login.guest_login)."""
        return self._logins.guest_login(conn, name)

    def rename_guest(self, conn: Conn, new: str, done: Callable[[], None]) -> str:
        """--irc-guests: a guest's NICK after registration (Login.rename), behind the
        messages its earlier lines of the same read said under the old name."""
        if conn.batch:
            self._replies.flush_batch(conn)
        return self._logins.rename(conn, new, done)

    def check_password(self, conn: Conn, name: str, password: str) -> bool | None:
        """SASL: whether ``password`` is ``name``'s (Login.sasl)."""
        return self._logins.sasl(conn, name, password)

    def oper(self, conn: Conn, name: str, password: str) -> str:
        """IRC OPER (Login.oper); an O-line's told to the other nodes (ServerOps.opered)."""
        got = self._logins.oper(conn, name, password)
        if got == "ok" and conn.oper:
            self._ops.opered(conn)
        return got

    def is_server_operator(self, name: str) -> bool:
        """Whether ``name`` is a server operator (Handlers.is_server_operator); False
        when the database cannot tell now (IRC WHOIS leaves its 313 out, logged)."""
        try:
            return self._handlers.is_server_operator(name)
        except AccountStoreBusy as exc:
            log.warning("cannot read the server operators now: %s", exc)
            return False

    def operators_online(self) -> frozenset[str]:
        """IRC WHO's ``*`` (Handlers.operators_online)."""
        return self._handlers.operators_online()

    def wallops(self, line: str) -> bool:
        """IRC WALLOPS from an operator, to the ``+w`` clients of every node
        (ServerOps.wallops); False: of this node only."""
        return self._ops.wallops(line)

    def names(self) -> tuple[str, ...]:
        """The logged-in names, sorted ignoring case (Presence.names)."""
        return self._presence.names()

    def irc_ident(self, name: str) -> tuple[str, str]:
        """The username and real name an IRC client gave in USER (Presence.irc_ident)."""
        return self._presence.irc_ident(name)

    def irc_peer(self, name: str) -> IrcSession | None:
        """The IRC session of ``name`` online, or None (chatroom_server.irc.queries)."""
        conn = self._presence.online(username_key(name))
        return None if conn is None else conn.irc

    def rooms_of(self, name: str) -> tuple[RoomInfo, ...]:
        """IRC WHOIS: the rooms ``name`` is in."""
        rooms = self._b.rooms
        return () if rooms is None else rooms.member_rooms(name)

    def room_info(self, user: str, room: str) -> RoomInfo | None:
        """IRC WHO #room: the room as ``members`` shows it to ``user``, or None."""
        rooms = self._b.rooms
        return None if rooms is None else rooms.visible_info(user, room)

    # ---------------------------------------------------------------- operations and tests

    def roster(self) -> tuple[Conn, ...]:
        """The logged-in connections with their login_ok (Presence.roster)."""
        return self._presence.roster()

    def prune_history(self) -> int:
        """One pruning pass (docs/PROTOCOL.md §Retention; Replay.prune_history). How
        many messages were deleted."""
        return self._replay.prune_history()

    def sweep(self) -> int:
        """One pass of the timeouts (Housekeeping.sweep); how many were closed. Tests
        call it after moving the clock."""
        return self._housekeeping.sweep()

    @property
    def irc_addresses(self) -> list[tuple[str, int]]:
        return self._listeners.irc_addresses

    @property
    def web_address(self) -> tuple[str, int] | None:
        return self._listeners.web_address

    @property
    def handler_crashes(self) -> int:
        """Connections closed because a handler raised (docs/PROTOCOL.md §Errors)."""
        return self._listeners.handler_crashes

    @property
    def early_logins(self) -> int:
        """Logins run on the admission thread, before their connection had a thread
        (chatroom_server.earlylogin; a subset of the logins)."""
        return self._logins.early_logins

    @property
    def early_refused(self) -> int:
        """Logins the admission thread took that began no session (a ban, a client
        gone, "try again"): refused there, answered on the connection's thread."""
        look = self._listeners.look
        return 0 if look is None else look.early_refused

    @property
    def reader_threads(self) -> int:
        """Connection threads that have not ended (a snapshot)."""
        return self._listeners.reader_threads

    def join_readers(self, timeout: float) -> bool:
        """Wait at most ``timeout`` s for the connection threads running now to end;
        True if they all have."""
        return self._listeners.join_readers(timeout)

    @property
    def online(self) -> tuple[str, ...]:
        """The names of the logged-in users, sorted ignoring case."""
        return self._presence.names()

    @property
    def connection_count(self) -> int:
        return self._presence.connection_count
