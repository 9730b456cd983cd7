"""The bot's clock: real time, or a fake one a test moves by hand.

Everything in a bot that depends on time (cooldowns, reply budgets, the join/leave grace,
schedules, ``bot.later``) reads the bot's :class:`Clock`, so a test can travel in time::

    clock = FakeClock(datetime(2030, 1, 7, 8, 59, tzinfo=UTC))
    bot = Bot("standup", clock=clock)
    ...
    clock.advance(minutes=1)   # the 09:00 schedule runs now

``monotonic()`` measures intervals; ``time()`` is the wall clock (epoch seconds) for
schedules at a time of day. A :class:`FakeClock` moves both together and tells whoever
subscribed (the schedulers) so they look again at once; it never moves by itself.
"""

from __future__ import annotations

import threading
import time as _time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["Clock", "FakeClock", "FunctionClock", "SystemClock", "as_clock"]


class Clock:
    """Real time (the default clock)."""

    real = True  # schedulers wait in real time for it (a fake clock wakes them instead)

    def monotonic(self) -> float:
        return _time.monotonic()

    def time(self) -> float:
        return _time.time()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def subscribe(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` whenever the clock jumps (never, for real time)."""

    def unsubscribe(self, fn: Callable[[], None]) -> None:
        """Stop calling ``fn``."""


SystemClock = Clock


class FunctionClock(Clock):
    """The 0.1 ``Bot(clock=fn)``: ``fn`` gives monotonic seconds; the wall clock is real."""

    def __init__(self, fn: Callable[[], float]) -> None:
        self._fn = fn

    def monotonic(self) -> float:
        return self._fn()


class FakeClock(Clock):
    """A clock that moves only when told (:meth:`advance`, :meth:`set`).

    Safe from any thread: ``_lock`` guards the readings and the subscribers; subscribers
    are called after the lock is released."""

    real = False

    def __init__(self, start: datetime | float | None = None) -> None:
        if start is None:
            wall = _time.time()
        elif isinstance(start, datetime):
            if start.tzinfo is None:
                raise ValueError("give the fake clock's start a timezone (tzinfo=UTC)")
            wall = start.timestamp()
        else:
            wall = float(start)
        self._lock = threading.Lock()
        self._wall = wall
        self._mono = 1_000_000.0  # any origin: only differences mean something
        self._subscribers: list[Callable[[], None]] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def time(self) -> float:
        with self._lock:
            return self._wall

    def subscribe(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._subscribers.append(fn)

    def unsubscribe(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

    def advance(
        self,
        seconds: float | timedelta = 0.0,
        *,
        minutes: float = 0.0,
        hours: float = 0.0,
        days: float = 0.0,
    ) -> None:
        """Move time forward (never back: monotonic time does not go back)."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        step = seconds + 60 * minutes + 3600 * hours + 86400 * days
        if step < 0:
            raise ValueError("a clock only moves forward")
        with self._lock:
            self._mono += step
            self._wall += step
            subscribers = list(self._subscribers)
        for fn in subscribers:
            fn()

    def set(self, when: datetime) -> None:
        """Move forward to ``when`` (an aware datetime)."""
        self.advance(when.timestamp() - self.time())


def as_clock(clock: Clock | Callable[[], float] | None) -> Clock:
    if clock is None:
        return Clock()
    if isinstance(clock, Clock):
        return clock
    return FunctionClock(clock)
