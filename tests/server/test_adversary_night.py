"""A hostile client against the first look's IRC line and TLS handshake
(chatroom_server.firstlook, tlsconn), the IRC line decoder (irc/parse.py), and a room's
member keys kept between changes (rooms.Members): lines cut where a decoder may trip, a
handshake's flight with the login in it, a client that never reads, a stop with many
handshakes half done, and members joining and parting under a burst of messages. Each
byte is handled once; nobody gets a message twice or after parting."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from queue import Queue

import pytest

from chatroom.testing import TestServer
from chatroom_server.irc.parse import LINE, TAGS, LineDecoder
from chatroom_server.irc.session import IrcSession
from tests.helpers import PASSWORD, connect, quiet_server
from tests.server.test_irc import Irc, irc_address
from tests.server.test_slowloris import rewatching

T = 10.0
LIMIT = LINE + TAGS  # the decoder's: a line's bytes, its CRLF not counted


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[TestServer]:
    with quiet_server(tmp_path / "chat.db", irc_port=0, login_slots=4) as s:
        yield s


def fed(monkeypatch: pytest.MonkeyPatch) -> Queue[bytes]:
    """What every IRC session's thread reads from now on, a read at a time."""
    reads: Queue[bytes] = Queue()
    receive = IrcSession.receive_data

    def told(session: IrcSession, data: bytes) -> bool:
        reads.put(data)
        return receive(session, data)

    monkeypatch.setattr(IrcSession, "receive_data", told)
    return reads


def until_pong(irc: Irc, token: str) -> list[str]:
    """Every line up to the PONG to ``token``, that one included."""
    seen: list[str] = []
    while not (seen and seen[-1].endswith(f"PONG chatroom :{token}")):
        seen.append(irc.line())
    return seen


# ------------------------------------------------------------------ IRC lines and their ends


def test_decoder_a_line_of_exactly_the_limit_cut_between_its_cr_and_lf_is_kept() -> None:
    d = LineDecoder(limit=10)
    assert d.feed(b"0123456789\r") == []  # its CR is no part of the line
    assert d.feed(b"\n") == [b"0123456789"]
    assert d.feed(b"0123456789\r\r") == [None]  # two CRs past it: as it was
    assert d.feed(b"\nok\n") == [b"ok"]


def test_an_irc_line_of_exactly_the_limit_cut_before_its_lf_is_not_refused(
    srv: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line of exactly the decoder's limit whose CR comes in one read and LF in the next
    (TCP may cut anywhere): a whole line within the limit, not a 417."""
    watcher = connect(srv.address, "watcher")
    irc = Irc(irc_address(srv))
    irc.register("edge")
    reads = fed(monkeypatch)
    head, tail = "PRIVMSG #lobby", " :at the limit"
    line = (head + " " * (LIMIT - len(head) - len(tail)) + tail).encode()
    assert len(line) == LIMIT
    irc.sock.sendall(line + b"\r")
    while not reads.get(timeout=T).endswith(b"\r"):
        pass  # the session has read up to the CR
    irc.sock.sendall(b"\n")
    irc.send("PING :after")
    assert not [x for x in until_pong(irc, "after") if " 417 " in x]
    assert watcher.until("broadcast")["message"] == "at the limit"


def test_a_registration_with_cap_ls_in_one_segment_and_empty_lines(srv: TestServer) -> None:
    irc = Irc(irc_address(srv))
    irc.sock.sendall(
        b"\r\n" * 3
        + b"CAP LS 302\r\n"
        + f"PASS :{PASSWORD}\r\nNICK capper\r\nUSER u 0 * :Real\r\n".encode()
        + b"\n\n\r\n"
        + b"CAP END\r\n"
    )
    irc.send("PING :x")
    seen = until_pong(irc, "x")
    assert " LS " in seen[0] and any(" 001 capper " in x for x in seen)
    assert not [x for x in seen if x.split(" ")[1].startswith("4")], seen


def test_nul_bytes_and_bare_lf_ends_in_a_first_line(srv: TestServer) -> None:
    irc = Irc(irc_address(srv))
    irc.sock.sendall(f"PA\0SS :{PASSWORD}\nNI\0CK nul\0ler\nUSER u 0 * :Real\n".encode())
    assert " 001 nuller " in irc.until("001")


def test_a_utf8_character_cut_across_looks_in_a_first_line(
    srv: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    told = rewatching(srv, monkeypatch)
    irc = Irc(irc_address(srv))
    irc.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    first = "USER u 0 * :Ré Ñame\r\n".encode()
    cut = first.index("é".encode()) + 1  # inside the é
    irc.sock.sendall(first[:cut])
    assert bytes(told.get(timeout=T).unread) == first[:cut]
    irc.sock.sendall(first[cut:] + f"PASS :{PASSWORD}\r\nNICK utf\r\n".encode())
    irc.until("366")
    irc.send("WHOIS utf")
    assert irc.until("311").endswith(":Ré Ñame")


def test_a_first_line_of_exactly_the_limit_cut_before_its_lf_is_not_refused(
    srv: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same line as the first: the first look hands it to its thread once it is past
    the limit (its CR counted), and its thread's decoder must not refuse it."""
    reads = fed(monkeypatch)
    irc = Irc(irc_address(srv))
    head, tail = "NICK", " limiter"
    line = (head + " " * (LIMIT - len(head) - len(tail)) + tail).encode()
    irc.sock.sendall(line + b"\r")
    got = 0
    while got < len(line) + 1:
        got += len(reads.get(timeout=T))
    irc.sock.sendall(f"\nPASS :{PASSWORD}\r\nUSER u 0 * :Real\r\n".encode())
    irc.send("PING :end")
    seen = until_pong(irc, "end")
    assert any(" 001 limiter " in x for x in seen)
    assert not [x for x in seen if " 417 " in x]
