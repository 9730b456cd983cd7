"""Every Python snippet in docs/BOTS.md runs: each block is executed; a block that starts
with ``# file: NAME`` is written to NAME instead (a plugin file later blocks load); the
``test_*`` functions a block defines are run with the fixtures they name; a block that
defines a ``bot`` without a test of its own gets a smoke test (``!help`` answers)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatroom_bots.core import BotBase
from chatroom_bots.testing import BotTester

DOC = Path(__file__).resolve().parents[2] / "docs" / "BOTS.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text(encoding="utf-8"))


def test_the_doc_has_snippets_and_starts_with_a_ten_line_bot() -> None:
    assert len(blocks()) >= 10
    first = [line for line in blocks()[0].splitlines() if line.strip()]
    assert len(first) <= 10 and "bot.run(" in first[-1]


def test_every_python_snippet_in_bots_md_runs(
    bot_tester: Callable[..., BotTester], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # file blocks land here; default stores too
    fixtures: dict[str, Any] = {"bot_tester": bot_tester, "tmp_path": tmp_path}
    ran_tests = 0
    for i, code in enumerate(blocks()):
        first = code.splitlines()[0]
        if first.startswith("# file: "):
            (tmp_path / first.removeprefix("# file: ").strip()).write_text(code)
            continue
        namespace: dict[str, Any] = {"__name__": f"bots_md_block_{i}"}
        exec(compile(code, f"docs/BOTS.md python block {i + 1}", "exec"), namespace)
        tests = [fn for name, fn in namespace.items() if name.startswith("test_")]
        for fn in tests:
            fn(*(fixtures[p] for p in inspect.signature(fn).parameters))
            ran_tests += 1
        bot = namespace.get("bot")
        if isinstance(bot, BotBase) and not tests:
            tester = bot_tester(bot)
            try:  # closed even on a timeout, or its client reconnects for ever after
                tester.dm("reader", "!help")
                assert tester.expect_reply().text.startswith("!"), f"block {i + 1}"
            finally:
                tester.close()
    assert ran_tests >= 1
