"""An IRC client's first line sent in parts (chatroom_server.firstlook ``FirstLook.first``,
``Admission.rewatch``): its bytes wait in the admission thread's epoll, threadless, until
the line is whole (or over the IRC line limit), and then its thread takes them on, each
byte handled once. The server does not speak first in IRC, so nothing a client waits
for is held back meanwhile."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatroom.testing import TestServer
from chatroom_server.irc.parse import LINE, TAGS
from tests.helpers import PASSWORD, connect, quiet_server
from tests.server.test_irc import Irc, irc_address
from tests.server.test_slowloris import rewatching, thread_starts

REGISTRATION = f"PASS :{PASSWORD}\r\nNICK {{nick}}\r\nUSER u 0 * :Real Name\r\n"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[TestServer]:
    with quiet_server(tmp_path / "chat.db", irc_port=0, login_slots=4) as s:
        yield s


def welcomed(irc: Irc) -> list[str]:
    """The registration's burst, to the end of its NAMES."""
    burst = []
    while True:
        line = irc.line()
        burst.append(line)
        if " 366 " in line:
            return burst


def test_a_registration_in_one_byte_packets_waits_threadless_for_its_first_line(
    srv: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    told = rewatching(srv, monkeypatch)
    started = thread_starts(monkeypatch)
    data = REGISTRATION.format(nick="dripirc").encode()
    first_end = data.index(b"\n") + 1
    irc = Irc(irc_address(srv))
    irc.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = None
    for i in range(first_end - 1):
        irc.sock.sendall(data[i : i + 1])
        got = told.get(timeout=10)  # one byte, one look: none lost, none twice
        assert conn is None or got is conn
        conn = got
        assert bytes(conn.unread) == data[: i + 1]
        assert conn not in started
    irc.sock.sendall(data[first_end - 1 : first_end])  # the first line whole: a thread
    for i in range(first_end, len(data)):
        irc.sock.sendall(data[i : i + 1])
    burst = welcomed(irc)
    assert any(" 001 dripirc " in line for line in burst)
    assert started.count(conn) == 1
    assert told.empty()  # no look after the first line: its thread reads the rest


def test_lines_pipelined_after_the_first_all_arrive_once(
    srv: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    told = rewatching(srv, monkeypatch)
    watcher = connect(srv.address, "watcher")
    data = REGISTRATION.format(nick="piper").encode()
    data += b"PRIVMSG #lobby :one\r\nPRIVMSG #lobby :two\r\n"
    irc = Irc(irc_address(srv))
    irc.sock.sendall(data[:9])  # "PASS :cor": half the first line
    told.get(timeout=10)
    irc.sock.sendall(data[9:])  # the rest of the registration and two lines, at once
    welcomed(irc)
    assert watcher.until("broadcast")["message"] == "one"
    assert watcher.expect("broadcast")["message"] == "two"
    irc.send("PRIVMSG #lobby :three")  # the next one: nothing came twice before it
    assert watcher.expect("broadcast")["message"] == "three"


def test_a_first_line_over_the_limit_in_parts_gets_417(
    srv: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    told = rewatching(srv, monkeypatch)
    started = thread_starts(monkeypatch)
    irc = Irc(irc_address(srv))
    irc.sock.sendall(b"NICK " + b"x" * 100)
    conn = told.get(timeout=10)
    irc.sock.sendall(b"x" * (LINE + TAGS))  # over the limit, no newline yet: its thread
    assert irc.until("417").endswith(":Input line was too long")
    assert conn in started
    irc.sock.sendall(b"\r\n")  # the end of the long line, skipped; then a registration
    irc.sock.sendall(REGISTRATION.format(nick="longer").encode())
    assert any(" 001 longer " in line for line in welcomed(irc))


def test_a_close_mid_line_ends_the_connection(
    srv: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    told = rewatching(srv, monkeypatch)
    started = thread_starts(monkeypatch)
    irc = Irc(irc_address(srv))
    irc.sock.sendall(b"NICK hal")
    conn = told.get(timeout=10)
    irc.sock.close()
    # Its end makes it readable: its thread starts, reads the end and ends.
    assert conn.thread.join(10)
    assert conn in started
    assert conn not in srv.server._conns


def test_a_half_sent_irc_line_is_closed_at_the_login_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    with quiet_server(
        irc_port=0, login_slots=4, clock=lambda: now[0], housekeeping_interval=3600
    ) as srv:
        told = rewatching(srv, monkeypatch)
        started = thread_starts(monkeypatch)
        with socket.create_connection(irc_address(srv), timeout=10) as slow:
            slow.sendall(b"NICK sl")
            conn = told.get(timeout=10)
            now[0] += 29.0
            assert srv.server.sweep() == 0
            now[0] += 2.0  # past the login timeout (30 s) since it connected
            assert srv.server.sweep() == 1
            assert slow.makefile("rb").read().startswith(b"ERROR :")
        assert conn in started  # only its end took a thread
