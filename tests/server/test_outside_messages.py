"""A non-member's message to a ``-n`` room (docs/PROTOCOL.md §Rooms, §Modes), attacked
over real sockets: the members get it once, a resend (its cid) is not a second message,
and the sender reads none of the room, by history or a replay."""

from __future__ import annotations

from tests.helpers import PASSWORD, RawClient, WsClient, quiet_server
from tests.server.test_irc import Irc
from tests.server.test_rooms_server import settle, v2


def _drain_replay(c: RawClient) -> list[dict[str, object]]:
    out = []
    while (f := c.recv())["type"] != "replay_done":
        out.append(f)
    return out


def test_an_outsider_is_heard_once_and_reads_nothing_of_the_room() -> None:
    with quiet_server() as srv:
        alice, _ = v2(srv, "alice")
        bob, _ = v2(srv, "bob")
        carol, ok = v2(srv, "carol")
        start = ok["seq"]
        alice.send(command="join", room="dev", id=1)
        alice.until("room_info", id=1)
        bob.send(command="join", room="dev", id=2)
        bob.until("room_info", id=2)
        alice.send(command="mode", room="dev", modes="-n", id=3)
        alice.until("ack", id=3)
        carol.send(command="pm", room="dev", message="from outside", cid="c-1", id=4)
        seq = carol.until("ack", id=4)["seq"]
        got = bob.until("broadcast", room="dev")
        assert (got["message"], got["seq"], got["from"]) == ("from outside", seq, "carol")
        # A reconnect, and the SDK's resend of the message whose ack it never saw.
        carol.close()
        carol, _ = v2(srv, "carol")
        carol.send(command="pm", room="dev", message="from outside", cid="c-1", id=5)
        assert carol.until("ack", id=5)["seq"] == seq
        carol.send(command="pm", room="dev", message="second", cid="c-2", id=6)
        carol.until("ack", id=6)
        # bob gets the second message next: the resend was not a message of its own.
        nxt = bob.until("broadcast", room="dev")
        assert nxt["message"] == "second"
        carol.send(command="history", room="dev", id=7)
        assert carol.until("error", id=7)["code"] == "not_in_room"
        carol.close()
        carol, ok = v2(srv, "carol", since=start, epoch=ok["epoch"])
        replayed = _drain_replay(carol)
        assert [f for f in replayed if f.get("room") == "dev"] == []
        settle(carol)
        # +m: an outsider is never voiced; a ban keeps it out.
        alice.send(command="mode", room="dev", modes="+m", id=8)
        alice.until("ack", id=8)
        carol.send(command="pm", room="dev", message="muted?", id=9)
        assert carol.until("error", id=9)["code"] == "muted"
        alice.send(command="mode", room="dev", modes="-m", id=10)
        alice.until("ack", id=10)
        alice.send(command="ban", room="dev", user="carol", id=11)
        alice.until("ack", id=11)
        carol.send(command="pm", room="dev", message="banned?", id=12)
        assert carol.until("error", id=12)["code"] == "banned"
        settle(bob)


def test_an_outsider_over_websocket_and_irc_is_heard_the_same() -> None:
    # The one check (RoomService.recipients) for every transport: a WebSocket client
    # and an IRC client with an account, neither a member, speak in the -n room.
    with quiet_server(web_port=0, irc_port=0) as srv:
        alice, _ = v2(srv, "alice")
        alice.send(command="join", room="dev", id=1)
        alice.until("room_info", id=1)
        alice.send(command="mode", room="dev", modes="-n", id=2)
        alice.until("ack", id=2)
        ws = WsClient(srv.web_address)
        ws.send(command="login", username="wendy", password=PASSWORD, features=["rooms"])
        ws.until("login_ok")
        ws.send(command="pm", room="dev", message="over websocket", id=3)
        seq = ws.until("ack", id=3)["seq"]
        got = alice.until("broadcast", room="dev")
        assert (got["message"], got["seq"], got["from"]) == ("over websocket", seq, "wendy")
        irc = Irc(srv.server.irc_addresses[0])
        irc.send("CAP REQ :echo-message", "CAP END")
        irc.register("ivan")
        irc.send("PRIVMSG #dev :over irc", "PING :end")
        lines = []
        while "PONG" not in (line := irc.line()):
            lines.append(line)
        # Its echo (the ack) and nothing else of the room: no error, no second copy.
        assert [x for x in lines if "#dev" in x] == [":ivan!ivan@chatroom PRIVMSG #dev :over irc"]
        got = alice.until("broadcast", room="dev")
        assert (got["message"], got["from"]) == ("over irc", "ivan")
        settle(alice)
