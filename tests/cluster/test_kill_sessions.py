"""A server operator's kill across a cluster names the session it was aimed at
(docs/CLUSTER.md, "Server operators"), on real Redis and PostgreSQL: a node whose
consumer reads the kill late, after the user logged in again, leaves the new session
alone, whether it is on another node or on the killed session's own."""

from __future__ import annotations

import logging
import threading

import pytest

from chatroom.testing import TestServer
from tests.cluster.conftest import Cluster
from tests.cluster.test_moderation_cluster import admin
from tests.helpers import RawClient, connect

T = 10.0


class HeldKills:
    """``node``'s consumer stops at the first kill it reads until ``go`` is set: a
    consumer that is behind, made on purpose."""

    def __init__(self, node: TestServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.arrived, self.go, self.done = threading.Event(), threading.Event(), threading.Event()
        ops = node.server._ops
        real = ops.from_cluster

        def from_cluster(fields: dict[str, str], mine: bool) -> None:
            kill = fields.get("a") == "kill"
            if kill:
                self.arrived.set()
                self.go.wait(T)  # the test fails on what follows if it never comes
            real(fields, mine)
            if kill:
                self.done.set()

        monkeypatch.setattr(ops, "from_cluster", from_cluster)

    def release(self) -> None:
        self.go.set()
        assert self.done.wait(T)


def operator(cluster: Cluster, node: TestServer, capsys: pytest.CaptureFixture[str]) -> RawClient:
    oscar = connect(node.address, "oscar")
    assert admin(capsys, cluster.db, "grant", "oscar")[0] == 0
    return oscar


def kill_bob(oscar: RawClient) -> None:
    oscar.send(command="kill", user="bob", reason="spam", id="k")
    assert oscar.until("ack", id="k")["to"] == "bob"


def still_live(c: RawClient) -> None:
    """``c``'s session was not ended: a kill's bye would have come before this pong."""
    c.send(command="ping", id="alive")
    c.until("pong", id="alive")


def test_a_late_kill_spares_a_new_session_on_another_node(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, c = cluster.add(), cluster.add(), cluster.add()
    oscar = operator(cluster, a, capsys)
    held = HeldKills(c, monkeypatch)
    bob = connect(b.address, "bob")
    oscar.until("users", joined="bob")
    kill_bob(oscar)
    assert held.arrived.wait(T)  # node c has not done it yet
    assert bob.until("bye")["message"] == "Killed (oscar (spam))"  # node b has
    again = connect(c.address, "bob")  # the user again, on the node that is behind
    held.release()
    still_live(again)


def test_a_late_kill_spares_a_new_session_on_the_same_node(
    cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = cluster.add(), cluster.add()
    oscar = operator(cluster, a, capsys)
    held = HeldKills(b, monkeypatch)
    bob = connect(b.address, "bob")
    oscar.until("users", joined="bob")
    kill_bob(oscar)
    assert held.arrived.wait(T)
    # Before node b reads the kill, the user logs in there again: the old session is
    # replaced, and the kill names that one.
    again = connect(b.address, "bob")
    assert bob.until("bye")["reason"] == "session_replaced"
    with caplog.at_level(logging.WARNING, logger="chatroom_server.serverops"):
        held.release()
    still_live(again)
    said = [r.getMessage() for r in caplog.records if "nothing to end" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("oscar's kill of bob names session ")
    assert "a later session" in said[0]


def test_a_kill_ends_the_session_it_names(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not spared by mistake: the session the kill was aimed at ends, as before, and
    the node that published it (the session is not its) ends nothing of its own."""
    a, b = cluster.add(), cluster.add()
    oscar = operator(cluster, a, capsys)
    bob = connect(b.address, "bob")
    oscar.until("users", joined="bob")
    kill_bob(oscar)
    assert bob.until("bye")["message"] == "Killed (oscar (spam))"
    assert oscar.until("users", left="bob")
    still_live(oscar)
