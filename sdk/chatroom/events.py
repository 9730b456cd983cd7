"""The events a client hands to hooks and to ``wait_for``.

The message events are the wire types themselves (:class:`Broadcast`,
:class:`DirectMessage`, from :mod:`chatroom.protocol`): frozen msgspec Structs. The rest
are frozen dataclasses that the client session (:mod:`chatroom.session`) makes out of
what the server said (:class:`DmSent` is a ``dm`` frame the user sent). All compare by
value and are safe to keep.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatroom.errors import ServerError
from chatroom.protocol import Broadcast, DirectMessage, HistoryMessage
from chatroom.rooms import RoomEvent

__all__ = [
    "Broadcast",
    "DirectMessage",
    "Disconnect",
    "DmSent",
    "HistoryMessage",
    "HistoryPage",
    "HookError",
    "LoginResult",
    "Receipt",
    "Reconnected",
    "RoomEvent",
    "ServerNotice",
    "UsersChanged",
]


@dataclass(frozen=True, slots=True)
class LoginResult:
    """What ``login`` returns: the canonical name, whether the account was just
    registered, and the active users (sorted ignoring case). With a server that keeps a
    message log: ``seq``, the newest message stored at login; ``replayed``, how many
    messages it sent that we had missed (a resume, or DMs sent while we were away), all
    dispatched to the hooks before ``login`` returns; ``replay_truncated``, whether some
    were too old or too many to replay (page back with ``history``)."""

    username: str
    new_user: bool
    users: tuple[str, ...]
    seq: int | None = None
    replayed: int = 0
    replay_truncated: bool = False


@dataclass(frozen=True, slots=True)
class Receipt:
    """What ``pm`` and ``dm`` return once acknowledged: ``to``, the DM recipient's
    canonical name (None for a public message); ``seq``, the message's place in the
    server's order (None without a message log); ``queued``, the recipient is offline and
    gets it at their next login."""

    to: str | None
    seq: int | None = None
    queued: bool = False


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of stored messages, ascending by ``seq``; ``has_more``: another page exists
    in the direction paged."""

    messages: tuple[HistoryMessage, ...]
    has_more: bool


@dataclass(frozen=True, slots=True)
class DmSent:
    """A direct message this user sent, as the server passed it back: replayed after a
    reconnect or a restart (sent before it, by this program or another session of the
    same user), or a DM to oneself. Never a :class:`DirectMessage`, so an ``on_dm`` hook
    that answers ``event.sender`` never answers itself. A DM this session sent and had
    acknowledged is not passed back at all (``dm()`` returned its receipt).

    ``sender`` is the user's own canonical name, ``to`` the recipient's; ``replayed``
    says it came in a replay (docs/PROTOCOL.md §Resume), not live."""

    sender: str
    to: str
    message: str
    ts: float
    seq: int | None = None
    replayed: bool = False

    @classmethod
    def of(cls, dm: DirectMessage) -> DmSent:
        return cls(dm.sender, dm.to, dm.message, dm.ts, dm.seq, dm.replayed)


@dataclass(frozen=True, slots=True)
class Disconnect:
    """The connection ended. ``reason``: ``exit`` (we logged out), ``server_shutdown``,
    ``session_replaced`` (we logged in elsewhere), ``closed`` (closed before login or
    without a goodbye), ``network`` (dropped, keepalive expired, or the server broke the
    protocol: see ``error``), or the code of the error that refused the automatic
    re-login after a reconnect (``unavailable``, ``rate_limited``: tried again after the
    backoff; ``bad_credentials``, ``banned``: never). ``will_reconnect`` says whether the client is
    retrying.

    Not to be confused with :class:`~chatroom.errors.ConnectionLost`, the exception a
    request raises when the connection goes away under it."""

    reason: str
    error: Exception | None = None
    will_reconnect: bool = False


@dataclass(frozen=True, slots=True)
class UsersChanged:
    """The user list changed (or the periodic push confirmed it): ``users`` is the whole
    list now, sorted ignoring case; ``joined`` and ``left`` name who came and went since
    the previous one (both empty for the periodic push or a full refresh)."""

    users: tuple[str, ...]
    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reconnected:
    """The client reconnected and logged in again; ``result.users`` is the fresh list.
    Emitted after the messages missed meanwhile were replayed to the hooks: ``replayed``
    says how many, ``replay_truncated`` whether some could not be (too old, too many)."""

    result: LoginResult

    @property
    def replayed(self) -> int:
        return self.result.replayed

    @property
    def replay_truncated(self) -> bool:
        return self.result.replay_truncated


@dataclass(frozen=True, slots=True)
class ServerNotice:
    """A server error that answers no waiting request; ``error`` is the typed exception
    (e.g. :class:`~chatroom.errors.RateLimited`) it would have raised."""

    error: ServerError


@dataclass(frozen=True, slots=True)
class HookError:
    """A hook raised; passed to ``on_error`` hooks (the default logs it)."""

    hook: str
    event: object
    error: Exception


# Which hook (``on_<kind>``) receives which event: the same for every client.
HOOK_KINDS: tuple[str, ...] = (
    "broadcast",
    "dm",
    "dm_sent",
    "users",
    "room_event",
    "disconnect",
    "reconnect",
    "notice",
    "error",
)
KIND_OF: dict[type, str] = {
    Broadcast: "broadcast",
    DirectMessage: "dm",
    DmSent: "dm_sent",
    UsersChanged: "users",
    RoomEvent: "room_event",
    Disconnect: "disconnect",
    Reconnected: "reconnect",
    HookError: "error",
    ServerNotice: "notice",
}
