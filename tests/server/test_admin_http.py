"""The admin endpoint (chatroom_server.admin_http): /metrics agrees with what clients did,
/health answers while /ready says the storage does not."""

from __future__ import annotations

import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatroom.testing import TestServer
from chatroom_server.__main__ import main
from chatroom_server.admin_http import AdminHttp
from tests.helpers import PASSWORD, RawClient, connect, quiet_server


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestServer, str]]:
    with quiet_server(db_path=tmp_path / "chat.db") as srv:
        admin = AdminHttp(srv.server)
        host, port = admin.start()
        try:
            yield srv, f"http://{host}:{port}"
        finally:
            admin.stop()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def _samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = _get(base + "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_what_the_clients_did(served: tuple[TestServer, str]) -> None:
    srv, base = served
    a, b, c = (connect(srv.address, n) for n in ("ann", "bob", "cy"))
    a.until("users", joined="cy")
    b.until("users", joined="cy")
    sent = 0
    for sender in (a, b, c):
        for i in range(10):
            sender.send(command="pm", message=f"m{i}", id=i)
            sender.until("ack", id=i)
            sent += 1
    wrong = RawClient(srv.address)
    wrong.send(command="login", username="ann", password="not the password")
    wrong.expect_error("bad_credentials")
    late = RawClient(srv.address)
    late.send(command="login", username="dee", password=PASSWORD, since=25)
    late.expect("login_ok")
    late.until("replay_done")

    m = _samples(base)
    assert m[("chat_messages_total", ())] == sent
    # every message went to the two others online then
    assert m[("chat_deliveries_total", ())] == 2 * sent
    assert m[("chat_logins_total", ())] == 4
    assert m[("chat_login_failures_total", ())] == 1
    assert m[("chat_replays_total", ())] == 1
    assert m[("chat_replays_truncated_total", ())] == 0
    assert m[("chat_connections_accepted_total", ())] == 5
    assert m[("chat_connections", (("tls", "false"), ("transport", "json")))] == 5
    assert m[("chat_users_online", ())] == 4
    assert m[("chat_messagelog_last_seq", ())] == sent
    assert m[("chat_fanout_pass_seconds_count", ())] >= 1
    assert m[("chat_messagelog_commit_seconds_count", ())] >= 1
    assert (
        m[("chat_messagelog_commit_seconds_bucket", (("le", "+Inf"),))]
        == m[("chat_messagelog_commit_seconds_count", ())]
    )
    assert m[("chat_database_bytes", ())] > 0
    assert m[("process_cpu_seconds_total", ())] > 0


def test_ready_follows_the_storage_and_health_does_not(
    served: tuple[TestServer, str], tmp_path: Path
) -> None:
    _, base = served
    assert _get(base + "/health") == (200, "ok\n")
    assert _get(base + "/ready") == (200, "ready\n")
    # Another process holds the write lock: no message can be stored now.
    blocker = sqlite3.connect(tmp_path / "chat.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        status, text = _get(base + "/ready")
        assert (status, text) == (503, "not ready: database: database is locked\n")
        assert _get(base + "/health") == (200, "ok\n")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert _get(base + "/ready") == (200, "ready\n")


def test_other_paths_are_not_found(served: tuple[TestServer, str]) -> None:
    _, base = served
    status, text = _get(base + "/admin")
    assert status == 404 and "/metrics" in text


def test_a_stopped_server_is_not_ready(tmp_path: Path) -> None:
    with quiet_server(db_path=tmp_path / "chat.db") as srv:
        admin = AdminHttp(srv.server)
        host, port = admin.start()
        try:
            srv.stop()
            assert _get(f"http://{host}:{port}/ready") == (503, "not ready: not listening\n")
        finally:
            admin.stop()


def test_metrics_agree_with_chat_loads_own_counts(served: tuple[TestServer, str]) -> None:
    """A load run of public messages and DMs: what the server counted is what the
    generator sent and received."""
    from chatroom_bots.load import LoadConfig, run_load

    srv, base = served
    before = _samples(base)
    cfg = LoadConfig(
        port=srv.port,
        clients=8,
        senders=2,
        rate=100.0,
        duration=1.0,
        processes=2,
        drain=1.0,
        pm_fraction=0.8,
    )
    result = run_load(cfg)
    assert result.ok and result.sent_dm > 0
    m = _samples(base)

    def grew(name: str) -> float:
        return m[(name, ())] - before.get((name, ()), 0.0)

    assert grew("chat_messages_total") == result.sent
    assert grew("chat_deliveries_total") == result.delivered
    assert grew("chat_logins_total") == result.logged_in == 8
    assert grew("chat_login_failures_total") == 0


def test_storage_errors_are_counted(
    served: tuple[TestServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatroom_server.messagelog import StorageError

    srv, base = served
    a = connect(srv.address, "writer")
    mlog = srv.server._log
    assert mlog is not None
    real = mlog.append

    def disk_full(*_: object) -> object:
        raise StorageError("database or disk is full")

    monkeypatch.setattr(mlog, "append", disk_full)
    for i in range(2):
        a.send(command="pm", message="lost", id=i)
        a.expect_error("unavailable", id=i)
    m = _samples(base)
    assert m[("chat_storage_errors_total", ())] == 2
    assert m[("chat_storage_failing_passes", ())] == 2
    monkeypatch.setattr(mlog, "append", real)
    a.send(command="pm", message="back", id="b")
    a.until("ack", id="b")
    m = _samples(base)
    assert m[("chat_storage_errors_total", ())] == 2  # a counter: it stays
    assert m[("chat_storage_failing_passes", ())] == 0


def test_rooms_are_counted(served: tuple[TestServer, str]) -> None:
    srv, base = served
    before = _samples(base)
    for name, room in (("ann", "one"), ("bob", "one"), ("cy", "two")):
        c = RawClient(srv.address)
        c.send(command="login", username=name, password=PASSWORD, features=["rooms"])
        c.expect("login_ok")
        c.send(command="join", room=room, id="j")
        c.until("room_info", id="j")
    m = _samples(base)
    assert m[("chat_rooms", ())] == before[("chat_rooms", ())] + 2
    assert m[("chat_room_memberships", ())] == before[("chat_room_memberships", ())] + 3


def test_metrics_count_the_logins_run_before_a_thread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "chat.db"
    with quiet_server(db_path=db, password_hash="load-test", login_slots=4) as srv:
        admin = AdminHttp(srv.server)
        host, port = admin.start()
        base = f"http://{host}:{port}"
        try:
            with RawClient(srv.address) as c:
                c.login("early")  # a registration, on the admission thread
            m = _samples(base)
            assert m[("chat_early_logins_total", ())] == 1
            assert m[("chat_early_logins_refused_total", ())] == 0
            assert main(["admin", "--db", str(db), "ban", "early"]) == 0
            capsys.readouterr()
            with RawClient(srv.address) as c:
                c.send(command="login", username="early", password=PASSWORD, id=1)
                c.expect_error("banned", id=1)
                c.send(command="ping", id=2)
                c.until("pong", id=2)  # its thread started once the refusal was counted
            m = _samples(base)
            assert m[("chat_early_logins_total", ())] == 1
            assert m[("chat_early_logins_refused_total", ())] == 1
        finally:
            admin.stop()
