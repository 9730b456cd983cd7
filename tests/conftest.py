from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hypothesis import settings

from chatroom.protocol import decode_event
from chatroom.testing import TestServer
from chatroom_server.irc import render
from tests.helpers import OPEN_CLIENTS, quiet_server

# No wall-clock deadline per example: it is a timed assertion, and on a shared machine an
# example of {} once took 494 ms (DeadlineExceeded, a failure that says nothing about the
# code). Every test is bounded by pytest-timeout instead.
settings.register_profile("chatroom", deadline=None)
settings.load_profile("chatroom")


@pytest.fixture(autouse=True)
def _close_raw_clients() -> Iterator[None]:
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


@pytest.fixture
def server() -> Iterator[TestServer]:
    """A real server on 127.0.0.1:0 with a temp database, quiet (tests/helpers.QUIET)."""
    with quiet_server() as srv:
        yield srv


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kinds of the frames the IRC side decodes: every other one it rendered from
    the events the frame carries (chatroom_server.frames; tests/server/test_irc_render.py,
    tests/cluster/test_irc_render.py)."""
    kinds: list[str] = []
    lock = threading.Lock()  # render runs on whichever server thread sends

    def spy(line: bytes) -> object:
        event = decode_event(line)
        with lock:
            kinds.append(type(event).__name__)
        return event

    monkeypatch.setattr(render, "decode_event", spy)
    return kinds
