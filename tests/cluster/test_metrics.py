"""A cluster node's metrics count what it delivered to its own clients, the messages of
every node among them (chatroom_server.node, chatroom_server.admin_http)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chatroom.testing import TestServer
from chatroom_server.admin_http import ServerCollector
from tests.cluster.conftest import Cluster
from tests.helpers import connect


def _value(node: TestServer, name: str) -> float:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(node.server))
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise KeyError(name)


def test_each_node_counts_its_own_deliveries(cluster: Cluster) -> None:
    n1, n2 = cluster.add(), cluster.add()
    alice, carol = connect(n1.address, "alice"), connect(n1.address, "carol")
    bob = connect(n2.address, "bob")
    for i in range(3):
        alice.send(command="pm", message=f"m{i}", id=i)
        alice.until("ack", id=i)
    alice.send(command="dm", to="bob", message="psst", id="d")
    alice.until("ack", id="d")
    for c in (carol, bob):
        assert [c.until("broadcast")["message"] for _ in range(3)] == ["m0", "m1", "m2"]
    bob.until("dm")
    bob.send(command="ping", id="p")  # n2's deliveries are counted when they are queued
    bob.until("pong", id="p")
    assert _value(n1, "chat_messages_total") == 4  # stored by n1's fan-out
    assert _value(n2, "chat_messages_total") == 0
    assert _value(n1, "chat_deliveries_total") == 3  # to carol, not to alice
    assert _value(n2, "chat_deliveries_total") == 4  # to bob: three and the DM
