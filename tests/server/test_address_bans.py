"""Server bans by address (docs/PROTOCOL.md §Moderation, "Server-wide"): ``chat-server
admin ban --address`` on a running server's database ends the sessions from the
address (an ``error`` ``banned`` saying why, then ``bye`` ``disconnected``) and refuses
every login and registration from it, before the password; listed, audited, undone and
ending like a ban of an account; a malformed address or mask is a clear error.

Loopback clients from 127.0.0.2, 127.0.0.5, ... stand for other hosts."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

import pytest

from chatroom_server import servergate
from chatroom_server.__main__ import main
from tests.helpers import PASSWORD, RawClient, quiet_server
from tests.server.test_irc import Irc, irc_address


def admin(capsys: pytest.CaptureFixture[str], db: Path | str, *args: str) -> tuple[int, str, str]:
    status = main(["admin", "--db", str(db), *args])
    out, err = capsys.readouterr()
    return status, out, err


def from_(address: tuple[str, int], ip: str, name: str | None = None) -> RawClient:
    c = RawClient(address, source=ip)
    if name is not None:
        c.login(name)
    return c


def ended_by_ban(c: RawClient, *words: str) -> None:
    """The session ends: ``error`` ``banned`` (id-less) saying ``words``, then ``bye``."""
    frames = c.wait_closed()
    errors = [f for f in frames if f.get("type") == "error"]
    assert [e["code"] for e in errors] == ["banned"] and "id" not in errors[0]
    assert all(w in errors[0]["message"] for w in words), errors[0]
    assert frames[-1] == {"type": "bye", "reason": "disconnected"}


def test_an_address_ban_ends_its_sessions_and_refuses_its_logins(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    with quiet_server(db_path=db) as srv:
        alice = from_(srv.address, "127.0.0.1", "alice")
        mallory = from_(srv.address, "127.0.0.2", "mallory")
        trudy = from_(srv.address, "127.0.0.5", "trudy")

        status, out, _ = admin(
            capsys, db, "ban", "--address", "127.0.0.2", "--reason", "spam", "--hours", "1"
        )
        assert status == 0 and out.startswith("127.0.0.2/32 is banned from the server\n")
        ended_by_ban(mallory, "127.0.0.2", "spam", "until")
        alice.send(command="ping", id=1)
        alice.until("pong", id=1)  # another address is not touched

        # Refused before the password (a banned address learns nothing of accounts),
        # with one, and a new name is not registered.
        again = from_(srv.address, "127.0.0.2")
        again.send(command="login", username="mallory", id=2)
        assert again.until("error", id=2)["code"] == "banned"
        again.send(command="login", username="mallory", password="wrong password", id=3)
        again.until("error", id=3, code="banned")
        again.send(command="login", username="mallory2", password=PASSWORD, id=4)
        refused = again.until("error", id=4)
        assert refused["code"] == "banned" and "127.0.0.2" in refused["message"]
        alice.send(command="whois", user="mallory2", id=5)
        alice.until("error", id=5, code="unknown_user")

        # A network: the narrowest ban holding the address is the one told.
        assert admin(capsys, db, "ban", "--address", "127.0.0.4/30")[0] == 0
        ended_by_ban(trudy, "127.0.0.5 (127.0.0.4/30)")
        status, out, _ = admin(capsys, db, "bans")
        assert out.splitlines() == [
            out.splitlines()[0],
            "127.0.0.4/30 is banned from this server",
        ]
        assert out.startswith("127.0.0.2/32 is banned from this server until ")

        assert admin(capsys, db, "unban", "--address", "127.0.0.2") == (
            0,
            "127.0.0.2/32 may log in again\n",
            "",
        )
        status, _, err = admin(capsys, db, "unban", "--address", "127.0.0.2/32")
        assert status == 1 and "is not banned" in err
        again.send(command="login", username="mallory", password=PASSWORD, id=6)
        again.until("login_ok", id=6)

        # An ended ban is no ban (ends are checked when they matter).
        now = time.time()
        with closing(servergate.SqliteSql.open(db)) as sql:
            servergate.ban_address(sql, "127.0.0.8/32", "old", now - 1, now - 10)
        from_(srv.address, "127.0.0.8", "carol")

        actions = [line.split("\t")[2:4] for line in admin(capsys, db, "audit")[1].splitlines()]
        assert actions == [  # newest first: the ended ban was made (ts) 10 s ago
            ["address-unban", "127.0.0.2/32"],
            ["address-ban", "127.0.0.4/30"],
            ["address-ban", "127.0.0.2/32"],
            ["address-ban", "127.0.0.8/32"],
        ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--address", "127.0.0.1/8"], "has host bits set: did you mean 127.0.0.0/8?"),
        (["--address", "2001:db8::1/32"], "did you mean 2001:db8::/32?"),
        (["--address", "10.0.0.0/33"], "is not an IPv4 or IPv6 address"),
        (["--address", "mallory"], "is not an IPv4 or IPv6 address"),
        (["--address", "0.0.0.0/0"], "too wide"),
        (["--address", "::/8"], "too wide"),
        (["--address", "fe80::1%eth0"], "without a zone"),
        (["--address", "1" * 5000], "…' is not an IPv4"),
        (["mallory", "--address", "10.0.0.1"], "NAME or --address ADDRESS"),
        ([], "NAME or --address ADDRESS"),
        (["--address", "10.0.0.1", "--hours", "0"], "--hours is more than 0"),
    ],
)
def test_a_bad_address_ban_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], says: str
) -> None:
    db = tmp_path / "chat.db"
    with quiet_server(db_path=db):
        status, out, err = admin(capsys, db, "ban", *args)
    assert status == 1 and out == "" and says in err, err


def test_networks_are_canonical_and_v4_mapped_addresses_match() -> None:
    assert servergate.network(" 2001:DB8:0::/48 ") == "2001:db8::/48"
    assert servergate.network("::ffff:198.51.100.0/120") == "198.51.100.0/24"
    ban = servergate.AddressBan("198.51.100.0/24", 0.0, None, None)
    nets = servergate.Networks([ban])
    assert nets.match("::ffff:198.51.100.7", 1.0) is ban
    assert nets.match("198.51.101.7", 1.0) is None
    assert nets.match("not an address", 1.0) is None


def test_the_narrowest_ban_in_force_is_the_one_matched() -> None:
    wide = servergate.AddressBan("10.0.0.0/8", 0.0, "wide", None)
    narrow = servergate.AddressBan("10.1.2.0/24", 0.0, "narrow", 50.0)  # ends at 50
    host = servergate.AddressBan("2001:db8::1/128", 0.0, "v6", None)
    nets = servergate.Networks([wide, narrow, host])
    assert nets.match("10.1.2.3", 10.0) is narrow
    assert nets.match("10.1.2.3", 50.0) is wide  # the narrow one ended: the wide holds
    assert nets.match("10.9.9.9", 10.0) is wide
    assert nets.match("11.0.0.1", 10.0) is None
    assert nets.match("2001:db8::1", 10.0) is host
    assert nets.match("2001:db8::2", 10.0) is None
    assert not servergate.Networks([]) and nets


def test_irc_guests_accounts_and_sessions_from_a_banned_address(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The same over IRC: checked once in the server core, for every transport."""
    db = tmp_path / "chat.db"
    with quiet_server(db_path=db, irc_port=0, irc_guests=True, password_hash="load-test") as srv:
        from_(srv.address, "127.0.0.2", "alice")  # an account, from elsewhere
        bob = Irc(irc_address(srv))
        bob.send(f"PASS :{PASSWORD}", "NICK bob", "USER u 0 * :R")
        bob.until("376")  # the end of the welcome: a guest joins no channel at it
        assert admin(capsys, db, "ban", "--address", "127.0.0.1", "--reason", "spam")[0] == 0
        assert any("ERROR" in line for line in bob.closed())  # its session ended

        visitor = Irc(irc_address(srv))
        visitor.send("NICK visitor", "USER u 0 * :R")  # a guest
        line = visitor.until("ERROR")
        assert "127.0.0.1 is banned" in line and "spam" in line
        account = Irc(irc_address(srv))
        account.send(f"PASS :{PASSWORD}", "NICK alice", "USER u 0 * :R")
        assert "127.0.0.1 is banned" in account.until("464")
