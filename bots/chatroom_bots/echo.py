"""The echo bot: every DM is answered with the same text by DM; in public it answers
``@echo text`` or ``!echo text`` with the text."""

from __future__ import annotations

from chatroom_bots.bot import BadArguments, Bot, Message


def make_echo(name: str = "echo") -> Bot:
    # DMs are echoed verbatim, "!help" included: no command parsing there.
    bot = Bot(name, dm_commands=False)

    @bot.command("echo", help="!echo TEXT: say TEXT back")
    def echo(msg: Message, args: str) -> str:
        if not args:
            raise BadArguments(f"usage: !echo TEXT, or @{bot.name} TEXT")
        return args

    @bot.on_text
    def repeat(msg: Message) -> str | None:
        # A DM, or a public "@echo text" (msg.mention holds "text").
        return msg.text if msg.private else msg.mention or None

    return bot
