"""A TLS connection before its first frame (chatroom_server.tlsconn ``shake``,
``FirstLook.first``): its handshake runs a step at a time on the admission thread as its
client's bytes come, and its first frame is read there, decrypted, until it is whole;
a client sending its ClientHello a byte a second (slowloris) holds no thread. A
handshake that fails (a garbage record, a reset) ends with no thread at all; one that
never finishes is closed at the login timeout."""

from __future__ import annotations

import json
import socket
import ssl
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Any

import pytest

from chatroom.testing import TestServer
from chatroom_server.outbox import Outbox
from tests.helpers import PASSWORD, RawClient, quiet_server
from tests.server.test_early_login import early, login_frame
from tests.server.test_slowloris import thread_starts
from tests.server.test_tls import certs  # noqa: F401 (a fixture)

T = 10.0


@pytest.fixture
def srv(tmp_path: Path, certs: tuple[Path, Path]) -> Iterator[TestServer]:  # noqa: F811
    with quiet_server(
        tmp_path / "chat.db", password_hash="load-test", login_slots=4, tls_cert=certs[0]
    ) as s:
        yield s


def client_context(ca: Path, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


@dataclass(frozen=True)
class Look:
    """A connection sent back into the epoll, and whether its handshake was done then."""

    conn: Any
    shaken: bool


def looks(srv: TestServer, monkeypatch: pytest.MonkeyPatch) -> Queue[Look]:
    """The connections sent back into the epoll from now on (``Admission.rewatch``),
    each with its handshake's state at that moment (read later, it may have moved on)."""
    admission = srv.server._admission
    rewatch = admission.rewatch
    told: Queue[Look] = Queue()

    def rewatched_then_told(conn: Any) -> None:
        shaken = conn.handshaken
        rewatch(conn)
        told.put(Look(conn, shaken))

    monkeypatch.setattr(admission, "rewatch", rewatched_then_told)
    return told


def departures(srv: TestServer, monkeypatch: pytest.MonkeyPatch) -> Queue[Any]:
    """The connections handed to the reaper from now on (Presence.depart)."""
    presence = srv.server._presence
    depart = presence.depart
    gone: Queue[Any] = Queue()

    def departed_then_told(conn: Any) -> None:
        depart(conn)
        gone.put(conn)

    monkeypatch.setattr(presence, "depart", departed_then_told)
    return gone


class Drip:
    """A TLS client over memory BIOs: every byte it has to send goes out alone, and the
    test waits for the server to have looked at it (``told``) before the next one."""

    def __init__(self, address: tuple[str, int], ctx: ssl.SSLContext, told: Queue[Look]) -> None:
        self.sock = socket.create_connection(address, timeout=T)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")
        self.told = told
        self.conn: Any = None  # the server's, once it has looked at a byte
        self.looks = 0

    def close(self) -> None:
        self.sock.close()

    def drip(self, data: bytes, last_looked_at: bool = True) -> None:
        """``data`` a byte at a time, each looked at (and sent back into the epoll) by
        the admission thread before the next; the last one too unless not
        ``last_looked_at`` (a frame made whole is not sent back)."""
        for i in range(len(data)):
            self.sock.sendall(data[i : i + 1])
            if i < len(data) - 1 or last_looked_at:
                conn = self.told.get(timeout=T).conn
                assert self.conn is None or conn is self.conn
                self.conn = conn
                self.looks += 1

    def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            out = self.outgoing.read()
            self.drip(out)
            if done:
                return
            if not out:
                self.incoming.write(self.sock.recv(65536))  # the server's flight

    def line(self) -> dict[str, Any]:
        data = b""
        while not data.endswith(b"\n"):
            try:
                data += self.tls.read(65536)
            except ssl.SSLWantReadError:
                self.incoming.write(self.sock.recv(65536))
        frame: dict[str, Any] = json.loads(data.splitlines()[0])
        return frame


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_tls_login_in_one_byte_packets_holds_no_thread(
    srv: TestServer,
    certs: tuple[Path, Path],  # noqa: F811
    version: ssl.TLSVersion,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told = looks(srv, monkeypatch)
    started = thread_starts(monkeypatch)
    before = early(srv)
    c = Drip(srv.address, client_context(certs[1], version), told)
    try:
        c.handshake()  # every byte of it one look, its ClientHello's first
        assert c.tls.version() == version.name.replace("_", ".")
        assert c.conn is not None and c.conn.handshaken
        assert c.conn not in started
        c.tls.write(login_frame("drip", id="é"))
        c.drip(c.outgoing.read(), last_looked_at=False)  # the record's every byte
        ok = c.line()
        assert (ok["type"], ok["username"], ok["id"], ok["new_user"]) == (
            "login_ok",
            "drip",
            "é",
            True,
        )
        assert early(srv) == before + 1  # a registration on the admission thread
        assert c.conn not in started  # logged in and parked: still no thread
        assert c.looks > 100
    finally:
        c.close()


def test_frames_after_the_login_all_arrive_once(
    srv: TestServer,
    certs: tuple[Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = client_context(certs[1])
    with RawClient(srv.address) as watcher, RawClient(srv.address) as sender:
        watcher.sock = ctx.wrap_socket(watcher.sock, server_hostname="127.0.0.1")
        watcher.login("watcher")
        told = looks(srv, monkeypatch)
        sender.sock = ctx.wrap_socket(sender.sock, server_hostname="127.0.0.1")
        while not told.get(timeout=T).shaken:
            pass  # its handshake's steps, until it is done and nothing follows yet
        frame = login_frame("piper")
        sender.send_raw(frame[:9])  # a record with half its login
        told.get(timeout=T)
        # The rest of the login and two messages in one record, decrypted at once.
        pms = [json.dumps({"command": "pm", "message": m}).encode() + b"\n" for m in "ab"]
        sender.send_raw(frame[9:] + b"".join(pms))
        sender.expect("login_ok", username="piper")
        assert watcher.until("broadcast")["message"] == "a"
        assert watcher.expect("broadcast")["message"] == "b"
        sender.send(command="pm", message="c")  # the next: nothing came twice before it
        assert watcher.expect("broadcast")["message"] == "c"


def test_a_handshake_that_never_finishes_is_closed_at_the_login_timeout(
    certs: tuple[Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    with quiet_server(
        login_slots=4, clock=lambda: now[0], housekeeping_interval=3600, tls_cert=certs[0]
    ) as srv:
        told = looks(srv, monkeypatch)
        started = thread_starts(monkeypatch)
        gone = departures(srv, monkeypatch)
        c = Drip(srv.address, client_context(certs[1]), told)
        try:
            try:
                c.tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
            c.drip(c.outgoing.read()[:20])  # a ClientHello's first 20 bytes, no more
            now[0] += 29.0
            assert srv.server.sweep() == 0
            now[0] += 2.0  # past the login timeout (30 s) since it connected
            assert srv.server.sweep() == 1
            assert gone.get(timeout=T) is c.conn
            # Closed, with no TLS session to say bye in: at most OpenSSL's alert.
            data = c.sock.recv(4096)
            assert data[:1] in (b"", b"\x15")
            while data:
                data = c.sock.recv(4096)
        finally:
            c.close()
        assert c.conn not in started
        assert c.conn not in srv.server._conns


def test_a_garbage_record_ends_the_connection_without_a_thread(
    srv: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    told = looks(srv, monkeypatch)
    started = thread_starts(monkeypatch)
    gone = departures(srv, monkeypatch)
    with socket.create_connection(srv.address, timeout=T) as s:
        s.sendall(b"\x16\x03")  # the start of a handshake record
        conn = told.get(timeout=T).conn
        # ... whose length is right and whose message is nonsense.
        s.sendall(b"\x01" + struct.pack(">H", 16) + b"\x07" * 16)
        assert gone.get(timeout=T) is conn
        data = s.recv(4096)
        while data:  # OpenSSL's alert, then the end
            data = s.recv(4096)
    assert conn not in started
    assert conn not in srv.server._conns
    with RawClient(srv.address) as after:  # the server goes on
        ctx = ssl.create_default_context(cafile=None)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        after.sock = ctx.wrap_socket(after.sock)
        after.login("after", PASSWORD)


def test_a_reset_mid_handshake_ends_the_connection_without_a_thread(
    srv: TestServer,
    certs: tuple[Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told = looks(srv, monkeypatch)
    started = thread_starts(monkeypatch)
    gone = departures(srv, monkeypatch)
    c = Drip(srv.address, client_context(certs[1]), told)
    try:
        c.tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = c.outgoing.read()
    c.drip(hello[: len(hello) // 2])
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # a reset, half a ClientHello in
    assert gone.get(timeout=T) is c.conn
    assert c.conn not in started
    assert c.conn not in srv.server._conns


def test_a_close_mid_frame_after_the_handshake_ends_the_connection(
    srv: TestServer,
    certs: tuple[Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told = looks(srv, monkeypatch)
    gone = departures(srv, monkeypatch)
    frame = login_frame("closer")
    with RawClient(srv.address) as c:
        c.sock = client_context(certs[1]).wrap_socket(c.sock, server_hostname="127.0.0.1")
        while not told.get(timeout=T).shaken:
            pass
        c.send_raw(frame[:9])
        conn = told.get(timeout=T).conn
        assert bytes(conn.unread) == frame[:9]  # decrypted, kept
        c.sock.close()  # its end, half a login in
    assert gone.get(timeout=T) is conn
    assert conn.username is None and conn not in srv.server._conns


def test_a_stop_closes_a_connection_still_in_its_handshake_at_once(
    srv: TestServer,
    certs: tuple[Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told = looks(srv, monkeypatch)
    c = Drip(srv.address, client_context(certs[1]), told)
    try:
        try:
            c.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        c.drip(c.outgoing.read()[:30])
        srv.stop()  # no bye can reach it, and none is waited for
        data = c.sock.recv(4096)
        while data:
            data = c.sock.recv(4096)
    finally:
        c.close()


def test_a_handshake_whose_flight_is_stuck_is_finished_by_its_thread(
    srv: TestServer,
    certs: tuple[Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its flight wants room in the send buffer (``Step.STUCK``), which the epoll here
    does not wait for: its thread takes the handshake on, from where it stopped."""
    started = thread_starts(monkeypatch)
    real = Outbox.handshake_tls
    stuck: list[Any] = []

    def full_once(outbox: Outbox) -> None:
        if not stuck:
            stuck.append(outbox)
            raise ssl.SSLWantWriteError()
        real(outbox)

    monkeypatch.setattr(Outbox, "handshake_tls", full_once)
    with RawClient(srv.address) as c:
        c.sock = client_context(certs[1]).wrap_socket(c.sock, server_hostname="127.0.0.1")
        c.login("stuck")
    (conn,) = started
    assert conn.outbox is stuck[0] and conn.handshaken


def test_a_half_sent_http_head_over_tls_holds_no_thread(
    certs: tuple[Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with quiet_server(web_port=0, login_slots=4, tls_cert=certs[0]) as srv:
        told = looks(srv, monkeypatch)
        started = thread_starts(monkeypatch)
        head = b"GET / HTTP/1.1\r\nHost: chat\r\n\r\n"
        raw = socket.create_connection(srv.web_address, timeout=T)
        with client_context(certs[1]).wrap_socket(raw, server_hostname="127.0.0.1") as slow:
            while not told.get(timeout=T).shaken:
                pass
            slow.sendall(head[:10])
            conn = told.get(timeout=T).conn
            slow.sendall(head[10:-2])  # every header line, but not the blank one
            assert told.get(timeout=T).conn is conn
            assert conn not in started and bytes(conn.unread) == head[:-2]
            slow.sendall(head[-2:])
            answer = slow.makefile("rb").readline()  # its thread answers
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert conn in started


def test_a_refused_tls_client_that_says_nothing_holds_up_no_accepts(
    tmp_path: Path,
    certs: tuple[Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over the cap, a TLS connection is closed before its handshake (docs/PROTOCOL.md
    §Timeouts): a server_full sent through TLS waited, on the thread that accepts, for
    a ClientHello that a silent client never sends, and nobody else got in."""
    ctx = client_context(certs[1])
    with quiet_server(
        tmp_path / "chat.db", login_slots=4, max_connections=1, tls_cert=certs[0]
    ) as srv:
        gone = departures(srv, monkeypatch)
        with RawClient(srv.address) as first:
            first.sock = ctx.wrap_socket(first.sock, server_hostname="127.0.0.1")
            first.login("first")
            for _ in range(2):  # each refused at once, silent as it is
                with socket.create_connection(srv.address, timeout=T) as silent:
                    assert silent.recv(4096) == b""
        assert gone.get(timeout=T).username == "first"
        with RawClient(srv.address) as after:  # its place, free again, is taken
            after.sock = ctx.wrap_socket(after.sock, server_hostname="127.0.0.1")
            after.login("after")
