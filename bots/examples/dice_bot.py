"""A complete bot: `!roll 2d6` in public or by DM. Copy it and change the command."""

import random
import sys

from chatroom_bots import BadArguments, Bot, Message

bot = Bot("dice")


@bot.command("roll", help="!roll NdM: roll N dice with M sides", cooldown=1.0)
def roll(msg: Message, args: str) -> str:
    try:
        n, sides = (int(x) for x in (args or "1d6").lower().split("d"))
    except ValueError:
        raise BadArguments("usage: !roll NdM, for example !roll 2d6") from None
    if not (1 <= n <= 100 and 2 <= sides <= 1000):
        raise BadArguments("roll 1 to 100 dice of 2 to 1000 sides")
    rolls = [random.randint(1, sides) for _ in range(n)]
    return f"{msg.sender} rolled {' + '.join(map(str, rolls))} = {sum(rolls)}"


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    bot.run(port=port, password="dice bot password")  # Ctrl-C stops it


if __name__ == "__main__":
    main()
