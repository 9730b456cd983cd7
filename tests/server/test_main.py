"""``chat-server`` as a process: start-up errors and signal shutdown."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import RawClient


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chatroom_server", "--db", str(tmp_path / "c.db"), *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )


def _listening_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stderr is not None
    for line in proc.stderr:  # bounded by the test timeout; the server logs this first
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m:
            return int(m.group(1))
    raise AssertionError(f"server exited without listening: {proc.wait(5)}")


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _start(tmp_path, "--port", str(port))
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    lines = [line for line in err.splitlines() if "Traceback" not in line]
    assert len(err.strip().splitlines()) == 1, err
    assert f"cannot listen on 127.0.0.1:{port}" in lines[0]


def test_not_a_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "c.db").write_text("hello")
    proc = _start(tmp_path, "--port", "0")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert len(err.strip().splitlines()) == 1, err
    assert "not a chatroom credentials database" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_says_bye_and_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    proc = _start(tmp_path, "--port", "0")
    try:
        port = _listening_port(proc)
        with RawClient(("127.0.0.1", port)) as c:
            c.login("sigtest")
            proc.send_signal(sig)
            assert c.wait_closed()[-1] == {"type": "bye", "reason": "server_shutdown"}
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.communicate(timeout=5)  # reaps it and closes the pipe
