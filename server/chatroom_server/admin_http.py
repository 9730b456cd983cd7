"""The admin HTTP endpoint (``chat-server --admin-port``; docs/OPERATIONS.md, Metrics and
health): ``/metrics`` in Prometheus's text format, made by the official client library,
``/health`` (the process answers) and ``/ready`` (it serves, and its storage answers).

Loopback by default: the metrics name no user, and they need no authentication, so the
endpoint is for the machine's own Prometheus agent or a reverse proxy, never the
internet. ``/admin/...`` (chat-server admin's verbs on a running server,
chatroom_server.adminctl) needs the token the server writes at start-up into a file
only its user can read (``token_file``): any local user can reach loopback, and only
the one who may read the database may administer it.

Threads: one HTTP thread per request (``ThreadingHTTPServer``), apart from the chat
traffic. A scrape reads the server's counts (chatroom_server.metrics) without taking the
locks that guard them: an int read is atomic, and a count a moment stale is what a
scrape a moment earlier would have read. It walks the connections once for the
per-transport counts and the output backlog, which at 10,000 clients is a few
milliseconds of one thread, every scrape interval.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import sqlite3
import threading
import urllib.parse
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

from chatroom.protocol import Bye, ByeReason, encode, username_key
from chatroom_server.accounts import AccountExists, AccountStoreBusy
from chatroom_server.dbfile import create_private
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
            transport = _transport(c)
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
            "messages handed to their recipients: a broadcast once per recipient, a DM once",
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
        yield CounterMetricFamily(
            "chat_early_logins",
            "logins run on the admission thread, before the connection had a thread",
            s.early_logins,
        )
        yield CounterMetricFamily(
            "chat_early_logins_refused",
            "logins the admission thread took that began no session (a ban, a client gone)",
            s.early_refused,
        )
        yield CounterMetricFamily(
            "chat_storage_errors",
            "fan-out passes whose messages could not be stored (SQLite or PostgreSQL)",
            st.storage_errors,
        )
        yield GaugeMetricFamily(
            "chat_storage_failing_passes",
            "consecutive fan-out passes whose messages could not be stored (0: storing works)",
            f.storage_failures,
        )
        wire = s._rooms
        if wire is not None:
            book = wire.service.book
            # No lock: a dict's len and a snapshot of its values are single C calls;
            # a count a moment stale is what a scrape a moment earlier would read.
            yield GaugeMetricFamily("chat_rooms", "rooms (the lobby included)", len(book))
            yield GaugeMetricFamily(
                "chat_room_memberships",
                "users' memberships of rooms, summed over the rooms",
                sum(len(keys) for keys in list(book._of_user.values())),
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
                "chat_cluster_bus_outages", "times this node lost Redis", bus.outages
            )
            yield CounterMetricFamily(
                "chat_cluster_gaps_filled",
                "messages read from PostgreSQL because their stream entry was lost",
                bus.gaps_filled,
            )


def _transport(conn: Any) -> str:
    """``json`` (the line protocol over TCP), ``web`` (WebSocket) or ``irc``."""
    if conn.irc is not None:
        return "irc"
    return "web" if conn.web is not None else "json"


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


_BYE_DISCONNECTED = encode(Bye(reason=ByeReason.DISCONNECTED))


class AdminRefused(Exception):
    """An admin request that cannot be done: (HTTP status, why)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


class Admin:
    """chat-server admin's verbs, done by the running server (chatroom_server.adminctl)."""

    def __init__(self, server: ChatServer) -> None:
        self._server = server

    def _store(self) -> Any:
        store = self._server._store
        if store is None:
            raise AdminRefused(503, "the server has no account store open")
        return store

    def accounts(self) -> list[dict[str, Any]]:
        return [{"name": n, "created": c} for n, c in self._store().accounts()]

    def sessions(self) -> list[dict[str, Any]]:
        s = self._server
        now = s._clock()
        out = []
        for conn in list(s._by_key.values()):  # one C call: a snapshot
            if not conn.outbox.accepting:
                continue  # ended, and not reaped yet (disconnect)
            out.append(
                {
                    "name": conn.username,
                    "addr": conn.addr,
                    "transport": _transport(conn),
                    "tls": conn.outbox.tls,
                    "seconds": round(now - conn.connected_at, 1),
                }
            )
        return sorted(out, key=lambda x: str(x["name"]).lower())

    def rooms(self) -> list[dict[str, Any]]:
        """Every room with its modes, topic and members: read between two fan-out
        passes, as the room commands change them (chatroom_server.rooms, Threads)."""
        wire = self._server._rooms
        if wire is None:
            raise AdminRefused(409, "the server has no rooms (--history off)")
        book = wire.service.book
        return self._server._fanout.exclusive(lambda: describe_rooms(book))

    def disconnect(self, name: str) -> bool:
        """End ``name``'s session on this server: bye ``disconnected``."""
        conn = self._server._by_key.get(username_key(name))
        # A session that is ending (told bye, or dropped) stays in the list until the
        # reaper takes it out (chatroom_server.presence), later on a loaded server: it
        # is not logged in any more, and a second disconnect must not say it ended it.
        if conn is None or not conn.outbox.accepting:
            return False
        log.warning("an operator disconnects %s (%s)", conn.username, conn.addr)
        conn.outbox.finish(_BYE_DISCONNECTED)
        return True

    def create(self, name: str, password: str) -> str:
        self._check(password)
        try:
            self._store().register(name, password)
        except AccountExists:
            raise AdminRefused(409, f"the name {name} is taken") from None
        return f"created {name}"

    def delete(self, name: str) -> str:
        if not self._store().delete(name):
            raise AdminRefused(404, f"no account {name}")
        ended = self.disconnect(name)
        log.warning("an operator deleted the account %s", name)
        return f"deleted {name}" + (" and ended its session" if ended else "")

    def reset_password(self, name: str, password: str) -> str:
        self._check(password)
        if not self._store().set_password(name, password):
            raise AdminRefused(404, f"no account {name}")
        ended = self.disconnect(name)
        log.warning("an operator set a new password for %s", name)
        return f"set a new password for {name}" + (" and ended its session" if ended else "")

    def prune(self, days: float | None, most: int | None) -> dict[str, int]:
        s = self._server
        mlog = s._log
        if mlog is None:
            raise AdminRefused(409, "the server keeps no history (--history off)")
        if days is None and most is None:
            deleted = s.prune_history()  # the server's own retention, now
        else:
            deleted = mlog.prune(
                now=s._wall(), max_age=None if days is None else days * 86400, max_count=most
            )
        return {"deleted": deleted, "oldest_seq": mlog.oldest_seq}

    def _check(self, password: str) -> None:
        least = self._server.config.limits.min_password
        if len(password) < least:
            raise AdminRefused(400, f"a password has at least {least} characters")


class AdminHttp:
    """``/metrics``, ``/health`` and ``/ready`` for one ChatServer, on its own port; and
    ``/admin/...`` with the token written to ``token_file`` (None: no /admin at all)."""

    def __init__(
        self,
        server: ChatServer,
        host: str = "127.0.0.1",
        port: int = 0,
        token_file: Path | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServerCollector(server))
        ProcessCollector(registry=self.registry)  # CPU seconds, memory, open files
        chat = server
        registry = self.registry
        admin = Admin(server)
        self.token_file = token_file
        token = secrets.token_urlsafe(32) if token_file is not None else None

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._admin("POST")

            def _admin(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
                given = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if token is None or not hmac.compare_digest(given, token):
                    self._send(403, b"forbidden: chat-server admin sends the server's token\n")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 4096)).decode("utf-8", "replace")
                try:
                    out = _route(admin, method, url.path.removeprefix("/admin/"), q, body)
                except AdminRefused as exc:
                    self._send(exc.status, f"{exc}\n".encode())
                    return
                except (AccountStoreBusy, StorageError) as exc:
                    self._send(503, f"{exc}\n".encode())
                    return
                except (KeyError, ValueError) as exc:
                    self._send(400, f"bad request: {exc}\n".encode())
                    return
                self._send(200, json.dumps(out).encode(), "application/json")

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path.startswith("/admin/"):
                    self._admin("GET")
                elif path == "/metrics":
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

        if token_file is not None and token is not None:
            _write_token(token_file, token)
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
        if self.token_file is not None:
            self.token_file.unlink(missing_ok=True)


def _write_token(path: Path, token: str) -> None:
    """A file only this user reads, holding ``token`` (a stale one is replaced)."""
    path.unlink(missing_ok=True)
    if not create_private(path):
        raise OSError(f"cannot create the admin token file {path}")
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)


def describe_rooms(book: Any) -> list[dict[str, Any]]:
    """A RoomBook's rooms for chat-server admin, by name (its owner's thread only)."""
    out = []
    for room in book._rooms.values():
        members = sorted(room.members.values(), key=lambda m: m.user.lower())
        out.append(
            {
                "name": room.name,
                "modes": room.modes,
                "topic": room.topic,
                "members": [[m.user, str(m.role)] for m in members],
            }
        )
    return sorted(out, key=lambda r: str(r["name"]).lower())


def _route(admin: Admin, method: str, verb: str, q: dict[str, str], body: str) -> Any:
    """One /admin/VERB request to :class:`Admin`; what to answer, as JSON."""
    if method == "GET" and verb == "accounts":
        return admin.accounts()
    if method == "GET" and verb == "rooms":
        return admin.rooms()
    if method == "GET" and verb == "sessions":
        return admin.sessions()
    if method != "POST":
        raise AdminRefused(404, f"no GET /admin/{verb}")
    if verb == "prune":
        days = float(q["days"]) if "days" in q else None
        most = int(q["max"]) if "max" in q else None
        return admin.prune(days, most)
    name = q["name"]
    if verb == "create":
        return {"said": admin.create(name, body)}
    if verb == "delete":
        return {"said": admin.delete(name)}
    if verb == "reset-password":
        return {"said": admin.reset_password(name, body)}
    if verb == "disconnect":
        if not admin.disconnect(name):
            raise AdminRefused(404, f"{name} is not logged in here")
        return {"said": f"disconnected {name}"}
    raise AdminRefused(404, f"no POST /admin/{verb}")
