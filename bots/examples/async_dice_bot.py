"""The dice bot on asyncio (``AsyncBot``): ``async def`` commands that may await anything
(an HTTP call, a database); here ``!roll`` asks for a bet and awaits the answer.

Run it: ``python async_dice_bot.py [PORT]``.
"""

from __future__ import annotations

import asyncio
import random
import sys
from typing import Annotated

from chatroom_bots import AsyncBot, AsyncContext, NoAnswer, Range

bot = AsyncBot("asyncdice")
Dice = Annotated[int, Range(1, 100)]
Sides = Annotated[int, Range(2, 1000)]


@bot.command(aliases=["r"])
async def roll(ctx: AsyncContext, dice: Dice = 1, sides: Sides = 6) -> str:
    """Roll DICE dice with SIDES sides."""
    rolls = [random.randint(1, sides) for _ in range(dice)]
    return f"{ctx.sender} rolled {' + '.join(map(str, rolls))} = {sum(rolls)}"


@bot.command()
async def bet(ctx: AsyncContext, sides: Sides = 6) -> str:
    """Guess the roll of one die before it is rolled."""
    try:
        guess = await ctx.ask(f"{ctx.sender}: your guess, 1 to {sides}?", timeout=30)
    except NoAnswer:
        return f"{ctx.sender}: no bet, no roll"
    rolled = random.randint(1, sides)
    won = guess.strip() == str(rolled)
    return f"{ctx.sender}: rolled {rolled}; {'you win!' if won else 'you lose'}"


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    try:
        asyncio.run(bot.run(port=port, password="async dice bot password"))
    except KeyboardInterrupt:
        pass  # bot.run logged out on the way


if __name__ == "__main__":
    main()
