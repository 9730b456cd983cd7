"""chat-server admin grant / revoke / operators / audit (docs/PROTOCOL.md §Moderation)
on a running server's database: a grant applies at the operator's next command, and
the audit shows who did what to whom, where and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatroom_server.__main__ import main
from chatroom_server.admin_http import AdminHttp
from chatroom_server.adminctl import token_path
from tests.helpers import PASSWORD, RawClient, connect, quiet_server
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


def test_a_server_ban_ends_the_session_and_refuses_the_login_and_registrations_close(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    with quiet_server(db_path=db) as srv:
        endpoint = AdminHttp(srv.server, token_file=token_path(str(db)))
        host, port = endpoint.start()
        url = f"http://{host}:{port}"
        try:
            mallory = connect(srv.address, "mallory")
            connect(srv.address, "alice")
            status, out, _ = admin(
                capsys, db, "--admin-url", url, "ban", "Mallory", "--reason", "spam", "--hours", "2"
            )
            assert status == 0 and out.startswith("mallory is banned from the server\n")
            mallory.until("bye", reason="disconnected")
            again = RawClient(srv.address)
            again.send(command="login", username="mallory", password="wrong password", id=1)
            again.until("error", id=1, code="bad_credentials")  # a guess learns nothing
            again.send(command="login", username="mallory", password=PASSWORD, id=2)
            refused = again.until("error", id=2)
            assert refused["code"] == "banned" and "spam" in refused["message"]
            assert "until" in refused["message"]
            status, out, _ = admin(capsys, db, "bans")
            assert out.startswith("mallory is banned from this server until ")

            assert admin(capsys, db, "registrations", "closed")[0] == 0
            newcomer = RawClient(srv.address)
            newcomer.send(command="login", username="newbie", password=PASSWORD, id=3)
            newcomer.until("error", id=3, code="registration_closed")
            connect(srv.address, "alice")  # an account logs in as ever
            assert admin(capsys, db, "registrations", "open")[0] == 0
            newcomer.send(command="login", username="newbie", password=PASSWORD, id=4)
            newcomer.until("login_ok", id=4)

            assert admin(capsys, db, "unban", "mallory") == (0, "mallory may log in again\n", "")
            assert admin(capsys, db, "unban", "mallory")[0] == 1
            again.send(command="login", username="mallory", password=PASSWORD, id=5)
            again.until("login_ok", id=5)
            actions = [line.split("\t")[2] for line in admin(capsys, db, "audit")[1].splitlines()]
            assert actions == [
                "server-unban",
                "registrations-open",
                "registrations-closed",
                "server-ban",
            ]
        finally:
            endpoint.stop()
