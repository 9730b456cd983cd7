"""chatroom: a client SDK for the chatroom protocol (docs/PROTOCOL.md, docs/SDK.md).

Everything a bot author needs is importable from here. The other public modules:
:mod:`chatroom.aio` (the asyncio client), :mod:`chatroom.protocol` (the wire format),
:mod:`chatroom.session` (the protocol's client side, with no I/O),
:mod:`chatroom.rooms` (the frames of rooms, protocol version 2, and their rules),
:mod:`chatroom.testing` (a test server), :mod:`chatroom.hosts` (server address lists),
:mod:`chatroom.tls` (non-blocking TLS calls, shared with the server),
:mod:`chatroom.extras` (the optional dependencies, for the other packages' console
scripts). Modules whose name starts with ``_`` are private to this package
(tests/test_layers.py checks it).
"""

from importlib.metadata import PackageNotFoundError, version

from chatroom.client import ChatClient, Waiter
from chatroom.errors import (
    AuthError,
    Banned,
    ChatConnectionError,
    ChatError,
    ChatTimeout,
    ConnectFailed,
    ConnectionLost,
    ErrorCode,
    MessageTooLong,
    ProtocolError,
    RateLimited,
    RoomError,
    ServerError,
    UsageError,
    UserOffline,
)
from chatroom.events import (
    Broadcast,
    DirectMessage,
    Disconnect,
    DmSent,
    HistoryMessage,
    HistoryPage,
    HookError,
    LoginResult,
    Receipt,
    Reconnected,
    RoomEvent,
    ServerNotice,
    UsersChanged,
)
from chatroom.rooms import RoomInfo, RoomListing

try:
    # One source of truth: the version in pyproject.toml, as installed.
    __version__ = version("chatroom")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AuthError",
    "Banned",
    "Broadcast",
    "ChatClient",
    "ChatConnectionError",
    "ChatError",
    "ChatTimeout",
    "ConnectFailed",
    "ConnectionLost",
    "DirectMessage",
    "Disconnect",
    "DmSent",
    "ErrorCode",
    "HistoryMessage",
    "HistoryPage",
    "HookError",
    "LoginResult",
    "MessageTooLong",
    "ProtocolError",
    "RateLimited",
    "Receipt",
    "Reconnected",
    "RoomError",
    "RoomEvent",
    "RoomInfo",
    "RoomListing",
    "ServerError",
    "ServerNotice",
    "UsageError",
    "UserOffline",
    "UsersChanged",
    "Waiter",
    "__version__",
]
