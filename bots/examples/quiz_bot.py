"""A quiz bot: a conversation. ``!quiz`` asks three questions, one after the other, and
waits for each answer (a minute each) while other players' quizzes go on meanwhile.
Scores are kept in the store.

Run it: ``chat-bot run bots/examples/quiz_bot.py``, or ``python quiz_bot.py [PORT]``.
"""

from __future__ import annotations

import sys

from chatroom_bots import Bot, Context, NoAnswer, Plugin

plugin = Plugin("quiz")

QUESTIONS = [
    ("What is 6 x 7?", "42"),
    ("Which planet is the largest?", "jupiter"),
    ("How many sides has a hexagon?", "6"),
]


@plugin.command()
def quiz(ctx: Context) -> str:
    """Three questions; answer each within a minute."""
    right = 0
    for question, answer in QUESTIONS:
        try:
            reply = ctx.ask(question, timeout=60)
        except NoAnswer:
            return f"{ctx.sender}: time's up! {right}/{len(QUESTIONS)}"
        if reply.strip().lower() == answer:
            right += 1
    best = ctx.store.change(f"best/{ctx.sender.lower()}", lambda b: max(b or 0, right))
    return f"{ctx.sender}: {right}/{len(QUESTIONS)} (your best: {best})"


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    bot = Bot("quiz")
    bot.add_plugin(plugin)
    bot.run(port=port, password="quiz bot password")


if __name__ == "__main__":
    main()
