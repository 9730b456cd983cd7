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

import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
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
from chatroom_server.servergate import BadAddress, network
from chatroom_server.session import BannedError

__all__ = ["AddressBan", "Ban", "Moderation", "Mute"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
class AddressBan:
    """A room's ban of a network (docs/PROTOCOL.md §Bans by address)."""

    network: str  # canonical (chatroom_server.servergate.network)
    by: str
    ts: float
    reason: str | None = None
    expires: float | None = None
    net: Network = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "net", ipaddress.ip_network(self.network))

    def active(self, now: float) -> bool:
        return self.expires is None or now < self.expires

    def holds(self, ip: str) -> bool:
        return self.holds_address(_ip(ip))

    def holds_address(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return addr is not None and addr.version == self.net.version and addr in self.net


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A connection's address as a ban matches it: a v4 client on a dual-stack socket by
    its v4 address (as chatroom_server.servergate matches it); None for no IP (a test's
    socketpair)."""
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


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

# Rows as stored (chatroom_server.modstore.load): (room, user, by, ts, reason, expires);
# an address ban's has the network in place of the user.
Row = tuple[str, str, str, float, str | None, float | None]


class Moderation:
    """The bans and mutes of every room (module docstring: one owner)."""

    def __init__(self) -> None:
        self._bans: dict[str, dict[str, Ban]] = {}  # room_key -> username_key -> Ban
        self._mutes: dict[str, dict[str, Mute]] = {}  # room_key -> username_key -> Mute
        # room_key -> network -> AddressBan: a few per room at most, matched one by one.
        self._addresses: dict[str, dict[str, AddressBan]] = {}
        # Every room's address bans indexed as chatroom_server.servergate.Networks does
        # (by IP version and prefix length, then the network's first address), replaced
        # whole at each change: read without the lock by logins (:meth:`may_ban_address`)
        # as one reference. 1,000 bans in a list cost 0.4 ms a login; this, a lookup per
        # prefix length in use.
        self._every_address: dict[tuple[int, int], dict[int, list[AddressBan]]] = {}

    # ------------------------------------------------------------ reading

    def ban_of(self, room: str, user: str, now: float) -> Ban | None:
        """``user``'s ban from ``room`` in force at ``now``."""
        ban = self._bans.get(room_key(room), {}).get(username_key(user))
        return ban if ban is not None and ban.active(now) else None

    def address_ban_of(self, room: str, ip: str, now: float) -> AddressBan | None:
        """The narrowest ban of ``room`` in force at ``now`` whose network holds ``ip``."""
        bans = self._addresses.get(room_key(room))
        if not bans:
            return None
        addr = _ip(ip)
        found = [b for b in bans.values() if b.active(now) and b.holds_address(addr)]
        return max(found, key=lambda b: b.net.prefixlen, default=None)

    def has_address_bans(self, room: str) -> bool:
        return room_key(room) in self._addresses

    def may_ban_address(self, ip: str, now: float) -> bool:
        """Whether some room's ban in force holds ``ip``. Read without the lock by a
        login (chatroom_server.roomwire.RoomWire.kick_on_login), so that only a login
        from a banned address takes it: the tuple is read whole, and a login that
        misses a ban made at that moment is seen by the ban's own kicks, which walk
        the sessions online."""
        every = self._every_address
        if not every:
            return False
        addr = _ip(ip)
        if addr is None:
            return False
        value, bits = int(addr), addr.max_prefixlen
        for (version, length), table in every.items():
            if version == addr.version:
                first = value >> (bits - length) << (bits - length)
                if any(b.active(now) for b in table.get(first, ())):
                    return True
        return False

    def _address_bans_changed(self) -> None:
        index: dict[tuple[int, int], dict[int, list[AddressBan]]] = {}
        for bans in self._addresses.values():
            for b in bans.values():
                table = index.setdefault((b.net.version, b.net.prefixlen), {})
                table.setdefault(int(b.net.network_address), []).append(b)
        self._every_address = index

    def check_join(
        self, room: str, user: str, now: float, rid: RequestId = None, ip: str | None = None
    ) -> None:
        """Raise ``banned`` for a user a ban keeps out of ``room``, by name or by the
        address ``ip`` they connect from (before the room's other checks: an invite does
        not lift a ban)."""
        ban = self.ban_of(room, user, now)
        if ban is not None:
            raise BannedError(_banned_text(room, ban), rid, ban.reason, ban.expires)
        if ip is not None:
            by_address = self.address_ban_of(room, ip, now)
            if by_address is not None:
                until = _until(by_address.expires, by_address.reason)
                text = f"your address {ip} is banned from {room}{until}"
                raise BannedError(text, rid, by_address.reason, by_address.expires)

    def check_speak(self, room: Room, user: str, now: float, rid: RequestId = None) -> None:
        """Raise ``muted`` for a member of ``room`` who may not speak in it now."""
        # Every room message asks: no names folded, no dict made, while nobody is muted.
        mutes = self._mutes.get(room_key(room.name)) if self._mutes else None
        mute = None if mutes is None else mutes.get(username_key(user))
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

    def bans(self, room: str, now: float, addresses: bool = False) -> tuple[BanEntry, ...]:
        """The bans of ``room`` in force, by name; then, with ``addresses`` (for a server
        operator: addresses are private), its address bans, by network."""
        found = [b for b in self._bans.get(room_key(room), {}).values() if b.active(now)]
        found.sort(key=lambda b: b.user.lower())
        out = [
            BanEntry(user=b.user, by=b.by, ts=b.ts, reason=b.reason, expires=b.expires)
            for b in found
        ]
        if addresses:
            nets = [a for a in self._addresses.get(room_key(room), {}).values() if a.active(now)]
            nets.sort(key=lambda a: (a.net.version, a.net))
            out.extend(
                BanEntry(address=a.network, by=a.by, ts=a.ts, reason=a.reason, expires=a.expires)
                for a in nets
            )
        return tuple(out)

    def address_kicks(
        self, book: RoomBook, room: str, ip_of: Callable[[str], str | None], now: float
    ) -> list[RoomChange]:
        """The kicks that put out of ``room`` its members whose address (``ip_of(user
        key)``: their session's, None if they have none here) a ban of it holds, each by
        the ban's maker, saying so (docs/PROTOCOL.md §Bans by address)."""
        r = book.get(room)
        if r is None or not self.has_address_bans(r.name):
            return []
        out = []
        for key, m in sorted(r.members.items()):
            ip = ip_of(key)
            ban = None if ip is None else self.address_ban_of(r.name, ip, now)
            if ban is not None:
                why = "banned by address" + (f": {ban.reason}" if ban.reason else "")
                if ban.expires is not None:
                    why += f" (until {_when(ban.expires)})"
                out.append(RoomChange(r.name, RoomEventKind.KICK, ban.by, user=m.user, reason=why))
        return out

    # ------------------------------------------------------------ checks (no change)

    def check(
        self,
        book: RoomBook,
        user: str,
        cmd: ModerationCommand,
        now: float,
        account: Callable[[str], str | None],
        server_operator: bool = False,
        ip: str | None = None,
    ) -> RoomChange | tuple[BanEntry, ...] | None:
        """The change ``cmd`` from ``user`` makes; for ``bans`` the list; None for an
        unban or unmute that changes nothing. ``account(name)``: an account's canonical
        name or None; ``server_operator``: ``user`` is one (read by the caller); ``ip``:
        the address ``user`` connects from. Raises ProtocolError."""
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
            return self.bans(room.name, now, addresses=server_operator)
        if isinstance(cmd, BanCommand | UnbanCommand) and cmd.address is not None:
            return self._check_address(room, by, cmd, now, server_operator, ip)
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

    def _check_address(
        self,
        room: Room,
        by: str,
        cmd: BanCommand | UnbanCommand,
        now: float,
        server_operator: bool,
        ip: str | None,
    ) -> RoomChange | None:
        rid = cmd.id
        assert cmd.address is not None
        if not server_operator:
            why = "only server operators ban or unban addresses: addresses are private"
            raise ProtocolError(ErrorCode.NOT_OPERATOR, why, rid)
        try:
            net = network(cmd.address)
        except BadAddress as exc:
            raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc), rid) from None
        if isinstance(cmd, UnbanCommand):
            if net not in self._addresses.get(room_key(room.name), {}):
                return None
            return RoomChange(room.name, RoomEventKind.UNBAN, by, address=net)
        if ip is not None and AddressBan(net, by, now).holds(ip):
            why = f"{net} holds your own address: you cannot ban yourself"
            raise ProtocolError(ErrorCode.BAD_REQUEST, why, rid)
        expires = None if cmd.duration is None else now + cmd.duration
        return RoomChange(
            room.name, RoomEventKind.BAN, by, reason=cmd.reason, expires=expires, address=net
        )

    # ------------------------------------------------------------ changes

    def apply(self, change: RoomChange, ts: float) -> None:
        """Make a stored change in the model (any room change: a part ends a mute)."""
        rk = room_key(change.room)
        kind = change.event
        if kind in (RoomEventKind.PART, RoomEventKind.QUIT):
            self._drop(self._mutes, rk, change.by)
            return
        if change.address is not None:
            if kind is RoomEventKind.BAN:
                net = AddressBan(change.address, change.by, ts, change.reason, change.expires)
                self._addresses.setdefault(rk, {})[change.address] = net
                self._address_bans_changed()
            elif kind is RoomEventKind.UNBAN:
                inner = self._addresses.get(rk, {})
                inner.pop(change.address, None)
                if not inner:
                    self._addresses.pop(rk, None)
                self._address_bans_changed()
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
        if self._addresses.pop(room_key(room), None) is not None:
            self._address_bans_changed()

    @staticmethod
    def _drop(table: dict[str, dict[str, _T]], rk: str, user: str) -> None:
        inner = table.get(rk)
        if inner is not None:
            inner.pop(username_key(user), None)
            if not inner:
                del table[rk]

    def load(
        self, bans: Iterable[Row], mutes: Iterable[Row], addresses: Iterable[Row] = ()
    ) -> None:
        """Build from stored rows (chatroom_server.modstore.load)."""
        for room, net, by, ts, reason, expires in addresses:
            ban = AddressBan(net, by, ts, reason, expires)
            self._addresses.setdefault(room_key(room), {})[net] = ban
        self._address_bans_changed()
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


def _until(expires: float | None, reason: str | None) -> str:
    until = "" if expires is None else f" until {_when(expires)}"
    return until + (f" ({reason})" if reason else "")


def _banned_text(room: str, ban: Ban) -> str:
    return f"{ban.by} banned you from {room}{_until(ban.expires, ban.reason)}"
