"""The chatroom server: ``chat-server`` or ``python -m chatroom_server``."""

from chatroom_server.accounts import AccountStore, AccountStoreError
from chatroom_server.server import ChatServer, ConfigError, ServerConfig

__all__ = ["AccountStore", "AccountStoreError", "ChatServer", "ConfigError", "ServerConfig"]
