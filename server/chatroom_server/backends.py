"""What the server opens as it starts, shared by its parts (docs/ARCHITECTURE.md).

:class:`ChatServer <chatroom_server.server.ChatServer>` makes one :class:`Backends` and
hands it to each part that needs one of these (presence, login, replay, the handlers):
the account store, the server gate, the message log, the rooms, the cluster's bus, the
fan-out. Owner: ``ChatServer.start()``, which fills it in before any thread that reads
it runs; nothing changes it after (``stop()`` only closes what is in it). So it needs no
lock, and every part reads a field where it uses it: none keeps a copy of its own that
could miss the fan-out that ``start()`` puts in place of the one made with the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatroom_server.accounts import AccountStore
    from chatroom_server.cluster import ClusterBus
    from chatroom_server.fanout import FanOut
    from chatroom_server.roomwire import RoomWire
    from chatroom_server.servergate import ServerGate
    from chatroom_server.storage import MessageStore


class Backends:
    """The server's open stores and services; None: not opened (yet, or at all)."""

    __slots__ = ("bus", "fanout", "gate", "log", "rooms", "store", "stored_seq")

    # Set by ChatServer.__init__ once the presence whose roster it reads is made;
    # start() replaces it with one that has the message log.
    fanout: FanOut

    def __init__(self) -> None:
        self.store: AccountStore | None = None
        self.gate: ServerGate | None = None  # server bans, registrations, operators
        self.log: MessageStore | None = None  # None with --history off
        self.rooms: RoomWire | None = None  # docs/PROTOCOL.md §Rooms, with the log
        self.bus: ClusterBus | None = None  # the cluster's Redis side (--cluster)
        # Cluster: the highest seq stored by any node (login's catch-up, replay.py).
        self.stored_seq: Callable[[], int] | None = None
