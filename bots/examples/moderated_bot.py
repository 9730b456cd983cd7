"""Middleware: a deny list, a log line per command, and metrics, around every command
of every plugin; ``!stats`` shows the metrics (admins only).

Run it: ``chat-bot run bots/examples/moderated_bot.py``, or
``python moderated_bot.py [PORT] [ADMIN]``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from chatroom_bots import Bot, Context, Metrics, Plugin, allowed, deny_list, log_commands

plugin = Plugin("moderated")
metrics = Metrics()
denied: set[str] = set()  # changed by !deny while the bot runs
plugin.use(deny_list(denied, reply="you may not use this bot"))
plugin.use(log_commands())
plugin.use(metrics)


@plugin.use
def no_links(ctx: Context, call_next: Callable[[], Any]) -> Any:
    """Refuse commands with links in them, for every command of the bot."""
    if "http://" in ctx.args or "https://" in ctx.args:
        return f"{ctx.sender}: no links, please"
    return call_next()


@plugin.command()
def echo(ctx: Context, *, text: str) -> str:
    """Say TEXT back."""
    return text


@plugin.command()
@allowed("admins")
def deny(ctx: Context, user: str) -> str:
    """Deny USER every command (admins only)."""
    denied.add(user)
    return f"{user} is denied"


@plugin.command()
@allowed("admins")
def stats(ctx: Context) -> str:
    """Calls, errors and time per command (admins only)."""
    return "; ".join(
        f"{name}: {m['calls']:g} calls, {m['errors']:g} errors, {1000 * m['seconds']:.1f} ms"
        for name, m in metrics.snapshot().items()
    )


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    bot = Bot("moderated")
    bot.add_plugin(plugin)
    if len(sys.argv) > 2:
        bot.allow_list("admins").add(sys.argv[2])
    bot.run(port=port, password="moderated bot password")


if __name__ == "__main__":
    main()
