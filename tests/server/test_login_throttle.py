"""Wrong passwords slow their source down, never the account's owner from elsewhere
(chatroom_server.limits.LoginThrottle, docs/SECURITY.md, docs/PROTOCOL.md §Flood
control). The attacks run on a hand-driven clock, from several loopback addresses
(127.0.0.2, 127.0.0.3, ...: Linux routes all of 127/8 to lo) with the loopback
exemption off, so the per-address measures apply as they would to real addresses."""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from typing import Any

import pytest

from chatroom.protocol import FrameDecoder
from chatroom.testing import TestServer, running_server
from chatroom_server.limits import LoginAttempt, LoginThrottle, Throttled
from tests.helpers import OPEN_CLIENTS, PASSWORD, RawClient, connect


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class From(RawClient):
    """A RawClient whose connection comes from the loopback address ``source``."""

    def __init__(self, address: tuple[str, int], source: str) -> None:
        self.sock = socket.create_connection(address, timeout=10.0, source_address=(source, 0))
        self.timeout = 10.0
        self._decoder = FrameDecoder(1 << 20)
        self._frames: deque[bytes] = deque()
        OPEN_CLIENTS.append(self)


def exposed(clock: FakeClock, **options: Any) -> Any:
    """A server that treats loopback addresses as it would remote ones."""
    return running_server(
        users_interval=0,
        clock=clock,
        housekeeping_interval=3600,
        exempt_loopback=False,
        password_hash="load-test",
        **options,
    )


def owner_waits(
    srv: TestServer,
    clock: FakeClock,
    attackers: list[str],
    owner: str,
    *,
    rate: float = 7.0,
    every: float = 2.0,
    head_start: float = 10.0,
    horizon: float = 300.0,
) -> float | None:
    """The attack of issue 33: each address guesses ``rate`` wrong passwords a second
    (taking turns), on a new connection after every 5 (the server closes one then).
    After ``head_start`` seconds the owner tries the right password from ``owner`` every
    ``every`` seconds. How long the owner waited to get in; None: not within ``horizon``."""
    conns: dict[str, tuple[RawClient, int]] = {}
    step = 1.0 / (rate * len(attackers))
    start = clock.now
    next_try = start + head_start
    first_try: float | None = None
    n = 0
    while clock.now - start < horizon:
        ip = attackers[n % len(attackers)]
        c, used = conns.get(ip) or (From(srv.address, ip), 0)
        c.send(command="login", username="owner", password="not the password", id=n)
        reply = c.recv()
        assert reply["type"] == "error" and reply["code"] in ("bad_credentials", "rate_limited")
        used += 1
        if used == 5:
            c.wait_closed()
            c.close()
            conns.pop(ip, None)
        else:
            conns[ip] = (c, used)
        n += 1
        clock.now += step
        if clock.now >= next_try:
            first_try = clock.now if first_try is None else first_try
            me = From(srv.address, owner)
            began = time.monotonic()
            me.send(command="login", username="owner", password=PASSWORD, id="me")
            got = me.recv()
            answered = time.monotonic() - began  # the ceiling's wait is real time
            me.close()
            if got["type"] == "login_ok":
                return clock.now - first_try + answered
            assert got["code"] == "rate_limited", got
            next_try += every
    return None


@pytest.mark.parametrize("attackers", [1, 4])
def test_an_attacker_cannot_keep_the_owner_out(attackers: int) -> None:
    clock = FakeClock()
    with exposed(clock) as srv:
        connect(srv.address, "owner").close()
        addresses = [f"127.0.0.{2 + i}" for i in range(attackers)]
        waited = owner_waits(srv, clock, addresses, "127.0.0.9")
        # Before, the account itself was locked, for everyone, and the attack renewed
        # the lock as it ran out: the owner got in after 22 s against one address and
        # was still out after the 300 s measured against four (None). Now the attack
        # slows its own addresses down, and the owner gets in at the first try.
        assert waited is not None and waited < 1.0, waited


def test_one_address_cannot_keep_the_owner_out_with_the_default_exemption() -> None:
    # The same from loopback with its exemption on: the measures per account and
    # address still hold (only the per-address one is waived).
    clock = FakeClock()
    with running_server(users_interval=0, clock=clock, password_hash="load-test") as srv:
        connect(srv.address, "owner").close()
        waited = owner_waits(srv, clock, ["127.0.0.2"], "127.0.0.3", horizon=60.0)
        assert waited is not None and waited < 1.0, waited


def test_wrong_passwords_wait_per_account_and_address() -> None:
    clock = FakeClock()
    with exposed(clock) as srv:
        connect(srv.address, "target").close()
        guesser = From(srv.address, "127.0.0.2")
        for _ in range(4):  # three free, the fourth earns a wait of 1 s
            guesser.send(command="login", username="target", password="guess guess")
            guesser.expect_error("bad_credentials")
        guesser.send(command="login", username="target", password=PASSWORD, id=1)
        refused = guesser.expect_error("rate_limited", id=1)
        assert refused["message"] == (
            "too many wrong passwords for target from 127.0.0.2; try again in 1 s"
        )
        owner = From(srv.address, "127.0.0.3")  # another address: not slowed at all
        owner.send(command="login", username="target", password=PASSWORD)
        owner.expect("login_ok")
        clock.now += 1.0
        again = From(srv.address, "127.0.0.2")
        again.send(command="login", username="target", password=PASSWORD)
        again.expect("login_ok")  # a right password resets that address's count


def test_one_address_guessing_across_accounts_waits_for_any_account() -> None:
    clock = FakeClock()
    with exposed(clock, login_address_free=3, registrations_per_ip=100) as srv:
        for name in ("ann", "ben", "cid"):
            connect(srv.address, name).close()
        sprayer = From(srv.address, "127.0.0.2")
        for name in ("ann", "ben", "cid", "ann"):  # 3 free; none over 3 per account
            sprayer.send(command="login", username=name, password="season2024")
            sprayer.expect_error("bad_credentials")
        sprayer.send(command="login", username="ben", password=PASSWORD, id="x")
        refused = sprayer.expect_error("rate_limited", id="x")
        assert refused["message"] == "too many wrong passwords from 127.0.0.2; try again in 1 s"
        other = From(srv.address, "127.0.0.3")
        other.send(command="login", username="ben", password=PASSWORD)
        other.expect("login_ok")


def test_many_addresses_are_slowed_by_the_ceiling_and_the_owner_still_gets_in() -> None:
    clock = FakeClock()
    with exposed(clock, login_account_burst=2, login_account_gap=0.05) as srv:
        connect(srv.address, "owner").close()
        for i in range(4):  # 12 wrong passwords at once: 2 checked at once, then 1 per 0.05 s
            guesser = From(srv.address, f"127.0.0.{2 + i}")
            for _ in range(3):
                guesser.send(command="login", username="owner", password="guess guess")
                guesser.expect_error("bad_credentials")
        owner = From(srv.address, "127.0.0.9")
        began = time.monotonic()
        owner.send(command="login", username="owner", password=PASSWORD)
        owner.expect("login_ok")  # slowed (its turn after the 11 queued), never refused
        assert time.monotonic() - began >= 0.45  # the server waited for the owner's turn


# ------------------------------------------------------------------ the throttle alone


def attempt(t: LoginThrottle, account: str, address: str, now: float) -> LoginAttempt:
    got = t.begin(account, address, now)
    assert isinstance(got, LoginAttempt), f"refused: {got.scope} {got.wait}"
    return got


def test_the_account_ceiling_slows_in_turn_and_never_refuses() -> None:
    t = LoginThrottle(free=3, account_burst=4, account_gap=1.0)
    now = 0.0
    # Six addresses guess at once: four checks at once, then one a second, in turn.
    delays = []
    for i in range(6):
        a = attempt(t, "owner", f"10.0.0.{i}", now)
        delays.append(a.delay)
        a.failed(now)
    assert delays == [0.0, 0.0, 0.0, 0.0, 1.0, 2.0]
    # The owner, from an address that has not failed: the next slot, not a refusal.
    owner = attempt(t, "owner", "192.0.2.1", now)
    assert owner.delay == 3.0
    owner.succeeded(now + 3.0)  # ... and gives the slot back
    assert attempt(t, "owner", "192.0.2.1", now).delay == 3.0
    # Time refills the ceiling; other accounts never shared it.
    assert attempt(t, "other", "10.0.0.0", now).delay == 0.0
    assert attempt(t, "owner", "192.0.2.2", now + 10.0).delay == 0.0


def test_a_burst_of_connections_gets_no_more_than_the_free_checks() -> None:
    t = LoginThrottle(free=3)
    under_way = [attempt(t, "owner", "10.0.0.1", 0.0) for _ in range(3)]
    refused = t.begin("owner", "10.0.0.1", 0.0)
    assert isinstance(refused, Throttled) and refused.scope == "checking"
    assert isinstance(t.begin("owner", "10.0.0.2", 0.0), LoginAttempt)  # other address
    for a in under_way:
        a.failed(0.0)
    # Three failures: a fourth check is free; its failure earns a wait.
    fourth = attempt(t, "owner", "10.0.0.1", 0.0)
    again = t.begin("owner", "10.0.0.1", 0.0)
    assert isinstance(again, Throttled) and again.scope == "checking"  # one at a time now
    fourth.failed(0.0)
    wait = t.begin("owner", "10.0.0.1", 0.5)
    assert isinstance(wait, Throttled) and wait.scope == "account" and wait.wait == 0.5


def test_failures_are_forgotten_and_the_tables_bounded() -> None:
    t = LoginThrottle(free=1, cap=60.0, forget=900.0, size=3)
    for k in range(8):
        a = attempt(t, "owner", "10.0.0.1", k * 61.0)
        a.failed(k * 61.0)  # a wait of 1, 2, 4, ... capped at 60
    refused = t.begin("owner", "10.0.0.1", 7 * 61.0 + 1)
    assert isinstance(refused, Throttled) and refused.wait == 59.0
    # 15 minutes without a failure: that address starts afresh (one free failure).
    later = 7 * 61.0 + 901
    attempt(t, "owner", "10.0.0.1", later).failed(later)
    attempt(t, "owner", "10.0.0.1", later).failed(later)
    second = t.begin("owner", "10.0.0.1", later)
    assert isinstance(second, Throttled) and second.wait == 1.0
    for i in range(10):
        attempt(t, f"user{i}", f"10.0.1.{i}", 0.0).failed(0.0)
    assert len(t._pairs) <= 3 and len(t._addresses) <= 3 and len(t._accounts) <= 3


def test_an_attempt_always_ends_once() -> None:
    t = LoginThrottle(free=1)
    a = attempt(t, "owner", "10.0.0.1", 0.0)
    a.close(0.0)  # no verdict (a new name, the store busy): counts for nothing
    a.failed(0.0)  # ended already: ignored
    assert not t._pairs and not t._accounts
    b = attempt(t, "owner", "10.0.0.1", 0.0)
    b.failed(0.0)
    b.close(0.0)
    assert t._pairs[("owner", "10.0.0.1")].fails == 1


def test_concurrent_wrong_passwords_from_many_threads_are_counted_once_each() -> None:
    t = LoginThrottle(free=1000, address_free=1000, account_burst=10_000)
    start = threading.Barrier(8)

    def guess() -> None:
        start.wait(10)
        for _ in range(100):
            attempt(t, "owner", "10.0.0.1", 0.0).failed(0.0)

    threads = [threading.Thread(target=guess) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    pair = t._pairs[("owner", "10.0.0.1")]
    assert (pair.fails, pair.checking) == (800, 0)
