"""``chat-server``: run the chat server in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from chatroom.extras import require_or_exit

# Before argon2 is imported (by chatroom_server.accounts): without the 'server' extra,
# chat-server says what to install in one line and exits with status 2.
require_or_exit("server", "chat-server")

from chatroom.protocol import DEFAULT_PORT, Limits  # noqa: E402
from chatroom_server import futexhash  # noqa: E402
from chatroom_server.accounts import HASHERS, AccountStore, AccountStoreError  # noqa: E402
from chatroom_server.cluster import ClusterUnavailable  # noqa: E402
from chatroom_server.config import ConfigError, ServerConfig  # noqa: E402
from chatroom_server.messagelog import MessageLog, StorageError  # noqa: E402
from chatroom_server.server import ChatServer  # noqa: E402

log = logging.getLogger("chatroom_server")


def _rate(text: str) -> tuple[float | None, int]:
    """``"10/20"`` -> (10.0, 20); ``"10"`` -> (10.0, 20); ``"off"`` -> (None, 20)."""
    default_burst = ServerConfig().rate_burst
    if text.strip().lower() == "off":
        return None, default_burst
    rate, _, burst = text.partition("/")
    try:
        r, b = float(rate), int(burst) if burst else default_burst
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RATE[/BURST] or off, got {text!r}") from None
    if r <= 0 or b < 1:
        raise argparse.ArgumentTypeError("rate and burst must be positive")
    return r, b


def _positive_or_off(text: str) -> float | None:
    if text.strip().lower() == "off":
        return None
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive, or 'off'")
    return value


def _count_or_off(text: str) -> int | None:
    if text.strip().lower() == "off":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1, or 'off'")
    return value


def _milliseconds(text: str) -> float:
    """Milliseconds, 0 or more (0: off)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError("must be 0 or more milliseconds")
    return value


# chat-server's GIL switch interval during a departure storm (chatroom_server.storm): the
# ChatServer default leaves the process's alone, since a program that embeds it owns that.
# 1 s, not 200 ms: at 200 ms about one drop of 10,000 in four took 39-65 s, not 2 (storm.py).
STORM_SWITCH_MS = 1000.0


def build_parser() -> argparse.ArgumentParser:
    d = ServerConfig()
    lim = Limits()
    p = argparse.ArgumentParser(
        prog="chat-server",
        description="Run the chatroom server (protocol: docs/PROTOCOL.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default=d.host, help="address to listen on")
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="TCP port; 0 picks a free one (the log says which)",
    )
    p.add_argument(
        "--db",
        default=str(d.db_path),
        help="the SQLite file for accounts and messages (created if missing); with "
        "--cluster, the PostgreSQL database all nodes share: postgresql://USER@HOST/DBNAME",
    )
    p.add_argument(
        "--irc-port",
        type=int,
        help="also serve IRC clients on this port (docs/IRC.md); off by default",
    )
    p.add_argument("--irc-tls-port", type=int, help="IRC over TLS on this port (needs --tls-cert)")
    p.add_argument(
        "--irc-channel", default=d.irc_channel, help="the room's channel name for IRC clients"
    )
    p.add_argument(
        "--irc-server-name",
        default=d.irc_server_name,
        help="the server's name to IRC clients (prefixes, 004, PONG)",
    )
    p.add_argument(
        "--irc-guests",
        action="store_true",
        help="IRC clients without a password may use a nick no account has, for the "
        "session only (conformance suites, open test servers)",
    )
    p.add_argument(
        "--cluster",
        metavar="REDIS_URL",
        help="run as one node of a cluster (docs/CLUSTER.md): redis://HOST:PORT/DB, with "
        "a PostgreSQL --db; every node of one room names the same two",
    )
    p.add_argument(
        "--cluster-prefix",
        default=d.cluster_prefix,
        help="Redis key prefix: one cluster per prefix in one Redis database",
    )
    p.add_argument(
        "--node-timeout",
        type=float,
        default=d.node_timeout,
        help="seconds without a heartbeat before a node's users leave everywhere",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="check the database (and with --cluster, Redis), say what is there, and exit",
    )
    p.add_argument(
        "--users-interval",
        type=float,
        default=d.users_interval,
        help="seconds between user-list pushes to everyone; 0 turns them off",
    )
    p.add_argument(
        "--users-window",
        type=float,
        default=d.users_window,
        help="shortest seconds between two users_delta pushes (changes meanwhile are merged)",
    )
    p.add_argument(
        "--coalesce-ms",
        metavar="MS",
        type=_milliseconds,
        default=d.coalesce * 1000,
        help="longest a busy fan-out waits so that more messages share each send "
        "(only while messages keep coming; 0: never wait)",
    )
    p.add_argument(
        "--storm-switch-ms",
        metavar="MS",
        type=_milliseconds,
        default=STORM_SWITCH_MS,
        help="the process's GIL switch interval while many connections end at once "
        "(chatroom_server.storm; 0: never change it)",
    )
    p.add_argument("--max-frame", type=int, default=lim.max_frame, help="bytes per frame")
    p.add_argument(
        "--max-message", type=int, default=lim.max_message, help="characters per message"
    )
    p.add_argument(
        "--min-password",
        type=int,
        default=lim.min_password,
        help="minimum password length for new accounts",
    )
    p.add_argument(
        "--max-output",
        type=int,
        default=d.max_output,
        help="bytes of unsent output before a slow client is disconnected",
    )
    p.add_argument(
        "--max-connections", type=int, default=d.max_connections, help="connections in total"
    )
    p.add_argument(
        "--max-per-ip", type=int, default=d.max_per_ip, help="connections per client address"
    )
    p.add_argument(
        "--no-loopback-exempt",
        action="store_true",
        help="apply the per-address limits to loopback clients too",
    )
    p.add_argument(
        "--rate-limit",
        type=_rate,
        default=f"{d.rate_limit:g}/{d.rate_burst}",
        metavar="RATE[/BURST]|off",
        help="commands per second per connection, with bursts; 'off' for load tests",
    )
    p.add_argument(
        "--login-timeout",
        type=float,
        default=d.login_timeout,
        help="seconds a connection has to log in",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=d.idle_timeout,
        help="seconds of silence before a logged-in client is closed; 0 = never",
    )
    p.add_argument(
        "--password-hash",
        choices=sorted(HASHERS),
        default=d.password_hash,
        help="argon2id cost for new hashes: owasp (19 MiB, t=2), or load-test (8 KiB, "
        "t=1; only for throwaway load-test accounts)",
    )
    p.add_argument(
        "--history",
        choices=["on", "off"],
        default="on" if d.history else "off",
        help="keep messages in the database (seq, resume, offline DMs, history); off: "
        "ephemeral, as protocol v1 began",
    )
    p.add_argument(
        "--history-days",
        type=_positive_or_off,
        default=d.history_days,
        help="prune messages older than this many days; 'off' keeps them",
    )
    p.add_argument(
        "--history-max",
        type=_count_or_off,
        default=d.history_max,
        help="keep at most this many messages; 'off': no limit",
    )
    p.add_argument(
        "--durability",
        choices=["normal", "full"],
        default=d.durability,
        help="normal: an ack survives the server being killed; full: also a power loss "
        "(fsync per group commit, slower)",
    )
    p.add_argument(
        "--replay-limit",
        type=int,
        default=d.replay_limit,
        help="messages a resuming login gets at most",
    )
    p.add_argument("--tls-cert", type=Path, help="PEM certificate (chain): serve TLS 1.2+")
    p.add_argument("--tls-key", type=Path, help="PEM private key (if not in --tls-cert)")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level",
    )
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        db_path=Path(args.db) if not _is_pg(args.db) else ServerConfig().db_path,
        irc_port=args.irc_port,
        irc_tls_port=args.irc_tls_port,
        irc_channel=args.irc_channel,
        irc_guests=args.irc_guests,
        irc_server_name=args.irc_server_name,
        cluster=args.cluster,
        cluster_db=args.db if _is_pg(args.db) else None,
        cluster_prefix=args.cluster_prefix,
        node_timeout=args.node_timeout,
        users_interval=args.users_interval,
        users_window=args.users_window,
        coalesce=args.coalesce_ms / 1000,
        storm_switch_interval=args.storm_switch_ms / 1000 or None,
        limits=Limits(
            max_frame=args.max_frame, max_message=args.max_message, min_password=args.min_password
        ),
        max_output=args.max_output,
        max_connections=args.max_connections,
        max_per_ip=args.max_per_ip,
        exempt_loopback=not args.no_loopback_exempt,
        rate_limit=args.rate_limit[0],
        rate_burst=args.rate_limit[1],
        login_timeout=args.login_timeout,
        idle_timeout=args.idle_timeout,
        password_hash=args.password_hash,
        history=args.history == "on",
        history_days=args.history_days,
        history_max=args.history_max,
        durability=args.durability,
        replay_limit=args.replay_limit,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def _is_pg(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def check(config: ServerConfig) -> int:
    """``--check``: open what the server would use, say what is in it, touch nothing."""
    if config.cluster is None:
        store = AccountStore(config.db_path)
        try:
            mlog = MessageLog(config.db_path)
            print(f"SQLite {config.db_path}: {store.count()} accounts; {mlog.describe()}")
            mlog.close()
        finally:
            store.close()
        return 0
    if config.cluster_db is None:
        raise ConfigError("--cluster needs a PostgreSQL --db (postgresql://USER@HOST/DBNAME)")
    from chatroom_server.cluster import ClusterBus, PgAccountStore, PgDatabase, PgMessageLog

    pg = PgDatabase(config.cluster_db)
    try:
        store = PgAccountStore(pg)
        plog = PgMessageLog(pg, publish=lambda stored: None)
        print(f"PostgreSQL {pg.describe()}: {store.count()} accounts; {plog.describe()}")
        store.close()
    finally:
        pg.close()
    bus = ClusterBus(config.cluster, prefix=config.cluster_prefix)
    try:
        print(bus.check())
    finally:
        bus.disconnect()
    return 0


# The cyclic garbage collector's thresholds in chat-server (docs/PERFORMANCE.md, "Mass
# arrivals"). At CPython's (700, 10, 10) a login storm of 10,000 ran a young collection
# every 700 net allocations and, now and then, a full one over every connection's
# objects: gc_collect_main was 5-6 % of the server's CPU under perf, and logins and
# rejoins took about 5 % longer than at these (8 of 9 alternating pairs). Cycles are
# still collected, later.
GC_THRESHOLDS = (10_000, 10, 10)
# Threads of chat-server's own beside one per connection (accept, flusher, reaper, users,
# the account store's, the fan-out helper, ...), rounded up: the futex hash's sizing.
SERVER_THREADS = 64


def tune_gc() -> None:
    """Set chat-server's GC thresholds, and move what exists once the server has started
    (modules, the config, the listening socket) out of every later collection. For the
    process chat-server owns; a ChatServer embedded elsewhere leaves the GC alone."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # The format shows no thread names, and asking for one in a connection thread
    # (started with _thread, chatroom_server.readers) would make threading keep a
    # _DummyThread for it.
    logging.logThreads = False
    try:
        config = config_from_args(args)
        if _is_pg(args.db) and args.cluster is None:
            raise ConfigError("a PostgreSQL --db is for a cluster: add --cluster redis://...")
        if args.check:
            return check(config)
        server = ChatServer(config)
        # A thread per connection: the kernel's futex hash sized for them (futexhash.py).
        buckets = futexhash.widen(config.max_connections + SERVER_THREADS)
        server.start()
        tune_gc()
        if buckets:
            log.info("futex hash: %d buckets", buckets)
    except ModuleNotFoundError as exc:
        if exc.name not in ("redis", "psycopg", "psycopg_pool"):
            raise
        print(
            f"chat-server: --cluster needs {exc.name}: pip install 'chatroom[cluster]'",
            file=sys.stderr,
        )
        return 1
    except (AccountStoreError, StorageError, ClusterUnavailable) as exc:
        print(f"chat-server: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"chat-server: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"chat-server: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # Wake up now and then so the signal handler runs promptly on every platform.
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
