"""Per-room fairness in the fan-out (chatroom_server.fanout, "Turns"): a message to a
large room goes out in slices, and what is queued behind it is served between them.

Why (docs/PERFORMANCE.md, issue 35, "the Zipf p99"): the fan-out is one FIFO of passes,
and a pass sends everything it took before the next one starts. With one room of 1,515
beside 999 small ones, the large rooms' messages of a second made one pass of some
4,000 writes (0.25-1.0 s on the loaded 2-core box), and every small room's message
queued behind it waited for its end: p50 320-590 ms in rooms of 3 to 128.

How: a batch whose room messages reach more than ``LARGE`` members is a *job*. Its
frames are *owed* to each of those members (``_owed``: per member, its frames in seq
order and the jobs they belong to), and its ack waits. The fan-out serves the jobs
``SLICE`` writes at a time (:meth:`Turns.serve`), between its passes, so a small room's
message waits for one slice, not for a large room's whole fan-out. The jobs themselves
go first come, first served, in seq order: what is small is never a job, so taking
turns among them would only make every large room finish last (measured: no better,
docs/PERFORMANCE.md, "Turns").

Order for every recipient (docs/PROTOCOL.md §Ordering): whenever anything else is given
to a member that is owed frames (a later message of another room, an ack, a DM), what
it is owed goes first, in the same send (:meth:`Turns.give`). So a member sees every
message in seq order, whichever turn its frames go out in, and nobody's cursor can pass
a seq it has not been sent. Acks (§pm): a job's ack goes to its sender once every member
has its frames (the ack after the last write); a sender's next batch is neither acked
nor made a job before its jobs are done (:meth:`Turns.finish_of`), so its acks keep
their order. What the fan-out cannot look into (a lobby message to everyone, the
callables of ``FanOut.after``, ``FanOut.exclusive``) finds no job: everything owed is
written first (:meth:`Turns.finish_all`).

A cluster node (docs/CLUSTER.md, "Turns on a node") delivers room messages from the
cluster's stream, not from its passes: a stream message to more than ``LARGE`` of its
members is a job too (:meth:`Turns.owe`), with no batch and no ack (its sender was
answered by the node that stored it), and the node gives everything else its members
get through :meth:`Turns.give` or after :meth:`Turns.finish_all`, as the fan-out does
(chatroom_server.node, chatroom_server.noderooms).

Threads: owned by the holder of ``FanOut._lock``, like the queue's items once popped;
but ``in`` (is anything owed to a member?) is read by any thread: one dict lookup, and
a stale answer is the race of a message stored as the member's ``exit`` is read. No
lock of its own; what it calls (``Outbox.offer``) never blocks.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence

from chatroom_server.fanitems import Batch, Member, RoomMember
from chatroom_server.frames import joined

log = logging.getLogger(__name__)

# Writes per turn: the most a message of a small room waits for behind a large one's
# fan-out is about one slice (some 3 ms at 44 µs a write, docs/PERFORMANCE.md).
SLICE = 64
# A batch reaching no more members than this is sent in its pass, as before: in turns,
# one of a room of 100 waited a whole round of the large rooms' turns for its second
# slice (p99 150-180 ms in rooms of 17-128 at 10,000 users, docs/PERFORMANCE.md).
LARGE = 2 * SLICE
# The tuning knob for benchmarks (docs/OPERATIONS.md, "Tuning knobs"): what a turn is,
# read once at start. Not a setting: the default is what docs/PERFORMANCE.md measured best.
TURN_ENV = "CHATROOM_FANOUT_TURN"
# With a time budget, the clock is read every this many writes (a read costs about what
# a dict lookup does; a write some 15-45 µs).
_CLOCK_EVERY = 8


def turn_policy(env: Mapping[str, str]) -> tuple[int, float | None]:
    """A turn's writes and time budget from ``env``'s ``TURN_ENV``: ``N`` is N writes
    (no budget), ``Xms`` is as many writes as fit in X ms (at least ``_CLOCK_EVERY``);
    unset, ``SLICE`` writes. ValueError for anything else."""
    text = env.get(TURN_ENV, "").strip()
    if not text:
        return SLICE, None
    if text.endswith("ms"):
        budget = float(text[:-2]) / 1e3
        if not budget > 0:
            raise ValueError(f"${TURN_ENV}: a turn's time must be over 0 ms, not {text!r}")
        return 1 << 30, budget
    writes = int(text)
    if writes < 1:
        raise ValueError(f"${TURN_ENV}: a turn is at least 1 write, not {text!r}")
    return writes, None


class _Job:
    """One batch's room messages, owed to ``members`` (in the order they are served);
    ``batch`` None: a message from a cluster's stream, acked by nobody here."""

    __slots__ = ("batch", "left", "members", "pos")

    def __init__(self, batch: Batch | None, members: Sequence[Member]) -> None:
        self.batch = batch
        self.members = members  # a list of its own (Turns.add)
        self.pos = 0  # members before it have been served (or were given it earlier)
        self.left = len(members)  # members not yet written to


def gather(
    out: dict[RoomMember, list[bytes]],
    keys: Iterable[str],
    skip: str,
    local: Callable[[str], RoomMember | None],
    data: bytes,
) -> int:
    """Add ``data`` to ``out`` for each of ``keys`` (a room's members' username keys)
    held on this server by a connection that speaks rooms, but ``skip`` (the sender's
    key); the deliveries that makes. The fan-out's pass and its turns both gather a
    room message's recipients here, so the two can never disagree on who gets it."""
    n = 0
    for key in keys:
        if key == skip:
            continue
        c = local(key)
        if c is not None and c.rooms:
            got = out.get(c)
            if got is None:
                out[c] = [data]
            else:
                got.append(data)
            n += 1
    return n


class Turns:
    """The jobs in progress and what they owe (module docstring)."""

    __slots__ = ("_budget", "_clock", "_jobs", "_owed", "_senders", "_slice")

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._clock = clock  # for a turn's time budget; injectable for tests
        # What one turn may do (turn_policy): writes, and seconds if not None.
        env = os.environ if env is None else env
        self._slice, self._budget = turn_policy(env)
        if TURN_ENV in env:
            log.info("fan-out turns: %s=%s", TURN_ENV, env[TURN_ENV])
        # A member's frames still owed, in seq order, and the jobs they belong to.
        self._owed: dict[Member, tuple[list[bytes], list[_Job]]] = {}
        self._jobs: deque[_Job] = deque()  # in order; finished ones are dropped lazily
        self._senders: dict[Member, int] = {}  # a sender's jobs whose ack still waits

    def __bool__(self) -> bool:
        return bool(self._owed)

    def __contains__(self, c: Member) -> bool:
        """Whether ``c`` is owed frames (any thread: see the module docstring)."""
        return c in self._owed

    def add(self, batch: Batch, out: dict[RoomMember, list[bytes]]) -> None:
        """``batch``'s room messages, ``out`` (each member's frames), as a job: sent in
        turns, its ack after the last of them (module docstring)."""
        conn = batch.conn
        if conn in self._senders:
            self.finish_of(conn)  # its acks in order: the earlier job's first
        batch.deferred = True
        if self._owe(batch, out):
            self._senders[conn] = self._senders.get(conn, 0) + 1

    def owe(self, out: dict[RoomMember, list[bytes]]) -> None:
        """A cluster's stream message to a large room, ``out`` (each member's frames,
        after whatever each is owed already), as a job with no ack: sent in turns
        (module docstring)."""
        self._owe(None, out)

    def _owe(self, batch: Batch | None, out: dict[RoomMember, list[bytes]]) -> bool:
        """``out`` owed as a job; False if it had nobody (then done already)."""
        job = _Job(batch, list(out))
        owed = self._owed
        for c, chunks in out.items():
            got = owed.get(c)
            if got is None:
                owed[c] = (chunks, [job])
            else:
                got[0].extend(chunks)
                got[1].append(job)
        if not job.left:
            self._done(job)
            return False
        self._jobs.append(job)
        return True

    def add_parts(self, batch: Batch, skip: str, local: Callable[[str], RoomMember | None]) -> int:
        """:meth:`add` ``batch``'s room messages (its ``parts``, all to rooms) for their
        members on this server that speak rooms, but ``skip`` (its sender's username
        key); the deliveries that makes."""
        out: dict[RoomMember, list[bytes]] = {}
        deliveries = 0
        assert batch.parts is not None
        for to, data, _ in batch.parts:
            assert to is not None
            deliveries += gather(out, to[1], skip, local, data)
        self.add(batch, out)
        return deliveries

    def give(self, c: Member, data: bytes) -> None:
        """Send ``data`` to ``c``, after what it is owed (one send for both)."""
        got = self._owed.pop(c, None)
        if got is None:
            c.outbox.offer(data)
            return
        chunks, jobs = got
        if data:
            chunks.append(data)
        self._write(c, chunks, jobs)

    def serve(self) -> int:
        """One turn: ``SLICE`` writes, or what ``TURN_ENV`` says (turn_policy), from the
        first job on. The writes made."""
        jobs, owed, most = self._jobs, self._owed, self._slice
        clock = self._clock
        until = None if self._budget is None else clock() + self._budget
        made = 0
        while made < most and jobs:
            job = jobs[0]
            members, n = job.members, len(job.members)
            # pos moves before the write: a write that raises (a bug) cannot stall it.
            while made < most and job.left and job.pos < n:
                c = members[job.pos]
                job.pos += 1
                got = owed.pop(c, None)
                if got is not None:  # else given it earlier, with something after it
                    self._write(c, *got)
                    made += 1
                    if until is not None and not made % _CLOCK_EVERY and clock() >= until:
                        most = made  # the turn's time is spent
            if not job.left or job.pos >= n:
                jobs.popleft()
        return made

    def finish_of(self, conn: Member) -> None:
        """Complete ``conn``'s jobs now (their acks are due before its next one's)."""
        for job in [
            j for j in self._jobs if j.batch is not None and j.batch.conn is conn and j.left
        ]:
            self._finish(job)

    def finish_all(self) -> None:
        """Write everything owed, and send the acks that waited for it."""
        owed = self._owed
        while owed:
            c, (chunks, jobs) = owed.popitem()
            self._write(c, chunks, jobs)
        self._jobs.clear()

    def _finish(self, job: _Job) -> None:
        owed = self._owed
        members = job.members
        while job.left and job.pos < len(members):
            c = members[job.pos]
            job.pos += 1
            got = owed.pop(c, None)
            if got is not None:
                self._write(c, *got)

    def _write(self, c: Member, chunks: list[bytes], jobs: list[_Job]) -> None:
        ob = c.outbox
        if len(chunks) == 1:
            ob.offer(chunks[0])
        else:  # the events only for a transport that renders them (frames.py)
            ob.offer(joined(chunks) if ob.renders else b"".join(chunks))
        for job in jobs:
            job.left -= 1
            if not job.left:
                self._done(job)

    def _done(self, job: _Job) -> None:
        """Every member has ``job``'s frames: its ack (docs/PROTOCOL.md §pm)."""
        b = job.batch
        if b is None:
            return  # from the cluster's stream: answered where it was stored
        conn = b.conn
        left = self._senders.get(conn, 0) - 1
        if left > 0:
            self._senders[conn] = left
        else:
            self._senders.pop(conn, None)
        self.give(conn, b.ack)
        conn.done += 1
