"""The admin HTTP endpoint (``chat-server --admin-port``; docs/OPERATIONS.md, Metrics and
health): ``/metrics`` in Prometheus's text format, made by the official client library,
``/health`` (the process answers) and ``/ready`` (it serves, and its storage answers).

Loopback by default: the metrics name no user, but the endpoint has no authentication,
so it is for the machine's own Prometheus agent or a reverse proxy, never the internet.

Threads: one HTTP thread per request (``ThreadingHTTPServer``), apart from the chat
traffic. A scrape reads the server's counts (chatroom_server.metrics) without taking the
locks that guard them: an int read is atomic, and a count a moment stale is what a
scrape a moment earlier would have read. It walks the connections once for the
per-transport counts and the output backlog, which at 10,000 clients is a few
milliseconds of one thread, every scrape interval.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from chatroom_server.messagelog import StorageError

if TYPE_CHECKING:
    from chatroom_server.server import ChatServer

log = logging.getLogger(__name__)

# What a readiness probe waits for the database's write lock, at most.
PROBE_TIMEOUT = 1.0

_TALLIES = {
    "accepted": ("chat_connections_accepted", "connections accepted"),
    "logins": ("chat_logins", "logins that passed (login_ok)"),
    "login_failures": ("chat_login_failures", "logins refused: wrong password or throttled"),
    "replays": ("chat_replays", "logins followed by a replay (resume or offline DMs)"),
    "replays_truncated": (
        "chat_replays_truncated",
        "replays that began with replay_truncated (pruned, past the limit, another epoch)",
    ),
    "drops": ("chat_slow_consumer_drops", "clients disconnected for not reading their output"),
}


class ServerCollector(Collector):
    """The chat server's metrics, read at each scrape (module docstring)."""

    def __init__(self, server: ChatServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        s = self._server
        conns = list(s._conns)
        by_transport: Counter[tuple[str, str]] = Counter()
        backlog = 0
        for c in conns:
            transport = "irc" if c.irc is not None else "json"
            by_transport[(transport, "true" if c.outbox.tls else "false")] += 1
            backlog += c.outbox.backlog
        g = GaugeMetricFamily(
            "chat_connections", "open client connections", labels=["transport", "tls"]
        )
        for (transport, tls), n in sorted(by_transport.items()):
            g.add_metric([transport, tls], n)
        yield g
        yield GaugeMetricFamily("chat_users_online", "users logged in", value=len(s._by_key))
        yield GaugeMetricFamily(
            "chat_outbox_backlog_bytes", "output queued for clients, not yet sent", value=backlog
        )
        for key, value in s.stats.snapshot().items():
            name, text = _TALLIES[key]
            yield CounterMetricFamily(name, text, value=value)

        f = s._fanout
        st = f.stats
        yield CounterMetricFamily(
            "chat_messages", "messages stored (or broadcast, with --history off)", st.messages
        )
        yield CounterMetricFamily(
            "chat_deliveries",
            "broadcast messages times the recipients each went to",
            st.deliveries,
        )
        yield _histogram(
            "chat_fanout_pass_seconds", "one fan-out pass: store, then send", st.pass_time
        )
        yield GaugeMetricFamily("chat_fanout_queue", "items waiting for the fan-out", len(f._queue))
        yield CounterMetricFamily(
            "chat_fanout_crashes", "fan-out rounds that raised (bugs)", f.crashes
        )
        yield CounterMetricFamily(
            "chat_handler_crashes", "commands whose handler raised (bugs)", s.handler_crashes
        )
        yield GaugeMetricFamily(
            "chat_storage_failing_passes",
            "consecutive fan-out passes whose messages could not be stored (0: storing works)",
            f.storage_failures,
        )
        mlog = s._log
        if mlog is not None:
            yield _histogram(
                "chat_messagelog_commit_seconds", "one group commit of the message log", st.commit
            )
            yield GaugeMetricFamily("chat_messagelog_last_seq", "the newest seq", mlog.last_seq)
            yield GaugeMetricFamily(
                "chat_messagelog_oldest_seq", "the oldest seq still stored", mlog.oldest_seq
            )
        if s.config.cluster is None:
            yield GaugeMetricFamily(
                "chat_database_bytes",
                "the SQLite database's size on disk, its -wal file included",
                _db_bytes(s.config.db_path),
            )
        bus = s._bus
        if bus is not None:
            yield GaugeMetricFamily(
                "chat_cluster_bus_up", "1 while this node reaches Redis", int(bus.available)
            )
            yield CounterMetricFamily(
                "chat_cluster_gaps_filled",
                "messages read from PostgreSQL because their stream entry was lost",
                bus.gaps_filled,
            )


def _histogram(name: str, text: str, h: Any) -> HistogramMetricFamily:
    buckets = h.cumulative()
    return HistogramMetricFamily(name, text, buckets=buckets, sum_value=h.total)


def _db_bytes(path: Path) -> int:
    total = 0
    for p in (path, path.with_name(path.name + "-wal")):
        try:
            total += p.stat().st_size
        except OSError:
            pass  # no -wal between checkpoints, or no database yet
    return total


def readiness(server: ChatServer) -> str | None:
    """None if the server accepts clients and its storage answers; else why not."""
    s = server
    if s._stopping.is_set() or s._listener is None:
        return "not listening"
    if s.config.cluster is not None:
        bus, pg = s._bus, s._pg
        if bus is None or not bus.available:
            return "Redis unreachable"
        if pg is not None:
            try:
                with pg.connection() as conn:
                    conn.execute("SELECT 1")
            except StorageError as exc:  # what PgDatabase.connection makes of any failure
                return str(exc)
        return None
    # The write lock, as a commit takes it: a database locked by another process, or
    # unreadable, stops messages even when reads still work.
    try:
        db = sqlite3.connect(s.config.db_path, timeout=PROBE_TIMEOUT, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"database: {exc}"
    return None


class AdminHttp:
    """``/metrics``, ``/health`` and ``/ready`` for one ChatServer, on its own port."""

    def __init__(self, server: ChatServer, host: str = "127.0.0.1", port: int = 0) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServerCollector(server))
        ProcessCollector(registry=self.registry)  # CPU seconds, memory, open files
        chat = server
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/health":
                    self._send(200, b"ok\n")
                elif path == "/ready":
                    why = readiness(chat)
                    if why is None:
                        self._send(200, b"ready\n")
                    else:
                        self._send(503, f"not ready: {why}\n".encode())
                else:
                    self._send(404, b"not found: /metrics, /health or /ready\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("admin http: " + format, *args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.address: tuple[str, int] = self._httpd.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="chat-admin-http", daemon=True
        )

    def start(self) -> tuple[str, int]:
        self._thread.start()
        log.info("admin endpoint on http://%s:%d/ (metrics, health, ready)", *self.address)
        return self.address

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
