"""Non-blocking TLS socket calls, written once for the clients and the server.

Public because the server's outbox uses it too (a package imports no other package's
private modules): what is in ``__all__`` is kept stable for both.

OpenSSL's rule for a non-blocking write that could not complete (``SSL_ERROR_WANT_WRITE``):
the retry must pass the very same bytes and length. :class:`TlsWriter` remembers that
length; the caller keeps the bytes at the head of what it writes next.
"""

from __future__ import annotations

import socket
import ssl
from typing import Final

__all__ = ["TLS_RECORD", "TlsWriter", "client_context", "tcp_shutdown", "tls_recv"]

TLS_RECORD: Final = 16384  # the largest TLS record's payload


class TlsWriter:
    """One connection's pending-retry state. Not thread-safe: the caller's write lock
    (which must also cover every other call into the same SSL object) guards it."""

    __slots__ = ("_retry",)

    def __init__(self) -> None:
        self._retry = 0  # length OpenSSL expects again after want-write; 0: none

    def send(self, sock: socket.socket, data: bytes | bytearray | memoryview) -> int:
        """Write a prefix of ``data``; BlockingIOError when nothing could be written (wait
        for the socket, then call again with ``data`` starting with the same bytes)."""
        n = self._retry or min(len(data), TLS_RECORD)
        try:
            sent = sock.send(bytes(data[:n]))
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            self._retry = n
            raise BlockingIOError from None
        self._retry = 0
        return sent


def client_context(tls: bool | ssl.SSLContext, ca_file: str | None) -> ssl.SSLContext | None:
    """A client's ``tls=`` argument as a context: None for plain TCP, the caller's own
    context as is, or one that verifies the server against ``ca_file`` (default: the
    system's CAs)."""
    if isinstance(tls, ssl.SSLContext):
        return tls
    return ssl.create_default_context(cafile=ca_file) if tls else None


def tls_recv(sock: socket.socket, size: int) -> bytes | None:
    """Decrypted bytes; b"" at the end of the stream; None when no whole record is ready
    yet (wait for the socket to be readable and call again)."""
    try:
        return sock.recv(size)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return None
    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
        return b""


def tcp_shutdown(sock: socket.socket, how: int = socket.SHUT_RDWR) -> None:
    """Shut the TCP connection down without touching TLS state: ``SSLSocket.shutdown()``
    would drop its SSL object under a thread still using it, and later writes would go
    out unencrypted."""
    socket.socket.shutdown(sock, how)
