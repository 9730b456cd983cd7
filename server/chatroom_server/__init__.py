"""The chatroom server: ``chat-server`` or ``python -m chatroom_server``.

It needs the 'server' extra (argon2-cffi, for passwords): ``pip install
'chatroom[server]'``. Importing this package does not: the names below are imported on
first use, after the check that says which extra is missing
(:func:`chatroom.extras.lazy_exports`), so that ``chat-server``
(:mod:`chatroom_server.__main__`) says it in one line instead of a traceback, and
:mod:`chatroom.testing` tells a bot author what to install.
"""

from typing import TYPE_CHECKING

from chatroom.extras import lazy_exports

if TYPE_CHECKING:
    from chatroom_server.accounts import AccountStore, AccountStoreError
    from chatroom_server.config import ConfigError, ServerConfig
    from chatroom_server.server import ChatServer

__all__ = ["AccountStore", "AccountStoreError", "ChatServer", "ConfigError", "ServerConfig"]

__getattr__ = lazy_exports(
    __name__,
    "server",
    {
        **dict.fromkeys(("AccountStore", "AccountStoreError"), f"{__name__}.accounts"),
        **dict.fromkeys(("ConfigError", "ServerConfig"), f"{__name__}.config"),
        "ChatServer": f"{__name__}.server",
    },
)
