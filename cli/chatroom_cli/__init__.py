"""``chat``: a terminal client for chatroom, built on the SDK (see README, "The REPL").

The REPL needs the 'cli' extra (prompt_toolkit). Importing this package does not: its
names are imported on first use, after the check that says which extra is missing
(:func:`chatroom.extras.lazy_exports`), so that the ``chat`` console script
(:mod:`chatroom_cli.__main__`) can say it in one line instead of a traceback.
"""

from typing import TYPE_CHECKING

from chatroom.extras import lazy_exports

if TYPE_CHECKING:
    from chatroom_cli.repl import InteractiveTerminal, PipeTerminal, Repl

__all__ = ["InteractiveTerminal", "PipeTerminal", "Repl"]

__getattr__ = lazy_exports(__name__, "cli", dict.fromkeys(__all__, "chatroom_cli.repl"))
