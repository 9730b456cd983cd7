"""The bot test harness tests itself: exact "no reply", users joining and leaving, server
restarts, its own failures, and that it cleans up."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from chatroom import DirectMessage
from chatroom_bots import AsyncBot, Bot, Context
from chatroom_bots.core import BotBase
from chatroom_bots.testing import BotTester

Tester = Callable[..., BotTester]
T = 10.0


@pytest.fixture(params=["threaded", "asyncio"])
def kind(request: pytest.FixtureRequest) -> type[BotBase]:
    return Bot if request.param == "threaded" else AsyncBot


def chatty(kind: type[BotBase], greet: bool = False) -> BotBase:
    bot = kind("chatty")

    @bot.command()
    def twice(ctx: Any, *, text: str) -> Any:
        if isinstance(ctx, Context):
            ctx.reply(text)
            return text

        async def both() -> str:
            await ctx.reply(text)
            return str(text)

        return both()

    @bot.command()
    def soon(ctx: Any, *, text: str) -> None:
        async def say() -> None:
            await ctx.bot.say(text)

        ctx.bot.later(10, (lambda: ctx.bot.say(text)) if isinstance(ctx, Context) else say)

    if greet:

        @bot.on_join
        def hello(user: str) -> Any:
            return ctx_say(bot, f"hello {user}")

        @bot.on_leave
        def bye(user: str) -> Any:
            return ctx_say(bot, f"bye {user}")

    return bot


def ctx_say(bot: BotBase, text: str) -> Any:
    return bot.say(text)  # type: ignore[attr-defined]


def test_no_reply_is_exact_not_a_timed_guess(kind: type[BotBase], bot_tester: Tester) -> None:
    t = bot_tester(chatty(kind))
    t.dm("alice", "!twice hi")
    assert t.expect_reply().text == "hi"
    with pytest.raises(AssertionError, match=r"chatty said \[Reply\(text='hi'"):
        t.expect_no_reply()  # the second "hi" had arrived, or settle waited for it
    with t.user("alice").expect(DirectMessage) as got:
        t.dm("carol", "!twice not for the bot", to="alice")  # the bot never sees it
        assert got.wait(T).message == "!twice not for the bot"
    t.expect_no_reply()  # and the harness does not wait for it to
    t.say("bob", "!soon later on")
    t.expect_no_reply()  # scheduled, not said yet
    t.advance(10)
    r = t.expect_reply()
    assert (r.text, r.private) == ("later on", False)
    t.expect_no_reply()


def test_users_join_and_leave(kind: type[BotBase], bot_tester: Tester) -> None:
    t = bot_tester(chatty(kind, greet=True))
    t.login("carol")
    assert t.expect_reply().text == "hello carol"
    with t.users("dave", "erin"):
        assert {t.expect_reply().text, t.expect_reply().text} == {"hello dave", "hello erin"}
    assert {t.expect_reply().text, t.expect_reply().text} == {"bye dave", "bye erin"}
    t.logout("carol")
    assert t.expect_reply().text == "bye carol"
    t.expect_no_reply()


def test_a_server_restart_is_not_a_wave_of_arrivals(
    kind: type[BotBase], bot_tester: Tester
) -> None:
    t = bot_tester(chatty(kind, greet=True))
    t.login("carol")
    assert t.expect_reply().text == "hello carol"
    t.restart_server()
    t.dm("carol", "!twice still here")
    assert [r.text for r in (t.expect_reply(), t.expect_reply())] == ["still here"] * 2
    t.expect_no_reply()  # no "hello carol" again, no "bye"


def test_the_harness_says_what_went_wrong(bot_tester: Tester) -> None:
    t = bot_tester(chatty(Bot), timeout=0.5)
    with pytest.raises(AssertionError, match=r"no reply from chatty within 0\.5 s"):
        t.expect_reply()
    gate = threading.Event()

    @t.bot.command()
    def stuck(ctx: Context) -> str:
        gate.wait(10)
        return "unstuck"

    t.dm("alice", "!stuck")
    with pytest.raises(AssertionError, match=r"did not settle within 0\.5 s"):
        t.settle()
    gate.set()
    assert t.expect_reply().text == "unstuck"


def test_the_harness_cleans_up(kind: type[BotBase]) -> None:
    before = set(threading.enumerate())
    with BotTester(chatty(kind)) as t:
        t.dm("alice", "!twice x")
        t.expect_reply()
        server = t.server
    # (A _DummyThread stands for a thread the server started outside threading.)
    left = [
        th
        for th in set(threading.enumerate()) - before
        if th.is_alive() and not isinstance(th, threading._DummyThread)
    ]
    assert not left, left
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=2).close()


def test_the_pytest_plugin_imports_nothing_of_the_framework_at_start() -> None:
    """pytest loads the bot_tester plugin before coverage starts measuring: had it imported
    the framework (and the SDK) then, the module-level code of both would count as never
    run, and the suite's coverage fell under its floor (78 % against 82)."""
    code = (
        "import sys, chatroom_bots.pytest_plugin\n"
        "heavy = [m for m in ('chatroom', 'chatroom_bots.bot', 'chatroom_bots.core')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
        "from chatroom_bots import Bot, Rest, make_echo\n"
        "print(Bot.__module__, 'chatroom_bots.bot' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.splitlines() == ["[]", "chatroom_bots.bot True"]
