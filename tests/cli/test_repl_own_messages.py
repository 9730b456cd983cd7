"""The REPL and the user's own messages (issue 33): never shown twice after a reconnect,
DMs labelled by who they went to, live and from history alike, and a message over the
server's limits refused with one line before it is sent."""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.input.base import PipeInput
from prompt_toolkit.output import DummyOutput

from chatroom import Broadcast, ChatClient, DirectMessage, Reconnected, UsersChanged
from chatroom.testing import TestServer
from chatroom_cli.repl import InteractiveTerminal, Repl
from tests.helpers import CutProxy

PW = "correct horse"
T = 10.0
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"  # a terminal's bracketed paste


class Screen(DummyOutput):
    """A DummyOutput that keeps what was written, so a test can wait for text."""

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

    def wait_for(self, needle: str, timeout: float = T, *, after: str = "") -> None:
        """Until ``needle`` is on screen (below the first ``after``, if given)."""

        def there() -> bool:
            start = self._text.find(after)
            return start >= 0 and needle in self._text[start:]

        with self._cond:
            if not self._cond.wait_for(there, timeout):
                raise AssertionError(f"{needle!r} never appeared; output:\n{self._text[-3000:]}")


class Session:
    """The real REPL on a pipe input, logged in as ``user``, with clients that
    ``new_client`` makes; on leaving the ``with`` block its client is closed whatever
    happened, so a failed test leaves nothing reconnecting behind it."""

    def __init__(self, new_client: Callable[[], ChatClient], pipe: PipeInput, user: str) -> None:
        self.pipe = pipe
        self.screen = Screen()
        term = InteractiveTerminal(pipe, self.screen)
        self.repl = Repl(new_client, term, user=user, password=PW)
        self.status: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        try:
            self.screen.wait_for("Type /help")
        except BaseException:
            self.__exit__()
            raise

    @property
    def client(self) -> ChatClient:
        """The REPL's client (before login, the REPL may replace it)."""
        return self.repl.client

    def _run(self) -> None:
        self.status = self.repl.run()

    def type(self, keys: str) -> None:
        self.pipe.send_text(keys)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        if self.thread.is_alive():
            self.type("\x04")  # Ctrl-D at the prompt: the REPL ends
            self.thread.join(T)

    def finish(self) -> int | None:
        self.type("EX\r")
        self.thread.join(T)
        assert not self.thread.is_alive(), "the REPL did not exit"
        return self.status


@pytest.fixture
def pipe() -> Iterator[PipeInput]:
    with create_pipe_input() as p:
        yield p


def reconnecting(address: tuple[str, int]) -> Callable[[], ChatClient]:
    return lambda: ChatClient(*address, reconnect=True, reconnect_max_delay=0.2)


def test_my_own_line_is_not_shown_again_after_a_server_restart(
    server: TestServer, pipe: PipeInput
) -> None:
    """Bob's screen repeated his own last line after a server restart, with "1 missed
    meanwhile, shown above"."""
    with Session(reconnecting(server.address), pipe, "bob") as bob:
        bob.type("DM bob a note to myself\r")
        bob.screen.wait_for("[DM] you -> *bob*: a note to myself")
        bob.type("PM my own line\r")  # the last message before the restart
        bob.screen.wait_for("<bob> my own line")
        with bob.client.expect(Reconnected) as back:
            server.restart()
            assert back.wait(T).replayed == 0
        bob.screen.wait_for("-- reconnected; 1 online: bob")
        text = bob.screen.text
        assert "missed meanwhile" not in text
        assert text.count("<bob> my own line") == 1
        assert text.count("*bob*: a note to myself") == 1  # shown once, when sent
        assert "*bob* -> you" not in text
        assert bob.finish() == 0


def test_a_dm_i_sent_elsewhere_reads_you_to_them_live_and_in_history(
    server: TestServer, pipe: PipeInput
) -> None:
    """A replayed DM alice had sent read ``[DM] *alice* -> you``; history DMs read
    ``[DM] alice -> bob``, unlike live ones."""
    proxy = CutProxy(server.address)
    with ChatClient(*server.address) as bob:
        bob.login("bob", PW)
        with ChatClient(*server.address) as phone:
            phone.login("alice", PW)
            phone.dm("bob", "sent before")
            with phone.expect(DirectMessage) as got:
                bob.dm("alice", "hi before")
                got.wait(T)
        try:
            with Session(reconnecting(proxy.address), pipe, "alice") as alice:
                alice.type("/history bob\r")
                # The lines of the page, below its heading, as they read live.
                heading = "2 messages with bob"
                alice.screen.wait_for("[DM] you -> *bob*: sent before", after=heading)
                alice.screen.wait_for("[DM] *bob* -> you: hi before", after=heading)
                # Alice's REPL loses the server for a while; meanwhile she DMs bob from
                # another device. Her REPL catches up when it is back.
                real = proxy.upstream
                with socket.socket() as nowhere:
                    nowhere.bind(("127.0.0.1", 0))  # bound, never listening: refused
                    proxy.upstream = nowhere.getsockname()[:2]
                    with alice.client.expect(Reconnected) as back:
                        proxy.cut()
                        with ChatClient(*server.address) as phone:
                            phone.login("alice", PW)
                            phone.dm("bob", "sent from my phone")
                        proxy.upstream = real
                        assert back.wait(T).replayed == 1
                alice.screen.wait_for("[DM] you -> *bob*: sent from my phone")
                alice.screen.wait_for("1 missed meanwhile, shown above")
                assert "*alice* -> you" not in alice.screen.text
                assert alice.finish() == 0
        finally:
            proxy.close()


@pytest.mark.timeout(180)  # the paste's parsing, below
def test_a_pasted_megabyte_is_refused_with_one_line_and_the_session_goes_on(
    server: TestServer, pipe: PipeInput
) -> None:
    """A pasted 1 MB message was sent, the server closed the connection (too_large), the
    SDK reconnected and sent it again, and again, until "the server did not answer in
    time"; the others saw the sender leave and join each time."""
    with ChatClient(*server.address) as watcher:
        watcher.login("watcher", PW)
        left: queue.Queue[UsersChanged] = queue.Queue()
        watcher.on_users(lambda e: left.put(e) if e.left else None)
        with Session(reconnecting(server.address), pipe, "erin") as erin:
            erin.type(PASTE_START + "x" * 1_048_576 + PASTE_END + "\r")
            # prompt_toolkit parses the pasted megabyte a key at a time: seconds of
            # work on its own, 26 s once under coverage on a loaded box. The bound is
            # the paste's, not the REPL's answer, which follows the last key at once.
            erin.screen.wait_for(
                "!! message is 1,048,576 characters; the limit is 4,000", timeout=120
            )
            # Long lines are pasted too: typed, each of 4,000 keys redraws a growing line,
            # which took over 10 s on a loaded box before the Enter was read.
            erin.type(PASTE_START + "DM watcher " + "y" * 4001 + PASTE_END + "\r")
            erin.screen.wait_for("!! message is 4,001 characters; the limit is 4,000")
            with watcher.expect(Broadcast) as got:
                erin.type("PM still here\r")
                assert got.wait(T).message == "still here"
            with watcher.expect(DirectMessage) as dm:
                erin.type(
                    PASTE_START + "DM watcher " + "z" * 4000 + PASTE_END + "\r"
                )  # at the limit
                assert dm.wait(T).message == "z" * 4000
            assert "reconnect" not in erin.screen.text
            assert left.empty()  # erin never left
            assert erin.finish() == 0
