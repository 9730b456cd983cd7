"""Shared bench helpers: start a server (ours or a baseline) as a subprocess on a free port."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from chatroom.testing import ServerProcess

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


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
