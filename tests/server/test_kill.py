"""A server operator's ``kill`` (docs/PROTOCOL.md §Moderation, chatroom_server.serverops):
over JSON and as IRC's KILL, checked once, each in the audit log (who, whom, why, when,
and the O-line) before the session ends; refused for everyone else and for bad input."""

from __future__ import annotations

import json
import queue
import sqlite3
from typing import Any

import pytest

from chatroom.client import ChatClient
from chatroom.errors import RoomError, ServerError, UserOffline
from chatroom.events import Disconnect
from chatroom.testing import TestServer
from chatroom_server import servergate
from chatroom_server.accounts import AccountStoreBusy
from chatroom_server.olines import parse_oper
from tests.helpers import PASSWORD, connect
from tests.server.test_irc import Irc, irc_address, irc_server
from tests.server.test_moderation_server import refused

OPERS = parse_oper("operuser:operpassword")


def grant(srv: TestServer, name: str) -> None:
    db = sqlite3.connect(srv.db_path)
    try:
        servergate.grant(servergate.SqliteSql.of(db), name, now=1.0)
    finally:
        db.close()


def kills(srv: TestServer) -> list[tuple[Any, ...]]:
    """The audit log's kills, oldest first: (actor, target, reason, detail)."""
    db = sqlite3.connect(srv.db_path)
    try:
        rows = db.execute(
            "SELECT actor, target, reason, detail, seq, room FROM audit "
            "WHERE action = 'kill' ORDER BY ts"
        ).fetchall()
    finally:
        db.close()
    assert all(seq is None and room is None for *_, seq, room in rows)
    return [(a, t, r, json.loads(d)) for a, t, r, d, _, _ in rows]


def test_a_server_operator_kills_over_json_and_it_is_audited() -> None:
    with irc_server(password_hash="load-test") as srv:
        oscar, mallory = connect(srv.address, "oscar"), connect(srv.address, "mallory")
        irc = Irc(irc_address(srv))
        irc.register("ircuser")
        # Not an operator: refused, nobody ends, nothing recorded.
        mallory.send(command="kill", user="oscar", reason="mine now", id=1)
        refused(mallory, "not_operator", 1)
        grant(srv, "oscar")
        # Bad input: a name nobody can have, a reason too long or on two lines.
        oscar.send(command="kill", user="no body", id=2)
        refused(oscar, "bad_request", 2)
        oscar.send(command="kill", user="mallory", reason="x" * 301, id=3)
        refused(oscar, "bad_request", 3)
        oscar.send(command="kill", user="mallory", reason="a\nb", id=4)
        refused(oscar, "bad_request", 4)
        oscar.send(command="kill", user="nobody", id=5)
        assert "nobody is not online" in refused(oscar, "user_offline", 5)["message"]
        # A JSON user: ack, then bye disconnected saying who and why.
        oscar.send(command="kill", user="MALLORY", reason="spam", id=6)
        ack = oscar.until("ack", id=6)
        assert (ack["command"], ack["to"]) == ("kill", "mallory")
        bye = mallory.until("bye")
        assert bye == {
            "type": "bye",
            "reason": "disconnected",
            "message": "Killed (oscar (spam))",
        }
        assert mallory.wait_closed() == []
        # An IRC user: ERROR with the same words; the others see them leave.
        oscar.send(command="kill", user="ircuser", id=7)
        oscar.until("ack", id=7)
        lines = irc.closed()
        assert lines[-1] == "ERROR :Closing link: chatroom (Killed (oscar (no reason given)))"
        assert kills(srv) == [
            ("oscar", "mallory", "spam", {}),
            ("oscar", "ircuser", None, {}),
        ]
        # The audit command shows them to operators, newest first.
        oscar.send(command="audit", limit=2, id=8)
        entries = oscar.until("audit", id=8)["entries"]
        assert [(e["action"], e["by"], e["user"]) for e in entries] == [
            ("kill", "oscar", "ircuser"),
            ("kill", "oscar", "mallory"),
        ]
        # Killing oneself: the ack, then the bye, and the connection closes.
        oscar.send(command="kill", user="oscar", reason="done", id=9)
        assert oscar.until("ack", id=9)["to"] == "oscar"
        assert oscar.until("bye")["message"] == "Killed (oscar (done))"
        assert oscar.wait_closed() == []


def test_an_o_line_kill_is_audited_with_its_o_line() -> None:
    with irc_server(irc_opers=OPERS, password_hash="load-test") as srv:
        op = Irc(irc_address(srv))
        op.register("op")
        bob = connect(srv.address, "bob")
        op.send("OPER operuser operpassword")
        op.until("381")
        op.send("KILL bob :" + "y" * 400)  # IRC's reason is cut to the audit's limit
        assert bob.until("bye")["message"] == f"Killed (op ({'y' * 300}))"
        assert kills(srv) == [("op", "bob", "y" * 300, {"oline": "operuser"})]
        op.send("KILL no_body_here", "KILL bad!nick")
        assert " 401 op no_body_here " in op.until("401")
        assert " 401 op bad!nick " in op.until("401")


def test_a_kill_the_audit_cannot_record_ends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    with irc_server(password_hash="load-test") as srv:
        oscar, bob = connect(srv.address, "oscar"), connect(srv.address, "bob")
        grant(srv, "oscar")
        gate = srv.server._b.gate
        assert gate is not None

        def down(*_: Any) -> None:
            raise AccountStoreBusy("the database is down")

        monkeypatch.setattr(gate, "record", down)
        oscar.send(command="kill", user="bob", id=1)
        assert "try again" in refused(oscar, "unavailable", 1)["message"]
        assert srv.server.online == ("bob", "oscar")
        bob.send(command="ping", id=2)
        bob.until("pong", id=2)


def test_the_sdk_kills_and_is_refused() -> None:
    with irc_server(password_hash="load-test") as srv:
        victim = connect(srv.address, "victim")
        with ChatClient(srv.host, srv.port) as me:
            me.login("someone", PASSWORD)
            with pytest.raises(RoomError) as info:
                me.kill("victim")
            assert info.value.code == "not_operator"
            grant(srv, "someone")
            with pytest.raises(UserOffline):
                me.kill("nobody")
            assert me.kill("VICTIM", reason="test") == "victim"
            assert victim.until("bye")["message"] == "Killed (someone (test))"
            # The SDK's own user killed: its Disconnect says who and why.
            gone: queue.Queue[Disconnect] = queue.Queue()
            with ChatClient(srv.host, srv.port) as target:
                target.on_disconnect(gone.put)
                target.login("target", PASSWORD)
                me.kill("target", reason="bye now")
                seen = gone.get(timeout=10)
                assert seen.reason == "disconnected"
                assert isinstance(seen.error, ServerError)
                assert seen.error.message == "Killed (someone (bye now))"
