"""The echo bot: every DM is answered with the same text by DM; in public it answers
``@echo text`` or ``!echo text`` with the text.

As a plugin (``chat-bot run echo``, the ``echo`` entry point) it adds ``!echo`` and the
echo of DMs to any bot; :func:`make_echo` is the bot ``chat-bot echo`` runs, which echoes
DMs verbatim, commands included (``dm_commands=False``).
"""

from __future__ import annotations

from chatroom_bots.bot import Bot
from chatroom_bots.commands import BadArguments
from chatroom_bots.context import Context, Message
from chatroom_bots.plugins import Plugin

__all__ = ["echo_plugin", "make_echo"]


def echo_plugin() -> Plugin:
    """A new echo plugin (a plugin belongs to one bot at a time)."""
    plugin = Plugin("echo", description="says back what it is told")

    @plugin.command(help="!echo TEXT: say TEXT back")
    def echo(ctx: Context, *, text: str = "") -> str:
        if not text:
            raise BadArguments(f"usage: !echo TEXT, or @{ctx.bot.name} TEXT")
        return text

    @plugin.on_text
    def repeat(msg: Message) -> str | None:
        # A DM, or a public "@echo text" (msg.mention holds "text").
        return msg.text if msg.private else msg.mention or None

    return plugin


def make_echo(name: str = "echo") -> Bot:
    # DMs are echoed verbatim, "!help" included: no command parsing there.
    bot = Bot(name, dm_commands=False)
    bot.add_plugin(echo_plugin())
    return bot
