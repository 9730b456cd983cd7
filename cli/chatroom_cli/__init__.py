"""``chat``: a terminal client for chatroom, built on the SDK (see README, "The REPL")."""

from chatroom._extras import require

require("cli", "chatroom_cli")  # before prompt_toolkit is imported: say which extra

from chatroom_cli.repl import InteractiveTerminal, PipeTerminal, Repl  # noqa: E402

__all__ = ["InteractiveTerminal", "PipeTerminal", "Repl"]
