"""Real Redis and real PostgreSQL for the cluster tests (docs/CLUSTER.md).

Both run on this project's machines at their standard local ports (override with
CHATROOM_TEST_REDIS / CHATROOM_TEST_PG). Each test gets its own Redis key prefix and its
own PostgreSQL database, created here and dropped afterwards. A missing service fails
the test with a message saying so: these tests are never skipped silently.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from chatroom.testing import ServerProcess, TestServer, running_server

REDIS_URL = os.environ.get("CHATROOM_TEST_REDIS", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("CHATROOM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# Quiet nodes (as tests/helpers.QUIET) that notice a dead node within 2 s.
NODE_OPTIONS: dict[str, Any] = {
    "users_interval": 0,
    "rate_limit": None,
    "password_hash": "load-test",
    "node_timeout": 2.0,
}
NODE_ARGS = ["--users-interval", "0", "--rate-limit", "off", "--password-hash", "load-test"]


def _need(service: str, url: str, exc: Exception) -> None:
    pytest.fail(
        f"the cluster tests need {service} at {url} ({exc}); start it (see docs/CLUSTER.md) "
        "or point CHATROOM_TEST_REDIS / CHATROOM_TEST_PG at one",
        pytrace=False,
    )


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    r = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        r.ping()
    except redis.RedisError as exc:
        _need("Redis", REDIS_URL, exc)
    prefix = f"chattest-{secrets.token_hex(4)}"
    yield prefix
    keys = list(r.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


@contextmanager
def pg_database(base: str = PG_URL) -> Iterator[str]:
    """A fresh database on the PostgreSQL server of ``base``; dropped on exit."""
    name = f"chattest_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f"CREATE DATABASE {name}")
    except psycopg.Error as exc:
        _need("PostgreSQL", base, exc)
    try:
        yield f"{base.rsplit('/', 1)[0]}/{name}"  # the same server, this database
    finally:
        # A connection of its own: a test may have restarted the server meanwhile.
        with psycopg.connect(base, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_database() as url:
        yield url


@dataclass
class Cluster:
    """In-process nodes (coverage sees them) sharing one Redis prefix and one database."""

    redis: str
    db: str
    prefix: str
    stack: ExitStack = field(default_factory=ExitStack)
    nodes: list[TestServer] = field(default_factory=list)

    def add(self, **options: Any) -> TestServer:
        node = self.stack.enter_context(
            running_server(
                cluster=self.redis,
                cluster_db=self.db,
                cluster_prefix=self.prefix,
                **{**NODE_OPTIONS, **options},
            )
        )
        self.nodes.append(node)
        return node

    def process(self, *args: str) -> ServerProcess:
        """A node as a real process (to SIGKILL or SIGSTOP)."""
        return self.stack.enter_context(
            ServerProcess(
                self.db,
                "--cluster",
                self.redis,
                "--cluster-prefix",
                self.prefix,
                "--node-timeout",
                "2",
                *NODE_ARGS,
                *args,
                grace=5.0,
            )
        )


@pytest.fixture
def cluster(redis_prefix: str, pg_url: str) -> Iterator[Cluster]:
    c = Cluster(REDIS_URL, pg_url, redis_prefix)
    with c.stack:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(
    proc: subprocess.Popen[bytes],
    probe: Callable[[], object],
    not_yet: type[Exception],
    what: str,
    timeout: float = 20.0,
) -> None:
    """Until ``probe()`` stops raising ``not_yet``: a bounded wait on the process
    between tries (it either exits, which fails at once, or gets ready)."""
    for _ in range(int(timeout / 0.05)):
        try:
            probe()
            return
        except not_yet:
            pass
        try:
            proc.wait(0.05)
        except subprocess.TimeoutExpired:
            continue
        raise RuntimeError(f"{what} exited")
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s")


class PrivateRedis:
    """A redis-server of this test's own on a free port, to stop and start again."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (Debian package redis-server)")
        self.exe = exe
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *(self.exe, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        r = redis.Redis(port=self.port, socket_connect_timeout=1)
        wait_ready(self.proc, r.ping, redis.ConnectionError, "redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


TRUST = ("--auth=trust", "-E", "UTF8", "--no-sync")


class PrivatePostgres:
    """A PostgreSQL server of this test's own (initdb in a temp directory, a free
    port), to stop and start again. initdb refuses to run as root: then it and the
    server run as the postgres user."""

    def __init__(self) -> None:
        exe = shutil.which("postgres") or shutil.which("initdb")
        if exe is None:
            pytest.fail("PostgreSQL's binaries (postgres, initdb) are not on PATH")
        self.bin = Path(exe).resolve().parent
        self.dir = Path(tempfile.mkdtemp(prefix="chattest-pg-"))
        # As root: run as postgres (Popen's user=, so signals reach postgres itself).
        self.as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
        data = str(self.dir / "data")
        subprocess.run(
            [str(self.bin / "initdb"), "-D", data, "-U", "postgres", *TRUST],
            check=True,
            capture_output=True,
            timeout=60,
            cwd=self.dir,
            **self.as_user,
        )
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *(str(self.bin / "postgres"), "-D", str(self.dir / "data")),
                *("-p", str(self.port), "-k", str(self.dir)),
                *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.dir,
            **self.as_user,
        )
        wait_ready(
            self.proc,
            lambda: psycopg.connect(self.url, connect_timeout=1).close(),
            psycopg.OperationalError,
            "postgres",
        )

    def stop(self) -> None:
        """A fast shutdown (SIGINT): clients are cut off at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    r = PrivateRedis()
    r.start()
    try:
        yield r
    finally:
        r.stop()
