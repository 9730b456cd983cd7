"""Departure storms (chatroom_server.storm, docs/PERFORMANCE.md "Mass departures"): many
connections ending at once raise the GIL switch interval, which comes back when they are
done; everyone who dropped leaves the list, and the server keeps serving."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from chatroom_server.doorbell import Doorbell
from chatroom_server.storm import DepartureStorm
from tests.helpers import PASSWORD, RawClient, quiet_server


@pytest.fixture
def switch_interval() -> Iterator[float]:
    """The process's interval before the test, put back after it whatever happens."""
    saved = sys.getswitchinterval()
    yield saved
    sys.setswitchinterval(saved)


def test_the_interval_goes_up_at_the_threshold_and_back_once_the_storm_is_quiet(
    switch_interval: float,
) -> None:
    now = [100.0]
    storm = DepartureStorm(0.2, threshold=8, quiet=0.5, clock=lambda: now[0])
    for _ in range(7):
        storm.begin()
    assert not storm.raised and sys.getswitchinterval() == switch_interval
    storm.begin()  # the eighth connection ending at once
    assert storm.raised and sys.getswitchinterval() == pytest.approx(0.2)
    for _ in range(6):
        storm.end()  # 2 still ending (a quarter of 8), but one began just now
    assert storm.raised
    now[0] += 0.4
    storm.tick()
    assert storm.raised  # more may still be waiting for their first turn
    now[0] += 0.1  # quiet for 0.5 s
    storm.end()
    assert not storm.raised and sys.getswitchinterval() == switch_interval
    storm.end()
    storm.tick()
    assert storm.storms == 1 and sys.getswitchinterval() == switch_interval


def test_the_interval_stays_up_while_connections_keep_ending(switch_interval: float) -> None:
    now = [100.0]
    storm = DepartureStorm(0.2, threshold=8, quiet=0.5, clock=lambda: now[0])
    for _ in range(8):
        storm.begin()
    for _ in range(8):
        storm.end()  # all the counted ones are done ...
    for _ in range(20):  # ... and stragglers get their first turn, one by one
        now[0] += 0.1
        storm.begin()
        storm.end()
        assert storm.raised
    now[0] += 0.5
    storm.tick()  # the reaper's tick: quiet now
    assert not storm.raised and storm.storms == 1
    assert sys.getswitchinterval() == switch_interval


def test_connections_ending_one_by_one_are_no_storm(switch_interval: float) -> None:
    storm = DepartureStorm(0.2, threshold=8)
    for _ in range(100):
        storm.begin()
        storm.end()
    assert storm.storms == 0 and sys.getswitchinterval() == switch_interval


def test_a_stopping_server_keeps_a_storm_until_it_has_stopped(switch_interval: float) -> None:
    now = [0.0]
    storm = DepartureStorm(0.2, threshold=2, quiet=0.5, clock=lambda: now[0])
    storm.begin()
    storm.begin()
    assert storm.raised
    storm.freeze()  # stop() begins mid-storm: it stays raised
    for _ in range(2):
        storm.end()
    now[0] += 10
    storm.tick()  # however quiet it gets while stopping
    assert storm.raised and sys.getswitchinterval() == pytest.approx(0.2)
    storm.close()  # stopped: the program gets its interval back, for good
    assert not storm.raised and sys.getswitchinterval() == switch_interval
    storm.begin()
    storm.begin()
    assert not storm.raised and sys.getswitchinterval() == switch_interval


def test_a_stop_begins_no_storm_of_its_own(switch_interval: float) -> None:
    storm = DepartureStorm(0.2, threshold=2)
    storm.freeze()
    for _ in range(10):  # the stop's goodbyes end every connection at once
        storm.begin()
    assert not storm.raised and storm.storms == 0
    assert sys.getswitchinterval() == switch_interval
    storm.close()
    assert sys.getswitchinterval() == switch_interval


def test_a_doorbell_rung_many_times_wakes_once_and_again_after_an_answer() -> None:
    bell = Doorbell()
    assert not bell.wait(0)
    for _ in range(1000):  # a storm of departures: the Event is set by the first only
        bell.ring()
    assert bell.wait(0)
    bell.answer()
    assert not bell.wait(0)
    bell.ring()  # a change after the answer wakes the waiter again
    assert bell.wait(0)


def test_without_an_interval_the_process_keeps_its_own(switch_interval: float) -> None:
    storm = DepartureStorm(None, threshold=2)  # the ChatServer default: hands off
    for _ in range(10):
        storm.begin()
    assert not storm.raised and sys.getswitchinterval() == switch_interval


def test_clients_reset_at_once_all_leave_and_the_interval_comes_back(
    switch_interval: float,
) -> None:
    names = [f"blip{i:03d}" for i in range(200)]
    with (
        quiet_server(storm_switch_interval=0.2, password_hash="load-test") as srv,
        RawClient(srv.address) as probe,
    ):
        probe.send(command="login", username="probe", password=PASSWORD, features=["users_delta"])
        users = set(probe.expect("login_ok", username="probe")["users"])
        # The clients live in another process, which is killed: the kernel then closes
        # all their sockets at once, and the server's threads wake together (a loop of
        # close() calls here would wake them one at a time).
        host, port = srv.address
        crowd = subprocess.Popen(
            [sys.executable, "-c", CROWD, host, str(port), PASSWORD, *names],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert crowd.stdout is not None
            assert crowd.stdout.readline() == "ready\n"
            while users != {"probe", *names}:
                apply_delta(users, probe.recv())
            threads = [c.thread for c in srv.server.roster() if c.username != "probe"]
            assert len(threads) == len(names)
        finally:
            crowd.kill()
            crowd.wait(10)
            crowd.stdout.close()  # type: ignore[union-attr]
        while users != {"probe"}:
            apply_delta(users, probe.recv())
        for t in threads:
            assert t is not None
            t.join(10.0)
            assert not t.is_alive()
        # Whether 200 threads woken together count as a storm depends on how the
        # scheduler runs them (usually they do); either way the interval ends as it
        # began, once no connection began to end for half a second (the reaper's tick).
        assert srv.server._storm.calm.wait(5.0)
        assert sys.getswitchinterval() == switch_interval
        assert srv.server.connection_count == 1
        # The server still serves: a newcomer is listed, and the probe hears it.
        with RawClient(srv.address) as late:
            late.login("latecomer")
            while "latecomer" not in users:
                apply_delta(users, probe.recv())
        while "latecomer" in users:
            apply_delta(users, probe.recv())


# Logs every name in on its own connection, says "ready", and waits to be killed.
CROWD = """
import json, socket, sys, time
host, port, password, *names = sys.argv[1:]
socks = []
for name in names:
    s = socket.create_connection((host, int(port)), timeout=30)
    login = {"command": "login", "username": name, "password": password}
    s.sendall(json.dumps(login).encode() + b"\\n")
    socks.append(s)
for s in socks:
    buf = b""
    while b"login_ok" not in buf:
        buf += s.recv(65536)
print("ready", flush=True)
time.sleep(600)
"""


def apply_delta(users: set[str], frame: dict[str, object]) -> None:
    assert frame["type"] == "users_delta", frame
    users.difference_update(frame.get("left", ()))  # type: ignore[arg-type]
    users.update(frame.get("joined", ()))  # type: ignore[arg-type]


def test_a_stop_waits_for_every_reader_and_gives_the_interval_back(
    switch_interval: float,
) -> None:
    with quiet_server(storm_switch_interval=0.2, password_hash="load-test") as srv:
        clients = [RawClient(srv.address) for _ in range(40)]  # over the threshold of 32
        for i, c in enumerate(clients):
            c.send(command="login", username=f"stay{i}", password=PASSWORD)
            c.expect("login_ok")
        srv.stop()
        assert sys.getswitchinterval() == switch_interval
        assert srv.server.reader_threads == 0  # stop() waited for every reader
        for c in clients:
            assert c.wait_closed()[-1] == {"type": "bye", "reason": "server_shutdown"}
            c.close()
