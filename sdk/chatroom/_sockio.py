"""The threaded client's socket (:class:`chatroom.ChatClient`): connecting (TCP_NODELAY,
the TLS handshake) and the two calls its threads make, ``sendall`` and ``recv``, each
bounded by one tick, over a blocking TCP socket or a non-blocking TLS one
(:mod:`chatroom.tls` has OpenSSL's rules). The asyncio client has asyncio's streams
instead."""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time

from chatroom.errors import ConnectFailed
from chatroom.tls import TlsWriter, tcp_shutdown, tls_recv

__all__ = ["SocketCalls", "connect", "shutdown"]

RECV_SIZE = 65536


def connect(
    host: str, port: int, context: ssl.SSLContext | None, timeout: float, tick: float
) -> socket.socket:
    """A connection to ``host``:``port`` (TLS with ``context``), or ConnectFailed. ``tick``
    becomes the socket's timeout: it serves both directions, sendall's total time and
    the receive thread's wait, after which it checks keepalive and the stop flag."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ConnectFailed(f"cannot connect to {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=host)
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise ConnectFailed(f"TLS handshake with {host}:{port} failed: {exc}") from exc
    sock.settimeout(tick)
    if context is not None:
        sock.setblocking(False)  # TLS: reads and writes go through poll (SocketCalls)
    return sock


def shutdown(sock: socket.socket) -> None:
    """Shut the connection down (the other thread's recv returns); never raises."""
    try:
        tcp_shutdown(sock)
    except OSError:
        pass  # already closed or never connected


class SocketCalls:
    """``sendall`` and ``recv`` on one client's sockets, one connection after another.

    Locks: the caller serialises ``sendall`` (its send lock). With TLS, every call into
    the SSL object, the receive thread's ``recv`` included, also holds ``_io_lock``,
    since OpenSSL forbids concurrent use; it is taken inside the caller's send lock and
    never held across a wait.
    """

    __slots__ = ("_io_lock", "_tls", "_writer")

    def __init__(self, tls: bool) -> None:
        self._tls = tls
        self._io_lock = threading.Lock()
        self._writer = TlsWriter()  # under the caller's send lock

    def sendall(self, sock: socket.socket, data: bytes, tick: float) -> None:
        """All of ``data``, within ``tick`` seconds (TimeoutError), or OSError."""
        if not self._tls:
            sock.sendall(data)
            return
        deadline = time.monotonic() + tick
        view = memoryview(data)
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLOUT)
        while view:
            with self._io_lock:
                try:
                    sent = self._writer.send(sock, view)
                except BlockingIOError:
                    sent = 0
            if sent:
                view = view[sent:]
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("TLS send timed out")
            poller.poll(left * 1000)

    def recv(self, sock: socket.socket, tick: float) -> bytes:
        """What arrived (b"": the end of the stream); TimeoutError after one quiet tick,
        OSError when the connection broke."""
        if not self._tls:
            return sock.recv(RECV_SIZE)
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        while True:
            with self._io_lock:
                data = tls_recv(sock, RECV_SIZE)
            if data is not None:
                return data
            if not poller.poll(tick * 1000):
                raise TimeoutError
