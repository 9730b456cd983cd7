"""Raw-socket protocol client for tests: speaks docs/PROTOCOL.md with no SDK in between."""

from __future__ import annotations

import json
import socket
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from chatroom.protocol import FrameDecoder
from chatroom.testing import ServerProcess, TestServer, running_server

__all__ = ["PASSWORD", "QUIET", "RawClient", "ServerProcess", "connect", "quiet_server"]

PASSWORD = "correct horse"  # every test account's password

# The quiet test server: no periodic user-list pushes (they would interleave with what a
# test expects) and no flood control (tests send bursts; test_hardening tests the limits).
QUIET: dict[str, Any] = {"users_interval": 0, "rate_limit": None}


@contextmanager
def quiet_server(*args: Any, **options: Any) -> Iterator[TestServer]:
    """:func:`chatroom.testing.running_server` with :data:`QUIET` defaults."""
    with running_server(*args, **{**QUIET, **options}) as srv:
        yield srv


# Every RawClient a test opens; tests/conftest.py closes them after each test.
OPEN_CLIENTS: list[RawClient] = []


class RawClient:
    """A blocking line-JSON client. Every read has a timeout; nothing sleeps."""

    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.timeout = timeout
        self._decoder = FrameDecoder(64 * 1024 * 1024)
        self._frames: deque[bytes] = deque()
        OPEN_CLIENTS.append(self)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, **frame: Any) -> None:
        self.send_raw(json.dumps(frame).encode() + b"\n")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next frame, decoded; raises TimeoutError or EOFError."""
        self.sock.settimeout(timeout or self.timeout)
        while not self._frames:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("server closed the connection")
            self._frames.extend(self._decoder.feed(data))
        frame: dict[str, Any] = json.loads(self._frames.popleft())
        return frame

    def expect(self, type_: str, **fields: Any) -> dict[str, Any]:
        """The next frame must have this type (and these field values)."""
        frame = self.recv()
        assert frame.get("type") == type_, f"expected {type_}, got {frame}"
        for k, v in fields.items():
            assert frame.get(k) == v, f"expected {k}={v!r} in {frame}"
        return frame

    def expect_error(self, code: str, **fields: Any) -> dict[str, Any]:
        frame = self.expect("error", code=code, **fields)
        assert isinstance(frame["message"], str) and frame["message"]
        return frame

    def until(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Skip frames until one of this type with these field values arrives."""
        while True:
            frame = self.recv()
            if frame.get("type") == type_ and all(frame.get(k) == v for k, v in fields.items()):
                return frame

    def wait_closed(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Read until the server closes; return what arrived meanwhile."""
        seen = []
        while True:
            try:
                seen.append(self.recv(timeout))
            except EOFError:
                return seen
            except ConnectionResetError:
                return seen

    def login(self, name: str, password: str = PASSWORD) -> dict[str, Any]:
        """Log in (registering if new) and consume the login_ok and the joined push."""
        self.send(command="login", username=name, password=password)
        ok = self.expect("login_ok")
        self.expect("users", joined=ok["username"])
        return ok


def connect(address: tuple[str, int], name: str | None = None) -> RawClient:
    c = RawClient(address)
    if name is not None:
        c.login(name)
    return c
