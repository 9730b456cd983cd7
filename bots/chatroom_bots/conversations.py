"""Conversations: a handler asks a user a question and waits for the answer.

::

    @bot.command()
    def rename(ctx: Context) -> str:
        name = ctx.ask("what should I call you?", timeout=60)     # await ctx.ask in AsyncBot
        return f"hello, {name}"

The answer is the next message the same user sends in the same place (the DM, or public:
later the room, issue 35); it goes to the question, not to the commands. Several
conversations with different users (or in different places) run at once; two questions to
the same user in the same place are answered in the order they were asked. A question
with no answer by its timeout raises :class:`NoAnswer`, which, when the handler does not
catch it, becomes the reply ``alice: no answer within 60 s; !rename gave up``. Timeouts
follow the bot's clock, so a test moves a fake clock past them.

:class:`Conversations` is the registry both bots share: ``_lock`` guards ``_pending``;
answers are offered by the client's dispatch thread (threaded) or the event loop
(asyncio), and the waiting side is :class:`ThreadQuestion` or :class:`AsyncQuestion`.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Hashable
from typing import Any

from chatroom_bots.clock import Clock
from chatroom_bots.commands import CommandError
from chatroom_bots.turns import Stopping, Suspension, TurnRunner

__all__ = ["AsyncQuestion", "Conversations", "NoAnswer", "ThreadQuestion"]

# A real clock's waits look again at least this often (a fake clock pokes them).
_RECHECK = 1.0


class NoAnswer(CommandError, TimeoutError):
    """The user did not answer a question in time."""

    def __init__(self, message: str, timeout: float) -> None:
        super().__init__(message)
        self.timeout = timeout


class _Question:
    def deliver(self, text: str) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError


class Conversations:
    """Who is waiting for an answer from whom, where."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # questions open at once, all users together
        self._lock = threading.Lock()
        self._pending: dict[Hashable, deque[_Question]] = {}
        self._count = 0

    def open(self, key: Hashable, question: _Question) -> bool:
        """Register ``question`` (False if ``limit`` questions are open already)."""
        with self._lock:
            if self._count >= self.limit:
                return False
            self._pending.setdefault(key, deque()).append(question)
            self._count += 1
        return True

    def close(self, key: Hashable, question: _Question) -> bool:
        """Withdraw an unanswered question (True if it was still open)."""
        with self._lock:
            waiting = self._pending.get(key)
            if waiting is None or question not in waiting:
                return False
            waiting.remove(question)
            if not waiting:
                del self._pending[key]
            self._count -= 1
        return True

    def offer(self, key: Hashable, text: str) -> bool:
        """``text`` from ``key``: the answer to the oldest open question there? Then it is
        delivered and True is returned (the message is not a command)."""
        with self._lock:
            waiting = self._pending.get(key)
            if not waiting:
                return False
            question = waiting.popleft()
            if not waiting:
                del self._pending[key]
            self._count -= 1
        question.deliver(text)
        return True

    def waiting(self, key: Hashable) -> bool:
        with self._lock:
            return bool(self._pending.get(key))

    def cancel_all(self) -> None:
        with self._lock:
            questions = [q for d in self._pending.values() for q in d]
            self._pending.clear()
            self._count = 0
        for q in questions:
            q.cancel()


class ThreadQuestion(_Question):
    """A question asked by a handler of the threaded bot: it gives its turn away while it
    waits (:class:`TurnRunner`) and takes it back in the order the answer came."""

    def __init__(self, runner: TurnRunner, clock: Clock, timeout: float) -> None:
        self._runner = runner
        self._clock = clock
        # From when it is asked (before the question goes out): a test that sees the
        # question and moves the clock at once moves it past this deadline.
        self.timeout = timeout
        self._deadline = clock.monotonic() + timeout
        self._cond = threading.Condition()  # guards answer and cancelled
        self.answer: str | None = None
        self.cancelled = False
        self._suspension: Suspension | None = None

    def _poke(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def deliver(self, text: str) -> None:
        # The dispatch thread: queue the handler for its turn now, so it goes on before
        # anything that arrives after its answer.
        with self._cond:
            self.answer = text
            suspension = self._suspension
            self._cond.notify_all()
        if suspension is not None:
            self._runner.resume(suspension)

    def cancel(self) -> None:
        with self._cond:
            self.cancelled = True
            self._cond.notify_all()

    def wait(self) -> str | None:
        """Wait (turn given away) for the answer; None on timeout. :class:`Stopping` if
        the bot stops meanwhile. Called by the handler holding the turn."""
        suspension = self._runner.suspend()
        with self._cond:
            self._suspension = suspension
            answered_early = self.answer is not None  # before we were ready for it
        if answered_early:
            self._runner.resume(suspension)
        deadline = self._deadline
        self._clock.subscribe(self._poke)
        try:
            with self._cond:
                while self.answer is None and not self.cancelled:
                    left = deadline - self._clock.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, _RECHECK) if self._clock.real else _RECHECK)
                answer, cancelled = self.answer, self.cancelled
        finally:
            self._clock.unsubscribe(self._poke)
        self._runner.wait_turn(suspension)  # queues it if no answer did (timeout, stop)
        if cancelled:
            raise Stopping
        return answer


class AsyncQuestion(_Question):
    """A question asked by a handler of the asyncio bot (a task of its own)."""

    def __init__(self, clock: Clock, timeout: float) -> None:
        self._clock = clock
        self.timeout = timeout
        self._deadline = clock.monotonic() + timeout  # from when it is asked
        self._loop = asyncio.get_running_loop()
        self._future: asyncio.Future[str] = self._loop.create_future()
        self._moved = asyncio.Event()

    def _poke(self) -> None:
        self._loop.call_soon_threadsafe(self._moved.set)

    def deliver(self, text: str) -> None:
        if not self._future.done():
            self._future.set_result(text)

    def cancel(self) -> None:
        if not self._future.done():
            self._future.set_exception(Stopping())

    async def wait(self) -> str | None:
        deadline = self._deadline
        self._clock.subscribe(self._poke)
        try:
            while not self._future.done():
                left = deadline - self._clock.monotonic()
                if left <= 0:
                    return None
                self._moved.clear()
                moved = asyncio.ensure_future(self._moved.wait())
                either: set[asyncio.Future[Any]] = {self._future, moved}
                try:
                    await asyncio.wait(
                        either,
                        timeout=min(left, _RECHECK) if self._clock.real else _RECHECK,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    moved.cancel()
            return self._future.result()
        finally:
            self._clock.unsubscribe(self._poke)
