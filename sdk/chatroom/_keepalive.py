"""Keepalive for a client session (docs/PROTOCOL.md §Timeouts): when to ping, and when a
silent server counts as dead. No I/O and no clock of its own: the caller passes ``now``
(any monotonic clock). The session owns it (one owner, or the session's lock)."""

from __future__ import annotations

from typing import Final

from chatroom.errors import ChatTimeout
from chatroom.protocol import PingCommand, encode

__all__ = ["PING", "Keepalive"]

PING: Final = encode(PingCommand())


class Keepalive:
    """``interval``: seconds of quiet (either way) after which :meth:`check` asks for a
    ping; 0 turns pings off. ``timeout``: seconds more of silence from the server after
    which the connection counts as dead."""

    __slots__ = ("interval", "last_rx", "last_tx", "pinged", "timeout")

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.last_rx = 0.0  # when bytes last arrived
        self.last_tx = 0.0  # when bytes last went out
        self.pinged = False  # a ping is out since the last frame arrived

    def reset(self, now: float) -> None:
        """A new connection, open at ``now``."""
        self.last_rx = self.last_tx = now
        self.pinged = False

    def check(self, now: float) -> bytes:
        """A ping to send, or b"". Raises :class:`~chatroom.errors.ChatTimeout` once the
        server has been silent for ``interval + timeout`` seconds."""
        k = self.interval
        if k <= 0:
            return b""
        quiet = now - self.last_rx
        if quiet >= k + self.timeout:
            raise ChatTimeout(f"no answer from the server for {quiet:.0f} s")
        # Checked on every pass, not only when nothing arrives: a client that receives a
        # steady stream must still send, or the server closes it for silence.
        if now - self.last_tx >= k or (quiet >= k and not self.pinged):
            self.pinged = True
            return PING
        return b""
