"""The web port (docs/WEB.md): the client's files over HTTP, and the JSON protocol over
WebSocket at /ws with the TCP port's limits, against real sockets (wsproto as the client)."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest
import trustme
from wsproto.events import Ping, Pong, TextMessage

from chatroom.testing import TestServer
from chatroom_server.__main__ import build_parser, config_from_args
from tests.helpers import PASSWORD, RawClient, WsClient, connect, quiet_server


@pytest.fixture
def web() -> Iterator[TestServer]:
    with quiet_server(web_port=0) as srv:
        yield srv


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes


def get(srv: TestServer, path: str, method: str = "GET") -> Reply:
    c = http.client.HTTPConnection(*srv.web_address, timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return Reply(r.status, r.headers, r.read())
    finally:
        c.close()


def test_the_page_and_its_files_are_served_with_a_strict_policy(web: TestServer) -> None:
    r = get(web, "/")
    assert r.status == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert b"<html" in r.body.lower()
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    js = get(web, "/app.js")
    assert js.status == 200 and js.headers["content-type"].startswith("text/javascript")
    assert get(web, "/style.css").headers["content-type"].startswith("text/css")
    head = get(web, "/", "HEAD")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["content-length"]) > 0


def test_only_the_packaged_files_can_be_named(web: TestServer) -> None:
    for path in ("/../pyproject.toml", "/%2e%2e/server.py", "/server.py", "/static/app.js"):
        assert get(web, path).status == 404, path
    assert get(web, "/", "POST").status == 405


def test_keep_alive_serves_several_requests_on_one_connection(web: TestServer) -> None:
    c = http.client.HTTPConnection(*web.web_address, timeout=10)
    for path in ("/", "/app.js", "/nope", "/style.css"):
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        assert r.status in (200, 404)
    c.close()


def test_websocket_and_tcp_clients_share_the_room_and_dms(web: TestServer) -> None:
    a = WsClient(web.web_address)
    assert a.login("alice")["username"] == "alice"
    b = connect(web.address, "bob")
    a.expect("users", joined="bob")
    b.send(command="pm", message="from tcp", id=1)
    b.expect("ack", id=1)
    assert a.expect("broadcast", message="from tcp")["from"] == "bob"
    a.send(command="pm", message="from ws", id="x")
    a.expect("ack", id="x")
    b.expect("broadcast", message="from ws")
    a.send(command="dm", to="BOB", message="psst")
    a.expect("ack", command="dm", to="bob")
    b.expect("dm", message="psst")
    b.send(command="dm", to="alice", message="back")
    b.expect("ack")
    a.expect("dm", message="back")
    a.send(command="history", limit=10, id=5)
    page = a.expect("history", id=5)
    assert [m["message"] for m in page["messages"]] == ["from tcp", "from ws"]
    a.send(command="history", limit=10, id=6, **{"with": "bob"})
    page = a.expect("history", id=6)
    assert [m["message"] for m in page["messages"]] == ["psst", "back"]
    a.send(command="exit")
    assert a.wait_closed() == [{"type": "bye", "reason": "exit"}]
    assert a.close_code == 1000
    b.expect("users", left="alice")


def test_a_resuming_websocket_gets_what_it_missed_once(web: TestServer) -> None:
    a = WsClient(web.web_address)
    ok = a.login("alice")
    b = connect(web.address, "bob")
    b.send(command="pm", message="one")
    b.expect("ack")
    seen = a.until("broadcast", message="one")["seq"]
    a.close()  # dropped, as a tab losing its network
    b.until("users", left="alice")
    for text in ("two", "three"):
        b.send(command="pm", message=text)
        b.expect("ack")
    again = WsClient(web.web_address)
    again.send(command="login", username="alice", password=PASSWORD, since=seen, epoch=ok["epoch"])
    assert again.expect("login_ok")["replay"] is True
    replayed = [again.expect("broadcast", replay=True)["message"] for _ in range(2)]
    assert replayed == ["two", "three"]
    again.expect("replay_done", count=2)
    b.send(command="pm", message="four")
    assert again.until("broadcast")["message"] == "four"


def test_the_frame_and_message_limits_hold(tmp_path: Path) -> None:
    with quiet_server(web_port=0, max_frame=1024, max_message=100) as srv:
        a = WsClient(srv.web_address)
        a.login("alice")
        a.send(command="pm", message="x" * 101, id=1)
        a.expect_error("bad_request", id=1)  # over the message limit: refused, still open
        a.send(command="ping", id=2)
        a.expect("pong", id=2)
        a.send_text('{"command": "pm", "message": "' + "y" * 2000 + '"}')
        a.expect_error("too_large")
        assert a.wait_closed() == []


def test_a_message_in_fragments_is_one_frame(web: TestServer) -> None:
    a = WsClient(web.web_address)
    a.login("alice")
    a.sock.sendall(a.ws.send(TextMessage(data='{"command": "pi', message_finished=False)))
    a.sock.sendall(a.ws.send(TextMessage(data='ng", "id": 3}', message_finished=True)))
    a.expect("pong", id=3)


def test_bad_json_is_answered_as_on_the_tcp_port(web: TestServer) -> None:
    a = WsClient(web.web_address)
    a.send_text("not json")
    a.expect_error("bad_json")
    a.send(command="pm", message="hi")
    a.expect_error("not_logged_in")


def test_binary_messages_are_refused_with_a_close(web: TestServer) -> None:
    from wsproto.events import BytesMessage

    a = WsClient(web.web_address)
    a.sock.sendall(a.ws.send(BytesMessage(data=b'{"command": "ping"}')))
    assert a.wait_closed() == []
    assert a.close_code == 1003


def test_a_websocket_ping_is_answered_with_a_pong(web: TestServer) -> None:
    a = WsClient(web.web_address)
    a.sock.sendall(a.ws.send(Ping(payload=b"hello")))
    a.sock.settimeout(10)
    a.ws.receive_data(a.sock.recv(1024))
    events = list(a.ws.events())
    assert events == [Pong(payload=b"hello")]


def test_origins_other_than_the_host_are_refused(web: TestServer) -> None:
    host, port = web.web_address
    WsClient(web.web_address, origin=f"http://{host}:{port}").login("alice")
    for origin in ("http://evil.example", f"http://{host}:{port + 1}", "null"):
        with pytest.raises(ConnectionRefusedError, match="403"):
            WsClient(web.web_address, origin=origin)


def test_the_origin_allow_list() -> None:
    with quiet_server(web_port=0, web_origins=("https://chat.example.org",)) as srv:
        host, port = srv.web_address
        WsClient(srv.web_address, origin="https://chat.example.org").login("alice")
        with pytest.raises(ConnectionRefusedError, match="403"):
            WsClient(srv.web_address, origin=f"http://{host}:{port}")


def test_a_cookie_logs_nobody_in(web: TestServer) -> None:
    connect(web.address, "alice").close()
    a = WsClient(web.web_address)
    a.send(command="pm", message="hi", id=1)
    a.expect_error("not_logged_in", id=1)


def test_flood_control_applies_to_websocket_frames() -> None:
    with quiet_server(web_port=0, rate_limit=5.0, rate_burst=3) as srv:
        a = WsClient(srv.web_address)
        a.login("alice")
        for i in range(6):
            a.send(command="ping", id=i)
        codes = [a.recv() for _ in range(6)]
        assert any(f.get("code") == "rate_limited" for f in codes), codes


def test_a_websocket_that_stops_reading_is_dropped_not_waited_for() -> None:
    with quiet_server(web_port=0, max_output=64 * 1024, send_buffer=8192) as srv:
        slow = WsClient(srv.web_address)
        slow.login("slow")
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        b = connect(srv.address, "bob")
        text = "z" * 3000
        left = False
        for i in range(200):
            b.send(command="pm", message=text, id=i)
            while True:  # each ack comes, never delayed by the reader that does not read
                frame = b.recv()
                left = left or frame.get("left") == "slow"
                if frame.get("type") == "ack" and frame["id"] == i:
                    break
        if not left:
            b.until("users", left="slow")


def test_shutdown_says_bye_and_closes_the_websocket() -> None:
    with quiet_server(web_port=0) as srv:
        a = WsClient(srv.web_address)
        a.login("alice")
        srv.stop()
        assert a.wait_closed() == [{"type": "bye", "reason": "server_shutdown"}]
        assert a.close_code == 1000


def test_the_web_port_serves_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    pem = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    with quiet_server(web_port=0, tls_cert=pem) as srv:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        c = http.client.HTTPSConnection(*srv.web_address, timeout=10, context=ctx)
        c.request("GET", "/")
        assert c.getresponse().status == 200
        c.close()
        raw = socket.create_connection(srv.web_address, timeout=10)
        tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        a = WsClient(srv.web_address, sock=tls)
        a.login("alice")
        a.send(command="pm", message="over wss", id=1)
        a.expect("ack", id=1)


def test_chat_server_options() -> None:
    args = build_parser().parse_args(
        ["--web-port", "8080", "--web-origin", "https://a.example, http://b:8080/"]
    )
    config = config_from_args(args)
    assert config.web_port == 8080
    assert config.web_origins == ("https://a.example", "http://b:8080")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--web-origin", "chat.example.org"])


def test_a_tcp_client_is_unaffected(web: TestServer) -> None:
    c = RawClient(web.address)
    c.login("carol")
    c.send(command="ping", id=1)
    c.expect("pong", id=1)


def test_irc_over_websocket_joins_the_same_room(web: TestServer) -> None:
    """The text.ircv3.net subprotocol: one IRC line per text message, as web IRC clients
    (Kiwi IRC, gamja) speak it; the rest is the IRC gateway's (docs/IRC.md)."""
    json_user = connect(web.address, "bob")
    irc = WsClient(web.web_address, subprotocols=["text.ircv3.net"])
    assert irc.subprotocol == "text.ircv3.net"
    for line in (f"PASS :{PASSWORD}", "NICK alice", "USER a 0 * :Alice"):
        irc.send_text(line)
    burst: list[str] = []
    while not burst or " 366 " not in burst[-1]:
        burst.append(irc.recv_line())
    assert burst[0].startswith(":chatroom 001 alice ")
    assert ":alice!alice@chatroom JOIN #lobby" in burst
    assert all("\r" not in line and "\n" not in line for line in burst)
    json_user.until("users", joined="alice")
    json_user.send(command="pm", message="hello irc over ws")
    line = irc.recv_line()
    while "PRIVMSG" not in line:
        line = irc.recv_line()
    assert line == ":bob!bob@chatroom PRIVMSG #lobby :hello irc over ws"
    irc.send_text("PRIVMSG bob :back over ws")
    dm = json_user.until("dm")
    assert (dm["from"], dm["message"]) == ("alice", "back over ws")
    irc.send_text("PING :tick")
    line = irc.recv_line()
    while not line.startswith(":chatroom PONG"):
        line = irc.recv_line()
    assert line.endswith(":tick")
    irc.send_text("QUIT :bye")
    json_user.until("users", left="alice")


def test_the_json_protocol_is_the_default_subprotocol(web: TestServer) -> None:
    a = WsClient(web.web_address, subprotocols=["something.else"])
    assert a.subprotocol is None
    a.login("alice")


def test_reloading_the_page_never_fails_a_request() -> None:
    """Flood control and the pre-login frame limit (20) hold for HTTP requests too, but
    a file is still served: the connection is closed after it, and the next request
    comes on a new one (http.client reconnects as a browser does)."""
    with quiet_server(web_port=0, rate_limit=10.0, rate_burst=20) as srv:
        c = http.client.HTTPConnection(*srv.web_address, timeout=10)
        statuses = []
        closes = 0
        for _ in range(45):  # five page loads of nine files, as fast as it goes
            c.request("GET", "/app.js")
            r = c.getresponse()
            r.read()
            statuses.append(r.status)
            closes += r.headers.get("connection") == "close"
        c.close()
        assert statuses == [200] * 45
        assert closes >= 1  # the limits were met, and answered by closing, not refusing
