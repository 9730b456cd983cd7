"""chat-server's settings from three sources (docs/OPERATIONS.md, Configuration): a TOML
file (``--config chat.toml``), the environment (``CHATROOM_MAX_FRAME=...``) and the
command line, which wins; then the environment; then the file; then the defaults. Every
option of the table (chatroom_server.options) is available in all three.

The file has one table per option group (``[listen]``, ``[storage]``, ... as
``chat-server default-config`` writes it), each key an option's name with ``_`` for
``-``. A key that is no option, or one in another table than its own, is an error that
names the key, its line and what was meant. Values are TOML's: strings, numbers and
booleans (a switch, or an ``on``/``off`` option); each is checked as the command line
checks it, and an error names the line.

Environment variables are ``CHATROOM_`` and the key in capitals; others with that prefix
are left alone (the test suite's and compose's own use it too).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import textwrap
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatroom_server import options
from chatroom_server.config import ConfigError
from chatroom_server.olines import OperLine
from chatroom_server.options import GROUPS, OPTIONS, Option

ENV_PREFIX = "CHATROOM_"
_BY_KEY: Mapping[str, Option] = {o.dest: o for o in OPTIONS}


@dataclass
class Settings:
    """Option values (by option name) and where each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # "default", "FILE:LINE", ...

    def set(self, name: str, value: Any, source: str) -> None:
        self.values[name] = value
        self.sources[name] = source


def explicit_args(
    build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str]
) -> argparse.Namespace:
    """Parse ``argv`` (errors and --help as usual) into a namespace holding only the
    options given on it, so that they can win over the file and the environment."""
    build_parser().parse_args(list(argv))  # --help with the defaults, usage errors
    parser = build_parser()
    for action in parser._actions:
        if action.dest not in ("help", "config", "check"):
            action.default = argparse.SUPPRESS
    return parser.parse_args(list(argv))


def resolve(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """The settings: defaults, then ``args.config``'s file, then ``env``, then what
    ``args`` holds (explicit_args). ConfigError names what is wrong."""
    env = os.environ if env is None else env
    s = Settings()
    for o in OPTIONS:
        s.set(o.name, o.default, "default")
    config = getattr(args, "config", None)
    if config is not None:
        for name, (value, line) in read_file(Path(config)).items():
            s.set(name, value, f"{config}:{line}")
    for o in OPTIONS:
        key = ENV_PREFIX + o.dest.upper()
        if key in env:
            try:
                s.set(o.name, _from_text(o, env[key]), f"${key}")
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise ConfigError(f"${key}: {exc}") from None
    given = vars(args)
    for o in OPTIONS:
        if o.dest in given:
            raw = given[o.dest]
            if o.repeat and isinstance(raw, list):  # each given once (Option.repeat)
                raw = options.repeated(raw)
            s.set(o.name, o.parse(raw) if isinstance(raw, str) else raw, f"--{o.name}")
    return s


def _from_text(o: Option, text: str) -> Any:
    if o.switch:
        return options._flag(text)
    if o.choices is not None and text not in o.choices:
        raise ValueError(f"expected one of {', '.join(o.choices)}, got {text!r}")
    return o.parse(text)


def read_file(path: Path) -> dict[str, tuple[Any, int]]:
    """Option name -> (value, line) from a config file; ConfigError names the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    lines = _key_lines(text)
    out: dict[str, tuple[Any, int]] = {}
    for table, keys in data.items():
        if table not in GROUPS:
            where = f"{path}:{lines.get(('', table), lines.get((table, ''), 0))}"
            if table in _BY_KEY:
                raise ConfigError(
                    f"{where}: {table} belongs in [{_BY_KEY[table].group}], not at the top"
                )
            raise ConfigError(f"{where}: unknown table [{table}]{_guess(table, GROUPS)}")
        if not isinstance(keys, dict):
            raise ConfigError(f"{path}:{lines.get(('', table), 0)}: {table} must be a table")
        for key, value in keys.items():
            line = lines.get((table, key), 0)
            o = _BY_KEY.get(key)
            if o is None:
                raise ConfigError(
                    f"{path}:{line}: unknown key {key} in [{table}]{_guess(key, _BY_KEY)}"
                )
            if o.group != table:
                raise ConfigError(f"{path}:{line}: {key} belongs in [{o.group}], not [{table}]")
            try:
                out[o.name] = (_from_toml(o, value), line)
            except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
                raise ConfigError(f"{path}:{line}: {key}: {exc}") from None
    return out


def _from_toml(o: Option, value: Any) -> Any:
    if isinstance(value, bool):
        if o.switch:
            return value
        if o.choices == ("on", "off"):
            return o.parse("on" if value else "off")
        raise ValueError(f"expected {_kind(o)}, got {str(value).lower()}")
    if o.switch:
        raise ValueError(f"expected true or false, got {value!r}")
    if isinstance(value, int | float | str):
        return _from_text(o, str(value))
    if o.repeat and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return options.repeated([o.parse(v) for v in value])  # irc-oper = ["a:x", "b:y"]
    raise ValueError(f"expected {_kind(o)}, got a {type(value).__name__}")


def _kind(o: Option) -> str:
    if o.choices is not None:
        return " or ".join(o.choices)
    if o.parse is int:
        return "a whole number"
    return "a number" if o.parse is float else "a string"


def _guess(word: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """(table, key) -> line number, and ("", table) for each table's header: tomllib
    says what a file holds, not where."""
    out: dict[tuple[str, str], int] = {}
    table = ""
    for n, line in enumerate(text.splitlines(), 1):
        if m := _TABLE.match(line):
            table = m.group(1)
            out.setdefault(("", table), n)
        elif m := _KEY.match(line):
            out.setdefault((table, m.group(1)), n)
    return out


# ----------------------------------------------------------------- writing files

_SECRET = re.compile(r"(://[^:/@]*:)[^@]*@")


def masked(value: Any) -> Any:
    """A value as check-config prints it: a password in a URL shown as ***."""
    return _SECRET.sub(r"\1***@", value) if isinstance(value, str) else value


def _toml(value: Any) -> str | None:
    """A value in TOML, or None when it has no TOML form (not set)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple) and value and isinstance(value[0], OperLine):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"  # secrets shown as ***
    if isinstance(value, tuple):  # the rate limit's (rate, burst), origins
        if len(value) == 2 and not isinstance(value[0], str | OperLine):
            rate, burst = value
            return '"off"' if rate is None else f'"{rate:g}/{burst}"'
        return '"' + ",".join(str(v) for v in value) + '"'
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _display(o: Option, value: Any) -> str | None:
    if o.choices == ("on", "off") and isinstance(value, bool):
        return '"on"' if value else '"off"'
    if value is None and o.parse in (options._positive_or_off, options._count_or_off):
        return '"off"'
    return _toml(value)


def render(settings: Settings | None = None) -> str:
    """A config file: every option under its group's table with its help as a comment.
    Without ``settings``, the defaults, commented out (``default-config``: the file
    changes nothing until a line is uncommented); with them, the effective values and
    where each came from (``check-config``), secrets masked."""
    head = (
        "# chat-server configuration (docs/OPERATIONS.md, Configuration).\n"
        "# Every key is also a command-line flag (--max-frame for max_frame) and an\n"
        "# environment variable (CHATROOM_MAX_FRAME); the command line wins, then the\n"
        "# environment, then this file. SIGHUP re-reads it: the settings marked\n"
        "# 'reloads' take effect at once, the others are named in the log and wait for\n"
        "# a restart.\n"
    )
    out = [head]
    for group, title in GROUPS.items():
        members = [o for o in OPTIONS if o.group == group]
        if not members:
            continue
        out.append(f"\n[{group}]  # {title}\n")
        for o in members:
            note = "" if o.restart else " (reloads)"
            out.append(
                textwrap.fill(o.help + note, 88, initial_indent="# ", subsequent_indent="# ") + "\n"
            )
            if settings is None:
                value = _display(o, o.default)
                out.append(f"# {o.dest} = {value}\n" if value else f"# {o.dest}: not set\n")
            else:
                value = _display(o, masked(settings.values[o.name]))
                source = settings.sources[o.name]
                if value is None:
                    out.append(f"# {o.dest} is not set ({source})\n")
                else:
                    out.append(f"{o.dest} = {value}  # {source}\n")
    return "".join(out)
