"""Rooms in the bot framework (docs/BOTS.md, docs/PROTOCOL.md §Rooms): ``ctx.room``,
replies in the room a command came from, the ``Room`` converter, ``room_only`` and
``room_operator``, and the harness's ``say(..., room=)``; threaded and asyncio alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chatroom_bots import (
    AsyncBot,
    Bot,
    Context,
    Cooldown,
    Room,
    room_only,
    room_operator,
)
from chatroom_bots.core import BotBase
from chatroom_bots.testing import BotTester

Tester = Callable[..., BotTester]


@pytest.fixture(params=["threaded", "asyncio"])
def kind(request: pytest.FixtureRequest) -> type[BotBase]:
    return Bot if request.param == "threaded" else AsyncBot


def rooms_bot(kind: type[BotBase]) -> BotBase:
    bot = kind("roomy")

    @bot.command()
    def where(ctx: Context) -> str:
        return f"{ctx.sender} in {ctx.room or 'the lobby'} as {ctx.role}"

    @bot.command()
    def peek(ctx: Context, room: Room) -> str:
        info = ctx.bot.room(room)
        return f"{room}: {len(info.members) if info else 'everyone'}"

    @bot.command(cooldown=Cooldown(per=60, rate=1, bucket="place"))
    @room_only()
    def once(ctx: Context) -> str:
        return f"once in {ctx.room}"

    @bot.command()
    @room_only("dice", "Cards")
    def deal(ctx: Context) -> str:
        return "dealt"

    @bot.command()
    @room_operator()
    def lock(ctx: Context) -> str:
        return f"{ctx.room} locked by {ctx.sender}"

    return bot


def started(bot_tester: Tester, bot: BotBase) -> BotTester:
    tester = bot_tester(bot)
    client: Any = getattr(bot, "client", None)
    assert client is not None and client.rooms_on, "the test server speaks rooms (protocol v2)"
    return tester


def test_a_command_in_a_room_is_answered_in_that_room(
    bot_tester: Tester, kind: type[BotBase]
) -> None:
    tester = started(bot_tester, rooms_bot(kind))
    tester.say("alice", "!where", room="dice")
    reply = tester.expect_reply()
    assert (reply.text, reply.room, reply.private) == ("alice in dice as owner", "dice", False)
    tester.say("bob", "!where", room="DICE")  # any case: the room as the server spells it
    assert tester.expect_reply(room="dice").text == "bob in dice as member"
    tester.say("bob", "!where")
    reply = tester.expect_reply()
    assert (reply.text, reply.room) == ("bob in the lobby as None", None)
    tester.dm("bob", "!where")
    assert tester.expect_reply(private=True).text == "bob in the lobby as None"
    tester.expect_no_reply()


def test_the_room_converter_takes_the_rooms_the_bot_is_in(
    bot_tester: Tester, kind: type[BotBase]
) -> None:
    tester = started(bot_tester, rooms_bot(kind))
    tester.join("alice", "Dice")
    tester.dm("alice", "!peek #dice")
    # alice, the bot and the observer are its members.
    assert tester.expect_reply(private=True).text == "Dice: 3"
    tester.dm("alice", "!peek lobby")
    assert tester.expect_reply(private=True).text == "lobby: everyone"
    tester.dm("alice", "!peek elsewhere")
    assert tester.expect_reply(private=True).text == (
        'alice: room: I am not in "elsewhere"; usage: !peek <room>'
    )
    tester.dm("alice", "!peek no/such")
    assert tester.expect_reply(private=True).text.startswith(
        'alice: room: "no/such" is not a room name'
    )


def test_room_only_and_cooldowns_per_room(bot_tester: Tester, kind: type[BotBase]) -> None:
    tester = started(bot_tester, rooms_bot(kind))
    tester.say("alice", "!once")
    assert tester.expect_reply().text == "alice: !once works in a room only"
    tester.dm("alice", "!once")
    assert tester.expect_reply(private=True).text == "alice: !once works in a room only"
    tester.say("alice", "!once", room="dice")
    assert tester.expect_reply(room="dice").text == "once in dice"
    tester.say("alice", "!once", room="cards")  # another place: a cooldown of its own
    assert tester.expect_reply(room="cards").text == "once in cards"
    tester.say("bob", "!once", room="dice")  # the room's cooldown, whoever asks
    assert tester.expect_reply(room="dice").text.startswith("bob: wait ")
    tester.say("alice", "!deal", room="cards")
    assert tester.expect_reply(room="cards").text == "dealt"
    tester.say("alice", "!deal", room="chess")
    assert tester.expect_reply(room="chess").text == "alice: !deal works in dice, Cards only"
    tester.expect_no_reply()


def test_room_operator_follows_the_roles(bot_tester: Tester, kind: type[BotBase]) -> None:
    tester = started(bot_tester, rooms_bot(kind))
    tester.say("alice", "!lock", room="dev")  # alice made dev: its owner
    assert tester.expect_reply(room="dev").text == "dev locked by alice"
    tester.say("bob", "!lock", room="dev")
    assert tester.expect_reply(room="dev").text == "bob: !lock is for the room's operators only"
    tester.user("alice").mode("dev", "+o", "bob")  # the bot sees the change, as a member
    tester.say("bob", "!lock", room="dev")
    assert tester.expect_reply(room="dev").text == "dev locked by bob"
    tester.say("alice", "!lock")  # the lobby has no operators
    assert tester.expect_reply().text == "alice: !lock is for the room's operators only"
    tester.dm("alice", "!lock")
    assert tester.expect_reply(private=True).text.endswith("is for the room's operators only")


def test_on_a_server_without_rooms_everything_is_the_lobby(
    bot_tester: Tester, kind: type[BotBase]
) -> None:
    tester = bot_tester(rooms_bot(kind), history=False)  # rooms need the message log
    client: Any = getattr(tester.bot, "client", None)
    assert client is not None and not client.rooms_on
    tester.say("alice", "!where")
    assert tester.expect_reply().text == "alice in the lobby as None"
    tester.say("alice", "!once")
    assert tester.expect_reply().text == "alice: !once works in a room only"
    assert tester.bot.rooms == ()
