"""Starting connection threads without waiting for them.

``threading.Thread.start()`` returns only once the new thread has run: the new thread
must get the GIL, say it has started, and the caller must get the GIL back. While a login
storm keeps a hundred threads asking for the GIL that round trip takes about a
millisecond, and the accept loop made it for every connection, so the server could not
take more than about 800 connections a second however fast the rest of a login was
(a rejoin of 10,000: the accept loop busy 12 of 15 s; docs/PERFORMANCE.md, "Mass
arrivals"). So the accept loop hands each new thread to a :class:`ThreadStarter` and goes
back to ``accept()``; the starter's few threads start them, that many round trips at
once. When nobody is arriving they sleep in ``get()``.

Threads: :meth:`submit` is called by the accept loops, :meth:`close` once by the server's
``stop()`` after the accept loops have ended. ``_queue`` (a ``SimpleQueue``) is the only
thing shared; each starter thread owns nothing else. ``failed`` callbacks run on a
starter thread, with no lock of ours held.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Failed = Callable[[RuntimeError], None]
_IDLE_WAIT = 30.0  # seconds; see _run


class ThreadStarter:
    """Starts submitted threads on ``workers`` threads of its own, in order of
    submission per starter thread. ``failed(exc)`` is called for a thread that could not
    be started (``RuntimeError: can't start new thread``: out of threads or memory)."""

    def __init__(self, workers: int = 4, name: str = "chat-starter") -> None:
        self._queue: queue.SimpleQueue[tuple[threading.Thread, Failed] | None] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._workers:
            t.start()

    def submit(self, thread: threading.Thread, failed: Failed) -> None:
        """Start ``thread`` soon, on a starter thread; never waits."""
        self._queue.put((thread, failed))

    def close(self, timeout: float = 2.0) -> None:
        """Start what was submitted before, then end the starter threads (each joined
        for at most ``timeout`` s)."""
        for _ in self._workers:
            self._queue.put(None)
        for t in self._workers:
            t.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                # close() puts one None per starter thread; the timeout only bounds
                # the wait (nothing here blocks for ever), an idle wake-up is a no-op.
                item = self._queue.get(timeout=_IDLE_WAIT)
            except queue.Empty:
                continue
            if item is None:
                return
            thread, failed = item
            try:
                thread.start()
            except RuntimeError as exc:
                try:
                    failed(exc)
                except Exception:
                    # One connection's cleanup must not end the starter for the rest.
                    log.exception("cleaning up after a thread that did not start")
