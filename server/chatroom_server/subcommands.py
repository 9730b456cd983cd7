"""``chat-server COMMAND ...``: the commands beside running the server, each in a module
of its own, imported only when asked for (docs/OPERATIONS.md)."""

from __future__ import annotations

from collections.abc import Sequence

COMMANDS = ("backup", "restore", "new-epoch", "admin")


def run(argv: Sequence[str]) -> int:
    """Run the command ``argv[0]`` (one of :data:`COMMANDS`); its exit status."""
    if argv[0] == "admin":
        from chatroom_server import adminctl

        return adminctl.main(argv)
    from chatroom_server import backup

    return backup.main(argv)
