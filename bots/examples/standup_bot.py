"""A stand-up bot: schedules and checks. At 09:30 (Europe/Paris) on weekdays it calls
the stand-up in public; the team says what they do by DM (``!did TEXT``), and at 10:00
it posts the notes. Only the team (an allow-list in the store) may post; an admin adds
people with ``!team add NAME``.

Run it: ``chat-bot run bots/examples/standup_bot.py``, or ``python standup_bot.py [PORT]``.
"""

from __future__ import annotations

import sys
from datetime import datetime
from zoneinfo import ZoneInfo

from chatroom_bots import Bot, Context, Plugin, allowed, dm_only

TZ = ZoneInfo("Europe/Paris")
plugin = Plugin("standup")
team = plugin.group("team", help="who is in the stand-up")


def weekday(bot: Bot) -> bool:
    return datetime.fromtimestamp(bot.clock.time(), TZ).weekday() < 5


@plugin.at("09:30", tz=TZ)
def call(bot: Bot) -> None:
    if weekday(bot):
        bot.say("stand-up! tell me by DM what you are doing today: !did TEXT")


@plugin.at("10:00", tz=TZ)
def post(bot: Bot) -> None:
    notes = plugin.store.get("notes", {})
    if weekday(bot) and notes:
        bot.say("stand-up notes: " + "; ".join(f"{u}: {t}" for u, t in sorted(notes.items())))
    plugin.store["notes"] = {}


@plugin.command()
@dm_only()
@allowed("team")
def did(ctx: Context, *, text: str) -> str:
    """Your stand-up note for today (by DM)."""
    ctx.store.change("notes", lambda n: {**(n or {}), ctx.sender: text})
    return "noted"


@team.command()
@allowed("admins")
def add(ctx: Context, name: str) -> str:
    """Add NAME to the team (admins only)."""
    ctx.bot.allow_list("team").add(name)
    return f"{name} is in the team"


@team.command("list")
def list_team(ctx: Context) -> str:
    """Who is in the team."""
    return ", ".join(sorted(ctx.bot.allow_list("team"))) or "nobody yet"


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    admin = sys.argv[2] if len(sys.argv) > 2 else None
    bot = Bot("standup")
    bot.add_plugin(plugin)
    if admin:
        bot.allow_list("admins").add(admin)
    bot.run(port=port, password="standup bot password")


if __name__ == "__main__":
    main()
