"""Logins run on the admission thread (chatroom_server.firstlook ``FirstLook.first``): a
returning user whose password the store remembers (a cheap hash) gets login_ok before
its connection has a thread, which starts once its client says more. The login's
semantics do not change: takeover, bans, throttles, a half frame, frames after the login
in the same packet (handled once, in order, after login_ok), resume, the stop."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from queue import Queue
from typing import Any

import pytest

from chatroom_server.__main__ import main
from tests.helpers import PASSWORD, RawClient, quiet_server
from tests.server.test_kill import grant, kills


def early_server(db: Path) -> AbstractContextManager[Any]:
    """A server whose first logins run on the admission thread (a cheap hash, login
    slots), with its database at ``db``."""
    return quiet_server(db, password_hash="load-test", login_slots=4)


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Any]:
    with early_server(tmp_path / "chat.db") as s:
        yield s


def login_frame(name: str, password: str = PASSWORD, **more: Any) -> bytes:
    frame = {"command": "login", "username": name, "password": password, **more}
    return json.dumps(frame).encode() + b"\n"


def registered(srv: Any, *names: str) -> None:
    """Each name registered (so that the store remembers its password) and gone."""
    for name in names:
        with RawClient(srv.address) as c:
            c.login(name)


def early(srv: Any) -> int:
    """Sessions begun on the admission thread (counted before their login_ok)."""
    return int(srv.server._logins.early_logins)


def refused(srv: Any) -> int:
    """Logins the admission thread took that began no session."""
    return int(srv.server._listeners.look.early_refused)


def parked(srv: Any) -> set[str]:
    return {c.username for c in list(srv.server._admission._parked.values())}


def after_each(
    monkeypatch: pytest.MonkeyPatch,
    owner: object,
    method: str,
    what: Callable[[Any], Any] = lambda arg: arg,
) -> Queue[Any]:
    """What ``what`` makes of the argument of each call of ``owner.method`` from now on
    (None: nothing), put on the queue once that call has returned: a test waits on it,
    with a timeout, for something the server does on a thread of its own."""
    told: Queue[Any] = Queue()
    method_itself = getattr(owner, method)

    def then_told(arg: Any) -> Any:
        result = method_itself(arg)
        seen = what(arg)
        if seen is not None:
            told.put(seen)
        return result

    monkeypatch.setattr(owner, method, then_told)
    return told


def parking(srv: Any, monkeypatch: pytest.MonkeyPatch) -> Queue[str]:
    """The names of the returning users' connections parked from now on, as they are
    (login_ok goes out first: a client may hear it before its connection is parked).
    A registration's connection is parked too (``registering``), and left out here."""
    return after_each(
        monkeypatch,
        srv.server._admission,
        "park",
        lambda conn: None if conn.new_account else conn.username,
    )


def test_a_return_logs_in_on_the_admission_thread_and_waits_without_a_thread(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered(srv, "ret")
    done = parking(srv, monkeypatch)
    with RawClient(srv.address) as c, RawClient(srv.address) as witness:
        witness.login("witness")  # a registration: an early login of its own
        before = early(srv)
        c.send_raw(login_frame("ret", features=["users_delta"]))
        ok = c.expect("login_ok", username="ret", new_user=False)
        assert "ret" in ok["users"]
        assert early(srv) == before + 1
        witness.until("users", joined="ret")
        assert done.get(timeout=10) == "ret"  # logged in, no thread: nothing more to read
        assert "ret" in parked(srv)
        c.send(command="ping", id=1)  # its client speaks: its thread starts
        c.until("pong", id=1)
        assert "ret" not in parked(srv)
        c.send(command="pm", message="after", id=2)
        c.until("ack", id=2)
        assert witness.until("broadcast")["message"] == "after"


def test_a_message_in_the_login_packet_is_handled_once_in_order_after_login_ok(
    srv: Any,
) -> None:
    registered(srv, "quick")
    with RawClient(srv.address) as witness, RawClient(srv.address) as c:
        witness.login("witness")  # a registration: an early login of its own
        before = early(srv)
        pm = b'{"command":"pm","message":"one packet","id":7}\n'
        half = b'{"command":"pm","message":"sec'
        c.send_raw(login_frame("quick") + pm + half)  # one packet
        c.expect("login_ok", username="quick")
        assert early(srv) == before + 1
        frames = [c.recv()]
        while frames[-1].get("type") != "ack":
            frames.append(c.recv())
        assert frames[-1]["id"] == 7
        c.send_raw(b'ond","id":8}\n')  # the rest of the half frame
        c.until("ack", id=8)
        got = [witness.until("broadcast") for _ in range(2)]
        assert [m["message"] for m in got] == ["one packet", "second"]
        witness.send(command="ping", id=1)
        seen = []
        while (f := witness.recv())["type"] != "pong":
            seen.append(f)
        assert not [f for f in seen if f.get("type") == "broadcast"]  # once each


def test_a_takeover_from_the_admission_thread_replaces_a_parked_session(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = after_each(monkeypatch, srv.server._presence, "depart", lambda c: c.username)
    registered(srv, "twice")
    # Its registration's connection gone first: still open, it is one more "twice" among
    # the connections counted below (2 == 1 once, on a loaded box).
    assert gone.get(timeout=10) == "twice"
    with RawClient(srv.address) as first, RawClient(srv.address) as second:
        first.send_raw(login_frame("twice"))
        first.expect("login_ok")
        before = early(srv)
        second.send_raw(login_frame("twice"))
        second.expect("login_ok", username="twice")
        assert early(srv) == before + 1
        frames = first.wait_closed()
        assert frames[-1] == {"type": "bye", "reason": "session_replaced"}
        second.send(command="ping", id=1)
        second.until("pong", id=1)
        online = [c for c in srv.server._presence.connections() if c.username == "twice"]
        assert len(online) == 1


def test_a_wrong_password_is_not_taken_early_and_is_refused(srv: Any) -> None:
    registered(srv, "guarded")
    before = early(srv)
    with RawClient(srv.address) as c:
        c.send_raw(login_frame("guarded", password="not the password", id=1))
        c.expect_error("bad_credentials", id=1)
        assert early(srv) == before
        c.send_raw(login_frame("guarded", id=2))
        c.expect("login_ok", username="guarded")


def test_a_banned_user_is_refused_on_the_admission_thread(
    srv: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    registered(srv, "villain")
    status = main(["admin", "--db", str(tmp_path / "chat.db"), "ban", "villain"])
    capsys.readouterr()
    assert status == 0
    before, before_refused = early(srv), refused(srv)
    with RawClient(srv.address) as c:
        c.send_raw(login_frame("villain", id=1))
        assert c.until("error", id=1)["code"] == "banned"
        c.send(command="ping", id=2)  # still connected, with a thread now
        c.until("pong", id=2)  # its thread started after first() counted it
        # Taken by the admission thread, but refused: no login to count.
        assert early(srv) == before
        assert refused(srv) == before_refused + 1


def test_a_half_login_then_a_stall_holds_up_nobody_and_logs_in_once_completed(
    srv: Any,
) -> None:
    registered(srv, "halves")
    frame = login_frame("halves")
    before = early(srv)
    with RawClient(srv.address) as c:
        c.send_raw(frame[:10])  # and then nothing, for a while
        for i in range(6):  # more than the slots: the stalled one holds none
            with RawClient(srv.address) as other:
                other.login(f"other{i}")
        c.send_raw(frame[10:])
        c.expect("login_ok", username="halves")
        # Its half waited threadless (Admission.rewatch): once whole, its login ran on
        # the admission thread, as the six others' registrations did.
        assert early(srv) == before + 7


def test_a_resume_from_the_admission_thread_replays_after_login_ok(srv: Any) -> None:
    registered(srv, "resumer")
    with RawClient(srv.address) as talker:
        talker.login("talker")
        for i in range(3):
            talker.send(command="pm", message=f"m{i}", id=i)
            talker.until("ack", id=i)
    before = early(srv)
    with RawClient(srv.address) as c:
        c.send_raw(login_frame("resumer", since=0))
        c.expect("login_ok", username="resumer")
        assert early(srv) == before + 1
        got = [c.until("broadcast")["message"] for _ in range(3)]
        assert got == ["m0", "m1", "m2"]
        c.send(command="ping", id=1)
        c.until("pong", id=1)


def test_a_stop_says_bye_to_parked_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with early_server(tmp_path / "db") as srv:
        registered(srv, "a", "b")
        done = parking(srv, monkeypatch)
        clients = [RawClient(srv.address) for _ in range(2)]
        for c, name in zip(clients, ("a", "b"), strict=True):
            c.send_raw(login_frame(name))
            c.expect("login_ok")
        assert {done.get(timeout=10), done.get(timeout=10)} == {"a", "b"}
        assert parked(srv) == {"a", "b"}
        srv.stop()
        for c in clients:
            assert c.wait_closed()[-1] == {"type": "bye", "reason": "server_shutdown"}
            c.close()


def test_a_parked_client_that_hangs_up_departs(srv: Any) -> None:
    registered(srv, "leaver")
    with RawClient(srv.address) as witness:
        witness.login("witness")
        c = RawClient(srv.address)
        c.send_raw(login_frame("leaver"))
        c.expect("login_ok")
        witness.until("users", joined="leaver")
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
        witness.until("users", left="leaver")


def test_a_parked_client_that_resets_departs(srv: Any) -> None:
    registered(srv, "resetter")
    with RawClient(srv.address) as witness:
        witness.login("witness")
        c = RawClient(srv.address)
        c.send_raw(login_frame("resetter"))
        c.expect("login_ok")
        witness.until("users", joined="resetter")
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()  # RST: as a client killed with -9 on a box that resets its sockets
        witness.until("users", left="resetter")
        witness.send(command="ping", id=1)
        witness.until("pong", id=1)


def test_a_banned_address_is_refused_before_the_password_on_the_admission_thread(
    srv: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with RawClient(srv.address, source="127.0.0.2") as c:
        c.login("faraway")  # remembered from now on
    status = main(["admin", "--db", str(tmp_path / "chat.db"), "ban", "--address", "127.0.0.2"])
    capsys.readouterr()
    assert status == 0
    before, before_refused = early(srv), refused(srv)
    with RawClient(srv.address, source="127.0.0.2") as c:
        c.send_raw(login_frame("faraway", id=1))
        error = c.until("error", id=1)
        assert error["code"] == "banned" and "127.0.0.2" in error["message"]
        c.send(command="ping", id=2)  # its thread started after first() counted it
        c.until("pong", id=2)
        assert early(srv) == before
        assert refused(srv) == before_refused + 1
    with RawClient(srv.address) as other:
        other.send_raw(login_frame("faraway", id=2))
        other.expect("login_ok", username="faraway")  # the account is not banned


def test_a_parked_session_gets_its_dms_live(srv: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    registered(srv, "quiet")
    done = parking(srv, monkeypatch)
    with RawClient(srv.address) as c, RawClient(srv.address) as sender:
        c.send_raw(login_frame("quiet"))
        c.expect("login_ok")
        assert done.get(timeout=10) == "quiet"
        sender.login("sender")
        sender.send(command="dm", to="quiet", message="psst", id=1)
        sender.until("ack", id=1)
        assert c.until("dm")["message"] == "psst"  # no thread needed to send to it


def test_a_parked_session_still_meets_the_idle_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    with quiet_server(
        tmp_path / "db",
        password_hash="load-test",
        clock=lambda: now[0],
        housekeeping_interval=3600,
    ) as srv:
        gone = after_each(monkeypatch, srv.server._presence, "depart", lambda c: c.username)
        registered(srv, "idle")
        # Its registration's connection gone first: still open, it is idle as long as
        # the return's, and the sweep would close it too.
        assert gone.get(timeout=10) == "idle"
        done = parking(srv, monkeypatch)
        with RawClient(srv.address) as c:
            c.send_raw(login_frame("idle"))
            c.expect("login_ok")
            assert done.get(timeout=10) == "idle"
            now[0] += srv.server.config.idle_timeout + 1
            assert srv.server.sweep() == 1
            assert c.wait_closed()[-1] == {"type": "bye", "reason": "timeout"}


def test_a_parked_client_that_never_reads_is_dropped_and_hurts_nobody(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with quiet_server(
        tmp_path / "db", password_hash="load-test", max_output=64 * 1024, send_buffer=8192
    ) as srv:
        registered(srv, "deaf")
        done = parking(srv, monkeypatch)
        with RawClient(srv.address) as deaf, RawClient(srv.address) as talker:
            deaf.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            deaf.send_raw(login_frame("deaf"))
            deaf.expect("login_ok")
            assert done.get(timeout=10) == "deaf"
            talker.login("talker")
            # Never read by deaf: its outbox overflows, and the server drops it.
            big = "x" * 3000
            left = False
            for i in range(3000):
                talker.send(command="pm", message=big, id=i)
                while (f := talker.recv()).get("type") != "ack" or f.get("id") != i:
                    left = left or (f.get("type") == "users" and f.get("left") == "deaf")
                if left:
                    break
            assert left, "deaf was never dropped"
            talker.send(command="ping", id="p")
            talker.until("pong", id="p")


def test_hostile_bytes_after_an_early_login_are_answered_on_its_thread(srv: Any) -> None:
    registered(srv, "hostile")
    before = early(srv)
    with RawClient(srv.address) as c:
        c.send_raw(login_frame("hostile") + b"\xff\xfe not json\n" + b'{"command":"ping","id":1}\n')
        c.expect("login_ok", username="hostile")
        assert early(srv) == before + 1
        assert c.until("error")["code"] == "bad_json"
        c.until("pong", id=1)


def test_a_resume_and_a_message_in_one_packet_replay_first_then_the_message(srv: Any) -> None:
    registered(srv, "hurried")
    with RawClient(srv.address) as talker:
        talker.login("talker")
        for i in range(2):
            talker.send(command="pm", message=f"old{i}", id=i)
            talker.until("ack", id=i)
        before = early(srv)
        with RawClient(srv.address) as c:
            pm = b'{"command":"pm","message":"new","id":5}\n'
            c.send_raw(login_frame("hurried", since=0) + pm)
            c.expect("login_ok", username="hurried")
            assert early(srv) == before + 1
            seen = []
            while (f := c.recv()).get("type") != "ack":
                if f.get("type") == "broadcast":
                    seen.append(f["message"])
            assert f["id"] == 5
            assert seen == ["old0", "old1"]  # the replay, all of it, before the ack
            got = talker.until("broadcast")
            assert got["message"] == "new" and got["from"] == "hurried"


def test_a_first_frame_nested_too_deeply_costs_its_connection_not_the_admission_thread(
    srv: Any,
) -> None:
    # A frame nested deeper than msgspec recurses raises RecursionError, not a
    # DecodeError, from the admission thread's peek (EarlyLogin.early): the thread that
    # accepts and logs everyone in must not die of one client's bytes.
    deep = b'{"x":' + b"[" * 1500 + b"]" * 1500 + b',"command":"login"}\n'
    assert len(deep) < 4096  # read whole by the admission thread's first recv
    with RawClient(srv.address) as hostile:
        hostile.send_raw(deep)
        hostile.expect("error", code="bad_json")
    with RawClient(srv.address) as c:  # somebody else still gets in
        c.login("after")


def test_a_crash_in_the_early_look_leaves_the_login_to_its_thread(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered(srv, "crashy")

    def broken(conn: Any, frame: bytes) -> bool:
        raise ValueError("a bug in the peek")

    monkeypatch.setattr(srv.server._listeners.look, "_early", broken)
    before = early(srv)
    with RawClient(srv.address) as c:
        c.send_raw(login_frame("crashy"))
        c.expect("login_ok", username="crashy")  # on its own thread, as before
    assert early(srv) == before
    with RawClient(srv.address) as c:  # the admission thread lives on
        c.login("after")


def test_a_kill_of_a_parked_session_ends_it_with_its_bye(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered(srv, "victim")
    done = parking(srv, monkeypatch)
    with RawClient(srv.address) as oscar, RawClient(srv.address) as victim:
        oscar.login("oscar")
        grant(srv, "oscar")
        victim.send_raw(login_frame("victim"))
        victim.expect("login_ok", username="victim")
        assert done.get(timeout=10) == "victim"
        oscar.send(command="kill", user="victim", reason="spam", id=1)
        oscar.until("ack", id=1)
        frames = victim.wait_closed()
        assert frames[-1] == {
            "type": "bye",
            "reason": "disconnected",
            "message": "Killed (oscar (spam))",
        }
        assert kills(srv) == [("oscar", "victim", "spam", {})]
        assert "victim" not in parked(srv)


def test_a_failure_on_the_admission_thread_ends_that_connection_not_the_thread(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever one connection's first frame makes fail there (a bug, a thread that
    # cannot be started), the thread that accepts and logs everyone in lives on.
    admission = srv.server._admission
    first = admission._first
    failed: list[Any] = []

    def failing_once(conn: Any) -> bool:
        if not failed:
            failed.append(conn)
            raise RuntimeError("can't start new thread")
        return bool(first(conn))

    monkeypatch.setattr(admission, "_first", failing_once)
    with RawClient(srv.address) as victim:
        victim.send_raw(login_frame("unlucky"))
        victim.wait_closed()  # closed, with the bye of a connection never started
    assert failed
    with RawClient(srv.address) as c:  # the admission thread lives on
        c.login("after")
