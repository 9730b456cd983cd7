"""The server's settings: :class:`ServerConfig`, what ``ChatServer(config)`` is given.

Its fields are grouped as chat-server's options are (:mod:`chatroom_server.options`,
whose table generates the command line): where it listens, storage, IRC, the cluster,
limits per connection, and tuning. It stays one flat, frozen dataclass because it is
the embedding API: ``ChatServer(ServerConfig(port=0, ...))`` and the test kit's
``running_server(**options)`` name its fields directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chatroom.protocol import DEFAULT_PORT, Limits
from chatroom_server.olines import OperLine, ServerPassword


class ConfigError(Exception):
    """A server option cannot be used (e.g. an unreadable TLS certificate)."""


@dataclass(frozen=True)
class ServerConfig:
    """Every server option; ``chat-server --help`` and the README list them."""

    # -- listen --------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key, serve TLS 1.2+
    tls_key: Path | None = None  # PEM private key (None: it is in tls_cert)
    send_buffer: int | None = None  # SO_SNDBUF per connection; None = the kernel's autotuning
    # Bytes asked of recv() while data keeps coming (idle: listeners.IDLE_RECV). Small on
    # purpose: CPython mallocs the full size from the thread's glibc arena, then shrinks
    # it; with 64 KiB, hundreds of threads fragmented their arenas and RSS grew without
    # bound (docs/PERFORMANCE.md, "The soak"); 4 KiB stays flat.
    # Commands are small; a bigger frame just takes several reads.
    recv_size: int = 4096
    shutdown_grace: float = 3.0  # seconds to flush goodbyes at shutdown

    # -- storage: accounts and the message log -------------------------------------------
    db_path: Path = Path("chatroom.db")
    password_hash: str = "owasp"  # a key of accounts.HASHERS; "load-test" for load tests only
    # The message log (docs/PROTOCOL.md §Message log). False: ephemeral, as protocol v1
    # began (no seq, user_offline for offline DMs, no history).
    history: bool = True
    history_days: float | None = 30.0  # prune messages older than this; None: keep
    history_max: int | None = 1_000_000  # keep at most this many messages; None: all
    history_prune_interval: float = 60.0  # seconds between pruning passes
    durability: str = "normal"  # "full": fsync every group commit (power loss)
    replay_limit: int = 10_000  # messages a resume replays at most
    # Rooms (docs/PROTOCOL.md §Rooms, §Limits): rooms in all, and rooms per user.
    max_rooms: int = 10_000
    max_rooms_per_user: int = 100

    # -- the IRC gateway (docs/IRC.md): off unless a port is given; TLS with tls_cert ------
    irc_port: int | None = None
    irc_tls_port: int | None = None
    irc_channel: str = "#lobby"
    # IRC clients without a password may use a nick no account has, for the session
    # only (nothing registered): for IRC conformance suites and open test servers.
    irc_guests: bool = False
    irc_server_name: str = "chatroom"  # the server's name in IRC prefixes, 004 and PONG
    # O-lines (chatroom_server.olines, docs/IRC.md "Operators"): OPER NAME PASSWORD makes
    # an IRC session a server operator until it ends. Only from here, never a client.
    irc_opers: tuple[OperLine, ...] = ()
    # The server password (docs/IRC.md "Server password"): every IRC client says it with
    # PASS before registering, or gets 464 and is closed. None: no server password.
    irc_password: ServerPassword | None = None

    # -- the web port (docs/WEB.md): the web client at /, the protocol over WebSocket at
    # /ws; off unless a port is given; TLS with tls_cert. The origins a browser page may
    # connect from (empty: the host the request was sent to).
    web_port: int | None = None
    web_origins: tuple[str, ...] = ()

    # -- the cluster (docs/CLUSTER.md): Redis for fan-out and presence, PostgreSQL for the
    # accounts and the message log. Both or neither.
    cluster: str | None = None  # redis://HOST:PORT/DB
    cluster_db: str | None = None  # postgresql://USER@HOST/DBNAME
    cluster_prefix: str = "chatroom"  # Redis key prefix: one cluster per prefix
    node_timeout: float = 5.0  # seconds without a heartbeat before a node is reaped

    # -- limits per connection (docs/PROTOCOL.md §Flood control and §Timeouts,
    # docs/SECURITY.md) ------------------------------------------------------------------
    limits: Limits = field(default_factory=Limits)
    max_output: int = 1024 * 1024  # bytes of unsent output before a client is dropped
    stall_timeout: float = 10.0  # seconds a backlog may make no progress
    max_failed_logins: int = 5  # per connection, then it is closed
    max_errors_in_row: int = 10  # protocol errors in a row, then it is closed
    max_connections: int = 10_000
    rate_limit: float | None = 10.0  # commands/s per connection; None = off (load tests)
    rate_burst: int = 20
    flood_factor: float = 5.0  # over rate_limit * flood_factor ...
    flood_seconds: int = 5  # ... for this many seconds in a row disconnects
    login_timeout: float = 30.0  # seconds to log in after connecting
    max_frames_before_login: int = 20
    idle_timeout: float = 120.0  # seconds without a frame from a logged-in client; 0 = off
    max_per_ip: int = 100  # connections per address
    exempt_loopback: bool = True  # loopback is exempt from per-address limits
    # Wrong passwords (limits.LoginThrottle): per account and address, the free ones
    # before a wait that doubles from 1 s up to the max; per address, any accounts;
    # per account from anywhere, a ceiling that slows checks and never refuses them.
    login_free_failures: int = 3
    login_backoff_max: float = 60.0
    login_address_free: int = 20
    login_account_burst: int = 30  # checks of one account at once, then ...
    login_account_gap: float = 1.0  # ... one per this many seconds, in turn
    registrations_per_ip: int = 5  # new accounts per address ...
    registration_window: float = 60.0  # ... per this many seconds

    # -- tuning: pushes, the fan-out, housekeeping ---------------------------------------
    users_interval: float = 30.0  # seconds between periodic user-list pushes; 0 = off
    users_window: float = 0.1  # shortest time between two users_delta pushes
    # Longest a busy fan-out waits for more messages to share its sends (fanout.py,
    # "Coalescing"); 0: every pass at once. 10 ms, not 20: at 1,000 clients 20 ms
    # spends a third less CPU per delivery, but 10 ms is the setting that sustained 2x
    # the pre-issue server at p99 < 50 ms (docs/PERFORMANCE.md, "The most it sustains
    # at 1,000").
    coalesce: float = 0.01
    # The process's GIL switch interval while many connections end at once (storm.py);
    # None leaves it alone (chat-server sets 1 s: the process is its own).
    storm_switch_interval: float | None = None
    # Connections running their login at once (admission.py); in a storm the rest wait
    # in line, asleep or not yet threads. 0: no limit.
    login_slots: int = 16
    housekeeping_interval: float = 1.0  # seconds between timeout sweeps

    # -- clocks, injectable for tests -----------------------------------------------------
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time  # message timestamps
