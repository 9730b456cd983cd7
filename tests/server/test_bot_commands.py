"""Bot commands on a real server (docs/PROTOCOL.md §Bot commands): a bot announces, other
clients ask, the announcement goes with the session, and the bounds hold."""

from __future__ import annotations

import pytest

from chatroom import ChatClient, ServerError, UsersChanged
from chatroom.botcommands import (
    MAX_BOT_COMMANDS_BYTES,
    BotCommand,
    BotCommandsCommand,
    BotEntry,
    BotParam,
)
from chatroom_server.botcommands import BotDirectory, bot_commands_reply
from tests.helpers import PASSWORD, RawClient, quiet_server

T = 10.0

ROLL = BotCommand(
    name="roll",
    usage="!roll [dice=1] [sides=6]",
    help="Roll DICE dice with SIDES sides.",
    aliases=("r",),
    params=(
        BotParam(name="dice", type="number", required=False, default="1"),
        BotParam(name="sides", type="number", required=False, default="6"),
    ),
)


def test_a_bot_announces_and_others_see_it_until_its_session_ends() -> None:
    with quiet_server() as srv, ChatClient(*srv.address) as me:
        me.login("human", PASSWORD)
        assert me.bot_commands() == ()
        bot = ChatClient(*srv.address)
        bot.connect()
        # Seen to arrive, so that its departure is not merged away with its arrival.
        with me.expect(UsersChanged, check=lambda e: "Dice" in e.joined) as joined:
            bot.login("Dice", PASSWORD)
            joined.wait(T)
        bot.announce_commands([ROLL])
        entry = BotEntry(user="Dice", prefix="!", commands=(ROLL,))
        assert me.bot_commands() == (entry,)
        assert me.bot_commands("dice") == (entry,)  # any case
        assert me.bot_commands("nobody") == ()
        bot.announce_commands([ROLL], prefix="/")  # replaces
        assert me.bot_commands("dice")[0].prefix == "/"
        bot.announce_commands([])  # withdraws
        assert me.bot_commands() == ()
        bot.announce_commands([ROLL])
        with me.expect(UsersChanged, check=lambda e: "Dice" in e.left) as left:
            bot.close()
            left.wait(T)  # the reaper dropped the announcement before it said so
        assert me.bot_commands() == ()


def test_a_newer_session_keeps_its_announcement_when_the_old_one_ends() -> None:
    with quiet_server() as srv, ChatClient(*srv.address) as me:
        me.login("human", PASSWORD)
        old = RawClient(srv.address)
        old.send(command="login", username="dice", password=PASSWORD)
        old.expect("login_ok")
        old.send(command="bot_commands", commands=[{"name": "old", "usage": "!old"}], id=1)
        old.until("ack", id=1)
        with ChatClient(*srv.address) as new:
            new.login("dice", PASSWORD)  # takes the session over: the old one ends
            new.announce_commands([ROLL])
            assert [c.name for c in me.bot_commands("dice")[0].commands] == ["roll"]


def test_bad_announcements_are_refused_and_change_nothing() -> None:
    with quiet_server(max_frame=256 * 1024) as srv, ChatClient(*srv.address) as bot:
        bot.login("dice", PASSWORD)
        bot.announce_commands([ROLL])
        huge = [
            BotCommand(name=f"c{i}", usage=f"!c{i}", help="x" * 500)
            for i in range(MAX_BOT_COMMANDS_BYTES // 500 + 1)
        ]
        with pytest.raises(ServerError, match="the limit is 16384") as refused:
            bot.announce_commands(huge)
        assert refused.value.code == "bad_request"
        with pytest.raises(ServerError, match="prefix"):
            bot.announce_commands([ROLL], prefix="two words")
        assert bot.bot_commands("dice")[0].commands == (ROLL,)
        raw = RawClient(srv.address)
        raw.send(command="bot_commands", commands=[ROLL.name], id=1)  # not a command
        assert raw.until("error", id=1)["code"] in ("bad_request", "not_logged_in")
        raw.send(command="bot_commands", id=2)
        assert raw.until("error", id=2)["code"] == "not_logged_in"


def test_the_directory_holds_at_most_max_bots() -> None:
    class Session:
        def __init__(self, username: str) -> None:
            self.username = username

    bots = BotDirectory(max_bots=2)
    a, b, c = Session("a"), Session("b"), Session("c")
    announce = BotCommandsCommand(commands=(ROLL,), id=1)
    assert b'"ack"' in bot_commands_reply(bots, a, announce)
    assert b'"ack"' in bot_commands_reply(bots, b, announce)
    full = bot_commands_reply(bots, c, announce)
    assert b'"unavailable"' in full and b"2 bots" in full
    assert b'"ack"' in bot_commands_reply(bots, a, announce)  # a replacement still fits
    bots.forget(b)
    assert b'"ack"' in bot_commands_reply(bots, c, announce)
    assert [e.user for e in bots.lookup()] == ["a", "c"]
