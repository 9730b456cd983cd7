"""A connection's TLS: the handshake, threadless on the admission thread (``shake``) or
on its reader thread (``handshake``), and the reader thread's reads through the
outbox's lock.

The accept path only wraps the socket (``do_handshake_on_connect=False``) and makes it
non-blocking. The admission thread, whose epoll says when the client has sent something
(chatroom_server.admission), runs the handshake a step at a time (``shake``): each step
takes what has come and says whether it wants more, so a client sending its ClientHello
a byte a second (slowloris) is a connection in the epoll, not a thread, until its
handshake is done and its first frame has come whole, decrypted
(chatroom_server.firstlook). A non-blocking ``SSLSocket`` rather than ``wrap_bio`` with
memory BIOs: the outbox and the reader thread already use that very socket, so the
connection a thread takes on is the one the admission thread shook hands on, with
nothing to hand over between two transports; what OpenSSL has decrypted and not yet
given out stays in the SSL object, for the next read of whoever reads next.

The reader thread still runs the handshake (bounded by the login window, blocking) when
there are no login slots (no admission epoll), or when the server's own flight did not
fit in the socket's send buffer (``STUCK``: the epoll here waits for reads only).

Reads and writes of one ``SSLSocket`` must not interleave, so every step and read takes
the outbox's lock (``Outbox.handshake_tls``, ``Outbox.recv_tls``) and a reader thread
waits for the next record outside it, in ``poll()``.
"""

from __future__ import annotations

import enum
import logging
import select
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatroom_server.conn import Conn

log = logging.getLogger(__name__)


class Step(enum.Enum):
    """Where a step of the handshake on the admission thread (``shake``) left it."""

    DONE = "done"  # the session is up: application data may follow
    MORE = "more"  # it waits for the client's next bytes
    STUCK = "stuck"  # its flight waits for room in the send buffer: its thread goes on
    FAILED = "failed"  # a bad record, a reset, an end: logged; nothing can reach it


def shake(conn: Conn) -> Step:
    """Admission thread: one non-blocking step of ``conn``'s handshake, on what its
    client has sent so far (its socket is non-blocking since it was accepted)."""
    try:
        conn.outbox.handshake_tls()
    except ssl.SSLWantReadError:
        return Step.MORE
    except ssl.SSLWantWriteError:
        return Step.STUCK
    except OSError as exc:  # ssl.SSLError included
        log.info("TLS handshake with %s failed: %s", conn.addr, exc)
        return Step.FAILED
    conn.handshaken = True
    return Step.DONE


def handshake(conn: Conn, timeout: float) -> bool:
    """Reader thread: the TLS handshake (or the rest of it), bounded by ``timeout`` (the
    login window); then the socket goes non-blocking. False: it failed (logged)."""
    sock = conn.sock
    assert isinstance(sock, ssl.SSLSocket)
    sock.settimeout(timeout)
    try:
        sock.do_handshake()
    except (ssl.SSLError, OSError) as exc:
        log.info("TLS handshake with %s failed: %s", conn.addr, exc)
        return False
    sock.setblocking(False)
    conn.handshaken = True
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
