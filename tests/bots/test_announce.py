"""A bot announces its commands at login (docs/PROTOCOL.md §bot_commands) and again when
its plugins change or it reconnects; both bots."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chatroom_bots import AsyncBot, Bot, Context, Plugin
from chatroom_bots.core import BotBase
from chatroom_bots.testing import BotTester

Tester = Callable[..., BotTester]


@pytest.fixture(params=["threaded", "asyncio"])
def kind(request: pytest.FixtureRequest) -> type[BotBase]:
    return Bot if request.param == "threaded" else AsyncBot


def dice(kind: type[BotBase]) -> BotBase:
    bot = kind("dice", prefix="?")

    @bot.command(aliases=["r"])
    def roll(ctx: Context, dice: int = 1, sides: int = 6) -> str:
        """Roll DICE dice with SIDES sides."""
        return "rolled"

    return bot


def names(tester: BotTester) -> list[str]:
    (entry,) = tester.user("reader").bot_commands("dice")
    return [c.name for c in entry.commands]


def test_a_bot_announces_its_commands_at_login(bot_tester: Tester, kind: type[BotBase]) -> None:
    tester = bot_tester(dice(kind))
    (entry,) = tester.user("reader").bot_commands()
    assert (entry.user, entry.prefix) == ("dice", "?")
    assert [c.name for c in entry.commands] == ["help", "roll"]
    roll = entry.commands[1]
    assert (roll.usage, roll.help, roll.aliases) == (
        "?roll [dice=1] [sides=6]",
        "Roll DICE dice with SIDES sides.",
        ("r",),
    )
    assert [(p.name, p.type, p.default) for p in roll.params] == [
        ("dice", "number", "1"),
        ("sides", "number", "6"),
    ]
    tester.restart_server()  # a new session starts with none: the bot announces again
    tester.settle()
    assert names(tester) == ["help", "roll"]


def test_a_plugin_that_comes_or_goes_is_announced(bot_tester: Tester) -> None:
    bot = dice(Bot)
    tester = bot_tester(bot)
    extra = Plugin("extra")

    @extra.command()
    def flip(ctx: Context) -> str:
        return "heads"

    bot.add_plugin(extra)
    tester.settle()
    assert names(tester) == ["flip", "help", "roll"]
    bot.remove_plugin("extra")
    tester.settle()
    assert names(tester) == ["help", "roll"]
