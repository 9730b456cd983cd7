"""The threaded chat server: one accept thread, one reader thread per connection.

Threads and what they own:

- **accept thread** (``chat-accept``): accepts connections, starts one reader thread each.
- **reader thread per connection** (started with ``_thread``, unnamed; its handle is
  ``Conn.thread``, see :mod:`chatroom_server.readers`): the only thread that reads that
  socket and runs its commands; hashing a password happens here, outside every lock. It
  writes to other connections only through their :class:`~chatroom_server.outbox.Outbox`,
  which never blocks. When it ends, it removes its connection and closes the socket.
  Public messages go through the :class:`~chatroom_server.fanout.FanOut`: one reader
  thread at a time sends everyone's queued broadcasts (whichever gets there first; no
  thread waits for it), and what a reader sends after its own broadcasts waits in the
  same queue behind them.
- **flusher thread** (``chat-flusher``, :mod:`chatroom_server.outbox`): drains backlogs.
- **reaper thread** (``chat-reaper``): takes ended connections out of the roster and
  announces their departures (``_reap``). A reader thread whose connection ends only
  appends it to ``_departed`` (no lock) and closes its socket: when 10,000 connections
  drop at once, 10,000 threads wake together, and any lock they all took would be held
  by a thread the GIL keeps waiting while the rest queue behind it (docs/PERFORMANCE.md,
  "Mass departures").
- **users thread** (``chat-users``, :mod:`chatroom_server.roster`): coalesced
  ``users_delta`` pushes and the periodic user-list push (docs/PROTOCOL.md §Extensions).
- **cluster threads** (``chat-cluster``, ``chat-cluster-beat``; only with
  ``--cluster``, :mod:`chatroom_server.cluster.bus`): the consumer of the cluster's
  stream, which delivers every node's messages here in seq order
  (:mod:`chatroom_server.node`'s ``cluster_deliver``, between two fan-out passes) and
  applies other nodes' logins and departures to ``_live`` (``cluster_joined``,
  ``cluster_left``); and the heartbeat and reaper.

Shared state and what guards it:

- ``ChatServer._lock`` guards ``_by_key`` (logged-in connection per lower-cased name),
  ``_conns`` (every open connection; a connection's own thread discards it without
  the lock as it ends, one C call under the GIL, see ``_depart``), ``_live`` (the
  logged-in names; in a cluster,
  on every node), ``_members``
  (logged-in connections that have their ``login_ok``, insertion-ordered), ``_legacy``
  (those of them without ``users_delta``), and the snapshots ``_roster`` (``_members``
  as a tuple) and ``_names`` (``_live`` as a tuple). A login or departure changes the
  dicts in O(1) and only marks a snapshot stale (None); the next reader rebuilds it
  once, under the lock (``roster()``, ``names()``), and readers of a fresh one need no
  lock. So 10,000 clients dropping at once cost O(N) in all, not O(N) each.
- v1 user-list pushes are *queued* under ``_lock`` (``Outbox.queue``, no syscall) and
  sent after it is let go (``push_all``). That serialises them, so every client sees
  the pushes in the same order and ends on the same list (docs/PROTOCOL.md §Ordering),
  and a ``joined`` push always precedes the new user's first message. ``users_delta``
  connections get theirs from the :class:`~chatroom_server.roster.UsersPublisher` (its
  own lock, taken before ``_lock``).
- ``ChatServer._lock`` also guards ``_guests`` (the nicks held by IRC guests, from the
  check that found them free to the end of the guest's connection) and
  ``_registering`` (names being registered now): a guest and a registration of the same
  name exclude each other there (``guest_login``, ``_register``).
- Each connection's ``Conn`` counters are touched only by its own reader thread, except
  ``done``, written under the FanOut's lock.
- The account store has its own lock (:mod:`chatroom_server.accounts`).
- Reader threads are counted without a lock (``next()`` on an ``itertools.count`` is
  one C call under the GIL): ``_reader_starts`` by the accept path before a thread
  starts, ``_reader_ends`` by each as its last step. ``stop()``, once no more can start,
  takes the total (``_stop_total``) and an end of its own; whoever takes end number
  total + 1 sets ``_no_readers``. So ``stop()`` waits once instead of joining 10,000
  threads one by one (each join a wait for the GIL), and the 10,000 departing threads
  share no lock but one on purpose: ``_ending``, which a reader whose connection was
  reset holds while it ends, so that the rest of a mass reset sleep in it instead of
  asking for the GIL together (docs/PERFORMANCE.md, "One reset reader ending at a time").
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, cast

import msgspec

from chatroom.botcommands import BotCommandsCommand
from chatroom.errors import ProtocolError
from chatroom.moderation import AuditCommand, AuditEntry, AuditLog, ModerationCommand
from chatroom.protocol import (
    PROTOCOL_VERSION,
    ROOMS_VERSION,
    Ack,
    Broadcast,
    Bye,
    ByeReason,
    ClientCommand,
    DirectMessage,
    DmCommand,
    ErrorCode,
    ErrorEvent,
    ExitCommand,
    Feature,
    History,
    HistoryCommand,
    HistoryMessage,
    LoginCommand,
    LoginOk,
    PasswordRequired,
    PingCommand,
    PmCommand,
    Pong,
    ReplayDone,
    ReplayTruncated,
    RequestId,
    ServerLimits,
    UserList,
    UsersCommand,
    check_password,
    encode,
    username_key,
    validate_command,
)
from chatroom.rooms import LOBBY, RoomCommand, room_key
from chatroom.whois import Whois, WhoisCommand
from chatroom_server import logfmt
from chatroom_server.accounts import (
    HASHERS,
    Account,
    AccountExists,
    AccountStore,
    AccountStoreBusy,
)
from chatroom_server.admission import Admission
from chatroom_server.botcommands import BotDirectory, bot_commands_reply
from chatroom_server.cluster import ClusterUnavailable
from chatroom_server.commands import Dispatch
from chatroom_server.config import ConfigError, ServerConfig
from chatroom_server.conn import UNUSED, Conn
from chatroom_server.doorbell import Doorbell
from chatroom_server.fanout import Direct, FanOut
from chatroom_server.irc import IrcOutbox, IrcSession, Translations
from chatroom_server.limits import (
    LoginAttempt,
    LoginThrottle,
    Throttled,
    WindowCounter,
)
from chatroom_server.messagelog import MessageLog, NewMessage, StorageError, Stored
from chatroom_server.metrics import server_tally
from chatroom_server.moderation import Moderation
from chatroom_server.node import _ELSEWHERE, ClusterNode
from chatroom_server.noderooms import NodeRooms
from chatroom_server.outbox import Flusher, Outbox, push_all
from chatroom_server.readers import ReaderThread
from chatroom_server.rooms import RoomBook
from chatroom_server.roomservice import RoomService
from chatroom_server.roomwire import RoomWire
from chatroom_server.roster import SortedNames, UsersPublisher
from chatroom_server.servergate import ServerGate
from chatroom_server.session import (
    BYE_FLOOD,
    Action,
    Close,
    Reply,
    SessionRules,
    error_frame,
)
from chatroom_server.storage import MessageStore
from chatroom_server.storm import DepartureStorm
from chatroom_server.web import WebOutbox, WebSession, load_static

if TYPE_CHECKING:
    from chatroom_server.cluster import ClusterBus, PgDatabase, PgMessageLog

log = logging.getLogger(__name__)

# Frames that never change, encoded once.
_ACK_PM = encode(Ack(command="pm"))
_PONG = encode(Pong())
_BYE_EXIT = encode(Bye(reason=ByeReason.EXIT))
_BYE_SHUTDOWN = encode(Bye(reason=ByeReason.SERVER_SHUTDOWN))
_BYE_REPLACED = encode(Bye(reason=ByeReason.SESSION_REPLACED))
_BYE_TIMEOUT = encode(Bye(reason=ByeReason.TIMEOUT))


# The listen backlog: the kernel caps it at net.core.somaxconn (4096 on this machine).
# At 1024, an unpaced storm of 10,000 connects overflowed the accept queue tens of
# thousands of times, and each dropped SYN or ACK costs its client a retry 1, 3 or 7 s
# later (docs/PERFORMANCE.md, "Arrival storms").
LISTEN_BACKLOG = 65535

# Bytes an idle connection's reader asks of recv(): enough for most commands in one read,
# small enough to live in CPython's small-object pools (memory per idle connection).
IDLE_RECV = 256

# bench/session_cost.py makes connections by this name (and runs on older checkouts).
_Conn = Conn


class ChatServer:
    """A chat server; ``start()`` binds and returns, ``stop()`` shuts down cleanly."""

    # Cluster: the longest a login waits for this node to deliver what was stored
    # before it (_catch_up).
    catch_up_timeout = 5.0

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self._lock = threading.Lock()  # see module docstring for what it guards
        self._by_key: dict[str, Conn] = {}
        self._conns: set[Conn] = set()
        self._per_ip: dict[str, int] = {}  # open connections per address
        self._members: dict[Conn, None] = {}
        self._legacy: dict[Conn, None] = {}
        self._roster: tuple[Conn, ...] | None = ()  # None: stale (see roster())
        self._live = SortedNames()
        self._names: tuple[str, ...] | None = ()  # None: stale (see names())
        # --irc-guests: username key -> the guest connection holding that nick; and the
        # keys being registered now, with how many registrations (module docstring).
        self._guests: dict[str, Conn] = {}
        self._registering: dict[str, int] = {}
        # Username key -> seq up to which the user's queued DMs provably reached them
        # but could not be deleted from the inbox (the disk was full): the proof, kept
        # until a deletion succeeds, so a later login does not replay them (F2 in
        # docs/RELIABILITY.md). Guarded by _receipts_lock (reader threads).
        self._receipts: dict[str, int] = {}
        self._receipts_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        # Ended connections for the reaper: appended by their reader thread without a
        # lock, popped only by the reaper (_depart, _reap_loop).
        self._departed: deque[Conn] = deque()
        # Log lines of logins, for the reaper to write (_begin, _log_arrivals): the
        # same hand-over. Appended by reader threads without a lock.
        self._arrived: deque[tuple[str, str, bool]] = deque()  # name, address, new
        self._reap_bell = Doorbell()  # rung by _depart and _begin (and stop())
        self._storm = DepartureStorm(self.config.storm_switch_interval)
        self._admission: Admission[Conn] = Admission(
            self.config.login_slots,
            self._start,
            self._never_started,
            lambda conn: conn.sock.fileno(),
            self._queued,
        )
        self._reader_starts = itertools.count(1)  # module docstring: no lock
        self._reader_ends = itertools.count(1)
        # The running readers' handles: added by the accept thread, discarded by each
        # reader as it ends (set operations are single C calls under the GIL; no lock).
        self._readers: set[ReaderThread] = set()
        self._ending = threading.Lock()  # held by the one reset reader ending (_serve)
        self._stop_total = -1  # set once by stop(), before its own end
        self._no_readers = threading.Event()
        self._numbers = itertools.count(1)
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._flusher: Flusher | None = None  # made by start(), once the port is bound
        self._store: AccountStore | None = None
        self._gate: ServerGate | None = None  # server bans, registrations (one node only)
        self._log: MessageStore | None = None  # opened by start() unless history is off
        # Rooms (docs/PROTOCOL.md §Rooms): with the message log, in one process.
        self._rooms: RoomWire | None = None
        self._bots = BotDirectory()  # docs/PROTOCOL.md §Bot commands (its own lock)
        self._bus: ClusterBus | None = None  # the cluster's Redis side (start())
        self._node: ClusterNode | None = None  # what the bus calls here (start())
        # Cluster: rooms as the stream applies them (chatroom_server.noderooms; start()).
        self._node_rooms: NodeRooms | None = None
        # Cluster: the highest seq stored by any node (start()); and, notified by the
        # bus's consumer thread each time this node's delivered cut (the log's
        # last_seq) moves, what a login waits on until the cut reaches it (_catch_up).
        self._stored_seq: Callable[[], int] | None = None
        self._delivered = threading.Condition(threading.Lock())
        # IRC listeners: (socket, with TLS); bound by start() when configured.
        self._irc_listeners: list[tuple[socket.socket, bool]] = []
        self._irc_translations = Translations()
        self.irc_addresses: list[tuple[str, int]] = []
        # The web port's listener (docs/WEB.md), bound by start() when configured, and
        # the client's files, read once.
        self._web_listener: socket.socket | None = None
        self.web_address: tuple[str, int] | None = None
        self._web_files = load_static() if self.config.web_port is not None else {}
        self._web_origins = frozenset(self.config.web_origins)
        self._pg: PgDatabase | None = None
        self._tls: ssl.SSLContext | None = None
        self.handler_crashes = 0  # written under _lock
        self.stats = server_tally()  # the metrics' counts (chatroom_server.metrics)
        c = self.config
        self._clock = c.clock
        self._wall = c.wall_clock
        self._throttle = LoginThrottle(
            c.login_free_failures,
            cap=c.login_backoff_max,
            address_free=c.login_address_free,
            account_burst=c.login_account_burst,
            account_gap=c.login_account_gap,
        )
        self._registrations = WindowCounter(c.registrations_per_ip, c.registration_window)
        self.address: tuple[str, int] = (self.config.host, self.config.port)
        # What login_ok tells every client it must respect (docs/PROTOCOL.md §login).
        self._limits = ServerLimits(max_frame=c.limits.max_frame, max_message=c.limits.max_message)
        self._fanout = FanOut(self.roster, coalesce=c.coalesce)  # start() adds the log
        self._publisher = UsersPublisher(
            self.names,
            min_window=c.users_window,
            interval=c.users_interval,
            stopping=self._stopping,
        )
        self._rules = SessionRules(c, self._clock)
        # Every client command's handler and properties (chatroom_server.commands).
        self._commands: Dispatch[Conn] = Dispatch.bind(self, self._flush_batch)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> tuple[str, int]:
        """Open the database, bind, and start serving in background threads.

        Raises :class:`~chatroom_server.accounts.AccountStoreError` for an unusable
        credentials file and :class:`OSError` when the address cannot be bound.
        """
        self._tls = self._tls_context()
        if self.config.password_hash not in HASHERS:
            raise ConfigError(
                f"unknown password hash {self.config.password_hash!r}; one of {sorted(HASHERS)}"
            )
        if self.config.cluster is not None:
            return self._start_cluster()
        self._store = AccountStore(self.config.db_path, HASHERS[self.config.password_hash])
        # Server bans and closed registrations (chatroom_server.servergate): the store
        # made the schema, tables included.
        self._gate = ServerGate(self.config.db_path)
        try:
            if self.config.history:
                self._log = MessageLog(self.config.db_path, durability=self.config.durability)
                self._fanout = FanOut(
                    self.roster, self._log, self._by_key.get, coalesce=self.config.coalesce
                )
                self._rooms = self._open_rooms(self._log)
            self._listener = self._bind()
        except (OSError, StorageError):
            self._store.close()
            self._gate.close()
            if self._log is not None:
                self._log.close()
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
            with self._delivered:
                return self._delivered.wait_for(lambda: mlog.last_seq >= seq, timeout)

        def account(name: str) -> str | None:
            assert self._store is not None
            found = self._store.get(name)
            return None if found is None else found.name

        return RoomWire(
            service,
            mlog,
            self._fanout,
            self._by_key.get,
            account,
            self._wall,
            is_operator=mlog.is_operator,
            defer=defer,
            applied=applied,
        )

    def _start_cluster(self) -> tuple[str, int]:
        """docs/CLUSTER.md: accounts and the log in PostgreSQL, fan-out and presence
        through Redis; this node delivers what the stream carries, its own messages
        included, so every node delivers in the same seq order."""
        from chatroom_server.cluster import ClusterBus, PgAccountStore, PgDatabase, PgMessageLog

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
            self._listener = self._bind()
        except OSError:
            self._pg.close()
            raise
        assert c.cluster is not None
        bus = ClusterBus(
            c.cluster,
            prefix=c.cluster_prefix,
            node_name="{}:{}".format(*self._listener.getsockname()[:2]),
            ttl=c.node_timeout,
        )
        try:
            self._store = PgAccountStore(self._pg, HASHERS[c.password_hash])
            # The stream position first, then the log's last seq: whatever is stored
            # in between is on the stream after that position, or filled from the log.
            remote = bus.snapshot()
            mlog = PgMessageLog(self._pg, publish=bus.publish, ready=bus.ready)
            self._log = mlog
            self._stored_seq = mlog.stored_seq
        except Exception:
            self._listener.close()
            bus.close()
            self._pg.close()
            raise
        self._bus = bus
        with self._lock:
            for name in remote:
                self._live.add(name)
            self._names = None
        self._fanout = FanOut(
            self.roster,
            self._log,
            lambda key: _ELSEWHERE if bus.online(key) else None,
            coalesce=c.coalesce,
            deliver=False,
        )
        try:
            self._rooms = self._open_rooms(mlog)
        except StorageError:
            self._listener.close()
            bus.close()
            self._pg.close()
            raise
        address = self._begin_serving()
        self._node = ClusterNode(self)
        bus.start(self._node, lambda: mlog.last_seq, mlog.stored_seq, mlog.range)
        log.info("cluster node %s, Redis key prefix %r", bus.node, c.cluster_prefix)
        return address

    def _begin_serving(self) -> tuple[str, int]:
        assert self._listener is not None
        try:
            self._bind_irc()
            if self.config.web_port is not None:
                self._web_listener = self._bind(self.config.web_port)
                self.web_address = self._web_listener.getsockname()[:2]
        except BaseException:
            # Nothing runs yet: close what start() opened, as its other failures do.
            self._listener.close()
            for s, _ in self._irc_listeners:
                s.close()
            for opened in (self._bus, self._store, self._log, self._pg):
                if opened is not None:
                    opened.close()
            raise
        self.address = self._listener.getsockname()[:2]
        self._flusher = Flusher(self._clock)
        self._flusher.start()
        self._admission.open()
        self._spawn(self._admission.run, "chat-admission")
        self._spawn(self._accept_loop, "chat-accept")
        for listener, tls in self._irc_listeners:
            self._spawn(lambda lst=listener, t=tls: self._accept_loop(lst, True, t), "chat-irc")
            log.info("IRC%s on %s:%d", " (TLS)" if tls else "", *listener.getsockname()[:2])
        if self._web_listener is not None:
            web = self._web_listener
            self._spawn(lambda: self._accept_loop(web, web=True), "chat-web")
            scheme = "https" if self._tls is not None else "http"
            log.info("web client on %s://%s:%d/", scheme, *web.getsockname()[:2])
        self._spawn(self._publisher.run, "chat-users")
        self._spawn(self._reap_loop, "chat-reaper")
        if self.config.users_interval > 0:
            self._spawn(self._legacy_ticks, "chat-users-v1")
        self._spawn(self._housekeeping_loop, "chat-housekeeping")
        if self._log is not None:
            self._spawn(self._prune_loop, "chat-prune")
        log.info("listening on %s:%d", *self.address)
        if self._log is not None:
            log.info("message log: %s", self._log.describe())
        else:
            log.info("message log: off (--history off): messages are not stored")
        return self.address

    def _tls_context(self) -> ssl.SSLContext | None:
        """The server's TLS context, or None for plain TCP; ConfigError if unusable."""
        if self.config.tls_cert is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"cannot load the TLS certificate or key: {exc}") from exc
        return ctx

    def _bind(self, port: int | None = None) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.config.host, self.config.port if port is None else port))
            sock.listen(LISTEN_BACKLOG)
        except OSError:
            sock.close()
            raise
        return sock

    def _spawn(self, target: object, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    @property
    def reader_threads(self) -> int:
        """Connection threads that have not ended (a snapshot)."""
        return len(self._readers)

    def join_readers(self, timeout: float) -> bool:
        """Wait at most ``timeout`` s for the connection threads running now to end;
        True if they all have."""
        deadline = time.monotonic() + timeout
        return all(t.join(deadline - time.monotonic()) for t in list(self._readers))

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

    def stop(self) -> None:
        """Say ``bye`` (server_shutdown) to everyone, close everything, join the threads.

        Idempotent and bounded: returns within about ``shutdown_grace`` + 2 s.
        """
        if self._stopping.is_set():
            self._stopped.wait(self.config.shutdown_grace + 5)
            return
        self._stopping.set()
        self._storm.freeze()  # a storm under way goes on; none begins (storm.py)
        self._reap_bell.ring()  # the reaper's wait ends now, not after its timeout
        log.info("shutting down")
        listeners = [self._listener, self._web_listener, *(s for s, _ in self._irc_listeners)]
        for listener in listeners:
            if listener is not None:
                with contextlib.suppress(OSError):
                    listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
                listener.close()
        self._admission.close()  # those still waiting are closed (_never_started)
        for t in self._threads:
            t.join(2.0)
        self._admission.release_resources()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.outbox.finish(_BYE_SHUTDOWN)
        # Wait for them all at once, then join: a join of a thread still ending is
        # another wait for the GIL behind every other one (docs/PERFORMANCE.md, "Mass
        # departures"), while once the last reader is done the rest have a line or two
        # to run and are mostly gone by the time this thread runs again. Meanwhile this
        # thread is the reaper (which has stopped): readers that began to leave before
        # the stop wait for it (conn.left), and would otherwise wait out the grace.
        deadline = time.monotonic() + self.config.shutdown_grace + 1.0
        self._stop_total = next(self._reader_starts) - 1  # the accept loops are done
        self._reader_ended()  # stop()'s own end: total + 1 ends means all are done
        while not self._no_readers.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                left = len(self._readers)
                log.warning("%d connections still closing; stopping without them", left)
                break
            if self._reap_bell.wait(remaining):
                self._reap_bell.answer()
                self._reap()
        self.join_readers(deadline - time.monotonic())
        self._log_arrivals()
        self._reap()  # the reaper has stopped: the last departures, so nothing is left
        self._fanout.close()
        if self._flusher is not None:
            self._flusher.stop()
        if self._bus is not None:
            self._bus.close()
        if self._store is not None:
            self._store.close()
        if self._gate is not None:
            self._gate.close()
        if self._log is not None:
            self._log.close()
        if self._pg is not None:
            self._pg.close()
        self._storm.close()  # an embedding program gets its switch interval back
        log.info("stopped")
        self._stopped.set()

    # ---------------------------------------------------------------- accepting

    def _bind_irc(self) -> None:
        c = self.config
        ports = []
        if c.irc_port is not None:
            ports.append((c.irc_port, False))
        if c.irc_tls_port is not None:
            if self._tls is None:
                raise ConfigError("--irc-tls-port needs --tls-cert")
            ports.append((c.irc_tls_port, True))
        if ports and (not c.irc_channel.startswith("#") or " " in c.irc_channel):
            raise ConfigError(f"--irc-channel {c.irc_channel!r}: a channel name starts with #")
        for port, tls in ports:
            try:
                sock = self._bind(port)
            except OSError:
                for s, _ in self._irc_listeners:
                    s.close()
                raise
            self._irc_listeners.append((sock, tls))
            self.irc_addresses.append(sock.getsockname()[:2])

    def _accept_loop(
        self,
        listener: socket.socket | None = None,
        irc: bool = False,
        tls: bool = True,
        *,
        web: bool = False,
    ) -> None:
        listener = listener or self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                sock, addr = listener.accept()
            except OSError as exc:
                if self._stopping.is_set():
                    return
                # EMFILE and friends: keep serving the clients we have, retry shortly.
                log.error("accept failed: %s", exc)
                self._stopping.wait(0.1)
                continue
            self._admit(sock, addr[0], f"{addr[0]}:{addr[1]}", irc, tls, web=web)

    def _exempt(self, ip: str) -> bool:
        return self.config.exempt_loopback and (ip.startswith("127.") or ip == "::1")

    def _admit(
        self,
        sock: socket.socket,
        ip: str,
        addr: str,
        irc: bool = False,
        tls: bool = True,
        *,
        web: bool = False,
    ) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.config.send_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.send_buffer)
        if self._tls is not None and tls:
            # The handshake happens in the connection's own thread (_serve), never here.
            sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        num = next(self._numbers)
        assert self._flusher is not None
        outbox = (IrcOutbox if irc else WebOutbox if web else Outbox)(
            sock,
            self._flusher,
            limit=self.config.max_output,
            stall_timeout=self.config.stall_timeout,
            name=f"conn {num} ({addr})",
        )
        outbox.on_drop = self._dropped
        self.stats.add("accepted")
        c = self.config
        now = self._clock()
        conn = Conn(num, sock, ip, addr, outbox, self._rules, now)
        if isinstance(outbox, IrcOutbox):
            conn.irc = outbox.session = IrcSession(
                self, conn, self.config.irc_channel, self._irc_translations
            )
        elif isinstance(outbox, WebOutbox):
            conn.web = outbox.session = WebSession(self, conn, self._web_files, self._web_origins)
        why = None
        with self._lock:
            if len(self._conns) >= c.max_connections:
                why = "the server is full"
            elif not self._exempt(ip) and self._per_ip.get(ip, 0) >= c.max_per_ip:
                why = f"too many connections from {ip}"
            else:
                self._conns.add(conn)
                self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        if why is not None:
            log.warning("refused %s: %s", addr, why)
            self._refuse(conn, why)
            return
        conn.thread = ReaderThread()
        self._readers.add(conn.thread)
        next(self._reader_starts)  # before it runs, so that a stop cannot miss it
        # Its thread starts once its client has said something and a login slot is
        # free (admission.py). An IRC client may wait for the server to speak first.
        if irc:
            self._admission.arrive(conn)
        else:
            self._admission.watch(conn)

    @staticmethod
    def _queued(conn: Conn) -> None:
        """In line for a login slot: waiting for us, so the login timeout, which is
        the client's, does not count (``sweep``)."""
        conn.in_login = True

    def _start(self, conn: Conn) -> None:
        """Start ``conn``'s thread, which holds a login slot: the accept thread's or
        whoever passed its slot on (Admission.leave)."""
        assert conn.thread is not None
        conn.slot = True
        conn.in_login = False
        try:
            conn.thread.start(self._serve, conn)  # returns at once (readers.py)
        except RuntimeError as exc:
            conn.slot = False
            self._not_started(conn, exc)
            self._admission.leave()

    def _dropped(self, reason: str) -> None:
        """An outbox disconnected its slow client (chatroom_server.outbox)."""
        self.stats.add("drops")

    def _not_started(self, conn: Conn, exc: RuntimeError) -> None:
        """``conn``'s thread could not start ("can't start new thread": out of threads
        or memory)."""
        log.error("cannot start a thread for %s: %s", conn.addr, exc)
        self._readers.discard(conn.thread)
        self._reader_ended()
        self._forget(conn)
        self._refuse(conn, "the server cannot take more connections")

    def _never_started(self, conn: Conn) -> None:
        """Stopping: ``conn`` waited in line for a login slot, and its thread never ran."""
        conn.outbox.finish(_BYE_SHUTDOWN)
        conn.outbox.close(linger=0.5)
        self._readers.discard(conn.thread)
        self._forget(conn)
        self._reader_ended()

    def _let_go(self, conn: Conn) -> None:
        """Reader thread: its login slot, if it holds one, to the next in line."""
        if conn.slot:
            conn.slot = False
            self._admission.leave()

    def _reader_ended(self) -> None:
        if next(self._reader_ends) == self._stop_total + 1:
            self._no_readers.set()  # the last of them, after stop()'s own end
            self._reap_bell.ring()  # stop() waits on the bell

    def _refuse(self, conn: Conn, why: str) -> None:
        conn.outbox.send(encode(ErrorEvent(code=ErrorCode.SERVER_FULL, message=why)))
        conn.outbox.close(linger=0.5)

    # ---------------------------------------------------------------- per connection

    def _serve(self, conn: Conn) -> None:
        logfmt.serving(conn)  # this thread's log lines name it (--log-format json)
        log.debug("%r connected", conn)
        reason = "closed by client"
        dead = False  # a read failed: nothing more can reach the client
        recv: Callable[[int], bytes] = conn.sock.recv
        try:
            if conn.outbox.tls:
                self._let_go(conn)  # a handshake may wait for the client
                if not self._handshake(conn):
                    return
                recv = self._tls_receiver(conn)
            size = IDLE_RECV
            while True:
                try:
                    if not conn.slot:
                        data = recv(size)
                    elif conn.outbox.tls:  # no MSG_DONTWAIT through TLS
                        self._let_go(conn)
                        continue
                    else:
                        try:
                            data = conn.sock.recv(size, socket.MSG_DONTWAIT)
                        except BlockingIOError:
                            # Nothing to handle: the slot goes to the next in line while
                            # this thread waits for its client (admission.py).
                            self._let_go(conn)
                            continue
                except OSError as exc:
                    reason = f"network error: {exc}"
                    dead = True
                    break
                if not data:
                    break
                # A read that filled its buffer: more is coming, so read big; otherwise
                # wait small. A thread blocked in recv(n) holds an n-byte buffer all the
                # while, and most connections are idle most of the time.
                size = self.config.recv_size if len(data) == size else IDLE_RECV
                conn.last_rx = self._clock()
                if conn.username is None and not conn.slot:
                    # Before its login, asleep in line while a storm's logins run
                    # (admission.py); the login timeout does not count that wait.
                    conn.in_login = True
                    conn.slot = self._admission.enter(self.config.login_timeout)
                    conn.in_login = False
                if conn.web is not None:  # before irc: IRC over WebSocket is both
                    closing = None if conn.web.feed(data) else "closed by server"
                elif conn.irc is not None:
                    closing = None if conn.irc.receive_data(data) else "closed by server"
                else:
                    closing = self._frames(conn, data)
                if conn.batch:
                    self._flush_batch(conn)
                if conn.username is not None:
                    self._let_go(conn)  # logged in (or taken over): the next one's turn
                if closing is not None:
                    reason = closing
                    break
        except Exception:
            # A bug must cost one connection, never the server (docs/PROTOCOL.md §Errors).
            with self._lock:
                self.handler_crashes += 1
            log.exception("handler for %r crashed; closing that connection", conn)
            reason = "handler error"
        finally:
            self._let_go(conn)
            self._storm.begin()
            # A reset connection's thread ends one at a time (``_ending``): when 10,000
            # are reset at once, the rest wait in the lock, asleep, instead of all
            # asking for the GIL at once (docs/PERFORMANCE.md, "One reset reader ending
            # at a time"). A clean end may wait for the reaper (conn.left): not here.
            gated = dead and self._ending.acquire(timeout=self.config.shutdown_grace)
            try:
                # Its last messages go out before its departure is announced.
                self._fanout.settle(conn, timeout=self.config.shutdown_grace)
                if not dead and conn.username is not None and not self._stopping.is_set():
                    # A client that can still see its socket close sees it only once
                    # it is offline: a DM sent to it after that is queued for its next
                    # login, never handed to this closing connection and lost (the
                    # reaper does the leaving; a reset client resumes from its cursor).
                    conn.left = threading.Event()
                self._depart(conn)
                if conn.left is not None:
                    conn.left.wait(self.config.shutdown_grace)
                conn.outbox.close(linger=self.config.shutdown_grace, dead=dead)
            finally:
                self._storm.end()
                self._reader_ended()
                self._readers.discard(conn.thread)
                if gated:
                    self._ending.release()
            log.debug("%r disconnected: %s", conn, reason)

    def guest_login(self, conn: Conn, name: str) -> bool | None:
        """--irc-guests: a session without an account under a nick no account has
        (None: it has one, log in as usual). The session is like any other (the room,
        history, DMs while online) but nothing is registered, so another guest may use
        the nick after it leaves. A guest is one session (docs/IRC.md):

        - its nick is checked and claimed in one step: held in ``_guests`` (and, in a
          cluster, in Redis) from the moment no session had it, *then* checked against
          the accounts, while registrations of that name are refused; so a name
          registered meanwhile is either seen here or never registered, and a guest
          never takes over an account's session, nor one guest another's (433);
        - its DMs are delivered live and never stored (``_guest_direct``)."""
        assert self._store is not None and conn.irc is not None
        irc = conn.irc
        try:
            if self._store.get(name) is not None:
                return None  # the common case for an account, with nothing claimed
        except AccountStoreBusy as exc:
            irc.reply(f"ERROR :Closing link: chatroom (try again: {exc})")
            return False
        key = username_key(name)
        with self._lock:
            taken = key in self._by_key or key in self._guests or key in self._registering
            if not taken:
                self._guests[key] = conn
        if taken:
            return self._nick_in_use(irc, name)
        bus = self._bus
        claimed = False
        try:
            if bus is not None:
                try:
                    claimed = bus.claim_guest(name)
                except ClusterUnavailable as exc:
                    irc.reply(f"ERROR :Closing link: chatroom (try again: {exc})")
                    return False
                if not claimed:  # a session, a guest or a registration on another node
                    return self._nick_in_use(irc, name)
            try:
                # Again, now that no registration can begin: one may have ended meanwhile.
                if self._store.get(name) is not None:
                    return None
            except AccountStoreBusy as exc:
                irc.reply(f"ERROR :Closing link: chatroom (try again: {exc})")
                return False
            irc.guest = key
            cmd = LoginCommand(username=name, features=(Feature.USERS_DELTA.value,), id="login")
            conn.deltas = True
            conn.in_login = True
            try:
                return self._enter(conn, name, False, cmd)
            except ProtocolError as exc:
                self._send_error(conn, exc.code, exc.message, exc.request_id)
                return False
            finally:
                conn.in_login = False
        finally:
            if bus is not None and claimed:
                if conn.username is None:
                    bus.release(name)  # claimed, but no session began
                bus.settled(name)
            if conn.username is None:
                irc.guest = None
                with self._lock:
                    self._release_guest_locked(conn, key)

    @staticmethod
    def _nick_in_use(irc: IrcSession, name: str) -> bool:
        # Unlike a login, a guest proves nothing that would let it take a session
        # over: the nick is in use, as on any IRC server.
        irc.num("433", name, text="Nickname is already in use")
        irc.nick = "*"  # registration waits for another NICK
        return True

    def _release_guest_locked(self, conn: Conn, key: str) -> None:
        if self._guests.get(key) is conn:
            del self._guests[key]

    def _guest_direct(self, conn: Conn, cmd: DmCommand) -> bool:
        """--irc-guests: a DM from or to a guest, delivered live and never stored: a
        guest is one session, and nothing said to it or by it in private may reach
        whoever holds its nick later (a guest, or an account of that name), through
        history, a replay or offline DMs. False: no guest on either side (the usual
        path, ``_direct``). Like a DM with ``--history off``: no seq, not queued for
        someone offline."""
        assert conn.username is not None and self._store is not None
        key = username_key(cmd.to)
        with self._lock:
            target = self._by_key.get(key)
            holder = self._guests.get(key)
        from_guest = conn.irc is not None and conn.irc.guest is not None
        if target is None:
            # Nobody online by that name. A name a guest holds (arriving) has no
            # account; else ask the accounts here, not in _direct: a guest claiming the
            # name meanwhile would be found there, and the DM stored.
            try:
                account = None if holder is not None else self._store.get(cmd.to)
            except AccountStoreBusy as exc:
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
            if account is None:
                raise ProtocolError(ErrorCode.UNKNOWN_USER, f"no user named {cmd.to!r}", cmd.id)
            if not from_guest:
                return False  # for an account, to wait for its next login: the usual path
            raise ProtocolError(
                ErrorCode.USER_OFFLINE,
                f"{account.name} is not online here; a guest's direct messages are "
                "delivered live only",
                cmd.id,
            )
        if not from_guest and target is not holder:
            return False  # between two accounts' sessions: the usual path
        if not conn.announced:
            self._announce(conn)
        to = target.username
        assert to is not None
        ts = self._wall()
        dm = encode(DirectMessage(sender=conn.username, to=to, message=cmd.message, ts=ts))
        ack = encode(Ack(command="dm", to=to, id=cmd.id))

        def deliver() -> None:  # behind this sender's broadcasts still queued, if any
            target.outbox.send(dm)
            conn.outbox.send(ack)

        self._fanout.after(conn, deliver)
        return True

    def check_password(self, conn: Conn, name: str, password: str) -> bool | None:
        """SASL: whether ``password`` is ``name``'s (registering a new name, as a login
        does), with the login's throttles; None when the connection must close. The
        session itself begins at registration (IRC's CAP END). Every False has sent an
        error frame (id ``sasl``), which the gateway answers with 904 and its reason."""
        cmd = LoginCommand(username=name, password=password, id="sasl")
        conn.in_login = True
        try:
            verdict = self._verify_login(conn, cmd)
        except ProtocolError as exc:
            self._send_error(conn, exc.code, exc.message, exc.request_id)
            return False
        except AccountStoreBusy as exc:
            self._send_error(conn, ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id)
            return False
        finally:
            conn.in_login = False
        if isinstance(verdict, bool):
            return False if verdict else None
        return True

    def oper(self, name: str, password: str) -> str:
        """IRC OPER (chatroom_server.irc.session.Core.oper). Only for the connection's
        own account, whose password its client knows: no throttle is needed."""
        assert self._store is not None
        account, right = self._store.authenticate(name, password)
        if account is None or not right:
            return "password"
        gate = self._gate
        return "ok" if gate is not None and gate.is_operator(account.name) else "not_operator"

    def _handshake(self, conn: Conn) -> bool:
        """TLS handshake, bounded by the login window; then the socket goes non-blocking."""
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        sock.settimeout(self.config.login_timeout)
        try:
            sock.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            log.info("TLS handshake with %s failed: %s", conn.addr, exc)
            return False
        sock.setblocking(False)
        return True

    def _tls_receiver(self, conn: Conn) -> Callable[[int], bytes]:
        """recv() for a TLS connection: SSL reads under the outbox lock, waiting in poll()
        (outside it) when no record is ready. Shutdown of the socket wakes the poll."""
        poller = select.poll()
        poller.register(conn.sock.fileno(), select.POLLIN)

        def recv(size: int) -> bytes:
            while True:
                data = conn.outbox.recv_tls(size)
                if data is not None:
                    return data
                poller.poll()

        return recv

    def _frames(self, conn: Conn, data: bytes) -> str | None:
        """The JSON line transport: carry out what the connection's session makes of
        one read (chatroom_server.session); the reason to close it, or None."""
        return self._act(conn, conn.receive_data(data))

    def _handle(self, conn: Conn, frame: bytes) -> bool:
        """One whole frame from a transport with framing of its own (WebSocket,
        chatroom_server.web); False closes the connection."""
        return self._act(conn, conn.receive_frame(frame)) is None

    def _act(self, conn: Conn, actions: Iterable[Action]) -> str | None:
        """Carry out a session's actions (chatroom_server.session); the reason to close
        the connection, or None."""
        for action in actions:
            if isinstance(action, Reply):
                self._send_after_batch(conn, action.data)
            elif isinstance(action, Close):
                self._close(conn, action)
                return action.reason
            else:
                try:
                    keep = self._commands.run(conn, action)
                except ProtocolError as exc:
                    keep = self._refused(conn, exc)
                else:
                    conn.succeeded()
                if not keep:
                    return "closed by server"
        return None

    def _close(self, conn: Conn, close: Close) -> None:
        if close.bye is not None:
            if conn.batch:
                self._flush_batch(conn)
            bye = close.bye
            self._fanout.after(conn, lambda: conn.outbox.finish(bye))

    def meter(self, conn: Conn) -> bool | None:
        """An IRC line against flood control (ServerSession.meter); None: it floods, and
        its bye (ERROR) is on its way."""
        allowed = conn.meter()
        if allowed is None:
            self._close(conn, Close("flooding", BYE_FLOOD))
        return allowed

    def run_command(self, conn: Conn, cmd: ClientCommand, allowed: bool) -> bool:
        """Run one command, metered already (``allowed``: within the rate); False closes
        the connection. The IRC gateway calls this with the commands it builds."""
        try:
            if conn.username is None and conn.frames > self.config.max_frames_before_login:
                rules = conn.rules
                self._send_error(
                    conn, ErrorCode.NOT_LOGGED_IN, rules.too_many_before_login(), cmd.id
                )
                return False
            if not allowed:
                raise ProtocolError(ErrorCode.RATE_LIMITED, conn.rules.rate_limited_text(), cmd.id)
            validate_command(cmd, self.config.limits)
            keep = self._commands.run(conn, cmd)
        except ProtocolError as exc:
            return self._refused(conn, exc)
        conn.succeeded()
        return keep

    def _refused(self, conn: Conn, exc: ProtocolError) -> bool:
        """Answer a refused command; False after too many protocol errors in a row."""
        for action in conn.refused(exc):
            if isinstance(action, Reply):
                self._send_after_batch(conn, action.data)
            elif isinstance(action, Close):
                return False
        return True

    def _send_error(self, conn: Conn, code: str, message: str, rid: str | int | None) -> None:
        self._send_after_batch(conn, error_frame(code, message, rid))

    def _send_after_batch(self, conn: Conn, data: bytes) -> None:
        if conn.batch:
            self._flush_batch(conn)  # replies go out in the order of the requests
        self._reply(conn, data)

    def _reply(self, conn: Conn, data: bytes) -> None:
        """Send to the connection's own client, behind its broadcasts still queued."""
        if conn.done == conn.handed:
            conn.outbox.send(data)
        else:
            self._fanout.after(conn, lambda: conn.outbox.send(data))

    # ---------------------------------------------------------------- commands
    # The handlers of the command table (chatroom_server.commands), which checks the
    # login and flushes the pending batch before calling them. _login and _exit return
    # whether to keep the connection.

    def _dm(self, conn: Conn, cmd: DmCommand) -> None:
        if not (self.config.irc_guests and self._guest_direct(conn, cmd)):
            self._direct(conn, cmd)

    def _users(self, conn: Conn, cmd: UsersCommand) -> None:
        rid = cmd.id
        if conn.deltas:  # the list its deltas apply to, when the reply goes out
            self._fanout.after(conn, lambda: self._publisher.reply(conn, rid))
        else:
            self._fanout.after(
                conn, lambda: conn.outbox.send(encode(UserList(users=self.names(), id=rid)))
            )

    def _audit(self, conn: Conn, cmd: AuditCommand) -> None:
        """The moderation audit log, for server operators (docs/PROTOCOL.md
        §Moderation). Two database reads on this reader thread, no lock of ours."""
        assert conn.username is not None
        gate = self._gate
        if gate is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "no audit log in a cluster yet", cmd.id)
        if not gate.is_operator(conn.username):
            raise ProtocolError(ErrorCode.NOT_OPERATOR, "the audit is for server operators", cmd.id)
        entries = tuple(
            AuditEntry(
                seq=seq,
                ts=ts,
                by=str(actor),
                action=str(action),
                user=None if target is None else str(target),
                room=None if room is None else str(room),
                reason=None if reason is None else str(reason),
                detail=json.loads(str(detail)) if detail else {},
            )
            for seq, ts, actor, action, target, room, reason, detail in gate.audit(
                cmd.room, cmd.limit
            )
        )
        self._reply(conn, encode(AuditLog(entries=entries, id=cmd.id)))

    def _ping(self, conn: Conn, cmd: PingCommand) -> None:
        self._reply(conn, _PONG if cmd.id is None else encode(Pong(id=cmd.id)))

    def _room(self, conn: Conn, cmd: RoomCommand | ModerationCommand) -> None:
        """A room command (docs/PROTOCOL.md §Rooms): unknown to a connection without
        rooms, as to a version-1 server."""
        if not conn.rooms or self._rooms is None:
            tag = cmd.__struct_config__.tag
            raise ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"unknown command {tag!r}", cmd.id)
        self._rooms.command(conn, cmd)

    def _bot_commands(self, conn: Conn, cmd: BotCommandsCommand) -> None:
        """docs/PROTOCOL.md §Bot commands (chatroom_server.botcommands)."""
        self._reply(conn, bot_commands_reply(self._bots, conn, cmd))

    def _whois(self, conn: Conn, cmd: WhoisCommand) -> None:
        """docs/PROTOCOL.md §whois. Reads the operators table now, at every ask, so a
        revoke shows at the next one (no cache here to go stale)."""
        assert self._store is not None
        key = username_key(cmd.user)
        with self._lock:
            target = self._by_key.get(key)
        name = None if target is None else target.username
        if name is None:
            try:
                account = self._store.get(cmd.user)
            except AccountStoreBusy as exc:
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
            if account is None:
                raise ProtocolError(ErrorCode.UNKNOWN_USER, f"no user named {cmd.user!r}", cmd.id)
            name = account.name
        oper = self.is_server_operator(name)
        reply = Whois(user=name, online=target is not None, server_operator=oper, id=cmd.id)
        self._reply(conn, encode(reply))

    def _exit(self, conn: Conn, cmd: ExitCommand) -> bool:
        self._replay_received(conn)
        self._fanout.after(conn, lambda: conn.outbox.finish(_BYE_EXIT))  # nothing follows
        return False

    # ---------------------------------------------------------------- messages

    def _public(self, conn: Conn, cmd: PmCommand) -> None:
        assert conn.username is not None
        if not conn.announced:
            self._announce(conn)
        if conn.rooms and cmd.room is not None and room_key(cmd.room) != LOBBY:
            assert self._rooms is not None
            if conn.batch:
                self._flush_batch(conn)  # its lobby messages before this one
            self._rooms.pm(conn, cmd)
            return
        # Encoded once; every recipient gets the same bytes. Queued in the batch of this
        # read: the public messages that arrived in one recv() go out as one send() per
        # recipient (_flush_batch), so under load, when frames queue up, the per-recipient
        # syscall and outbox lock are paid once per batch instead of once per message.
        # With the message log the fan-out adds each one's seq once it is stored.
        ts = self._wall()
        if conn.batch is UNUSED:  # the first message of this read (see Conn)
            conn.batch, conn.acks, conn.msgs, conn.rids = [], [], [], []
        conn.batch.append(encode(Broadcast(sender=conn.username, message=cmd.message, ts=ts)))
        conn.acks.append(_ACK_PM if cmd.id is None else encode(Ack(command="pm", id=cmd.id)))
        if self._log is not None:
            conn.msgs.append(NewMessage(conn.username, None, cmd.message, ts, cmd.cid))
            conn.rids.append(cmd.id)

    def _flush_batch(self, conn: Conn) -> None:
        """Hand the batched broadcasts to the fan-out (chatroom_server.fanout): stored (with
        the message log), then to every other logged-in connection, then the acks
        (docs/PROTOCOL.md §pm: the ack follows the hand-off)."""
        frames, acks, msgs, rids = conn.batch, conn.acks, conn.msgs, conn.rids
        conn.batch = conn.acks = conn.msgs = conn.rids = UNUSED
        if self._log is None:
            self._fanout.broadcast(conn, frames, acks)
        else:
            self._fanout.broadcast(conn, frames, acks, msgs, rids)

    def _direct(self, conn: Conn, cmd: DmCommand) -> None:
        assert conn.username is not None and self._store is not None
        if not conn.announced:
            self._announce(conn)
        key = username_key(cmd.to)
        with self._lock:
            target = self._by_key.get(key)
        to = target.username if target is not None else None
        if to is None:
            try:
                account = self._store.get(cmd.to)
            except AccountStoreBusy as exc:
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
            if account is None:
                raise ProtocolError(ErrorCode.UNKNOWN_USER, f"no user named {cmd.to!r}", cmd.id)
            if self._log is None:
                raise ProtocolError(ErrorCode.USER_OFFLINE, f"{cmd.to} is not online", cmd.id)
            to = account.name
        ts = self._wall()
        dm = encode(DirectMessage(sender=conn.username, to=to, message=cmd.message, ts=ts))
        ack = encode(Ack(command="dm", to=to, id=cmd.id))
        if self._log is not None:
            # Stored first; whether the recipient is online is decided then (fanout.Direct).
            msg = NewMessage(conn.username, to, cmd.message, ts, cmd.cid)
            self._fanout.direct(Direct(conn, dm, ack, msg, cmd.id, key))
            return
        assert target is not None

        def deliver() -> None:  # behind this sender's broadcasts still queued, if any
            target.outbox.send(dm)
            conn.outbox.send(ack)

        self._fanout.after(conn, deliver)

    # ---------------------------------------------------------------- accounts

    def _login(self, conn: Conn, cmd: LoginCommand) -> bool:
        conn.in_login = True
        try:
            return self._check_login(conn, cmd)
        except AccountStoreBusy as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
        finally:
            conn.in_login = False

    def _check_login(self, conn: Conn, cmd: LoginCommand) -> bool:
        verdict = self._verify_login(conn, cmd)
        if isinstance(verdict, bool):
            return verdict  # refused (or asked for a password): keep the connection?
        account, new_user = verdict
        if _hung_up(conn.sock):
            # Its client gave up on it (a stalled server, docs/RELIABILITY.md F4) and may
            # be logged in on another connection already: taking that session over
            # would leave the user with none (docs/PROTOCOL.md §login).
            log.info("%r: its client closed the connection during its login: no session", conn)
            return False
        conn.deltas = Feature.USERS_DELTA in cmd.features
        conn.rooms = self._rooms is not None and Feature.ROOMS in cmd.features
        return self._enter(conn, account.name, new_user, cmd)

    def _verify_login(self, conn: Conn, cmd: LoginCommand) -> tuple[Account, bool] | bool:
        """The account and whether it is new, once the password is right (a new name is
        registered); else what was answered and whether to keep the connection."""
        assert self._store is not None
        if conn.username is not None:
            raise ProtocolError(
                ErrorCode.ALREADY_LOGGED_IN, f"already logged in as {conn.username}", cmd.id
            )
        if cmd.password is None:
            # The step where an interactive client learns to ask for a new password twice.
            account = self._store.lookup(cmd.username)
            name = account.name if account else cmd.username
            lim = self.config.limits
            new = account is None
            conn.outbox.send(
                encode(
                    PasswordRequired(
                        username=name,
                        new_user=new,
                        min_password=lim.min_password if new else None,
                        max_password=lim.max_password if new else None,
                        id=cmd.id,
                    )
                )
            )
            return True
        # Names are ASCII and unique ignoring case, so this is the account's key too.
        key = username_key(cmd.username)
        attempt = self._throttle.begin(
            key, conn.ip, self._clock(), per_address=not self._exempt(conn.ip)
        )
        if isinstance(attempt, Throttled):
            # Only an existing account's failures throttle; it is not even looked up.
            conn.failed_logins += 1
            self.stats.add("login_failures")
            self._send_error(
                conn, ErrorCode.RATE_LIMITED, self._throttled_text(cmd, conn, attempt), cmd.id
            )
            return conn.failed_logins < self.config.max_failed_logins
        try:
            return self._check_password(conn, cmd, attempt)
        finally:
            attempt.close(self._clock())  # a check without a verdict counts for nothing

    @staticmethod
    def _throttled_text(cmd: LoginCommand, conn: Conn, refused: Throttled) -> str:
        wait = math.ceil(refused.wait)
        if refused.scope == "address":
            return f"too many wrong passwords from {conn.ip}; try again in {wait} s"
        if refused.scope == "checking":
            return f"{cmd.username}'s password is being checked already; try again in {wait} s"
        return f"too many wrong passwords for {cmd.username} from {conn.ip}; try again in {wait} s"

    def _check_password(
        self, conn: Conn, cmd: LoginCommand, attempt: LoginAttempt
    ) -> tuple[Account, bool] | bool:
        """``_verify_login`` once the throttle let the check through (limits.py)."""
        assert self._store is not None and cmd.password is not None
        # Past the account's ceiling the check waits for its turn: slowed, not refused.
        if attempt.delay > 0 and self._stopping.wait(attempt.delay):
            raise AccountStoreBusy("the server is stopping")
        new_user = False
        account, right = self._store.authenticate(cmd.username, cmd.password)
        gate = self._gate
        if account is None:
            if gate is not None and not gate.registrations_open():
                why = "this server takes no new accounts for now; try again later"
                raise ProtocolError(ErrorCode.REGISTRATION_CLOSED, why, cmd.id)
            check_password(cmd.password, self.config.limits, cmd.id)
            now = self._clock()
            if not self._exempt(conn.ip) and not self._registrations.allow(conn.ip, now):
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"too many new accounts from {conn.ip}; try again later",
                    cmd.id,
                )
            # Its commit is shared with every registration queued meanwhile, so let
            # the next in line get that far too while this one waits, asleep
            # (accounts.py, admission.py).
            self._let_go(conn)
            account, new_user, right = self._register(cmd)
            # A commit wakes its whole group at once: back in line for the rest.
            conn.slot = self._admission.enter(self.config.login_timeout)
        if not new_user and not right:
            attempt.failed(self._clock())
            conn.failed_logins += 1
            self.stats.add("login_failures")
            self._send_error(conn, ErrorCode.BAD_CREDENTIALS, "wrong username or password", cmd.id)
            if conn.failed_logins >= self.config.max_failed_logins:
                log.info("closing %r after %d failed logins", conn, conn.failed_logins)
                return False
            return True
        if not new_user:
            attempt.succeeded(self._clock())
            # Told once the password is right: a guess learns nothing of a ban.
            ban = None if gate is None else gate.banned(account.name, self._wall())
            if ban is not None:
                raise ProtocolError(ErrorCode.BANNED, ban.text(), cmd.id)
        return account, new_user

    def _register(self, cmd: LoginCommand) -> tuple[Account, bool, bool]:
        """A new name's account: (the account, whether this login created it, whether
        the password is the account's). Not while an IRC guest holds the name, here or
        on another node (``unavailable``): the guest checked that no account has it, and
        its session is the one with that name until it leaves (docs/IRC.md)."""
        assert self._store is not None and cmd.password is not None
        key = username_key(cmd.username)
        with self._lock:
            held = key in self._guests
            if not held:
                self._registering[key] = self._registering.get(key, 0) + 1
        if held:
            raise ProtocolError(ErrorCode.UNAVAILABLE, _guest_holds(cmd.username), cmd.id)
        bus = self._bus
        marked = False
        try:
            if bus is not None:
                try:
                    marked = bus.begin_registration(cmd.username)
                except ClusterUnavailable as exc:
                    raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
                if not marked:
                    raise ProtocolError(ErrorCode.UNAVAILABLE, _guest_holds(cmd.username), cmd.id)
            try:
                return self._store.register(cmd.username, cmd.password), True, True
            except AccountExists:  # lost a registration race: the winner's password?
                account, right = self._store.authenticate(cmd.username, cmd.password)
                assert account is not None
                return account, False, right
        finally:
            if marked:
                assert bus is not None
                bus.end_registration(cmd.username)
            with self._lock:
                n = self._registering.pop(key) - 1
                if n:
                    self._registering[key] = n

    def _enter(self, conn: Conn, name: str, new_user: bool, cmd: LoginCommand) -> bool:
        """The session begins: login_ok, the roster, and with the message log the replay
        (docs/PROTOCOL.md §Resume, §Offline DMs); False closes the connection."""
        if self._log is None:
            self._begin(conn, name, new_user, cmd.id)()
            return True
        self._clear_received(name)
        bus = self._bus
        if bus is not None:
            self._catch_up(cmd)
            try:
                # One session per user in the whole cluster: the node that had it ends
                # it with bye session_replaced when it reads our claim.
                bus.claim(name)
            except ClusterUnavailable as exc:
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
        try:
            # Between two fan-out passes: login_ok's seq is the last message handed to
            # the roster without us, and every later one reaches us live.
            begun, plan = self._fanout.exclusive(
                lambda: self._begin_logged(conn, name, new_user, cmd)
            )
        except TimeoutError as exc:
            if bus is not None and conn.username is None:
                bus.release(name)  # claimed, but the session never began
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
        finally:
            if bus is not None:
                bus.settled(name)
        begun()
        self._let_go(conn)  # a replay waits for the client to read: not in a slot
        upto, replaying = plan
        conn.inbox_range = (upto, upto)  # none from the inbox yet; the login's cut
        if not replaying:
            return True
        return self._replay(conn, name, cmd, upto)

    def _catch_up(self, cmd: LoginCommand) -> None:
        """Cluster: wait until this node has delivered every message stored before this
        login (its cut, login_ok's seq, lags the log after a partition or a pause):
        else the replay would stop short of it and the rest come live, messages the user
        had already had on another node among them (docs/RELIABILITY.md F3). At most
        ``catch_up_timeout`` s; then ``unavailable``: another node may be up to date."""
        mlog, stored = self._log, self._stored_seq
        assert mlog is not None and stored is not None
        try:
            head = stored()
        except StorageError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
        with self._delivered:
            if not self._delivered.wait_for(lambda: mlog.last_seq >= head, self.catch_up_timeout):
                raise ProtocolError(
                    ErrorCode.UNAVAILABLE,
                    f"try again: this node has delivered the cluster's messages up to seq "
                    f"{mlog.last_seq}, not yet {head}",
                    cmd.id,
                )

    def _begin_logged(
        self, conn: Conn, name: str, new_user: bool, cmd: LoginCommand
    ) -> tuple[Callable[[], None], tuple[int, bool]]:
        """Under the fan-out lock: begin the session and, if it gets a replay, hold its
        live traffic back until the replay is written. What to do once the lock is let
        go (``_begin``'s), the login's cut (login_ok's seq) and whether a replay
        follows."""
        mlog = self._log
        assert mlog is not None
        upto = mlog.last_seq
        replaying = cmd.since is not None or mlog.has_inbox(name)
        # Held from right after login_ok: the replay (or replay_truncated) is the first
        # thing after it, before even the users push (docs/PROTOCOL.md §Resume).
        begun = self._begin(conn, name, new_user, cmd.id, upto, mlog.epoch, hold=replaying)
        return begun, (upto, replaying)

    def _replay(self, conn: Conn, name: str, cmd: LoginCommand, upto: int) -> bool:
        """Reader thread, after login_ok: what the client missed (with ``since``), or the
        DMs that waited for it (without), then live traffic (docs/PROTOCOL.md §Resume,
        §Offline DMs). Streamed from the log a page at a time as the client reads it:
        the next page is read only once the last is written to the socket, so a replay
        holds about a page here however long it is (never more than the output limit),
        and a client that stops reading is dropped after the stall timeout. Live
        traffic waits meanwhile in the outbox's hold, bounded by the output limit."""
        mlog = self._log
        assert mlog is not None
        inbox = cmd.since is None  # a replay of the inbox only
        limit = self.config.replay_limit
        key = username_key(name)
        outbox = conn.outbox
        # Characters of the log per page: an eighth of the output limit, so that a page
        # (its rows, then its frames) stays well under it.
        budget = max(1, outbox.limit // 8)
        head: list[bytes] = []  # what precedes the first page: replay_truncated
        count = 0
        since = cmd.since
        first = upto  # the replay gives the DMs waiting after this seq
        told_truncated = False  # for the metrics
        try:
            if since is None:
                # None of those it provably received, if their rows are still there.
                got = self._received(name)
                start = mlog.replay_start(name, got, upto, limit, inbox=True)
                after = first = start or got
                truncated = start is not None
            elif (cmd.epoch is not None and cmd.epoch != mlog.epoch) or since > upto:
                # A cursor from another database (wiped, restored): nothing it counted
                # means anything here.
                head.append(encode(ReplayTruncated(oldest_seq=upto + 1)))
                after, truncated, told_truncated = upto, False, True
            else:
                if mlog.maybe_inbox(name):
                    # The client has every message up to since: DMs waiting up to it
                    # reached it (docs/PROTOCOL.md §Offline DMs); later ones are in this
                    # replay.
                    self._inbox_received(name, 0, since)
                start = mlog.replay_start(name, since, upto, limit, rooms=conn.rooms)
                after = since if start is None else start
                # Unless a limit cuts it, the client has had every DM up to since and
                # gets the rest here: all of (0, upto] is proven once it exits.
                first = 0 if start is None else start
                truncated = start is not None or since + 1 < mlog.oldest_seq
            while after < upto:
                rows = mlog.replay_page(name, after, upto, budget, inbox=inbox, rooms=conn.rooms)
                if truncated:
                    oldest = rows[0].seq if rows else upto + 1
                    head.append(encode(ReplayTruncated(oldest_seq=oldest)))
                    truncated, told_truncated = False, True
                if not rows:
                    break
                count += len(rows)
                after = rows[-1].seq
                chunk = b"".join([*head, *(_replay_frame(m, key, conn.rooms) for m in rows)])
                head.clear()
                del rows
                if not (outbox.wait_drained(self.config.stall_timeout) and outbox.replay(chunk)):
                    return False  # dropped: the client resumes from what it has
                conn.last_rx = self._clock()  # it is reading: not idle
        except StorageError as exc:
            log.error("cannot replay for %s: %s", name, exc)
            failed = ErrorEvent(
                code=ErrorCode.UNAVAILABLE,
                message="the messages you missed cannot be read now; log in again later",
            )
            outbox.release(encode(failed))
            return False
        if truncated:  # nothing left to replay after all (pruned meanwhile)
            head.append(encode(ReplayTruncated(oldest_seq=upto + 1)))
        head.append(encode(ReplayDone(count=count, seq=upto)))
        self.stats.add("replays")
        if told_truncated or truncated:
            self.stats.add("replays_truncated")
        if not outbox.release(b"".join(head)):
            return False
        if first < upto and (inbox or mlog.maybe_inbox(name)):
            # The DMs waiting in (first, upto] were in it: they leave the inbox once the
            # client shows it has them (_replay_received, or a later login's since);
            # until then a kill or a drop loses none. Those before a replay limit's cut
            # keep waiting as they were.
            conn.inbox_range = (first, upto)
        return True

    def _replay_received(self, conn: Conn) -> None:
        """Reader thread, at the client's ``exit`` (IRC: QUIT): if its whole replay had
        been written to it by then, the DMs from the inbox in it have reached it
        (docs/PROTOCOL.md §Offline DMs).

        Only an exit says so: a client says it while it runs, after what it was sent
        (a client whose replay was still being written when it said it has not had it
        all). A connection that merely closes proves nothing, not even an orderly close:
        a client killed after reading the bytes but before showing them closes just the
        same. So anything but an exit (the server killed, a drop, a close, a takeover,
        a shutdown) leaves the DMs waiting: sent again at the next login, never lost."""
        got, mlog = conn.inbox_range, self._log
        if got is None or conn.username is None or mlog is None:
            return
        conn.inbox_range = None
        after, upto = got
        outbox = conn.outbox
        if not outbox.accepting:
            return
        if conn.late_inbox:
            # Read before the backlog: every message up to it was handed to this
            # connection (cluster_deliver), so with nothing left unwritten it has them.
            last = mlog.last_seq
            if not outbox.backlog:
                upto = max(upto, last)
        if after < upto and not outbox.replay_unwritten:
            self._inbox_received(conn.username, after, upto)

    def _inbox_received(self, name: str, after: int, upto: int) -> None:
        """The DMs waiting for ``name`` with ``after < seq <= upto`` reached them."""
        assert self._log is not None
        key = username_key(name)
        try:
            self._log.inbox_received(name, after, upto)
        except StorageError as exc:
            # Their rows stay (none is lost), but the proof is kept: a login without
            # since replays none of them (_replay), and the next one retries the delete.
            with self._receipts_lock:
                # Only a proof of a prefix of the inbox: DMs at or below ``after`` may
                # not have reached them (a replay cut by its limit).
                got = self._receipts.get(key, 0)
                if got >= after and got < upto:
                    self._receipts[key] = upto
            log.warning(
                "DMs up to seq %d reached %s but their inbox rows stay (deleted later): %s",
                upto,
                name,
                exc,
            )

    def _received(self, name: str) -> int:
        """The seq up to which the DMs waiting for ``name`` provably reached them."""
        with self._receipts_lock:
            return self._receipts.get(username_key(name), 0)

    def _clear_received(self, name: str) -> None:
        """Reader thread, before a login: delete the inbox rows a kept proof covers."""
        got = self._received(name)
        if got == 0 or self._log is None:
            return
        try:
            self._log.inbox_received(name, 0, got)
        except StorageError as exc:
            log.warning("DMs up to seq %d still wait for %s: %s", got, name, exc)
            return
        with self._receipts_lock:
            if self._receipts.get(username_key(name)) == got:
                del self._receipts[username_key(name)]

    def _history(self, conn: Conn, cmd: HistoryCommand) -> None:
        """docs/PROTOCOL.md §history; only the caller's own DMs can be read."""
        assert conn.username is not None
        if self._log is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_COMMAND, "this server keeps no history (--history off)", cmd.id
            )
        room, from_seq = LOBBY, 0
        if conn.rooms and cmd.room is not None and self._rooms is not None:
            # A member reads from their join (all of it under +H): docs/PROTOCOL.md
            # §Who may read the past. A v1 connection's room field is ignored (lobby).
            room, from_seq = self._rooms.readable_from(conn.username, cmd.room, cmd.id)
        try:
            rows, more = self._log.history(
                conn.username,
                before=cmd.before,
                after=cmd.after,
                limit=cmd.limit,
                with_user=cmd.with_user,
                room=room,
                from_seq=from_seq,
            )
        except StorageError as exc:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE, f"history cannot be read now: {exc}", cmd.id
            ) from exc
        page = History(
            messages=tuple(
                HistoryMessage(
                    seq=m.seq,
                    kind="pm" if m.to is None else "dm",
                    sender=m.sender,
                    to=m.to,
                    message=m.body,
                    ts=m.ts,
                    room=room if conn.rooms and m.to is None else None,
                )
                for m in rows
            ),
            has_more=more,
            room=room if conn.rooms and cmd.with_user is None else None,
            id=cmd.id,
        )
        self._reply(conn, encode(page))

    def prune_history(self) -> int:
        """One pruning pass (docs/PROTOCOL.md §Retention); the housekeeping of the
        ``chat-prune`` thread, and for tests. How many messages were deleted."""
        if self._log is None:
            return 0
        c = self.config
        return self._log.prune(
            now=self._wall(),
            max_age=c.history_days * 86400 if c.history_days else None,
            max_count=c.history_max,
            pause=self._stopping.is_set,
        )

    def _prune_loop(self) -> None:
        while not self._stopping.wait(self.config.history_prune_interval):
            self.prune_history()

    def _begin(
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
            # Under the publisher's lock: login_ok lists what the next delta applies to.
            with self._publisher.subscribing(conn) as published:
                old, legacy = self._join(conn, name, new_user, rid, published, seq, epoch, hold)
        else:
            old, legacy = self._join(conn, name, new_user, rid, None, seq, epoch, hold)
            self._publisher.changed()

        def begun() -> None:
            # Queued frames keep their order, so whatever reached the new session
            # meanwhile still follows its login_ok.
            conn.outbox.push()
            self.stats.add("logins")
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
                self._arrived.append((name, conn.addr, new_user))

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
        # message log runs under it: _begin_logged).
        rooms = self._rooms.rooms_of(name) if conn.rooms and self._rooms is not None else ()
        version = ROOMS_VERSION if conn.rooms else PROTOCOL_VERSION
        with self._lock:
            old = self._by_key.get(key)
            self._by_key[key] = conn
            conn.username = name
            if old is not None:
                self._members.pop(old, None)
                self._legacy.pop(old, None)
            elif self._live.add(name):
                self._names = None
            if published is None:
                ok = LoginOk(
                    username=name,
                    new_user=new_user,
                    users=self._names_locked(),
                    features=(Feature.ROOMS.value,) if conn.rooms else (),
                    version=version,
                    rooms=rooms,
                    seq=seq,
                    epoch=epoch,
                    replay=hold,
                    limits=self._limits,
                    id=rid,
                )
                self._legacy[conn] = None
            else:
                ok = LoginOk(
                    username=name,
                    new_user=new_user,
                    # An empty slot that SortedNames.frame_with fills with the names.
                    users=cast(tuple[str, ...], msgspec.Raw(b"[]")),
                    features=(Feature.USERS_DELTA.value, Feature.ROOMS.value)
                    if conn.rooms
                    else (Feature.USERS_DELTA.value,),
                    version=version,
                    rooms=rooms,
                    seq=seq,
                    epoch=epoch,
                    replay=hold,
                    limits=self._limits,
                    id=rid,
                )
            frame = encode(ok)
            if published is not None:
                frame = published.frame_with(name, frame)
            conn.outbox.queue(frame)
            if hold:
                conn.outbox.hold()  # until the replay is written (_replay)
            self._members[conn] = None
            self._roster = None
            legacy = self._push_users_locked(joined=name)
        return old, legacy

    def _announce(self, conn: Conn) -> None:
        assert conn.username is not None
        self._publisher.announce(conn.username)
        conn.announced = True

    def _forget(self, conn: Conn) -> None:
        with self._lock:
            self._forget_locked(conn)

    def _forget_locked(self, conn: Conn) -> None:
        """Out of the open connections and its address's count. Once per connection:
        the reaper's _leave, or _admit when its thread could not start."""
        self._conns.discard(conn)
        if conn.irc is not None and conn.irc.guest is not None:
            self._release_guest_locked(conn, conn.irc.guest)
        n = self._per_ip.get(conn.ip, 0) - 1
        if n > 0:
            self._per_ip[conn.ip] = n
        else:
            self._per_ip.pop(conn.ip, None)

    def _depart(self, conn: Conn) -> None:
        """Reader thread, at its end: hand ``conn`` to the reaper, taking no lock unless
        this is the first departure since the reaper last looked (doorbell.py). It
        leaves ``_conns`` here, not in the reaper, so that once its thread has ended it
        is no longer counted open (``connection_count``, ``max_connections``)."""
        self._conns.discard(conn)  # a set's discard: one C call under the GIL, no lock
        self._departed.append(conn)
        self._reap_bell.ring()

    def _reap_loop(self) -> None:
        while not self._stopping.is_set():
            rung = self._reap_bell.wait(0.5)
            if rung:
                self._reap_bell.answer()
            self._log_arrivals()  # before the departures: one may be of the same user
            if rung:
                self._reap()
            self._storm.tick()  # the switch interval back once a storm is over

    def _log_arrivals(self) -> None:
        """Reaper thread: the logins since it last looked, a line each, or one line for
        a storm of them (as ``_reap`` does departures)."""
        arrived = self._arrived
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

    def _reap(self) -> None:
        """Every departure handed over so far: out of the roster, and announced."""
        departed = self._departed
        left: list[str] = []
        waiting: list[threading.Event] = []
        while True:
            try:
                conn = departed.popleft()
            except IndexError:  # empty (stop() may reap while the reaper ends)
                break
            name = self._leave(conn)
            if name is not None:
                left.append(name)
            if conn.left is not None:
                waiting.append(conn.left)
        if waiting:
            # A fan-out pass that chose them as a DM's recipient before they left sends
            # to them before it lets go of its lock; only then may they close.
            with contextlib.suppress(TimeoutError):
                self._fanout.exclusive(_nothing, timeout=self.config.shutdown_grace)
            for event in waiting:
                event.set()
        if not left:
            return
        self._publisher.changed()
        if len(left) <= 10:
            for name in left:
                log.info("%s left", name)
        else:  # a storm: one line, not thousands (each a write that yields the GIL)
            log.info("%d users left: %s, ...", len(left), ", ".join(left[:10]))

    def _leave(self, conn: Conn) -> str | None:
        """Out of the roster (reaper thread); the name whose departure this is, if any."""
        self._bots.forget(conn)  # what it announced goes with it
        if conn.deltas:
            self._publisher.unsubscribe(conn)
        with self._lock:
            self._forget_locked(conn)
            name = conn.username
            if name is None or self._by_key.get(username_key(name)) is not conn:
                return None  # never logged in, or replaced by a newer session of theirs
            del self._by_key[username_key(name)]
            self._members.pop(conn, None)
            self._legacy.pop(conn, None)
            self._roster = None
            self._live.discard(name)
            self._names = None
            legacy = self._push_users_locked(left=name)
        push_all(c.outbox for c in legacy)
        if self._bus is not None:
            self._bus.release(name)
        return name

    def _push_users_locked(
        self, joined: str | None = None, left: str | None = None
    ) -> tuple[Conn, ...]:
        """A v1 push to the connections without users_delta (docs/PROTOCOL.md §login):
        queued to each under the lock (so all see the pushes in one order), returned to
        be pushed once it is let go (``push_all``: sends release the GIL)."""
        if not self._legacy:
            return ()
        data = encode(UserList(users=self._names_locked(), joined=joined, left=left))
        legacy = tuple(self._legacy)
        for c in legacy:
            c.outbox.queue(data)
        return legacy

    # ---------------------------------------------------------------- the cluster
    # Its callbacks, on the bus's consumer thread, are chatroom_server.node's.

    def is_server_operator(self, name: str) -> bool:
        """Whether ``name`` is a server operator, read from the database now (whois,
        IRC WHOIS's 313); none in a cluster yet (no gate there)."""
        gate = self._gate
        return gate is not None and gate.is_operator(name)

    def irc_ident(self, name: str) -> tuple[str, str]:
        """The username and real name an IRC client gave in USER, for WHO, WHOIS and
        NAMES; a JSON client's are its name."""
        with self._lock:
            conn = self._by_key.get(username_key(name))
        if conn is not None and conn.irc is not None and conn.irc.user:
            return conn.irc.user, conn.irc.realname or name
        return name, name

    def roster(self) -> tuple[Conn, ...]:
        """The logged-in connections with their login_ok (the fan-out's recipients): the
        snapshot, rebuilt under the lock if a login or departure made it stale."""
        r = self._roster
        if r is None:
            with self._lock:
                r = self._roster
                if r is None:
                    r = self._roster = tuple(self._members)
        return r

    def names(self) -> tuple[str, ...]:
        """The logged-in names, sorted ignoring case (a snapshot, as for roster())."""
        n = self._names
        if n is None:
            with self._lock:
                n = self._names_locked()
        return n

    def _names_locked(self) -> tuple[str, ...]:
        n = self._names
        if n is None:
            n = self._names = self._live.snapshot()
        return n

    def _legacy_ticks(self) -> None:
        """The periodic v1 push (docs/PROTOCOL.md §Server pushes)."""
        while not self._stopping.wait(self.config.users_interval):
            with self._lock:
                legacy = self._push_users_locked()
            push_all(c.outbox for c in legacy)

    def _housekeeping_loop(self) -> None:
        while not self._stopping.wait(self.config.housekeeping_interval):
            self.sweep()

    def sweep(self) -> int:
        """Close connections past their deadlines (docs/PROTOCOL.md §Timeouts); return how
        many. Runs every ``housekeeping_interval`` s; tests call it after moving the clock."""
        c = self.config
        now = self._clock()
        with self._lock:
            conns = list(self._conns)
        closed = 0
        for conn in conns:
            irc = conn.irc
            if (
                irc is not None
                and irc.registered
                and c.idle_timeout
                and not irc.pinged
                and now - conn.last_rx > c.idle_timeout / 2
            ):
                # IRC clients answer PING rather than send keepalives of their own.
                irc.pinged = True
                irc.reply(f"PING :{irc.name}")
            if (
                conn.username is None
                and not conn.in_login
                and now - conn.connected_at > c.login_timeout
            ):
                log.info("closing %r: not logged in within %g s", conn, c.login_timeout)
            elif (
                conn.username is not None
                and c.idle_timeout
                and (now - conn.last_rx > c.idle_timeout)
            ):
                log.info("closing %r: nothing received for %g s", conn, c.idle_timeout)
            else:
                conn.outbox.check_stall(now)  # slow consumers that make no progress
                continue
            conn.outbox.finish(_BYE_TIMEOUT)
            closed += 1
        return closed

    # ---------------------------------------------------------------- introspection

    @property
    def online(self) -> tuple[str, ...]:
        """The names of the logged-in users, sorted ignoring case."""
        return self.names()

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._conns)


def _guest_holds(name: str) -> str:
    return f"{name} is an IRC guest's nick right now; try again once they leave"


def _hung_up(sock: socket.socket) -> bool:
    """Whether the peer has closed the connection (its end of stream, or a reset, is
    here), whatever bytes it sent before that are still unread."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP)
    return any(
        ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, ev in poller.poll(0)
    )


def _nothing() -> None:
    pass


def _replay_frame(m: Stored, user_key: str, rooms: bool = False) -> bytes:
    """A stored message as the frame a live recipient got, marked ``replay``; one that
    the resuming user (``user_key``) sent carries its cid (docs/PROTOCOL.md §Resume), so
    that a client tells its own messages, acked or not, from ones it has not seen. With
    ``rooms`` (a v2 connection, whose replay has its rooms' rows): a room event as its
    ``room_event``, a message of a room but lobby with its ``room``."""
    if m.event is not None:
        return encode(RoomService.event_frame(m, replayed=True))
    cid = m.cid if m.cid is not None and username_key(m.sender) == user_key else None
    if m.to is None:
        room = m.room if rooms and m.room is not None and room_key(m.room) != LOBBY else None
        return encode(
            Broadcast(
                sender=m.sender,
                message=m.body,
                ts=m.ts,
                seq=m.seq,
                replayed=True,
                cid=cid,
                room=room,
            )
        )
    return encode(
        DirectMessage(
            sender=m.sender, to=m.to, message=m.body, ts=m.ts, seq=m.seq, replayed=True, cid=cid
        )
    )
