"""The combining fan-out (server/chatroom_server/fanout.py) on real sockets: nothing lost,
each sender's order kept, acks after broadcasts, and ordered replies behind broadcasts."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatroom.protocol import Ack, Broadcast, decode_event, encode
from chatroom_server.fanout import PASS_BYTES, FanOut
from chatroom_server.frames import Frames
from chatroom_server.messagelog import MessageLog, NewMessage
from chatroom_server.outbox import Flusher, Outbox
from tests.helpers import SocketMember, socket_members


@pytest.fixture
def members() -> Iterator[list[SocketMember]]:
    with socket_members(6) as made:
        yield made


def test_concurrent_senders_reach_everyone_else_in_order_with_their_acks(
    members: list[SocketMember],
) -> None:
    fan = FanOut(lambda: tuple(members))
    senders, n = members[:4], 400
    start = threading.Barrier(len(senders))

    def send(k: int, me: SocketMember) -> None:
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
        # The holder counts an item done just after sending it: wait for that.
        assert fan.settle(m, timeout=10) and m.done == m.handed
    fan.close(timeout=10)


def test_after_waits_behind_queued_broadcasts_and_a_round_runs_on_whoever_is_free(
    members: list[SocketMember],
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
    members: list[SocketMember], caplog: pytest.LogCaptureFixture
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
    members: list[SocketMember],
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
    members: list[SocketMember],
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


def test_past_high_water_a_thread_that_never_waits_returns_and_nothing_is_lost(
    members: list[SocketMember],
) -> None:
    """The admission thread (FanOut.never_waits) queues past high water without waiting
    for the lock (logins queue behind it), and without sending a pass of its own."""
    a, b = members[0], members[1]
    fan = FanOut(lambda: (a, b))
    fan.high_water, fan.high_water_wait = 3, 60.0
    lock = fan._lock = _WatchedLock()  # type: ignore[assignment]
    done = threading.Event()

    def admission_thread() -> None:
        fan.never_waits()
        for i in range(5):  # past high water from the 5th on
            fan.broadcast(a, [b"%d\n" % i], [b""])
        done.set()

    assert lock.acquire(blocking=False)  # a round in progress
    lock.waiting.clear()
    t = threading.Thread(target=admission_thread)
    t.start()
    assert done.wait(10)  # returned with the lock still held by the round
    assert not lock.waiting.is_set()  # never waited for it
    t.join(10)
    assert len(fan._queue) == 5
    lock.release()
    fan._combine()  # what the round's holder does once it lets go (module docstring)
    assert b.lines(5) == [b"0", b"1", b"2", b"3", b"4"]

    def one_more() -> None:  # the lock free: the helper sends it, not this thread
        fan.never_waits()
        fan.broadcast(a, [b"5\n"], [b""])

    t = threading.Thread(target=one_more)
    t.start()
    t.join(10)
    assert b.lines(1) == [b"5"]
    assert fan._helper is not None and fan._helper.name == "chat-fanout"
    assert fan.settle(a, timeout=10)
    fan.close(timeout=10)


def test_a_reader_hands_a_paused_queue_to_the_helper_and_returns(
    members: list[SocketMember],
) -> None:
    """Coalescing pauses happen on the helper thread, never on a reader: a reader that
    finds a pause due returns at once (back to its own client), and the helper sends its
    message when the pause ends; close() cuts the pause short and ends the helper."""
    a, b = members[0], members[1]
    fan = FanOut(lambda: (a, b))
    fan._paced_until = fan._clock() + 3600  # busy: the next pass must wait an hour
    fan.broadcast(a, [b"later\n"], [b"ack\n"])  # returns: the pause is not this thread's
    b.peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.peer.recv(1)  # the helper holds it back for the pause
    b.peer.settimeout(10)
    helper = fan._helper
    assert helper is not None and helper.name == "chat-fanout" and helper.is_alive()
    fan.close(timeout=10)
    assert not helper.is_alive()
    assert b.lines(1) == [b"later"] and a.lines(1) == [b"ack"]
    assert a.done == a.handed


def test_a_reader_past_its_budget_leaves_the_rest_to_the_helper(
    members: list[SocketMember],
) -> None:
    a, b = members[0], members[1]
    fan = FanOut(lambda: (a, b))
    with fan._lock:
        fan.broadcast(a, [b"one\n"], [b""])  # queued: the lock is taken
        assert fan._drain(until=fan._clock() - 1)  # budget spent: handed over at once
        assert len(fan._queue) == 1
    # The helper, woken, takes the lock once it is free and sends the queue.
    assert b.lines(1) == [b"one"]
    assert fan.settle(a, timeout=10)
    fan.close(timeout=10)


def test_a_costly_round_paces_the_next_and_a_cheap_one_does_not(
    members: list[SocketMember],
) -> None:
    """After a round of d seconds the next waits until d / DUTY after it began, at most
    ``coalesce``; rounds too cheap to be worth a pause set none (fake clock: each
    reading advances it by ``step``)."""
    a, b = members[0], members[1]
    now = [100.0]
    step = [0.004]  # under the reader's 5 ms budget: the reader makes the pass itself

    def clock() -> float:
        now[0] += step[0]
        return now[0]

    fan = FanOut(lambda: (a, b), coalesce=0.010, clock=clock)
    fan._round_cost = 0.006  # rounds have been costing 6 ms: busy
    fan.broadcast(a, [b"x\n"], [b""])  # the round's two clock readings are 4 ms apart
    # Paced: rounds now average 5.5 ms; 3 x 5.5 = 16.5 ms, capped at 10, from its end.
    ended = now[0]
    assert fan._round_cost == pytest.approx(0.0055)
    assert fan._paced_until == pytest.approx(ended + 0.010)
    fan._round_cost = 0.0
    step[0] = 0.00001  # rounds of 10 µs: 30 µs of pause is not worth a sleep
    paced = fan._paced_until
    now[0] = paced + 1  # the previous pause is over
    fan.broadcast(a, [b"y\n"], [b""])
    assert fan._paced_until == paced
    fan._round_cost = 0.001  # cheap rounds so far, then one slow one (a GC pass, say)
    step[0] = 0.004
    fan.broadcast(a, [b"w\n"], [b""])
    assert fan._paced_until == paced  # an average of 1.75 ms: no pause
    off = FanOut(lambda: (a, b), coalesce=0.0, clock=clock)
    step[0] = 0.004
    off._round_cost = 0.006
    off.broadcast(a, [b"z\n"], [b""])
    assert off._paced_until == 0.0  # --coalesce-ms 0: never paced
    assert b.lines(4) == [b"x", b"y", b"w", b"z"]
    assert fan._helper is None and off._helper is None  # no pause, no hand-over
    fan.close()
    off.close()


def test_a_pass_takes_at_most_pass_bytes_and_a_backlog_is_not_paused_for(
    members: list[SocketMember],
) -> None:
    """A burst that piled up is sent in passes of about PASS_BYTES each, back to back:
    a pass that could not take everything sets no pause, since the rest is a batch
    already (and a healthy recipient must not get a whole burst as one backlog)."""
    a, b = members[0], members[1]
    now = [100.0]

    def clock() -> float:
        now[0] += 0.004  # each round "takes" 4 ms: worth a pause when not behind
        return now[0]

    fan = FanOut(lambda: (a, b), coalesce=0.010, clock=clock)
    fan._round_cost = 0.006  # busy: rounds have been costing 6 ms
    big = 40 * 1024
    assert big < PASS_BYTES <= 2 * big  # a pass takes two of them
    passes: list[int] = []
    with fan._lock:
        for i in range(3):
            fan.broadcast(a, [b"%d" % i + b"x" * big + b"\n"], [b""])
        send_run = fan._sender.send_run

        def counted(run: list[Any]) -> None:
            passes.append(len(run))
            send_run(run)

        fan._sender.send_run = counted  # type: ignore[method-assign]
        assert not fan._drain(until=None)
    assert passes == [2, 1]
    assert fan._paced_until > 100  # the last pass emptied the queue: paced after it
    got = [line[:1] for line in b.lines(3)]
    assert got == [b"0", b"1", b"2"]
    fan.close()


@pytest.mark.parametrize("together", [False, True])
def test_a_message_reaches_no_session_of_its_sender(
    members: list[SocketMember], together: bool
) -> None:
    """docs/RELIABILITY.md F1: a sender cut after sending logs in again before the round
    that sends its message: its new session must not get it live (without a cid, the
    client could not tell it from someone else's). ``together``: in one round with
    another sender's (the lock held meanwhile, as a busy fan-out holds it)."""
    old, new, other = members[:3]
    old.username = new.username = "Alice"
    other.username = "bob"
    sessions: dict[str, SocketMember] = {"alice": new, "bob": other}
    fan = FanOut(lambda: (new, other), lookup=sessions.get)
    if together:
        with fan._lock:
            fan.broadcast(old, [b"mine\n"], [b"ack mine\n"])
            fan.broadcast(other, [b"bob's\n"], [b"ack bob's\n"])
        fan.exclusive(lambda: None)  # the round, once the lock is let go
    else:
        fan.broadcast(old, [b"mine\n"], [b"ack mine\n"])
        fan.broadcast(other, [b"bob's\n"], [b"ack bob's\n"])
    assert old.lines(1) == [b"ack mine"]
    assert other.lines(2) == [b"mine", b"ack bob's"]
    assert new.lines(1) == [b"bob's"]


class _Rendering(Outbox):
    """The outbox of a transport that renders events (as IRC's): keeps what it is given."""

    __slots__ = ("got",)
    got: list[bytes]

    @property
    def renders(self) -> bool:
        return True

    def offer(self, data: bytes) -> None:
        self.got.append(data)
        super().offer(data)


def test_a_round_carries_each_message_s_event_and_seq_beside_its_bytes(
    members: list[SocketMember], tmp_path: Path
) -> None:
    """chatroom_server.frames: the joined frames of a round carry the events they encode,
    with the seqs the log gave them; the bytes are the same for every recipient."""
    a, b, plain = members[0], members[1], members[2]
    a.username, b.username = "alice", "bob"
    flusher = Flusher()
    mine, theirs = socket.socketpair()
    rendering = _Rendering(mine, flusher, name="rendering")
    rendering.got = []
    watcher = SocketMember(rendering, theirs)
    mlog = MessageLog(tmp_path / "log.db")
    try:
        fan = FanOut(lambda: (a, b, plain, watcher), log=mlog)
        sent = []
        with fan._lock:  # both batches in one round: their frames joined once
            for who, text in ((a, "one"), (b, "two")):
                assert who.username is not None
                event = Broadcast(sender=who.username, message=text, ts=1.0)
                ack = Ack(command="pm", id=text)
                sent.append(event)
                msg = NewMessage(who.username, None, text, 1.0)
                fan.broadcast(who, [encode(event)], [encode(ack)], [msg], [text], [(event, ack)])
        fan._combine()
        events = [decode_event(x + b"\n") for x in plain.lines(2)]
        assert [(e.message, e.seq) for e in events] == [("one", 1), ("two", 2)]  # type: ignore[union-attr]
        (got,) = rendering.got
        assert type(got) is Frames and got == b"".join(encode(e) for e in events)
        assert list(got.events) == [(sent[0], 1), (sent[1], 2)]
        # Its user's own message is not sent back; its ack follows the round, with its seq.
        two, ack_one = (decode_event(x + b"\n") for x in a.lines(2))
        assert two == Broadcast(sender="bob", message="two", ts=1.0, seq=2)
        assert ack_one == Ack(command="pm", id="one", seq=1)
    finally:
        mlog.close()
        flusher.stop()
        mine.close()
        theirs.close()
