"""ChatClient against a real server: methods, hooks, threading contract, liveness."""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from chatroom import (
    AuthError,
    Broadcast,
    ChatClient,
    ChatTimeout,
    ConnectFailed,
    DirectMessage,
    Disconnect,
    HookError,
    RateLimited,
    Reconnected,
    ServerError,
    ServerNotice,
    UsageError,
    UserOffline,
    UsersChanged,
)
from chatroom.testing import TestServer, running_server
from tests.helpers import quiet_server

PW = "correct horse"
T = 10.0  # generous bound on every queue wait; tests never sleep


@pytest.fixture
def clients(server: TestServer) -> Iterator[list[ChatClient]]:
    made: list[ChatClient] = []
    yield made
    for c in made:
        c.close()


def make(
    server: TestServer, clients: list[ChatClient], name: str | None = None, **kw: object
) -> ChatClient:
    c = ChatClient(server.host, server.port, **kw)  # type: ignore[arg-type]
    clients.append(c)
    c.connect()
    if name:
        c.login(name, PW)
    return c


def test_login_check_user_and_users(server: TestServer, clients: list[ChatClient]) -> None:
    a = make(server, clients)
    assert a.check_user("alice") is True
    r = a.login("Alice", PW)
    assert (r.username, r.new_user, r.users) == ("Alice", True, ("Alice",))
    assert a.username == "Alice"
    b = make(server, clients)
    assert b.check_user("ALICE") is False
    # The whole answer: for a new name, the password lengths it may have.
    fresh = b.check_user("carol", full=True)
    assert (fresh.new_user, fresh.min_password, fresh.max_password) == (True, 8, 1024)
    assert b.check_user("alice", full=True).min_password is None
    with a.expect(UsersChanged, check=lambda e: "bob" in e.joined) as seen_by_a:
        b.login("bob", PW)
        seen_by_a.wait()
    assert a.users == b.users == ("Alice", "bob")  # live snapshots follow the pushes
    assert a.request_users() == ("Alice", "bob")
    assert a.ping() < T


def test_auth_errors(server: TestServer, clients: list[ChatClient]) -> None:
    make(server, clients, "taken")
    c = make(server, clients)
    with pytest.raises(AuthError) as info:
        c.login("taken", "wrong password")
    assert info.value.code == "bad_credentials"
    with pytest.raises(AuthError, match="weak_password"):
        c.login("newname", "short")
    with pytest.raises(AuthError, match="invalid_username"):
        c.login("not valid!", PW)


def test_pm_dm_and_hooks(server: TestServer, clients: list[ChatClient]) -> None:
    got: queue.Queue[object] = queue.Queue()
    b = ChatClient(server.host, server.port)
    clients.append(b)
    b.on_broadcast(got.put)
    b.on_dm(got.put)
    b.on_users(got.put)
    b.connect()
    b.login("bee", PW)
    assert got.get(timeout=T) == UsersChanged(users=("bee",), joined=("bee",))
    a = make(server, clients, "ay")
    assert got.get(timeout=T) == UsersChanged(users=("ay", "bee"), joined=("ay",))
    a.pm("hello")
    ev = got.get(timeout=T)
    assert isinstance(ev, Broadcast) and (ev.sender, ev.message) == ("ay", "hello")
    assert a.dm("BEE", "psst").to == "bee"
    ev = got.get(timeout=T)
    assert isinstance(ev, DirectMessage) and (ev.sender, ev.to, ev.message) == ("ay", "bee", "psst")
    with pytest.raises(UserOffline) as info:
        a.dm("ghost", "boo")
    assert info.value.code == "unknown_user"
    with pytest.raises(ServerError) as err:
        a.pm("")
    assert err.value.code == "bad_request"


def test_dm_to_registered_but_offline_user(clients: list[ChatClient]) -> None:
    """Without the message log (``--history off``) an offline recipient is an error."""
    with quiet_server(history=False) as v1:
        gone = make(v1, clients, "gone")
        gone.close()
        a = make(v1, clients, "asker")
        with pytest.raises(UserOffline) as info:
            a.dm("gone", "hello?")
        assert info.value.code == "user_offline"
        a.close()


def test_subclass_hooks(server: TestServer, clients: list[ChatClient]) -> None:
    got: queue.Queue[DirectMessage] = queue.Queue()

    class Bot(ChatClient):
        def on_dm(self, event: DirectMessage) -> None:  # type: ignore[override]
            got.put(event)

    bot = Bot(server.host, server.port)
    clients.append(bot)
    bot.connect()
    bot.login("subbot", PW)
    make(server, clients, "poker").dm("subbot", "hi")
    assert got.get(timeout=T).message == "hi"


def test_concurrent_sends_from_eight_threads(server: TestServer, clients: list[ChatClient]) -> None:
    sender = make(server, clients, "many")
    got: queue.Queue[Broadcast] = queue.Queue()
    rx = ChatClient(server.host, server.port)
    clients.append(rx)
    rx.on_broadcast(got.put)
    rx.connect()
    rx.login("listener", PW)
    per_thread = 50

    def burst(t: int) -> None:
        for i in range(per_thread):
            sender.pm(f"{t}:{i}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(burst, range(8)))
    seen: dict[int, list[int]] = {t: [] for t in range(8)}
    for _ in range(8 * per_thread):
        t, i = got.get(timeout=T).message.split(":")
        seen[int(t)].append(int(i))
    # Each thread's messages arrive in its order; nothing lost or duplicated.
    assert all(v == list(range(per_thread)) for v in seen.values())


def test_hook_may_call_dm_and_wait(server: TestServer, clients: list[ChatClient]) -> None:
    echo = make(server, clients, "echoer")
    results: queue.Queue[object] = queue.Queue()

    @echo.on_dm
    def answer(event: DirectMessage) -> None:
        results.put(echo.dm(event.sender, f"echo {event.message}").to)  # blocks for its ack

    asker = make(server, clients, "asker2")
    with asker.expect(DirectMessage) as w:
        asker.dm("echoer", "ping?")
        assert w.wait().message == "echo ping?"
    assert results.get(timeout=T) == "asker2"


def test_slow_hook_does_not_block_acks(server: TestServer, clients: list[ChatClient]) -> None:
    release = threading.Event()
    c = make(server, clients, "slowpoke")
    c.on_broadcast(lambda e: release.wait(T))
    other = make(server, clients, "talker")
    other.pm("occupy the hook")
    # While the hook is stuck, requests still complete: the receive thread reads acks.
    c.pm("still works")
    assert c.ping() < T
    release.set()


def test_hook_that_raises_goes_to_on_error(
    server: TestServer, clients: list[ChatClient], caplog: pytest.LogCaptureFixture
) -> None:
    c = make(server, clients, "fragile")
    errors: queue.Queue[HookError] = queue.Queue()
    got: queue.Queue[Broadcast] = queue.Queue()

    @c.on_broadcast
    def bad(event: Broadcast) -> None:
        if event.message == "boom":
            raise ValueError("hook failed")
        got.put(event)

    c.on_error(errors.put)
    other = make(server, clients, "bomber")
    other.pm("boom")
    other.pm("after")
    failure = errors.get(timeout=T)
    assert failure.hook == "on_broadcast" and isinstance(failure.error, ValueError)
    assert got.get(timeout=T).message == "after"  # the dispatch thread lives on


def test_hook_error_is_logged_by_default(
    server: TestServer, clients: list[ChatClient], caplog: pytest.LogCaptureFixture
) -> None:
    c = make(server, clients, "logged")
    done: queue.Queue[str] = queue.Queue()

    @c.on_broadcast
    def bad(event: Broadcast) -> None:
        if event.message == "boom":
            raise RuntimeError("kaboom")
        done.put(event.message)

    other = make(server, clients, "sender3")
    with caplog.at_level(logging.ERROR, logger="chatroom.client"):
        other.pm("boom")
        other.pm("next")
        assert done.get(timeout=T) == "next"
    assert any("on_broadcast hook raised" in r.message and r.exc_info for r in caplog.records)


def test_wait_for_times_out(server: TestServer, clients: list[ChatClient]) -> None:
    c = make(server, clients, "waiter")
    with pytest.raises(ChatTimeout):
        c.wait_for(DirectMessage, timeout=0.05)
    with pytest.raises(TimeoutError):  # ChatTimeout is a TimeoutError
        c.wait_for(Broadcast, check=lambda e: False, timeout=0.05)


def test_wait_for_with_check(server: TestServer, clients: list[ChatClient]) -> None:
    c = make(server, clients, "picky")
    a = make(server, clients, "alpha")
    b = make(server, clients, "bravo")
    with c.expect(DirectMessage, check=lambda e: e.sender == "bravo") as w:
        a.dm("picky", "from a")
        b.dm("picky", "from b")
        assert w.wait().message == "from b"


def test_close_from_inside_a_hook(server: TestServer, clients: list[ChatClient]) -> None:
    c = make(server, clients, "quitter")
    disconnects: queue.Queue[tuple[Disconnect, bool]] = queue.Queue()
    c.on_disconnect(lambda e: disconnects.put((e, c.closed)))
    c.on_dm(lambda e: c.close())
    watcher = make(server, clients, "watcher")
    with watcher.expect(UsersChanged, check=lambda e: "quitter" in e.left) as w:
        watcher.dm("quitter", "please leave")
        w.wait()
    event, closed_then = disconnects.get(timeout=T)
    assert event.reason == "exit"
    assert closed_then  # closed from the moment close() began, hooks included
    assert c.closed
    with pytest.raises(UsageError):
        c.pm("too late")
    c.close()  # idempotent


def test_close_is_idempotent_and_joins_threads(server: TestServer) -> None:
    before = set(threading.enumerate())
    c = ChatClient(server.host, server.port)
    c.connect()
    c.login("joiner", PW)
    c.close()
    c.close()
    leftover = [
        t
        for t in set(threading.enumerate()) - before
        if t.name.startswith(("chat-recv", "chat-hooks"))
    ]
    assert leftover == []


def test_server_shutdown_is_on_disconnect(clients: list[ChatClient]) -> None:
    with quiet_server() as srv:
        c = ChatClient(srv.host, srv.port)
        clients.append(c)
        events: queue.Queue[Disconnect] = queue.Queue()
        c.on_disconnect(events.put)
        c.connect()
        c.login("shutdowner", PW)
        srv.stop()
        ev = events.get(timeout=T)
        assert (ev.reason, ev.will_reconnect) == ("server_shutdown", False)


def test_session_replaced(server: TestServer, clients: list[ChatClient]) -> None:
    first = ChatClient(server.host, server.port, reconnect=True)
    clients.append(first)
    events: queue.Queue[Disconnect] = queue.Queue()
    first.on_disconnect(events.put)
    first.connect()
    first.login("dup", PW)
    make(server, clients, "dup")
    ev = events.get(timeout=T)
    assert (ev.reason, ev.will_reconnect) == ("session_replaced", False)


def test_reconnect_after_server_restart(clients: list[ChatClient]) -> None:
    with quiet_server() as srv:
        c = ChatClient(srv.host, srv.port, reconnect=True, reconnect_max_delay=0.2)
        clients.append(c)
        events: queue.Queue[object] = queue.Queue()
        c.on_disconnect(events.put)
        c.on_reconnect(events.put)
        c.connect()
        c.login("phoenix", PW)
        srv.restart()
        lost = events.get(timeout=T)
        assert isinstance(lost, Disconnect) and lost.will_reconnect
        back = events.get(timeout=T)
        assert isinstance(back, Reconnected) and back.result.users == ("phoenix",)
        other = ChatClient(srv.host, srv.port)
        clients.append(other)
        other.connect()
        other.login("friend", PW)
        with c.expect(DirectMessage) as w:
            other.dm("phoenix", "welcome back")
            assert w.wait().message == "welcome back"
        c.pm("I am back")


def test_connect_failure_is_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        with pytest.raises(ConnectFailed) as info:
            ChatClient("127.0.0.1", port, timeout=2).connect()
    assert isinstance(info.value, ConnectionError)


def test_misuse_is_usage_error(server: TestServer) -> None:
    c = ChatClient(server.host, server.port)
    with pytest.raises(UsageError):
        c.pm("not connected")
    c.connect()
    with pytest.raises(UsageError):
        c.connect()
    with pytest.raises(ServerError) as info:
        c.pm("not logged in")
    assert info.value.code == "not_logged_in"
    c.close()


def test_keepalive_detects_a_dead_server(clients: list[ChatClient]) -> None:
    # A "server" that accepts and then never says anything.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        c = ChatClient("127.0.0.1", listener.getsockname()[1], timeout=0.3, keepalive=0.3)
        clients.append(c)
        events: queue.Queue[Disconnect] = queue.Queue()
        c.on_disconnect(events.put)
        c.connect()
        peer, _ = listener.accept()
        with peer:
            ev = events.get(timeout=T)
            assert ev.reason == "network" and isinstance(ev.error, ChatTimeout)
            peer.settimeout(T)
            assert b'"ping"' in peer.recv(100)  # it did try a ping first


def test_request_timeout(clients: list[ChatClient]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        c = ChatClient("127.0.0.1", listener.getsockname()[1], timeout=0.2)
        clients.append(c)
        c.connect()
        with pytest.raises(ChatTimeout):
            c.check_user("anyone")


def test_inline_hooks_run_on_receive_thread(server: TestServer, clients: list[ChatClient]) -> None:
    c = ChatClient(server.host, server.port, inline_hooks=True)
    clients.append(c)
    out: queue.Queue[object] = queue.Queue()

    @c.on_broadcast
    def inline(event: Broadcast) -> None:
        out.put(threading.current_thread().name)
        try:
            c.pm("blocking from an inline hook")
        except UsageError as exc:
            out.put(exc)

    c.connect()
    c.login("inliner", PW)
    make(server, clients, "poster").pm("go")
    assert "recv" in str(out.get(timeout=T))
    assert isinstance(out.get(timeout=T), UsageError)


def test_fire_and_forget_sends_and_notices(clients: list[ChatClient]) -> None:
    # A frozen server clock: the bucket never refills, whatever the logins in between cost.
    with running_server(users_interval=0, rate_burst=3, clock=lambda: 1000.0) as srv:
        a = ChatClient(srv.host, srv.port)
        clients.append(a)
        notices: queue.Queue[ServerNotice] = queue.Queue()
        a.on_notice(notices.put)
        a.connect()
        a.login("hasty", PW)  # one token of three
        b = ChatClient(srv.host, srv.port)
        clients.append(b)
        got: queue.Queue[Broadcast] = queue.Queue()
        b.on_broadcast(got.put)
        b.connect()
        b.login("calm", PW)
        a.pm("one", wait=False)
        assert a.dm("calm", "two", wait=False).to == "calm"
        a.pm("three", wait=False)  # over the burst: refused, reported as a notice
        assert got.get(timeout=T).message == "one"
        notice = notices.get(timeout=T)
        assert isinstance(notice.error, RateLimited)


class _IdleWakeQueue:
    """The dispatcher's queue, whose first get() times out only once the receive thread
    has finished: the dispatcher wakes idle just as the connection ends."""

    def __init__(self, finished: threading.Event) -> None:
        self._inner: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._finished = finished
        self._first = True

    def put(self, item: object) -> None:
        self._inner.put(item)

    def empty(self) -> bool:
        return self._inner.empty()

    def get(self, block: bool = True, timeout: float | None = None) -> object:
        if self._first:
            self._first = False
            assert self._finished.wait(T)
            raise queue.Empty
        return self._inner.get(block, timeout)


def test_the_end_of_a_connection_reaches_the_hooks_when_the_dispatcher_wakes_idle() -> None:
    """Before, a dispatcher whose get() timed out as the connection ended saw both stop
    flags set and returned, and the Disconnect (a ban's notice too) queued just before
    never reached the hooks (seen as a flaky server-ban test under load)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        c = ChatClient(*listener.getsockname()[:2])
        ends: queue.Queue[Disconnect] = queue.Queue()
        c.on_disconnect(ends.put)
        c._events = _IdleWakeQueue(c._closed)  # type: ignore[assignment]
        try:
            c.connect()
            peer, _ = listener.accept()
            peer.close()  # the server goes: the receive thread ends
            assert ends.get(timeout=T).will_reconnect is False
        finally:
            c.close()
