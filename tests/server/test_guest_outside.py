"""A guest and a stored ``-n`` room (docs/PROTOCOL.md §Guest rooms, §Messages in
rooms): ``-n`` lets non-members send to a room, but not IRC guests to a stored one: a
guest's message would be stored under a nick anyone may hold next, and a room's bans name
nicks, which a guest sheds at will. Refused with ``guest_not_allowed`` by the room
service, so the same over IRC and IRC over WebSocket; an account that is not a member
may still send, and a guest room's ``-n`` still lets guests in."""

from __future__ import annotations

from typing import Any

from tests.helpers import PASSWORD, RawClient, WsClient, quiet_server
from tests.server.test_irc import Irc, irc_address
from tests.server.test_rooms_server import settle

REFUSED = (
    "Cannot send to channel: dev is for accounts: a guest speaks in lobby and in rooms a guest made"
)


def account(srv: Any, name: str) -> RawClient:
    c = RawClient(srv.address)
    c.send(command="login", username=name, password=PASSWORD, features=["rooms"], id="in")
    c.until("login_ok")
    return c


def guest(srv: Any, nick: str) -> Irc:
    g = Irc(irc_address(srv))
    g.send(f"NICK {nick}", "USER u 0 * :R")
    g.until("001")
    return g


def test_a_guest_cannot_send_to_a_stored_room_minus_n_or_not() -> None:
    with quiet_server(irc_port=0, web_port=0, irc_guests=True) as srv:
        alice = account(srv, "alice")
        alice.send(command="join", room="dev", id=1)
        alice.until("room_info", id=1)
        # +n (as made): a guest is refused as a guest, not as a non-member.
        raw = guest(srv, "rawguest")
        raw.send("PRIVMSG #dev :knock knock")
        assert raw.until("404") == f":chatroom 404 rawguest #dev :{REFUSED}"
        alice.send(command="mode", room="dev", modes="-n", id=2)
        alice.until("ack", id=2)
        # -n: an account that is not a member may send; the members get it.
        bob = account(srv, "bob")
        bob.send(command="pm", room="dev", message="from outside", id=3)
        assert bob.until("ack", id=3)["seq"] > 0
        assert alice.until("broadcast")["message"] == "from outside"
        # A guest may not, over IRC or over WebSocket; a NOTICE is dropped silently.
        raw.send("NOTICE #dev :psst", "PRIVMSG #dev :hello?", "PING :done")
        seen = [raw.line()]
        while "PONG" not in seen[-1]:
            seen.append(raw.line())
        assert [line for line in seen if " 404 " in line] == [
            f":chatroom 404 rawguest #dev :{REFUSED}"
        ]
        assert srv.server.web_address is not None
        ws = WsClient(srv.server.web_address, subprotocols=["text.ircv3.net"])
        for line in ("NICK wsguest", "USER u 0 * :R", "PRIVMSG #dev :over ws"):
            ws.send_text(line)
        line = ws.recv_line()
        while " 404 " not in line:
            line = ws.recv_line()
        assert line == f":chatroom 404 wsguest #dev :{REFUSED}"
        # Nothing of theirs reached the room, nor was stored.
        settle(alice)
        alice.send(command="history", room="dev", id=4)
        messages = alice.until("history", id=4)["messages"]
        assert [(m["from"], m["message"]) for m in messages] == [("bob", "from outside")]


def test_a_guest_room_minus_n_takes_guests_from_outside() -> None:
    with quiet_server(irc_port=0, irc_guests=True) as srv:
        maker, outsider = guest(srv, "maker"), guest(srv, "outsider")
        maker.send("JOIN #play")
        maker.until("366")
        maker.send("MODE #play -n")
        assert maker.until("MODE").endswith("MODE #play -n")
        outsider.send("PRIVMSG #play :may I?")
        assert maker.until("PRIVMSG") == ":outsider!outsider@chatroom PRIVMSG #play :may I?"
