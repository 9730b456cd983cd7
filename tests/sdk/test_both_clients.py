"""Behaviour both clients share, one suite run against each: ``ChatClient`` (threads) and
``AsyncChatClient`` (asyncio, driven here through a blocking facade on a loop thread)."""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Protocol, TypeVar

import pytest

from chatroom import (
    AuthError,
    Broadcast,
    ChatClient,
    DirectMessage,
    Disconnect,
    DmSent,
    HistoryPage,
    HookError,
    LoginResult,
    MessageTooLong,
    Receipt,
    Reconnected,
    UserOffline,
    UsersChanged,
)
from chatroom.aio import AsyncChatClient
from chatroom.testing import TestServer
from chatroom_server.accounts import AccountStoreBusy

PW = "both clients password"
T = 10.0
X = TypeVar("X")


class Client(Protocol):
    """What the suite needs of a client, whichever it is."""

    def login(self, name: str, password: str) -> LoginResult: ...
    def pm(self, message: str) -> Receipt: ...
    def dm(self, to: str, message: str) -> Receipt: ...
    def history(self, **kw: Any) -> HistoryPage: ...
    def walk_history(self) -> list[str]: ...
    def on(self, kind: str, fn: Callable[[Any], object]) -> None: ...
    def wait_for(self, kind: type[X], check: Callable[[X], bool] | None = None) -> X: ...
    def on_wait(self, fn: Callable[[], None]) -> None: ...
    def user_count(self) -> int: ...
    def close(self) -> None: ...


def _subclass(base: type[Any], methods: dict[str, Callable[..., object]] | None) -> type[Any]:
    """``base``, or a subclass of it with ``methods`` (method-named hooks, for instance)."""
    return type(f"My{base.__name__}", (base,), methods) if methods else base


class Threaded:
    def __init__(
        self, srv: TestServer, methods: dict[str, Callable[..., object]] | None = None, **kw: Any
    ) -> None:
        cls = _subclass(ChatClient, methods)
        self.c: ChatClient = cls(srv.host, srv.port, reconnect_max_delay=0.3, **kw)
        self.c.connect()

    def login(self, name: str, password: str) -> LoginResult:
        return self.c.login(name, password)

    def pm(self, message: str) -> Receipt:
        return self.c.pm(message)

    def dm(self, to: str, message: str) -> Receipt:
        return self.c.dm(to, message)

    def history(self, **kw: Any) -> HistoryPage:
        return self.c.history(**kw)

    def walk_history(self) -> list[str]:
        return [m.message for m in self.c.iter_history(page=7)]

    def on(self, kind: str, fn: Callable[[Any], object]) -> None:
        getattr(self.c, f"on_{kind}")(fn)

    def wait_for(self, kind: type[X], check: Callable[[X], bool] | None = None) -> X:
        return self.c.wait_for(kind, check, T)

    def on_wait(self, fn: Callable[[], None]) -> None:
        """``fn()`` once each later wait_for has its waiter in place (white-box)."""
        expect = self.c.expect

        def hooked(*types: type[Any], check: Callable[[Any], bool] | None = None) -> Any:
            waiter = expect(*types, check=check)
            fn()
            return waiter

        self.c.expect = hooked  # type: ignore[method-assign]

    def user_count(self) -> int:
        return self.c.user_count

    def close(self) -> None:
        self.c.close()


class Async:
    """An AsyncChatClient on an event loop of its own thread; calls block until done."""

    def __init__(
        self, srv: TestServer, methods: dict[str, Callable[..., object]] | None = None, **kw: Any
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.c = self._run(self._make(srv, _subclass(AsyncChatClient, methods), kw))

    async def _make(
        self, srv: TestServer, cls: type[AsyncChatClient], kw: dict[str, Any]
    ) -> AsyncChatClient:
        c: AsyncChatClient = cls(srv.host, srv.port, reconnect_max_delay=0.3, **kw)
        return await c.connect()

    def _run(self, coro: Coroutine[Any, Any, X]) -> X:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(T + 5)

    def login(self, name: str, password: str) -> LoginResult:
        return self._run(self.c.login(name, password))

    def pm(self, message: str) -> Receipt:
        return self._run(self.c.pm(message))

    def dm(self, to: str, message: str) -> Receipt:
        return self._run(self.c.dm(to, message))

    def history(self, **kw: Any) -> HistoryPage:
        return self._run(self.c.history(**kw))

    def walk_history(self) -> list[str]:
        async def walk() -> list[str]:
            return [m.message async for m in self.c.iter_history(page=7)]

        return self._run(walk())

    def on(self, kind: str, fn: Callable[[Any], object]) -> None:
        getattr(self.c, f"on_{kind}")(fn)

    def wait_for(self, kind: type[X], check: Callable[[X], bool] | None = None) -> X:
        return self._run(self.c.wait_for(kind, check, T))

    def on_wait(self, fn: Callable[[], None]) -> None:
        """``fn()`` once each later wait_for has its waiter in place (white-box)."""

        class Hooked(list):  # type: ignore[type-arg]
            def append(self, item: Any) -> None:
                super().append(item)
                fn()

        self.c._waiters = Hooked(self.c._waiters)

    def user_count(self) -> int:
        return self.c.user_count

    def close(self) -> None:
        if self.loop.is_closed():
            return  # closed already (a test may close before the fixture does)
        self._run(self.c.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(T)
        self.loop.close()


@pytest.fixture(params=["threads", "asyncio"])
def make(request: pytest.FixtureRequest, server: TestServer) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def factory(**kw: Any) -> Client:
        c: Client = Threaded(server, **kw) if request.param == "threads" else Async(server, **kw)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()


def test_messages_dms_receipts_and_typed_errors(make: Callable[..., Client]) -> None:
    a, b = make(), make()
    a.login("ann", PW)
    got: queue.Queue[Broadcast | DirectMessage] = queue.Queue()
    b.on("broadcast", got.put)
    b.on("dm", got.put)
    b.login("ben", PW)
    r = a.pm("hello")
    first = got.get(timeout=T)
    assert isinstance(first, Broadcast) and (first.sender, first.seq) == ("ann", r.seq)
    receipt = a.dm("BEN", "psst")
    assert (receipt.to, receipt.queued) == ("ben", False)
    dm = got.get(timeout=T)
    assert isinstance(dm, DirectMessage) and dm.seq == receipt.seq and not dm.replayed
    with pytest.raises(UserOffline):
        a.dm("nobody-here", "x")
    with pytest.raises(AuthError):
        make().login("ann", "the wrong password")


def test_lazy_users_the_count_at_login_and_the_names_after(make: Callable[..., Client]) -> None:
    make().login("ann", PW)
    b = make(lazy_users=True)
    lists: queue.Queue[UsersChanged] = queue.Queue()
    b.on("users", lists.put)
    assert b.login("bea", PW).users == ()  # login_ok counts: docs/PROTOCOL.md §lazy_users
    # The list as last published, plus bea: ann's arrival may still be in the window.
    assert b.user_count() in (1, 2)
    while set(lists.get(timeout=T).users) != {"ann", "bea"}:
        pass  # the list the client asked for right after the login, and the deltas
    assert b.user_count() == 2
    make().login("cy", PW)
    while set(lists.get(timeout=T).users) != {"ann", "bea", "cy"}:
        pass
    assert b.user_count() == 3


def test_wait_for_matches_what_arrives_after_it(make: Callable[..., Client]) -> None:
    a, b = make(), make()
    a.login("asker", PW)
    b.login("answerer", PW)
    got: queue.Queue[DirectMessage] = queue.Queue()
    b.on("dm", got.put)
    a.dm("answerer", "before")
    assert got.get(timeout=T).message == "before"  # arrived before the wait began
    waiting = threading.Event()
    b.on_wait(waiting.set)

    def answer() -> None:
        if waiting.wait(T):
            a.dm("answerer", "after")

    sender = threading.Thread(target=answer)
    sender.start()
    ev = b.wait_for(DirectMessage)  # any DM: "before" must not be the one
    # The DM arrives before its ack: let the sender have its ack before the clients
    # close (it failed with ConnectionLost in its thread otherwise).
    sender.join(T)
    assert (ev.message, ev.sender) == ("after", "asker")


def test_method_named_hooks_and_a_raising_hook_reported_to_on_error(
    make: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    """The hook registry both clients share: a subclass's ``on_dm`` method is the hook
    (docs/SDK.md, Hooks); a hook that raises goes to the ``on_error`` hooks, each in
    turn; an ``on_error`` hook that raises is logged, and the hooks run on."""
    got: queue.Queue[str] = queue.Queue()
    errors: queue.Queue[HookError] = queue.Queue()

    def on_dm(self: object, event: DirectMessage) -> None:
        if event.message == "boom":
            raise ValueError("boom")
        got.put(event.message)

    def broken_on_error(failure: HookError) -> None:
        raise RuntimeError("the error hook fails too")

    a, b = make(), make(methods={"on_dm": on_dm})
    b.on("error", errors.put)
    b.on("error", broken_on_error)
    a.login("poker", PW)
    b.login("subclassed", PW)
    for text in ("hi", "boom", "after"):
        a.dm("subclassed", text)
    assert [got.get(timeout=T), got.get(timeout=T)] == ["hi", "after"]
    failure = errors.get(timeout=T)
    assert failure.hook == "on_dm" and isinstance(failure.error, ValueError)
    # Hooks run one at a time, in order: "after" went through them after the on_error
    # hook that failed, so its log record is there.
    assert any(
        r.getMessage() == "on_error hook failed" and r.exc_info is not None for r in caplog.records
    )


def test_offline_dms_arrive_at_login_and_history_pages(make: Callable[..., Client]) -> None:
    away = make()
    away.login("away3", PW)
    away.close()
    a = make()
    a.login("writer4", PW)
    for i in range(3):
        assert a.dm("away3", f"note {i}").queued
    for i in range(15):
        a.pm(f"p{i}")
    got: queue.Queue[DirectMessage] = queue.Queue()
    back = make()
    back.on("dm", got.put)
    result = back.login("away3", PW)
    assert result.replayed == 3
    assert [got.get(timeout=T).message for _ in range(3)] == ["note 0", "note 1", "note 2"]
    page = back.history(limit=10)
    assert [m.message for m in page.messages] == [f"p{i}" for i in range(5, 15)]
    assert page.has_more
    assert back.walk_history() == [f"p{i}" for i in reversed(range(15))]


def test_reconnect_resumes_with_nothing_missed(
    server: TestServer, make: Callable[..., Client]
) -> None:
    got: queue.Queue[Broadcast] = queue.Queue()
    back: queue.Queue[Reconnected] = queue.Queue()
    c = make(reconnect=True)
    c.on("broadcast", got.put)
    c.on("reconnect", back.put)
    c.login("stayer", PW)
    server.stop()
    server.start()
    with ChatClient(server.host, server.port) as talker:
        talker.login("talker", PW)
        talker.pm("said while you were reconnecting")
        event = back.get(timeout=T)
        talker.pm("said after")
    texts = [got.get(timeout=T).message for _ in range(2)]
    assert texts == ["said while you were reconnecting", "said after"]
    assert event.replayed in (0, 1)  # the first one came replayed unless it raced the login
    assert got.empty()


# ------------------------------------------------------------------ issue 33: own messages, limits


def test_own_messages_are_never_passed_back_after_a_restart(
    server: TestServer, make: Callable[..., Client]
) -> None:
    """Bob's own last line came back after a server restart ("1 missed meanwhile"), and
    his DMs came back to on_dm as if he had received them."""
    got: queue.Queue[object] = queue.Queue()
    back: queue.Queue[Reconnected] = queue.Queue()
    c = make(reconnect=True)
    for kind in ("broadcast", "dm", "dm_sent"):
        c.on(kind, got.put)
    c.on("reconnect", back.put)
    c.login("repeater", PW)
    with ChatClient(server.host, server.port) as peer:
        peer.login("peer", PW)
        c.pm("my own line")
        c.dm("peer", "my own dm")
    server.restart()
    event = back.get(timeout=T)
    assert event.replayed == 0
    with ChatClient(server.host, server.port) as talker:
        talker.login("talker", PW)
        talker.pm("after the restart")
        first = got.get(timeout=T)
    assert isinstance(first, Broadcast) and first.message == "after the restart"
    assert got.empty()


def test_dms_the_user_sent_reach_on_dm_sent_never_on_dm(
    server: TestServer, make: Callable[..., Client]
) -> None:
    """A DM sent by an earlier run (here: resumed from a seq before it), and a DM to
    oneself, are DmSent events: on_dm only ever sees DMs from others."""
    first = make()
    first.login("writer", PW)
    with ChatClient(server.host, server.port) as peer:
        peer.login("reader", PW)
        mark = first.pm("before the mark").seq
        assert mark is not None
        first.dm("READER", "sent by the first run")
        first.close()
        dms: queue.Queue[DirectMessage] = queue.Queue()
        sent: queue.Queue[DmSent] = queue.Queue()
        again = make(resume_from=mark)
        again.on("dm", dms.put)
        again.on("dm_sent", sent.put)
        result = again.login("writer", PW)
        assert result.replayed == 1
        earlier = sent.get(timeout=T)
        assert (earlier.sender, earlier.to, earlier.message) == (
            "writer",
            "reader",
            "sent by the first run",
        )
        assert (earlier.seq, earlier.replayed) == (mark + 1, True)
        waiting = threading.Event()
        again.on_wait(waiting.set)
        noted: queue.Queue[DmSent] = queue.Queue()
        t = threading.Thread(target=lambda: noted.put(again.wait_for(DmSent)))
        t.start()
        assert waiting.wait(T)
        receipt = again.dm("writer", "a note to myself")
        t.join(T)
        note = noted.get(timeout=T)
        assert (note.to, note.message, note.seq, note.replayed) == (
            "writer",
            "a note to myself",
            receipt.seq,
            False,
        )
        assert sent.get(timeout=T) == note
        peer.dm("writer", "from someone else")
        assert dms.get(timeout=T).sender == "reader"
    assert dms.empty() and sent.empty()


def test_a_message_over_the_limits_is_refused_before_it_is_sent(
    server: TestServer, make: Callable[..., Client]
) -> None:
    """A pasted 1 MB message was sent, refused (too_large closes the connection), resent
    after the reconnect, and again, until the call timed out: 36 reconnects in 10 s, each
    a leave and a join for everyone else."""
    lost: queue.Queue[Disconnect] = queue.Queue()
    c = make(reconnect=True)
    c.on("disconnect", lost.put)
    c.login("paster", PW)
    with pytest.raises(MessageTooLong, match=r"^bad_request: message is 1,048,576 characters; "):
        c.pm("x" * 1_048_576)
    with pytest.raises(MessageTooLong) as exc:
        c.dm("paster", "y" * 4001)
    assert exc.value.message == "message is 4,001 characters; the limit is 4,000"
    assert c.pm("z" * 4000).seq is not None  # at the limit, on the same connection
    assert lost.empty()


def test_a_refused_relogin_ends_its_connection_and_reconnects(
    server: TestServer, make: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/RELIABILITY.md F5: the automatic re-login after a reconnect answered
    ``unavailable`` (the database down) left the client on an open connection that was
    not logged in, every send refused ``not_logged_in``, until the server's 30 s login
    timeout closed it. The refusal ends that connection; the client tries again after
    its backoff, and is back as soon as the server lets it in."""
    back: queue.Queue[Reconnected] = queue.Queue()
    gone: queue.Queue[Disconnect] = queue.Queue()
    c = make(reconnect=True)
    c.on("reconnect", back.put)
    c.on("disconnect", gone.put)
    c.login("refused", PW)
    store = server.server._store
    assert store is not None
    real = store.authenticate

    def down(*_: Any) -> Any:
        raise AccountStoreBusy("the database is down")

    monkeypatch.setattr(store, "authenticate", down)
    with server.server._lock:
        conn = server.server._by_key["refused"]
    conn.sock.shutdown(socket.SHUT_RDWR)  # the network drops it
    first = gone.get(timeout=T)
    assert first.reason == "network" and first.will_reconnect
    refused = gone.get(timeout=T)
    assert refused.reason == "unavailable" and refused.will_reconnect
    monkeypatch.setattr(store, "authenticate", real)  # the database is back
    back.get(timeout=T)
    assert c.pm("logged in again").seq is not None
