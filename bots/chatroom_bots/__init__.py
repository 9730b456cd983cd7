"""Bots on the chatroom SDK: the bot framework (docs/BOTS.md), echo, greeter, ``chat-bot``.

Everything a bot author needs is importable from here: :class:`Bot` (threaded) and
:class:`AsyncBot`, their contexts, :class:`Plugin`, the converter types, the checks,
:class:`Cooldown`, :class:`Store`, the clocks and the middleware.

They are imported on first use (PEP 562): importing a submodule, such as the pytest
plugin pytest loads at start-up, or the load generator, does not import the framework
(a test run's coverage, which starts after the plugins load, then measures it whole).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatroom_bots.aiobot import AsyncBot
    from chatroom_bots.bot import Bot
    from chatroom_bots.checks import (
        AllowList,
        CheckFailure,
        allowed,
        check,
        dm_only,
        public_only,
        room_only,
        room_operator,
        server_operator,
    )
    from chatroom_bots.clock import Clock, FakeClock
    from chatroom_bots.commands import (
        ArgumentError,
        BadArguments,
        Command,
        CommandError,
        CommandSpec,
        Group,
        ParamSpec,
    )
    from chatroom_bots.context import AsyncContext, Context, Message
    from chatroom_bots.conversations import NoAnswer
    from chatroom_bots.converters import BadArgument, Convert, OnlineUser, Range, Rest, Room
    from chatroom_bots.cooldowns import Cooldown, cooldown
    from chatroom_bots.echo import make_echo
    from chatroom_bots.greeter import make_greeter
    from chatroom_bots.middleware import Metrics, deny_list, log_commands
    from chatroom_bots.plugins import Plugin, PluginError
    from chatroom_bots.schedules import Job
    from chatroom_bots.storage import Store, StoreError

# Where each name lives, for __getattr__.
_WHERE: dict[str, str] = {
    "AllowList": "chatroom_bots.checks",
    "ArgumentError": "chatroom_bots.commands",
    "AsyncBot": "chatroom_bots.aiobot",
    "AsyncContext": "chatroom_bots.context",
    "BadArgument": "chatroom_bots.converters",
    "BadArguments": "chatroom_bots.commands",
    "Bot": "chatroom_bots.bot",
    "CheckFailure": "chatroom_bots.checks",
    "Clock": "chatroom_bots.clock",
    "Command": "chatroom_bots.commands",
    "CommandError": "chatroom_bots.commands",
    "CommandSpec": "chatroom_bots.commands",
    "Context": "chatroom_bots.context",
    "Convert": "chatroom_bots.converters",
    "Cooldown": "chatroom_bots.cooldowns",
    "FakeClock": "chatroom_bots.clock",
    "Group": "chatroom_bots.commands",
    "Job": "chatroom_bots.schedules",
    "Message": "chatroom_bots.context",
    "Metrics": "chatroom_bots.middleware",
    "NoAnswer": "chatroom_bots.conversations",
    "OnlineUser": "chatroom_bots.converters",
    "ParamSpec": "chatroom_bots.commands",
    "Plugin": "chatroom_bots.plugins",
    "PluginError": "chatroom_bots.plugins",
    "Range": "chatroom_bots.converters",
    "Rest": "chatroom_bots.converters",
    "Room": "chatroom_bots.converters",
    "Store": "chatroom_bots.storage",
    "StoreError": "chatroom_bots.storage",
    "allowed": "chatroom_bots.checks",
    "check": "chatroom_bots.checks",
    "cooldown": "chatroom_bots.cooldowns",
    "deny_list": "chatroom_bots.middleware",
    "dm_only": "chatroom_bots.checks",
    "log_commands": "chatroom_bots.middleware",
    "make_echo": "chatroom_bots.echo",
    "make_greeter": "chatroom_bots.greeter",
    "public_only": "chatroom_bots.checks",
    "room_only": "chatroom_bots.checks",
    "room_operator": "chatroom_bots.checks",
    "server_operator": "chatroom_bots.checks",
}

__all__ = [
    "AllowList",
    "ArgumentError",
    "AsyncBot",
    "AsyncContext",
    "BadArgument",
    "BadArguments",
    "Bot",
    "CheckFailure",
    "Clock",
    "Command",
    "CommandError",
    "CommandSpec",
    "Context",
    "Convert",
    "Cooldown",
    "FakeClock",
    "Group",
    "Job",
    "Message",
    "Metrics",
    "NoAnswer",
    "OnlineUser",
    "ParamSpec",
    "Plugin",
    "PluginError",
    "Range",
    "Rest",
    "Room",
    "Store",
    "StoreError",
    "allowed",
    "check",
    "cooldown",
    "deny_list",
    "dm_only",
    "log_commands",
    "make_echo",
    "make_greeter",
    "public_only",
    "room_only",
    "room_operator",
    "server_operator",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'chatroom_bots' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup finds it directly
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
