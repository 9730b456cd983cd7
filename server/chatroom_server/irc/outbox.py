"""Out, at the connection: :class:`IrcOutbox`, the outbox of an IRC connection, which
turns every frame the server queues to it into lines (by its session's
:class:`~chatroom_server.irc.render.IrcRender`), and :class:`Translations`, the
translations shared by every IRC connection (chatroom_server.irc, "Out").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatroom_server.irc.queries import Whowas
from chatroom_server.outbox import Outbox

if TYPE_CHECKING:
    from chatroom_server.irc.render import IrcRender


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


class IrcOutbox(Outbox):
    """An :class:`~chatroom_server.outbox.Outbox` that turns the server's frames into
    IRC lines for its connection (module docstring, "Out")."""

    __slots__ = ("session",)

    session: IrcRender

    @property
    def renders(self) -> bool:
        return True

    def send(self, data: bytes) -> bool:
        return super().send(self.session.translate(data))

    def queue(self, data: bytes) -> bool:
        return super().queue(self.session.translate(data))

    def offer(self, data: bytes) -> None:
        super().offer(self.session.translate(data))

    def replay(self, data: bytes) -> bool:
        return super().replay(self.session.translate(data))

    def release(self, first: bytes) -> bool:
        return super().release(self.session.translate(first))

    def finish(self, last: bytes = b"") -> None:
        super().finish(self.session.translate(last) if last else b"")

    def send_irc(self, data: bytes) -> bool:
        """Lines made here, sent as they are."""
        return super().send(data)
