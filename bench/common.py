"""Shared bench helpers: start a server (ours or a baseline) as a subprocess on a free port."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

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
        "warning",
        "--max-connections",
        "20000",
    ],
    "naive": [sys.executable, str(BENCH / "naive_server.py")],
    "raw": [sys.executable, str(BENCH / "raw_relay.py")],
}


@contextlib.contextmanager
def start_server(
    kind: str, tmp: Path, *extra: str, db: str = ""
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start a server on a free port; it prints 'listening on HOST:PORT' on stderr."""
    cmd = [*SERVERS[kind], *extra, "--port", "0", "--db", str(tmp / f"{db or kind}.db")]
    # Ours logs at warning: ask for the one info line we need by a separate flag-free way.
    if kind == "ours":
        cmd[cmd.index("warning")] = "info"
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    port = 0
    for line in proc.stderr:
        m = re.search(r"listening on [\d.]+:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if not port:
        raise RuntimeError(f"{kind} server did not start")
    drain = threading.Thread(target=proc.stderr.read, daemon=True)
    drain.start()
    try:
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        drain.join(5)
        proc.stderr.close()


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
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
