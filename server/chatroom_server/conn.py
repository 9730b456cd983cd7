"""One client connection of the server: its socket, its outbox and the state its reader
thread keeps, on top of the sans-I/O :class:`~chatroom_server.session.ServerSession` (the
protocol's own state and rules). Every part of the server (presence, login, replay, the
handlers, the transports) works on these; none of them imports the server.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chatroom.protocol import Ack, Broadcast, RequestId
from chatroom_server.messagelog import NewMessage
from chatroom_server.outbox import Outbox
from chatroom_server.readers import ReaderThread
from chatroom_server.session import ServerSession, SessionRules

if TYPE_CHECKING:
    from chatroom_server.irc import IrcSession
    from chatroom_server.web import WebSession

# A connection's message batch when it has none (Conn.batch): shared, never appended to.
UNUSED: list[Any] = []


class Conn(ServerSession):
    """One client connection: its protocol state and rules are the
    :class:`~chatroom_server.session.ServerSession` it extends. Fields below
    ``username`` belong to its reader thread
    (``last_rx`` is also read by the housekeeping sweep; a stale read only delays it),
    except ``done``, written under the FanOut's lock (chatroom_server.fanout), and
    ``late_inbox``, which the cluster's consumer thread sets (a bool; a stale read by
    the reader thread leaves DMs waiting, the safe side)."""

    __slots__ = (
        "acks",
        "addr",
        "announced",
        "batch",
        "connected_at",
        "deltas",
        "done",
        "early",
        "events",
        "failed_logins",
        "guest",
        "handed",
        "handshaken",
        "in_login",
        "inbox_range",
        "ip",
        "irc",
        "last_rx",
        "late_inbox",
        "later",
        "lazy_users",
        "left",
        "msgs",
        "new_account",
        "num",
        "oline",
        "oper",
        "outbox",
        "rids",
        "rooms",
        "slot",
        "sock",
        "thread",
        "unread",
        "web",
    )

    def __init__(
        self,
        num: int,
        sock: socket.socket,
        ip: str,
        addr: str,
        outbox: Outbox,
        rules: SessionRules,
        now: float,
    ) -> None:
        super().__init__(rules, now)  # its username, set once, under Presence.lock
        self.num = num
        self.sock = sock
        self.ip = ip
        self.addr = addr
        self.outbox = outbox
        self.connected_at = now
        self.thread: ReaderThread | None = None
        # It holds one of the login slots (admission.py): its reader thread's alone.
        self.slot = False
        # Its login runs on the admission thread, before it has a thread of its own
        # (FirstLook.first): set and cleared there, around that login.
        self.early = False
        # Set before its thread starts, for that thread (FirstLook.first, serve): bytes
        # read but not yet handled, and what to run first (a login's replay, or the
        # end of a connection the early login closed: False ends it).
        self.unread = b""
        self.later: Callable[[], bool] | None = None
        # Its TLS session is up (chatroom_server.tlsconn): set once, by the admission
        # thread before its thread starts, or by its thread.
        self.handshaken = False
        # Its first login registered its account on the admission thread, committed
        # since (EarlyLogin._registered): the login that follows says new_user. Set once there.
        self.new_account = False
        self.deltas = False  # asked for users_delta at login (set before login_ok)
        self.lazy_users = False  # and for lazy_users with it: login_ok without names
        self.rooms = False  # asked for rooms at login, and the server has them (§Rooms)
        self.guest = False  # an IRC guest's session (login.guest_login; §Guest rooms)
        # An IRC O-line made this session a server operator (chatroom_server.olines): set
        # once by its reader thread (OPER), read by others' (WHOIS, WHO): a bool.
        self.oper = False
        self.oline: str | None = None  # the O-line's name, with oper (the audit log's)
        # Made by its reader thread as it leaves, set by the reaper once the departure
        # is done (Listeners.serve, Presence.reap).
        self.left: threading.Event | None = None
        # Broadcasts (and their acks) of the frames of the current read, not yet sent.
        # All five are UNUSED (shared, never appended to) until _public makes them: five
        # empty lists are 280 bytes, and most connections are idle most of the time
        # (memory per connection, docs/PERFORMANCE.md).
        self.batch: list[bytes] = UNUSED
        self.acks: list[bytes] = UNUSED
        # The events each broadcast and its ack encode, for the transports that render
        # them (chatroom_server.frames).
        self.events: list[tuple[Broadcast, Ack]] = UNUSED
        # With the message log: what to store for each of them, and their request ids.
        self.msgs: list[NewMessage] = UNUSED
        self.rids: list[RequestId] = UNUSED
        # Items in the FanOut queue: ``handed`` by this reader, ``done`` by the fan-out.
        self.handed = 0
        self.done = 0
        # Every users_delta subscriber has been told this user joined (§Ordering).
        self.announced = False
        self.failed_logins = 0
        # A password is being checked (maybe queued for a hashing slot): the login window
        # must not close a connection for the server's own slowness.
        self.in_login = False
        self.last_rx = now
        self.irc: IrcSession | None = None  # an IRC client (chatroom_server.irc)
        self.web: WebSession | None = None  # a web client (chatroom_server.web)
        # With the message log, from login to its exit (Replay.replay_received): the
        # seqs (after, upto] of the DMs waiting in the inbox that its replay gave it
        # (after == upto: none; upto is the login's cut), until it shows it has them.
        self.inbox_range: tuple[int, int] | None = None
        # A DM that waited in the inbox reached it live (in a cluster every DM waits
        # there, docs/CLUSTER.md): written by the cluster's consumer thread.
        self.late_inbox = False

    def __repr__(self) -> str:
        return f"<conn {self.num} {self.addr} {self.username or '-'}>"
