"""The checker: what a run's history says about the promise "nothing acknowledged is
lost or delivered twice" (docs/RELIABILITY.md states it in full).

It reads only the history (tests/nemesis/history.py): the frames each connection
carried, the hooks the SDK ran, the driver's operations and the faults. Every rule
below comes from docs/PROTOCOL.md, and every anomaly is one the history proves, with
the events that prove it; what the history cannot decide is counted in ``notes``,
never reported as an anomaly.

**Messages.** A message is known by its seq; what a seq names (kind, sender,
recipient, text) is learnt from every place it shows: acks (the sent frame with the
ack's id on that connection), deliveries and history pages. Texts are unique in a run
(``user.op ...``), so a text names one send.

**Chains: what a user should see** (docs/PROTOCOL.md §Resume, §Offline DMs). A user's
connections, in order, form *chains*. A login without ``since`` starts a chain at its
``login_ok`` seq ``L``: the protocol promises it what is stored after ``L`` (live) and
the DMs queued for it (replayed at that login), nothing older. A login with ``since``
continues the chain: the replay brings what is after ``since`` up to its ``L``, live
traffic the rest. A chain ends where the next fresh login begins, or at the end of the
run. Its end ``E`` is the highest seq it received, or, for the chains alive at the end
(the harness heals everything, posts a marker and waits for it), the marker's seq. Then
for every chain of user ``U`` from ``S`` to ``E``:

- every stored public message with ``S < seq <= E`` not sent by ``U`` is received
  exactly once (``U``'s own public messages may come back in a replay, at most once);
- every stored DM to ``U`` with ``S < seq <= E`` is received exactly once;
- a ``replay_truncated`` excuses the seqs it says were not replayed;
- on each connection seqs strictly increase; a replay stays within ``(since, L]`` and
  ends with ``replay_done`` at ``L``.

A DM acked ``queued: true`` must reach its recipient at a later login even if no chain
covers its seq. A DM is never received by anyone but its sender and recipient.

**Sends** (§Message log, §Idempotent sends). All the attempts of one send (the first
frame and every resend with its cid) store it at most once, under one seq, and every
ack of it names that seq. A message stored although every attempt sent before it was
provably stored had been refused is an anomaly: the proof is a seq at or above it seen
anywhere, since seqs are assigned in commit order (one writer for SQLite, the advisory
lock for PostgreSQL). An acked message is in the final log; the final log has no gap.

**The SDK** (docs/SDK.md, "Nothing lost"). The hooks of a chain get every required
message the wire brought, once each, in increasing seq, and a client never passes to
its hooks a message it sent itself (issue 33).

**Rooms** (docs/PROTOCOL.md §Rooms) are one more dimension: a message's identity
carries its room (None: ``lobby``, where everyone is), and "should see" asks
:class:`Membership`, which the history fills in: the seqs of joins and parts learnt
from the replies to ``join`` (``room_info``'s seq) and ``part`` (the ack's seq) and from
every ``room_event`` received. A join or part that got no reply makes that membership
unknown from the highest seq seen before it was sent until the next known join or part:
no rule asks anything of a seq there. Then a room message at ``seq`` is required of a
chain whose user was a member at ``seq`` (its join below, no part between); if the chain
was to get it in a replay (``since < seq <= L``) the user must still have been in that
same membership at the login (a replay covers the rooms one is in, from the join on). A
room message received by, or listed in a history page for, a user provably not its
member is ``room_leak``; a room page must list every message of the room after the
reader's join in its range. Room events are checked like messages on each connection
(seq order, no duplicate) and count as stored seqs for the final log (whose scan reads
only messages); a seq missing from it that a join or part without a reply may explain
is counted, not reported.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.nemesis.history import (
    ConnClose,
    ConnOpen,
    Event,
    Fault,
    FrameIn,
    FrameOut,
    Hook,
    Meta,
    Op,
)

__all__ = ["KINDS", "Anomaly", "CheckResult", "Membership", "Msg", "check", "ranges"]

# Every anomaly the checker reports: kind -> (who is at fault, what it means).
KINDS: dict[str, tuple[str, str]] = {
    "lost": ("server", "a stored message a chain should have received never reached it"),
    "dm_lost": ("server", "a DM acked as queued never reached its recipient"),
    "duplicate": ("server", "a message reached one chain twice, the second time unasked"),
    "dm_redelivered": (
        "server",
        "a DM reached its recipient again at a later fresh login "
        "after a session that provably received it ended cleanly",
    ),
    "out_of_order": ("server", "seqs did not increase on one connection"),
    "replay_range": (
        "server",
        "a replay outside (since, login_ok seq], or replay_done not at login_ok's seq",
    ),
    "seq_reused": ("server", "one seq named two different messages"),
    "stored_twice": ("server", "one send (one cid) was stored under two seqs"),
    "ack_mismatch": ("server", "an ack named a seq or recipient that is not its message's"),
    "refused_stored": (
        "server",
        "a message was stored although every attempt before the proof of its storage was refused",
    ),
    "acked_lost": ("server", "an acked message is missing from the final log"),
    "delivered_unstored": ("server", "a delivered message is missing from the final log"),
    "seq_gap": ("server", "the final log skips a seq"),
    "phantom": ("server", "a message nobody sent was delivered or listed"),
    "misdelivered": ("server", "a DM reached someone neither its sender nor recipient"),
    "history_leak": ("server", "a history page listed a message its reader may not see"),
    "room_leak": (
        "server",
        "a room's message reached, or was listed for, a user provably not its member",
    ),
    "history_gap": ("server", "a history page left out a stored message in its range"),
    "history_range": ("server", "a history page broke its own cursor or order"),
    "spurious_takeover": (
        "server",
        "a live session was ended as replaced, with no other login of that user",
    ),
    "stale_takeover": (
        "server",
        "a live session was ended as replaced by a login its client had already given up on",
    ),
    "spurious_cid_conflict": (
        "server",
        "a resend of the same message was refused as a cid conflict",
    ),
    "login_refused": ("server", "the right password was refused"),
    "stuck": ("server", "a client did not catch up after every fault was healed"),
    "echo_twice": (
        "server",
        "a request was answered twice on one connection, or an IRC client's own message "
        "was echoed twice (echo-message), or to a session that did not send it",
    ),
    "echo_lost": (
        "server",
        "an IRC guest's line was stored and its session went on, but its echo never came",
    ),
    "request_twice": ("sdk", "a client wrote one request (the same id) twice on one connection"),
    "hostile_answer": (
        "server",
        "a hostile or oversized frame was not refused with a clear error of a code its "
        "case allows (accepted, another code, or a too_large that left the connection open)",
    ),
    "pipeline_broken": (
        "server",
        "a login sent with more requests in its packet (an early login, then parked) had an "
        "answer out of order, twice, or never while its connection stayed open",
    ),
    "hook_lost": ("sdk", "the wire brought a message its chain needed; the hooks never got it"),
    "hook_duplicate": ("sdk", "the hooks got one message twice in a chain"),
    "hook_out_of_order": ("sdk", "one client's hooks got seqs out of order"),
    "own_echo": ("sdk", "a client passed a message it sent itself to its hooks as if it came in"),
    "relogin_stuck": (
        "sdk",
        "after its login was refused, a client kept the connection and sent requests on it, "
        "logged out",
    ),
    "since_regressed": ("sdk", "a resume asked again for a message the chain had already received"),
}


@dataclass(frozen=True)
class Msg:
    """What a seq names. Names compare lower-cased (docs/PROTOCOL.md §Names)."""

    kind: str  # "pm" or "dm"
    sender: str
    to: str | None
    text: str
    room: str | None = None

    @staticmethod
    def of(kind: str, sender: object, to: object, text: object, room: object = None) -> Msg:
        return Msg(
            kind,
            str(sender).lower(),
            str(to).lower() if to is not None and kind == "dm" else None,
            str(text),
            _room(room),
        )

    def short(self) -> str:
        text = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        where = f"{self.sender} -> {self.to}" if self.kind == "dm" else self.sender
        return f"{self.kind} {where}: {text!r}"


@dataclass
class Anomaly:
    kind: str
    text: str
    users: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    conns: list[int] = field(default_factory=list)  # the connections it concerns

    @property
    def level(self) -> str:
        return KINDS[self.kind][0]

    def describe(self) -> str:
        return f"[{self.level}] {self.kind}: {self.text}"


@dataclass
class CheckResult:
    anomalies: list[Anomaly]
    stats: dict[str, int]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.anomalies


# Requests whose reply (room_info's or the ack's seq) is a stored room event: joins and
# parts, and the moderation commands (docs/PROTOCOL.md §Moderation, §room_event).
ROOM_COMMANDS = frozenset({"join", "part", "kick", "ban", "unban", "mute", "unmute"})


def _room(room: object) -> str | None:
    """A room's identity: lower-cased, None for ``lobby`` (or no room at all)."""
    if room is None:
        return None
    key = str(room).lower()
    return None if key == "lobby" else key


class Membership:
    """Who is in which room when (see the module docstring): per (user, room), the
    changes in seq order, each a key (a join's or part's seq; ``b + 0.5`` for an
    unanswered one sent when ``b`` was the highest seq seen) and the state after it
    (True in, False out, None unknown). Everyone is in ``lobby`` always."""

    def __init__(self) -> None:
        self._changes: dict[tuple[str, str], list[tuple[float, bool | None]]] = defaultdict(list)
        self._keys: dict[tuple[str, str], list[float]] = {}

    def add(self, user: str, room: str, key: float, state: bool | None) -> None:
        self._changes[(user.lower(), room.lower())].append((key, state))
        self._keys.pop((user.lower(), room.lower()), None)

    def _index(
        self, user: str, room: str, seq: float
    ) -> tuple[int, list[tuple[float, bool | None]]]:
        k = (user.lower(), room.lower())
        changes = self._changes.get(k, [])
        keys = self._keys.get(k)
        if keys is None:
            changes.sort(key=lambda c: c[0])
            keys = self._keys[k] = [c[0] for c in changes]
        return bisect.bisect_left(keys, seq), changes

    def state(self, user: str, room: str | None, seq: float) -> bool | None:
        """Whether ``user`` was a member of ``room`` at ``seq`` (None: unknown)."""
        if room is None:
            return True
        i, changes = self._index(user, room, seq)
        return changes[i - 1][1] if i else False

    def joined(self, user: str, room: str, seq: float) -> int | None:
        """The seq of the join that made ``user`` a member at ``seq``, if known."""
        i, changes = self._index(user, room, seq)
        if not i or changes[i - 1][1] is not True:
            return None
        return int(changes[i - 1][0])

    def same(self, user: str, room: str | None, a: float, b: float) -> bool:
        """No change of ``user``'s membership in ``room`` between seqs ``a`` and ``b``."""
        if room is None:
            return True
        return self._index(user, room, a)[0] == self._index(user, room, b)[0]

    def member(self, user: str, room: str | None, seq: int) -> bool:
        return self.state(user, room, seq) is True


def ranges(seqs: Iterable[int]) -> str:
    """``1-3, 7, 9-10``: a list of seqs as ranges."""
    out: list[str] = []
    items = sorted(set(seqs))
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ", ".join(out)


# ---------------------------------------------------------------------- the index


@dataclass
class _Conn:
    """One connection: what went out and came in, and the login on it."""

    conn: int
    user: str
    client: int
    opened: float
    frames: list[FrameIn | FrameOut] = field(default_factory=list)
    closed: float | None = None
    since: int | None = None
    login_sent: bool = False
    login_ok: dict[str, Any] | None = None
    login_t: float = 0.0

    def requests(self) -> dict[object, FrameOut]:
        return {f.f["id"]: f for f in self.frames if isinstance(f, FrameOut) and "id" in f.f}

    def replies(self) -> dict[object, FrameIn]:
        out: dict[object, FrameIn] = {}
        for f in self.frames:
            if isinstance(f, FrameIn) and "id" in f.f:
                out.setdefault(f.f["id"], f)
        return out


@dataclass
class _Chain:
    user: str
    start: int
    conns: list[_Conn] = field(default_factory=list)
    end: int = 0
    # seq -> every receipt (connection, frame)
    got: dict[int, list[tuple[_Conn, FrameIn]]] = field(default_factory=lambda: defaultdict(list))
    excused: list[tuple[int, int]] = field(default_factory=list)  # inclusive seq ranges
    final: bool = False  # alive at the end of the run

    def label(self) -> str:
        return f"{self.user}'s chain from seq {self.start} (connections {self.conn_ids()})"

    def conn_ids(self) -> str:
        return ", ".join(str(c.conn) for c in self.conns)


class _Checker:
    def __init__(self, events: Sequence[Event], membership: Membership) -> None:
        self.events = list(events)
        self.membership = membership
        self.anomalies: list[Anomaly] = []
        self.notes: list[str] = []
        self.stats: dict[str, int] = defaultdict(int)
        self.meta: Meta | None = None
        self.conns: dict[int, _Conn] = {}
        self.ops: list[Op] = []
        self.hooks: list[Hook] = []
        self.faults: list[Fault] = []
        for ev in self.events:
            if isinstance(ev, Meta):
                self.meta = ev
            elif isinstance(ev, ConnOpen):
                self.conns[ev.conn] = _Conn(ev.conn, ev.user.lower(), ev.client, ev.t)
            elif isinstance(ev, ConnClose):
                if ev.conn in self.conns:
                    self.conns[ev.conn].closed = ev.t
            elif isinstance(ev, FrameIn | FrameOut):
                c = self.conns.get(ev.conn)
                if c is None:  # a hand-made history may skip the open
                    c = self.conns[ev.conn] = _Conn(ev.conn, ev.user.lower(), ev.client, ev.t)
                c.frames.append(ev)
            elif isinstance(ev, Op):
                self.ops.append(ev)
            elif isinstance(ev, Hook):
                self.hooks.append(ev)
            elif isinstance(ev, Fault):
                self.faults.append(ev)
        # seq -> what it names, and the first evidence of it
        self.by_seq: dict[int, Msg] = {}
        self.evidence: dict[int, list[Event]] = defaultdict(list)
        self.seqs_of: dict[Msg, set[int]] = defaultdict(set)
        self.sent: dict[tuple[str, str], list[tuple[_Conn, FrameOut]]] = defaultdict(list)
        self.seen_at: list[tuple[float, int]] = []  # (time, seq) of every sighting
        self.final_log: set[int] | None = None
        self.marker: int | None = None
        self.sorted_seqs: list[int] = []
        # What a history page may list: None -> lobby's seqs, a pair of names -> their
        # DMs, ("#", room) -> that room's messages
        self.listing: dict[tuple[str, str] | None, list[int]] = defaultdict(list)
        # seq -> a room event's (room, event, by), and the frame first showing it
        self.room_events: dict[int, tuple[str, str, str]] = {}
        self.room_event_frames: dict[int, FrameIn] = {}
        # every join or part that got no reply: (user, room, the highest seq seen before)
        self.unanswered: list[tuple[str, str, int, FrameOut]] = []
        self.unknown_room_receipts: set[tuple[int, int]] = set()  # (id(chain), seq)
        self._seen_t: list[float] = []  # seen_at by time, with the highest seq so far
        self._seen_max: list[int] = []

    def add(
        self,
        kind: str,
        text: str,
        users: Iterable[str] = (),
        seqs: Iterable[int] = (),
        events: Iterable[Event] = (),
        conns: Iterable[int] = (),
    ) -> None:
        evs = _dedupe(events)
        on = set(conns) | {e.conn for e in evs if isinstance(e, FrameIn | FrameOut)}
        self.anomalies.append(
            Anomaly(kind, text, sorted(set(users)), sorted(set(seqs)), evs[:24], sorted(on))
        )

    # ------------------------------------------------------------------ identity

    def learn(self, seq: int, msg: Msg, source: str, ev: Event) -> None:
        self.seen_at.append((ev.t, seq))
        known = self.by_seq.get(seq)
        if known is None:
            self.by_seq[seq] = msg
            self.seqs_of[msg].add(seq)
        elif known != msg:
            first = self.evidence[seq][0] if self.evidence[seq] else ev
            self.add(
                "ack_mismatch" if source == "ack" else "seq_reused",
                f"seq {seq} names {known.short()} and also, by {source}, {msg.short()}",
                users=[known.sender, msg.sender],
                seqs=[seq],
                events=[first, ev],
            )
            return
        if len(self.evidence[seq]) < 4:
            self.evidence[seq].append(ev)

    def index_messages(self) -> None:
        for c in self.conns.values():
            requests = c.requests()
            for f in c.frames:
                if isinstance(f, FrameOut):
                    cmd = f.f.get("command")
                    if cmd in ("pm", "dm") and isinstance(f.f.get("message"), str):
                        self.sent[(c.user, f.f["message"])].append((c, f))
                        self.stats["frames sent (pm/dm)"] += 1
                    elif cmd == "login" and "password" in f.f and not c.login_sent:
                        c.login_sent = True
                        since = f.f.get("since")
                        c.since = since if isinstance(since, int) else None
                    continue
                kind = f.f.get("type")
                seq = f.f.get("seq")
                if kind in ("broadcast", "dm") and isinstance(seq, int):
                    msg = Msg.of(
                        "pm" if kind == "broadcast" else "dm",
                        f.f.get("from"),
                        f.f.get("to"),
                        f.f.get("message"),
                        f.f.get("room"),
                    )
                    self.learn(seq, msg, "delivery", f)
                    self.stats["deliveries (wire)"] += 1
                elif kind == "room_event" and isinstance(seq, int):
                    self.learn_room_event(seq, f)
                elif kind == "room_info" and isinstance(seq, int):
                    self.seen_at.append((f.t, seq))
                elif kind == "ack" and isinstance(seq, int):
                    req = requests.get(f.f.get("id"))
                    if req is not None and req.f.get("command") in ("pm", "dm"):
                        to = f.f.get("to", req.f.get("to"))
                        msg = Msg.of(
                            str(req.f["command"]),
                            c.user,
                            to,
                            req.f.get("message"),
                            req.f.get("room"),
                        )
                        self.learn(seq, msg, "ack", f)
                    else:
                        self.seen_at.append((f.t, seq))
                elif kind == "history":
                    for m in f.f.get("messages") or ():
                        if isinstance(m, dict) and isinstance(m.get("seq"), int):
                            msg = Msg.of(
                                str(m.get("kind")),
                                m.get("from"),
                                m.get("to"),
                                m.get("message"),
                                m.get("room"),
                            )
                            self.learn(m["seq"], msg, "history", f)
                elif kind == "login_ok" and c.login_ok is None:
                    c.login_ok = f.f
                    c.login_t = f.t
                    if isinstance(seq, int):
                        self.seen_at.append((f.t, seq))
        self.sorted_seqs = sorted(self.by_seq)
        for seq in self.sorted_seqs:
            msg = self.by_seq[seq]
            key: tuple[str, str] | None = None
            if msg.kind == "dm" and msg.to:
                key = _pair(msg.sender, msg.to)
            elif msg.room is not None:
                key = ("#", msg.room)
            self.listing[key].append(seq)
        for seq in sorted(set(self.room_events) & set(self.by_seq)):
            self.add(
                "seq_reused",
                f"seq {seq} names {self.by_seq[seq].short()} and also a room event "
                f"{self.room_events[seq]}",
                users=[self.by_seq[seq].sender],
                seqs=[seq],
                events=[*self.evidence[seq][:1], self.room_event_frames[seq]],
            )

        self.stats["messages stored (seen)"] = len(self.by_seq)
        self.stats["connections"] = len(self.conns)
        for msg, seqs in self.seqs_of.items():
            if len(seqs) > 1:
                sent = self.sent.get((msg.sender, msg.text), [])
                self.add(
                    "stored_twice",
                    f"{msg.short()} is stored under seqs {ranges(seqs)}",
                    users=[msg.sender],
                    seqs=seqs,
                    events=[f for _, f in sent] + [e for s in seqs for e in self.evidence[s]],
                )
        known = {(u, t) for (u, t) in self.sent}
        for seq, msg in sorted(self.by_seq.items()):
            if (msg.sender, msg.text) not in known:
                self.add(
                    "phantom",
                    f"seq {seq} is {msg.short()}, which {msg.sender} never sent",
                    users=[msg.sender],
                    seqs=[seq],
                    events=self.evidence[seq],
                )

    def learn_room_event(self, seq: int, f: FrameIn) -> None:
        self.seen_at.append((f.t, seq))
        what = (
            str(f.f.get("room", "")).lower(),
            str(f.f.get("event", "")),
            str(f.f.get("by", "")).lower(),
        )
        known = self.room_events.get(seq)
        if known is None:
            self.room_events[seq] = what
            self.room_event_frames[seq] = f
        elif known != what:
            self.add(
                "seq_reused",
                f"seq {seq} names the room event {known} and also {what}",
                users=[known[2], what[2]],
                seqs=[seq],
                events=[self.room_event_frames[seq], f],
            )

    def seen_before(self, t: float) -> int:
        """The highest seq anyone had seen by time ``t`` (0: none)."""
        i = bisect.bisect_right(self._seen_t, t)
        return self._seen_max[i - 1] if i else 0

    def learn_membership(self) -> None:
        """Fill :class:`Membership` in from the history (see the module docstring)."""
        running = 0
        for t, seq in sorted(self.seen_at):
            running = max(running, seq)
            self._seen_t.append(t)
            self._seen_max.append(running)
        m = self.membership
        for seq, (room, event, by) in self.room_events.items():
            if event == "join":
                m.add(by, room, seq, True)
            elif event == "part":
                m.add(by, room, seq, False)
            elif event in ("kick", "ban"):
                named = self.room_event_frames[seq].f.get("user")
                if isinstance(named, str):
                    m.add(named, room, seq, False)
        for c in self.conns.values():
            replies = c.replies()
            for f in c.frames:
                command = f.f.get("command") if isinstance(f, FrameOut) else None
                if not isinstance(f, FrameOut) or command not in ROOM_COMMANDS:
                    continue
                room = str(f.f.get("room", "")).lower()
                # Whose membership it changes: the sender's own (join, part), the named
                # user's (kick, ban: §Moderation, "no longer a member from that seq on"),
                # or nobody's (unban, mute, unmute: stored events all the same).
                named = f.f.get("user")
                whom = c.user if command in ("join", "part") else None
                if command in ("kick", "ban") and isinstance(named, str):
                    whom = named.lower()
                reply = replies.get(f.f.get("id")) if "id" in f.f else None
                got = reply.f.get("seq") if reply is not None else None
                if reply is None:
                    b = self.seen_before(f.t)
                    self.unanswered.append((c.user, room, b, f))
                    if whom is not None:
                        m.add(whom, room, b + 0.5, None)
                elif isinstance(got, int) and reply.f.get("type") in ("room_info", "ack"):
                    if whom is not None:
                        m.add(whom, room, got, command == "join")
                    if got not in self.room_events:
                        self.room_events[got] = (room, str(command), c.user)
                        self.room_event_frames[got] = reply
        self.stats["joins and parts unanswered"] = len(self.unanswered)
        self.stats["room events"] = len(self.room_events)

    def proof_times(self) -> dict[int, float]:
        """seq -> the earliest time some seq at or above it was seen: by then it was
        stored (seqs are assigned in commit order)."""
        best: dict[int, float] = {}
        for t, seq in self.seen_at:
            if t < best.get(seq, float("inf")):
                best[seq] = t
        out: dict[int, float] = {}
        running = float("inf")
        for seq in sorted(best, reverse=True):
            running = min(running, best[seq])
            out[seq] = running
        return out

    # ------------------------------------------------------------------ sends

    def check_sends(self) -> None:
        proof = self.proof_times()
        proof_seqs = sorted(proof)
        cid_texts: dict[tuple[str, str], set[str]] = defaultdict(set)
        for (user, text), frames in self.sent.items():
            for _, f in frames:
                cid = f.f.get("cid")
                if isinstance(cid, str):
                    cid_texts[(user, cid)].add(text)
        for (user, text), frames in self.sent.items():
            kind = str(frames[0][1].f.get("command"))
            to = frames[0][1].f.get("to")
            msg = Msg.of(kind, user, to, text, frames[0][1].f.get("room"))
            stored = self.seqs_of.get(msg, set())
            outcomes: list[tuple[FrameOut, FrameIn | None]] = []
            for c, f in frames:
                reply = c.replies().get(f.f.get("id")) if "id" in f.f else None
                outcomes.append((f, reply))
            acks = [r for _, r in outcomes if r is not None and r.f.get("type") == "ack"]
            for r in acks:
                seq = r.f.get("seq")
                acked_to = r.f.get("to")
                if (
                    kind == "dm"
                    and isinstance(to, str)
                    and isinstance(acked_to, str)
                    and acked_to.lower() != to.lower()
                ):
                    self.add(
                        "ack_mismatch",
                        f"{msg.short()} was acked as a DM to {acked_to}",
                        users=[user],
                        seqs=[seq] if isinstance(seq, int) else [],
                        events=[f for _, f in frames] + [r],
                    )
                if isinstance(seq, int) and stored and seq not in stored:
                    self.add(
                        "ack_mismatch",
                        f"{msg.short()} (stored as {ranges(stored)}) was acked with seq {seq}",
                        users=[user],
                        seqs=[seq, *stored],
                        events=[f for _, f in frames] + [r],
                    )
            for out, reply in outcomes:
                if reply is not None and reply.f.get("code") == "cid_conflict":
                    cid = out.f.get("cid")
                    if isinstance(cid, str) and cid_texts[(user, cid)] == {text}:
                        self.add(
                            "spurious_cid_conflict",
                            f"{user}'s resend of {msg.short()} with its own cid {cid!r} was "
                            "refused as a cid conflict",
                            users=[user],
                            events=[out, reply],
                        )
            if not stored:
                self.stats["sends never stored"] += 1
                continue
            self.stats["sends stored"] += 1
            seq = min(stored)
            i = bisect.bisect_left(proof_seqs, seq)
            t_proof = proof[proof_seqs[i]] if i < len(proof_seqs) else float("inf")
            before = [(f, r) for f, r in outcomes if f.t < t_proof]
            if before and all(r is not None and r.f.get("type") == "error" for _, r in before):
                self.add(
                    "refused_stored",
                    f"{msg.short()} is stored as seq {seq}, but every attempt before that "
                    f"was known ({len(before)}) was refused: "
                    + ", ".join(str(r.f.get("code")) for _, r in before if r is not None),
                    users=[user],
                    seqs=[seq],
                    events=[e for pair in before for e in pair if e is not None]
                    + self.evidence[seq][:2],
                )

    # ------------------------------------------------------------------ chains

    def build_chains(self) -> dict[str, list[_Chain]]:
        chains: dict[str, list[_Chain]] = defaultdict(list)
        by_user: dict[str, list[_Conn]] = defaultdict(list)
        for c in self.conns.values():
            by_user[c.user].append(c)
        for user, conns in by_user.items():
            conns.sort(key=lambda c: (c.opened, c.conn))
            current: _Chain | None = None
            for c in conns:
                ok = c.login_ok
                if ok is None or not isinstance(ok.get("seq"), int):
                    continue
                if c.since is None or current is None:
                    current = _Chain(user, c.since if c.since is not None else ok["seq"])
                    if c.since is None:
                        current.start = ok["seq"]
                    chains[user].append(current)
                current.conns.append(c)
        return chains

    def check_connection(self, chain: _Chain, c: _Conn) -> None:
        """Order, replay range and replay_done on one connection; receipts into the chain."""
        ok = c.login_ok
        assert ok is not None
        top = ok["seq"]
        last: int | None = None
        last_frame: FrameIn | None = None
        replaying = bool(ok.get("replay"))
        replayed = 0  # messages the replay brought
        seen_here: set[int] = set()
        backwards: list[FrameIn] = []  # the highest seq, then each frame below it
        for f in c.frames:
            if not isinstance(f, FrameIn) or f.t < c.login_t:
                continue
            kind = f.f.get("type")
            if kind == "replay_truncated":
                oldest = f.f.get("oldest_seq")
                if isinstance(oldest, int):
                    low = c.since + 1 if c.since is not None else chain.start + 1
                    if oldest - 1 >= low:
                        chain.excused.append((low, oldest - 1))
                continue
            if kind == "replay_done":
                if f.f.get("seq") != top:
                    self.add(
                        "replay_range",
                        f"connection {c.conn} of {c.user}: replay_done at seq {f.f.get('seq')}, "
                        f"login_ok said {top}",
                        users=[c.user],
                        events=[f],
                    )
                if replaying and f.f.get("count") != replayed:
                    self.add(
                        "replay_range",
                        f"connection {c.conn} of {c.user}: replay_done counts "
                        f"{f.f.get('count')} messages, the replay brought {replayed}",
                        users=[c.user],
                        events=[f],
                    )
                replaying = False
                continue
            if kind == "bye" and f.f.get("reason") == "session_replaced":
                self.takeover(c, f)
                continue
            seq = f.f.get("seq")
            if kind not in ("broadcast", "dm", "room_event") or not isinstance(seq, int):
                continue
            frm, to = str(f.f.get("from", "")).lower(), str(f.f.get("to", "")).lower()
            room = _room(f.f.get("room")) if kind == "broadcast" else None
            if room is not None and self.membership.state(c.user, room, seq) is False:
                self.add(
                    "room_leak",
                    f"{c.user} received seq {seq}, {frm}'s message to room {room}, without "
                    "being its member at that seq"
                    + (" (in a replay)" if f.f.get("replay") else ""),
                    users=[c.user, frm],
                    seqs=[seq],
                    events=[*self._login_of(c), f],
                )
            if kind == "dm" and c.user not in (frm, to):
                self.add(
                    "misdelivered",
                    f"{c.user} received seq {seq}, a DM from {frm} to {to}",
                    users=[c.user, frm, to],
                    seqs=[seq],
                    events=[f],
                )
            if f.f.get("replay") and c.since is None and seq > top:
                self.add(
                    "replay_range",
                    f"connection {c.conn} of {c.user} logged in without since at seq {top}; "
                    f"its replay brought seq {seq}, beyond the replay's own end (login_ok's "
                    "seq): live traffic from its seq on brings it again",
                    users=[c.user],
                    seqs=[seq],
                    events=[*self._login_of(c), f],
                )
            if f.f.get("replay") and c.since is not None and not c.since < seq <= top:
                self.add(
                    "replay_range",
                    f"connection {c.conn} of {c.user} resumed with since {c.since}; its replay "
                    f"brought seq {seq}, outside ({c.since}, {top}]",
                    users=[c.user],
                    seqs=[seq],
                    events=[f],
                )
            if seq in seen_here:
                self.add(
                    "duplicate",
                    f"{c.user} received seq {seq} twice on connection {c.conn}",
                    users=[c.user],
                    seqs=[seq],
                    events=[e for _, e in chain.got[seq]] + [f],
                )
            elif last is not None and seq < last:
                if last_frame is not None and not backwards:
                    backwards.append(last_frame)
                backwards.append(f)
            seen_here.add(seq)
            if replaying and f.f.get("replay"):
                replayed += 1  # room events are counted in replay_done's count too
            if last is None or seq > last:
                last, last_frame = seq, f
            chain.got[seq].append((c, f))
        self.stats["connections logged in"] += 1
        if backwards:
            top_seq = backwards[0].f["seq"]
            below = [int(b.f["seq"]) for b in backwards[1:]]
            self.add(
                "out_of_order",
                f"{c.user} received seqs {ranges(below)} after seq {top_seq} on connection "
                f"{c.conn} (login_ok seq {top}"
                + (f", since {c.since})" if c.since is not None else ", no since)"),
                users=[c.user],
                seqs=[top_seq, *below],
                events=[*self._login_of(c), *backwards[:6]],
            )

    def takeover(self, c: _Conn, bye: FrameIn) -> None:
        """A live session ended as replaced. The harness logs a user in on one
        connection at a time, but a login it gave up on (no reply before the client
        closed that connection) may still reach the server later and take over."""
        stale = []
        for other in self.conns.values():
            if other.user != c.user or other is c or other.opened > bye.t:
                continue
            replies = other.replies()
            for f in other.frames:
                if (
                    isinstance(f, FrameOut)
                    and f.f.get("command") == "login"
                    and "password" in f.f
                    and f.f.get("id") not in replies
                ):
                    stale.append(f)
        if stale:
            self.add(
                "stale_takeover",
                f"connection {c.conn} of {c.user} (logged in at {c.login_t:.1f} s) was ended "
                f"as replaced at {bye.t:.1f} s by a login the client had given up on "
                f"(connection {stale[-1].conn}, sent at {stale[-1].t:.1f} s, never answered "
                "before the client closed it); the SDK does not reconnect after it",
                users=[c.user],
                events=[stale[-1], *self._login_of(c), bye],
            )
            return
        self.add(
            "spurious_takeover",
            f"connection {c.conn} of {c.user} (logged in at {c.login_t:.1f} s) was ended as "
            f"replaced at {bye.t:.1f} s, with no other login of that user",
            users=[c.user],
            events=[*self._login_of(c), bye],
        )

    def check_chains(self, chains: dict[str, list[_Chain]]) -> None:
        final_users = {u for u in self._drained_users()}
        for user, user_chains in chains.items():
            for k, chain in enumerate(user_chains):
                for c in chain.conns:
                    self.check_connection(chain, c)
                received = max(chain.got, default=chain.start)
                chain.final = k == len(user_chains) - 1 and user in final_users
                marker = self.marker if chain.final and self.marker is not None else 0
                chain.end = max(received, marker)
                self.check_chain_duplicates(chain)
                self.check_chain_coverage(chain)
        self.check_dms(chains)

    def check_chain_duplicates(self, chain: _Chain) -> None:
        for seq, receipts in sorted(chain.got.items()):
            if len(receipts) < 2:
                continue
            first_conn, first = receipts[0]
            for c, f in receipts[1:]:
                if c is first_conn:
                    continue  # reported by check_connection
                msg = self.by_seq.get(seq)
                if c.since is not None and c.since >= seq:
                    top = (c.login_ok or {}).get("seq")
                    behind = (
                        f"; that node's login_ok seq {top} was behind the since, and it sent "
                        "what lay between live"
                        if isinstance(top, int) and top < c.since
                        else ""
                    )
                    self.add(
                        "duplicate",
                        f"{chain.user} received seq {seq} on connection {first_conn.conn} and "
                        f"again on connection {c.conn}, which resumed with since {c.since}"
                        + behind,
                        users=[chain.user],
                        seqs=[seq],
                        events=[first, f, *self._logins(chain)[-4:]],
                    )
                elif msg is not None and msg.sender != chain.user:
                    self.add(
                        "since_regressed",
                        f"{chain.user} received seq {seq} on connection {first_conn.conn}, "
                        f"then resumed with since {c.since} on connection {c.conn} and got "
                        "it again",
                        users=[chain.user],
                        seqs=[seq],
                        events=[first, f],
                    )

    def required(self, chain: _Chain) -> set[int]:
        """The seqs ``chain`` must receive (see the module docstring)."""
        need: set[int] = set()
        seqs = self.sorted_seqs
        # The replays of the chain: (since, login_ok seq) of each resuming connection.
        replays = [
            (c.since, int(c.login_ok["seq"]))
            for c in chain.conns
            if c.since is not None and c.login_ok is not None
        ]
        for i in range(
            bisect.bisect_right(seqs, chain.start), bisect.bisect_right(seqs, chain.end)
        ):
            seq = seqs[i]
            msg = self.by_seq[seq]
            if any(lo <= seq <= hi for lo, hi in chain.excused):
                continue
            if msg.kind == "pm":
                if msg.sender == chain.user:
                    continue
                if msg.room is not None and not self.room_required(chain, msg.room, seq, replays):
                    continue
                need.add(seq)
            elif msg.to == chain.user:
                need.add(seq)  # a DM to oneself included: its recipient is the sender
        return need

    def room_required(
        self, chain: _Chain, room: str, seq: int, replays: list[tuple[int, int]]
    ) -> bool:
        """Whether ``chain`` must get ``room``'s message ``seq``: its user was a member at
        ``seq`` and, if a replay was to bring it, still in that membership at the login."""
        state = self.membership.state(chain.user, room, seq)
        if state is None:
            self.unknown_room_receipts.add((id(chain), seq))
            return False
        if not state:
            return False
        for since, top in replays:
            if since < seq <= top:
                return self.membership.same(chain.user, room, seq, top + 1)
        return True

    def check_chain_coverage(self, chain: _Chain) -> None:
        need = self.required(chain)
        missing = sorted(need - set(chain.got))
        self.stats["required receipts"] += len(need)
        if not missing:
            return
        why = ""
        if chain.final and self.marker is not None and max(chain.got, default=0) < self.marker:
            why = f"; it never reached the final marker (seq {self.marker})"
        events: list[Event] = []
        for seq in missing[:3]:
            msg = self.by_seq[seq]
            events += [f for _, f in self.sent.get((msg.sender, msg.text), [])][:2]
            events += self.evidence[seq][:1]
        events += self._logins(chain)
        self.add(
            "lost",
            conns=[c.conn for c in chain.conns],
            text=f"{chain.label()} to seq {chain.end} never received {len(missing)} of "
            f"{len(need)} messages it should have: seqs {ranges(missing)}{why}",
            users=[chain.user],
            seqs=missing,
            events=events + self._faults_around(missing),
        )

    @staticmethod
    def _login_of(c: _Conn) -> list[Event]:
        found: list[Event] = [
            f
            for f in c.frames
            if (isinstance(f, FrameOut) and f.f.get("command") == "login")
            or (isinstance(f, FrameIn) and f.f.get("type") in ("login_ok", "replay_done"))
        ]
        return found[:3]

    def _logins(self, chain: _Chain) -> list[Event]:
        out: list[Event] = []
        for c in chain.conns:
            out += [
                f for f in c.frames if isinstance(f, FrameOut) and f.f.get("command") == "login"
            ]
            out += [
                f
                for f in c.frames
                if isinstance(f, FrameIn)
                and f.f.get("type") in ("login_ok", "replay_done", "replay_truncated")
            ]
        return out

    def check_dms(self, chains: dict[str, list[_Chain]]) -> None:
        queued: dict[int, FrameIn] = {}
        for c in self.conns.values():
            for f in c.frames:
                if isinstance(f, FrameIn) and f.f.get("type") == "ack" and f.f.get("queued"):
                    seq = f.f.get("seq")
                    if isinstance(seq, int):
                        queued[seq] = f
        for seq, msg in sorted(self.by_seq.items()):
            if msg.kind != "dm" or msg.to is None:
                continue
            mine = chains.get(msg.to, [])
            holders = [ch for ch in mine if seq in ch.got]
            covered = [ch for ch in mine if ch.start < seq <= ch.end]
            if not holders and not covered:
                if seq in queued:
                    self.add(
                        "dm_lost",
                        f"seq {seq}, {msg.short()}, was acked as queued for {msg.to}, who "
                        f"logged in {len([ch for ch in mine if ch.start >= seq])} time(s) "
                        "afterwards without it",
                        users=[msg.to, msg.sender],
                        seqs=[seq],
                        events=[queued[seq], *self._later_logins(mine, seq)],
                    )
                else:
                    self.stats["DMs unverifiable (recipient logged out around it)"] += 1
            if len(holders) > 1:
                first = holders[0]
                again = holders[1].got[seq][0][1]
                how = "in a replay" if again.f.get("replay") else "live"
                if self._ended_cleanly(first):
                    self.add(
                        "dm_redelivered",
                        f"seq {seq}, {msg.short()}, reached {msg.to} in {first.label()} and "
                        f"again, {how}, in {holders[1].label()}; the first session ended with "
                        "a clean exit after its replay",
                        users=[msg.to],
                        seqs=[seq],
                        events=[
                            first.got[seq][0][1],
                            *self._end_of(first),
                            *self._logins(holders[1])[:3],
                            holders[1].got[seq][0][1],
                        ],
                    )
                else:
                    self.stats["DMs received in two chains (not provably redelivered)"] += 1

    @staticmethod
    def _later_logins(chains: list[_Chain], seq: int) -> list[Event]:
        out: list[Event] = []
        for ch in chains:
            if ch.start >= seq and ch.conns:
                c = ch.conns[0]
                out += [
                    f
                    for f in c.frames
                    if isinstance(f, FrameIn) and f.f.get("type") in ("login_ok", "replay_done")
                ][:2]
        return out

    @staticmethod
    def _end_of(chain: _Chain) -> list[Event]:
        """How the chain's last connection ended: its exit and the bye."""
        last = chain.conns[-1]
        return [
            f
            for f in last.frames
            if (isinstance(f, FrameOut) and f.f.get("command") == "exit")
            or (isinstance(f, FrameIn) and f.f.get("type") == "bye")
        ]

    @staticmethod
    def _ended_cleanly(chain: _Chain) -> bool:
        """The chain's last connection read the whole replay and a bye for its exit."""
        if not chain.conns:
            return False
        last = chain.conns[-1]
        types = [f.f.get("type") for f in last.frames if isinstance(f, FrameIn)]
        ok = last.login_ok or {}
        replay_read = not ok.get("replay") or "replay_done" in types
        byes = [f for f in last.frames if isinstance(f, FrameIn) and f.f.get("type") == "bye"]
        return replay_read and any(b.f.get("reason") == "exit" for b in byes)

    # ------------------------------------------------------------------ the hooks

    def check_hooks(self, chains: dict[str, list[_Chain]]) -> None:
        # (client, seq) -> the chains whose connections of that client received it
        where: dict[tuple[int, int], _Chain] = {}
        for user_chains in chains.values():
            for ch in user_chains:
                for seq, receipts in ch.got.items():
                    for c, _ in receipts:
                        where.setdefault((c.client, seq), ch)
        # (client, text) -> when that client first wrote it: a client resending, with its
        # cid, a message another client of the user sent (the driver's next login) did
        # not send it before then, and may get it in a replay as anyone's.
        sent_by: dict[tuple[int, str], float] = {}
        for (_, text), frames in self.sent.items():
            for c, f in frames:
                key = (c.client, text)
                sent_by[key] = min(sent_by.get(key, f.t), f.t)
        per_chain: dict[int, list[Hook]] = defaultdict(list)
        chain_of: dict[int, _Chain] = {}
        last_by_client: dict[int, Hook] = {}
        echoes: dict[tuple[str, int], list[Hook]] = defaultdict(list)
        for h in self.hooks:
            if h.kind not in ("broadcast", "dm") or h.seq is None:
                continue
            self.stats["deliveries (hooks)"] += 1
            user = h.user.lower()
            own = h.sender is not None and h.sender.lower() == user
            first = sent_by.get((h.client, h.text or ""))
            if own and (h.to or "").lower() != user and first is not None and first < h.t:
                echoes[(user, h.client)].append(h)
            prev = last_by_client.get(h.client)
            if prev is not None and prev.seq is not None and h.seq < prev.seq:
                self.add(
                    "hook_out_of_order",
                    f"{user}'s client {h.client} passed seq {h.seq} after {prev.seq}",
                    users=[user],
                    seqs=[prev.seq, h.seq],
                    events=[prev, h],
                )
            if prev is None or prev.seq is None or h.seq > prev.seq:
                last_by_client[h.client] = h
            home = where.get((h.client, h.seq))
            if home is None:
                self.add(
                    "phantom",
                    f"{user}'s client {h.client} passed seq {h.seq} to its hooks, but none of "
                    "its connections received it",
                    users=[user],
                    seqs=[h.seq],
                    events=[h],
                )
                continue
            per_chain[id(home)].append(h)
            chain_of[id(home)] = home
        for (user, client), hs in sorted(echoes.items()):
            seqs = [h.seq for h in hs if h.seq is not None]
            self.add(
                "own_echo",
                f"{user}'s client {client} passed {len(hs)} message(s) it had sent itself to "
                f"its on_broadcast/on_dm hooks as if they came in (seqs {ranges(seqs)}; "
                f"{sum(h.replayed for h in hs)} of them replayed)",
                users=[user],
                seqs=seqs,
                events=[*hs[:4], *self._sends_of(hs[:2])],
            )
        # The crowd reads with plain sockets (tests/nemesis/crowd.py): no hooks to judge.
        crowd = {u.lower() for u in (self.meta.options.get("crowd", []) if self.meta else [])}
        for user, user_chains in chains.items():
            if user in crowd:
                continue
            for ch in user_chains:
                hooks = per_chain.get(id(ch), [])
                counts: dict[int, list[Hook]] = defaultdict(list)
                for h in hooks:
                    assert h.seq is not None
                    counts[h.seq].append(h)
                for seq, hs in sorted(counts.items()):
                    if len(hs) > 1:
                        self.add(
                            "hook_duplicate",
                            f"{ch.label()}: the hooks got seq {seq} {len(hs)} times",
                            users=[ch.user],
                            seqs=[seq],
                            events=hs,
                        )
                need = {s for s in self.required(ch) if s in ch.got}
                mine = {s for s in need if self.by_seq[s].sender == ch.user}
                missing = sorted(need - mine - set(counts))
                if missing:
                    self.add(
                        "hook_lost",
                        f"{ch.label()}: the wire brought seqs {ranges(missing)}, which the "
                        "chain needed, but the hooks never got them",
                        users=[ch.user],
                        seqs=missing,
                        events=[ch.got[s][0][1] for s in missing[:5]],
                        conns=[c.conn for c in ch.conns],
                    )

    def _sends_of(self, hooks: Sequence[Hook]) -> list[Event]:
        out: list[Event] = []
        for h in hooks:
            if h.sender is not None and h.text is not None:
                out += [f for _, f in self.sent.get((h.sender.lower(), h.text), [])][:2]
        return out

    # ------------------------------------------------------------------ history pages

    def check_history(self) -> None:
        proof = self.proof_times()
        proof_seqs = sorted(proof)
        scans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        starts: dict[tuple[str, int], float] = {}
        complete: dict[str, bool] = {}
        for op in self.ops:
            if op.kind != "scan":
                continue
            if op.phase == "invoke":
                starts[(op.user.lower(), op.op)] = op.t
            elif (op.user.lower(), op.op) in starts:
                t0 = starts[(op.user.lower(), op.op)]
                scans[op.user.lower()].append((t0, op.t))
                complete[op.user.lower()] = complete.get(op.user.lower(), True) and (
                    op.phase == "ok"
                )
        final: set[int] = set()
        pages = 0
        for c in self.conns.values():
            requests = c.requests()
            for f in c.frames:
                if not isinstance(f, FrameIn) or f.f.get("type") != "history":
                    continue
                req = requests.get(f.f.get("id"))
                if req is None:
                    continue
                pages += 1
                self.check_page(c, req, f, proof, proof_seqs)
                if any(t0 <= req.t <= t1 for t0, t1 in scans.get(c.user, [])):
                    for m in f.f.get("messages") or ():
                        if isinstance(m, dict) and isinstance(m.get("seq"), int):
                            final.add(m["seq"])
        self.stats["history pages"] = pages
        scanners: set[str] = set()
        if self.meta is not None:
            scanners = {u.lower() for u in self.meta.users}
            marker_user = self.meta.options.get("marker_user")
            if isinstance(marker_user, str):
                scanners.add(marker_user.lower())
        if scanners and all(complete.get(u, False) for u in scanners):
            self.final_log = final
        else:
            self.notes.append(
                "the final scan of the log did not complete: acked_lost, delivered_unstored "
                "and seq_gap were not checked"
            )

    def check_page(
        self,
        c: _Conn,
        req: FrameOut,
        page: FrameIn,
        proof: dict[int, float],
        proof_seqs: list[int],
    ) -> None:
        partner = req.f.get("with")
        partner = partner.lower() if isinstance(partner, str) else None
        room = _room(req.f.get("room")) if partner is None else None
        # A room page: the reader's membership when it asked (its own joins and parts
        # come before its request: one driver thread per user).
        state: bool | None = True
        joined: int | None = None
        if room is not None:
            at = self.seen_before(req.t) + 1
            state = self.membership.state(c.user, room, at)
            joined = self.membership.joined(c.user, room, at)
        before, after = req.f.get("before"), req.f.get("after")
        limit = req.f.get("limit", 50)
        msgs = [m for m in page.f.get("messages") or () if isinstance(m, dict)]
        seqs = [m["seq"] for m in msgs if isinstance(m.get("seq"), int)]
        what = f"{c.user}'s history page ({_page_args(req)}) at {page.t:.1f} s"
        if seqs != sorted(set(seqs)) or (isinstance(limit, int) and len(seqs) > limit):
            self.add(
                "history_range",
                f"{what} is not ascending and within its limit: {seqs}",
                users=[c.user],
                seqs=seqs,
                events=[req, page],
            )
        if (isinstance(before, int) and any(s >= before for s in seqs)) or (
            isinstance(after, int) and any(s <= after for s in seqs)
        ):
            self.add(
                "history_range",
                f"{what} lists seqs {seqs} outside its cursor",
                users=[c.user],
                seqs=seqs,
                events=[req, page],
            )
        for m in msgs:
            kind, frm, to = m.get("kind"), str(m.get("from", "")).lower(), m.get("to")
            to = to.lower() if isinstance(to, str) else None
            fine = (kind == "pm" and partner is None and _room(m.get("room")) == room) or (
                kind == "dm" and partner is not None and {frm, to} == {c.user, partner}
            )
            seq = m.get("seq")
            if (
                fine
                and room is not None
                and isinstance(seq, int)
                and (state is False or (joined is not None and seq <= joined))
            ):
                self.add(
                    "room_leak",
                    f"{what} lists seq {seq} of room {room}, which its reader "
                    + ("was not in" if state is False else f"joined at seq {joined}"),
                    users=[c.user, frm],
                    seqs=[seq],
                    events=[req, page],
                )
            if not fine:
                self.add(
                    "history_leak",
                    f"{what} lists seq {m.get('seq')}, a {kind} from {frm} to {to}",
                    users=[c.user, frm],
                    seqs=[m["seq"]] if isinstance(m.get("seq"), int) else [],
                    events=[req, page],
                )
        # What the page's range must hold: every stored message of its kind between its
        # first and last seq (a higher seq is never visible before a lower one); and if
        # backward paging says nothing older is left, nothing stored below it.
        key = _pair(c.user, partner) if partner is not None else None
        if room is not None:
            key = ("#", room)
        candidates = self.listing.get(key, [])
        if room is not None:
            if joined is None:
                return  # not a member, or not known since when: no range to hold it to
            candidates = candidates[bisect.bisect_right(candidates, joined) :]
        listed = set(seqs)
        missing: list[int] = []
        if seqs:
            lo, hi = min(seqs), max(seqs)
            i, j = bisect.bisect_right(candidates, lo), bisect.bisect_left(candidates, hi)
            missing += [s for s in candidates[i:j] if s not in listed]
        if not page.f.get("has_more") and not isinstance(after, int):
            if seqs:
                missing += [s for s in candidates[: bisect.bisect_left(candidates, min(seqs))]]
            else:
                ceiling = before if isinstance(before, int) else 1 << 62
                for s in candidates[: bisect.bisect_left(candidates, ceiling)]:
                    i = bisect.bisect_left(proof_seqs, s)
                    proven = proof[proof_seqs[i]] if i < len(proof_seqs) else float("inf")
                    if proven < req.t:  # stored before the request went out
                        missing.append(s)
        if missing:
            self.add(
                "history_gap",
                f"{what} left out stored seqs {ranges(missing)}",
                users=[c.user],
                seqs=missing,
                events=[req, page, *[self.evidence[s][0] for s in missing[:3]]],
            )

    # ------------------------------------------------------------------ the final log

    def check_final_log(self) -> None:
        if self.final_log is None:
            return
        final = self.final_log
        self.stats["final log"] = len(final)
        acked: dict[int, Event] = {}
        for c in self.conns.values():
            for f in c.frames:
                if isinstance(f, FrameIn) and f.f.get("type") == "ack":
                    seq = f.f.get("seq")
                    if isinstance(seq, int):
                        acked.setdefault(seq, f)
        for seq in sorted(set(self.by_seq) - final):
            if seq in acked:
                self.add(
                    "acked_lost",
                    f"seq {seq}, {self.by_seq[seq].short()}, was acked but is not in the final log",
                    seqs=[seq],
                    users=[self.by_seq[seq].sender],
                    events=[acked[seq], *self.evidence[seq]],
                )
            else:
                self.add(
                    "delivered_unstored",
                    f"seq {seq}, {self.by_seq[seq].short()}, was seen but is not in the final log",
                    seqs=[seq],
                    users=[self.by_seq[seq].sender],
                    events=self.evidence[seq],
                )
        if final:
            # Seqs missing with nothing known of them (the known ones are reported above);
            # room events are stored seqs the scan (messages only) does not list.
            holes = sorted(
                set(range(1, max(final) + 1)) - final - set(self.by_seq) - set(self.room_events)
            )
            # A join or part without a reply may be stored as a seq nobody saw, above the
            # highest seq seen when it was sent: each may explain one hole.
            bounds = sorted(b for _, _, b, _ in self.unanswered)
            used = 0
            unexplained = []
            for h in holes:
                if bisect.bisect_left(bounds, h) > used:
                    used += 1
                else:
                    unexplained.append(h)
            self.stats["final log seqs unseen (unanswered joins/parts)"] = used
            holes = unexplained
            if holes:
                self.add(
                    "seq_gap",
                    f"the final log has no seqs {ranges(holes)}",
                    seqs=holes,
                    events=[e for s in holes[:3] for e in self.evidence.get(s, [])],
                )

    # ------------------------------------------------------------------ the run

    def _drained_users(self) -> list[str]:
        """The users alive at the end: the driver users of the run (the marker's
        author is checked like anyone, without the marker)."""
        for op in self.ops:
            if op.kind == "marker" and op.phase == "ok" and op.seq is not None:
                self.marker = op.seq
        if self.meta is None:
            return []
        return [u.lower() for u in self._everyone()]

    def _everyone(self) -> list[str]:
        """The users the harness kept logged in to the end: the drivers, and the crowd
        (tests/nemesis/crowd.py), which only reads."""
        if self.meta is None:
            return []
        return [*self.meta.users, *self.meta.options.get("crowd", [])]

    def check_logins(self) -> None:
        for op in self.ops:
            if op.kind == "login" and op.phase == "fail" and op.error == "bad_credentials":
                self.add(
                    "login_refused",
                    f"{op.user}'s login (attempt {op.attempt}) was refused with bad_credentials",
                    users=[op.user],
                    events=[op],
                )

    def check_refused_logins(self) -> None:
        """A connection whose login was refused is not logged in: a client that goes on
        sending on it instead of logging in again (or closing it) is stuck."""
        for c in self.conns.values():
            if c.login_ok is not None:
                continue
            replies = c.replies()
            refused: FrameIn | None = None
            after: list[FrameOut] = []
            for f in c.frames:
                if isinstance(f, FrameIn) and refused is None:
                    req = next(
                        (
                            o
                            for o in c.frames
                            if isinstance(o, FrameOut) and o.f.get("id") == f.f.get("id")
                        ),
                        None,
                    )
                    if (
                        f.f.get("type") == "error"
                        and req is not None
                        and req.f.get("command") == "login"
                    ):
                        refused = f
                elif (
                    refused is not None
                    and isinstance(f, FrameOut)
                    and f.f.get("command") in ("pm", "dm", "history", "users")
                ):
                    after.append(f)
            if refused is None or not after:
                continue
            answers = [replies.get(f.f.get("id")) for f in after]
            codes = sorted({str(a.f.get("code")) for a in answers if a is not None})
            self.add(
                "relogin_stuck",
                f"{c.user}'s login on connection {c.conn} was refused "
                f"({refused.f.get('code')}) at {refused.t:.1f} s; the client then sent "
                f"{len(after)} requests on it over {after[-1].t - refused.t:.1f} s "
                f"(answered: {', '.join(codes) or 'nothing'}) without logging in again",
                users=[c.user],
                events=[
                    *[
                        f
                        for f in c.frames
                        if isinstance(f, FrameOut) and f.f.get("command") == "login"
                    ][:1],
                    refused,
                    *after[:2],
                    *[a for a in answers[:2] if a is not None],
                ],
            )

    def check_stuck(self, chains: dict[str, list[_Chain]]) -> None:
        if self.marker is None or self.meta is None:
            return
        for user in self._everyone():
            mine = chains.get(user.lower(), [])
            top = max((max(ch.got, default=0) for ch in mine), default=0)
            if top < self.marker:
                self.add(
                    "stuck",
                    f"{user} never received the final marker (seq {self.marker}); the "
                    f"highest seq it got was {top}",
                    users=[user],
                    seqs=[self.marker],
                )

    def _faults_around(self, seqs: Sequence[int]) -> list[Event]:
        times = [e.t for s in seqs[:3] for e in self.evidence.get(s, [])]
        if not times:
            return []
        lo, hi = min(times) - 10, max(times) + 2
        near: list[Event] = [f for f in self.faults if lo <= f.t <= hi]
        return near[:6]

    def check_hostile(self) -> None:
        """The vandal's frames and the pipeliner's connections
        (tests/nemesis/adversaries.py): each answered ``fail`` was judged there against
        docs/PROTOCOL.md §Errors, or the order of a connection's answers (§Ordering);
        the rest of the checker proves nothing of theirs was stored (a ``phantom``) or
        disturbed anyone."""
        for op in self.ops:
            if op.kind == "hostile" and op.phase == "fail":
                self.add(
                    "hostile_answer",
                    f"{op.user}'s {op.text!r} at {op.t:.1f} s was {op.error}",
                    users=[op.user],
                    events=[op, *self._faults_around_time(op.t)],
                )
            elif op.kind == "pipeline" and op.phase == "fail":
                self.add(
                    "pipeline_broken",
                    f"{op.user}'s connection ({op.text}) at {op.t:.1f} s: {op.error}",
                    users=[op.user],
                    events=[op, *self._faults_around_time(op.t)],
                )

    def check_once_per_connection(self) -> None:
        """Each request is answered once; an IRC guest's own message is echoed once, to
        the session that sent it (docs/IRC.md, echo-message); and a guest's session
        gets each message once, stored (by seq) or not (a guest room's, by sender and
        text: texts are unique in a run). A guest's connection is one with messages
        sent and no login (tests/nemesis/guests.py); the others' receipts are the
        chains' rules."""
        for c in self.conns.values():
            guest = c.login_ok is None and not c.login_sent
            requests = c.requests()
            twice: set[object] = set()
            if guest and requests:
                self.stats["guest lines sent"] += len(requests)
            answered: dict[object, FrameIn] = {}
            got: dict[object, FrameIn] = {}
            written: dict[object, FrameOut] = {}
            for f in c.frames:
                if isinstance(f, FrameOut) and "id" in f.f:
                    rid = f.f["id"]
                    if rid in written and rid not in twice:
                        twice.add(rid)
                        self.add(
                            "request_twice",
                            f"connection {c.conn} of {c.user} wrote request {rid!r} twice",
                            users=[c.user],
                            events=[written[rid], f],
                        )
                    written.setdefault(rid, f)
                if not isinstance(f, FrameIn):
                    continue
                if "id" in f.f and f.f.get("type") in ("ack", "error"):
                    rid = f.f["id"]
                    if guest and f.f.get("type") == "ack":
                        self.stats["guest lines echoed"] += 1
                    first = answered.setdefault(rid, f)
                    if rid in twice:
                        continue  # asked twice, answered twice: the client's doing
                    if first is not f or (guest and rid not in requests):
                        self.add(
                            "echo_twice",
                            f"connection {c.conn} of {c.user} got an answer to request "
                            f"{rid!r} " + ("again" if first is not f else "it never sent"),
                            users=[c.user],
                            events=[*([requests[rid]] if rid in requests else []), first, f],
                        )
                elif guest and f.f.get("type") == "irc_privmsg":
                    seq = f.f.get("seq")
                    key = seq if isinstance(seq, int) else (f.f.get("from"), f.f.get("message"))
                    if key in got:
                        self.add(
                            "duplicate",
                            f"guest {c.user} received {key!r} twice on connection {c.conn}",
                            users=[c.user],
                            seqs=[seq] if isinstance(seq, int) else [],
                            events=[got[key], f],
                        )
                    got[key] = f
            if guest:
                self.check_echoes(c, requests, answered)

    def check_echoes(
        self, c: _Conn, requests: dict[object, FrameOut], answered: dict[object, FrameIn]
    ) -> None:
        """A guest's line that was stored (others got it) is echoed on its session, if
        that session went on: it got a later message 10 s or more after the line."""
        for rid, out in requests.items():
            if rid in answered or not isinstance(out.f.get("message"), str):
                continue
            msg = Msg.of("pm", c.user, None, out.f["message"], out.f.get("room"))
            stored = self.seqs_of.get(msg)
            if not stored:
                continue
            seq = min(stored)
            later = [
                f
                for f in c.frames
                if isinstance(f, FrameIn)
                and f.t > out.t + 10.0
                and isinstance(f.f.get("seq"), int)
                and f.f["seq"] > seq
            ]
            if later:
                self.add(
                    "echo_lost",
                    f"guest {c.user}'s line stored as seq {seq} was never echoed on connection "
                    f"{c.conn}, which got seq {later[0].f['seq']} at {later[0].t:.1f} s",
                    users=[c.user],
                    seqs=[seq],
                    events=[out, *self.evidence[seq][:1], later[0]],
                )

    def _faults_around_time(self, t: float) -> list[Event]:
        near: list[Event] = [f for f in self.faults if abs(f.t - t) < 10.0]
        return near[:6]

    def count(self) -> None:
        for op in self.ops:
            if op.phase != "invoke":
                self.stats[f"op {op.kind} {op.phase}"] += 1
        for f in self.faults:
            if f.phase == "start":
                self.stats[f"fault {f.kind}"] += 1

    def run(self) -> CheckResult:
        self.index_messages()
        self.learn_membership()
        self.check_sends()
        chains = self.build_chains()
        self.check_chains(chains)
        self.check_hooks(chains)
        self.check_history()
        self.check_final_log()
        self.check_logins()
        self.check_refused_logins()
        self.check_stuck(chains)
        self.check_hostile()
        self.check_once_per_connection()
        self.count()
        self.stats["chains"] = sum(len(v) for v in chains.values())
        self.stats["room receipts not required (membership unknown)"] = len(
            self.unknown_room_receipts
        )
        return CheckResult(self.anomalies, dict(sorted(self.stats.items())), self.notes)


def _pair(a: str, b: str) -> tuple[str, str]:
    x, y = a.lower(), b.lower()
    return (x, y) if x <= y else (y, x)


def _page_args(req: FrameOut) -> str:
    keys = ("with", "before", "after", "limit")
    return ", ".join(f"{k}={req.f[k]}" for k in keys if k in req.f) or "newest"


def _dedupe(events: Iterable[Event]) -> list[Event]:
    out: list[Event] = []
    seen: set[int] = set()
    for e in events:
        if id(e) not in seen:
            seen.add(id(e))
            out.append(e)
    out.sort(key=lambda e: e.t)
    return out


def check(events: Sequence[Event], membership: Membership | None = None) -> CheckResult:
    """Every anomaly ``events`` proves (see the module docstring)."""
    return _Checker(events, membership or Membership()).run()
