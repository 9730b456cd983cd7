"""Public-message fan-out by combining: whichever reader thread gets there first sends
everyone's broadcasts, and nobody waits for anybody.

Why (docs/PERFORMANCE.md, "The server: combining fan-out", has the measurements): when
each reader thread fanned out its own messages, ten senders meant ten threads each making
99 ``send`` calls at once. Every ``send`` lets go of the GIL, so the threads took turns at
every syscall: a context switch and a GIL hand-back each time, and the cost per delivery
grew with the number of senders. Here the fan-out runs in one thread at a time, so it
costs what one sender costs, and the messages that arrive while a round is going out are
sent together in the next round: one ``send`` per recipient for all of them.

How: a reader thread appends its read's broadcasts to ``_queue`` (a deque: no lock) and
*tries* ``_lock``. If it gets it, it sends rounds until the queue is empty; if another
thread holds it, it returns at once, because that thread looks at the queue again after
letting go (the same argument as ``Outbox.push``). No thread is woken and nothing is
handed over: under light load the reader sends its own message just as before. Only
when the queue passes ``high_water`` items (the server is overloaded) do readers wait
for the lock: that bounds the queue, and pushes back on the clients through TCP as a
reader that sends its own fan-out does.

Ordering (docs/PROTOCOL.md §Ordering, §pm): a connection's broadcasts are sent in the
order it handed them over, and its ``ack`` is queued after its broadcast is queued for
every recipient. Anything else the reader would send while its broadcasts are still in
the queue (a DM, a reply, an error, a ``bye``) must not overtake them, so it goes into
the queue as well (:meth:`FanOut.after`) and runs in turn. ``handed`` (written by the
connection's reader) and ``done`` (written by the thread holding ``_lock``) tell whether
anything is still queued; a stale read of ``done`` can only say "yes" wrongly, which is
the safe side.

Threads: ``_queue`` is appended to by any thread and popped only under ``_lock``; the
work under ``_lock`` is ``Outbox.queue``/``push``/``send`` (never blocking) and the
callables of :meth:`after`, which must not block either.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from chatroom_server.outbox import Outbox

log = logging.getLogger(__name__)


class Member(Protocol):
    """What the fan-out needs of a connection (chatroom_server.server._Conn)."""

    outbox: Outbox
    handed: int  # items this connection put in the queue (its reader thread writes it)
    done: int  # of those, how many have been sent (written under FanOut._lock)


class _Batch:
    """The broadcasts of one read from one connection, and their acks."""

    __slots__ = ("ack", "conn", "data")

    def __init__(self, conn: Member, data: bytes, ack: bytes) -> None:
        self.conn = conn
        self.data = data
        self.ack = ack


class FanOut:
    """See the module docstring. ``roster`` returns the connections to deliver to."""

    def __init__(self, roster: Callable[[], tuple[Member, ...]]) -> None:
        self._roster = roster
        self._queue: deque[_Batch | tuple[Member, Callable[[], object]]] = deque()
        self._lock = threading.Lock()
        # Items queued beyond which readers wait for the fan-out (backpressure). A round
        # is one send per recipient however many items it carries, so a long queue is
        # cheap to send; this only bounds memory (items are at most one read, 4 KiB).
        self.high_water = 1024
        self.high_water_wait = 1.0  # s a reader waits then; the holder still sends its items
        self.crashes = 0  # rounds that raised (a bug); written under _lock

    # ------------------------------------------------------------ reader threads

    def broadcast(self, conn: Member, data: bytes, ack: bytes) -> None:
        """Deliver ``data`` (whole frames) to everyone but ``conn``, then ``ack`` to it."""
        conn.handed += 1
        self._queue.append(_Batch(conn, data, ack))
        self._combine()

    def after(self, conn: Member, fn: Callable[[], object]) -> None:
        """Run ``fn`` once ``conn``'s broadcasts in the queue are sent (at once if none)."""
        if conn.done == conn.handed:
            fn()
            return
        conn.handed += 1
        self._queue.append((conn, fn))
        self._combine()

    def settle(self, conn: Member, timeout: float) -> bool:
        """Wait until ``conn``'s queued items are sent (before it leaves: its last
        messages must not follow its departure); False after ``timeout`` s."""
        if conn.done == conn.handed:
            return True
        settled = threading.Event()
        self.after(conn, settled.set)
        return settled.wait(timeout)

    # ------------------------------------------------------------ whoever holds _lock

    def _combine(self) -> None:
        queue = self._queue
        while queue:
            if len(queue) > self.high_water:
                # Overload: the sends cannot keep up. Wait for our turn, so this reader
                # stops reading its client (TCP pushes back) and the queue cannot grow
                # without bound; on timeout the holder still sends our items.
                got = self._lock.acquire(timeout=self.high_water_wait)
            else:
                got = self._lock.acquire(blocking=False)
            if not got:
                return  # the holder sends our items after it lets go
            try:
                self._drain()
            finally:
                self._lock.release()

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            item = queue.popleft()
            if type(item) is _Batch:
                run = [item]
                while queue and type(queue[0]) is _Batch:
                    run.append(queue.popleft())  # type: ignore[arg-type]
                self._guarded(self._send_run, run)
                for b in run:
                    b.conn.done += 1
            else:
                conn, fn = item  # type: ignore[misc]
                self._guarded(fn)
                conn.done += 1

    def _guarded(self, fn: Callable[..., object], *args: object) -> None:
        """A bug in one round must not take the reader thread that happened to run it
        (nor everyone's queued messages) with it."""
        try:
            fn(*args)
        except Exception:
            self.crashes += 1
            log.exception("fan-out round failed")

    def _send_run(self, run: list[_Batch]) -> None:
        """One round: every batch in ``run`` to every recipient, as one send each."""
        roster = self._roster()
        if len(run) == 1:
            b = run[0]
            sender, data = b.conn, b.data
            for c in roster:
                if c is not sender:
                    c.outbox.queue(data)
        else:
            full = b"".join(b.data for b in run)
            senders = {b.conn for b in run}
            for c in roster:
                if c in senders:
                    # Everyone's but its own, in order.
                    mine = b"".join(b.data for b in run if b.conn is not c)
                    if mine:
                        c.outbox.queue(mine)
                else:
                    c.outbox.queue(full)
        # Acks after every recipient has the broadcasts queued (docs/PROTOCOL.md §pm).
        for b in run:
            b.conn.outbox.queue(b.ack)
        # The queue pass made no syscall; now one send per recipient.
        for c in roster:
            c.outbox.push()
        for b in run:
            b.conn.outbox.push()  # a sender that left the roster meanwhile gets its ack
