"""A poll bot: subcommands, and state in the store that survives a restart.

    !poll create "Lunch where?" pizza sushi     start a poll (one per place)
    !poll vote 2                                 vote (again to change your vote)
    !poll show                                   the count so far
    !poll close                                  the result (only who started it)

Run it: ``chat-bot run bots/examples/poll_bot.py``, or ``python poll_bot.py [PORT]``.
"""

from __future__ import annotations

import sys
from typing import Any

from chatroom_bots import BadArguments, Bot, Context, Plugin

plugin = Plugin("poll")
poll = plugin.group("poll", help="run a poll: !poll create, vote, show, close")


def key(ctx: Context) -> str:
    # One poll per place: the public room (later: each room, issue 35), or a DM.
    return "/".join(ctx.place)


def current(ctx: Context) -> dict[str, Any]:
    found = ctx.store.get(key(ctx))
    if found is None:
        raise BadArguments('no poll here; start one with !poll create "QUESTION" A B')
    return dict(found)


def tally(p: dict[str, Any]) -> str:
    counts = [0] * len(p["options"])
    for choice in p["votes"].values():
        counts[choice - 1] += 1
    shown = ", ".join(f"{o}: {n}" for o, n in zip(p["options"], counts, strict=True))
    return f"{p['question']} {shown}"


@poll.command()
def create(ctx: Context, question: str, *options: str) -> str:
    """Start a poll: !poll create "QUESTION" OPTION OPTION ..."""
    if not 2 <= len(options) <= 10:
        raise BadArguments("give 2 to 10 options")
    if key(ctx) in ctx.store:
        raise BadArguments("a poll is open here already; !poll close it first")
    ctx.store[key(ctx)] = {
        "question": question,
        "options": list(options),
        "votes": {},
        "by": ctx.sender,
    }
    numbered = " ".join(f"[{i}] {o}" for i, o in enumerate(options, 1))
    return f"{ctx.sender} asks: {question} {numbered} (vote: !poll vote N)"


@poll.command()
def vote(ctx: Context, option: int) -> str:
    """Vote for option N (again to change your vote)."""
    p = current(ctx)
    if not 1 <= option <= len(p["options"]):
        raise BadArguments(f"vote 1 to {len(p['options'])}")

    def cast(stored: Any) -> Any:
        if stored is None:  # closed meanwhile
            return None
        return {**stored, "votes": {**stored["votes"], ctx.sender: option}}

    if ctx.store.change(key(ctx), cast) is None:
        del ctx.store[key(ctx)]
        raise BadArguments("that poll was just closed")
    return f"{ctx.sender} votes {p['options'][option - 1]}"


@poll.command()
def show(ctx: Context) -> str:
    """The count so far."""
    return tally(current(ctx))


@poll.command()
def close(ctx: Context) -> str:
    """Close the poll and show the result (only who started it)."""
    p = current(ctx)
    if p["by"] != ctx.sender:
        raise BadArguments(f"only {p['by']} can close this poll")
    del ctx.store[key(ctx)]
    return f"closed: {tally(p)}"


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    bot = Bot("poll")
    bot.add_plugin(plugin)
    bot.run(port=port, password="poll bot password")  # Ctrl-C stops it


if __name__ == "__main__":
    main()
