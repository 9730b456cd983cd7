"""``chat-server`` as a process: start-up errors and signal shutdown."""

from __future__ import annotations

import gc
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from chatroom_server.__main__ import GC_THRESHOLDS, tune_gc
from tests.helpers import RawClient, ServerProcess


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chatroom_server", "--db", str(tmp_path / "c.db"), *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _start(tmp_path, "--port", str(port))
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    lines = [line for line in err.splitlines() if "Traceback" not in line]
    assert len(err.strip().splitlines()) == 1, err
    assert f"cannot listen on 127.0.0.1:{port}" in lines[0]


def test_not_a_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "c.db").write_text("hello")
    proc = _start(tmp_path, "--port", "0")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert len(err.strip().splitlines()) == 1, err
    assert "not a chatroom credentials database" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_says_bye_and_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    with ServerProcess(tmp_path / "c.db") as server:
        with RawClient(server.address) as c:
            c.login("sigtest")
            server.proc.send_signal(sig)
            assert c.wait_closed()[-1] == {"type": "bye", "reason": "server_shutdown"}
        assert server.proc.wait(timeout=5) == 0


def test_check_and_option_errors_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The paths of chat-server that end before serving, run in this process."""
    from chatroom_server.__main__ import main

    db = tmp_path / "checked.db"
    assert main(["--check", "--db", str(db)]) == 0
    assert f"SQLite {db}: 0 accounts; 0 messages stored" in capsys.readouterr().out
    assert main(["--db", "postgresql://nobody@127.0.0.1/none"]) == 1
    assert "is for a cluster" in capsys.readouterr().err
    assert main(["--cluster", "redis://127.0.0.1:1/0", "--db", str(db), "--port", "0"]) == 1
    assert "needs a PostgreSQL --db" in capsys.readouterr().err
    assert main(["--irc-tls-port", "0", "--port", "0", "--db", str(db)]) == 1
    assert "--irc-tls-port needs --tls-cert" in capsys.readouterr().err


def test_storm_switch_interval_option() -> None:
    """chat-server raises the GIL switch interval in departure storms by default (the
    process is its own); 0 leaves it alone, as the embeddable ChatServer does."""
    from chatroom_server.__main__ import build_parser, config_from_args
    from chatroom_server.config import ServerConfig

    def parsed(*argv: str) -> ServerConfig:
        return config_from_args(build_parser().parse_args(list(argv)))

    assert parsed().storm_switch_interval == pytest.approx(1.0)
    assert parsed("--storm-switch-ms", "50").storm_switch_interval == pytest.approx(0.05)
    assert parsed("--storm-switch-ms", "0").storm_switch_interval is None
    assert ServerConfig().storm_switch_interval is None
    with pytest.raises(SystemExit):
        parsed("--storm-switch-ms", "-1")


def test_tune_gc_sets_the_thresholds_and_freezes_what_exists() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # startup's objects are out of every collection
        # Cycles made after it are still collected, at the later threshold.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
