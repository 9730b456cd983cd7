"""The REPL's rooms, driven through prompt_toolkit's pipe input against a scripted server
that speaks rooms (tests/sdk/test_rooms_clients.py): the current room, where plain text
and ``#room text`` go, labels and unread counts, and the room commands."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.input.base import PipeInput

from chatroom import ChatClient
from chatroom_cli.repl import InteractiveTerminal, Repl
from tests.cli.test_repl import RecordingOutput
from tests.sdk.test_rooms_clients import ScriptedServer

T = 10.0


class RoomHarness:
    def __init__(self, srv: ScriptedServer, pipe: PipeInput) -> None:
        self.srv = srv
        self.pipe = pipe
        self.out = RecordingOutput()

        def new_client() -> ChatClient:
            return ChatClient(srv.host, srv.port, rooms=True, keepalive=0)

        self.repl = Repl(
            new_client, InteractiveTerminal(pipe, self.out), user="alice", password="pw"
        )
        self.status: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.status = self.repl.run()

    def type(self, keys: str) -> None:
        self.pipe.send_text(keys)

    def toolbar(self) -> str:
        return "".join(text for _, text, *_ in self.repl.toolbar())

    def sent(self, command: str) -> dict[str, Any]:
        return self.srv.command(command)

    def finish(self) -> int | None:
        self.thread.join(T)
        assert not self.thread.is_alive(), "the REPL did not exit"
        return self.status


@pytest.fixture
def h() -> Iterator[RoomHarness]:
    srv = ScriptedServer()
    with create_pipe_input() as pipe:
        harness = RoomHarness(srv, pipe)
        yield harness
        if harness.thread.is_alive():
            pipe.send_text("EX\r")
            harness.thread.join(T)
    srv.close()


def test_the_current_room_labels_and_unread_counts(h: RoomHarness) -> None:
    h.out.wait_for("Type /help for help.")
    assert "#lobby |" in h.toolbar()

    h.type("/join ops\r")
    h.out.wait_for("you are in #ops (1 member: alice); plain text goes here now")
    assert h.sent("join")["room"] == "ops"
    assert "#ops |" in h.toolbar()

    h.type("hello ops\r")
    assert h.sent("pm")["room"] == "ops"
    h.out.wait_for("<alice> hello ops")

    # A message from another room: labelled, and counted in the toolbar.
    h.srv.push(
        {
            "type": "broadcast",
            "from": "bob",
            "message": "in dev",
            "ts": 1.0,
            "seq": 30,
            "room": "Dev",
        }
    )
    h.out.wait_for("#Dev <bob> in dev")
    assert "unread: #dev 1" in h.toolbar()

    h.type("/switch dev\r")
    h.out.wait_for("now in #Dev")
    assert "#Dev |" in h.toolbar() and "unread" not in h.toolbar()

    # Elsewhere without switching: #room text.
    h.type("#ops quick one\r")
    assert h.sent("pm")["room"] == "ops"
    h.out.wait_for("#ops <alice> quick one")

    h.srv.push(
        {
            "type": "room_event",
            "room": "Dev",
            "event": "topic",
            "by": "bob",
            "topic": "new",
            "ts": 1.0,
            "seq": 31,
        }
    )
    h.out.wait_for("#Dev: bob set the topic: new")

    h.type("/switch nowhere\r")
    h.out.wait_for("you are not in #nowhere: /join nowhere")

    h.type("/part\r")
    h.out.wait_for("you left #Dev")
    assert h.sent("part")["room"] == "Dev"
    assert "#lobby |" in h.toolbar()

    h.type("lobby again\r")
    assert "room" not in h.sent("pm")  # lobby: a v1 pm, no room field

    h.type("EX\r")
    assert h.finish() == 0


def test_room_commands_show_their_answers(h: RoomHarness) -> None:
    h.out.wait_for("Type /help for help.")
    h.type("/rooms\r")
    h.out.wait_for("* #Dev (2)")
    h.out.wait_for("  #Zoo (9)")
    h.type("/switch Dev\r")
    h.out.wait_for("now in #Dev")
    h.type("/members\r")
    h.out.wait_for("#Dev: 2 members: alice (owner), bob")
    h.type("/topic\r")
    h.out.wait_for("#Dev topic: ship it")
    h.type("/topic release Friday\r")
    assert h.sent("topic").get("topic") is None  # the /topic read came first
    assert h.sent("topic")["topic"] == "release Friday"
    h.type("/mode +k s3cr3t\r")
    mode = h.sent("mode")
    assert (mode["room"], mode["modes"], mode["args"]) == ("Dev", "+k", ["s3cr3t"])
    h.type("/invite carol\r")
    h.out.wait_for("invited Carol to #Dev")
    h.type("/join locked\r")
    h.out.wait_for("!! wrong key for locked")
    h.srv.push(
        {
            "type": "room_event",
            "room": "Zoo",
            "event": "invite",
            "by": "bob",
            "user": "alice",
            "ts": 1.0,
            "seq": 40,
        }
    )
    h.out.wait_for("bob invited you to #Zoo: /join Zoo")
    h.type("EX\r")
    assert h.finish() == 0


def test_alt_n_and_alt_p_cycle_through_the_rooms(h: RoomHarness) -> None:
    h.out.wait_for("Type /help for help.")
    h.type("/join ops\r")
    h.out.wait_for("you are in #ops")
    # Rooms in order: lobby, Dev (from login_ok), ops.
    h.type("\x1bn")
    h.out.wait_for("now in #lobby")
    assert "#lobby |" in h.toolbar()
    h.type("\x1bn")
    h.out.wait_for("now in #Dev")
    h.type("\x1bp")
    h.out.wait_for("now in #lobby", times=2)
    h.type("\x1bp")
    h.out.wait_for("now in #ops")
    assert "#ops |" in h.toolbar()
    # Tab offers the current room's members too (Dev's alice and bob are online here).
    assert set(h.repl.online()) >= {"alice", "bob"}
    h.type("EX\r")
    assert h.finish() == 0
