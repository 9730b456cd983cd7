"""A hostile client against the first look's IRC line and TLS handshake
(chatroom_server.firstlook, tlsconn), the IRC line decoder (irc/parse.py), and a room's
member keys kept between changes (rooms.Members): lines cut where a decoder may trip, a
handshake's flight with the login in it, a client that never reads, a stop with many
handshakes half done, and members joining and parting under a burst of messages. Each
byte is handled once; nobody gets a message twice or after parting."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from queue import Queue
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatroom.testing import TestServer
from chatroom_server.irc.parse import LINE, TAGS, LineDecoder
from chatroom_server.irc.session import IrcSession
from tests.helpers import PASSWORD, RawClient, connect, quiet_server
from tests.server.test_early_login import login_frame
from tests.server.test_fanturns_server import _in_order, _Senders, _seqs
from tests.server.test_irc import Irc, irc_address
from tests.server.test_slowloris import rewatching, thread_starts
from tests.server.test_threadless_tls import client_context, looks
from tests.server.test_tls import certs  # noqa: F401 (a fixture)

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


# ---------------------------------------------------------------------- TLS's first look


@pytest.fixture
def tls_srv(tmp_path: Path, certs: tuple[Path, Path]) -> Iterator[TestServer]:  # noqa: F811
    with quiet_server(
        tmp_path / "chat.db",
        password_hash="load-test",
        login_slots=4,
        tls_cert=certs[0],
        max_per_ip=1000,
    ) as s:
        yield s


class BioClient:
    """A TLS client over memory BIOs on a blocking socket: what it sends goes out when
    the test says (``flush``), so a handshake's last flight and what follows it can go
    in one segment."""

    def __init__(self, address: tuple[str, int], ctx: ssl.SSLContext) -> None:
        self.sock = socket.create_connection(address, timeout=T)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def flush(self) -> None:
        self.sock.sendall(self.outgoing.read())

    def handshake_unflushed(self) -> None:
        """The handshake, up to its client's last flight, which stays unsent."""
        while True:
            try:
                self.tls.do_handshake()
                return
            except ssl.SSLWantReadError:
                self.flush()
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError("the server closed the connection") from None
                self.incoming.write(data)

    def frame(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            try:
                self.buf += self.tls.read(65536)
            except ssl.SSLWantReadError:
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError("the server closed the connection") from None
                self.incoming.write(data)
        line, _, self.buf = self.buf.partition(b"\n")
        frame: dict[str, Any] = json.loads(line)
        return frame

    def until(self, type_: str) -> dict[str, Any]:
        while (f := self.frame())["type"] != type_:
            pass
        return f


def pm(message: str, id: int) -> bytes:
    return json.dumps({"command": "pm", "message": message, "id": id}).encode() + b"\n"


def tls_raw(srv: TestServer, ca: Path, name: str) -> RawClient:
    c = RawClient(srv.address)
    c.sock = client_context(ca).wrap_socket(c.sock, server_hostname="127.0.0.1")
    c.login(name)
    return c


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_login_and_messages_sent_with_the_handshakes_last_flight_arrive_once(
    tls_srv: TestServer,
    certs: tuple[Path, Path],  # noqa: F811
    version: ssl.TLSVersion,
) -> None:
    """The client's Finished (TLS 1.3), or its first record after the handshake (1.2),
    and a login with two messages behind it, in one segment: decrypted on the admission
    thread with the handshake's end, each handled once, in order."""
    watcher = tls_raw(tls_srv, certs[1], "watcher")
    c = BioClient(tls_srv.address, client_context(certs[1], version))
    try:
        c.handshake_unflushed()
        c.tls.write(login_frame("flight") + pm("one", 1) + pm("two", 2))
        c.flush()  # Finished (1.3) and the records after it, at once
        assert c.until("login_ok")["username"] == "flight"
        assert [c.until("ack")["id"] for _ in range(2)] == [1, 2]
        assert watcher.until("broadcast")["message"] == "one"
        assert watcher.expect("broadcast")["message"] == "two"
        c.tls.write(pm("three", 3))
        c.flush()
        assert watcher.expect("broadcast")["message"] == "three"  # none twice before it
    finally:
        c.close()


def test_a_client_that_never_reads_after_its_handshake_stalls_nobody(
    tls_srv: TestServer,
    certs: tuple[Path, Path],  # noqa: F811
) -> None:
    """A client that logs in and then sends pings without reading a pong: its sends
    block, and the server's replies to it wait or it is dropped; other clients log in
    and talk meanwhile, and the server stops in bounded time."""
    c = BioClient(tls_srv.address, client_context(certs[1]))
    try:
        c.handshake_unflushed()
        c.tls.write(login_frame("deaf"))
        c.flush()
        c.sock.setblocking(False)
        pings = b"".join(
            json.dumps({"command": "ping", "id": i}).encode() + b"\n" for i in range(200)
        )
        pending = b""
        total = 0
        for _ in range(5000):  # ~30 MB of pings at most: past the kernel's buffers
            if not pending:
                c.tls.write(pings)
                pending = c.outgoing.read()
            try:
                sent = c.sock.send(pending)
            except BlockingIOError:
                break  # its sends block: the server's replies to it wait
            except (BrokenPipeError, ConnectionResetError):
                break  # dropped as a slow reader: also fine
            pending = pending[sent:]
            total += sent
        else:
            pytest.fail(f"{total} bytes of pings taken from a client that reads no pong")
        with (
            tls_raw(tls_srv, certs[1], "talker") as talker,
            tls_raw(tls_srv, certs[1], "listener") as listener,
        ):
            talker.send(command="pm", message="still here", id=1)
            talker.until("ack")
            assert listener.until("broadcast")["message"] == "still here"
    finally:
        c.close()


def test_a_stop_with_200_half_handshakes_is_bounded_and_starts_no_thread(
    tmp_path: Path,
    certs: tuple[Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    srv = quiet_server(tmp_path / "chat.db", login_slots=4, tls_cert=certs[0], max_per_ip=1000)
    s = srv.__enter__()
    stopped = False
    socks: list[socket.socket] = []
    try:
        told = looks(s, monkeypatch)
        started = thread_starts(monkeypatch)
        threads_before = threading.active_count()
        probe = BioClient(s.address, client_context(certs[1]))
        try:
            probe.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = probe.outgoing.read()
        probe.close()
        for _ in range(200):
            sock = socket.create_connection(s.address, timeout=T)
            socks.append(sock)
            sock.sendall(hello[:40])
        seen: set[int] = set()
        while len(seen) < 200:
            seen.add(id(told.get(timeout=T).conn))
        done = threading.Event()

        def stop() -> None:
            srv.__exit__(None, None, None)
            done.set()

        stopper = threading.Thread(target=stop)
        stopper.start()
        assert done.wait(20), "the stop hung with half-handshakes in flight"
        stopped = True
        stopper.join(T)
        assert not started  # not one reader thread for them
        assert threading.active_count() <= threads_before
        for sock in socks:
            data = sock.recv(4096)
            while data:
                data = sock.recv(4096)
    finally:
        for sock in socks:
            sock.close()
        if not stopped:
            srv.__exit__(None, None, None)


def closed(c: BioClient) -> None:
    """Whatever the server still sends, then its end (or a reset)."""
    try:
        while c.sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


def test_a_garbage_record_after_the_handshake_ends_only_that_connection(
    tls_srv: TestServer,
    certs: tuple[Path, Path],  # noqa: F811
) -> None:
    c = BioClient(tls_srv.address, client_context(certs[1]))
    try:
        c.handshake_unflushed()
        c.tls.write(login_frame("garbled")[:9])
        c.flush()
        c.sock.sendall(b"\x17\x03\x03\x00\x20" + b"\x5a" * 32)  # no key made this
        closed(c)
    finally:
        c.close()
    with tls_raw(tls_srv, certs[1], "garbled") as after:  # nothing of it logged in
        after.send(command="ping", id=1)
        after.until("pong")


def test_a_close_notify_mid_login_ends_the_connection_and_logs_nobody_in(
    tls_srv: TestServer,
    certs: tuple[Path, Path],  # noqa: F811
) -> None:
    c = BioClient(tls_srv.address, client_context(certs[1]))
    try:
        c.handshake_unflushed()
        c.tls.write(login_frame("notified")[:20])
        try:
            c.tls.unwrap()  # close_notify, half a login in
        except ssl.SSLWantReadError:
            pass
        c.flush()
        closed(c)
    finally:
        c.close()
    assert "notified" not in {x.username for x in list(tls_srv.server._conns)}
    with tls_raw(tls_srv, certs[1], "notified") as after:
        after.send(command="ping", id=1)
        after.until("pong")


# ------------------------------------------------- a room's members changing under messages

RACE = "#race"


def irc_member(srv: TestServer, nick: str, room: str | None = RACE) -> Irc:
    irc = Irc(irc_address(srv))
    irc.register(nick)
    if room is not None:
        irc.send(f"JOIN {room}")
        irc.until("366")
    return irc


def room_lines(lines: list[str], nick: str) -> list[str]:
    """``nick``'s JOIN, PART and QUIT lines and its messages to the room, as a member saw
    them, in order."""
    mine = [x for x in lines if x.startswith(f":{nick}!")]
    return [
        x.split(" ", 1)[1]
        for x in mine
        if x.endswith(f" {RACE}") or f" {RACE} :" in x or " QUIT " in x
    ]


def test_members_joining_parting_and_quitting_under_a_burst_see_each_message_once(
    tmp_path: Path,
) -> None:
    """Senders flood a room from threads while others join and part it in a loop and
    joiners say a word and quit right after their JOIN (its line perhaps still owed): a
    steady member gets every message once and in order, each JOIN before the joiner's
    message and the PART or QUIT after it;
    a member that parted gets nothing until it joins again, and nothing twice."""
    senders, churners, quitters, loops, burst = 2, 3, 5, 8, 60
    with quiet_server(tmp_path / "chat.db", irc_port=0, password_hash="load-test") as srv:
        steady = [irc_member(srv, f"m{i}") for i in range(2)]
        talk = [irc_member(srv, f"s{i}") for i in range(senders)]
        churn = [irc_member(srv, f"c{i}", room=None) for i in range(churners)]
        quit_ = [irc_member(srv, f"q{i}", room=None) for i in range(quitters)]
        go = threading.Barrier(senders + churners + quitters)
        errors: Queue[Exception] = Queue()
        churned: dict[str, list[str]] = {}

        def send(k: int) -> None:
            go.wait(T)
            for i in range(0, burst, 10):
                talk[k].send(*(f"PRIVMSG {RACE} :s{k} {n}" for n in range(i, i + 10)))

        def churn_loop(j: int) -> None:
            go.wait(T)
            irc, seen = churn[j], []
            for _ in range(loops):
                irc.send(f"JOIN {RACE}")
                while not (line := irc.line()).endswith(f"JOIN {RACE}"):
                    seen.append(line)
                seen.append(line)
                irc.send(f"PART {RACE}")
                while not (line := irc.line()).startswith(f":c{j}!") or " PART " not in line:
                    seen.append(line)
                seen.append(line)
            irc.send("PING :done")
            while not (line := irc.line()).endswith(":done"):
                seen.append(line)
            churned[f"c{j}"] = seen

        def join_and_quit(j: int) -> None:
            go.wait(T)
            quit_[j].send(f"JOIN {RACE}", f"PRIVMSG {RACE} :q{j} here", "QUIT :bye")
            quit_[j].closed()

        def guarded(target: Any, *args: Any) -> None:
            try:
                target(*args)
            except (OSError, AssertionError, ValueError, IndexError) as exc:  # to the test
                errors.put(exc)

        threads = [threading.Thread(target=guarded, args=(send, k)) for k in range(senders)]
        threads += [threading.Thread(target=guarded, args=(churn_loop, j)) for j in range(churners)]
        threads += [
            threading.Thread(target=guarded, args=(join_and_quit, j)) for j in range(quitters)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors.empty(), errors.get()
        assert not [t for t in threads if t.is_alive()]
        talk[0].send(f"PRIVMSG {RACE} :fence")  # after every change above: the last line
        for m, name in [(x, f"m{i}") for i, x in enumerate(steady)] + [(talk[1], "s1")]:
            lines = []
            while not (line := m.line()).endswith(f"PRIVMSG {RACE} :fence"):
                lines.append(line)
            for k in range(senders):
                if name == f"s{k}":
                    continue  # no echo of its own
                said = [
                    x.rsplit(" :", 1)[1]
                    for x in room_lines(lines, f"s{k}")
                    if x.startswith("PRIVMSG ") and not x.endswith(":fence")
                ]
                assert said == [f"s{k} {n}" for n in range(burst)], (name, k)
            for j in range(churners):
                kinds = [x.split(" ")[0] for x in room_lines(lines, f"c{j}")]
                assert kinds == ["JOIN", "PART"] * loops, (name, j, kinds)
            for j in range(quitters):
                kinds = [x.split(" ")[0] for x in room_lines(lines, f"q{j}")]
                # Its JOIN (owed, perhaps, when it quit) reaches everyone: it is a member
                # still (a QUIT is no PART). A QUIT line comes from the lobby's users
                # delta, and not at all if it joined and left within one window
                # (docs/PROTOCOL.md): never before its JOIN.
                assert kinds in (["JOIN", "PRIVMSG"], ["JOIN", "PRIVMSG", "QUIT"]), (j, kinds)
        for j in range(churners):
            inside, got = False, []
            for line in churned[f"c{j}"]:
                if line.endswith(f"JOIN {RACE}") and line.startswith(f":c{j}!"):
                    inside = True
                elif line.startswith(f":c{j}!") and f" PART {RACE}" in line:
                    inside = False
                elif f" PRIVMSG {RACE} :" in line or line.endswith(f" JOIN {RACE}"):
                    # Nothing while it is not a member: no message, and no JOIN line
                    # owed to it when it parted.
                    assert inside, (j, line)
                    if " JOIN " in line:
                        continue
                    got.append(line.rsplit(" :", 1)[1])
            assert len(got) == len(set(got)), j  # nothing twice
            for k in range(senders):
                nums = [int(x.split()[1]) for x in got if x.startswith(f"s{k} ")]
                assert nums == sorted(nums), (j, k)
        talk[0].send(f"NAMES {RACE}")
        listed: list[str] = []
        line = talk[0].until("353")
        while " 366 " not in line:
            listed += line.split(" :", 1)[1].split()
            line = talk[0].line()
        # Every member, online or not (docs/IRC.md): a QUIT is no PART.
        everyone = ["m0", "m1", *(f"q{j}" for j in range(quitters)), "s0", "s1"]
        assert sorted(n.lstrip("@+") for n in listed) == everyone


# ------------------------------------------------------------------------ IRC over TLS


def tls_irc_lines(c: BioClient, end: str) -> list[str]:
    """Decrypted IRC lines up to the first that ends with ``end``, that one included."""
    seen: list[str] = []
    while not (seen and seen[-1].endswith(end)):
        while b"\n" not in c.buf:
            try:
                c.buf += c.tls.read(65536)
            except ssl.SSLWantReadError:
                data = c.sock.recv(65536)
                if not data:
                    raise EOFError(seen) from None
                c.incoming.write(data)
        line, _, c.buf = c.buf.partition(b"\n")
        seen.append(line.rstrip(b"\r").decode())
    return seen


def kept(srv: TestServer, monkeypatch: pytest.MonkeyPatch) -> Queue[bytes]:
    """What each connection sent back into the epoll had kept then (``Conn.unread``)."""
    admission = srv.server._admission
    rewatch = admission.rewatch
    told: Queue[bytes] = Queue()

    def rewatched_then_told(conn: Any) -> None:
        unread = bytes(conn.unread)
        rewatch(conn)
        told.put(unread)

    monkeypatch.setattr(admission, "rewatch", rewatched_then_told)
    return told


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_an_irc_registration_over_tls_cut_across_records_and_looks(
    tmp_path: Path,
    certs: tuple[Path, Path],  # noqa: F811
    version: ssl.TLSVersion,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """IRC on its TLS port: the first line's start in the records with the handshake's
    last flight, its rest (inside a UTF-8 character) in a record after a look, then the
    registration and two messages: each line handled once, in order."""
    with quiet_server(
        tmp_path / "chat.db",
        password_hash="load-test",
        login_slots=4,
        tls_cert=certs[0],
        irc_tls_port=0,
    ) as s:
        watcher = tls_raw(s, certs[1], "watcher")
        told = kept(s, monkeypatch)
        c = BioClient(s.server.irc_addresses[0], client_context(certs[1], version))
        try:
            c.handshake_unflushed()
            data = (
                "USER u 0 * :Ré Ñame\r\n"
                f"PASS :{PASSWORD}\r\nNICK tlsirc\r\n"
                "PRIVMSG #lobby :one\r\nPRIVMSG #lobby :two\r\n"
            ).encode()
            cut = data.index("é".encode()) + 1
            c.tls.write(data[:cut])
            c.flush()  # the handshake's end (1.3) and half the first line
            while told.get(timeout=T) != data[:cut]:
                pass  # until a look has kept the half line, decrypted
            c.tls.write(data[cut:])
            c.flush()
            assert watcher.until("broadcast")["message"] == "one"
            assert watcher.expect("broadcast")["message"] == "two"
            c.tls.write(b"WHOIS tlsirc\r\n")
            c.flush()
            seen = tls_irc_lines(c, " :End of /WHOIS list")
            assert any(" 001 tlsirc " in x for x in seen)
            assert next(x for x in seen if " 311 " in x).endswith(":Ré Ñame")
            c.tls.write(b"PRIVMSG #lobby :three\r\n")
            c.flush()
            assert watcher.expect("broadcast")["message"] == "three"
        finally:
            c.close()
            watcher.close()


def test_an_irc_first_line_of_exactly_the_limit_over_tls_cut_before_its_lf(
    tmp_path: Path,
    certs: tuple[Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over TLS the first look reads records until the line is past the limit: a line
    of exactly the limit with its CR is, and goes to its thread, which takes it whole
    once its LF comes in a later record."""
    with quiet_server(
        tmp_path / "chat.db",
        password_hash="load-test",
        login_slots=4,
        tls_cert=certs[0],
        irc_tls_port=0,
    ) as s:
        reads = fed(monkeypatch)
        c = BioClient(s.server.irc_addresses[0], client_context(certs[1]))
        try:
            c.handshake_unflushed()
            head, tail = "NICK", " tlslimit"
            line = (head + " " * (LIMIT - len(head) - len(tail)) + tail).encode()
            c.tls.write(line + b"\r")
            c.flush()
            got = 0
            while got < len(line) + 1:
                got += len(reads.get(timeout=T))
            c.tls.write(f"\nPASS :{PASSWORD}\r\nUSER u 0 * :Real\r\nPING :end\r\n".encode())
            c.flush()
            seen = tls_irc_lines(c, "PONG chatroom :end")
            assert any(" 001 tlslimit " in x for x in seen)
            assert not [x for x in seen if " 417 " in x]
        finally:
            c.close()


def test_a_tls_login_in_one_byte_records_is_kept_whole_and_handled_once(
    tls_srv: TestServer,
    certs: tuple[Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After its handshake, a login and a message sent a byte a record, each record
    looked at on its own: every byte decrypted and kept once, the login taken whole."""
    watcher = tls_raw(tls_srv, certs[1], "watcher")
    told = kept(tls_srv, monkeypatch)
    c = BioClient(tls_srv.address, client_context(certs[1]))
    try:
        c.handshake_unflushed()
        c.flush()
        frame = login_frame("byterec")
        for i in range(len(frame) - 1):
            c.tls.write(frame[i : i + 1])
            c.flush()
            while (got := told.get(timeout=T)) == b"":
                pass  # a look during the handshake: nothing kept yet
            assert got == frame[: i + 1]
        c.tls.write(frame[-1:] + pm("after", 1))
        c.flush()
        assert c.until("login_ok")["username"] == "byterec"
        assert c.until("ack")["id"] == 1
        assert watcher.until("broadcast")["message"] == "after"
        c.tls.write(pm("next", 2))
        c.flush()
        assert watcher.expect("broadcast")["message"] == "next"
    finally:
        c.close()
        watcher.close()


def test_a_guest_renaming_itself_under_a_burst_gets_each_message_once(
    tmp_path: Path,
) -> None:
    """A guest room's member keys change with a guest's NICK (RoomBook.rename): a guest
    renaming itself again and again while another floods the room gets every message
    once and in order, and its own messages reach the others under its newest nick."""
    burst, renames = 120, 15
    with quiet_server(tmp_path / "chat.db", irc_port=0, irc_guests=True) as srv:
        guests = []
        for nick in ("flooder", "renamer", "steady"):
            g = Irc(irc_address(srv))
            g.send(f"NICK {nick}", "USER u 0 * :R")
            g.until("376")
            g.send("JOIN #gr")
            g.until("366")
            guests.append(g)
        flooder, renamer, steady = guests
        errors: Queue[Exception] = Queue()

        def flood() -> None:
            try:
                for i in range(0, burst, 10):
                    flooder.send(*(f"PRIVMSG #gr :f {n}" for n in range(i, i + 10)))
            except OSError as exc:
                errors.put(exc)

        t = threading.Thread(target=flood)
        t.start()
        got: list[int] = []
        nick = "renamer"
        for r in range(renames):
            new = f"rn{r}"
            renamer.send(f"NICK {new}")
            while not (line := renamer.line()).startswith(f":{nick}!") or " NICK " not in line:
                if " PRIVMSG #gr :f " in line:
                    got.append(int(line.rsplit(" ", 1)[1]))
            nick = new
            renamer.send(f"PRIVMSG #gr :from {nick}")
        renamer.send("PING :said")  # answered once its last message is handled
        while not (line := renamer.line()).endswith(" :said"):
            if " PRIVMSG #gr :f " in line:
                got.append(int(line.rsplit(" ", 1)[1]))
        t.join(T)
        assert errors.empty(), errors.get()
        flooder.send("PRIVMSG #gr :fence")
        while not (line := renamer.line()).endswith(" :fence"):
            if " PRIVMSG #gr :f " in line:
                got.append(int(line.rsplit(" ", 1)[1]))
        assert got == list(range(burst))
        said = []
        while not (line := steady.line()).endswith(" :fence"):
            if " PRIVMSG #gr :from " in line:
                said.append(line)
        assert said == [f":rn{r}!rn{r}@chatroom PRIVMSG #gr :from rn{r}" for r in range(renames)], (
            said
        )


def v2(srv: TestServer, name: str) -> RawClient:
    c = RawClient(srv.address)
    c.send(command="login", username=name, password=PASSWORD, features=["rooms"])
    c.expect("login_ok")
    return c


def test_a_kick_a_ban_and_a_mute_mid_burst_cut_each_at_its_seq(tmp_path: Path) -> None:
    """A room's operator kicks one member, bans another and mutes and unmutes a third
    while a member floods it: the kicked and the banned get every message stored before
    their event and nothing after it; the muted one reads on, is refused while muted and
    speaks again after; a watcher gets every message once, in order."""
    with quiet_server(tmp_path / "chat.db") as srv:
        names = ["owner", "flooder", "kicked", "banned", "muted", "watcher"]
        c = {n: v2(srv, n) for n in names}
        for n in names:
            c[n].send(command="join", room="mod", id="j")
            c[n].until("room_info", id="j")
        c["owner"].send(command="pm", room="mod", message="joined", id="all")
        c["owner"].until("ack", id="all")
        for n in names[1:]:
            c[n].until("broadcast", message="joined")
        flood = _Senders([c["flooder"]], 150, rooms=("mod",))
        seqs: dict[str, int] = {}
        muted_seen: list[dict[str, Any]] = []
        with flood:
            assert flood.started.wait(T)
            for action, who in (("kick", "kicked"), ("ban", "banned"), ("mute", "muted")):
                c["owner"].send(command=action, room="mod", user=who, id=action)
                seqs[action] = c["owner"].until("ack", id=action)["seq"]
            c["muted"].send(command="pm", room="mod", message="hush", id="m1")
            while (f := c["muted"].recv()).get("id") != "m1":
                muted_seen.append(f)
            assert f["type"] == "error" and f["code"] == "muted", f
            c["owner"].send(command="unmute", room="mod", user="muted", id="un")
            c["owner"].until("ack", id="un")
        acked = flood.all_acked()
        c["muted"].send(command="pm", room="mod", message="back", id="m2")
        while (f := c["muted"].recv()).get("id") != "m2":
            muted_seen.append(f)
        assert f["type"] == "ack", f
        c["owner"].send(command="pm", room="mod", message="end", id="end")
        c["owner"].until("ack", id="end")
        for who, action in (("kicked", "kick"), ("banned", "ban")):
            frames = []
            while not ((f := c[who].recv())["type"] == "room_event" and f["event"] == action):
                frames.append(f)
            assert f["seq"] == seqs[action]
            _in_order(frames)
            assert _seqs(frames, "mod") == [s for s in acked if s < seqs[action]], who
            c[who].send(command="ping", id="p")  # nothing of the room came meanwhile
            after = []
            while (f := c[who].recv())["type"] != "pong":
                after.append(f)
            assert not [x for x in after if x.get("room") == "mod"], (who, after)
        for who in ("watcher", "muted"):
            frames = muted_seen if who == "muted" else []
            while (f := c[who].recv()).get("message") != "end":
                frames.append(f)
            _in_order(frames)
            assert [s for s in _seqs(frames, "mod") if s in set(acked)] == acked, who
        for x in c.values():
            x.close()


@given(
    st.lists(
        st.tuples(st.integers(min_value=7, max_value=13), st.sampled_from([b"\r\n", b"\n"])),
        max_size=8,
    ),
    st.lists(st.integers(min_value=0, max_value=120), max_size=6),
)
def test_decoder_lines_are_the_same_however_the_reads_cut_them(
    lines: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    """Lines of any length about the limit, each ended by CRLF or LF, fed whole or cut
    at any points (a CRLF cut in two among them): the same lines, the same refusals."""
    stream = b"".join(b"x" * n + end for n, end in lines)
    whole = LineDecoder(limit=10).feed(stream)
    for point in range(len(stream) + 1):  # every single cut
        two = LineDecoder(limit=10)
        assert two.feed(stream[:point]) + two.feed(stream[point:]) == whole, point
    cut, parts, at = LineDecoder(limit=10), [], 0
    for point in sorted(min(c, len(stream)) for c in cuts):
        parts += cut.feed(stream[at:point])
        at = point
    parts += cut.feed(stream[at:])
    assert parts == whole
    assert whole == [None if n > 10 else b"x" * n for n, _ in lines]


def test_a_login_and_far_more_than_a_frame_behind_it_with_the_last_flight(
    tls_srv: TestServer,
    certs: tuple[Path, Path],  # noqa: F811
) -> None:
    """A login and 400 messages (some 400 KB, past ``max_frame``) right behind the
    handshake: the first look reads records only until past the limit, the rest stays
    decrypted in OpenSSL or on the socket for its thread; each message once, in order."""
    watcher = tls_raw(tls_srv, certs[1], "watcher")
    c = BioClient(tls_srv.address, client_context(certs[1]))
    try:
        c.handshake_unflushed()
        pad = "p" * 1000
        n = 400
        c.tls.write(login_frame("bulk") + b"".join(pm(f"{i} {pad}", i) for i in range(n)))
        c.sock.settimeout(T)
        out = c.outgoing.read()
        writer = threading.Thread(target=c.sock.sendall, args=(out,))
        writer.start()  # its acks are read below as it sends
        assert c.until("login_ok")["username"] == "bulk"
        acks = [c.until("ack")["id"] for _ in range(n)]
        writer.join(T)
        assert acks == list(range(n))
        got = [int(watcher.until("broadcast")["message"].split(" ", 1)[0]) for _ in range(n)]
        assert got == list(range(n))
        c.tls.write(pm("last", n))
        c.flush()
        assert watcher.expect("broadcast")["message"] == "last"  # nothing twice before it
    finally:
        c.close()
        watcher.close()
