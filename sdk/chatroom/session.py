"""The client side of docs/PROTOCOL.md as a state machine with no I/O.

:class:`ClientSession` is to chatroom what h11's ``Connection`` is to HTTP: bytes in,
events out; requests in, bytes out. It owns every protocol decision a client makes; the
parts that are an idea of their own live in a module each, owned by the session:

- here: request ids, and which reply answers which request (§Frames); the login
  sequence, the credentials it keeps for logging in again after a reconnect, and when a
  reconnect is allowed at all (never after ``bad_credentials``, ``session_replaced`` or
  ``exit``); with a message log, ``since`` on every re-login; turning frames into events
  (a DM the user sent into :class:`~chatroom.events.DmSent`, never a
  :class:`~chatroom.protocol.DirectMessage`), and malformed frames into :class:`BadFrame`
  rather than an exception that would end the connection;
- :mod:`chatroom._resends`: a cid on every ``pm``/``dm``, and the resend after a
  reconnect of those not answered (§Idempotent sends);
- :mod:`chatroom._replaying`: a login that waits for ``replay_done`` before it counts
  as done (§Resume);
- :mod:`chatroom._seqs`: the seq cursor (§Message log), which makes every message come
  out once and in order across any number of reconnects, and never brings back a
  message this session sent (:class:`~chatroom._seqs.SeqCursor`, this class's base);
- :mod:`chatroom._roster`: the user list, full lists and ``users_delta`` deltas, and the
  ``count`` check that asks for a fresh list when they disagree (§Extensions);
- :mod:`chatroom._joined`: with ``rooms=True`` (§Rooms, protocol v2), the rooms the user
  is in, from ``login_ok``, the replies to room commands and every ``room_event``, whose
  seqs move the cursor as messages' do (one cursor for every room);
- :mod:`chatroom._keepalive`: when to ping, and when a silent server counts as dead
  (§Timeouts);
- :mod:`chatroom._limits`: the limits ``login_ok`` announces (§Limits): a ``pm``/``dm``
  over them is refused with :class:`~chatroom.errors.MessageTooLong` before it is sent,
  and a frame the server refused as ``too_large`` is never sent again;
- :mod:`chatroom._sessionevents` and :mod:`chatroom._outcomes`: what the session says
  (:data:`SessionEvent`) and what the clients make of it; both importable from here.

It has no sockets, threads or clocks: the caller passes ``now`` (any monotonic clock) and
writes the bytes it is given. It is not thread-safe: one owner, or one lock around every
call (``ChatClient`` holds its ``_lock``). It never calls user code.

The users: :class:`~chatroom.client.ChatClient` (a socket and two threads),
:class:`~chatroom.aio.AsyncChatClient` (asyncio tasks) and chat-load's ``BotPool``
(thousands of sessions on one epoll thread, with a fast path of its own for counting
deliveries).

Typical use::

    session = ClientSession()
    sock.sendall(session.connection_made(now))   # b"" on a first connection
    rid, data = session.login("alice", "correct horse")
    sock.sendall(data)
    for event in session.receive_data(sock.recv(65536), now):
        ...                                       # Reply, Refused, Broadcast, ...
    sock.sendall(session.data_to_send())          # a control frame it decided to send
"""

from __future__ import annotations

import logging
from typing import Final, TypeVar

import msgspec

from chatroom._joined import JoinedRooms
from chatroom._keepalive import PING, Keepalive
from chatroom._limits import check_limits
from chatroom._outcomes import disconnect_reason, older_than, receipt, reconnect_delay
from chatroom._replaying import Replaying
from chatroom._resends import Unacked
from chatroom._roster import Roster
from chatroom._seqs import MAX_OWN, SeqCursor, SeqVerdict
from chatroom._sessionevents import (
    BadFrame,
    Ended,
    Refused,
    Reply,
    SessionEvent,
    UsersUpdated,
)
from chatroom.errors import AuthError, ProtocolError, ServerError, error_for_code
from chatroom.events import DmSent, LoginResult, Reconnected, ServerNotice
from chatroom.protocol import (
    ROOMS_VERSION,
    Ack,
    Broadcast,
    Bye,
    ByeReason,
    ClientCommand,
    DirectMessage,
    DmCommand,
    ErrorCode,
    ErrorEvent,
    ExitCommand,
    Feature,
    FrameDecoder,
    LoginCommand,
    LoginOk,
    PmCommand,
    ReplayDone,
    ReplayTruncated,
    ServerEvent,
    ServerLimits,
    UserList,
    UsersCommand,
    UsersDelta,
    decode_event,
    encode,
    split_block,
    username_key,
)
from chatroom.rooms import RoomEvent, RoomInfo, RoomInfoReply

__all__ = [
    "LOGIN_FEATURES",
    "MAX_OWN",
    "PING",
    "BadFrame",
    "ClientSession",
    "Ended",
    "Refused",
    "Reply",
    "SeqVerdict",
    "SessionEvent",
    "UsersUpdated",
    "disconnect_reason",
    "older_than",
    "receipt",
    "reconnect_delay",
]

log = logging.getLogger(__name__)

C = TypeVar("C", bound=ClientCommand)

# What every client of ours asks for at login (docs/PROTOCOL.md §Extensions); with
# ``rooms=True``, rooms too.
LOGIN_FEATURES: Final = (Feature.USERS_DELTA.value,)
ROOMS_FEATURES: Final = (*LOGIN_FEATURES, Feature.ROOMS.value)
EXIT: Final = encode(ExitCommand())
_RESYNC: Final = encode(UsersCommand())  # answered by a full list without an id

# Disconnect reasons after which logging in again would be wrong: we left, we logged in
# elsewhere, or the server refused the password or banned us.
_FINAL_REASONS: Final = frozenset(
    (ByeReason.EXIT, ByeReason.SESSION_REPLACED, ErrorCode.BAD_CREDENTIALS, ErrorCode.BANNED)
)


# ------------------------------------------------------------------ the session


class ClientSession(SeqCursor):
    """See the module docstring.

    ``keepalive``: seconds of quiet (either way) after which :meth:`keepalive` asks for a
    ping; 0 turns pings off. ``timeout``: seconds more of silence from the server after
    which the connection counts as dead. ``track_users``: keep the user list (a swarm
    bot that never reads it says False: deltas cost it nothing, and the list in
    ``login_ok`` is skipped undecoded, so its login result has ``users=()``).
    ``lazy_users``: ask the server for a ``login_ok`` with the number of users and not
    their names (docs/PROTOCOL.md §lazy_users), which in an arrival storm of N clients
    saves O(N^2) bytes; :attr:`user_count` is right at once. A session that keeps the
    list then asks for it right after ``login_ok`` (:attr:`users` is empty until the
    reply), so it is for clients that need no names at once: bots, load generators.
    """

    __slots__ = (
        "_alive",
        "_banned",
        "_credentials",
        "_decoder",
        "_ids",
        "_joined",
        "_logins",
        "_out",
        "_pending",
        "_relogin",
        "_replay",
        "_roster",
        "_unacked",
        "lazy_users",
        "limits",
        "max_frame",
        "rooms_on",
        "username",
        "want_rooms",
    )

    def __init__(
        self,
        *,
        keepalive: float = 30.0,
        timeout: float = 10.0,
        max_frame: int = 64 * 1024 * 1024,
        track_users: bool = True,
        rooms: bool = False,
        lazy_users: bool = False,
    ) -> None:
        self._alive = Keepalive(keepalive, timeout)
        self.max_frame = max_frame
        super().__init__()  # the cursor: chatroom._seqs
        self.username: str | None = None  # canonical, once logged in
        self._decoder = FrameDecoder(max_frame)
        self._ids = 0
        # Requests sent on this connection and not answered yet: id -> command name.
        self._pending: dict[int, str] = {}
        # Logins in flight: id -> password, kept as credentials once login_ok arrives.
        self._logins: dict[int, str] = {}
        self._credentials: tuple[str, str] | None = None
        self._relogin: int | None = None  # id of the automatic re-login in flight
        # The server's ``banned`` without an id (docs/PROTOCOL.md §Moderation,
        # Server-wide): the bye that follows ends the session for good.
        self._banned: ServerError | None = None
        self._roster = Roster(track_users)
        self.lazy_users = lazy_users  # asked for at login (docs/PROTOCOL.md §lazy_users)
        self._out = bytearray()  # control frames the session decided to send
        # A login whose replay is running (chatroom._replaying).
        self._replay: Replaying | None = None
        # pm/dm requests not answered yet, with their cids: sent again after a reconnect.
        self._unacked = Unacked()
        # What the server's login_ok said a client must respect (None: not said).
        self.limits: ServerLimits | None = None
        # Rooms (docs/PROTOCOL.md §Rooms): asked for at login; on when login_ok says so.
        self.want_rooms = rooms
        self.rooms_on = False
        self._joined = JoinedRooms()

    # ------------------------------------------------------------ state

    @property
    def users(self) -> tuple[str, ...]:
        """The active users, sorted ignoring case (built only when asked for)."""
        return self._roster.users

    @property
    def rooms(self) -> tuple[RoomInfo, ...]:
        """The rooms the user is in (``lobby`` not included), sorted ignoring case; empty
        unless the server turned rooms on (:attr:`rooms_on`)."""
        return self._joined.rooms

    def room(self, name: str) -> RoomInfo | None:
        """The room ``name`` (any case), if the user is in it."""
        return self._joined.get(name)

    @property
    def user_count(self) -> int:
        return len(self._roster)

    @property
    def track_users(self) -> bool:
        """Whether the session keeps the user list (the constructor's ``track_users``)."""
        return self._roster.track

    @property
    def keepalive_interval(self) -> float:
        """The constructor's ``keepalive`` (:mod:`chatroom._keepalive`)."""
        return self._alive.interval

    @property
    def timeout(self) -> float:
        """The constructor's ``timeout``."""
        return self._alive.timeout

    @property
    def logged_in(self) -> bool:
        return self.username is not None

    @property
    def can_relogin(self) -> bool:
        """Whether the session knows credentials the server accepted."""
        return self._credentials is not None

    def may_reconnect(self, reason: str) -> bool:
        """Whether a connection that ended with ``reason`` may be retried."""
        return self._credentials is not None and reason not in _FINAL_REASONS

    # ------------------------------------------------------------ outgoing

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def request(self, cmd: C) -> tuple[int, bytes]:
        """``cmd`` with a fresh id, and its frame; its reply comes back as :class:`Reply`
        or :class:`Refused` with that id. A ``pm`` or ``dm`` also gets a cid (unless it
        has one) and, until acked, is sent again after a reconnect (:meth:`connection_made`):
        the server stores it once (docs/PROTOCOL.md §Idempotent sends). A ``pm`` or
        ``dm`` over the server's limits raises :class:`~chatroom.errors.MessageTooLong`
        and is neither sent nor remembered."""
        rid = self.next_id()
        if isinstance(cmd, PmCommand | DmCommand):
            cid = self._unacked.new_cid() if cmd.cid is None else cmd.cid
            data = encode(msgspec.structs.replace(cmd, cid=cid, id=rid))
            check_limits(self.limits, cmd, data)
            self._unacked.add(rid, cid, data)
            self.sent_cid(cid)
        else:
            data = encode(msgspec.structs.replace(cmd, id=rid))
        self._pending[rid] = type(cmd).__struct_config__.tag  # type: ignore[assignment]
        return rid, data

    def login(self, username: str, password: str, *, since: int | None = None) -> tuple[int, bytes]:
        """The login request; on ``login_ok`` the credentials are kept for re-login.
        ``since``: resume after that seq (default: the session's cursor, if it has one)."""
        since = self.cursor if since is None else since
        features = ROOMS_FEATURES if self.want_rooms else LOGIN_FEATURES
        if self.lazy_users:
            features = (*features, Feature.LAZY_USERS.value)
        rid, data = self.request(
            LoginCommand(
                username=username,
                password=password,
                features=features,
                since=since,
                epoch=self.epoch if since is not None else None,
            )
        )
        self._logins[rid] = password
        return rid, data

    def check_user(self, username: str) -> tuple[int, bytes]:
        """A login without a password: answered by ``password_required``."""
        return self.request(LoginCommand(username=username))

    def send(self, cmd: ClientCommand) -> bytes:
        """A command without an id (its refusal comes as a :class:`ServerNotice`); a
        ``pm`` or ``dm`` over the server's limits raises
        :class:`~chatroom.errors.MessageTooLong` instead. A ``pm`` or ``dm`` with a
        ``cid`` is known as our own when a replay brings it back."""
        data = encode(cmd)
        if isinstance(cmd, PmCommand | DmCommand):
            check_limits(self.limits, cmd, data)
            if cmd.cid is not None:
                # Sent by this session with its cid (a resend of a message a previous
                # process or client sent first, say): a replay of it is ours too
                # (docs/RELIABILITY.md F12).
                self.sent_cid(cmd.cid)
        return data

    def logout(self) -> bytes:
        """The goodbye; no automatic re-login after it."""
        self._credentials = None
        return EXIT

    def forget_request(self, rid: int) -> None:
        """The caller gave up waiting for ``rid`` (timed out): a late reply is ignored."""
        self._pending.pop(rid, None)
        self._logins.pop(rid, None)
        self._unacked.answered(rid)

    def data_sent(self, now: float) -> None:
        """The caller wrote bytes to the server at ``now`` (for keepalive)."""
        self._alive.last_tx = now

    def data_to_send(self) -> bytes:
        """Control frames the session decided to send (e.g. a request for the user list
        when a delta does not add up); b"" when there are none."""
        if not self._out:
            return b""
        data = bytes(self._out)
        self._out.clear()
        return data

    # ------------------------------------------------------------ connection life

    def connection_made(self, now: float) -> bytes:
        """A new connection is open: returns the re-login to send first (b"" if the
        session has never logged in)."""
        self._decoder = FrameDecoder(self.max_frame)
        self._alive.reset(now)
        self._out.clear()
        self._unacked.carry()
        if self._credentials is None:
            return b""
        name, password = self._credentials
        rid, data = self.login(name, password)
        self._relogin = rid
        return data

    def connection_lost(self, *, resend: bool = False) -> list[int]:
        """The connection is gone: returns the ids of the requests that will never be
        answered (the caller fails them). With ``resend`` (the caller reconnects), the
        unacked ``pm``/``dm`` stay pending: the re-login sends them again."""
        keep = self._unacked.keep(resend and self._credentials is not None)
        failed = [rid for rid in self._pending if rid not in keep]
        self._pending = {rid: self._pending[rid] for rid in keep if rid in self._pending}
        self._logins.clear()
        self._relogin = None
        self._replay = None
        self._banned = None
        if self._credentials is None:
            self.username = None
        return failed

    def keepalive(self, now: float) -> bytes:
        """Call on every pass of the read loop: a ping to send, or b"". Raises
        :class:`~chatroom.errors.ChatTimeout` once the server has been silent for
        ``keepalive + timeout`` seconds (docs/PROTOCOL.md §Timeouts)."""
        return self._alive.check(now)

    # ------------------------------------------------------------ incoming

    def feed(self, data: bytes, now: float) -> list[bytes]:
        """Framing only: the complete frames in ``data`` (raises
        :class:`~chatroom.errors.FrameTooLarge`; the connection is then unusable). For
        callers with a fast path of their own; the rest go to :meth:`handle_frame`."""
        return split_block(self.feed_block(data, now))

    def feed_block(self, data: bytes, now: float) -> bytes:
        """Like :meth:`feed`, but the complete frames unsplit: the bytes up to and
        including the last newline (see :meth:`chatroom.protocol.FrameDecoder.feed_block`),
        for a caller that decodes a whole read in one call."""
        alive = self._alive
        alive.last_rx = now
        alive.pinged = False
        return self._decoder.feed_block(data)

    def receive_data(self, data: bytes, now: float) -> list[SessionEvent]:
        """Bytes from the server in, events out (see :data:`SessionEvent`)."""
        events: list[SessionEvent] = []
        for frame in self.feed(data, now):
            self.handle_frame(frame, events)
        return events

    def handle_frame(self, frame: bytes, events: list[SessionEvent]) -> None:
        """One complete frame: append what it means to ``events``."""
        try:
            event = decode_event(frame, users=self._roster.track)
        except ProtocolError as exc:
            if exc.code == ErrorCode.UNKNOWN_COMMAND:
                # A type from a later version (docs/PROTOCOL.md §Frames): ignore it.
                log.debug("ignoring a frame of a type this version does not know: %r", frame)
            else:
                events.append(BadFrame(frame, exc))
            return
        kind = type(event)
        if kind is Broadcast or kind is DirectMessage:
            message: Broadcast | DirectMessage = event  # type: ignore[assignment]
            mine = self._is_me(message.sender)
            to_me = kind is DirectMessage and self._is_me(message.to)  # type: ignore[union-attr]
            if message.seq is not None:
                # A cid comes only with our own messages (docs/PROTOCOL.md §Resume); a DM
                # to ourselves is passed out once however it was sent (chatroom._seqs).
                cid = message.cid if mine and not to_me else None
                verdict = self.message_seq(message.seq, cid)
                if verdict != "new":
                    log.debug("dropping seq %d: %s (cursor %s)", message.seq, verdict, self.cursor)
                    return
                if self._replay is not None and message.replayed:
                    self._replay.count += 1
            if mine and kind is DirectMessage:
                # Sent by this user, not to it: never on_dm (an answer to its sender would
                # be a DM to ourselves, and so on, in a loop).
                events.append(DmSent.of(message))  # type: ignore[arg-type]
            else:
                events.append(message)
            return
        if kind is RoomEvent:
            assert isinstance(event, RoomEvent)
            if event.seq is not None:
                if self.message_seq(event.seq) != "new":
                    return
                if self._replay is not None and event.replayed:
                    self._replay.count += 1
            self._joined.event(event, self.username or "", self._is_me)
            events.append(event)
            return
        if kind is ReplayDone or kind is ReplayTruncated:
            self._on_replay(event, events)  # type: ignore[arg-type]
            return
        if kind is Ack:
            assert isinstance(event, Ack)
            if event.seq is not None:
                self.acked(event.seq, event.to)
        rid = getattr(event, "id", None)
        if rid is not None:
            self._on_reply(rid, event, events)
        elif kind is UsersDelta:
            self._apply_delta(event, events)  # type: ignore[arg-type]
        elif kind is UserList:
            assert isinstance(event, UserList)
            self._roster.replace(event.users)
            events.append(
                UsersUpdated(
                    (event.joined,) if event.joined else (),
                    (event.left,) if event.left else (),
                )
            )
        elif kind is Bye:
            assert isinstance(event, Bye)
            if event.reason == ByeReason.EXIT:
                self._credentials = None
            if self._banned is not None:
                # A ban ended the session: logging in again would only be refused.
                self._credentials = None
                events.append(Ended(ErrorCode.BANNED, self._banned))
            elif event.message:
                # The server's words (a server operator's kill: who, and why), shown
                # with the Disconnect; a login again is still allowed.
                events.append(Ended(event.reason, ServerError(event.reason, event.message)))
            else:
                events.append(Ended(event.reason))
        elif kind is ErrorEvent:
            assert isinstance(event, ErrorEvent)
            if event.code == ErrorCode.TOO_LARGE and self._refuse_too_large(event, events):
                return
            # Not tied to a request: an answer to an id-less send, or server_full, ...
            err = error_for_code(
                event.code, event.message, reason=event.reason, expires=event.expires
            )
            if event.code == ErrorCode.BANNED:
                self._banned = err  # the bye comes next
            events.append(ServerNotice(err))
            if event.code == ErrorCode.SERVER_FULL:
                events.append(Ended(ErrorCode.SERVER_FULL))
        # ack and pong without an id answer id-less sends: nothing to do.

    # ------------------------------------------------------------ the cursor

    def _is_me(self, name: str) -> bool:
        return self.username is not None and username_key(name) == username_key(self.username)

    def acked(self, seq: int, to: str | None = None) -> None:
        """An ack of seq ``seq`` (``to``: a DM's recipient, as the ack names it): a
        message of ours, never passed back to us (:mod:`chatroom._seqs`). Not for a DM to
        ourselves: that one arrives too, and is passed out once, as
        :class:`~chatroom.events.DmSent`. :meth:`handle_frame` calls it; so does a fast
        path that decodes acks itself."""
        if to is not None and self._is_me(to):
            return
        self.own_seq(seq)

    # ------------------------------------------------------------ replies

    def _refuse_too_large(self, event: ErrorEvent, events: list[SessionEvent]) -> bool:
        """The server refused a frame of ours as ``too_large`` (see
        :func:`chatroom._limits.too_large`): fail that request now rather than send it
        again after every reconnect. False if no such request is waiting."""
        refused = self._unacked.too_large(self.limits, event.message)
        if refused is None:
            return False
        self._pending.pop(refused.rid, None)
        events.append(refused)
        return True

    def _on_reply(self, rid: object, event: ServerEvent, events: list[SessionEvent]) -> None:
        if not isinstance(rid, int) or rid not in self._pending:
            log.debug("reply to no pending request (timed out?): %r", event)
            return
        command = self._pending.pop(rid)
        password = self._logins.pop(rid, None)
        relogin = rid == self._relogin
        if relogin:
            self._relogin = None
        if type(event) is not LoginOk:
            self._unacked.answered(rid)  # acked or refused: never sent again
        if type(event) is ErrorEvent:
            err = error_for_code(
                event.code, event.message, rid, reason=event.reason, expires=event.expires
            )
            if relogin:
                log.error("re-login failed: %s", err)
                if isinstance(err, AuthError):
                    self._credentials = None  # never retry a password the server refused
                    events.append(Ended(ErrorCode.BAD_CREDENTIALS))
                elif event.code == ErrorCode.BANNED:
                    # Banned from the server (the account or this address): asking
                    # again every backoff would only knock at a closed door.
                    self._credentials = None
                    events.append(Ended(ErrorCode.BANNED, err))
                else:
                    # unavailable, rate_limited, ...: a connection that is not logged in
                    # is of no use (every send would be refused not_logged_in). It ends,
                    # and the reconnect loop tries again after its backoff.
                    events.append(Ended(err.code))
                return
            events.append(Refused(rid, err))
            return
        if type(event) is LoginOk:
            # Here, before any event after it: the pushes that follow must already see
            # who we are and the list they apply to.
            self.username = event.username
            if Feature.LAZY_USERS.value in event.features:
                # A count and no names (docs/PROTOCOL.md §lazy_users): the list, if kept,
                # comes in the reply to a users request, which supersedes every delta
                # before it.
                self._roster.counted(event.count or 0)
                if self._roster.track:
                    self._out += _RESYNC
            else:
                self._roster.replace(event.users)
            self._logged_in(event, relogin)
            if event.version is not None and event.version > ROOMS_VERSION:
                log.warning(
                    "the server speaks protocol version %d, this client %d: what it knows "
                    "still holds (docs/PROTOCOL.md §Versions), but a newer client exists",
                    event.version,
                    ROOMS_VERSION,
                )
            if password is not None:
                self._credentials = (event.username, password)
            result = LoginResult(
                event.username, event.new_user and not relogin, event.users, event.seq
            )
            if event.replay:
                # Done once the replay is: the hooks see what was missed first.
                self._replay = Replaying(rid, result, relogin, event)
                return
            events.append(Reconnected(result) if relogin else Reply(rid, event, result))
            return
        elif type(event) is UserList:
            self._roster.replace(event.users)
        elif type(event) is RoomInfoReply:
            if event.seq is not None:
                self.acked(event.seq)  # the room joined: its join's seq is ours
            self._joined.reply(command, event.info)
        elif type(event) is Ack and command == "part" and event.room is not None:
            self._joined.parted(event.room)
        events.append(Reply(rid, event))

    def _logged_in(self, ok: LoginOk, relogin: bool) -> None:
        """A login_ok: adopt the server's epoch, cursor and limits, the rooms, queue the
        resends."""
        self.limits = ok.limits
        self.rooms_on = Feature.ROOMS.value in ok.features
        self._joined.reset(ok.rooms)
        self.log_epoch(ok.epoch, ok.seq, ok.replay)
        if relogin:
            # Sent again on the new connection, after the login: the server stores each
            # once (cid) and answers with the original ack.
            self._out += self._unacked.resends()

    def _on_replay(self, event: ReplayDone | ReplayTruncated, events: list[SessionEvent]) -> None:
        replay = self._replay
        if type(event) is ReplayTruncated:
            log.warning(
                "the server could not replay everything: it starts at seq %d", event.oldest_seq
            )
            if replay is not None:
                replay.truncated = True
            return
        assert isinstance(event, ReplayDone)
        self.replayed_to(event.seq)
        if replay is not None:
            self._replay = None
            events.append(replay.done())

    # ------------------------------------------------------------ user list

    def _apply_delta(self, event: UsersDelta, events: list[SessionEvent]) -> None:
        roster = self._roster
        if not roster.apply(event):
            self._out += _RESYNC  # out of step: the whole list again
        if roster.track and roster.known:  # no list yet (lazy_users): nothing to show
            events.append(UsersUpdated(event.joined, event.left))
