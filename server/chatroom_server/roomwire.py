"""The server's rooms (docs/PROTOCOL.md §Rooms) on one node: the room service
(chatroom_server.roomservice) plumbed to connections, the message log and the fan-out.

A room command runs in three steps on the reader thread of the
connection that sent it:

1. the connection's earlier messages are sent first (``FanOut.settle``): a reply must
   not overtake them (docs/PROTOCOL.md §Ordering);
2. under the fan-out lock, between two passes (``FanOut.exclusive``): the check, the
   append to the log (whose writer is that lock's holder), the change applied, and the
   frames queued to the online members and to the sender. Between passes, everything
   stored before has been handed out and nothing stored after goes out before it: every
   member gets every message and room event of a room in seq order, as the one cursor
   of a client needs (§Resume across rooms);
3. nothing: what to send was queued in step 2 (``Outbox.send`` never blocks).

Only connections that asked for rooms (``rooms`` on the connection) are sent room
traffic; a member logged in with a version-1 client sees lobby only.

A public message to a room does not come here: it joins its reader's batch like a
lobby message, and the fan-out's pass checks it (``_check``, under the fan-out lock, as
the room commands are), stores it with the rest of the pass (group commit) and sends it
to the room's members, not the server's connections (chatroom_server.fanout, "rooms").
Seqs are assigned in queue order and room events are applied between passes, so the
order argument of step 2 holds for messages too.

Rooms need the message log. On a cluster node (docs/CLUSTER.md §Rooms) step 2 stores
only: the stream's consumer applies the event and delivers the message, on every node
alike (chatroom_server.noderooms, the ``defer`` hook); the fan-out of a node stores and
acks a room's message, and the stream delivers it.

Threads: the room service belongs to the fan-out lock's holder (step 2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from chatroom.errors import ErrorCode, ProtocolError, RequestId
from chatroom.moderation import BansCommand, ModerationCommand
from chatroom.protocol import ErrorEvent, encode, username_key
from chatroom.rooms import InviteCommand, ModeCommand, RoomCommand, RoomInfo
from chatroom_server.fanout import FanOut
from chatroom_server.messagelog import Conflict, Duplicate, NewMessage, StorageError
from chatroom_server.outbox import Outbox
from chatroom_server.rooms import RoomChange
from chatroom_server.roomservice import Answer, RoomService
from chatroom_server.session import refusal_frame
from chatroom_server.storage import MessageStore

__all__ = ["RoomWire"]

log = logging.getLogger(__name__)


class Conn(Protocol):
    """What the rooms need of a connection (chatroom_server.conn.Conn)."""

    outbox: Outbox
    username: str | None
    rooms: bool
    handed: int
    done: int
    guest: bool  # an IRC guest (docs/PROTOCOL.md §Guest rooms)
    oper: bool  # a server operator by an IRC O-line (chatroom_server.olines)
    ip: str  # the address the connection comes from (bans by address)


def _error(code: str, message: str, rid: RequestId) -> bytes:
    return encode(ErrorEvent(code=code, message=message, id=rid))


class RoomWire:
    """See the module docstring."""

    def __init__(
        self,
        service: RoomService,
        log: MessageStore,
        fanout: FanOut,
        by_key: Callable[[str], Conn | None],
        account: Callable[[str], str | None],
        wall: Callable[[], float],
        settle_timeout: float = 10.0,
        is_operator: Callable[[str], bool] = lambda _: False,
        defer: Callable[[Conn | None, int, RoomChange, RequestId], None] | None = None,
        applied: Callable[[int, float], bool] = lambda seq, timeout: True,
    ) -> None:
        self.service = service
        self._log = log
        self._fanout = fanout
        self._by_key = by_key  # a logged-in connection by username_key (any thread)
        self._account = account  # an account's canonical name; reads the database
        self._wall = wall
        self._settle = settle_timeout
        self._is_operator = is_operator  # a server operator? reads the database
        # A cluster node (chatroom_server.noderooms): a stored room event is applied, and
        # a room message delivered, when the cluster's stream reaches its seq, as on
        # every node; here only the sender's ack (a message's) is sent.
        self._defer = defer
        # Cluster: waits (up to the timeout) until this node has applied a seq.
        self._applied = applied
        fanout.serve_rooms(self._check, by_key)

    def rooms_of(self, user: str) -> tuple[RoomInfo, ...]:
        """The rooms ``user`` is in, for login_ok (under the fan-out lock)."""
        return tuple(r.info() for r in self.service.book.rooms_of(user))

    # ------------------------------------------------------------ reader thread

    def command(self, conn: Conn, cmd: RoomCommand | ModerationCommand) -> None:
        """A room or moderation command from a logged-in connection with rooms on."""
        user = conn.username
        assert user is not None
        # Database reads, made before the lock: the account named, and whether the
        # user is a server operator (docs/PROTOCOL.md §Moderation).
        target = None
        if isinstance(cmd, InviteCommand) or (
            isinstance(cmd, ModerationCommand) and not isinstance(cmd, BansCommand)
        ):
            target = self._account(cmd.user)
        changes_modes = isinstance(cmd, ModeCommand) and cmd.modes is not None
        # An IRC O-line made this session one (chatroom_server.olines), or the account is.
        oper = (isinstance(cmd, ModerationCommand) or changes_modes) and (
            conn.oper or self._is_operator(user)
        )
        self._settled(conn, cmd.id)
        ts = self._wall()
        deferred: list[int] = []

        def run() -> None:
            try:
                got = self.service.handle(
                    user, cmd, ts, lambda _: target, oper, conn.guest, conn.ip
                )
            except ProtocolError as exc:
                conn.outbox.send(refusal_frame(exc))
                return
            if isinstance(got, Answer):
                conn.outbox.send(got.frame)
                return
            if got.change.ephemeral:  # a guest room's: applied here, never stored
                d = self.service.stored(got.change, None, ts, cmd.id)
                self._send_to(d.to, d.event, skip=conn)
                conn.outbox.send(d.reply)
                if got.change.address is not None:
                    self._kick_banned(got.change.room, ts)
                return
            seq = self._append(conn, got.message, cmd.id)
            if seq is None:
                return
            if self._defer is not None:
                self._defer(conn, seq, got.change, cmd.id)
                deferred.append(seq)
                return
            d = self.service.stored(got.change, seq, ts, cmd.id)
            self._send_to(d.to, d.event, skip=conn)
            conn.outbox.send(d.reply)
            if got.change.address is not None:
                self._kick_banned(got.change.room, ts)

        self._exclusive(run, cmd.id)
        # The connection's next command is read once its node has applied this one (its
        # reply is sent then): a JOIN then a PRIVMSG at once, as IRC clients send them,
        # finds the member. The lock is free meanwhile: the consumer needs it.
        if deferred and not self._applied(deferred[0], self._settle):
            log.warning("seq %d is not applied here after %.0f s", deferred[0], self._settle)

    def _check(
        self, user: str, room: str, rid: RequestId, ts: float
    ) -> tuple[str, frozenset[str], bool]:
        """A public message to ``room`` from ``user`` (fanitems.RoomCheck, under the fan-out
        lock): the room's canonical name, its members' keys and whether it is stored (a
        guest room's is delivered live only, no seq, no history: docs/PROTOCOL.md §Guest
        rooms); ProtocolError if the user may not say it (not a member, muted, no such
        room)."""

        def ip_of() -> str | None:  # asked only of a non-member of a -n room
            c = self._by_key(username_key(user))
            return None if c is None else c.ip

        def guest_of() -> bool:  # asked only of a non-member of a stored room
            c = self._by_key(username_key(user))
            return c is not None and c.guest

        r = self.service.speaker_room(room, user, rid, ts, ip_of, guest_of)
        assert r is not None  # lobby's messages never come here
        # Its canonical name, its members (the set kept until they change: no copy a
        # message) and whether it is stored, from the one lookup of the room.
        return r.name, r.members.key_set(), not r.ephemeral

    def session_ended(self, user: str, reason: str | None = None) -> None:
        """``user`` has no session any more (the reaper): out of their guest rooms,
        the members who stay told (docs/PROTOCOL.md §Guest rooms). Takes the lock only
        while there are guest rooms at all."""
        if not self.service.book.has_guest_rooms():
            return
        ts = self._wall()

        def run() -> None:
            for d in self.service.session_ended(user, ts, reason):
                self._send_to(d.to, d.event, skip=None)

        try:
            self._fanout.exclusive(run)
        except TimeoutError as exc:
            log.error("%s left guest rooms that could not be told: %s", user, exc)

    def renamed(self, old: str, new: str) -> None:
        """Under the fan-out lock (chatroom_server.login.Login.rename): an IRC guest's
        NICK change in its guest rooms, each other member told."""
        for d in self.service.renamed(old, new, self._wall()):
            self._send_to(d.to, d.event, skip=None)

    def banning_room(self, old: str, new: str) -> str | None:
        """Under the fan-out lock: the first of guest ``old``'s rooms that bans the name
        ``new`` (chatroom_server.login.Login.rename refuses the NICK: 435)."""
        now = self._wall()
        for room in self.service.book.guest_rooms_of(old):
            if self.service.moderation.ban_of(room.name, new, now) is not None:
                return room.name
        return None

    def member_rooms(self, user: str) -> tuple[RoomInfo, ...]:
        """The rooms ``user`` is in (IRC WHOIS's 319), read under the fan-out lock."""
        return self._fanout.exclusive(lambda: self.rooms_of(user))

    def visible_info(self, user: str, room: str) -> RoomInfo | None:
        """The room as ``members`` shows it to ``user``; None for none they may see."""

        def read() -> RoomInfo | None:
            try:
                return self.service.book.visible_info(user, room)
            except ProtocolError:
                return None

        return self._fanout.exclusive(read)

    def readable_from(self, user: str, room: str, rid: RequestId) -> tuple[str, int]:
        """The canonical room name and the first seq ``user`` may read of it; raises
        ProtocolError (``no_such_room``, ``not_in_room``)."""
        return self._fanout.exclusive(
            lambda: (self.service.room_name(room), self.service.readable_from(user, room, rid))
        )

    # ------------------------------------------------------------ bans by address

    def _kick_banned(
        self, room: str, ts: float, ip_of: Callable[[str], str | None] | None = None
    ) -> int:
        """Under the fan-out lock: store a kick of each member of ``room`` whose session
        here (or ``ip_of(user key)``) comes from an address the room bans
        (docs/PROTOCOL.md §Bans by address). On a cluster node the kicks are applied
        when the stream reaches them, as any room event; the kicked get the event,
        nobody a reply. Returns the last kick's seq (0: none)."""

        def online_ip(key: str) -> str | None:
            c = self._by_key(key)
            return None if c is None else c.ip

        last = 0
        for got in self.service.address_kicks(room, ip_of or online_ip, ts):
            if got.change.ephemeral:  # a guest room's kick: applied here, never stored
                d = self.service.stored(got.change, None, ts)
                self._send_to(d.to, d.event, skip=None)
                continue
            try:
                (seq,) = self._log.append([got.message])
            except StorageError as exc:
                log.error("cannot store the kick of %s from %s: %s", got.change.user, room, exc)
                continue
            if not isinstance(seq, int):  # a kick has no cid: cannot happen
                continue
            last = seq
            if self._defer is not None:
                self._defer(None, seq, got.change, None)
                continue
            d = self.service.stored(got.change, seq, ts)
            self._send_to(d.to, d.event, skip=None)
        return last

    def kick_banned(self, rooms: list[str]) -> None:
        """From any thread but the fan-out lock's holder: :meth:`_kick_banned` for each
        room (a cluster node that applied another node's ban of an address; a login
        from an address one of the user's rooms bans)."""
        ts = self._wall()

        def run() -> None:
            for room in rooms:
                self._kick_banned(room, ts)

        try:
            self._fanout.exclusive(run)
        except TimeoutError as exc:
            log.error("members banned by address from %s were not kicked: %s", rooms, exc)

    def may_kick_on_login(self, ip: str) -> bool:
        """Whether a login from ``ip`` may have kicks to store (:meth:`kick_on_login`):
        some room bans it. Any thread, without the lock."""
        return self.service.moderation.may_ban_address(ip, self._wall())

    def kick_on_login(self, user: str, ip: str) -> None:
        """Before ``user``'s session from ``ip`` begins: out of every room they are in
        that bans ``ip`` (a kick each, applied, on a cluster node too, before this
        returns, or after the settle timeout). Takes the fan-out lock only when some
        room bans ``ip``: a login storm is not slowed by bans of other addresses."""
        ts, key = self._wall(), username_key(user)
        if not self.service.moderation.may_ban_address(ip, ts):  # unlocked: its docstring
            return

        def run() -> int:
            last = 0
            for room in self.service.address_banned_rooms(user, ip, ts):
                last = self._kick_banned(room, ts, lambda k: ip if k == key else None) or last
            return last

        try:
            last = self._fanout.exclusive(run)
        except TimeoutError as exc:
            log.error("%s from %s was not put out of the rooms that ban it: %s", user, ip, exc)
            return
        if last and self._defer is not None and not self._applied(last, self._settle):
            log.warning("seq %d is not applied here after %.0f s", last, self._settle)

    # ------------------------------------------------------------ helpers

    def _settled(self, conn: Conn, rid: RequestId) -> None:
        if not self._fanout.settle(conn, self._settle):
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the server is overloaded; try again", rid)

    def _exclusive(self, fn: Callable[[], None], rid: RequestId) -> None:
        try:
            self._fanout.exclusive(fn)
        except TimeoutError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", rid) from exc

    def _append(self, conn: Conn, msg: NewMessage, rid: RequestId) -> int | None:
        """Store one message (the lock held): its seq; minus the stored seq for a
        resend of one (its cid); None when it was refused (the sender told)."""
        try:
            (got,) = self._log.append([msg])
        except StorageError as exc:
            log.error("cannot store a room event or message: %s", exc)
            text = "the message could not be stored; it was not delivered (try again)"
            conn.outbox.send(_error(ErrorCode.UNAVAILABLE, text, rid))
            return None
        if isinstance(got, Duplicate):
            return -got.seq
        if isinstance(got, Conflict):
            text = f"this cid was used for another message (seq {got.seq})"
            conn.outbox.send(_error(ErrorCode.CID_CONFLICT, text, rid))
            return None
        return got

    def _send_to(self, keys: frozenset[str], data: bytes, skip: Conn | None) -> None:
        """``data`` to every online connection of ``keys`` that speaks rooms."""
        for key in keys:
            c = self._by_key(key)
            if c is not None and c is not skip and c.rooms:
                c.outbox.send(data)
