"""The client side of docs/PROTOCOL.md as a state machine with no I/O.

:class:`ClientSession` is to chatroom what h11's ``Connection`` is to HTTP: bytes in,
events out; requests in, bytes out. It owns every protocol decision a client makes:

- request ids, and which reply answers which request (§Frames);
- the login sequence, the credentials it keeps for logging in again after a reconnect, and
  when a reconnect is allowed at all (never after ``bad_credentials``,
  ``session_replaced`` or ``exit``);
- the user list: full lists and ``users_delta`` deltas, the ``count`` check and the
  request for a fresh list when they disagree (§Extensions);
- keepalive: when to ping, and when a silent server counts as dead (§Timeouts);
- with a message log (§Message log): the seq cursor, which makes every message come out
  once and in order across any number of reconnects, and never brings back a message
  this session sent (see "The cursor" below); ``since`` on every re-login; waiting for
  ``replay_done`` before a login counts as done; a cid on every ``pm``/``dm``, and the
  resend after a reconnect of those not acked;
- the limits ``login_ok`` announces (§Limits): a ``pm``/``dm`` over them is refused with
  :class:`~chatroom.errors.MessageTooLong` before it is sent, and a frame the server
  refused as ``too_large`` is never sent again;
- with ``rooms=True`` (docs/PROTOCOL.md §Rooms, protocol v2): asking for the extension,
  and the rooms the user is in (:attr:`ClientSession.rooms`), kept up to date from
  ``login_ok``, the replies to room commands and every ``room_event``, whose seqs move
  the cursor as messages' do (one cursor for every room);
- turning frames into events (a DM the user sent into :class:`~chatroom.events.DmSent`,
  never a :class:`~chatroom.protocol.DirectMessage`), and malformed frames into
  :class:`BadFrame` rather than an exception that would end the connection.

The cursor. ``cursor`` is a seq such that every message up to it that this user may see
has been passed out, or is one this session sent; a re-login resumes after it
(§Resume). It moves on what arrives (messages come in seq order on a connection) and on
the acks of our own sends, but an ack may not simply raise it: in a cluster the ack of
seq 50 can arrive before the broadcast of seq 49 from another node (acks are sent when
stored, deliveries come from the stream), and the seqs of DMs between other users never
reach us, so a gap below an ack may still be filled. So the session keeps the acked own
seqs above the cursor (``_own``), drops an arriving message whose seq is one of them,
moves the cursor through own seqs contiguous with it, and at ``replay_done`` to at
least its ``seq``. A replayed message of ours that was stored but whose ack was lost in
the cut carries the cid we sent it with: it is dropped too (the resend gets its ack,
with that seq), and so is one whose send timed out or was refused ``unavailable``
(stored by a commit whose answer was lost): the session knows the cids of its latest
``MAX_OWN`` sends, whatever became of them. A DM to ourselves is the exception: its
ack is not kept, since the DM itself arrives too and is passed out once, as
``DmSent``. The acked seqs kept are
bounded (``MAX_OWN``): a sender that receives nothing while others' DMs leave a gap
below its acks would keep one per send, so past the bound the oldest is taken as
settled and the cursor moves through it (a message still missing below that many of
our own acks is not on its way: the stream delivers "a moment later", docs/PROTOCOL.md
§Several nodes).

It has no sockets, threads or clocks: the caller passes ``now`` (any monotonic clock) and
writes the bytes it is given. It is not thread-safe: one owner, or one lock around every
call (``ChatClient`` holds its ``_lock``). It never calls user code.

The users: :class:`~chatroom.client.ChatClient` (a socket and two threads), chat-load's
``BotPool`` (thousands of sessions on one epoll thread, with a fast path of its own for
counting deliveries) and, later, the asyncio client.

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

import heapq
import logging
import random
import secrets
from dataclasses import dataclass, replace
from typing import Final, Literal, TypeVar

import msgspec

from chatroom.errors import (
    AuthError,
    ChatTimeout,
    MessageTooLong,
    ProtocolError,
    ServerError,
    error_for_code,
)
from chatroom.events import DmSent, HistoryPage, LoginResult, Receipt, Reconnected, ServerNotice
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
    PingCommand,
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
from chatroom.rooms import RoomEvent, RoomInfo, RoomInfoReply, apply_event, room_key

__all__ = [
    "LOGIN_FEATURES",
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

# The most acked own seqs kept above the cursor (module docstring, "The cursor").
MAX_OWN: Final = 10_000

# What every client of ours asks for at login (docs/PROTOCOL.md §Extensions); with
# ``rooms=True``, rooms too.
LOGIN_FEATURES: Final = (Feature.USERS_DELTA.value,)
ROOMS_FEATURES: Final = (*LOGIN_FEATURES, Feature.ROOMS.value)
PING: Final = encode(PingCommand())
EXIT: Final = encode(ExitCommand())
_RESYNC: Final = encode(UsersCommand())  # answered by a full list without an id

# Disconnect reasons after which logging in again would be wrong: we left, we logged in
# elsewhere, or the server refused the password.
_FINAL_REASONS: Final = frozenset(
    (ByeReason.EXIT, ByeReason.SESSION_REPLACED, ErrorCode.BAD_CREDENTIALS)
)


# ------------------------------------------------------------------ session events


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to request ``rid``; ``event`` is the server frame. For a login,
    ``result`` is what it achieved, its replay included (the reply comes after it)."""

    rid: int
    event: ServerEvent
    result: LoginResult | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The server answered request ``rid`` with an error."""

    rid: int
    error: ServerError


@dataclass(frozen=True, slots=True)
class UsersUpdated:
    """The user list changed; :attr:`ClientSession.users` is the new whole list."""

    joined: tuple[str, ...]
    left: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ended:
    """The session is over on this connection (``bye``, ``server_full``, or a re-login
    the server refused: its error code); ``reason`` becomes the
    :class:`~chatroom.events.Disconnect` reason. The caller closes the connection."""

    reason: str


@dataclass(frozen=True, slots=True)
class BadFrame:
    """The server sent a frame that breaks the protocol; it was skipped."""

    frame: bytes
    error: ProtocolError


SessionEvent = (
    Reply
    | Refused
    | UsersUpdated
    | Ended
    | BadFrame
    | Broadcast
    | DirectMessage
    | DmSent
    | RoomEvent
    | Reconnected
    | ServerNotice
)

# What :meth:`ClientSession.message_seq` makes of an arriving message's seq: ``new``
# (pass it out), ``seen`` (at or below the cursor: a duplicate), ``own`` (one this session
# sent: not passed back to it).
SeqVerdict = Literal["new", "seen", "own"]


class _Replay:
    """A login whose replay is running (docs/PROTOCOL.md §Resume)."""

    __slots__ = ("count", "ok", "relogin", "result", "rid", "truncated")

    def __init__(self, rid: int, result: LoginResult, relogin: bool, ok: LoginOk) -> None:
        self.rid = rid
        self.result = result
        self.relogin = relogin
        self.ok = ok
        self.count = 0
        self.truncated = False


def reconnect_delay(attempt: int, max_delay: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based): 0.25 s doubling,
    capped at ``max_delay``, with jitter so a crowd of clients does not return at once."""
    r = (rng or random).uniform(0.5, 1.0)
    return float(min(max_delay, 0.25 * 2 ** min(attempt, 32)) * r)


# ------------------------------------------------------------------ the session


class ClientSession:
    """See the module docstring.

    ``keepalive``: seconds of quiet (either way) after which :meth:`keepalive` asks for a
    ping; 0 turns pings off. ``timeout``: seconds more of silence from the server after
    which the connection counts as dead. ``track_users``: keep the user list (a swarm
    bot that never reads it says False: deltas cost it nothing, and the list in
    ``login_ok`` is skipped undecoded, so its login result has ``users=()``).
    """

    __slots__ = (
        "_cid_prefix",
        "_cids",
        "_credentials",
        "_decoder",
        "_ids",
        "_last_rx",
        "_last_tx",
        "_logins",
        "_out",
        "_own",
        "_pending",
        "_pinged",
        "_relogin",
        "_replay",
        "_resend",
        "_rooms",
        "_sent",
        "_sorted",
        "_user_set",
        "cursor",
        "epoch",
        "keepalive_interval",
        "limits",
        "max_frame",
        "rooms_on",
        "timeout",
        "track_users",
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
    ) -> None:
        self.keepalive_interval = keepalive
        self.timeout = timeout
        self.max_frame = max_frame
        self.track_users = track_users
        self.username: str | None = None  # canonical, once logged in
        self._decoder = FrameDecoder(max_frame)
        self._ids = 0
        # Requests sent on this connection and not answered yet: id -> command name.
        self._pending: dict[int, str] = {}
        # Logins in flight: id -> password, kept as credentials once login_ok arrives.
        self._logins: dict[int, str] = {}
        self._credentials: tuple[str, str] | None = None
        self._relogin: int | None = None  # id of the automatic re-login in flight
        self._user_set: set[str] = set()
        self._sorted: tuple[str, ...] | None = ()  # None: stale, sorted on demand
        self._out = bytearray()  # control frames the session decided to send
        self._last_rx = 0.0
        self._last_tx = 0.0
        self._pinged = False  # a ping is out since the last frame arrived
        # The message log (docs/PROTOCOL.md §Message log): the cursor (module docstring:
        # a message at or below it is a duplicate and is dropped) and the epoch it counts
        # in; the acked seqs of our own sends above the cursor, a heap.
        self.cursor: int | None = None
        self.epoch: str | None = None
        self._own: list[int] = []
        # A login whose replay is running: (request id, login_ok, relogin?, count, cut).
        self._replay: _Replay | None = None
        # pm/dm requests not acked yet, id -> (cid, frame): sent again after a reconnect.
        self._resend: dict[int, tuple[str, bytes]] = {}
        # What the server's login_ok said a client must respect (None: not said).
        self.limits: ServerLimits | None = None
        self._cid_prefix = secrets.token_hex(6)  # cids unique per sender, across processes
        self._cids = 0
        # Rooms (docs/PROTOCOL.md §Rooms): asked for at login; on when login_ok says so.
        self.want_rooms = rooms
        self.rooms_on = False
        self._rooms: dict[str, RoomInfo] = {}  # room_key -> the room, for rooms joined
        # The cids of this session's pm/dm requests, the latest MAX_OWN, whatever became
        # of them: acked, unacked, timed out (the caller gave up: stored or not, nobody
        # knows) or refused unavailable (a commit cut short may have stored it). A
        # replayed message with one of them is ours (module docstring, "The cursor").
        self._sent: dict[str, None] = {}

    # ------------------------------------------------------------ state

    @property
    def users(self) -> tuple[str, ...]:
        """The active users, sorted ignoring case (built only when asked for)."""
        if self._sorted is None:
            self._sorted = tuple(sorted(self._user_set, key=str.lower))
        return self._sorted

    @property
    def rooms(self) -> tuple[RoomInfo, ...]:
        """The rooms the user is in (``lobby`` not included), sorted ignoring case; empty
        unless the server turned rooms on (:attr:`rooms_on`)."""
        return tuple(sorted(self._rooms.values(), key=lambda r: r.name.lower()))

    def room(self, name: str) -> RoomInfo | None:
        """The room ``name`` (any case), if the user is in it."""
        return self._rooms.get(room_key(name))

    @property
    def user_count(self) -> int:
        return len(self._user_set)

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
            cid = cmd.cid
            if cid is None:
                self._cids += 1
                cid = f"{self._cid_prefix}-{self._cids}"
            data = encode(msgspec.structs.replace(cmd, cid=cid, id=rid))
            self._check_limits(cmd, data)
            self._resend[rid] = (cid, data)
            self._sent[cid] = None
            if len(self._sent) > MAX_OWN:
                del self._sent[next(iter(self._sent))]
        else:
            data = encode(msgspec.structs.replace(cmd, id=rid))
        self._pending[rid] = type(cmd).__struct_config__.tag  # type: ignore[assignment]
        return rid, data

    def _check_limits(self, cmd: PmCommand | DmCommand, data: bytes) -> None:
        """Refuse what the server would refuse (docs/PROTOCOL.md §Limits), before it is
        sent: a message over ``max_message`` characters would be answered with
        ``bad_request``; a frame over ``max_frame`` bytes with ``too_large`` and the end
        of the connection, and resent after every reconnect."""
        limits = self.limits
        if limits is None:
            return  # a server older than the field: it says so itself (too_large below)
        n = len(cmd.message)
        if n > limits.max_message:
            raise MessageTooLong(
                ErrorCode.BAD_REQUEST,
                f"message is {n:,} characters; the limit is {limits.max_message:,}",
                length=n,
                limit=limits.max_message,
            )
        size = len(data) - 1  # the limit counts the frame without its newline (§Framing)
        if size > limits.max_frame:
            raise MessageTooLong(
                ErrorCode.TOO_LARGE,
                f"message is {size:,} bytes as a frame; the limit is {limits.max_frame:,}",
                length=size,
                limit=limits.max_frame,
            )

    def login(self, username: str, password: str, *, since: int | None = None) -> tuple[int, bytes]:
        """The login request; on ``login_ok`` the credentials are kept for re-login.
        ``since``: resume after that seq (default: the session's cursor, if it has one)."""
        since = self.cursor if since is None else since
        rid, data = self.request(
            LoginCommand(
                username=username,
                password=password,
                features=ROOMS_FEATURES if self.want_rooms else LOGIN_FEATURES,
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
        :class:`~chatroom.errors.MessageTooLong` instead."""
        data = encode(cmd)
        if isinstance(cmd, PmCommand | DmCommand):
            self._check_limits(cmd, data)
        return data

    def logout(self) -> bytes:
        """The goodbye; no automatic re-login after it."""
        self._credentials = None
        return EXIT

    def forget_request(self, rid: int) -> None:
        """The caller gave up waiting for ``rid`` (timed out): a late reply is ignored."""
        self._pending.pop(rid, None)
        self._logins.pop(rid, None)
        self._resend.pop(rid, None)

    def data_sent(self, now: float) -> None:
        """The caller wrote bytes to the server at ``now`` (for keepalive)."""
        self._last_tx = now

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
        self._last_rx = self._last_tx = now
        self._pinged = False
        self._out.clear()
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
        keep = set(self._resend) if resend and self._credentials is not None else set()
        failed = [rid for rid in self._pending if rid not in keep]
        self._pending = {rid: self._pending[rid] for rid in keep if rid in self._pending}
        self._resend = {rid: self._resend[rid] for rid in keep}
        self._logins.clear()
        self._relogin = None
        self._replay = None
        if self._credentials is None:
            self.username = None
        return failed

    def keepalive(self, now: float) -> bytes:
        """Call on every pass of the read loop: a ping to send, or b"". Raises
        :class:`~chatroom.errors.ChatTimeout` once the server has been silent for
        ``keepalive + timeout`` seconds (docs/PROTOCOL.md §Timeouts)."""
        k = self.keepalive_interval
        if k <= 0:
            return b""
        quiet = now - self._last_rx
        if quiet >= k + self.timeout:
            raise ChatTimeout(f"no answer from the server for {quiet:.0f} s")
        # Checked on every pass, not only when nothing arrives: a client that receives a
        # steady stream must still send, or the server closes it for silence.
        if now - self._last_tx >= k or (quiet >= k and not self._pinged):
            self._pinged = True
            return PING
        return b""

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
        self._last_rx = now
        self._pinged = False
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
            event = decode_event(frame, users=self.track_users)
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
                # to ourselves is passed out once however it was sent (module docstring).
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
            self._room_event(event)
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
            self._set_users(event.users)
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
            events.append(Ended(event.reason))
        elif kind is ErrorEvent:
            assert isinstance(event, ErrorEvent)
            if event.code == ErrorCode.TOO_LARGE and self._refuse_too_large(event, events):
                return
            # Not tied to a request: an answer to an id-less send, or server_full, ...
            events.append(ServerNotice(error_for_code(event.code, event.message)))
            if event.code == ErrorCode.SERVER_FULL:
                events.append(Ended(ErrorCode.SERVER_FULL))
        # ack and pong without an id answer id-less sends: nothing to do.

    # ------------------------------------------------------------ the cursor

    def _is_me(self, name: str) -> bool:
        return self.username is not None and username_key(name) == username_key(self.username)

    def message_seq(self, seq: int, cid: str | None = None) -> SeqVerdict:
        """A broadcast or DM numbered ``seq`` arrived (``cid``: the one it carries, if it
        is ours): move the cursor, and say whether to pass it out (module docstring, "The
        cursor"). :meth:`handle_frame` calls it; so does a fast path that decodes
        deliveries itself."""
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

    def acked(self, seq: int, to: str | None = None) -> None:
        """An ack of seq ``seq`` (``to``: a DM's recipient, as the ack names it): a
        message of ours, never passed back to us (module docstring, "The cursor"). Not
        for a DM to ourselves: that one arrives too, and is passed out once, as
        :class:`~chatroom.events.DmSent`. :meth:`handle_frame` calls it; so does a fast
        path that decodes acks itself."""
        if self.cursor is not None and seq <= self.cursor:
            return
        if to is not None and self._is_me(to):
            return
        own = self._own
        heapq.heappush(own, seq)
        if len(own) > MAX_OWN and self.cursor is not None:
            settled = heapq.heappop(own)
            log.debug("seqs %d..%d never came: taken as settled", self.cursor + 1, settled - 1)
            self.cursor = settled
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

    # ------------------------------------------------------------ replies

    def _refuse_too_large(self, event: ErrorEvent, events: list[SessionEvent]) -> bool:
        """The server refused a frame of ours as ``too_large`` and is closing the
        connection (docs/PROTOCOL.md §Framing). The frame cannot be named (the server
        never read its id), but it is an unacked ``pm``/``dm`` over the limit, or, from a
        server that announced none, the largest: fail that request now rather than send
        it again after every reconnect. False if no such request is waiting."""
        limit = self.limits.max_frame if self.limits is not None else None
        over = [
            (len(data) - 1, rid)
            for rid, (_, data) in self._resend.items()
            if limit is None or len(data) - 1 > limit
        ]
        if not over:
            return False
        size, rid = max(over)
        del self._resend[rid]
        self._pending.pop(rid, None)
        log.warning("the server refused a %d-byte frame: %s", size, event.message)
        events.append(
            Refused(
                rid,
                MessageTooLong(
                    ErrorCode.TOO_LARGE,
                    f"message is {size:,} bytes as a frame; the server refused it "
                    f"({event.message})",
                    rid,
                    length=size,
                ),
            )
        )
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
            # Answered (acked or refused): never sent again. A refused send resent after
            # a reconnect would be delivered after its caller was told it was not.
            self._resend.pop(rid, None)
        if type(event) is ErrorEvent:
            err = error_for_code(event.code, event.message, rid)
            if relogin:
                log.error("re-login failed: %s", err)
                if isinstance(err, AuthError):
                    self._credentials = None  # never retry a password the server refused
                    events.append(Ended(ErrorCode.BAD_CREDENTIALS))
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
            self._set_users(event.users)
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
                self._replay = _Replay(rid, result, relogin, event)
                return
            events.append(Reconnected(result) if relogin else Reply(rid, event, result))
            return
        elif type(event) is UserList:
            self._set_users(event.users)
        elif type(event) is RoomInfoReply:
            self._room_reply(command, event)
        elif type(event) is Ack and command == "part" and event.room is not None:
            self._rooms.pop(room_key(event.room), None)
        events.append(Reply(rid, event))

    def _logged_in(self, ok: LoginOk, relogin: bool) -> None:
        """A login_ok: adopt the server's epoch, cursor and limits, the rooms, queue the
        resends."""
        self.limits = ok.limits
        self.rooms_on = Feature.ROOMS.value in ok.features
        self._rooms = {room_key(r.name): r for r in ok.rooms}
        if ok.epoch is not None:
            if self.epoch is not None and ok.epoch != self.epoch:
                log.warning("the server's message log is new (epoch changed): seqs restart")
                self.cursor = None
                self._own.clear()
            self.epoch = ok.epoch
        if self.cursor is None and ok.seq is not None and not ok.replay:
            self.cursor = ok.seq  # from now on nothing is missed: a reconnect resumes here
            self._through_own()
        if relogin and self._resend:
            # Sent again on the new connection, after the login: the server stores each
            # once (cid) and answers with the original ack.
            for _, data in self._resend.values():
                self._out += data

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
        if self.cursor is None or event.seq > self.cursor:
            self.cursor = event.seq  # everything up to it that we may see has been passed out
        self._through_own()
        if replay is None:
            return
        self._replay = None
        result = replace(replay.result, replayed=replay.count, replay_truncated=replay.truncated)
        events.append(
            Reconnected(result) if replay.relogin else Reply(replay.rid, replay.ok, result)
        )

    # ------------------------------------------------------------ rooms

    def _room_reply(self, command: str, event: RoomInfoReply) -> None:
        """A ``room_info`` reply: the room joined (the join's seq is ours, as an ack's),
        or fresher news of one the user is in."""
        if event.seq is not None:
            self.acked(event.seq)
        key = room_key(event.info.name)
        if command == "join" or key in self._rooms:
            self._rooms[key] = event.info

    def _room_event(self, event: RoomEvent) -> None:
        """Keep the rooms the user is in as ``event`` leaves them."""
        key = room_key(event.room)
        me = self.username or ""
        # A part, or being put out (kick, ban: docs/PROTOCOL.md §Moderation).
        gone = event.by if event.event == "part" else None
        if event.event in ("kick", "ban"):
            gone = event.user
        if gone is not None and self._is_me(gone):
            self._rooms.pop(key, None)
            return
        info = self._rooms.get(key)
        if info is None:
            if event.event == "join" and self._is_me(event.by):
                # Our own join, made by another session of ours: the rest comes with
                # the next room_info (members) or login.
                self._rooms[key] = RoomInfo(name=event.room, members=(me,))
            return
        self._rooms[key] = apply_event(info, event)

    # ------------------------------------------------------------ user list

    def _set_users(self, users: tuple[str, ...]) -> None:
        if self.track_users:
            self._user_set = set(users)
            self._sorted = users  # the server sends it sorted (docs/PROTOCOL.md §login)

    def _apply_delta(self, event: UsersDelta, events: list[SessionEvent]) -> None:
        if not self.track_users:
            return
        users = self._user_set
        if event.joined or event.left:
            # In place: O(changes), not O(users); a swarm applies every delta N times.
            users.difference_update(event.left)
            users.update(event.joined)
            self._sorted = None
        if len(users) != event.count:
            # Cannot happen with a correct server; heal instead of drifting for ever.
            log.warning(
                "user list out of step (%d here, %d on the server); asking for it again",
                len(users),
                event.count,
            )
            self._out += _RESYNC
        events.append(UsersUpdated(event.joined, event.left))


def disconnect_reason(ended: str | None, closing: bool) -> str:
    """The :class:`~chatroom.events.Disconnect` reason for a connection that ended after
    ``bye``/``Ended`` ``ended`` (None: none came), ``closing`` if we closed it."""
    if ended is not None:
        return ended
    return "closed" if closing else "network"


def receipt(ack: Ack, to: str | None = None) -> Receipt:
    """What ``pm``/``dm`` return for their ``ack``: the recipient's canonical name (or
    ``to`` as given, from a server that leaves it out), the seq, whether it was queued."""
    return Receipt(ack.to or to, ack.seq, ack.queued)


def older_than(page: HistoryPage) -> int | None:
    """The ``before`` of the page older than ``page``; None when there is none: how
    ``iter_history`` walks back (docs/PROTOCOL.md §history)."""
    if not page.has_more or not page.messages:
        return None
    return page.messages[0].seq
