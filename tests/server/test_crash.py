"""Crash safety: SIGKILL in the middle of a stream of registrations loses no account that
was acknowledged, and the database opens cleanly afterwards."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from tests.helpers import PASSWORD, RawClient


def _start(db: Path) -> tuple[subprocess.Popen[str], int, threading.Thread]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatroom_server",
            "--port",
            "0",
            "--db",
            str(db),
            "--users-interval",
            "0",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m:
            # Keep draining stderr so the server never blocks on a full pipe.
            drainer = threading.Thread(target=proc.stderr.read, daemon=True)
            drainer.start()
            return proc, int(m.group(1)), drainer
    raise AssertionError(f"server did not start: {proc.wait(5)}")


def test_sigkill_during_registrations_loses_no_acknowledged_account(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    proc, port, drainer = _start(db)
    acked: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def register(worker: int) -> None:
        for i in range(1000):
            name = f"w{worker}u{i}"
            try:
                with RawClient(("127.0.0.1", port), timeout=10) as c:
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
    try:
        assert enough.wait(60), "registrations did not get going"
        proc.send_signal(signal.SIGKILL)  # mid-stream: other registrations are in flight
        proc.wait(10)
    finally:
        proc.kill()
        for w in workers:
            w.join(30)
        _close(proc, drainer)
    with lock:
        survivors = list(acked)

    check = sqlite3.connect(db)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
    proc, port, drainer = _start(db)
    try:
        for name in survivors:
            with RawClient(("127.0.0.1", port)) as c:
                c.send(command="login", username=name, password=PASSWORD)
                assert c.expect("login_ok")["new_user"] is False, name
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        _close(proc, drainer)


def _close(proc: subprocess.Popen[str], drainer: threading.Thread) -> None:
    proc.wait(10)
    drainer.join(10)  # EOF once the process is gone
    assert proc.stderr is not None
    proc.stderr.close()
