"""chat-server --config (chatroom_server.settings): a TOML file, CHATROOM_* variables and
the command line, in that order of strength; check-config, default-config; every error
names its key and line; SIGHUP reloads (chatroom_server.reload)."""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme

from chatroom_server import settings
from chatroom_server.__main__ import build_parser, main
from chatroom_server.config import ConfigError
from chatroom_server.options import OPTIONS
from chatroom_server.reload import reload
from tests.helpers import connect, quiet_server


def resolve(argv: list[str], env: dict[str, str] | None = None) -> settings.Settings:
    return settings.resolve(settings.explicit_args(build_parser, argv), env or {})


def test_the_command_line_wins_then_the_environment_then_the_file(tmp_path: Path) -> None:
    f = tmp_path / "chat.toml"
    f.write_text(
        '[listen]\nport = 6000\nhost = "0.0.0.0"\n\n'
        '[limits]\nmax_frame = 1000\nrate_limit = "5/10"\nno_loopback_exempt = true\n'
        '\n[storage]\nhistory = false\nhistory_days = "off"\n'
    )
    s = resolve(["--config", str(f), "--max-frame", "2000"], {"CHATROOM_PORT": "7000"})
    v = s.values
    assert (v["port"], s.sources["port"]) == (7000, "$CHATROOM_PORT")
    assert (v["max-frame"], s.sources["max-frame"]) == (2000, "--max-frame")
    assert (v["host"], s.sources["host"]) == ("0.0.0.0", f"{f}:3")
    assert v["rate-limit"] == (5.0, 10)
    assert v["no-loopback-exempt"] is True
    assert v["history"] is False and v["history-days"] is None
    assert (v["idle-timeout"], s.sources["idle-timeout"]) == (
        next(o.default for o in OPTIONS if o.name == "idle-timeout"),
        "default",
    )
    # and the server is built from them
    config = __import__("chatroom_server.options").options.build_config(v)
    assert (config.port, config.limits.max_frame, config.exempt_loopback) == (7000, 2000, False)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "[limits]\nmax_fram = 10\n",
            r"chat.toml:2: unknown key max_fram in \[limits\] "
            r"\(did you mean max_frame\?\)",
        ),
        (
            "[listen]\nport = 1\n\n[storage]\nmax_frame = 10\n",
            r"chat.toml:5: max_frame belongs in \[limits\], not \[storage\]",
        ),
        ("port = 1\n", r"chat.toml:1: port belongs in \[listen\], not at the top"),
        (
            "[limitz]\nmax_frame = 1\n",
            r"chat.toml:1: unknown table \[limitz\] \(did you mean limits\?\)",
        ),
        ('[limits]\n\nmax_frame = "lots"\n', r"chat.toml:3: max_frame: invalid literal"),
        (
            "[limits]\nmax_frame = true\n",
            r"chat.toml:2: max_frame: expected a whole number, got true",
        ),
        (
            '[limits]\nno_loopback_exempt = "yes"\n',
            r"chat.toml:2: no_loopback_exempt: expected true or false",
        ),
        ('[storage]\nhistory = "maybe"\n', r"chat.toml:2: history: expected one of on, off"),
        ("[storage]\nhistory_days = -1\n", r"chat.toml:2: history_days: must be positive"),
        ("[limits\n", r"chat.toml: not valid TOML"),
        (
            "[limits]\nmax_frame = [1]\n",
            r"chat.toml:2: max_frame: expected a whole number, got a list",
        ),
    ],
)
def test_every_error_in_a_file_names_it(tmp_path: Path, text: str, error: str) -> None:
    f = tmp_path / "chat.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=error):
        resolve(["--config", str(f)])


def test_errors_outside_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*missing\.toml"):
        resolve(["--config", str(tmp_path / "missing.toml")])
    with pytest.raises(ConfigError, match=r"\$CHATROOM_MAX_FRAME: invalid literal"):
        resolve([], {"CHATROOM_MAX_FRAME": "big"})
    with pytest.raises(ConfigError, match=r"\$CHATROOM_HISTORY: expected one of on, off"):
        resolve([], {"CHATROOM_HISTORY": "sometimes"})
    # Other CHATROOM_ variables are not ours to judge (the tests', compose's).
    assert resolve([], {"CHATROOM_TEST_PG": "x"}).values["port"] == 5050


def test_default_config_is_the_defaults_commented_out(tmp_path: Path) -> None:
    text = settings.render()
    assert not [line for line in text.splitlines() if line and not line.startswith(("#", "["))]
    # Uncommented, it says exactly the defaults.
    f = tmp_path / "all.toml"
    f.write_text(re.sub(r"^# (\w+ = .*)$", r"\1", text, flags=re.M))
    got = settings.read_file(f)
    unset = {o.name for o in OPTIONS if settings._display(o, o.default) is None}
    assert set(got) == {o.name for o in OPTIONS} - unset
    assert all(got[o.name][0] == o.default for o in OPTIONS if o.name in got)


def test_check_config_prints_the_effective_settings_secrets_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "chat.toml"
    f.write_text(
        '[storage]\ndb = "postgresql://chat:s3cret@db/chat"\n[cluster]\ncluster = "redis://r:6379/0"\n'
    )
    assert main(["check-config", "--config", str(f), "--port", "6001"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert f'db = "postgresql://chat:***@db/chat"  # {f}:2' in out
    assert "port = 6001  # --port" in out
    # What it prints is a config file that says the same.
    printed = tmp_path / "printed.toml"
    printed.write_text(out.replace("***", "s3cret"))
    assert settings.read_file(printed)["port"][0] == 6001
    f.write_text("[limits]\nmax_fram = 1\n")
    assert main(["check-config", "--config", str(f)]) == 1
    assert "unknown key max_fram" in capsys.readouterr().err
    assert main(["default-config", str(tmp_path / "new.toml")]) == 0
    assert (tmp_path / "new.toml").read_text() == settings.render()
    assert main(["default-config", str(tmp_path / "new.toml")]) == 1  # never overwrites


def test_a_reload_applies_what_it_can_and_names_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1", common_name="first").private_key_and_cert_chain_pem.write_to_path(
        str(pem)
    )
    f = tmp_path / "chat.toml"
    f.write_text("[limits]\nmax_per_ip = 50\n")
    args = settings.explicit_args(build_parser, ["--config", str(f)])
    current = settings.resolve(args, {})
    root_level = logging.getLogger().level
    with quiet_server(tls_cert=pem, max_per_ip=50) as srv:
        # (quiet_server's own settings are not the file's: the reload compares files)
        assert _served_name(srv.address, ca) == "first"
        ca.issue_cert(
            "127.0.0.1", common_name="second"
        ).private_key_and_cert_chain_pem.write_to_path(str(pem))
        f.write_text(
            '[limits]\nmax_per_ip = 7\nrate_limit = "3/6"\n[listen]\nport = 6123\n'
            '[process]\nlog_level = "debug"\n'
        )
        caplog.set_level(logging.INFO, logger="chatroom_server.reload")
        now = reload(srv.server, args, current)
        assert srv.server.config.max_per_ip == 7  # live
        assert (srv.server._rules.rate_limit, srv.server._rules.rate_burst) == (3.0, 6)
        assert srv.server.config.port != 6123  # named, not applied
        assert now.values["port"] == current.values["port"]
        assert logging.getLogger().level == logging.DEBUG
        text = caplog.text
        assert "max-per-ip is now 7" in text
        assert "port changed to 6123, which needs a restart" in text
        assert _served_name(srv.address, ca) == "second"  # the renewed certificate
        # A broken file changes nothing.
        f.write_text("[limits]\nmax_per_ip = -\n")
        assert reload(srv.server, args, now) is now
        assert "the running settings stay" in caplog.text
    logging.getLogger().setLevel(root_level)


def _served_name(address: tuple[str, int], ca: trustme.CA) -> str:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    with (
        socket.create_connection(address, timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        cert: Any = tls.getpeercert()
        return str(dict(x[0] for x in cert["subject"])["commonName"])


def test_sighup_keeps_every_connection(tmp_path: Path) -> None:
    f = tmp_path / "chat.toml"
    f.write_text("[limits]\nidle_timeout = 600\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatroom_server",
            "--config",
            str(f),
            "--port",
            "0",
            "--db",
            str(tmp_path / "chat.db"),
            "--log-format",
            "json",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        port = 0
        for line in proc.stderr:
            if m := re.search(r"listening on [^:]+:(\d+)", json.loads(line)["msg"]):
                port = int(m.group(1))
                break
        clients = [connect(("127.0.0.1", port), n) for n in ("a", "b", "c")]
        f.write_text("[limits]\nidle_timeout = 900\n")
        proc.send_signal(signal.SIGHUP)
        for line in proc.stderr:
            if "idle-timeout is now 900" in json.loads(line)["msg"]:
                break
        for c in clients:  # all still there, and answering
            c.send(command="ping", id="p")
            c.until("pong", id="p")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_check_config_loads_the_certificate_as_the_start_will(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "cert.pem"
    bad.write_text("not a certificate\n")
    assert main(["check-config", "--tls-cert", str(bad)]) == 1
    assert "cannot load the TLS certificate or key" in capsys.readouterr().err
