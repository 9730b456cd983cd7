"""The message log's cost, measured (docs/PERFORMANCE.md, "The message log").

In one run, on fresh servers, alternating so drift hits both alike:

- fan-out N=100 (10 senders, PMs) and DM pairs (100 bots): max sustainable deliveries/s
  (p99 < 50 ms, nothing lost) and p99 at half that rate, ``--history on`` against
  ``--history off``;
- resume: a client that missed 10,000 messages logs in with ``since``: time from sending
  the login to the last byte of ``replay_done`` on its socket;
- history pages with 1,000,000 messages stored: p50/p99 of a ``history`` round trip at
  random cursors, public and DM;
- bytes per stored message, from the database's page count.

    .venv/bin/python bench/history_bench.py [--quick] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import start_server
from run_bench import dm_pairs, fanout

from chatroom.protocol import FrameDecoder
from chatroom_server.accounts import LOAD_TEST_HASHER, AccountStore
from chatroom_server.messagelog import MessageLog, NewMessage

QUIET = ("--users-interval", "0", "--rate-limit", "off")


class Line:
    """A blocking JSON-lines client (no SDK, so only the server is measured)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.dec = FrameDecoder(1 << 26)
        self.frames: list[bytes] = []

    def send(self, **frame: Any) -> None:
        self.sock.sendall(json.dumps(frame).encode() + b"\n")

    def until(self, needle: bytes) -> bytes:
        """Read frames until one contains ``needle``; return it."""
        while True:
            while self.frames:
                f = self.frames.pop(0)
                if needle in f:
                    return f
            data = self.sock.recv(65536)  # not 1 MiB: an mmap per read (PERFORMANCE.md)
            if not data:
                raise EOFError
            self.frames = self.dec.feed(data)

    def close(self) -> None:
        self.sock.close()


def login(port: int, name: str, **extra: Any) -> tuple[Line, dict[str, Any]]:
    c = Line(port)
    c.send(command="login", username=name, password="bench password", **extra)
    ok = json.loads(c.until(b'"login_ok"'))
    return c, ok


def fan_and_dm(history: str, quick: bool, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with start_server("ours", tmp, *QUIET, "--history", history, db=f"fan-{history}") as (
        proc,
        port,
    ):
        out["fanout"] = fanout("ours", port, proc.pid, 100, 500.0, quick)
    with start_server("ours", tmp, *QUIET, "--history", history, db=f"dm-{history}") as (_, port):
        found = dm_pairs(port, quick)
        out["dm_max"] = found["best"]
    return out


def resume(tmp: Path, missed: int) -> dict[str, Any]:
    with start_server("ours", tmp, *QUIET, "--password-hash", "load-test", db="resume") as (
        _,
        port,
    ):
        reader, ok = login(port, "reader")
        cursor = ok["seq"]
        reader.close()
        sender, _ = login(port, "sender")
        for i in range(missed):
            sender.send(command="pm", message=f"missed message number {i:05d} " + "x" * 40)
        sender.send(command="ping", id="done")
        sender.until(b'"pong"')
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            c, _ = login(port, "reader", since=cursor)
            done = json.loads(c.until(b'"replay_done"'))
            times.append(time.perf_counter() - t0)
            assert done["count"] == missed, done
            c.close()
    return {"missed": missed, "seconds": times, "median_s": statistics.median(times)}


def history_pages(tmp: Path, stored: int, queries: int) -> dict[str, Any]:
    db = tmp / "million.db"
    AccountStore(db, LOAD_TEST_HASHER).close()  # the accounts table, as the server makes it
    mlog = MessageLog(db)
    names = [f"user{i}" for i in range(100)]
    rng = random.Random(1)
    t0 = time.perf_counter()
    batch = 20_000
    for start in range(0, stored, batch):
        group = []
        for _ in range(min(batch, stored - start)):
            a = rng.choice(names)
            to = rng.choice(names) if rng.random() < 0.2 else None  # a fifth are DMs
            group.append(NewMessage(a, to, "a typical chat line of some sixty characters..", 0.0))
        mlog.append(group)
    fill = time.perf_counter() - t0
    size = mlog.stats()
    last = mlog.last_seq
    mlog.close()
    out: dict[str, Any] = {
        "stored": stored,
        "fill_seconds": fill,
        "bytes_per_message": size["bytes"] / max(1, size["messages"]),
        "db_bytes": size["bytes"],
    }
    with start_server("ours", tmp, *QUIET, "--password-hash", "load-test", db="million") as (
        _,
        port,
    ):
        c, _ = login(port, "user1")
        for kind, extra in (("public", {}), ("dm", {"with": "user2"})):
            lat = []
            for i in range(queries):
                before = rng.randint(1, last)
                t = time.perf_counter()
                c.send(command="history", before=before, limit=50, id=i, **extra)
                c.until(b'"history"')
                lat.append(1000 * (time.perf_counter() - t))
            lat.sort()
            out[kind] = {
                "p50_ms": lat[len(lat) // 2],
                "p99_ms": lat[int(len(lat) * 0.99)],
                "max_ms": lat[-1],
            }
        c.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="coarser rate steps, fewer messages")
    ap.add_argument("--rounds", type=int, default=2, help="alternating on/off rounds")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    results: dict[str, Any] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        for r in range(a.rounds):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                print(f"round {r + 1}, history {mode}", flush=True)
                (tmp / f"{mode}{r}").mkdir()
                results[mode].append(fan_and_dm(mode, a.quick, tmp / f"{mode}{r}"))
        print("resume of 10,000 missed messages", flush=True)
        results["resume"] = resume(tmp, 10_000)
        print("history pages with stored messages", flush=True)
        results["history"] = history_pages(tmp, 100_000 if a.quick else 1_000_000, 1000)
    print(json.dumps(summary(results), indent=2))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


def summary(results: dict[str, Any]) -> dict[str, Any]:
    def best(mode: str, key: str) -> list[float]:
        rows = [r[key]["max"] if key == "fanout" else r[key] for r in results[mode]]
        return [row["deliveries_per_s"] if row else 0.0 for row in rows]

    out: dict[str, Any] = {}
    for key in ("fanout", "dm_max"):
        on, off = best("on", key), best("off", key)
        out[key] = {
            "on": on,
            "off": off,
            "on/off (medians)": statistics.median(on) / max(1.0, statistics.median(off)),
        }
    out["fanout_half_p99_ms_on"] = [r["fanout"].get("half_p99_ms") for r in results["on"]]
    out["fanout_half_p99_ms_off"] = [r["fanout"].get("half_p99_ms") for r in results["off"]]
    out["fanout_cpu_ms_per_1k_on"] = [r["fanout"]["fixed_cpu_ms_per_1k"] for r in results["on"]]
    out["fanout_cpu_ms_per_1k_off"] = [r["fanout"]["fixed_cpu_ms_per_1k"] for r in results["off"]]
    out["resume"] = results["resume"]
    out["history"] = results["history"]
    return out


if __name__ == "__main__":
    main()
