"""Takeovers on the cluster (docs/PROTOCOL.md §login, docs/CLUSTER.md): only a login
somebody is waiting for ends a user's session, on its node or on another; found by the
nemesis (docs/RELIABILITY.md F7)."""

from __future__ import annotations

import select
import threading
from typing import Any

import pytest
import redis

from chatroom.testing import TestServer
from tests.cluster.conftest import REDIS_URL, Cluster
from tests.helpers import PASSWORD, RawClient, connect

T = 10.0


class HeldLogin:
    """A login on ``node`` whose client gives up on it while the server holds it at
    ``hold`` (a method of the server's to wrap): the stall the nemesis made with a pause
    or a partition, made here on purpose."""

    def __init__(self, node: TestServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.node = node
        self.entered, self.release = threading.Event(), threading.Event()
        self.conn: Any = None
        self.thread: threading.Thread | None = None  # the abandoned login's reader
        handlers = node.server._handlers  # chatroom_server.handlers
        real_login = handlers._login
        finished = threading.Event()
        self.finished = finished

        def login(conn: Any, cmd: Any) -> bool:
            if self.conn is None:
                self.conn = conn  # the abandoned login's connection: the first here
                self.thread = threading.current_thread()
            try:
                return bool(real_login(conn, cmd))
            finally:
                if conn is self.conn:
                    finished.set()

        monkeypatch.setattr(handlers, "_login", login)
        self._monkeypatch = monkeypatch

    def hold(self, obj: object, method: str) -> None:
        real = getattr(obj, method)

        def held(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is self.thread and not self.entered.is_set():
                self.entered.set()
                assert self.release.wait(T)
            return real(*args, **kwargs)

        self._monkeypatch.setattr(obj, method, held)

    def run(self, user: str) -> None:
        """Log ``user`` in, give up on it while it is held, and let it go on once the
        server can see its client has gone."""
        abandoned = RawClient(self.node.address)
        abandoned.send(command="login", username=user, password=PASSWORD)
        assert self.entered.wait(T)
        abandoned.close()
        poller = select.poll()
        poller.register(self.conn.sock, select.POLLRDHUP)
        assert poller.poll(int(T * 1000)), "the abandoned connection's end never arrived"
        self.release.set()
        assert self.finished.wait(T)


def still_live(c: RawClient, watcher: RawClient, text: str) -> None:
    """``c``'s session was never replaced: its messages still go out."""
    c.send(command="pm", message=text, id=text)
    c.until("ack", id=text)
    assert watcher.until("broadcast")["message"] == text


def test_a_login_given_up_on_during_the_catch_up_takes_nothing_over(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F7: a login on a node that waits to catch up with the cluster's log (after a
    partition or a pause) is given up on by its client, which logs in on another node;
    the abandoned login, going on once caught up, must not claim the user, which would
    end the live session there."""
    a, b = cluster.add(), cluster.add()
    watcher = connect(b.address, "watcher")
    live = connect(a.address, "twin")
    watcher.until("users", joined="twin")
    held = HeldLogin(b, monkeypatch)
    held.hold(b.server._replay, "catch_up")  # chatroom_server.replay.Replay.catch_up
    held.run("twin")
    still_live(live, watcher, "still me")
    assert b.server._presence.online("twin") is None
    watcher.send(command="users", id="u")
    assert watcher.until("users", id="u")["users"] == ["twin", "watcher"]


def test_a_login_given_up_on_while_waiting_for_the_fan_out_takes_nothing_over(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with the wait after the claim: for the fan-out's lock (the last step
    before the session begins). The session on this node is not replaced, and the
    cluster still lists the user on it."""
    a = cluster.add()
    watcher = connect(a.address, "watcher")
    live = connect(a.address, "twin")
    watcher.until("users", joined="twin")
    held = HeldLogin(a, monkeypatch)
    held.hold(a.server._fanout, "exclusive")
    held.run("twin")
    still_live(live, watcher, "still here")
    assert a.server._presence.online("twin") is not None
    b = cluster.add()  # a node that starts now reads the cluster's list from Redis
    late = connect(b.address, "late")
    late.send(command="users", id="u")
    assert late.until("users", id="u")["users"] == ["late", "twin", "watcher"]


def test_a_claim_that_runs_after_its_node_gave_up_takes_nothing_over(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F8: node b's claim for a login is held in a partition from Redis (a blackhole:
    TCP keeps the bytes); b stops waiting for it and answers ``unavailable``; the client
    logs in on node a. When the partition heals, Redis runs the held claim: it must not
    take the user over from a, which would end that session with nobody's behind it."""
    a, b = cluster.add(), cluster.add()
    first = connect(a.address, "twin")  # the account exists: a login claims at once
    first.send(command="exit")
    first.wait_closed()
    bus = b.server._b.bus
    assert bus is not None
    script = bus.roster._claim
    held: list[dict[str, Any]] = []

    def partitioned(**kwargs: Any) -> Any:
        held.append(kwargs)  # sent, and held on the way until the partition heals
        raise redis.TimeoutError("Timeout reading from the test's partition")

    monkeypatch.setattr(bus.roster, "_claim", partitioned)
    # b gives up on it at once (as it would after its timeout): Redis's clock is past
    # that moment by the time the test lets the claim through.
    monkeypatch.setattr(bus.link, "timeout", 0.0)
    late = RawClient(b.address)
    late.send(command="login", username="twin", password=PASSWORD)
    late.expect_error("unavailable")
    monkeypatch.undo()  # the partition is over for every later claim
    watcher = connect(b.address, "watcher")
    live = connect(a.address, "twin")  # the client's retry, on the other node
    watcher.until("users", joined="twin")
    (claim,) = held
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        script(**claim, client=r)  # the partition heals: Redis runs it now
        presence = str(r.hget(f"{cluster.prefix}:presence", "twin"))
    finally:
        r.close()
    on_a = a.server._b.bus
    assert on_a is not None and presence.startswith(f"{on_a.node}|")
    still_live(live, watcher, "not replaced")


def test_a_login_during_the_resync_is_not_taken_for_an_older_session(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resync (every 10 s, and when Redis answers again after a partition) reads
    the presence hash, then this node's sessions: a login here in between, taking the
    user over from another node, is newer than what the hash said. It must not be
    ended as if that other node had taken it over."""
    a, b = cluster.add(), cluster.add()
    watcher = connect(b.address, "watcher")
    old = connect(a.address, "twin")
    watcher.until("users", joined="twin")
    bus, node = b.server._b.bus, b.server._node
    assert bus is not None and node is not None
    real_names, real_resync = node.cluster_local_names, bus.roster.resync
    armed, resynced = threading.Event(), threading.Event()
    moved: list[RawClient] = []

    def names() -> list[str]:
        if armed.is_set() and not moved:
            # Between the resync's read of the hash and this: the user moves here.
            moved.append(connect(b.address, "twin"))
        return real_names()

    def resync(handler: Any) -> None:
        real_resync(handler)
        if moved:
            resynced.set()

    monkeypatch.setattr(node, "cluster_local_names", names)
    monkeypatch.setattr(bus.roster, "resync", resync)
    armed.set()
    bus.link.set_up(False, "the test's partition")  # the consumer resyncs once it reads
    assert resynced.wait(T)
    assert old.wait_closed()[-1] == {"type": "bye", "reason": "session_replaced"}
    (new,) = moved
    still_live(new, watcher, "the newer session")
