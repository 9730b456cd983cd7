"""Housekeeping: the timeouts (docs/PROTOCOL.md §Timeouts).

:class:`Housekeeping` runs on its own thread (``chat-housekeeping``) every
``housekeeping_interval`` s: it closes connections that did not log in within the login
window or sent nothing for the idle timeout (bye ``timeout``), pings idle IRC clients
(which answer PING rather than send keepalives of their own), and asks every outbox
whether its slow client has stalled. It reads each connection's ``last_rx``,
``in_login`` and ``connected_at`` without a lock: a stale read only delays a close to
the next sweep. The retention pass has its own thread (chatroom_server.replay).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, cast

from chatroom.protocol import Bye, ByeReason, encode
from chatroom_server.replies import IrcLines

if TYPE_CHECKING:
    from chatroom_server.config import ServerConfig
    from chatroom_server.presence import Presence

log = logging.getLogger(__name__)

_BYE_TIMEOUT = encode(Bye(reason=ByeReason.TIMEOUT))


class Housekeeping:
    """The timeouts' sweep (module docstring)."""

    def __init__(self, config: ServerConfig, presence: Presence, stopping: threading.Event) -> None:
        self._config = config
        self._presence = presence
        self._stopping = stopping
        self._clock = config.clock

    def run(self) -> None:
        """The ``chat-housekeeping`` thread."""
        while not self._stopping.wait(self._config.housekeeping_interval):
            self.sweep()

    def sweep(self) -> int:
        """Close connections past their deadlines (docs/PROTOCOL.md §Timeouts); return how
        many. Runs every ``housekeeping_interval`` s; tests call it after moving the clock."""
        c = self._config
        now = self._clock()
        conns = self._presence.connections()
        closed = 0
        for conn in conns:
            irc = conn.irc
            if (
                irc is not None
                and irc.registered
                and c.idle_timeout
                and not irc.pinged
                and now - conn.last_rx > c.idle_timeout / 2
            ):
                # IRC clients answer PING rather than send keepalives of their own.
                irc.pinged = True
                # Straight to the socket, not irc.reply (send_ordered): that one is the
                # reader thread's, which owns the batch and the fan-out counts.
                cast(IrcLines, conn.outbox).send_irc(f"PING :{irc.name}\r\n".encode())
            if (
                conn.username is None
                and not conn.in_login
                and now - conn.connected_at > c.login_timeout
            ):
                log.info("closing %r: not logged in within %g s", conn, c.login_timeout)
            elif (
                conn.username is not None
                and c.idle_timeout
                and (now - conn.last_rx > c.idle_timeout)
            ):
                log.info("closing %r: nothing received for %g s", conn, c.idle_timeout)
            else:
                conn.outbox.check_stall(now)  # slow consumers that make no progress
                continue
            conn.outbox.finish(_BYE_TIMEOUT)
            closed += 1
        return closed
