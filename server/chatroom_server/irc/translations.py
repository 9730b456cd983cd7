"""Out, shared: :class:`Translations`, the translations shared by every IRC connection
(chatroom_server.irc, "Out"), which the renderer of each session reads and fills.
"""

from __future__ import annotations

from chatroom_server.irc.pusher import Pusher
from chatroom_server.irc.queries import Whowas


class Translations:
    """The last frames translated for each set of capabilities that changes the
    output (tags or not), shared by every IRC connection: the fan-out queues the same
    bytes object to each recipient, so one translation serves all of them."""

    def __init__(self) -> None:
        # Per mode: (the frames, their lines). Each tuple is replaced whole, so a reader
        # on another thread sees a pair that belongs together. IrcRender.translate reads
        # it directly: it is looked up once per recipient of every message.
        self.last: dict[int, tuple[bytes, bytes]] = {}
        # The gateway's other shared state: the sessions that ended, for WHOWAS.
        self.whowas = Whowas()
        # The lines owed to connections, written in batches (chatroom_server.irc.outbox).
        self.pusher = Pusher()

    def put(self, data: bytes, mode: int, out: bytes) -> None:
        self.last[mode] = (data, out)
