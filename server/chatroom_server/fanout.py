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

Coalescing (docs/PERFORMANCE.md, "Coalescing" under "Scale: 1,000 clients"): a ``send``
to a loopback socket whose reader sleeps costs some 8 µs of kernel time here however many
frames it carries, so with many recipients each getting few messages the cost is one
syscall per delivery unless frames share a send. An event loop gets that for free: what
arrived while it was writing goes out in its next pass. Here, when rounds of
broadcasts take d seconds (a moving average), the next pass waits until 3d after the
last round ended (at most ``coalesce``, 10 ms by default), so that the fan-out spends at
most a quarter of the time sending while messages keep coming, and what arrives meanwhile
shares its sends. A message after a quiet spell (the last round long over) goes out at
once: pacing adds latency only when the fan-out is busy, and rounds that are cheap on
average (under 5 ms: some 500 recipients) are not paced at all.

The helper: a reader thread that holds the lock is not reading its own client. Left to
drain for as long as others keep queueing, one busy holder once sat in the fan-out for
seconds while its own client's messages waited unread in its socket (p99 in seconds at
1,000 clients, docs/PERFORMANCE.md). So a reader makes passes for at most
``READER_BUDGET`` and never pauses for coalescing: when its budget is spent, or a pause
is due, it wakes the ``chat-fanout`` helper thread, lets go and goes back to its socket.
The helper takes the lock, pauses and sends until the queue is empty, then waits for the
next hand-over. At light load the helper never runs (the reader's one pass empties the
queue, with no thread woken); under sustained load it is the one fan-out thread, which
costs one wake-up per busy spell, not per message. The hand-over cannot strand items:
the helper looks at the queue after every wake-up and after letting go of the lock.

With the message log (chatroom_server.messagelog), the holder of ``_lock`` is also its
one writer: each pass takes everything queued, stores its messages in one transaction
(group commit), and only then sends them and their acks. Seqs are assigned in queue
order, so every recipient sees messages in seq order (docs/PROTOCOL.md §Message log), and
a message is delivered to nobody before it is stored. If storing fails, nothing of the
group is delivered and each sender gets ``unavailable`` instead of its ack.
:meth:`exclusive` runs a function between two passes: at that instant everything stored
has been handed to the roster of the time, which is the cut a resuming login needs.

Rooms (docs/PROTOCOL.md §Rooms; :meth:`serve_rooms`): a public message to a room rides
in its reader's batch like a lobby one. The pass checks it (chatroom_server.fanrooms:
member, not muted; the room book belongs to this lock's holder,
chatroom_server.roomwire), stores it in the pass's
one transaction, and sends it to the room's members on this server, gathered per member
over the run of batches: a member of busy rooms gets one ``send`` per pass, as a lobby
recipient does. Before, each room message was stored in a transaction of its own under
:meth:`exclusive` (docs/PERFORMANCE.md, "Rooms through the fan-out"). A refused one
(``not_in_room``, ``muted``, ...) is neither stored nor sent; its error takes its ack's
place. Room events still run under :meth:`exclusive`, between passes, so a member gets
a room's messages and events in seq order.

Turns (chatroom_server.fanturns): a batch whose room messages reach over ``LARGE``
members goes out in slices between passes, owed to its members meanwhile, so a small
room's message waits for a slice, not for a large room's whole fan-out; whatever else a
member is given comes after what it is owed, and the ack after the last write.
:meth:`exclusive` callers get the lock in turn, a pass between two (chatroom_server.handover).

What it sends (chatroom_server.frames): a batch comes with the events its frames and acks
encode, and the frames the fan-out joins (a batch's, a round's) are a ``Frames``: the
same bytes, carrying those events with the seqs the log gave them, so that IRC renders
its lines from the fields and never decodes the JSON again. Built once per message or
round; a recipient's own join (a sender's "everyone's but mine", a room member's parts)
carries them only for an outbox that renders (``Outbox.renders``): a JSON recipient
costs what it did.

How a pass's parts reach the outboxes (a run of lobby batches, of batches with rooms in
them, a DM, and the acks after them) is chatroom_server.fansend's.

Threads: ``_queue`` is appended to by any thread and popped only under ``_lock``, by a
reader thread or the helper; the
work under ``_lock`` is ``Outbox.queue``/``push``/``send`` (never blocking), the message
log's writes (one transaction per pass), and the callables of :meth:`after` and
:meth:`exclusive`, which must not block either. Lock order: ``_lock``, then the users
publisher's lock, then the server's lock; nothing takes them the other way round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

import msgspec

from chatroom.protocol import (
    Ack,
    Broadcast,
    ErrorCode,
    ErrorEvent,
    RequestId,
    encode,
)
from chatroom_server.fanitems import Batch as _Batch
from chatroom_server.fanitems import Direct, Member, RoomCheck, RoomMember, with_seq
from chatroom_server.fanrooms import check_rooms, conflict, stored_rooms
from chatroom_server.fansend import Sender
from chatroom_server.fanturns import Turns
from chatroom_server.frames import Stamped, encoded, framed, joined
from chatroom_server.handover import Handover
from chatroom_server.livecids import LiveCids
from chatroom_server.messagelog import Duplicate, NewMessage, StorageError
from chatroom_server.metrics import FanOutStats
from chatroom_server.storage import MessageStore

T = TypeVar("T")

# Coalescing: the share of the time the fan-out may spend sending while messages keep
# coming; the weight of the latest round in the moving average of their cost; and the
# least pause (before the ``coalesce`` cap) that makes pacing worth it at all: rounds
# that cost under 5 ms on average (some 500 recipients) are not paced: there pacing
# bought CPU but put 5-10 ms on the p99 at 100 clients (bench/ab.py), and one slow
# round (a GC pass) alone must not set a pause.
DUTY = 0.25
SMOOTHING = 0.25
MIN_PAUSE = 0.015
# Seconds of passes a reader thread makes as the holder before it hands the queue to the
# helper and goes back to its own client (module docstring, "The helper").
READER_BUDGET = 0.005
# The most one pass takes from the queue: items, and bytes of broadcasts (which every
# recipient gets in one go; under the default --max-output of 1 MiB with room to spare).
PASS_ITEMS = 4096
PASS_BYTES = 64 * 1024

log = logging.getLogger(__name__)


_UNAVAILABLE = "the message could not be stored; it was not delivered (try again)"


class FanOut:
    """See the module docstring. ``roster`` returns the connections to deliver to."""

    def __init__(
        self,
        roster: Callable[[], tuple[Member, ...]],
        log: MessageStore | None = None,
        lookup: Callable[[str], Member | None] = lambda key: None,
        coalesce: float = 0.01,
        clock: Callable[[], float] = time.perf_counter,
        deliver: bool = True,
    ) -> None:
        self._clock = clock  # for pacing and the readers' budget; injectable for tests
        # Pacing (module docstring, "Coalescing"): rounds that take d seconds (a moving
        # average, ``_round_cost``) make the next one start no sooner than d / DUTY after
        # one began, waiting at most ``coalesce`` s; 0 turns it off. ``_paced_until`` and
        # ``_round_cost`` are written and read under _lock.
        self.coalesce = coalesce
        self._paced_until = 0.0
        self._round_cost = 0.0
        self._log = log
        # False in a cluster node (docs/CLUSTER.md): stored messages reach everyone,
        # this node's clients included, from the cluster's stream in seq order; the
        # fan-out only stores them and answers their senders.
        self._deliver = deliver
        self._lookup = lookup  # a logged-in connection by username_key (DM recipients)
        # Rooms (:meth:`serve_rooms`): set once, before the server takes connections.
        self._check_room: RoomCheck | None = None
        self._live_cids = LiveCids()  # a guest room's messages' cids; under _lock
        self._queue: deque[_Batch | Direct | tuple[Member, Callable[[], object]]] = deque()
        self._lock = threading.Lock()
        # Those waiting for _lock in exclusive(), in turn; every holder lets go of the
        # lock through it (_let_go), so they are handed it in order (handover.py).
        self._handover_line = Handover()
        # Large rooms' messages going out in slices between passes (fanturns.py);
        # under _lock.
        self._turns = Turns()
        # Items queued beyond which readers wait for the fan-out (backpressure). A round
        # is one send per recipient however many items it carries, so a long queue is
        # cheap to send; this only bounds memory (items are at most one read, 4 KiB).
        self.high_water = 1024
        self.high_water_wait = 1.0  # s a reader waits then; the holder still sends its items
        # Threads that never wait here (never_waits): set before they queue anything.
        self._unwaiting: frozenset[int] = frozenset()
        # The helper (module docstring): started at the first hand-over, woken by
        # ``_handover``; ``_stopping`` ends it and cuts a pacing pause short.
        self._handover = threading.Event()
        self._stopping = threading.Event()
        self._helper: threading.Thread | None = None  # started under _lock
        self.crashes = 0  # rounds that raised (a bug); written under _lock
        self.storage_failures = 0  # passes whose messages could not be stored (under _lock)
        self.stats = FanOutStats()  # for the metrics (chatroom_server.metrics); under _lock
        # What sends a pass's parts (fansend.py); under _lock.
        self._sender = Sender(roster, lookup, self._turns, self.stats, deliver)

    # ------------------------------------------------------------ reader threads

    def broadcast(
        self,
        conn: Member,
        frames: list[bytes],
        acks: list[bytes],
        msgs: list[NewMessage] | None = None,
        rids: list[RequestId] | None = None,
        events: list[tuple[Broadcast, Ack]] | None = None,
    ) -> None:
        """Deliver ``frames`` (whole frames) to everyone but ``conn``, then ``acks`` to it;
        with the message log, store ``msgs`` first (one per frame). ``events``: what
        each frame and ack encode, carried along for the transports that render them
        (chatroom_server.frames)."""
        conn.handed += 1
        self._queue.append(_Batch(conn, frames, acks, msgs, rids, events))
        self._combine()

    def serve_rooms(self, check: RoomCheck, local: Callable[[str], RoomMember | None]) -> None:
        """Take public messages to rooms too (docs/PROTOCOL.md §Rooms): ``check`` says
        who may send one and who gets it (RoomCheck), ``local`` finds a member's
        connection on this server by username key. Called before any message is."""
        self._check_room = check
        self._sender.local = local

    def direct(self, item: Direct) -> None:
        """Store a DM, then deliver it and the sender's ack (message log only)."""
        item.conn.handed += 1
        self._queue.append(item)
        self._combine()

    @property
    def turns(self) -> Turns:
        """What large rooms' messages owe their members (fanturns.py): a cluster node
        gives its stream's deliveries through it, in :meth:`exclusive` with ``owed``."""
        return self._turns

    def exclusive(self, fn: Callable[[], T], timeout: float = 10.0, owed: bool = False) -> T:
        """Run ``fn`` holding the fan-out lock, between two passes: everything stored so
        far has been handed to the roster, and nothing stored later is sent before ``fn``
        returns. Callers get the lock in turn (handover.py), and a pass goes out between
        two of them; TimeoutError if it did not change hands for ``timeout`` s.
        ``owed``: what :attr:`turns` owes stays owed, ``fn`` gives through them (the
        cluster's stream, chatroom_server.node), and it is not "handed" yet."""
        self._handover_line.enter(self._lock, timeout)
        try:
            if self._turns and not owed:
                self._guarded(self._turns.finish_all)  # "everything stored": sent
            return fn()
        finally:
            # What others queued meanwhile: at least one pass before the next caller in
            # line gets the lock, so messages still flow through a burst of callers;
            # not on a thread that never waits (never_waits: the helper sends them).
            handed_over = threading.get_ident() not in self._unwaiting and self._drain(
                until=self._clock() + READER_BUDGET
            )
            self._let_go()
            if not handed_over:
                self._combine()

    def after(self, conn: Member, fn: Callable[[], object]) -> None:
        """Run ``fn`` once ``conn``'s broadcasts in the queue are sent and what it is owed
        (an ``exit``'s ``bye`` after them, fanturns.py); at once if there are none."""
        if conn.done == conn.handed and conn not in self._turns:
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

    def close(self, timeout: float = 2.0) -> None:
        """End the helper thread (after it sends what is queued, unless that takes
        longer than ``timeout``)."""
        self._stopping.set()
        self._handover.set()
        helper = self._helper
        if helper is not None:
            helper.join(timeout)

    # ------------------------------------------------------------ the helper

    def _wake_helper(self) -> None:
        """Lock held: have the helper take over the queue."""
        if self._helper is None:
            self._helper = threading.Thread(target=self._help, name="chat-fanout", daemon=True)
            self._helper.start()
        self._handover.set()

    def _help(self) -> None:
        while True:
            self._handover.wait(1.0)
            self._handover.clear()
            while self._queue or self._turns:
                # Readers hold the lock only for a pass at a time now, never a pause.
                if not self._lock.acquire(timeout=1.0):
                    continue
                try:
                    self._drain(until=None)
                finally:
                    self._let_go()
            if self._stopping.is_set():
                return

    # ------------------------------------------------------------ whoever holds _lock

    def never_waits(self) -> None:
        """The calling thread never waits for the fan-out, however long its queue, and
        sends none of it: the admission thread, which accepts and logs in everyone
        (chatroom_server.admission), queues a login's frames and leaves them to the
        lock's holder or the helper. Its wait for the lock when the queue is over
        ``high_water`` (up to ``high_water_wait``) held up every login behind it, and a
        pass of its own could include the message log's commit."""
        self._unwaiting = self._unwaiting | {threading.get_ident()}

    def _combine(self) -> None:
        queue, turns = self._queue, self._turns
        if (queue or turns) and threading.get_ident() in self._unwaiting:
            # The helper sends them; if the lock is held, its holder looks at the queue
            # again after letting go (module docstring), so nothing is stranded.
            if self._lock.acquire(False):
                try:
                    self._wake_helper()
                finally:
                    self._let_go()  # to an exclusive() caller in line, if any
            return
        while queue or turns:  # turns: left by a holder whose hand-over found nobody
            if len(queue) > self.high_water:
                # Overload: the sends cannot keep up. Wait for our turn, so this reader
                # stops reading its client (TCP pushes back) and the queue cannot grow
                # without bound; on timeout the holder still sends our items.
                got = self._lock.acquire(timeout=self.high_water_wait)
            else:
                got = self._lock.acquire(False)
            if not got:
                return  # the holder sends our items after it lets go
            try:
                handed_over = self._drain(until=self._clock() + READER_BUDGET)
            finally:
                self._let_go()
            if handed_over:
                return  # the helper sends the rest (see "The helper")

    def _let_go(self) -> None:
        """Release _lock, or hand it to the first exclusive() caller in line."""
        self._handover_line.leave(self._lock)

    def _drain(self, until: float | None) -> bool:
        """Send passes (and turns of large rooms' messages between them) until the queue
        is empty and no turn is left; True if a reader thread (``until``: its time
        budget) left the rest to the helper instead. After the first pass or turn, an
        exclusive() caller waiting ends it: the caller lets go, and the lock is handed
        over (handover.py)."""
        queue, turns, line = self._queue, self._turns, self._handover_line
        served = turn_next = False
        while queue or turns:
            if served and line.waiting:
                return False
            served = True
            now = self._clock()
            wait = self._paced_until - now
            if until is not None and now > until:
                self._wake_helper()
                return True
            if turns and (turn_next or wait > 0 or not queue):
                # One turn between passes: a small room's message waits for one slice of
                # a large room's, not for all of it (fanturns.py). A pause for
                # coalescing is spent on turns as well.
                self._guarded(turns.serve)
                turn_next = False
                continue
            if until is not None and wait > 0:
                self._wake_helper()
                return True
            turn_next = True
            if wait > 0:
                # Busy: let more messages join this pass (see "Coalescing"). Bounded by
                # ``coalesce``; readers meanwhile queue and return, as during a pass.
                self._stopping.wait(wait)
            # One pass: what is queued now, up to PASS_ITEMS items and PASS_BYTES of
            # broadcasts (each recipient gets them all at once, and a healthy client must
            # not look like a slow one for a burst that piled up during a pause). Its
            # messages are stored together (one commit), then sent in queue order.
            items: list[_Batch | Direct | tuple[Member, Callable[[], object]]] = []
            size = 0
            while queue and len(items) < PASS_ITEMS and size < PASS_BYTES:
                item = queue.popleft()
                items.append(item)
                if type(item) is _Batch:
                    size += item.size
            behind = bool(queue)
            began_pass = time.perf_counter()  # the metrics' (real) time, not _clock
            if self._log is not None:
                self._guarded(self._store, items)
            else:
                for item in items:
                    if type(item) is _Batch:
                        item.data = b"".join(item.frames)
                        item.n_data = len(item.frames)
                        item.ack = b"".join(item.acks)
                        if item.events is not None:
                            item.data = framed(item.data, [(b, None) for b, _ in item.events])
                            item.ack = framed(item.ack, [(a, None) for _, a in item.events])
                        self.stats.messages += len(item.frames)
            i, n = 0, len(items)
            while i < n:
                item = items[i]
                if type(item) is _Batch:
                    # A run of lobby batches (one send per recipient for all of them),
                    # or of batches with rooms in them (one send per member).
                    rooms = item.parts is not None
                    j = i + 1
                    while j < n:
                        nxt = items[j]
                        if type(nxt) is not _Batch or (nxt.parts is not None) != rooms:
                            break
                        j += 1
                    run: list[_Batch] = items[i:j]  # type: ignore[assignment]
                    began = self._clock()
                    sender = self._sender
                    self._guarded(sender.send_parts if rooms else sender.send_run, run)
                    if self.coalesce:
                        ended = self._clock()
                        self._round_cost += SMOOTHING * (ended - began - self._round_cost)
                        pause = self._round_cost * (1 / DUTY - 1)
                        if pause >= MIN_PAUSE:
                            self._paced_until = ended + min(pause, self.coalesce)
                    for b in run:
                        if not b.deferred:  # else when its last write is made (fanturns.py)
                            b.conn.done += 1
                    i = j
                    continue
                if type(item) is Direct:
                    self._guarded(self._sender.send_direct, item)
                    item.conn.done += 1
                else:
                    conn, fn = item  # type: ignore[misc]
                    if self._turns:  # fn may send anything: nothing may be owed then
                        self._guarded(self._turns.finish_all)
                    self._guarded(fn)
                    conn.done += 1
                i += 1
            if behind:
                # This pass could not take everything: the rest is already a batch, and
                # pausing would only let it grow.
                self._paced_until = 0.0
            self.stats.passes += 1
            self.stats.pass_time.observe(time.perf_counter() - began_pass)
        return False

    def _store(self, items: list[_Batch | Direct | tuple[Member, Callable[[], object]]]) -> None:
        """Store the pass's messages in one transaction and put each one's seq into its
        frames; if that fails, every sender gets ``unavailable`` and nothing is sent."""
        assert self._log is not None
        msgs: list[NewMessage] = []
        for item in items:
            if type(item) is _Batch:
                assert item.msgs is not None
                if item.rooms:
                    check_rooms(item, self._check_room, self._live_cids)
                    refused, live = item.refused, item.live
                    msgs += [
                        m for k, m in enumerate(item.msgs) if k not in refused and k not in live
                    ]
                else:
                    msgs += item.msgs
            elif type(item) is Direct:
                # Decided now, under the lock that logins take too: a recipient who is
                # online now gets it live; one who is not, at their next login.
                item.target = self._lookup(item.lookup_key)
                # A cluster node (not delivering) only has its view of presence, which
                # lags other nodes' logins and departures, and the DM reaches its
                # recipient later, from the stream, on whichever node has them then
                # (if any): so it waits in the inbox all the same, until their session
                # shows it got it (docs/CLUSTER.md, "DMs go the same way"). The ack's
                # ``queued`` stays this node's view.
                item.msg.inbox = item.target is None or not self._deliver
                msgs.append(item.msg)
        if not msgs and not any(type(item) is _Batch for item in items):
            return
        began = time.perf_counter()
        try:
            seqs = self._log.append(msgs) if msgs else []
        except StorageError as exc:
            self.storage_failures += 1
            self.stats.storage_errors += 1
            if self.storage_failures == 1 or self.storage_failures % 1000 == 0:
                log.error(
                    "cannot store messages (%d passes so far): %s", self.storage_failures, exc
                )
            self._refuse(items)
            return
        if self.storage_failures:
            log.warning(
                "storing messages works again after %d failed passes", self.storage_failures
            )
            self.storage_failures = 0
        self.stats.commit.observe(time.perf_counter() - began)
        self.stats.messages += len(msgs)
        k = 0
        for item in items:
            if type(item) is _Batch:
                if item.rooms:
                    k = stored_rooms(item, seqs, k)
                    continue
                data, acks = [], []
                # What they encode (chatroom_server.frames), if the batch has its events.
                stamps: list[Stamped] = []
                answers: list[Stamped] = []
                events = item.events
                for i, (frame, ack) in enumerate(zip(item.frames, item.acks, strict=True)):
                    got = seqs[k]
                    k += 1
                    if type(got) is int:
                        data.append(with_seq(frame, got))
                        acks.append(with_seq(ack, got))
                        if events is not None:
                            stamps.append((events[i][0], got))
                            answers.append((events[i][1], got))
                    elif type(got) is Duplicate:
                        acks.append(with_seq(ack, got.seq))  # a resend: stored once, sent once
                        if events is not None:
                            answers.append((events[i][1], got.seq))
                    else:
                        assert item.rids is not None
                        error = conflict(got, item.rids[i])  # type: ignore[arg-type]
                        acks.append(encode(error))
                        answers.append((error, None))
                item.data = b"".join(data)
                item.n_data = len(data)
                item.ack = b"".join(acks)
                if events is not None:
                    item.data = framed(item.data, stamps)
                    item.ack = framed(item.ack, answers)
            elif type(item) is Direct:
                got = seqs[k]
                k += 1
                dm, answer = item.events
                if type(got) is int:
                    item.frame = framed(with_seq(item.frame, got), ((dm, got),))
                    if item.target is None:  # rare: the recipient is offline
                        answer = msgspec.structs.replace(answer, queued=True)
                    queued = with_seq(item.ack, got, queued=item.target is None)
                    item.ack = framed(queued, ((answer, got),))
                else:
                    item.frame = b""  # a resend (sent once) or a conflict (not at all)
                    if type(got) is Duplicate:
                        item.ack = framed(with_seq(item.ack, got.seq), ((answer, got.seq),))
                    else:
                        item.ack = encoded(conflict(got, item.rid))  # type: ignore[arg-type]

    def _refuse(self, items: list[_Batch | Direct | tuple[Member, Callable[[], object]]]) -> None:
        for item in items:
            if type(item) is _Batch:
                assert item.rids is not None
                item.data = b""
                item.n_data = 0
                if item.rooms:
                    item.parts = []  # sent as a batch with rooms: only its acks
                answers = [
                    item.refused.get(k)
                    or encoded(ErrorEvent(code=ErrorCode.UNAVAILABLE, message=_UNAVAILABLE, id=rid))
                    for k, rid in enumerate(item.rids)
                ]
                item.ack = joined(answers)
            elif type(item) is Direct:
                item.frame = b""
                item.target = None
                item.ack = encoded(
                    ErrorEvent(code=ErrorCode.UNAVAILABLE, message=_UNAVAILABLE, id=item.rid)
                )

    def _guarded(self, fn: Callable[..., object], *args: object) -> None:
        """A bug in one round must not take the reader thread that happened to run it
        (nor everyone's queued messages) with it."""
        try:
            fn(*args)
        except Exception:
            self.crashes += 1
            log.exception("fan-out round failed")
