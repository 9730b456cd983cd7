"""The SQLite database holds password hashes and every DM in plain text: it and its WAL
files are readable by the server's user only (docs/SECURITY.md)."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatroom_server.accounts import AccountStore
from chatroom_server.messagelog import MessageLog
from tests.helpers import connect, quiet_server


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems give a service (022): files are 0644 unless made private."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_database_and_its_wal_files_are_private(tmp_path: Path, usual_umask: None) -> None:
    db = tmp_path / "chatroom.db"
    with quiet_server(db_path=db) as srv:
        alice = connect(srv.address, "alice")
        bob = connect(srv.address, "bob")
        alice.send(command="dm", to="bob", message="a secret", id=1)
        alice.until("ack", id=1)
        bob.until("dm")
        files = {p.name: _mode(p) for p in tmp_path.iterdir()}
        # While the server runs the WAL and its index exist beside the database.
        assert files == {
            "chatroom.db": 0o600,
            "chatroom.db-wal": 0o600,
            "chatroom.db-shm": 0o600,
        }


@pytest.mark.parametrize("store", [AccountStore, MessageLog])
def test_each_store_alone_creates_a_private_file(
    tmp_path: Path, usual_umask: None, store: type[AccountStore] | type[MessageLog]
) -> None:
    path = tmp_path / "alone.db"
    opened = store(path)
    try:
        assert _mode(path) == 0o600
    finally:
        opened.close()


def test_an_existing_readable_database_is_kept_and_reported(
    tmp_path: Path, usual_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    AccountStore(path).close()
    path.chmod(0o644)  # as servers before this one created it
    caplog.set_level(logging.WARNING, logger="chatroom_server.accounts")
    AccountStore(path).close()
    assert _mode(path) == 0o644  # the operator's file: not changed behind their back
    assert any("chmod 600" in r.getMessage() for r in caplog.records)
