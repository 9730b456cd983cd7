"""Server operators across a cluster (docs/CLUSTER.md "Server operators", on real Redis
and PostgreSQL): an O-line operator's KILL and a granted account's ``kill`` end the
session on whichever node has it, each in the shared audit log; WALLOPS reaches the
``+w`` IRC clients of every node; the same O-line works on every node that has it."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from chatroom_server.olines import parse_oper
from tests.cluster.conftest import Cluster, PrivateRedis
from tests.cluster.test_moderation_cluster import admin
from tests.cluster.test_rooms_cluster import v2
from tests.server.test_irc import Irc

OPERS = parse_oper("operuser:operpassword")


def irc(node: Any, nick: str) -> Irc:
    c = Irc(node.server.irc_addresses[0])
    c.register(nick)
    return c


def kills(db: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT actor, target, reason, detail FROM chat_audit WHERE action = 'kill' ORDER BY ts"
        ).fetchall()
    return [(a, t, r, json.loads(d)) for a, t, r, d in rows]


def test_kill_and_wallops_reach_every_node(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    a = cluster.add(irc_port=0, irc_opers=OPERS)
    b = cluster.add(irc_port=0, irc_opers=OPERS)
    op = irc(a, "op")
    watcher = irc(a, "watcher")  # +w on the operator's node
    carol = irc(b, "carol")  # +w on the other node
    for c, nick in ((watcher, "watcher"), (carol, "carol")):
        c.send(f"MODE {nick} +w")
        c.until("MODE")
    bob, _ = v2(b.address, "bob")
    dave = irc(b, "dave")
    # Node a knows everyone on b is online: the op sees each join #lobby.
    joined = {op.until("JOIN").partition("!")[0] for _ in range(4)}
    assert joined == {":watcher", ":carol", ":bob", ":dave"}  # in any order: two nodes

    # Not an operator yet: 481 for both, on any node's users.
    op.send("KILL bob :x", "WALLOPS :too early")
    assert " 481 op " in op.until("481")
    assert " 481 op " in op.until("481")
    # The same O-line on node b makes a session there an operator too.
    dave.send("OPER operuser operpassword")
    assert " 381 dave " in dave.until("381")
    op.send("OPER operuser operpassword")
    op.until("381")

    # WALLOPS from node a: its own +w client and node b's, once each.
    op.send("WALLOPS :hello cluster")
    assert watcher.until("WALLOPS") == ":op!op@chatroom WALLOPS :hello cluster"
    assert carol.until("WALLOPS") == ":op!op@chatroom WALLOPS :hello cluster"
    op.send("WALLOPS :second")  # nothing twice: the next WALLOPS each sees is this one
    assert watcher.until("WALLOPS").endswith(":second")
    assert carol.until("WALLOPS").endswith(":second")

    # KILL from node a of a JSON user on node b: ended there, with who and why.
    op.send("KILL bob :spam")
    assert bob.until("bye") == {
        "type": "bye",
        "reason": "disconnected",
        "message": "Killed (op (spam))",
    }
    assert bob.wait_closed() == []
    assert op.until("QUIT").startswith(":bob!")
    # ... and of an IRC user on node b.
    op.send("KILL carol")
    assert carol.closed()[-1] == "ERROR :Closing link: chatroom (Killed (op (no reason given)))"
    op.send("KILL nobody")
    assert " 401 op nobody " in op.until("401")

    # A granted account's kill over JSON, from node b, of an IRC user on node a.
    oscar, _ = v2(b.address, "oscar")
    assert admin(capsys, cluster.db, "grant", "oscar")[0] == 0
    oscar.send(command="kill", user="watcher", reason="test", id=1)
    assert oscar.until("ack", id=1)["to"] == "watcher"
    assert watcher.closed()[-1] == "ERROR :Closing link: chatroom (Killed (oscar (test)))"

    # Every kill is in the shared audit log, the O-line's with its name.
    assert kills(cluster.db) == [
        ("op", "bob", "spam", {"oline": "operuser"}),
        ("op", "carol", None, {"oline": "operuser"}),
        ("oscar", "watcher", "test", {}),
    ]


def test_an_o_line_operator_moderates_rooms_of_another_node(cluster: Cluster) -> None:
    """Its room moderation is a stored room event, applied on every node as it was
    checked on the operator's: the same rights wherever the room's members are."""
    a = cluster.add(irc_port=0, irc_opers=OPERS)
    b = cluster.add(irc_port=0, irc_opers=OPERS)
    owner, _ = v2(b.address, "owner")
    member, _ = v2(b.address, "member")
    for i, c in enumerate((owner, member)):
        c.send(command="join", room="dev", id=f"j{i}")
        c.until("room_info", id=f"j{i}")
    op = irc(a, "op")
    op.send("OPER operuser operpassword")
    op.until("381")
    # Not in #dev, an owner's room made on node b: a server operator's KICK and +m.
    op.send("KICK #dev member :out", "MODE #dev +m")
    kicked = member.until("room_event", event="kick")
    assert (kicked["by"], kicked["user"], kicked["reason"]) == ("op", "member", "out")
    moded = owner.until("room_event", event="mode")
    assert (moded["by"], moded["modes"]) == ("op", "+m")
    # Node b's copy has both: the kicked member's pm there is refused (not a member).
    member.send(command="pm", room="dev", message="still here?", id=1)
    member.until("error", id=1, code="not_in_room")


def test_a_kill_of_another_nodes_user_while_redis_is_away_ends_nothing(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the stream reaches the other node: while Redis is known to be down, such a
    kill is refused before the audit log says it was done."""
    a = cluster.add(irc_port=0, irc_opers=OPERS)
    b = cluster.add()
    op = irc(a, "op")
    op.send("OPER operuser operpassword")
    op.until("381")
    bob, _ = v2(b.address, "bob")
    assert op.until("JOIN").startswith(":bob!")
    bus = a.server._b.bus
    assert bus is not None
    monkeypatch.setattr(type(bus), "available", property(lambda self: False))
    op.send("KILL bob :x")
    said = op.until("NOTICE")
    assert said.endswith(" NOTICE op :KILL bob: try again: the cluster is unreachable")
    assert kills(cluster.db) == []
    monkeypatch.undo()
    bob.send(command="ping", id=1)
    bob.until("pong", id=1)
    op.send("KILL bob :now")
    assert bob.until("bye")["message"] == "Killed (op (now))"


def test_an_o_line_operator_shows_as_one_on_every_node(cluster: Cluster) -> None:
    a = cluster.add(irc_port=0, irc_opers=OPERS)
    b = cluster.add(irc_port=0, irc_opers=OPERS)
    op = irc(a, "op")
    asker = irc(b, "asker")
    json_asker, _ = v2(b.address, "jsonasker")
    op.send("OPER operuser operpassword")
    op.until("381")
    # Node b learns it from the stream: WHOIS there, then, shows 313, WHO `*`, and the
    # JSON whois server_operator (a WALLOPS after the OPER is a barrier: it comes after).
    asker.send("MODE asker +w")
    asker.until("MODE")
    op.send("WALLOPS :barrier")
    asker.until("WALLOPS")
    asker.send("WHOIS op", "WHO op")
    assert asker.until(" 313 ").endswith(" 313 asker op :is an IRC operator")
    assert asker.until(" 352 ").split(" ")[8] == "H*"
    json_asker.send(command="whois", user="op", id=1)
    assert json_asker.until("whois", id=1)["server_operator"] is True
    # Its next session is none, on any node, until OPER again.
    op.send("QUIT")
    op.closed()
    again = irc(b, "op")
    asker.send("WHOIS op")
    lines = [asker.until(" 311 ")]
    while " 318 " not in lines[-1]:
        lines.append(asker.line())
    assert not any(" 313 " in line for line in lines)
    again.send("KILL asker")
    assert " 481 op " in again.until("481")


def test_while_redis_is_down_an_operator_is_told_what_did_not_reach_everyone(
    private_redis: PrivateRedis, pg_url: str, redis_prefix: str
) -> None:
    """docs/CLUSTER.md "Server operators": with Redis down (stopped, for real), a
    WALLOPS reaches the operator's node's ``+w`` clients and the operator gets a NOTICE
    saying that is all; a kill of a user on another node is refused, and not in the
    audit log. With Redis back, both reach every node again."""
    cluster = Cluster(private_redis.url, pg_url, redis_prefix)
    with cluster.stack:
        a = cluster.add(irc_port=0, irc_opers=OPERS)
        b = cluster.add(irc_port=0, irc_opers=OPERS)
        op = irc(a, "op")
        watcher = irc(a, "watcher")
        carol = irc(b, "carol")
        for c, nick in ((watcher, "watcher"), (carol, "carol")):
            c.send(f"MODE {nick} +w")
            c.until("MODE")
        bob, _ = v2(b.address, "bob")
        # Node a knows everyone on b: the op sees each join (before its OPER's reply,
        # which would skip them).
        joined = {op.until("JOIN").partition("!")[0] for _ in range(3)}
        assert joined == {":watcher", ":carol", ":bob"}
        op.send("OPER operuser operpassword")
        op.until("381")

        private_redis.stop()
        op.send("WALLOPS :alone")
        assert watcher.until("WALLOPS").endswith(":alone")
        said = op.until("NOTICE")
        assert said.endswith(
            " NOTICE op :WALLOPS reached this node's users only: the cluster is unreachable"
        )
        op.send("KILL bob :x")
        assert " NOTICE op :KILL bob: try again: the cluster is unreachable" in op.until("NOTICE")
        assert kills(cluster.db) == []
        bob.send(command="ping", id=1)
        bob.until("pong", id=1)

        private_redis.start()  # empty: the nodes claim their users back
        for node in (a, b):
            bus = node.server._b.bus
            assert bus is not None and bus.wait_available(10.0)
        op.send("WALLOPS :together")
        assert carol.until("WALLOPS").endswith(":together")  # the one before never came
        op.send("KILL bob :now")
        assert bob.until("bye")["message"] == "Killed (op (now))"
