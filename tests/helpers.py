"""Raw-socket protocol client for tests: speaks docs/PROTOCOL.md with no SDK in between."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any

from chatroom.protocol import FrameDecoder

PASSWORD = "correct horse"

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


class ServerProcess:
    """``chat-server`` as a real process on a free port, for tests that signal or kill it.

    Reads the port from the log line, keeps draining stderr so the server never blocks on
    a full pipe, and on exit terminates it (if still running) and closes the pipe.
    """

    def __init__(self, db: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatroom_server", "--port", "0", "--db", str(db), *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stderr is not None
        self.port = 0
        for line in self.proc.stderr:  # the server logs this line first
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        self._drainer = threading.Thread(target=self.proc.stderr.read, daemon=True)
        self._drainer.start()
        if not self.port:
            self.close()
            raise AssertionError("the server exited without listening")

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def close(self) -> int:
        """Stop the server (SIGTERM unless already gone); its exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
        status = self.proc.wait(10)
        self._drainer.join(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return status

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
