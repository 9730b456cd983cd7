"""Arrival storms: a bounded number of connections logging in at once.

When 10,000 clients come back in the same second (a load balancer restart, a network
drop, the server's own restart), a thread per connection means 10,000 threads that all
want the GIL at once to run their login, and the accept thread is one waiter among them:
it gets the GIL back after each ``accept`` about once in 10,000 hand-overs, the listen
queue overflows, and the kernel makes the clients it dropped try again after 1, 3, 7 s
(docs/PERFORMANCE.md, "Arrival storms"). The departure storm's cure was the same idea
(``Listeners._ending``): let the threads queue asleep, not for the GIL.

An :class:`Admission` has ``slots``. A new connection gets no thread at first: it waits
in the admission thread's epoll (:meth:`Admission.watch`) until its client has said
something (every client speaks first here: a login, an IRC NICK or CAP, an HTTP request,
a TLS ClientHello), so a connection that has nothing to handle yet is no thread asking
for the GIL. Once readable it gets a slot, or waits in line for one; its thread starts
with the slot and holds it until its login is done (or until it would block waiting for
its client: a client that says nothing holds no slot). A freed slot goes to the first in
line: a connection whose thread is still to start (the thread that frees the slot starts
it) or a running thread that woke with frames to handle before its login and sleeps in a
lock of its own until it gets one (:meth:`~Admission.enter`). So during a storm at most
``slots`` threads are in a login, the others are not threads yet or asleep in a lock,
and the accept thread competes for the GIL with a few dozen threads instead of ten
thousand; and the admission thread takes a whole batch of readable connections per turn
of the GIL.

A connection may never need a slot or a thread for its login: the admission thread
offers each readable connection to ``first`` (``FirstLook.first``), which runs a login
that waits for nothing right there (a returning user whose password the store remembers)
and then parks the connection (:meth:`Admission.park`): back in the epoll, threadless,
until its client says more or the connection ends, when ``resume`` starts its thread.
In a return storm that is a login with no thread started and no GIL handed over.
A first frame that has come only in part goes back into the epoll
(:meth:`Admission.rewatch`), its bytes kept by ``first``, until the rest comes: a
client sending its login a byte at a time (slowloris) is no thread, however many of
them there are.
A registration (with a cheap hash) is begun there too and then *held*
(:meth:`Admission.hold`): threadless and out of the epoll while its account is queued
for the store's group commit; the committing store thread hands it back
(:meth:`~Admission.later`) once the account is durable, and the admission thread sends
its login_ok and parks it. A registration costs no thread waiting asleep for a commit.

Threads: the accept threads call :meth:`Admission.watch` (with slots the JSON port's
accepts run on the admission thread itself: :meth:`~Admission.listen`); the
``chat-admission`` thread runs :meth:`~Admission.run`; connection threads call
:meth:`~Admission.enter` and :meth:`~Admission.leave`; the stopping thread calls
:meth:`~Admission.close`. ``_lock`` guards ``_free``, ``_line`` and ``_closed``, and
nothing under it gives the GIL up (no syscall, no callback): what a freed slot starts or
wakes runs after it is let go. ``_watched`` (fd -> connection) is added to by the accept
thread and popped by the admission thread or ``close``, single dict operations: whoever
pops a connection owns it, so each is started or given back as never started exactly
once. ``_parked`` likewise: added to and popped by the admission thread, popped by
``close``; and ``_held``. ``_ready`` (continuations handed back by other threads) and
``_rung`` are guarded by ``_lock`` too: appended by any thread, taken whole by the
admission thread.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import select
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# Readiness events taken per turn of the admission thread (run).
BATCH = 64
# Connections handled between two looks at the listener (run), with a listener: a return
# storm's login on this thread takes 0.1-0.3 ms, and 10,000 connects from two processes
# come in 0.25 s (40 a millisecond). After every full batch of 64 the listen queue grew
# by some 400 between looks while the accepts, slowed by the logins' sends, fell behind
# for good: 770-2,000 overflows per return storm on a quiet box, each a client retrying
# its SYN 1 s later (docs/PERFORMANCE.md, "Arrival storms"). Every 8, the accepts come
# first and a look that finds nothing costs one failed accept4.
ACCEPT_EVERY = 8


class Admission(Generic[T]):
    """At most ``slots`` connections between :meth:`arrive` (or :meth:`enter`) and
    :meth:`leave`; the others wait in line, first come first served. A connection in
    line is ``start``ed (its thread started, owning the slot) when its turn comes.
    ``slots=0``: no limit, everyone goes at once (as before admission existed).
    ``never(conn)``: a connection that the server's stop found still waiting (its
    thread never started), for the caller to close; ``queued(conn)``: it has gone into
    line (from then on it waits for the server, not for its client)."""

    def __init__(
        self,
        slots: int,
        start: Callable[[T], None],
        never: Callable[[T], None],
        fileno: Callable[[T], int],
        queued: Callable[[T], None],
        *,
        first: Callable[[T], bool] | None = None,
        resume: Callable[[T], None] | None = None,
    ) -> None:
        self.slots = slots
        self._start = start
        self._never = never
        self._queued = queued
        self._fileno = fileno
        # The admission thread's first look at a readable connection (a login it can
        # run itself, FirstLook.first): True if it took the connection from here on.
        self._first = first
        # A parked connection (logged in, no thread yet) whose client spoke or hung
        # up, or any parked one once closed: its thread is started, with no slot.
        self._resume = resume
        self._lock = threading.Lock()  # see the module docstring
        # Made by open(), before the accept and admission threads start; closed by
        # release_resources() once they have ended.
        self._epoll: select.epoll | None = None
        self._wake_r = self._wake_w = -1  # close() wakes run() at once
        self._watched: dict[int, T] = {}
        # A listening socket whose connections this thread accepts (listen): its fd
        # and what accepts a batch of them.
        self._listen_fd = -1
        self._accept: Callable[[], None] | None = None
        # Logged in on the admission thread and waiting, threadless, for their client to
        # say more (park): fd -> connection, owned as ``_watched`` is.
        self._parked: dict[int, T] = {}
        # Waiting, threadless and out of the epoll, for work another thread does for
        # them (hold): fd -> connection, owned as ``_watched`` is.
        self._held: dict[int, T] = {}
        # What other threads hand back for held connections (later), and whether the
        # wake-up pipe has been written since the admission thread last looked: _lock.
        self._ready: list[tuple[T, Callable[[T], None]]] = []
        self._rung = False
        self._free = slots
        # Who gets the next freed slot: a connection to start, or the lock a running
        # thread sleeps in (enter) until it is released for it.
        self._line: deque[T | _thread.LockType] = deque()
        self._closed = False
        self.waited = 0  # arrivals and entries that had to wait, for tests and logs

    @property
    def waiting(self) -> int:
        """In line now (a snapshot)."""
        return len(self._line)

    def open(self) -> None:
        """Before the server's threads start: the admission thread's epoll."""
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        self._epoll.register(self._wake_r, select.EPOLLIN)

    def listen(self, fd: int, accept: Callable[[], None]) -> None:
        """Before :meth:`run`: this thread accepts the connections of the listening
        socket ``fd`` (non-blocking), calling ``accept`` whenever some wait. One thread
        that accepts and logs in hands the GIL to nobody between the two; an accept
        thread of its own got it back from the logins about once per switch interval,
        and the listen queue overflowed meanwhile (docs/PERFORMANCE.md, "Arrival
        storms")."""
        assert self._epoll is not None, "open() first"
        self._listen_fd, self._accept = fd, accept
        self._epoll.register(fd, select.EPOLLIN)  # level-triggered: until drained

    def watch(self, conn: T) -> None:
        """Accept thread: a new connection, which waits for its client to say something
        before it goes on to :meth:`arrive` (module docstring)."""
        if not self.slots:
            self._start(conn)
            return
        assert self._epoll is not None, "open() first"
        self._arm(conn, self._watched, self._epoll.register, self._never)

    def run(self) -> None:
        """The ``chat-admission`` thread: connections whose client has said something
        arrive, a batch per wake-up, until :meth:`close`."""
        assert self._epoll is not None, "open() first"
        accept = self._accept
        handled = 0  # connections handled since the listener was last looked at
        while not self._closed:
            try:
                events = self._epoll.poll(1.0, BATCH)
            except OSError:  # closed under us: stopping
                return
            for fd, _ in events:
                if fd == self._wake_r:
                    if self._closed:
                        return
                    self._continue()
                    continue
                if fd == self._listen_fd:
                    assert accept is not None
                    accept()
                    handled = 0
                    continue
                if accept is not None:
                    # Busy: the listener is looked at every few connections, not when
                    # the epoll's round robin comes back to it (after every connection
                    # ready before it, thousands in a storm): ACCEPT_EVERY.
                    handled += 1
                    if handled > ACCEPT_EVERY:
                        accept()
                        handled = 1
                # ONESHOT: the fd stays registered but silent, and leaves the epoll when
                # the connection's thread closes its socket.
                conn = self._watched.pop(fd, None)
                if conn is not None:
                    self._guarded(self._arrived, conn)
                    continue
                conn = self._parked.pop(fd, None)
                if conn is not None:
                    assert self._resume is not None
                    self._guarded(self._resume, conn)

    def _arrived(self, conn: T) -> None:
        if self._first is None or not self._first(conn):
            self.arrive(conn)

    def _guarded(self, step: Callable[[T], None], conn: T) -> None:
        """Admission thread: ``step(conn)``, and if it raises, that connection is ended
        as one never started: this thread accepts and logs everyone in, and one
        connection's failure (a bug, a thread that cannot be started) must not end it
        and every login after it."""
        try:
            step(conn)
        except Exception:
            log.exception("admission: %r failed; it is closed", conn)
            self._never(conn)

    def park(self, conn: T) -> None:
        """Admission thread: ``conn`` has logged in without a thread (``first``) and
        nothing more of its client's is to handle: it waits in the epoll again, and its
        thread starts when its client says more or the connection ends (either side's
        close or shutdown makes it readable)."""
        assert self._epoll is not None and self._resume is not None
        # Still registered since its ONESHOT fired (run): armed again.
        self._arm(conn, self._parked, self._epoll.modify, self._resume)

    def rewatch(self, conn: T) -> None:
        """Admission thread, a watched connection whose ONESHOT has fired (``first``):
        its client has sent part of its first frame, which ``first`` keeps; it waits
        in the epoll again, threadless, for the rest. A client sending a byte a second
        (slowloris) holds no thread. Its deadline is the login timeout's, as for any
        connection not logged in: the sweep's SHUT_RD makes it readable, and ``first``
        hands it to its thread, which ends it."""
        assert self._epoll is not None
        # Still registered since its ONESHOT fired (run): armed again.
        self._arm(conn, self._watched, self._epoll.modify, self._never)

    def _arm(
        self,
        conn: T,
        table: dict[int, T],
        arm: Callable[[int, int], None],
        gone: Callable[[T], None],
    ) -> None:
        """``conn`` into ``table`` (``_watched`` or ``_parked``) and its fd armed in the
        epoll, once, by ``arm``: the epoll's ``register`` for a new fd, ``modify`` for
        one still registered since its ONESHOT fired. Once closed (or with the epoll
        closed under it), whoever pops it from ``table`` gives it to ``gone`` instead:
        this thread or ``close``, exactly one of them (module docstring)."""
        fd = self._fileno(conn)
        table[fd] = conn
        if self._closed:  # stopping: close() may have looked before the line above
            if table.pop(fd, None) is not None:
                gone(conn)
            return
        try:
            arm(fd, select.EPOLLIN | select.EPOLLONESHOT)
        except OSError:  # the epoll is closed: stopping
            if table.pop(fd, None) is not None:
                gone(conn)

    def hold(self, conn: T) -> None:
        """Admission thread, a connection whose ONESHOT has fired (``first``): it waits,
        threadless and out of the epoll, for work another thread does for it (its
        registration's commit), which hands it back with :meth:`later`. Once closed,
        ``close`` gives it to ``never``."""
        fd = self._fileno(conn)
        self._held[fd] = conn
        if self._closed and self._held.pop(fd, None) is not None:
            self._never(conn)  # stopping: close() may have looked before the line above

    def later(self, conn: T, step: Callable[[T], None]) -> None:
        """Any thread, without a lock held: ``step(conn)`` is to run on the admission
        thread, for a connection :meth:`hold` holds (if ``close`` has not taken it
        since). Never waits: the pipe is written once per batch of hand-backs."""
        with self._lock:
            if self._closed:
                return  # close() gave every held connection to never
            self._ready.append((conn, step))
            ring, self._rung = not self._rung, True
        if ring:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"r")

    def _continue(self) -> None:
        """Admission thread, the pipe readable: the hand-backs so far, in order, a batch
        at a time. A group commit hands back thousands at once in a storm, and the
        listener and the readable connections get their turn between batches (the
        pipe is written again for the rest)."""
        with contextlib.suppress(OSError):
            os.read(self._wake_r, 4096)
        with self._lock:
            ready, self._ready = self._ready[:BATCH], self._ready[BATCH:]
            more = self._rung = bool(self._ready)
        if more:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"r")
        for i, (conn, step) in enumerate(ready, 1):
            if self._accept is not None and i % ACCEPT_EVERY == 0:
                self._accept()  # as between readable connections (run, ACCEPT_EVERY)
            if self._held.pop(self._fileno(conn), None) is not None:
                self._guarded(step, conn)

    def again(self, conn: T) -> None:
        """Admission thread: a held connection back to where it was held: ``first``
        (which runs the login it read already, ``FirstLook.first``), else in line."""
        self._arrived(conn)

    def arrive(self, conn: T) -> None:
        """``conn`` is started now if a slot is free, or when one is freed for it (by
        the thread that frees it); or, once closed, given to ``never``."""
        go = self.slots == 0
        closed = False
        if not go:
            with self._lock:
                closed = self._closed
                if closed:
                    pass
                elif self._free:
                    self._free -= 1
                    go = True
                else:
                    self._queued(conn)  # before it is in line: from then on, not ours
                    self._line.append(conn)
                    self.waited += 1
        if go:
            self._start(conn)
        elif closed:
            self._never(conn)

    def enter(self, timeout: float) -> bool:
        """Connection thread: a slot before it handles its client's frames, asleep (not
        waiting for the GIL) until it has one. False after ``timeout`` seconds or once
        closed: the caller goes on without a slot (and must not :meth:`leave`)."""
        if not self.slots:
            return False
        waiter = _thread.allocate_lock()
        waiter.acquire()
        with self._lock:
            if self._closed:
                return False
            if self._free:
                self._free -= 1
                return True
            self._line.append(waiter)
            self.waited += 1
        if waiter.acquire(timeout=timeout):
            return not self._closed
        with self._lock:
            try:
                self._line.remove(waiter)
            except ValueError:
                return True  # handed the slot just now: it is ours
        log.warning("no login slot within %.0f s; going ahead without one", timeout)
        return False

    def leave(self) -> None:
        """Connection thread: done with its slot (its login is over, or it is about to
        wait for its client). The slot goes to the first in line, if any."""
        if not self.slots:
            return
        with self._lock:
            nxt = self._line.popleft() if self._line else None
            if nxt is None:
                self._free += 1
        if isinstance(nxt, _thread.LockType):
            nxt.release()
        elif nxt is not None:
            self._start(nxt)  # which leaves in turn if the thread cannot start

    def close(self) -> None:
        """The server is stopping: nobody else gets a slot, every thread asleep in
        :meth:`enter` wakes (False), :meth:`run` returns, and every connection whose
        thread never started goes to ``never``."""
        with self._lock:
            self._closed = True
            line = list(self._line)
            self._line.clear()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        for nxt in line:
            if isinstance(nxt, _thread.LockType):
                nxt.release()
            else:
                self._never(nxt)
        for fd in list(self._watched):
            conn = self._watched.pop(fd, None)
            if conn is not None:
                self._never(conn)
        for fd in list(self._held):  # their registrations may still commit: never logged in
            conn = self._held.pop(fd, None)
            if conn is not None:
                self._never(conn)
        # Logged in: their threads end them as every session ends at a stop (the
        # server's bye shuts their sockets down).
        for fd in list(self._parked):
            conn = self._parked.pop(fd, None)
            if conn is not None:
                assert self._resume is not None
                self._resume(conn)

    def release_resources(self) -> None:
        """After :meth:`close` and once :meth:`run` has returned: the epoll and pipe."""
        if self._epoll is not None:
            self._epoll.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
