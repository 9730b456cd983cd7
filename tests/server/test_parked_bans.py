"""A server-wide ban (docs/PROTOCOL.md §Moderation, "Server-wide") of the account or the
address of a parked session (logged in on the admission thread, no thread of its own:
chatroom_server.firstlook ``FirstLook.first``) ends it as it ends any session: an
``error`` ``banned`` saying why, then ``bye``; the others are not touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import RawClient, quiet_server
from tests.server.test_address_bans import admin, ended_by_ban
from tests.server.test_early_login import login_frame, parking, registered


@pytest.mark.parametrize("by", ["address", "account"])
def test_a_ban_ends_a_parked_session_with_its_reason(
    by: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    with quiet_server(db_path=db, password_hash="load-test") as srv:
        registered(srv, "mallory", "alice")
        done = parking(srv, monkeypatch)
        mallory = RawClient(srv.address, source="127.0.0.2")
        mallory.send_raw(login_frame("mallory"))
        mallory.expect("login_ok", username="mallory")
        alice = RawClient(srv.address, source="127.0.0.3")
        alice.send_raw(login_frame("alice"))
        alice.expect("login_ok", username="alice")
        assert {done.get(timeout=10), done.get(timeout=10)} == {"mallory", "alice"}

        target = ["--address", "127.0.0.2"] if by == "address" else ["mallory"]
        status, _, _ = admin(capsys, db, "ban", *target, "--reason", "spam")
        assert status == 0
        ended_by_ban(mallory, "spam")
        alice.send(command="ping", id=1)
        alice.until("pong", id=1)  # parked too, and untouched
        assert "mallory" not in srv.server.online
