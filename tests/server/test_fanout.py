"""The combining fan-out (server/chatroom_server/fanout.py) on real sockets: nothing lost,
each sender's order kept, acks after broadcasts, and ordered replies behind broadcasts."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest

from chatroom_server.fanout import FanOut
from chatroom_server.outbox import Flusher, Outbox


class _Member:
    def __init__(self, outbox: Outbox, peer: socket.socket) -> None:
        self.outbox = outbox
        self.peer = peer
        self.handed = 0
        self.done = 0
        self._buf = b""

    def lines(self, n: int) -> list[bytes]:
        """The next ``n`` lines this member's client receives."""
        out: list[bytes] = []
        while len(out) < n:
            while b"\n" not in self._buf:
                chunk = self.peer.recv(65536)
                assert chunk, "closed early"
                self._buf += chunk
            line, self._buf = self._buf.split(b"\n", 1)
            out.append(line)
        return out


@pytest.fixture
def members() -> Iterator[list[_Member]]:
    flusher = Flusher()
    flusher.start()
    made: list[_Member] = []
    socks: list[socket.socket] = []
    for i in range(6):
        a, b = socket.socketpair()
        b.settimeout(10)
        socks += [a, b]
        made.append(_Member(Outbox(a, flusher, name=f"m{i}"), b))
    yield made
    flusher.stop()
    for s in socks:
        s.close()


def test_concurrent_senders_reach_everyone_else_in_order_with_their_acks(
    members: list[_Member],
) -> None:
    fan = FanOut(lambda: tuple(members))
    senders, n = members[:4], 400
    start = threading.Barrier(len(senders))

    def send(k: int, me: _Member) -> None:
        start.wait(10)
        for i in range(n):
            fan.broadcast(me, [f"{k} {i}\n".encode()], [f"ack {k} {i}\n".encode()])

    threads = [threading.Thread(target=send, args=(k, m)) for k, m in enumerate(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for idx, m in enumerate(members):
        mine = idx if idx < len(senders) else None
        want = (len(senders) - (mine is not None)) * n + (n if mine is not None else 0)
        seen: dict[str, list[int]] = {}
        for line in m.lines(want):
            words = line.decode().split()
            key = "ack" if words[0] == "ack" else words[0]
            seen.setdefault(key, []).append(int(words[-1]))
        for k in range(len(senders)):
            if k != mine:
                assert seen[str(k)] == list(range(n)), f"member {idx}, sender {k}"
        assert str(mine) not in seen  # nobody hears their own broadcasts
        if mine is not None:
            assert seen["ack"] == list(range(n))
        assert m.done == m.handed


def test_after_waits_behind_queued_broadcasts_and_a_round_runs_on_whoever_is_free(
    members: list[_Member],
) -> None:
    a, b = members[0], members[1]
    fan = FanOut(lambda: (a, b))
    ran: list[str] = []
    fan.after(a, lambda: ran.append("nothing queued: at once"))
    assert ran == ["nothing queued: at once"]
    with fan._lock:  # another thread mid-round: nobody waits, everything is queued
        fan.broadcast(a, [b"one\n"], [b"ack one\n"])
        fan.after(a, lambda: b.outbox.send(b"dm after one\n"))
        assert a.handed == 2 and a.done == 0
        b.peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.peer.recv(1)  # nothing sent yet
        b.peer.settimeout(10)
    fan._combine()  # what the holder does after letting go
    assert b.lines(2) == [b"one", b"dm after one"]
    assert a.lines(1) == [b"ack one"]
    assert a.done == a.handed


def test_a_failing_item_is_logged_and_the_rest_still_go_out(
    members: list[_Member], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = members[0], members[1]
    fan = FanOut(lambda: (a, b))

    def bug() -> None:
        raise RuntimeError("a bug in a reply")

    with fan._lock:
        fan.broadcast(a, [b"before\n"], [b"ack\n"])
        fan.after(a, bug)
        fan.broadcast(a, [b"after\n"], [b"ack\n"])
    with caplog.at_level(logging.ERROR, logger="chatroom_server.fanout"):
        fan._combine()
    assert fan.crashes == 1 and "fan-out round failed" in caplog.text
    assert b.lines(2) == [b"before", b"after"]
    assert a.done == a.handed == 3


def test_settle_waits_for_the_queue_and_gives_up_after_its_timeout(
    members: list[_Member],
) -> None:
    a, b = members[0], members[1]
    fan = FanOut(lambda: (a, b))
    assert fan.settle(a, timeout=0.01)  # nothing queued
    with fan._lock:  # a round that does not end (the lock is never let go in time)
        fan.broadcast(a, [b"stuck\n"], [b"ack\n"])
        assert not fan.settle(a, timeout=0.05)
    fan._combine()
    assert fan.settle(a, timeout=10)
    assert b.lines(1) == [b"stuck"]


class _WatchedLock:
    """A lock that says when a thread is about to wait for it (blocking acquire)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waiting = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking:
            self.waiting.set()
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()


def test_past_high_water_a_reader_waits_its_turn_and_then_sends_everything(
    members: list[_Member],
) -> None:
    a, b = members[0], members[1]
    fan = FanOut(lambda: (a, b))
    fan.high_water, fan.high_water_wait = 3, 60.0
    lock = fan._lock = _WatchedLock()  # type: ignore[assignment]
    done = threading.Event()

    def overloaded_reader() -> None:
        for i in range(5):  # the 5th finds 4 queued: past high water, so it waits
            fan.broadcast(a, [b"%d\n" % i], [b""])
        done.set()

    assert lock.acquire(blocking=False)  # a round in progress
    lock.waiting.clear()
    t = threading.Thread(target=overloaded_reader)
    t.start()
    assert lock.waiting.wait(10)  # the reader waits for the lock instead of returning
    assert not done.is_set()  # ... so it is not reading its client meanwhile
    lock.release()  # the round ends: the waiting reader gets the lock and sends it all
    assert done.wait(10)
    t.join(10)
    assert b.lines(5) == [b"0", b"1", b"2", b"3", b"4"]
