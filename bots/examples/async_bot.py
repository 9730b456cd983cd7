"""An asyncio bot: answers DMs after an `await`, and counts public messages. Copy it."""

import asyncio
import sys

from chatroom import Broadcast, DirectMessage
from chatroom.aio import AsyncChatClient


async def run(port: int) -> None:
    async with AsyncChatClient("127.0.0.1", port, reconnect=True) as client:
        seen = 0

        @client.on_broadcast
        def count(event: Broadcast) -> None:  # plain hooks run on the loop: keep them quick
            nonlocal seen
            seen += 1

        @client.on_dm  # DMs from others only: the ones this bot sent go to on_dm_sent
        async def answer(event: DirectMessage) -> None:
            await asyncio.sleep(0.1)  # stands for an HTTP call, a database query, ...
            await client.dm(
                event.sender, f"{seen} public messages so far; you said {event.message!r}"
            )

        await client.login("asyncbot", "async bot password")
        await client.run_forever()  # Ctrl-C (or cancelling this task) logs out and closes


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    try:
        asyncio.run(run(port))
    except KeyboardInterrupt:
        pass  # Ctrl-C: asyncio.run cancelled run(), which logged out; nothing to report


if __name__ == "__main__":
    main()
