"""Moderation in the room model (docs/PROTOCOL.md §Moderation): bans and mutes, and
every check of the moderation commands, made here once for every transport. No
sockets, no database, no clock (the caller passes the time).

It works like the rest of the room model (chatroom_server.rooms): :meth:`Moderation.check`
returns the :class:`~chatroom_server.rooms.RoomChange` a command makes (or raises
:class:`~chatroom.errors.ProtocolError`), the caller stores it as a ``room_event``
(its rows and its audit record in the same transaction, chatroom_server.modstore), then
:meth:`Moderation.apply` makes it in the model, after
:meth:`~chatroom_server.rooms.RoomBook.apply` has removed a kicked or banned member.

Threads: as the :class:`~chatroom_server.rooms.RoomBook` it sits beside: one owner,
whoever holds the fan-out lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TypeVar

from chatroom.errors import ErrorCode, ProtocolError, RequestId
from chatroom.moderation import (
    BanCommand,
    BanEntry,
    BansCommand,
    KickCommand,
    ModerationCommand,
    MuteCommand,
    UnbanCommand,
    UnmuteCommand,
)
from chatroom.protocol import username_key
from chatroom.rooms import LOBBY, Role, RoomEventKind, room_key
from chatroom_server.rooms import Room, RoomBook, RoomChange
from chatroom_server.session import BannedError

__all__ = ["Ban", "Moderation", "Mute"]


@dataclass(frozen=True, slots=True)
class Ban:
    user: str  # canonical spelling
    by: str
    ts: float
    reason: str | None = None
    expires: float | None = None  # unix time; None: until unbanned

    def active(self, now: float) -> bool:
        return self.expires is None or now < self.expires


@dataclass(frozen=True, slots=True)
class Mute:
    user: str
    by: str
    ts: float
    reason: str | None = None
    expires: float | None = None

    def active(self, now: float) -> bool:
        return self.expires is None or now < self.expires


_T = TypeVar("_T")

# Rows as stored (chatroom_server.modstore.load): (room, user, by, ts, reason, expires).
Row = tuple[str, str, str, float, str | None, float | None]


class Moderation:
    """The bans and mutes of every room (module docstring: one owner)."""

    def __init__(self) -> None:
        self._bans: dict[str, dict[str, Ban]] = {}  # room_key -> username_key -> Ban
        self._mutes: dict[str, dict[str, Mute]] = {}  # room_key -> username_key -> Mute

    # ------------------------------------------------------------ reading

    def ban_of(self, room: str, user: str, now: float) -> Ban | None:
        """``user``'s ban from ``room`` in force at ``now``."""
        ban = self._bans.get(room_key(room), {}).get(username_key(user))
        return ban if ban is not None and ban.active(now) else None

    def check_join(self, room: str, user: str, now: float, rid: RequestId = None) -> None:
        """Raise ``banned`` for a user a ban keeps out of ``room`` (before the room's
        other checks: an invite does not lift a ban)."""
        ban = self.ban_of(room, user, now)
        if ban is not None:
            raise BannedError(_banned_text(room, ban), rid, ban.reason, ban.expires)

    def check_speak(self, room: Room, user: str, now: float, rid: RequestId = None) -> None:
        """Raise ``muted`` for a member of ``room`` who may not speak in it now."""
        mute = self._mutes.get(room_key(room.name), {}).get(username_key(user))
        if mute is not None and mute.active(now):
            until = "" if mute.expires is None else f" until {_when(mute.expires)}"
            why = f" ({mute.reason})" if mute.reason else ""
            text = f"{mute.by} muted you in {room.name}{until}{why}"
            raise ProtocolError(ErrorCode.MUTED, text, rid)
        if "m" in room.flags:
            m = room.member(user)
            if m is None or m.role == Role.MEMBER:
                text = f"{room.name} is moderated (+m): only operators and voiced members speak"
                raise ProtocolError(ErrorCode.MUTED, text, rid)

    def bans(self, room: str, now: float) -> tuple[BanEntry, ...]:
        found = [b for b in self._bans.get(room_key(room), {}).values() if b.active(now)]
        found.sort(key=lambda b: b.user.lower())
        return tuple(
            BanEntry(user=b.user, by=b.by, ts=b.ts, reason=b.reason, expires=b.expires)
            for b in found
        )

    # ------------------------------------------------------------ checks (no change)

    def check(
        self,
        book: RoomBook,
        user: str,
        cmd: ModerationCommand,
        now: float,
        account: Callable[[str], str | None],
        server_operator: bool = False,
    ) -> RoomChange | tuple[BanEntry, ...] | None:
        """The change ``cmd`` from ``user`` makes; for ``bans`` the list; None for an
        unban or unmute that changes nothing. ``account(name)``: an account's canonical
        name or None; ``server_operator``: ``user`` is one (read by the caller).
        Raises ProtocolError."""
        rid = cmd.id
        if room_key(cmd.room) == LOBBY:
            raise ProtocolError(ErrorCode.NOT_OPERATOR, "lobby has no operators", rid)
        room = book.get(cmd.room)
        if room is None:
            raise ProtocolError(ErrorCode.NO_SUCH_ROOM, f"there is no room {cmd.room}", rid)
        me = room.member(user)
        if not server_operator:
            if me is None:
                raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"you are not in {room.name}", rid)
            if not room.is_operator(user):
                why = f"only operators of {room.name} do that"
                raise ProtocolError(ErrorCode.NOT_OPERATOR, why, rid)
        by = user if me is None else me.user
        if isinstance(cmd, BansCommand):
            return self.bans(room.name, now)
        target = account(cmd.user)
        if target is None:
            raise ProtocolError(ErrorCode.UNKNOWN_USER, f"there is no user {cmd.user}", rid)
        if username_key(target) == username_key(user):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "you cannot do that to yourself", rid)
        member = room.member(target)
        if member is not None and member.role == Role.OWNER and not server_operator:
            why = f"{member.user} owns {room.name}: only a server operator acts on them"
            raise ProtocolError(ErrorCode.NOT_OPERATOR, why, rid)
        rk, tk = room_key(room.name), username_key(target)
        if isinstance(cmd, KickCommand | MuteCommand) and member is None:
            raise ProtocolError(ErrorCode.NOT_IN_ROOM, f"{target} is not in {room.name}", rid)
        if isinstance(cmd, KickCommand):
            return RoomChange(room.name, RoomEventKind.KICK, by, user=target, reason=cmd.reason)
        if isinstance(cmd, BanCommand | MuteCommand):
            kind = RoomEventKind.BAN if isinstance(cmd, BanCommand) else RoomEventKind.MUTE
            expires = None if cmd.duration is None else now + cmd.duration
            return RoomChange(room.name, kind, by, user=target, reason=cmd.reason, expires=expires)
        if isinstance(cmd, UnbanCommand):
            if self.ban_of(room.name, target, now) is None:
                return None
            return RoomChange(room.name, RoomEventKind.UNBAN, by, user=target)
        assert isinstance(cmd, UnmuteCommand)
        mute = self._mutes.get(rk, {}).get(tk)
        if mute is None or not mute.active(now):
            return None
        return RoomChange(room.name, RoomEventKind.UNMUTE, by, user=target)

    # ------------------------------------------------------------ changes

    def apply(self, change: RoomChange, ts: float) -> None:
        """Make a stored change in the model (any room change: a part ends a mute)."""
        rk = room_key(change.room)
        kind = change.event
        if kind in (RoomEventKind.PART, RoomEventKind.QUIT):
            self._drop(self._mutes, rk, change.by)
            return
        if change.user is None:
            return
        if kind is RoomEventKind.BAN:
            ban = Ban(change.user, change.by, ts, change.reason, change.expires)
            self._bans.setdefault(rk, {})[username_key(change.user)] = ban
            self._drop(self._mutes, rk, change.user)
        elif kind is RoomEventKind.KICK:
            self._drop(self._mutes, rk, change.user)
        elif kind is RoomEventKind.UNBAN:
            self._drop(self._bans, rk, change.user)
        elif kind is RoomEventKind.MUTE:
            mute = Mute(change.user, change.by, ts, change.reason, change.expires)
            self._mutes.setdefault(rk, {})[username_key(change.user)] = mute
        elif kind is RoomEventKind.UNMUTE:
            self._drop(self._mutes, rk, change.user)

    def rename(self, rooms: list[str], old: str, new: str) -> None:
        """An IRC guest's NICK change: a mute in these rooms (guest rooms) stays on
        its member, under the new name; a ban names a nick and stays on it."""
        ok, nk = username_key(old), username_key(new)
        for room in rooms:
            mutes = self._mutes.get(room_key(room), {})
            mute = mutes.pop(ok, None)
            if mute is not None:
                mutes[nk] = replace(mute, user=new)

    def forget(self, room: str) -> None:
        """A guest room is gone (docs/PROTOCOL.md §Guest rooms): its bans and mutes with
        it, or they would hold against the next room of that name."""
        self._bans.pop(room_key(room), None)
        self._mutes.pop(room_key(room), None)

    @staticmethod
    def _drop(table: dict[str, dict[str, _T]], rk: str, user: str) -> None:
        inner = table.get(rk)
        if inner is not None:
            inner.pop(username_key(user), None)
            if not inner:
                del table[rk]

    def load(self, bans: Iterable[Row], mutes: Iterable[Row]) -> None:
        """Build from stored rows (chatroom_server.modstore.load)."""
        for room, user, by, ts, reason, expires in bans:
            self._bans.setdefault(room_key(room), {})[username_key(user)] = Ban(
                user, by, ts, reason, expires
            )
        for room, user, by, ts, reason, expires in mutes:
            self._mutes.setdefault(room_key(room), {})[username_key(user)] = Mute(
                user, by, ts, reason, expires
            )


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _banned_text(room: str, ban: Ban) -> str:
    until = "" if ban.expires is None else f" until {_when(ban.expires)}"
    why = f" ({ban.reason})" if ban.reason else ""
    return f"{ban.by} banned you from {room}{until}{why}"
