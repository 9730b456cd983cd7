"""The cluster's stream, both ways (docs/CLUSTER.md): a stored message's entry as the
node that stored it publishes it, and the consumer that reads every node's entries.

Delivery order (docs/PROTOCOL.md §Ordering, §Message log): the consumer hands messages
to the server strictly in seq order, from ``last_seq + 1`` on. An entry ahead of that
means publications were lost (Redis was down after a commit, or a node died between
commit and publish): the missing seqs are read from PostgreSQL first. When the stream
is quiet, the consumer compares PostgreSQL's highest seq with its own once a second, so
the last message before an outage is not stranded. Entries at or below ``last_seq`` are
duplicates and skipped. So every node delivers every stored message once, in seq order.

The consumer runs on one thread (``chat-cluster``) and owns all its state; the server's
callbacks (:class:`~chatroom_server.cluster.roster.Handler`) run on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import cast

import redis
from redis.typing import EncodableT, FieldT

from chatroom.rooms import LOBBY
from chatroom_server.cluster.link import Link
from chatroom_server.cluster.roster import Handler, Roster
from chatroom_server.messagelog import NewMessage, StorageError, Stored

log = logging.getLogger(__name__)

# XREAD's reply with decode_responses: [(stream, [(entry id, fields), ...]), ...]
_XRead = list[tuple[str, list[tuple[str, dict[str, str]]]]]


def entry(seq: int, m: NewMessage) -> dict[FieldT, EncodableT]:
    """A stored message's fields on the stream."""
    fields: dict[FieldT, EncodableT] = {
        "k": "m",
        "seq": seq,
        "ts": repr(m.ts),
        "s": m.sender,
        "t": m.to or "",
        "b": m.body,
        "q": "1" if m.inbox else "",
    }
    # Rooms (docs/PROTOCOL.md §Rooms): a public message's room, when not lobby, and a
    # room event's room and kind (its body is the change's detail), as the log's row has
    # them (chatroom_server.roomstore).
    if m.change is not None:
        fields["r"] = m.change.room
        fields["e"] = m.change.event.value
    elif m.room is not None and m.to is None:
        fields["r"] = m.room
    return fields


def stored(fields: dict[str, str]) -> Stored | None:
    """The message of an entry's fields (None, logged, if they are malformed)."""
    try:
        return Stored(
            seq=int(fields["seq"]),
            ts=float(fields["ts"]),
            sender=fields["s"],
            to=fields.get("t") or None,
            body=fields["b"],
            room=fields.get("r") or (LOBBY if not fields.get("t") else None),
            event=fields.get("e") or None,
        )
    except (KeyError, ValueError) as exc:
        log.error("malformed message on the cluster stream (%s): %r", exc, fields)
        return None


def _may_have_waited(rows: list[Stored]) -> set[int]:
    """The DMs among ``rows`` read back from PostgreSQL (a gap fill): whether one was
    queued in its recipient's inbox is the stream's ``q`` field, which a row does not
    carry, so each may have been. Marking one that was not costs nothing (its receipt
    deletes no row); missing one that was sends it again at the next fresh login after
    a clean exit (the nemesis found it: seed 4020, docs/RELIABILITY.md F6)."""
    return {m.seq for m in rows if m.to is not None}


class Consumer:
    """Reads the stream ``stream`` from entry ``last_id`` on until ``stopping``; see the
    module docstring. ``last_seq``: the seq this node delivered last; ``stored_seq``:
    PostgreSQL's highest; ``read_range(a, b)``: the stored messages after ``a`` up to
    ``b``."""

    def __init__(
        self,
        link: Link,
        stream: str,
        roster: Roster,
        handler: Handler,
        *,
        last_id: str,
        last_seq: Callable[[], int],
        operators: list[dict[str, str]] | None = None,
        stored_seq: Callable[[], int],
        read_range: Callable[[int, int], list[Stored]],
    ) -> None:
        self._link = link
        self._stream = stream
        self._roster = roster
        self._handler = handler
        self._last_id = last_id
        # Operator entries to apply before the stream's (the O-line operators online
        # when the node started: ClusterBus.snapshot).
        self._operators = operators or []
        self._last_seq = last_seq
        self._stored_seq = stored_seq
        self._range = read_range
        self.gaps_filled = 0  # messages read from PostgreSQL because their entry was lost

    def run(self, stopping: threading.Event) -> None:
        handler = self._handler
        last_check = time.monotonic()
        last_resync = time.monotonic()
        pending: list[Stored] = []
        inbox: set[int] = set()
        for fields in self._operators:
            handler.cluster_operator(fields)
        while not stopping.is_set():
            try:
                reply = cast(
                    _XRead | None,
                    self._link.rx.xread({self._stream: self._last_id}, count=1000, block=500),
                )
            except redis.RedisError as exc:
                self._link.set_up(False, exc)
                stopping.wait(0.5)
                reply = None
            else:
                if not self._link.available:
                    self._link.set_up(True)
                    self._roster.resync(handler)
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    if fields.get("k") == "m":
                        m = stored(fields)
                        if m is not None:
                            pending.append(m)
                            if fields.get("q"):
                                inbox.add(m.seq)
                        continue
                    pending, inbox = self.deliver(pending, inbox)
                    if fields.get("k") == "o":  # an operator's kill or WALLOPS
                        handler.cluster_operator(fields)
                        continue
                    self._roster.apply(handler, fields, entry_id)
            pending, inbox = self.deliver(pending, inbox)
            now = time.monotonic()
            if not reply and now - last_check >= 1.0:
                last_check = now
                self.catch_up()
            if self._link.available and now - last_resync >= 10.0:
                last_resync = now
                self._roster.resync(handler)

    def deliver(self, pending: list[Stored], inbox: set[int]) -> tuple[list[Stored], set[int]]:
        """Hand ``pending`` over in seq order, gaps filled; what could not be (the
        database is unreachable for a gap) stays pending."""
        if not pending:
            return pending, inbox
        handler = self._handler
        expected = self._last_seq() + 1
        out: list[Stored] = []
        for m in sorted(pending, key=lambda m: m.seq):
            if m.seq < expected:
                continue  # already delivered (a gap fill got there first)
            if m.seq > expected:
                try:
                    missing = self._range(expected - 1, m.seq - 1)
                except StorageError as exc:
                    log.error("cannot read seqs %d..%d to fill a gap: %s", expected, m.seq - 1, exc)
                    if out:
                        handler.cluster_deliver(out, inbox)
                    return [x for x in pending if x.seq >= m.seq], inbox
                self.gaps_filled += len(missing)
                out += missing
                inbox = inbox | _may_have_waited(missing)
            out.append(m)
            expected = m.seq + 1
        if out:
            handler.cluster_deliver(out, inbox)
        return [], set()

    def catch_up(self) -> None:
        """Quiet stream: deliver what PostgreSQL has beyond our last seq (a lost
        publication of the last messages)."""
        try:
            stored = self._stored_seq()
            last = self._last_seq()
            if stored > last:
                missing = self._range(last, stored)
                if missing:
                    log.warning(
                        "%d message(s) were stored but not published; delivering", len(missing)
                    )
                    self.gaps_filled += len(missing)
                    self._handler.cluster_deliver(missing, _may_have_waited(missing))
        except StorageError as exc:
            log.debug("catch-up check failed: %s", exc)
