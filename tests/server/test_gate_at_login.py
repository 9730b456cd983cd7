"""The server gate's login-time state (chatroom_server.servergate ``ServerGate.at_login``):
the address bans' marker, the registrations setting and the user's server ban are read
in one statement per login, never kept between logins, so a ban or a closing of
registrations written by another connection (``chat-server admin`` beside the server)
applies at the next login (docs/PROTOCOL.md §Moderation, "Server-wide")."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chatroom.errors import ProtocolError
from chatroom_server import modstore, servergate
from tests.helpers import PASSWORD, RawClient, quiet_server


@contextmanager
def gate_on_file(path: Path) -> Iterator[tuple[servergate.ServerGate, list[str]]]:
    """A gate on a fresh SQLite file, and the statements its connection runs."""
    with sqlite3.connect(path, isolation_level=None) as setup:
        setup.executescript(
            "CREATE TABLE accounts (name TEXT PRIMARY KEY COLLATE NOCASE);"
            + modstore.SQLITE_MODERATION
            + modstore.SQLITE_SERVER_GATE
            + modstore.SQLITE_ADDRESS_BANS
        )
    setup.close()
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    gate = servergate.ServerGate(servergate.SqliteSql.of(db), db.close)
    try:
        yield gate, statements
    finally:
        gate.close()


def test_one_statement_per_login_and_another_connections_writes_apply_at_the_next(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chat.db"
    with gate_on_file(path) as (gate, statements):
        seen = gate.at_login("198.51.100.7", "Mallory", time.time(), 1)
        assert seen.registrations_open and seen.banned(time.time()) is None
        statements.clear()
        gate.at_login("198.51.100.7", "Mallory", time.time(), 2)
        assert len(statements) == 1, statements  # the marker did not move

        other = servergate.SqliteSql.open(path)  # as chat-server admin, another process
        try:
            now = time.time()
            servergate.ban(other, "mallory", "spam", now + 3600, now)
            servergate.set_registrations(other, False, now)
            statements.clear()
            seen = gate.at_login("198.51.100.7", "MALLORY", time.time(), 3)
            assert len(statements) == 1, statements
            assert not seen.registrations_open
            ban = seen.banned(time.time())
            assert ban is not None and ban.user == "mallory" and ban.reason == "spam"
            assert seen.banned(now + 3600) is None  # expired by then

            servergate.ban_address(other, "198.51.100.0/24", "flood", None, time.time())
            statements.clear()
            with pytest.raises(ProtocolError) as refused:
                gate.at_login("198.51.100.7", "alice", time.time(), 4)
            assert refused.value.code == "banned" and "198.51.100.0/24" in refused.value.message
            assert refused.value.request_id == 4
            assert len(statements) == 2, statements  # the marker moved: the bans read again
            seen = gate.at_login("203.0.113.9", "alice", time.time(), 5)
            assert seen.banned(time.time()) is None and not seen.registrations_open

            servergate.unban(other, "mallory", time.time())
            servergate.set_registrations(other, True, time.time())
            seen = gate.at_login("203.0.113.9", "mallory", time.time(), 6)
            assert seen.registrations_open and seen.banned(time.time()) is None
        finally:
            other.close()


def test_a_ban_and_closed_registrations_written_between_two_logins_apply_at_the_second(
    tmp_path: Path,
) -> None:
    # A cheap hash: returning logins and registrations run on the admission thread.
    with quiet_server(tmp_path / "chat.db", password_hash="load-test") as srv:
        with RawClient(srv.address) as c:
            c.login("mallory")
        with RawClient(srv.address) as c:
            c.login("mallory")  # a return: its password is remembered
        other = servergate.SqliteSql.open(srv.db_path)
        try:
            now = time.time()
            servergate.ban(other, "mallory", "spam", None, now)
            servergate.set_registrations(other, False, now)
        finally:
            other.close()
        with RawClient(srv.address) as c:
            c.send(command="login", username="mallory", password="wrong password", id=1)
            c.until("error", id=1, code="bad_credentials")  # a guess learns nothing
            c.send(command="login", username="Mallory", password=PASSWORD, id=2)
            refused = c.until("error", id=2, code="banned")
            assert "spam" in refused["message"]
        with RawClient(srv.address) as c:
            c.send(command="login", username="newbie", password=PASSWORD, id=3)
            c.until("error", id=3, code="registration_closed")
        with RawClient(srv.address) as c:
            c.send(command="login", username="mallory", password=PASSWORD, id=4)
            c.until("error", id=4, code="banned")  # first frame: the admission thread's look

        other = servergate.SqliteSql.open(srv.db_path)
        try:
            servergate.unban(other, "mallory", time.time())
            servergate.set_registrations(other, True, time.time())
        finally:
            other.close()
        with RawClient(srv.address) as c:
            c.send(command="login", username="mallory", password=PASSWORD, id=5)
            c.until("login_ok", id=5)
        with RawClient(srv.address) as c:
            c.send(command="login", username="newbie", password=PASSWORD, id=6)
            c.until("login_ok", id=6)
