"""Departure storms: many connections ending at once, and the GIL's switch interval.

When 10,000 clients drop at once (a network blip, a load balancer restart), the kernel
wakes 10,000 reader threads at the same instant, and each needs the GIL to run the few
lines that end it. CPython 3.11's GIL makes every thread that waits for it wake up once
per *switch interval* (5 ms by default) to ask the holder to let go: 10,000 waiters are
two million wake-ups a second on one mutex, the machine spends its time in the
scheduler, and the threads take tens of seconds to end however little each has to do.
Measured here with nothing but CPython (9,000 threads blocked in ``recv``, their peers
reset at once, each thread appending to a deque and returning; docs/PERFORMANCE.md,
"Mass departures"): 8.5-122 s at 5 ms, 13 s at 20 ms, 2.3 s at 50 ms, 0.65 s at 200 ms.

A long switch interval is wrong the rest of the time: a thread that gives the GIL up for
a syscall, as the fan-out does once per recipient, may then wait that long to get it
back. So :class:`DepartureStorm` raises the interval only while many connections are
ending at the same time, and puts it back once they are done and no other has begun to
end for ``quiet`` seconds. Why the hold-down: the threads counted are only those that
have run since their wake-up, and thousands more may still wait for their first turn.
Without it, one drop of 10,000 took 24.8 s among runs of 1.2-1.4 s, most likely because
the interval went back down while those were still waiting.

How long: chat-server raises it to 1 s. At 200 ms drops of 10,000 took 1.6-2.7 s in
most runs but 39-65 s in about one run in four, the kernel busy the whole time (120-170 s
of system time where a good run spends 15): 10,000 waiters that each wake every 200 ms
are 50,000 wake-ups a second on the GIL's mutex, and once a storm has not ended before
they start, they keep it from ending. At 1 s, 12 of 13 drops took 1.4-3.3 s (7 under
2 s) and one 10.8 s: the same stall, shorter. Reset readers now end one at a time,
asleep in a lock until their turn (``Listeners._ending``), so the herd lasts one GIL
turn per thread. The stall that was left, about one drop in four or five, was the
kernel's futex hash: 16 buckets on this machine, and in processes where the GIL's
futexes shared a bucket with those 10,000 sleepers every hand-over of the GIL walked
them all. chat-server sizes the table for its threads (:mod:`chatroom_server.futexhash`;
docs/PERFORMANCE.md, "The futex hash").

Threads: ``begin`` and ``end`` are called by reader threads, at most once each per
connection, without a lock (``next()`` on an ``itertools.count`` is atomic under the
GIL); ``tick`` by the server's reaper thread every half second, so the interval
comes back even when the last ``end`` came before the quiet time was up. Only raising
and lowering the interval take ``_lock``, and only the few threads that see a threshold
crossed get that far.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class DepartureStorm:
    """Raises the process's GIL switch interval to ``interval`` seconds while at least
    ``threshold`` connections are ending at once; restores the previous one when at
    most a quarter of that are left and none began to end for ``quiet`` seconds.
    ``interval=None`` never touches it."""

    def __init__(
        self,
        interval: float | None,
        threshold: int = 32,
        quiet: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._threshold = threshold
        self._quiet = quiet
        self._clock = clock
        self._began_at = 0.0  # clock() at the latest begin(); a plain store
        self._begun = itertools.count(1)
        self._ended = itertools.count(1)
        self._last_begun = 0  # the latest begin()'s count; plain stores, read racily
        self._last_ended = 0
        self._lock = threading.Lock()  # guards _raised, _saved, _since, storms
        self._raised = False
        self._frozen = False  # freeze(): stopping, the interval stays; a plain store
        self._saved = 0.0
        self._since = 0.0
        self.storms = 0  # storms seen, for tests and logs
        self.calm = threading.Event()  # set while the interval is not raised
        self.calm.set()

    @property
    def raised(self) -> bool:
        return self._raised

    def begin(self) -> None:
        """A reader thread starts ending its connection."""
        n = self._last_begun = next(self._begun)
        self._began_at = self._clock()
        if (
            self._interval is not None
            and not self._raised
            and not self._frozen
            and n - self._last_ended >= self._threshold
        ):
            self._raise(n - self._last_ended)

    def end(self) -> None:
        """That thread is done with its connection (its socket is closed)."""
        self._last_ended = next(self._ended)
        if self._raised:
            self.tick()

    def tick(self) -> None:
        """Lower the interval if the storm is over: at most a quarter of the threshold
        still ending, and no connection began to end for ``quiet`` seconds."""
        if (
            self._raised
            and not self._frozen
            and self._last_begun - self._last_ended <= self._threshold // 4
            and self._clock() - self._began_at >= self._quiet
        ):
            self._lower()

    def freeze(self) -> None:
        """The server is stopping: the interval stays as it is until :meth:`close`.
        A storm already raised stays raised: lowered mid-stop, it left thousands of
        threads waiting for the GIL at 5 ms, and a SIGTERM 0.3 s into 10,000 goodbyes
        took 303 s. A stop raises none of its own: while its thread says goodbye to
        10,000 connections, each ``send`` gives the GIL up, and at 1 s the readers
        woken meanwhile kept it waiting (a stop of 10,000: 3.6-7.6 s, 2.8-3.2 s at the
        usual interval)."""
        self._frozen = True

    def close(self) -> None:
        """The server has stopped: the interval goes back, and stays."""
        self._interval = None
        self._frozen = False
        self._lower()

    def _raise(self, ending: int) -> None:
        assert self._interval is not None
        with self._lock:
            if self._raised:
                return
            self._saved = sys.getswitchinterval()
            sys.setswitchinterval(self._interval)
            self._raised = True
            self._since = time.monotonic()
            self.storms += 1
            self.calm.clear()
        log.info(
            "%d connections ending at once: GIL switch interval %g ms until they are done",
            ending,
            self._interval * 1e3,
        )

    def _lower(self) -> None:
        with self._lock:
            if not self._raised:
                return
            sys.setswitchinterval(self._saved)
            self._raised = False
            self.calm.set()
            took = time.monotonic() - self._since
        log.info("departure storm over after %.2f s", took)
