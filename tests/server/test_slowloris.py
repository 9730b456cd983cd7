"""A first frame sent in parts (chatroom_server.firstlook ``FirstLook.first``,
``Admission.rewatch``): a client that sends its login a byte at a time (slowloris)
waits in the admission thread's epoll, threadless, its bytes kept there, until the
rest comes; then its login runs as any other's, on exactly the bytes it sent. The
login timeout still closes one that never finishes, and a first frame over
``max_frame`` still gets ``too_large``."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from queue import Queue
from typing import Any

import pytest

from chatroom_server import readers, web
from tests.helpers import PASSWORD, RawClient, quiet_server
from tests.server.test_early_login import early, login_frame, registered


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Any]:
    with quiet_server(tmp_path / "chat.db", password_hash="load-test", login_slots=4) as s:
        yield s


def rewatching(srv: Any, monkeypatch: pytest.MonkeyPatch) -> Queue[Any]:
    """The connections sent back into the epoll with half a frame, as they are."""
    admission = srv.server._admission
    done: Queue[Any] = Queue()
    rewatch = admission.rewatch

    def rewatched_then_told(conn: Any) -> None:
        rewatch(conn)
        done.put(conn)

    monkeypatch.setattr(admission, "rewatch", rewatched_then_told)
    return done


def thread_starts(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The connections whose reader thread starts from now on."""
    started: list[Any] = []
    start = readers.ReaderThread.start

    def counted(thread: Any, target: Any, conn: Any) -> None:
        started.append(conn)
        start(thread, target, conn)

    monkeypatch.setattr(readers.ReaderThread, "start", counted)
    return started


def test_half_sent_logins_hold_no_thread_and_finish_as_logins(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 40  # ten times the login slots
    names = [f"slow{i}" for i in range(n)]
    registered(srv, *names[: n // 2])  # half of them returns, half registrations
    told = rewatching(srv, monkeypatch)
    started = thread_starts(monkeypatch)
    frames = [login_frame(name, id=i) for i, name in enumerate(names)]
    with ExitStack() as stack:
        slow = [stack.enter_context(RawClient(srv.address)) for _ in names]
        for c, frame in zip(slow, frames, strict=True):
            c.send_raw(frame[:5])
        waiting = {told.get(timeout=10) for _ in names}
        assert len(waiting) == n
        # Every one threadless, in the admission thread's epoll, holding its bytes.
        watched = srv.server._admission._watched
        assert all(watched.get(conn.sock.fileno()) is conn for conn in waiting)
        assert {bytes(conn.unread) for conn in waiting} == {f[:5] for f in frames}
        assert not waiting & set(started)
        # A login meanwhile goes ahead of them all.
        with RawClient(srv.address) as other:
            other.login("meanwhile")
        # A second part: still waiting, the two parts kept in order.
        for c, frame in zip(slow, frames, strict=True):
            c.send_raw(frame[5:20])
        again = {told.get(timeout=10) for _ in names}
        assert again == waiting
        assert {bytes(conn.unread) for conn in waiting} == {f[:20] for f in frames}
        assert not waiting & set(started)
        before = early(srv)
        for i, (c, frame) in enumerate(zip(slow, frames, strict=True)):
            c.send_raw(frame[20:])
            c.expect("login_ok", username=names[i], id=i, new_user=i >= n // 2)
        assert early(srv) == before + n  # every one of them on the admission thread
        assert not waiting & set(started)  # logged in, parked: still no thread


def test_a_half_sent_login_is_closed_at_the_login_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    with (
        quiet_server(login_slots=4, clock=lambda: now[0], housekeeping_interval=3600) as srv,
        socket.create_connection(srv.address) as slow,
    ):
        told = rewatching(srv, monkeypatch)
        slow.sendall(login_frame("sloth")[:7])
        told.get(timeout=10)
        now[0] += 29.0
        assert srv.server.sweep() == 0
        now[0] += 2.0  # past the login timeout (30 s) since it connected
        assert srv.server.sweep() == 1
        slow.settimeout(10)
        assert slow.makefile("rb").read() == b'{"type":"bye","reason":"timeout"}\n'


def test_a_first_frame_over_max_frame_in_parts_is_too_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with quiet_server(login_slots=4, max_frame=1024) as srv, RawClient(srv.address) as c:
        told = rewatching(srv, monkeypatch)
        c.send_raw(b'{"command":"login","username":"' + b"x" * 600)
        told.get(timeout=10)
        c.send_raw(b"x" * 600)  # 1,231 bytes and no newline yet
        error = c.expect_error("too_large")
        assert "1024" in error["message"]
        c.wait_closed()


def test_a_login_in_one_byte_packets_logs_in_on_exactly_its_bytes(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    told = rewatching(srv, monkeypatch)
    frame = json.dumps(
        {"command": "login", "username": "drip", "password": PASSWORD, "id": "é"}
    ).encode()
    frame += b"\n"
    with RawClient(srv.address) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(frame) - 1):
            c.send_raw(frame[i : i + 1])
            told.get(timeout=10)  # one byte, one look: none lost, none twice
        c.send_raw(frame[-1:])
        c.expect("login_ok", username="drip", id="é")


def test_a_half_sent_http_request_on_the_web_port_holds_no_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with quiet_server(web_port=0, login_slots=4) as srv:
        told = rewatching(srv, monkeypatch)
        started = thread_starts(monkeypatch)
        head = b"GET / HTTP/1.1\r\nHost: chat\r\n\r\n"
        with socket.create_connection(srv.web_address, timeout=10) as slow:
            slow.sendall(head[:10])
            conn = told.get(timeout=10)
            slow.sendall(head[10:-2])  # every header line, but not the blank one
            assert told.get(timeout=10) is conn
            assert conn not in started and bytes(conn.unread) == head[:-2]
            slow.sendall(head[-2:])
            answer = slow.makefile("rb").readline()  # its thread answers
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert conn in started


def test_an_http_head_over_the_limit_gets_431_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    with quiet_server(web_port=0, login_slots=4) as srv:
        told = rewatching(srv, monkeypatch)
        with socket.create_connection(srv.web_address, timeout=10) as slow:
            slow.sendall(b"GET / HTTP/1.1\r\nX-Long: ")
            told.get(timeout=10)
            slow.sendall(b"x" * (web.MAX_HEADERS + 1))
            answer = slow.makefile("rb").read()
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
