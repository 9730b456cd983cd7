"""The server, spoken to through raw sockets on a real port (docs/PROTOCOL.md)."""

from __future__ import annotations

import json
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from chatroom.protocol import PROTOCOL_VERSION
from chatroom.testing import TestServer, running_server
from chatroom_server import AccountStoreError, ChatServer, ConfigError, ServerConfig
from chatroom_server.roster import UsersPublisher
from tests.helpers import PASSWORD, RawClient, connect, quiet_server


@pytest.fixture(params=["log", "v1"])
def server(request: pytest.FixtureRequest) -> Iterator[TestServer]:
    """Every protocol test here runs with the message log (the default) and without it
    (``--history off``): version-1 behaviour must hold in both (docs/PROTOCOL.md)."""
    with quiet_server(history=request.param == "log") as srv:
        yield srv


def test_password_required_then_register_then_login(server: TestServer) -> None:
    with RawClient(server.address) as c:
        c.send(command="login", username="Alice", id=1)
        c.expect("password_required", username="Alice", new_user=True, id=1)
        c.send(command="login", username="Alice", password=PASSWORD, id=2)
        ok = c.expect("login_ok", username="Alice", new_user=True, users=["Alice"], id=2)
        assert "password" not in json.dumps(ok)
        assert ok["version"] == PROTOCOL_VERSION == 1  # docs/PROTOCOL.md §Versions
        c.expect("users", users=["Alice"], joined="Alice")
    with RawClient(server.address) as c:
        # Any spelling finds the account; the registered spelling is canonical.
        c.send(command="login", username="ALICE")
        c.expect("password_required", username="Alice", new_user=False)
        c.send(command="login", username="alice", password=PASSWORD)
        c.expect("login_ok", username="Alice", new_user=False)


def test_login_tells_the_limits_a_client_must_respect(tmp_path: Path) -> None:
    """docs/PROTOCOL.md §login: password_required gives a new name's password lengths
    (not an existing one's), login_ok the message and frame limits."""
    with (
        running_server(tmp_path / "l.db", min_password=10, max_message=300) as srv,
        RawClient(srv.address) as c,
    ):
        c.send(command="login", username="newbie")
        c.expect("password_required", new_user=True, min_password=10, max_password=1024)
        c.send(command="login", username="newbie", password=PASSWORD)
        ok = c.expect("login_ok", username="newbie")
        assert ok["limits"] == {"max_frame": 65536, "max_message": 300}
    with running_server(tmp_path / "l.db") as srv, RawClient(srv.address) as c:
        c.send(command="login", username="newbie")
        got = c.expect("password_required", new_user=False)
        assert "min_password" not in got and "max_password" not in got


def test_password_is_stored_hashed(server: TestServer) -> None:
    with connect(server.address, "hashme"):
        pass
    db = sqlite3.connect(server.db_path)
    (stored,) = db.execute("SELECT hash FROM accounts WHERE name='hashme'").fetchone()
    db.close()
    assert PASSWORD not in stored
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_load_test_hashes_are_cheap_and_upgraded_later(tmp_path: Path) -> None:
    db_path = tmp_path / "load.db"

    def stored() -> str:
        db = sqlite3.connect(db_path)
        (h,) = db.execute("SELECT hash FROM accounts WHERE name='loady'").fetchone()
        db.close()
        return str(h)

    with running_server(db_path, password_hash="load-test") as srv, connect(srv.address, "loady"):
        pass
    assert stored().startswith("$argon2id$v=19$m=8,t=1,p=1$")
    with running_server(db_path) as srv, connect(srv.address, "loady"):
        pass  # the same password logs in, and the hash is brought up to the OWASP cost
    assert stored().startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    with running_server(db_path, password_hash="load-test") as srv, connect(srv.address, "loady"):
        pass  # a load-test server never brings a real account's hash down to its own cost
    assert stored().startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    with pytest.raises(ConfigError):
        ChatServer(ServerConfig(port=0, db_path=db_path, password_hash="md5")).start()


def test_login_errors(server: TestServer) -> None:
    with connect(server.address, "bob"):
        pass
    with RawClient(server.address) as c:
        c.send(command="login", username="-bad", password=PASSWORD, id="a")
        c.expect_error("invalid_username", id="a")
        c.send(command="login", username="newbie", password="short", id="b")
        c.expect_error("weak_password", id="b")
        c.send(command="login", username="bob", password="wrong password", id="c")
        c.expect_error("bad_credentials", id="c")
        c.send(command="pm", message="hi", id="d")
        c.expect_error("not_logged_in", id="d")
        c.send(command="login", username="bob", password=PASSWORD)
        c.expect("login_ok")
        c.expect("users")
        c.send(command="login", username="bob", password=PASSWORD, id="e")
        c.expect_error("already_logged_in", id="e")


def test_five_bad_passwords_close_the_connection(server: TestServer) -> None:
    with connect(server.address, "carol"):
        pass
    with RawClient(server.address) as c:
        for _ in range(5):
            c.send(command="login", username="carol", password="not the password")
        errors = c.wait_closed()
    # Wrong passwords are checked until the account backs off (after the 4th, for every
    # connection: rate_limited); the fifth failure on this connection closes it.
    assert [e["code"] for e in errors] == ["bad_credentials"] * 4 + ["rate_limited"]


def test_pm_reaches_everyone_else_and_acks_the_sender(server: TestServer) -> None:
    a, b, c = (connect(server.address, n) for n in ("a1", "b1", "c1"))
    # a sees b and c join, b sees c join.
    a.expect("users", joined="b1")
    a.expect("users", joined="c1")
    b.expect("users", joined="c1")
    a.send(command="pm", message="hello all", id=5)
    a.expect("ack", command="pm", id=5)
    for other in (b, c):
        m = other.expect("broadcast", message="hello all")
        assert m["from"] == "a1"
        assert abs(m["ts"] - time.time()) < 60
    # The sender does not get its own broadcast: the next thing it sees is the pong.
    a.send(command="ping", id="p")
    a.expect("pong", id="p")


def test_dm_any_case_and_errors(server: TestServer) -> None:
    a = connect(server.address, "Ann")
    b = connect(server.address, "Ben")
    a.expect("users", joined="Ben")
    a.send(command="dm", to="bEN", message="psst", id=1)
    a.expect("ack", command="dm", to="Ben", id=1)
    b.expect("dm", message="psst", to="Ben", **{"from": "Ann"})
    a.send(command="dm", to="nobody", message="x", id=2)
    a.expect_error("unknown_user", id=2)
    with connect(server.address, "Cid"):
        pass
    a.until("users", left="Cid")
    a.send(command="dm", to="cid", message="x", id=3)
    if server.server.config.history:  # stored for Cid's next login (§Offline DMs)
        a.expect("ack", to="Cid", queued=True, id=3)
    else:
        a.expect_error("user_offline", id=3)


def test_users_ping_and_bad_requests(server: TestServer) -> None:
    a = connect(server.address, "zed")
    b = connect(server.address, "Amy")
    a.expect("users", joined="Amy")
    a.send(command="users", id=1)
    a.expect("users", users=["Amy", "zed"], id=1)
    a.send(command="ping")
    assert a.expect("pong") == {"type": "pong"}
    a.send(command="pm", message="", id=2)
    a.expect_error("bad_request", id=2)
    a.send(command="pm", message="x" * 4001, id=3)
    a.expect_error("bad_request", id=3)
    a.send(command="dm", to="Amy", id=4)
    a.expect_error("bad_request", id=4)
    a.send(command="fly", id=5)
    a.expect_error("unknown_command", id=5)
    # Until the server offers rooms (docs/PROTOCOL.md §Rooms), their commands are
    # unknown here, as on any version-1 server.
    for i, cmd in enumerate(("join", "part", "topic", "invite", "mode", "members")):
        a.send(command=cmd, room="dev", user="Amy", id=50 + i)
        a.expect_error("unknown_command", id=50 + i)
        a.send(command="ping")  # an accepted frame: the errors in a row start again
        a.expect("pong")
    a.send(command="rooms", id=5)
    a.expect_error("unknown_command", id=5)
    a.send_raw(b"{not json}\n")
    a.expect_error("bad_json")
    a.send_raw(b"[]\n")
    a.expect_error("bad_json")
    a.send_raw(b'{"command":"pm","message":"\xc3\x28"}\n')
    a.expect_error("bad_json")
    # After all that the connection still works, and a 4000-character message is fine.
    a.send(command="pm", message="y" * 4000, id=6)
    a.expect("ack", id=6)
    assert b.expect("broadcast")["message"] == "y" * 4000


def test_ten_protocol_errors_in_a_row_close(server: TestServer) -> None:
    with connect(server.address, "noisy") as c:
        c.send_raw(b"garbage\n" * 9)
        for _ in range(9):
            c.expect_error("bad_json")
        c.send(command="ping")  # a good frame resets the count
        c.expect("pong")
        c.send_raw(b"garbage\n" * 10)
        assert [f["code"] for f in c.wait_closed()] == ["bad_json"] * 10


def test_too_large_frame_is_an_error_then_close() -> None:
    with quiet_server() as srv:
        assert srv.server.config.limits.max_frame == 64 * 1024
        with RawClient(srv.address) as c:
            c.send_raw(b'{"command":"ping","pad":"' + b"x" * 70_000)
            frames = c.wait_closed()
    assert [f.get("code") for f in frames] == ["too_large"]


def test_exit_and_logout_say_bye_and_tell_the_others(server: TestServer) -> None:
    stay = connect(server.address, "stay")
    for verb in ("exit", "logout"):
        with connect(server.address, f"go_{verb}") as c:
            stay.expect("users", joined=f"go_{verb}")
            c.send(command=verb)
            assert c.wait_closed() == [{"type": "bye", "reason": "exit"}]
        stay.expect("users", users=["stay"], left=f"go_{verb}")


def test_dropped_connection_sends_left(server: TestServer) -> None:
    stay = connect(server.address, "stay2")
    c = connect(server.address, "dropper")
    stay.expect("users", joined="dropper")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()  # RST
    stay.expect("users", users=["stay2"], left="dropper")


def test_a_login_its_client_gave_up_on_takes_nothing_over(
    server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/RELIABILITY.md F4: a client's login reaches a stalled server; the client
    gives up, closes that connection and logs in on another, which the server runs
    first. The abandoned login, run last, must not take the live session over (its
    client is gone: nobody would have the session). Its password check is held here
    until its client has closed, as the stall held it."""
    if server.server._log is None:
        pytest.skip("the same path with or without the log; once is enough")
    store = server.server._store
    assert store is not None
    real = store.authenticate
    entered, release = threading.Event(), threading.Event()
    calls = 0

    def stalled(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:  # the abandoned login's check, held
            entered.set()
            assert release.wait(10)
        return real(*args)

    real_login = server.server._handlers._login  # chatroom_server.handlers
    first: list[Any] = []  # the abandoned login's connection: the first to log in
    done = threading.Event()

    def login(conn: Any, cmd: Any) -> bool:
        if not first:
            first.append(conn)
        try:
            return bool(real_login(conn, cmd))
        finally:
            if conn is first[0]:
                done.set()

    monkeypatch.setattr(store, "authenticate", stalled)
    monkeypatch.setattr(server.server._handlers, "_login", login)
    abandoned = RawClient(server.address)
    abandoned.send(command="login", username="twin", password=PASSWORD)
    assert entered.wait(10)
    live = connect(server.address, "twin")  # the retry, on a new connection
    gone = first[0]
    abandoned.close()
    poller = select.poll()
    poller.register(gone.sock, select.POLLRDHUP)
    assert poller.poll(10_000), "the abandoned connection's end never reached the server"
    release.set()
    assert done.wait(10)
    with server.server._lock:
        session = server.server._by_key.get("twin")
    assert session is not None and session is not gone
    live.send(command="pm", message="still me", id=1)
    live.expect("ack", id=1)  # never bye session_replaced


def test_takeover_replaces_the_old_session(server: TestServer) -> None:
    watcher = connect(server.address, "watcher")
    old = connect(server.address, "twin")
    watcher.expect("users", joined="twin")
    new = RawClient(server.address)
    new.send(command="login", username="TWIN", password=PASSWORD)
    new.expect("login_ok", username="twin", users=["twin", "watcher"])
    assert old.wait_closed()[-1] == {"type": "bye", "reason": "session_replaced"}
    new.expect("users", users=["twin", "watcher"], joined="twin")
    watcher.expect("users", users=["twin", "watcher"], joined="twin")
    # The old session's departure is not announced: the user never left.
    watcher.send(command="users", id=1)
    watcher.expect("users", users=["twin", "watcher"], id=1)
    new.send(command="pm", message="still me")
    new.expect("ack")
    watcher.expect("broadcast", message="still me")


def test_registration_persists_across_restart(tmp_path: pytest.TempPathFactory) -> None:
    db = tmp_path / "accounts.db"  # type: ignore[operator]
    with quiet_server(db_path=db) as srv:
        with connect(srv.address, "persist"):
            pass
        srv.restart()
        with RawClient(srv.address) as c:
            c.send(command="login", username="persist")
            c.expect("password_required", new_user=False)
            c.send(command="login", username="persist", password="wrong password")
            c.expect_error("bad_credentials")
            c.login("persist")


def test_simultaneous_registration_of_one_name_makes_one_account(server: TestServer) -> None:
    barrier = threading.Barrier(6, timeout=10)

    def register(i: int) -> dict[str, object]:
        with RawClient(server.address) as c:
            barrier.wait()
            c.send(command="login", username="race", password=f"password-{i}")
            return c.recv()

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(register, range(6)))
    assert sum(r["type"] == "login_ok" and r["new_user"] is True for r in results) == 1
    # The others are refused: wrong password, or the account's backoff already kicked in.
    assert sum(r.get("code") in ("bad_credentials", "rate_limited") for r in results) == 5


def test_fifty_clients_log_in_at_once_and_agree_on_the_list(server: TestServer) -> None:
    names = [f"user{i:02d}" for i in range(50)]
    barrier = threading.Barrier(len(names), timeout=30)
    clients = {n: RawClient(server.address, timeout=30) for n in names}

    def login(name: str) -> None:
        barrier.wait()
        clients[name].send(command="login", username=name, password=PASSWORD)

    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(login, names))
    # Each client's last users push (after all 50 joined) must be the full list.
    for name, c in clients.items():
        c.expect("login_ok", username=name)
        last = c.until("users", users=names)
        assert last["users"] == names
    for c in clients.values():
        c.send(command="users", id="final")
        assert c.until("users", id="final")["users"] == names
    for c in clients.values():
        c.close()


def test_messages_from_one_sender_arrive_in_order(server: TestServer) -> None:
    sender = connect(server.address, "orderly")
    readers = [connect(server.address, f"r{i}") for i in range(3)]
    for i, r in enumerate(readers):
        for _later in readers[i + 1 :]:
            r.expect("users")
    for _ in range(3):
        sender.expect("users")
    n = 500
    sender.send_raw(
        b"".join(
            json.dumps({"command": "pm", "message": str(i)}).encode() + b"\n" for i in range(n)
        )
    )
    for r in readers:
        got = [int(r.expect("broadcast")["message"]) for _ in range(n)]
        assert got == list(range(n))


def test_batched_public_messages_keep_their_place_among_replies_and_dms(
    server: TestServer,
) -> None:
    reader = connect(server.address, "reader2")
    sender = connect(server.address, "sender2")
    reader.expect("users", joined="sender2")
    # One write, so the server reads it in one recv(): the PMs are batched (§pm).
    sender.send_raw(
        b'{"command":"pm","message":"a","id":1}\n{"command":"pm","message":"b","id":2}\n'
        b'{"command":"dm","to":"reader2","message":"c","id":3}\nnot json\n'
        b'{"command":"pm","message":"d","id":4}\n'
    )
    assert [sender.recv().get("id") for _ in range(5)] == [1, 2, 3, None, 4]
    got = [(f["type"], f["message"]) for f in (reader.recv() for _ in range(4))]
    assert got == [("broadcast", "a"), ("broadcast", "b"), ("dm", "c"), ("broadcast", "d")]


def test_last_messages_precede_the_departure_and_the_bye_follows_the_acks(
    server: TestServer,
) -> None:
    reader = connect(server.address, "stays")
    leaver = connect(server.address, "leaves")
    reader.expect("users", joined="leaves")
    n = 200
    leaver.send_raw(
        b"".join(b'{"command":"pm","message":"%d","id":%d}\n' % (i, i) for i in range(n))
        + b'{"command":"exit"}\n'
    )
    assert [leaver.recv()["id"] for _ in range(n)] == list(range(n))  # every ack, then
    leaver.expect("bye", reason="exit")
    assert [int(reader.expect("broadcast")["message"]) for _ in range(n)] == list(range(n))
    reader.expect("users", left="leaves")


def test_joined_push_precedes_the_new_users_messages(server: TestServer) -> None:
    old = connect(server.address, "old")
    new = RawClient(server.address)
    new.send_raw(
        json.dumps({"command": "login", "username": "fresh", "password": PASSWORD}).encode()
        + b"\n"
        + b'{"command":"pm","message":"first!"}\n'
    )
    old.expect("users", joined="fresh")
    old.expect("broadcast", message="first!")
    new.close()


def test_a_client_that_never_reads_does_not_delay_others() -> None:
    with quiet_server(max_output=256 * 1024) as srv:
        stuck = RawClient(srv.address)
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.login("stuck")
        reader = connect(srv.address, "reader")
        sender = connect(srv.address, "sender")
        reader.expect("users", joined="sender")
        big = "z" * 3900
        # ~12 MB: far past stuck's kernel buffers (loopback autotunes the server's send
        # buffer up to 4 MB) plus its 256 KiB allowance.
        n = 3000
        frames = [
            json.dumps({"command": "pm", "message": f"{i} {big}"}).encode() + b"\n"
            for i in range(n)
        ]
        pump = threading.Thread(target=sender.send_raw, args=(b"".join(frames),))
        pump.start()
        got = 0
        left_seen = False
        while got < n:
            f = reader.recv()
            if f["type"] == "broadcast":
                assert f["message"].startswith(f"{got} ")
                got += 1
            elif f.get("left") == "stuck":
                left_seen = True
        if not left_seen:
            reader.until("users", left="stuck")
        assert "stuck" not in srv.server.online
        pump.join(10)


def test_periodic_user_list_push() -> None:
    with running_server(users_interval=0.05) as srv, connect(srv.address, "timer") as c:
        # Two plain pushes (no joined/left) prove the timer, whatever else arrives.
        for _ in range(2):
            f = c.until("users", users=["timer"])
            while "joined" in f:
                f = c.until("users", users=["timer"])


def test_server_full() -> None:
    with quiet_server(max_connections=1) as srv:
        first = connect(srv.address, "first")
        with RawClient(srv.address) as second:
            assert second.wait_closed() == [
                {"type": "error", "code": "server_full", "message": "the server is full"}
            ]
        first.send(command="ping")
        first.expect("pong")


def test_shutdown_says_bye_to_everyone() -> None:
    with quiet_server() as srv:
        clients = [connect(srv.address, f"s{i}") for i in range(5)]
        anon = RawClient(srv.address)
        anon.send(command="ping")
        anon.expect("pong")
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 5
        for c in [*clients, anon]:
            assert c.wait_closed()[-1] == {"type": "bye", "reason": "server_shutdown"}
        assert srv.server.reader_threads == 0  # stop() waited for every reader


def test_not_a_database_is_refused_and_left_alone(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "notes.txt"  # type: ignore[operator]
    path.write_bytes(b"my precious notes, not a database\n" * 10)
    before = path.read_bytes()
    with pytest.raises(AccountStoreError, match="not a chatroom credentials database"):
        ChatServer(ServerConfig(db_path=path, port=0)).start()
    assert path.read_bytes() == before


def test_handler_crash_closes_only_that_connection(
    server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = server.server
    good = connect(server.address, "good")
    handlers = srv._handlers  # chatroom_server.handlers
    real = handlers._direct

    def explode(conn: object, cmd: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(handlers, "_direct", explode)
    bad = connect(server.address, "bad")
    good.expect("users", joined="bad")
    bad.send(command="dm", to="good", message="x")
    bad.wait_closed()
    good.expect("users", left="bad")
    monkeypatch.setattr(handlers, "_direct", real)
    assert srv.handler_crashes == 1
    good.send(command="ping")
    good.expect("pong")


def test_a_login_that_cannot_get_a_hashing_thread_in_time_is_told_to_retry(
    server: TestServer,
) -> None:
    """Password checks run on the account store's few threads (a login storm queues;
    docs/PERFORMANCE.md, memory per connection). A login that waits for one past the
    store's wait_timeout is answered ``unavailable``, and works once a thread is free."""
    store = server.server._store
    assert store is not None
    store.wait_timeout = 0.2
    release = threading.Event()
    busy = [store._workers.submit(release.wait, 30) for _ in range(store._workers._max_workers)]
    try:
        c = RawClient(server.address)
        c.send(command="login", username="patient", password=PASSWORD, id=7)
        frame = c.expect_error("unavailable", id=7)
        assert "try again" in frame["message"]
    finally:
        release.set()
        for f in busy:
            f.result(10)
    store.wait_timeout = 10
    c.login("patient")  # the same connection: nothing was held against it


def test_an_idle_connection_holds_no_message_batch(server: TestServer) -> None:
    """Conn's four batch lists are made by a connection's first public message and
    dropped after each flush (memory per idle connection); the shared placeholder is
    never appended to, whatever the traffic."""
    from chatroom_server import conn as conn_module

    a, b = connect(server.address, "batcha"), connect(server.address, "batchb")
    for i in range(5):
        a.send(command="pm", message=f"m{i}", id=i)
        a.until("ack", command="pm", id=i)
        b.until("broadcast", message=f"m{i}")
    for conn in server.server.roster():
        assert conn.batch is conn_module.UNUSED and conn.msgs is conn_module.UNUSED
    assert conn_module.UNUSED == []


def test_stop_closes_the_message_log_between_two_fan_out_passes(tmp_path: Path) -> None:
    """The log's writer runs under the fan-out's lock, on threads a stop may not have
    joined in time: the log is closed holding that lock, never beside a running append
    (closing SQLite under a running statement can crash the process)."""
    held: list[bool] = []
    with quiet_server(tmp_path / "chat.db") as srv:
        server = srv.server
        msglog = server._b.log
        assert msglog is not None
        close = msglog.close

        def close_and_look() -> None:
            held.append(server._b.fanout._lock.locked())
            close()

        msglog.close = close_and_look  # type: ignore[method-assign]
    assert held == [True]


def test_stop_wakes_the_users_publisher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop with nobody leaving still ends the users publisher within its join: the
    publisher's idle sleep is rung awake, not waited out (it made every stop of an idle
    server wait up to a second)."""
    monkeypatch.setattr(UsersPublisher, "idle_wait", 3600.0)
    with quiet_server(tmp_path / "chat.db") as srv:
        publishers = [t for t in srv.server._threads if t.name == "chat-users"]
    assert len(publishers) == 1
    assert not publishers[0].is_alive()
