"""What only the asyncio client has: async hooks, events(), cancellation, no leaks."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest

from chatroom import Broadcast, ChatTimeout, DirectMessage, HookError, UsersChanged
from chatroom.aio import AsyncChatClient
from chatroom.testing import ServerProcess, async_running_server

PW = "async password"
T = 10.0


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_async_and_plain_hooks_run_in_order_and_a_slow_hook_blocks_no_ack() -> None:
    async def main() -> None:
        async with (
            async_running_server(users_interval=0, rate_limit=None) as srv,
            AsyncChatClient(srv.host, srv.port) as bot,
            AsyncChatClient(srv.host, srv.port) as me,
        ):
            seen: list[str] = []
            release = asyncio.Event()

            @bot.on_broadcast
            async def slow(event: Broadcast) -> None:
                if event.message == "first":
                    await release.wait()  # a slow hook...
                seen.append(f"async {event.message}")

            bot.on_broadcast(lambda e: seen.append(f"plain {e.message}"))

            @bot.on_dm
            async def answer(event: DirectMessage) -> None:
                await bot.dm(event.sender, f"re: {event.message}")  # awaits its ack

            await bot.login("abot", PW)
            await me.login("ame", PW)
            await me.pm("first")
            await me.pm("second")
            # ...while the bot's own requests still get their acks.
            assert (await bot.pm("bot still talks")).seq is not None
            release.set()
            reply_wait = asyncio.create_task(me.wait_for(DirectMessage, timeout=T))
            await asyncio.sleep(0)  # the waiter is registered before the DM goes out
            await me.dm("abot", "hi")
            assert (await reply_wait).message == "re: hi"
            assert seen == ["async first", "plain first", "async second", "plain second"]

    asyncio.run(main())


def test_events_iterator_wait_for_timeout_and_hook_errors() -> None:
    async def main() -> None:
        async with (
            async_running_server(users_interval=0, rate_limit=None) as srv,
            AsyncChatClient(srv.host, srv.port) as a,
            AsyncChatClient(srv.host, srv.port) as b,
        ):
            errors: list[HookError] = []
            failed = asyncio.Event()

            @b.on_error
            def report(error: HookError) -> None:
                errors.append(error)
                failed.set()

            @b.on_broadcast
            async def broken(event: Broadcast) -> None:
                raise ValueError("a bug in a hook")

            await a.login("ea", PW)
            await b.login("eb", PW)
            stream = b.events()
            first: asyncio.Task[object] = asyncio.create_task(anext(stream))
            await asyncio.sleep(0)
            await a.pm("through the iterator")
            event = await asyncio.wait_for(first, T)
            while isinstance(event, UsersChanged):
                # eb's own arrival may come in a delta after its login_ok
                # (docs/PROTOCOL.md §users_delta): not what this test waits for.
                event = await asyncio.wait_for(anext(stream), T)
            assert isinstance(event, Broadcast) and event.message == "through the iterator"
            with pytest.raises(ChatTimeout):
                await b.wait_for(DirectMessage, timeout=0.05)
            await a.pm("again")
            await asyncio.wait_for(failed.wait(), T)
            assert isinstance(errors[0].error, ValueError) and errors[0].hook == "on_broadcast"
            await stream.aclose()

    asyncio.run(main())


def test_cancelling_the_task_closes_the_client_and_leaks_nothing(tmp_path: Path) -> None:
    """The server is another process here, so this process's descriptors are the
    clients' alone."""
    with ServerProcess(tmp_path / "c.db", "--users-interval", "0") as srv:
        asyncio.run(_cancel_and_count(srv))


async def _cancel_and_count(srv: ServerProcess) -> None:
    before_fds = fds()
    before_tasks = asyncio.all_tasks()
    client = AsyncChatClient(*srv.address, reconnect=True)
    online = asyncio.Event()

    async def bot() -> None:
        async with client:
            await client.login("cancelled", PW)
            online.set()
            await client.run_forever()

    async with AsyncChatClient(*srv.address) as watcher:
        await watcher.login("watcher", PW)
        # Its arrival first: a join and a leave within one users_delta window
        # would cancel out (docs/PROTOCOL.md §users_delta).
        joined = asyncio.create_task(
            watcher.wait_for(UsersChanged, lambda e: "cancelled" in e.joined, T)
        )
        await asyncio.sleep(0)
        task = asyncio.create_task(bot())
        await asyncio.wait_for(online.wait(), T)
        await joined
        gone = asyncio.create_task(
            watcher.wait_for(UsersChanged, lambda e: "cancelled" in e.left, T)
        )
        await asyncio.sleep(0)  # the waiter is in place before the cancel
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await gone  # it said goodbye: the server let it go at once
        assert not client.connected
    assert asyncio.all_tasks() - before_tasks == set()
    assert fds() <= before_fds


def test_a_full_hook_queue_holds_the_reader_and_says_so() -> None:
    """Backpressure: with the hook queue full the reader waits (nothing dropped), logs
    that the hooks are behind, and everything arrives once the hook lets go."""

    async def main() -> None:
        async with (
            async_running_server(users_interval=0, rate_limit=None) as srv,
            AsyncChatClient(srv.host, srv.port, hook_queue=2) as slow,
            AsyncChatClient(srv.host, srv.port) as talker,
        ):
            release = asyncio.Event()
            got: list[str] = []
            warned = asyncio.Event()

            class Seen(logging.Handler):  # runs on the loop's thread, where the log is
                def emit(self, record: logging.LogRecord) -> None:
                    if "hooks are" in record.getMessage():
                        warned.set()

            seen = Seen()
            logging.getLogger("chatroom.aio").addHandler(seen)

            @slow.on_broadcast
            async def hook(event: Broadcast) -> None:
                await release.wait()
                got.append(event.message)

            await slow.login("slowhooks", PW)
            # The warning comes every `timeout` seconds: short from here on, not for the
            # login, whose password hash may take longer than that on a busy machine.
            slow.timeout = 0.2
            await talker.login("talker2", PW)
            for i in range(6):
                await talker.pm(f"m{i}")
            try:
                await asyncio.wait_for(warned.wait(), T)  # the reader is held, and says so
            finally:
                logging.getLogger("chatroom.aio").removeHandler(seen)
            release.set()
            last = asyncio.create_task(slow.wait_for(Broadcast, lambda e: e.message == "end", T))
            await asyncio.sleep(0)
            await talker.pm("end")
            await last
        assert got[:6] == [f"m{i}" for i in range(6)]

    asyncio.run(main())


def test_a_cancel_that_arrives_with_the_reply_still_cancels() -> None:
    """A request's reply and a cancel of the task awaiting it, in one step of the loop
    (close() cancelling a hook whose ack has just been read): the task ends cancelled.
    asyncio.wait_for on 3.11 returned the reply and dropped the cancel, and the hook task
    went back to its queue while close() waited out its whole timeout."""

    async def main() -> None:
        async with (
            async_running_server(users_interval=0) as srv,
            AsyncChatClient(srv.host, srv.port) as me,
        ):
            await me.login("racer", PW)
            sending = asyncio.create_task(me.pm("racing"))
            while not me._pending:  # the request is written and waits for its ack
                await asyncio.sleep(0)
            (future,) = me._pending.values()
            future.set_exception(ChatTimeout("the answer, arriving now"))
            sending.cancel()
            await asyncio.wait({sending}, timeout=T)
            assert sending.cancelled()

    asyncio.run(main())


def test_check_user_gives_the_whole_answer_with_full() -> None:
    """As ChatClient.check_user: a bool, or with full=True the password lengths a new
    name may have (the REPL refuses a bad password with them before the repeat)."""

    async def main() -> None:
        async with (
            async_running_server(users_interval=0, min_password=10) as srv,
            AsyncChatClient(srv.host, srv.port) as c,
            AsyncChatClient(srv.host, srv.port) as other,
        ):
            assert await c.check_user("fresh") is True
            got = await c.check_user("fresh", full=True)
            assert (got.new_user, got.min_password, got.max_password) == (True, 10, 1024)
            await c.login("fresh", "ten chars!")
            taken = await other.check_user("FRESH", full=True)
            assert (taken.new_user, taken.min_password, taken.max_password) == (False, None, None)

    asyncio.run(main())


def test_a_restarted_async_bot_with_a_cursor_file_sees_each_message_once(
    tmp_path: Path,
) -> None:
    """As the threaded client's (tests/sdk/test_lossless.py): the file holds the seq up to
    which the hooks ran, and a new client with it resumes there."""
    cursor = tmp_path / "abot.cursor"
    seen: list[str] = []

    async def main() -> None:
        async with (
            async_running_server(users_interval=0, rate_limit=None) as srv,
            AsyncChatClient(srv.host, srv.port) as s,
        ):
            await s.login("speaker", PW)

            async def run_bot() -> tuple[AsyncChatClient, asyncio.Queue[Broadcast]]:
                got: asyncio.Queue[Broadcast] = asyncio.Queue()
                bot = AsyncChatClient(srv.host, srv.port, cursor_file=cursor)
                bot.on_broadcast(got.put_nowait)
                await bot.connect()
                await bot.login("cursorbot", PW)
                return bot, got

            async def take(got: asyncio.Queue[Broadcast], n: int) -> None:
                for _ in range(n):
                    async with asyncio.timeout(T):
                        seen.append((await got.get()).message)

            bot, got = await run_bot()
            last = None
            for i in range(5):
                last = (await s.pm(f"one {i}")).seq
            await take(got, 5)
            await bot.close()  # writes the cursor at close
            assert json.loads(cursor.read_text())["seq"] == last
            for i in range(5):
                await s.pm(f"two {i}")  # while the bot is down
            bot, got = await run_bot()
            await take(got, 5)
            await s.pm("three")
            await take(got, 1)
            await bot.close()

    asyncio.run(main())
    assert seen == [*(f"one {i}" for i in range(5)), *(f"two {i}" for i in range(5)), "three"]


def test_a_broken_cursor_file_is_a_clear_error_for_the_async_client(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cursor"
    bad.write_text("{not json")
    with pytest.raises(Exception, match="cursor file"):
        AsyncChatClient("127.0.0.1", 1, cursor_file=bad)
