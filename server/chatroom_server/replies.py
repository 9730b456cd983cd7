"""A connection's own output, in the order of its requests.

What a reader thread sends its own client goes out behind the public messages that
client sent before (docs/PROTOCOL.md §Ordering): a connection's batch of public messages
(``Conn.batch``, filled by the pm handler, chatroom_server.handlers) is handed to the
fan-out first (``flush_batch``), and a reply waits in the fan-out's queue behind them
while any of them is still queued (``reply``). Every part that answers a client (the
handlers, the command runner, login, replay, the web transport) answers through here.

No state of its own: a connection's batch and counters belong to its reader thread
(chatroom_server.conn), and the fan-out has its own lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast

from chatroom_server.conn import UNUSED
from chatroom_server.session import error_frame

if TYPE_CHECKING:
    from chatroom_server.backends import Backends
    from chatroom_server.conn import Conn


class IrcLines(Protocol):
    """An IRC connection's outbox (irc.render.IrcOutbox, or a web one speaking IRC)."""

    def send_irc(self, data: bytes) -> bool: ...


class Replies:
    """A connection's batch and replies, in request order (module docstring)."""

    __slots__ = ("_b",)

    def __init__(self, backends: Backends) -> None:
        self._b = backends

    def flush_batch(self, conn: Conn) -> None:
        """Hand the batched broadcasts to the fan-out (chatroom_server.fanout): stored (with
        the message log), then to every other logged-in connection, then the acks
        (docs/PROTOCOL.md §pm: the ack follows the hand-off)."""
        frames, acks, msgs, rids = conn.batch, conn.acks, conn.msgs, conn.rids
        events = conn.events
        conn.batch = conn.acks = conn.msgs = conn.rids = conn.events = UNUSED
        b = self._b
        if b.log is None:
            b.fanout.broadcast(conn, frames, acks, events=events)
        else:
            b.fanout.broadcast(conn, frames, acks, msgs, rids, events)

    def reply(self, conn: Conn, data: bytes) -> None:
        """Send to the connection's own client, behind its broadcasts still queued."""
        if conn.done == conn.handed:
            conn.outbox.send(data)
        else:
            self._b.fanout.after(conn, lambda: conn.outbox.send(data))

    def send_ordered(self, conn: Conn, data: bytes) -> None:
        """irc.session.Core: the gateway's own lines, behind the public messages its
        earlier lines handed over (a room message is checked, and maybe refused, by the
        fan-out's pass: chatroom_server.fanout, "Rooms"). At once when nothing is. On
        the connection's reader thread only (it owns ``batch`` and ``handed``)."""
        outbox = cast(IrcLines, conn.outbox)
        if conn.batch:
            self.flush_batch(conn)
        if conn.done == conn.handed:
            outbox.send_irc(data)
        else:
            self._b.fanout.after(conn, lambda: outbox.send_irc(data))

    def send_after_batch(self, conn: Conn, data: bytes) -> None:
        if conn.batch:
            self.flush_batch(conn)  # replies go out in the order of the requests
        self.reply(conn, data)

    def send_error(self, conn: Conn, code: str, message: str, rid: str | int | None) -> None:
        self.send_after_batch(conn, error_frame(code, message, rid))

    def finish(self, conn: Conn, bye: bytes) -> None:
        """The last frame to the connection (a bye), behind everything it was sent."""
        if conn.batch:
            self.flush_batch(conn)
        self._b.fanout.after(conn, lambda: conn.outbox.finish(bye))
