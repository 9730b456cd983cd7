"""Flood control and login throttling: small, clock-driven, I/O-free.

Every class takes ``now`` from the caller (the server's injectable clock), so tests drive
time by hand and never wait for it.

Threading: :class:`TokenBucket` and :class:`FloodMeter` belong to one connection and are
used only by its reader thread. :class:`LoginThrottle` and :class:`WindowCounter` are
shared by every connection thread and guard their tables with their own lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; one command costs one."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False


class FloodMeter:
    """Sustained abuse: more than ``limit`` frames in each of ``seconds`` consecutive
    whole seconds (docs/PROTOCOL.md §Flood control: over 5x the rate for 5 s)."""

    __slots__ = ("count", "limit", "second", "seconds", "streak")

    def __init__(self, limit: float, seconds: int) -> None:
        self.limit = limit
        self.seconds = seconds
        self.second = -1
        self.count = 0
        self.streak = 0

    def abusive(self, now: float) -> bool:
        sec = int(now)
        if sec != self.second:
            consecutive = sec == self.second + 1 and self.count > self.limit
            self.streak = self.streak + 1 if consecutive else 0
            self.second = sec
            self.count = 0
        self.count += 1
        # The current second counts as soon as it is over the limit.
        return self.streak + (self.count > self.limit) >= self.seconds


class LoginThrottle:
    """Per-account backoff after repeated wrong passwords, whatever the connection.

    The first ``free`` failures cost nothing; after that each failure locks the account's
    password check for ``base * 2**k`` seconds (capped at ``cap``). A success resets it.
    At most ``size`` accounts are remembered (least recently failed forgotten first).
    """

    def __init__(
        self, free: int = 3, base: float = 1.0, cap: float = 60.0, size: int = 100_000
    ) -> None:
        self.free = free
        self.base = base
        self.cap = cap
        self.size = size
        self._lock = threading.Lock()  # guards _state
        self._state: OrderedDict[str, tuple[int, float]] = OrderedDict()  # key -> (fails, until)

    def wait(self, key: str, now: float) -> float:
        """Seconds before this account's password may be checked again (0: now)."""
        with self._lock:
            state = self._state.get(key)
        return max(0.0, state[1] - now) if state else 0.0

    def failed(self, key: str, now: float) -> None:
        with self._lock:
            fails, _ = self._state.pop(key, (0, 0.0))
            fails += 1
            extra = fails - self.free
            until = now + min(self.cap, self.base * 2 ** (extra - 1)) if extra > 0 else 0.0
            self._state[key] = (fails, until)
            while len(self._state) > self.size:
                self._state.popitem(last=False)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._state.pop(key, None)


class WindowCounter:
    """At most ``limit`` events per key in any ``window`` seconds (e.g. registrations
    per address)."""

    def __init__(self, limit: int, window: float, size: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.size = size
        self._lock = threading.Lock()  # guards _events
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        """Record an event for ``key`` if it is within the limit; False if it is not."""
        with self._lock:
            q = self._events.pop(key, None) or deque()
            while q and now - q[0] >= self.window:
                q.popleft()
            ok = len(q) < self.limit
            if ok:
                q.append(now)
            self._events[key] = q
            while len(self._events) > self.size:
                self._events.popitem(last=False)
            return ok
