"""The fan-out's lock handed over in turn (server/chatroom_server/handover.py):
exclusive() callers are not refused for the length of the line ahead of them, a pass
goes out between two of them, and a stuck holder still makes a caller give up."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator

import pytest

from chatroom_server.fanout import FanOut
from tests.helpers import SocketMember, socket_members


@pytest.fixture
def pair() -> Iterator[list[SocketMember]]:
    with socket_members(2) as made:
        yield made


def test_exclusive_callers_are_not_refused_for_the_length_of_the_line(
    pair: list[SocketMember],
) -> None:
    """Ten callers, each holding the lock 0.15 s, with a timeout of 1 s: the last waits
    1.35 s in all, but the lock changes hands all along, so nobody is refused (the lock
    was let go to whoever grabbed it first: those who waited 1 s were refused)."""
    fan = FanOut(lambda: tuple(pair))
    busy = threading.Event()  # never set: each holder's work takes 0.15 s

    def work() -> None:
        busy.wait(0.15)

    refused: list[BaseException] = []

    def call() -> None:
        try:
            fan.exclusive(work, timeout=1.0)
        except TimeoutError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=call) for _ in range(10)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert time.monotonic() - began >= 1.5  # the line was longer than the timeout
    assert refused == []
    fan.close()


class _Line(deque[threading.Event]):
    """The hand-over line, saying when someone joins it."""

    def __init__(self) -> None:
        super().__init__()
        self.joined = threading.Event()

    def append(self, turn: threading.Event) -> None:
        super().append(turn)
        self.joined.set()


def test_a_pass_goes_out_between_two_exclusive_callers_and_a_stuck_one_times_out(
    pair: list[SocketMember],
) -> None:
    a, b = pair
    fan = FanOut(lambda: (a, b))
    line = fan._handover_line._line = _Line()
    go = threading.Event()
    inside = threading.Event()
    sent_before: list[bool] = []

    def first() -> None:
        inside.set()
        assert go.wait(10)

    def second() -> None:
        sent_before.append(a.done == a.handed)

    holder = threading.Thread(target=fan.exclusive, args=(first,))
    holder.start()
    assert inside.wait(10)
    fan.broadcast(a, [b"meanwhile\n"], [b"ack\n"])  # queued: the lock is held
    with pytest.raises(TimeoutError):  # the holder is stuck: no hand-over for 0.2 s
        fan.exclusive(lambda: None, timeout=0.2)
    assert not line  # given up: out of the line
    line.joined.clear()
    waiter = threading.Thread(target=fan.exclusive, args=(second,))
    waiter.start()
    assert line.joined.wait(10)
    go.set()
    holder.join(10)
    waiter.join(10)
    assert sent_before == [True]  # the queued pass went out before the next caller
    assert b.lines(1) == [b"meanwhile"] and a.lines(1) == [b"ack"]
    fan.close()
