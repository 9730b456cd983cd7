"""Who the bot answers, and how much: who really joined or left (:class:`Presence`), the
loop guard (:class:`LoopGuard`), long replies cut to the server's limit
(:func:`split_reply`), and ``@bot`` mentions (:func:`mention_of`). Shared by both bots;
each class has a lock of its own (handlers and any thread calling ``tell`` use them).
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Sequence

from chatroom.protocol import username_key

__all__ = ["LoopGuard", "Presence", "mention_of", "split_reply"]

# Pieces a long reply is cut into, at most: a reply that would need more is a bug (a
# help listing that never ends), not something to flood a user with.
MAX_REPLY_PARTS = 5
# Users whose loop-guard windows are kept before the expired ones are swept.
_SWEEP_AT = 4096


class Presence:
    """Who is online, and who really arrived or left: not the users online when the bot
    starts, not itself, not a session takeover, and not everyone coming back after a
    server restart (``rejoin_grace`` seconds). ``_lock`` guards ``_online`` and ``_lost``."""

    def __init__(self, rejoin_grace: float) -> None:
        self.rejoin_grace = rejoin_grace
        self._lock = threading.Lock()
        self._online: set[str] = set()  # lower-cased names
        self._lost: dict[str, float] = {}  # online when we lost the server -> when

    def reset(self, users: Sequence[str]) -> None:
        with self._lock:
            self._online = {username_key(u) for u in users}

    def lost(self, now: float) -> None:
        with self._lock:
            self._lost.update({u: now for u in self._online})

    def changed(
        self, me: str, users: Sequence[str], joined: Sequence[str], left: Sequence[str], now: float
    ) -> tuple[list[str], list[str]]:
        me = username_key(me)
        with self._lock:
            before = self._online
            self._online = {username_key(u) for u in users}
            arrived = []
            for name in joined:
                key = username_key(name)
                lost_at = self._lost.pop(key, None)
                if key == me or key in before:
                    continue  # ourselves, or a takeover of a session that never left
                if lost_at is not None and now - lost_at < self.rejoin_grace:
                    continue  # someone coming back after a server restart
                arrived.append(name)
            gone = [n for n in left if username_key(n) != me and username_key(n) in before]
        return arrived, gone


class LoopGuard:
    """The bot never answers its own words coming back (two echo bots cannot ping-pong)
    and answers each user at most ``replies_per_minute`` times a minute. ``_lock``
    guards both windows (handlers and any thread calling ``tell`` use them)."""

    def __init__(self, replies_per_minute: int) -> None:
        self.replies_per_minute = replies_per_minute
        self._lock = threading.Lock()
        self._sent: dict[str, deque[tuple[float, str]]] = defaultdict(deque)
        self._budget: dict[str, deque[float]] = defaultdict(deque)

    def remember(self, user: str, text: str, now: float) -> None:
        """Keep what we DM a user for a minute, to recognise it if it comes back."""
        with self._lock:
            if len(self._sent) >= _SWEEP_AT:
                self._sweep(now)
            sent = self._sent[username_key(user)]
            sent.append((now, text))
            while len(sent) > 20 or (sent and now - sent[0][0] > 60):
                sent.popleft()

    def is_own_words(self, user: str, text: str, now: float) -> bool:
        with self._lock:
            sent = self._sent.get(username_key(user), ())
            return any(now - t < 60 and s == text for t, s in sent)

    def allow_reply(self, user: str, now: float) -> bool:
        with self._lock:
            if len(self._budget) >= _SWEEP_AT:
                self._sweep(now)
            budget = self._budget[username_key(user)]
            while budget and now - budget[0] > 60:
                budget.popleft()
            if len(budget) >= self.replies_per_minute:
                return False
            budget.append(now)
            return True

    def _sweep(self, now: float) -> None:
        for k in [k for k, d in self._sent.items() if not d or now - d[-1][0] > 60]:
            del self._sent[k]
        for k in [k for k, b in self._budget.items() if not b or now - b[-1] > 60]:
            del self._budget[k]


def split_reply(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at a space where one is
    near; at most :data:`MAX_REPLY_PARTS` pieces, the last marked cut."""
    parts: list[str] = []
    while text and len(parts) < MAX_REPLY_PARTS:
        if len(text) <= limit:
            parts.append(text)
            return parts
        cut = text.rfind(" ", limit // 2, limit)
        cut = cut if cut > 0 else limit
        parts.append(text[:cut])
        text = text[cut:].lstrip()
    if text and parts:
        parts[-1] = parts[-1][: limit - 1] + "…"
    return parts


def mention_of(text: str, name: str) -> str | None:
    """``"@echo hi"`` addressed to ``echo`` -> ``"hi"``; else None. Case-insensitive."""
    t = text.lstrip()
    tag = "@" + name
    if not t.lower().startswith(tag.lower()):
        return None
    rest = t[len(tag) :]
    if rest and rest[0] not in " :,":
        return None  # "@echoes" is not "@echo"
    return rest.lstrip(" :,")
