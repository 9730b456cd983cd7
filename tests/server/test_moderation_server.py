"""Moderation on a real server (docs/PROTOCOL.md §Moderation): raw sockets, a temp
database. Kick, ban, mute and +m from room operators and server operators; each refused
for a non-operator and for bad input; bans surviving a restart; the audit trail; a
banned user's resume giving the ban and nothing of the room after it."""

from __future__ import annotations

import sqlite3
from typing import Any

from chatroom.testing import TestServer
from chatroom_server import servergate
from tests.helpers import RawClient, quiet_server
from tests.server.test_rooms_server import settle, v2


def refused(c: RawClient, code: str, rid: object) -> dict[str, Any]:
    """The error answering request ``rid`` (room events may come before it)."""
    frame = c.until("error", id=rid)
    assert frame["code"] == code, frame
    assert isinstance(frame["message"], str) and frame["message"]
    return frame


def room_of_three(srv: TestServer) -> tuple[RawClient, RawClient, RawClient]:
    """alice owns dev; bob and carol are members; every join seen by alice."""
    alice, _ = v2(srv, "alice")
    bob, _ = v2(srv, "bob")
    carol, _ = v2(srv, "carol")
    for i, c in enumerate((alice, bob, carol)):
        c.send(command="join", room="dev", id=f"j{i}")
        c.until("room_info", id=f"j{i}")
    settle(alice)
    return alice, bob, carol


def test_kick_reaches_the_room_and_the_kicked_and_a_member_cannot_kick() -> None:
    with quiet_server() as srv:
        alice, bob, carol = room_of_three(srv)
        bob.send(command="kick", room="dev", user="carol", id=1)
        refused(bob, "not_operator", 1)

        alice.send(command="kick", room="dev", user="bob", reason="flooding", id=2)
        ack = alice.until("ack", id=2)
        assert (ack["command"], ack["room"], ack["to"]) == ("kick", "dev", "bob")
        for c in (bob, carol):
            ev = c.until("room_event", event="kick")
            assert (ev["user"], ev["by"], ev["reason"], ev["seq"]) == (
                "bob",
                "alice",
                "flooding",
                ack["seq"],
            )
        bob.send(command="pm", room="dev", message="still here?", id=3)
        refused(bob, "not_in_room", 3)
        bob.send(command="join", room="dev", id=4)  # a kick is not a ban
        assert "bob" in bob.until("room_info", id=4)["info"]["members"]


def test_ban_keeps_out_across_a_restart_until_unbanned_and_is_listed() -> None:
    with quiet_server() as srv:
        alice, bob, carol = room_of_three(srv)
        alice.send(command="ban", room="dev", user="bob", reason="spam", id=1)
        ack = alice.until("ack", id=1)
        ev = bob.until("room_event", event="ban")
        assert (ev["user"], ev["by"], ev["reason"], "expires" in ev) == (
            "bob",
            "alice",
            "spam",
            False,
        )
        carol.until("room_event", event="ban", seq=ack["seq"])
        alice.send(command="invite", room="dev", user="bob", id=2)  # an invite does not help
        alice.until("ack", id=2)
        bob.send(command="join", room="dev", id=3)
        got = refused(bob, "banned", 3)
        assert "alice" in got["message"] and "spam" in got["message"]
        bob.send(command="history", room="dev", id=4)
        bob.until("error", id=4)

        srv.restart()  # bans are stored
        alice, _ = v2(srv, "alice")
        bob, _ = v2(srv, "bob")
        bob.send(command="join", room="dev", id=5)
        refused(bob, "banned", 5)
        alice.send(command="bans", room="dev", id=6)
        bans = alice.until("bans", id=6)
        assert bans["room"] == "dev"
        assert [(b["user"], b["by"], b["reason"]) for b in bans["bans"]] == [
            ("bob", "alice", "spam")
        ]
        bob.send(command="bans", room="dev", id=7)
        refused(bob, "not_in_room", 7)

        alice.send(command="unban", room="dev", user="bob", id=8)
        assert alice.until("ack", id=8)["seq"] > ack["seq"]
        alice.send(command="unban", room="dev", user="bob", id=9)
        assert "seq" not in alice.until("ack", id=9)  # nothing to undo
        bob.send(command="join", room="dev", id=10)
        bob.until("room_info", id=10)


def test_mute_and_moderated_rooms() -> None:
    with quiet_server() as srv:
        alice, bob, carol = room_of_three(srv)
        alice.send(command="mute", room="dev", user="bob", reason="calm down", duration=3600, id=1)
        alice.until("ack", id=1)
        ev = bob.until("room_event", event="mute")
        assert ev["reason"] == "calm down" and ev["expires"] > ev["ts"] + 3500
        bob.send(command="pm", room="dev", message="hello?", id=2)
        assert "calm down" in refused(bob, "muted", 2)["message"]
        bob.send(command="pm", message="lobby is fine", id=3)
        bob.until("ack", id=3)
        alice.send(command="unmute", room="dev", user="bob", id=4)
        alice.until("ack", id=4)
        bob.send(command="pm", room="dev", message="thanks", id=5)
        bob.until("ack", id=5)

        alice.send(command="mode", room="dev", modes="+mv", args=["carol"], id=6)
        alice.until("ack", id=6)
        bob.send(command="pm", room="dev", message="moderated?", id=7)
        refused(bob, "muted", 7)
        carol.send(command="pm", room="dev", message="voiced", id=8)
        carol.until("ack", id=8)
        alice.send(command="pm", room="dev", message="operator", id=9)
        alice.until("ack", id=9)


def test_bad_input_is_a_clear_error() -> None:
    with quiet_server() as srv:
        alice, bob, _ = room_of_three(srv)
        v2(srv, "dave")
        cases: list[tuple[dict[str, Any], str]] = [
            ({"command": "kick", "room": "dev", "user": "alice"}, "bad_request"),  # oneself
            ({"command": "kick", "room": "dev", "user": "nobody"}, "unknown_user"),
            ({"command": "kick", "room": "dev", "user": "dave"}, "not_in_room"),
            ({"command": "mute", "room": "dev", "user": "dave"}, "not_in_room"),
            ({"command": "kick", "room": "nope", "user": "bob"}, "no_such_room"),
            ({"command": "kick", "room": "lobby", "user": "bob"}, "not_operator"),
            ({"command": "ban", "room": "dev", "user": "bob", "duration": 0}, "bad_request"),
            ({"command": "ban", "room": "dev", "user": "bob", "duration": "1h"}, "bad_request"),
            ({"command": "ban", "room": "dev", "user": "b ob"}, "bad_request"),
            ({"command": "ban", "room": "#dev", "user": "bob"}, "invalid_room"),
            ({"command": "kick", "room": "dev", "user": "bob", "reason": "x" * 301}, "bad_request"),
        ]
        for i, (cmd, code) in enumerate(cases):
            alice.send(**cmd, id=i)
            refused(alice, code, i)
        # The owner is out of reach of the room's other operators.
        alice.send(command="mode", room="dev", modes="+o", args=["bob"], id="op")
        alice.until("ack", id="op")
        bob.send(command="kick", room="dev", user="alice", id="k")
        refused(bob, "not_operator", "k")
        # A v1 connection does not know the commands.
        v1 = RawClient(srv.address)
        v1.send(command="login", username="erin", password="correct horse battery")
        v1.until("login_ok")
        v1.send(command="kick", room="dev", user="bob", id="v1")
        refused(v1, "unknown_command", "v1")


def test_server_operator_acts_on_any_room_and_the_audit_has_it_all() -> None:
    with quiet_server() as srv:
        alice, bob, carol = room_of_three(srv)
        oscar, _ = v2(srv, "oscar")
        oscar.send(command="kick", room="dev", user="alice", id=1)
        refused(oscar, "not_in_room", 1)
        db = sqlite3.connect(srv.db_path)
        try:
            assert servergate.grant(servergate.SqliteSql.of(db), "oscar", now=1.0)
            assert not servergate.grant(servergate.SqliteSql.of(db), "oscar", now=2.0)
        finally:
            db.close()
        oscar.send(command="ban", room="dev", user="alice", reason="abuse", duration=60, id=2)
        oscar.until("ack", id=2)
        ev = alice.until("room_event", event="ban")
        assert ev["by"] == "oscar"
        bob.until("room_event", event="ban")
        alice.send(command="join", room="dev", id=3)
        refused(alice, "banned", 3)
        carol.send(command="mode", room="dev", modes="+m", id=4)  # the first op left
        refused(carol, "not_operator", 4)
        oscar.send(command="mode", room="dev", modes="+o", args=["carol"], id=41)
        oscar.until("ack", id=41)  # a server operator, not a member, gives the room one
        assert carol.until("room_event", event="mode")["by"] == "oscar"
        carol.send(command="mode", room="dev", modes="+m", id=42)
        carol.until("ack", id=42)

        db = sqlite3.connect(srv.db_path)
        try:
            rows = servergate.audit(servergate.SqliteSql.of(db))
            assert servergate.revoke(servergate.SqliteSql.of(db), "oscar")
        finally:
            db.close()
        assert [(r[2], r[3], r[4], r[5], r[6]) for r in rows[:4]] == [
            ("carol", "mode", None, "dev", None),
            ("oscar", "mode", None, "dev", None),
            ("oscar", "ban", "alice", "dev", "abuse"),
            ("admin", "grant", "oscar", None, None),
        ]
        assert '"expires"' in rows[2][7]
        oscar.send(command="kick", room="dev", user="bob", id=5)
        refused(oscar, "not_in_room", 5)  # revoked: read at each command


def test_a_banned_users_resume_gives_the_ban_and_nothing_after_it() -> None:
    with quiet_server() as srv:
        alice, bob, _ = room_of_three(srv)
        alice.send(command="pm", room="dev", message="before", id=1)
        alice.until("ack", id=1)
        seen = bob.until("broadcast", message="before")["seq"]
        bob.send(command="exit")
        bob.wait_closed()
        alice.send(command="ban", room="dev", user="bob", id=2)
        alice.until("ack", id=2)
        alice.send(command="pm", room="dev", message="after", id=3)
        alice.until("ack", id=3)
        bob, ok = v2(srv, "bob", since=seen, epoch=None)
        assert ok.get("rooms", []) == []
        replayed = []
        while True:
            f = bob.recv()
            if f["type"] == "replay_done":
                break
            replayed.append(f)
        assert [(f["type"], f.get("event")) for f in replayed] == [("room_event", "ban")]


def test_the_audit_command_is_for_server_operators() -> None:
    with quiet_server() as srv:
        alice, bob, _ = room_of_three(srv)
        alice.send(command="kick", room="dev", user="bob", reason="flood", id=1)
        alice.until("ack", id=1)
        alice.send(command="audit", id=2)
        refused(alice, "not_operator", 2)
        alice.send(command="audit", limit=0, id=3)
        refused(alice, "bad_request", 3)
        db = sqlite3.connect(srv.db_path)
        try:
            servergate.grant(servergate.SqliteSql.of(db), "bob", now=5.0)
        finally:
            db.close()
        bob.send(command="audit", room="DEV", id=4)
        (entry,) = bob.until("audit", id=4)["entries"]
        assert (entry["by"], entry["action"], entry["user"], entry["room"], entry["reason"]) == (
            "alice",
            "kick",
            "bob",
            "dev",
            "flood",
        )
        bob.send(command="audit", limit=1, id=5)
        (entry,) = bob.until("audit", id=5)["entries"]
        assert entry["action"] == "kick" and entry["seq"] > 0
        bob.send(command="audit", id=6)
        assert [e["action"] for e in bob.until("audit", id=6)["entries"]] == ["kick", "grant"]
