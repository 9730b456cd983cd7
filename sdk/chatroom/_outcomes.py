"""What both clients make of what their session says: a :class:`~chatroom.events.Receipt`
from an ``ack``, the next page back in history, a
:class:`~chatroom.events.Disconnect`'s reason, and the wait before a reconnect. Public as
``chatroom.session``'s names."""

from __future__ import annotations

import random

from chatroom.events import HistoryPage, Receipt
from chatroom.protocol import Ack

__all__ = ["disconnect_reason", "older_than", "receipt", "reconnect_delay"]

# The jitter's own generator: drawing on the global one would move the state that an
# application (or a test's seeded run, as Hypothesis seeds it) relies on.
_JITTER = random.Random()


def reconnect_delay(attempt: int, max_delay: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based): 0.25 s doubling,
    capped at ``max_delay``, with jitter so a crowd of clients does not return at once."""
    r = (rng or _JITTER).uniform(0.5, 1.0)
    return float(min(max_delay, 0.25 * 2 ** min(attempt, 32)) * r)


def disconnect_reason(ended: str | None, closing: bool) -> str:
    """The :class:`~chatroom.events.Disconnect` reason for a connection that ended after
    ``bye``/``Ended`` ``ended`` (None: none came), ``closing`` if we closed it."""
    if ended is not None:
        return ended
    return "closed" if closing else "network"


def receipt(ack: Ack, to: str | None = None) -> Receipt:
    """What ``pm``/``dm`` return for their ``ack``: the recipient's canonical name (or
    ``to`` as given, from a server that leaves it out), the seq, whether it was queued."""
    return Receipt(ack.to or to, ack.seq, ack.queued)


def older_than(page: HistoryPage) -> int | None:
    """The ``before`` of the page older than ``page``; None when there is none: how
    ``iter_history`` walks back (docs/PROTOCOL.md §history)."""
    if not page.has_more or not page.messages:
        return None
    return page.messages[0].seq
