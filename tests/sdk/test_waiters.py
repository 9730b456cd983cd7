"""``expect``: a waiter made before the action catches an answer that arrives before
``wait()`` is called, on both clients; ``wait_for`` after the fact does not."""

from __future__ import annotations

import asyncio
import importlib.util
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatroom import ChatClient, ChatTimeout, DirectMessage, UsageError, UsersChanged
from chatroom.aio import AsyncChatClient
from chatroom.testing import TestServer, async_running_server

PW = "waiter password"
T = 10.0


@pytest.fixture
def pair(server: TestServer) -> Iterator[tuple[ChatClient, threading.Event]]:
    """A logged-in client, and an Event its on_dm hook sets once the echo bot's reply
    reached it: hooks run after the waiters were offered the event, so once it is
    set the reply has arrived, and any waiter made before it has it."""
    echo = ChatClient(server.host, server.port).connect()
    me = ChatClient(server.host, server.port).connect()
    arrived = threading.Event()
    try:
        echo.on_dm(lambda e: echo.dm(e.sender, f"re: {e.message}"))
        echo.login("echo", PW)
        me.on_dm(lambda e: arrived.set())
        me.login("me", PW)
        yield me, arrived
    finally:
        me.close()
        echo.close()


def test_expect_catches_a_reply_that_came_before_wait(
    pair: tuple[ChatClient, threading.Event],
) -> None:
    me, arrived = pair
    with me.expect(DirectMessage, check=lambda e: e.sender == "echo") as reply:
        me.dm("echo", "ping")
        assert arrived.wait(T)  # the reply is in before wait() is called
        assert reply.wait(T).message == "re: ping"
    assert me._waiters == []  # white-box: nothing left behind


def test_the_ask_a_bot_example(pair: tuple[ChatClient, threading.Event]) -> None:
    me, _ = pair
    path = Path(__file__).resolve().parents[2] / "bots/examples/ask_a_bot.py"
    spec = importlib.util.spec_from_file_location("ask_a_bot", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.ask(me, "echo", "anyone there?", T) == "re: anyone there?"
    assert me._waiters == []


def test_wait_for_after_the_reply_does_not_see_it(
    pair: tuple[ChatClient, threading.Event],
) -> None:
    """The trap expect() avoids: wait_for sees only what arrives after the call."""
    me, arrived = pair
    me.dm("echo", "ping")
    assert arrived.wait(T)
    with pytest.raises(ChatTimeout, match=r"no DirectMessage matched within 0\.05 s"):
        me.wait_for(DirectMessage, timeout=0.05)


def test_expect_with_no_types_takes_the_message_events(
    pair: tuple[ChatClient, threading.Event],
) -> None:
    me, _ = pair
    with me.expect(check=lambda e: not isinstance(e, UsersChanged)) as first:
        me.dm("echo", "ping")
        assert isinstance(first.wait(T), DirectMessage)


def test_a_check_that_raises_is_raised_by_wait(
    pair: tuple[ChatClient, threading.Event],
) -> None:
    me, arrived = pair

    def broken(event: DirectMessage) -> bool:
        raise KeyError(event.message)

    with me.expect(DirectMessage, check=broken) as reply:
        me.dm("echo", "ping")
        assert arrived.wait(T)
        with pytest.raises(KeyError, match="re: ping"):
            reply.wait(T)


def test_waiting_in_an_inline_hook_is_refused_not_a_hang(server: TestServer) -> None:
    """An inline hook runs on the receive thread, which would deliver the event it
    waits for: wait() says so at once instead of waiting out its timeout."""
    said: queue.Queue[BaseException] = queue.Queue()
    bot = ChatClient(server.host, server.port, inline_hooks=True).connect()
    me = ChatClient(server.host, server.port).connect()
    try:

        def hook(event: DirectMessage) -> None:
            try:
                bot.expect(DirectMessage).wait(T)
            except UsageError as exc:
                said.put(exc)
            try:
                bot.wait_for(DirectMessage, timeout=T)
            except UsageError as exc:
                said.put(exc)

        bot.on_dm(hook)
        bot.login("inline", PW)
        me.login("me", PW)
        me.dm("inline", "hello")
        for _ in range(2):
            assert "would block the receive thread" in str(said.get(timeout=T))
        assert bot._waiters == []
    finally:
        me.close()
        bot.close()


def test_async_expect_catches_a_reply_that_came_before_wait() -> None:
    async def main() -> None:
        async with (
            async_running_server(users_interval=0, rate_limit=None) as srv,
            AsyncChatClient(srv.host, srv.port) as echo,
            AsyncChatClient(srv.host, srv.port) as me,
        ):
            arrived = asyncio.Event()

            @echo.on_dm
            async def answer(event: DirectMessage) -> None:
                await echo.dm(event.sender, f"re: {event.message}")

            me.on_dm(lambda e: arrived.set())  # hooks run after the waiters got the event
            await echo.login("echo", PW)
            await me.login("me", PW)

            with me.expect(DirectMessage, check=lambda e: e.sender == "echo") as reply:
                await me.dm("echo", "ping")
                await asyncio.wait_for(arrived.wait(), T)  # in before wait() is called
                assert (await reply.wait(T)).message == "re: ping"
            assert me._waiters == []

            arrived.clear()
            async with me.expect(DirectMessage) as reply:  # async with works the same
                await me.dm("echo", "pong")
                await asyncio.wait_for(arrived.wait(), T)
                assert (await reply.wait()).message == "re: pong"

            # The trap: wait_for after the reply came does not see it.
            arrived.clear()
            await me.dm("echo", "late")
            await asyncio.wait_for(arrived.wait(), T)
            with pytest.raises(ChatTimeout, match=r"no DirectMessage matched within 0\.05 s"):
                await me.wait_for(DirectMessage, timeout=0.05)
            assert me._waiters == []

    asyncio.run(main())


def test_async_expect_left_unawaited_is_removed_with_its_block() -> None:
    async def main() -> None:
        async with (
            async_running_server(users_interval=0, rate_limit=None) as srv,
            AsyncChatClient(srv.host, srv.port) as me,
        ):
            await me.login("me", PW)
            with me.expect(DirectMessage):
                assert len(me._waiters) == 1
            assert me._waiters == []

    asyncio.run(main())
