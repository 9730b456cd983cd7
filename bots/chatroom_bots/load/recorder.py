"""The counters of one chat-load worker process: every send and every delivery, checked
(lost, duplicated, out of order) and timed from its intended send time."""

from __future__ import annotations

import operator
import threading
import time
from collections import Counter
from typing import Any

from chatroom import Disconnect
from chatroom.rooms import room_key
from chatroom_bots.load.rooms import RoomPlan, size_label
from chatroom_bots.load.stats import new_histogram, record, unpack_room

_SECOND = operator.itemgetter(3)  # of a delivery in Recorder.deliveries
_ROOM = operator.itemgetter(4)

# A delivery as the pool hands it over: (receiver, message, ``time.monotonic()`` µs at
# arrival, the frame's ``room``: None for a DM or a lobby message on a v1 connection).
Delivery = tuple[int, str, int, str | None]


class Recorder:
    """Counters of one worker; ``_lock`` guards all of them (held for microseconds at a
    time), since deliveries may be recorded from several threads at once.

    Latencies are counted, not put in a histogram, here: ``record_value`` costs ~1.5 µs
    of Python per delivery, and building a histogram from the counts costs ~15 ms per
    second at 70,000 deliveries/s, which on a thread of this process would stall the bot
    loop's every GIL hand-back for that long (the convoy effect) and show up in the very
    latencies measured. The parent process, which only waits, builds the histograms.

    With a :class:`~chatroom_bots.load.rooms.RoomPlan` (``chat-load --rooms``) it also
    counts per room: what was sent to each room and what its members received, and, as
    ``foreign``, every delivery the plan does not allow (to a bot that is not in the
    message's room, or under another room's name), which is never counted as delivered.
    """

    def __init__(self, plan: RoomPlan | None = None) -> None:
        self._lock = threading.Lock()
        # Latency (µs) -> deliveries, since the last tick() or final().
        self.tick_counts: Counter[int] = Counter()
        self.logins = new_histogram()
        self.delivered = self.tick_delivered = 0
        self.sent_pm = self.sent_dm = self.tick_sent = 0
        self.tick_sent_pm = 0
        self.duplicates = self.out_of_order = self.tick_duplicates = 0
        self.errors = self.tick_errors = 0
        self.disconnects = self.tick_disconnects = 0
        self.tick_max_lag = 0.0
        self.replays = 0  # deliveries that came replayed after a cut
        self.resumes = new_histogram()  # cut to caught up (replay_done), µs
        self.late_sends = 0
        self.max_lag = 0.0
        self.closing = False
        # receiver -> sender -> the highest sequence seen
        self._last: dict[int, dict[int, int]] = {}
        # Loss by the second a message was due to be sent (from the step's t0): what was
        # sent, and what arrived once, keyed alike from the message's intended time, so
        # the report shows what never arrived, not what was still in flight.
        self._t0_us = 0
        self.sent_by_second: dict[str, Counter[int]] = {"pm": Counter(), "dm": Counter()}
        self.seen_by_second: Counter[int] = Counter()
        # --rooms: the plan, and what the checks need of it at hand.
        self._plan = plan
        self._members = [frozenset(m) for m in plan.members] if plan else []
        self._recipients = [len(m) - 1 for m in plan.members] if plan else []
        self._class = [size_label(len(m)) for m in plan.members] if plan else []
        self._index = {name: r for r, name in enumerate(plan.names)} if plan else {}
        self._keys = {room_key(name): r for r, name in enumerate(plan.names)} if plan else {}
        self._reset_rooms()

    def _reset_rooms(self) -> None:
        self.sent_by_room: Counter[int] = Counter()
        self.delivered_by_room: Counter[int] = Counter()
        self.duplicates_by_room: Counter[int] = Counter()
        self.foreign = self.tick_foreign = 0
        self.tick_expected = 0  # deliveries this second's room messages are expected to make
        self.expected_by_second: Counter[int] = Counter()  # the same, by intended second
        # Room size class -> latency (µs) -> deliveries, since the last tick() or final().
        self.tick_class_counts: dict[str, Counter[int]] = {}

    def begin(self, t0: float) -> None:
        """A step starts: its first send is due at ``t0`` (``time.monotonic()``)."""
        with self._lock:
            self._t0_us = int(t0 * 1e6)

    def delivery(self, receiver: int, message: str, room: str | None = None) -> None:
        """One message to a sending bot (a ChatClient hook, on its receive thread)."""
        self.deliveries([(receiver, message, int(time.monotonic() * 1e6), room)])

    def _room_of(self, name: str) -> int | None:
        """The plan's number for a room the server named, as spelled (a room made by
        someone else first keeps its creator's case: docs/PROTOCOL.md §Rooms)."""
        r = self._index.get(name)
        if r is None:
            r = self._keys.get(room_key(name))
            if r is not None:
                self._index[name] = r
        return r

    def _allowed(self, receiver: int, to: int | None, room: str | None) -> bool:
        """Whether the plan lets ``receiver`` get a message sent to room ``to`` (None: a
        DM) in a frame that names ``room``."""
        if to is None:
            return room is None
        return room is not None and self._room_of(room) == to and receiver in self._members[to]

    def deliveries(self, batch: list[Delivery]) -> None:
        """Messages received (:data:`Delivery` each), in the order each receiver got them;
        anything that is not a load message is skipped.

        This is the generator's hot path (every delivery of the run passes here), so it
        works per batch, not per message (the pool hands over each round of its loop):
        the payloads are parsed before taking the lock, latencies go into a Counter in
        one C-level update (``tick`` turns them into a histogram once a second, see
        ``stats.record_counts``), and the lock is taken once.
        """
        latencies: list[int] = []
        seqs: list[tuple[int, int, int, int, int | None]] = []
        foreign = 0
        plan = self._plan
        # Read without the lock: begin() sets it before the step's first send, and a
        # straggler of the step before, keyed by the new t0, falls before second 0.
        t0 = self._t0_us
        # A batch is a loop round's reads, mostly the same few messages to many bots:
        # parse each text once (a regex and three int() calls, 0.7 µs; a dict hit, 0.1).
        parsed: dict[str, tuple[int, int, int, int, int | None] | None] = {}
        for receiver, message, arrived_us, room in batch:
            if message in parsed:
                load = parsed[message]
            else:
                got = unpack_room(message)
                load = parsed[message] = (
                    None if got is None else (*got[:3], (got[2] - t0) // 1_000_000, got[3])
                )
            if load is not None:
                sender, seq, intended, second, to = load
                if plan is not None and not self._allowed(receiver, to, room):
                    foreign += 1
                    continue
                latencies.append(arrived_us - intended)
                seqs.append((receiver, sender, seq, second, to))
        if foreign:
            with self._lock:
                self.foreign += foreign
                self.tick_foreign += foreign
        if not latencies:
            return
        if plan is not None:
            self._count_rooms(latencies, seqs)
        with self._lock:
            self.tick_counts.update(latencies)
            self.delivered += len(latencies)
            self.tick_delivered += len(latencies)
            self.seen_by_second.update(map(_SECOND, seqs))
            lasts = self._last
            for receiver, sender, seq, second, to in seqs:
                last = lasts.get(receiver)
                if last is None:
                    last = lasts[receiver] = {}
                prev = last.get(sender, -1)
                if seq > prev:
                    last[sender] = seq
                elif seq == prev:
                    self.duplicates += 1
                    self.tick_duplicates += 1
                    self.seen_by_second[second] -= 1  # arrived before: not seen anew
                    if to is not None:
                        self.duplicates_by_room[to] += 1
                else:
                    self.out_of_order += 1

    def _count_rooms(
        self, latencies: list[int], seqs: list[tuple[int, int, int, int, int | None]]
    ) -> None:
        """--rooms: deliveries per room, and latencies per room size class."""
        by_class: dict[str, list[int]] = {}
        cls = self._class
        for latency, s in zip(latencies, seqs, strict=True):
            to = s[4]
            if to is not None:  # not a DM
                by_class.setdefault(cls[to], []).append(latency)
        with self._lock:
            self.delivered_by_room.update(r for r in map(_ROOM, seqs) if r is not None)
            for label, values in by_class.items():
                counts = self.tick_class_counts.get(label)
                if counts is None:
                    counts = self.tick_class_counts[label] = Counter()
                counts.update(values)

    def login_time(self, micros: int) -> None:
        with self._lock:
            record(self.logins, micros)

    def replayed(self, n: int) -> None:
        with self._lock:
            self.replays += n

    def resumed(self, micros: int) -> None:
        with self._lock:
            record(self.resumes, micros)

    def error(self, _: object = None) -> None:
        with self._lock:
            self.errors += 1
            self.tick_errors += 1

    def disconnected(self, event: Disconnect) -> None:
        with self._lock:
            if not self.closing:
                self.disconnects += 1
                self.tick_disconnects += 1
                self.errors += 1
                self.tick_errors += 1

    def sent(self, room: int | None, lag: float, due: float) -> None:
        """One message sent, ``lag`` seconds after ``due`` (its intended time): a public
        one to ``room`` (0 without --rooms: lobby), or a DM (None)."""
        pm = room is not None
        with self._lock:
            second = (int(due * 1e6) - self._t0_us) // 1_000_000  # as deliveries() keys it
            self.sent_by_second["pm" if pm else "dm"][second] += 1
            if room is not None and self._plan is not None:
                self.sent_by_room[room] += 1
                self.tick_expected += self._recipients[room]
                self.expected_by_second[second] += self._recipients[room]
            if pm:
                self.sent_pm += 1
                self.tick_sent_pm += 1
            else:
                self.sent_dm += 1
            self.tick_sent += 1
            if lag > 0.01:
                self.late_sends += 1
            self.max_lag = max(self.max_lag, lag)
            self.tick_max_lag = max(self.tick_max_lag, lag)

    def tick(self) -> dict[str, Any]:
        """This second's numbers; the latencies as ``{µs: deliveries}`` (the parent turns
        them into histograms: see ``chatroom_bots.load.stats.record_counts``)."""
        with self._lock:
            out = {
                "sent": self.tick_sent,
                "sent_pm": self.tick_sent_pm,
                "delivered": self.tick_delivered,
                "duplicates": self.tick_duplicates,
                "errors": self.tick_errors,
                "disconnects": self.tick_disconnects,
                "max_lag": self.tick_max_lag,
                "latency": self.tick_counts,
            }
            if self._plan is not None:
                out.update(
                    expected_rooms=self.tick_expected,
                    foreign=self.tick_foreign,
                    latency_by_size=self.tick_class_counts,
                )
                self.tick_expected = self.tick_foreign = 0
                self.tick_class_counts = {}
            self.tick_counts = Counter()
            self.tick_sent = self.tick_sent_pm = self.tick_delivered = 0
            self.tick_duplicates = self.tick_errors = self.tick_disconnects = 0
            self.tick_max_lag = 0.0
        return out

    def final(self, reset: bool = False) -> dict[str, Any]:
        """The step's totals; ``latency`` holds what no tick has reported yet."""
        with self._lock:
            out = {
                "sent_pm": self.sent_pm,
                "sent_dm": self.sent_dm,
                "delivered": self.delivered,
                "duplicates": self.duplicates,
                "out_of_order": self.out_of_order,
                "errors": self.errors,
                "disconnects": self.disconnects,
                "late_sends": self.late_sends,
                "max_lag": self.max_lag,
                "latency": self.tick_counts,
                "replayed": self.replays,
                "resumes": self.resumes.encode(),
                "sent_by_second": self.sent_by_second,
                "seen_by_second": self.seen_by_second,
            }
            if self._plan is not None:
                out.update(
                    foreign=self.foreign,
                    sent_by_room=self.sent_by_room,
                    delivered_by_room=self.delivered_by_room,
                    duplicates_by_room=self.duplicates_by_room,
                    expected_by_second=self.expected_by_second,
                    latency_by_size=self.tick_class_counts,
                )
                self.tick_class_counts = {}
            self.tick_counts = Counter()
            if reset:
                self._reset_rooms()
                self.sent_by_second = {"pm": Counter(), "dm": Counter()}
                self.seen_by_second = Counter()
                self.replays = 0
                self.resumes = new_histogram()
                self.delivered = self.sent_pm = self.sent_dm = 0
                self.duplicates = self.out_of_order = self.errors = self.disconnects = 0
                self.late_sends = 0
                self.max_lag = 0.0
        return out
