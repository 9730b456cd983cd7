"""Packaging: the extras, the single-sourced version, the console scripts' messages."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import chatroom

OPTIONAL = ("prompt_toolkit", "faker", "hdrh", "matplotlib")
ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter in which the REPL's and the load generator's dependencies
# cannot be imported, as after a bare `pip install chatroom`.
_WITHOUT_EXTRAS = f"""
import importlib.abc, importlib.util, sys
OPTIONAL = {OPTIONAL!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Block())
_find = importlib.util.find_spec
importlib.util.find_spec = lambda n, *a: None if n in OPTIONAL else _find(n, *a)

import chatroom, chatroom.testing, chatroom_server, chatroom_bots  # the base install
from chatroom._extras import chat, chat_load
which = sys.argv[1]
if which == "import-cli":
    import chatroom_cli
elif which == "report":
    from chatroom._extras import require
    require("report", "chat-load --html")
else:
    {{"chat": chat, "chat-load": chat_load}}[which]()
"""


def _run(which: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRAS, which],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_base_install_imports_and_scripts_name_their_extra() -> None:
    chat = _run("chat")
    assert chat.returncode == 2, chat.stderr
    assert "pip install 'chatroom[cli]'" in chat.stderr and "Traceback" not in chat.stderr
    load = _run("chat-load")
    assert load.returncode == 2, load.stderr
    assert "pip install 'chatroom[load]'" in load.stderr and "faker" in load.stderr
    imported = _run("import-cli")
    assert "MissingExtra" in imported.stderr and "chatroom[cli]" in imported.stderr
    report = _run("report")
    assert "pip install 'chatroom[report]'" in report.stderr


def test_the_version_has_one_source() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert chatroom.__version__ == meta["project"]["version"]
    assert "prompt_toolkit" not in " ".join(meta["project"]["dependencies"])
