"""Soak: N clients sending 1 message/s each for D seconds against our server (subprocess);
samples the server's RSS every second. Not run in CI; results go in docs/PERFORMANCE.md.

    .venv/bin/python bench/soak.py --clients 500 --duration 600 --mix-pm 0.1
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from common import rss_kib, start_server

from chatroom_bots.load import LoadConfig, run_load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--mix-pm", type=float, default=0.1)
    ap.add_argument("--warmup", type=float, default=60.0)
    ap.add_argument("--json", default="soak.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, start_server("ours", Path(tmp)) as (proc, port):
        samples: list[dict[str, Any]] = []

        def sample(row: dict[str, Any]) -> None:
            row = {**row, "server_rss_kib": rss_kib(proc.pid)}
            samples.append(row)
            if row["second"] % 30 == 0:
                print(json.dumps(row), flush=True)

        cfg = LoadConfig(
            port=port,
            clients=a.clients,
            senders=a.clients,
            rate=a.clients * 1.0,
            duration=a.duration,
            pm_fraction=a.mix_pm,
            processes=2,
            drain=3.0,
        )
        result = run_load(cfg, progress=sample)
    warm = [s for s in samples if s["second"] >= a.warmup]
    rss_start, rss_end = warm[0]["server_rss_kib"], warm[-1]["server_rss_kib"]
    minutes: dict[int, list[float]] = {}
    for s in samples:
        minutes.setdefault(s["second"] // 60, []).append(s["p99_ms"])
    summary = {
        "clients": a.clients,
        "duration_s": a.duration,
        "pm_fraction": a.mix_pm,
        "sent": result.sent,
        "delivered": result.delivered,
        "expected": result.expected,
        "lost": result.lost,
        "errors": result.errors,
        "disconnects": result.disconnects,
        "latency_ms": result.latency_ms,
        "rss_after_warmup_kib": rss_start,
        "rss_end_kib": rss_end,
        "rss_growth_pct": round(100 * (rss_end - rss_start) / rss_start, 2),
        "p99_ms_worst_second_per_minute": {m: max(v) for m, v in minutes.items()},
        "warnings": result.warnings,
    }
    print(result.table())
    print(json.dumps(summary, indent=2))
    Path(a.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
