"""What a replay costs the server in memory (docs/PROTOCOL.md §Resume, §Offline DMs):
clients that ask for a replay and never read it.

Two runs, each on a fresh server and database:

- **resume**: 10,000 stored messages of 3,900 characters; 20 clients log in with
  ``since: 0`` and never read a byte.
- **inbox**: 20,000 DMs of 3,900 characters queued for one user, who logs in without
  ``since`` and never reads.

For each it prints the server's RSS idle, its peak (``VmHWM``) while the replays wait
for the clients, and the bound a replay must keep to: the idle RSS plus one output limit
(``--max-output``, 1 MiB by default) per client. Idle is the server once its users are
registered, the log filled, and one client has read a whole replay of it (the sender,
``since: 0``): so the database's page caches, a fixed 2 MB or so per read connection
whatever the number of clients, are in the baseline and not charged to the clients. The
run waits until the server's CPU is idle (or ``--window`` seconds), well inside the 10 s
after which a client that reads nothing is disconnected.

    .venv/bin/python bench/replay_memory.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from common import cpu_seconds, rss_kib, start_server

from chatroom_server.accounts import LOAD_TEST_HASHER, AccountStore
from chatroom_server.messagelog import MessageLog, NewMessage

PASSWORD = "bench password"
MAX_OUTPUT = 1024 * 1024  # the server's default --max-output
ARGS = ("--password-hash", "load-test")


def peak_kib(pid: int) -> int:
    """The process's RSS high-water mark (VmHWM), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/PID/status")


def fill(db: Path, users: list[str], messages: list[NewMessage]) -> None:
    """The accounts and the log, written before the server starts (as it would have)."""
    store = AccountStore(db, LOAD_TEST_HASHER)
    for name in users:
        store.register(name, PASSWORD)
    store.close()
    mlog = MessageLog(db)
    for i in range(0, len(messages), 2000):
        mlog.append(messages[i : i + 2000])
    mlog.close()


def login_and_stall(port: int, name: str, **extra: Any) -> socket.socket:
    """Log in and never read: the replay has nowhere to go but the server's memory."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    frame = {"command": "login", "username": name, "password": PASSWORD, **extra}
    sock.sendall(json.dumps(frame).encode() + b"\n")
    return sock


def read_a_replay(port: int, name: str) -> int:
    """Log in with ``since: 0`` and read the whole replay; its size in bytes."""
    sock = login_and_stall(port, name, since=0)
    got = 0
    tail = b""
    while b'"replay_done"' not in tail:
        data = sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection during the replay")
        got += len(data)
        tail = (tail + data)[-200:]
    sock.close()
    return got


def settle(pid: int, window: float) -> float:
    """Wait until the server's CPU is idle for half a second (its replays wait for the
    clients), at most ``window`` s; the seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < window:
        cpu = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - cpu < 0.02:
            break
    return time.monotonic() - began


def run(tmp: Path, kind: str, window: float) -> dict[str, Any]:
    db = tmp / f"{kind}.db"
    if kind == "resume":
        clients = [f"reader{i}" for i in range(20)]
        body = "x" * 3900
        msgs = [NewMessage("writer", None, body, 1.0 + i) for i in range(10_000)]
        fill(db, ["writer", *clients], msgs)
        logins: list[tuple[str, dict[str, Any]]] = [(n, {"since": 0}) for n in clients]
    else:
        body = "y" * 3900
        msgs = [NewMessage("writer", "away", body, 1.0 + i, inbox=True) for i in range(20_000)]
        fill(db, ["writer", "away"], msgs)
        logins = [("away", {})]
    with start_server("ours", tmp, *ARGS, db=kind) as (proc, port):
        read_a_replay(port, "writer")  # warm: see the module docstring
        settle(proc.pid, window)
        idle = rss_kib(proc.pid)
        # The high-water mark from here on: the warm-up's own peak is not the clients'.
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
        socks = [login_and_stall(port, name, **extra) for name, extra in logins]
        waited = settle(proc.pid, window)
        peak = peak_kib(proc.pid)
        now = rss_kib(proc.pid)
        for s in socks:
            s.close()
    bound = idle + len(logins) * MAX_OUTPUT // 1024
    return {
        "run": kind,
        "clients": len(logins),
        "stored": len(msgs),
        "idle_mib": round(idle / 1024, 1),
        "peak_mib": round(peak / 1024, 1),
        "after_mib": round(now / 1024, 1),
        "bound_mib": round(bound / 1024, 1),
        "within_bound": peak <= bound,
        "waited_s": round(waited, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--window", type=float, default=8.0, help="seconds to wait at most")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp_s:
        for kind in ("resume", "inbox"):
            r = run(Path(tmp_s), kind, a.window)
            results.append(r)
            print(
                f"{kind}: {r['clients']} client(s), {r['stored']:,} stored: RSS idle "
                f"{r['idle_mib']} MiB, peak {r['peak_mib']} MiB (bound {r['bound_mib']} MiB: "
                f"{'within' if r['within_bound'] else 'OVER'}), {r['after_mib']} MiB after "
                f"{r['waited_s']} s",
                flush=True,
            )
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
