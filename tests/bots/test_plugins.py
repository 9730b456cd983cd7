"""Plugins: loading by path, module and entry point; reloading, also on a file change;
plugins that fail to load; hooks; schedules that come and go with their plugin."""

from __future__ import annotations

import logging
import os
import sys
import textwrap
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chatroom_bots import AsyncBot, Bot, Plugin, PluginError
from chatroom_bots.core import BotBase
from chatroom_bots.testing import BotTester

Tester = Callable[..., BotTester]
T = 10.0

DICE = """
from chatroom_bots import Plugin

plugin = Plugin("dice")
loads = []


@plugin.command()
def roll(ctx, n: int = 1) -> str:
    \"\"\"Roll N dice.\"\"\"
    return "{version} " + str(n)


@plugin.every(minutes=1)
def tick() -> None:
    pass


@plugin.on_load
def loaded(bot) -> None:
    loads.append(bot.name)
"""


def write(path: Path, text: str) -> None:
    """Write ``text`` and move the file's time on, so a change is seen even within the
    file system's timestamp granularity."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(textwrap.dedent(text))
    os.utime(path, ns=(before + 10**9, before + 10**9))


@contextmanager
def logged(logger: str, text: str) -> Iterator[threading.Event]:
    """An event set when ``logger`` logs a message containing ``text``."""
    seen = threading.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                seen.set()

    handler = Handler()
    log = logging.getLogger(logger)
    log.addHandler(handler)
    try:
        yield seen
    finally:
        log.removeHandler(handler)


@pytest.fixture(params=["threaded", "asyncio"])
def kind(request: pytest.FixtureRequest) -> type[BotBase]:
    return Bot if request.param == "threaded" else AsyncBot


def test_load_and_reload_by_path(kind: type[BotBase], bot_tester: Tester, tmp_path: Path) -> None:
    path = tmp_path / "dice.py"
    write(path, DICE.format(version="v1"))
    bot = kind("host")
    t = bot_tester(bot)
    (plugin,) = bot.load_plugin(str(path))
    assert plugin.name == "dice" and plugin.path == path
    t.dm("alice", "!roll 2")
    assert t.expect_reply().text == "v1 2"
    assert [j.name for j in bot.jobs()] == ["tick"]
    write(path, DICE.format(version="v2"))
    bot.reload_plugin(str(path))
    t.dm("alice", "!roll 3")
    assert t.expect_reply().text == "v2 3"
    assert [j.name for j in bot.jobs()] == ["tick"]  # the old schedule went with the old code
    write(path, "this is not python (\n")
    with pytest.raises(PluginError, match=r"dice.py: SyntaxError"):
        bot.reload_plugin(str(path))
    t.dm("alice", "!roll 4")
    assert t.expect_reply().text == "v2 4"  # the old version stays
    assert str(path) in bot.failed_plugins
    bot.remove_plugin("dice")
    t.dm("alice", "!roll")
    assert t.expect_reply().text.startswith("I don't know !roll")
    assert bot.jobs() == []


def test_a_plugin_that_fails_to_load_leaves_the_bot_running(
    kind: type[BotBase], bot_tester: Tester, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "broken.py"
    write(broken, "x = 1 / 0\n")
    empty = tmp_path / "empty.py"
    write(empty, "x = 1\n")
    good = tmp_path / "dice.py"
    write(good, DICE.format(version="ok"))
    clash = tmp_path / "clash.py"
    write(
        clash,
        """
        from chatroom_bots import Plugin
        plugin = Plugin("clash")
        @plugin.command()
        def roll(ctx) -> str:
            return "mine"
        """,
    )
    bot = kind("host")
    t = bot_tester(bot)
    with caplog.at_level(logging.ERROR, logger="chatroom_bots.bot"):
        assert not bot.try_load(str(broken))
        assert not bot.try_load(str(tmp_path / "missing.py"))
        assert not bot.try_load(str(empty))
        assert not bot.try_load("no_such_module_anywhere")
        assert bot.try_load(str(good))
        assert not bot.try_load(str(clash))
    why = [r.getMessage() for r in caplog.records if "could not load" in r.getMessage()]
    assert f"host: could not load {broken}: ZeroDivisionError: division by zero;" in why[0]
    assert "missing.py: no such file" in why[1]
    assert "empty.py: defines no Plugin and no Bot" in why[2]
    assert "ModuleNotFoundError" in why[3]
    assert "!roll of plugin 'clash' is already a command of plugin 'dice'" in why[4]
    t.dm("alice", "!roll 5")
    assert t.expect_reply().text == "ok 5"
    assert set(bot.failed_plugins) == {
        str(broken),
        str(tmp_path / "missing.py"),
        str(empty),
        "no_such_module_anywhere",
        str(clash),
    }


def test_reload_on_file_change_without_disconnecting(bot_tester: Tester, tmp_path: Path) -> None:
    path = tmp_path / "dice.py"
    write(path, DICE.format(version="v1"))
    broken = tmp_path / "later.py"
    write(broken, "raise ImportError('not yet')\n")
    bot = Bot("host")
    t = bot_tester(bot)
    assert bot.try_load(str(path)) and not bot.try_load(str(broken))
    client = bot.client
    assert client is not None
    bot.watch_plugins()
    with logged("chatroom_bots.bot", f"reloaded {path}") as reloaded:
        write(path, DICE.format(version="v2"))
        assert reloaded.wait(T)
    t.dm("alice", "!roll")
    assert t.expect_reply().text == "v2 1"
    with logged("chatroom_bots.bot", f"loaded {broken}") as loaded:
        write(
            broken,
            """
            from chatroom_bots import Plugin
            plugin = Plugin("later")
            @plugin.command()
            def now(ctx) -> str:
                return "fixed"
            """,
        )
        assert loaded.wait(T)  # a plugin that failed loads once its file is fixed
    t.dm("alice", "!now")
    assert t.expect_reply().text == "fixed"
    assert bot.client is client and client.connected  # the same connection throughout


def test_modules_bots_and_hooks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bot_tester: Tester
) -> None:
    pkg = tmp_path / "mybots"
    pkg.mkdir()
    write(pkg / "__init__.py", "")
    write(pkg / "dice.py", DICE.format(version="module"))
    write(
        tmp_path / "legacy.py",
        """
        from chatroom_bots import Bot, Message

        bot = Bot("legacy")

        @bot.command("hello", help="!hello: say hello")
        def hello(msg: Message, args: str) -> str:
            return f"hello {msg.sender}"
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    bot = Bot("host")
    t = bot_tester(bot)
    assert [p.name for p in bot.load_plugin("mybots.dice")] == ["dice"]
    module = sys.modules["mybots.dice"]
    assert module.loads == ["host"]
    t.dm("alice", "!roll 6")
    assert t.expect_reply().text == "module 6"
    write(pkg / "dice.py", DICE.format(version="module2"))
    bot.reload_plugin("mybots.dice")
    t.dm("alice", "!roll 6")
    assert t.expect_reply().text == "module2 6"
    legacy = bot.load_plugin(str(tmp_path / "legacy.py"))
    assert [p.name for p in legacy] == ["legacy"]
    t.dm("alice", "!hello")
    assert t.expect_reply().text == "hello alice"
    t.dm("alice", "!help")
    assert "!hello: !hello: say hello" in t.expect_reply().text
    unloaded: list[str] = []
    extra = Plugin("extra")
    extra.on_unload(lambda b: unloaded.append(b.name))
    bot.add_plugin(extra)
    with pytest.raises(PluginError, match="two plugins are named 'extra'"):
        bot.add_plugin(Plugin("extra"))
    bot.remove_plugin(extra)
    assert unloaded == ["host"] and extra.bot is None


def test_a_plugin_that_hangs_at_import_holds_up_no_handler(
    kind: type[BotBase], bot_tester: Tester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = types.ModuleType("plugin_gate")
    gate.started = threading.Event()  # type: ignore[attr-defined]
    gate.release = threading.Event()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "plugin_gate", gate)
    path = tmp_path / "dice.py"
    write(path, DICE.format(version="v1"))
    bot = kind("host")
    t = bot_tester(bot)
    bot.load_plugin(str(path))
    bot.watch_plugins()
    with logged("chatroom_bots.bot", f"reloaded {path}") as reloaded:
        write(
            path,
            "import plugin_gate\n"
            "plugin_gate.started.set()\n"
            "plugin_gate.release.wait(10)\n" + DICE.format(version="v2"),
        )
        assert gate.started.wait(T)  # the new version is importing, and hangs there
        t.dm("alice", "!roll 1")
        assert t.expect_reply().text == "v1 1"  # the bot goes on meanwhile
        gate.release.set()
        assert reloaded.wait(T)
    t.dm("alice", "!roll 2")
    assert t.expect_reply().text == "v2 2"
