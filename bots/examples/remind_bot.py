"""A reminder bot: a duration argument, one-off schedules, and reminders that survive
a restart because they are kept in the store and scheduled again when the plugin loads.

    !remind 10m stretch your legs     a DM in ten minutes
    !reminders                         what is pending for you

Run it: ``chat-bot run bots/examples/remind_bot.py``, or ``python remind_bot.py [PORT]``.
"""

from __future__ import annotations

import sys
import uuid
from datetime import timedelta
from typing import Any

from chatroom_bots import BadArguments, Bot, Context, Plugin

plugin = Plugin("remind")
MAX_PENDING = 20  # per user


def _deliver(bot: Any, rid: str) -> None:
    pending = plugin.store.get("pending", {})
    r = pending.get(rid)
    if r is None:
        return
    bot.tell(r["user"], f"reminder: {r['text']}")
    plugin.store.change("pending", lambda p: {k: v for k, v in (p or {}).items() if k != rid})


def _schedule(bot: Any, rid: str, due: float) -> None:
    bot.later(max(0.0, due - bot.clock.time()), lambda: _deliver(bot, rid), name="reminder")


@plugin.on_load
def reschedule(bot: Any) -> None:
    """After a restart (or a reload) the pending reminders are scheduled again."""
    for rid, r in plugin.store.get("pending", {}).items():
        _schedule(bot, rid, r["due"])


@plugin.command()
def remind(ctx: Context, after: timedelta, *, text: str) -> str:
    """Remind me by DM: !remind 10m TEXT (s, m, h, d, w)."""
    if not timedelta(seconds=1) <= after <= timedelta(days=365):
        raise BadArguments("between 1s and 365d")
    mine = [r for r in ctx.store.get("pending", {}).values() if r["user"] == ctx.sender]
    if len(mine) >= MAX_PENDING:
        raise BadArguments(f"you have {MAX_PENDING} reminders pending already")
    rid = uuid.uuid4().hex
    due = ctx.bot.clock.time() + after.total_seconds()
    entry = {"user": ctx.sender, "text": text, "due": due}
    ctx.store.change("pending", lambda p: {**(p or {}), rid: entry})
    _schedule(ctx.bot, rid, due)
    return f"{ctx.sender}: I'll remind you in {after}"


@plugin.command()
def reminders(ctx: Context) -> str:
    """Your pending reminders."""
    now = ctx.bot.clock.time()
    mine = sorted(
        (r["due"] - now, r["text"])
        for r in ctx.store.get("pending", {}).values()
        if r["user"] == ctx.sender
    )
    if not mine:
        return f"{ctx.sender}: nothing pending"
    return "; ".join(f"in {timedelta(seconds=round(left))}: {text}" for left, text in mine)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    bot = Bot("remind")
    bot.add_plugin(plugin)
    bot.run(port=port, password="remind bot password")


if __name__ == "__main__":
    main()
