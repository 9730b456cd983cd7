"""Replay and history: what a client missed, from the message log.

At a login with the message log (chatroom_server.login), :meth:`Replay.replay` streams
what the client missed (with ``since``) or the DMs that waited for it (without) before
its live traffic (docs/PROTOCOL.md §Resume, §Offline DMs); :meth:`Replay.history` answers
``history`` (§history); :meth:`Replay.prune_history` keeps the retention (§Retention, the
``chat-prune`` thread). In a cluster, a login first waits until this node has delivered
what was stored before it (:meth:`Replay.catch_up`, on ``delivered``).

Shared state and what guards it: ``_receipts`` (username key -> seq up to which the
user's queued DMs provably reached them but could not be deleted from the inbox) is
guarded by ``_receipts_lock`` (reader threads); ``delivered`` is a Condition notified by
the cluster's consumer thread each time this node's delivered cut (the log's
``last_seq``) moves (chatroom_server.node). Everything else here runs on the reader
thread of the connection it serves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatroom.errors import ProtocolError
from chatroom.protocol import (
    Broadcast,
    DirectMessage,
    ErrorCode,
    ErrorEvent,
    History,
    HistoryCommand,
    HistoryMessage,
    LoginCommand,
    ReplayDone,
    ReplayTruncated,
    encode,
    username_key,
)
from chatroom.rooms import LOBBY, room_key
from chatroom_server.messagelog import StorageError, Stored
from chatroom_server.roomservice import RoomService

if TYPE_CHECKING:
    from chatroom_server.backends import Backends
    from chatroom_server.config import ServerConfig
    from chatroom_server.conn import Conn
    from chatroom_server.metrics import Tally

log = logging.getLogger(__name__)


class Replay:
    """The message log as a client reads it back (module docstring)."""

    # Cluster: the longest a login waits for this node to deliver what was stored
    # before it (catch_up).
    catch_up_timeout = 5.0

    def __init__(
        self,
        config: ServerConfig,
        backends: Backends,
        stats: Tally,
        stopping: threading.Event,
        reply: Callable[[Conn, bytes], None],
    ) -> None:
        self._config = config
        self._b = backends
        self._stats = stats
        self._stopping = stopping
        self._reply = reply  # to a connection's own client, behind its broadcasts
        self._clock = config.clock
        self._wall = config.wall_clock
        # Username key -> seq up to which the user's queued DMs provably reached them
        # but could not be deleted from the inbox (the disk was full): the proof, kept
        # until a deletion succeeds, so a later login does not replay them (F2 in
        # docs/RELIABILITY.md). Guarded by _receipts_lock (reader threads).
        self._receipts: dict[str, int] = {}
        self._receipts_lock = threading.Lock()
        # Notified by the bus's consumer thread each time this node's delivered cut (the
        # log's last_seq) moves: what a login waits on until the cut reaches it
        # (catch_up), and the rooms' applied() (chatroom_server.roomwire).
        self.delivered = threading.Condition(threading.Lock())

    def catch_up(self, cmd: LoginCommand) -> None:
        """Cluster: wait until this node has delivered every message stored before this
        login (its cut, login_ok's seq, lags the log after a partition or a pause):
        else the replay would stop short of it and the rest come live, messages the user
        had already had on another node among them (docs/RELIABILITY.md F3). At most
        ``catch_up_timeout`` s; then ``unavailable``: another node may be up to date."""
        mlog, stored = self._b.log, self._b.stored_seq
        assert mlog is not None and stored is not None
        try:
            head = stored()
        except StorageError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"try again: {exc}", cmd.id) from exc
        with self.delivered:
            if not self.delivered.wait_for(lambda: mlog.last_seq >= head, self.catch_up_timeout):
                raise ProtocolError(
                    ErrorCode.UNAVAILABLE,
                    f"try again: this node has delivered the cluster's messages up to seq "
                    f"{mlog.last_seq}, not yet {head}",
                    cmd.id,
                )

    def replay(self, conn: Conn, name: str, cmd: LoginCommand, upto: int) -> bool:
        """Reader thread, after login_ok: what the client missed (with ``since``), or the
        DMs that waited for it (without), then live traffic (docs/PROTOCOL.md §Resume,
        §Offline DMs). Streamed from the log a page at a time as the client reads it:
        the next page is read only once the last is written to the socket, so a replay
        holds about a page here however long it is (never more than the output limit),
        and a client that stops reading is dropped after the stall timeout. Live
        traffic waits meanwhile in the outbox's hold, bounded by the output limit."""
        mlog = self._b.log
        assert mlog is not None
        inbox = cmd.since is None  # a replay of the inbox only
        limit = self._config.replay_limit
        key = username_key(name)
        outbox = conn.outbox
        # Characters of the log per page: an eighth of the output limit, so that a page
        # (its rows, then its frames) stays well under it.
        budget = max(1, outbox.limit // 8)
        head: list[bytes] = []  # what precedes the first page: replay_truncated
        count = 0
        since = cmd.since
        first = upto  # the replay gives the DMs waiting after this seq
        told_truncated = False  # for the metrics
        try:
            if since is None:
                # None of those it provably received, if their rows are still there.
                got = self.received(name)
                start = mlog.replay_start(name, got, upto, limit, inbox=True)
                after = first = start or got
                truncated = start is not None
            elif (cmd.epoch is not None and cmd.epoch != mlog.epoch) or since > upto:
                # A cursor from another database (wiped, restored): nothing it counted
                # means anything here.
                head.append(encode(ReplayTruncated(oldest_seq=upto + 1)))
                after, truncated, told_truncated = upto, False, True
            else:
                if mlog.maybe_inbox(name):
                    # The client has every message up to since: DMs waiting up to it
                    # reached it (docs/PROTOCOL.md §Offline DMs); later ones are in this
                    # replay.
                    self.inbox_received(name, 0, since)
                start = mlog.replay_start(name, since, upto, limit, rooms=conn.rooms)
                after = since if start is None else start
                # Unless a limit cuts it, the client has had every DM up to since and
                # gets the rest here: all of (0, upto] is proven once it exits.
                first = 0 if start is None else start
                truncated = start is not None or since + 1 < mlog.oldest_seq
            while after < upto:
                rows = mlog.replay_page(name, after, upto, budget, inbox=inbox, rooms=conn.rooms)
                if truncated:
                    oldest = rows[0].seq if rows else upto + 1
                    head.append(encode(ReplayTruncated(oldest_seq=oldest)))
                    truncated, told_truncated = False, True
                if not rows:
                    break
                count += len(rows)
                after = rows[-1].seq
                chunk = b"".join([*head, *(replay_frame(m, key, conn.rooms) for m in rows)])
                head.clear()
                del rows
                if not (outbox.wait_drained(self._config.stall_timeout) and outbox.replay(chunk)):
                    return False  # dropped: the client resumes from what it has
                conn.last_rx = self._clock()  # it is reading: not idle
        except StorageError as exc:
            log.error("cannot replay for %s: %s", name, exc)
            failed = ErrorEvent(
                code=ErrorCode.UNAVAILABLE,
                message="the messages you missed cannot be read now; log in again later",
            )
            outbox.release(encode(failed))
            return False
        if truncated:  # nothing left to replay after all (pruned meanwhile)
            head.append(encode(ReplayTruncated(oldest_seq=upto + 1)))
        head.append(encode(ReplayDone(count=count, seq=upto)))
        self._stats.add("replays")
        if told_truncated or truncated:
            self._stats.add("replays_truncated")
        if not outbox.release(b"".join(head)):
            return False
        if first < upto and (inbox or mlog.maybe_inbox(name)):
            # The DMs waiting in (first, upto] were in it: they leave the inbox once the
            # client shows it has them (replay_received, or a later login's since);
            # until then a kill or a drop loses none. Those before a replay limit's cut
            # keep waiting as they were.
            conn.inbox_range = (first, upto)
        return True

    def replay_received(self, conn: Conn) -> None:
        """Reader thread, at the client's ``exit`` (IRC: QUIT): if its whole replay had
        been written to it by then, the DMs from the inbox in it have reached it
        (docs/PROTOCOL.md §Offline DMs).

        Only an exit says so: a client says it while it runs, after what it was sent
        (a client whose replay was still being written when it said it has not had it
        all). A connection that merely closes proves nothing, not even an orderly close:
        a client killed after reading the bytes but before showing them closes just the
        same. So anything but an exit (the server killed, a drop, a close, a takeover,
        a shutdown) leaves the DMs waiting: sent again at the next login, never lost."""
        got, mlog = conn.inbox_range, self._b.log
        if got is None or conn.username is None or mlog is None:
            return
        conn.inbox_range = None
        after, upto = got
        outbox = conn.outbox
        if not outbox.accepting:
            return
        if conn.late_inbox:
            # Read before the backlog: every message up to it was handed to this
            # connection (cluster_deliver), so with nothing left unwritten it has them.
            last = mlog.last_seq
            if not outbox.backlog:
                upto = max(upto, last)
        if after < upto and not outbox.replay_unwritten:
            self.inbox_received(conn.username, after, upto)

    def inbox_received(self, name: str, after: int, upto: int) -> None:
        """The DMs waiting for ``name`` with ``after < seq <= upto`` reached them."""
        assert self._b.log is not None
        key = username_key(name)
        try:
            self._b.log.inbox_received(name, after, upto)
        except StorageError as exc:
            # Their rows stay (none is lost), but the proof is kept: a login without
            # since replays none of them (replay), and the next one retries the delete.
            with self._receipts_lock:
                # Only a proof of a prefix of the inbox: DMs at or below ``after`` may
                # not have reached them (a replay cut by its limit).
                got = self._receipts.get(key, 0)
                if got >= after and got < upto:
                    self._receipts[key] = upto
            log.warning(
                "DMs up to seq %d reached %s but their inbox rows stay (deleted later): %s",
                upto,
                name,
                exc,
            )

    def received(self, name: str) -> int:
        """The seq up to which the DMs waiting for ``name`` provably reached them."""
        with self._receipts_lock:
            return self._receipts.get(username_key(name), 0)

    def clear_received(self, name: str) -> None:
        """Reader thread, before a login: delete the inbox rows a kept proof covers."""
        got = self.received(name)
        if got == 0 or self._b.log is None:
            return
        try:
            self._b.log.inbox_received(name, 0, got)
        except StorageError as exc:
            log.warning("DMs up to seq %d still wait for %s: %s", got, name, exc)
            return
        with self._receipts_lock:
            if self._receipts.get(username_key(name)) == got:
                del self._receipts[username_key(name)]

    def history(self, conn: Conn, cmd: HistoryCommand) -> None:
        """docs/PROTOCOL.md §history; only the caller's own DMs can be read."""
        assert conn.username is not None
        if self._b.log is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_COMMAND, "this server keeps no history (--history off)", cmd.id
            )
        room, from_seq = LOBBY, 0
        if conn.rooms and cmd.room is not None and self._b.rooms is not None:
            # A member reads from their join (all of it under +H): docs/PROTOCOL.md
            # §Who may read the past. A v1 connection's room field is ignored (lobby).
            room, from_seq = self._b.rooms.readable_from(conn.username, cmd.room, cmd.id)
        try:
            rows, more = self._b.log.history(
                conn.username,
                before=cmd.before,
                after=cmd.after,
                limit=cmd.limit,
                with_user=cmd.with_user,
                room=room,
                from_seq=from_seq,
            )
        except StorageError as exc:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE, f"history cannot be read now: {exc}", cmd.id
            ) from exc
        page = History(
            messages=tuple(
                HistoryMessage(
                    seq=m.seq,
                    kind="pm" if m.to is None else "dm",
                    sender=m.sender,
                    to=m.to,
                    message=m.body,
                    ts=m.ts,
                    room=room if conn.rooms and m.to is None else None,
                )
                for m in rows
            ),
            has_more=more,
            room=room if conn.rooms and cmd.with_user is None else None,
            id=cmd.id,
        )
        self._reply(conn, encode(page))

    def prune_history(self) -> int:
        """One pruning pass (docs/PROTOCOL.md §Retention); the housekeeping of the
        ``chat-prune`` thread, and for tests. How many messages were deleted."""
        if self._b.log is None:
            return 0
        c = self._config
        return self._b.log.prune(
            now=self._wall(),
            max_age=c.history_days * 86400 if c.history_days else None,
            max_count=c.history_max,
            pause=self._stopping.is_set,
        )

    def prune_loop(self) -> None:
        while not self._stopping.wait(self._config.history_prune_interval):
            self.prune_history()


def replay_frame(m: Stored, user_key: str, rooms: bool = False) -> bytes:
    """A stored message as the frame a live recipient got, marked ``replay``; one that
    the resuming user (``user_key``) sent carries its cid (docs/PROTOCOL.md §Resume), so
    that a client tells its own messages, acked or not, from ones it has not seen. With
    ``rooms`` (a v2 connection, whose replay has its rooms' rows): a room event as its
    ``room_event``, a message of a room but lobby with its ``room``."""
    if m.event is not None:
        return encode(RoomService.event_frame(m, replayed=True))
    cid = m.cid if m.cid is not None and username_key(m.sender) == user_key else None
    if m.to is None:
        room = m.room if rooms and m.room is not None and room_key(m.room) != LOBBY else None
        return encode(
            Broadcast(
                sender=m.sender,
                message=m.body,
                ts=m.ts,
                seq=m.seq,
                replayed=True,
                cid=cid,
                room=room,
            )
        )
    return encode(
        DirectMessage(
            sender=m.sender, to=m.to, message=m.body, ts=m.ts, seq=m.seq, replayed=True, cid=cid
        )
    )
