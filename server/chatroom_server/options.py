"""chat-server's options, declared once: the command line is generated from this table.

Each :class:`Option` carries what every source of settings needs: its name (``--max-frame``
on the command line), how to read it from text, its default, its help, its group (the
``--help`` sections, and the TOML table it would live in), and whether a running server
could take a new value without a restart. A second source (a config file, environment
variables) is then one loop over :data:`OPTIONS` calling :meth:`Option.parse` and
:meth:`Option.apply`, the same calls the command line makes.

The table and :class:`~chatroom_server.config.ServerConfig` are not one-to-one on purpose:
``ServerConfig`` is the embedding API (``ChatServer(ServerConfig(...))``, the test kit's
``running_server(**options)``) and stays flat; an option maps text to one or more of its
fields (``--rate-limit 10/20`` sets two, ``--db`` names a SQLite file or the cluster's
PostgreSQL database, ``--coalesce-ms`` is in milliseconds).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from chatroom.protocol import DEFAULT_PORT, Limits
from chatroom_server.accounts import HASHERS
from chatroom_server.config import ServerConfig
from chatroom_server.olines import parse_oper, parse_password

# The --help sections, in order; an option's group is one of these.
GROUPS: dict[str, str] = {
    "listen": "where and how it listens",
    "storage": "accounts and the message log",
    "irc": "the IRC gateway (docs/IRC.md)",
    "web": "the web client and WebSocket (docs/WEB.md)",
    "cluster": "running as one node of a cluster (docs/CLUSTER.md)",
    "limits": "limits and timeouts per connection (docs/SECURITY.md)",
    "tuning": "pushes and the fan-out",
    "process": "the chat-server process",
}

# chat-server's GIL switch interval during a departure storm (chatroom_server.storm): the
# ChatServer default leaves the process's alone, since a program that embeds it owns that.
# 1 s, not 200 ms: at 200 ms about one drop of 10,000 in four took 39-65 s, not 2 (storm.py).
STORM_SWITCH_MS = 1000.0

_D = ServerConfig()
_LIM = Limits()


def _rate(text: str) -> tuple[float | None, int]:
    """``"10/20"`` -> (10.0, 20); ``"10"`` -> (10.0, 20); ``"off"`` -> (None, 20)."""
    if text.strip().lower() == "off":
        return None, _D.rate_burst
    rate, _, burst = text.partition("/")
    try:
        r, b = float(rate), int(burst) if burst else _D.rate_burst
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RATE[/BURST] or off, got {text!r}") from None
    if r <= 0 or b < 1:
        raise argparse.ArgumentTypeError("rate and burst must be positive")
    return r, b


def _positive_or_off(text: str) -> float | None:
    if text.strip().lower() == "off":
        return None
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive, or 'off'")
    return value


def _count_or_off(text: str) -> int | None:
    if text.strip().lower() == "off":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1, or 'off'")
    return value


def _milliseconds(text: str) -> float:
    """Milliseconds, 0 or more (0: off)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError("must be 0 or more milliseconds")
    return value


def _flag(text: str) -> bool:
    """A switch given as text (a config file, an environment variable)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")


def _origins(text: str) -> tuple[str, ...]:
    """``"https://a.example,http://b:8080"`` -> both; each a scheme://host[:port]."""
    origins = tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())
    for origin in origins:
        scheme, sep, host = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not host or "/" in host:
            raise argparse.ArgumentTypeError(
                f"expected origins like https://chat.example.org, got {origin!r}"
            )
    return origins


def is_pg(db: str) -> bool:
    """``--db`` names the cluster's PostgreSQL database, not a SQLite file."""
    return db.startswith(("postgresql://", "postgres://"))


def _to_field(name: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {name: value}


def _to_limits(name: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {f"limits.{name}": value}


def _db(value: str) -> dict[str, Any]:
    return {"cluster_db": value} if is_pg(value) else {"db_path": Path(value)}


def _rate_fields(value: tuple[float | None, int]) -> dict[str, Any]:
    return {"rate_limit": value[0], "rate_burst": value[1]}


def _nothing(value: Any) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Option:
    """One setting of chat-server (see the module docstring)."""

    name: str  # the long flag without "--"; "_" for "-" is its key in a file or dest
    parse: Callable[[str], Any]  # text -> value; raises argparse.ArgumentTypeError/ValueError
    default: Any  # the value when not given (already parsed)
    help: str
    group: str  # a key of GROUPS
    # ServerConfig fields this value sets ("limits.X": a field of its Limits); empty: the
    # option is the process's, not the server's (--log-level).
    to_config: Callable[[Any], dict[str, Any]] = _nothing
    restart: bool = True  # False: a running server could take a new value (none does yet)
    switch: bool = False  # a flag without a value on the command line (store_true)
    # Given again for more (--irc-oper): ``parse`` makes a tuple of each; they add up.
    repeat: bool = False
    choices: Sequence[str] | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    def apply(self, value: Any, fields: dict[str, Any]) -> None:
        """Add what this option's value sets to ``fields`` (ServerConfig keyword args)."""
        fields.update(self.to_config(value))


OPTIONS: tuple[Option, ...] = (
    # listen
    Option("host", str, _D.host, "address to listen on", "listen", _to_field("host")),
    Option(
        "port",
        int,
        DEFAULT_PORT,
        "TCP port; 0 picks a free one (the log says which)",
        "listen",
        _to_field("port"),
    ),
    Option(
        "tls-cert",
        Path,
        None,
        "PEM certificate (chain): serve TLS 1.2+",
        "listen",
        _to_field("tls_cert"),
    ),
    Option(
        "tls-key",
        Path,
        None,
        "PEM private key (if not in --tls-cert)",
        "listen",
        _to_field("tls_key"),
    ),
    # storage
    Option(
        "db",
        str,
        str(_D.db_path),
        "the SQLite file for accounts and messages (created if missing); with "
        "--cluster, the PostgreSQL database all nodes share: postgresql://USER@HOST/DBNAME",
        "storage",
        _db,
    ),
    Option(
        "password-hash",
        str,
        _D.password_hash,
        "argon2id cost for new hashes: owasp (19 MiB, t=2), or load-test (8 KiB, "
        "t=1; only for throwaway load-test accounts)",
        "storage",
        _to_field("password_hash"),
        choices=sorted(HASHERS),
    ),
    Option(
        "history",
        _flag,
        _D.history,
        "keep messages in the database (seq, resume, offline DMs, history); off: "
        "ephemeral, as protocol v1 began",
        "storage",
        _to_field("history"),
        choices=("on", "off"),
    ),
    Option(
        "history-days",
        _positive_or_off,
        _D.history_days,
        "prune messages older than this many days; 'off' keeps them",
        "storage",
        _to_field("history_days"),
        restart=False,
    ),
    Option(
        "history-max",
        _count_or_off,
        _D.history_max,
        "keep at most this many messages; 'off': no limit",
        "storage",
        _to_field("history_max"),
        restart=False,
    ),
    Option(
        "durability",
        str,
        _D.durability,
        "normal: an ack survives the server being killed; full: also a power loss "
        "(fsync per group commit, slower)",
        "storage",
        _to_field("durability"),
        choices=("normal", "full"),
    ),
    Option(
        "replay-limit",
        int,
        _D.replay_limit,
        "messages a resuming login gets at most",
        "storage",
        _to_field("replay_limit"),
        restart=False,
    ),
    # irc
    Option(
        "irc-port",
        int,
        None,
        "also serve IRC clients on this port (docs/IRC.md); off by default",
        "irc",
        _to_field("irc_port"),
    ),
    Option(
        "irc-tls-port",
        int,
        None,
        "IRC over TLS on this port (needs --tls-cert)",
        "irc",
        _to_field("irc_tls_port"),
    ),
    Option(
        "irc-channel",
        str,
        _D.irc_channel,
        "the room's channel name for IRC clients",
        "irc",
        _to_field("irc_channel"),
    ),
    Option(
        "irc-server-name",
        str,
        _D.irc_server_name,
        "the server's name to IRC clients (prefixes, 004, PONG)",
        "irc",
        _to_field("irc_server_name"),
    ),
    Option(
        "irc-guests",
        _flag,
        _D.irc_guests,
        "IRC clients without a password may use a nick no account has, for the "
        "session only (conformance suites, open test servers)",
        "irc",
        _to_field("irc_guests"),
        switch=True,
    ),
    Option(
        "irc-oper",
        parse_oper,
        _D.irc_opers,
        "an O-line: OPER NAME PASSWORD makes that IRC session a server operator; "
        "SECRET an argon2 hash (chat-server admin hash-password) or the password; "
        "repeat it for more (docs/IRC.md)",
        "irc",
        _to_field("irc_opers"),
        repeat=True,
        metavar="NAME:SECRET",
    ),
    Option(
        "irc-password",
        parse_password,
        _D.irc_password,
        "the IRC server password: every IRC client sends it with PASS before registering "
        "(accounts then log in with SASL); an argon2 hash (chat-server admin "
        "hash-password) or the password (docs/IRC.md)",
        "irc",
        _to_field("irc_password"),
        metavar="SECRET",
    ),
    # web
    Option(
        "web-port",
        int,
        None,
        "serve the web client at / and the protocol over WebSocket at /ws on this port, "
        "with TLS when --tls-cert is given (docs/WEB.md); off by default",
        "web",
        _to_field("web_port"),
    ),
    Option(
        "web-origin",
        _origins,
        _D.web_origins,
        "the page origins allowed to open a WebSocket, comma-separated "
        "(https://chat.example.org); default: the host the request was sent to",
        "web",
        _to_field("web_origins"),
        metavar="ORIGINS",
    ),
    # cluster
    Option(
        "cluster",
        str,
        None,
        "run as one node of a cluster (docs/CLUSTER.md): redis://HOST:PORT/DB, with "
        "a PostgreSQL --db; every node of one room names the same two",
        "cluster",
        _to_field("cluster"),
        metavar="REDIS_URL",
    ),
    Option(
        "cluster-prefix",
        str,
        _D.cluster_prefix,
        "Redis key prefix: one cluster per prefix in one Redis database",
        "cluster",
        _to_field("cluster_prefix"),
    ),
    Option(
        "node-timeout",
        float,
        _D.node_timeout,
        "seconds without a heartbeat before a node's users leave everywhere",
        "cluster",
        _to_field("node_timeout"),
    ),
    # limits
    Option("max-frame", int, _LIM.max_frame, "bytes per frame", "limits", _to_limits("max_frame")),
    Option(
        "max-message",
        int,
        _LIM.max_message,
        "characters per message",
        "limits",
        _to_limits("max_message"),
    ),
    Option(
        "min-password",
        int,
        _LIM.min_password,
        "minimum password length for new accounts",
        "limits",
        _to_limits("min_password"),
    ),
    Option(
        "max-output",
        int,
        _D.max_output,
        "bytes of unsent output before a slow client is disconnected",
        "limits",
        _to_field("max_output"),
        restart=False,
    ),
    Option(
        "max-connections",
        int,
        _D.max_connections,
        "connections in total",
        "limits",
        _to_field("max_connections"),
        restart=False,
    ),
    Option(
        "max-rooms",
        int,
        _D.max_rooms,
        "rooms the server holds at most (docs/PROTOCOL.md §Rooms)",
        "limits",
        _to_field("max_rooms"),
    ),
    Option(
        "max-rooms-per-user",
        int,
        _D.max_rooms_per_user,
        "rooms one user may be in at most, lobby not counted",
        "limits",
        _to_field("max_rooms_per_user"),
    ),
    Option(
        "max-per-ip",
        int,
        _D.max_per_ip,
        "connections per client address",
        "limits",
        _to_field("max_per_ip"),
        restart=False,
    ),
    Option(
        "no-loopback-exempt",
        _flag,
        not _D.exempt_loopback,
        "apply the per-address limits to loopback clients too",
        "limits",
        lambda value: {"exempt_loopback": not value},
        restart=False,
        switch=True,
    ),
    Option(
        "rate-limit",
        _rate,
        (_D.rate_limit, _D.rate_burst),
        "commands per second per connection, with bursts; 'off' for load tests",
        "limits",
        _rate_fields,
        restart=False,
        metavar="RATE[/BURST]|off",
    ),
    Option(
        "login-timeout",
        float,
        _D.login_timeout,
        "seconds a connection has to log in",
        "limits",
        _to_field("login_timeout"),
        restart=False,
    ),
    Option(
        "idle-timeout",
        float,
        _D.idle_timeout,
        "seconds of silence before a logged-in client is closed; 0 = never",
        "limits",
        _to_field("idle_timeout"),
        restart=False,
    ),
    # tuning
    Option(
        "users-interval",
        float,
        _D.users_interval,
        "seconds between user-list pushes to everyone; 0 turns them off",
        "tuning",
        _to_field("users_interval"),
    ),
    Option(
        "users-window",
        float,
        _D.users_window,
        "shortest seconds between two users_delta pushes (changes meanwhile are merged)",
        "tuning",
        _to_field("users_window"),
    ),
    Option(
        "coalesce-ms",
        _milliseconds,
        _D.coalesce * 1000,
        "longest a busy fan-out waits so that more messages share each send "
        "(only while messages keep coming; 0: never wait)",
        "tuning",
        lambda ms: {"coalesce": ms / 1000},
        metavar="MS",
    ),
    Option(
        "storm-switch-ms",
        _milliseconds,
        STORM_SWITCH_MS,
        "the process's GIL switch interval while many connections end at once "
        "(chatroom_server.storm; 0: never change it)",
        "tuning",
        lambda ms: {"storm_switch_interval": ms / 1000 or None},
        metavar="MS",
    ),
    Option(
        "login-slots",
        int,
        _D.login_slots,
        "connections running their login at once; in a storm the rest wait in line "
        "(chatroom_server.admission; 0: no limit)",
        "tuning",
        _to_field("login_slots"),
        metavar="N",
    ),
    # process
    Option(
        "log-level",
        str,
        "info",
        "logging level",
        "process",
        restart=False,
        choices=("debug", "info", "warning", "error"),
    ),
    Option(
        "log-format",
        str,
        "text",
        "json: one object per line, with the connection's and user's fields where they "
        "apply (docs/OPERATIONS.md)",
        "process",
        choices=("text", "json"),
    ),
    Option(
        "admin-port",
        int,
        None,
        "serve /metrics, /health and /ready over HTTP on this port (docs/OPERATIONS.md); "
        "off by default",
        "process",
    ),
    Option(
        "admin-host",
        str,
        "127.0.0.1",
        "the admin endpoint's address: loopback, unless a proxy in front guards it",
        "process",
    ),
)

BY_NAME: Mapping[str, Option] = {o.name: o for o in OPTIONS}


def _display(option: Option) -> Any:
    """The default as --help shows it (the text one would type)."""
    value = option.default
    if option.name == "rate-limit":
        return f"{value[0]:g}/{value[1]}"
    if option.choices == ("on", "off"):
        return "on" if value else "off"
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option of the table to ``parser``, one argument group per GROUPS entry."""
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for option in OPTIONS:
        flag = f"--{option.name}"
        group = groups[option.group]
        if option.switch:
            group.add_argument(flag, action="store_true", help=option.help)
            continue
        if option.repeat:
            group.add_argument(
                flag, action="append", type=option.parse, help=option.help, metavar=option.metavar
            )
            continue
        kwargs: dict[str, Any] = {"default": _display(option), "help": option.help}
        if option.choices is not None:
            kwargs["choices"] = option.choices
        else:
            kwargs["type"] = option.parse
        if option.metavar is not None:
            kwargs["metavar"] = option.metavar
        group.add_argument(flag, **kwargs)


def values_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Option name -> parsed value, from what :func:`add_arguments` parsed."""
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw = getattr(args, option.dest)
        if option.repeat:  # a list of the tuples parse made, or None: not given
            values[option.name] = option.default if raw is None else repeated(raw)
            continue
        # argparse runs ``type`` on string defaults too; choices arrive as text.
        values[option.name] = option.parse(raw) if isinstance(raw, str) else raw
    return values


def repeated(parts: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    """A repeated option's values, each a tuple, as one (``Option.repeat``)."""
    return tuple(item for part in parts for item in part)


def build_config(values: Mapping[str, Any]) -> ServerConfig:
    """A ServerConfig from option values (by name; a missing one takes its default)."""
    fields: dict[str, Any] = {}
    for option in OPTIONS:
        option.apply(values.get(option.name, option.default), fields)
    limits = {k.removeprefix("limits."): fields.pop(k) for k in list(fields) if "." in k}
    return replace(_D, limits=replace(_LIM, **limits), **fields)
