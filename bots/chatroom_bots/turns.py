"""How the threaded bot runs its handlers: one at a time, in the order things arrived,
each on a worker thread, and a handler that waits for an answer (``ctx.ask``) gives its
turn to the next one meanwhile.

That keeps the 0.1 promise (handlers never run at the same time, so they need no locks
of their own, as asyncio code needs none between awaits) while a conversation with one
user never holds up the others. The client's dispatch thread only routes events: it
never runs a handler, so it is always free to deliver the answer a handler waits for.

The turn is a baton. ``_queue`` holds what waits for it, in arrival order: new jobs, and
handlers whose answer came (or whose wait timed out) and that want to go on. Whoever
gives the baton up hands it to the head of the queue: a new job goes to an idle worker
thread (or a new one), a waiting handler is woken. Threads: one holds the turn, one per
handler waiting in ``ask`` (at most ``max_waiting``: :class:`TooBusy` beyond), and idle
workers, which end after ``IDLE_EXIT`` seconds without work.

``_lock`` guards everything here; no job runs under it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Stopping", "Suspension", "TooBusy", "TurnRunner"]

log = logging.getLogger(__name__)

IDLE_EXIT = 30.0  # seconds an idle worker waits for work before its thread ends


class Stopping(Exception):
    """The bot is stopping: a handler waiting for its turn or an answer ends quietly."""


class TooBusy(Exception):
    """Too many handlers are waiting for answers at once."""


@dataclass(eq=False)
class Suspension:
    """A handler that gave its turn away; :meth:`TurnRunner.resume` queues it again."""

    event: threading.Event = field(default_factory=threading.Event)
    queued: bool = False
    granted: bool = False


@dataclass(eq=False)
class _Worker:
    event: threading.Event = field(default_factory=threading.Event)
    job: Callable[[], None] | None = None


class TurnRunner:
    def __init__(self, name: str, max_waiting: int = 32) -> None:
        self.name = name
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # turn freed, queue emptied
        self._queue: deque[Callable[[], None] | Suspension] = deque()
        self._busy = False  # someone holds the turn
        self._idle: list[_Worker] = []
        self._waiting = 0  # handlers suspended (in ask)
        self._threads: set[threading.Thread] = set()
        self._stopping = False
        self._local = threading.local()  # .holding: this thread holds the turn

    # ------------------------------------------------------------------ queueing

    def submit(self, job: Callable[[], None]) -> bool:
        """Run ``job`` when its turn comes (False, and nothing runs, once stopping)."""
        with self._lock:
            if self._stopping:
                return False
            self._queue.append(job)
            if not self._busy:
                self._start_next()
        return True

    def _start_next(self) -> None:
        """Give the free turn to the head of the queue (``_lock`` held)."""
        while self._queue and not self._busy:
            item = self._queue.popleft()
            self._busy = True
            if isinstance(item, Suspension):
                item.granted = True
                item.event.set()
                return
            if self._idle:
                worker = self._idle.pop()
                worker.job = item
                worker.event.set()
                return
            worker = _Worker(job=item)
            thread = threading.Thread(
                target=self._work, args=(worker,), name=f"bot-{self.name}-handler", daemon=True
            )
            self._threads.add(thread)
            try:
                thread.start()
            except RuntimeError:
                self._threads.discard(thread)
                self._busy = False
                log.exception("%s: cannot start a handler thread; dropping a job", self.name)
        if not self._busy and not self._queue:
            self._changed.notify_all()

    def _release(self) -> None:
        """The turn's holder gives it up (``_lock`` held)."""
        self._busy = False
        self._local.holding = False
        self._start_next()

    # ------------------------------------------------------------------ workers

    def _work(self, worker: _Worker) -> None:
        try:
            while True:
                job, worker.job = worker.job, None
                if job is not None:
                    self._local.holding = True
                    try:
                        job()
                    except Stopping:
                        pass
                    except BaseException:
                        # SystemExit from a handler too: it is the handler's bug, and
                        # the turn must be given up or the bot would hang.
                        log.exception("%s: a handler job failed", self.name)
                    with self._lock:
                        if getattr(self._local, "holding", False):
                            self._release()
                        if self._stopping:
                            return
                        worker.event.clear()
                        self._idle.append(worker)
                if not worker.event.wait(IDLE_EXIT):
                    with self._lock:
                        if worker in self._idle:
                            self._idle.remove(worker)
                            return
                    # handed a job as the wait ended: run it
                if self._stopping and worker.job is None:
                    return
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
                if worker in self._idle:
                    self._idle.remove(worker)
                self._changed.notify_all()

    # ------------------------------------------------------------------ suspending

    def holds_turn(self) -> bool:
        return bool(getattr(self._local, "holding", False))

    def suspend(self) -> Suspension:
        """Give the turn away while waiting for something (an answer). Called by the
        thread that holds it; :class:`TooBusy` if too many are waiting already."""
        with self._lock:
            if not self.holds_turn():
                raise RuntimeError("suspend() outside a handler's turn")
            if self._stopping:
                raise Stopping
            if self._waiting >= self.max_waiting:
                raise TooBusy
            self._waiting += 1
            self._release()
        return Suspension()

    def resume(self, s: Suspension) -> None:
        """Queue a suspended handler for the turn (at most once; from any thread)."""
        with self._lock:
            if s.queued:
                return
            s.queued = True
            self._queue.append(s)
            if not self._busy:
                self._start_next()

    def wait_turn(self, s: Suspension) -> None:
        """Block until the resumed handler has the turn again (:class:`Stopping` if the
        bot stops first)."""
        self.resume(s)
        while not s.event.wait(1.0):
            with self._lock:
                if self._stopping and not s.granted:
                    self._waiting -= 1
                    if s in self._queue:
                        self._queue.remove(s)
                    raise Stopping
        with self._lock:
            self._waiting -= 1
        self._local.holding = True

    # ------------------------------------------------------------------ stopping

    @property
    def stopped(self) -> bool:
        with self._lock:
            return self._stopping

    def idle(self) -> bool:
        with self._lock:
            return not self._busy and not self._queue

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no handler runs and none is queued (handlers waiting for answers
        do not count); False on timeout."""
        with self._lock:
            return self._changed.wait_for(lambda: not self._busy and not self._queue, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Run nothing new; drop what is queued; let the running handler finish (up to
        ``timeout``); the worker threads end (joined, up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopping = True
            dropped = [j for j in self._queue if not isinstance(j, Suspension)]
            self._queue = deque(j for j in self._queue if isinstance(j, Suspension))
            if dropped:
                log.info("%s: stopping; %d queued handler(s) not run", self.name, len(dropped))
            for worker in self._idle:
                worker.event.set()
            self._changed.wait_for(lambda: not self._busy, timeout)
            threads = [t for t in self._threads if t is not threading.current_thread()]
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
