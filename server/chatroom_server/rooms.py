"""The room model (docs/PROTOCOL.md §Rooms): rooms, memberships with roles, modes,
invites, and every check a room command makes, as error codes. No sockets, no database,
no clock.

A command goes through three steps, all under one lock (the fan-out's, as the message
log's writer is), so that nothing changes between the check and the change:

1. a check (:meth:`RoomBook.join`, :meth:`~RoomBook.part`, :meth:`~RoomBook.topic`,
   :meth:`~RoomBook.invite`, :meth:`~RoomBook.mode`) reads the model and returns the
   :class:`RoomChange` the command makes, or raises
   :class:`~chatroom.errors.ProtocolError` with the code to answer; it changes nothing;
2. the caller stores the change as a ``room_event`` in the message log, which gives it
   its seq (and writes the rooms, memberships and invites rows in the same transaction,
   chatroom_server.roomstore);
3. :meth:`RoomBook.apply` makes the change in the model, with that seq.

So a change the database refused never shows in the model, and the model at start-up is
what the tables say (:meth:`RoomBook.load`).

Threads: a :class:`RoomBook` and everything in it has one owner, whoever holds the
fan-out lock; it takes no lock of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from chatroom.errors import ErrorCode, ProtocolError, RequestId
from chatroom.protocol import username_key
from chatroom.rooms import (
    FLAG_MODES,
    LOBBY,
    ModeChange,
    Role,
    RoomEvent,
    RoomEventKind,
    RoomInfo,
    RoomListing,
    format_modes,
    parse_modes,
    role_after,
    room_key,
)

__all__ = [
    "DEFAULT_MAX_ROOMS",
    "DEFAULT_MAX_ROOMS_PER_USER",
    "Member",
    "Members",
    "Room",
    "RoomBook",
    "RoomChange",
    "loaded_flags",
    "loaded_role",
    "stored_flags",
    "stored_role",
]

DEFAULT_MAX_ROOMS: Final = 10_000
DEFAULT_MAX_ROOMS_PER_USER: Final = 100
# The modes a new room starts with (docs/PROTOCOL.md §Rooms: "with modes +nt").
NEW_ROOM_FLAGS: Final = frozenset("nt")
_OPERATORS: Final = frozenset((Role.OWNER, Role.OP))
# The events after which a member is gone: a part, a kick, a ban (of a member or not),
# the end of their session in a guest room.
_GONE: Final = frozenset(
    (RoomEventKind.PART, RoomEventKind.KICK, RoomEventKind.BAN, RoomEventKind.QUIT)
)
# A guest room member's join_seq: nothing of a guest room is stored, so there is nothing
# for its members to read by history (docs/PROTOCOL.md §Guest rooms).
NO_HISTORY: Final = 2**63 - 1


@dataclass(slots=True)
class Member:
    """One membership: ``join_seq`` is the seq of the join's ``room_event``, from which
    the member reads the room (docs/PROTOCOL.md §Who may read the past)."""

    user: str  # canonical spelling
    role: Role
    join_seq: int
    # Voiced as well as an operator (owner, op): IRC's multi-prefix ``@+``. A member
    # voiced and no more has the role ``voice`` (docs/PROTOCOL.md §Modes).
    voice: bool = False

    def stored_role(self) -> str:
        """The role as chatroom_server.roomstore keeps it: ``op+voice`` for both."""
        return stored_role(self.role, self.voice)


class Members(dict[str, Member]):
    """A room's members by :func:`username_key`, with the frozenset of those keys kept
    until they change: who gets a room's message (roomservice.py) is that set, and a
    copy of a room of 1,500 a message cost 42 µs (docs/PERFORMANCE.md, "The per-message
    path in process"). Every way a dict changes drops it. Threads: the room's. The set
    is replaced, never changed: one handed out stays what it was, as a copy would."""

    __slots__ = ("_keys",)

    def __init__(self, *args: Any, **kwargs: Member) -> None:
        super().__init__(*args, **kwargs)
        self._keys: frozenset[str] | None = None

    def key_set(self) -> frozenset[str]:
        """The keys, as a frozenset shared until the next change."""
        keys = self._keys
        if keys is None:
            keys = self._keys = frozenset(self)
        return keys

    def __setitem__(self, key: str, value: Member) -> None:
        self._keys = None
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._keys = None
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self._keys = None
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, Member]:
        self._keys = None
        return super().popitem()

    def clear(self) -> None:
        self._keys = None
        super().clear()

    def setdefault(self, key: str, default: Member) -> Member:
        self._keys = None
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Member) -> None:
        self._keys = None
        super().update(*args, **kwargs)

    def __ior__(self, other: Any) -> Members:  # type: ignore[override,misc]
        self._keys = None
        return super().__ior__(other)


@dataclass(slots=True)
class Room:
    """One room; ``members`` and ``invites`` are keyed by :func:`username_key`."""

    name: str  # canonical spelling: its creator's
    flags: set[str] = field(default_factory=set)  # the letters of FLAG_MODES set
    key: str | None = None  # +k
    limit: int | None = None  # +l
    topic: str = ""
    topic_by: str | None = None
    created: float = 0.0  # when (unix time; 0: not known, IRC's 329)
    topic_ts: float = 0.0  # when the topic was set (0: not known, IRC's 333)
    members: Members = field(default_factory=Members)
    invites: set[str] = field(default_factory=set)
    # A guest room (docs/PROTOCOL.md §Guest rooms): created by an IRC guest, never
    # stored, every membership lasts a session, gone once its last member is.
    ephemeral: bool = False

    @property
    def modes(self) -> str:
        letters = set(self.flags)
        if self.key is not None:
            letters.add("k")
        if self.limit is not None:
            letters.add("l")
        return format_modes(letters)

    def member(self, user: str) -> Member | None:
        return self.members.get(username_key(user))

    def is_operator(self, user: str) -> bool:
        m = self.member(user)
        return m is not None and m.role in _OPERATORS

    def info(self, *, with_key: bool = True) -> RoomInfo:
        """The room as docs/PROTOCOL.md §login_ok shows it (``with_key``: to a member)."""
        members = sorted((m.user for m in self.members.values()), key=str.lower)
        return RoomInfo(
            name=self.name,
            topic=self.topic,
            topic_by=self.topic_by,
            modes=self.modes,
            key=self.key if with_key else None,
            limit=self.limit,
            members=tuple(members),
            roles={m.user: m.role.value for m in self.members.values() if m.role != Role.MEMBER},
            voiced=tuple(sorted((m.user for m in self.members.values() if m.voice), key=str.lower)),
            created=self.created or None,
            topic_ts=self.topic_ts or None,
        )


@dataclass(frozen=True, slots=True)
class ModeResult:
    """A room's modes after a ``mode`` change, and the members whose role it changes."""

    flags: frozenset[str]
    key: str | None
    limit: int | None
    # (user, role, voiced as well): only the members whose role or voice changes.
    roles: tuple[tuple[str, Role, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class RoomChange:
    """What one room command changes: stored as one ``room_event`` (kind ``event``, done
    ``by``), then applied (:meth:`RoomBook.apply`). ``role`` is a joiner's new role (its
    creator's ``owner``); ``create``: the join creates the room; ``after`` what a mode
    change leaves; ``invite_used``: the join uses up an invite."""

    room: str  # canonical spelling
    event: RoomEventKind
    by: str  # canonical spelling
    user: str | None = None
    topic: str | None = None
    modes: str | None = None
    args: tuple[str, ...] = ()
    reason: str | None = None
    role: Role | None = None
    create: bool = False
    invite_used: bool = False
    after: ModeResult | None = None
    expires: float | None = None  # a ban's or mute's end (chatroom_server.moderation)
    # A ban or unban of a network (canonical, servergate.network) rather than a user.
    address: str | None = None
    ts: float = 0.0  # when it was made (the audit log's time, chatroom_server.modstore)
    ephemeral: bool = False  # of a guest room: never stored (Room.ephemeral)

    def detail(self) -> str:
        """The change's fields beyond room, event and by, as the JSON text a log row
        keeps in its body (chatroom_server.roomstore)."""
        d: dict[str, object] = {}
        for name in ("user", "topic", "modes", "reason", "address"):
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        if self.args:
            d["args"] = list(self.args)
        if self.expires is not None:
            d["expires"] = self.expires
        return json.dumps(d, separators=(",", ":"))

    def frame(
        self, seq: int | None, ts: float, replayed: bool = False, removed: bool = False
    ) -> RoomEvent:
        return RoomEvent(
            removed=removed,
            room=self.room,
            event=self.event.value,
            by=self.by,
            ts=ts,
            seq=seq,
            user=self.user,
            topic=self.topic,
            modes=self.modes,
            args=self.args,
            reason=self.reason,
            expires=self.expires,
            address=self.address is not None,  # never which: addresses are private
            replayed=replayed,
        )


def event_from_row(
    room: str, event: str, by: str, body: str, seq: int, ts: float, replayed: bool = False
) -> RoomEvent:
    """A stored room event (a log row: room, event, sender, body) as its frame."""
    d = json.loads(body) if body else {}
    return RoomEvent(
        room=room,
        event=event,
        by=by,
        ts=ts,
        seq=seq,
        user=d.get("user"),
        topic=d.get("topic"),
        modes=d.get("modes"),
        args=tuple(d.get("args", ())),
        reason=d.get("reason"),
        expires=d.get("expires"),
        address="address" in d,  # never which: addresses are private
        replayed=replayed,
    )


def _error(code: ErrorCode, message: str, rid: RequestId) -> ProtocolError:
    return ProtocolError(code, message, rid)


class RoomBook:
    """Every room but ``lobby``, and who is in which (module docstring: one owner)."""

    def __init__(
        self,
        *,
        max_rooms: int = DEFAULT_MAX_ROOMS,
        max_rooms_per_user: int = DEFAULT_MAX_ROOMS_PER_USER,
    ) -> None:
        self.max_rooms = max_rooms
        self.max_rooms_per_user = max_rooms_per_user
        self._rooms: dict[str, Room] = {}  # room_key -> Room
        self._of_user: dict[str, set[str]] = {}  # username_key -> room keys
        self._guest_rooms = 0  # how many rooms are ephemeral

    # ------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._rooms)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and room_key(name) in self._rooms

    def get(self, name: str) -> Room | None:
        return self._rooms.get(room_key(name))

    def rooms_of(self, user: str) -> list[Room]:
        """The rooms ``user`` is a member of (``lobby`` not included), sorted ignoring case."""
        keys = self._of_user.get(username_key(user), ())
        return sorted((self._rooms[k] for k in keys), key=lambda r: r.name.lower())

    def guest_rooms_of(self, user: str) -> list[Room]:
        """The guest rooms ``user`` is in: left when their session ends."""
        return [r for r in self.rooms_of(user) if r.ephemeral]

    def has_guest_rooms(self) -> bool:
        """Any guest room now? A read of one int: safe without the owner's lock for a
        caller that only skips work when there is none."""
        return self._guest_rooms > 0

    def is_ephemeral(self, name: str) -> bool:
        room = self._rooms.get(room_key(name))
        return room is not None and room.ephemeral

    def is_member(self, user: str, name: str) -> bool:
        if room_key(name) == LOBBY:
            return True
        return room_key(name) in self._of_user.get(username_key(user), ())

    def member_room(self, user: str, name: str, rid: RequestId = None) -> Room:
        """The room ``name``, of which ``user`` must be a member (a ``pm``, ``history``,
        ``topic``...): ``no_such_room`` or ``not_in_room`` otherwise. Not for lobby."""
        room = self._rooms.get(room_key(name))
        if room is None:
            raise self.not_found(name, rid)
        if room.member(user) is None:
            raise self.not_member(room, rid)
        return room

    def by_key(self, key: str) -> Room | None:
        """The room whose :func:`room_key` is ``key`` (folded once by the caller)."""
        return self._rooms.get(key)

    @staticmethod
    def not_found(name: str, rid: RequestId = None) -> ProtocolError:
        """``no_such_room`` for ``name``, as :meth:`member_room` raises it."""
        return _error(ErrorCode.NO_SUCH_ROOM, f"there is no room {name}", rid)

    @staticmethod
    def not_member(room: Room, rid: RequestId = None) -> ProtocolError:
        """``not_in_room`` for ``room``, as :meth:`member_room` raises it."""
        return _error(ErrorCode.NOT_IN_ROOM, f"you are not in {room.name}", rid)

    def readable_from(self, user: str, name: str, rid: RequestId = None) -> int:
        """The first seq of ``name`` that ``user`` may read (docs/PROTOCOL.md §Who may
        read the past): 0 for lobby and +H rooms, else their join's; raises for a
        non-member."""
        if room_key(name) == LOBBY:
            return 0
        room = self.member_room(user, name, rid)
        if "H" in room.flags:
            return 0
        m = room.member(user)
        assert m is not None
        return m.join_seq

    def members_of(self, name: str) -> Iterable[str]:
        """The canonical names of a room's members (none for an unknown room)."""
        room = self._rooms.get(room_key(name))
        return () if room is None else (m.user for m in room.members.values())

    def listing(self, user: str) -> tuple[RoomListing, ...]:
        """The ``rooms`` reply: every room but the +s ones ``user`` is not in."""
        mine = self._of_user.get(username_key(user), set())
        out = []
        for key, room in self._rooms.items():
            joined = key in mine
            if "s" in room.flags and not joined:
                continue
            out.append(
                RoomListing(
                    name=room.name,
                    count=len(room.members),
                    topic=room.topic,
                    modes=room.modes,
                    joined=joined,
                )
            )
        out.sort(key=lambda r: r.name.lower())
        return tuple(out)

    def visible_info(self, user: str, name: str, rid: RequestId = None) -> RoomInfo:
        """``members`` (and ``topic``/``mode`` reads): members see everything; others
        see a room that is not +s, without its key."""
        room = self._rooms.get(room_key(name))
        if room is None or ("s" in room.flags and room.member(user) is None):
            raise _error(ErrorCode.NO_SUCH_ROOM, f"there is no room {name}", rid)
        return room.info(with_key=room.member(user) is not None)

    # ------------------------------------------------------------ checks (no change)

    def join(
        self, user: str, name: str, key: str | None, rid: RequestId = None, guest: bool = False
    ) -> RoomChange | None:
        """A ``join``'s change; None when ``user`` is a member already (or it is lobby).
        A ``guest`` (docs/PROTOCOL.md §Guest rooms) creates guest rooms and joins no
        other: its membership of a stored room would outlive it."""
        k = room_key(name)
        if k == LOBBY:
            return None
        mine = self._of_user.get(username_key(user), set())
        room = self._rooms.get(k)
        if room is not None and room.member(user) is not None:
            return None
        if len(mine) >= self.max_rooms_per_user:
            why = f"you are in {len(mine)} rooms, the most this server allows"
            raise _error(ErrorCode.TOO_MANY_ROOMS, why, rid)
        if room is None:
            if len(self._rooms) >= self.max_rooms:
                why = f"this server holds {len(self._rooms)} rooms, the most it allows"
                raise _error(ErrorCode.TOO_MANY_ROOMS, why, rid)
            # A guest room has no owner: its creator is an op, as an unregistered
            # channel's is on most IRC servers (docs/PROTOCOL.md §Guest rooms), whom
            # another op may kick or deop and who may deop itself.
            role = Role.OP if guest else Role.OWNER
            return RoomChange(
                name, RoomEventKind.JOIN, user, role=role, create=True, ephemeral=guest
            )
        if guest and not room.ephemeral:
            why = f"{room.name} is for accounts: a guest joins only rooms a guest made"
            raise _error(ErrorCode.GUEST_NOT_ALLOWED, why, rid)
        invited = username_key(user) in room.invites
        if not invited:
            if "i" in room.flags:
                raise _error(ErrorCode.INVITE_ONLY, f"{room.name} is invite-only", rid)
            if room.key is not None and key != room.key:
                why = f"{room.name} needs a key" if key is None else f"wrong key for {room.name}"
                raise _error(ErrorCode.BAD_KEY, why, rid)
            if room.limit is not None and len(room.members) >= room.limit:
                why = f"{room.name} is full ({room.limit} members)"
                raise _error(ErrorCode.ROOM_FULL, why, rid)
        has_op = any(m.role in _OPERATORS for m in room.members.values())
        role = Role.MEMBER if has_op else Role.OP
        return RoomChange(room.name, RoomEventKind.JOIN, user, role=role, invite_used=invited)

    def part(self, user: str, name: str, reason: str | None, rid: RequestId = None) -> RoomChange:
        if room_key(name) == LOBBY:
            raise _error(ErrorCode.BAD_REQUEST, "nobody leaves lobby", rid)
        room = self.member_room(user, name, rid)
        return RoomChange(room.name, RoomEventKind.PART, _canonical(room, user), reason=reason)

    def topic(self, user: str, name: str, topic: str, rid: RequestId = None) -> RoomChange:
        room = self._modifiable(user, name, rid)
        if "t" in room.flags and not room.is_operator(user):
            why = f"only operators set the topic of {room.name} (+t)"
            raise _error(ErrorCode.NOT_OPERATOR, why, rid)
        return RoomChange(room.name, RoomEventKind.TOPIC, _canonical(room, user), topic=topic)

    def invite(self, user: str, name: str, target: str, rid: RequestId = None) -> RoomChange | None:
        """An ``invite``'s change (``target``: an account's canonical name, checked by
        the caller); None when ``target`` is a member already."""
        room = self._modifiable(user, name, rid)
        if "i" in room.flags and not room.is_operator(user):
            why = f"only operators invite to {room.name} (+i)"
            raise _error(ErrorCode.NOT_OPERATOR, why, rid)
        if room.member(target) is not None:
            return None
        return RoomChange(room.name, RoomEventKind.INVITE, _canonical(room, user), user=target)

    def mode(
        self,
        user: str,
        name: str,
        modes: str,
        args: Iterable[str],
        rid: RequestId = None,
        server_operator: bool = False,
    ) -> RoomChange:
        """A ``mode`` change; ``server_operator``: ``user`` is one, an operator of every
        room, member or not (docs/PROTOCOL.md §Moderation)."""
        args = tuple(args)
        changes = parse_modes(modes, args, rid)
        if server_operator and room_key(name) != LOBBY and name in self:
            room = self._rooms[room_key(name)]
        else:
            room = self._modifiable(user, name, rid)
            if not room.is_operator(user):
                why = f"only operators set modes of {room.name}"
                raise _error(ErrorCode.NOT_OPERATOR, why, rid)
        me = room.member(user)
        for c in changes:
            if c.letter in "ov":
                assert c.arg is not None
                target = room.member(c.arg)
                if target is None:
                    why = f"{c.arg} is not in {room.name}"
                    raise _error(ErrorCode.NOT_IN_ROOM, why, rid)
                if target.role == Role.OWNER and not c.add and c.letter == "o":
                    why = f"{target.user} owns {room.name}: that role does not change"
                    raise _error(ErrorCode.NOT_OPERATOR, why, rid)
        return RoomChange(
            room.name,
            RoomEventKind.MODE,
            user if me is None else me.user,
            modes=modes,
            args=args,
            after=_after_modes(room, changes),
        )

    def _modifiable(self, user: str, name: str, rid: RequestId) -> Room:
        if room_key(name) == LOBBY:
            raise _error(ErrorCode.NOT_OPERATOR, "lobby has no operators", rid)
        return self.member_room(user, name, rid)

    # ------------------------------------------------------------ changes

    def apply(self, change: RoomChange, seq: int) -> None:
        """Make a checked change, stored as ``seq``, in the model."""
        k = room_key(change.room)
        if change.create:
            self._rooms[k] = Room(
                name=change.room,
                flags=set(NEW_ROOM_FLAGS),
                ephemeral=change.ephemeral,
                created=change.ts,
            )
            self._guest_rooms += change.ephemeral
        room = self._rooms[k]
        kind = change.event
        if kind is RoomEventKind.JOIN:
            assert change.role is not None
            self._add(room, Member(change.by, change.role, NO_HISTORY if room.ephemeral else seq))
            if change.invite_used:
                room.invites.discard(username_key(change.by))
        elif kind in _GONE:
            gone = change.by if kind in (RoomEventKind.PART, RoomEventKind.QUIT) else change.user
            if gone is None:
                return
            room.members.pop(username_key(gone), None)
            rooms = self._of_user.get(username_key(gone))
            if rooms is not None:
                rooms.discard(k)
                if not rooms:
                    del self._of_user[username_key(gone)]
            if room.ephemeral and not room.members:
                del self._rooms[k]  # a guest room lives as long as a member is in it
                self._guest_rooms -= 1
        elif kind is RoomEventKind.TOPIC:
            room.topic = change.topic or ""
            room.topic_by = change.by if change.topic else None
            room.topic_ts = change.ts if change.topic else 0.0
        elif kind is RoomEventKind.INVITE:
            assert change.user is not None
            room.invites.add(username_key(change.user))
        elif kind is RoomEventKind.MODE:
            assert change.after is not None
            room.flags = set(change.after.flags)
            room.key = change.after.key
            room.limit = change.after.limit
            for user, role, voice in change.after.roles:
                m = room.member(user)
                if m is not None:
                    m.role, m.voice = role, voice

    def rename(self, old: str, new: str) -> list[Room]:
        """An IRC guest's NICK change (docs/IRC.md): its memberships, all of guest
        rooms (a guest joins no other), under the new name; the rooms they are of.
        Nothing else changes: an invite or a ban names a nick, and stays on it."""
        ok, nk = username_key(old), username_key(new)
        keys = self._of_user.pop(ok, set())
        rooms = []
        for k in sorted(keys):
            room = self._rooms[k]
            assert room.ephemeral, "a guest is in guest rooms only"
            m = room.members.pop(ok)
            m.user = new
            room.members[nk] = m
            rooms.append(room)
        if keys:
            self._of_user[nk] = keys
        return rooms

    def _add(self, room: Room, member: Member) -> None:
        room.members[username_key(member.user)] = member
        self._of_user.setdefault(username_key(member.user), set()).add(room_key(room.name))

    # ------------------------------------------------------------ loading

    def load(
        self,
        rooms: Iterable[
            tuple[str, str, str | None, int | None, str, str | None, *tuple[float | None, ...]]
        ],
        members: Iterable[tuple[str, str, str, int]],
        invites: Iterable[tuple[str, str]],
    ) -> None:
        """Build the model from stored rows (chatroom_server.roomstore): rooms as (name,
        flags, key, limit, topic, topic_by[, created, topic_ts]), members as (room, user,
        role, join_seq), invites as (room, user)."""
        for name, flags, key, limit, topic, topic_by, *times in rooms:
            created, topic_ts = (*times, None, None)[:2]
            self._rooms[room_key(name)] = Room(
                name=name,
                flags=loaded_flags(flags),
                key=key,
                limit=limit,
                topic=topic,
                topic_by=topic_by,
                created=created or 0.0,
                topic_ts=topic_ts or 0.0,
            )
        for rname, user, role, join_seq in members:
            room = self._rooms.get(room_key(rname))
            if room is not None:
                base, voice = loaded_role(role)
                self._add(room, Member(user, base, join_seq, voice))
        for rname, user in invites:
            room = self._rooms.get(room_key(rname))
            if room is not None:
                room.invites.add(username_key(user))


def stored_flags(flags: Iterable[str]) -> str:
    """A room's flag modes as its row keeps them: the letters set, but ``n``, which is
    kept as its absence (``e``: ``-n``, messages from outside), so that every room
    stored before mode ``n`` existed, whose row has no ``e``, is ``+n`` as it was."""
    letters = set(flags)
    return "".join(sorted((letters - {"n"}) | ({"e"} if "n" not in letters else set())))


def loaded_flags(text: str) -> set[str]:
    """A row's flags (:func:`stored_flags`) as the model's letters."""
    letters = set(text)
    return (letters & set(FLAG_MODES)) | ({"n"} if "e" not in letters else set())


def _canonical(room: Room, user: str) -> str:
    m = room.member(user)
    return user if m is None else m.user


def stored_role(role: Role, voice: bool) -> str:
    """A role as chatroom_server.roomstore stores it: ``op+voice`` for an op voiced too
    (no new column: the text was always the role's)."""
    return f"{role.value}+voice" if voice else role.value


def loaded_role(text: str) -> tuple[Role, bool]:
    """:func:`stored_role` read back."""
    base, _, extra = text.partition("+")
    return Role(base), extra == "voice"


def _after_modes(room: Room, changes: Iterable[ModeChange]) -> ModeResult:
    """What ``changes`` (checked: members named, no owner among them) leave of ``room``."""
    flags = set(room.flags)
    key, limit = room.key, room.limit
    roles: dict[str, tuple[str, Role, bool]] = {}
    for c in changes:
        if c.letter in FLAG_MODES:
            if c.add:
                flags.add(c.letter)
            else:
                flags.discard(c.letter)
        elif c.letter == "k":
            key = c.arg if c.add else None
        elif c.letter == "l":
            limit = int(c.arg) if c.add and c.arg is not None else None
        else:  # o, v
            assert c.arg is not None
            m = room.member(c.arg)
            assert m is not None
            k = username_key(m.user)
            _, role, voice = roles.get(k, (m.user, m.role, m.voice))
            role, voice = role_after(role, voice, c.letter, c.add)
            roles[k] = (m.user, role, voice)
    changed = tuple(
        (user, role, voice)
        for k, (user, role, voice) in roles.items()
        if (room.members[k].role, room.members[k].voice) != (role, voice)
    )
    return ModeResult(frozenset(flags), key, limit, changed)
