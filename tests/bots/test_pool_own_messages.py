"""chat-load's bot pool and a bot's own messages (issue 33): the pool's fast path keeps
the session's cursor by the session's rules, acks included, so a bot that is cut and
resumes is not handed back what it sent as if someone had sent it to it."""

from __future__ import annotations

import queue
import threading
import time

from chatroom import Disconnect
from chatroom.protocol import DmCommand, PingCommand, PmCommand, encode
from chatroom.testing import TestServer
from chatroom_bots.load.pool import BotPool
from chatroom_bots.load.recorder import Delivery

T = 10.0


class Sink:
    """What the pool reports, as queues and events for the test's thread."""

    def __init__(self) -> None:
        self.got: queue.Queue[tuple[int, str]] = queue.Queue()
        self.errors: queue.Queue[object] = queue.Queue()
        self.resumes: queue.Queue[int] = queue.Queue()

    def sent(self, room: int | None, lag: float, due: float) -> None:
        pass

    def deliveries(self, batch: list[Delivery]) -> None:
        for receiver, message, _, _ in batch:
            self.got.put((receiver, message))

    def error(self, what: object = None) -> None:
        self.errors.put(what)

    def disconnected(self, event: Disconnect) -> None:
        self.errors.put(event)

    def login_time(self, micros: int) -> None:
        pass

    def replayed(self, n: int) -> None:
        pass

    def resumed(self, micros: int) -> None:
        self.resumes.put(micros)


class Steps:
    """A schedule (chatroom_bots.load.pool.Schedule) the test plays step by step: each
    ``go(action)`` runs ``action`` on the pool's loop thread, which owns every bot, at
    its next look at the schedule."""

    def __init__(self, pool: BotPool) -> None:
        self.pool = pool
        self.finished = threading.Event()
        self._lock = threading.Lock()  # guards _todo (the test's thread and the loop's)
        self._todo: list[tuple[int, bytes]] = []

    def go(self, bot: int, frame: bytes) -> None:
        with self._lock:
            self._todo.append((bot, frame))
        self.pool._wake()

    def next_due(self) -> float | None:
        with self._lock:
            # Due at once (0: long past), or look again soon; never None, which would
            # end the schedule.
            return 0.0 if self._todo else time.monotonic() + 0.5

    def pop(self) -> tuple[int, bytes, bool]:
        with self._lock:
            bot, frame = self._todo.pop(0)
        if not frame:  # the cut: as churn does it (loop thread)
            self.pool._cut(self.pool._bots[bot], time.monotonic())
            return 1, encode(PingCommand()), False  # sent by the other bot: harmless
        return bot, frame, True


def test_a_resumed_bot_is_not_handed_back_what_it_sent(server: TestServer) -> None:
    """Before: the fast path ignored acks, so the cursor stayed below the bot's own sends
    and the resume replayed them, each counted as a delivery to their own sender."""
    sink = Sink()
    pool = BotPool(server.host, server.port, ["talker", "hearer"], "pool password", sink)
    steps = Steps(pool)
    pool.start([0, 1])
    try:
        assert pool.wait_logged_in(threading.Event()) == []
        pool.play(steps)
        # The pm and the DM, then a frame the server refuses: its error comes after
        # both acks on talker's connection, so once the sink hears of it the pool has
        # read them.
        said = encode(PmCommand(message="said by talker"))
        told = encode(DmCommand(to="hearer", message="told by talker"))
        steps.go(0, said + told + b'{"command":"no such command"}\n')
        assert sorted(sink.got.get(timeout=T) for _ in range(2)) == [
            (1, "said by talker"),
            (1, "told by talker"),
        ]
        sink.errors.get(timeout=T)
        steps.go(0, b"")  # cut talker: it logs in again with since
        sink.resumes.get(timeout=T)
        steps.go(1, encode(PmCommand(message="said by hearer")))
        assert sink.got.get(timeout=T) == (0, "said by hearer")
        assert sink.got.empty()
        assert sink.errors.empty()
    finally:
        pool.close()
