"""The node's glue: what the cluster's bus (chatroom_server.cluster.bus) calls on this
server, on its consumer thread. Messages of every node arrive here in seq order, and
other nodes' logins and departures change this node's list (docs/CLUSTER.md).

:class:`ClusterNode` is the bus's :class:`~chatroom_server.cluster.bus.Handler`, kept out
of the server's own module; it works on the roster through the presence
(chatroom_server.presence, under its lock), and hands its deliveries to the fan-out's
delivery loop (chatroom_server.delivery) between two passes (``FanOut.exclusive``).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from chatroom.protocol import Broadcast, Bye, ByeReason, DirectMessage, encode, username_key
from chatroom_server.delivery import Entry, deliver
from chatroom_server.fanitems import Member
from chatroom_server.fanturns import Turns
from chatroom_server.frames import Frames, encoded
from chatroom_server.messagelog import Stored
from chatroom_server.noderooms import is_room_row
from chatroom_server.outbox import Outbox

if TYPE_CHECKING:
    from chatroom_server.backends import Backends
    from chatroom_server.conn import Conn
    from chatroom_server.noderooms import NodeRooms
    from chatroom_server.presence import Presence
    from chatroom_server.serverops import ServerOps

log = logging.getLogger(__name__)

_BYE_REPLACED = encode(Bye(reason=ByeReason.SESSION_REPLACED))


class ClusterNode:
    """The server as the cluster's bus sees it (module docstring)."""

    def __init__(
        self,
        backends: Backends,
        presence: Presence,
        delivered: threading.Condition,
        rooms: NodeRooms | None,
        ops: ServerOps | None = None,
    ) -> None:
        self._b = backends
        self._ops = ops  # a server operator's kill or WALLOPS from any node
        self._presence = presence
        # Notified each time the delivered cut moves (replay.Replay.delivered).
        self._delivered = delivered
        self._rooms = rooms  # rooms as the stream applies them (chatroom_server.noderooms)
        self._consumer: int | None = None  # the thread cluster_deliver runs on, once seen

    def cluster_deliver(self, messages: list[Stored], inbox: set[int]) -> None:
        """Messages from the cluster's stream, in seq order with no gap: to this node's
        clients (not to their senders) by the fan-out's own loop (one send per
        recipient a run, chatroom_server.delivery), and ``last_seq`` advanced, all
        between two fan-out passes (the login cut, docs/CLUSTER.md).
        Room rows (chatroom_server.noderooms) go to their rooms' members here, and
        room events are applied to this node's rooms, in seq order among the rest; a
        message to a large room is owed to its members and sent in turns
        (chatroom_server.fanturns), after which ``last_seq`` may pass it: a login's
        own ``exclusive`` writes everything owed before its cut."""
        mlog = self._b.log
        presence = self._presence
        assert mlog is not None
        if self._consumer is None:
            # The turns a hand-over leaves owed go to the fan-out's helper, and this
            # thread back to the stream at once (FanOut.never_waits), not after some
            # of them (READER_BUDGET): the next read may hold a small room's message.
            self._consumer = threading.get_ident()
            self._b.fanout.never_waits()
        # Runs of lobby messages and DMs, each framed once here, outside the lock; a
        # room row between them is handled on its own, in its place.
        plan: list[_Run | Stored] = []
        run: list[Stored] = []
        for m in messages:
            if not is_room_row(m):
                run.append(m)
                continue
            if run:
                plan.append(_Run(run, inbox))
                run = []
            plan.append(m)
        if run:
            plan.append(_Run(run, inbox))
        for name in {m.sender for m in messages if m.to is None and m.event is None}:
            presence.publisher.announce(name)  # §Ordering: who joined, before what they say
        last = messages[-1].seq
        rooms = self._rooms
        fanout = self._b.fanout
        # A room message to over LARGE members here is owed to them and goes out in
        # turns, between the fan-out's passes, as on one server (fanturns.py): a small
        # room's message waits for a slice, not for a large room's whole delivery.
        # Whatever else a member gets comes after what it is owed.
        turns = fanout.turns

        def hand_over() -> None:
            roster = presence.roster()
            deliveries = 0
            for step in plan:
                if isinstance(step, _Run):
                    deliveries += step.deliver(presence, roster, turns)
                elif rooms is not None:
                    deliveries += rooms.row(step, turns)
            # The metrics' deliveries (chatroom_server.metrics), under the fan-out lock
            # as the fan-out's own.
            fanout.stats.deliveries += deliveries
            if rooms is not None:
                rooms.push()  # what room rows queued and no later run's offer sent
            mlog.last_seq = last
            with self._delivered:
                self._delivered.notify_all()  # logins waiting for the cut (catch_up)

        try:
            # owed: what turns owe stays owed (hand_over gives through them).
            fanout.exclusive(hand_over, timeout=30.0, owed=True)
        except TimeoutError:
            log.error("the fan-out is stuck; seqs up to %d were not delivered here", last)

    def cluster_joined(self, name: str) -> None:
        """``name`` logged in on another node: in the list, and a session of theirs
        here ends (session_replaced, without a departure: they are still online)."""
        if self._ops is not None:
            self._ops.forget(name)  # a new session: no O-line's operator yet
        old = self._presence.joined_elsewhere(name)
        if old is not None:
            log.info("%s logged in on another node; replacing %r", name, old)
            old.outbox.finish(_BYE_REPLACED)
        self._presence.publisher.changed()

    def cluster_left(self, name: str) -> None:
        """``name`` left another node (logged out, dropped, or their node died)."""
        if self._ops is not None:
            self._ops.forget(name)
        if self._presence.left_elsewhere(name):
            self._presence.publisher.changed()

    def cluster_local_names(self) -> list[str]:
        return self._presence.local_names()

    def cluster_drop(self, name: str) -> None:
        """This node's session of ``name`` lost its claim (it is on another node)."""
        self.cluster_joined(name)

    def cluster_operator(self, fields: dict[str, str]) -> None:
        """A server operator's kill or WALLOPS, from any node (chatroom_server.serverops)."""
        bus = self._b.bus
        if self._ops is None:  # a benchmark's node, without a server
            log.warning("an operator entry, and no server to act on it: %r", fields)
            return
        self._ops.from_cluster(fields, mine=bus is not None and fields.get("n") == bus.node)


class _Run:
    """A run of lobby messages and DMs from the stream, framed once (outside the lock)."""

    def __init__(self, messages: list[Stored], inbox: set[int]) -> None:
        # (sender key, recipient key or None, frame, whether it waits in the inbox: in a
        # cluster every DM does, docs/CLUSTER.md, "DMs go the same way"), encoded once.
        self.framed = [
            (
                username_key(m.sender),
                None if m.to is None else username_key(m.to),
                _live_frame(m),
                m.seq in inbox,
            )
            for m in messages
        ]
        # Whose connection the run needs: senders (not sent their own) and recipients.
        self.keys = {k for k, to, _, _ in self.framed if to is None} | {
            to for _, to, _, _ in self.framed if to is not None
        }
        self.public = any(to is None for _, to, _, _ in self.framed)  # to everyone

    def deliver(self, presence: Presence, roster: tuple[Conn, ...], turns: Turns) -> int:
        """Hand this run to ``roster`` (the fan-out lock held), after what each recipient
        is owed (``turns``); the deliveries made."""
        by_key = presence.by_key
        with presence.lock:  # lock order: the fan-out's, then this one
            who = {key: by_key.get(key) for key in self.keys}
        if turns:
            if self.public:
                turns.finish_all()  # to everyone: after all they are owed (fanturns.py)
            else:  # DMs alone: only their recipients' owed frames go first
                for _, to, _, _ in self.framed:
                    c = who[to] if to is not None else None
                    if c is not None and c in turns:
                        turns.give(c, b"")
        entries: list[Entry] = []
        waited: set[Conn] = set()
        for sender, to, frame, waits in self.framed:
            if to is None:
                entries.append(((who[sender],), None, frame, 1))
                continue
            c = who[to]
            if c is not None:  # a DM to someone not here is not delivered here
                entries.append(((), c, frame, 1))
                if waits:
                    waited.add(c)
        reached: list[Member] | None = [] if waited else None
        deliveries = deliver(roster, entries, reached)
        if reached:
            got = set(reached)  # those of them in the roster: handed their DMs
            for w in waited:
                if w in got:
                    # It also waits in their inbox until they show they have it, as a
                    # replayed one does (Replay.replay_received).
                    w.late_inbox = True
        return deliveries


def _live_frame(m: Stored) -> Frames:
    """A stored message as a live recipient gets it (from the cluster's stream), carrying
    its event: an IRC recipient renders that, not the JSON decoded again, as on one node
    (chatroom_server.frames)."""
    if m.to is None:
        return encoded(Broadcast(sender=m.sender, message=m.body, ts=m.ts, seq=m.seq))
    return encoded(DirectMessage(sender=m.sender, to=m.to, message=m.body, ts=m.ts, seq=m.seq))


class _Elsewhere:
    """The fan-out's DM target for a user online on another node: the DM is delivered
    there, from the stream; here it only decides that the ack is not ``queued``."""

    outbox: Outbox
    username: str | None = None
    handed = 0
    done = 0


_ELSEWHERE = _Elsewhere()
