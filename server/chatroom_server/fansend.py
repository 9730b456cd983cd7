"""The sending of a fan-out pass's parts (chatroom_server.fanout): a run of lobby
batches to everyone, a run of batches with rooms in them to each room's members, a DM to
its recipient, and each sender's ack after every recipient has its messages
(docs/PROTOCOL.md §pm).

Why a module of its own: what a pass stores and in what order it takes the queue
(fanout.py) is one idea; how its parts reach the outboxes, gathered per recipient so
that each gets one write a pass, is another, and the hot path of every delivery.

Threads: a :class:`Sender` is used only by the holder of ``FanOut._lock``, like the
items it sends; what it calls (``Outbox.offer``/``send``, chatroom_server.delivery,
chatroom_server.fanturns) never blocks.
"""

from __future__ import annotations

from collections.abc import Callable

from chatroom.protocol import username_key
from chatroom_server.delivery import Entry, deliver
from chatroom_server.fanitems import Batch, Direct, Member, RoomMember
from chatroom_server.fanturns import LARGE, Turns, gather
from chatroom_server.frames import joined
from chatroom_server.metrics import FanOutStats


class Sender:
    """Sends a pass's parts for a FanOut (see the module docstring): ``roster`` the
    connections a lobby message goes to, ``lookup`` a logged-in connection by username
    key, ``turns`` the large rooms' messages owed (fanturns.py), ``stats`` the fan-out's
    counts, ``deliver`` False in a cluster node (only the acks are sent here)."""

    def __init__(
        self,
        roster: Callable[[], tuple[Member, ...]],
        lookup: Callable[[str], Member | None],
        turns: Turns,
        stats: FanOutStats,
        deliver: bool,
    ) -> None:
        self._roster = roster
        self._lookup = lookup
        self._turns = turns
        self.stats = stats
        self._deliver = deliver
        # A room member's connection on this server by username key (FanOut.serve_rooms
        # sets it once, before the server takes connections).
        self.local: Callable[[str], RoomMember | None] = lambda key: None

    def session_of(self, conn: Member) -> Member | None:
        """The session its user has now (None: none, or not logged in)."""
        name = conn.username
        return None if name is None else self._lookup(username_key(name))

    def send_direct(self, item: Direct) -> None:
        turns = self._turns
        if turns:  # after what its recipient and sender are owed, its ack in order
            turns.finish_of(item.conn)
            if item.frame and item.target is not None and self._deliver:
                turns.give(item.target, item.frame)
                self.stats.deliveries += 1
            turns.give(item.conn, item.ack)
            return
        if item.frame and item.target is not None and self._deliver:
            item.target.outbox.send(item.frame)
            self.stats.deliveries += 1
        item.conn.outbox.send(item.ack)

    def send_parts(self, run: list[Batch]) -> None:
        """One round of batches with rooms in them: each room message to its room's
        members on this server that speak rooms (not its sender's user), each lobby one
        to everyone (as :meth:`send_run`), every recipient's in seq order, then the
        acks. Consecutive room parts are gathered per member first: one send each. A
        batch whose room messages reach over ``LARGE`` members (and no lobby one) is
        sent in turns instead (fanturns.py), its ack after its last write."""
        if not self._deliver:
            for b in run:
                b.conn.outbox.send(b.ack)
            return
        local = self.local
        turns = self._turns
        if len(run) == 1 and not turns and self._alone(run[0]):
            return
        out: dict[RoomMember, list[bytes]] = {}
        deliveries = 0
        for b in run:
            assert b.parts is not None
            skip = username_key(b.conn.username) if b.conn.username is not None else ""
            reach = 0
            for to, _, _ in b.parts:
                reach = -1 if to is None or reach < 0 else reach + len(to[1])
            if reach > LARGE:
                self.flush_members(out)  # what went before it is not owed: sent now
                out = {}
                deliveries += turns.add_parts(b, skip, local)
                continue
            for to, data, n in b.parts:
                if to is not None:
                    deliveries += gather(out, to[1], skip, local, data)
                    continue
                # A lobby message between room ones: what went before goes out first.
                self.flush_members(out)
                out = {}
                if turns:
                    turns.finish_all()  # to everyone: after all they are owed
                owners = (b.conn, self.session_of(b.conn))
                deliveries += deliver(self._roster(), [(owners, None, data, n)])
        self.flush_members(out)
        self.stats.deliveries += deliveries
        for b in run:
            if b.deferred:
                continue  # acked after its last write (fanturns.py)
            if turns:  # its ack after its earlier ones, and after what it is owed
                turns.finish_of(b.conn)
                turns.give(b.conn, b.ack)
            else:
                b.conn.outbox.offer(b.ack)  # after every recipient has the messages (§pm)

    def _alone(self, b: Batch) -> bool:
        """Send ``b`` if it is one room's message(s) alone in its round, to no more than
        ``LARGE`` members, nothing owed to anyone (the caller's test): what a small
        room's message is at a quiet rate. Nobody gets anything else this round, so
        there is nothing to gather per member: each gets its one write at once, with no
        dict and no list per member (docs/PERFORMANCE.md, "The small room's pass").
        Who gets it is fanturns.gather's test, kept the same (a test compares them).
        False, having sent nothing, if ``b`` is anything else."""
        parts = b.parts
        assert parts is not None
        if len(parts) != 1:
            return False
        to, data, _ = parts[0]
        if to is None:
            return False
        keys = to[1]
        if len(keys) > LARGE:
            return False
        name = b.conn.username
        skip = "" if name is None else username_key(name)
        local = self.local
        n = 0
        for key in keys:
            if key != skip:
                c = local(key)
                if c is not None and c.rooms:
                    c.outbox.offer(data)
                    n += 1
        self.stats.deliveries += n
        b.conn.outbox.offer(b.ack)  # after every recipient has the messages (§pm)
        return True

    def flush_members(self, out: dict[RoomMember, list[bytes]]) -> None:
        give = self._turns.give if self._turns else None  # after what each is owed
        for c, chunks in out.items():
            ob = c.outbox
            if len(chunks) == 1:
                data = chunks[0]
            else:  # the events only for a transport that renders them (frames.py)
                data = joined(chunks) if ob.renders else b"".join(chunks)
            if give is None:
                ob.offer(data)
            else:
                give(c, data)

    def send_run(self, run: list[Batch]) -> None:
        """One round: every batch in ``run`` to every recipient, as one send each."""
        if not self._deliver:
            for b in run:
                b.conn.outbox.send(b.ack)
            return
        # Not to its sender, nor to its sender's new session, when it logged in again
        # (a cut) before this round: that one would get its own message live, without
        # the cid by which a replay shows it as its own (docs/RELIABILITY.md F1). One
        # send per recipient, straight away (chatroom_server.delivery); the acks after
        # every recipient has the broadcasts (docs/PROTOCOL.md §pm).
        entries: list[Entry] = [
            ((b.conn, self.session_of(b.conn)), None, b.data, b.n_data) for b in run
        ]
        if self._turns:
            self._turns.finish_all()  # to everyone: after all they are owed
        self.stats.deliveries += deliver(self._roster(), entries)
        for b in run:
            b.conn.outbox.offer(b.ack)  # also a sender that left the roster meanwhile
