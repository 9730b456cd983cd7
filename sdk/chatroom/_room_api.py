"""The room commands of both clients (docs/PROTOCOL.md §Rooms), written once for each:
:class:`RoomMethods` for :class:`chatroom.ChatClient` (blocking calls) and
:class:`AsyncRoomMethods` for :class:`chatroom.aio.AsyncChatClient` (coroutines).

Each is one request built by the session and one typed reply; the client supplies
``_request`` (send with a fresh id, wait for the reply or raise what refused it) and
``_session``. Rooms need a client made with ``rooms=True`` and a server that turned them
on at login: anything else is a :class:`~chatroom.errors.UsageError` before a byte is
sent, rather than the server's ``unknown_command``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from chatroom.errors import UsageError
from chatroom.events import Receipt
from chatroom.moderation import (
    AuditCommand,
    AuditEntry,
    AuditLog,
    BanCommand,
    BanEntry,
    BanList,
    BansCommand,
    KickCommand,
    KillCommand,
    MuteCommand,
    UnbanCommand,
    UnmuteCommand,
)
from chatroom.protocol import Ack, ClientCommand, ServerEvent
from chatroom.rooms import (
    LOBBY,
    InviteCommand,
    JoinCommand,
    MembersCommand,
    ModeCommand,
    PartCommand,
    RoomInfo,
    RoomInfoReply,
    RoomList,
    RoomListing,
    RoomsCommand,
    TopicCommand,
    room_key,
)
from chatroom.session import ClientSession, receipt

__all__ = ["AsyncRoomMethods", "RoomMethods", "room_field"]

R = TypeVar("R", bound=ServerEvent)
Build = Callable[[ClientSession], tuple[int, bytes]]


def _build(session: ClientSession, cmd: ClientCommand) -> Build:
    """The request for ``cmd``, after checking that this connection speaks rooms."""
    if not session.rooms_on:
        why = (
            "this client was made without rooms=True"
            if not session.want_rooms
            else "the server did not turn rooms on at login (docs/PROTOCOL.md §Rooms)"
        )
        raise UsageError(f"rooms are not available: {why}")
    return lambda s: s.request(cmd)


def room_field(session: ClientSession, room: str | None) -> str | None:
    """The ``room`` of a ``pm`` or ``history``: None (lobby) stays None; another room
    needs rooms on (a version-1 server ignores the field and would deliver to lobby)."""
    if room is None or room_key(room) == LOBBY:
        return room if session.rooms_on else None
    _build(session, RoomsCommand())  # raises unless rooms are on
    return room


class RoomMethods:
    """:class:`chatroom.ChatClient`'s room commands; each blocks until its reply and
    raises :class:`~chatroom.errors.RoomError` when the server refuses (``no_such_room``,
    ``not_in_room``, ``invite_only``, ``bad_key``, ``room_full``, ``invalid_room``,
    ``not_operator``, ``too_many_rooms``)."""

    _session: ClientSession

    def _request(self, reply_type: type[R], build: Build) -> R:
        raise NotImplementedError  # the client's

    def join(self, room: str, *, key: str | None = None) -> RoomInfo:
        """Join ``room``, creating it if it does not exist (we then own it); ``key`` for a
        +k room. Returns the room: topic, modes, members."""
        cmd = JoinCommand(room=room, key=key)
        return self._request(RoomInfoReply, _build(self._session, cmd)).info

    def part(self, room: str, *, reason: str | None = None) -> Receipt:
        """Leave ``room`` (never ``lobby``)."""
        cmd = PartCommand(room=room, reason=reason)
        return receipt(self._request(Ack, _build(self._session, cmd)))

    def list_rooms(self) -> tuple[RoomListing, ...]:
        """The rooms we may see (all but the secret ones we are not in), with their
        member counts and whether we are in each."""
        return self._request(RoomList, _build(self._session, RoomsCommand())).rooms

    def room_info(self, room: str) -> RoomInfo:
        """A room as its members see it (fresh from the server)."""
        cmd = MembersCommand(room=room)
        return self._request(RoomInfoReply, _build(self._session, cmd)).info

    def members(self, room: str) -> tuple[str, ...]:
        """A room's members, online or not, sorted ignoring case."""
        return self.room_info(room).members

    def topic(self, room: str) -> str:
        """A room's topic (``""``: none)."""
        cmd = TopicCommand(room=room)
        return self._request(RoomInfoReply, _build(self._session, cmd)).info.topic

    def set_topic(self, room: str, topic: str) -> Receipt:
        """Set a room's topic (``""`` clears it); under +t, operators only."""
        cmd = TopicCommand(room=room, topic=topic)
        return receipt(self._request(Ack, _build(self._session, cmd)))

    def invite(self, room: str, user: str) -> Receipt:
        """Let ``user`` join ``room`` once past +i, +k and +l; ``receipt.to`` is their
        canonical name."""
        cmd = InviteCommand(room=room, user=user)
        return receipt(self._request(Ack, _build(self._session, cmd)), user)

    def mode(self, room: str, modes: str, *args: str) -> Receipt:
        """Change a room's modes, IRC style: ``mode("dev", "+kl-t", "s3cr3t", "10")``
        (operators only). The modes now are in :meth:`room_info`."""
        cmd = ModeCommand(room=room, modes=modes, args=args)
        return receipt(self._request(Ack, _build(self._session, cmd)))

    # Moderation (docs/PROTOCOL.md §Moderation): the room's operators, or a server
    # operator. Refusals raise RoomError (not_operator, not_in_room, ...).

    def kick(self, room: str, user: str, *, reason: str | None = None) -> Receipt:
        """Remove member ``user`` from ``room``; they may join again."""
        cmd = KickCommand(room=room, user=user, reason=reason)
        return receipt(self._request(Ack, _build(self._session, cmd)), user)

    def ban(
        self, room: str, user: str, *, reason: str | None = None, duration: int | None = None
    ) -> Receipt:
        """Keep ``user`` out of ``room`` (removing them if a member) for ``duration``
        seconds, or until :meth:`unban`."""
        cmd = BanCommand(room=room, user=user, reason=reason, duration=duration)
        return receipt(self._request(Ack, _build(self._session, cmd)), user)

    def unban(self, room: str, user: str) -> Receipt:
        """End ``user``'s ban (``receipt.seq`` None: they were not banned)."""
        cmd = UnbanCommand(room=room, user=user)
        return receipt(self._request(Ack, _build(self._session, cmd)), user)

    def ban_address(
        self, room: str, address: str, *, reason: str | None = None, duration: int | None = None
    ) -> Receipt:
        """Keep every connection from ``address`` (an IP address or CIDR network) out
        of ``room``, removing its members from there (server operators only:
        docs/PROTOCOL.md §Bans by address). ``receipt.to`` is the canonical network."""
        cmd = BanCommand(room=room, address=address, reason=reason, duration=duration)
        return receipt(self._request(Ack, _build(self._session, cmd)), address)

    def unban_address(self, room: str, address: str) -> Receipt:
        """End the ban of ``address`` (``receipt.seq`` None: it was not banned)."""
        cmd = UnbanCommand(room=room, address=address)
        return receipt(self._request(Ack, _build(self._session, cmd)), address)

    def bans(self, room: str) -> tuple[BanEntry, ...]:
        """The bans of ``room`` in force (its bans of addresses too, to a server
        operator: ``entry.address``)."""
        return self._request(BanList, _build(self._session, BansCommand(room=room))).bans

    def mute(
        self, room: str, user: str, *, reason: str | None = None, duration: int | None = None
    ) -> Receipt:
        """Keep member ``user`` from speaking in ``room`` for ``duration`` seconds, or
        until :meth:`unmute`."""
        cmd = MuteCommand(room=room, user=user, reason=reason, duration=duration)
        return receipt(self._request(Ack, _build(self._session, cmd)), user)

    def unmute(self, room: str, user: str) -> Receipt:
        """End ``user``'s mute (``receipt.seq`` None: they were not muted)."""
        cmd = UnmuteCommand(room=room, user=user)
        return receipt(self._request(Ack, _build(self._session, cmd)), user)

    def audit(self, room: str | None = None, *, limit: int = 50) -> tuple[AuditEntry, ...]:
        """The newest ``limit`` moderation records (of ``room``), newest first: for
        server operators (others: :class:`~chatroom.errors.RoomError` ``not_operator``)."""
        cmd = AuditCommand(room=room, limit=limit)
        return self._request(AuditLog, lambda s: s.request(cmd)).entries

    def kill(self, user: str, *, reason: str | None = None) -> str:
        """End ``user``'s session, on whichever node has it: for server operators
        (others: :class:`~chatroom.errors.RoomError` ``not_operator``; nobody online by
        that name: :class:`~chatroom.errors.UserOffline`). Recorded in the audit log.
        Returns the name as the server spells it."""
        cmd = KillCommand(user=user, reason=reason)
        return self._request(Ack, lambda s: s.request(cmd)).to or user


class AsyncRoomMethods:
    """:class:`chatroom.aio.AsyncChatClient`'s room commands: as :class:`RoomMethods`,
    each a coroutine."""

    _session: ClientSession

    def _request(self, reply_type: type[R], build: Build) -> Awaitable[R]:
        raise NotImplementedError  # the client's

    async def join(self, room: str, *, key: str | None = None) -> RoomInfo:
        """As :meth:`RoomMethods.join`."""
        cmd = JoinCommand(room=room, key=key)
        return (await self._request(RoomInfoReply, _build(self._session, cmd))).info

    async def part(self, room: str, *, reason: str | None = None) -> Receipt:
        """As :meth:`RoomMethods.part`."""
        cmd = PartCommand(room=room, reason=reason)
        return receipt(await self._request(Ack, _build(self._session, cmd)))

    async def list_rooms(self) -> tuple[RoomListing, ...]:
        """As :meth:`RoomMethods.list_rooms`."""
        return (await self._request(RoomList, _build(self._session, RoomsCommand()))).rooms

    async def room_info(self, room: str) -> RoomInfo:
        """As :meth:`RoomMethods.room_info`."""
        cmd = MembersCommand(room=room)
        return (await self._request(RoomInfoReply, _build(self._session, cmd))).info

    async def members(self, room: str) -> tuple[str, ...]:
        """As :meth:`RoomMethods.members`."""
        return (await self.room_info(room)).members

    async def topic(self, room: str) -> str:
        """As :meth:`RoomMethods.topic`."""
        cmd = TopicCommand(room=room)
        return (await self._request(RoomInfoReply, _build(self._session, cmd))).info.topic

    async def set_topic(self, room: str, topic: str) -> Receipt:
        """As :meth:`RoomMethods.set_topic`."""
        cmd = TopicCommand(room=room, topic=topic)
        return receipt(await self._request(Ack, _build(self._session, cmd)))

    async def invite(self, room: str, user: str) -> Receipt:
        """As :meth:`RoomMethods.invite`."""
        cmd = InviteCommand(room=room, user=user)
        return receipt(await self._request(Ack, _build(self._session, cmd)), user)

    async def mode(self, room: str, modes: str, *args: str) -> Receipt:
        """As :meth:`RoomMethods.mode`."""
        cmd = ModeCommand(room=room, modes=modes, args=args)
        return receipt(await self._request(Ack, _build(self._session, cmd)))

    async def kick(self, room: str, user: str, *, reason: str | None = None) -> Receipt:
        """As :meth:`RoomMethods.kick`."""
        cmd = KickCommand(room=room, user=user, reason=reason)
        return receipt(await self._request(Ack, _build(self._session, cmd)), user)

    async def ban(
        self, room: str, user: str, *, reason: str | None = None, duration: int | None = None
    ) -> Receipt:
        """As :meth:`RoomMethods.ban`."""
        cmd = BanCommand(room=room, user=user, reason=reason, duration=duration)
        return receipt(await self._request(Ack, _build(self._session, cmd)), user)

    async def unban(self, room: str, user: str) -> Receipt:
        """As :meth:`RoomMethods.unban`."""
        cmd = UnbanCommand(room=room, user=user)
        return receipt(await self._request(Ack, _build(self._session, cmd)), user)

    async def ban_address(
        self, room: str, address: str, *, reason: str | None = None, duration: int | None = None
    ) -> Receipt:
        """As :meth:`RoomMethods.ban_address`."""
        cmd = BanCommand(room=room, address=address, reason=reason, duration=duration)
        return receipt(await self._request(Ack, _build(self._session, cmd)), address)

    async def unban_address(self, room: str, address: str) -> Receipt:
        """As :meth:`RoomMethods.unban_address`."""
        cmd = UnbanCommand(room=room, address=address)
        return receipt(await self._request(Ack, _build(self._session, cmd)), address)

    async def bans(self, room: str) -> tuple[BanEntry, ...]:
        """As :meth:`RoomMethods.bans`."""
        return (await self._request(BanList, _build(self._session, BansCommand(room=room)))).bans

    async def mute(
        self, room: str, user: str, *, reason: str | None = None, duration: int | None = None
    ) -> Receipt:
        """As :meth:`RoomMethods.mute`."""
        cmd = MuteCommand(room=room, user=user, reason=reason, duration=duration)
        return receipt(await self._request(Ack, _build(self._session, cmd)), user)

    async def unmute(self, room: str, user: str) -> Receipt:
        """As :meth:`RoomMethods.unmute`."""
        cmd = UnmuteCommand(room=room, user=user)
        return receipt(await self._request(Ack, _build(self._session, cmd)), user)

    async def audit(self, room: str | None = None, *, limit: int = 50) -> tuple[AuditEntry, ...]:
        """As :meth:`RoomMethods.audit`."""
        cmd = AuditCommand(room=room, limit=limit)
        return (await self._request(AuditLog, lambda s: s.request(cmd))).entries

    async def kill(self, user: str, *, reason: str | None = None) -> str:
        """As :meth:`RoomMethods.kill`."""
        cmd = KillCommand(user=user, reason=reason)
        return (await self._request(Ack, lambda s: s.request(cmd))).to or user
