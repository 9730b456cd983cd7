"""Every exception chatroom raises, as one small tree.

::

    ChatError                      base of everything below
    ├── UsageError                 you misused the API (not connected, not logged in, bad argument)
    ├── ChatConnectionError        the network failed (also a builtin ConnectionError)
    │   ├── ConnectFailed          could not open the TCP (or TLS) connection
    │   └── ConnectionLost         the connection went away under a request; ``reason`` says why
    ├── ChatTimeout                a blocking call ran out of time (also a builtin TimeoutError)
    ├── ProtocolError              the peer sent something that breaks docs/PROTOCOL.md
    │   └── FrameTooLarge          a frame over the size limit (code ``too_large``)
    └── ServerError                the server refused a request; ``code`` is its error code
        ├── AuthError              ``bad_credentials``, ``weak_password``, ``invalid_username``
        ├── UserOffline            ``user_offline``, ``unknown_user``
        ├── RateLimited            ``rate_limited``
        ├── RoomError              a room refused: ``no_such_room``, ``not_in_room``, ...
        │   └── Banned             ``banned``: by a room or the server; its ``reason``, ``expires``
        └── MessageTooLong         over the server's limits (refused before sending), ``too_large``

"You misused it" (:class:`UsageError`) is split from "the peer misbehaved"
(:class:`ProtocolError`), and both from "the server said no" (:class:`ServerError`).
:func:`error_for_code` maps every error code of docs/PROTOCOL.md §Errors to one class.

The server uses :class:`ProtocolError` too: there the peer is the client, and ``code`` and
``request_id`` say what to answer.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AuthError",
    "Banned",
    "ChatConnectionError",
    "ChatError",
    "ChatTimeout",
    "ConnectFailed",
    "ConnectionLost",
    "ErrorCode",
    "FrameTooLarge",
    "MessageTooLong",
    "ProtocolError",
    "RateLimited",
    "RequestId",
    "RoomError",
    "ServerError",
    "UsageError",
    "UserOffline",
    "error_for_code",
]

RequestId = str | int | None  # a request's ``id`` (docs/PROTOCOL.md §Frames)


class ErrorCode(StrEnum):
    """Every ``code`` an ``{"type": "error"}`` frame may carry (docs/PROTOCOL.md §Errors)."""

    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_COMMAND = "unknown_command"
    TOO_LARGE = "too_large"
    NOT_LOGGED_IN = "not_logged_in"
    ALREADY_LOGGED_IN = "already_logged_in"
    INVALID_USERNAME = "invalid_username"
    WEAK_PASSWORD = "weak_password"
    BAD_CREDENTIALS = "bad_credentials"
    UNKNOWN_USER = "unknown_user"
    USER_OFFLINE = "user_offline"
    RATE_LIMITED = "rate_limited"
    SERVER_FULL = "server_full"
    UNAVAILABLE = "unavailable"  # storage failed; nothing was stored or delivered
    CID_CONFLICT = "cid_conflict"  # the sender's cid was used for another message
    # Rooms (docs/PROTOCOL.md §Rooms, protocol version 2)
    NO_SUCH_ROOM = "no_such_room"
    NOT_IN_ROOM = "not_in_room"
    INVITE_ONLY = "invite_only"
    BAD_KEY = "bad_key"
    ROOM_FULL = "room_full"
    INVALID_ROOM = "invalid_room"
    NOT_OPERATOR = "not_operator"
    TOO_MANY_ROOMS = "too_many_rooms"
    BANNED = "banned"  # §Moderation
    MUTED = "muted"
    GUEST_NOT_ALLOWED = "guest_not_allowed"  # §Guest rooms: a guest joins guest rooms only
    REGISTRATION_CLOSED = "registration_closed"


class ChatError(Exception):
    """Base of every chatroom exception."""


class UsageError(ChatError):
    """The API was used wrongly: e.g. ``pm()`` before ``login()``, or after ``close()``."""


class ChatConnectionError(ChatError, ConnectionError):
    """The network connection failed or is gone."""


class ConnectFailed(ChatConnectionError):
    """The TCP (or TLS) connection could not be opened."""


class ConnectionLost(ChatConnectionError):
    """The connection closed under a request, or is down (reconnecting); ``reason`` is
    ``exit``, ``server_shutdown``, ``session_replaced``, ``closed`` (by us) or ``network``
    (anything else). The event hooks receive is :class:`~chatroom.events.Disconnect`."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or f"disconnected: {reason}")
        self.reason = reason


class ChatTimeout(ChatError, TimeoutError):
    """A blocking call did not complete within its timeout."""


class ProtocolError(ChatError):
    """The peer sent something that docs/PROTOCOL.md does not allow.

    ``code`` is the protocol error code that describes it (``bad_json``, ``bad_request``,
    ``unknown_command``, ``too_large``, ...); ``request_id`` is the ``id`` of the frame
    that caused it, when it had a readable one.
    """

    def __init__(self, code: str, message: str, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class FrameTooLarge(ProtocolError):
    """A frame exceeded the size limit; the connection cannot be resynchronised."""

    def __init__(self, limit: int) -> None:
        super().__init__(ErrorCode.TOO_LARGE, f"frame exceeds {limit} bytes")
        self.limit = limit


class ServerError(ChatError):
    """The server answered a request with ``{"type": "error"}``.

    ``code`` is the error code, ``message`` the server's human text, ``request_id`` the
    request it answers.
    """

    def __init__(self, code: str, message: str, request_id: RequestId = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


class AuthError(ServerError):
    """Login refused: ``bad_credentials``, ``weak_password`` or ``invalid_username``."""


class UserOffline(ServerError):
    """A direct message's recipient is not online (``user_offline``) or does not exist
    (``unknown_user``)."""


class RateLimited(ServerError):
    """The server's flood control refused the request (``rate_limited``)."""


class RoomError(ServerError):
    """A room command or a message to a room was refused (docs/PROTOCOL.md §Rooms):
    ``no_such_room``, ``not_in_room``, ``invite_only``, ``bad_key``, ``room_full``,
    ``invalid_room``, ``not_operator`` or ``too_many_rooms``."""


class Banned(RoomError):
    """``banned`` (docs/PROTOCOL.md §Moderation): a room's ban refused a ``join``, or a
    server ban refused a login or ended the session. ``message`` says it all to a
    person; ``reason`` and ``expires`` (unix time; None: no end) are the ban's, when
    the server said them. A ``RoomError``, as a room's refusal always was."""

    def __init__(
        self,
        code: str,
        message: str,
        request_id: RequestId = None,
        *,
        reason: str | None = None,
        expires: float | None = None,
    ) -> None:
        super().__init__(code, message, request_id)
        self.reason = reason
        self.expires = expires


class MessageTooLong(ServerError):
    """A message over the server's limits (docs/PROTOCOL.md §Limits): longer than
    ``max_message`` characters (code ``bad_request``, what the server would answer), or a
    frame over ``max_frame`` bytes (code ``too_large``). The client refuses it before
    sending, from the limits ``login_ok`` announced; ``length`` and ``limit`` say by how
    much (None when the server refused it itself, with ``too_large``). A ``ServerError``,
    so code that handled the server's refusal handles this one the same way."""

    def __init__(
        self,
        code: str,
        message: str,
        request_id: RequestId = None,
        *,
        length: int | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(code, message, request_id)
        self.length = length
        self.limit = limit


_BY_CODE: dict[str, type[ServerError]] = {
    ErrorCode.BAD_CREDENTIALS: AuthError,
    ErrorCode.WEAK_PASSWORD: AuthError,
    ErrorCode.INVALID_USERNAME: AuthError,
    ErrorCode.REGISTRATION_CLOSED: AuthError,
    ErrorCode.USER_OFFLINE: UserOffline,
    ErrorCode.UNKNOWN_USER: UserOffline,
    ErrorCode.RATE_LIMITED: RateLimited,
    ErrorCode.TOO_LARGE: MessageTooLong,
    ErrorCode.BANNED: Banned,
    **{
        code: RoomError
        for code in (
            ErrorCode.NO_SUCH_ROOM,
            ErrorCode.NOT_IN_ROOM,
            ErrorCode.INVITE_ONLY,
            ErrorCode.BAD_KEY,
            ErrorCode.ROOM_FULL,
            ErrorCode.INVALID_ROOM,
            ErrorCode.NOT_OPERATOR,
            ErrorCode.TOO_MANY_ROOMS,
            ErrorCode.MUTED,
            ErrorCode.GUEST_NOT_ALLOWED,
        )
    },
}


def error_for_code(
    code: str,
    message: str,
    request_id: RequestId = None,
    *,
    reason: str | None = None,
    expires: float | None = None,
) -> ServerError:
    """Build the exception for a server error frame; unknown codes give :class:`ServerError`.
    ``reason`` and ``expires``: a ban's (:class:`Banned`)."""
    if code == ErrorCode.BANNED:  # the one class with more to say
        return Banned(code, message, request_id, reason=reason, expires=expires)
    return _BY_CODE.get(code, ServerError)(code, message, request_id)
