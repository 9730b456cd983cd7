"""chat-server's option table (chatroom_server.options): the command line generated from
it sets the same ServerConfig the hand-written parser did, and a second source of
settings is one loop over the table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chatroom.protocol import Limits
from chatroom_server import options
from chatroom_server.__main__ import build_parser, config_from_args
from chatroom_server.config import ServerConfig


def parsed(*argv: str) -> ServerConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_no_options_is_the_default_config_with_chat_servers_storm_switch() -> None:
    assert parsed() == dataclasses.replace(ServerConfig(), storm_switch_interval=1.0)


def test_each_option_sets_its_fields() -> None:
    config = parsed(
        *("--host", "0.0.0.0", "--port", "0", "--db", "x.db", "--tls-cert", "c.pem"),
        *("--irc-port", "6667", "--irc-guests", "--irc-channel", "#room"),
        *("--max-frame", "4096", "--max-message", "100", "--min-password", "12"),
        *("--rate-limit", "5/7", "--no-loopback-exempt", "--history", "off"),
        *("--history-days", "off", "--history-max", "10", "--coalesce-ms", "0"),
        *("--users-interval", "0", "--password-hash", "load-test"),
    )
    assert (config.host, config.port, config.db_path) == ("0.0.0.0", 0, Path("x.db"))
    assert config.tls_cert == Path("c.pem") and config.tls_key is None
    assert (config.irc_port, config.irc_guests, config.irc_channel) == (6667, True, "#room")
    assert config.limits == Limits(max_frame=4096, max_message=100, min_password=12)
    assert (config.rate_limit, config.rate_burst) == (5.0, 7)
    assert config.exempt_loopback is False
    assert (config.history, config.history_days, config.history_max) == (False, None, 10)
    assert config.coalesce == 0 and config.users_interval == 0
    assert config.password_hash == "load-test"
    off = parsed("--rate-limit", "off")
    assert (off.rate_limit, off.rate_burst) == (None, ServerConfig().rate_burst)


def test_a_postgresql_db_is_the_clusters_and_leaves_the_sqlite_default() -> None:
    url = "postgresql://postgres@127.0.0.1/chat"
    config = parsed("--db", url, "--cluster", "redis://127.0.0.1:6379/0")
    assert config.cluster_db == url and config.db_path == ServerConfig().db_path
    assert config.cluster == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    "argv",
    [
        ("--rate-limit", "0"),
        ("--rate-limit", "x/y"),
        ("--history-days", "-1"),
        ("--history-max", "0"),
        ("--coalesce-ms", "nan"),
        ("--history", "maybe"),
    ],
)
def test_bad_values_are_refused(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit):
        parsed(*argv)


def test_the_table_is_well_formed() -> None:
    names = [o.name for o in options.OPTIONS]
    assert len(names) == len(set(names))
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    limit_fields = {f.name for f in dataclasses.fields(Limits)}
    for option in options.OPTIONS:
        assert option.group in options.GROUPS, option.name
        for key in option.to_config(option.default):
            group, _, name = key.rpartition(".")
            assert name in (limit_fields if group == "limits" else fields), (option, key)


def test_settings_from_text_are_one_loop_over_the_table() -> None:
    """What a config file or CHATROOM_* variables will do (issue 39): text per option
    name, parsed and applied by the table, gives what the command line gives."""
    text = {"max-frame": "4096", "rate-limit": "off", "history": "off", "irc-guests": "yes"}
    values = {name: options.BY_NAME[name].parse(raw) for name, raw in text.items()}
    argv = ("--max-frame", "4096", "--rate-limit", "off", "--history", "off", "--irc-guests")
    assert options.build_config(values) == parsed(*argv)


def test_help_shows_every_option_in_its_group() -> None:
    text = build_parser().format_help()
    for key, title in options.GROUPS.items():
        assert title in text, key
    for option in options.OPTIONS:
        assert f"--{option.name}" in text
