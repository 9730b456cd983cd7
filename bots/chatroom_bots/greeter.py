"""The greeter bot: welcomes each user who joins and says goodbye when someone leaves.

Greetings go in public or by DM (``mode``); goodbyes are always public (the user is gone).
It does not greet the users already online when it starts, itself, a user taking over their
own session, or everyone reconnecting after a server restart (see :class:`Bot`).
"""

from __future__ import annotations

from typing import Literal

from chatroom_bots.bot import Bot

Mode = Literal["public", "dm"]


def make_greeter(
    name: str = "greeter",
    mode: Mode = "public",
    welcome: str = "Welcome, {user}!",
    goodbye: str = "Goodbye, {user}!",
) -> Bot:
    bot = Bot(name)

    @bot.on_join
    def greet(user: str) -> None:
        text = welcome.format(user=user)
        if mode == "dm":
            bot.tell(user, text)
        else:
            bot.say(text)

    @bot.on_leave
    def farewell(user: str) -> None:
        bot.say(goodbye.format(user=user))

    return bot
