"""A wake-up for one waiting thread that costs the ringers no lock, almost always.

``threading.Event.set`` takes the Event's lock. When 10,000 connections end at once and
each one rings (the users publisher's ``changed``, the reaper's ``Presence.depart``), those
10,000 threads queue on that one lock, and whoever holds it can lose the GIL while the
rest wait (docs/PERFORMANCE.md, "Mass departures"). A :class:`Doorbell` sets its Event
only for the first ring since the waiter last answered; later rings see ``_rung`` and
return.

Why no ring is missed: the waiter answers by clearing the Event, then ``_rung``, and only
then looks at the work (the live list, the deque of departures). A ringer makes its
change *before* it rings. One that finds ``_rung`` true read it before the waiter reset
it, so its change is there when the waiter looks; one that finds it false sets the Event
after the clear, and the waiter wakes again.

Threads: any number of ringers, one waiter.
"""

from __future__ import annotations

import threading


class Doorbell:
    __slots__ = ("_event", "_rung")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._rung = False  # the Event is set, or about to be

    def ring(self) -> None:
        """Any thread, after making the change the waiter should see."""
        if not self._rung:
            self._rung = True
            self._event.set()

    def wait(self, timeout: float) -> bool:
        """The waiter: True once rung (then :meth:`answer` before looking at the work),
        False after ``timeout`` seconds."""
        return self._event.wait(timeout)

    def answer(self) -> None:
        """The waiter, before it looks at the work: later rings wake it again."""
        self._event.clear()
        self._rung = False
