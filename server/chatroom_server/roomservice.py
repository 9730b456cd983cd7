"""What the server does for the room commands (docs/PROTOCOL.md §Rooms), with no I/O:
the part of the wiring that does not depend on how the server reads and writes, so that
a transport, the command table (chatroom_server.commands, issue 34) and the cluster's
delivery only plumb it.

For each room command, :meth:`RoomService.handle` gives one of:

- :class:`Answer`: a read (``rooms``, ``members``, ``topic`` or ``mode`` without a
  change) or a change that changes nothing (joining a room one is in, inviting a
  member): the frame to reply with, at once;
- :class:`ToStore`: a change, and the :class:`~chatroom_server.messagelog.NewMessage`
  that stores it as a ``room_event``. The server appends it as it appends messages (the
  fan-out's writer, under its lock), then calls :meth:`RoomService.stored` with the seq,
  which applies the change and says what to send: the reply to the user who made it,
  the event, and to whom (user keys: the room's members, and the user an invite names;
  never the one who made it, who has the reply).

A refusal is :class:`~chatroom.errors.ProtocolError` with its code, raised by
:meth:`~RoomService.handle`, as the room model raises it (chatroom_server.rooms).

Also here: who gets a public message of a room (:meth:`RoomService.recipients`: its
members' keys, so that a message to a room of five walks five connections, not every
connection of the server), what a member may read of it (:meth:`~RoomService.readable_from`),
and the frames of a stored room event (:meth:`~RoomService.event_frame`).

Threads: a :class:`RoomService` belongs, as its :class:`~chatroom_server.rooms.RoomBook`
does, to whoever holds the fan-out lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from chatroom.errors import ErrorCode, ProtocolError
from chatroom.moderation import BanList, ModerationCommand
from chatroom.protocol import Ack, encode, is_valid_username, username_key
from chatroom.rooms import (
    LOBBY,
    InviteCommand,
    JoinCommand,
    MembersCommand,
    ModeCommand,
    PartCommand,
    RoomCommand,
    RoomEvent,
    RoomEventKind,
    RoomInfo,
    RoomInfoReply,
    RoomList,
    RoomsCommand,
    TopicCommand,
    room_key,
)
from chatroom_server.frames import encoded
from chatroom_server.messagelog import NewMessage, Stored
from chatroom_server.moderation import Moderation
from chatroom_server.rooms import NO_HISTORY, Room, RoomBook, RoomChange, event_from_row
from chatroom_server.servergate import network

__all__ = ["Answer", "Delivery", "RoomService", "ToStore"]

# lobby as a join or a members request shows it: every user is in it, always; its live
# member list is the users list (docs/PROTOCOL.md §Rooms), and +H: all of it is readable.
_LOBBY: Final = RoomInfo(name=LOBBY, modes="+H")


@dataclass(frozen=True, slots=True)
class Answer:
    """Reply with ``frame`` now; nothing is stored."""

    frame: bytes


@dataclass(frozen=True, slots=True)
class ToStore:
    """Store ``message`` (a room event); then :meth:`RoomService.stored`."""

    change: RoomChange
    message: NewMessage


@dataclass(frozen=True, slots=True)
class Delivery:
    """After a room event was stored: ``reply`` to the user who made it, ``event`` to
    every user in ``to`` (keys) who is online."""

    reply: bytes
    event: bytes
    to: frozenset[str]


class RoomService:
    """The room commands on one :class:`RoomBook` (module docstring)."""

    def __init__(self, book: RoomBook, moderation: Moderation | None = None) -> None:
        self.book = book
        # Bans and mutes (docs/PROTOCOL.md §Moderation), owned as the book is.
        self.moderation = Moderation() if moderation is None else moderation

    # ------------------------------------------------------------ commands

    def handle(
        self,
        user: str,
        cmd: RoomCommand | ModerationCommand,
        ts: float,
        account: Callable[[str], str | None] = lambda name: name,
        server_operator: bool = False,
        guest: bool = False,
        ip: str | None = None,
    ) -> Answer | ToStore:
        """A room or moderation command from ``user`` (canonical name), validated
        already (chatroom.protocol.validate_command). ``account(name)``: the canonical
        name of an account (or of a guest online), None for none (``invite`` and
        moderation name one); ``server_operator``: ``user`` is one; ``guest``: an IRC
        guest (docs/PROTOCOL.md §Guest rooms); ``ip``: the address ``user``'s session
        comes from (bans by address). Raises ProtocolError. A change to a
        guest room is marked ``ephemeral``: the caller applies it without storing it."""
        book, rid = self.book, cmd.id
        change: RoomChange | None
        if isinstance(cmd, ModerationCommand):
            if book.is_ephemeral(cmd.room):
                # A guest room's bans go with it: any valid name may be banned, as IRC
                # bans a mask, whether or not someone has it now (§Guest rooms).
                known = account

                def account(name: str) -> str | None:
                    return known(name) or (name if is_valid_username(name) else None)

            got = self.moderation.check(book, user, cmd, ts, account, server_operator, ip)
            if isinstance(got, tuple):
                name = self.room_name(cmd.room)
                return Answer(encode(BanList(room=name, bans=got, id=rid)))
            if got is None:  # an unban or unmute of nobody: nothing changes
                tag = str(cmd.__struct_config__.tag)
                address = getattr(cmd, "address", None)
                to = network(address) if address else account(getattr(cmd, "user", ""))
                name = self.room_name(cmd.room)
                ack = Ack(command=tag, room=name, to=to, unchanged=True, id=rid)
                return Answer(encode(ack))
            return self._to_store(got, ts)
        if isinstance(cmd, RoomsCommand):
            return Answer(encode(RoomList(rooms=book.listing(user), id=rid)))
        if isinstance(cmd, MembersCommand):
            lobby = room_key(cmd.room) == LOBBY
            info = _LOBBY if lobby else book.visible_info(user, cmd.room, rid)
            return Answer(encode(RoomInfoReply(info=info, id=rid)))
        if isinstance(cmd, JoinCommand):
            if not book.is_member(user, cmd.room):
                self.moderation.check_join(cmd.room, user, ts, rid, ip)
            change = book.join(user, cmd.room, cmd.key, rid, guest)
            if change is None:  # a member already (or lobby): the room as it is
                lobby = room_key(cmd.room) == LOBBY
                info = _LOBBY if lobby else book.visible_info(user, cmd.room)
                return Answer(encode(RoomInfoReply(info=info, id=rid)))
        elif isinstance(cmd, PartCommand):
            change = book.part(user, cmd.room, cmd.reason, rid)
        elif isinstance(cmd, TopicCommand):
            if cmd.topic is None:
                book.member_room(user, cmd.room, rid)  # members read the topic
                return Answer(encode(RoomInfoReply(info=book.visible_info(user, cmd.room), id=rid)))
            change = book.topic(user, cmd.room, cmd.topic, rid)
        elif isinstance(cmd, InviteCommand):
            target = account(cmd.user)
            if target is None:
                raise ProtocolError(ErrorCode.UNKNOWN_USER, f"there is no user {cmd.user}", rid)
            change = book.invite(user, cmd.room, target, rid)
            if change is None:  # a member already
                room = book.member_room(user, cmd.room, rid)
                ack = Ack(command="invite", room=room.name, to=target, unchanged=True, id=rid)
                return Answer(encode(ack))
        else:
            assert isinstance(cmd, ModeCommand)
            if cmd.modes is None:
                book.member_room(user, cmd.room, rid)
                return Answer(encode(RoomInfoReply(info=book.visible_info(user, cmd.room), id=rid)))
            change = book.mode(user, cmd.room, cmd.modes, cmd.args, rid, server_operator)
        return self._to_store(change, ts)

    def _to_store(self, change: RoomChange, ts: float) -> ToStore:
        ephemeral = change.ephemeral or self.book.is_ephemeral(change.room)
        change = replace(change, ts=ts, ephemeral=ephemeral)
        message = NewMessage(change.by, change.user, change.detail(), ts, change=change)
        return ToStore(change, message)

    def stored(
        self, change: RoomChange, seq: int | None, ts: float, rid: object = None
    ) -> Delivery:
        """``change`` is stored as ``seq``: apply it; what to send (module docstring).
        ``rid``: the id of the request that made it, for the reply. ``seq`` is None for
        a change to a guest room, which is never stored."""
        request_id = rid if isinstance(rid, str | int) and not isinstance(rid, bool) else None
        before = frozenset(username_key(m) for m in self.book.members_of(change.room))
        room = self.book.get(change.room)
        name = change.room if room is None else room.name
        self.book.apply(change, NO_HISTORY if seq is None else seq)
        self.moderation.apply(change, ts)
        room = self.book.get(change.room)
        if room is None:  # a guest room that its last member left
            self.moderation.forget(change.room)
        after = frozenset(username_key(m) for m in self.book.members_of(change.room))
        by = username_key(change.by)
        # A ban removes a member (if it names one): IRC shows that as a KICK as well.
        removed = (
            change.event is RoomEventKind.BAN
            and change.user is not None
            and username_key(change.user) in before
        )
        if change.event is RoomEventKind.JOIN:
            assert room is not None
            reply = encoded(RoomInfoReply(info=room.info(), seq=seq, joined=True, id=request_id))
        else:
            to = None if change.event in (RoomEventKind.TOPIC, RoomEventKind.MODE) else change.user
            to = change.address or to  # the network, to the server operator who banned it
            reply = encoded(
                Ack(
                    command=change.event.value,
                    room=name,
                    to=to,
                    seq=seq,
                    removed=removed,
                    id=request_id,
                )
            )
        # The members before and after (a part's event reaches those who stay; a join's
        # those who were there), and the user it names (an invite, a kick).
        to_keys = set(before | after)
        if change.user is not None:
            to_keys.add(username_key(change.user))
        to_keys.discard(by)
        event = change.frame(seq, ts, removed=removed)
        # Both carry their events (chatroom_server.frames): IRC renders, never decodes.
        return Delivery(reply, encoded(event), frozenset(to_keys))

    def session_ended(self, user: str, ts: float, reason: str | None = None) -> list[Delivery]:
        """``user``'s session ended (``reason``: IRC QUIT's): out of every guest room
        they are in (each a ``quit`` event to the members who stay, never stored)."""
        out = []
        for room in self.book.guest_rooms_of(user):
            m = room.member(user)
            assert m is not None
            change = RoomChange(
                room.name, RoomEventKind.QUIT, m.user, reason=reason, ts=ts, ephemeral=True
            )
            out.append(self.stored(change, None, ts))
        return out

    def renamed(self, old: str, new: str, ts: float) -> list[Delivery]:
        """An IRC guest ``old`` is called ``new`` now: in each of its guest rooms, a
        ``nick`` event (never stored) to the other members (§Guest rooms)."""
        rooms = self.book.rename(old, new)
        self.moderation.rename([r.name for r in rooms], old, new)
        out = []
        for room in rooms:
            change = RoomChange(room.name, RoomEventKind.NICK, old, user=new, ts=ts, ephemeral=True)
            to = frozenset(room.members) - {username_key(new)}
            out.append(Delivery(b"", encode(change.frame(None, ts)), to))
        return out

    def address_kicks(
        self, room: str, ip_of: Callable[[str], str | None], ts: float
    ) -> list[ToStore]:
        """The kicks that put out of ``room`` its members whose session here
        (``ip_of(user key)``) comes from an address it bans, to store in turn
        (docs/PROTOCOL.md §Bans by address)."""
        kicks = self.moderation.address_kicks(self.book, room, ip_of, ts)
        return [self._to_store(k, ts) for k in kicks]

    def address_banned_rooms(self, user: str, ip: str, ts: float) -> list[str]:
        """The rooms ``user`` is in that ban the address ``ip``."""
        m = self.moderation
        return [
            r.name
            for r in self.book.rooms_of(user)
            if m.has_address_bans(r.name) and m.address_ban_of(r.name, ip, ts) is not None
        ]

    # ------------------------------------------------------------ messages in rooms

    def recipients(
        self,
        room: str | None,
        sender: str,
        rid: object = None,
        now: float = 0.0,
        ip_of: Callable[[], str | None] = lambda: None,
        guest_of: Callable[[], bool] = lambda: False,
    ) -> frozenset[str] | None:
        """Who gets a ``pm`` to ``room`` from ``sender`` at ``now``: its members' keys
        (the sender among them if a member); None for lobby (everyone). The checks are
        :meth:`speaker_room`'s."""
        r = self.speaker_room(room, sender, rid, now, ip_of, guest_of)
        return None if r is None else r.members.key_set()

    def speaker_room(
        self,
        room: str | None,
        sender: str,
        rid: object = None,
        now: float = 0.0,
        ip_of: Callable[[], str | None] = lambda: None,
        guest_of: Callable[[], bool] = lambda: False,
    ) -> Room | None:
        """The room a ``pm`` to ``room`` from ``sender`` at ``now`` goes to (its name,
        its members' keys: ``members.key_set()``, whether it is stored); None for
        lobby (everyone). Raises ``no_such_room``, ``not_in_room`` or ``muted`` for a
        sender who may not speak there: a non-member may speak in a ``-n`` room only,
        unless banned from it, by name or by the address ``ip_of()`` gives (asked then
        only: docs/PROTOCOL.md §Modes, §Bans by address); ``guest_not_allowed`` for an
        IRC guest (``guest_of()``, asked of a non-member of a stored room only) and a
        stored room, ``-n`` or not (§Guest rooms). The one check for every transport.
        The room's name and the sender's are each case-folded once here, for every
        message (docs/PERFORMANCE.md, "The per-message path in process")."""
        if room is None:
            return None
        key = room_key(room)
        if key == LOBBY:
            return None
        request_id = rid if isinstance(rid, str | int) and not isinstance(rid, bool) else None
        r = self.book.by_key(key)
        if r is None:
            raise self.book.not_found(room, request_id)
        if r.members.get(username_key(sender)) is None:  # not a member
            if not r.ephemeral and guest_of():
                # Its message would be stored under a nick anyone may hold next, and a
                # room's bans name nicks, which a guest sheds at will: a -n room open
                # to guests would be open to everyone it banned.
                why = f"{r.name} is for accounts: a guest speaks in lobby and in rooms a guest made"
                raise ProtocolError(ErrorCode.GUEST_NOT_ALLOWED, why, request_id)
            if "n" in r.flags:
                raise self.book.not_member(r, request_id)
            self.moderation.check_join(r.name, sender, now, request_id, ip_of())
        self.moderation.check_speak(r, sender, now, request_id)
        return r

    def room_name(self, room: str | None) -> str:
        """The canonical spelling of a room (lobby for None)."""
        if room is None or room_key(room) == LOBBY:
            return LOBBY
        r = self.book.get(room)
        return room if r is None else r.name

    def readable_from(self, user: str, room: str | None, rid: object = None) -> int:
        """The first seq of ``room`` that ``user`` may read by ``history``."""
        request_id = rid if isinstance(rid, str | int) and not isinstance(rid, bool) else None
        return self.book.readable_from(user, room or LOBBY, request_id)

    @staticmethod
    def event_frame(m: Stored, replayed: bool = False) -> RoomEvent:
        """A stored room event (a log row with ``event`` set) as its frame."""
        assert m.event is not None
        return event_from_row(m.room or LOBBY, m.event, m.sender, m.body, m.seq, m.ts, replayed)
