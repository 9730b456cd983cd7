"""``chat-bot run``: a bot made of plugins, as a process; ``--reload`` without
disconnecting; plugins that fail to load; entry points."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatroom import ChatClient, DirectMessage, UsersChanged
from chatroom.testing import TestServer
from chatroom_bots import Store

T = 10.0
PW = "correct horse"

PLUGIN = """
from chatroom_bots import Plugin

plugin = Plugin("dice")


@plugin.command()
def roll(ctx, n: int = 1) -> str:
    rolls = ctx.store.change("rolls", lambda r: (r or 0) + 1)
    return "{version} " + str(n) + " #" + str(rolls)
"""


class Process:
    """``chat-bot`` as a process, its stderr read line by line into a queue."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatroom_bots", *args],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for_line(self, text: str) -> str:
        while True:
            line = self.lines.get(timeout=T)
            self.seen.append(line)
            if text in line:
                return line

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(T)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(T)
            self._reader.join(T)
            assert self.proc.stderr is not None
            self.proc.stderr.close()
        return code


@pytest.fixture
def me(server: TestServer) -> Iterator[ChatClient]:
    with ChatClient(server.host, server.port) as c:
        c.login("human", PW)
        yield c


def ask(me: ChatClient, bot: str, text: str) -> str:
    with me.expect(DirectMessage, check=lambda e: e.sender == bot) as reply:
        me.dm(bot, text)
        return str(reply.wait(T).message)


def start(me: ChatClient, name: str, *args: str) -> Process:
    with me.expect(UsersChanged, check=lambda e: name in e.joined) as joined:
        proc = Process(*args)
        try:
            joined.wait(T)
        except BaseException:
            proc.stop()
            raise
    return proc


def test_run_plugins_and_reload_them_without_disconnecting(
    server: TestServer, me: ChatClient, tmp_path: Path
) -> None:
    plugin = tmp_path / "dice.py"
    plugin.write_text(textwrap.dedent(PLUGIN.format(version="v1")))
    broken = tmp_path / "broken.py"
    broken.write_text("1 / 0\n")
    pw = tmp_path / "bot.pw"
    pw.write_text("bot password 123\n")
    args = ["run", str(plugin), str(broken), "echo", "--reload", "--port", str(server.port)]
    proc = start(me, "dice", *args, "--password-file", str(pw))
    try:
        line = proc.wait_for_line("could not load")
        assert f"could not load {broken}: ZeroDivisionError: division by zero" in line
        assert ask(me, "dice", "!roll 2") == "v1 2 #1"
        assert ask(me, "dice", "hello") == "hello"  # the echo plugin, by entry point
        before = plugin.stat().st_mtime_ns
        plugin.write_text(textwrap.dedent(PLUGIN.format(version="v2")))
        os.utime(plugin, ns=(before + 10**9, before + 10**9))
        proc.wait_for_line(f"reloaded {plugin}")
        assert ask(me, "dice", "!roll 3") == "v2 3 #2"  # the store outlives the reload
        broken.write_text(
            "from chatroom_bots import Plugin\n"
            "plugin = Plugin('fixed')\n"
            "@plugin.command()\n"
            "def fixed(ctx) -> str:\n"
            "    return 'fixed now'\n"
        )
        proc.wait_for_line(f"loaded {broken}")
        assert ask(me, "dice", "!fixed") == "fixed now"
        assert "dice" in me.users
    finally:
        with me.expect(UsersChanged, check=lambda e: "dice" in e.left) as left:
            assert proc.stop() == 0
            left.wait(T)
    # It never left meanwhile: one login, one logout, in the server's view.
    assert not any("lost the server" in line for line in proc.seen)
    # Its store, beside its password file, survives the process.
    store = Store(tmp_path / "dice.store")
    assert store.namespace("dice")["rolls"] == 2
    store.close()


def test_run_with_nothing_that_loads(server: TestServer, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatroom_bots",
            "run",
            str(tmp_path / "nope.py"),
            "--port",
            str(server.port),
            "--db",
            str(tmp_path / "x.db"),
        ],
        capture_output=True,
        text=True,
        timeout=T,
    )
    assert proc.returncode == 1
    assert "nope.py: no such file" in proc.stderr
    assert "no plugin could be loaded" in proc.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "chatroom_bots", "run"], capture_output=True, text=True, timeout=T
    )
    assert usage.returncode == 2 and "run needs at least one SOURCE" in usage.stderr
    mixed = subprocess.run(
        [sys.executable, "-m", "chatroom_bots", "echo", "--reload"],
        capture_output=True,
        text=True,
        timeout=T,
    )
    assert mixed.returncode == 2 and "go with run, not echo" in mixed.stderr


ASYNC_PLUGIN = """
from chatroom_bots import AsyncBot, AsyncContext

bot = AsyncBot("weather")


@bot.command()
async def forecast(ctx: AsyncContext, *, city: str) -> str:
    when = await ctx.ask("today or tomorrow?", timeout=30)
    n = ctx.store.change("asked", lambda r: (r or 0) + 1)
    return "{version} sunny in " + city + " " + when + " #" + str(n)
"""


def test_run_an_asyncio_bot_with_the_same_flags(
    server: TestServer, me: ChatClient, tmp_path: Path
) -> None:
    plugin = tmp_path / "weather.py"
    plugin.write_text(textwrap.dedent(ASYNC_PLUGIN.format(version="v1")))
    pw = tmp_path / "bot.pw"
    pw.write_text("bot password 123\n")
    args = ["run", str(plugin), "echo", "--reload", "--port", str(server.port)]
    proc = start(me, "weather", *args, "--password-file", str(pw))
    try:
        assert f"weather runs on asyncio ({plugin})" in proc.wait_for_line("runs on asyncio")
        assert ask(me, "weather", "!forecast Paris") == "today or tomorrow?"
        assert ask(me, "weather", "tomorrow") == "v1 sunny in Paris tomorrow #1"
        assert ask(me, "weather", "hello") == "hello"  # the echo plugin, on asyncio too
        before = plugin.stat().st_mtime_ns
        plugin.write_text(textwrap.dedent(ASYNC_PLUGIN.format(version="v2")))
        os.utime(plugin, ns=(before + 10**9, before + 10**9))
        proc.wait_for_line(f"reloaded {plugin}")
        assert ask(me, "weather", "!forecast Rome") == "today or tomorrow?"
        assert ask(me, "weather", "today") == "v2 sunny in Rome today #2"
        last = me.pm("said in public").seq
        assert ask(me, "weather", "the last word") == "the last word"  # after the pm
    finally:
        with me.expect(UsersChanged, check=lambda e: "weather" in e.left) as left:
            assert proc.stop() == 0
            left.wait(T)
    assert not any("lost the server" in line for line in proc.seen)
    store = Store(tmp_path / "weather.store")
    assert store.namespace("weather")["asked"] == 2
    store.close()
    # Its place, beside its password file, as the threaded bot's: a restart resumes there.
    saved = json.loads((tmp_path / "weather.cursor").read_text())
    assert last is not None and saved["seq"] >= last


def test_run_asyncio_on_request(server: TestServer, me: ChatClient, tmp_path: Path) -> None:
    pw = tmp_path / "bot.pw"
    pw.write_text("bot password 123\n")
    args = ["run", "echo", "--asyncio", "--no-resume", "--port", str(server.port)]
    proc = start(me, "echo", *args, "--password-file", str(pw))
    try:
        assert "(--asyncio)" in proc.wait_for_line("runs on asyncio")
        assert ask(me, "echo", "!echo hi there") == "hi there"
    finally:
        assert proc.stop() == 0
    assert not (tmp_path / "echo.cursor").exists()
