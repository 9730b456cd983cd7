"""make bench's bench/report.html, rendered from a results dict shaped as run_bench makes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _run_bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # run_bench imports its sibling common.py
    try:
        spec = importlib.util.spec_from_file_location("run_bench", BENCH / "run_bench.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def steps(scale: float) -> list[dict[str, float | bool]]:
    return [
        {"rate": r, "deliveries_per_s": 99 * r * scale, "p99_ms": r / 100, "ok": r < 4000}
        for r in (500.0, 1000.0, 2000.0, 4000.0)
    ]


def test_bench_report_puts_every_server_on_the_same_axes() -> None:
    best = {"rate": 2000.0, "deliveries_per_s": 198000.0, "p99_ms": 20.0}
    results = {
        "machine": {"cores": 2},
        "ours": {"fanout100": {"steps": steps(1.0), "max": best, "fixed_rate": 500.0}},
        "naive": {"fanout100": {"steps": steps(0.3), "max": best, "fixed_rate": 500.0}},
        "raw": {"fanout100": {"error": "did not start"}},
    }
    page = _run_bench().html_report(results)
    assert page.count("<svg") == 2  # delivered against offered, and p99, for fan-out N=100
    for text in ("offered rate (messages/s)", "delivered (deliveries/s)", "p99 latency (ms)"):
        assert text in page
    assert "ours" in page and "naive" in page
    assert "<script" not in page
