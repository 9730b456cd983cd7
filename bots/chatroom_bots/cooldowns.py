"""Cooldowns: how often a command may run, per user, per place, or for everyone.

``@bot.command(cooldown=5)`` is the 0.1 per-user cooldown (once per 5 s per user);
``cooldown=Cooldown(rate=3, per=60, bucket="place")`` allows 3 runs a minute in each
place (a DM, or public: later each room, issue 35); ``bucket="global"`` counts every
run of the command by anyone. Only runs that succeed count: a call refused for its
arguments, a check or an error does not start a cooldown.

A :class:`CooldownMapping` belongs to one command and is used only by the code that runs
commands, one at a time (the threaded bot's turn, or the asyncio bot's event loop), so
it has no lock of its own. Times come from the bot's clock (monotonic seconds), so a test
moves them with the fake clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from chatroom.protocol import username_key

__all__ = ["Bucket", "Cooldown", "CooldownMapping", "cooldown"]

Bucket = Literal["user", "place", "global"]

F = TypeVar("F", bound=Callable[..., Any])

# Keys kept before expired windows are swept, so 100,000 one-off users cost no memory
# once their windows have passed.
_SWEEP_AT = 4096


@dataclass(frozen=True)
class Cooldown:
    """``rate`` runs per ``per`` seconds in each ``bucket``."""

    per: float
    rate: int = 1
    bucket: Bucket = "user"

    def __post_init__(self) -> None:
        if self.per <= 0 or self.rate < 1:
            raise ValueError("a cooldown needs per > 0 and rate >= 1")
        if self.bucket not in ("user", "place", "global"):
            raise ValueError(f"a cooldown's bucket is user, place or global, not {self.bucket!r}")


def cooldown(per: float, rate: int = 1, bucket: Bucket = "user") -> Callable[[F], F]:
    """Decorator form: ``@cooldown(60, rate=3, bucket="place")`` under ``@bot.command()``."""
    spec = Cooldown(per, rate, bucket)

    def apply(fn: F) -> F:
        command = getattr(fn, "__chat_command__", None)
        if command is not None:
            command.cooldowns = CooldownMapping(spec)
        else:
            fn.__bot_cooldown__ = spec  # type: ignore[attr-defined]
        return fn

    return apply


class CooldownMapping:
    """The sliding windows of one command's cooldown, one per bucket key."""

    def __init__(self, spec: Cooldown) -> None:
        self.spec = spec
        self._uses: dict[tuple[str, ...], deque[float]] = {}
        self._warned: dict[tuple[str, ...], float] = {}

    def key(self, sender: str, place: tuple[str, ...]) -> tuple[str, ...]:
        if self.spec.bucket == "user":
            return ("user", username_key(sender))
        if self.spec.bucket == "place":
            return place
        return ("global",)

    def retry_after(self, key: tuple[str, ...], now: float) -> float:
        """Seconds until the next run is allowed (0.0: allowed now)."""
        uses = self._uses.get(key)
        if not uses:
            return 0.0
        while uses and now - uses[0] >= self.spec.per:
            uses.popleft()
        if len(uses) < self.spec.rate:
            return 0.0
        return self.spec.per - (now - uses[0])

    def should_warn(self, key: tuple[str, ...], now: float) -> bool:
        """True once per cooldown period: a user who keeps trying is told once."""
        if now - self._warned.get(key, -1e18) < self.spec.per:
            return False
        self._warned[key] = now
        return True

    def consume(self, key: tuple[str, ...], now: float) -> None:
        if len(self._uses) >= _SWEEP_AT:
            self._sweep(now)
        self._uses.setdefault(key, deque()).append(now)

    def _sweep(self, now: float) -> None:
        per = self.spec.per
        for k in [k for k, d in self._uses.items() if not d or now - d[-1] >= per]:
            del self._uses[k]
        for k in [k for k, t in self._warned.items() if now - t >= per]:
            del self._warned[k]
