"""A chat-load report opened in a real browser: Debian's Chromium, driven by Playwright
(bench/report_screenshot.py). The charts render, every figure has its title and both axes
with units, the page asks the network for nothing, and a screenshot is saved.

``make test`` installs Chromium; without it this test fails in CI (CI=true) and is
skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from types import ModuleType

import pytest

from chatroom.testing import TestServer
from chatroom_bots.load import LoadConfig, run_load
from chatroom_bots.load.report import write_html
from tests.helpers import quiet_server

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "report_screenshot.py"
UNIT = re.compile(r"\(.+\)$")  # every axis label ends with its unit in parentheses


def _screenshot_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("report_screenshot", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def shot() -> ModuleType:
    module = _screenshot_module()
    if not os.access(module.CHROMIUM, os.X_OK):
        message = f"{module.CHROMIUM} is missing: `make test` installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return module


@pytest.mark.timeout(90)
def test_the_report_renders_in_chromium_with_labelled_axes(
    shot: ModuleType, tmp_path: Path
) -> None:
    server: TestServer
    with quiet_server(password_hash="load-test") as server:
        cfg = LoadConfig(
            port=server.port,
            clients=12,
            senders=3,
            rate=150.0,
            duration=2.0,
            pm_fraction=0.8,
            processes=2,
            drain=1.0,
            server_pid=os.getpid(),  # the server runs in this process
        )
        result = run_load(cfg)
    assert result.ok
    html, png = tmp_path / "report.html", tmp_path / "report.png"
    write_html(result, str(html))
    seen = shot.inspect_report(html, png)

    assert seen["title"] == "chat-load run: OK"
    assert seen["requests"] == []  # opens offline: no script, font or style to fetch
    figures = seen["figures"]
    # throughput, latency, loss/errors, CPU, server memory, lateness, percentile curve
    assert len(figures) == 7
    for fig in figures:
        assert fig["width"] > 400 and fig["height"] > 150, fig
        assert fig["lines"] > 10, fig  # axes, ticks and the data lines were drawn
        for axis in ("xlabel", "ylabel"):
            assert fig[axis] in fig["texts"], (axis, fig)  # rendered, visible
            assert UNIT.search(fig[axis]), (axis, fig[axis])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
