"""A hostile client against a connection's first look (chatroom_server.firstlook) and an
early login (chatroom_server.earlylogin): a login and the commands pipelined after it
split at every byte, a first frame of exactly ``max_frame`` bytes and one byte over it
(docs/PROTOCOL.md §Framing), a half frame whose client then hangs up or resets, a
WebSocket upgrade sent in parts, and the IRC port, which the first look leaves alone.
Whatever the split, every command is handled once, in order, and nothing is lost."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from tests.helpers import PASSWORD, RawClient, quiet_server
from tests.server.test_early_login import early, login_frame, registered
from tests.server.test_irc import Irc, irc_address
from tests.server.test_lazy_users import LAZY, follow, lazy_login
from tests.server.test_slowloris import rewatching, thread_starts


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Any]:
    with quiet_server(tmp_path / "chat.db", password_hash="load-test", login_slots=4) as s:
        yield s


def pm(message: str, id: int) -> bytes:
    return json.dumps({"command": "pm", "message": message, "id": id}).encode() + b"\n"


def no_more_broadcasts(witness: RawClient, ping: int) -> None:
    """Nothing broadcast reaches ``witness`` before the pong to a ping it sends now."""
    witness.send(command="ping", id=ping)
    seen = []
    while (f := witness.recv())["type"] != "pong":
        seen.append(f)
    assert not [f for f in seen if f.get("type") == "broadcast"], seen


def test_a_login_and_two_messages_split_at_every_byte_are_each_handled_once_in_order(
    srv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered(srv, "splitter")
    told = rewatching(srv, monkeypatch)
    login = login_frame("splitter", id="in")
    size = len(login + pm("m0000a", 1) + pm("m0000b", 2))
    with RawClient(srv.address) as witness:
        witness.login("witness")
        for at in range(1, size):
            a, b = f"m{at:04d}a", f"m{at:04d}b"
            blob = login + pm(a, 1) + pm(b, 2)
            assert len(blob) == size
            with RawClient(srv.address) as c:
                c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                c.send_raw(blob[:at])
                if at < len(login):
                    # Half a login: the first look must have seen it alone, kept it,
                    # and put the connection back in the epoll.
                    assert bytes(told.get(timeout=10).unread) == blob[:at]
                else:
                    # The whole login (and perhaps part of a message): login_ok first,
                    # so that the rest surely comes in a later read.
                    c.expect("login_ok", username="splitter", id="in")
                c.send_raw(blob[at:])
                if at < len(login):
                    c.expect("login_ok", username="splitter", id="in")
                acks = [c.until("ack")["id"] for _ in range(2)]
                assert acks == [1, 2], at
                got = [witness.until("broadcast") for _ in range(2)]
                assert [(m["message"], m["from"]) for m in got] == [
                    (a, "splitter"),
                    (b, "splitter"),
                ], at
                assert got[0]["seq"] < got[1]["seq"]
                c.send(command="ping", id=3)
                c.until("pong", id=3)  # nothing more for it, e.g. a second login_ok
        no_more_broadcasts(witness, 1)
    assert told.empty()


def padded_login(name: str, size: int) -> bytes:
    """A login frame of exactly ``size`` bytes without its newline (JSON's whitespace)."""
    frame = json.dumps({"command": "login", "username": name, "password": "p" * 12})
    return (frame[:-1] + " " * (size - len(frame)) + "}").encode()


def test_a_first_frame_of_exactly_max_frame_in_parts_logs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with quiet_server(
        tmp_path / "chat.db", password_hash="load-test", login_slots=4, max_frame=1024
    ) as srv:
        registered_frame = padded_login("exact", 1024)
        assert len(registered_frame) == 1024
        told = rewatching(srv, monkeypatch)
        with RawClient(srv.address) as c:
            c.send_raw(registered_frame[:600])
            assert bytes(told.get(timeout=10).unread) == registered_frame[:600]
            c.send_raw(registered_frame[600:])  # max_frame bytes, not one over: held
            assert bytes(told.get(timeout=10).unread) == registered_frame
            c.send_raw(b"\n")
            c.expect("login_ok", username="exact", new_user=True)
        before = early(srv)
        with RawClient(srv.address) as c:  # the same, returning, in one packet
            c.send_raw(registered_frame + b"\n")
            c.expect("login_ok", username="exact", new_user=False)
        assert early(srv) == before + 1


@pytest.mark.parametrize("newline", [b"", b"\n"])
def test_a_first_frame_one_byte_over_max_frame_in_parts_is_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, newline: bytes
) -> None:
    with quiet_server(
        tmp_path / "chat.db", password_hash="load-test", login_slots=4, max_frame=1024
    ) as srv:
        registered(srv, "over")
        frame = padded_login("over", 1025)
        told = rewatching(srv, monkeypatch)
        before = early(srv)
        with RawClient(srv.address) as c:
            c.send_raw(frame[:1024])
            assert bytes(told.get(timeout=10).unread) == frame[:1024]
            c.send_raw(frame[1024:] + newline)
            error = c.expect_error("too_large")
            assert "1024" in error["message"]
            assert c.wait_closed() == []
        assert early(srv) == before  # never logged in, on any thread


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_half_frame_then_a_hang_up_ends_the_connection_and_nothing_else(
    srv: Any, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    registered(srv, "quitter")
    told = rewatching(srv, monkeypatch)
    started = thread_starts(monkeypatch)
    listeners = srv.server._listeners
    crashes = listeners.handler_crashes
    with RawClient(srv.address) as witness:
        witness.login("witness")
        c = RawClient(srv.address)
        c.send_raw(login_frame("quitter")[:20])
        conn = told.get(timeout=10)
        if how == "reset":
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        # Its thread (the first look gives the end to it) finds the end, logs nobody in.
        assert conn.thread.join(timeout=10)
        assert conn in started and conn.username is None
        assert conn not in list(srv.server._admission._watched.values())
        # The half login never became a session: the witness hears of nobody.
        witness.send(command="ping", id=1)
        while (f := witness.recv())["type"] != "pong":
            assert f.get("joined") != "quitter", f
        with RawClient(srv.address) as again:  # and the server takes logins as ever
            again.send_raw(login_frame("quitter"))
            again.expect("login_ok", username="quitter", new_user=False)
    assert listeners.handler_crashes == crashes


def room_frames(c: RawClient, until_id: str) -> list[dict[str, Any]]:
    """Every frame ``c`` gets about room ``r`` (messages, acks, events) until the pong
    to a ping sent now with ``until_id``: all that was offered to it before the ping."""
    c.send(command="ping", id=until_id)
    got = []
    while (f := c.recv())["type"] != "pong" or f.get("id") != until_id:
        if f.get("room") == "r":
            got.append(f)
    return got


def test_room_messages_alone_and_together_reach_each_member_once_in_order() -> None:
    """A message alone in its pass is sent to each member directly (fansend.py
    ``Sender._alone``), several in one pass are gathered: either way each member gets
    every message of the room once, in seq order; one who parts gets every message
    before its part and none after; one kicked, every one before the kick."""
    n = 40
    with quiet_server(rate_limit=None) as srv:
        members = {}
        for name in ("alice", "bob", "carol", "dave", "erin"):
            c = RawClient(srv.address)
            c.send(command="login", username=name, password=PASSWORD, features=["rooms"])
            c.expect("login_ok")
            c.send(command="join", room="r", id="j")
            c.until("room_info", id="j")
            members[name] = c
        alice, bob, carol = (members[x] for x in ("alice", "bob", "carol"))
        for c in members.values():
            room_frames(c, "joined")  # the joins' events, read
        # Alone: one message at a time, each acked before the next is sent.
        alone: list[int] = []
        kept: dict[str, list[dict[str, Any]]] = {"alice": [], "bob": []}
        for i in range(n):
            name = ("alice", "bob")[i % 2]
            members[name].send(command="pm", room="r", message=f"alone {i}", id=f"a{i}")
            while (f := members[name].recv()).get("id") != f"a{i}":
                kept[name].append(f)  # the other's message, read while waiting
            kept[name].append(f)
            alone.append(f["seq"])
        # Together: two senders pipelining, carol parting and dave kicked meanwhile.
        a_blob = b"".join(
            json.dumps({"command": "pm", "room": "r", "message": f"A{i}", "id": f"A{i}"}).encode()
            + b"\n"
            + (b'{"command":"kick","room":"r","user":"dave","id":"kick"}\n' if i == n // 2 else b"")
            for i in range(n)
        )
        b_blob = b"".join(
            json.dumps({"command": "pm", "room": "r", "message": f"B{i}", "id": f"B{i}"}).encode()
            + b"\n"
            for i in range(n)
        )
        alice.send_raw(a_blob)
        bob.send_raw(b_blob)
        carol.send(command="part", room="r", id="part")
        # Every sender's last ack first: a message is offered to every member before its
        # ack (§pm), so a ping sent after them all is answered after them all.
        for name, last in (("alice", f"A{n - 1}"), ("bob", f"B{n - 1}"), ("carol", "part")):
            frames = kept.setdefault(name, [])
            while (f := members[name].recv()).get("id") != last:
                frames.append(f)
            frames.append(f)
        seen = {name: kept.get(name, []) + room_frames(c, "done") for name, c in members.items()}
        acks = {
            f["id"]: f["seq"]
            for name in ("alice", "bob", "carol")
            for f in seen[name]
            if f["type"] == "ack"
        }
        mine = {"alice": "A", "bob": "B"}
        every = sorted(alone + [acks[f"{w}{i}"] for w in "AB" for i in range(n)])
        assert len(set(every)) == 3 * n
        for name, frames in seen.items():
            # Everyone else's messages come as broadcasts, in seq order, each once; its
            # own as acks, which may come before a lower seq's broadcast (the SDK's
            # cursor allows for it: chatroom._seqs), and never as a broadcast too.
            told = [f["seq"] for f in frames if f["type"] == "broadcast"]
            assert told == sorted(set(told)), name
            own = [
                f["seq"]
                for f in frames
                if f["type"] == "ack" and str(f["id"])[:1] in ("a", mine.get(name, "-"))
            ]
            assert not set(told) & set(own), name
            got = sorted(told + own)
            if name == "carol":
                end = acks["part"]
            elif name == "dave":
                end = acks["kick"]
                assert [f["event"] for f in frames if f["type"] == "room_event"][-1:] == ["kick"]
            else:
                end = every[-1] + 1
            want = [s for s in every if s < end]
            assert got == want, (name, len(got), len(want))
        for name in ("alice", "bob"):  # each sender's messages in the order it sent them
            order = [
                f["message"] for f in seen["erin"] if f["type"] == "broadcast" and f["from"] == name
            ]
            w = mine[name]
            assert order == [f"alone {i}" for i in range(n) if (i % 2) == (name == "bob")] + [
                f"{w}{i}" for i in range(n)
            ]
        for c in members.values():
            c.close()


def test_the_irc_port_keeps_a_first_line_back_and_takes_a_registration_a_byte_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first look keeps an IRC client's first line back in the epoll until it is
    whole (firstlook.py), then leaves the connection to its thread: its lines, sent a
    byte at a time, register as ever (tests/server/test_slowloris_irc.py has it a byte
    per look)."""
    with quiet_server(irc_port=0, login_slots=4, password_hash="load-test") as srv:
        told = rewatching(srv, monkeypatch)
        irc = Irc(irc_address(srv))
        irc.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lines = f"PASS :{PASSWORD}\r\nNICK dripper\r\nUSER u 0 * :Drip\r\n".encode()
        irc.sock.sendall(lines[:1])
        kept = told.get(timeout=10)  # its first line waits in the epoll
        for i in range(1, len(lines)):
            irc.sock.sendall(lines[i : i + 1])
        assert " 001 dripper " in irc.until("001")
        irc.until("366")
        with RawClient(srv.address) as c:  # and the JSON port's first look goes on
            c.login("json")
        irc.close()
        assert kept.irc is not None and kept.irc.nick == "dripper"


def masked_text(text: str) -> bytes:
    """A client's WebSocket text frame (RFC 6455 §5.2), masked, under 126 bytes."""
    data = text.encode()
    assert len(data) < 126
    key = b"\x01\x02\x03\x04"
    return bytes([0x81, 0x80 | len(data)]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(data))


def ws_login(address: tuple[str, int], at: int, told: Any, name: str, pipelined: bool) -> list[Any]:
    """Send a WebSocket upgrade's head split at ``at`` (the first part kept back in the
    epoll: ``told``), then a login: once accepted, or (``pipelined``, as a hostile
    client may, RFC 6455 §4.1 aside) in one packet with the head's rest; the events
    wsproto reads back."""
    ws = WSConnection(ConnectionType.CLIENT)
    sent = ws.send(Request(host="{}:{}".format(*address), target="/ws"))
    events: list[Any] = []
    with socket.create_connection(address, timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(sent[:at])
        assert bytes(told.get(timeout=10).unread) == sent[:at]
        login = json.dumps({"command": "login", "username": name, "password": PASSWORD})
        if pipelined:
            s.sendall(sent[at:] + masked_text(login))
            login = ""
        else:
            s.sendall(sent[at:])
        while not any(isinstance(e, TextMessage) for e in events):
            if any(isinstance(e, AcceptConnection) for e in events) and login:
                s.sendall(masked_text(login))
                login = ""
            data = s.recv(65536)
            assert data, events
            ws.receive_data(data)
            events += list(ws.events())
    return events


def test_a_websocket_upgrade_split_at_every_byte_is_accepted_and_logs_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with quiet_server(web_port=0, login_slots=4, password_hash="load-test") as srv:
        told = rewatching(srv, monkeypatch)
        sample = WSConnection(ConnectionType.CLIENT).send(
            Request(host="{}:{}".format(*srv.web_address), target="/ws")
        )
        # Every split, up to the last byte alone (the key aside, every head is the same).
        for at in range(1, len(sample)):
            for pipelined in (False, True):
                name = f"ws{at}{'p' if pipelined else ''}"
                events = ws_login(srv.web_address, at, told, name, pipelined)
                text = [e for e in events if isinstance(e, TextMessage)]
                frame = json.loads(text[0].data)
                assert (frame["type"], frame["username"]) == ("login_ok", name), at
        assert told.empty()


def test_a_lazy_client_through_arrivals_and_departures_counts_right_then_lists_right() -> None:
    """docs/PROTOCOL.md §lazy_users (roster.py): through a churn of arrivals and
    departures a lazy client's deltas carry the count alone, and it ends right; the
    reply to ``users`` is the list after exactly the deltas before it, and the deltas
    after it, names and all, keep it right through a second churn."""
    with quiet_server(password_hash="load-test", users_window=0.02) as srv, ExitStack() as stack:
        observer = stack.enter_context(RawClient(srv.address))
        lazy_login(observer, "observer", 1)
        online: dict[str, RawClient] = {}
        for i in range(30):
            c = stack.enter_context(RawClient(srv.address))
            c.login(f"churn{i:02d}")
            online[f"churn{i:02d}"] = c
            if i % 3 == 2:  # every third leaves again at once, the one before it
                online.pop(f"churn{i - 1:02d}").close()
        truth = {"observer", *online}
        count = 1
        while count != len(truth):
            f = observer.expect("users_delta")
            assert set(f) == {"type", "count"}, f  # not asked: the count alone
            count = f["count"]
        observer.send(command="users", id="list")
        while (f := observer.recv())["type"] == "users_delta":
            assert set(f) == {"type", "count"}, f
            count = f["count"]
        assert (f["type"], f["id"]) == ("users", "list"), f
        users = set(f["users"])
        assert len(users) == count, (users, count)
        follow(observer, users, truth)
        # A second churn: the list it has now is kept right by the names in the deltas.
        for name in list(online)[:10]:
            online.pop(name).close()
        for i in range(5):
            c = stack.enter_context(RawClient(srv.address))
            c.send(command="login", username=f"late{i}", password=PASSWORD, features=LAZY)
            c.expect("login_ok", username=f"late{i}")
            online[f"late{i}"] = c
        follow(observer, users, {"observer", *online})
        observer.send(command="users", id="again")  # nobody comes or goes now: no delta
        assert set(observer.expect("users", id="again")["users"]) == users


@pytest.mark.parametrize("first", [b"\n", b"\r\n", b" \r\n"])
def test_a_blank_line_before_a_login_is_skipped_on_either_thread(
    srv: Any, monkeypatch: pytest.MonkeyPatch, first: bytes
) -> None:
    """Blank lines are ignored (docs/PROTOCOL.md §Framing), a first one too: whether
    the login behind it runs on the admission thread or its own, it runs once."""
    registered(srv, "typist")
    told = rewatching(srv, monkeypatch)
    with RawClient(srv.address) as c:
        c.send_raw(first + login_frame("typist")[:9])
        c.send_raw(login_frame("typist")[9:] + pm("after a blank", 1))
        c.expect("login_ok", username="typist")
        c.send(command="ping", id=2)
        seen = []
        while (f := c.recv())["type"] != "pong":
            if f["type"] != "users":  # the joined push, in its window
                seen.append(f)
        assert seen == [{"type": "ack", "command": "pm", "id": 1, "seq": seen[0]["seq"]}], seen
    assert told.empty()  # a whole line came first: nothing to keep back


def test_a_stop_closes_a_connection_kept_with_half_a_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with quiet_server(tmp_path / "chat.db", password_hash="load-test", login_slots=4) as srv:
        told = rewatching(srv, monkeypatch)
        with socket.create_connection(srv.address, timeout=10) as slow:
            slow.sendall(login_frame("halfway")[:12])
            told.get(timeout=10)
            srv.stop()
            got = slow.makefile("rb").read()  # everything until the server closes
        assert got == b'{"type":"bye","reason":"server_shutdown"}\n'


def test_a_tls_client_hello_a_byte_at_a_time_waits_threadless_and_logs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first look runs a TLS connection's handshake a step at a time (firstlook.py,
    tlsconn.py): its ClientHello sent a byte at a time goes back into the epoll until
    it is whole, the handshake completes, and the login through it is answered
    (tests/server/test_threadless_tls.py has it a byte per look)."""
    import ssl

    import trustme

    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with quiet_server(
        tmp_path / "chat.db", tls_cert=pem, password_hash="load-test", login_slots=4
    ) as srv:
        assert srv.server._listeners.look is not None  # the first look is on
        told = rewatching(srv, monkeypatch)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        with socket.create_connection(srv.address, timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with pytest.raises(ssl.SSLWantReadError):
                tls.do_handshake()
            hello = outgoing.read()
            for i in range(len(hello)):
                s.sendall(hello[i : i + 1])
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    s.sendall(outgoing.read())
                    data = s.recv(65536)
                    assert data, "closed during the handshake"
                    incoming.write(data)
            tls.write(login_frame("secure"))
            s.sendall(outgoing.read())
            got = b""
            while b"\n" not in got:
                try:
                    got += tls.read(65536)
                except ssl.SSLWantReadError:
                    data = s.recv(65536)
                    assert data, "closed before login_ok"
                    incoming.write(data)
        frame = json.loads(got.split(b"\n")[0])
        assert (frame["type"], frame["username"]) == ("login_ok", "secure")
        looked = {told.get(timeout=10)}  # its handshake waited in the epoll, at least once
        while not told.empty():
            looked.add(told.get(timeout=10))
        assert len(looked) == 1 and looked.pop().handshaken


def test_a_room_message_alone_reaches_its_irc_and_json_members_once_in_order() -> None:
    """A small room's message alone in its pass (fansend.py ``Sender._alone``) goes to
    every member, an IRC one (a channel) as well as a rooms client: each gets each
    message once, in the order they were stored."""
    n = 30
    with quiet_server(irc_port=0, rate_limit=None) as srv:
        irc = Irc(irc_address(srv))
        irc.register("ircy")
        irc.send("JOIN #r")
        irc.until("366")
        members = []
        for name in ("alice", "bob"):
            c = RawClient(srv.address)
            c.send(command="login", username=name, password=PASSWORD, features=["rooms"])
            c.expect("login_ok")
            c.send(command="join", room="r", id="j")
            c.until("room_info", id="j")
            members.append(c)
        alice, bob = members
        room_frames(bob, "joined")
        for i in range(n):  # each acked before the next: alone in its pass
            alice.send(command="pm", room="r", message=f"alone {i}", id=i)
            alice.until("ack", id=i)
        said = [f"alone {i}" for i in range(n)]
        got = [f["message"] for f in room_frames(bob, "done") if f["type"] == "broadcast"]
        assert got == said
        irc.send("PING :done")
        lines = []
        while "PONG" not in (line := irc.line()):
            if " PRIVMSG #r " in line:
                lines.append(line.split(" :", 1)[1])
        assert lines == said
        for c in members:
            c.close()
        irc.close()


def test_an_early_lazy_login_with_users_in_its_packet_gets_a_list_the_deltas_fit(
    srv: Any,
) -> None:
    """A lazy_users login on the admission thread (FirstLook.first) with a ``users``
    in the same packet, the rest of it arriving later: login_ok has the count, the
    reply the list after the deltas before it (docs/PROTOCOL.md §lazy_users), and the
    deltas after it name who comes and goes."""
    registered(srv, "eager", "other")
    with RawClient(srv.address) as witness, RawClient(srv.address) as c:
        witness.login("witness")
        before = early(srv)
        users_cmd = b'{"command":"users","id":"list"}\n'
        c.send_raw(login_frame("eager", features=LAZY) + users_cmd[:10])
        ok = c.expect("login_ok", username="eager", features=LAZY)
        assert "users" not in ok and early(srv) == before + 1
        count, deltas = ok["count"], 0
        c.send_raw(users_cmd[10:])
        while (f := c.recv())["type"] == "users_delta":
            assert set(f) == {"type", "count"}, f
            count, deltas = f["count"], deltas + 1
        assert (f["type"], f["id"]) == ("users", "list"), f
        users = set(f["users"])
        if deltas:  # the list after exactly the deltas before it
            assert len(users) == count, (users, count)
        else:  # as login_ok's: its own arrival may still be to come (§users_delta)
            assert len(users | {"eager"}) == count, (users, count)
        follow(c, users, {"witness", "eager"})
        with RawClient(srv.address) as other:
            other.login("other")
            follow(c, users, {"witness", "eager", "other"})
        follow(c, users, {"witness", "eager"})
