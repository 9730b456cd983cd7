"""The real REPL application, driven through a pipe input against a real server."""

from __future__ import annotations

import io
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.input.base import PipeInput
from prompt_toolkit.output import DummyOutput

from chatroom import Broadcast, ChatClient, DirectMessage, Disconnect, Reconnected, UsersChanged
from chatroom.testing import TestServer
from chatroom_cli.__main__ import main
from chatroom_cli.repl import InteractiveTerminal, PipeTerminal, Repl
from tests.helpers import quiet_server

PW = "correct horse"
T = 10.0


class RecordingOutput(DummyOutput):
    """A DummyOutput that keeps what was written, so tests can wait for text."""

    def __init__(self) -> None:
        self._text = ""
        self._cond = threading.Condition()

    def write(self, data: str) -> None:
        with self._cond:
            self._text += data
            self._cond.notify_all()

    write_raw = write

    @property
    def text(self) -> str:
        with self._cond:
            return self._text

    def wait_for(self, needle: str, timeout: float = T, times: int = 1) -> None:
        """Until ``needle`` has been written ``times`` times."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._text.count(needle) >= times, timeout):
                raise AssertionError(f"{needle!r} never appeared; output:\n{self._text[-3000:]}")


class Harness:
    def __init__(self, srv: TestServer, pipe: PipeInput, **repl_args: Any) -> None:
        self.pipe = pipe
        self.out = RecordingOutput()
        self.disconnects: queue.Queue[Disconnect] = queue.Queue()  # of every client made

        def new_client() -> ChatClient:
            c = ChatClient(srv.host, srv.port, reconnect=True, reconnect_max_delay=0.2)
            c.on_disconnect(self.disconnects.put)
            return c

        self.repl = Repl(new_client, InteractiveTerminal(pipe, self.out), **repl_args)
        self.status: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def client(self) -> ChatClient:
        """The REPL's client (before login, the REPL may replace it)."""
        return self.repl.client

    def _run(self) -> None:
        self.status = self.repl.run()

    def type(self, keys: str) -> None:
        self.pipe.send_text(keys)

    def type_until(self, keys: str, prompt: str, ready: Callable[[Buffer], bool]) -> None:
        """Type ``keys``, then wait until the ``prompt`` session's buffer is ``ready``
        (completion is asynchronous, as in a real terminal: a person sees the menu or the
        completed name before pressing the next key)."""
        buffer: Buffer = self.repl.term._sessions[prompt].default_buffer  # type: ignore[attr-defined]
        reached = threading.Event()

        def changed(_: object) -> None:
            if ready(buffer):
                reached.set()

        buffer.on_text_changed += changed
        buffer.on_completions_changed += changed
        try:
            self.type(keys)
            assert reached.wait(T), f"{prompt} buffer never got ready: {buffer.text!r}"
        finally:
            buffer.on_text_changed -= changed
            buffer.on_completions_changed -= changed

    def finish(self) -> int | None:
        self.thread.join(T)
        assert not self.thread.is_alive(), "the REPL did not exit"
        return self.status


def toolbar(h: Harness) -> str:
    return "".join(text for _, text, *_ in h.repl.toolbar())


@pytest.fixture
def pipe() -> Iterator[PipeInput]:
    with create_pipe_input() as p:
        yield p


@pytest.fixture
def watcher(server: TestServer) -> Iterator[ChatClient]:
    with ChatClient(server.host, server.port) as c:
        c.login("watcher", PW)
        yield c


def test_new_user_registers_with_confirmation_then_ex(
    server: TestServer, pipe: PipeInput, watcher: ChatClient
) -> None:
    h = Harness(server, pipe)
    h.out.wait_for("username:")
    h.type("newbie\r")
    h.out.wait_for("new password:")
    h.type("password-1\r")
    h.out.wait_for("repeat it:")
    h.type("password-2\r")  # a typo: asked again
    h.out.wait_for("the passwords differ")
    h.type("password-1\r")
    h.out.wait_for("repeat it:")
    with watcher.expect(UsersChanged, check=lambda e: "newbie" in e.joined) as joined:
        h.type("password-1\r")
        joined.wait()
    h.out.wait_for("your account is registered")
    h.out.wait_for("2 online: newbie, watcher")
    assert "password-1" not in h.out.text  # hidden input
    with watcher.expect(UsersChanged, check=lambda e: "newbie" in e.left) as left:
        h.type("EX\r")
        left.wait()
    h.out.wait_for("-- logged out; goodbye, newbie")
    assert h.finish() == 0


def test_a_person_may_think_at_the_prompts_longer_than_the_login_timeout(
    pipe: PipeInput,
) -> None:
    """The server closes a connection that has not logged in within its login timeout;
    a person at the username or password prompt may take longer. The REPL connects
    again when it needs the server, and says nothing of it (it used to print
    "!! disconnected (timeout)" and exit, which ended make demo)."""
    with quiet_server(login_timeout=0.3) as srv:
        h = Harness(srv, pipe)
        h.out.wait_for("username:")
        assert h.disconnects.get(timeout=T).reason == "timeout"  # thinking of a name
        h.type("slowpoke\r")
        h.out.wait_for("new password:")
        assert h.disconnects.get(timeout=T).reason == "timeout"  # and of a password
        h.type(PW + "\r")
        h.out.wait_for("repeat it:")
        h.type(PW + "\r")
        h.out.wait_for("your account is registered")
        h.out.wait_for("Type /help")
        h.type("/who\r")
        h.out.wait_for("-- 1 online: slowpoke")
        assert "disconnected" not in h.out.text and "!!" not in h.out.text
        h.type("EX\r")
        assert h.finish() == 0


def test_a_server_gone_while_a_person_thinks_is_one_clear_error(pipe: PipeInput) -> None:
    with quiet_server(login_timeout=0.3) as srv:
        h = Harness(srv, pipe)
        h.out.wait_for("username:")
        assert h.disconnects.get(timeout=T).reason == "timeout"
        srv.stop()
        h.type("late\r")
        h.out.wait_for(f"!! cannot connect to 127.0.0.1:{srv.port}")
        assert h.finish() == 1


def test_a_password_of_the_wrong_length_is_refused_before_the_repeat(pipe: PipeInput) -> None:
    """The lengths come from the server's password_required (here 12 to 20): a password
    outside them is refused at once and asked for again, not repeated and then refused
    by the server."""
    with quiet_server(min_password=12, max_password=20) as srv:
        h = Harness(srv, pipe, user="newcomer")
        h.out.wait_for("choose a password (at least 12 characters)")
        h.out.wait_for("new password:")
        h.type("elevenchars\r")
        h.out.wait_for("!! too short: a password has at least 12 characters")
        h.type("twenty-one characters\r")
        h.out.wait_for("!! too long: a password has at most 20 characters")
        h.type("twelve chars\r")
        h.out.wait_for("repeat it:")
        h.type("twelve chars\r")
        h.out.wait_for("your account is registered")
        text = h.out.text
        assert text.index("repeat it:") > text.index("too long")  # not asked for before
        assert "must be" not in text  # the server's weak_password never came
        h.type("EX\r")
        assert h.finish() == 0


def test_history_never_reprints_what_came_live(
    server: TestServer, pipe: PipeInput, watcher: ChatClient
) -> None:
    """Nothing was said before the login; what is said after it is on screen, so
    /history has nothing earlier to show (it used to print the live lines again)."""
    h = Harness(server, pipe, user="lena", password=PW)
    h.out.wait_for("Type /help")
    watcher.pm("said live")
    watcher.dm("lena", "whispered live")
    h.out.wait_for("whispered live")
    h.type("/history\r")
    h.out.wait_for("-- no earlier messages")
    h.type("/history watcher\r")
    h.out.wait_for("-- no earlier messages", times=2)
    assert h.out.text.count("said live") == 1 and h.out.text.count("whispered live") == 1
    h.type("EX\r")
    assert h.finish() == 0


def test_existing_user_pm_and_incoming_while_typing(
    server: TestServer, pipe: PipeInput, watcher: ChatClient
) -> None:
    with ChatClient(server.host, server.port) as c:
        c.login("carol", PW)  # register first
    h = Harness(server, pipe, user="carol")
    h.out.wait_for("password for carol:")
    h.type(PW + "\r")
    h.out.wait_for("Type /help")
    with watcher.expect(Broadcast) as got:
        h.type("PM\r")
        h.out.wait_for("message:")
        h.type("hello all\r")
        assert got.wait().message == "hello all"
    # Half a line typed, then a message arrives: it is printed and the line survives.
    h.type("good ")
    watcher.pm("interrupting!")
    h.out.wait_for("<watcher> interrupting!")
    with watcher.expect(Broadcast) as got:
        h.type("bye\r")  # plain text is a PM
        assert got.wait().message == "good bye"
    # Ctrl-C clears the line.
    with watcher.expect(Broadcast) as got:
        h.type("discard me\x03PM kept\r")
        assert got.wait().message == "kept"
    h.type("\x04")  # Ctrl-D quits
    assert h.finish() == 0


def test_dm_with_tab_completion(server: TestServer, pipe: PipeInput, watcher: ChatClient) -> None:
    h = Harness(server, pipe, user="dana", password=PW)
    h.out.wait_for("Type /help")
    with watcher.expect(DirectMessage) as got:
        h.type("DM\r")
        h.out.wait_for("to:")
        h.type_until("wat", "recipient", lambda b: bool(b.complete_state))  # menu shows
        h.type_until("\t", "recipient", lambda b: b.text == "watcher")  # Tab takes it
        h.type("\r")
        h.out.wait_for("message to watcher:")
        h.type("psst\r")
        event = got.wait()
    assert (event.sender, event.message) == ("dana", "psst")
    with watcher.expect(DirectMessage) as got:
        # One-line too; the name comes with the space after it, as in a shell.
        h.type_until("DM w\t", "command", lambda b: b.text == "DM watcher ")
        h.type("quick one\r")
        assert got.wait().message == "quick one"
    watcher.dm("dana", "back at you")
    h.out.wait_for("*watcher* -> you: back at you")
    h.type("EX\r")
    assert h.finish() == 0


def test_server_errors_are_one_line_and_the_session_goes_on(pipe: PipeInput) -> None:
    with quiet_server(max_message=10) as srv:
        h = Harness(srv, pipe, user="erin", password=PW)
        h.out.wait_for("Type /help")
        h.type("PM this is far too long\r")
        h.out.wait_for("!! message is 20 characters; the limit is 10")
        h.type("DM nobody hi\r")
        h.out.wait_for("!! no user named 'nobody'")
        h.type("/nope\r")
        h.out.wait_for("!! unknown command /nope")
        h.type("PM short\r")
        h.out.wait_for("<erin> short")
        h.type("EX\r")
        assert h.finish() == 0


def test_server_going_away_and_coming_back(pipe: PipeInput) -> None:
    with quiet_server() as srv:
        h = Harness(srv, pipe, user="frank", password=PW)
        h.out.wait_for("Type /help")
        assert toolbar(h) == " connected | frank | 1 online | /help "
        srv.stop()
        h.out.wait_for("the server shut down; reconnecting...")
        # The toolbar no longer counts who is online: it does not know.
        assert toolbar(h) == " reconnecting | frank | /help "
        h.type("PM anyone?\r")
        h.out.wait_for("!! not connected (reconnecting...)")
        srv.start()
        h.out.wait_for("-- reconnected; 1 online: frank")
        assert toolbar(h) == " connected | frank | 1 online | /help "
        h.type("/who\r")
        h.out.wait_for("-- 1 online: frank\r\n")
        h.type("EX\r")
        assert h.finish() == 0


def test_session_replaced_ends_the_repl(server: TestServer, pipe: PipeInput) -> None:
    h = Harness(server, pipe, user="gina", password=PW)
    h.out.wait_for("Type /help")
    with ChatClient(server.host, server.port) as other:
        other.login("gina", PW)
        h.out.wait_for("you logged in from somewhere else")
        assert h.finish() == 1
    assert "goodbye" not in h.out.text  # ended, and said so: not a logout


def test_wrong_password_from_file_exits_1(server: TestServer, pipe: PipeInput) -> None:
    with ChatClient(server.host, server.port) as c:
        c.login("hank", PW)
    h = Harness(server, pipe, user="hank", password="not the password")
    h.out.wait_for("wrong username or password")
    assert h.finish() == 1


def test_pipe_mode(server: TestServer, watcher: ChatClient, tmp_path: Path) -> None:
    pw = tmp_path / "pw.txt"
    pw.write_text(PW + "\n")
    stdin = io.StringIO("PM hi from a script\nDM\nwatcher\nstep by step\n/who\nEX\n")
    stdout = io.StringIO()
    with watcher.expect(Broadcast) as pm:
        status = main(
            [
                "--host",
                server.host,
                "--port",
                str(server.port),
                "--user",
                "ivy",
                "--password-file",
                str(pw),
            ],
            terminal=PipeTerminal(stdin, stdout),
        )
        assert pm.wait().message == "hi from a script"
    assert status == 0
    out = stdout.getvalue()
    assert "<ivy> hi from a script" in out
    assert "[DM] you -> *watcher*: step by step" in out
    assert "-- 2 online: ivy, watcher" in out
    assert out.endswith("-- logged out; goodbye, ivy\n")
    assert "\x1b[" not in out  # plain lines, no escape codes


def test_pipe_mode_as_a_real_process(server: TestServer, tmp_path: Path) -> None:
    pw = tmp_path / "pw.txt"
    pw.write_text(PW + "\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatroom_cli",
            "--port",
            str(server.port),
            "--user",
            "jay",
            "--password-file",
            str(pw),
        ],
        input="PM hi\nEX\n",
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "CHAT_PASSWORD": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert "<jay> hi" in proc.stdout


def test_pipe_mode_needs_user_and_password(server: TestServer) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CHAT_PASSWORD"}
    proc = subprocess.run(
        [sys.executable, "-m", "chatroom_cli", "--port", str(server.port), "--user", "kim"],
        input="EX\n",
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert proc.returncode == 2
    assert "--password-file" in proc.stderr


def test_backlog_away_dms_and_history_paging(server: TestServer, pipe: PipeInput) -> None:
    """At login: the last 20 public messages dimmed under "earlier", then the DMs that
    came while we were away; /history pages further back, never reprinting what is on
    screen; a DM to someone offline says it was queued. After a reconnect, what was
    missed is shown once."""
    with ChatClient(server.host, server.port) as other:
        other.login("chatter", PW)
        with ChatClient(server.host, server.port) as me_before:
            me_before.login("kim", PW)  # kim's account exists, then kim leaves
            with me_before.expect(DirectMessage) as got:
                other.dm("kim", "from last time")  # read then, not on screen now
                got.wait()
        for i in range(30):
            other.pm(f"public {i:02d}")
        other.dm("kim", "are you there?")
        other.dm("kim", "ping me back")
        # Said right as kim logs in: shown once, live, not again in the backlog.
        other.on_users(lambda e: other.pm("welcome kim") if "kim" in e.joined else None)
        h = Harness(server, pipe, user="kim", password=PW)
        h.out.wait_for("online:")
        h.out.wait_for("welcome kim")
        text = h.out.text
        assert "-- earlier" in text
        assert "public 10" in text and "public 29" in text and "public 09" not in text
        assert "-- 2 direct messages while you were away" in text
        order = [text.index(s) for s in ("-- earlier", "public 29", "while you were away")]
        assert order == sorted(order)
        assert text.index("are you there?") < text.index("ping me back")
        h.type("/history 5\r")
        h.out.wait_for("public 05")
        assert "public 04" not in h.out.text
        h.type("/history\r")
        h.out.wait_for("that is the beginning")
        assert "public 00" in h.out.text
        h.type("/history chatter\r")  # the 2 DMs shown as "while you were away": not again
        h.out.wait_for("1 message with chatter")
        h.out.wait_for("from last time")
        assert h.out.text.count("are you there?") == 1
        with ChatClient(server.host, server.port) as gone:
            gone.login("sleeper", PW)
        h.type("DM sleeper see you later\r")
        h.out.wait_for("queued: sleeper is offline")
        # A reconnect: what was said meanwhile appears once, nothing earlier again.
        with h.client.expect(Reconnected) as back:
            server.restart()
            other.close()
            with ChatClient(server.host, server.port) as other2:
                other2.login("chatter", PW)
                other2.pm("while kim was reconnecting")
                back.wait()
        h.out.wait_for("while kim was reconnecting")
        assert h.out.text.count("public 29") == 1
        assert h.out.text.count("welcome kim") == 1
        assert h.out.text.count("while kim was reconnecting") == 1
        h.type("EX\r")
        assert h.finish() == 0
