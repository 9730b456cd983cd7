"""Out, shared: :class:`Translations`, the translations shared by every IRC connection
(chatroom_server.irc, "Out"), which the renderer of each session reads and fills.
"""

from __future__ import annotations

from chatroom_server.irc.queries import Whowas


class Translations:
    """The last frames translated for each set of capabilities that changes the
    output (tags or not), shared by every IRC connection: the fan-out queues the same
    bytes object to each recipient, so one translation serves all of them."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[bytes, bytes]] = {}
        # The gateway's other shared state: the sessions that ended, for WHOWAS.
        self.whowas = Whowas()

    def get(self, data: bytes, mode: int) -> bytes | None:
        hit = self._last.get(mode)
        return hit[1] if hit is not None and hit[0] is data else None

    def put(self, data: bytes, mode: int, out: bytes) -> None:
        self._last[mode] = (data, out)
