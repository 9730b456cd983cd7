"""What a :class:`chatroom.session.ClientSession` says happened, besides the user-facing
events of :mod:`chatroom.events` it passes on: a reply to a request, a refusal, a change
of the user list, the end of the session on a connection, a malformed frame. Public as
``chatroom.session``'s names (defined here so that the session's helpers can name them
without importing the session)."""

from __future__ import annotations

from dataclasses import dataclass

from chatroom.errors import ProtocolError, ServerError
from chatroom.events import DmSent, LoginResult, Reconnected, ServerNotice
from chatroom.protocol import Broadcast, DirectMessage, ServerEvent
from chatroom.rooms import RoomEvent

__all__ = ["BadFrame", "Ended", "Refused", "Reply", "SessionEvent", "UsersUpdated"]


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to request ``rid``; ``event`` is the server frame. For a login,
    ``result`` is what it achieved, its replay included (the reply comes after it)."""

    rid: int
    event: ServerEvent
    result: LoginResult | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The server answered request ``rid`` with an error."""

    rid: int
    error: ServerError


@dataclass(frozen=True, slots=True)
class UsersUpdated:
    """The user list changed; :attr:`ClientSession.users` is the new whole list."""

    joined: tuple[str, ...]
    left: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ended:
    """The session is over on this connection (``bye``, ``server_full``, or a re-login
    the server refused: its error code); ``reason`` becomes the
    :class:`~chatroom.events.Disconnect` reason. The caller closes the connection.
    ``error``: the server's words when it banned us (the Disconnect's ``error``)."""

    reason: str
    error: ServerError | None = None


@dataclass(frozen=True, slots=True)
class BadFrame:
    """The server sent a frame that breaks the protocol; it was skipped."""

    frame: bytes
    error: ProtocolError


SessionEvent = (
    Reply
    | Refused
    | UsersUpdated
    | Ended
    | BadFrame
    | Broadcast
    | DirectMessage
    | DmSent
    | RoomEvent
    | Reconnected
    | ServerNotice
)
