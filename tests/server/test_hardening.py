"""Each hardening default (docs/PROTOCOL.md §Flood control, §Timeouts; docs/SECURITY.md),
tested with small limits and a hand-driven clock: nothing waits for real time."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import pytest

from chatroom import ChatClient, RateLimited, UsersChanged
from chatroom.testing import running_server
from tests.helpers import PASSWORD, RawClient, connect


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def hardened(clock: FakeClock, **options: Any) -> Any:
    # Sweeps run only when a test calls srv.server.sweep().
    return running_server(users_interval=0, clock=clock, housekeeping_interval=3600, **options)


def test_rate_limit_refuses_the_excess_and_says_so(clock: FakeClock) -> None:
    with hardened(clock) as srv:  # defaults: burst 20, 10 commands/s
        talker = connect(srv.address, "talker")
        other = connect(srv.address, "other")
        talker.expect("users", joined="other")
        talker.send_raw(
            b"".join(
                json.dumps({"command": "pm", "message": f"m{i}", "id": i}).encode() + b"\n"
                for i in range(25)
            )
        )
        replies = [talker.recv() for _ in range(25)]
        # The login used one of the 20 tokens.
        assert [r["type"] for r in replies] == ["ack"] * 19 + ["error"] * 6
        assert {r["code"] for r in replies[19:]} == {"rate_limited"}
        assert [r["id"] for r in replies[19:]] == [19, 20, 21, 22, 23, 24]
        clock.advance(1.0)  # ten more tokens
        talker.send(command="pm", message="after a second", id="late")
        talker.expect("ack", id="late")
        got = [other.expect("broadcast")["message"] for _ in range(20)]
        assert got == [f"m{i}" for i in range(19)] + ["after a second"]  # refused ones lost


def test_sustained_flood_disconnects(clock: FakeClock) -> None:
    with hardened(clock, rate_limit=2.0, rate_burst=2, flood_factor=5.0, flood_seconds=3) as srv:
        flooder = connect(srv.address, "flooder")
        bystander = connect(srv.address, "bystander")
        flooder.expect("users", joined="bystander")
        for second in range(3):
            flooder.send_raw(b'{"command":"ping"}\n' * 11)  # over 2 * 5 = 10 per second
            frames = [flooder.recv() for _ in range(11 if second < 2 else 10)]
            assert {f["type"] for f in frames} <= {"pong", "error"}
            clock.advance(1.0) if second < 2 else None
        assert flooder.wait_closed() == [{"type": "bye", "reason": "flood"}]
        bystander.until("users", left="flooder")


def test_a_fast_but_legal_client_is_not_disconnected(clock: FakeClock) -> None:
    with hardened(clock, rate_limit=2.0, rate_burst=2, flood_factor=5.0, flood_seconds=3) as srv:
        c = connect(srv.address, "busy")
        for _ in range(6):
            c.send_raw(b'{"command":"ping"}\n' * 10)  # exactly the flood threshold
            for _ in range(10):
                c.recv()
            clock.advance(1.0)
        c.send(command="users", id="alive")
        c.until("users", id="alive")


def test_sdk_raises_rate_limited(clock: FakeClock) -> None:
    with hardened(clock, rate_burst=3) as srv, ChatClient(srv.host, srv.port) as c:
        c.login("eager", PASSWORD)  # one token
        c.pm("one")
        c.pm("two")
        with pytest.raises(RateLimited) as info:
            c.pm("three")
        assert info.value.code == "rate_limited"


def test_login_window(clock: FakeClock) -> None:
    with hardened(clock) as srv:
        member = connect(srv.address, "member")
        lurker = RawClient(srv.address)
        lurker.send(command="ping")
        lurker.expect("pong")
        clock.advance(29.0)
        assert srv.server.sweep() == 0
        clock.advance(2.0)
        assert srv.server.sweep() == 1
        assert lurker.wait_closed() == [{"type": "bye", "reason": "timeout"}]
        member.send(command="ping")  # logged in: not subject to the login window
        member.expect("pong")


def test_at_most_twenty_frames_before_login(clock: FakeClock) -> None:
    with hardened(clock, rate_limit=None) as srv, RawClient(srv.address) as c:
        c.send_raw(b'{"command":"ping"}\n' * 21)
        frames = c.wait_closed()
        assert [f["type"] for f in frames] == ["pong"] * 20 + ["error"]
        assert frames[-1]["code"] == "not_logged_in"


def test_idle_logged_in_clients_are_closed(clock: FakeClock) -> None:
    with hardened(clock) as srv:
        quiet = connect(srv.address, "quiet")
        chatty = connect(srv.address, "chatty")
        quiet.expect("users", joined="chatty")
        clock.advance(100.0)
        chatty.send(command="ping")
        chatty.expect("pong")
        clock.advance(21.0)  # quiet: 121 s of silence; chatty: 21 s
        assert srv.server.sweep() == 1
        assert quiet.wait_closed()[-1] == {"type": "bye", "reason": "timeout"}
        chatty.expect("users", left="quiet")


def test_sdk_keepalive_keeps_a_client_in() -> None:
    # Real time here: a client with a 0.2 s keepalive against a 1 s idle timeout.
    with (
        running_server(users_interval=0.05, idle_timeout=1.0, housekeeping_interval=0.1) as srv,
        ChatClient(srv.host, srv.port, keepalive=0.2, timeout=2.0) as c,
    ):
        c.login("pinger", PASSWORD)
        # Pushes arrive every 0.05 s, so only our own pings prove we are alive. Wait for
        # 30 pushes (1.5 s, past the idle timeout) and check we are still in.
        for _ in range(30):
            c.wait_for(UsersChanged, timeout=2.0)
        assert c.request_users() == ("pinger",)


def test_per_address_cap(clock: FakeClock) -> None:
    with hardened(clock, exempt_loopback=False, max_per_ip=2) as srv:
        a, b = RawClient(srv.address), RawClient(srv.address)
        for c in (a, b):
            c.send(command="ping")
            c.expect("pong")
        third = RawClient(srv.address)
        closed = third.wait_closed()
        assert closed[0]["code"] == "server_full"
        assert "too many connections from 127.0.0.1" in closed[0]["message"]
        a.close()
        b.send(command="ping")
        b.expect("pong")


def test_loopback_is_exempt_by_default(clock: FakeClock) -> None:
    with hardened(clock, max_per_ip=1) as srv:
        clients = [RawClient(srv.address) for _ in range(3)]
        for c in clients:
            c.send(command="ping")
            c.expect("pong")


def test_wrong_passwords_back_off_per_account_across_connections(clock: FakeClock) -> None:
    with hardened(clock) as srv:
        connect(srv.address, "target").close()
        attacker = RawClient(srv.address)
        for _ in range(4):
            attacker.send(command="login", username="target", password="guess guess")
            attacker.expect_error("bad_credentials")
        owner = RawClient(srv.address)  # another connection, the right password
        owner.send(command="login", username="target", password=PASSWORD)
        refused = owner.expect_error("rate_limited")
        assert "try again in 1 s" in refused["message"]
        clock.advance(1.5)
        owner.login("target")


def test_registration_burst_per_address(clock: FakeClock) -> None:
    with hardened(clock, exempt_loopback=False, registrations_per_ip=2) as srv:
        connect(srv.address, "new1").close()
        connect(srv.address, "new2").close()
        c = RawClient(srv.address)
        c.send(command="login", username="new3", password=PASSWORD)
        assert "too many new accounts" in c.expect_error("rate_limited")["message"]
        c.send(command="login", username="new1", password=PASSWORD)  # logins still work
        c.expect("login_ok")
        clock.advance(61.0)
        connect(srv.address, "new3").close()


def test_stalled_slow_consumer_is_dropped(clock: FakeClock) -> None:
    with hardened(clock, rate_limit=None, send_buffer=8192, max_output=64 << 20) as srv:
        stuck = RawClient(srv.address)
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.login("stuck")
        sender = connect(srv.address, "sender")
        # Fill stuck's kernel buffers so a backlog builds in the server; the ack of the
        # last message means every broadcast has been handed to stuck's outbox.
        for i in range(200):
            sender.send(command="pm", message="x" * 1000, id=i)
        for i in range(200):
            sender.expect("ack", id=i)
        clock.advance(5.0)
        assert srv.server.sweep() == 0
        assert "stuck" in srv.server.online
        clock.advance(6.0)  # over 10 s without progress
        srv.server.sweep()
        sender.until("users", left="stuck")


def test_login_window_spares_a_login_the_server_is_still_checking(clock: FakeClock) -> None:
    with hardened(clock) as srv:
        gate = threading.Event()
        entered = threading.Event()
        store = srv.server._store
        real_authenticate = store.authenticate

        def slow_authenticate(name: str, password: str) -> Any:
            entered.set()
            gate.wait(10)  # the password check is queued behind other hashing
            return real_authenticate(name, password)

        connect(srv.address, "patient").close()
        store.authenticate = slow_authenticate
        c = RawClient(srv.address)
        c.send(command="login", username="patient", password=PASSWORD)
        assert entered.wait(10)
        clock.advance(31.0)
        assert srv.server.sweep() == 0  # not closed while its login is being checked
        gate.set()
        c.expect("login_ok")
