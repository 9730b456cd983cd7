"""Open a chat-load HTML report in headless Chromium: what renders, and a screenshot.

    python report_screenshot.py              # a real 6 s run -> docs/images/load-report.png
    python report_screenshot.py REPORT.html OUT.png

The browser is Debian's Chromium (``make test`` and ``make report-screenshot`` install it)
driven by Playwright, which never downloads a browser of its own here. The report is
opened from a file with every network request refused and counted: it must need none.
tests/bots/test_report_browser.py uses :func:`inspect_report` on a fresh report.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Headless, as root, and quiet: without the background-networking flags Chromium tries
# Google's hosts at start, which this closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parent.parent

# Per figure: its size on the page, its title, and each axis label as the browser renders
# it (the SVG keeps text as text: chatroom_bots.load.report._svg).
_FIGURES_JS = """
() => [...document.querySelectorAll("figure.fig")].map(fig => {
  const svg = fig.querySelector("svg");
  const box = svg.getBoundingClientRect();
  const texts = [...svg.querySelectorAll("text")].filter(t => {
    const r = t.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  }).map(t => t.textContent.trim());
  return {xlabel: fig.dataset.xlabel, ylabel: fig.dataset.ylabel,
          width: box.width, height: box.height, texts: texts,
          lines: svg.querySelectorAll("path").length};
})
"""


def inspect_report(html: Path, png: Path) -> dict[str, Any]:
    """Open ``html`` in Chromium, save a full-page screenshot to ``png``, and return
    ``{"figures": [...], "requests": [urls the page asked for]}``."""
    from playwright.sync_api import Route, sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        raise FileNotFoundError(
            f"{CHROMIUM} not found: install Debian's chromium (make test does, as root)"
        )
    requests: list[str] = []

    def refuse(route: Route) -> None:
        requests.append(route.request.url)
        route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.route(lambda url: not url.startswith("file:"), refuse)
            page.goto(html.resolve().as_uri())
            figures = page.evaluate(_FIGURES_JS)
            title = page.title()
            png.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()
    return {"title": title, "figures": figures, "requests": requests}


def _real_report(html: Path) -> None:
    """A short real run against a real server process, with its pid given."""
    from chatroom.testing import ServerProcess
    from chatroom_bots.load import LoadConfig, run_load
    from chatroom_bots.load.report import write_html

    with (
        tempfile.TemporaryDirectory() as tmp,
        ServerProcess(
            Path(tmp) / "r.db", "--rate-limit", "off", "--password-hash", "load-test"
        ) as srv,
    ):
        cfg = LoadConfig(
            port=srv.port,
            clients=200,
            senders=10,
            rate=400,
            duration=6,
            pm_fraction=0.9,
            processes=2,
            server_pid=srv.pid,
        )
        write_html(run_load(cfg), str(html))


def main(argv: list[str]) -> int:
    if len(argv) == 2:
        html, png = Path(argv[0]), Path(argv[1])
    else:
        html = ROOT / "bench" / "load-report.html"
        png = ROOT / "docs" / "images" / "load-report.png"
        _real_report(html)
    seen = inspect_report(html, png)
    print(f"{html}: {len(seen['figures'])} figures, {len(seen['requests'])} network requests")
    print(f"screenshot: {png}")
    return 0 if seen["figures"] and not seen["requests"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
