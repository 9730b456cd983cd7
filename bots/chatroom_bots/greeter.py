"""The greeter bot: welcomes each user who joins and says goodbye when someone leaves.

Greetings go in public or by DM (``mode``); goodbyes are always public (the user is gone).
It does not greet the users already online when it starts, itself, a user taking over their
own session, or everyone reconnecting after a server restart (see
:class:`~chatroom_bots.guard.Presence`). As a plugin (``chat-bot run greeter``, the
``greeter`` entry point) it greets for any bot, threaded or asyncio.
"""

from __future__ import annotations

from typing import Any, Literal

from chatroom_bots.bot import Bot
from chatroom_bots.plugins import Plugin

__all__ = ["greeter_plugin", "make_greeter"]

Mode = Literal["public", "dm"]


def greeter_plugin(
    mode: Mode = "public",
    welcome: str = "Welcome, {user}!",
    goodbye: str = "Goodbye, {user}!",
) -> Plugin:
    """A new greeter plugin (a plugin belongs to one bot at a time)."""
    plugin = Plugin("greeter", description="welcomes and says goodbye")

    # The bot's say/tell: a value in the threaded bot, a coroutine (awaited by the
    # framework) in the asyncio one; returning it serves both.
    @plugin.on_join
    def greet(user: str) -> Any:
        bot: Any = plugin.bot
        text = welcome.format(user=user)
        return bot.tell(user, text) if mode == "dm" else bot.say(text)

    @plugin.on_leave
    def farewell(user: str) -> Any:
        bot: Any = plugin.bot
        return bot.say(goodbye.format(user=user))

    return plugin


def make_greeter(
    name: str = "greeter",
    mode: Mode = "public",
    welcome: str = "Welcome, {user}!",
    goodbye: str = "Goodbye, {user}!",
) -> Bot:
    bot = Bot(name)
    bot.add_plugin(greeter_plugin(mode, welcome, goodbye))
    return bot
