"""The switchboard's links do what the faults need: bytes flow when up, a link down
resets and refuses, a blackhole holds everything until it heals, a cut resets at once,
and a mid-frame cut leaves the receiver half a frame."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.nemesis.proxy import Switchboard


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """A line echo server on 127.0.0.1 (a thread per connection)."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        # The proxy resets its upstream side too: that ends the echo, nothing more.
        with conn, contextlib.suppress(ConnectionResetError, BrokenPipeError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield server.getsockname()[:2]
    stop.set()
    server.shutdown(socket.SHUT_RDWR)
    server.close()
    t.join(5)


@pytest.fixture
def board() -> Iterator[Switchboard]:
    sb = Switchboard()
    yield sb
    sb.close()


def dial(board: Switchboard, name: str) -> socket.socket:
    s = socket.create_connection(board.link(name).address, timeout=5)
    s.settimeout(5)
    return s


def test_bytes_flow_both_ways_through_a_link(board: Switchboard, echo: tuple[str, int]) -> None:
    board.add("a", echo)
    with dial(board, "a") as s:
        s.sendall(b'{"command":"ping"}\n')
        assert s.recv(100) == b'{"command":"ping"}\n'


def test_a_link_down_resets_what_is_open_and_refuses_what_comes(
    board: Switchboard, echo: tuple[str, int]
) -> None:
    board.add("a", echo)
    s = dial(board, "a")
    s.sendall(b"x\n")
    assert s.recv(10) == b"x\n"
    board.set_mode("a", "down")
    with pytest.raises(ConnectionResetError):
        s.recv(10)
    s.close()
    # Accepted by the kernel, then reset: the connect itself may already see it.
    with pytest.raises((ConnectionResetError, BrokenPipeError)), dial(board, "a") as t:
        t.sendall(b"y\n")
        t.recv(10)
    board.set_mode("a", "up")
    with dial(board, "a") as u:
        u.sendall(b"z\n")
        assert u.recv(10) == b"z\n"


def test_a_blackhole_holds_everything_until_it_heals(
    board: Switchboard, echo: tuple[str, int]
) -> None:
    board.add("a", echo)
    s = dial(board, "a")
    board.set_mode("a", "blackhole")
    s.sendall(b"held\n")
    s.settimeout(0.5)
    with pytest.raises(TimeoutError):
        s.recv(10)  # nothing comes back, and nothing is closed
    late = socket.create_connection(board.link("a").address, timeout=5)  # in the backlog
    late.sendall(b"late\n")
    board.set_mode("a", "up")
    s.settimeout(5)
    late.settimeout(5)
    assert s.recv(10) == b"held\n"
    assert late.recv(10) == b"late\n"
    s.close()
    late.close()


def test_a_cut_resets_every_connection_of_the_link(
    board: Switchboard, echo: tuple[str, int]
) -> None:
    board.add("a", echo)
    board.add("b", echo)
    a1, a2, b1 = dial(board, "a"), dial(board, "a"), dial(board, "b")
    for s in (a1, a2, b1):  # every pair is up before the cut
        s.sendall(b".\n")
        assert s.recv(10) == b".\n"
    assert board.cut("a") == 2
    for s in (a1, a2):
        with pytest.raises(ConnectionResetError):
            s.recv(10)
    b1.sendall(b"still\n")
    assert b1.recv(10) == b"still\n"  # another link is untouched
    for s in (a1, a2, b1):
        s.close()


def test_a_midframe_cut_leaves_half_a_frame(board: Switchboard, echo: tuple[str, int]) -> None:
    board.add("a", echo)
    s = dial(board, "a")
    board.cut_midframe("a", "down")
    frame = b'{"type":"ack","seq":41,"id":3}\n'
    s.sendall(frame)
    got = b""
    with pytest.raises(ConnectionResetError):
        while chunk := s.recv(100):
            got += chunk
    assert got == frame[: len(got)] and len(got) < len(frame)  # a prefix, not the frame
    s.close()
    assert board.link("a").cuts == 1


def test_links_reach_only_loopback(board: Switchboard) -> None:
    with pytest.raises(ValueError, match="loopback"):
        board.add("out", ("192.0.2.1", 80))
