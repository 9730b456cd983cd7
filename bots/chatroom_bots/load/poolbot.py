"""What the bot pool (chatroom_bots.load.pool) is made of: one bot's connection
(:class:`Bot`) and its states, the epoll bits the pool waits on, and what the pool is
handed from outside: the step's :class:`Schedule` and the :class:`Sink` it reports to.

Threads: a :class:`Bot` belongs to the pool's loop thread (``load-bots``) alone.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Protocol

from chatroom import Disconnect
from chatroom.session import ClientSession
from chatroom_bots.load.recorder import Delivery
from chatroom_bots.load.wslink import WsLink

# epoll's event bits; an error or a hang-up is read or written to find out what it is.
IN, OUT = select.EPOLLIN, select.EPOLLOUT
ERR = select.EPOLLERR | select.EPOLLHUP
IN_OR_ERR = IN | ERR


class Schedule(Protocol):
    """The sends of one step (chatroom_bots.load.worker.SendSchedule), played by the loop."""

    finished: threading.Event  # set by the loop when the step's last send is out

    def next_due(self) -> float | None:
        """``time.monotonic()`` of the next send; None when the step is over."""

    def pop(self) -> tuple[int, bytes, int | None]:
        """The next send (bot, frame, its room: None for a DM), advancing the schedule."""


# JOINING: logged in, putting itself in its rooms of the plan (--rooms); ready after.
CONNECTING, LOGGING_IN, JOINING, READY, CLOSED = range(5)
STARTING = (CONNECTING, LOGGING_IN, JOINING)


class Sink(Protocol):
    """Where the pool reports (chatroom_bots.load.recorder.Recorder)."""

    def sent(self, room: int | None, lag: float, due: float) -> None: ...
    def deliveries(self, batch: list[Delivery]) -> None:
        """Messages received: (bot, message, ``time.monotonic()`` µs at arrival, the
        frame's room) each, in the order they arrived for each bot."""

    def error(self, _: object = None) -> None: ...
    def disconnected(self, event: Disconnect) -> None: ...
    def login_time(self, micros: int) -> None: ...
    def replayed(self, n: int) -> None: ...
    def resumed(self, micros: int) -> None: ...


class Bot:
    """One bot: its socket, its session (the SDK's, I/O-free) and where it stands."""

    __slots__ = (
        "idx",
        "link",
        "out",
        "pending",
        "resuming",
        "session",
        "sock",
        "started",
        "state",
        "writing",
    )

    def __init__(
        self,
        idx: int,
        sock: socket.socket,
        session: ClientSession,
        resuming: bool,
        link: WsLink | None = None,
    ) -> None:
        self.idx = idx
        self.sock = sock
        self.link = link  # over WebSocket (--transport ws): its framing (wslink.py)
        self.session = session
        self.resuming = resuming  # cut by churn, logging in again with since
        self.state = CONNECTING
        self.started = time.monotonic()
        self.out = b""  # bytes the kernel did not take yet (rare: we send little)
        self.writing = True  # registered for EVENT_WRITE (to connect, or to flush out)
        self.pending: dict[int, str] = {}  # JOINING: request id -> "join ROOM" / "part ROOM"
