"""``chat``: a terminal client for chatroom, built on the SDK (see README, "The REPL")."""

from chatroom_cli.repl import InteractiveTerminal, PipeTerminal, Repl

__all__ = ["InteractiveTerminal", "PipeTerminal", "Repl"]
