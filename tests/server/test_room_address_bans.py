"""A room's bans of an address (docs/PROTOCOL.md §Bans by address), on a real server:
made by server operators only (addresses are private), they put out the members who
come from the address (a ``kick`` each), keep out every join and ``-n`` message from it,
hold across a restart and at the next login of an offline member, are listed to server
operators only, undone, audited; bad input is a clear error.

Loopback clients from 127.0.0.2, 127.0.0.5, ... stand for other hosts."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from chatroom.rooms import RoomEventKind
from chatroom.testing import TestServer
from chatroom_server import servergate
from chatroom_server.moderation import Moderation
from chatroom_server.rooms import RoomChange
from chatroom_server.session import BannedError
from tests.helpers import PASSWORD, RawClient, quiet_server
from tests.server.test_moderation_server import refused
from tests.server.test_rooms_server import settle


def v2_from(srv: TestServer, name: str, ip: str) -> tuple[RawClient, dict[str, Any]]:
    c = RawClient(srv.address, source=ip)
    c.send(command="login", username=name, password=PASSWORD, features=["rooms"])
    return c, c.expect("login_ok")


def grant(srv: TestServer, name: str) -> None:
    db = sqlite3.connect(srv.db_path)
    try:
        assert servergate.grant(servergate.SqliteSql.of(db), name, now=1.0)
    finally:
        db.close()


def joined(c: RawClient, room: str, rid: object) -> dict[str, Any]:
    c.send(command="join", room=room, id=rid)
    return c.until("room_info", id=rid)


def dev_room(srv: TestServer) -> tuple[RawClient, RawClient, RawClient, RawClient]:
    """alice (127.0.0.1) owns dev; bob (127.0.0.2) and carol (127.0.0.3) are members;
    oscar (127.0.0.1), a server operator, is not."""
    alice, _ = v2_from(srv, "alice", "127.0.0.1")
    bob, _ = v2_from(srv, "bob", "127.0.0.2")
    carol, _ = v2_from(srv, "carol", "127.0.0.3")
    oscar, _ = v2_from(srv, "oscar", "127.0.0.1")
    grant(srv, "oscar")
    for i, c in enumerate((alice, bob, carol)):
        joined(c, "dev", f"j{i}")
    settle(alice)
    return alice, bob, carol, oscar


def test_an_address_ban_puts_out_its_members_and_keeps_out_its_joins() -> None:
    with quiet_server() as srv:
        alice, bob, carol, oscar = dev_room(srv)
        # A room's owner is not a server operator: the address is not theirs to know.
        alice.send(command="ban", room="dev", address="127.0.0.2", id=1)
        assert "private" in refused(alice, "not_operator", 1)["message"]

        oscar.send(command="ban", room="dev", address="127.0.0.2", reason="spam", id=2)
        ack = oscar.until("ack", id=2)
        assert (ack["command"], ack["room"], ack["to"]) == ("ban", "dev", "127.0.0.2/32")
        # The room sees a ban of an address, never which one; bob is kicked, saying why.
        ev = carol.until("room_event", event="ban", seq=ack["seq"])
        assert ev["address"] is True and "user" not in ev and ev["reason"] == "spam"
        assert "127.0.0.2" not in str(ev)
        kick = bob.until("room_event", event="kick")
        assert (kick["user"], kick["by"], kick["seq"]) == ("bob", "oscar", ack["seq"] + 1)
        assert "banned by address" in kick["reason"] and "spam" in kick["reason"]
        assert carol.until("room_event", event="kick")["user"] == "bob"
        alice.send(command="members", room="dev", id=3)
        assert alice.until("room_info", id=3)["info"]["members"] == ["alice", "carol"]

        bob.send(command="join", room="dev", id=4)
        got = refused(bob, "banned", 4)
        assert "127.0.0.2" in got["message"] and got["reason"] == "spam"
        dave, _ = v2_from(srv, "dave", "127.0.0.2")  # anyone from there
        dave.send(command="join", room="dev", id=5)
        refused(dave, "banned", 5)
        joined(carol, "other", 6)  # another room does not ban it
        joined(bob, "other", 7)

        # Listed to server operators only, with the name bans.
        alice.send(command="ban", room="dev", user="dave", id=8)
        alice.until("ack", id=8)
        oscar.send(command="bans", room="dev", id=9)
        bans = oscar.until("bans", id=9)["bans"]
        assert [(b.get("user"), b.get("address"), b["by"]) for b in bans] == [
            ("dave", None, "alice"),
            (None, "127.0.0.2/32", "oscar"),
        ]
        alice.send(command="bans", room="dev", id=10)
        assert [b["user"] for b in alice.until("bans", id=10)["bans"]] == ["dave"]

        oscar.send(command="unban", room="dev", address="127.0.0.2", id=11)
        unban = oscar.until("ack", id=11)
        assert unban["to"] == "127.0.0.2/32" and unban["seq"] > ack["seq"]
        assert carol.until("room_event", event="unban")["address"] is True
        oscar.send(command="unban", room="dev", address="127.0.0.2/32", id=12)
        assert oscar.until("ack", id=12)["unchanged"] is True
        joined(bob, "dev", 13)

        db = sqlite3.connect(srv.db_path)
        try:
            rows = servergate.audit(servergate.SqliteSql.of(db))
        finally:
            db.close()
        actions = [(r[2], r[3], r[4], r[5]) for r in rows]
        assert ("oscar", "ban", "127.0.0.2/32", "dev") in actions
        assert ("oscar", "unban", "127.0.0.2/32", "dev") in actions
        assert ("oscar", "kick", "bob", "dev") in actions


def test_a_network_ban_holds_across_a_restart_and_at_an_offline_members_login() -> None:
    with quiet_server() as srv:
        alice, bob, carol, oscar = dev_room(srv)
        bob.close()  # offline: still a member (memberships are durable)
        oscar.send(command="ban", room="dev", address="127.0.0.0/29", id=1)
        # Oscar comes from 127.0.0.1 himself: a clear error, not a ban of himself.
        assert "your own address" in refused(oscar, "bad_request", 1)["message"]
        oscar.send(command="ban", room="dev", address="127.0.0.2/31", duration=3600, id=2)
        ack = oscar.until("ack", id=2)
        assert ack["to"] == "127.0.0.2/31"
        kick = carol.until("room_event", event="kick", user="carol")  # 127.0.0.3 is in it
        assert kick["reason"].startswith("banned by address (until ")  # no reason given
        settle(alice)

        srv.restart()
        alice, _ = v2_from(srv, "alice", "127.0.0.1")
        bob, ok = v2_from(srv, "bob", "127.0.0.2")
        # Put out of the room before the session began: not in login_ok.
        assert [r["name"] for r in ok.get("rooms", [])] == []
        bob.send(command="join", room="dev", id=3)
        assert "until" in refused(bob, "banned", 3)["message"]
        # A -n room takes messages from non-members, but not from a banned address.
        alice.send(command="mode", room="dev", modes="-n", id=4)
        alice.until("ack", id=4)
        bob.send(command="pm", room="dev", message="hi", id=5)
        refused(bob, "banned", 5)
        bob.send(command="history", room="dev", id=6)
        refused(bob, "not_in_room", 6)
        alice.send(command="members", room="dev", id=7)
        assert alice.until("room_info", id=7)["info"]["members"] == ["alice"]
        # Another member from elsewhere is not touched.
        erin, ok = v2_from(srv, "erin", "127.0.0.9")
        joined(erin, "dev", 8)


def test_bad_address_bans_are_clear_errors() -> None:
    with quiet_server() as srv:
        _, _, _, oscar = dev_room(srv)
        bad: list[tuple[dict[str, Any], str, str]] = [
            ({"address": "127.0.0.999"}, "bad_request", "not an IPv4 or IPv6"),
            ({"address": "10.0.0.1/8"}, "bad_request", "did you mean 10.0.0.0/8"),
            ({"address": "0.0.0.0/4"}, "bad_request", "too wide"),
            ({"address": "fe80::1%eth0"}, "bad_request", "zone"),
            ({"address": ""}, "bad_request", "IP address or CIDR"),
            ({"address": "x" * 65}, "bad_request", "up to 64"),
            ({"address": "127.0.0.2", "user": "bob"}, "bad_request", "not both"),
            ({"address": 7}, "bad_request", ""),
            ({"address": "127.0.0.2", "room": "nowhere"}, "no_such_room", "nowhere"),
            ({"address": "127.0.0.2", "room": "lobby"}, "not_operator", "lobby"),
        ]
        for i, (fields, code, words) in enumerate(bad):
            frame = {"command": "ban", "room": "dev", **fields, "id": i}
            oscar.send(**frame)
            assert words in refused(oscar, code, i)["message"], frame
        oscar.send(command="unban", room="dev", address="bogus", id="u")
        refused(oscar, "bad_request", "u")
        # Naming nobody says what is missing, not "no user can be named ''".
        for command, words in [
            ("ban", "ban needs a user or an address"),
            ("unban", "unban needs a user or an address"),
            ("kick", "kick needs a user"),
        ]:
            oscar.send(command=command, room="dev", user="", id=command)
            assert words in refused(oscar, "bad_request", command)["message"]
        oscar.send(command="kill", user="", id="k")
        assert "kill needs a user" in refused(oscar, "bad_request", "k")["message"]
        # An IPv6 network and a v4-mapped one are kept in their canonical forms.
        oscar.send(command="ban", room="dev", address="2001:DB8:0::/32", id="v6")
        assert oscar.until("ack", id="v6")["to"] == "2001:db8::/32"
        oscar.send(command="ban", room="dev", address="::ffff:192.0.2.0/120", id="m")
        assert oscar.until("ack", id="m")["to"] == "192.0.2.0/24"


# ---------------------------------------------------------------- the model alone


def test_the_model_matches_networks_ends_bans_and_is_rebuilt_from_rows() -> None:
    m = Moderation()
    ban = RoomChange("dev", RoomEventKind.BAN, "oscar", address="2001:db8::/32", expires=110.0)
    m.apply(ban, 100.0)
    m.apply(RoomChange("dev", RoomEventKind.BAN, "oscar", address="192.0.2.0/24"), 100.0)
    m.apply(RoomChange("dev", RoomEventKind.BAN, "root", address="192.0.2.128/25"), 101.0)
    got = m.address_ban_of("DEV", "2001:db8:1::7", 109.0)
    assert got is not None and got.network == "2001:db8::/32"
    assert m.address_ban_of("dev", "2001:db8:1::7", 110.0) is None  # ended
    assert m.address_ban_of("dev", "2001:db9::7", 100.0) is None
    narrow = m.address_ban_of("dev", "::ffff:192.0.2.200", 100.0)  # a v4 client, dual-stack
    assert narrow is not None and narrow.by == "root"  # the narrowest holding it
    assert m.address_ban_of("dev", "not-an-ip", 100.0) is None  # a socketpair
    assert m.address_ban_of("ops", "192.0.2.1", 100.0) is None
    with pytest.raises(BannedError):
        m.check_join("dev", "bob", 100.0, 1, "192.0.2.1")
    m.check_join("dev", "bob", 100.0, 1, None)  # no address: only name bans

    listed = m.bans("dev", 111.0, addresses=True)
    assert [b.address for b in listed] == ["192.0.2.0/24", "192.0.2.128/25"]
    assert m.bans("dev", 100.0) == ()  # to others than server operators: none

    # A login asks, without the lock, whether its address is banned anywhere.
    assert m.may_ban_address("192.0.2.9", 100.0) and m.may_ban_address("2001:db8::1", 109.0)
    assert not m.may_ban_address("2001:db8::1", 110.0) and not m.may_ban_address("10.0.0.1", 0)

    again = Moderation()
    again.load((), (), [("dev", "192.0.2.0/24", "oscar", 100.0, "spam", None)])
    assert again.address_ban_of("dev", "192.0.2.9", 1e12) is not None
    assert again.may_ban_address("192.0.2.9", 1e12)
    m.apply(RoomChange("dev", RoomEventKind.UNBAN, "oscar", address="192.0.2.0/24"), 102.0)
    m.apply(RoomChange("dev", RoomEventKind.UNBAN, "oscar", address="192.0.2.128/25"), 102.0)
    m.apply(RoomChange("dev", RoomEventKind.UNBAN, "oscar", address="2001:db8::/32"), 102.0)
    assert not m.may_ban_address("192.0.2.9", 100.0)


def test_a_returning_users_early_login_from_a_banned_address_is_put_out(
    tmp_path: Path,
) -> None:
    """A login the admission thread would run itself (a remembered password) goes the
    usual way when a room bans its address: its kick is a store, not for that thread."""
    with quiet_server(tmp_path / "chat.db", password_hash="load-test") as srv:
        bob, _ = v2_from(srv, "bob", "127.0.0.2")
        carol, _ = v2_from(srv, "carol", "127.0.0.3")
        oscar, _ = v2_from(srv, "oscar", "127.0.0.1")
        grant(srv, "oscar")
        for i, c in enumerate((bob, carol)):
            joined(c, "dev", i)
        # Gone before the ban: one still online is put out by the ban's own kicks, and
        # then its login has nobody to kick.
        bob.close()
        oscar.until("users", left="bob")
        carol.close()
        oscar.until("users", left="carol")
        oscar.send(command="ban", room="dev", address="127.0.0.2", id="b")
        oscar.until("ack", id="b")

        logins = srv.server._logins
        before = logins.early_logins
        carol, ok = v2_from(srv, "carol", "127.0.0.3")  # remembered: early, as before
        assert logins.early_logins == before + 1
        assert [r["name"] for r in ok["rooms"]] == ["dev"]
        bob, ok = v2_from(srv, "bob", "127.0.0.2")
        assert logins.early_logins == before + 1  # not on the admission thread
        assert [r["name"] for r in ok.get("rooms", [])] == []
        assert carol.until("room_event", event="kick")["user"] == "bob"


def test_an_address_ban_with_a_duration_ends_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    with quiet_server() as srv:
        _, bob, carol, oscar = dev_room(srv)
        oscar.send(command="ban", room="dev", address="127.0.0.2", duration=60, id=1)
        ack = oscar.until("ack", id=1)
        bob.until("room_event", event="kick")
        bob.send(command="join", room="dev", id=2)
        refused(bob, "banned", 2)
        # The room's clock a minute on (the server's wall clock, as the rooms read it):
        # the ban has ended, with nothing sent; it is no longer listed.
        wire = srv.server._b.rooms
        assert wire is not None
        real = wire._wall
        monkeypatch.setattr(wire, "_wall", lambda: real() + 61)
        assert joined(bob, "dev", 3)["joined"] is True
        oscar.send(command="bans", room="dev", id=4)
        assert oscar.until("bans", id=4).get("bans", []) == []
        assert carol.until("room_event", event="join", by="bob")["seq"] > ack["seq"]
