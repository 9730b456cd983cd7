"""``chat-server COMMAND ...``: the commands beside running the server, each in a module
of its own, imported only when asked for (docs/OPERATIONS.md)."""

from __future__ import annotations

from collections.abc import Sequence

COMMANDS = ("backup", "restore")


def run(argv: Sequence[str]) -> int:
    """Run the command ``argv[0]`` (one of :data:`COMMANDS`); its exit status."""
    from chatroom_server import backup

    return backup.main(argv)
