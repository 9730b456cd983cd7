"""Optional dependencies: which extra installs what, and saying so when one is missing.

``pip install chatroom`` is the SDK and the bots: what a bot author's bot needs. The
server (``chat-server``, and :mod:`chatroom.testing`, which runs one) needs
``chatroom[server]`` (argon2-cffi), and a cluster node ``chatroom[cluster]`` (psycopg,
redis and the server's). The REPL (``chat``) needs ``chatroom[cli]`` (prompt_toolkit),
the load generator (``chat-load``) ``chatroom[load]`` (faker, hdrhistogram) and its
``--html`` report ``chatroom[report]`` (matplotlib); ``chatroom_bots.locust`` needs
``chatroom[locust]``; ``chatroom[all]`` and ``chatroom[dev]`` bring everything.

Public so that every package of the distribution says it the same way: each console
script lives in its own package (``chatroom_server.__main__``, ``chatroom_cli.__main__``,
``chatroom_bots.load.__main__``) and calls :func:`require_or_exit` before it imports
what its extra installs, and a package whose names need an extra imports them on first
use (:func:`lazy_exports`), so that importing the package for its console script needs
nothing optional. The SDK imports none of those packages.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping

__all__ = ["EXTRAS", "MissingExtra", "lazy_exports", "require", "require_or_exit"]

# extra -> the top-level modules it installs
EXTRAS: dict[str, tuple[str, ...]] = {
    "server": ("argon2",),
    "cli": ("prompt_toolkit",),
    "load": ("faker", "hdrh"),
    "report": ("matplotlib",),
    "locust": ("locust",),
}


class MissingExtra(ImportError):
    """A part of chatroom was used without the optional dependencies it needs."""

    def __init__(self, what: str, extra: str, missing: list[str]) -> None:
        super().__init__(
            f"{what} needs the '{extra}' extra (missing: {', '.join(missing)}): "
            f"pip install 'chatroom[{extra}]'"
        )
        self.extra = extra
        self.missing = missing


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` unless every module of ``extra`` can be imported."""
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(what, extra, missing)


def require_or_exit(extra: str, script: str) -> None:
    """For a console script, before it imports what ``extra`` installs: without it, one
    line on stderr naming the extra and exit status 2, instead of a traceback."""
    try:
        require(extra, script)
    except MissingExtra as exc:
        print(f"{script}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def lazy_exports(package: str, extra: str, homes: Mapping[str, str]) -> Callable[[str], object]:
    """A package's module ``__getattr__`` (PEP 562) for its names that need ``extra``:
    ``homes`` maps each to the module defining it, imported when the name is first used,
    after :func:`require` has said which extra is missing. The package imports the same
    names under ``TYPE_CHECKING`` for type checkers."""

    def __getattr__(name: str) -> object:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        require(extra, package)
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    return __getattr__
