"""The bot framework end to end, through the harness, for the threaded and the asyncio bot:
typed commands, usage, help, checks, cooldowns, middleware, storage."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Annotated, Any

import pytest

from chatroom_bots import (
    AsyncBot,
    Bot,
    CheckFailure,
    Cooldown,
    Metrics,
    OnlineUser,
    Plugin,
    Range,
    allowed,
    check,
    deny_list,
    dm_only,
    public_only,
)
from chatroom_bots.core import BotBase
from chatroom_bots.testing import BotTester

Tester = Callable[..., BotTester]
T = 10.0
KINDS = {"threaded": Bot, "asyncio": AsyncBot}


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> type[BotBase]:
    cls: type[BotBase] = KINDS[request.param]
    return cls


def dice_bot(kind: type[BotBase], **options: Any) -> BotBase:
    bot = kind("dice", **options)

    @bot.command(aliases=["r"])
    def roll(ctx: Any, dice: Annotated[int, Range(1, 100)] = 1, sides: int = 6) -> str:
        """Roll DICE dice with SIDES sides (always sixes here)."""
        return f"{ctx.sender} rolled {dice}d{sides}: {dice * sides}"

    @bot.command()
    def whisper(ctx: Any, *, text: str) -> None:
        """Say TEXT back to you by DM."""
        return ctx.dm(text)  # type: ignore[no-any-return]

    @bot.command()
    def slap(ctx: Any, who: OnlineUser) -> str:
        return f"{ctx.sender} slaps {who}"

    poll = bot.group("poll", help="polls")

    @poll.command(aliases=["new"])
    def create(ctx: Any, question: str, *options: str) -> str:
        """Start a poll."""
        return f"poll: {question} ({', '.join(options)})"

    return bot


def test_typed_commands_answer_where_they_came_from(
    kind: type[BotBase], bot_tester: Tester
) -> None:
    t = bot_tester(dice_bot(kind))
    t.say("alice", "!roll 2 20")
    r = t.expect_reply()
    assert (r.text, r.private) == ("alice rolled 2d20: 40", False)
    t.dm("bob", "!r")
    r = t.expect_reply()
    assert (r.text, r.private, r.to) == ("bob rolled 1d6: 6", True, "bob")
    t.say("alice", "@dice roll 3")  # a mention works like the prefix
    assert t.expect_reply().text == "alice rolled 3d6: 18"
    t.say("alice", "!whisper a secret, with  spaces")
    r = t.expect_reply()
    assert (r.text, r.private, r.to) == ("a secret, with  spaces", True, "alice")
    t.say("carol", "!poll new 'Lunch?' pizza sushi")
    assert t.expect_reply().text == "poll: 'Lunch?' (pizza, sushi)"
    t.say("carol", '!poll create "Where to?" park')
    assert t.expect_reply().text == "poll: Where to? (park)"
    t.say("carol", "!slap Alice")
    assert t.expect_reply().text == "carol slaps alice"
    t.expect_no_reply()


def test_wrong_arguments_get_a_usage_reply(kind: type[BotBase], bot_tester: Tester) -> None:
    t = bot_tester(dice_bot(kind))
    usage = "usage: !roll [dice=1] [sides=6]"
    cases = {
        "!roll two": f'bob: dice: "two" is not a whole number; {usage}',
        "!roll 0": f'bob: dice: "0" is not between 1 and 100; {usage}',
        "!roll 1 2 3": f'bob: too many arguments from "3" on; {usage}',
        '!roll "1': f"bob: a quote is not closed; {usage}",
        "!slap nobody": 'bob: who: "nobody" is not online; usage: !slap <who>',
        "!slap": "bob: who is missing; usage: !slap <who>",
        "!whisper": "bob: text is missing; usage: !whisper <text...>",
        "!poll": "bob: which one? name a subcommand; usage: !poll <create> ...",
        "!poll vote 2": 'bob: "vote" is not a subcommand; usage: !poll <create> ...',
    }
    for text, reply in cases.items():
        t.dm("bob", text)
        assert t.expect_reply().text == reply, text
    # Overlong: a 3,990-character argument gets a short answer, not its echo.
    t.dm("bob", "!roll " + "9" * 3990)
    r = t.expect_reply()
    assert r.text.startswith('bob: dice: "999') and "is too long" in r.text
    assert len(r.text) < 150
    t.dm("bob", "!roll 2 3 " + "x " * 1990)
    assert "too many arguments" in t.expect_reply().text
    t.expect_no_reply()


def test_unknown_commands_and_help(kind: type[BotBase], bot_tester: Tester) -> None:
    t = bot_tester(dice_bot(kind))
    t.dm("bob", "!rol 2")
    assert t.expect_reply().text == "I don't know !rol; try !help (did you mean !roll?)"
    t.dm("bob", "!" + "x" * 500)
    assert len(t.expect_reply().text) < 100
    t.say("bob", "!nothing")  # in public another bot may own it: no answer
    t.expect_no_reply()
    t.dm("bob", "!help")
    assert t.expect_reply().text == (
        "!help: list the commands; !poll: polls; "
        "!roll: Roll DICE dice with SIDES sides (always sixes here).; !slap; "
        "!whisper: Say TEXT back to you by DM."
    )
    t.dm("bob", "!help roll")
    assert t.expect_reply().text == (
        "!roll [dice=1] [sides=6]: Roll DICE dice with SIDES sides (always sixes here). (also !r)"
    )
    t.dm("bob", "!help poll new")
    assert t.expect_reply().text == (
        "!poll create <question> [options...]: Start a poll. (also !new)"
    )
    t.dm("bob", "!help r")
    assert t.expect_reply().text.startswith("!roll [dice=1]")
    t.dm("bob", "!help zap")
    assert t.expect_reply().text == "I don't know !zap; try !help"
    t.expect_no_reply()


def test_checks(kind: type[BotBase], bot_tester: Tester) -> None:
    bot = kind("guard")

    @bot.command()
    @dm_only()
    def secret(ctx: Any) -> str:
        return "the secret"

    @bot.command()
    @public_only()
    def announce(ctx: Any, *, text: str) -> str:
        return text

    @bot.command()
    @allowed("admins")
    def shutdown(ctx: Any) -> str:
        return "shutting down (not really)"

    @bot.command()
    @check(lambda ctx: ctx.sender.startswith("a"), "{command} is for names starting with a")
    def apple(ctx: Any) -> str:
        return "an apple"

    def must_be_carol(ctx: Any) -> bool:
        if ctx.sender != "carol":
            raise CheckFailure("only carol may administer")
        return True

    admin = bot.group("admin")
    check(must_be_carol)(admin)  # a group's checks guard its subcommands

    @admin.command()
    def grant(ctx: Any, user: str) -> str:
        ctx.bot.allow_list("admins").add(user)
        return f"{user} is an admin"

    t = bot_tester(bot)
    t.say("alice", "!secret")
    assert t.expect_reply().text == "alice: !secret works by DM only"
    t.dm("alice", "!secret")
    assert t.expect_reply().text == "the secret"
    t.dm("alice", "!announce hi")
    assert t.expect_reply().text == "alice: !announce works in public only"
    t.dm("alice", "!shutdown")
    assert t.expect_reply().text == "alice: !shutdown is for admins only"
    t.dm("bob", "!apple")
    assert t.expect_reply().text == "bob: !apple is for names starting with a"
    t.dm("bob", "!admin grant bob")
    assert t.expect_reply().text == "bob: only carol may administer"
    t.dm("carol", "!admin grant Alice")
    assert t.expect_reply().text == "Alice is an admin"
    t.dm("alice", "!shutdown")
    assert t.expect_reply().text == "shutting down (not really)"
    assert "alice" in bot.allow_list("admins")
    assert t.store.namespace("chatroom_bots.allow")["admins"] == ["Alice"]  # persistent


def test_cooldowns_per_user_place_and_everyone(kind: type[BotBase], bot_tester: Tester) -> None:
    bot = kind("cool")

    @bot.command(cooldown=5)
    def mine(ctx: Any) -> str:
        return "mine"

    @bot.command(cooldown=Cooldown(per=60, rate=2, bucket="place"))
    def here(ctx: Any) -> str:
        return "here"

    @bot.command(cooldown=Cooldown(per=10, bucket="global"))
    def once(ctx: Any, n: int = 0) -> str:
        return "once"

    t = bot_tester(bot)
    t.dm("alice", "!mine")
    assert t.expect_reply().text == "mine"
    t.dm("alice", "!mine")
    assert t.expect_reply().text == "alice: wait 5.0 s before !mine again"
    t.dm("alice", "!mine")  # told once per period: silent now
    t.dm("bob", "!mine")  # another user is not held up
    assert t.expect_reply().text == "mine"
    t.expect_no_reply()
    t.advance(5)
    t.dm("alice", "!mine")
    assert t.expect_reply().text == "mine"
    for who in ("alice", "bob"):
        t.say(who, "!here")
        assert t.expect_reply().text == "here"
    t.say("carol", "!here")
    assert t.expect_reply().text == "carol: wait 60.0 s before !here again"
    t.dm("carol", "!here")  # another place
    assert t.expect_reply().text == "here"
    t.dm("alice", "!once x")  # refused for its argument: does not use the cooldown
    assert "usage: !once [n=0]" in t.expect_reply().text
    t.dm("alice", "!once")
    assert t.expect_reply().text == "once"
    t.dm("bob", "!once")
    assert t.expect_reply().text.startswith("bob: wait 10.0 s")
    t.advance(10)
    t.dm("bob", "!once")
    assert t.expect_reply().text == "once"
    t.expect_no_reply()


def test_middleware_wraps_every_command(
    kind: type[BotBase], bot_tester: Tester, caplog: pytest.LogCaptureFixture
) -> None:
    bot = kind("mw")
    order: list[str] = []
    metrics = Metrics()
    banned = {"mallory"}
    bot.use(deny_list(banned))
    bot.use(metrics)

    @bot.use
    def outer(ctx: Any, call_next: Callable[[], Any]) -> Any:
        order.append(f"before {ctx.command.name}")
        result = call_next()
        order.append("after")
        return result

    plugin = Plugin("quiet")

    @plugin.use
    def no_shouting(ctx: Any, call_next: Callable[[], Any]) -> Any:
        if ctx.args.isupper():
            return f"{ctx.sender}: no shouting"
        return call_next()

    @plugin.command()
    def echo(ctx: Any, *, text: str) -> str:
        return text

    @bot.command()
    def boom(ctx: Any) -> str:
        raise RuntimeError("bug")

    bot.add_plugin(plugin)
    t = bot_tester(bot)
    t.dm("alice", "!echo hi there")
    assert t.expect_reply().text == "hi there"
    t.dm("alice", "!echo HI THERE")
    assert t.expect_reply().text == "alice: no shouting"
    t.dm("mallory", "!echo hi")
    banned.add("bob")  # the set is read at each command
    t.dm("bob", "!echo hi")
    with caplog.at_level(logging.ERROR):
        t.dm("alice", "!boom")
        assert t.expect_reply().text == "alice: sorry, !boom failed"
    t.expect_no_reply()
    assert any("command !boom failed" in r.getMessage() for r in caplog.records)
    snap = metrics.snapshot()
    assert snap["echo"]["calls"] == 2 and snap["boom"]["errors"] == 1
    if kind is Bot:
        assert order == ["before echo", "after", "before echo", "after", "before boom"]


def test_storage_per_bot_and_per_plugin(kind: type[BotBase], bot_tester: Tester) -> None:
    bot = kind("counter")
    plugin = Plugin("votes")

    @bot.command()
    def count(ctx: Any) -> str:
        n = ctx.store.change("count", lambda n: (n or 0) + 1)
        return f"count {n}"

    @plugin.command()
    def vote(ctx: Any, option: str) -> str:
        votes = ctx.store.change(option, lambda v: (v or 0) + 1)
        return f"{option}: {votes}"

    bot.add_plugin(plugin)
    t = bot_tester(bot)
    for expected in ("count 1", "count 2"):
        t.dm("alice", "!count")
        assert t.expect_reply().text == expected
    t.dm("alice", "!vote pizza")
    assert t.expect_reply().text == "pizza: 1"
    assert t.store["count"] == 2
    assert t.store.namespace("votes")["pizza"] == 1
    assert plugin.store["pizza"] == 1
    assert "pizza" not in t.store


def test_long_replies_go_out_in_pieces_within_the_servers_limit(
    kind: type[BotBase], bot_tester: Tester
) -> None:
    bot = kind("talker")

    @bot.command()
    def story(ctx: Any, words: int) -> str:
        return " ".join(f"word{i:03d}" for i in range(words))

    @bot.command()
    def endless(ctx: Any) -> str:
        return "x" * 100_000

    t = bot_tester(bot, max_message=100)  # the server's limit, announced at login
    t.dm("alice", "!story 25")  # 199 characters: three pieces, cut between words
    parts = [r.text for r in t.replies()]
    assert len(parts) == 3 and all(len(p) <= 100 for p in parts)
    assert " ".join(parts) == " ".join(f"word{i:03d}" for i in range(25))
    t.dm("alice", "!endless")  # at most five pieces, the last marked cut
    parts = [r.text for r in t.replies()]
    assert len(parts) == 5 and parts[-1].endswith("…") and all(len(p) <= 100 for p in parts)


def test_a_user_who_floods_loses_the_excess_not_everyone_their_turn(
    kind: type[BotBase], bot_tester: Tester, caplog: pytest.LogCaptureFixture
) -> None:
    bot = kind("busy", max_pending=5)
    gate = threading.Event()

    @bot.command()
    def slow(ctx: Any, n: int) -> Any:
        if isinstance(bot, Bot):
            if n == 0:  # the others queue behind it: one handler at a time
                assert gate.wait(T)
            return f"done {n}"
        if n == 100:
            return f"done {n}"
        return wait_then(gate, n)  # tasks: each of mallory's waits for the gate

    t = bot_tester(bot)
    with caplog.at_level(logging.WARNING, logger="chatroom_bots.bot"):
        for n in range(12):  # five are pending (the first holds the rest up); seven dropped
            t.dm("mallory", f"!slow {n}")
        t.dm("alice", "!slow 100")  # another user is still queued
        with pytest.raises(AssertionError):
            t.settle(timeout=0.5)
        gate.set()
        replies = [r.text for r in t.replies()]
    assert sorted(replies, key=lambda r: int(r.split()[1])) == [
        "done 0",
        "done 1",
        "done 2",
        "done 3",
        "done 4",
        "done 100",
    ]
    warnings = [r.getMessage() for r in caplog.records if "dropping more" in r.getMessage()]
    assert warnings == [
        "busy: mallory has 5 messages waiting; dropping more until they are answered"
    ]
    t.dm("mallory", "!slow 7")  # answered again once the queue is down
    assert t.expect_reply().text == "done 7"


async def wait_then(gate: threading.Event, n: int) -> str:
    import asyncio

    await asyncio.to_thread(gate.wait, T)
    return f"done {n}"


def test_a_handler_that_exits_does_not_stop_the_bot(
    kind: type[BotBase], bot_tester: Tester, caplog: pytest.LogCaptureFixture
) -> None:
    bot = kind("sturdy")

    @bot.command()
    def quit(ctx: Any) -> str:
        raise SystemExit(3)

    @bot.command()
    def ping(ctx: Any) -> str:
        return "pong"

    t = bot_tester(bot)
    with caplog.at_level(logging.ERROR, logger="chatroom_bots.bot"):
        t.dm("alice", "!quit")
        t.dm("alice", "!ping")
        assert t.expect_reply().text == "pong"
    assert any("failed" in r.getMessage() and r.exc_info for r in caplog.records)
    t.expect_no_reply()
