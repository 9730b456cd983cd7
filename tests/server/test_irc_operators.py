"""IRC O-lines, KILL and WALLOPS (docs/IRC.md "Operators", chatroom_server.olines): an
O-line of the server's configuration, and nothing a client sends alone, makes the IRC
session that names it with its password a server operator until it ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chatroom_server import olines, settings
from chatroom_server.__main__ import build_parser, main
from chatroom_server.accounts import AccountStoreBusy
from chatroom_server.olines import OperLine, parse_oper
from chatroom_server.options import build_config
from tests.helpers import connect
from tests.server.test_adminctl import admin
from tests.server.test_irc import Irc, irc_address, irc_server

OPERS = parse_oper("operuser:operpassword")


def client(srv: Any, nick: str) -> Irc:
    irc = Irc(irc_address(srv))
    irc.register(nick)
    return irc


def test_an_o_line_makes_that_session_an_operator_and_only_that_one() -> None:
    with irc_server(irc_opers=OPERS, password_hash="load-test") as srv:
        alice, bob = client(srv, "alice"), client(srv, "bob")
        alice.send("OPER operuser")
        assert " 461 " in alice.until("461")
        alice.send("OPER operuser nottheoperpassword")
        assert alice.until("464").startswith(":chatroom 464 alice :")
        alice.send("OPER notanoperuser somepassword")
        assert "No O-lines" in alice.until("491")
        alice.send("OPER OperUser operpassword")  # names are caseless, as accounts'
        assert alice.until("381") == ":chatroom 381 alice :You are now an IRC operator"
        assert alice.line() == ":chatroom MODE alice :+o"
        alice.send("MODE alice")
        assert alice.until(" 221 ").endswith(" 221 alice +o")
        # WHOIS and WHO show it; bob, who said nothing, is none.
        bob.send("WHOIS alice", "WHO alice", "WHO bob")
        assert bob.until(" 313 ").endswith(" 313 bob alice :is an IRC operator")
        assert bob.until(" 352 ").split(" ")[8] == "H*"
        assert bob.until(" 352 ").split(" ")[8] == "H"
        # Its rights end with the session: the next one has none.
        alice.send("QUIT")
        alice.closed()
        again = client(srv, "alice")
        again.send("KILL bob :x")
        assert " 481 alice " in again.until("481")


def test_kill_ends_a_session_and_needs_an_operator() -> None:
    with irc_server(irc_opers=OPERS, password_hash="load-test") as srv:
        op, bob = client(srv, "op"), client(srv, "bob")
        alice = client(srv, "alice")  # after bob: bob sees it arrive, and leave
        assert bob.until("JOIN").startswith(":alice!")
        json_user = connect(srv.address, "jsonuser")
        alice.send("KILL bob :some arbitrary reason", "KILL alice :me")
        assert " 481 alice " in alice.until("481")
        assert " 481 alice " in alice.until("481")
        op.send("OPER operuser operpassword")
        op.until("381")
        op.send("KILL nobody :x")
        assert " 401 op nobody " in op.until("401")
        op.send("KILL alice :some arbitrary reason")
        rest = alice.closed()
        assert "ERROR :Closing link: chatroom (Killed (op (some arbitrary reason)))" in rest
        assert bob.until("QUIT").startswith(":alice!")
        op.send("KILL jsonuser")  # a JSON client: bye disconnected
        assert json_user.until("bye")["reason"] == "disconnected"
        op.send("KILL op :myself")
        assert any("Killed (op (myself))" in line for line in op.closed())
        bob.send("PING :still")
        assert bob.until("PONG").endswith(":still")


def test_wallops_reach_the_operators_and_clients_with_mode_w() -> None:
    with irc_server(irc_opers=OPERS, password_hash="load-test") as srv:
        n1, n2, n3 = client(srv, "nick1"), client(srv, "nick2"), client(srv, "nick3")
        n1.send("WALLOPS :too early")
        assert " 481 nick1 " in n1.until("481")
        n2.send("MODE nick2 -w")
        assert n2.until("MODE") == ":nick2!nick2@chatroom MODE nick2 :-w"
        n3.send("MODE nick3 +w", "MODE nick3")
        assert n3.until("MODE") == ":nick3!nick3@chatroom MODE nick3 :+w"
        assert n3.until(" 221 ").endswith(" 221 nick3 +w")
        n1.send("OPER operuser operpassword")
        n1.until("381")
        n1.send("WALLOPS :hi everyone")
        assert n3.until("WALLOPS") == ":nick1!nick1@chatroom WALLOPS :hi everyone"
        n2.send("PING :after")  # nick2 (-w) got no WALLOPS before its PONG
        seen = [n2.line()]
        while "PONG" not in seen[-1]:
            seen.append(n2.line())
        assert not any("WALLOPS" in line for line in seen)


def test_too_many_wrong_oper_passwords_close_the_session() -> None:
    with irc_server(irc_opers=OPERS, password_hash="load-test") as srv:
        guess = client(srv, "guess")
        guess.send(*[f"OPER operuser wrong{i}" for i in range(3)])
        rest = guess.closed()
        assert sum(" 464 " in line for line in rest) == 3
        assert rest[-1].startswith("ERROR :Closing link") and "OPER" in rest[-1]


def test_an_o_line_operator_moderates_any_room() -> None:
    """Server-operator rights (docs/PROTOCOL.md §Moderation): a room it is not in."""
    with irc_server(irc_opers=OPERS, password_hash="load-test") as srv:
        owner, bob, op = client(srv, "owner"), client(srv, "bob"), client(srv, "op")
        owner.send("JOIN #dev")
        owner.until("366")
        bob.send("JOIN #dev")
        bob.until("366")
        op.send("KICK #dev bob :out")
        assert " 442 " in op.until("442")  # not yet an operator: not in the room
        op.send("OPER operuser operpassword")
        op.until("381")
        op.send("KICK #dev bob :out")
        assert owner.until("KICK") == ":op!op@chatroom KICK #dev bob :out"


def test_a_hashed_o_line(tmp_path: Path) -> None:
    hashed = olines.hash_secret("s3cret pass")
    assert hashed.startswith("$argon2id$")
    opers = parse_oper(f"root:{hashed}")
    assert olines.check(opers, "ROOT", "s3cret pass") == "ok"
    assert olines.check(opers, "root", "s3cret") == "password"
    assert olines.check(opers, "admin", "s3cret pass") == "none"
    with pytest.raises(ValueError, match="not a valid argon2 hash"):
        parse_oper("root:$argon2id$garbage")
    with pytest.raises(ValueError, match="NAME:PASSWORD"):
        parse_oper("root")
    with pytest.raises(ValueError, match="operator name"):
        parse_oper("no body:x")
    assert "s3cret" not in repr(opers) + str(opers[0])


def test_admin_hash_password_prints_what_an_o_line_takes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, _ = admin(capsys, monkeypatch, "hash-password", stdin="operpassword\n")
    assert status == 0
    (line,) = parse_oper(f"operuser:{out.strip()}")
    assert line.hashed and olines.check((line,), "operuser", "operpassword") == "ok"


def test_the_option_repeats_and_check_config_never_shows_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--irc-oper", "a:one", "--irc-oper", "b:two"]
    s = settings.resolve(settings.explicit_args(build_parser, argv), {})
    assert build_config(s.values).irc_opers == (OperLine("a", "one"), OperLine("b", "two"))
    f = tmp_path / "chat.toml"
    f.write_text('[irc]\nirc_oper = ["c:three", "d:four"]\n')
    s = settings.resolve(settings.explicit_args(build_parser, ["--config", str(f)]), {})
    assert [o.name for o in build_config(s.values).irc_opers] == ["c", "d"]
    env = {"CHATROOM_IRC_OPER": "e:five"}
    s = settings.resolve(settings.explicit_args(build_parser, []), env)
    assert build_config(s.values).irc_opers == (OperLine("e", "five"),)
    assert main(["check-config", "--config", str(f)]) == 0
    out = capsys.readouterr().out
    assert "three" not in out and 'irc_oper = ["c:***", "d:***"]' in out


def test_whois_when_the_database_cannot_say_who_is_an_operator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with irc_server(password_hash="load-test") as srv:
        client(srv, "alice")
        bob = client(srv, "bob")
        gate = srv.server._b.gate
        assert gate is not None

        def down(*_: Any) -> Any:
            raise AccountStoreBusy("the database is down")

        monkeypatch.setattr(gate, "is_operator", down)
        monkeypatch.setattr(gate, "operator_keys", down)
        bob.send("WHOIS alice", "WHO alice")
        lines = [bob.until(" 311 ")]
        while " 318 " not in lines[-1]:
            lines.append(bob.line())
        assert not any(" 313 " in line for line in lines)
        assert bob.until(" 352 ").split(" ")[8] == "H"
        # Whether bob may KILL cannot be read now, nor could the kill be recorded in
        # the audit log: "try again", and alice's session goes on.
        bob.send("KILL alice")
        said = bob.until("NOTICE")
        assert said.endswith(" NOTICE bob :KILL alice: try again: the database is down")
        assert srv.server.online == ("alice", "bob")
        bob.send("PING :alive")
        assert bob.until("PONG").endswith(":alive")
