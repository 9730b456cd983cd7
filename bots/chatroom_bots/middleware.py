"""Middleware: code around every command, as in slack-bolt.

A middleware is ``mw(ctx, call_next)``: it may look at ``ctx`` (``ctx.command`` is the
command about to run), refuse (return a reply, or raise a ``CommandError``, without
calling ``call_next``), or call ``call_next()`` and do something after, with its result
(the reply) or its exception. Middleware run in the order added, the bot's own first,
then each plugin's (for every command, not only the plugin's own), around the checks, the
cooldown, the argument parsing and the handler::

    @bot.use
    def timing(ctx, call_next):
        t0 = time.perf_counter()
        try:
            return call_next()
        finally:
            log.info("%s took %.1f ms", ctx.command.name, 1000 * (time.perf_counter() - t0))

In the asyncio bot ``call_next()`` returns a coroutine: write ``async def mw(ctx,
call_next): ... await call_next()``. The ones here work in both bots: they hand back
whatever ``call_next`` returns, awaiting it in a coroutine of their own when it is one.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from chatroom.protocol import username_key

__all__ = ["CallNext", "Metrics", "deny_list", "log_commands"]

log = logging.getLogger(__name__)

CallNext = Callable[[], Any]
Middleware = Callable[[Any, CallNext], Any]


def _after(result: Any, finish: Callable[[BaseException | None], None]) -> Any:
    """Call ``finish(error)`` once ``result`` is final: now, or after awaiting it."""
    if not inspect.isawaitable(result):
        finish(None)
        return result

    async def wait(awaitable: Awaitable[Any]) -> Any:
        try:
            value = await awaitable
        except BaseException as exc:
            finish(exc)
            raise
        finish(None)
        return value

    return wait(result)


def deny_list(names: Iterable[str], reply: str | None = None) -> Middleware:
    """Ignore commands from these users (silently, or with ``reply``). A set or list
    given here is read at each command, so it may be changed while the bot runs."""
    denied = names if isinstance(names, set | list) else list(names)

    def mw(ctx: Any, call_next: CallNext) -> Any:
        key = username_key(ctx.sender)
        if any(username_key(n) == key for n in denied):
            log.info("denied %s%s to %s", ctx.bot.prefix, ctx.invoked_with, ctx.sender)
            return reply
        return call_next()

    return mw


def log_commands(logger: logging.Logger | None = None, level: int = logging.INFO) -> Middleware:
    """Log every command: who, what, how long, and how it ended."""
    out = logger or logging.getLogger("chatroom_bots.commands")

    def mw(ctx: Any, call_next: CallNext) -> Any:
        t0 = time.perf_counter()

        def finish(error: BaseException | None) -> None:
            ms = 1000 * (time.perf_counter() - t0)
            how = "ok" if error is None else type(error).__name__
            name = ctx.bot.prefix + ctx.command.qualified_name
            out.log(level, "%s ran %s (%s, %.1f ms)", ctx.sender, name, how, ms)

        try:
            result = call_next()
        except BaseException as exc:
            finish(exc)
            raise
        return _after(result, finish)

    return mw


@dataclass
class _Counts:
    calls: int = 0
    errors: int = 0
    seconds: float = 0.0


@dataclass
class Metrics:
    """Counts and time per command: ``bot.use(metrics := Metrics())``, then
    ``metrics.snapshot()``. Safe from any thread (``_lock`` guards the counts)."""

    _by_command: dict[str, _Counts] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, ctx: Any, call_next: CallNext) -> Any:
        t0 = time.perf_counter()
        name = ctx.command.qualified_name

        def finish(error: BaseException | None) -> None:
            with self._lock:
                counts = self._by_command.setdefault(name, _Counts())
                counts.calls += 1
                counts.errors += error is not None
                counts.seconds += time.perf_counter() - t0

        try:
            result = call_next()
        except BaseException as exc:
            finish(exc)
            raise
        return _after(result, finish)

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {
                name: {"calls": c.calls, "errors": c.errors, "seconds": c.seconds}
                for name, c in sorted(self._by_command.items())
            }
