"""``chat-load ... --html report.html``: one self-contained file with the run's charts.

The figures are drawn with matplotlib (the ``chatroom[report]`` extra) as SVG and inlined,
so the file opens anywhere with no network: no script, no stylesheet, no font from a CDN.
Every figure has a title and both axes labelled with their units. A second with no data
(no delivery to measure a latency from, nothing sent to be late) is a gap in its line,
never a zero, which would read as fast.
"""

from __future__ import annotations

import html
import io
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from chatroom.extras import require
from chatroom_bots.load.worker import sched_label

if TYPE_CHECKING:
    from chatroom_bots.load.result import LoadResult

__all__ = ["line_chart", "page", "render_html", "write_html"]


def write_html(result: LoadResult, path: str) -> None:
    """Write the report for ``result`` to ``path`` (MissingExtra without matplotlib)."""
    text = render_html(result)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def render_html(result: LoadResult) -> str:
    require("report", "chat-load --html")
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files only
    figures = [svg for svg in _figures(result) if svg]
    c = result.config
    settings = {
        "mode": c.mode,
        "server": f"{c.host}:{c.port}",
        "clients": f"{result.logged_in}/{c.clients}",
        "senders": c.senders,
        "rate": f"{c.rate:g} msg/s",
        "duration": f"{c.duration:g} s",
        "mix": f"{c.pm_fraction:.0%} public, {1 - c.pm_fraction:.0%} DM",
        "size": f"{c.size} B",
        "churn": f"{c.churn:g} cuts/s" if c.churn else "off",
        "rooms": (
            f"{c.rooms}, {c.room_sizes} sizes, {c.rooms_per_bot} per bot" if c.rooms else "lobby"
        ),
        "processes": c.processes,
        # How the generator shared the cores (chatroom_bots.load.worker.set_sched).
        "scheduling": sched_label(c.sched),
        "server pid": c.server_pid if c.server_pid is not None else "not given",
    }
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in settings.items()
    )
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in result.warnings)
    verdict = "OK" if result.ok else "FAILED"
    body = f"""<table>{rows}</table>
<h2>Result</h2>
<pre>{html.escape(result.table())}</pre>
{f"<ul>{warnings}</ul>" if warnings else ""}{_room_table(result)}"""
    heading = f'chat-load {html.escape(c.mode)}: <span class="{verdict.lower()}">{verdict}</span>'
    return page(f"chat-load {c.mode}: {verdict}", heading, body, figures)


# The per room size table (chat-load --rooms): its columns, and the keys of each row.
_ROOM_COLUMNS = (
    ("room size", "size"),
    ("rooms", "rooms"),
    ("members", "members"),
    ("sent", "sent"),
    ("expected", "expected"),
    ("delivered", "delivered"),
    ("lost", "lost"),
    ("duplicates", "duplicates"),
)


def _room_table(result: LoadResult) -> str:
    """--rooms: the counts and latencies per room size class, smallest rooms first."""
    if not result.room_sizes:
        return ""
    head = "".join(f"<th>{name}</th>" for name, _ in _ROOM_COLUMNS)
    head += "<th>p50 (ms)</th><th>p99 (ms)</th><th>max (ms)</th>"
    rows = []
    for row in result.room_sizes:
        ms = row["latency_ms"]
        cells = "".join(f"<td>{html.escape(str(row[key]))}</td>" for _, key in _ROOM_COLUMNS)
        cells += "".join(f"<td>{ms[p]:.2f}</td>" for p in ("p50", "p99", "max"))
        rows.append(f"<tr>{cells}</tr>")
    return f"""
<h2>Per room size</h2>
<p>{result.config.rooms} rooms; {result.foreign} deliveries to a bot outside the message's room.</p>
<table class="rooms"><tr>{head}</tr>{"".join(rows)}</table>"""


def page(title: str, heading: str, body: str, figures: list[str]) -> str:
    """The HTML around a report: ``heading`` and ``body`` are HTML, ``title`` text."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 0.2em 0.8em; text-align: left; }}
th {{ color: #555; font-weight: normal; }} .fig {{ margin: 1.5em 0; }}
pre {{ background: #f4f4f4; padding: 1em; }}
.ok {{ color: #080; }} .failed {{ color: #b00; }}
</style></head><body>
<h1>{heading}</h1>
<p>{time.strftime("%Y-%m-%d %H:%M:%S")}</p>
{body}
{"".join(figures)}
</body></html>
"""


def _figures(result: LoadResult) -> list[str]:
    t = result.timeline
    seconds = [r["second"] for r in t]
    out = []
    if t:
        out.append(
            line_chart(
                "Throughput",
                "time since the first send (s)",
                "messages (per second)",
                [
                    (seconds, [r["sent"] for r in t], "sent"),
                    (seconds, [r["delivered"] for r in t], "delivered"),
                ],
            )
        )
        out.append(
            line_chart(
                "Latency from the intended send time, per second",
                "time since the first send (s)",
                "latency (ms)",
                [
                    (seconds, [r.get("p50_ms") for r in t], "p50"),
                    (seconds, [r.get("p99_ms") for r in t], "p99"),
                    (seconds, [r.get("p999_ms") for r in t], "p99.9"),
                ],
            )
        )
        out.append(
            line_chart(
                "Loss, duplicates, errors and disconnects",
                "time since the first send (s)",
                "count (deliveries, or events per second)",
                [
                    # By the second a message was sent, what never arrived: in-flight
                    # messages are not loss (tally.timeline says how it is counted).
                    (seconds, [r.get("lost") for r in t], "lost, by the second sent"),
                    (seconds, [r.get("duplicates", 0) for r in t], "duplicates per second"),
                    (seconds, [r["errors"] for r in t], "errors per second"),
                    (seconds, [r.get("disconnects", 0) for r in t], "disconnects per second"),
                ],
            )
        )
        cpu: list[Series] = [
            (
                seconds,
                [None if r["cpu"] is None else 100 * r["cpu"] for r in t],
                "busiest generator process",
            )
        ]
        served = [r for r in t if "server_cpu" in r]
        if served:
            xs = [r["second"] for r in served]
            cpu.insert(0, (xs, [r["server_cpu"] for r in served], "server"))
        out.append(line_chart("CPU", "time since the first send (s)", "CPU (% of one core)", cpu))
        if served:
            out.append(
                line_chart(
                    "Server memory",
                    "time since the first send (s)",
                    "resident set size (MiB)",
                    [(xs, [r["server_rss_mib"] for r in served], "server RSS")],
                )
            )
        out.append(
            line_chart(
                "The generator's lateness (sends behind their schedule)",
                "time since the first send (s)",
                "worst lag in the second (ms)",
                [(seconds, [r.get("lag_ms") for r in t], "worst send lag")],
            )
        )
    if result.latency_curve:
        out.append(_percentile_curve(result.latency_curve))
    if result.room_sizes:
        sizes = [row["size"] for row in result.room_sizes]
        out.append(
            line_chart(
                "Latency by room size (the whole run)",
                "room size (members)",
                "latency (ms)",
                [
                    (sizes, [row["latency_ms"][p] for row in result.room_sizes], p)
                    for p in ("p50", "p99", "max")
                ],
            )
        )
    return out


# (xs, ys, label); a y of None is a second with no data: a gap in the line.
Series = tuple[Sequence[Any], Sequence[float | None], str]


def line_chart(
    title: str, xlabel: str, ylabel: str, series: list[Series], *, logx: bool = False
) -> str:
    """One figure as inline SVG: a line per (xs, ys, label); axes labelled with units."""
    require("report", "an HTML report")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    for xs, ys, label in series:
        values = [math.nan if y is None else y for y in ys]  # NaN: matplotlib's gap
        ax.plot(xs, values, label=label, marker="." if len(xs) < 30 else None)
    if logx:
        ax.set_xscale("log")
    ax.set_ylim(bottom=0)  # every series here counts something: a zoomed axis would mislead
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _svg(fig, xlabel, ylabel)


def _percentile_curve(curve: list[tuple[float, float]]) -> str:
    """Latency against percentile on a log(1 / (1 - p)) axis, as wrk2 and HdrHistogram
    draw it: the tail gets as much room as the median."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    xs = [1 / (1 - p / 100) if p < 100 else 1e7 for p, _ in curve]
    ax.plot(xs, [ms for _, ms in curve], marker=".")
    ax.set_xscale("log")
    ticks = [1, 10, 100, 1000, 10_000, 100_000, 1_000_000]
    ax.set_xticks(ticks)
    ax.set_xticklabels([_pct_label(x) for x in ticks])
    ax.set_title("Latency by percentile (the whole run)")
    ax.set_xlabel("percentile (%)")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3, which="both")
    return _svg(fig, "percentile (%)", "latency (ms)")


def _pct_label(x: float) -> str:
    p = 100 * (1 - 1 / x)
    digits = max(0, math.ceil(math.log10(x)) - 2)
    return f"{p:.{digits}f}%"


def _svg(fig: Any, xlabel: str, ylabel: str) -> str:
    """The figure as an inline ``<figure>``: the SVG keeps its text as text (searchable,
    selectable, read by screen readers) and the element names its axes for tests."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.tight_layout()
    with plt.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    svg = text[text.index("<svg") :]  # inline: without the XML prolog and doctype
    return (
        f'<figure class="fig" data-xlabel="{html.escape(xlabel)}" '
        f'data-ylabel="{html.escape(ylabel)}">{svg}</figure>'
    )
