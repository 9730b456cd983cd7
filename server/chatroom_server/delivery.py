"""One round of frames to the roster: the delivery loop that the fan-out
(chatroom_server.fanout, its passes) and the cluster's consumer (chatroom_server.node,
the stream's messages) share.

A round is a list of entries in order (seq order, with the message log), each either
public (to everyone in the roster but its sender's sessions: nobody is sent their own
message, docs/PROTOCOL.md §pm, docs/RELIABILITY.md F1) or direct (to one recipient, if
it is in the roster). Every recipient gets its share of the round in that order as one
hand-over (``Outbox.offer``: one ``send`` when the socket takes it, docs/PERFORMANCE.md,
"Fewer steps per delivery"). Everyone whose share is not simply every public entry (the
senders, and the recipients of direct entries) has theirs made once; everyone else gets
the same joined bytes, with nothing per recipient but one set lookup.

Frames an outbox was given earlier with ``Outbox.queue`` (a cluster node's room rows,
chatroom_server.noderooms) stay ahead of the round's: ``offer`` sends what is queued
first.

Threads: called by the fan-out lock's holder only (``FanOut._lock``), which is what
keeps every recipient's frames in order; the entries are the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatroom_server.fanitems import Member
from chatroom_server.frames import joined

# One entry: (its sender's sessions, not sent a public entry; its recipient, None for a
# public one; its frames, whole; how many frames). A direct entry's senders are not
# looked at (a DM to oneself reaches its recipient).
Entry = tuple[tuple[Member | None, ...], Member | None, bytes, int]


def deliver(
    roster: Sequence[Member], entries: Sequence[Entry], reached: list[Member] | None = None
) -> int:
    """Hand each recipient in ``roster`` its share of ``entries`` (module docstring);
    the deliveries made (frames handed, summed over recipients). ``reached`` gets the
    recipients of direct entries and the senders that were in the roster."""
    if len(entries) == 1 and entries[0][1] is None and reached is None:
        # The fan-out's common case: one sender's batch. Identity tests and a count of
        # the skipped, not ``in`` and a sum per recipient: this loop is most of a
        # delivery's Python at 1,000 clients (docs/PERFORMANCE.md, "Fewer steps per
        # delivery").
        owners, _, data, n = entries[0]
        if not data:
            return 0
        if len(owners) <= 2:
            a, b = (*owners, None, None)[:2]
            skipped = 0
            for c in roster:
                if c is a or c is b:
                    skipped += 1
                else:
                    c.outbox.offer(data)
            return (len(roster) - skipped) * n
    special: set[Member | None] = set()
    full: list[bytes] = []
    n_full = 0
    for owners, to, data, n in entries:
        if to is None:
            special.update(owners)
            full.append(data)
            n_full += n
        else:
            special.add(to)
    special.discard(None)
    everyone = joined(full)  # with the events the parts carry (chatroom_server.frames)
    deliveries = 0
    for c in roster:
        if c in special:
            share, n = _share(c, entries)
            if reached is not None:
                reached.append(c)
            if share:
                c.outbox.offer(share)
                deliveries += n
        elif everyone:
            c.outbox.offer(everyone)
            deliveries += n_full
    return deliveries


def _share(c: Member, entries: Sequence[Entry]) -> tuple[bytes, int]:
    """``c``'s share of the round: the public entries not its own, its direct ones."""
    parts: list[bytes] = []
    n = 0
    for owners, to, data, k in entries:
        if (to is None and c not in owners) or to is c:
            parts.append(data)
            n += k
    # The events the parts carry only for an outbox that renders them (frames.py).
    return (joined(parts) if c.outbox.renders else b"".join(parts)), n
