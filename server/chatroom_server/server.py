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
- **reaper thread** (``chat-reaper``, :mod:`chatroom_server.presence`): takes ended
  connections out of the roster and announces their departures (``Presence.reap``).
- **users thread** (``chat-users``, :mod:`chatroom_server.roster`): coalesced
  ``users_delta`` pushes and the periodic user-list push (docs/PROTOCOL.md §Extensions).
- **cluster threads** (``chat-cluster``, ``chat-cluster-beat``; only with
  ``--cluster``, :mod:`chatroom_server.cluster.bus`): the consumer of the cluster's
  stream, which delivers every node's messages here in seq order
  (:mod:`chatroom_server.node`'s ``cluster_deliver``, between two fan-out passes) and
  applies other nodes' logins and departures to the presence (``cluster_joined``,
  ``cluster_left``); and the heartbeat and reaper.

The parts, each with one job and given only what it needs (docs/ARCHITECTURE.md):
:mod:`chatroom_server.presence` (the roster and its lock, ``Presence.lock``: the O(1)
login and departure argument is there), :mod:`chatroom_server.login` (passwords,
registrations, guests, the session's beginning), :mod:`chatroom_server.replay` (the
replay, history, retention), and :class:`~chatroom_server.backends.Backends`, what
``start()`` opens, shared by them. ``ChatServer._lock`` is the presence's lock under
the name the rest of the package knows.

Shared state and what guards it here:

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
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, cast

from chatroom.botcommands import BotCommandsCommand
from chatroom.errors import ProtocolError
from chatroom.moderation import AuditCommand, AuditEntry, AuditLog, ModerationCommand
from chatroom.protocol import (
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
    HistoryCommand,
    LoginCommand,
    PingCommand,
    PmCommand,
    Pong,
    UserList,
    UsersCommand,
    encode,
    username_key,
    validate_command,
)
from chatroom.rooms import LOBBY, RoomCommand, room_key
from chatroom.whois import Whois, WhoisCommand
from chatroom_server import logfmt
from chatroom_server.accounts import (
    HASHERS,
    AccountStore,
    AccountStoreBusy,
)
from chatroom_server.admission import Admission
from chatroom_server.backends import Backends
from chatroom_server.botcommands import BotDirectory, bot_commands_reply
from chatroom_server.commands import Dispatch
from chatroom_server.config import ConfigError, ServerConfig
from chatroom_server.conn import UNUSED, Conn
from chatroom_server.fanout import Direct, FanOut
from chatroom_server.irc import IrcOutbox, IrcSession, Translations
from chatroom_server.login import Login
from chatroom_server.messagelog import MessageLog, NewMessage, StorageError
from chatroom_server.metrics import server_tally
from chatroom_server.moderation import Moderation
from chatroom_server.node import _ELSEWHERE, ClusterNode
from chatroom_server.noderooms import NodeRooms
from chatroom_server.outbox import Flusher, Outbox
from chatroom_server.presence import Presence
from chatroom_server.readers import ReaderThread
from chatroom_server.replay import Replay
from chatroom_server.rooms import RoomBook
from chatroom_server.roomservice import RoomService
from chatroom_server.roomwire import RoomWire
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


class _IrcLines(Protocol):
    """An IRC connection's outbox (irc.render.IrcOutbox, or a web one speaking IRC)."""

    def send_irc(self, data: bytes) -> bool: ...


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

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = c = config or ServerConfig()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._storm = DepartureStorm(c.storm_switch_interval)
        self._bots = BotDirectory()  # docs/PROTOCOL.md §Bot commands (its own lock)
        self.handler_crashes = 0  # written under _lock
        self.stats = server_tally()  # the metrics' counts (chatroom_server.metrics)
        self._clock = c.clock
        self._wall = c.wall_clock
        # What start() opens, shared with the parts below (chatroom_server.backends).
        self._b = b = Backends()
        # The parts, each with one job (docs/ARCHITECTURE.md): who is online, and its
        # lock (chatroom_server.presence); the log read back (replay); logins (login).
        self._presence = presence = Presence(
            c, b, self.stats, self._stopping, self._storm, self._bots
        )
        b.fanout = FanOut(presence.roster, coalesce=c.coalesce)  # start() adds the log
        self._replay = Replay(c, b, self.stats, self._stopping, self._reply)
        self._admission: Admission[Conn] = Admission(
            c.login_slots,
            self._start,
            self._never_started,
            lambda conn: conn.sock.fileno(),
            self._queued,
        )
        self._logins = Login(
            c,
            b,
            presence,
            self._replay,
            self.stats,
            self._stopping,
            self._admission,
            self._let_go,
            self._send_error,
        )
        # The presence's, by the names the rest of the package and the tests know:
        # the same objects, never rebound (chatroom_server.presence guards them).
        self._lock = presence.lock
        self._by_key = presence.by_key
        self._conns = presence.conns
        self._publisher = presence.publisher
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
        self._node: ClusterNode | None = None  # what the bus calls here (start())
        # Cluster: rooms as the stream applies them (chatroom_server.noderooms; start()).
        self._node_rooms: NodeRooms | None = None
        # IRC listeners: (socket, with TLS); bound by start() when configured.
        self._irc_listeners: list[tuple[socket.socket, bool]] = []
        self._irc_translations = Translations()
        self.irc_addresses: list[tuple[str, int]] = []
        # The web port's listener (docs/WEB.md), bound by start() when configured, and
        # the client's files, read once.
        self._web_listener: socket.socket | None = None
        self.web_address: tuple[str, int] | None = None
        self._web_files = load_static() if c.web_port is not None else {}
        self._web_origins = frozenset(c.web_origins)
        self._pg: PgDatabase | None = None
        self._tls: ssl.SSLContext | None = None
        self.address: tuple[str, int] = (c.host, c.port)
        self._rules = SessionRules(c, self._clock)
        # Every client command's handler and properties (chatroom_server.commands).
        self._commands: Dispatch[Conn] = Dispatch.bind(self, self._flush_batch)

    @property
    def catch_up_timeout(self) -> float:
        """Cluster: the longest a login waits for this node to deliver what was stored
        before it (Replay.catch_up)."""
        return self._replay.catch_up_timeout

    @catch_up_timeout.setter
    def catch_up_timeout(self, seconds: float) -> None:
        self._replay.catch_up_timeout = seconds

    # What start() opened, by the names the rest of the package and the tests read.
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
            self._listener = self._bind()
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
            return None if found is None else found.name

        return RoomWire(
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
            self._b.store = PgAccountStore(self._pg, HASHERS[c.password_hash])
            self._b.gate = ServerGate(PgSql.pooled(self._pg))
            # The stream position first, then the log's last seq: whatever is stored
            # in between is on the stream after that position, or filled from the log.
            remote = bus.snapshot()
            mlog = PgMessageLog(self._pg, publish=bus.publish, ready=bus.ready)
            self._b.log = mlog
            self._b.stored_seq = mlog.stored_seq
        except Exception:
            self._listener.close()
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
            self._listener.close()
            bus.close()
            self._pg.close()
            raise
        address = self._begin_serving()
        self._node = ClusterNode(self._b, self._presence, self._replay.delivered, self._node_rooms)
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
            for opened in (self._b.bus, self._b.store, self._b.log, self._pg):
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
        self._spawn(self._presence.reap_loop, "chat-reaper")
        if self.config.users_interval > 0:
            self._spawn(self._presence.legacy_ticks, "chat-users-v1")
        self._spawn(self._housekeeping_loop, "chat-housekeeping")
        if self._b.gate is not None:  # sessions a new ban names end (chatroom_server.servergate)
            gate, by_key = self._b.gate, self._by_key
            self._spawn(
                lambda: gate.watch(lambda: list(by_key.values()), self._stopping), "chat-bans"
            )
        if self._b.log is not None:
            self._spawn(self._replay.prune_loop, "chat-prune")
        log.info("listening on %s:%d", *self.address)
        if self._b.log is not None:
            log.info("message log: %s", self._b.log.describe())
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
        self._presence.reap_bell.ring()  # the reaper's wait ends now, not after its timeout
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
            if self._presence.reap_bell.wait(remaining):
                self._presence.reap_bell.answer()
                self._presence.reap()
        self.join_readers(deadline - time.monotonic())
        self._presence.log_arrivals()
        self._presence.reap()  # the reaper has stopped: the last departures, so nothing is left
        self._b.fanout.close()
        if self._flusher is not None:
            self._flusher.stop()
        if self._b.bus is not None:
            self._b.bus.close()
        if self._b.store is not None:
            self._b.store.close()
        if self._b.gate is not None:
            self._b.gate.close()
        if self._b.log is not None:
            self._b.log.close()
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
        now = self._clock()
        conn = Conn(num, sock, ip, addr, outbox, self._rules, now)
        if isinstance(outbox, IrcOutbox):
            conn.irc = outbox.session = IrcSession(
                self, conn, self.config.irc_channel, self._irc_translations
            )
        elif isinstance(outbox, WebOutbox):
            conn.web = outbox.session = WebSession(self, conn, self._web_files, self._web_origins)
        why = self._presence.admit(conn, self._logins.exempt(ip))
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
        self._presence.forget(conn)
        self._refuse(conn, "the server cannot take more connections")

    def _never_started(self, conn: Conn) -> None:
        """Stopping: ``conn`` waited in line for a login slot, and its thread never ran."""
        conn.outbox.finish(_BYE_SHUTDOWN)
        conn.outbox.close(linger=0.5)
        self._readers.discard(conn.thread)
        self._presence.forget(conn)
        self._reader_ended()

    def _let_go(self, conn: Conn) -> None:
        """Reader thread: its login slot, if it holds one, to the next in line."""
        if conn.slot:
            conn.slot = False
            self._admission.leave()

    def _reader_ended(self) -> None:
        if next(self._reader_ends) == self._stop_total + 1:
            self._no_readers.set()  # the last of them, after stop()'s own end
            self._presence.reap_bell.ring()  # stop() waits on the bell

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
                self._b.fanout.settle(conn, timeout=self.config.shutdown_grace)
                if not dead and conn.username is not None and not self._stopping.is_set():
                    # A client that can still see its socket close sees it only once
                    # it is offline: a DM sent to it after that is queued for its next
                    # login, never handed to this closing connection and lost (the
                    # reaper does the leaving; a reset client resumes from its cursor).
                    conn.left = threading.Event()
                self._presence.depart(conn)
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

    def _guest_direct(self, conn: Conn, cmd: DmCommand) -> bool:
        """--irc-guests: a DM from or to a guest, delivered live and never stored: a
        guest is one session, and nothing said to it or by it in private may reach
        whoever holds its nick later (a guest, or an account of that name), through
        history, a replay or offline DMs. False: no guest on either side (the usual
        path, ``_direct``). Like a DM with ``--history off``: no seq, not queued for
        someone offline."""
        assert conn.username is not None and self._b.store is not None
        key = username_key(cmd.to)
        target, holder = self._presence.holders(key)
        from_guest = conn.irc is not None and conn.irc.guest is not None
        if target is None:
            # Nobody online by that name. A name a guest holds (arriving) has no
            # account; else ask the accounts here, not in _direct: a guest claiming the
            # name meanwhile would be found there, and the DM stored.
            try:
                account = None if holder is not None else self._b.store.get(cmd.to)
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
            self._presence.announce(conn)
        to = target.username
        assert to is not None
        ts = self._wall()
        dm = encode(DirectMessage(sender=conn.username, to=to, message=cmd.message, ts=ts))
        ack = encode(Ack(command="dm", to=to, id=cmd.id))

        def deliver() -> None:  # behind this sender's broadcasts still queued, if any
            target.outbox.send(dm)
            conn.outbox.send(ack)

        self._b.fanout.after(conn, deliver)
        return True

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
            self._b.fanout.after(conn, lambda: conn.outbox.finish(bye))

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

    def send_ordered(self, conn: Conn, data: bytes) -> None:
        """irc.session.Core: the gateway's own lines, behind the public messages its
        earlier lines handed over (a room message is checked, and maybe refused, by the
        fan-out's pass: chatroom_server.fanout, "Rooms"). At once when nothing is. On
        the connection's reader thread only (it owns ``batch`` and ``handed``)."""
        outbox = cast(_IrcLines, conn.outbox)
        if conn.batch:
            self._flush_batch(conn)
        if conn.done == conn.handed:
            outbox.send_irc(data)
        else:
            self._b.fanout.after(conn, lambda: outbox.send_irc(data))

    def _reply(self, conn: Conn, data: bytes) -> None:
        """Send to the connection's own client, behind its broadcasts still queued."""
        if conn.done == conn.handed:
            conn.outbox.send(data)
        else:
            self._b.fanout.after(conn, lambda: conn.outbox.send(data))

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
            self._b.fanout.after(conn, lambda: self._publisher.reply(conn, rid))
        else:
            self._b.fanout.after(
                conn, lambda: conn.outbox.send(encode(UserList(users=self.names(), id=rid)))
            )

    def _audit(self, conn: Conn, cmd: AuditCommand) -> None:
        """The moderation audit log, for server operators (docs/PROTOCOL.md
        §Moderation). Two database reads on this reader thread, no lock of ours."""
        assert conn.username is not None
        gate = self._b.gate
        if gate is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "no audit log in a cluster yet", cmd.id)
        try:
            if not gate.is_operator(conn.username):
                why = "the audit is for server operators"
                raise ProtocolError(ErrorCode.NOT_OPERATOR, why, cmd.id)
            rows = gate.audit(cmd.room, cmd.limit)
        except AccountStoreBusy as exc:  # the database cannot answer now
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
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
            for seq, ts, actor, action, target, room, reason, detail in rows
        )
        self._reply(conn, encode(AuditLog(entries=entries, id=cmd.id)))

    def _ping(self, conn: Conn, cmd: PingCommand) -> None:
        self._reply(conn, _PONG if cmd.id is None else encode(Pong(id=cmd.id)))

    def _room(self, conn: Conn, cmd: RoomCommand | ModerationCommand) -> None:
        """A room command (docs/PROTOCOL.md §Rooms): unknown to a connection without
        rooms, as to a version-1 server."""
        if not conn.rooms or self._b.rooms is None:
            tag = cmd.__struct_config__.tag
            raise ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"unknown command {tag!r}", cmd.id)
        self._b.rooms.command(conn, cmd)

    def _bot_commands(self, conn: Conn, cmd: BotCommandsCommand) -> None:
        """docs/PROTOCOL.md §Bot commands (chatroom_server.botcommands)."""
        self._reply(conn, bot_commands_reply(self._bots, conn, cmd))

    def _whois(self, conn: Conn, cmd: WhoisCommand) -> None:
        """docs/PROTOCOL.md §whois. Reads the operators table now, at every ask, so a
        revoke shows at the next one (no cache here to go stale)."""
        assert self._b.store is not None
        key = username_key(cmd.user)
        with self._lock:
            target = self._by_key.get(key)
        name = None if target is None else target.username
        if name is None:
            try:
                account = self._b.store.get(cmd.user)
            except AccountStoreBusy as exc:
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
            if account is None:
                raise ProtocolError(ErrorCode.UNKNOWN_USER, f"no user named {cmd.user!r}", cmd.id)
            name = account.name
        try:
            oper = self.is_server_operator(name)
        except AccountStoreBusy as exc:  # the database cannot answer now
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
        reply = Whois(user=name, online=target is not None, server_operator=oper, id=cmd.id)
        self._reply(conn, encode(reply))

    def _exit(self, conn: Conn, cmd: ExitCommand) -> bool:
        self._replay.replay_received(conn)
        self._b.fanout.after(conn, lambda: conn.outbox.finish(_BYE_EXIT))  # nothing follows
        return False

    # ---------------------------------------------------------------- messages

    def _public(self, conn: Conn, cmd: PmCommand) -> None:
        assert conn.username is not None
        if not conn.announced:
            self._presence.announce(conn)
        # Encoded once; every recipient gets the same bytes. Queued in the batch of this
        # read: the public messages that arrived in one recv() go out as one send() per
        # recipient (_flush_batch), so under load, when frames queue up, the per-recipient
        # syscall and outbox lock are paid once per batch instead of once per message.
        # With the message log the fan-out adds each one's seq once it is stored. A room's
        # message (§Rooms, rooms need the log) is checked, stored and sent to its members
        # by the same fan-out pass (chatroom_server.fanout, "rooms").
        room = cmd.room if conn.rooms and cmd.room is not None else None
        if room is not None and room_key(room) == LOBBY:
            room = None
        ts = self._wall()
        if conn.batch is UNUSED:  # the first message of this read (see Conn)
            conn.batch, conn.acks, conn.msgs, conn.rids = [], [], [], []
        if room is None:
            conn.batch.append(encode(Broadcast(sender=conn.username, message=cmd.message, ts=ts)))
            conn.acks.append(_ACK_PM if cmd.id is None else encode(Ack(command="pm", id=cmd.id)))
        else:
            frame = Broadcast(sender=conn.username, message=cmd.message, ts=ts, room=room)
            conn.batch.append(encode(frame))
            conn.acks.append(encode(Ack(command="pm", room=room, id=cmd.id)))
        if self._b.log is not None:
            conn.msgs.append(NewMessage(conn.username, None, cmd.message, ts, cmd.cid, room=room))
            conn.rids.append(cmd.id)

    def _flush_batch(self, conn: Conn) -> None:
        """Hand the batched broadcasts to the fan-out (chatroom_server.fanout): stored (with
        the message log), then to every other logged-in connection, then the acks
        (docs/PROTOCOL.md §pm: the ack follows the hand-off)."""
        frames, acks, msgs, rids = conn.batch, conn.acks, conn.msgs, conn.rids
        conn.batch = conn.acks = conn.msgs = conn.rids = UNUSED
        if self._b.log is None:
            self._b.fanout.broadcast(conn, frames, acks)
        else:
            self._b.fanout.broadcast(conn, frames, acks, msgs, rids)

    def _direct(self, conn: Conn, cmd: DmCommand) -> None:
        assert conn.username is not None and self._b.store is not None
        if not conn.announced:
            self._presence.announce(conn)
        key = username_key(cmd.to)
        with self._lock:
            target = self._by_key.get(key)
        to = target.username if target is not None else None
        if to is None:
            try:
                account = self._b.store.get(cmd.to)
            except AccountStoreBusy as exc:
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
            if account is None:
                raise ProtocolError(ErrorCode.UNKNOWN_USER, f"no user named {cmd.to!r}", cmd.id)
            if self._b.log is None:
                raise ProtocolError(ErrorCode.USER_OFFLINE, f"{cmd.to} is not online", cmd.id)
            to = account.name
        ts = self._wall()
        dm = encode(DirectMessage(sender=conn.username, to=to, message=cmd.message, ts=ts))
        ack = encode(Ack(command="dm", to=to, id=cmd.id))
        if self._b.log is not None:
            # Stored first; whether the recipient is online is decided then (fanout.Direct).
            msg = NewMessage(conn.username, to, cmd.message, ts, cmd.cid)
            self._b.fanout.direct(Direct(conn, dm, ack, msg, cmd.id, key))
            return
        assert target is not None

        def deliver() -> None:  # behind this sender's broadcasts still queued, if any
            target.outbox.send(dm)
            conn.outbox.send(ack)

        self._b.fanout.after(conn, deliver)

    # ---------------------------------------------------------------- the parts
    # What the command table (chatroom_server.commands), the IRC gateway
    # (irc.session.Core) and the operations ask of the server, answered by its parts:
    # chatroom_server.presence, login and replay.

    def _login(self, conn: Conn, cmd: LoginCommand) -> bool:
        return self._logins.login(conn, cmd)

    def _history(self, conn: Conn, cmd: HistoryCommand) -> None:
        self._replay.history(conn, cmd)

    def guest_login(self, conn: Conn, name: str) -> bool | None:
        """--irc-guests: a session under a nick no account has (Login.guest_login)."""
        return self._logins.guest_login(conn, name)

    def check_password(self, conn: Conn, name: str, password: str) -> bool | None:
        """SASL: whether ``password`` is ``name``'s (Login.sasl)."""
        return self._logins.sasl(conn, name, password)

    def oper(self, name: str, password: str) -> str:
        """IRC OPER (Login.oper)."""
        return self._logins.oper(name, password)

    def prune_history(self) -> int:
        """One pruning pass (docs/PROTOCOL.md §Retention; Replay.prune_history); for
        tests too. How many messages were deleted."""
        return self._replay.prune_history()

    def roster(self) -> tuple[Conn, ...]:
        """The logged-in connections with their login_ok (Presence.roster)."""
        return self._presence.roster()

    def names(self) -> tuple[str, ...]:
        """The logged-in names, sorted ignoring case (Presence.names)."""
        return self._presence.names()

    def irc_ident(self, name: str) -> tuple[str, str]:
        """The username and real name an IRC client gave in USER (Presence.irc_ident)."""
        return self._presence.irc_ident(name)

    # ---------------------------------------------------------------- the cluster
    # Its callbacks, on the bus's consumer thread, are chatroom_server.node's.

    def is_server_operator(self, name: str) -> bool:
        """Whether ``name`` is a server operator, read from the database now (whois,
        IRC WHOIS's 313); on a cluster's database too."""
        gate = self._b.gate
        return gate is not None and gate.is_operator(name)

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
                # Straight to the socket, not irc.reply (send_ordered): that one is the
                # reader thread's, which owns the batch and the fan-out counts.
                cast(_IrcLines, conn.outbox).send_irc(f"PING :{irc.name}\r\n".encode())
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
        return self._presence.connection_count
