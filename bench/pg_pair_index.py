"""PostgreSQL's index of messages by pair, full (schema 5) against partial (schema 6,
only the DMs: chatroom_server.cluster.pgschema), in one run on one PostgreSQL.

    .venv/bin/python bench/pg_pair_index.py [--url postgresql://postgres@127.0.0.1/postgres]
                                            [--rows 1000000] [--rounds 5] [--groups 500]

Two fresh databases, one per schema, each filled with ``--rows`` messages as a room's
traffic makes them (a fifth DMs, every message with a cid), by one INSERT ... SELECT
each (its wall time: the bulk insert cost). Then, alternating A, B, B, A for
``--rounds``: ``--groups`` appends of one public message through
``PgMessageLog.append`` (the server's path: advisory lock, pipeline, commit), wall µs
per append; and 100 such INSERTs alone (EXPLAIN (ANALYZE, WAL), rolled back): the
median server time of one (no round trip, no commit: what the index adds is a larger
part of it) and the WAL it writes (per statement, so other users of the server do not
blur it). Printed: the pair index's size and the
table's with its indexes, the fill time, and per round and as medians the append cost.
Both databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import psycopg

from chatroom_server.cluster import pgschema
from chatroom_server.cluster.pg import PgDatabase, PgMessageLog
from chatroom_server.messagelog import NewMessage

FILL = """
INSERT INTO chat_messages (seq, ts, sender, sender_key, recipient, recipient_key, pair,
                           body, cid, room, event)
SELECT g, g::float8, 'user' || (g %% 100), 'user' || (g %% 100),
       CASE WHEN g %% 5 = 0 THEN 'user' || ((g + 1) %% 100) END,
       CASE WHEN g %% 5 = 0 THEN 'user' || ((g + 1) %% 100) END,
       CASE WHEN g %% 5 = 0 THEN
         least('user' || (g %% 100), 'user' || ((g + 1) %% 100)) || ' ' ||
         greatest('user' || (g %% 100), 'user' || ((g + 1) %% 100)) END,
       'message number ' || g || ' of the benchmark', 'c' || g,
       CASE WHEN g %% 5 = 0 THEN NULL ELSE 'lobby' END, NULL
FROM generate_series(1, %s) AS g
"""


@contextmanager
def database(base: str) -> Iterator[str]:
    name = f"chatbench_{secrets.token_hex(4)}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{base.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def prepare(url: str, version: int, rows: int) -> dict[str, Any]:
    """Schema ``version``, ``rows`` messages; the sizes and the fill's wall time."""
    with psycopg.connect(url, autocommit=True) as db:
        pgschema.migrate(db, pgschema.PG_STEPS[:version])
        started = time.perf_counter()
        db.execute(FILL, (rows,))
        fill = time.perf_counter() - started
        db.execute("VACUUM ANALYZE chat_messages")
        index = "chat_messages_by_pair" if version < 6 else "chat_dms_by_pair"
        row = db.execute(
            "SELECT pg_relation_size(%s), pg_total_relation_size('chat_messages'), "
            "pg_indexes_size('chat_messages')",
            (index,),
        ).fetchone()
        assert row is not None
    return {"index": index, "pair": row[0], "total": row[1], "indexes": row[2], "fill": fill}


def one_insert(url: str, seq: int, n: int = 100) -> tuple[float, float]:
    """``n`` public messages' INSERTs in one transaction, rolled back: the median WAL
    bytes and server execution µs (EXPLAIN ANALYZE: no round trip, no commit) of one."""
    wal, took = [], []
    with psycopg.connect(url) as db:
        for i in range(n):
            plan = db.execute(
                "EXPLAIN (ANALYZE, WAL, FORMAT JSON) INSERT INTO chat_messages (seq, ts, "
                "sender, sender_key, body, cid, room) VALUES (%s, 0, 'wal', 'wal', "
                "'a public message', %s, 'lobby')",
                (seq + i, f"wal{seq + i}"),
            ).fetchone()
            assert plan is not None
            wal.append(float(plan[0][0]["Plan"]["WAL Bytes"]))
            took.append(float(plan[0][0]["Execution Time"]) * 1000)
        db.rollback()
    return statistics.median(wal), statistics.median(took)


class _Database:
    """What PgMessageLog uses of a PgDatabase, without its migration."""

    def __init__(self, url: str) -> None:
        self.url, self.timeout, self.epoch = url, 5.0, "bench"

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(self.url, autocommit=True) as db:
            yield db

    def describe(self) -> str:
        return self.url


def appends(log: PgMessageLog, groups: int, round_: int) -> float:
    """Wall µs per append of one public message."""
    started = time.perf_counter()
    for i in range(groups):
        log.append(
            [NewMessage(f"user{i % 100}", None, "a public message", time.time(), f"r{round_}-{i}")]
        )
    return (time.perf_counter() - started) / groups * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--groups", type=int, default=500)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    sides = {"A full (schema 5)": 5, "B partial (schema 6)": 6}
    with database(args.url) as url_a, database(args.url) as url_b:
        urls = dict(zip(sides, (url_a, url_b), strict=True))
        for side, version in sides.items():
            s = prepare(urls[side], version, args.rows)
            print(
                f"{side}: {args.rows:,} rows filled in {s['fill']:.1f} s; {s['index']} "
                f"{s['pair'] / 2**20:.1f} MiB, all indexes {s['indexes'] / 2**20:.1f} MiB, "
                f"table with indexes {s['total'] / 2**20:.1f} MiB"
            )
        # A PgDatabase would migrate A to schema 6: each log on a stand-in of its own.
        logs = {
            side: PgMessageLog(cast(PgDatabase, _Database(url)), publish=lambda stored: None)
            for side, url in urls.items()
        }
        cost: dict[str, list[float]] = {side: [] for side in sides}
        wal: dict[str, list[float]] = {side: [] for side in sides}
        server: dict[str, list[float]] = {side: [] for side in sides}
        for r in range(args.rounds):
            # A, B then B, A: neither side always runs right after the other.
            for side in list(sides)[:: 1 if r % 2 == 0 else -1]:
                cost[side].append(appends(logs[side], args.groups, r))
                w, t = one_insert(urls[side], 10 * args.rows + 1000 * r)
                wal[side].append(w)
                server[side].append(t)
            print(
                f"round {r + 1}: "
                + ", ".join(
                    f"{side} {cost[side][-1]:.0f} µs (INSERT {server[side][-1]:.1f} µs)"
                    for side in sides
                )
                + f" (load {os.getloadavg()[0]:.2f})"
            )
        for side in sides:
            print(
                f"{side}: append of one public message, median {statistics.median(cost[side]):.0f}"
                f" µs wall; its INSERT {statistics.median(server[side]):.1f} µs in the server, "
                f"{statistics.median(wal[side]):.0f} B of WAL"
            )
        for log in logs.values():
            log.close()
    print(f"load average at end: {os.getloadavg()}")
    print(
        json.dumps(
            {
                side: {
                    "append_us": statistics.median(cost[side]),
                    "insert_us": statistics.median(server[side]),
                    "wal_bytes": statistics.median(wal[side]),
                }
                for side in sides
            }
        )
    )


if __name__ == "__main__":
    main()
