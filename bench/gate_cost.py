"""What server bans cost (chatroom_server.servergate): the address check every login now
makes, and the scan of the sessions each server makes when the bans change.

    .venv/bin/python bench/gate_cost.py [--bans 0,10,1000] [--sessions 10000] [--pg URL]

A login reads the address bans (before its password) and, for an existing account,
its name's ban: this times both reads on a SQLite file (and on PostgreSQL with
``--pg``, a database it creates and drops) with N address bans stored. The scan is
what the watch does once when a ban is added: every logged-in session against the name
bans and the networks.

Then a login's whole gate, A/B in alternating rounds on one SQLite file: the separate
reads a login made (``check_address`` then ``banned``; a registration's
``check_address`` then ``registrations_open``) against the one statement of
``ServerGate.at_login``, alone and beside a busy thread (as the admission thread is in
a storm, where each statement gives the GIL up and waits for it back).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from chatroom_server import modstore, servergate


def _fill(sql: servergate.Sql, n: int) -> None:
    now = time.time()
    for i in range(n):
        net = f"10.{i // 256 % 256}.{i % 256}.0/24"
        servergate.ban_address(sql, net, "bench", None, now)
    servergate.ban(sql, "mallory", "bench", None, now)


def _medians(checks: Sequence[Callable[[], object]], rounds: int) -> list[float]:
    """Median µs of each of ``checks``, over ``rounds`` calls each, in 5 alternating
    rounds (A, B, ..., A, B, ...)."""
    samples: list[list[float]] = [[] for _ in checks]
    for _ in range(5):
        for check, times in zip(checks, samples, strict=True):
            t0 = time.perf_counter()
            for _ in range(rounds):
                check()
            times.append((time.perf_counter() - t0) / rounds * 1e6)
    return [statistics.median(times) for times in samples]


def _time_checks(gate: servergate.ServerGate, rounds: int) -> list[float]:
    """Median µs of the address check, the name check, a return's separate reads and
    ServerGate.at_login, over ``rounds`` each, in alternating rounds."""
    now = time.time()
    return _medians(
        [
            lambda: gate.check_address("198.51.100.7", now, None),
            lambda: gate.banned("alice", now),
            lambda: _separate(gate, now),
            lambda: _one(gate, now),
        ],
        rounds,
    )


@contextlib.contextmanager
def _sqlite_file(n: int) -> Iterator[servergate.ServerGate]:
    """A gate on a SQLite file of its own with ``n`` address bans and a name's ban."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "chat.db"
        db = sqlite3.connect(path, isolation_level=None)
        db.executescript(
            "CREATE TABLE accounts (name TEXT PRIMARY KEY COLLATE NOCASE);"
            + modstore.SQLITE_MODERATION
            + modstore.SQLITE_SERVER_GATE
            + modstore.SQLITE_ADDRESS_BANS
        )
        _fill(servergate.SqliteSql.of(db), n)
        db.close()
        gate = servergate.ServerGate.sqlite(path)
        try:
            yield gate
        finally:
            gate.close()


def sqlite_gate(n: int, rounds: int) -> list[float]:
    with _sqlite_file(n) as gate:
        return _time_checks(gate, rounds)


def pg_gate(url: str, n: int, rounds: int) -> list[float]:
    import psycopg

    from chatroom_server.cluster.pg import PgDatabase, PgSql

    name = f"chatbench_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        database = PgDatabase(f"{url.rsplit('/', 1)[0]}/{name}")
        try:
            sql = PgSql.pooled(database)
            _fill(sql, n)
            return _time_checks(servergate.ServerGate(sql), rounds // 10)
        finally:
            database.close()
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _separate(gate: servergate.ServerGate, now: float) -> None:
    """A login's gate before ServerGate.at_login: a return's two reads."""
    gate.check_address("198.51.100.7", now, None)
    gate.banned("alice", now)


def _one(gate: servergate.ServerGate, now: float) -> None:
    seen = gate.at_login("198.51.100.7", "alice", now, None)
    seen.banned(now)


def _busy(stop: threading.Event) -> None:
    """A thread that wants the GIL all the time (the storm's other threads)."""
    n = 0
    while not stop.is_set():
        n += 1


def login_ab(n: int, rounds: int, busy: bool) -> tuple[float, float]:
    """Median µs per login of (the separate reads, at_login), alternating rounds."""
    with _sqlite_file(n) as gate:
        stop = threading.Event()
        spinner = threading.Thread(target=_busy, args=(stop,), daemon=True)
        if busy:
            spinner.start()
        try:
            now = time.time()
            separate, one = _medians(
                [lambda: _separate(gate, now), lambda: _one(gate, now)], rounds
            )
        finally:
            stop.set()
            if busy:
                spinner.join(timeout=5)
        return separate, one


class _Outbox:
    def finish(self, last: bytes = b"") -> None:
        pass


def scan_ms(sessions: int, n: int) -> float:
    """Median ms of one scan of ``sessions`` against ``n`` networks and a name ban."""
    conns: list[Any] = [
        SimpleNamespace(username=f"u{i}", ip=f"192.0.{i // 256 % 256}.{i % 256}", outbox=_Outbox())
        for i in range(sessions)
    ]
    nets = servergate.Networks(
        servergate.AddressBan(f"10.{i // 256 % 256}.{i % 256}.0/24", 0.0, None, None)
        for i in range(n)
    )
    names = {"mallory": servergate.ServerBan("mallory", 0.0, None, None)}
    samples = []
    for _ in range(3):
        t0 = time.perf_counter()
        servergate._end_banned(conns, names, nets, time.time())
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bans", default="0,10,1000", help="address bans stored (comma-separated)")
    p.add_argument("--sessions", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=5_000)
    p.add_argument("--pg", help="a PostgreSQL server's URL, to time it too")
    a = p.parse_args()
    for n in (int(x) for x in a.bans.split(",")):
        timed = [("SQLite", sqlite_gate(n, a.rounds))]
        if a.pg:
            timed.append(("PostgreSQL", pg_gate(a.pg, n, a.rounds)))
        for db, (addr, name, separate, one) in timed:
            print(
                f"{n:5d} address bans, {db}: address check {addr:7.1f} µs, name {name:5.1f} µs; "
                f"a return's gate: separate reads {separate:7.1f} µs, at_login {one:7.1f} µs"
            )
        ms = scan_ms(a.sessions, n)
        print(f"{n:5d} address bans, one scan of {a.sessions} sessions: {ms:8.1f} ms")
        before, after = login_ab(n, a.rounds, busy=True)
        print(
            f"{n:5d} address bans, SQLite beside a busy thread, a return's gate: "
            f"separate reads {before:7.1f} µs, at_login {after:7.1f} µs"
        )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
