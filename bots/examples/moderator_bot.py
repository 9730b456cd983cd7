"""A moderation bot on the SDK alone (docs/PROTOCOL.md §Moderation): in the rooms it
operates, it bans for an hour whoever says a word of its list, and kicks whoever sends
more than ``max_messages`` in ``per_seconds``. It must be an operator there: it creates
the rooms it joins first, or an operator gives it ``+o``, or the administrator makes it
a server operator (``chat-server admin grant modbot``).

Run it: ``python moderator_bot.py [PORT] [ROOM ...]``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable

from chatroom import Broadcast, ChatClient, ChatError
from chatroom.protocol import username_key

log = logging.getLogger("moderator_bot")

BANNED_WORDS = frozenset({"spam", "scam"})


class Moderator:
    """The rules, on one client. ``_lock`` guards ``_recent`` (hooks run one at a time
    on the client's dispatch thread; the lock is for a caller on another thread)."""

    def __init__(
        self,
        client: ChatClient,
        words: Iterable[str] = BANNED_WORDS,
        *,
        max_messages: int = 5,
        per_seconds: float = 3.0,
        ban_seconds: int = 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.words = frozenset(w.lower() for w in words)
        self.max_messages = max_messages
        self.per_seconds = per_seconds
        self.ban_seconds = ban_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._recent: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        client.on_broadcast(self.on_broadcast)

    def on_broadcast(self, event: Broadcast) -> None:
        room = event.room
        if room is None or username_key(event.sender) == username_key(self.client.username or ""):
            return  # the lobby has no operators; and never itself
        said = {w.strip(".,!?;:").lower() for w in event.message.split()}
        bad = sorted(said & self.words)
        try:
            if bad:
                why = f"said {bad[0]!r}"
                self.client.ban(room, event.sender, reason=why, duration=self.ban_seconds)
                log.info("banned %s from %s: %s", event.sender, room, why)
                return
            if self._flooding(room, event.sender):
                why = f"more than {self.max_messages} messages in {self.per_seconds:g} s"
                self.client.kick(room, event.sender, reason=why)
                log.info("kicked %s from %s: %s", event.sender, room, why)
        except ChatError as exc:  # not an operator there, or they left already
            log.warning("could not act on %s in %s: %s", event.sender, room, exc)

    def _flooding(self, room: str, sender: str) -> bool:
        now = self.clock()
        with self._lock:
            times = self._recent[(room.lower(), username_key(sender))]
            times.append(now)
            while times and times[0] <= now - self.per_seconds:
                times.popleft()
            if len(times) > self.max_messages:
                times.clear()
                return True
            return False


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    rooms = sys.argv[2:] or ["lobby-watch"]
    client = ChatClient("127.0.0.1", port, rooms=True, reconnect=True)
    Moderator(client)
    with client:
        client.login("modbot", "moderator bot password")
        for room in rooms:
            client.join(room)
        stop = threading.Event()
        try:
            stop.wait()  # Ctrl-C stops it
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
