"""--log-format json (chatroom_server.logfmt): one JSON object per line, with the
connection's fields on its own thread's lines; and chat-server's --admin-port."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chatroom_server import logfmt
from tests.helpers import RawClient


def _record(msg: str, *args: object, **extra: Any) -> logging.LogRecord:
    r = logging.LogRecord("chatroom_server.x", logging.WARNING, __file__, 1, msg, args, None)
    r.__dict__.update(extra)
    return r


def test_a_line_is_one_object_with_the_connection_of_its_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logfmt, "_json", True)
    fmt = logfmt.JsonFormatter()
    conn = SimpleNamespace(num=7, addr="10.0.0.1:5555", username=None)
    got: list[dict[str, Any]] = []

    def reader() -> None:
        logfmt.serving(conn)
        got.append(json.loads(fmt.format(_record("slow %s\nreader", "one"))))
        conn.username = "Alice"
        got.append(json.loads(fmt.format(_record("x", room="#lobby"))))

    t = threading.Thread(target=reader)
    t.start()
    t.join(10)
    elsewhere = json.loads(fmt.format(_record("from another thread")))
    assert got[0]["msg"] == "slow one\nreader"
    assert (got[0]["level"], got[0]["logger"]) == ("warning", "chatroom_server.x")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", got[0]["ts"])
    assert (got[0]["conn"], got[0]["addr"]) == (7, "10.0.0.1:5555")
    assert "user" not in got[0]
    assert (got[1]["user"], got[1]["room"]) == ("Alice", "#lobby")  # extra= fields kept
    assert "conn" not in elsewhere


def test_an_exception_is_a_field(monkeypatch: pytest.MonkeyPatch) -> None:
    fmt = logfmt.JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        r = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = fmt.format(r)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exc"]


def test_chat_server_logs_json_and_serves_its_admin_port(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatroom_server",
            "--port",
            "0",
            "--db",
            str(tmp_path / "chat.db"),
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--admin-port",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: list[dict[str, Any]] = []
    try:
        port = admin = 0
        for text in proc.stderr:
            lines.append(json.loads(text))
            msg = lines[-1]["msg"]
            if m := re.search(r"listening on [^:]+:(\d+)", msg):
                port = int(m.group(1))
            if m := re.search(r"admin endpoint on http://127\.0\.0\.1:(\d+)/", msg):
                admin = int(m.group(1))
            if port and admin:
                break
        assert port and admin
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/health", timeout=10) as r:
            assert r.read() == b"ok\n"
        c = RawClient(("127.0.0.1", port))
        c.login("alice")
        c.send(command="exit")
        c.until("bye")
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
    lines += [json.loads(t) for t in rest.splitlines()]  # every line is one object
    assert proc.returncode == 0
    mine = [x for x in lines if x.get("conn") == 1]
    assert mine and all(x["addr"].startswith("127.0.0.1:") for x in mine)
