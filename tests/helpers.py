"""Raw-socket protocol client for tests: speaks docs/PROTOCOL.md with no SDK in between."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from chatroom.protocol import FrameDecoder
from chatroom.testing import ServerProcess, TestServer, running_server
from chatroom_server.outbox import Flusher, Outbox

__all__ = [
    "PASSWORD",
    "QUIET",
    "CutProxy",
    "RawClient",
    "ServerProcess",
    "SocketMember",
    "WsClient",
    "connect",
    "quiet_server",
    "socket_members",
]

PASSWORD = "correct horse"  # every test account's password

# The quiet test server: no periodic user-list pushes (they would interleave with what a
# test expects) and no flood control (tests send bursts; test_hardening tests the limits).
QUIET: dict[str, Any] = {"users_interval": 0, "rate_limit": None}


@contextmanager
def quiet_server(*args: Any, **options: Any) -> Iterator[TestServer]:
    """:func:`chatroom.testing.running_server` with :data:`QUIET` defaults."""
    with running_server(*args, **{**QUIET, **options}) as srv:
        yield srv


class Closes(Protocol):
    def close(self) -> None: ...


# Every client a test opens (RawClient, WsClient, the IRC tests' Irc): tests/conftest.py
# closes them after each test, whichever module the test is in.
OPEN_CLIENTS: list[Closes] = []


class RawClient:
    """A blocking line-JSON client. Every read has a timeout; nothing sleeps."""

    def __init__(
        self, address: tuple[str, int], timeout: float = 10.0, source: str | None = None
    ) -> None:
        # ``source``: a loopback address of its own (127.0.0.2, ...), as another host.
        where = None if source is None else (source, 0)
        self.sock = socket.create_connection(address, timeout=timeout, source_address=where)
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


class WsClient(RawClient):
    """A :class:`RawClient` over WebSocket (``chat-server --web-port``, docs/WEB.md):
    wsproto as a client, one JSON frame per text message. Every read has a timeout."""

    def __init__(
        self,
        address: tuple[str, int],
        timeout: float = 10.0,
        *,
        origin: str | None = None,
        path: str = "/ws",
        subprotocols: list[str] | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import Request

        # ``sock``: one connected already (TLS, say); else a plain TCP connection.
        self.sock = sock or socket.create_connection(address, timeout=timeout)
        self.timeout = timeout
        self._frames = deque()
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._parts: list[str] = []
        self.close_code: int | None = None
        self.subprotocol: str | None = None
        OPEN_CLIENTS.append(self)
        headers = [(b"origin", origin.encode())] if origin is not None else []
        self.sock.sendall(
            self.ws.send(
                Request(
                    host="{}:{}".format(*address),
                    target=path,
                    extra_headers=headers,
                    subprotocols=subprotocols or [],
                )
            )
        )
        self._accepted = False
        while not self._accepted:
            self._read(timeout)

    def _read(self, timeout: float | None) -> None:
        from wsproto.connection import ConnectionState
        from wsproto.events import (
            AcceptConnection,
            CloseConnection,
            Ping,
            RejectConnection,
            RejectData,
            TextMessage,
        )

        if self.close_code is not None:
            raise EOFError(f"closed by the server ({self.close_code})")
        self.sock.settimeout(timeout or self.timeout)
        data = self.sock.recv(65536)
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self._accepted = True
                self.subprotocol = event.subprotocol
            elif isinstance(event, RejectConnection):
                raise ConnectionRefusedError(f"handshake refused: HTTP {event.status_code}")
            elif isinstance(event, RejectData):
                continue
            elif isinstance(event, TextMessage):
                self._parts.append(event.data)
                if event.message_finished:
                    self._frames.append("".join(self._parts).encode())
                    self._parts.clear()
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    with contextlib.suppress(OSError):
                        self.sock.sendall(self.ws.send(event.response()))
        if not data and self.close_code is None:
            raise EOFError("server closed the connection")

    def send_raw(self, data: bytes) -> None:
        """Each line of ``data`` as one text message."""
        for line in data.split(b"\n"):
            if line:
                self.send_text(line.decode())

    def send_text(self, text: str) -> None:
        from wsproto.events import TextMessage

        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        while not self._frames:
            self._read(timeout)
        frame: dict[str, Any] = json.loads(self._frames.popleft())
        return frame

    def recv_line(self, timeout: float | None = None) -> str:
        """The next text message as it is (IRC over WebSocket: one line)."""
        while not self._frames:
            self._read(timeout)
        return self._frames.popleft().decode()


def connect(address: tuple[str, int], name: str | None = None) -> RawClient:
    c = RawClient(address)
    if name is not None:
        c.login(name)
    return c


class SocketMember:
    """A fan-out recipient (chatroom_server.fanitems.Member) whose outbox writes to a
    real socket, and the client's end of it to read what it was sent: for the fan-out's
    and the delivery loop's tests."""

    def __init__(self, outbox: Outbox, peer: socket.socket) -> None:
        self.outbox = outbox
        self.peer = peer
        self.username: str | None = None
        self.handed = 0
        self.done = 0
        self._buf = b""

    def lines(self, n: int) -> list[bytes]:
        """The next ``n`` lines this member's client receives."""
        out: list[bytes] = []
        while len(out) < n:
            while b"\n" not in self._buf:
                chunk = self.peer.recv(65536)
                assert chunk, "closed early"
                self._buf += chunk
            line, self._buf = self._buf.split(b"\n", 1)
            out.append(line)
        return out

    def nothing_more(self) -> bool:
        """Nothing beyond what was read (the sends are done: deliver() returned)."""
        self.peer.setblocking(False)
        try:
            return not self._buf and not self.peer.recv(65536)
        except BlockingIOError:
            return not self._buf
        finally:
            self.peer.settimeout(10)


@contextmanager
def socket_members(n: int) -> Iterator[list[SocketMember]]:
    """``n`` :class:`SocketMember`\\ s on socket pairs with one flusher, all closed after."""
    flusher = Flusher()
    flusher.start()
    made: list[SocketMember] = []
    socks: list[socket.socket] = []
    try:
        for i in range(n):
            a, b = socket.socketpair()
            b.settimeout(10)
            socks += [a, b]
            made.append(SocketMember(Outbox(a, flusher, name=f"m{i}"), b))
        yield made
    finally:
        flusher.stop()
        for s in socks:
            s.close()


class CutProxy:
    """A TCP proxy in front of a server that can cut its connections abruptly, as a
    network blip does: ``cut()`` resets every connection open now; ``cut_on(marker)``
    resets a connection as soon as the server sends it bytes containing ``marker``,
    before the client sees them (an ack lost on the way)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self._lock = threading.Lock()  # guards _pairs and _marker
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._marker: bytes | None = None
        self.cuts = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            for src, dst, watch in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pipe, args=(src, dst, watch), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, watch: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    marker = self._marker
                if watch and marker is not None and marker in data:
                    with self._lock:
                        self._marker = None
                    self._reset(src, dst)
                    return
                dst.sendall(data)
        except OSError:
            pass  # cut, or the other side went away
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _reset(self, *socks: socket.socket) -> None:
        self.cuts += 1
        for s in socks:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                # shutdown wakes the pipe thread blocked in recv on it; close alone
                # would not, and the peer would never notice the cut.
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            self._reset(*pair)

    def cut_on(self, marker: bytes) -> None:
        with self._lock:
            self._marker = marker

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            # Wakes the accept() below; close() alone would not, and the join would
            # wait out its whole timeout.
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.cut()
        self._thread.join(5)
        assert not self._thread.is_alive(), "the proxy's accept thread did not end"
