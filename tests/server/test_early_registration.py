"""Registrations begun on the admission thread (chatroom_server.login
``EarlyLogin._register_soon``): with a cheap hash, a first login of a new name is looked up
and hashed there and its account queued for the store's group commit, while the
connection waits with no thread (``Admission.hold``); once the account is durable the
admission thread sends login_ok and parks the connection. The registration's semantics
do not change: login_ok only after the commit, one winner per name, bans, half frames,
frames after the login, a reset or a stop during the commit, a store that fails."""

from __future__ import annotations

import socket
import sqlite3
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from queue import Queue
from typing import Any

import pytest

from chatroom_server.__main__ import main
from chatroom_server.accounts import AccountStoreBusy
from tests.helpers import PASSWORD, RawClient
from tests.server.test_early_login import after_each, early_server, login_frame


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Any]:
    with early_server(tmp_path / "chat.db") as s:
        yield s


def begun(srv: Any) -> int:
    return int(srv.server._logins.early_registrations)


def stored(srv: Any, name: str) -> bool:
    """Whether the account is in the file (a connection of the test's own)."""
    db = sqlite3.connect(srv.server._store.path)
    try:
        return db.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone() is not None
    finally:
        db.close()


class Gate:
    """The store's group commits held back until ``open``: ``commits`` says when one
    is waiting, with its names."""

    def __init__(self, srv: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        store = srv.server._store
        self.go = threading.Event()
        self.commits: Queue[list[str]] = Queue()
        commit = store._commit_locked

        def held(group: list[Any]) -> list[str]:
            self.commits.put([ins.name for ins in group])
            assert self.go.wait(30), "the test never opened the gate"
            return list(commit(group))

        monkeypatch.setattr(store, "_commit_locked", held)

    def open(self) -> None:
        self.go.set()


def holding(srv: Any, monkeypatch: pytest.MonkeyPatch) -> Queue[Any]:
    """The connections held from now on (their registration queued), as they are."""
    return after_each(monkeypatch, srv.server._admission, "hold")


def test_a_registration_is_answered_from_the_admission_thread_after_its_commit(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    presence = srv.server._presence
    durable: list[bool] = []
    begin = presence.begin

    def checked(conn: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        durable.append(stored(srv, name))  # login_ok is queued here
        return begin(conn, name, *args, **kwargs)

    monkeypatch.setattr(presence, "begin", checked)
    before = begun(srv)
    with RawClient(srv.address) as c:
        c.send_raw(login_frame("newcomer", features=["users_delta"], id=1))
        ok = c.expect("login_ok", username="newcomer", new_user=True, id=1)
        assert "newcomer" in ok["users"]
        assert begun(srv) == before + 1
        assert durable == [True]  # the account was in the file before login_ok
        c.send(command="ping", id=2)
        c.until("pong", id=2)
    with RawClient(srv.address) as again:  # a return now, remembered
        again.send_raw(login_frame("newcomer"))
        again.expect("login_ok", username="newcomer", new_user=False)


def test_no_login_ok_before_the_commit_and_nobody_waits_for_it(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(srv, monkeypatch)
    held = holding(srv, monkeypatch)
    with RawClient(srv.address) as c:
        c.send_raw(login_frame("patient", id=1))
        assert gate.commits.get(timeout=10) == ["patient"]
        assert held.get(timeout=10).username is None  # held, not logged in
        assert not stored(srv, "patient")
        with RawClient(srv.address) as other:  # the admission thread is not waiting
            other.send_raw(login_frame("other", id=9))
            assert gate.commits.empty()  # queued behind the commit in progress
            assert held.get(timeout=10).username is None
            gate.open()
            other.expect("login_ok", username="other", new_user=True, id=9)
        c.expect("login_ok", username="patient", new_user=True, id=1)
        assert stored(srv, "patient")


def test_two_registrations_of_one_name_in_one_commit_one_wins(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(srv, monkeypatch)
    held = holding(srv, monkeypatch)
    with RawClient(srv.address) as blocker:
        blocker.send_raw(login_frame("blocker"))  # the commit that the others wait behind
        assert gate.commits.get(timeout=10) == ["blocker"]
        held.get(timeout=10)
        with RawClient(srv.address) as a, RawClient(srv.address) as b:
            a.send_raw(login_frame("contested", password="password-of-a", id=1))
            held.get(timeout=10)
            b.send_raw(login_frame("contested", password="password-of-b", id=2))
            held.get(timeout=10)  # both looked and found no account
            gate.open()
            blocker.expect("login_ok", username="blocker")
            assert gate.commits.get(timeout=10) == ["contested", "contested"]
            a.expect("login_ok", username="contested", new_user=True, id=1)
            b.expect_error("bad_credentials", id=2)  # as a wrong password, today's answer
            b.send_raw(login_frame("contested", password="password-of-b", id=3))
            b.expect_error("bad_credentials", id=3)


def test_two_registrations_of_one_name_with_one_password_the_second_takes_over(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(srv, monkeypatch)
    held = holding(srv, monkeypatch)
    with RawClient(srv.address) as first, RawClient(srv.address) as second:
        first.send_raw(login_frame("twin", id=1))
        assert gate.commits.get(timeout=10) == ["twin"]
        held.get(timeout=10)
        second.send_raw(login_frame("twin", id=2))
        held.get(timeout=10)
        gate.open()
        first.expect("login_ok", username="twin", new_user=True, id=1)
        # Its registration lost (the name was taken by then), its password is right.
        second.expect("login_ok", username="twin", new_user=False, id=2)
        assert first.wait_closed()[-1] == {"type": "bye", "reason": "session_replaced"}
        second.send(command="ping", id=3)
        second.until("pong", id=3)
        online = [c for c in srv.server._presence.connections() if c.username == "twin"]
        assert len(online) == 1


def test_a_banned_address_registers_nothing(
    srv: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status = main(["admin", "--db", str(tmp_path / "chat.db"), "ban", "--address", "127.0.0.2"])
    capsys.readouterr()
    assert status == 0
    before = begun(srv)
    with RawClient(srv.address, source="127.0.0.2") as c:
        c.send_raw(login_frame("intruder", id=1))
        refused = c.until("error", id=1)
        assert refused["code"] == "banned" and "127.0.0.2" in refused["message"]
    assert begun(srv) == before
    assert not stored(srv, "intruder")


def test_a_half_registration_waits_threadless_and_completes_early(srv: Any) -> None:
    frame = login_frame("halfway", id=1)
    before = begun(srv)
    with RawClient(srv.address) as c:
        c.send_raw(frame[:12])
        with RawClient(srv.address) as other:  # meanwhile, nobody waits for it
            other.login("passerby")
        c.send_raw(frame[12:])
        c.expect("login_ok", username="halfway", new_user=True, id=1)
    # Its first half waited in the admission thread's epoll (Admission.rewatch), and
    # once whole it registered there, as the passer-by did.
    assert begun(srv) == before + 2


def test_bytes_after_the_registration_are_handled_once_in_order_after_login_ok(
    srv: Any,
) -> None:
    with RawClient(srv.address) as witness, RawClient(srv.address) as c:
        witness.login("witness")
        before = begun(srv)
        pm = b'{"command":"pm","message":"first words","id":7}\n'
        c.send_raw(login_frame("eager") + pm)  # one packet
        c.expect("login_ok", username="eager", new_user=True)
        assert begun(srv) == before + 1
        c.until("ack", id=7)
        assert witness.until("broadcast")["message"] == "first words"
        witness.send(command="ping", id=1)
        seen = []
        while (f := witness.recv())["type"] != "pong":
            seen.append(f)
        assert not [f for f in seen if f.get("type") == "broadcast"]  # once


def test_a_client_reset_before_the_commit_gets_no_session(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(srv, monkeypatch)
    held = holding(srv, monkeypatch)
    presence = srv.server._presence
    departed = after_each(monkeypatch, presence, "depart")
    c = RawClient(srv.address)
    c.send_raw(login_frame("vanished"))
    assert gate.commits.get(timeout=10) == ["vanished"]
    conn = held.get(timeout=10)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # a reset
    gate.open()
    assert departed.get(timeout=10) is conn
    assert conn.username is None  # no session began
    assert "vanished" not in {s.username for s in presence.sessions()}
    with RawClient(srv.address) as again:  # the account is there, as any registration's
        again.send_raw(login_frame("vanished"))
        again.expect("login_ok", username="vanished", new_user=False)


def test_a_stop_during_the_commit_says_bye_to_the_held_registration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with early_server(tmp_path / "db") as srv:
        gate = Gate(srv, monkeypatch)
        held = holding(srv, monkeypatch)
        c = RawClient(srv.address)
        c.send_raw(login_frame("interrupted"))
        assert gate.commits.get(timeout=10) == ["interrupted"]
        held.get(timeout=10)
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        try:
            frames = c.wait_closed()
            assert frames == [{"type": "bye", "reason": "server_shutdown"}]  # no login_ok
        finally:
            gate.open()  # the store closes once its commit is done
            stopper.join(30)
            c.close()
        assert not stopper.is_alive()


def test_a_store_that_cannot_commit_answers_unavailable(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = srv.server._store
    commit = store._commit_locked

    def failing(group: list[Any]) -> list[str]:
        for ins in group:
            ins.error = AccountStoreBusy("the account database cannot answer now (disk full)")
        return []

    monkeypatch.setattr(store, "_commit_locked", failing)
    with RawClient(srv.address) as c:
        c.send_raw(login_frame("unlucky", id=1))
        refused = c.expect_error("unavailable", id=1)
        assert "disk full" in refused["message"]
        assert not stored(srv, "unlucky")
        monkeypatch.setattr(store, "_commit_locked", commit)
        c.send_raw(login_frame("unlucky", id=2))  # the same connection tries again
        c.expect("login_ok", username="unlucky", new_user=True, id=2)
    assert stored(srv, "unlucky")


def test_a_registration_storm_registers_everyone_once(srv: Any) -> None:
    clients = [RawClient(srv.address) for _ in range(40)]
    try:
        for i, c in enumerate(clients):
            c.send_raw(login_frame(f"storm{i}", id=i))
        for i, c in enumerate(clients):
            c.expect("login_ok", username=f"storm{i}", new_user=True, id=i)
    finally:
        for c in clients:
            c.close()
    assert srv.server._store.count() == 40
    with RawClient(srv.address) as c:
        c.send_raw(login_frame("storm3", password=PASSWORD))
        c.expect("login_ok", new_user=False)


@pytest.mark.parametrize(
    ("name", "password", "code"),
    [
        ("bad name!", PASSWORD, "invalid_username"),
        ("x" * 33, PASSWORD, "invalid_username"),
        ("shorty", "x", "weak_password"),
        ("longy", "x" * 5000, "weak_password"),
    ],
)
def test_what_a_session_refuses_is_never_registered(
    srv: Any, name: str, password: str, code: str
) -> None:
    before = begun(srv)
    with RawClient(srv.address) as c:
        c.send_raw(login_frame(name, password=password, id=1))
        c.expect_error(code, id=1)
    assert begun(srv) == before
    assert not stored(srv, name)
