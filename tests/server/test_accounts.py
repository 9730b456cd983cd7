"""chatroom_server.accounts: the lookups and checks a login makes, on the store's
threads."""

from __future__ import annotations

import os
from pathlib import Path

from chatroom_server.accounts import (
    LOAD_TEST_HASHER,
    OWASP_HASHER,
    AccountStore,
    default_workers,
)

PASSWORD = "correct horse battery"


def test_authenticate_in_one_trip_sees_a_registration_at_once(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "accounts.db", LOAD_TEST_HASHER)
    try:
        assert store.authenticate("Alice", PASSWORD) == (None, False)
        store.register("Alice", PASSWORD)  # written through the shared connection
        # read back on a store thread's own connection, any spelling
        account, right = store.authenticate("aLiCe", PASSWORD)
        assert account is not None and account.name == "Alice" and right
        assert store.authenticate("alice", "wrong password")[1] is False
        assert store.lookup("ALICE") == account
        assert store._reader_dbs, "the store's threads read through their own connections"
    finally:
        store.close()
    assert not store._reader_dbs


def test_more_store_threads_only_for_cheap_hashes() -> None:
    floor = 2 * (os.cpu_count() or 1)
    assert default_workers(OWASP_HASHER) == floor  # 19 MiB each: no more than that
    assert default_workers(LOAD_TEST_HASHER) == max(floor, 16)
