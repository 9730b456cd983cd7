"""The REPL's moderation (docs/PROTOCOL.md §Moderation) against a real server: the
commands as parsed, an operator's /kick, /ban, /bans, /unban, /mute and /op, a
kicked or banned user's REPL leaving the room and saying why, and one banned from the
server saying the server's reason as it ends."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest
from prompt_toolkit.input import create_pipe_input

from chatroom import ChatClient
from chatroom.rooms import RoomEvent
from chatroom.testing import TestServer
from chatroom_cli.commands import Bans, Invalid, Moderate, parse
from chatroom_cli.format import format_room_event
from chatroom_cli.repl import InteractiveTerminal, Repl
from chatroom_server import servergate
from tests.cli.test_repl import RecordingOutput
from tests.helpers import PASSWORD, quiet_server

T = 10.0


@pytest.mark.parametrize(
    ("line", "action"),
    [
        ("/kick bob", Moderate("kick", "bob")),
        ("/kick #dev bob stop flooding", Moderate("kick", "bob", "dev", None, "stop flooding")),
        ("/ban bob 2h spam", Moderate("ban", "bob", None, 7200, "spam")),
        ("/ban bob spam links", Moderate("ban", "bob", None, None, "spam links")),
        ("/mute bob 90", Moderate("mute", "bob", None, 90, None)),
        ("/mute bob 10m", Moderate("mute", "bob", None, 600, None)),
        ("/unban #dev bob", Moderate("unban", "bob", "dev")),
        ("/op bob", Moderate("op", "bob")),
        ("/devoice bob", Moderate("devoice", "bob")),
        ("/bans", Bans()),
        ("/bans #dev", Bans("dev")),
        ("/kick", Invalid("usage: /kick [#room] <user> [reason]")),
        ("/op bob now", Invalid("usage: /op [#room] <user>")),
        # An address or network (docs/PROTOCOL.md §Bans by address): /ban and /unban.
        ("/ban 10.0.0.0/8 1d botnet", Moderate("ban", "10.0.0.0/8", None, 86400, "botnet")),
        ("/unban #dev 2001:db8::/32", Moderate("unban", "2001:db8::/32", "dev")),
        ("/kick 203.0.113.7", Invalid("/kick names a user; only /ban and /unban take an address")),
    ],
)
def test_moderation_commands(line: str, action: object) -> None:
    assert parse(line) == action


class Session:
    """A REPL logged in as ``user`` (rooms on), typed into through a pipe."""

    def __init__(self, srv: TestServer, user: str, *, reconnect: bool = False) -> None:
        self._pipe_cm = create_pipe_input()
        self.pipe = self._pipe_cm.__enter__()
        self.out = RecordingOutput()

        def new_client() -> ChatClient:
            return ChatClient(srv.host, srv.port, rooms=True, keepalive=0, reconnect=reconnect)

        term = InteractiveTerminal(self.pipe, self.out)
        self.repl = Repl(new_client, term, user=user, password=PASSWORD)
        self.thread = threading.Thread(target=self.repl.run, daemon=True)
        self.thread.start()
        self.out.wait_for("Type /help for help.")

    def type(self, line: str) -> None:
        self.pipe.send_text(line + "\r")

    def close(self) -> None:
        if self.thread.is_alive():
            self.type("EX")
            self.thread.join(T)
        self._pipe_cm.__exit__(None, None, None)
        assert not self.thread.is_alive(), "the REPL did not exit"


@pytest.fixture
def srv() -> Iterator[TestServer]:
    with quiet_server() as s:
        yield s


def test_an_operators_commands_and_a_kicked_users_repl(srv: TestServer) -> None:
    alice = Session(srv, "alice")
    bob = Session(srv, "bob")
    try:
        alice.type("/join dev")
        alice.out.wait_for("you are in #dev")
        bob.type("/join dev")
        bob.out.wait_for("you are in #dev")
        alice.out.wait_for("#dev: bob joined")

        alice.type("/mute bob 10m calm down")
        alice.out.wait_for("muted bob in #dev")
        bob.out.wait_for("alice muted bob until ")
        bob.type("hello?")
        bob.out.wait_for("alice muted you in dev until ")
        alice.type("/unmute bob")
        alice.out.wait_for("unmuted bob in #dev")
        alice.type("/op bob")
        bob.out.wait_for("alice set mode +o bob")
        alice.type("/deop bob")
        bob.out.wait_for("alice set mode -o bob")

        alice.type("/kick bob flooding")
        alice.out.wait_for("removed bob in #dev")
        bob.out.wait_for("-- alice removed you from #dev (flooding); you are no longer in it")
        assert bob.repl.current == "lobby"

        bob.type("/join dev")
        bob.out.wait_for("you are in #dev", times=2)
        alice.type("/ban bob 1h spam")
        alice.out.wait_for("banned bob in #dev")
        bob.out.wait_for("-- alice banned you from #dev until ")
        assert bob.repl.current == "lobby"
        bob.type("/join dev")
        bob.out.wait_for("!! alice banned you from dev until ")
        alice.type("/bans")
        alice.out.wait_for("#dev: bob banned by alice until ")
        alice.type("/unban bob")
        alice.out.wait_for("unbanned bob in #dev")
        alice.type("/unban bob")
        alice.out.wait_for("bob was not banned in #dev")
        alice.type("/kick alice")
        alice.out.wait_for("!! you cannot do that to yourself")
    finally:
        alice.close()
        bob.close()


def test_a_user_banned_from_the_server_is_told_why(srv: TestServer) -> None:
    """docs/PROTOCOL.md §Moderation, Server-wide: the ban's error (no id) says why, then
    bye; the REPL (reconnecting on a network loss, as `chat` does) ends saying the reason,
    without a word about reconnecting."""
    mallory = Session(srv, "mallory", reconnect=True)
    try:
        db = sqlite3.connect(srv.db_path, isolation_level=None)
        try:
            servergate.ban(servergate.SqliteSql.of(db), "mallory", "spam links", None, time.time())
        finally:
            db.close()
        mallory.thread.join(T)  # the session is over: the REPL exits by itself
        assert not mallory.thread.is_alive(), mallory.out.text[-3000:]
        mallory.out.wait_for("!! disconnected: ")
        last = mallory.out.text.split("!! disconnected: ", 1)[1]
        assert "banned" in last and "spam links" in last, last
        assert "disconnected (banned)" not in mallory.out.text
        # It never tries to come back, and never says it would.
        assert "reconnecting" not in mallory.out.text
    finally:
        mallory.close()


def test_a_server_operator_bans_an_address_from_the_repl(srv: TestServer) -> None:
    db = sqlite3.connect(srv.db_path, isolation_level=None)
    alice = Session(srv, "alice")
    try:
        assert servergate.grant(servergate.SqliteSql.of(db), "alice")
        alice.type("/join dev")
        alice.out.wait_for("you are in #dev")
        alice.type("/ban 198.51.100.7 1h spam")
        alice.out.wait_for("banned 198.51.100.7/32 in #dev")
        alice.type("/bans")
        alice.out.wait_for("#dev: address 198.51.100.7/32 banned by alice until ")
        alice.type("/ban 198.51.100.7/24")
        alice.out.wait_for("!! 198.51.100.7/24 has host bits set: did you mean 198.51.100.0/24?")
        alice.type("/unban 198.51.100.7")
        alice.out.wait_for("unbanned 198.51.100.7/32 in #dev")
    finally:
        alice.close()
        db.close()


def test_a_ban_of_an_address_reads_without_the_address() -> None:
    ban = RoomEvent(room="dev", event="ban", by="oscar", ts=0.0, address=True, reason="spam")
    assert "".join(t for _, t in format_room_event(ban, "bob")[1:]) == (
        "#dev: oscar banned an address (spam)"
    )
    unban = RoomEvent(room="dev", event="unban", by="oscar", ts=0.0, address=True)
    assert format_room_event(unban, "bob")[-1][1] == "oscar lifted a ban of an address"
