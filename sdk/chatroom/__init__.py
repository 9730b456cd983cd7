"""chatroom: a client SDK for the chatroom protocol (docs/PROTOCOL.md, docs/SDK.md).

Everything a bot author needs is importable from here; other modules are private except
:mod:`chatroom.protocol` (the wire format) and :mod:`chatroom.testing` (a test server).
"""

from chatroom.client import (
    ChatClient,
    Disconnect,
    HookError,
    LoginResult,
    Reconnected,
    ServerNotice,
    UsersChanged,
    Waiter,
)
from chatroom.errors import (
    AuthError,
    ChatConnectionError,
    ChatError,
    ChatTimeout,
    ConnectFailed,
    Disconnected,
    ProtocolError,
    RateLimited,
    ServerError,
    UsageError,
    UserOffline,
)
from chatroom.protocol import Broadcast, DirectMessage

__all__ = [
    "AuthError",
    "Broadcast",
    "ChatClient",
    "ChatConnectionError",
    "ChatError",
    "ChatTimeout",
    "ConnectFailed",
    "DirectMessage",
    "Disconnect",
    "Disconnected",
    "HookError",
    "LoginResult",
    "ProtocolError",
    "RateLimited",
    "Reconnected",
    "ServerError",
    "ServerNotice",
    "UsageError",
    "UserOffline",
    "UsersChanged",
    "Waiter",
]
