"""IRC texts the server's commands take as one line of printable text (KICK's and
KILL's reasons, TOPIC): mIRC formatting dropped, another control character refused
with a NOTICE that says so (docs/IRC.md, "Formatting"); and bans with an end, UnrealIRCd's
``~t:MINUTES:mask`` (docs/IRC.md, "Bans with an end")."""

from __future__ import annotations

import time

from chatroom.testing import TestServer
from chatroom_server.irc.parse import plain
from chatroom_server.olines import parse_oper
from tests.helpers import RawClient
from tests.server.test_irc import Irc, irc_address, irc_server
from tests.server.test_rooms_server import v2

BOLD, COLOUR, BELL = "\x02", "\x03", "\x07"


def test_plain_drops_mirc_formatting_and_keeps_the_words() -> None:
    assert plain("\x02bold\x02 \x1ditalic\x1d \x1funder\x1f") == "bold italic under"
    assert plain("\x034red\x03 \x0304,12red on blue\x0f, \x03,5comma") == "red red on blue, ,5comma"
    assert plain("\x04FF0000hex\x04 \x04ff0000,00ff00two\x04") == "hex two"
    assert plain("\x1estrike\x1e \x11mono\x11 \x16rev\x16") == "strike mono rev"
    # A colour takes two digits at most: the third is text.
    assert plain("\x03123 three") == "3 three"
    assert plain("a \x07 bell stays") == "a \x07 bell stays"  # the caller refuses it


def room_with(srv: TestServer) -> tuple[Irc, Irc, RawClient]:
    """op owns #mod; pat (IRC) and jo (JSON) are in it."""
    op = Irc(irc_address(srv))
    op.register("op")
    pat = Irc(irc_address(srv))
    pat.register("pat")
    jo, _ = v2(srv, "jo")
    op.send("JOIN #mod")
    op.until("366")
    pat.send("JOIN #mod")
    pat.until("366")
    jo.send(command="join", room="mod", id=1)
    jo.until("room_info", id=1)
    return op, pat, jo


def test_a_kick_reason_and_a_topic_with_formatting_go_through_without_it() -> None:
    with irc_server() as srv:
        op, pat, jo = room_with(srv)
        op.send(f"TOPIC #mod :{BOLD}release{BOLD} on {COLOUR}4Friday{COLOUR}")
        assert op.until("TOPIC") == ":op!op@chatroom TOPIC #mod :release on Friday"
        assert jo.until("room_event", event="topic")["topic"] == "release on Friday"
        op.send(f"KICK #mod pat :{COLOUR}04,01stop{COLOUR} {BOLD}flooding{BOLD}")
        assert pat.until("KICK") == ":op!op@chatroom KICK #mod pat :stop flooding"
        got = jo.until("room_event", event="kick")
        assert (got["user"], got["reason"]) == ("pat", "stop flooding")
        # Formatting alone is no reason: the kicker's nick, as with none.
        pat.send("JOIN #mod")
        pat.until("366")
        op.send(f"KICK #mod pat :{BOLD}{BOLD}")
        assert pat.until("KICK") == ":op!op@chatroom KICK #mod pat :op"


def test_another_control_character_is_refused_saying_which() -> None:
    with irc_server() as srv:
        op, pat, jo = room_with(srv)
        op.send(f"KICK #mod pat :wake up{BELL}", f"TOPIC #mod :ding{BELL}")
        assert op.until("NOTICE") == (
            ":chatroom NOTICE op :KICK #mod pat: not sent: the text has the control "
            "character U+0007 (mIRC formatting is dropped, other control characters "
            "are refused)"
        )
        assert op.until("NOTICE").startswith(":chatroom NOTICE op :TOPIC #mod: not sent: ")
        # Neither was sent: the next kick is the first pat and jo see.
        op.send("KICK #mod pat :now")
        assert pat.until("KICK") == ":op!op@chatroom KICK #mod pat :now"
        assert jo.until("room_event", event="kick")["reason"] == "now"
        # The server's own refusal names the command too.
        pat.send("JOIN #mod")
        pat.until("366")
        op.send("KICK #mod pat :" + "x" * 1000)
        said = op.until("NOTICE")
        assert said.startswith(":chatroom NOTICE op :KICK #mod pat: a reason is 1000 characters")


def test_kill_reasons_lose_their_formatting_and_a_bell_is_refused() -> None:
    with irc_server(irc_opers=parse_oper("operuser:operpassword")) as srv:
        op = Irc(irc_address(srv))
        op.register("op")
        bob = Irc(irc_address(srv))
        bob.register("bob")
        op.send("OPER operuser operpassword")
        op.until("381")
        op.send(f"KILL bob :{BELL}")
        assert op.until("NOTICE").startswith(
            ":chatroom NOTICE op :KILL bob: not sent: the text has the control character U+0007"
        )
        op.send(f"KILL bob :{BOLD}spam{BOLD}")
        assert "ERROR :Closing link: chatroom (Killed (op (spam)))" in bob.closed()


def test_a_timed_ban_has_an_end() -> None:
    with irc_server() as srv:
        op, pat, jo = room_with(srv)
        # Minutes that are no number, none, or over a year: 696, saying how.
        op.send("MODE #mod +b ~t:soon:pat!*@*", "MODE #mod +b ~t:0:pat", "MODE #mod +b ~t:5:")
        for _ in range(3):
            assert "a timed ban is ~t:MINUTES:mask, MINUTES 1 to 525600" in op.until("696")
        before = time.time()
        op.send("MODE #mod +b ~t:90:pat!*@*")
        assert op.until("MODE", "#mod") == ":op!op@chatroom MODE #mod +b pat!*@*"
        kick = pat.until("KICK")
        assert kick.startswith(":op!op@chatroom KICK #mod pat :Banned (until ")
        got = jo.until("room_event", event="ban")
        assert before + 90 * 60 - 5 <= got["expires"] <= time.time() + 90 * 60 + 5
        # -b takes the timed mask as well; a timed mute is a timed m: extban.
        op.send("MODE #mod -b ~t:90:pat!*@*", "MODE #mod +b ~time:1:m:jo!*@*")
        assert op.until("MODE", "#mod") == ":op!op@chatroom MODE #mod -b pat!*@*"
        assert op.until("MODE", "#mod") == ":op!op@chatroom MODE #mod +b m:jo!*@*"
        got = jo.until("room_event", event="mute")
        assert got["expires"] is not None and got["expires"] <= time.time() + 65
