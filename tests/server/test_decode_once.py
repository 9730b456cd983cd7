"""A login run on the admission thread decodes its frame once
(chatroom_server.earlylogin ``EarlyLogin.early``): the session takes the command as
decoded (``ServerSession.receive_decoded``), and a registration's command, decoded
before its group commit, is the one logged in after it (``EarlyLogin._registered``).
The frames after it are decoded by the session as ever."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatroom.protocol import decode_command
from chatroom_server import earlylogin
from tests.helpers import RawClient, quiet_server
from tests.server.test_early_login import early, login_frame, registered


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Any]:
    with quiet_server(tmp_path / "chat.db", password_hash="load-test", login_slots=4) as s:
        yield s


class Decodes:
    """Every decoding of a frame by the admission thread's decoder or the session's."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.early: list[bytes] = []  # by the admission thread (EarlyLogin.early)
        self.session: list[bytes] = []  # by a session (ServerSession._apply)
        decoder = earlylogin._COMMAND

        def counted_command(frame: bytes) -> Any:
            self.session.append(bytes(frame))
            return decode_command(frame)

        class Counted:
            def decode(inner, frame: bytes) -> Any:
                self.early.append(bytes(frame))
                return decoder.decode(frame)

        monkeypatch.setattr("chatroom_server.session.decode_command", counted_command)
        monkeypatch.setattr(earlylogin, "_COMMAND", Counted())

    def of(self, name: str) -> tuple[int, int]:
        """How many times a frame naming ``name`` was decoded: early, by a session."""
        quoted = b'"%s"' % name.encode()
        return sum(quoted in f for f in self.early), sum(quoted in f for f in self.session)


def test_a_return_is_decoded_once(srv: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    registered(srv, "again")
    decodes = Decodes(monkeypatch)
    before = early(srv)
    with RawClient(srv.address) as c:
        c.send_raw(login_frame("again", id=1))
        c.expect("login_ok", username="again", id=1)
        assert early(srv) == before + 1
        assert decodes.of("again") == (1, 0)
        c.send(command="pm", message="again", id=2)  # the session decodes the rest
        c.until("ack", id=2)
        assert decodes.of("again") == (1, 1)


def test_a_registration_is_decoded_once(srv: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    decodes = Decodes(monkeypatch)
    with RawClient(srv.address) as c:
        c.send_raw(login_frame("newcomer", id=1))
        c.expect("login_ok", username="newcomer", new_user=True, id=1)
        assert decodes.of("newcomer") == (1, 0)  # before its commit, not again after
