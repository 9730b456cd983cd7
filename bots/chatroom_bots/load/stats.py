"""Latency histograms (HdrHistogram, microseconds) and the load test's message payload."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

from faker import Faker
from hdrh.histogram import HdrHistogram

from chatroom.protocol import username_key

__all__ = [
    "PAYLOAD",
    "PERCENTILES",
    "make_names",
    "merge_histograms",
    "new_histogram",
    "pack",
    "percentiles",
    "record_counts",
    "unpack",
    "unpack_room",
]

MAX_US = 3_600_000_000  # an hour: anything slower is clamped
# Values below 2**11 µs are kept exactly at 3 significant digits (HdrHistogram's
# sub-bucket count); above, each power of two halves the resolution.
_EXACT_BITS = 11
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, MAX_US, 3)


def record(h: HdrHistogram, micros: int) -> None:
    h.record_value(min(max(micros, 1), MAX_US))


def record_counts(h: HdrHistogram, counts: Mapping[int, int]) -> None:
    """Record ``{µs: how many}`` at once. The load generator counts latencies with a
    ``Counter`` on its hot path (one C-level update per read) instead of calling
    ``record_value`` per delivery (pure Python, ~1.5 µs each: at 100,000 deliveries/s it
    was a seventh of the generator's CPU). Values are first rounded down to the bucket
    the histogram would put them in (3 significant digits: exact below 2,048 µs), so each
    second costs one ``record_value`` per occupied bucket, not per distinct value."""
    buckets: Counter[int] = Counter()
    for micros, n in counts.items():
        v = min(max(micros, 1), MAX_US)
        shift = v.bit_length() - _EXACT_BITS
        buckets[v if shift <= 0 else (v >> shift) << shift] += n
    for v, n in buckets.items():
        h.record_value(v, n)


def merge_histograms(encoded: Iterable[bytes]) -> HdrHistogram:
    """One histogram from many (each ``HdrHistogram.encode()``d, as workers send them)."""
    merged = new_histogram()
    for e in encoded:
        if e:
            merged.decode_and_add(e)
    return merged


def percentiles(h: HdrHistogram) -> dict[str, float]:
    """p50, p90, p99, p99.9 and max, in milliseconds (0 when empty)."""
    if h.get_total_count() == 0:
        return {**{f"p{p:g}": 0.0 for p in PERCENTILES}, "max": 0.0}
    out = {f"p{p:g}": h.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
    out["max"] = h.get_max_value() / 1000
    return out


# The message payload: "L<sender>:<seq>:<intended µs>:" padded with "x" to --size bytes;
# a message to one of chat-load's rooms (--rooms) adds "r<room>:", the room it was sent to,
# so that a receiver can tell a delivery to the wrong room from a right one.
PAYLOAD = re.compile(r"L(\d+):(\d+):(\d+):(?:r(\d+):)?")


def pack(sender: int, seq: int, intended_us: int, size: int, room: int | None = None) -> str:
    head = f"L{sender}:{seq}:{intended_us}:" + ("" if room is None else f"r{room}:")
    return head + "x" * max(0, size - len(head))


def unpack(message: str) -> tuple[int, int, int] | None:
    """(sender, seq, intended µs) of a load message, None for anything else."""
    m = PAYLOAD.match(message)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def unpack_room(message: str) -> tuple[int, int, int, int | None] | None:
    """(sender, seq, intended µs, room or None) of a load message, None for anything else."""
    m = PAYLOAD.match(message)
    if m is None:
        return None
    return int(m[1]), int(m[2]), int(m[3]), None if m[4] is None else int(m[4])


_INVALID = re.compile(r"[^A-Za-z0-9_-]")


def make_names(n: int, seed: int) -> list[str]:
    """``n`` distinct valid usernames from faker, the same for the same seed."""
    fake = Faker()
    fake.seed_instance(seed)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        base = _INVALID.sub("", fake.user_name())[:24].lstrip("_-") or "bot"
        name = base if username_key(base) not in seen else f"{base}{len(names)}"
        if username_key(name) in seen:
            continue
        seen.add(username_key(name))
        names.append(name)
    return names
