"""The IRC server password (docs/IRC.md "Server password", ``--irc-password``): every IRC
client says it with PASS before registering, or gets 464 and ERROR, and is closed; it is
never logged. Accounts then log in by SASL (PASS is the server's)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from chatroom_server import settings
from chatroom_server.__main__ import build_parser, main
from chatroom_server.olines import ServerPassword, hash_secret, parse_password
from chatroom_server.options import build_config
from tests.helpers import PASSWORD
from tests.server.test_irc import Irc, irc_address, irc_server

SERVER_PASSWORD = "the server's password"


def refused(irc: Irc) -> list[str]:
    """The lines until the server closes: a 464, then ERROR, and no welcome."""
    lines = irc.closed()
    assert not any(" 001 " in line for line in lines), lines
    assert any(" 464 " in line for line in lines), lines
    assert lines[-1].startswith("ERROR :Closing link"), lines
    return lines


def test_a_guest_needs_the_server_password_and_it_is_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = parse_password(SERVER_PASSWORD)
    with irc_server(irc_guests=True, irc_password=secret) as srv:
        right = Irc(irc_address(srv))
        right.send(f"PASS :{SERVER_PASSWORD}", "NICK guest1", "USER u 0 * :R")
        assert right.until("001").startswith(":chatroom 001 guest1 ")
        # No PASS at all: 464 and ERROR at registration (irctest's testNoPassword).
        missing = Irc(irc_address(srv))
        missing.send("NICK guest2", "USER u 0 * :R")
        assert "PASS" in next(line for line in refused(missing) if " 464 " in line)
        # A wrong one (testWrongPassword): 464 "Password incorrect", then ERROR.
        wrong = Irc(irc_address(srv))
        wrong.send(f"PASS :{SERVER_PASSWORD}garbage", "NICK guest3", "USER u 0 * :R")
        assert refused(wrong)[0] == ":chatroom 464 guest3 :Password incorrect"
        # PASS after NICK and USER is too late: registration was tried without it.
        late = Irc(irc_address(srv))
        late.send("NICK guest4", "USER u 0 * :R", f"PASS :{SERVER_PASSWORD}")
        refused(late)
        # PASS again after registering: 462, as ever.
        right.send(f"PASS :{SERVER_PASSWORD}")
        assert " 462 " in right.until("462")
    assert "464" not in SERVER_PASSWORD
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "server password" in logged  # the refusals are logged, the password is not
    assert "server's password" not in logged and "garbage" not in logged


def test_accounts_log_in_by_sasl_behind_the_server_password() -> None:
    secret = parse_password(hash_secret(SERVER_PASSWORD))
    assert secret is not None and secret.hashed
    with irc_server(irc_password=secret, password_hash="load-test") as srv:
        irc = Irc(irc_address(srv))
        irc.send(f"PASS :{SERVER_PASSWORD}", "CAP REQ :sasl", "NICK alice", "USER u 0 * :R")
        assert irc.line().endswith("ACK :sasl")
        irc.send("AUTHENTICATE PLAIN")
        assert irc.line() == "AUTHENTICATE +"
        token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
        irc.send(f"AUTHENTICATE {token}", "CAP END")
        assert " 903 " in irc.until("903")
        assert irc.until("001").startswith(":chatroom 001 alice ")
        # PASS alone is the server's password, not an account's: without --irc-guests
        # and without SASL there is no account to log in to.
        nosasl = Irc(irc_address(srv))
        nosasl.send(f"PASS :{SERVER_PASSWORD}", "NICK alice", "USER u 0 * :R")
        line = nosasl.until("464")
        assert "SASL" in line
        # SASL without the server password: refused before any account's is tried.
        sneaky = Irc(irc_address(srv))
        sneaky.send("CAP REQ :sasl", "NICK bob", "USER u 0 * :R")
        assert sneaky.line().endswith("ACK :sasl")
        sneaky.send("AUTHENTICATE PLAIN")
        refused(sneaky)


def test_the_option_and_check_config_never_show_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--irc-password", "hunter2"]
    s = settings.resolve(settings.explicit_args(build_parser, argv), {})
    got = build_config(s.values).irc_password
    assert got == ServerPassword("hunter2") and got.matches("hunter2")
    assert not got.matches("hunter3") and not got.matches("")
    assert "hunter2" not in repr(got) + str(got)
    env = {"CHATROOM_IRC_PASSWORD": "from-env"}
    s = settings.resolve(settings.explicit_args(build_parser, []), env)
    assert build_config(s.values).irc_password == ServerPassword("from-env")
    f = tmp_path / "chat.toml"
    f.write_text('[irc]\nirc_password = "in-a-file"\n')
    assert main(["check-config", "--config", str(f)]) == 0
    out = capsys.readouterr().out
    assert "in-a-file" not in out and 'irc_password = "***"' in out
    assert parse_password("") is None
    with pytest.raises(ValueError, match="not a valid argon2 hash"):
        parse_password("$argon2id$nonsense")


def test_a_hashed_password_is_verified_once_then_by_its_digest() -> None:
    secret = parse_password(hash_secret("pw"))
    assert secret is not None
    assert secret.matches("pw") and secret.matches("pw")
    assert not secret.matches("pW") and not secret.matches("pw ")
    assert secret.matches("pw")  # a wrong one does not forget the right one
