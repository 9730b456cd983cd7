"""Moderation on the wire (docs/PROTOCOL.md §Moderation, protocol version 2), with no
I/O: the commands of a room's operators (``kick``, ``ban``, ``unban``, ``bans``,
``mute``, ``unmute``), the server operators' (``audit``, ``kill``), the replies, and
the rules of their fields that msgspec's types cannot express. The events they cause
are ``room_event``s (:class:`chatroom.rooms.RoomEvent`, kinds in
:class:`chatroom.rooms.RoomEventKind`).
"""

from __future__ import annotations

from typing import Final

import msgspec

from chatroom._wire import NAME_RE, _Command, _Event
from chatroom.errors import ErrorCode, ProtocolError, RequestId
from chatroom.rooms import MAX_REASON, check_room

__all__ = [
    "MAX_ADDRESS",
    "MAX_AUDIT",
    "MAX_DURATION",
    "AuditCommand",
    "AuditEntry",
    "AuditLog",
    "BanCommand",
    "BanEntry",
    "BanList",
    "BansCommand",
    "KickCommand",
    "KillCommand",
    "ModerationCommand",
    "MuteCommand",
    "UnbanCommand",
    "UnmuteCommand",
    "validate_audit_command",
    "validate_kill_command",
    "validate_moderation_command",
]

# The longest ban or mute with an end, in seconds (a year); without ``duration``: none.
MAX_DURATION: Final = 365 * 24 * 3600
# The longest ``address`` a ban may give (an IPv6 network is at most 43 characters).
MAX_ADDRESS: Final = 64


class KickCommand(_Command, tag="kick", frozen=True):
    """Remove ``user`` from ``room`` (operators); answered with an ``ack``."""

    room: str
    user: str
    reason: str | None = None


class BanCommand(_Command, tag="ban", frozen=True):
    """Keep ``user`` out of ``room`` (removing them if a member) for ``duration``
    seconds (absent: until unbanned); answered with an ``ack``. Or, for server
    operators, every connection from ``address`` (an IP address or CIDR network, given
    instead of ``user``: docs/PROTOCOL.md §Bans by address)."""

    room: str
    user: str = ""
    reason: str | None = None
    duration: int | None = None
    address: str | None = None


class UnbanCommand(_Command, tag="unban", frozen=True):
    """End ``user``'s (or ``address``'s) ban from ``room``; answered with an ``ack``."""

    room: str
    user: str = ""
    address: str | None = None


class BansCommand(_Command, tag="bans", frozen=True):
    """The bans of ``room`` in force; answered with :class:`BanList`."""

    room: str


class MuteCommand(_Command, tag="mute", frozen=True):
    """Keep member ``user`` from speaking in ``room`` for ``duration`` seconds (absent:
    until unmuted); answered with an ``ack``."""

    room: str
    user: str
    reason: str | None = None
    duration: int | None = None


class UnmuteCommand(_Command, tag="unmute", frozen=True):
    """End ``user``'s mute in ``room``; answered with an ``ack``."""

    room: str
    user: str


ModerationCommand = (
    KickCommand | BanCommand | UnbanCommand | BansCommand | MuteCommand | UnmuteCommand
)


class KillCommand(_Command, tag="kill", frozen=True):
    """End ``user``'s session, on whichever node of a cluster has it (server operators,
    any protocol version); answered with an ``ack`` (``command`` ``kill``, ``to``)."""

    user: str
    reason: str | None = None


MAX_AUDIT: Final = 500  # records in one ``audit`` reply


class AuditCommand(_Command, tag="audit", frozen=True):
    """The newest ``limit`` moderation records (of ``room``), for server operators;
    answered with :class:`AuditLog`."""

    room: str | None = None
    limit: int = 50


class AuditEntry(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """One moderation action: ``by`` did ``action`` (``kick``, ``ban``, ``mode``,
    ``grant``, ``server-ban``...) to ``user`` in ``room`` at ``ts``, for ``reason``;
    ``detail`` the rest (a mode string and args, a ban's end); ``seq`` its room event."""

    ts: float
    by: str
    action: str
    user: str | None = None
    room: str | None = None
    reason: str | None = None
    detail: dict[str, object] = msgspec.field(default_factory=dict)
    seq: int | None = None


class AuditLog(_Event, tag="audit", frozen=True):
    """The reply to ``audit``: newest first."""

    entries: tuple[AuditEntry, ...] = ()
    id: RequestId = None


class BanEntry(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """One ban in force: ``user`` (or, listed to server operators only, the network
    ``address``: ``user`` is then empty, absent on the wire) banned ``by`` an operator
    at ``ts``, until ``expires`` (unix time; absent: until unbanned)."""

    user: str = ""  # first, as before address bans: the wire's order is unchanged
    by: str
    ts: float
    reason: str | None = None
    expires: float | None = None
    address: str | None = None


class BanList(_Event, tag="bans", frozen=True):
    """The reply to ``bans``: the room's bans in force, sorted ignoring case."""

    room: str
    bans: tuple[BanEntry, ...] = ()
    id: RequestId = None


def validate_audit_command(cmd: AuditCommand) -> None:
    if cmd.room is not None:
        check_room(cmd.room, cmd.id)
    if isinstance(cmd.limit, bool) or not 1 <= cmd.limit <= MAX_AUDIT:
        why = f"limit is from 1 to {MAX_AUDIT}"
        raise ProtocolError(ErrorCode.BAD_REQUEST, why, cmd.id)


def validate_kill_command(cmd: KillCommand) -> None:
    if not cmd.user:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "kill needs a user", cmd.id)
    if NAME_RE.fullmatch(cmd.user) is None:
        why = f"no user can be named {cmd.user[:40]!r}"
        raise ProtocolError(ErrorCode.BAD_REQUEST, why, cmd.id)
    _check_reason(cmd.reason, cmd.id)


def validate_moderation_command(cmd: ModerationCommand) -> None:
    """Raise :class:`~chatroom.errors.ProtocolError` (``invalid_room``, ``bad_request``)
    for a field the types allow and the rules do not."""
    check_room(cmd.room, cmd.id)
    if isinstance(cmd, BansCommand):
        return
    if isinstance(cmd, BanCommand | UnbanCommand) and cmd.address is not None:
        # The address's form is checked, and made canonical, by the server (it alone
        # knows the narrowest network a ban may name).
        if cmd.user:
            why = "a ban names a user or an address, not both"
            raise ProtocolError(ErrorCode.BAD_REQUEST, why, cmd.id)
        if not 1 <= len(cmd.address) <= MAX_ADDRESS or not cmd.address.isprintable():
            why = f"an address is an IP address or CIDR network, up to {MAX_ADDRESS} characters"
            raise ProtocolError(ErrorCode.BAD_REQUEST, why, cmd.id)
    elif not cmd.user:
        # A ban or unban may name an address instead (docs/PROTOCOL.md §Bans by address),
        # so "no user can be named ''" would hide what is missing.
        what = "a user or an address" if isinstance(cmd, BanCommand | UnbanCommand) else "a user"
        why = f"{type(cmd).__struct_config__.tag} needs {what}"
        raise ProtocolError(ErrorCode.BAD_REQUEST, why, cmd.id)
    elif NAME_RE.fullmatch(cmd.user) is None:
        why = f"no user can be named {cmd.user[:40]!r}"
        raise ProtocolError(ErrorCode.BAD_REQUEST, why, cmd.id)
    if isinstance(cmd, KickCommand | BanCommand | MuteCommand):
        _check_reason(cmd.reason, cmd.id)
    if isinstance(cmd, BanCommand | MuteCommand) and cmd.duration is not None:
        d = cmd.duration
        if isinstance(d, bool) or not 1 <= d <= MAX_DURATION:
            why = f"a duration is a whole number of seconds from 1 to {MAX_DURATION}"
            raise ProtocolError(ErrorCode.BAD_REQUEST, why, cmd.id)


def _check_reason(reason: str | None, rid: RequestId) -> None:
    if reason is None:
        return
    if len(reason) > MAX_REASON:
        why = f"a reason is {len(reason)} characters; the limit is {MAX_REASON}"
        raise ProtocolError(ErrorCode.BAD_REQUEST, why, rid)
    if not reason.isprintable():
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a reason is one line of text", rid)
