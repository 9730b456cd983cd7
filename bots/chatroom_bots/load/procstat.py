"""The server's own numbers, read from ``/proc`` when chat-load is given ``--server-pid``.

Linux only, and only for a server on the same machine; anywhere else every reading is
None and the report leaves the server's rows out rather than guessing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcSample", "sample", "threads"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcSample:
    at: float  # time.monotonic() when read
    cpu_seconds: float  # user + system, all threads
    rss_bytes: int
    threads: int


def sample(pid: int | None) -> ProcSample | None:
    """The process's CPU time, RSS and thread count now; None if it cannot be read."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    # Fields after the command name, which may itself hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kib = int(values.get("VmRSS", "0 kB").split()[0])
    return ProcSample(
        at=time.monotonic(),
        cpu_seconds=(utime + stime) / _TICKS,
        rss_bytes=rss_kib * 1024,
        threads=int(values.get("Threads", "0")),
    )


def threads(pid: int | None) -> int | None:
    s = sample(pid)
    return None if s is None else s.threads
