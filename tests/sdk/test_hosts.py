"""Several server addresses (a cluster's nodes): parsing, and failing over."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from chatroom import ChatClient, ConnectFailed, UsageError
from chatroom.aio import AsyncChatClient
from chatroom.hosts import parse_hosts
from tests.helpers import PASSWORD, quiet_server

T = 10.0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("h", [("h", 5050)]),
        ("a:1,b", [("a", 1), ("b", 5050)]),
        (" a:1 , b:2 ", [("a", 1), ("b", 2)]),
        ("[::1]:5051,[::1]", [("::1", 5051), ("::1", 5050)]),
        ("::1", [("::1", 5050)]),
        (["a:7", ("b", 8)], [("a", 7), ("b", 8)]),
    ],
)
def test_addresses(spec: str | list[str | tuple[str, int]], expected: list[object]) -> None:
    assert parse_hosts(spec, 5050) == expected


@pytest.mark.parametrize("spec", ["", ",", "a:x", "a:0", "a:70000", ":5"])
def test_bad_addresses_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_hosts(spec, 5050)


def closed_port() -> int:
    """A port nothing listens on (bound and released: connecting is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connect_skips_a_dead_address_and_fails_over_on_reconnect() -> None:
    dead = ("127.0.0.1", closed_port())
    with quiet_server() as first, quiet_server() as second:
        moved = threading.Event()
        client = ChatClient(
            hosts=[dead, first.address, second.address],
            reconnect=True,
            reconnect_max_delay=0.2,
        )
        client.on_reconnect(lambda e: moved.set())
        with client:
            assert (client.host, client.port) == first.address
            client.login("roamer", PASSWORD)
            first.stop()  # the node it is on goes away: the next one takes it
            assert moved.wait(T)
            assert (client.host, client.port) == second.address
            assert "roamer" in client.users


def test_no_address_answers_names_them_all() -> None:
    a, b = ("127.0.0.1", closed_port()), ("127.0.0.1", closed_port())
    with pytest.raises(ConnectFailed) as failed:
        ChatClient(f"{a[0]}:{a[1]},{b[0]}:{b[1]}").connect()
    assert str(a[1]) in str(failed.value) and str(b[1]) in str(failed.value)


def test_the_asyncio_client_takes_the_same_addresses() -> None:
    async def main() -> None:
        with quiet_server() as srv:
            dead = ("127.0.0.1", closed_port())
            async with AsyncChatClient(hosts=[dead, srv.address]) as client:
                assert (client.host, client.port) == srv.address
                await client.login("asyncroamer", PASSWORD)
            with pytest.raises(ConnectFailed):
                async with AsyncChatClient(hosts=[dead, dead]):
                    pass

    asyncio.run(main())
