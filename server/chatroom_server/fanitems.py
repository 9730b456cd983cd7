"""What travels through the fan-out's queue (chatroom_server.fanout): a connection's
batch of public messages (:class:`Batch`), a DM (:class:`Direct`), and what the fan-out
needs of a connection (:class:`Member`, :class:`RoomMember`) and of the rooms
(:data:`RoomCheck`). Plain data: each item is written by the reader thread that makes it,
then only under ``FanOut._lock`` once queued (chatroom_server.fanout, "Threads")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from chatroom.protocol import Ack, Broadcast, DirectMessage, RequestId
from chatroom_server.messagelog import NewMessage
from chatroom_server.outbox import Outbox


class Member(Protocol):
    """What the fan-out needs of a connection (chatroom_server.conn.Conn)."""

    outbox: Outbox
    username: str | None  # once logged in (the session a sender's messages skip)
    handed: int  # items this connection put in the queue (its reader thread writes it)
    done: int  # of those, how many have been sent (written under FanOut._lock)


class RoomMember(Member, Protocol):
    """A connection as a room's message reaches it (chatroom_server.roomwire.Conn)."""

    rooms: bool  # asked for rooms at login: only those get room traffic


# Who may say a public message in a room, and who hears it (chatroom_server.roomwire
# installs it, :meth:`FanOut.serve_rooms`): ``(sender, room, request id, ts)`` to the
# room's canonical name, its members' username keys (the sender's among them) and whether
# the message is stored (False: a guest room's, delivered live only with no seq,
# docs/PROTOCOL.md §Guest rooms); raises ProtocolError (``no_such_room``, ``not_in_room``,
# ``muted``). Called under ``_lock``.
RoomCheck = Callable[[str, str, RequestId, float], tuple[str, frozenset[str], bool]]


class Batch:
    """The broadcasts of one read from one connection, and their acks; with the message
    log, what to store (``msgs``) and the request ids (``rids``) to answer if it fails.
    The frames are whole until stored, then ``data`` (``n_data`` frames) and ``ack``
    are set.

    ``rooms``: some of its messages name a room (``NewMessage.room``). Such a batch is
    checked under the lock (``members`` gets each message's room members, None for a
    lobby one; ``refused`` the error frames of those its sender may not say; ``live``
    the indexes of those to a guest room, sent but never stored) and, once stored, sent
    by ``parts``: its messages in order as (members, frames, how many) runs, each run
    one room's consecutive messages or lobby's (members None).

    ``events``: each broadcast and its ack as the events they encode (None: only the
    frames, as a test hands them); ``data``, ``ack`` and ``parts`` then carry them as
    :class:`~chatroom_server.frames.Frames`, for the transports that render events.

    ``deferred``: its room messages reach so many members that they go out in turns
    (chatroom_server.fanturns); its ack and its count in ``Member.done`` wait for the
    last of them."""

    __slots__ = (
        "ack",
        "acks",
        "conn",
        "data",
        "deferred",
        "events",
        "frames",
        "live",
        "members",
        "msgs",
        "n_data",
        "parts",
        "refused",
        "rids",
        "rooms",
        "size",
    )

    def __init__(
        self,
        conn: Member,
        frames: list[bytes],
        acks: list[bytes],
        msgs: list[NewMessage] | None,
        rids: list[RequestId] | None,
        events: list[tuple[Broadcast, Ack]] | None = None,
    ) -> None:
        self.conn = conn
        self.frames = frames
        self.acks = acks
        self.msgs = msgs
        self.rids = rids
        self.events = events
        self.data = b""
        self.n_data = 0  # how many frames ``data`` holds (the deliveries per recipient)
        self.ack = b""
        self.size = sum(map(len, frames))  # bytes each recipient gets
        # A loop, not any() over a generator: the generator alone was some 0.7 µs of
        # every batch (docs/PERFORMANCE.md, "The small room's pass").
        rooms = False
        if msgs is not None:
            for m in msgs:
                if m.room is not None:
                    rooms = True
                    break
        self.rooms = rooms
        # Made by _check_rooms for a batch with rooms; a lobby batch (the hot path) only
        # points at the shared empty ones, never written.
        self.members: list[tuple[str, frozenset[str]] | None] = _NO_MEMBERS
        self.refused: dict[int, bytes] = _NONE_REFUSED
        self.live: set[int] = _NONE_LIVE
        self.parts: list[tuple[tuple[str, frozenset[str]] | None, bytes, int]] | None = None
        self.deferred = False


_NO_MEMBERS: list[tuple[str, frozenset[str]] | None] = []
_NONE_REFUSED: dict[int, bytes] = {}
_NONE_LIVE: set[int] = set()


class Direct:
    """A DM to store and deliver (with the message log). ``target`` is looked up when it
    is stored, under the fan-out lock: an offline recipient gets it at their next login
    and the sender's ack says ``queued``. In a cluster every DM also waits in the inbox
    (:meth:`FanOut._store`)."""

    __slots__ = ("ack", "conn", "events", "frame", "lookup_key", "msg", "rid", "target")

    def __init__(
        self,
        conn: Member,
        frame: bytes,
        ack: bytes,
        msg: NewMessage,
        rid: RequestId,
        lookup_key: str,
        events: tuple[DirectMessage, Ack],
    ) -> None:
        self.conn = conn
        self.frame = frame  # the dm frame without its seq
        self.ack = ack  # the ack without its seq
        self.events = events  # what the two encode (chatroom_server.frames)
        self.msg = msg
        self.rid = rid
        self.lookup_key = lookup_key
        self.target: Member | None = None


def with_seq(frame: bytes, seq: int, queued: bool = False) -> bytes:
    """``frame`` (one JSON object and its newline) with ``"seq"`` added: cheaper than
    encoding again, on the path every message takes."""
    extra = b',"queued":true}\n' if queued else b"}\n"
    return b'%s,"seq":%d%s' % (frame[:-2], seq, extra)
