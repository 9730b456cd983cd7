"""The code in docs/SDK.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

SDK_MD = Path(__file__).resolve().parents[2] / "docs" / "SDK.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", SDK_MD.read_text(), flags=re.S)


def test_testing_example_in_sdk_md_passes() -> None:
    (block,) = [b for b in _python_blocks() if "def test_echo_bot" in b]
    namespace: dict[str, object] = {}
    exec(compile(block, str(SDK_MD), "exec"), namespace)
    namespace["test_echo_bot"]()  # type: ignore[operator]


def test_twenty_line_bot_is_twenty_lines() -> None:
    bot = _python_blocks()[0]
    assert "run_forever" in bot
    assert len([line for line in bot.splitlines() if line.strip()]) <= 20


def test_every_event_type_the_guide_names_is_exported() -> None:
    """What docs/SDK.md tells users to annotate a hook with or pass to wait_for must be
    importable from ``chatroom``."""
    import chatroom

    text = SDK_MD.read_text()
    hook_types = re.findall(r"\| `@client\.on_\w+` \| `(\w+)\(", text)
    (waits,) = re.findall(r"`wait_for` also takes (.*?);", text, flags=re.S)
    named = set(hook_types) | set(re.findall(r"`(\w+)`", waits))
    assert {"Broadcast", "DirectMessage", "UsersChanged", "Reconnected"} <= named
    missing = sorted(n for n in named if n not in chatroom.__all__)
    assert missing == []
