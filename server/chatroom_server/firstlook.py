"""A connection's first bytes, looked at on the admission thread.

When a connection's client has said something (chatroom_server.admission), the
admission thread offers it to :meth:`FirstLook.first` before it goes in line for a
thread and a login slot: a first frame that is a login the admission thread may run
itself (chatroom_server.earlylogin) runs here, and the connection is parked, held, or
given its thread with nothing to wait for (``Listeners._resume``). A first frame that
has come only in part (a JSON line, an IRC line, an HTTP request's head) waits here,
threadless, for the rest; over TLS, its handshake is run here first, a step per look
(chatroom_server.tlsconn), and the frame read decrypted.

Threads: the admission thread alone (``first``, and ``early_refused``, its count).
What it hands a read to and the handler crash count are the listeners'
(chatroom_server.listeners).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from chatroom.protocol import LoginCommand
from chatroom_server import tlsconn
from chatroom_server.earlylogin import HELD
from chatroom_server.irc.parse import LINE as IRC_LINE
from chatroom_server.irc.parse import TAGS as IRC_TAGS
from chatroom_server.tlsconn import Step
from chatroom_server.web import MAX_HEADERS

if TYPE_CHECKING:
    from chatroom_server.admission import Admission
    from chatroom_server.config import ServerConfig
    from chatroom_server.conn import Conn
    from chatroom_server.session import Action

log = logging.getLogger(__name__)


class FirstLook:
    """The admission thread's look at a connection's first bytes (module docstring)."""

    def __init__(
        self,
        config: ServerConfig,
        admission: Admission[Conn],
        early: Callable[[Conn, bytes], LoginCommand | str | None] | None,
        act: Callable[[Conn, Iterable[Action]], str | None],
        flush_batch: Callable[[Conn], None],
        resume: Callable[[Conn], None],
        end: Callable[[Conn], None],
        crashed: Callable[[], None],
    ) -> None:
        self._config = config
        self._clock = config.clock
        self._admission = admission
        self._early = early  # EarlyLogin.early; None: every login on its thread
        self._act = act  # the command runner's (CommandRunner.act)
        self._flush_batch = flush_batch
        self._resume = resume  # its thread, with no slot (Listeners._resume)
        self._end = end  # ended with no thread (Listeners._end_threadless)
        self._crashed = crashed  # a handler crash counted (Listeners.handler_crashes)
        # Logins first() took that began no session (a ban, a client gone, "try again"):
        # the admission thread's alone. Those that did are Login.early_logins.
        self.early_refused = 0

    def first(self, conn: Conn) -> bool:
        """Admission thread: a connection whose client has said something, before it
        goes in line for a thread and a login slot. If what it said starts with a login
        that waits for nothing (``EarlyLogin.early``: a returning user whose password
        the store remembers), the login runs here, now: login_ok goes out with no
        thread started, no slot taken and no GIL handed over, which in an arrival storm
        is most of a login's cost (docs/PERFORMANCE.md, "Arrival storms"). Then the
        connection is parked (``Admission.park``) until its client says more; or, with
        bytes after the login or a replay to send, its thread starts at once, with no
        slot, and handles those first (``Listeners.serve``). A new name's first login
        (a cheap hash) is registered from here instead (``EarlyLogin._register_soon``):
        the connection is held until the account is durable, then comes back here, its
        bytes kept in ``unread``, and logs in as a return would. True if it took the
        connection; False: it goes in line as before, with what was read kept for its
        thread (decrypted, over TLS: ``Conn.unread``, and what OpenSSL holds yet)."""
        if conn.outbox.tls and not conn.handshaken:
            step = tlsconn.shake(conn)
            if step is Step.MORE:
                # Part of a ClientHello (or of its Finished), kept by OpenSSL: back into
                # the epoll, threadless, as a half frame is (below).
                self._admission.rewatch(conn)
                return True
            if step is Step.STUCK:
                return False  # its thread finishes the handshake (tlsconn)
            if step is Step.FAILED:
                self._end(conn)  # a garbage record, a reset, its end: no thread for it
                return True
            # Done: what came with its last handshake record is read now (below), as
            # the epoll would not say so for bytes OpenSSL has taken off the socket.
        web = conn.web is not None
        irc = conn.irc is not None and not web
        limit = _limit(conn, web, irc)
        # A held registration's, handed back (EarlyLogin._registered), or the first
        # part of a frame read at an earlier look (below).
        if not _whole(conn.unread, web) and not self._more(conn, limit):
            # Its end (or the sweep's SHUT_RD), or a reset: its thread's own read finds
            # out, after what came before it.
            return False
        data = conn.unread
        if not _whole(data, web):
            if len(data) > limit:
                # Its thread's decoder says too_large (h11: 431; IRC: 417), as ever.
                return False
            # Half a frame, of an HTTP request's head or of an IRC line (a slow client,
            # or a slowloris sending a byte a second): back into the epoll with its
            # bytes kept here, no thread until the rest comes (Admission.rewatch); the
            # login timeout's sweep still closes it.
            self._admission.rewatch(conn)
            return True
        if web or irc:
            # A request's head or an IRC line, whole: its thread (web.py, irc/) takes
            # it on, from these bytes (serve).
            return False
        end = data.find(b"\n") + 1
        if self._early is None or end - 1 > conn.decoder.max_frame:
            return False  # over max_frame: its thread's decoder says too_large
        try:
            taken = self._early(conn, data[:end])
        except Exception:
            # A bug (or bytes it did not foresee) in the early look: the login goes in line
            # as before, and the admission thread, which lets everyone in, lives on.
            log.exception("the early look at %r's first frame crashed", conn)
            taken = None
        if taken == HELD:
            return True  # a registration begun: held until it is durable (admission.py)
        if not isinstance(taken, LoginCommand):
            return False  # a password to check, a replay to delete first...
        conn.unread = data[end:]
        conn.last_rx = self._clock()
        conn.early = True
        try:
            # Decoded once, by EarlyLogin.early: the session takes it as it is.
            closing = self._act(conn, conn.receive_decoded(taken))
            if conn.batch:
                self._flush_batch(conn)
        except Exception:
            # As in serve: a bug costs this connection, never the admission thread.
            self._crashed()
            log.exception("login of %r on the admission thread crashed; closing it", conn)
            closing = "handler error"
        finally:
            conn.early = False
        if conn.username is None:
            self.early_refused += 1
        if closing is not None:
            conn.later = ends
        if conn.username is not None and conn.later is None and not conn.unread:
            self._admission.park(conn)
        else:
            self._resume(conn)
        return True

    def _more(self, conn: Conn, limit: int) -> bool:
        """What has come since the last look, added to ``conn.unread``; False at its end
        or on an error (a reset, a bad TLS record), for its thread to find out."""
        if not conn.outbox.tls:
            try:
                more = conn.sock.recv(self._config.recv_size, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return True  # nothing after all: wait on
            except OSError:
                return False
            conn.unread += more
            return bool(more)
        # TLS: every record there is, until OpenSSL wants more from the socket. The
        # epoll says when the socket has bytes, not when the SSL object holds plaintext
        # not yet read: parked with some, a connection would wait for nothing. Only
        # once over the limit may some stay there, for its thread (which goes next).
        while len(conn.unread) <= limit:
            try:
                got = conn.outbox.recv_tls(self._config.recv_size)
            except OSError:
                return False
            if got is None:
                return True
            if not got:
                return False
            conn.unread += got
        return True


def _limit(conn: Conn, web: bool, irc: bool) -> int:
    """The most a first frame may hold before its thread's decoder refuses it: an HTTP
    request's head, an IRC line with its tags (irc/parse.py's ``LineDecoder``), or a
    JSON frame."""
    if web:
        return MAX_HEADERS
    if irc:
        return IRC_LINE + IRC_TAGS
    return conn.decoder.max_frame


def _whole(data: bytes, web: bool) -> bool:
    """Whether ``data`` holds a whole first frame: a line, or for the web port an HTTP
    request's head, which ends at a blank line (h11 looks for ``\\n\\r?\\n``)."""
    if not web:
        return b"\n" in data
    return b"\n\r\n" in data or b"\n\n" in data


def ends() -> bool:
    """A connection's ``later`` when its early login closed it (FirstLook.first)."""
    return False
