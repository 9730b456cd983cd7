"""Rooms on the wire (docs/PROTOCOL.md §Rooms, protocol version 2), with no I/O.

The frames of the ``rooms`` extension (one frozen msgspec Struct each, built on the same
bases as every other frame, and decoded through :mod:`chatroom.protocol`'s unions), the
room-name rules, and the mode strings (``"+ik-t"`` and their arguments) parsed into
:class:`ModeChange` values that the server's room model applies and the SDK checks
before sending.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import msgspec

from chatroom._wire import NAME_RE, UserTuple, _Command, _Event
from chatroom.errors import ErrorCode, ProtocolError, RequestId

__all__ = [
    "FLAG_MODES",
    "LOBBY",
    "MAX_KEY",
    "MAX_MEMBER_LIMIT",
    "MAX_REASON",
    "MAX_TOPIC",
    "MODE_LETTERS",
    "InviteCommand",
    "JoinCommand",
    "MembersCommand",
    "ModeChange",
    "ModeCommand",
    "PartCommand",
    "Role",
    "RoomEvent",
    "RoomEventKind",
    "RoomInfo",
    "RoomInfoReply",
    "RoomList",
    "RoomListing",
    "RoomsCommand",
    "TopicCommand",
    "apply_event",
    "check_room",
    "format_modes",
    "is_valid_room",
    "parse_modes",
    "role_after",
    "room_key",
    "validate_room_command",
]

# The room every user is in, always: what a protocol-v1 connection lives in.
LOBBY: Final = "lobby"
MAX_TOPIC: Final = 390  # characters, as IRC's usual TOPICLEN
MAX_REASON: Final = 300  # a part's reason, in characters
MAX_KEY: Final = 23  # a +k key, in characters, as IRC's usual KEYLEN
MAX_MEMBER_LIMIT: Final = 100_000  # the largest +l
MAX_LIMIT: Final = MAX_MEMBER_LIMIT

# Flag modes (no argument), in the order a mode string lists them.
FLAG_MODES: Final = "intsHm"
# Every mode letter: flags, +k key, +l limit, and the member roles +o (operator) and +v
# (voice), which name a member.
MODE_LETTERS: Final = "iknstlHmov"
_MODE_ORDER: Final = {c: i for i, c in enumerate("ikntslHm")}


class Role(StrEnum):
    """A member's role in a room (docs/PROTOCOL.md §Rooms): the creator is ``owner``;
    ``op`` (mode +o) may set modes, the topic under +t, and invite; ``voice`` (+v) is
    for moderation (issue 36)."""

    OWNER = "owner"
    OP = "op"
    VOICE = "voice"
    MEMBER = "member"


class RoomEventKind(StrEnum):
    """What a ``room_event`` says happened."""

    JOIN = "join"
    PART = "part"
    TOPIC = "topic"
    MODE = "mode"
    INVITE = "invite"
    KICK = "kick"  # the moderation events (docs/PROTOCOL.md §Moderation)
    BAN = "ban"
    UNBAN = "unban"
    MUTE = "mute"
    UNMUTE = "unmute"
    QUIT = "quit"  # a member's session ended: gone from a guest room (§Guest rooms)
    NICK = "nick"  # an IRC guest member (``by``) is called ``user`` now (§Guest rooms)


def is_valid_room(name: str) -> bool:
    """A room name follows the username rules: 1-32 of ``[A-Za-z0-9_-]``, starting with a
    letter or digit (docs/PROTOCOL.md §Names)."""
    return NAME_RE.fullmatch(name) is not None


def room_key(name: str) -> str:
    """The case-insensitive identity of a room name (ASCII, so ``lower()``)."""
    return name.lower()


def check_room(name: str, request_id: RequestId = None) -> None:
    """Raise ``invalid_room`` unless ``name`` can name a room."""
    if not is_valid_room(name):
        raise ProtocolError(
            ErrorCode.INVALID_ROOM,
            f"{name[:40]!r} is not a room name: 1-32 characters of A-Z a-z 0-9 _ -, "
            "starting with a letter or digit",
            request_id,
        )


# --------------------------------------------------------------------------------------
# Commands


class JoinCommand(_Command, tag="join", frozen=True):
    """Join ``room``, creating it if it does not exist (the creator becomes its owner);
    ``key`` for a room with mode +k. Answered with :class:`RoomInfoReply`."""

    room: str
    key: str | None = None


class PartCommand(_Command, tag="part", frozen=True):
    """Leave ``room`` (never ``lobby``); answered with an ``ack``."""

    room: str
    reason: str | None = None


class RoomsCommand(_Command, tag="rooms", frozen=True):
    """The rooms this user may see; answered with :class:`RoomList`."""


class TopicCommand(_Command, tag="topic", frozen=True):
    """Without ``topic``: read it (:class:`RoomInfoReply`); with it, set it (``""``
    clears it), answered with an ``ack``."""

    room: str
    topic: str | None = None


class InviteCommand(_Command, tag="invite", frozen=True):
    """Let ``user`` join ``room`` past +i (and +k, +l); answered with an ``ack``."""

    room: str
    user: str


class ModeCommand(_Command, tag="mode", frozen=True):
    """Without ``modes``: read them (:class:`RoomInfoReply`). With them: change them, an
    IRC mode string such as ``"+kl-t"`` whose letters that take an argument (+k key, +l
    limit, +o/-o and +v/-v a member) take the next of ``args`` in order; answered with an
    ``ack``."""

    room: str
    modes: str | None = None
    args: tuple[str, ...] = ()


class MembersCommand(_Command, tag="members", frozen=True):
    """A room's members, online or not; answered with :class:`RoomInfoReply`."""

    room: str


RoomCommand = (
    JoinCommand
    | PartCommand
    | RoomsCommand
    | TopicCommand
    | InviteCommand
    | ModeCommand
    | MembersCommand
)


# --------------------------------------------------------------------------------------
# Events


class RoomInfo(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """A room as its members see it: in ``login_ok``'s ``rooms`` and in
    :class:`RoomInfoReply`. ``modes`` are the flags and letters set (``"+iklt"``), with
    the key and limit beside them; ``members`` every member, online or not, sorted
    ignoring case; ``roles`` the role of each member whose role is not ``member``;
    ``voiced`` the operators (``owner``, ``op``) who have voice as well (IRC's
    multi-prefix ``@+``; a member with voice and no more has the role ``voice``)."""

    name: str
    topic: str = ""
    topic_by: str | None = None
    modes: str = ""
    key: str | None = None
    limit: int | None = None
    members: UserTuple = ()
    roles: dict[str, str] = msgspec.field(default_factory=dict)
    voiced: UserTuple = ()
    # When it was created and its topic set (unix time; absent: not known, as for a
    # room whose event the log no longer keeps).
    created: float | None = None
    topic_ts: float | None = None


class RoomInfoReply(_Event, tag="room_info", frozen=True):
    """The reply to ``join``, ``members``, and ``topic`` or ``mode`` without a change:
    ``info`` the room; ``joined``: a ``join`` that made this user a member, and ``seq``
    its ``room_event``'s seq (none in a guest room, whose events are not stored)."""

    info: RoomInfo
    seq: int | None = None
    joined: bool = False
    id: RequestId = None


class RoomListing(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """One room of a ``rooms`` reply: ``count`` members; ``joined``: this user is one."""

    name: str
    count: int
    topic: str = ""
    modes: str = ""
    joined: bool = False


class RoomList(_Event, tag="rooms", frozen=True):
    """The rooms the user may see: every room but the secret (+s) ones they are not in,
    sorted ignoring case."""

    rooms: tuple[RoomListing, ...]
    id: RequestId = None


class RoomEvent(_Event, tag="room_event", frozen=True):
    """A stored change to a room (its ``seq`` in the one order), sent to the room's
    members and replayed like messages: ``event`` (:class:`RoomEventKind`) done ``by`` a
    user. ``user`` is who it names (the invited, the kicked; for ``mode``, absent: the
    members are in ``args``); ``topic`` the new topic; ``modes`` and ``args`` the change
    as given to ``mode``; ``reason`` a part's or kick's."""

    room: str
    event: str
    by: str
    ts: float
    seq: int | None = None
    user: str | None = None
    topic: str | None = None
    modes: str | None = None
    args: tuple[str, ...] = ()
    reason: str | None = None
    expires: float | None = None  # a ban's or mute's end (unix time): §Moderation
    removed: bool = False  # a ban of a member, who is one no longer (live only)
    # A ban or unban of an address (no ``user``); which one is not shown: addresses are
    # private (docs/PROTOCOL.md §Bans by address).
    address: bool = False
    replayed: bool = msgspec.field(default=False, name="replay")


RoomServerEvent = RoomInfoReply | RoomList | RoomEvent


# --------------------------------------------------------------------------------------
# Modes


@dataclass(frozen=True, slots=True)
class ModeChange:
    """One letter of a mode string: ``add`` for ``+``; ``arg`` the key (+k), the limit
    (+l, an integer in text) or the member (+o/-o, +v/-v); None for the others."""

    add: bool
    letter: str
    arg: str | None = None


def _takes_arg(add: bool, letter: str) -> bool:
    return letter in "ov" or (add and letter in "kl")


def parse_modes(
    modes: str, args: Sequence[str] = (), request_id: RequestId = None
) -> tuple[ModeChange, ...]:
    """``"+kl-t"`` with ``("secret", "10")`` → its changes, in order; ``bad_request`` for an
    unknown letter, a missing or extra argument, a bad key, limit or member name."""

    def bad(why: str) -> ProtocolError:
        return ProtocolError(ErrorCode.BAD_REQUEST, f"mode {modes[:40]!r}: {why}", request_id)

    if not modes or modes[0] not in "+-":
        raise bad("a mode string starts with + or -")
    out: list[ModeChange] = []
    add = True
    rest = list(args)
    for c in modes:
        if c in "+-":
            add = c == "+"
            continue
        if c not in MODE_LETTERS:
            raise bad(f"unknown mode {c!r} (known: {MODE_LETTERS})")
        arg = None
        if _takes_arg(add, c):
            if not rest:
                raise bad(f"{'+' if add else '-'}{c} needs an argument")
            arg = rest.pop(0)
            if c == "k":
                check_key(arg, request_id)
            elif c == "l" and not (arg.isascii() and arg.isdigit() and 0 < int(arg) <= MAX_LIMIT):
                raise bad(f"a member limit is an integer from 1 to {MAX_MEMBER_LIMIT}")
            elif c in "ov" and NAME_RE.fullmatch(arg) is None:
                raise bad(f"no user can be named {arg[:40]!r}")
        out.append(ModeChange(add, c, arg))
    if not out:
        raise bad("no mode letters")
    if rest:
        raise bad(f"{len(rest)} argument(s) left over")
    return tuple(out)


def format_modes(flags: Iterable[str]) -> str:
    """The mode string of a set of letters, in a fixed order: ``"+iklt"`` (``""``: none)."""
    letters = sorted(set(flags), key=lambda c: _MODE_ORDER.get(c, len(_MODE_ORDER)))
    return "+" + "".join(letters) if letters else ""


def check_key(key: str, request_id: RequestId = None) -> None:
    """A +k key: 1 to :data:`MAX_KEY` printable characters without spaces or commas."""
    if not 1 <= len(key) <= MAX_KEY or not key.isprintable() or any(c in " ," for c in key):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"a key is 1-{MAX_KEY} printable characters without spaces or commas",
            request_id,
        )


def _check_length(what: str, text: str | None, limit: int, request_id: RequestId) -> None:
    if text is not None and len(text) > limit:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"{what} is {len(text)} characters; the limit is {limit}",
            request_id,
        )


def validate_room_command(cmd: RoomCommand) -> None:
    """The rules of a room command msgspec's types cannot express; raise
    :class:`~chatroom.errors.ProtocolError` (``invalid_room``, ``bad_request``)."""
    if isinstance(cmd, RoomsCommand):
        return
    check_room(cmd.room, cmd.id)
    if isinstance(cmd, JoinCommand):
        if cmd.key is not None:
            _check_length("a key", cmd.key, MAX_KEY, cmd.id)
    elif isinstance(cmd, PartCommand):
        _check_length("a reason", cmd.reason, MAX_REASON, cmd.id)
    elif isinstance(cmd, TopicCommand):
        _check_length("a topic", cmd.topic, MAX_TOPIC, cmd.id)
        if cmd.topic is not None and not cmd.topic.isprintable():
            raise ProtocolError(ErrorCode.BAD_REQUEST, "a topic is one line of text", cmd.id)
    elif isinstance(cmd, InviteCommand):
        if NAME_RE.fullmatch(cmd.user) is None:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"no user can be named {cmd.user[:40]!r}", cmd.id
            )
    elif isinstance(cmd, ModeCommand):
        if cmd.modes is not None:
            parse_modes(cmd.modes, cmd.args, cmd.id)
        elif cmd.args:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "args without modes", cmd.id)


def apply_event(info: RoomInfo, event: RoomEvent) -> RoomInfo:
    """``info`` after ``event`` (a client keeping its rooms up to date from the
    ``room_event``s it receives): members joined and gone, the topic, the modes and
    roles. A joiner's role is not in the event: they are listed as a ``member``."""
    kind = event.event
    if kind == RoomEventKind.JOIN:
        if any(room_key(m) == room_key(event.by) for m in info.members):
            return info
        members = tuple(sorted((*info.members, event.by), key=str.lower))
        return msgspec.structs.replace(info, members=members)
    if kind == RoomEventKind.NICK and event.user:
        old, new = room_key(event.by), event.user
        members = tuple(
            sorted((new if room_key(m) == old else m for m in info.members), key=str.lower)
        )
        roles = {(new if room_key(u) == old else u): r for u, r in info.roles.items()}
        voiced = tuple(
            sorted((new if room_key(u) == old else u for u in info.voiced), key=str.lower)
        )
        return msgspec.structs.replace(info, members=members, roles=roles, voiced=voiced)
    if kind in (RoomEventKind.PART, RoomEventKind.QUIT, RoomEventKind.KICK, RoomEventKind.BAN):
        by_self = kind in (RoomEventKind.PART, RoomEventKind.QUIT)
        gone = room_key(event.by if by_self else event.user or "")
        members = tuple(m for m in info.members if room_key(m) != gone)
        roles = {u: r for u, r in info.roles.items() if room_key(u) != gone}
        voiced = tuple(u for u in info.voiced if room_key(u) != gone)
        return msgspec.structs.replace(info, members=members, roles=roles, voiced=voiced)
    if kind == RoomEventKind.TOPIC:
        topic = event.topic or ""
        return msgspec.structs.replace(info, topic=topic, topic_by=event.by if topic else None)
    if kind == RoomEventKind.MODE and event.modes:
        return _apply_modes(info, parse_modes(event.modes, event.args))
    return info


def _apply_modes(info: RoomInfo, changes: Sequence[ModeChange]) -> RoomInfo:
    flags = set(info.modes.lstrip("+")) - {"k", "l"}
    key, limit = info.key, info.limit
    roles = dict(info.roles)
    voiced = {room_key(u): u for u in info.voiced}
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
        elif c.arg is not None:
            name = next((m for m in info.members if room_key(m) == room_key(c.arg)), c.arg)
            now = Role(roles.get(name, Role.MEMBER.value))
            role, voice = role_after(now, room_key(name) in voiced, c.letter, c.add)
            if role == Role.MEMBER:
                roles.pop(name, None)
            else:
                roles[name] = role.value
            if voice:
                voiced[room_key(name)] = name
            else:
                voiced.pop(room_key(name), None)
    letters = (
        flags | ({"k"} if key is not None else set()) | ({"l"} if limit is not None else set())
    )
    return msgspec.structs.replace(
        info,
        modes=format_modes(letters),
        key=key,
        limit=limit,
        roles=roles,
        voiced=tuple(sorted(voiced.values(), key=str.lower)),
    )


def role_after(role: Role, voice: bool, letter: str, add: bool) -> tuple[Role, bool]:
    """A member's role, and whether they have voice as well as it, after ``+o``,
    ``-o``, ``+v`` or ``-v`` (docs/PROTOCOL.md §Modes): voice is kept alongside op
    (``-o`` leaves a voiced op ``voice``); the owner's role never changes, its voice
    does. The server's rule (chatroom_server.rooms) and a client's copy of it."""
    operator = role in (Role.OWNER, Role.OP)
    if letter == "v":
        if operator:
            return role, add
        return (Role.VOICE if add else Role.MEMBER), False
    if role == Role.OWNER:
        return role, voice
    if add:
        return Role.OP, voice or role == Role.VOICE
    if role == Role.OP:
        return (Role.VOICE if voice else Role.MEMBER), False
    return role, voice
