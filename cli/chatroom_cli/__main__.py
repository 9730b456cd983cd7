"""``chat [--host H] [--port P] [--user NAME]``: the chatroom REPL.

:func:`main` is the ``chat`` console script. It checks for the 'cli' extra before
prompt_toolkit is imported (by :mod:`chatroom_cli.repl`): without it, one line says what
to install, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chatroom import ChatClient
from chatroom.extras import require_or_exit
from chatroom.protocol import DEFAULT_PORT

if TYPE_CHECKING:
    from chatroom_cli.terminal import Terminal


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chat",
        description="Chat from a terminal. Type /help once connected. Without a terminal "
        "(stdin is a pipe) it reads commands from stdin and prints events as plain lines.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="server address (default 127.0.0.1); a cluster's nodes as a,b:5051,c: tried in "
        "order, and a lost connection resumes on the next",
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"server port (default {DEFAULT_PORT})"
    )
    p.add_argument("--user", help="username (asked for if not given)")
    p.add_argument(
        "--password-file",
        type=Path,
        help="read the password from the first line of this file (or set "
        "CHAT_PASSWORD); never given on the command line itself",
    )
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--ca-file", help="CA certificate to verify the server with (TLS)")
    p.add_argument(
        "--log-level",
        default="error",
        choices=["debug", "info", "warning", "error"],
        help="SDK log messages on stderr (default error)",
    )
    return p


def read_password(path: Path | None) -> str | None:
    """The password from ``--password-file`` or ``CHAT_PASSWORD``, else None (ask)."""
    if path is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""
    return os.environ.get("CHAT_PASSWORD")


def main(argv: Sequence[str] | None = None, terminal: Terminal | None = None) -> int:
    # The console-script wrapper pip writes calls sys.exit() with what this returns, so
    # the status is passed on: README promises non-zero for a wrong password and an
    # unreachable server.
    require_or_exit("cli", "chat")
    from chatroom_cli.repl import InteractiveTerminal, PipeTerminal, Repl

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        password = read_password(args.password_file)
    except OSError as exc:
        print(f"chat: cannot read the password file: {exc}", file=sys.stderr)
        return 2
    term = terminal or (InteractiveTerminal() if sys.stdin.isatty() else PipeTerminal())
    if not term.interactive and (args.user is None or password is None):
        print(
            "chat: without a terminal, give --user and --password-file (or CHAT_PASSWORD)",
            file=sys.stderr,
        )
        return 2

    def new_client() -> ChatClient:
        return ChatClient(
            args.host, args.port, reconnect=True, tls=args.tls, ca_file=args.ca_file, rooms=True
        )

    return Repl(new_client, term, user=args.user, password=password).run()


if __name__ == "__main__":
    sys.exit(main())
