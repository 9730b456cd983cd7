"""Optional dependencies, and console scripts that say which extra they need.

``pip install chatroom`` is the SDK, the server and the bots: what a bot author needs.
The REPL (``chat``) needs ``chatroom[cli]`` (prompt_toolkit) and the load generator
(``chat-load``) needs ``chatroom[load]`` (faker, hdrhistogram), and its ``--html``
report ``chatroom[report]`` (matplotlib); ``chatroom_bots.locust`` needs
``chatroom[locust]``; ``chatroom[all]`` and
``chatroom[dev]`` bring everything. The ``chat`` and ``chat-load`` entry points live here,
not in their packages, so that a missing extra is one clear line instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["EXTRAS", "MissingExtra", "chat", "chat_load", "require"]

# extra -> the top-level modules it installs
EXTRAS: dict[str, tuple[str, ...]] = {
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


def _run(extra: str, what: str) -> None:
    try:
        require(extra, what)
    except MissingExtra as exc:
        print(f"{what}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


# The console-script wrapper pip writes calls sys.exit() with what these return, so
# main()'s status is passed on: README promises non-zero for a wrong password, an
# unreachable server and a failed load run.


def chat() -> int:
    """The ``chat`` console script."""
    _run("cli", "chat")
    from chatroom_cli.__main__ import main

    return main()


def chat_load() -> int:
    """The ``chat-load`` console script."""
    _run("load", "chat-load")
    from chatroom_bots.load.__main__ import main

    return main()
