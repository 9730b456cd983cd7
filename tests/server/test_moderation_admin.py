"""chat-server admin grant / revoke / operators / audit (docs/PROTOCOL.md §Moderation)
on a running server's database: a grant applies at the operator's next command, and
the audit shows who did what to whom, where and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatroom_server.__main__ import main
from tests.helpers import quiet_server
from tests.server.test_moderation_server import refused, room_of_three
from tests.server.test_rooms_server import v2


def admin(capsys: pytest.CaptureFixture[str], db: Path, *args: str) -> tuple[int, str, str]:
    status = main(["admin", "--db", str(db), *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_grant_revoke_and_audit_beside_a_running_server(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with quiet_server() as srv:
        db = srv.db_path
        alice, _, _ = room_of_three(srv)
        oscar, _ = v2(srv, "Oscar")
        assert admin(capsys, db, "grant", "nobody")[0] == 1
        assert admin(capsys, db, "grant", "oscar") == (0, "Oscar is a server operator\n", "")
        assert admin(capsys, db, "grant", "OSCAR")[1] == "Oscar is a server operator already\n"
        status, out, _ = admin(capsys, db, "operators")
        assert status == 0 and out.startswith("Oscar\tsince ")

        oscar.send(command="kick", room="dev", user="bob", reason="testing", id=1)
        oscar.until("ack", id=1)
        alice.send(command="mode", room="dev", modes="+m", id=2)
        alice.until("ack", id=2)

        assert admin(capsys, db, "revoke", "oscar")[0] == 0
        status, _, err = admin(capsys, db, "revoke", "oscar")
        assert status == 1 and "not a server operator" in err
        oscar.send(command="kick", room="dev", user="alice", id=3)
        refused(oscar, "not_in_room", 3)

        status, out, _ = admin(capsys, db, "audit")
        lines = [line.split("\t") for line in out.splitlines()]
        assert [line[1:6] for line in lines] == [
            ["admin", "revoke", "Oscar", "-", "-"],
            ["alice", "mode", "-", "#dev", "-"],
            ["Oscar", "kick", "bob", "#dev", "testing"],
            ["admin", "grant", "Oscar", "-", "-"],
        ]
        assert '"modes":"+m"' in lines[1][6]
        status, out, _ = admin(capsys, db, "audit", "--room", "DEV", "--limit", "1")
        assert out.split("\t")[2] == "mode"
    status, _, err = admin(capsys, tmp_path / "none.db", "audit")
    assert status == 1 and "no database" in err
