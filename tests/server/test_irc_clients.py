"""The IRC gateway with real IRC software (docs/IRC.md): jaraco/irc (``irc`` on PyPI)
as a bot, pydle for SASL PLAIN, CAP negotiation and server-time, and irssi in tmux."""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import irc.bot
import irc.client
import pydle
import pytest

from chatroom import Broadcast, ChatClient, DirectMessage, UsersChanged
from tests.helpers import PASSWORD, quiet_server

T = 10.0


class EchoBot(irc.bot.SingleServerIRCBot):  # type: ignore[misc]
    """A jaraco/irc bot: answers in the channel and by DM, and keeps the channel's users."""

    def __init__(self, port: int) -> None:
        server = irc.bot.ServerSpec("127.0.0.1", port, PASSWORD)
        super().__init__([server], "ircbot", "IRC Bot")
        self.joined = threading.Event()
        self.seen: queue.Queue[tuple[str, str, str]] = queue.Queue()

    def on_welcome(self, c: irc.client.ServerConnection, e: irc.client.Event) -> None:
        c.join("#lobby")

    def on_endofnames(self, c: irc.client.ServerConnection, e: irc.client.Event) -> None:
        self.joined.set()

    def on_pubmsg(self, c: irc.client.ServerConnection, e: irc.client.Event) -> None:
        self.seen.put(("pub", e.source.nick, e.arguments[0]))
        c.privmsg("#lobby", f"echo: {e.arguments[0]}")

    def on_privmsg(self, c: irc.client.ServerConnection, e: irc.client.Event) -> None:
        self.seen.put(("dm", e.source.nick, e.arguments[0]))
        c.privmsg(e.source.nick, f"dm echo: {e.arguments[0]}")

    def users(self) -> list[str]:
        return sorted(self.channels["#lobby"].users(), key=str.lower)

    def run(self, stop: threading.Event) -> None:
        self._connect()
        while not stop.is_set():
            self.reactor.process_once(0.05)
        self.connection.disconnect("bye")


def test_a_jaraco_irc_bot_talks_with_json_users() -> None:
    with quiet_server(irc_port=0) as srv, ChatClient(srv.host, srv.port) as me:
        me.login("jsonuser", PASSWORD)
        bot = EchoBot(srv.server.irc_addresses[0][1])
        stop = threading.Event()
        runner = threading.Thread(target=bot.run, args=(stop,))
        with me.expect(UsersChanged, check=lambda e: "ircbot" in e.users) as arrived:
            runner.start()
            try:
                assert bot.joined.wait(T)
                arrived.wait(T)
                with me.expect(Broadcast, check=lambda m: m.sender == "ircbot") as echo:
                    me.pm("hello bot")
                    assert echo.wait(T).message == "echo: hello bot"
                with me.expect(DirectMessage) as answer:
                    me.dm("ircbot", "a secret")
                    assert answer.wait(T).message == "dm echo: a secret"
                assert bot.seen.get(timeout=T) == ("pub", "jsonuser", "hello bot")
                assert bot.seen.get(timeout=T) == ("dm", "jsonuser", "a secret")
                # The same user list on both sides.
                assert bot.users() == sorted(me.users, key=str.lower) == ["ircbot", "jsonuser"]
            finally:
                stop.set()
                runner.join(T)


class PydleClient(pydle.Client):  # type: ignore[misc]
    """pydle with SASL PLAIN (pure-sasl) and server-time asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ready = asyncio.Event()
        self.messages: asyncio.Queue[tuple[str, str, dict[str, Any]]] = asyncio.Queue()

    async def on_capability_server_time_available(self, value: Any) -> bool:
        return True

    async def on_connect(self) -> None:
        await super().on_connect()
        self.ready.set()

    async def on_raw_privmsg(self, message: Any) -> None:
        await super().on_raw_privmsg(message)
        await self.messages.put((message.source, message.params[-1], dict(message.tags)))


def test_pydle_registers_by_sasl_and_gets_server_time() -> None:
    async def scenario(srv_host: str, srv_port: int, irc_port: int) -> None:
        client = PydleClient("somenick", sasl_username="pydleuser", sasl_password=PASSWORD)
        await client.connect("127.0.0.1", irc_port, tls=False, reconnect=False)
        try:
            async with asyncio.timeout(T):
                await client.ready.wait()
            assert {"sasl", "server-time"} <= {
                cap for cap, on in client._capabilities.items() if on
            }

            def talk() -> int:
                with ChatClient(srv_host, srv_port) as me:
                    me.login("timekeeper", PASSWORD)
                    return me.pm("what time is it").seq or 0

            seq = await asyncio.to_thread(talk)
            async with asyncio.timeout(T):
                source, text, tags = await client.messages.get()
            assert source.startswith("timekeeper") and text == "what time is it"
            assert tags["time"].endswith("Z") and tags["msgid"] == str(seq)
            assert client.nickname == "pydleuser"  # the account is the nick
        finally:
            await client.disconnect(expected=True)

    with quiet_server(irc_port=0) as srv:
        asyncio.run(scenario(srv.host, srv.port, srv.server.irc_addresses[0][1]))


def _tmux() -> str:
    for tool in ("tmux", "irssi"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: `make test` installs it (Debian package)")
    return "tmux"


def eventually(check: Callable[[], bool], timeout: float = T) -> bool:
    """Poll a terminal's screen: irssi offers nothing to wait on but what it shows."""
    pause = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if check():
            return True
        pause.wait(0.05)
    return check()


def test_irssi_in_tmux_completes_a_nick_sends_and_receives() -> None:
    tmux = _tmux()
    home = Path(tempfile.mkdtemp(prefix="chattest-irssi-"))
    session = f"chattest{os.getpid()}"
    with quiet_server(irc_port=0) as srv, ChatClient(srv.host, srv.port) as me:
        me.login("jsonfriend", PASSWORD)
        port = srv.server.irc_addresses[0][1]
        # irssi passes -w on inside a /connect line, so its password has no spaces.
        cmd = f"irssi --home={home} -c 127.0.0.1 -p {port} -n alice -w irssi-password-1"
        env = {**os.environ, "TERM": "xterm-256color"}
        with me.expect(UsersChanged, check=lambda e: "alice" in e.users) as arrived:
            subprocess.run(
                [tmux, "new-session", "-d", "-s", session, "-x", "160", "-y", "40", cmd],
                check=True,
                env=env,
                timeout=T,
            )
            try:
                arrived.wait(T)

                def screen() -> str:
                    out = subprocess.run(
                        [tmux, "capture-pane", "-p", "-t", session],
                        capture_output=True,
                        text=True,
                        timeout=T,
                    )
                    return out.stdout

                def keys(*k: str) -> None:
                    subprocess.run([tmux, "send-keys", "-t", session, *k], timeout=T, check=True)

                # Keys from tmux arrive faster than typing: without this irssi takes them
                # for a paste and inserts Tab as a character instead of completing.
                keys("/set paste_detect_time 0", "Enter")
                keys("/window 2", "Enter")  # irssi put the channel in window 2
                assert eventually(lambda: "Total of 2 nicks" in screen())
                # Tab completes a nick at the start of the line ("jsonfriend: ").
                with me.expect(Broadcast, check=lambda m: m.sender == "alice") as said:
                    keys("jsonf")
                    keys("Tab")
                    keys("hi there", "Enter")
                    assert said.wait(T).message == "jsonfriend: hi there"
                me.pm("hello irssi")
                assert eventually(lambda: "hello irssi" in screen())
            finally:
                subprocess.run([tmux, "kill-session", "-t", session], timeout=T)
                shutil.rmtree(home, ignore_errors=True)
