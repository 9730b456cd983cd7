from __future__ import annotations

from collections.abc import Iterator

import pytest

from chatroom.testing import TestServer
from tests.helpers import OPEN_CLIENTS, quiet_server


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
