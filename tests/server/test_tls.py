"""TLS: chat-server --tls-cert/--tls-key, ChatClient(tls=True, ca_file=...), with a CA and
certificate made at test time (trustme)."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from chatroom import Broadcast, ChatClient, ConnectFailed, DirectMessage
from chatroom.testing import TestServer, running_server
from chatroom_server import ChatServer, ConfigError, ServerConfig
from tests.helpers import PASSWORD

T = 10.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server_pem, ca_pem = d / "server.pem", d / "ca.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(server_pem)
    )
    ca.cert_pem.write_to_path(str(ca_pem))
    return server_pem, ca_pem


@pytest.fixture
def tls_server(certs: tuple[Path, Path]) -> Iterator[TestServer]:
    with running_server(
        users_interval=0, rate_limit=None, tls_cert=certs[0], send_buffer=16384
    ) as srv:
        yield srv


def tls_client(srv: TestServer, ca: Path, name: str) -> ChatClient:
    c = ChatClient(srv.host, srv.port, tls=True, ca_file=str(ca))
    c.connect()
    c.login(name, PASSWORD)
    return c


def test_chat_over_tls(tls_server: TestServer, certs: tuple[Path, Path]) -> None:
    a = tls_client(tls_server, certs[1], "tls_a")
    b = tls_client(tls_server, certs[1], "tls_b")
    try:
        with b.expect(Broadcast) as got:
            a.pm("encrypted hello")
            assert got.wait(T).message == "encrypted hello"
        with a.expect(DirectMessage) as got:
            b.dm("tls_a", "secret")
            assert got.wait(T).message == "secret"
    finally:
        a.close()
        b.close()


def test_large_backlog_over_tls_arrives_whole_and_in_order(
    tls_server: TestServer, certs: tuple[Path, Path]
) -> None:
    # A small send buffer forces backlogs, so the flusher's TLS path (retries of partial
    # and refused writes) carries most of this.
    n = 300
    received: list[str] = []
    done = threading.Event()

    def collect(event: Broadcast) -> None:
        received.append(event.message)
        if event.message.startswith(f"{n - 1} "):
            done.set()

    reader = ChatClient(tls_server.host, tls_server.port, tls=True, ca_file=str(certs[1]))
    reader.on_broadcast(collect)
    reader.connect()
    reader.login("tls_reader", PASSWORD)
    sender = tls_client(tls_server, certs[1], "tls_sender")
    try:
        for i in range(n):
            sender.pm(f"{i} " + "z" * 3900)
        assert done.wait(T)
        assert [int(m.split()[0]) for m in received] == list(range(n))
    finally:
        reader.close()
        sender.close()


def test_certificate_is_verified_by_default(tls_server: TestServer) -> None:
    # No CA given: the system store does not know our test CA.
    with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
        ChatClient(tls_server.host, tls_server.port, tls=True, timeout=5).connect()


def test_plaintext_client_on_a_tls_port_is_closed(tls_server: TestServer) -> None:
    with socket.create_connection(tls_server.address, timeout=T) as s:
        s.sendall(b'{"command":"ping"}\n')
        data = s.recv(4096)
        while data:
            assert b"pong" not in data
            data = s.recv(4096)


def test_tls_1_1_is_refused(tls_server: TestServer, certs: tuple[Path, Path]) -> None:
    ctx = ssl.create_default_context(cafile=str(certs[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point of the test
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ConnectFailed):
        ChatClient(tls_server.host, tls_server.port, tls=ctx, timeout=5).connect()


def test_unusable_certificate_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="TLS certificate"):
        ChatServer(ServerConfig(db_path=tmp_path / "x.db", port=0, tls_cert=bad)).start()


def test_chat_cli_over_tls(tls_server: TestServer, certs: tuple[Path, Path]) -> None:
    import io

    from chatroom_cli.__main__ import main
    from chatroom_cli.repl import PipeTerminal

    out = io.StringIO()
    pw = certs[1].with_name("pw.txt")
    pw.write_text(PASSWORD)
    status = main(
        [
            "--port",
            str(tls_server.port),
            "--user",
            "tls_cli",
            "--password-file",
            str(pw),
            "--tls",
            "--ca-file",
            str(certs[1]),
        ],
        terminal=PipeTerminal(io.StringIO("PM over tls\nEX\n"), out),
    )
    assert status == 0
    assert "<tls_cli> over tls" in out.getvalue()


def test_the_asyncio_client_over_tls_and_a_wrong_ca(
    tls_server: TestServer, certs: tuple[Path, Path], tmp_path: Path
) -> None:
    import asyncio

    from chatroom.aio import AsyncChatClient

    other_ca = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))

    async def main() -> None:
        host, port = tls_server.host, tls_server.port
        async with (
            AsyncChatClient(host, port, tls=True, ca_file=str(certs[1])) as a,
            AsyncChatClient(host, port, tls=True, ca_file=str(certs[1])) as b,
        ):
            await a.login("atls_a", PASSWORD)
            await b.login("atls_b", PASSWORD)
            got = asyncio.create_task(b.wait_for(Broadcast, timeout=T))
            await asyncio.sleep(0)
            await a.pm("encrypted, asynchronously")
            assert (await got).message == "encrypted, asynchronously"
        with pytest.raises(ConnectFailed):
            await AsyncChatClient(host, port, tls=True, ca_file=str(other_ca)).connect()

    asyncio.run(main())


def test_irc_over_tls_beside_plain_irc(certs: tuple[Path, Path]) -> None:
    """--irc-tls-port: the same certificate; --irc-port stays plain."""
    with running_server(users_interval=0, tls_cert=certs[0], irc_port=0, irc_tls_port=0) as srv:
        plain_addr, tls_addr = srv.server.irc_addresses
        ctx = ssl.create_default_context(cafile=str(certs[1]))
        with (
            socket.create_connection(tls_addr, timeout=T) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
        ):
            s.sendall(f"PASS :{PASSWORD}\r\nNICK secure\r\nUSER u 0 * :R\r\n".encode())
            got = b""
            while b" 366 " not in got:
                got += s.recv(65536)
            assert b":chatroom 001 secure " in got
        with socket.create_connection(plain_addr, timeout=T) as s:
            s.sendall(f"PASS :{PASSWORD}\r\nNICK plain\r\nUSER u 0 * :R\r\n".encode())
            got = b""
            while b" 366 " not in got:
                got += s.recv(65536)
            assert b":chatroom 001 plain " in got


def test_connections_reset_before_they_are_accepted_stop_nothing(
    tls_server: TestServer, certs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients that reset their connections while they wait in the listen queue: the
    TLS wrap of such a socket raised (CPython reads it to look for bytes sent before
    the handshake), and that ended the accept thread: the server took nobody after it.
    The accept thread is held here on a first connection while the others come and
    reset, as a busy accept thread would be."""
    listeners = tls_server.server._listeners  # chatroom_server.listeners
    real = listeners._admit
    entered, release = threading.Event(), threading.Event()

    def held(*args: Any, **kwargs: Any) -> None:
        if not entered.is_set():
            entered.set()
            assert release.wait(T)
        real(*args, **kwargs)

    monkeypatch.setattr(listeners, "_admit", held)
    first = socket.create_connection(tls_server.address, timeout=T)
    assert entered.wait(T)
    for _ in range(5):
        gone = socket.create_connection(tls_server.address, timeout=T)
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()  # RST, on loopback at once
    release.set()
    first.close()
    c = tls_client(tls_server, certs[1], "after_resets")  # accepted, and logged in
    c.close()
