"""The fan-out's lock handed to those who wait for it in turn (``FanOut.exclusive``).

Why (docs/PERFORMANCE.md, issue 35, "the fan-out lock"): ``threading.Lock`` is not
fair. During mass JOINs into a room of 1,515 on a loaded box, each JOIN held the lock
for a line to every member, and logins and other JOINs waiting with ``acquire(timeout=10)``
lost it to later arrivals and to the fan-out's own passes for longer than that: they
were refused ("the fan-out is overloaded") though the lock was changing hands all along.

How: a thread that wants the lock for :meth:`Handover.enter` takes it if it is free and
nobody waits; else it joins a line (a deque of Events) and the holder, when it lets go
(:meth:`Handover.leave`), hands the lock straight to the first in line: the lock is never
released while someone waits, so nobody can take it out of turn. The fan-out's passes
let go between passes when someone waits (``Handover.waiting``), and each holder makes
one pass before it hands over, so the two take turns. A waiter gives up only when the
lock has not changed hands for ``timeout`` s (a holder that is stuck), never for the
length of the line ahead of it.

Threads: ``_line`` and ``_handovers`` are guarded by ``_gate``; whoever holds the
fan-out's lock lets go only through :meth:`leave`, under ``_gate``, so a thread joining
the line cannot miss the hand-over. No user code runs under ``_gate``.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol


class _Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...


class Handover:
    __slots__ = ("_gate", "_handovers", "_line")

    def __init__(self) -> None:
        self._gate = threading.Lock()
        self._line: deque[threading.Event] = deque()
        self._handovers = 0  # times the lock changed hands (a waiter's sign of progress)

    @property
    def waiting(self) -> bool:
        """Someone waits for the lock (read without ``_gate``: a stale answer only
        delays a hand-over to the holder's next look)."""
        return bool(self._line)

    def enter(self, lock: _Lock, timeout: float) -> None:
        """Hold ``lock``, in turn; TimeoutError if it did not change hands for
        ``timeout`` s meanwhile."""
        with self._gate:
            # Positional, as outbox.py's: the keyword form parses its argument each call.
            if not self._line and lock.acquire(False):
                return
            turn = threading.Event()
            self._line.append(turn)
            seen = self._handovers
        while not turn.wait(timeout):
            with self._gate:
                if turn.is_set():
                    return  # handed over just now
                if self._handovers == seen:
                    self._line.remove(turn)
                    raise TimeoutError(f"the fan-out is overloaded (stuck for {timeout:g} s)")
                seen = self._handovers

    def leave(self, lock: _Lock) -> None:
        """Let go of ``lock``: to the first in line if anyone waits (it then holds it),
        else released."""
        with self._gate:
            self._handovers += 1
            if self._line:
                self._line.popleft().set()
                return
            lock.release()
