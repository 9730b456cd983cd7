"""Server-wide moderation in a cluster (docs/PROTOCOL.md §Moderation, "Server-wide"), on
real Redis and real PostgreSQL: ``chat-server admin`` on the cluster's database grants
server operators, bans accounts and addresses and closes registrations; every node
reads them at each login and command, and a ban ends the session on whichever node
holds it."""

from __future__ import annotations

from typing import Any

import pytest

from chatroom_server.__main__ import main
from tests.cluster.conftest import Cluster
from tests.cluster.test_rooms_cluster import settle, v2
from tests.helpers import PASSWORD, RawClient


def admin(capsys: pytest.CaptureFixture[str], db: str, *args: str) -> tuple[int, str, str]:
    status = main(["admin", "--db", db, *args])
    out, err = capsys.readouterr()
    return status, out, err


def ended_by_ban(c: RawClient, *words: str) -> None:
    frames = c.wait_closed()
    errors = [f for f in frames if f.get("type") == "error"]
    assert [e["code"] for e in errors] == ["banned"], frames
    assert all(w in errors[0]["message"] for w in words), errors[0]
    assert frames[-1] == {"type": "bye", "reason": "disconnected"}


def login(address: tuple[str, int], name: str, source: str = "127.0.0.1", **extra: Any) -> Any:
    c = RawClient(address, source=source)
    c.send(command="login", username=name, password=PASSWORD, features=["rooms"], id="in")
    return c, c.recv()


def test_operators_bans_and_registrations_on_every_node(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = cluster.add(), cluster.add()
    db = cluster.db
    alice, _ = v2(a.address, "alice")
    oscar, _ = v2(b.address, "Oscar")
    mallory, _ = v2(b.address, "mallory")
    trudy, _ = login(b.address, "trudy", source="127.0.0.2")

    # A server operator granted on the database is one on every node.
    alice.send(command="whois", user="oscar", id=1)
    assert alice.until("whois", id=1)["server_operator"] is False
    assert admin(capsys, db, "grant", "oscar") == (0, "Oscar is a server operator\n", "")
    assert admin(capsys, db, "operators")[1].startswith("Oscar\tsince ")
    alice.send(command="whois", user="oscar", id=2)
    assert alice.until("whois", id=2)["server_operator"] is True
    alice.send(command="join", room="dev", id=3)
    alice.until("room_info", id=3)
    oscar.send(command="mode", room="dev", modes="+m", id=4)  # not a member: an operator
    oscar.until("ack", id=4)
    oscar.send(command="audit", id=5)
    entries = oscar.until("audit", id=5)["entries"]
    assert [(e["by"], e["action"]) for e in entries[:2]] == [("Oscar", "mode"), ("admin", "grant")]
    alice.send(command="audit", id=6)
    alice.until("error", id=6, code="not_operator")

    # An account's ban, made beside the cluster, ends its session on node b and is
    # refused on node a.
    status, out, _ = admin(capsys, db, "ban", "mallory", "--reason", "spam")
    assert status == 0 and out.startswith("mallory is banned from the server\n")
    ended_by_ban(mallory, "mallory", "spam")
    again, refused = login(a.address, "mallory")
    assert refused["code"] == "banned" and "spam" in refused["message"]

    # An address's too.
    assert admin(capsys, db, "ban", "--address", "127.0.0.2")[0] == 0
    ended_by_ban(trudy, "127.0.0.2")
    _, refused = login(a.address, "trudy", source="127.0.0.2")
    assert refused["code"] == "banned"
    assert admin(capsys, db, "bans")[1].splitlines() == [
        "mallory is banned from this server (spam)",
        "127.0.0.2/32 is banned from this server",
    ]

    # Registrations closed on the database are closed on every node.
    assert admin(capsys, db, "registrations", "closed")[0] == 0
    _, refused = login(b.address, "newbie")
    assert refused["code"] == "registration_closed"
    assert admin(capsys, db, "registrations", "open")[0] == 0
    _, ok = login(b.address, "newbie")
    assert ok["type"] == "login_ok"

    assert admin(capsys, db, "unban", "mallory")[0] == 0
    again.send(command="login", username="mallory", password=PASSWORD, id=7)
    again.until("login_ok", id=7)
    assert admin(capsys, db, "revoke", "oscar")[0] == 0
    oscar.send(command="audit", id=8)
    oscar.until("error", id=8, code="not_operator")
    settle(alice)
    actions = [line.split("\t")[2] for line in admin(capsys, db, "audit")[1].splitlines()]
    assert actions[:6] == [
        "revoke",
        "server-unban",
        "registrations-open",
        "registrations-closed",
        "address-ban",
        "server-ban",
    ]
