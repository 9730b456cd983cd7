"""A room's ban of an address in a cluster (docs/PROTOCOL.md §Bans by address), on real
Redis and PostgreSQL: made on node a, it kicks the members from the address whose
sessions are on node b, refuses their joins on every node, a node started after it has
it, an unban on node b lifts it on node a, and a member offline at a ban is put out at
their next login from the address, on another node."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.conftest import Cluster
from tests.cluster.test_moderation_cluster import admin
from tests.cluster.test_rooms_cluster import settle
from tests.helpers import PASSWORD, RawClient


def v2_from(address: tuple[str, int], name: str, ip: str) -> tuple[RawClient, dict[str, Any]]:
    c = RawClient(address, source=ip)
    c.send(command="login", username=name, password=PASSWORD, features=["rooms"])
    return c, c.expect("login_ok")


def join(c: RawClient, rid: object) -> dict[str, Any]:
    c.send(command="join", room="dev", id=rid)
    return c.until("room_info", id=rid)


def test_an_address_ban_made_on_one_node_holds_on_every_node(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = cluster.add(), cluster.add()
    alice, _ = v2_from(a.address, "alice", "127.0.0.1")
    oscar, _ = v2_from(a.address, "oscar", "127.0.0.1")
    bob, _ = v2_from(b.address, "bob", "127.0.0.2")
    carol, _ = v2_from(b.address, "carol", "127.0.0.3")
    assert admin(capsys, cluster.db, "grant", "oscar")[0] == 0
    for i, c in enumerate((alice, bob, carol)):
        join(c, i)
    settle(alice)

    oscar.send(command="ban", room="dev", address="127.0.0.2", reason="spam", id="ban")
    ack = oscar.until("ack", id="ban")
    assert ack["to"] == "127.0.0.2/32"
    # bob's session is on node b: node b kicks him, after the ban, for every node.
    kick = bob.until("room_event", event="kick")
    assert (kick["user"], kick["by"]) == ("bob", "oscar") and kick["seq"] > ack["seq"]
    assert "spam" in kick["reason"]
    assert alice.until("room_event", event="kick")["user"] == "bob"
    carol.until("room_event", event="kick", user="bob")
    alice.send(command="members", room="dev", id="m")
    assert alice.until("room_info", id="m")["info"]["members"] == ["alice", "carol"]

    bob.send(command="join", room="dev", id="again")
    assert bob.until("error", id="again")["code"] == "banned"
    dave, _ = v2_from(a.address, "dave", "127.0.0.2")
    dave.send(command="join", room="dev", id="d")
    assert dave.until("error", id="d")["code"] == "banned"

    # A node started now loads it from PostgreSQL.
    late = cluster.add()
    erin, _ = v2_from(late.address, "erin", "127.0.0.2")
    erin.send(command="join", room="dev", id="e")
    assert "127.0.0.2" in erin.until("error", id="e", code="banned")["message"]
    oscar_b, _ = v2_from(b.address, "oscar", "127.0.0.1")  # takes oscar's session over
    oscar_b.send(command="bans", room="dev", id="l")
    bans = oscar_b.until("bans", id="l")["bans"]
    assert [(x.get("address"), x["by"]) for x in bans] == [("127.0.0.2/32", "oscar")]

    oscar_b.send(command="unban", room="dev", address="127.0.0.2/32", id="u")
    unban = oscar_b.until("ack", id="u")
    alice.until("room_event", event="unban", seq=unban["seq"])
    assert join(dave, "d2")["joined"] is True  # on node a

    # A member offline when their address is banned is put out at their next login
    # from it, on another node, before the session begins.
    carol.close()
    oscar_b.send(command="ban", room="dev", address="127.0.0.3", id="b3")
    oscar_b.until("ack", id="b3")
    carol, ok = v2_from(a.address, "carol", "127.0.0.3")
    assert "dev" not in [r["name"] for r in ok.get("rooms", [])]
    kick = alice.until("room_event", event="kick", user="carol")
    assert (kick["by"], kick["reason"]) == ("oscar", "banned by address")
