"""The seq cursor of a client session (docs/PROTOCOL.md §Message log, §Resume): which
arriving message is new, a duplicate, or one this session sent.

``cursor`` is a seq such that every message up to it that this user may see has been
passed out, or is one this session sent; a re-login resumes after it (§Resume). It moves
on what arrives (messages come in seq order on a connection) and on the acks of our own
sends, but an ack may not simply raise it: in a cluster the ack of seq 50 can arrive
before the broadcast of seq 49 from another node (acks are sent when stored, deliveries
come from the stream), and the seqs of DMs between other users never reach us, so a gap
below an ack may still be filled. So the cursor keeps the acked own seqs above it
(``_own``), drops an arriving message whose seq is one of them, moves through own seqs
contiguous with it, and at ``replay_done`` to at least its ``seq``. A replayed message of
ours that was stored but whose ack was lost in the cut carries the cid we sent it with:
it is dropped too (the resend gets its ack, with that seq), and so is one whose send
timed out or was refused ``unavailable`` (stored by a commit whose answer was lost): the
cursor knows the cids of the session's latest ``MAX_OWN`` sends, whatever became of
them. A DM to ourselves is the exception: its ack is not kept, since the DM itself
arrives too and is passed out once, as ``DmSent`` (the session decides that, as it knows
who we are). The acked seqs kept are bounded (``MAX_OWN``): a sender that receives
nothing while others' DMs leave a gap below its acks would keep one per send, so past
the bound the oldest is taken as settled and the cursor moves through it (a message
still missing below that many of our own acks is not on its way: the stream delivers
"a moment later", docs/PROTOCOL.md §Several nodes).

:class:`SeqCursor` is the base class of :class:`chatroom.session.ClientSession` rather
than a field of it: chat-load's pool calls :meth:`SeqCursor.message_seq` once per
delivery and reads ``cursor`` as a plain attribute, and a base class keeps both a
single slot access away. Same rules as the session: no I/O, one owner or one lock.
"""

from __future__ import annotations

import heapq
import logging
from typing import Final, Literal

__all__ = ["MAX_OWN", "SeqCursor", "SeqVerdict"]

log = logging.getLogger("chatroom.session")  # the session's records, as before the split

# The most acked own seqs kept above the cursor, and the most cids remembered.
MAX_OWN: Final = 10_000

# What :meth:`SeqCursor.message_seq` makes of an arriving message's seq: ``new`` (pass it
# out), ``seen`` (at or below the cursor: a duplicate), ``own`` (one this session sent:
# not passed back to it).
SeqVerdict = Literal["new", "seen", "own"]


class SeqCursor:
    """See the module docstring. ``epoch`` is the message log's the cursor counts in."""

    __slots__ = ("_own", "_sent", "cursor", "epoch")

    def __init__(self) -> None:
        self.cursor: int | None = None
        self.epoch: str | None = None
        self._own: list[int] = []  # the acked seqs of our own sends above the cursor, a heap
        # The cids of the session's pm/dm requests, the latest MAX_OWN, whatever became of
        # them: acked, unacked, timed out (the caller gave up: stored or not, nobody
        # knows) or refused unavailable (a commit cut short may have stored it). A
        # replayed message with one of them is ours.
        self._sent: dict[str, None] = {}

    def message_seq(self, seq: int, cid: str | None = None) -> SeqVerdict:
        """A broadcast or DM numbered ``seq`` arrived (``cid``: the one it carries, if it
        is ours): move the cursor, and say whether to pass it out (module docstring).
        :meth:`chatroom.session.ClientSession.handle_frame` calls it; so does a fast path
        that decodes deliveries itself."""
        cursor = self.cursor
        if cursor is not None and seq <= cursor:
            return "seen"
        own = self._own
        if not own and cid is None:  # the common case, once per delivery in a swarm
            self.cursor = seq
            return "new"
        while own and own[0] < seq:
            heapq.heappop(own)  # below this message: the cursor passes them now
        mine = bool(own) and own[0] == seq
        if not mine and cid is not None:
            # Ours, stored, its ack lost in a cut (the resend will be acked with this
            # seq), or never to come (timed out, refused when its commit was cut).
            mine = cid in self._sent
        self.cursor = seq
        self._through_own()
        return "own" if mine else "new"

    def own_seq(self, seq: int) -> None:
        """Seq ``seq`` is a message of ours (acked, or a room we joined): never passed
        back to us (module docstring)."""
        if self.cursor is not None and seq <= self.cursor:
            return
        own = self._own
        heapq.heappush(own, seq)
        if len(own) > MAX_OWN and self.cursor is not None:
            settled = heapq.heappop(own)
            log.debug("seqs %d..%d never came: taken as settled", self.cursor + 1, settled - 1)
            self.cursor = settled
        self._through_own()

    def sent_cid(self, cid: str) -> None:
        """A ``pm``/``dm`` goes out with ``cid``: a replayed message carrying it is ours."""
        self._sent[cid] = None
        if len(self._sent) > MAX_OWN:
            del self._sent[next(iter(self._sent))]

    def log_epoch(self, epoch: str | None, seq: int | None, replay: bool) -> None:
        """A ``login_ok`` said the log's ``epoch`` and its latest ``seq``, and whether a
        replay follows: a new epoch restarts the seqs; with no replay to come, nothing
        is missed from ``seq`` on."""
        if epoch is not None:
            if self.epoch is not None and epoch != self.epoch:
                log.warning("the server's message log is new (epoch changed): seqs restart")
                self.cursor = None
                self._own.clear()
            self.epoch = epoch
        if self.cursor is None and seq is not None and not replay:
            self.cursor = seq  # from now on nothing is missed: a reconnect resumes here
            self._through_own()

    def replayed_to(self, seq: int) -> None:
        """``replay_done`` at ``seq``: everything up to it that we may see has been
        passed out."""
        if self.cursor is None or seq > self.cursor:
            self.cursor = seq
        self._through_own()

    def _through_own(self) -> None:
        """Move the cursor through our own seqs contiguous with it; forget those it
        passed."""
        cursor, own = self.cursor, self._own
        if cursor is None:
            return
        while own and own[0] <= cursor + 1:
            cursor = max(cursor, heapq.heappop(own))
        self.cursor = cursor
