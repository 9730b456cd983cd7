"""IRCv3 echo-message (docs/IRC.md): a client that asked for it gets its own PRIVMSG and
NOTICE back once the server took them (the ack), once each, tagged as the others get
them; a refused one is not echoed."""

from __future__ import annotations

from tests.helpers import connect
from tests.server.test_irc import Irc, irc_address, irc_server


def _client(srv: object, nick: str, caps: str) -> Irc:
    irc = Irc(irc_address(srv))  # type: ignore[arg-type]
    irc.send(f"CAP REQ :{caps}", "CAP END")
    irc.register(nick)
    return irc


def test_own_messages_come_back_once_with_the_msgid_the_others_see() -> None:
    with irc_server() as srv:
        json_user = connect(srv.address, "jsonuser")
        echo = _client(srv, "echoer", "echo-message message-tags")
        other = _client(srv, "other", "message-tags")
        echo.until(":other!other@chatroom", "JOIN")  # whenever users_delta brings it
        echo.send("PRIVMSG #lobby :hello everyone")
        mine = echo.until("PRIVMSG", "#lobby")
        theirs = other.until("PRIVMSG", "#lobby")
        assert mine.endswith(" :echoer!echoer@chatroom PRIVMSG #lobby :hello everyone")
        assert mine.split(" ", 1)[1] == theirs.split(" ", 1)[1]
        msgid = [t for t in theirs[1:].split(" ", 1)[0].split(";") if t.startswith("msgid=")]
        assert msgid and msgid[0] in mine.split(" ", 1)[0]  # the same seq
        got = json_user.until("broadcast", message="hello everyone")
        assert msgid[0] == f"msgid={got['seq']}"
        # A NOTICE and a DM (to a JSON user) too; a refused one is not echoed.
        echo.send(
            "NOTICE #lobby :a notice", "PRIVMSG jsonuser :just you", "PRIVMSG #nope :x", "PING :end"
        )
        lines = []
        while "PONG" not in (line := echo.line()):
            if " JOIN " not in line:  # a users_delta's, whenever it is published
                lines.append(line.split(" ", 1)[1] if line.startswith("@") else line)
        # Each once, in order, and nothing for the refused one.
        assert lines == [
            ":echoer!echoer@chatroom NOTICE #lobby :a notice",
            ":echoer!echoer@chatroom PRIVMSG jsonuser :just you",
            ":chatroom 403 echoer #nope :there is no room nope",
        ]
        assert json_user.until("dm")["message"] == "just you"


def test_without_the_capability_nothing_comes_back() -> None:
    with irc_server() as srv:
        plain = _client(srv, "plain", "message-tags")
        plain.send("PRIVMSG #lobby :quiet", "PING :end")
        line = plain.line()
        while "PONG" not in line:
            assert "PRIVMSG" not in line, line
            line = plain.line()


def test_a_message_to_oneself_comes_back_once() -> None:
    # The DM itself reaches its recipient, this very client: with echo-message it is
    # that once, not twice (IRCv3 echo-message: each message taken comes back once).
    with irc_server() as srv:
        echo = _client(srv, "selfie", "echo-message message-tags")
        echo.send("PRIVMSG selfie :note to self", "PRIVMSG SELFIE :in capitals", "PING :end")
        lines = []
        while "PONG" not in (line := echo.line()):
            if " JOIN " not in line:
                lines.append(line.split(" ", 1)[1] if line.startswith("@") else line)
        assert lines == [
            ":selfie!selfie@chatroom PRIVMSG selfie :note to self",
            ":selfie!selfie@chatroom PRIVMSG selfie :in capitals",
        ]
