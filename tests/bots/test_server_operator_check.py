"""The ``server_operator()`` check (docs/BOTS.md, docs/PROTOCOL.md §whois) against a real
server: an operator granted with ``chat-server admin grant`` may run the command, and
not once revoked; the server is asked once a command, however many checks ask;
threaded and asyncio alike."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chatroom_bots import AsyncBot, Bot, Context, check, server_operator
from chatroom_bots.core import BotBase
from chatroom_bots.testing import BotTester
from chatroom_server.__main__ import main

Tester = Callable[..., BotTester]


@pytest.fixture(params=["threaded", "asyncio"])
def kind(request: pytest.FixtureRequest) -> type[BotBase]:
    return Bot if request.param == "threaded" else AsyncBot


def admin(capsys: pytest.CaptureFixture[str], tester: BotTester, *args: str) -> None:
    assert main(["admin", "--db", str(tester.server.db_path), *args]) == 0
    capsys.readouterr()


def opers_bot(kind: type[BotBase]) -> BotBase:
    bot = kind("warden")

    @bot.command()
    @server_operator()
    @server_operator()  # twice: still one question to the server
    def halt(ctx: Context) -> str:
        return f"halted by {ctx.sender}"

    return bot


def count_whois(bot: BotBase) -> list[str]:
    """Wrap the bot's client's whois (sync or async alike) to note each ask."""
    client: Any = getattr(bot, "client", None)
    assert client is not None
    asked: list[str] = []
    lock = threading.Lock()  # guards asked (the bot's handler threads append)
    real = client.whois

    def whois(user: str) -> Any:
        with lock:
            asked.append(user)
        return real(user)

    client.whois = whois
    return asked


def test_server_operator_granted_then_revoked(
    bot_tester: Tester, kind: type[BotBase], capsys: pytest.CaptureFixture[str]
) -> None:
    bot = opers_bot(kind)
    tester = bot_tester(bot)
    asked = count_whois(bot)
    tester.dm("alice", "!halt")
    assert tester.expect_reply(private=True).text == "alice: !halt is for server operators only"
    assert asked == ["alice"]

    admin(capsys, tester, "grant", "alice")
    tester.say("alice", "!halt")
    assert tester.expect_reply().text == "halted by alice"
    assert asked == ["alice", "alice"]

    admin(capsys, tester, "revoke", "alice")
    tester.say("alice", "!halt")
    assert tester.expect_reply().text == "alice: !halt is for server operators only"
    tester.say("bob", "!halt")
    assert tester.expect_reply().text == "bob: !halt is for server operators only"
    assert asked == ["alice", "alice", "alice", "bob"]
    tester.expect_no_reply()


def test_a_check_to_await_is_refused_by_the_threaded_bot(bot_tester: Tester) -> None:
    bot = Bot("strict")

    class Later:  # an awaitable, as an AsyncBot's check may return
        def __await__(self) -> Iterator[None]:
            return iter(())

    @bot.command()
    @check(lambda ctx: Later())
    def go(ctx: Context) -> str:
        return "went"

    tester = bot_tester(bot)
    tester.dm("alice", "!go")
    assert tester.expect_reply(private=True).text == "alice: sorry, !go failed"
