"""Bans over IRC (docs/IRC.md, "Moderation"): MODE +b/-b ``*!*@ADDRESS`` and
``*!*@NETWORK/PREFIX`` are a room's bans of an address, for server operators only (482
for a channel operator: addresses are private); ``nick!*@*`` a ban by name as before;
367 lists both with setter and set-time (address bans to server operators only); a
ban's reason and end in the KICK it makes; a guest's NICK to a nick banned in one of
its channels is 435 (ERR_BANNICKCHANGE), the nick kept.

Loopback clients from 127.0.0.2, 127.0.0.3, ... stand for other hosts."""

from __future__ import annotations

import sqlite3

from chatroom_server import servergate
from tests.helpers import PASSWORD
from tests.server.test_irc import Irc, irc_address, irc_server
from tests.server.test_irc_guests import guest, guests
from tests.server.test_room_address_bans import v2_from


def test_address_bans_by_mode_b_and_the_ban_list() -> None:
    with irc_server() as srv:
        carol, _ = v2_from(srv, "carol", "127.0.0.3")  # owns #dev (a JSON client)
        carol.send(command="join", room="dev", id=1)
        carol.until("room_info", id=1)
        oscar = Irc(irc_address(srv), source="127.0.0.1")
        oscar.register("oscar")
        alice = Irc(irc_address(srv), source="127.0.0.1")
        alice.register("alice")
        bob = Irc(irc_address(srv), source="127.0.0.2")
        bob.register("bob")
        db = sqlite3.connect(srv.db_path)
        try:
            assert servergate.grant(servergate.SqliteSql.of(db), "oscar")
        finally:
            db.close()
        for c in (alice, bob):
            c.send("JOIN #dev")
            c.until("366")
        carol.send(command="mode", room="dev", modes="+o", args=["alice"], id=2)
        carol.until("ack", id=2)
        alice.until("MODE", "+o")

        # A channel operator who is no server operator: 482, saying why.
        alice.send("MODE #dev +b *!*@127.0.0.2")
        assert "addresses are private" in alice.until("482")
        # Masks that name no address or network, or a malformed one: 696.
        oscar.send("MODE #dev +b *!*@10.*", "MODE #dev +b *!*@10.0.0.1/8", "MODE #dev +b a!b@c")
        assert " 696 oscar #dev b *!*@10.* " in oscar.until("696")
        assert "did you mean 10.0.0.0/8" in oscar.until("696")
        assert " 696 oscar #dev b a!b@c " in oscar.until("696")

        # A server operator, not a member: the address is banned, bob kicked, saying why.
        oscar.send("MODE #dev +b *!*@127.0.0.2", "MODE #dev +b *!*@10.0.0.0/8")
        assert oscar.until("MODE") == ":oscar!oscar@chatroom MODE #dev +b *!*@127.0.0.2"
        assert oscar.until("MODE") == ":oscar!oscar@chatroom MODE #dev +b *!*@10.0.0.0/8"
        notice = alice.until("NOTICE", "#dev")
        assert notice == ":oscar!oscar@chatroom NOTICE #dev :oscar banned an address from #dev"
        assert "127.0.0.2" not in notice
        assert bob.until("KICK") == ":oscar!oscar@chatroom KICK #dev bob :banned by address"
        bob.send("JOIN #dev")
        assert "127.0.0.2" in bob.until("474")
        assert carol.until("room_event", event="kick")["user"] == "bob"

        # A ban by name, with a reason and an end (over JSON): both in its KICK.
        carol.send(command="ban", room="dev", user="alice", reason="spam", duration=3600, id=3)
        carol.until("ack", id=3)
        assert alice.until("MODE") == ":carol!carol@chatroom MODE #dev +b alice!*@*"
        kick = alice.until("KICK")
        assert kick.startswith(":carol!carol@chatroom KICK #dev alice :Banned: spam (until ")

        # 367: both kinds to a server operator, with setter and set-time; names only
        # to the others.
        oscar.send("MODE #dev b")
        listed = [oscar.until("367").split(" ")[4:7] for _ in range(3)]
        assert [(m, by) for m, by, _ in listed] == [
            ("alice!*@*", "carol!carol@chatroom"),
            ("*!*@10.0.0.0/8", "oscar!oscar@chatroom"),
            ("*!*@127.0.0.2", "oscar!oscar@chatroom"),
        ]
        assert all(ts.isdigit() for _, _, ts in listed)
        assert " 368 " in oscar.line()
        carol.send(command="bans", room="dev", id=4)
        assert [b["user"] for b in carol.until("bans", id=4)["bans"]] == ["alice"]

        oscar.send("MODE #dev -b *!*@127.0.0.2/32")
        assert oscar.until("MODE") == ":oscar!oscar@chatroom MODE #dev -b *!*@127.0.0.2"
        assert carol.until("room_event", event="unban")["address"] is True
        bob.send("JOIN #dev")
        # (alice's JOIN #lobby, from users_delta, may come before this one)
        assert bob.until("JOIN", "#dev") == ":bob!bob@chatroom JOIN #dev"


def test_a_guests_nick_change_to_a_nick_banned_in_its_channel_is_435() -> None:
    with guests() as srv:
        op = guest(srv, "chanop")
        op.send("JOIN #chan")
        op.until("366")
        hank = guest(srv, "hank")
        hank.send("JOIN #chan")
        hank.until("366")
        op.send("MODE #chan +b evil!*@*")
        assert op.until("MODE") == ":chanop!chanop@chatroom MODE #chan +b evil!*@*"
        hank.send("NICK Evil")
        assert hank.until("435") == (
            ":chatroom 435 hank Evil #chan :Cannot change nickname while banned on channel"
        )
        hank.send("NICK hank2")  # the nick was kept: hank's to change
        assert hank.until("NICK") == ":hank!hank@chatroom NICK :hank2"
        hank.send("PART #chan")
        hank.until("PART")
        hank.send("NICK evil")  # out of the channel, its ban does not hold the nick
        assert hank.until("NICK") == ":hank2!hank2@chatroom NICK :evil"


def test_an_address_ban_in_a_guest_room_kicks_without_storing() -> None:
    with guests() as srv:
        op = guest(srv, "chanop")
        op.send("JOIN #g")
        op.until("366")
        visitor = Irc(irc_address(srv), source="127.0.0.2")
        visitor.send("NICK visitor", "USER u 0 * :R")
        visitor.until("376")
        visitor.send("JOIN #g")
        visitor.until("366")
        oscar = Irc(irc_address(srv))
        oscar.send(f"PASS :{PASSWORD}", "NICK oscar", "USER u 0 * :R")  # an account
        oscar.until("376")
        db = sqlite3.connect(srv.db_path)
        try:
            assert servergate.grant(servergate.SqliteSql.of(db), "oscar")
        finally:
            db.close()
        oscar.send("MODE #g +b *!*@127.0.0.2")
        assert oscar.until("MODE") == ":oscar!oscar@chatroom MODE #g +b *!*@127.0.0.2"
        assert visitor.until("KICK") == ":oscar!oscar@chatroom KICK #g visitor :banned by address"
        assert op.until("KICK") == ":oscar!oscar@chatroom KICK #g visitor :banned by address"
        visitor.send("JOIN #g")
        assert " 474 visitor #g " in visitor.until("474")
        db = sqlite3.connect(srv.db_path)
        try:  # a guest room's changes are never stored
            assert db.execute("SELECT count(*) FROM room_address_bans").fetchone() == (0,)
        finally:
            db.close()
