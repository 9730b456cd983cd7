"""Connection threads started with ``_thread``, not ``threading.Thread``.

Why (docs/PERFORMANCE.md, "Mass arrivals"): a ``threading.Thread`` costs a login storm
three trips through the GIL that a connection does not need. ``start()`` returns only
once the new thread has run and said so (an Event: a Condition, a lock, a wake-up and
a GIL hand-back); the new thread registers itself in ``threading``'s tables under its
one ``_active_limbo_lock``, and takes that lock again as it ends, when 10,000 threads
end at once. The object itself, with its Event and locks, is some 2.5 KiB per
connection. ``_thread.start_new_thread`` returns as soon as the thread exists, so the
accept loop starts each reader itself (four ``chat-starter`` threads used to, to keep
``start()``'s wait off the accept loop), and a reader's end is the end of a function.
A rejoin of 10,000 took 4.9-6.0 s instead of 6.7-7.3 s in alternating runs.

What is lost, and how it is kept: ``threading.enumerate()`` does not list these threads
(:class:`ReaderThread` is their handle: ``join`` and ``is_alive``); a tracer or profiler
set with ``threading.settrace``/``setprofile`` (coverage, debuggers) is installed by
hand, as ``threading`` does; and ``threading.current_thread()`` in such a thread makes
a ``_DummyThread`` that ``threading`` keeps (one per thread id; the ids of ended threads
are reused). logging asks for it for every record unless ``logging.logThreads`` is
False, which chat-server sets (its log lines do not show thread names).

Threads: a handle is made and started by the accept thread; ``join`` and ``is_alive``
may be called from any thread. ``_running`` is held from before the thread starts
until its target has returned.
"""

from __future__ import annotations

import _thread
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ReaderThread:
    """A thread running ``target(arg)``, started by :meth:`start`."""

    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running = _thread.allocate_lock()
        self._running.acquire()  # released when the target has returned

    def start(self, target: Callable[[T], object], arg: T) -> None:
        """Start the thread; returns without waiting for it to run. RuntimeError
        ("can't start new thread") if there are no more threads or no memory."""
        _thread.start_new_thread(self._run, (target, arg))

    def _run(self, target: Callable[[T], object], arg: T) -> None:
        # What threading.Thread's bootstrap does for every thread it starts.
        trace, profile = threading.gettrace(), threading.getprofile()
        if trace is not None:
            sys.settrace(trace)
        if profile is not None:
            sys.setprofile(profile)
        try:
            target(arg)
        finally:
            self._running.release()

    def join(self, timeout: float) -> bool:
        """Wait at most ``timeout`` s for the target to return; True if it has."""
        if not self._running.acquire(timeout=max(0.0, timeout)):
            return False
        self._running.release()
        return True

    def is_alive(self) -> bool:
        """True from :meth:`start` until the target has returned (and before start)."""
        return self._running.locked()
