"""Packaging: the extras, the single-sourced version, the console scripts' messages."""

from __future__ import annotations

import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import chatroom
from chatroom import ChatClient
from chatroom.testing import TestServer
from chatroom_bots.load.stats import make_names

OPTIONAL = ("prompt_toolkit", "faker", "hdrh", "matplotlib", "argon2")
ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter in which the server's, the REPL's and the load generator's
# dependencies cannot be imported, as after a bare `pip install chatroom`.
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

# The base install: the SDK, its test kit, the bots and chat-bot.
import chatroom, chatroom.aio, chatroom.testing, chatroom_bots, chatroom_bots.__main__
# The console scripts' packages import without their extras; their names need them.
import chatroom_server, chatroom_cli, chatroom_bots.load
from chatroom_cli.__main__ import main as chat
from chatroom_bots.load.__main__ import main as chat_load
which = sys.argv[1]
if which == "import-cli":
    from chatroom_cli import Repl
elif which == "import-load":
    from chatroom_bots.load import LoadConfig
elif which == "chat-server":
    from chatroom_server.__main__ import main  # says what is missing, and exits
elif which == "test-server":
    from chatroom.testing import running_server
    with running_server():
        pass
elif which == "report":
    from chatroom.extras import require
    require("report", "chat-load --html")
else:
    sys.exit({{"chat": chat, "chat-load": chat_load}}[which]())
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
    imported = _run("import-load")
    assert "MissingExtra" in imported.stderr and "chatroom[load]" in imported.stderr
    report = _run("report")
    assert "pip install 'chatroom[report]'" in report.stderr


def test_the_server_is_an_extra_and_says_so() -> None:
    """argon2 is the server's dependency, not a bot's: chat-server and the test kit's
    server name the extra that brings it."""
    server = _run("chat-server")
    assert server.returncode == 2, server.stderr
    assert "pip install 'chatroom[server]'" in server.stderr and "argon2" in server.stderr
    assert "Traceback" not in server.stderr
    kit = _run("test-server")
    assert "MissingExtra" in kit.stderr and "pip install 'chatroom[server]'" in kit.stderr


def test_the_version_has_one_source() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert chatroom.__version__ == meta["project"]["version"]
    assert "prompt_toolkit" not in " ".join(meta["project"]["dependencies"])
    assert "argon2" not in " ".join(meta["project"]["dependencies"])
    extras = meta["project"]["optional-dependencies"]
    assert any(d.startswith("argon2-cffi") for d in extras["server"])
    assert "chatroom[server]" in extras["cluster"]


# The console scripts pip installed beside this interpreter (make venv: .venv/bin).
BIN = Path(sys.executable).parent


def _script(name: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    path = BIN / name
    assert path.is_file(), f"{path} is missing: pip install -e '.[dev]' installs it"
    return subprocess.run(
        [str(path), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def _closed_port() -> int:
    """A port on which nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_chat_exits_non_zero_as_the_readme_says(server: TestServer, tmp_path: Path) -> None:
    """The installed ``chat``, not ``python -m``: the wrapper passes main()'s status on."""
    with ChatClient(server.host, server.port) as c:
        c.login("owner", "the owner's password")
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    port = ("--port", str(server.port))
    denied = _script("chat", *port, "--user", "owner", "--password-file", str(wrong), stdin="EX\n")
    assert denied.returncode == 1, denied
    assert "wrong username or password" in denied.stdout
    unreachable = _script(
        "chat", "--port", str(_closed_port()), "--user", "x", "--password-file", str(wrong)
    )
    assert unreachable.returncode == 1, unreachable
    right = tmp_path / "right"
    right.write_text("the owner's password\n")
    fine = _script("chat", *port, "--user", "owner", "--password-file", str(right), stdin="EX\n")
    assert fine.returncode == 0, fine


def test_chat_load_exits_1_when_the_result_is_failed(server: TestServer) -> None:
    """``result FAILED`` is exit status 1 from the installed ``chat-load`` too."""
    first = make_names(1, seed=1)[0]
    with ChatClient(server.host, server.port) as c:
        c.login(first, "not the load password")  # the first bot cannot log in
    args = ("logins", "--port", str(server.port), "--clients", "2", "--processes", "1")
    failed = _script("chat-load", *args)
    assert "result        FAILED" in failed.stdout, failed
    assert failed.returncode == 1, failed
