"""A JSON connection's TLS on its reader thread (chatroom_server.listeners ``serve``):
the handshake, bounded by the login window, and reads through the outbox's lock.

The accept path only wraps the socket (``do_handshake_on_connect=False``); the
handshake happens on the connection's own thread, which may wait for its client there.
Reads and writes of one ``SSLSocket`` must not interleave, so a read takes the outbox's
lock (``Outbox.recv_tls``) and waits for the next record outside it, in ``poll()``.
"""

from __future__ import annotations

import logging
import select
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatroom_server.conn import Conn

log = logging.getLogger(__name__)


def handshake(conn: Conn, timeout: float) -> bool:
    """TLS handshake, bounded by ``timeout`` (the login window); then the socket goes
    non-blocking. False: it failed (logged)."""
    sock = conn.sock
    assert isinstance(sock, ssl.SSLSocket)
    sock.settimeout(timeout)
    try:
        sock.do_handshake()
    except (ssl.SSLError, OSError) as exc:
        log.info("TLS handshake with %s failed: %s", conn.addr, exc)
        return False
    sock.setblocking(False)
    return True


def receiver(conn: Conn) -> Callable[[int], bytes]:
    """recv() for a TLS connection: SSL reads under the outbox lock, waiting in poll()
    (outside it) when no record is ready. Shutdown of the socket wakes the poll."""
    poller = select.poll()
    poller.register(conn.sock.fileno(), select.POLLIN)

    def recv(size: int) -> bytes:
        while True:
            data = conn.outbox.recv_tls(size)
            if data is not None:
                return data
            poller.poll()

    return recv


def close_half_made(exc: OSError) -> None:
    """The TLS socket that ``wrap_socket`` made and then raised from owns the accepted
    socket's file descriptor (it was detached into it): close it now, not when the
    collector finds it (with a ResourceWarning)."""
    tb = exc.__traceback__
    while tb is not None:
        made = tb.tb_frame.f_locals.get("self")
        if isinstance(made, ssl.SSLSocket):
            made.close()
            return
        tb = tb.tb_next
