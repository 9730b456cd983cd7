"""Schedules: ``@bot.every(minutes=5)``, ``@bot.at("09:00", tz="Europe/Paris")``, and
``bot.later(delay, fn)``.

- A schedule runs like a handler (one at a time with the others, in the threaded bot; as
  a task, in the asyncio one), never overlaps itself (its next run is planned when the
  current one has finished; runs missed meanwhile are skipped, not piled up), and waits
  for the connection when it comes due while the bot is reconnecting, so a blip does not
  lose the 09:00 announcement.
- One that raises is logged with its traceback and runs again at its next time.
- All of them stop with the bot; ``bot.later`` returns a :class:`Job` to ``cancel()``.
- Times come from the bot's clock (:mod:`chatroom_bots.clock`): a test moves a
  :class:`~chatroom_bots.clock.FakeClock` and the due runs happen at once.

``every`` counts in monotonic time from the bot's start (the first run one interval after
it, or after ``first`` seconds); ``at`` is a time of day on the wall clock in ``tz``
(default UTC), daylight saving time included (zoneinfo). Schedules are in memory: a
``later`` pending when the process ends is gone (keep what must survive in ``bot.store``).

:class:`JobTable` is the plan, with no threads: which jobs are due, and when the next one
is. :class:`ThreadScheduler` and :class:`AsyncScheduler` drive it, for the two bots.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import time as dtime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from chatroom_bots.clock import Clock

__all__ = ["AsyncScheduler", "Job", "JobSpec", "JobTable", "ThreadScheduler", "parse_at"]

log = logging.getLogger(__name__)

# A real clock's scheduler looks again at least this often, so a wall clock that jumps
# (NTP, a suspended laptop) delays an ``at`` schedule by no more than this.
MAX_SLEEP = 30.0


def parse_at(when: str | dtime) -> dtime:
    """``"09:00"`` or ``"9:00:30"`` -> a time of day."""
    if isinstance(when, dtime):
        return when
    try:
        parts = [int(p) for p in when.strip().split(":")]
        if not 2 <= len(parts) <= 3:
            raise ValueError
        return dtime(*parts)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise ValueError(f"a time of day is HH:MM or HH:MM:SS, not {when!r}") from None


def as_tz(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return UTC
    if isinstance(tz, str):
        return ZoneInfo(tz)
    return tz


@dataclass(frozen=True)
class JobSpec:
    """A schedule as declared (by ``bot.every`` / ``bot.at``): what a plugin carries."""

    name: str
    fn: Callable[..., Any]
    kind: Literal["every", "at", "later"]
    interval: float = 0.0
    first: float | None = None
    at: dtime | None = None
    tz: tzinfo = UTC
    plugin: str = ""

    @property
    def takes_bot(self) -> bool:
        try:
            return len(inspect.signature(self.fn).parameters) >= 1
        except (TypeError, ValueError):
            return False


@dataclass(eq=False)
class Job:
    """A schedule of a running bot. ``due`` (monotonic, or wall time for ``at``),
    ``running``, ``runs`` and ``failures`` belong to the scheduler's lock (or loop)."""

    spec: JobSpec
    due: float = math.inf
    running: bool = False
    cancelled: bool = False
    runs: int = 0
    failures: int = 0
    skipped: int = 0
    last_error: str | None = None
    _scheduler: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def cancel(self) -> None:
        """Never run again (a run under way finishes)."""
        if self._scheduler is not None:
            self._scheduler.remove(self)
        self.cancelled = True


class JobTable:
    """The plan: jobs and when each is due. Not thread-safe: its driver owns it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.jobs: list[Job] = []

    def _now(self, job: Job) -> float:
        return self.clock.time() if job.spec.kind == "at" else self.clock.monotonic()

    def _next_at(self, spec: JobSpec, after: float) -> float:
        assert spec.at is not None
        local = datetime.fromtimestamp(after, spec.tz)
        day = local.date()
        while True:
            candidate = datetime.combine(day, spec.at, tzinfo=spec.tz)
            # A time that does not exist that day (DST spring-forward) resolves forward.
            if candidate.timestamp() > after:
                return candidate.timestamp()
            day += timedelta(days=1)

    def add(self, job: Job) -> None:
        spec = job.spec
        if spec.kind == "at":
            job.due = self._next_at(spec, self.clock.time())
        elif spec.kind == "every":
            first = spec.interval if spec.first is None else spec.first
            job.due = self.clock.monotonic() + max(first, 0.0)
        else:
            job.due = self.clock.monotonic() + max(spec.interval, 0.0)
        self.jobs.append(job)

    def remove(self, job: Job) -> None:
        job.cancelled = True
        if job in self.jobs and not job.running:
            self.jobs.remove(job)

    def take_due(self) -> list[Job]:
        """The jobs due now, marked running, earliest first."""
        due = [j for j in self.jobs if not j.running and not j.cancelled and j.due <= self._now(j)]
        due.sort(key=lambda j: j.due - self._now(j))
        for j in due:
            j.running = True
        return due

    def finished(self, job: Job) -> None:
        """A run ended: plan the next (skipping the times missed meanwhile), or drop it."""
        job.running = False
        job.runs += 1
        spec = job.spec
        if job.cancelled or spec.kind == "later":
            if job in self.jobs:
                self.jobs.remove(job)
            return
        now = self._now(job)
        if spec.kind == "at":
            job.due = self._next_at(spec, max(now, job.due))
            return
        missed = max(0, math.floor((now - job.due) / spec.interval))
        if missed:
            job.skipped += missed
            log.debug("schedule %s skipped %d run(s) it was too late for", spec.name, missed)
        job.due += (missed + 1) * spec.interval

    def next_wait(self) -> float | None:
        """Seconds until the earliest idle job is due (0 if one is), None if none is."""
        waits = [j.due - self._now(j) for j in self.jobs if not j.running and not j.cancelled]
        return max(0.0, min(waits)) if waits else None

    def quiet(self) -> bool:
        """Nothing running and nothing due now."""
        return not any(j.running for j in self.jobs) and not any(
            not j.cancelled and j.due <= self._now(j) for j in self.jobs
        )


def record_failure(job: Job, exc: BaseException) -> None:
    job.failures += 1
    job.last_error = f"{type(exc).__name__}: {exc}"
    log.error(
        "schedule %s raised (run %d); it runs again at its next time",
        job.name,
        job.runs + 1,
        exc_info=exc,
    )


class ThreadScheduler:
    """Drives a :class:`JobTable` from a thread of its own for the threaded bot.

    ``submit(job)`` is the bot's: it runs the job (on the bot's turn, after waiting for
    the connection) and then calls :meth:`done`. ``_cond`` guards the table; nothing is
    called under it but the table's own methods."""

    def __init__(self, clock: Clock, submit: Callable[[Job], None], name: str) -> None:
        self.clock = clock
        self._submit = submit
        self._table = JobTable(clock)
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._name = name
        clock.subscribe(self._poke)

    def _poke(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def add_job(self, job: Job) -> None:
        job._scheduler = self
        with self._cond:
            self._table.add(job)
            self._cond.notify_all()

    def remove(self, job: Job) -> None:
        with self._cond:
            self._table.remove(job)
            self._cond.notify_all()

    def jobs(self) -> list[Job]:
        with self._cond:
            return list(self._table.jobs)

    def done(self, job: Job) -> None:
        with self._cond:
            self._table.finished(job)
            self._cond.notify_all()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"bot-{self._name}-schedules")
        self._thread.daemon = True
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self.clock.unsubscribe(self._poke)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def settle(self, timeout: float) -> bool:
        """Wait until nothing is running or due (a test after moving the fake clock)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._stopped or self._table.quiet(), timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                due = self._table.take_due()
                if not due:
                    wait = self._table.next_wait()
                    if self.clock.real:
                        self._cond.wait(MAX_SLEEP if wait is None else min(wait, MAX_SLEEP))
                    else:
                        self._cond.wait(MAX_SLEEP)  # a fake clock pokes us when it moves
                    continue
            for job in due:
                self._submit(job)


class AsyncScheduler:
    """Drives a :class:`JobTable` from a task on the asyncio bot's loop; the table is
    touched on the loop only. ``submit(job)`` starts the run and calls :meth:`done`."""

    def __init__(self, clock: Clock, submit: Callable[[Job], None]) -> None:
        self.clock = clock
        self._submit = submit
        self._table = JobTable(clock)
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        clock.subscribe(self._poke)

    def _poke(self) -> None:
        # Called from whatever thread moved the fake clock.
        self._loop.call_soon_threadsafe(self._wake.set)

    def add_job(self, job: Job) -> None:
        job._scheduler = self
        self._table.add(job)
        self._wake.set()

    def remove(self, job: Job) -> None:
        self._table.remove(job)
        self._wake.set()

    def jobs(self) -> list[Job]:
        return list(self._table.jobs)

    def done(self, job: Job) -> None:
        self._table.finished(job)
        self._wake.set()
        self._changed.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bot-schedules")

    async def stop(self) -> None:
        self.clock.unsubscribe(self._poke)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def settle(self, timeout: float) -> bool:
        async def quiet() -> None:
            while not self._table.quiet():
                self._changed.clear()
                self._wake.set()
                await self._changed.wait()

        try:
            async with asyncio.timeout(timeout):
                await quiet()
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            for job in self._table.take_due():
                self._submit(job)
            self._changed.set()
            wait = self._table.next_wait()
            timeout = MAX_SLEEP if wait is None or not self.clock.real else min(wait, MAX_SLEEP)
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
