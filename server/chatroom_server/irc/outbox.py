"""Out, at the connection: :class:`IrcOutbox`, the outbox of an IRC connection, which
turns every frame the server queues to it into lines (by its session's
:class:`~chatroom_server.irc.render.IrcRender`; chatroom_server.irc, "Out").

A frame sent to many IRC connections one :meth:`IrcOutbox.send` at a time (a room's
JOIN, PART or MODE to each member, chatroom_server.roomwire) is rendered once and
shared (:class:`~chatroom_server.irc.translations.Translations`); its lines are then
owed, not written: queued behind whatever the connection has queued, and written soon
after by the gateway's pusher (chatroom_server.irc.pusher), with every other line owed
to that connection meanwhile, in one ``send``. A thousand JOINs into a room of a
thousand were a million ``send`` calls of one line each; a PRIVMSG shares its ``send``
with the rest of its pass's lines (docs/PERFORMANCE.md, "mass JOINs, a send per
member"). Nothing overtakes owed lines: every later write to the connection (the
fan-out's, a reply's, a goodbye) queues behind them, as ``Outbox.queue`` says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatroom_server.outbox import Outbox

if TYPE_CHECKING:
    from chatroom_server.irc.render import IrcRender

_offer = Outbox.offer
_send = Outbox.send
_queue = Outbox.queue


class IrcOutbox(Outbox):
    """An :class:`~chatroom_server.outbox.Outbox` that turns the server's frames into
    IRC lines for its connection (module docstring, "Out")."""

    __slots__ = ("owed", "session")

    session: IrcRender
    # In the pusher's list (chatroom_server.irc.pusher): set by the thread that owes,
    # cleared by the pusher before it writes (its docstring says why none is stranded).
    owed: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owed = False

    @property
    def renders(self) -> bool:
        return True

    def send(self, data: bytes) -> bool:
        # The base class named, not super(): its object cost a tenth of a JOIN's line.
        session = self.session
        shared = session.shared_lines(data)
        if shared is None:
            return _send(self, session.translate(data))
        # Rendered for another connection already: one of many recipients (module
        # docstring). Queue()'s work, then owed to the pusher.
        if not self._accepting:
            return False
        if shared:
            self._pending.append(shared)
            session._shared.pusher.owe(self)
        return True

    def queue(self, data: bytes) -> bool:
        return _queue(self, self.session.translate(data))

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
        return _send(self, data)
