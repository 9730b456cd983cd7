"""Bots on the chatroom SDK: the bot framework (docs/BOTS.md), echo, greeter, ``chat-bot``.

Everything a bot author needs is importable from here: :class:`Bot` (threaded) and
:class:`AsyncBot`, their contexts, :class:`Plugin`, the converter types, the checks,
:class:`Cooldown`, :class:`Store`, the clocks and the middleware.
"""

from chatroom_bots.aiobot import AsyncBot
from chatroom_bots.bot import Bot
from chatroom_bots.checks import AllowList, CheckFailure, allowed, check, dm_only, public_only
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
from chatroom_bots.converters import BadArgument, Convert, OnlineUser, Range, Rest
from chatroom_bots.cooldowns import Cooldown, cooldown
from chatroom_bots.echo import make_echo
from chatroom_bots.greeter import make_greeter
from chatroom_bots.middleware import Metrics, deny_list, log_commands
from chatroom_bots.plugins import Plugin, PluginError
from chatroom_bots.schedules import Job
from chatroom_bots.storage import Store, StoreError

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
]
