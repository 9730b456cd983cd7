"""IRC lines rendered from the events the server's frames carry (chatroom_server.frames,
docs/ARCHITECTURE.md "One public message's path"): a public message, a room's, a DM,
their acks, the roster's users_delta and a room's events reach an IRC client without its
gateway decoding their JSON again."""

from __future__ import annotations

from tests.helpers import connect
from tests.server.test_irc import Irc, irc_address, irc_server


def test_messages_and_their_acks_are_rendered_without_decoding(decoded: list[str]) -> None:
    with irc_server() as srv:
        json_user = connect(srv.address, "jsonuser")
        irc = Irc(irc_address(srv))
        irc.send("CAP REQ :message-tags server-time", "CAP END")
        irc.register("ircuser")
        other = Irc(irc_address(srv))
        other.register("otheruser")
        # JSON -> IRC: the public message with its seq (msgid) from the log.
        json_user.send(command="pm", message="hello irc", id=1)
        seq = json_user.until("ack", id=1)["seq"]
        line = irc.until("PRIVMSG")
        assert line.startswith("@time=") and f";msgid={seq} " in line
        assert line.endswith(":jsonuser!jsonuser@chatroom PRIVMSG #lobby :hello irc")
        # IRC -> IRC and JSON: the public message, and its sender's ack (no line).
        irc.send("PRIVMSG #lobby :from irc")
        assert other.until("from irc") == ":ircuser!ircuser@chatroom PRIVMSG #lobby :from irc"
        assert json_user.until("broadcast")["message"] == "from irc"
        # DMs both ways, and one to an account that is offline (its ack says so).
        json_user.send(command="dm", to="ircuser", message="psst", id=2)
        assert irc.until("psst").endswith(":jsonuser!jsonuser@chatroom PRIVMSG ircuser :psst")
        away = connect(srv.address, "away")
        away.send(command="exit")
        away.wait_closed()
        json_user.until("users", left="away")
        irc.send("PRIVMSG away :later")
        notice = irc.until("NOTICE")
        assert notice.endswith(":away is offline; they get your message when they log in")
        # A room's message, between two IRC clients.
        irc.send("JOIN #den")
        irc.until("366")
        other.send("JOIN #den")
        other.until("366")
        irc.send("PRIVMSG #Den :in the den")
        assert other.until("in the den").endswith("PRIVMSG #den :in the den")
        # The roster's updates and a room's events: JOIN lines, rendered per client.
        json_user.send(command="exit")
        # (away's QUIT may come before it or not at all: its login and exit can fall in
        # one window of the user list's publisher, chatroom_server.roster.)
        assert irc.until(":jsonuser!jsonuser@chatroom QUIT").startswith(
            ":jsonuser!jsonuser@chatroom QUIT"
        )
        irc.send("KICK #den otheruser :out")
        assert other.until("KICK") == ":ircuser!ircuser@chatroom KICK #den otheruser :out"
        assert irc.until("KICK") == ":ircuser!ircuser@chatroom KICK #den otheruser :out"
        # Every frame above that carries its events was rendered from them; what was
        # decoded is only the replies made by encode() alone (login_ok, user lists).
        carried = {"Broadcast", "DirectMessage", "Ack", "UsersDelta", "RoomEvent"}
        assert not carried & set(decoded), decoded
