"""chatroom_server.accounts: the lookups and checks a login makes, on the store's
threads."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Queue
from typing import Any

import pytest
from argon2 import PasswordHasher, extract_parameters

import chatroom_server.accounts as accounts
from chatroom_server.accounts import (
    LOAD_TEST_HASHER,
    OWASP_HASHER,
    PROOF_MAX_KIB,
    AccountExists,
    AccountStore,
    AccountStoreBusy,
    default_workers,
)
from tests.helpers import RawClient, quiet_server

PASSWORD = "correct horse battery"
# Over PROOF_MAX_KIB, so always checked on the store's threads, and still quick.
POOLED_HASHER = PasswordHasher(time_cost=1, memory_cost=2 * PROOF_MAX_KIB, parallelism=1)


def test_authenticate_in_one_trip_sees_a_registration_at_once(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "accounts.db", POOLED_HASHER)
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


def _count_trips(store: AccountStore) -> list[Callable[..., Any]]:
    """Record every function the store sends to one of its threads."""
    trips: list[Callable[..., Any]] = []
    on_worker = store._on_worker

    def counted(fn: Callable[..., Any], *args: object) -> Any:
        trips.append(fn)
        return on_worker(fn, *args)

    store._on_worker = counted  # type: ignore[method-assign]
    return trips


def test_a_login_seen_with_a_cheap_hash_is_checked_without_a_trip(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "accounts.db", LOAD_TEST_HASHER)
    try:
        store.register("Alice", PASSWORD)  # hashing always goes to a store thread
        trips = _count_trips(store)
        account, right = store.authenticate("ALICE", PASSWORD)
        assert account is not None and account.name == "Alice" and right
        assert trips == []
        # Anything but the remembered password is answered by the store's own check.
        assert store.authenticate("alice", "wrong password") == (account, False)
        assert store.authenticate("Bob", PASSWORD) == (None, False)
        assert trips == [store._authenticate, store._authenticate]
    finally:
        store.close()
    # A new process remembers nothing until a login has passed its own check.
    again = AccountStore(tmp_path / "accounts.db", LOAD_TEST_HASHER)
    try:
        trips = _count_trips(again)
        assert again.authenticate("alice", "wrong password")[1] is False
        for _ in range(3):
            assert again.authenticate("alice", PASSWORD)[1]
        assert trips == [again._authenticate, again._authenticate]
    finally:
        again.close()


def test_a_first_login_with_a_cheap_hash_makes_one_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup that finds no account hashes the password on its trip; the
    registration after it queues that hash from the caller's thread. Another password
    than the one looked up gets a hash of its own; the ones made ahead are bounded."""
    store = AccountStore(tmp_path / "accounts.db", LOAD_TEST_HASHER)
    try:
        trips = _count_trips(store)
        assert store.authenticate("Alice", PASSWORD) == (None, False)
        account = store.register("Alice", PASSWORD)
        assert trips == [store._authenticate]
        assert store._prehashed == {}
        LOAD_TEST_HASHER.verify(account.password_hash, PASSWORD)
        again = AccountStore(tmp_path / "accounts.db", LOAD_TEST_HASHER)  # as stored
        try:
            assert again.authenticate("alice", PASSWORD)[1]
        finally:
            again.close()
        # Registered with another password than the one looked up: hashed anew.
        assert store.authenticate("Bob", PASSWORD) == (None, False)
        bob = store.register("Bob", "another password")
        assert trips[1:] == [store._authenticate, store._register]
        assert store.authenticate("bob", "another password") == (bob, True)
        assert store.authenticate("bob", PASSWORD)[1] is False
        monkeypatch.setattr(accounts, "PREHASHED_MAX", 2)
        for name in ("Cid", "Dan", "Eve"):
            assert store.authenticate(name, PASSWORD) == (None, False)
        assert sorted(store._prehashed or {}) == ["eve"]
    finally:
        store.close()
    costly = AccountStore(tmp_path / "costly.db", POOLED_HASHER)
    try:
        trips = _count_trips(costly)
        assert costly.authenticate("Alice", PASSWORD) == (None, False)
        costly.register("Alice", PASSWORD)
        assert trips == [costly._authenticate, costly._register]
        assert costly._prehashed is None
    finally:
        costly.close()


def test_what_is_remembered_is_no_password(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "accounts.db", LOAD_TEST_HASHER)
    try:
        store.register("Alice", PASSWORD)
        assert store._proofs is not None
        account, proof = store._proofs["alice"]
        assert account.name == "Alice" and len(proof) == 32
        assert PASSWORD.encode() not in proof
        # Keyed per process: the same password gives another proof in another store.
        other = AccountStore(tmp_path / "other.db", LOAD_TEST_HASHER)
        try:
            assert other._proof(PASSWORD) != store._proof(PASSWORD)
        finally:
            other.close()
    finally:
        store.close()


def test_a_costly_hash_always_goes_to_a_store_thread(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "accounts.db", POOLED_HASHER)
    try:
        assert store._proofs is None
        store.register("Alice", PASSWORD)
        trips = _count_trips(store)
        assert store.authenticate("alice", PASSWORD)[1]
        assert store.authenticate("alice", PASSWORD)[1]
        assert store.authenticate("alice", "wrong password")[1] is False
        assert trips == [store._authenticate] * 3
    finally:
        store.close()


def test_the_logins_remembered_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts, "PROOFS_MAX", 2)
    store = AccountStore(tmp_path / "accounts.db", LOAD_TEST_HASHER)
    try:
        for name in ("Ann", "Ben", "Cid"):
            store.register(name, PASSWORD)
        assert store._proofs is not None and sorted(store._proofs) == ["ann", "ben"]
        trips = _count_trips(store)
        for _ in range(2):
            assert all(store.authenticate(name, PASSWORD)[1] for name in ("ann", "ben", "cid"))
        assert trips == [store._authenticate] * 2  # only Cid's, each time
    finally:
        store.close()


def test_a_rehash_still_happens_and_later_checks_agree(tmp_path: Path) -> None:
    older = AccountStore(tmp_path / "accounts.db", LOAD_TEST_HASHER)
    older.register("Alice", PASSWORD)
    older.close()
    # Restarted with dearer (still cheap) parameters: the first login rehashes.
    dearer = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    store = AccountStore(tmp_path / "accounts.db", dearer)
    try:
        assert store.authenticate("alice", PASSWORD)[1]
        stored = store.get("Alice")
        assert stored is not None and extract_parameters(stored.password_hash).memory_cost == 16
        assert store.authenticate("alice", PASSWORD)[1]
        assert store.authenticate("alice", "wrong password")[1] is False
    finally:
        store.close()


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another process's write transaction on the database (a backup tool, say)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_locked_database_is_busy_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "accounts.db"
    older = AccountStore(path, LOAD_TEST_HASHER)
    older.register("Alice", PASSWORD)
    older.close()
    dearer = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    store = AccountStore(path, dearer, busy_timeout=0.05)
    try:
        with locked(path):
            with pytest.raises(AccountStoreBusy, match="locked"):
                store.register("Bob", PASSWORD)
            # A login that would rehash still logs in; the rehash waits for the next one.
            assert store.authenticate("alice", PASSWORD)[1]
        assert store.register("Bob", PASSWORD).name == "Bob"
        assert store.authenticate("alice", PASSWORD)[1]
        stored = store.get("alice")
        assert stored is not None and extract_parameters(stored.password_hash).memory_cost == 16
    finally:
        store.close()


def test_a_registration_on_a_locked_database_is_unavailable(tmp_path: Path) -> None:
    with quiet_server(db_path=tmp_path / "chatroom.db") as srv:
        store = srv.server._store
        assert store is not None
        with store._lock:
            store._db.execute("PRAGMA busy_timeout = 50")  # not the 10 s a server waits
        c = RawClient(srv.address)
        with locked(srv.db_path):
            c.send(command="login", username="newcomer", password=PASSWORD, id="reg")
            refused = c.expect_error("unavailable", id="reg")
            assert "try again" in refused["message"]
            c.send(command="ping", id="alive")
            c.expect("pong", id="alive")  # the connection stays
        c.send(command="login", username="newcomer", password=PASSWORD, id="again")
        assert c.expect("login_ok", id="again")["new_user"] is True
        assert srv.server.handler_crashes == 0


def test_registrations_at_once_are_all_stored_and_a_taken_name_is_refused(
    tmp_path: Path,
) -> None:
    store = AccountStore(tmp_path / "accounts.db", LOAD_TEST_HASHER, hash_workers=8)
    try:
        names = [f"user{i:02d}" for i in range(40)] + ["Twin", "twin"]
        results: Queue[tuple[str, str]] = Queue()

        def register(name: str) -> None:
            try:
                store.register(name, PASSWORD)
                results.put((name, "ok"))
            except AccountExists:
                results.put((name, "exists"))

        threads = [threading.Thread(target=register, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        got = dict(results.get_nowait() for _ in names)
        assert all(got[n] == "ok" for n in names[:40])
        assert sorted([got["Twin"], got["twin"]]) == ["exists", "ok"]
        assert store.count() == 41
        winner = "Twin" if got["Twin"] == "ok" else "twin"
        account, right = store.authenticate(winner, PASSWORD)
        assert account is not None and account.name == winner and right
        with pytest.raises(AccountExists):
            store.register("USER00", PASSWORD)
    finally:
        store.close()
