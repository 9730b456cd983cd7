"""A complete bot: `!roll 2 6` in public or by DM. Copy it and change the command.

The arguments come from the signature: `!roll two` gets a usage reply, `!help roll` the
docstring. Run it: `python dice_bot.py [PORT]`, or `chat-bot run dice_bot.py --reload`.
"""

import random
import sys
from typing import Annotated

from chatroom_bots import Bot, Context, Range

bot = Bot("dice")


@bot.command(aliases=["r"], cooldown=1.0)
def roll(
    ctx: Context, dice: Annotated[int, Range(1, 100)] = 1, sides: Annotated[int, Range(2, 1000)] = 6
) -> str:
    """Roll DICE dice with SIDES sides."""
    rolls = [random.randint(1, sides) for _ in range(dice)]
    return f"{ctx.sender} rolled {' + '.join(map(str, rolls))} = {sum(rolls)}"


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    bot.run(port=port, password="dice bot password")  # Ctrl-C stops it


if __name__ == "__main__":
    main()
