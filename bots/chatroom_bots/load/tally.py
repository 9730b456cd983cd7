"""chat-load's accounting: the workers' ticks and final counts merged into one
:class:`~chatroom_bots.load.result.LoadResult` (totals, per-second timeline, warnings)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from hdrh.histogram import HdrHistogram

from chatroom_bots.load import procstat
from chatroom_bots.load.result import CURVE_PERCENTILES, LoadResult
from chatroom_bots.load.rooms import RoomPlan, size_label
from chatroom_bots.load.stats import merge_histograms, new_histogram, percentiles, record_counts


def add_tick(
    ticks: dict[int, list[dict[str, Any]]],
    payload: dict[str, Any],
    t0: float,
    progress: Callable[[dict[str, Any]], None] | None,
) -> None:
    second = int(time.monotonic() - t0)  # negative while a hold step waits
    ticks.setdefault(second, []).append(payload)
    if progress is not None and len(ticks.get(second, [])) == 1 and second - 1 in ticks:
        progress(second_row(second - 1, ticks[second - 1]))


def second_row(second: int, parts: list[dict[str, Any]]) -> dict[str, Any]:
    pct = percentiles(histogram(parts))
    return {
        "second": second,
        "sent": sum(p["sent"] for p in parts),
        "delivered": sum(p["delivered"] for p in parts),
        "duplicates": sum(p.get("duplicates", 0) for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "disconnects": sum(p.get("disconnects", 0) for p in parts),
        "p50_ms": pct["p50"],
        "p99_ms": pct["p99"],
        "p999_ms": pct["p99.9"],
        "lag_ms": round(1000 * max((p.get("max_lag", 0.0) for p in parts), default=0.0), 2),
        "cpu": round(max((p["cpu"] for p in parts), default=0.0), 2),
    }


def timeline(
    ticks: dict[int, list[dict[str, Any]]],
    logged_in: int,
    server: dict[int, procstat.ProcSample],
    finals: list[dict[str, Any]],
    rooms: bool = False,
) -> list[dict[str, Any]]:
    """One row a second from the first send: the workers' ticks, what was expected and
    is still outstanding (a public message is expected by every other bot, a DM by one),
    what was lost of what was sent in that second, and, where the server was sampled,
    its CPU (% of a core) and RSS over that second.

    Loss comes from the workers' final counts (``finals``), by the intended send time on
    both sides, so a message still in flight when a second ends is not loss, and the
    rows' ``lost`` add up to the run's. ``outstanding`` counts by the second each tick
    arrived, and the workers tick at different moments: mid-run it is mostly in flight.
    With ``rooms`` (--rooms) a public message is expected by its room's other members,
    which the workers count as they send (``expected_rooms``, ``expected_by_second``).
    """
    pm: Counter[int] = Counter()
    dm: Counter[int] = Counter()
    arrived: Counter[int] = Counter()
    in_rooms: Counter[int] = Counter()  # --rooms: deliveries expected, by second sent
    for f in finals:
        pm.update(f["sent_by_second"]["pm"])
        dm.update(f["sent_by_second"]["dm"])
        arrived.update(f["seen_by_second"])
        in_rooms.update(f.get("expected_by_second", {}))
    rows = []
    expected = seen = 0
    for s in sorted(k for k in ticks.keys() | pm.keys() | dm.keys() if k >= 0):
        parts = ticks.get(s, [])
        row = second_row(s, parts)
        if not row["delivered"]:  # no latency measured: a gap in the chart, not 0 ms
            row["p50_ms"] = row["p99_ms"] = row["p999_ms"] = None
        if not row["sent"]:
            row["lag_ms"] = None  # nothing was sent, so nothing was late
        if not parts:
            row["cpu"] = None  # no worker reported in this second
        tick_pm = sum(p.get("sent_pm", 0) for p in parts)
        if rooms:
            public = sum(p.get("expected_rooms", 0) for p in parts)
            due = in_rooms[s] + dm[s]
        else:
            public = tick_pm * max(0, logged_in - 1)
            due = pm[s] * max(0, logged_in - 1) + dm[s]
        row["expected"] = public + (row["sent"] - tick_pm)
        expected += row["expected"]
        seen += row["delivered"] - row["duplicates"]
        row["outstanding"] = max(0, expected - seen)
        row["lost"] = max(0, due - arrived[s]) if s in pm or s in dm else None
        a, b = server.get(s), server.get(s + 1)
        if a is not None and b is not None and b.at > a.at:
            row["server_cpu"] = round(100 * (b.cpu_seconds - a.cpu_seconds) / (b.at - a.at), 1)
            row["server_rss_mib"] = round(b.rss_bytes / 2**20, 1)
        rows.append(row)
    return rows


def server_totals(
    result: LoadResult, samples: list[procstat.ProcSample], last: procstat.ProcSample | None
) -> None:
    """The server's CPU from the step's first sample to the end, its largest RSS, and its
    RSS as the step began (every client logged in, nothing sent yet)."""
    if last is not None:
        samples = [*samples, last]
    if len(samples) < 2:
        return
    result.server_cpu_seconds = samples[-1].cpu_seconds - samples[0].cpu_seconds
    result.server_rss_mib = max(s.rss_bytes for s in samples) / 2**20
    result.server_idle_rss_mib = samples[0].rss_bytes / 2**20


def histogram(parts: Iterable[dict[str, Any]]) -> HdrHistogram:
    """One histogram from the workers' ``{µs: deliveries}`` counts (workers count; this
    process, which only waits, builds histograms: see recorder.Recorder)."""
    h = new_histogram()
    for p in parts:
        record_counts(h, p["latency"])
    return h


def merge(
    result: LoadResult,
    finals: list[dict[str, Any]],
    ticks: list[dict[str, Any]],
    rooms: RoomPlan | None = None,
) -> None:
    for key in (
        "sent_pm",
        "sent_dm",
        "delivered",
        "duplicates",
        "out_of_order",
        "errors",
        "disconnects",
        "late_sends",
    ):
        setattr(result, key, sum(f[key] for f in finals))
    result.max_lag = max(f["max_lag"] for f in finals)
    result.generator_cpu_seconds = sum(f.get("cpu_seconds", 0.0) for f in finals)
    result.replayed = sum(f["replayed"] for f in finals)
    resumes = merge_histograms(f["resumes"] for f in finals)
    result.resumes = resumes.get_total_count()
    if result.resumes:
        result.resume_ms = percentiles(resumes)
    # The step's latencies: every second the workers reported, and the rest in finals.
    hist = histogram([*ticks, *finals])
    result.latency_ms = percentiles(hist)
    if hist.get_total_count():
        result.latency_curve = [
            (p, hist.get_value_at_percentile(p) / 1000) for p in CURVE_PERCENTILES
        ]
    # A public message is expected by every other bot, a DM by its one target.
    result.expected = result.sent_pm * (result.logged_in - 1) + result.sent_dm
    if rooms is not None:
        merge_rooms(result, finals, ticks, rooms)


def merge_rooms(
    result: LoadResult, finals: list[dict[str, Any]], ticks: list[dict[str, Any]], plan: RoomPlan
) -> None:
    """--rooms: a message to a room is expected by its other members; the counts per room
    and per room size class, and the deliveries the plan does not allow (``foreign``)."""
    sent: Counter[int] = Counter()
    delivered: Counter[int] = Counter()
    duplicates: Counter[int] = Counter()
    for f in finals:
        sent.update(f["sent_by_room"])
        delivered.update(f["delivered_by_room"])
        duplicates.update(f["duplicates_by_room"])
    result.foreign = sum(f["foreign"] for f in finals)
    result.rooms = []
    for r, (name, members) in enumerate(zip(plan.names, plan.members, strict=True)):
        expected = sent[r] * (len(members) - 1)
        result.rooms.append(
            {
                "name": name,
                "members": len(members),
                "sent": sent[r],
                "expected": expected,
                "delivered": delivered[r],
                "duplicates": duplicates[r],
                "lost": max(0, expected - (delivered[r] - duplicates[r])),
            }
        )
    result.expected = sum(row["expected"] for row in result.rooms) + result.sent_dm
    # Per size class, smallest first, with the latencies of the deliveries in its rooms.
    classes: dict[str, dict[str, Any]] = {}
    for row in sorted(result.rooms, key=lambda row: row["members"]):
        label = size_label(row["members"])
        into = classes.setdefault(label, {"size": label, "rooms": 0})
        into["rooms"] += 1
        for key in ("members", "sent", "expected", "delivered", "duplicates", "lost"):
            into[key] = into.get(key, 0) + row[key]
    for label, into in classes.items():
        h = new_histogram()
        for part in (*ticks, *finals):
            record_counts(h, part.get("latency_by_size", {}).get(label, {}))
        into["latency_ms"] = percentiles(h)
    result.room_sizes = list(classes.values())


def warn(result: LoadResult) -> None:
    if result.late_sends:
        result.warnings.append(
            f"the generator fell behind its schedule: {result.late_sends} sends over 10 ms "
            f"late (worst {result.max_lag * 1000:.0f} ms); latencies include that lag"
        )
    busy = [r for r in result.timeline if (r["cpu"] or 0) > 0.9]
    if busy:
        result.warnings.append(
            f"a generator process used over 90 % of a core in {len(busy)} of "
            f"{len(result.timeline)} seconds: the generator may be the bottleneck"
        )
