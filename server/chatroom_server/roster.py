"""The user list as ``users_delta`` connections see it (docs/PROTOCOL.md §Extensions).

Protocol v1 pushes the whole list to everyone on every login and logout: with N users
online a storm of N logins costs O(N^2) bytes (10,000 users: ~150 KB to each of 10,000
clients, per login). Connections that ask for ``users_delta`` instead get, at most once
per *window*, one frame naming who joined and who left since the last one: encoded once,
the same bytes for everyone, so a storm costs O(N) per window. A ``lazy_users``
connection that has not asked for the list gets a second frame, also encoded once, with
the count alone: it keeps nothing else (docs/PROTOCOL.md §lazy_users).

The window is ``min_window`` (default 0.1 s) or ``WINDOW_FACTOR`` (16) times the CPU
time the last publication took, whichever is longer (at most ``MAX_WINDOW``), so
publishing never takes more than about a seventeenth of the time however many users
there are (docs/PERFORMANCE.md, "Arrival storms": at four times, a fifth, the publisher
was a third of the server's CPU in a storm of 10,000 arrivals). A change after a quiet
spell is published at once; changes during a window wait for its end, or until no change
has come for ``QUIET`` (50 ms): a window ends with the storm that made it long.

Threads and locks:

- The *publisher thread* (``chat-users``, :meth:`UsersPublisher.run`) publishes pending
  changes and the periodic push.
- Connection threads call :meth:`~UsersPublisher.subscribing`, :meth:`~UsersPublisher.reply`,
  :meth:`~UsersPublisher.unsubscribe`, :meth:`~UsersPublisher.changed` and
  :meth:`~UsersPublisher.announce`.
- ``UsersPublisher._lock`` guards ``_subscribers``, ``_counting``, ``_published`` and
  ``_last``/``_window``.
  Every frame that tells a subscriber about the list (its ``login_ok``, ``users`` replies,
  deltas) is queued under it, so each subscriber's frames form one sequence in which
  every delta applies to the list it already has. Queued, not sent: a delta goes to each
  subscriber with ``Outbox.queue`` (an append, no syscall) under the lock, and the
  ``send`` calls (``Outbox.push``) happen after it is let go. A syscall releases the
  GIL, and with 10,000 subscribers a publication under the lock was 10,000 GIL hand-offs
  while every departing or arriving connection waited for the lock: when 10,000 clients
  dropped at once, their threads queued behind one publication for 10-40 s
  (docs/PERFORMANCE.md, "Mass departures").
- ``unsubscribe`` and ``changed`` take no lock: 10,000 connections ending at once all
  call both, and a lock they queue on is a lock the publisher waits for behind them
  (each waiter a futex sleep and a GIL hand-back). A departed connection goes on the
  ``_gone`` deque (appended by anyone, popped only under the lock); ``changed`` rings
  the publisher's :class:`~chatroom_server.doorbell.Doorbell`.
- Lock order: this lock, then ``Presence.lock`` (the server takes it inside
  :meth:`~UsersPublisher.subscribing`); never the other way round.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import msgspec

from chatroom.protocol import RequestId, UserList, UsersDelta, encode, username_key
from chatroom_server.doorbell import Doorbell
from chatroom_server.frames import encoded
from chatroom_server.outbox import Outbox, push_all

log = logging.getLogger(__name__)


# The longest window, however long a publication took: the list is never more stale.
MAX_WINDOW = 1.0
# A window is this many times the publisher's CPU time for the last publication: each
# publication is one send per subscriber (10,000 sends, 50-100 ms, with 10,000 users), and
# in an arrival storm every publication also costs each client's process a wake-up.
WINDOW_FACTOR = 16
# A window ends early once no change has come for this long: the storm that made it
# long is over, and the last arrivals need not wait out the rest (a window of 0.4 s after
# a rejoin of 10,000 put up to 0.4 s on the time until everyone saw everyone).
QUIET = 0.05


class SortedNames:
    """Names kept sorted ignoring case, with O(log N) lookup and O(N) memmove updates
    (not an O(N log N) sort per login), and a cached tuple snapshot. Not thread-safe:
    each instance belongs to whoever holds its owner's lock."""

    __slots__ = ("_json", "_names", "_offsets", "_snapshot")

    def __init__(self) -> None:
        self._names: list[str] = []
        self._snapshot: tuple[str, ...] | None = ()
        # The names as one JSON array, and where each one starts in it (json_with);
        # None: stale, rebuilt on the next call.
        self._json: bytes | None = None
        self._offsets: list[int] = []

    def __len__(self) -> int:
        return len(self._names)

    def _find(self, name: str) -> tuple[int, bool]:
        """Where ``name`` is or would go, and whether it is there (ignoring case)."""
        k = username_key(name)
        i = bisect.bisect_left(self._names, k, key=username_key)
        return i, i < len(self._names) and username_key(self._names[i]) == k

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name)[1]

    def get(self, name: str) -> str | None:
        """The spelling this set holds for ``name`` (any case), or None."""
        i, found = self._find(name)
        return self._names[i] if found else None

    def add(self, name: str) -> bool:
        i, found = self._find(name)
        if found:
            return False
        self._names.insert(i, name)
        self._snapshot = self._json = None
        return True

    def discard(self, name: str) -> bool:
        i, found = self._find(name)
        if not found:
            return False
        del self._names[i]
        self._snapshot = self._json = None
        return True

    def snapshot(self) -> tuple[str, ...]:
        if self._snapshot is None:
            self._snapshot = tuple(self._names)
        return self._snapshot

    def json_with(self, name: str) -> bytes:
        """The names plus ``name`` (if missing) as a JSON array, without changing this
        set (:meth:`frame_with` is what a login_ok uses)."""
        return b"".join(self._pieces(name))

    def frame_with(self, name: str, frame: bytes) -> bytes:
        """``frame``, encoded with ``"users":[]``, with :meth:`json_with`'s array in
        place of the ``[]``: the login_ok of ``name``. The array is encoded once per
        change of the set and the new name spliced in at its place (in a storm of 10,000
        logins, building and encoding a 10,000-name tuple for each login was 120 µs of
        the GIL apiece, and the set changes only once per users_delta window), and the
        frame is built in one copy of it: slicing and encoding it again made five, 21 µs
        a login under the server's lock at 10,000 names."""
        at = frame.index(USERS_SLOT) + len(USERS_SLOT) - 2  # the first: names hold no "
        return b"".join((frame[:at], *self._pieces(name), frame[at + 2 :]))

    def _pieces(self, name: str) -> tuple[bytes | memoryview, ...]:
        """The array of :meth:`json_with` as pieces to join, none a copy of the cached
        array (memoryview slices of it)."""
        arr = self._json
        if arr is None:
            parts = [msgspec.json.encode(n) for n in self._names]
            arr = self._json = b"[" + b",".join(parts) + b"]"
            self._offsets = list(itertools.accumulate((len(p) + 1 for p in parts), initial=1))
        i, found = self._find(name)
        if found:
            return (arr,)
        new = msgspec.json.encode(name)
        view = memoryview(arr)
        if i == len(self._names):  # last (or the only one): before the closing bracket
            return (view[:-1], b"," + new if self._names else new, b"]")
        at = self._offsets[i]
        return (view[:at], new, b",", view[at:])


# What a login_ok is encoded with before SortedNames.frame_with puts the names in.
USERS_SLOT = b'"users":[]'


class Member(Protocol):
    """What the publisher needs of a connection (``chatroom_server.conn.Conn``)."""

    username: str | None
    outbox: Outbox


class UsersPublisher:
    """Publishes the user list to the connections that asked for ``users_delta``."""

    # The longest the thread sleeps with nothing to publish and no tick due (s); a stop
    # rings it awake (wake) instead.
    idle_wait = 1.0

    def __init__(
        self,
        live: Callable[[], Iterable[str]],
        *,
        min_window: float = 0.1,
        quiet: float = QUIET,
        interval: float = 0.0,
        stopping: threading.Event,
    ) -> None:
        self._live = live  # the logged-in names now (the server's lock-free snapshot)
        self._min_window = min_window
        self.quiet = quiet  # a window ends once no change came for this long
        self._interval = interval  # periodic push; 0 = none
        self._stopping = stopping
        self._lock = threading.Lock()  # see the module docstring
        self._subscribers: set[Member] = set()
        # lazy_users subscribers that have not asked for the list (reply): their deltas
        # carry the count alone, which is all such a client keeps (docs/PROTOCOL.md
        # §lazy_users). Names to 10,000 of them were the last delta of a storm: some
        # 2,000 names to each, 0.6-0.8 s to send (docs/PERFORMANCE.md).
        self._counting: set[Member] = set()
        self._published = SortedNames()  # the list every subscriber has now
        self._dirty = Doorbell()  # rung when the live list may differ from _published
        self._gone: deque[Member] = deque()  # unsubscribed; see the module docstring
        # IRC guests' NICK changes, (old, new), noted before the live list shows them;
        # appended by anyone, read and replaced only under the lock (_renamed_locked).
        self._renames: deque[tuple[str, str]] = deque()
        self._last = 0.0  # time.monotonic() of the last publication
        self._changed_at = 0.0  # time.monotonic() of the latest change; a plain store
        self._window = min_window
        self.publications = 0  # deltas sent (each to every subscriber), for tests and logs

    # ------------------------------------------------------------ connection threads

    @contextlib.contextmanager
    def subscribing(self, conn: Member, *, lazy: bool = False) -> Iterator[SortedNames]:
        """Hold the lock while the caller queues ``conn``'s ``login_ok`` listing the
        published names (plus the new user), then subscribe it: the next delta applies
        to exactly that list. ``lazy`` (``lazy_users``): its login_ok has the count
        only, and so does every delta to it until it asks for the list (``reply``)."""
        with self._lock:
            yield self._published
            (self._counting if lazy else self._subscribers).add(conn)
        self.changed()

    def reply(self, conn: Member, rid: RequestId) -> None:
        """Answer a subscriber's ``users`` command with the list its deltas build on;
        from then on a lazy one's deltas name who joined and left, as they apply to
        that list (docs/PROTOCOL.md §lazy_users)."""
        with self._lock:
            conn.outbox.queue(encode(UserList(users=self._published.snapshot(), id=rid)))
            if conn in self._counting:
                self._counting.discard(conn)
                self._subscribers.add(conn)
        conn.outbox.push()

    def unsubscribe(self, conn: Member) -> None:
        """No lock: ``conn`` leaves the subscribers at the next publication (its outbox
        refuses what is queued to it meanwhile)."""
        self._gone.append(conn)
        self.changed()

    def changed(self) -> None:
        """The live list changed (a login, logout or drop): publish within a window. No
        lock unless this is the first change since the publisher last looked."""
        self._changed_at = time.monotonic()
        self._dirty.ring()

    def renaming(self, old: str, new: str) -> None:
        """An IRC guest's NICK change is about to show in the live list (``old`` gone,
        ``new`` there): the delta that shows it says so (``renamed``). Called before
        the live list changes, so that no delta shows it without the note."""
        self._renames.append((old, new))

    def announce(self, name: str) -> None:
        """Before a message from ``name`` goes out: make sure every subscriber has heard
        that ``name`` joined (docs/PROTOCOL.md §Ordering), publishing now if needed."""
        with self._lock:
            known = name in self._published
        if not known:
            self._publish()  # queued to everyone before the caller's message is

    # ------------------------------------------------------------ publisher thread

    def wake(self) -> None:
        """The server is stopping: end the thread's wait now. Without it a stop with no
        departure to ring the bell waited out ``idle_wait`` in its join."""
        self._dirty.ring()

    def run(self) -> None:
        next_tick = time.monotonic() + self._interval if self._interval > 0 else None
        idle = self.idle_wait
        while not self._stopping.is_set():
            now = time.monotonic()
            timeout = idle if next_tick is None else max(0.0, min(idle, next_tick - now))
            if self._dirty.wait(timeout):
                if self._stopping.is_set():  # rung by wake(): nothing more to publish
                    return
                # Coalesce: everything that changes until the window's end goes in one
                # delta, or until no change has come for QUIET seconds.
                if self._wait_window():
                    return
                self._dirty.answer()  # before reading the live list: later changes ring
                self._publish()
            if next_tick is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self._interval
                with self._lock:
                    sent_to = self._tick_locked()
                _push(sent_to)

    def _wait_window(self) -> bool:
        """Publisher thread: wait for the window's end, or for ``quiet`` seconds without
        a change; True if the server is stopping."""
        end = self._last + self._window
        while True:
            now = time.monotonic()
            until = min(end, self._changed_at + self.quiet)
            if until <= now:
                return False
            if self._stopping.wait(until - now):
                return True

    def _publish(self) -> None:
        # The publication's cost is this thread's CPU time, not the wall clock: waiting
        # for the GIL while thousands of connections end at once once made a
        # publication "take" 16 s and the next one wait 65 s behind it.
        started = time.thread_time()
        with self._lock:
            sent_to = self._publish_locked()
        _push(sent_to)
        if sent_to:
            took = time.thread_time() - started
            with self._lock:
                self._last = time.monotonic()
                self._window = min(MAX_WINDOW, max(self._min_window, WINDOW_FACTOR * took))
            log.debug("users_delta to %d subscribers in %.1f ms", len(sent_to), took * 1e3)

    def _publish_locked(self) -> tuple[Member, ...]:
        """Queue the delta to every subscriber; returns them, for :func:`_push` after the
        lock is let go (see the module docstring)."""
        self._forget_gone_locked()
        live = set(self._live())
        pub = self._published
        old = set(pub.snapshot())
        joined, left = live - old, old - live
        if not joined and not left:
            self._renamed_locked(joined, left, live)  # drops the notes of undone renames
            return ()
        for name in left:
            pub.discard(name)
        for name in joined:
            pub.add(name)
        # Carrying its event (chatroom_server.frames): every IRC subscriber renders its
        # own JOIN and QUIT lines from it ("not me" differs), without decoding it.
        data = encoded(
            UsersDelta(
                joined=tuple(sorted(joined, key=username_key)),
                left=tuple(sorted(left, key=username_key)),
                count=len(pub),
                renamed=self._renamed_locked(joined, left, live),
            )
        )
        subscribers = tuple(self._subscribers)
        for conn in subscribers:
            conn.outbox.queue(data)
        counting = tuple(self._counting)
        if counting:
            data = encoded(UsersDelta(count=len(pub)))
            for conn in counting:
                conn.outbox.queue(data)
        self.publications += 1
        log.debug("users_delta +%d -%d", len(joined), len(left))
        return subscribers + counting

    def _renamed_locked(
        self, joined: set[str], left: set[str], live: set[str]
    ) -> tuple[tuple[str, str], ...]:
        """The noted renames this delta shows (its old name left, its new one joined).

        The notes are first joined into chains, one guest's names in order, so that
        renames between two deltas show as one (amy to bea to cat: amy left, cat
        joined, one NICK). A chain is shown up to the name the live list has now;
        what follows it (a note made just before the live list changes) waits for a
        later delta; what the live list has passed is dropped, as is a chain none of
        whose names is live (a guest that renamed and left). So a rename undone before
        a delta (amy to bea to amy) leaves no note behind: kept, a storm of them would
        grow without end, and one would pair amy's quit with a newcomer named bea."""
        chains: list[list[str]] = []
        ends: dict[str, list[str]] = {}
        for _ in range(len(self._renames)):
            old, new = self._renames.popleft()
            chain = ends.pop(old, None)
            if chain is None:
                chain = [old]
                chains.append(chain)
            chain.append(new)
            ends[new] = chain
        shown: list[tuple[str, str]] = []
        waiting: list[tuple[str, str]] = []
        for chain in chains:
            at = max((i for i, name in enumerate(chain) if name in live), default=None)
            if at is None:
                continue
            if at > 0 and chain[0] in left and chain[at] in joined:
                shown.append((chain[0], chain[at]))
            waiting += itertools.pairwise(chain[at:])
        # Back at the front: a note made meanwhile (renaming() takes no lock) follows
        # them, as its rename followed theirs, and chains with them next time.
        self._renames.extendleft(reversed(waiting))
        return tuple(shown)

    def _tick_locked(self) -> tuple[Member, ...]:
        """The periodic push (docs/PROTOCOL.md §Server pushes): for subscribers, a delta
        with no changes that carries the count, so a client can check its list."""
        self._forget_gone_locked()
        data = encoded(UsersDelta(count=len(self._published)))
        subscribers = (*self._subscribers, *self._counting)
        for conn in subscribers:
            conn.outbox.queue(data)
        return subscribers

    def _forget_gone_locked(self) -> None:
        gone, subscribers, counting = self._gone, self._subscribers, self._counting
        while gone:
            conn = gone.popleft()
            subscribers.discard(conn)
            counting.discard(conn)


def _push(members: Iterable[Member]) -> None:
    """Send what a publication queued, outside the publisher's lock."""
    push_all(conn.outbox for conn in members)
