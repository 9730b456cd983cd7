"""chatroom: a client SDK for the chatroom protocol (docs/PROTOCOL.md, docs/SDK.md)."""

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
from chatroom.protocol import Broadcast, DirectMessage, UserList

__all__ = [
    "AuthError",
    "Broadcast",
    "ChatConnectionError",
    "ChatError",
    "ChatTimeout",
    "ConnectFailed",
    "DirectMessage",
    "Disconnected",
    "ProtocolError",
    "RateLimited",
    "ServerError",
    "UsageError",
    "UserList",
    "UserOffline",
]
