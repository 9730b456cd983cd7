"""The chatroom wire protocol, v1 and v2 (docs/PROTOCOL.md), with no I/O.

Bytes in, frames and typed messages out; typed messages in, bytes out. Sockets and threads
live in the server and in :mod:`chatroom.client`; both use this module, so the contract is
written down in code exactly once.

- :class:`FrameDecoder` splits a byte stream into frames (§Framing) and enforces the size
  limit; :func:`split_block` splits what its ``feed_block`` returns (both defined in
  :mod:`chatroom._framing`, importable from here).
- Client commands (``"command"``-tagged) and server events (``"type"``-tagged) are frozen
  msgspec Structs: one class per message, compared by value, decoded and type-checked by
  msgspec in one step.
- :func:`decode_command` / :func:`decode_event` turn one frame into one message or raise
  :class:`~chatroom.errors.ProtocolError` carrying the protocol error code to answer with.
- :func:`validate_command` applies the semantic rules that depend on configurable limits
  (§Limits): username syntax, password length, message length.
- :func:`encode` turns a message into one frame, newline included.

The frames of §Rooms (protocol version 2) are in :mod:`chatroom.rooms`; they are in
this module's unions, so :func:`decode_command` and :func:`decode_event` know them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, Union, get_args

import msgspec

from chatroom._framing import FrameDecoder, split_block
from chatroom._wire import MAX_SEQ, NAME_RE, Cid, Seq, UserTuple, _Command, _Event
from chatroom.botcommands import BotCommands, BotCommandsCommand, validate_bot_commands
from chatroom.errors import ErrorCode, ProtocolError, RequestId
from chatroom.moderation import (
    AuditCommand,
    AuditLog,
    BanList,
    KillCommand,
    ModerationCommand,
    validate_audit_command,
    validate_kill_command,
    validate_moderation_command,
)
from chatroom.rooms import (
    RoomCommand,
    RoomInfo,
    RoomServerEvent,
    check_room,
    validate_room_command,
)
from chatroom.whois import Whois, WhoisCommand, validate_whois

__all__ = [
    "COMMAND_NAMES",
    "DEFAULT_PORT",
    "EVENT_NAMES",
    "PROTOCOL_VERSION",
    "ROOMS_VERSION",
    "Ack",
    "Broadcast",
    "Bye",
    "ByeReason",
    "Cid",
    "ClientCommand",
    "DirectMessage",
    "DmCommand",
    "ErrorCode",
    "ErrorEvent",
    "ExitCommand",
    "Feature",
    "FrameDecoder",
    "History",
    "HistoryCommand",
    "HistoryMessage",
    "Limits",
    "LoginCommand",
    "LoginOk",
    "LogoutCommand",
    "PasswordRequired",
    "PingCommand",
    "PmCommand",
    "Pong",
    "ReplayDone",
    "ReplayTruncated",
    "RequestId",
    "ServerEvent",
    "ServerLimits",
    "UserList",
    "UsersCommand",
    "UsersDelta",
    "check_password",
    "decode_command",
    "decode_event",
    "encode",
    "is_valid_username",
    "split_block",
    "username_key",
    "validate_command",
]

# The version a connection without the ``rooms`` extension speaks, and the one with it
# (docs/PROTOCOL.md §Versions, §Rooms).
PROTOCOL_VERSION: Final = 1
ROOMS_VERSION: Final = 2
DEFAULT_PORT: Final = 5050


class Feature(StrEnum):
    """Protocol extensions a client may ask for at login (docs/PROTOCOL.md §Extensions)."""

    USERS_DELTA = "users_delta"
    # With users_delta: login_ok says how many users, not who (docs/PROTOCOL.md §lazy_users).
    LAZY_USERS = "lazy_users"
    ROOMS = "rooms"  # protocol version 2: many rooms (docs/PROTOCOL.md §Rooms)


class ByeReason(StrEnum):
    """Every ``reason`` a ``{"type": "bye"}`` frame may carry (docs/PROTOCOL.md §bye)."""

    EXIT = "exit"
    SERVER_SHUTDOWN = "server_shutdown"
    SESSION_REPLACED = "session_replaced"
    TIMEOUT = "timeout"  # not logged in in time, or silent for too long
    FLOOD = "flood"  # sustained flooding past the rate limit
    DISCONNECTED = "disconnected"  # an operator ended the session (chat-server admin)


# --------------------------------------------------------------------------------------
# Client commands (docs/PROTOCOL.md §Commands)


class LoginCommand(_Command, tag="login", frozen=True):
    """Without ``password``: ask whether the name is new (→ :class:`PasswordRequired`).
    With it: register a new name, or check the password of an existing one."""

    username: str
    password: str | None = None
    # Protocol extensions the client understands (docs/PROTOCOL.md §Extensions); the
    # server turns on those it knows and lists them in ``login_ok``.
    features: tuple[str, ...] = ()
    # Resume (docs/PROTOCOL.md §Resume): replay every message after seq ``since`` that
    # this user may see; ``epoch`` is the one ``login_ok`` gave with that seq.
    since: Seq | None = None
    epoch: str | None = None


class PmCommand(_Command, tag="pm", frozen=True):
    """A public message to every other member of ``room`` (absent: ``lobby``, every
    logged-in user)."""

    message: str
    cid: Cid | None = None
    room: str | None = None  # protocol v2 (docs/PROTOCOL.md §Rooms)
    notice: bool = False  # an IRC NOTICE: relayed as one, never answered (§pm)


class DmCommand(_Command, tag="dm", frozen=True):
    """A direct message to one user, ``to`` spelled in any case."""

    to: str
    message: str
    cid: Cid | None = None
    notice: bool = False  # as PmCommand.notice


class HistoryCommand(_Command, tag="history", frozen=True):
    """A page of stored messages (docs/PROTOCOL.md §history): the public room, or with
    ``with_user`` (``"with"`` on the wire) the DM conversation with that user."""

    before: Seq | None = None
    after: Seq | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 50
    with_user: str | None = msgspec.field(default=None, name="with")
    room: str | None = None  # protocol v2: a room's messages (absent: lobby)


class UsersCommand(_Command, tag="users", frozen=True):
    """Ask for the list of active users."""


class PingCommand(_Command, tag="ping", frozen=True):
    """Keepalive; answered by :class:`Pong`."""


class ExitCommand(_Command, tag="exit", frozen=True):
    """Log out and close the connection."""


class LogoutCommand(ExitCommand, tag="logout", frozen=True):
    """Alias of ``exit``."""


ClientCommand = (
    LoginCommand
    | PmCommand
    | DmCommand
    | HistoryCommand
    | UsersCommand
    | PingCommand
    | ExitCommand
    | LogoutCommand
    | RoomCommand
    | ModerationCommand
    | AuditCommand
    | KillCommand
    | BotCommandsCommand
    | WhoisCommand
)


def _tags(union: Any) -> frozenset[str]:
    """The tag (``command`` / ``type`` value) of every Struct in a union."""
    return frozenset(t.__struct_config__.tag for t in get_args(union))


COMMAND_NAMES: Final = _tags(ClientCommand)


# --------------------------------------------------------------------------------------
# Server events (docs/PROTOCOL.md §Server frames)


class PasswordRequired(_Event, tag="password_required", frozen=True):
    """Answer to a login without a password: whether ``username`` is free to register;
    for a new name, the password lengths the server accepts (docs/PROTOCOL.md §login), so
    an interactive client can refuse a bad one before asking for it again."""

    username: str
    new_user: bool
    min_password: int | None = None
    max_password: int | None = None
    id: RequestId = None


class ServerLimits(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """The limits a client must respect, as ``login_ok`` announces them
    (docs/PROTOCOL.md §login, §Limits): a client refuses a message over ``max_message``
    characters, or a frame over ``max_frame`` bytes, before it sends it."""

    max_frame: int
    max_message: int


class LoginOk(_Event, tag="login_ok", frozen=True):
    """Login succeeded; ``users`` is every active user, sorted ignoring case; ``features``
    the extensions now on for this connection (docs/PROTOCOL.md §Extensions). With
    ``lazy_users`` on, ``users`` is absent (empty here) and ``count`` says how many."""

    username: str
    new_user: bool
    users: UserTuple = ()
    # Extension lazy_users (docs/PROTOCOL.md §lazy_users): the number of names in the
    # list this connection's deltas apply to, sent instead of the names.
    count: Annotated[int, msgspec.Meta(ge=0)] | None = None
    features: tuple[str, ...] = ()
    # The protocol version the server speaks (docs/PROTOCOL.md §Versions); absent from
    # servers older than the field, which speak version 1.
    version: int | None = None
    # With the message log (docs/PROTOCOL.md §Resume): the newest seq stored when the
    # login completed, and the identity of the database that numbered it.
    seq: int | None = None
    epoch: str | None = None
    replay: bool = False  # a replay follows, ended by replay_done (§Resume, §Offline DMs)
    # The limits of this server (absent from servers older than the field).
    limits: ServerLimits | None = None
    # Protocol v2 (docs/PROTOCOL.md §Rooms): every room the user is a member of.
    rooms: tuple[RoomInfo, ...] = ()
    id: RequestId = None


class UserList(_Event, tag="users", frozen=True):
    """The active users, sorted ignoring case. A push after a login carries ``joined``,
    after a logout or drop ``left``; the periodic push and the reply to ``users`` carry
    neither."""

    users: UserTuple
    joined: str | None = None
    left: str | None = None
    id: RequestId = None


class UsersDelta(_Event, tag="users_delta", frozen=True):
    """Extension ``users_delta`` (docs/PROTOCOL.md §Extensions): who joined and who left
    since the previous list or delta this connection received (each sorted ignoring
    case), and how many users are active now. Both lists empty: the periodic push."""

    count: Annotated[int, msgspec.Meta(ge=0)]
    joined: UserTuple = ()
    left: UserTuple = ()
    room: str | None = None  # protocol v2: always lobby, whose members are all users
    # (old, new) of the names in ``left`` and ``joined`` that are one IRC guest's NICK
    # change (docs/PROTOCOL.md §users_delta): a client that ignores it sees a departure
    # and an arrival, which is what its list needs.
    renamed: tuple[tuple[str, str], ...] = ()


class Ack(_Event, tag="ack", frozen=True):
    """The server accepted a ``pm`` or ``dm``: stored it (``seq``, with the message log)
    and queued it to every recipient; ``queued``: the DM's recipient is offline and gets
    it at their next login."""

    command: str
    to: str | None = None
    seq: int | None = None
    queued: bool = False
    room: str | None = None  # protocol v2: the room of a pm or of a room command
    # A room command that changed nothing (an invite of a member, an unban of someone
    # not banned): without a seq, as a guest room's changes are too (§Guest rooms).
    unchanged: bool = False
    removed: bool = False  # a ban of a member, who is one no longer (§Moderation)
    id: RequestId = None


class Broadcast(_Event, tag="broadcast", frozen=True):
    """A public message from ``sender`` (``"from"`` on the wire)."""

    sender: Annotated[str, msgspec.Meta(min_length=1)] = msgspec.field(name="from")
    message: str
    ts: float
    seq: int | None = None  # with the message log: its place in the server's one order
    # Sent by a resume or at login (docs/PROTOCOL.md §Resume), not live; "replay" on the wire.
    replayed: bool = msgspec.field(default=False, name="replay")
    # The sender's idempotency key, on a message shown to its own sender again (a
    # replay): how a client tells its own messages from ones it has not seen.
    cid: str | None = None
    room: str | None = None  # protocol v2 (docs/PROTOCOL.md §Rooms): always present
    notice: bool = False  # sent as a notice (live only: not stored, §pm)


class DirectMessage(_Event, tag="dm", frozen=True):
    """A direct message from ``sender`` (``"from"`` on the wire) to ``to``."""

    sender: Annotated[str, msgspec.Meta(min_length=1)] = msgspec.field(name="from")
    to: str
    message: str
    ts: float
    seq: int | None = None
    replayed: bool = msgspec.field(default=False, name="replay")
    cid: str | None = None  # as Broadcast.cid
    notice: bool = False  # as Broadcast.notice


class HistoryMessage(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """One message of a ``history`` page; ``kind`` is ``pm`` or ``dm`` (then ``to``)."""

    seq: int
    kind: str
    sender: str = msgspec.field(name="from")
    to: str | None = None
    message: str
    ts: float
    room: str | None = None  # protocol v2: a public message's room


class History(_Event, tag="history", frozen=True):
    """A page of messages in ascending ``seq``; ``has_more``: another page exists in the
    direction paged (older without ``after``, newer with it)."""

    messages: tuple[HistoryMessage, ...]
    has_more: bool
    room: str | None = None  # protocol v2: the room paged (absent for DMs)
    id: RequestId = None


class ReplayTruncated(_Event, tag="replay_truncated", frozen=True):
    """The replay cannot give everything after ``since`` (pruned, over the replay limit,
    or another epoch): it starts at ``oldest_seq``, or gives nothing if that is after
    the login's ``seq``."""

    oldest_seq: int


class ReplayDone(_Event, tag="replay_done", frozen=True):
    """The replay is over: ``count`` messages, up to ``seq``; live traffic follows."""

    count: int
    seq: int


class Pong(_Event, tag="pong", frozen=True):
    """Answer to ``ping``."""

    id: RequestId = None


class Bye(_Event, tag="bye", frozen=True):
    """The server is about to close the connection, and why (:class:`ByeReason`);
    ``message`` says more, for people (a server operator's ``kill``: who, and why)."""

    reason: str
    message: str | None = None


class ErrorEvent(_Event, tag="error", frozen=True):
    """The server refused a frame; ``code`` is one of :class:`ErrorCode`."""

    code: str
    message: str
    id: RequestId = None
    # ``banned`` (docs/PROTOCOL.md §Moderation): the ban's reason, and its end (unix
    # time); absent: none given, no end.
    reason: str | None = None
    expires: float | None = None


ServerEvent = (
    PasswordRequired
    | LoginOk
    | UserList
    | UsersDelta
    | Ack
    | Broadcast
    | DirectMessage
    | History
    | ReplayTruncated
    | ReplayDone
    | Pong
    | Bye
    | ErrorEvent
    | RoomServerEvent
    | BanList
    | AuditLog
    | BotCommands
    | Whois
)
EVENT_NAMES: Final = _tags(ServerEvent)

Message = _Command | _Event

# --------------------------------------------------------------------------------------
# Decoding and encoding

_command_decoder: msgspec.json.Decoder[ClientCommand] = msgspec.json.Decoder(ClientCommand)
_event_decoder: msgspec.json.Decoder[ServerEvent] = msgspec.json.Decoder(ServerEvent)
_any_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
# msgspec reports invalid UTF-8 inside a string as UnicodeDecodeError, elsewhere as
# DecodeError; both mean bad_json.
_encoder = msgspec.json.Encoder()


def _diagnose(frame: bytes, tag: str, names: frozenset[str], exc: Exception) -> ProtocolError:
    """Explain why a frame failed the fast typed decode. Only bad frames pay for this."""
    try:
        obj = _any_decoder.decode(frame)
    except (msgspec.DecodeError, UnicodeDecodeError) as err:
        return ProtocolError(ErrorCode.BAD_JSON, f"not valid UTF-8 JSON: {err}")
    except RecursionError:
        return ProtocolError(ErrorCode.BAD_JSON, "JSON nested too deeply")
    if not isinstance(obj, dict):
        return ProtocolError(ErrorCode.BAD_JSON, "a frame must be a JSON object")
    rid = obj.get("id")
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        rid = None
    name = obj.get(tag)
    if name is None:
        return ProtocolError(ErrorCode.BAD_REQUEST, f'missing "{tag}" field', rid)
    if not isinstance(name, str):
        return ProtocolError(ErrorCode.BAD_REQUEST, f'"{tag}" must be a string', rid)
    if name not in names:
        return ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"unknown {tag} {name!r}", rid)
    return ProtocolError(ErrorCode.BAD_REQUEST, f"invalid {name!r} frame: {exc}", rid)


def decode_command(frame: bytes) -> ClientCommand:
    """Decode one client frame, or raise :class:`ProtocolError` with the code to answer."""
    try:
        return _command_decoder.decode(frame)
    except (
        msgspec.DecodeError,
        msgspec.ValidationError,
        UnicodeDecodeError,
        RecursionError,
    ) as exc:
        raise _diagnose(frame, "command", COMMAND_NAMES, exc) from exc


# ``login_ok`` without its ``users``: msgspec skips the JSON of a field a struct does not
# have without building it, and a login to a room of 10,000 spent 0.46 ms (0.12 now)
# making 10,000 strings that a client without a user list drops: a swarm's rejoin of
# 10,000, some 3.4 s of the generator's CPU.
_LoginOkBrief = msgspec.defstruct(
    "_LoginOkBrief",
    [
        (f.name, f.type) if f.required else (f.name, f.type, f.default)
        for f in msgspec.structs.fields(LoginOk)
        if f.name != "users"
    ],
    bases=(_Event,),
    tag="login_ok",
    frozen=True,
)
_brief_event_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    Union[(_LoginOkBrief, *(t for t in get_args(ServerEvent) if t is not LoginOk))]
)


def decode_event(frame: bytes, users: bool = True) -> ServerEvent:
    """Decode one server frame, or raise :class:`ProtocolError` (``unknown_command`` for a
    ``type`` this version does not know, which a client may choose to ignore).
    ``users=False``: a ``login_ok`` comes with ``users=()`` (for a client that keeps no
    user list; the reply to a ``users`` request keeps its list)."""
    try:
        if users:
            return _event_decoder.decode(frame)
        event = _brief_event_decoder.decode(frame)
        if type(event) is _LoginOkBrief:
            return LoginOk(users=(), **msgspec.structs.asdict(event))
        return event  # type: ignore[no-any-return]
    except (
        msgspec.DecodeError,
        msgspec.ValidationError,
        UnicodeDecodeError,
        RecursionError,
    ) as exc:
        raise _diagnose(frame, "type", EVENT_NAMES, exc) from exc


def encode(message: Message) -> bytes:
    """One frame: the message as compact JSON plus ``\\n``."""
    return _encoder.encode(message) + b"\n"


# --------------------------------------------------------------------------------------
# Validation (docs/PROTOCOL.md §Names and passwords, §Limits)


def is_valid_username(name: str) -> bool:
    """1-32 of ``[A-Za-z0-9_-]``, starting with a letter or digit."""
    return NAME_RE.fullmatch(name) is not None


def username_key(name: str) -> str:
    """The case-insensitive identity of a username (names are ASCII, so ``lower()``)."""
    return name.lower()


@dataclass(frozen=True, slots=True)
class Limits:
    """The configurable limits of docs/PROTOCOL.md §Limits."""

    max_frame: int = 64 * 1024
    max_message: int = 4000
    min_password: int = 8
    max_password: int = 1024


def check_password(password: str, limits: Limits, request_id: RequestId = None) -> None:
    """Raise ``weak_password`` unless a new account's password has an allowed length."""
    if not limits.min_password <= len(password) <= limits.max_password:
        raise ProtocolError(
            ErrorCode.WEAK_PASSWORD,
            f"password must be {limits.min_password} to {limits.max_password} characters",
            request_id,
        )


def _check_seq(seq: int | None, request_id: RequestId) -> None:
    """A decoded command's seqs were checked by msgspec (:data:`Seq`); one built in the
    server was not."""
    if seq is not None and not 0 <= seq <= MAX_SEQ:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"a seq is an integer from 0 to {MAX_SEQ}", request_id
        )


def validate_command(cmd: ClientCommand, limits: Limits) -> None:
    """Apply the rules msgspec's types cannot express; raise :class:`ProtocolError`."""
    if isinstance(cmd, PmCommand | DmCommand):
        if isinstance(cmd, PmCommand) and cmd.room is not None:
            check_room(cmd.room, cmd.id)
        n = len(cmd.message)
        if n == 0 or cmd.message.isspace():
            raise ProtocolError(ErrorCode.BAD_REQUEST, "message is empty", cmd.id)
        if n > limits.max_message:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"message is {n} characters; the limit is {limits.max_message}",
                cmd.id,
            )
    elif isinstance(cmd, HistoryCommand):
        if cmd.room is not None:
            if cmd.with_user is not None:
                why = "room and with exclude each other"
                raise ProtocolError(ErrorCode.BAD_REQUEST, why, cmd.id)
            check_room(cmd.room, cmd.id)
        for cursor in (cmd.before, cmd.after):
            _check_seq(cursor, cmd.id)
        if cmd.with_user is not None and not is_valid_username(cmd.with_user):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"no user can be named {cmd.with_user!r}", cmd.id
            )
        if cmd.before is not None and cmd.after is not None and cmd.after >= cmd.before:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "after must be less than before", cmd.id)
    elif isinstance(cmd, RoomCommand):
        validate_room_command(cmd)
    elif isinstance(cmd, ModerationCommand):
        validate_moderation_command(cmd)
    elif isinstance(cmd, AuditCommand):
        validate_audit_command(cmd)
    elif isinstance(cmd, KillCommand):
        validate_kill_command(cmd)
    elif isinstance(cmd, BotCommandsCommand):
        validate_bot_commands(cmd)
    elif isinstance(cmd, WhoisCommand):
        validate_whois(cmd)
    elif isinstance(cmd, LoginCommand):
        _check_seq(cmd.since, cmd.id)
        if not is_valid_username(cmd.username):
            raise ProtocolError(
                ErrorCode.INVALID_USERNAME,
                "a username is 1-32 characters of A-Z a-z 0-9 _ -, starting with a letter or digit",
                cmd.id,
            )
        if cmd.password is not None and len(cmd.password) > limits.max_password:
            raise ProtocolError(
                ErrorCode.WEAK_PASSWORD,
                f"password must be at most {limits.max_password} characters",
                cmd.id,
            )
