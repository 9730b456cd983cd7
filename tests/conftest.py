from __future__ import annotations

from collections.abc import Iterator

import pytest

from chatroom.testing import TestServer, running_server
from tests.helpers import OPEN_CLIENTS


@pytest.fixture(autouse=True)
def _close_raw_clients() -> Iterator[None]:
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


@pytest.fixture
def server() -> Iterator[TestServer]:
    """A real server on 127.0.0.1:0 with a temp database, no periodic pushes, and no flood
    control (tests send bursts; tests/server/test_hardening.py tests the limits)."""
    with running_server(users_interval=0, rate_limit=None) as srv:
        yield srv
