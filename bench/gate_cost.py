"""What server bans cost (chatroom_server.servergate): the address check every login now
makes, and the scan of the sessions each server makes when the bans change.

    .venv/bin/python bench/gate_cost.py [--bans 0,10,1000] [--sessions 10000] [--pg URL]

A login reads the address bans (before its password) and, for an existing account,
its name's ban: this times both reads on a SQLite file (and on PostgreSQL with
``--pg``, a database it creates and drops) with N address bans stored. The scan is
what the watch does once when a ban is added: every logged-in session against the name
bans and the networks.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
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


def _time_checks(gate: servergate.ServerGate, rounds: int) -> tuple[float, float]:
    """Median µs of (the address check, the name check) over ``rounds`` each."""
    now = time.time()
    out = []
    checks: list[Callable[[], object]] = [
        lambda: gate.check_address("198.51.100.7", now, None),
        lambda: gate.banned("alice", now),
    ]
    for check in checks:
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(rounds):
                check()
            samples.append((time.perf_counter() - t0) / rounds * 1e6)
        out.append(statistics.median(samples))
    return out[0], out[1]


def sqlite_gate(n: int, rounds: int) -> tuple[float, float]:
    import sqlite3

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
            return _time_checks(gate, rounds)
        finally:
            gate.close()


def pg_gate(url: str, n: int, rounds: int) -> tuple[float, float]:
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
        addr, name = sqlite_gate(n, a.rounds)
        print(f"{n:5d} address bans, SQLite: address check {addr:7.1f} µs, name {name:5.1f} µs")
        if a.pg:
            addr, name = pg_gate(a.pg, n, a.rounds)
            print(f"{n:5d} address bans, PostgreSQL: address {addr:7.1f} µs, name {name:5.1f} µs")
        ms = scan_ms(a.sessions, n)
        print(f"{n:5d} address bans, one scan of {a.sessions} sessions: {ms:8.1f} ms")


if __name__ == "__main__":
    main()
