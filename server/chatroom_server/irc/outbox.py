"""Out, at the connection: :class:`IrcOutbox`, the outbox of an IRC connection, which
turns every frame the server queues to it into lines (by its session's
:class:`~chatroom_server.irc.render.IrcRender`; chatroom_server.irc, "Out").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatroom_server.outbox import Outbox

if TYPE_CHECKING:
    from chatroom_server.irc.render import IrcRender


_offer = Outbox.offer


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
        # The fan-out's call, once per recipient: the base class named, not super(),
        # whose object costs a fifth of what the gateway adds to a delivery
        # (docs/PERFORMANCE.md, "The send path").
        _offer(self, self.session.translate(data))

    def replay(self, data: bytes) -> bool:
        return super().replay(self.session.translate(data))

    def release(self, first: bytes) -> bool:
        return super().release(self.session.translate(first))

    def finish(self, last: bytes = b"") -> None:
        super().finish(self.session.translate(last) if last else b"")

    def send_irc(self, data: bytes) -> bool:
        """Lines made here, sent as they are."""
        return super().send(data)
