"""``chat-server``: run the chat server in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from chatroom.extras import require_or_exit

# Before argon2 is imported (by chatroom_server.accounts): without the 'server' extra,
# chat-server says what to install in one line and exits with status 2.
require_or_exit("server", "chat-server")

from chatroom_server import backup, futexhash, logfmt, options, settings, subcommands  # noqa: E402
from chatroom_server.accounts import AccountStore, AccountStoreError  # noqa: E402
from chatroom_server.cluster import ClusterUnavailable  # noqa: E402
from chatroom_server.config import ConfigError, ServerConfig  # noqa: E402
from chatroom_server.messagelog import MessageLog, StorageError  # noqa: E402
from chatroom_server.server import ChatServer  # noqa: E402

log = logging.getLogger("chatroom_server")


def build_parser() -> argparse.ArgumentParser:
    """chat-server's command line, generated from the option table (options.OPTIONS)."""
    p = argparse.ArgumentParser(
        prog="chat-server",
        description="Run the chatroom server (protocol: docs/PROTOCOL.md).",
        epilog="Other commands (each with --help; docs/OPERATIONS.md): chat-server "
        "check-config, default-config [FILE], backup FILE, restore FILE, new-epoch, "
        "admin VERB.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a TOML file of these settings (chat-server default-config writes one); "
        "CHATROOM_* environment variables override it, and the command line both",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="check the database (and with --cluster, Redis), say what is there, and exit",
    )
    options.add_arguments(p)
    return p


def config_command(argv: Sequence[str]) -> int:
    """``chat-server default-config [FILE]`` and ``chat-server check-config [flags]``."""
    if argv[0] == "default-config":
        p = argparse.ArgumentParser(
            prog="chat-server default-config",
            description="Write a config file with every setting, commented out.",
        )
        p.add_argument("file", nargs="?", type=Path, help="write it here (default: stdout)")
        out = p.parse_args(argv[1:]).file
        if out is None:
            sys.stdout.write(settings.render())
        elif out.exists():
            print(f"chat-server default-config: {out} exists", file=sys.stderr)
            return 1
        else:
            out.write_text(settings.render(), encoding="utf-8")
        return 0
    try:
        resolved = settings.resolve(settings.explicit_args(build_parser, argv[1:]))
        _checked(resolved.values, tls=True)
    except ConfigError as exc:
        print(f"chat-server check-config: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(settings.render(resolved))
    return 0


def _checked(values: dict[str, object], *, tls: bool = False) -> ServerConfig:
    """The ServerConfig of ``values``, or ConfigError; ``tls``: also load the TLS
    certificate and key, as the start will (check-config)."""
    config = options.build_config(values)
    if options.is_pg(str(values["db"])) and values["cluster"] is None:
        raise ConfigError("a PostgreSQL --db is for a cluster: add --cluster redis://...")
    if tls and config.tls_cert is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(config.tls_cert, config.tls_key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"cannot load the TLS certificate or key: {exc}") from None
    return config


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return options.build_config(options.values_from_args(args))


def check(config: ServerConfig) -> int:
    """``--check``: open what the server would use, say what is in it, touch nothing."""
    if config.cluster is None:
        pending = backup.pending_upgrade(config.db_path)
        if pending is not None:
            # Opening the stores would upgrade it: say what the start will do instead.
            print(f"SQLite {config.db_path}: {pending}")
            return 0
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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in subcommands.COMMANDS:  # chat-server backup FILE, ...
        return subcommands.run(argv)
    if argv and argv[0] in ("check-config", "default-config"):
        return config_command(argv)
    args = settings.explicit_args(build_parser, argv)
    try:
        resolved = settings.resolve(args)
    except ConfigError as exc:
        print(f"chat-server: {exc}", file=sys.stderr)
        return 1
    values = resolved.values
    logfmt.configure(str(values["log-level"]), str(values["log-format"]))
    # The format shows no thread names, and asking for one in a connection thread
    # (started with _thread, chatroom_server.readers) would make threading keep a
    # _DummyThread for it.
    logging.logThreads = False
    try:
        config = _checked(values)
        if args.check:
            return check(config)
        server = ChatServer(config)
        # A thread per connection: the kernel's futex hash sized for them (futexhash.py).
        buckets = futexhash.widen(config.max_connections + SERVER_THREADS)
        server.start()
        admin = None
        if values["admin-port"] is not None:
            from chatroom_server.admin_http import AdminHttp
            from chatroom_server.adminctl import token_path

            # chat-server admin reads the token there (chatroom_server.adminctl).
            token = token_path(str(values["db"]))
            admin = AdminHttp(server, str(values["admin-host"]), int(values["admin-port"]), token)
            admin.start()
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
            f"chat-server: cannot listen on {values['host']}:{values['port']}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1

    # The signals received, in order, for the loop below. The handler only appends:
    # it runs on the main thread between two bytecodes, maybe inside the loop's own
    # wait, so it must take no lock. An Event set here deadlocked when the signal
    # came while the main thread was re-taking that Event's lock in wait() (SIGTERM
    # then hung the server for good); logging takes its handler's lock too.
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)  # reload (chatroom_server.reload)
    stopping = False
    while not stopping:
        # Woken now and then to look at what the handler noted (a signal cuts the
        # sleep short on most platforms; PEP 475 resumes it, hence the short naps).
        time.sleep(0.2)
        while received:
            signum = received.pop(0)
            log.info("received %s", signal.Signals(signum).name)
            if signum != signal.SIGHUP:
                stopping = True
                break
            from chatroom_server.reload import reload

            resolved = reload(server, args, resolved)
    if admin is not None:
        admin.stop()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
