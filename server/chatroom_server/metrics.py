"""What the server counts for its metrics (chatroom_server.admin_http serves them):
plain integers and bucket counts, kept where the events happen, read when scraped.

Nothing here is per delivery. The fan-out counts once per pass under the lock it
already holds (:class:`FanOutStats`); the rarer events (connections, logins, replays,
drops) go through a :class:`Tally`, one short lock each. Reading them is the scrape's
work, not the traffic's: docs/OPERATIONS.md has the cost, measured with bench/ab.py.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from typing import Final

# Seconds: a fan-out pass or a commit, from a tenth of a millisecond to seconds.
TIME_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class Histogram:
    """Counts per bucket and a sum; one owner writes (whoever holds its owner's lock),
    a scrape reads (a stale count by one is what a scrape a moment earlier would see)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Iterable[float] = TIME_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus's buckets: (upper bound, observations at most it), ``+Inf`` last."""
        out, running = [], 0
        counts = list(self.counts)
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class FanOutStats:
    """The fan-out's counts, written only under the FanOut's lock."""

    __slots__ = ("commit", "deliveries", "messages", "pass_time", "passes", "storage_errors")

    def __init__(self) -> None:
        self.passes = 0
        self.messages = 0  # stored (with the log) or broadcast (without)
        self.deliveries = 0  # messages times the recipients each went to (a live DM: 1)
        self.pass_time = Histogram()
        self.commit = Histogram()  # the message log's group commits
        self.storage_errors = 0  # passes whose messages could not be stored, ever


class Tally:
    """Named counters that any thread adds to, under one lock."""

    def __init__(self, *names: str) -> None:
        self._lock = threading.Lock()  # guards _values
        self._values = dict.fromkeys(names, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


def server_tally() -> Tally:
    """The ChatServer's: connections accepted, logins that passed and failed, replays
    and how many of them began with replay_truncated, slow consumers disconnected."""
    return Tally("accepted", "logins", "login_failures", "replays", "replays_truncated", "drops")
