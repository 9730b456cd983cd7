"""chat-load --transport ws and mixed (docs/WEB.md): the swarm over WebSocket against a real
server's web port, with the same honest counts as over TCP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Pong, Request
from wsproto.frame_protocol import FrameProtocol

from chatroom.testing import TestServer
from chatroom_bots.load import LoadConfig, run_load
from chatroom_bots.load.__main__ import main as chat_load
from chatroom_bots.load.wslink import WsLink
from tests.helpers import quiet_server


@pytest.fixture
def web_server() -> Iterator[TestServer]:
    with quiet_server(web_port=0, password_hash="load-test") as srv:
        yield srv


def config(srv: TestServer, transport: str, **kw: Any) -> LoadConfig:
    base: dict[str, Any] = dict(
        port=srv.port,
        web_port=srv.web_address[1],
        transport=transport,
        clients=12,
        senders=3,
        rate=150.0,
        duration=1.0,
        pm_fraction=0.8,
        processes=2,
        drain=1.0,
    )
    base.update(kw)
    return LoadConfig(**base)


@pytest.mark.parametrize("transport", ["ws", "mixed"])
def test_zero_loss_over_websocket(web_server: TestServer, transport: str) -> None:
    result = run_load(config(web_server, transport))
    assert result.logged_in == 12 and not result.login_failures
    assert result.sent >= 100 and result.sent_dm > 0
    assert result.expected == result.sent_pm * 11 + result.sent_dm
    assert result.delivered == result.expected
    assert (result.lost, result.duplicates, result.out_of_order, result.errors) == (0, 0, 0, 0)
    assert result.ok


def test_churn_over_websocket_resumes_with_nothing_lost_or_twice(web_server: TestServer) -> None:
    """Receivers cut abruptly and resumed with since, over WebSocket."""
    result = run_load(config(web_server, "ws", clients=16, rate=300.0, duration=2.0, churn=8.0))
    assert result.resumes >= 5 and result.replayed > 0
    assert result.delivered == result.expected
    assert (result.lost, result.duplicates, result.out_of_order, result.errors) == (0, 0, 0, 0)
    assert result.ok


def test_the_command_line_needs_the_web_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert chat_load(["run", "--transport", "ws"]) == 2
    assert "--web-port" in capsys.readouterr().err


def _accepted_link() -> tuple[WsLink, WSConnection]:
    link = WsLink("127.0.0.1", 1)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(link.handshake())
    assert any(isinstance(e, Request) for e in server.events())
    assert link.unwrap(server.send(AcceptConnection())) == (b"", b"", True)
    return link, server


@settings(max_examples=200)
@given(
    messages=st.lists(st.text(min_size=1, max_size=70_000).filter(lambda t: "\n" not in t)),
    pieces=st.lists(st.integers(1, 4), max_size=200),
    cuts=st.lists(st.integers(1, 5000), max_size=400),
    pings=st.lists(st.booleans(), max_size=200),
)
def test_the_fast_path_reads_what_wsproto_reads(
    messages: list[str], pieces: list[int], cuts: list[int], pings: list[bool]
) -> None:
    """Frames of every kind the server may send (7-, 16- and 64-bit lengths, fragments,
    pings between them), cut anywhere into reads: the same lines, in order, once."""
    link, server = _accepted_link()
    fp = FrameProtocol(client=False, extensions=[])
    wire = b""
    sent_pings = 0
    for i, text in enumerate(messages):
        n = pieces[i] if i < len(pieces) else 1
        step = max(1, len(text) // n)
        parts = [text[j : j + step] for j in range(0, len(text), step)]
        for k, part in enumerate(parts):
            wire += fp.send_data(part, fin=k == len(parts) - 1)
            if i < len(pings) and pings[i]:
                wire += fp.ping(b"hi")
                sent_pings += 1
    got = b""
    pongs = 0
    at = 0
    for cut in [*cuts, len(wire)]:
        lines, back, _ = link.unwrap(wire[at : at + cut])
        got += lines
        server.receive_data(back)
        pongs += sum(isinstance(e, Pong) and e.payload == b"hi" for e in server.events())
        at += cut
        if at >= len(wire):
            break
    expected = "".join(m + "\n" for m in messages).encode()
    assert got == expected
    assert pongs == sent_pings  # each answered
