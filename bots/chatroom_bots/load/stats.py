"""Latency histograms (HdrHistogram, microseconds) and the load test's message payload."""

from __future__ import annotations

import re
from collections.abc import Iterable

from faker import Faker
from hdrh.histogram import HdrHistogram

__all__ = [
    "PERCENTILES",
    "make_names",
    "merge_histograms",
    "new_histogram",
    "pack",
    "percentiles",
    "unpack",
]

MAX_US = 3_600_000_000  # an hour: anything slower is clamped
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, MAX_US, 3)


def record(h: HdrHistogram, micros: int) -> None:
    h.record_value(min(max(micros, 1), MAX_US))


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


# The message payload: "L<sender>:<seq>:<intended µs>:" padded with "x" to --size bytes.
_PAYLOAD = re.compile(r"L(\d+):(\d+):(\d+):")


def pack(sender: int, seq: int, intended_us: int, size: int) -> str:
    head = f"L{sender}:{seq}:{intended_us}:"
    return head + "x" * max(0, size - len(head))


def unpack(message: str) -> tuple[int, int, int] | None:
    """(sender, seq, intended µs) of a load message, None for anything else."""
    m = _PAYLOAD.match(message)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


_INVALID = re.compile(r"[^A-Za-z0-9_-]")


def make_names(n: int, seed: int) -> list[str]:
    """``n`` distinct valid usernames from faker, the same for the same seed."""
    fake = Faker()
    fake.seed_instance(seed)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        base = _INVALID.sub("", fake.user_name())[:24].lstrip("_-") or "bot"
        name = base if base.lower() not in seen else f"{base}{len(names)}"
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        names.append(name)
    return names
