"""A test harness for bots: a real server in-process, the bot under test, scripted users.

::

    def test_roll(bot_tester):                     # the pytest fixture (chatroom_bots plugin)
        tester = bot_tester(make_dice_bot())
        tester.say("alice", "!roll 2 6")
        assert tester.expect_reply().text.startswith("alice rolled")
        tester.dm("bob", "!roll two")
        assert "usage: !roll" in tester.expect_reply(private=True).text
        tester.advance(minutes=5)                  # the fake clock: schedules run now
        assert tester.store["rolls"] == 2

Everything is real: the server (:func:`chatroom.testing.running_server`) on 127.0.0.1
and a free port, sockets, the bot's threads (or, for an :class:`~chatroom_bots.AsyncBot`,
an event loop in a thread of the harness), and each scripted user is a
:class:`chatroom.ChatClient` logged in on first use. The bot reads a
:class:`~chatroom_bots.clock.FakeClock` (``tester.clock``) and keeps its store in a
temporary file, unless it was given its own.

Nothing here sleeps: :meth:`BotTester.settle` waits until the bot has seen everything the
users sent, finished every handler, run every schedule due, and every message it sent has
reached the users' clients (it knows their seqs from its receipts); so
:meth:`expect_no_reply` is exact, not a timed guess. An observer client (``observer``,
logged in before the bot) collects what the bot says in public.

Rooms (docs/PROTOCOL.md §Rooms): ``tester.say("alice", "!roll", room="dice")`` has alice
join ``dice`` first (creating it: she owns it), then the bot and the observer, so the bot
hears her and the observer hears the answer; ``tester.join(user, room)`` for more.

It lives here rather than in :mod:`chatroom.testing` because it drives a bot, which the
SDK package must not import; :mod:`chatroom_bots.pytest_plugin` makes it a fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from chatroom import Broadcast, ChatClient, DirectMessage, Receipt
from chatroom.protocol import username_key
from chatroom.rooms import LOBBY, room_key
from chatroom.testing import TestServer, running_server
from chatroom_bots.aiobot import AsyncBot
from chatroom_bots.clock import FakeClock
from chatroom_bots.context import room_of
from chatroom_bots.core import BotBase
from chatroom_bots.storage import Store

__all__ = ["BotTester", "Reply"]

PASSWORD = "tester password"  # every scripted user's
BOT_PASSWORD = "bot under test password"
# The quiet server the harness starts: no periodic user-list pushes, no flood control.
SERVER_OPTIONS: dict[str, Any] = {"users_interval": 0, "rate_limit": None}


@dataclass(frozen=True)
class Reply:
    """Something the bot said: in public (``private`` False), or by DM to ``to``."""

    text: str
    private: bool
    to: str | None
    seq: int | None = None
    room: str | None = None  # None: the lobby (or a DM)


class BotTester:
    """See the module docstring. Use as a context manager, or :meth:`start` and
    :meth:`close` (the fixture does)."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        bot: BotBase,
        *,
        server: TestServer | None = None,
        clock: FakeClock | None = None,
        fake_clock: bool = True,
        observer: str = "observer",
        timeout: float = 5.0,
        **server_options: Any,
    ) -> None:
        self.bot = bot
        self.timeout = timeout
        self.observer_name = observer
        self._server = server
        self._server_options = {**SERVER_OPTIONS, **server_options}
        self._stack = contextlib.ExitStack()
        if clock is None and fake_clock:
            clock = bot.clock if isinstance(bot.clock, FakeClock) else FakeClock()
        self.clock = clock
        self._cond = threading.Condition()  # guards everything below
        self._replies: list[Reply] = []
        self._received: set[int] = set()  # seqs of the bot's messages our clients got
        self._expected: set[int] = set()  # seqs of the bot's messages they must get
        self._sent_seq = 0  # the highest seq of what the users sent
        self._users: dict[str, ChatClient] = {}  # the scripted users' clients, by key
        self._rooms: set[tuple[str, str]] = set()  # (user key, room key) joined here
        self._bot_rooms: set[str] = set()  # room keys the bot and observer joined here
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def server(self) -> TestServer:
        assert self._server is not None, "the tester is not started"
        return self._server

    @property
    def store(self) -> Store:
        """The bot's store, to assert on."""
        return self.bot.store

    def start(self) -> BotTester:
        try:
            if self._server is None:
                self._server = self._stack.enter_context(running_server(**self._server_options))
            self._stack.callback(self._close_users)  # before the server stops
            if self.clock is not None:
                self.bot.use_clock(self.clock)
            if self.bot._store_spec is None and self.bot._store is None:
                tmp = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="bot-test-"))
                self.bot.use_store(Path(tmp) / "store.sqlite")
            self._stack.callback(self._close_store)
            self._client(self.observer_name)  # online before the bot: it is not greeted
            self.bot._sent_observers.append(self._on_bot_sent)
            self._start_bot()
        except BaseException:
            self.close()
            raise
        return self

    def _close_store(self) -> None:
        store = self.bot._store
        if store is not None:
            store.close()

    def _start_bot(self) -> None:
        srv = self.server
        options: dict[str, Any] = {"password": BOT_PASSWORD, "reconnect_max_delay": 0.5}
        if isinstance(self.bot, AsyncBot):
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._loop_thread = threading.Thread(
                target=loop.run_forever, name="bot-tester-loop", daemon=True
            )
            self._loop_thread.start()
            bot = self.bot
            asyncio.run_coroutine_threadsafe(bot.start(srv.host, srv.port, **options), loop).result(
                self.timeout
            )
            self._stack.callback(self._stop_async_bot)
        else:
            from chatroom_bots.bot import Bot

            assert isinstance(self.bot, Bot)
            self.bot.start(srv.host, srv.port, **options)
            self._stack.callback(self.bot._shutdown)

    def _stop_async_bot(self) -> None:
        loop, thread = self._loop, self._loop_thread
        assert loop is not None and thread is not None and isinstance(self.bot, AsyncBot)
        try:
            asyncio.run_coroutine_threadsafe(self.bot.shutdown(), loop).result(self.timeout * 3)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self.timeout)
            loop.close()
            self._loop = self._loop_thread = None

    def close(self) -> None:
        """Stop the bot, log the users out, stop the server (idempotent)."""
        try:
            self._stack.close()  # the bot first (callbacks run last-in first-out)
        finally:
            self._close_users()

    def _close_users(self) -> None:
        with self._cond:
            users, self._users = self._users, {}
        for client in users.values():
            client.close()

    def __enter__(self) -> BotTester:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ users

    def _client(self, name: str) -> ChatClient:
        client = self._users.get(username_key(name))
        if client is not None:
            return client
        srv = self.server
        client = ChatClient(srv.host, srv.port, reconnect=True, reconnect_max_delay=0.5, rooms=True)
        observer = username_key(name) == username_key(self.observer_name)
        client.on_dm(functools.partial(self._on_dm, name))
        if observer:
            client.on_broadcast(self._on_broadcast)
        client.connect()
        client.login(name, PASSWORD)
        with self._cond:
            self._users[username_key(name)] = client
        return client

    def user(self, name: str) -> ChatClient:
        """The scripted user ``name``'s client, logged in (now, if it was not)."""
        return self._client(name)

    def login(self, name: str) -> ChatClient:
        """Log ``name`` in (the bot sees them join)."""
        return self._client(name)

    def logout(self, name: str) -> None:
        """Log ``name`` out (the bot sees them leave)."""
        with self._cond:
            client = self._users.pop(username_key(name), None)
        if client is not None:
            client.close()

    def _note_sent(self, receipt: Receipt) -> None:
        if receipt.seq is not None:
            with self._cond:
                self._sent_seq = max(self._sent_seq, receipt.seq)

    def say(self, user: str, text: str, room: str | None = None) -> Receipt:
        """``user`` says ``text`` in public: in the lobby, or in ``room`` (joined first by
        ``user``, then by the bot and the observer, if they are not in it yet)."""
        if room is not None and room_key(room) != LOBBY:
            self.join(user, room)
        receipt = self._client(user).pm(text, room=room)
        self._note_sent(receipt)
        return receipt

    def join(self, user: str, room: str) -> None:
        """``user`` joins ``room`` (creating it: they own it), and the bot and the
        observer after them, unless they are in it."""
        key, member = room_key(room), (username_key(user), room_key(room))
        with self._cond:
            user_in, bot_in = member in self._rooms, key in self._bot_rooms
        if not user_in:
            self._client(user).join(room)
            with self._cond:
                self._rooms.add(member)
        if not bot_in:
            self._bot_join(room)
            self._client(self.observer_name).join(room)
            with self._cond:
                self._bot_rooms.add(key)

    def _bot_join(self, room: str) -> None:
        if isinstance(self.bot, AsyncBot):
            assert self._loop is not None
            done = asyncio.run_coroutine_threadsafe(self.bot.join(room), self._loop)
            done.result(self.timeout)
        else:
            self.bot.join(room)  # type: ignore[attr-defined]

    def dm(self, user: str, text: str, to: str | None = None) -> Receipt:
        """``user`` sends ``text`` by DM to the bot (or to ``to``)."""
        target = to or self.bot.name
        receipt = self._client(user).dm(target, text)
        if username_key(target) == username_key(self.bot.name):
            self._note_sent(receipt)  # the bot never sees a DM between two others
        return receipt

    # ------------------------------------------------------------------ what the bot said

    def _is_bot(self, sender: str) -> bool:
        return username_key(sender) == username_key(self.bot.name)

    def _on_broadcast(self, event: Broadcast) -> None:
        if self._is_bot(event.sender):
            reply = Reply(event.message, False, None, event.seq, room_of(event))
            self._collect(reply, event.seq)

    def _on_dm(self, me: str, event: DirectMessage) -> None:
        if self._is_bot(event.sender):
            self._collect(Reply(event.message, True, me, event.seq), event.seq)

    def _collect(self, reply: Reply, seq: int | None) -> None:
        with self._cond:
            self._replies.append(reply)
            if seq is not None:
                self._received.add(seq)
            self._cond.notify_all()

    def _on_bot_sent(self, receipt: Receipt, room: str | None) -> None:
        # Called on whichever thread the bot sent from (or its loop).
        if receipt.seq is None:
            return
        with self._cond:
            if receipt.to is not None and username_key(receipt.to) not in self._users:
                return  # a DM to someone the harness does not script
            if room is not None and room_key(room) not in self._bot_rooms:
                return  # a room the observer is not in
            self._expected.add(receipt.seq)
            self._cond.notify_all()

    def expect_reply(
        self,
        timeout: float | None = None,
        *,
        private: bool | None = None,
        to: str | None = None,
        room: str | None = None,
    ) -> Reply:
        """The next thing the bot said (in public or by DM to a scripted user), or the next
        that matches ``private``/``to``/``room`` (``"lobby"`` for the lobby);
        AssertionError if nothing came in time."""

        def match(r: Reply) -> bool:
            if private is not None and r.private != private:
                return False
            if room is not None and (r.private or room_key(r.room or LOBBY) != room_key(room)):
                return False
            return to is None or (r.to is not None and username_key(r.to) == username_key(to))

        with self._cond:
            found: list[Reply] = []

            def ready() -> bool:
                found[:] = [r for r in self._replies if match(r)][:1]
                return bool(found)

            if not self._cond.wait_for(ready, timeout if timeout is not None else self.timeout):
                raise AssertionError(
                    f"no reply from {self.bot.name} within {timeout or self.timeout} s"
                    + (f" (have: {self._replies})" if self._replies else "")
                )
            self._replies.remove(found[0])
            return found[0]

    def replies(self) -> list[Reply]:
        """Everything the bot said so far and not yet expected (after :meth:`settle`)."""
        self.settle()
        with self._cond:
            out, self._replies = self._replies, []
        return out

    def expect_no_reply(self) -> None:
        """Assert the bot said nothing (more) in answer to what was sent so far."""
        extra = self.replies()
        assert not extra, f"{self.bot.name} said {extra}"

    # ------------------------------------------------------------------ sync and time

    def settle(self, timeout: float | None = None) -> None:
        """Wait until the bot is done with everything sent so far (see the module
        docstring); AssertionError if it is not within ``timeout``."""
        timeout = timeout if timeout is not None else self.timeout
        with self._cond:
            seq = self._sent_seq or None
        if isinstance(self.bot, AsyncBot):
            assert self._loop is not None
            done = asyncio.run_coroutine_threadsafe(self.bot.settle(seq, timeout), self._loop)
            ok = done.result(timeout * 2)
        else:
            ok = self.bot.settle(seq, timeout)  # type: ignore[attr-defined]
        if not ok:
            raise AssertionError(f"{self.bot.name} did not settle within {timeout} s")
        with self._cond:
            if not self._cond.wait_for(lambda: self._expected <= self._received, timeout):
                missing = sorted(self._expected - self._received)
                raise AssertionError(f"the bot's messages {missing} did not arrive in {timeout} s")

    def advance(
        self,
        seconds: float | timedelta = 0.0,
        *,
        minutes: float = 0.0,
        hours: float = 0.0,
        days: float = 0.0,
    ) -> None:
        """Move the bot's fake clock forward and wait until what came due has run."""
        if self.clock is None:
            raise RuntimeError("the tester was made with fake_clock=False")
        self.clock.advance(seconds, minutes=minutes, hours=hours, days=days)
        self.settle()

    def restart_server(self) -> None:
        """Restart the server on the same port and database; return once the bot and
        every scripted user are back."""
        client = getattr(self.bot, "client", None)
        assert client is not None
        backs: list[threading.Event] = []
        with self._cond:
            clients = [client, *self._users.values()]
        for c in clients:
            back = threading.Event()
            c.on_reconnect(functools.partial(_set, back))
            backs.append(back)
        self.server.restart()
        for back in backs:
            if not back.wait(self.timeout * 2):
                raise AssertionError("a client did not reconnect after the restart")

    @contextlib.contextmanager
    def users(self, *names: str) -> Iterator[list[ChatClient]]:
        """Log several users in for the block, out after it."""
        clients = [self._client(n) for n in names]
        try:
            yield clients
        finally:
            for n in names:
                self.logout(n)


def _set(event: threading.Event, *_: object) -> None:
    event.set()
