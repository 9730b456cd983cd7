"""Where a lone message's commit goes: :meth:`MessageLog.append` of this tree against
what it would cost with each of the cuts issue 35 proposes, and against the floors no
single commit can go below, alternating in one run.

    .venv/bin/python bench/log_floor.py [--rounds 3] [--messages 8000] [--warm 4000]
        [--fill 20000] [--rooms 100] [--senders 100]

Each variant, in each round, gets a fresh log of ``--fill`` room messages (its WAL
checkpointed away), stores ``--warm`` lone messages not counted (so WAL checkpoints
come at their steady pace), then ``--messages`` more, each a group of its own as a
small room at a quiet rate makes them (a room message with a cid, from ``--senders``
senders in ``--rooms`` rooms, as chat-load sends). Reported per message: the process's CPU, the mean
(checkpoints included), and the median of one ``append``'s, each the median over the
rounds; and the mean against today's. The variants:

- ``today``: this tree's log as the server runs it.
- ``unix-excl``: every connection through SQLite's ``unix-excl`` VFS (the WAL index in
  the heap, no ``fcntl`` per commit; other processes locked out of the file).
- ``no cid index``: ``messages_by_cid`` dropped (one B-tree page fewer per commit;
  resends no longer recognised).
- ``unix-excl and no cid index``: both.
- ``synchronous=OFF``: no fsync at checkpoints (a power loss could then corrupt the
  file; a killed process loses nothing either way).
- ``checkpoints every 4,000 pages`` and ``10,000``: the writer's
  ``wal_autocheckpoint`` (1,000 today), so a checkpoint copies back each page written
  many times once for more messages, and fsyncs less often; the WAL grows to 16 or 40
  MiB, and each checkpoint holds the fan-out's lock longer.
- ``writer's cache 64 MiB``: the writer's page cache (2 MiB by default), so that a
  large log's index leaves stay in memory between the messages that write them.
- ``rows without a commit``: every message in one open transaction, committed at the end:
  the rows' own price, what no commit per message can go below.
- ``groups of 2``, ``4``, ``10``: that many messages (as many rooms) a group, the
  price per message.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from chatroom_server.messagelog import MessageLog, NewMessage

# The shape of the traffic (main's options).
SHAPE = {"rooms": 100, "senders": 100}


class _Excl(MessageLog):
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            f"file:{self.path}?vfs=unix-excl",
            uri=True,
            check_same_thread=False,
            isolation_level=None,
            timeout=self._busy,
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._sync}")
        return db


class _SyncOff(MessageLog):
    def _connect(self) -> sqlite3.Connection:
        db = super()._connect()
        db.execute("PRAGMA synchronous=OFF")
        return db


def _checkpoint_every(pages: int) -> Callable[[MessageLog], None]:
    def prepare(mlog: MessageLog) -> None:
        mlog._db.execute(f"PRAGMA wal_autocheckpoint={pages}")

    return prepare


def _cache_mib(mib: int) -> Callable[[MessageLog], None]:
    def prepare(mlog: MessageLog) -> None:
        mlog._db.execute(f"PRAGMA cache_size={-1024 * mib}")

    return prepare


def _message(i: int) -> NewMessage:
    # Senders spread over the rooms rather than each in one (7919 is prime).
    sender = f"user{i * 7919 % SHAPE['senders']}"
    return NewMessage(
        sender, None, "a line of chat text " * 2, 1.0, f"c{i}", room=f"r{i % SHAPE['rooms']}"
    )


def _drop_cid(mlog: MessageLog) -> None:
    mlog._db.execute("DROP INDEX messages_by_cid")


# name -> (the log's class, what is done to it after the fill, messages a group,
# one open transaction around the measured appends)
Variant = tuple[type[MessageLog], Callable[[MessageLog], None] | None, int, bool]
VARIANTS: dict[str, Variant] = {
    "today": (MessageLog, None, 1, False),
    "unix-excl": (_Excl, None, 1, False),
    "no cid index": (MessageLog, _drop_cid, 1, False),
    "unix-excl and no cid index": (_Excl, _drop_cid, 1, False),
    "synchronous=OFF": (_SyncOff, None, 1, False),
    "checkpoints every 4,000 pages": (MessageLog, _checkpoint_every(4000), 1, False),
    "checkpoints every 10,000 pages": (MessageLog, _checkpoint_every(10_000), 1, False),
    "writer's cache 64 MiB": (MessageLog, _cache_mib(64), 1, False),
    "rows without a commit": (MessageLog, None, 1, True),
    "groups of 2": (MessageLog, None, 2, False),
    "groups of 4": (MessageLog, None, 4, False),
    "groups of 10": (MessageLog, None, 10, False),
}


def measure(name: str, messages: int, warm: int, fill: int) -> tuple[float, float]:
    """µs of process CPU per message (mean), and the median append's per message."""
    cls, prepare, size, one_txn = VARIANTS[name]
    with tempfile.TemporaryDirectory() as tmp:
        mlog = cls(Path(tmp) / "chat.db")
        try:
            for start in range(0, fill, 10_000):
                mlog.append([_message(i) for i in range(start, min(fill, start + 10_000))])
            mlog._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if prepare is not None:
                prepare(mlog)
            n = fill
            for _ in range(warm // size):
                mlog.append([_message(n + k) for k in range(size)])
                n += size
            groups = [
                [_message(n + g * size + k) for k in range(size)] for g in range(messages // size)
            ]
            took = []
            if one_txn:
                mlog._db.execute("BEGIN IMMEDIATE")
            began = time.process_time()
            for group in groups:
                t0 = time.thread_time()
                mlog.append(group)
                took.append(time.thread_time() - t0)
            if one_txn:
                mlog._db.execute("COMMIT")
            total = time.process_time() - began
        finally:
            mlog.close()
    return 1e6 * total / (len(groups) * size), 1e6 * statistics.median(took) / size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=8000)
    ap.add_argument("--warm", type=int, default=4000)
    ap.add_argument("--variants", help="comma-separated names (default: all)")
    ap.add_argument("--fill", type=int, default=20_000, help="messages stored first")
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--senders", type=int, default=100)
    a = ap.parse_args()
    SHAPE.update(rooms=a.rooms, senders=a.senders)
    chosen = a.variants.split(",") if a.variants else list(VARIANTS)
    if unknown := [name for name in chosen if name not in VARIANTS]:
        ap.error(f"no such variant: {', '.join(unknown)} (there are: {', '.join(VARIANTS)})")
    got: dict[str, list[tuple[float, float]]] = {name: [] for name in chosen}
    loads = [os.getloadavg()[0]]
    for i in range(a.rounds):
        # Alternating: each round runs every variant, in reverse order every other round.
        names = chosen if i % 2 == 0 else list(reversed(chosen))
        for name in names:
            got[name].append(measure(name, a.messages, a.warm, a.fill))
            mean, median = got[name][-1]
            print(f"round {i + 1} {name}: mean {mean:.1f} median {median:.1f}", flush=True)
        loads.append(os.getloadavg()[0])
    base = statistics.median(m for m, _ in got[chosen[0]])
    print(
        f"\n{a.fill} messages stored, {a.rooms} rooms, {a.senders} senders; "
        f"CPU µs per message, medians of {a.rounds} rounds "
        f"(load average {min(loads):.1f}-{max(loads):.1f})"
    )
    print(f"| variant | mean | against {chosen[0]} | median append |")
    print("| --- | ---: | ---: | ---: |")
    for name in chosen:
        mean = statistics.median(m for m, _ in got[name])
        median = statistics.median(d for _, d in got[name])
        print(f"| {name} | {mean:.1f} | {mean / base:.2f} | {median:.1f} |")


if __name__ == "__main__":
    main()
