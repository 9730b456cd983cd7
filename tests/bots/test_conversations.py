"""Conversations (``ctx.ask``) in both bots, through the harness and the fake clock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from chatroom_bots import AsyncBot, AsyncContext, Bot, Context, NoAnswer
from chatroom_bots.testing import BotTester

Tester = Callable[..., BotTester]


def threaded_bot() -> Bot:
    bot = Bot("quiz", max_conversations=3)

    @bot.command()
    def quiz(ctx: Context) -> str:
        """Ask a question and check the answer."""
        answer = ctx.ask("what is 6 x 7?", timeout=60)
        return "right!" if answer.strip() == "42" else f"no, not {answer}"

    @bot.command()
    def polite(ctx: Context) -> str:
        try:
            name = ctx.ask("your name?", timeout=30)
        except NoAnswer:
            return "never mind, then"
        return f"hello {name}"

    @bot.command()
    def ping(ctx: Context) -> str:
        return "pong"

    return bot


def async_bot() -> AsyncBot:
    bot = AsyncBot("quiz", max_conversations=3)

    @bot.command()
    async def quiz(ctx: AsyncContext) -> str:
        """Ask a question and check the answer."""
        answer = await ctx.ask("what is 6 x 7?", timeout=60)
        return "right!" if answer.strip() == "42" else f"no, not {answer}"

    @bot.command()
    async def polite(ctx: AsyncContext) -> str:
        try:
            name = await ctx.ask("your name?", timeout=30)
        except NoAnswer:
            return "never mind, then"
        return f"hello {name}"

    @bot.command()
    def ping(ctx: AsyncContext) -> str:
        return "pong"

    return bot


MAKERS: dict[str, Callable[[], Any]] = {"threaded": threaded_bot, "asyncio": async_bot}


def test_several_conversations_at_once_and_other_commands_meanwhile(bot_tester: Tester) -> None:
    for make in MAKERS.values():
        t = bot_tester(make())
        t.dm("alice", "!quiz")
        assert t.expect_reply(to="alice").text == "what is 6 x 7?"
        t.dm("bob", "!quiz")
        assert t.expect_reply(to="bob").text == "what is 6 x 7?"
        t.say("carol", "!quiz")  # in public: carol's answer comes in public
        assert t.expect_reply(private=False).text == "what is 6 x 7?"
        t.dm("dave", "!ping")  # others are served while three wait
        assert t.expect_reply(to="dave").text == "pong"
        t.dm("alice", "!ping")  # alice's DM is her answer, not a command
        t.dm("bob", "42")
        assert t.expect_reply(to="bob").text == "right!"
        assert t.expect_reply(to="alice").text == "no, not !ping"
        t.say("dave", "41")  # not carol: not her answer
        t.say("carol", "42")
        assert t.expect_reply(private=False).text == "right!"
        t.expect_no_reply()


def test_a_question_times_out_with_a_clear_outcome(bot_tester: Tester) -> None:
    for make in MAKERS.values():
        t = bot_tester(make())
        t.dm("alice", "!quiz")
        assert t.expect_reply().text == "what is 6 x 7?"
        t.dm("bob", "!polite")
        assert t.expect_reply().text == "your name?"
        t.advance(30)  # bob's question times out; the handler catches it
        assert t.expect_reply().text == "never mind, then"
        t.advance(29)
        t.expect_no_reply()  # alice has a second left
        t.advance(1)
        assert t.expect_reply().text == "alice: no answer within 60 s; !quiz gave up"
        t.dm("alice", "42")  # too late: now it is just a DM
        t.dm("alice", "!ping")
        assert t.expect_reply().text == "pong"
        t.expect_no_reply()


def test_too_many_conversations_at_once(bot_tester: Tester) -> None:
    for make in MAKERS.values():
        t = bot_tester(make())
        for user in ("u1", "u2", "u3"):
            t.dm(user, "!quiz")
            assert t.expect_reply().text == "what is 6 x 7?"
        t.dm("u4", "!quiz")
        assert t.expect_reply().text == "u4: too many conversations at once; try !quiz again soon"
        t.dm("u1", "42")
        assert t.expect_reply().text == "right!"
        t.dm("u4", "!quiz")
        assert t.expect_reply().text == "what is 6 x 7?"


def test_a_bot_stopping_mid_question_ends_the_handler(bot_tester: Tester) -> None:
    bot = Bot("asker")
    ended = threading.Event()

    @bot.command()
    def ask(ctx: Context) -> str:
        try:
            return ctx.ask("still there?", timeout=3600)
        finally:
            ended.set()

    t = bot_tester(bot)
    t.dm("alice", "!ask")
    assert t.expect_reply().text == "still there?"
    t.close()
    assert ended.is_set()  # close() returned after the handler ended, not an hour later
    assert not [th for th in threading.enumerate() if th.name.startswith("bot-asker")]
