"""Test a bot against a real server, in-process, on a free port, with a temp database.

::

    from chatroom import ChatClient
    from chatroom.testing import running_server

    def test_my_bot() -> None:
        with running_server() as srv, ChatClient(srv.host, srv.port) as client:
            client.login("tester", "password123")
            ...

This is exactly how chatroom's own tests run: real sockets, real threads, no mocks.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

__all__ = ["ServerProcess", "TestServer", "async_running_server", "running_server"]

_LISTENING = re.compile(r"listening on \[?[\w.:]+?\]?:(\d+)")
_WEB = re.compile(r"web client on https?://\[?[\w.:]+?\]?:(\d+)/")  # logged before it


class TestServer:
    """A running in-process server. ``host``/``port`` stay the same across :meth:`restart`."""

    __test__ = False  # not a pytest test class

    def __init__(self, config: Any) -> None:
        from chatroom_server import ChatServer

        self._config = config
        self.server = ChatServer(config)
        self.host, self.port = self.server.start()
        # Pin the port so a restart comes back where clients expect it (the web port's
        # too: a browser tab reconnects to the address it was loaded from).
        web = self.server.web_address
        self._config = dataclasses.replace(
            config, port=self.port, **({"web_port": web[1]} if web is not None else {})
        )

    @property
    def db_path(self) -> Path:
        return Path(self._config.db_path)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def web_address(self) -> tuple[str, int]:
        """The web port's address (``web_port=0`` in the options), docs/WEB.md."""
        web = self.server.web_address
        assert web is not None, "started without web_port"
        return web[0], web[1]

    @property
    def web_url(self) -> str:
        return "http://{}:{}/".format(*self.web_address)

    def stop(self) -> None:
        """Stop the server (clients see ``bye`` with reason ``server_shutdown``)."""
        self.server.stop()

    def start(self) -> None:
        """Start a fresh server on the same port and database after :meth:`stop`."""
        from chatroom_server import ChatServer

        self.server = ChatServer(self._config)
        self.server.start()

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def running_server(db_path: str | Path | None = None, **options: Any) -> Iterator[TestServer]:
    """Run a server on 127.0.0.1 and a free port for the duration of the ``with`` block.

    ``options`` are :class:`chatroom_server.ServerConfig` fields, e.g.
    ``users_interval=0.2``, or :class:`chatroom.protocol.Limits` fields such as
    ``max_message=100``. Without ``db_path`` a temporary database is used and deleted.
    """
    from chatroom.protocol import Limits
    from chatroom_server import ServerConfig

    limit_names = {f.name for f in dataclasses.fields(Limits)}
    limits = {k: options.pop(k) for k in list(options) if k in limit_names}
    if limits:
        options["limits"] = Limits(**limits)
    with tempfile.TemporaryDirectory(prefix="chatroom-test-") as tmp:
        path = Path(db_path) if db_path is not None else Path(tmp) / "chatroom.db"
        options.setdefault("host", "127.0.0.1")
        options.setdefault("port", 0)
        srv = TestServer(ServerConfig(db_path=path, **options))
        try:
            yield srv
        finally:
            srv.stop()


@asynccontextmanager
async def async_running_server(
    db_path: str | Path | None = None, **options: Any
) -> AsyncIterator[TestServer]:
    """:func:`running_server` for asyncio tests: the server (threads of its own) starts
    and stops without blocking the event loop::

        async with async_running_server() as srv, AsyncChatClient(srv.host, srv.port) as c:
            await c.login("tester", "password123")
    """
    import asyncio

    manager = running_server(db_path, **options)
    srv = await asyncio.to_thread(manager.__enter__)
    try:
        yield srv
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


class ServerProcess:
    """A server as a real process on a free port: for tests that signal or kill it, and
    for benchmarks that measure it from outside.

    ``ServerProcess(db, *args)`` runs ``chat-server --port 0 --db DB ARGS``; ``cmd=[...]``
    runs any server that logs ``listening on HOST:PORT`` on stderr (bench's baselines).
    It reads the port from that line, keeps draining stderr so the server never blocks on
    a full pipe, and on exit stops it (SIGTERM, then SIGKILL after ``grace`` s).
    """

    def __init__(
        self,
        db: str | Path | None = None,
        *args: str,
        cmd: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        grace: float = 10.0,
    ) -> None:
        if cmd is None:
            if db is None:
                raise ValueError("ServerProcess needs a database path or a cmd")
            cmd = [sys.executable, "-m", "chatroom_server", "--port", "0", "--db", str(db)]
        self.grace = grace
        self.proc = subprocess.Popen(
            [*cmd, *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stderr is not None
        self.port = 0
        self.web_port: int | None = None  # with --web-port (docs/WEB.md)
        for line in self.proc.stderr:  # the server logs this line first
            web = _WEB.search(line)
            if web:
                self.web_port = int(web.group(1))
            m = _LISTENING.search(line)
            if m:
                self.port = int(m.group(1))
                break
        self._drainer = threading.Thread(target=self.proc.stderr.read, daemon=True)
        self._drainer.start()
        if not self.port:
            self.close()
            raise RuntimeError(f"the server exited without listening: {' '.join(cmd)}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def close(self) -> int:
        """Stop the server (SIGTERM unless already gone); its exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            status = self.proc.wait(self.grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait(self.grace)
        self._drainer.join(self.grace)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return status

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
