"""Echo, greeter and the Bot layer against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import queue
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from chatroom import Broadcast, ChatClient, DirectMessage, Reconnected, UsersChanged
from chatroom.aio import AsyncChatClient
from chatroom.testing import TestServer
from chatroom_bots import BadArguments, Bot, Message, make_echo, make_greeter
from chatroom_bots.testing import BotTester
from tests.helpers import quiet_server

PW = "correct horse"
BOT_PW = "bot password 123"
T = 10.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def user(server: TestServer) -> Iterator[ChatClient]:
    with ChatClient(server.host, server.port) as c:
        c.login("human", PW)
        yield c


def said_by(name: str) -> Callable[[Broadcast | DirectMessage], bool]:
    return lambda e: e.sender == name


def test_echo_answers_dms_and_addressed_pms_only(server: TestServer, user: ChatClient) -> None:
    with make_echo().running(server.host, server.port, password=BOT_PW):
        for text in ("hello", "!help", "@echo not a command"):
            with user.expect(DirectMessage, check=said_by("echo")) as reply:
                user.dm("echo", text)
                assert reply.wait(T).message == text  # verbatim, commands included
        # A public message that does not address the bot gets nothing; the next reply
        # the bot sends in public is the one to the addressed message after it.
        with user.expect(Broadcast, check=said_by("echo")) as reply:
            user.pm("just chatting, echo")
            user.pm("@echo first")
            assert reply.wait(T).message == "first"
        with user.expect(Broadcast, check=said_by("echo")) as reply:
            user.pm("!echo second")
            assert reply.wait(T).message == "second"
        with user.expect(Broadcast, check=said_by("echo")) as reply:
            user.pm("@Echo: third")
            assert reply.wait(T).message == "third"


def test_bad_arguments_get_a_helpful_reply(server: TestServer, user: ChatClient) -> None:
    with (
        make_echo().running(server.host, server.port, password=BOT_PW),
        user.expect(Broadcast, check=said_by("echo")) as reply,
    ):
        user.pm("!echo")
        assert "usage: !echo TEXT" in reply.wait(T).message


def test_two_echo_bots_do_not_loop(server: TestServer, user: ChatClient) -> None:
    one, two = make_echo("echo1"), make_echo("echo2")
    with (
        one.running(server.host, server.port, password=BOT_PW) as c1,
        two.running(server.host, server.port, password=BOT_PW) as c2,
    ):
        at_one: queue.Queue[DirectMessage] = queue.Queue()
        at_two: queue.Queue[DirectMessage] = queue.Queue()
        c1.on_dm(at_one.put)
        c2.on_dm(at_two.put)
        one.tell("echo2", "who goes first?")
        assert at_one.get(timeout=T).message == "who goes first?"  # echo2 echoed once
        # Round trips through each bot flush anything still in flight (FIFO hooks).
        for bot in ("echo1", "echo2"):
            with user.expect(DirectMessage, check=said_by(bot)) as reply:
                user.dm(bot, "marker")
                reply.wait(T)
        from_one = [m for m in _drain(at_two) if m.sender == "echo1"]
        assert [m.message for m in from_one] == ["who goes first?"]  # echo1 did not answer


def _drain(q: queue.Queue[DirectMessage]) -> list[DirectMessage]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def test_greeter_greets_once_and_says_goodbye_once(server: TestServer, user: ChatClient) -> None:
    with make_greeter().running(server.host, server.port, password=BOT_PW):
        with user.expect(Broadcast, check=said_by("greeter")) as hello:
            newcomer = ChatClient(server.host, server.port)
            newcomer.connect()
            newcomer.login("newcomer", PW)
            assert hello.wait(T).message == "Welcome, newcomer!"
        # The same user taking over their session is not a new arrival (with users_delta
        # nobody's list changes, so no push at all: login() returning is the sync point).
        again_client = ChatClient(server.host, server.port)
        again_client.connect()
        again_client.login("newcomer", PW)
        with user.expect(Broadcast, check=said_by("greeter")) as bye:
            again_client.close()
            assert bye.wait(T).message == "Goodbye, newcomer!"
        # The next thing the greeter says is about the next user: nothing was repeated.
        with (
            user.expect(Broadcast, check=said_by("greeter")) as nxt,
            ChatClient(server.host, server.port) as third,
        ):
            third.login("third", PW)
            assert nxt.wait(T).message == "Welcome, third!"
        newcomer.close()


def test_a_join_or_leave_that_cannot_be_answered_is_no_error(
    server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler whose message cannot go out (ChatError) is a warning, or debug while
    the bot stops, never an ERROR with a traceback; the next handler still runs."""
    bot = Bot("speaker")
    ran: queue.Queue[tuple[str, str]] = queue.Queue()

    @bot.on_join
    def tell_a_ghost(name: str) -> None:
        bot.tell("nobody-at-all", f"{name} is here")  # user_offline

    @bot.on_join
    def note(name: str) -> None:
        ran.put(("joined", name))

    @bot.on_leave
    def say_while_stopping(name: str) -> None:
        assert bot.client is not None
        bot.client.close()  # the bot stops as the user leaves (a demo's Ctrl-C)
        try:
            bot.say(f"Goodbye, {name}!")
        finally:
            ran.put(("left", name))

    with (
        caplog.at_level(logging.DEBUG),
        bot.running(server.host, server.port, password=BOT_PW),
    ):
        with ChatClient(server.host, server.port) as guest:
            guest.login("guest", PW)
            assert ran.get(timeout=T) == ("joined", "guest")
        assert ran.get(timeout=T) == ("left", "guest")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    mine = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "chatroom_bots.bot"]
    assert any(lv == logging.WARNING and "joined handler for guest" in m for lv, m in mine)
    assert any(lv == logging.DEBUG and "left handler for guest" in m for lv, m in mine)


def test_greeter_by_dm(server: TestServer) -> None:
    with (
        make_greeter(mode="dm").running(server.host, server.port, password=BOT_PW),
        ChatClient(server.host, server.port) as guest,
        guest.expect(DirectMessage, check=said_by("greeter")) as hello,
    ):
        guest.login("guest", PW)
        assert hello.wait(T).message == "Welcome, guest!"


def test_bots_come_back_after_a_server_restart() -> None:
    with quiet_server() as srv:
        echo, greeter = make_echo(), make_greeter()
        with (
            echo.running(srv.host, srv.port, password=BOT_PW, reconnect_max_delay=0.2) as ec,
            greeter.running(srv.host, srv.port, password=BOT_PW, reconnect_max_delay=0.2) as gc,
        ):
            back: queue.Queue[object] = queue.Queue()
            ec.on_reconnect(back.put)
            gc.on_reconnect(back.put)
            srv.restart()
            back.get(timeout=T)
            back.get(timeout=T)
            with ChatClient(srv.host, srv.port) as person:
                with person.expect(Broadcast, check=said_by("greeter")) as hello:
                    person.login("person", PW)
                    assert hello.wait(T).message == "Welcome, person!"
                with person.expect(DirectMessage, check=said_by("echo")) as reply:
                    person.dm("echo", "still there?")
                    assert reply.wait(T).message == "still there?"


def test_command_errors_and_cooldown(server: TestServer, user: ChatClient) -> None:
    now = [1000.0]
    bot = Bot("tool", clock=lambda: now[0])

    @bot.command("add", help="!add A B", cooldown=5.0)
    def add(msg: Message, args: str) -> str:
        try:
            a, b = (int(x) for x in args.split())
        except ValueError:
            raise BadArguments("usage: !add A B") from None
        return str(a + b)

    @bot.command("crash")
    def crash(msg: Message, args: str) -> str:
        raise RuntimeError("bug in the bot")

    def ask(text: str) -> str:
        with user.expect(DirectMessage, check=said_by("tool")) as reply:
            user.dm("tool", text)
            return str(reply.wait(T).message)

    with bot.running(server.host, server.port, password=BOT_PW):
        assert ask("!add 2 3") == "5"
        assert "wait 5.0 s before !add" in ask("!add 1 1")
        now[0] += 6
        assert ask("!add x") == "human: usage: !add A B"
        assert ask("!add 1 1") == "2"  # the rejected call did not start a cooldown
        assert ask("!crash") == "human: sorry, !crash failed"
        assert "!add: !add A B" in ask("!help")
        assert "try !help" in ask("!nope")


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dice_bot", ROOT / "bots/examples/dice_bot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_dice_bot(bot_tester: Callable[..., BotTester]) -> None:
    """How to test your own bot: the bot_tester fixture runs it against a real server
    in-process, with scripted users (docs/BOTS.md)."""
    dice = _load_example()
    tester = bot_tester(dice.bot)
    tester.dm("player", "!roll lots")
    answer = tester.expect_reply()
    assert answer.private
    assert "usage: !roll [dice=1] [sides=6]" in answer.text
    tester.say("player", "!roll 3 6")
    answer = tester.expect_reply()
    assert not answer.private
    assert answer.text.startswith("player rolled ")


def test_chat_bot_command_generates_and_reuses_a_password(
    server: TestServer, user: ChatClient, tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    cmd = [
        sys.executable,
        "-m",
        "chatroom_bots",
        "echo",
        "--port",
        str(server.port),
        "--db",
        str(db),
    ]
    for round_ in range(2):
        with user.expect(UsersChanged, check=lambda e: "echo" in e.joined) as joined:
            proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
            joined.wait(T)
        with user.expect(UsersChanged, check=lambda e: "echo" in e.left) as left:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=T)
            left.wait(T)
        assert proc.returncode == 0, err
        saved = db.with_name("chat.db.echo.password")
        if round_ == 0:
            assert f"saved it in {saved}" in err
            assert oct(os.stat(saved).st_mode & 0o777) == "0o600"
        else:
            assert "generated" not in err


def test_a_restarted_echo_bot_answers_what_it_missed_once(
    server: TestServer, user: ChatClient, tmp_path: Path
) -> None:
    """chat-bot keeps a cursor file beside its password file: after a restart it answers
    the DMs sent while it was down, once, and nothing it had already answered."""
    pw = tmp_path / "echo.pw"
    pw.write_text(BOT_PW + "\n")
    cmd = [sys.executable, "-m", "chatroom_bots", "echo", "--port", str(server.port)]
    cmd += ["--password-file", str(pw)]
    answers: queue.Queue[str] = queue.Queue()
    user.on_dm(lambda e: answers.put(e.message) if e.sender == "echo" else None)
    in_public: queue.Queue[str] = queue.Queue()
    user.on_broadcast(lambda e: in_public.put(e.message) if e.sender == "echo" else None)

    def start() -> subprocess.Popen[str]:
        with user.expect(UsersChanged, check=lambda e: "echo" in e.joined) as joined:
            proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, text=True)
            joined.wait(T)
        return proc

    def stop(proc: subprocess.Popen[str]) -> None:
        with user.expect(UsersChanged, check=lambda e: "echo" in e.left) as left:
            proc.send_signal(signal.SIGTERM)
            proc.wait(T)
            left.wait(T)

    proc = start()
    user.dm("echo", "before")
    assert answers.get(timeout=T) == "before"
    stop(proc)
    assert (tmp_path / "echo.cursor").exists()
    assert user.dm("echo", "while you were down").queued
    user.pm("!echo stale public command")  # said in public while it was away: not answered
    proc = start()
    try:
        assert answers.get(timeout=T) == "while you were down"
        user.pm("!echo live public command")
        assert in_public.get(timeout=T) == "live public command"
        user.dm("echo", "marker")
        assert answers.get(timeout=T) == "marker"
        assert answers.empty()  # "before" was not answered again
        assert in_public.empty()  # nor the stale public command
    finally:
        stop(proc)


def test_async_command_handlers_are_awaited() -> None:
    bot = Bot("asyncer")

    @bot.command("slow", help="!slow: an answer that awaits")
    async def slow(msg: Message, args: str) -> str:
        await asyncio.sleep(0.01)
        return f"awaited for {msg.sender}"

    with (
        quiet_server() as srv,
        bot.running(srv.host, srv.port, password=BOT_PW),
        ChatClient(srv.host, srv.port) as me,
    ):
        me.login("waiter", PW)
        with me.expect(DirectMessage, check=said_by("asyncer")) as answer:
            me.dm("asyncer", "!slow")
            assert answer.wait(timeout=T).message == "awaited for waiter"
    assert bot._loop is None  # its loop thread was stopped with the bot


def test_the_example_async_bot() -> None:
    spec = importlib.util.spec_from_file_location("async_bot", ROOT / "bots/examples/async_bot.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    async def scenario(port: int) -> str:
        task = asyncio.create_task(example.run(port))
        async with AsyncChatClient("127.0.0.1", port) as me:
            await me.login("asker", PW)
            while "asyncbot" not in me.users:
                await me.wait_for(UsersChanged, timeout=T)
            reply = asyncio.create_task(me.wait_for(DirectMessage, timeout=T))
            await asyncio.sleep(0)
            await me.dm("asyncbot", "hello")
            text = (await reply).message
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, T)  # the bot closes within its timeout
        return text

    with quiet_server() as srv:
        assert asyncio.run(scenario(srv.port)) == "0 public messages so far; you said 'hello'"


def test_the_example_async_bot_never_answers_itself_after_a_restart() -> None:
    """The example answers ``event.sender`` in on_dm: after a server restart its own
    answers came back to on_dm, replayed, and it DMed itself in a loop."""
    spec = importlib.util.spec_from_file_location("async_bot", ROOT / "bots/examples/async_bot.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    async def scenario(srv: TestServer) -> list[str]:
        task = asyncio.create_task(example.run(srv.port))
        async with AsyncChatClient("127.0.0.1", srv.port, reconnect=True) as me:
            await me.login("asker", PW)
            while "asyncbot" not in me.users:
                await me.wait_for(UsersChanged, timeout=T)
            answers: asyncio.Queue[str] = asyncio.Queue()
            me.on_dm(lambda e: answers.put_nowait(e.message))
            await me.dm("asyncbot", "hello")
            await asyncio.wait_for(answers.get(), T)
            back = asyncio.create_task(me.wait_for(Reconnected, timeout=T))
            await asyncio.sleep(0)  # its waiter in place before the restart
            await asyncio.to_thread(srv.restart)
            await back
            while "asyncbot" not in me.users:  # the bot reconnects on its own
                await me.wait_for(UsersChanged, timeout=T)
            await me.dm("asyncbot", "marker")
            texts = [await asyncio.wait_for(answers.get(), T)]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, T)
        return texts

    with quiet_server() as srv:
        assert asyncio.run(scenario(srv)) == ["0 public messages so far; you said 'marker'"]
        with ChatClient(srv.host, srv.port) as bot:
            bot.login("asyncbot", "async bot password")
            to_itself = bot.history(with_user="asyncbot").messages
        assert [m.message for m in to_itself] == []


def test_the_example_async_bot_ends_on_ctrl_c_without_a_traceback(
    server: TestServer, user: ChatClient
) -> None:
    """Ctrl-C ended the example with two tracebacks (KeyboardInterrupt out of
    asyncio.run) and status -2."""
    example = ROOT / "bots/examples/async_bot.py"
    joined = user.expect(UsersChanged, check=lambda e: "asyncbot" in e.joined)
    proc = subprocess.Popen(
        [sys.executable, str(example), str(server.port)], stderr=subprocess.PIPE, text=True
    )
    try:
        joined.wait(T)
        with user.expect(UsersChanged, check=lambda e: "asyncbot" in e.left) as left:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=T)
            left.wait(T)  # it logged out on the way
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=T)
    assert "Traceback" not in err, err
    assert proc.returncode == 0
