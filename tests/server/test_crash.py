"""Crash safety: SIGKILL in the middle of a stream of registrations loses no account that
was acknowledged, and the database opens cleanly afterwards."""

from __future__ import annotations

import signal
import sqlite3
import threading
from pathlib import Path

import pytest

from tests.helpers import PASSWORD, RawClient, ServerProcess
from tests.server.test_offline_dms import nothing_waits, queue_dms, read_a_little, waiting


# With load-test hashes the registrations are begun on the admission thread and
# answered from there once their group commit is durable (EarlyLogin._register_soon).
@pytest.mark.parametrize("hashing", [(), ("--password-hash", "load-test")])
def test_sigkill_during_registrations_loses_no_acknowledged_account(
    tmp_path: Path, hashing: tuple[str, ...]
) -> None:
    db = tmp_path / "crash.db"
    acked: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    with ServerProcess(db, "--users-interval", "0", *hashing) as server:

        def register(worker: int) -> None:
            for i in range(1000):
                name = f"w{worker}u{i}"
                try:
                    with RawClient(server.address, timeout=10) as c:
                        c.send(command="login", username=name, password=PASSWORD)
                        reply = c.recv()
                except (OSError, EOFError):
                    return  # the server is gone
                if reply.get("type") == "login_ok":
                    with lock:
                        acked.append(name)
                        if len(acked) >= 40:
                            enough.set()

        workers = [threading.Thread(target=register, args=(w,)) for w in range(4)]
        for w in workers:
            w.start()
        assert enough.wait(60), "registrations did not get going"
        server.proc.send_signal(signal.SIGKILL)  # mid-stream: others are in flight
        server.proc.wait(10)
        for w in workers:
            w.join(30)
    with lock:
        survivors = list(acked)

    check = sqlite3.connect(db)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
    with ServerProcess(db, "--users-interval", "0", *hashing) as server:
        for name in survivors:
            with RawClient(server.address) as c:
                c.send(command="login", username=name, password=PASSWORD)
                assert c.expect("login_ok")["new_user"] is False, name
        assert server.close() == 0  # SIGTERM: a clean exit


def test_sigkill_mid_replay_loses_no_queued_dm(tmp_path: Path) -> None:
    """docs/PROTOCOL.md §Offline DMs: 1,500 DMs acked ``queued`` for bob, who logs in
    and reads three; the server is killed: at his next login all 1,500 are there."""
    db = tmp_path / "inbox.db"
    args = ("--users-interval", "0", "--rate-limit", "off", "--password-hash", "load-test")
    with ServerProcess(db, *args) as server:
        seqs = queue_dms(server.address, "bob", 1500)
        bob, got = read_a_little(server.address, "bob")
        assert got == seqs[:3]
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        bob.close()
    with ServerProcess(db, *args) as server:
        assert [f["seq"] for f in waiting(server.address, "bob")] == seqs
        nothing_waits(server.address, "bob")
