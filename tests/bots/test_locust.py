"""chatroom_bots.locust under real Locust processes (master, workers, the web UI) and the
SDK under gevent's monkey patching, against a real server.

Locust monkey-patches the standard library with gevent when imported, so nothing here
imports it: every Locust run is a subprocess of its own, as it is for users.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from chatroom.testing import TestServer
from tests.helpers import quiet_server

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "bots" / "examples" / "locustfile.py"
LOCUST = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
# The example's users, and a run that ends once it has what a test checks (locust_stop.py).
STOP = Path(__file__).resolve().parent / "locust_stop.py"
LOCUST_UNTIL = [sys.executable, "-m", "locust", "-f", f"{LOCUSTFILE},{STOP}"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def load_server() -> Iterator[TestServer]:
    with quiet_server(password_hash="load-test") as srv:
        yield srv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def processes(
    *commands: list[str], cwd: Path, env: dict[str, str] | None = None
) -> Iterator[list[subprocess.Popen[str]]]:
    procs = [
        subprocess.Popen(
            cmd,
            cwd=cwd,
            env={**ENV, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for cmd in commands
    ]
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
            if p.stdout is not None:
                p.stdout.close()


def assert_chat_stats(stats: dict[str, dict[str, Any]], users: int) -> None:
    """``stats``: by name, the entries of the JSON Locust writes as it ends."""
    for name in ("login", "pm", "deliver pm"):
        assert stats[name]["num_requests"] > 0, (name, stats)
    # Every user logged in once at least (rejoin logs in again).
    assert stats["login"]["num_requests"] >= users, stats
    # Every public message reaches the other users: far more deliveries than sends.
    assert stats["deliver pm"]["num_requests"] > stats["pm"]["num_requests"], stats
    failed = {n: r["num_failures"] for n, r in stats.items() if r["num_failures"]}
    assert failed == {}


@pytest.mark.timeout(180)
def test_distributed_headless_run_counts_logins_and_messages(
    load_server: TestServer, tmp_path: Path
) -> None:
    """One master and two worker processes, headless, against a real server. The run
    ends once the master has counted every user's login and a public message delivered
    (a fixed 4 s run ended under load with 10 of the 20 logins in), ``-t`` its bound;
    its statistics are the JSON the master writes as it ends (the CSV is rewritten once
    a second, so it may miss the last reports)."""
    port = free_port()
    host = f"chat://127.0.0.1:{load_server.port}"
    master = [
        *LOCUST_UNTIL, "--master", "--master-bind-host", "127.0.0.1",
        "--master-bind-port", str(port), "--headless", "--expect-workers", "2",
        "--expect-workers-max-wait", "40", "-u", "20", "-r", "20", "-t", "75s",
        "--host", host, "--json-file", "run", "--only-summary",
    ]  # fmt: skip
    worker = [*LOCUST, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    until = {"CHAT_STOP_LOGINS": "20", "CHAT_STOP_PMS": "1"}
    with processes(master, worker, worker, cwd=tmp_path, env=until) as (m, w1, w2):
        out, _ = m.communicate(timeout=150)
        assert m.returncode == 0, out
        for w in (w1, w2):
            w.wait(30)
            assert w.returncode == 0
    assert "2 workers connected" in out
    rows = json.loads((tmp_path / "run.json").read_text())
    assert_chat_stats({row["name"]: row for row in rows}, users=20)


@pytest.mark.timeout(120)
def test_users_in_zipf_rooms_report_deliveries_per_room_size(
    load_server: TestServer, tmp_path: Path
) -> None:
    """--chat-rooms: every user joins its rooms, talks in them, and Locust's table has a
    line per room size; a delivery in a room the user is not in would be a failure.
    The run ends once every user has joined and a room's message was delivered (it
    lasted a fixed 4 s, and under load nobody had joined by then). Its statistics are
    the JSON Locust writes as it ends: the CSV is rewritten once a second, and a run
    that ends sooner than that leaves only its header."""
    cmd = [
        *LOCUST_UNTIL, "--headless", "-u", "12", "-r", "12", "-t", "75s", "--only-summary",
        "--host", f"chat://127.0.0.1:{load_server.port}", "--json-file", "rooms",
        "--chat-rooms", "3", "--chat-room-sizes", "zipf",
    ]  # fmt: skip
    until = {"CHAT_STOP_JOINS": "12", "CHAT_STOP_ROOM_DELIVERIES": "1"}
    with processes(cmd, cwd=tmp_path, env=until) as (run,):
        out, _ = run.communicate(timeout=90)
        assert run.returncode == 0, out
    rows = json.loads((tmp_path / "rooms.json").read_text())
    stats = {row["name"]: row for row in rows}
    assert stats["join"]["num_requests"] >= 12, stats  # every user, in its room
    per_size = [n for n in stats if n.startswith("deliver pm, room of ")]
    assert per_size and all(stats[n]["num_requests"] > 0 for n in per_size), stats
    assert "deliver pm" not in stats  # nobody talked in lobby
    failed = {n: r["num_failures"] for n, r in stats.items() if r["num_failures"]}
    assert failed == {}  # no foreign room among them


@pytest.mark.timeout(120)
def test_web_ui_serves_live_chat_statistics(load_server: TestServer, tmp_path: Path) -> None:
    """The web UI mode, started by its own --autostart: the stats it serves to the
    browser hold the chat entries while the test runs."""
    web = free_port()
    cmd = [
        *LOCUST, "--web-host", "127.0.0.1", "--web-port", str(web), "--autostart",
        "--autoquit", "0", "-u", "6", "-r", "6", "-t", "30s",
        "--host", f"chat://127.0.0.1:{load_server.port}",
    ]  # fmt: skip
    with processes(cmd, cwd=tmp_path) as (ui,):
        stats: dict[str, dict[str, object]] = {}
        deadline = time.monotonic() + 60
        url = f"http://127.0.0.1:{web}/stats/requests"
        # Polled: another process's web page offers nothing to wait on.
        while time.monotonic() < deadline and not {"login", "pm"} <= stats.keys():
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    body = json.load(r)
                stats = {s["name"]: s for s in body["stats"] if s.get("method") == "chat"}
            except OSError:
                assert ui.poll() is None, ui.stdout.read() if ui.stdout else ""
            time.sleep(0.2)
        assert {"login", "pm"} <= stats.keys(), stats
        assert all(s["num_failures"] == 0 for s in stats.values()), stats
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/", timeout=5) as r:
            assert r.status == 200 and b"<html" in r.read().lower()


@pytest.mark.timeout(60)
def test_the_sdk_runs_on_greenlets_under_gevent(load_server: TestServer) -> None:
    """What Locust does to the SDK: gevent's monkey patching turns its receive and hook
    threads into greenlets; logins interleave, hooks run and may block on acks, and
    close() ends them all."""
    script = Path(__file__).with_name("gevent_clients.py")
    done = subprocess.run(
        [sys.executable, str(script), str(load_server.port), "12"],
        capture_output=True, text=True, timeout=50, env=ENV, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["patched"] and seen["threads_left"] == 1  # close() ended every greenlet
    assert seen["seq"] is not None and seen["dm_to"] == "g0"
    assert seen["receivers"] == sorted(f"g{i}" for i in range(1, 12))
    assert seen["texts"] == ["hello from a greenlet"] and seen["on_greenlets"]
