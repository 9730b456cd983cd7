"""A run's HTML report, in the style of chat-load's (bots/chatroom_bots/load/report.py):
one self-contained file, the charts as inline SVG drawn with matplotlib.

The fault timeline is drawn over every chart (a shaded band per fault, labelled), under
throughput (acks, deliveries, refusals and unknown outcomes per second) and latency (of each
attempt that was acked), then every anomaly with the operations involved, and the
faults as a table.
"""

from __future__ import annotations

import html
import io
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatroom_bots.load.report import page
from tests.nemesis.history import ConnOpen, Fault, FrameIn, Op, describe

if TYPE_CHECKING:
    from tests.nemesis.harness import RunResult

__all__ = ["render", "write_report"]

# One colour per kind of fault, the same in every chart.
COLOURS = {
    "kill": "#d62728",
    "pause": "#ff7f0e",
    "cut": "#8c564b",
    "midframe": "#e377c2",
    "kill-redis": "#9467bd",
    "kill-pg": "#1f77b4",
    "part-redis": "#bcbd22",
    "part-pg": "#17becf",
    "isolate": "#7f7f7f",
    "disk-full": "#2ca02c",
    "disk-full-kill": "#98df8a",
}


def write_report(result: RunResult, path: Path) -> None:
    path.write_text(render(result), encoding="utf-8")


def render(result: RunResult) -> str:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files only
    c = result.config
    res = result.check
    verdict = "OK" if result.ok else "FAILED"
    n = len(res.anomalies)
    title = f"nemesis {c.target}, seed {c.seed}: {verdict}"
    heading = (
        f"nemesis {html.escape(c.target)}, seed {c.seed}: "
        f'<span class="{verdict.lower()}">{verdict}</span> ({n} anomal{"y" if n == 1 else "ies"})'
    )
    settings = {
        "target": c.target,
        "seed": c.seed,
        "replay": c.replay_command(),
        "duration": f"{c.duration:g} s of faults ({result.seconds:.0f} s in all)",
        "users": c.users,
        "nodes": c.nodes if c.target == "cluster" else 1,
        "node timeout": f"{c.node_timeout:g} s" if c.target == "cluster" else "n/a",
        "rate": f"{c.settings.rate:g} operations/s per user",
        "marker seq": result.marker if result.marker is not None else "none",
    }
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in settings.items()
    )
    stats = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in res.stats.items())
    problems = "".join(f"<li>{html.escape(p)}</li>" for p in result.problems + res.notes)
    # Event lines are long (whole frames): wrapped, not scrolled off the page.
    body = [
        "<style>pre { white-space: pre-wrap; overflow-wrap: anywhere; }</style>",
        f"<table>{rows}</table>",
    ]
    if problems:
        body.append(f"<h2>Problems and notes</h2><ul>{problems}</ul>")
    body += ["<h2>The run, under its faults</h2>", *_figures(result)]
    body.append(_anomalies(result))
    body.append(f"<h2>Faults</h2>{_fault_table(result)}")
    body.append(f"<h2>Counts</h2><table>{stats}</table>")
    return page(title, heading, "\n".join(body), [])


def _anomalies(result: RunResult) -> str:
    res = result.check
    if not res.anomalies:
        return "<h2>Anomalies</h2><p>None.</p>"
    out = [f"<h2>Anomalies ({len(res.anomalies)})</h2>"]
    for k, a in enumerate(res.anomalies, 1):
        lines = "\n".join(html.escape(describe(e, 80)) for e in a.events)
        who = ", ".join(a.users)
        out.append(
            f'<h3 id="a{k}">{k}. {html.escape(a.kind)} <small>({html.escape(a.level)}'
            f"{'; ' + html.escape(who) if who else ''})</small></h3>"
            f"<p>{html.escape(a.text)}</p>" + (f"<pre>{lines}</pre>" if lines else "")
        )
    return "\n".join(out)


def _fault_table(result: RunResult) -> str:
    spans = _spans(result)
    if not spans:
        return "<p>None.</p>"
    rows = "".join(
        f"<tr><td>{s:.1f}</td><td>{e:.1f}</td><td>{html.escape(k)}</td>"
        f"<td>{html.escape(t)}</td><td>{html.escape(d)}</td></tr>"
        for s, e, k, t, d in spans
    )
    notes = [f for f in result.events if isinstance(f, Fault) and f.phase == "note"]
    note_rows = "".join(f"<li>{html.escape(describe(f))}</li>" for f in notes[:200])
    return (
        "<table><tr><th>start (s)</th><th>end (s)</th><th>fault</th><th>target</th>"
        f"<th>detail</th></tr>{rows}</table>"
        + (
            f"<details><summary>{len(notes)} notes</summary><ul>{note_rows}</ul></details>"
            if notes
            else ""
        )
    )


def _spans(result: RunResult) -> list[tuple[float, float, str, str, str]]:
    open_: dict[tuple[str, str], tuple[float, str]] = {}
    out: list[tuple[float, float, str, str, str]] = []
    for ev in result.events:
        if not isinstance(ev, Fault):
            continue
        key = (ev.kind, ev.target)
        if ev.phase == "start":
            open_[key] = (ev.t, ev.detail)
        elif ev.phase == "end" and key in open_:
            t0, detail = open_.pop(key)
            out.append((t0, ev.t, ev.kind, ev.target, detail))
    return out


def _per_second(result: RunResult) -> dict[str, dict[int, float]]:
    """Counts per whole second of the run, and the latency (ms) of each attempt that got
    its ack, by the second it was acked."""
    series: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    invoked: dict[tuple[str, int, int], float] = {}
    latencies: dict[int, list[float]] = defaultdict(list)
    for ev in result.events:
        s = int(ev.t)
        if isinstance(ev, Op) and ev.kind in ("pm", "dm"):
            key = (ev.user, ev.op, ev.attempt)
            if ev.phase == "invoke":
                invoked[key] = ev.t
            elif ev.phase == "ok":
                series["acked"][s] += 1
                if key in invoked:
                    latencies[s].append(1000 * (ev.t - invoked[key]))
            elif ev.phase == "fail":
                series["refused"][s] += 1
            else:
                series["unknown outcome"][s] += 1
        elif isinstance(ev, FrameIn) and ev.f.get("type") in ("broadcast", "dm"):
            series["delivered"][s] += 1
        elif isinstance(ev, ConnOpen):
            series["connections opened"][s] += 1
    for s, values in latencies.items():
        values.sort()
        series["p50"][s] = values[len(values) // 2]
        series["p99"][s] = values[min(len(values) - 1, int(len(values) * 0.99))]
        series["max"][s] = values[-1]
    return series


def _figures(result: RunResult) -> list[str]:
    per = _per_second(result)
    end = int(max((e.t for e in result.events), default=0)) + 1
    seconds = list(range(end))
    spans = _spans(result)

    def line(name: str) -> tuple[list[int], list[float], str]:
        data = per.get(name, {})
        return seconds, [data.get(s, 0.0) for s in seconds], name

    def sparse(name: str) -> tuple[list[int], list[float], str]:
        # Latency exists only in seconds with an ack: no point is drawn elsewhere.
        data = per.get(name, {})
        xs = sorted(data)
        return xs, [data[s] for s in xs], name

    return [
        _chart(
            "Throughput under the faults",
            "messages per second",
            [line("acked"), line("delivered"), line("refused"), line("unknown outcome")],
            spans,
        ),
        _chart(
            "Latency of each send attempt that was acked, per second",
            "latency (ms)",
            [sparse("p50"), sparse("p99"), sparse("max")],
            spans,
            log=True,
        ),
        _chart(
            "Connections opened per second (logins and reconnects)",
            "connections",
            [line("connections opened")],
            spans,
        ),
    ]


def _chart(
    title: str,
    ylabel: str,
    series: list[tuple[list[int], list[float], str]],
    spans: list[tuple[float, float, str, str, str]],
    *,
    log: bool = False,
) -> str:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(11, 3.8))
    for s0, s1, kind, _, _ in spans:
        ax.axvspan(s0, max(s1, s0 + 0.3), color=COLOURS.get(kind, "#cccccc"), alpha=0.18, lw=0)
    for xs, ys, label in series:
        ax.plot(xs, ys, label=label, marker="." if len(xs) < 30 else None, lw=1)
    handles, _ = ax.get_legend_handles_labels()
    for kind in dict.fromkeys(k for _, _, k, _, _ in spans):
        handles.append(Patch(color=COLOURS.get(kind, "#cccccc"), alpha=0.35, label=kind))
    if log:
        ax.set_yscale("symlog", linthresh=10)
    else:
        ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.set_xlabel("time since the run began (s)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(
        handles=handles, fontsize="small", ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0)
    )
    return _svg(fig, "time since the run began (s)", ylabel)


def _svg(fig: Any, xlabel: str, ylabel: str) -> str:
    """The figure as an inline ``<figure>`` (text kept as text), as chat-load's report."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.tight_layout()
    with plt.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    svg = text[text.index("<svg") :]
    return (
        f'<figure class="fig" data-xlabel="{html.escape(xlabel)}" '
        f'data-ylabel="{html.escape(ylabel)}">{svg}</figure>'
    )
