"""Shared bench helpers: start a server (ours or a baseline) as a subprocess on a free port."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from chatroom.testing import ServerProcess
from chatroom_bots.load import procstat

BENCH = Path(__file__).resolve().parent

SERVERS = {
    # Ours, as load tests must run it: flood control off, no periodic pushes.
    "ours": [
        sys.executable,
        "-m",
        "chatroom_server",
        "--rate-limit",
        "off",
        "--users-interval",
        "0",
        "--log-level",
        "info",  # the 'listening on' line is at info; the rest is rare
        "--max-connections",
        "20000",
    ],
    "naive": [sys.executable, str(BENCH / "naive_server.py")],
    "raw": [sys.executable, str(BENCH / "raw_relay.py")],
}
# Ours without the message log (--history off): what storing every message costs.
SERVERS["ours-nolog"] = [*SERVERS["ours"], "--history", "off"]


@contextlib.contextmanager
def start_server(
    kind: str, tmp: Path, *extra: str, db: str = "", env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start a server on a free port (chatroom.testing.ServerProcess reads it from the
    'listening on HOST:PORT' line every server here logs on stderr)."""
    cmd = [*SERVERS[kind], *extra, "--port", "0", "--db", str(tmp / f"{db or kind}.db")]
    with ServerProcess(cmd=cmd, env=env) as server:
        yield server.proc, server.port


def _sample(pid: int) -> procstat.ProcSample:
    got = procstat.sample(pid)
    if got is None:
        raise ProcessLookupError(f"cannot read /proc/{pid}: has the server exited?")
    return got


def rss_kib(pid: int) -> int:
    return _sample(pid).rss_bytes // 1024


def thread_count(pid: int) -> int:
    return _sample(pid).threads


def cpu_seconds(pid: int) -> float:
    return _sample(pid).cpu_seconds


def wait_idle(pid: int, below: float = 0.05, timeout: float = 60.0) -> float:
    """Wait until the process uses under ``below`` of a core over half a second (a server
    still pushing the logins' user-list deltas would pollute the first step); the
    seconds waited. Polled: another process offers nothing to wait on."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        cpu0 = cpu_seconds(pid)
        time.sleep(0.5)
        if (cpu_seconds(pid) - cpu0) / 0.5 < below:
            break
    return time.monotonic() - began
