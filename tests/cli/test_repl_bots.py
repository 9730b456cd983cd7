"""The REPL completes the commands bots announced (docs/PROTOCOL.md §bot_commands) and
their arguments, and shows the command's usage and help in the toolbar."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.input.base import PipeInput

from chatroom import Broadcast, ChatClient
from chatroom.botcommands import BotCommand, BotEntry, BotParam
from chatroom.testing import TestServer
from chatroom_cli.bots import complete_bot, hint
from tests.cli.test_repl import PW, Harness, T

PICK = BotCommand(
    name="pick",
    usage="!pick <mode> <who>",
    help="Pick someone, fast or slow.",
    params=(
        BotParam(name="mode", type="mode", choices=("fast", "slow")),
        BotParam(name="who", type="user"),
    ),
)
POLL = BotCommand(
    name="poll",
    usage="!poll",
    help="Polls.",
    subcommands=(
        BotCommand(name="create", usage="!poll create <question>", help="Start a poll."),
        BotCommand(name="close", usage="!poll close", help="End it."),
    ),
)
DICE = BotEntry(user="dice", prefix="!", commands=(PICK, POLL))


@pytest.fixture
def pipe() -> Iterator[PipeInput]:
    with create_pipe_input() as p:
        yield p


def test_tab_completes_a_bots_commands_and_arguments_and_the_toolbar_helps(
    server: TestServer, pipe: PipeInput
) -> None:
    with ChatClient(server.host, server.port) as bot, ChatClient(*server.address) as watcher:
        watcher.login("watcher", PW)
        bot.login("dice", PW)
        bot.announce_commands([PICK, POLL])
        h = Harness(server, pipe, user="dana", password=PW)
        h.out.wait_for("Type /help")
        h.repl.bots.wait_for(bool, T)  # asked for on a thread of its own, at the prompt
        h.type_until("!pi\t", "command", lambda b: b.text == "!pick ")
        h.out.wait_for("!pick <mode> <who>: Pick someone, fast or slow. (dice)")
        h.type_until("s\t", "command", lambda b: b.text == "!pick slow ")
        h.type_until("wat\t", "command", lambda b: b.text == "!pick slow watcher ")
        with bot.expect(Broadcast, check=lambda e: e.sender == "dana") as said:
            h.type("\r")
            assert said.wait().message == "!pick slow watcher"
        h.type("EX\r")
        assert h.finish() == 0


def test_completion_and_hints_as_functions() -> None:
    def users(prefix: str) -> list[str]:
        return [u for u in ("watcher", "wendy") if u.startswith(prefix)]

    bots = (DICE,)
    assert complete_bot("!p", bots, users) == (
        2,
        [("!pick", "dice: Pick someone, fast or slow."), ("!poll", "dice: Polls.")],
    )
    assert complete_bot("!poll c", bots, users) == (
        1,
        [("create", "dice: Start a poll."), ("close", "dice: End it.")],
    )
    assert complete_bot("!pick fast w", bots, users) == (
        1,
        [("watcher", "who (user)"), ("wendy", "who (user)")],
    )
    assert complete_bot("!pick fast wendy extra", bots, users) == (5, [])  # no such arg
    assert complete_bot("hello", bots, users) is None  # not a bot command: the REPL's own
    assert complete_bot("/jo", bots, users) is None
    assert complete_bot("!pi", (), users) is None
    assert hint("!pick fast ", bots) == (
        "!pick <mode> <who>: Pick someone, fast or slow. (dice) | next: who (user)"
    )
    assert hint("!poll create ", bots) == "!poll create <question>: Start a poll. (dice)"
    assert hint("!nope", bots) is None
    assert hint("plain words", bots) is None
