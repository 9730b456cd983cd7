"""Rooms on a cluster node (docs/CLUSTER.md §Rooms): each node keeps its own copy of
the rooms (chatroom_server.rooms.RoomBook), and every node, the one that stored a room
event included, applies the events in seq order as the cluster's stream (or the gap
fill from PostgreSQL) delivers them. So every copy goes through the same changes in the
same order, and a node that starts loads the copy PostgreSQL has at one snapshot
(``PgMessageLog.load_room_state``) and applies what comes after it.

- A room event made here (:meth:`NodeRooms.defer`): the reader thread stored it and the
  change it computed waits here, by seq, until the consumer reaches that seq; then the
  change is applied and its maker gets the reply. So a reply never comes before the
  node's copy has the change: a ``pm`` to a room right after its ``join`` finds the
  member.
- A room event made on another node: rebuilt from its row (room, kind, who, the JSON
  detail) against this copy (:func:`change_from_row`): a join creates the room if this
  copy has none, and the joiner's role follows the members there, as the check on the
  maker's node decided it from the same state.
- A message to a room: to this node's members of it, in seq order among the rest. To
  more than ``LARGE`` of them, it is owed to them and sent in turns between the
  fan-out's passes (chatroom_server.fanturns, :meth:`Turns.owe`), as on one server;
  whatever else a member gets here (a smaller room's message, an event, a reply) is
  given after what it is owed (docs/CLUSTER.md, "Turns on a node").

Threads: everything here belongs to the fan-out lock's holder (``FanOut.exclusive``),
as the room service does: the reader thread that stores an event (:meth:`defer`) and
the consumer thread that applies it (:meth:`row`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from chatroom.errors import ProtocolError, RequestId
from chatroom.protocol import Broadcast, username_key
from chatroom.rooms import LOBBY, ModeChange, Role, RoomEventKind, parse_modes, room_key
from chatroom_server.fanitems import RoomMember
from chatroom_server.fanturns import LARGE, Turns, gather
from chatroom_server.frames import encoded
from chatroom_server.messagelog import Stored
from chatroom_server.outbox import Outbox
from chatroom_server.rooms import RoomBook, RoomChange, _after_modes
from chatroom_server.roomservice import RoomService

__all__ = ["NodeRooms", "change_from_row", "is_room_row"]

log = logging.getLogger(__name__)

_OPERATORS = frozenset((Role.OWNER, Role.OP))


class Conn(RoomMember, Protocol):
    """A connection as the node's rooms reach it (a fan-out member: turns owe to it)."""


@dataclass(frozen=True, slots=True)
class _Pending:
    conn: Conn | None  # None: nobody to reply to (a kick by an address ban)
    change: RoomChange
    rid: RequestId


def is_room_row(m: Stored) -> bool:
    """A room event, or a public message to a room other than lobby."""
    if m.event is not None:
        return True
    return m.to is None and m.room is not None and room_key(m.room) != LOBBY


def change_from_row(book: RoomBook, m: Stored) -> RoomChange | None:
    """A room event stored by another node, as the change it makes to ``book`` (this
    node's copy, with every earlier event applied). None: nothing to apply (a room this
    copy does not have)."""
    assert m.event is not None
    kind = RoomEventKind(m.event)
    d = json.loads(m.body) if m.body else {}
    name = m.room or LOBBY
    room = book.get(name)
    if kind is RoomEventKind.JOIN:
        if room is None:
            return RoomChange(name, kind, m.sender, role=Role.OWNER, create=True, ts=m.ts)
        has_op = any(x.role in _OPERATORS for x in room.members.values())
        return RoomChange(
            room.name,
            kind,
            m.sender,
            role=Role.MEMBER if has_op else Role.OP,
            invite_used=username_key(m.sender) in room.invites,
            ts=m.ts,
        )
    if room is None:
        return None
    args = tuple(str(a) for a in d.get("args", ()))
    after = None
    if kind is RoomEventKind.MODE:
        try:
            changes = parse_modes(str(d.get("modes", "")), args)
        except ProtocolError as exc:  # stored after its check: cannot happen
            log.error("a stored mode change does not parse (seq %d): %s", m.seq, exc)
            return None
        # Roles only of members other than the owner, as the maker's check required.
        kept: list[ModeChange] = []
        for c in changes:
            if c.letter in "ov":
                target = room.member(c.arg or "")
                if target is None or target.role is Role.OWNER:
                    continue
            kept.append(c)
        after = _after_modes(room, kept)
    return RoomChange(
        room.name,
        kind,
        m.sender,
        user=d.get("user"),
        topic=d.get("topic"),
        modes=d.get("modes"),
        args=args,
        reason=d.get("reason"),
        expires=d.get("expires"),
        address=d.get("address"),
        after=after,
        ts=m.ts,
    )


class NodeRooms:
    """See the module docstring."""

    def __init__(self, service: RoomService, by_key: Callable[[str], Conn | None]) -> None:
        self.service = service
        self._by_key = by_key  # a logged-in connection by username_key (any thread)
        # seq -> a room event stored by this node, waiting for the consumer (one owner:
        # the fan-out lock's holder).
        self._pending: dict[int, _Pending] = {}
        # Outboxes :meth:`row` queued to since the last :meth:`push` (same owner).
        self._touched: dict[int, Outbox] = {}
        # Called, the fan-out lock held, when a ban of an address is applied to a
        # room: must not take the lock (chatroom_server.server hands it to a thread).
        self.address_banned: Callable[[str], None] = lambda room: None

    def defer(self, conn: Conn | None, seq: int, change: RoomChange, rid: RequestId) -> None:
        """A room event this node stored as ``seq``: applied, and replied to, when the
        consumer reaches it."""
        self._pending[seq] = _Pending(conn, change, rid)

    def row(self, m: Stored, turns: Turns) -> int:
        """Apply or deliver one room row (:func:`is_room_row`), queueing its frames to
        this node's connections (pushed by the caller), or owing them in ``turns`` (a
        message to over ``LARGE`` members here), each after what its member is owed
        already. Returns the deliveries made."""
        book = self.service.book
        if m.event is None:
            room = book.get(m.room or LOBBY)
            if room is None:
                log.error("seq %d is a message to %s, which this node does not have", m.seq, m.room)
                return 0
            # Carrying its event, for IRC members to render (chatroom_server.frames).
            frame = encoded(
                Broadcast(sender=m.sender, message=m.body, ts=m.ts, seq=m.seq, room=room.name)
            )
            keys, skip = frozenset(room.members), username_key(m.sender)
            if len(keys) <= LARGE:
                return self._queue(keys, frame, skip, turns)
            # Over LARGE of them on this node: owed. Each member's queued frames
            # (earlier seqs) still go first: a write of what it is owed is an
            # ``offer``, which sends the queue first.
            out: dict[RoomMember, list[bytes]] = {}
            n = gather(out, keys, skip, self._by_key, frame)
            if len(out) > LARGE:
                turns.owe(out)
            else:  # a large room with few members here
                for c in out:
                    self._put(c, frame, turns)
            return n
        pending = self._pending.pop(m.seq, None)
        change = pending.change if pending is not None else change_from_row(book, m)
        if change is None:
            why = "seq %d: a %s event in %s, which this node does not have"
            log.error(why, m.seq, m.event, m.room)
            return 0
        d = self.service.stored(change, m.seq, m.ts, None if pending is None else pending.rid)
        n = self._queue(d.to, d.event, username_key(change.by), turns)
        if pending is not None and pending.conn is not None:
            self._put(pending.conn, d.reply, turns)
            n += 1
        if change.address is not None and change.event is RoomEventKind.BAN:
            # This node's members from the address are kicked (stored as kicks, in
            # turn), by whichever node holds them: only it knows where they come from.
            self.address_banned(change.room)
        return n

    def push(self) -> None:
        """Write what :meth:`row` queued (a connection may be logged in and not yet in
        the roster the caller pushes)."""
        touched, self._touched = self._touched, {}
        for outbox in touched.values():
            outbox.push()

    def _put(self, c: Conn, frame: bytes, turns: Turns | None) -> None:
        """``turns`` None: nothing is owed to anyone."""
        if turns is not None and c in turns:
            turns.give(c, frame)  # after what it is owed (and what it has queued)
        elif c.outbox.queue(frame):
            self._touched[id(c.outbox)] = c.outbox

    def _queue(self, keys: frozenset[str], frame: bytes, skip: str, turns: Turns) -> int:
        # Looked at once: giving only takes from what is owed.
        owing = turns if turns else None
        n = 0
        for key in keys:
            if key == skip:
                continue
            c = self._by_key(key)
            if c is not None and c.rooms:
                self._put(c, frame, owing)
                n += 1
        return n
