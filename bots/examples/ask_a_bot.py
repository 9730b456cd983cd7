"""Ask another bot something by DM and wait for its answer, without missing it.

The trap: `client.dm(...)` and then `client.wait_for(...)` can miss an answer that comes
back before `wait_for` starts waiting (a fast bot on a fast server answers in well under
a millisecond). `client.expect(...)` starts waiting *before* the question goes out, so
`wait()` returns the answer even if it is already in. With asyncio it reads the same:
`with client.expect(...) as answer: await client.dm(...); reply = await answer.wait(5)`.

Run it: `python ask_a_bot.py [PORT] [BOT] [QUESTION]`, with the echo bot running
(`chat-bot echo --port PORT`).
"""

import sys

from chatroom import ChatClient, DirectMessage


def ask(client: ChatClient, bot: str, question: str, timeout: float = 5.0) -> str:
    """Send ``question`` to ``bot`` by DM; its next DM to us is the answer
    (:class:`chatroom.ChatTimeout` if none comes within ``timeout`` seconds)."""
    with client.expect(DirectMessage, check=lambda e: e.sender == bot) as answer:
        client.dm(bot, question)  # the answer may be in before this returns...
        return answer.wait(timeout).message  # ...and wait() still has it


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    bot = sys.argv[2] if len(sys.argv) > 2 else "echo"
    question = sys.argv[3] if len(sys.argv) > 3 else "hello"
    with ChatClient("127.0.0.1", port) as client:
        client.login("asker", "asker's password")
        print(ask(client, bot, question))


if __name__ == "__main__":
    main()
