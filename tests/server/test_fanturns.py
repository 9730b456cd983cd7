"""Per-room fairness in the fan-out (server/chatroom_server/fanturns.py), on real
sockets with the message log: a large room's messages go out in slices with small rooms'
served between them, and every recipient still gets everything once and in seq order,
each ack after its message's last write (docs/PROTOCOL.md §Ordering, §pm)."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chatroom.protocol import Ack, Broadcast, RequestId, encode, username_key
from chatroom_server.fanout import FanOut
from chatroom_server.fanturns import SLICE, TURN_ENV, Turns, turn_policy
from chatroom_server.messagelog import MessageLog, NewMessage
from chatroom_server.outbox import Flusher, Outbox
from tests.helpers import SocketMember

_SEQ = re.compile(rb'"seq":(\d+)')

# Every write any recipient's outbox was given, in the order they were made: (the
# outbox's name, the seqs in it). list.append is atomic, and the fan-out writes from one
# thread at a time anyway.
Writes = list[tuple[str, list[int]]]


class _Recording(Outbox):
    __slots__ = ("writes",)
    writes: Writes

    def offer(self, data: bytes) -> None:
        self.writes.append((self.name, [int(s) for s in _SEQ.findall(data)]))
        super().offer(data)


@dataclass
class Rooms:
    """Members by username key, and the rooms' members, for FanOut.serve_rooms."""

    members: dict[str, SocketMember]
    rooms: dict[str, frozenset[str]]
    writes: Writes

    def check(self, sender: str, room: str, rid: RequestId, ts: float) -> Any:
        return room, self.rooms[room], True


@pytest.fixture
def rooms() -> Iterator[Rooms]:
    """A room "big" of 1,500 (u0 ... u1498, and s1) and a room "small" of 2 (s0, s1): s1
    is in both."""
    flusher = Flusher()
    flusher.start()
    writes: Writes = []
    socks: list[socket.socket] = []
    members: dict[str, SocketMember] = {}
    try:
        for name in [f"u{i}" for i in range(1499)] + ["s0", "s1"]:
            a, b = socket.socketpair()
            b.settimeout(10)
            socks += [a, b]
            ob = _Recording(a, flusher, name=name)
            ob.writes = writes
            m = SocketMember(ob, b)
            m.username = name
            m.rooms = True  # type: ignore[attr-defined]
            members[name] = m
        big = frozenset([f"u{i}" for i in range(1499)] + ["s1"])
        yield Rooms(members, {"big": big, "small": frozenset({"s0", "s1"})}, writes)
    finally:
        flusher.stop()
        for s in socks:
            s.close()


def _fan(rooms: Rooms, tmp_path: Path) -> tuple[FanOut, MessageLog]:
    mlog = MessageLog(tmp_path / "log.db")
    fan = FanOut(lambda: (), log=mlog, lookup=rooms.members.get)
    fan.serve_rooms(rooms.check, rooms.members.get)  # type: ignore[arg-type]
    return fan, mlog


def _say(fan: FanOut, who: SocketMember, room: str, text: str) -> None:
    assert who.username is not None
    event = Broadcast(sender=who.username, message=text, ts=1.0, room=room)
    ack = Ack(command="pm", room=room, id=text)
    msg = NewMessage(who.username, None, text, 1.0, room=room)
    fan.broadcast(who, [encode(event)], [encode(ack)], [msg], [text], [(event, ack)])


def _seqs(m: SocketMember, n: int) -> list[int]:
    out = []
    for line in m.lines(n):
        got = _SEQ.search(line)
        assert got is not None, line
        out.append(int(got.group(1)))
    return out


def test_a_small_room_is_served_between_slices_of_a_large_one(rooms: Rooms, tmp_path: Path) -> None:
    """One pass takes a message to the room of 1,500 and then one to the room of 2: the
    small one is written before the large one's fan-out is through, the member of both
    gets them in seq order (one send), and each ack follows its message's last write."""
    fan, mlog = _fan(rooms, tmp_path)
    m = rooms.members
    try:
        with fan._lock:  # both in one pass, the large room's first
            _say(fan, m["u0"], "big", "flood")
            _say(fan, m["s0"], "small", "hello")
        fan._combine()
        assert fan.settle(m["u0"], timeout=10) and fan.settle(m["s0"], timeout=10)
        writes = rooms.writes
        big = [k for k, (name, seqs) in enumerate(writes) if 1 in seqs and name != "u0"]
        assert len(big) == 1499  # every member but the sender, once
        small = [k for k, (name, seqs) in enumerate(writes) if name == "s1" and 2 in seqs]
        assert small and writes[small[0]] == ("s1", [1, 2])  # pulled forward, in order
        acks = {name: k for k, (name, seqs) in enumerate(writes) if name in ("u0", "s0")}
        assert acks["s0"] < big[-1] - SLICE  # not behind the whole large fan-out
        assert acks["u0"] > big[-1]  # the ack after the last write
        assert _seqs(m["s1"], 2) == [1, 2]
        assert _seqs(m["u0"], 1) == [1] and _seqs(m["s0"], 1) == [2]
        for i in range(1, 1499):
            assert _seqs(m[f"u{i}"], 1) == [1]
        assert all(x.nothing_more() for x in m.values())
    finally:
        fan.close(timeout=10)
        mlog.close()


def test_a_flood_in_a_room_of_1500_loses_nothing_beside_a_room_of_2(
    rooms: Rooms, tmp_path: Path
) -> None:
    """A sender floods the room of 1,500 while the room of 2 makes round trips (s0 says,
    s1 reads it): everyone gets everything once, in seq order, and every ack comes after
    the last write of its message. (How long a round trip takes is measured by
    bench/irc_fanout.py, not here.)"""
    fan, mlog = _fan(rooms, tmp_path)
    m = rooms.members
    n = 40
    s1_seen: list[int] = []
    failed: list[AssertionError | OSError] = []

    def flood() -> None:
        for i in range(n):
            _say(fan, m["u0"], "big", f"flood {i}")

    def round_trips() -> None:
        try:
            for i in range(n):
                _say(fan, m["s0"], "small", f"ping {i}")
                while True:  # s1 reads until it has the ping (the flood's are in between)
                    (line,) = m["s1"].lines(1)
                    got = _SEQ.search(line)
                    assert got is not None
                    s1_seen.append(int(got.group(1)))
                    if b"ping %d" % i in line:
                        break
        except (AssertionError, OSError) as exc:  # reported by the test, below
            failed.append(exc)

    threads = [threading.Thread(target=flood), threading.Thread(target=round_trips)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not failed and not any(t.is_alive() for t in threads)
        assert fan.settle(m["u0"], timeout=10) and fan.settle(m["s0"], timeout=10)
        # s1 reads what is left of the flood after the last ping.
        s1_seen += _seqs(m["s1"], 2 * n - len(s1_seen))
        assert s1_seen == list(range(1, 2 * n + 1))  # each seq once, in order
        flood_seqs = _seqs(m["u0"], n)  # its acks, in order
        assert flood_seqs == sorted(flood_seqs) and len(set(flood_seqs)) == n
        ping_seqs = _seqs(m["s0"], n)
        assert sorted(flood_seqs + ping_seqs) == list(range(1, 2 * n + 1))
        for i in range(1, 1499):
            assert _seqs(m[f"u{i}"], n) == flood_seqs
        assert all(x.nothing_more() for x in m.values())
        # Each ack after its message's last write (docs/PROTOCOL.md §pm).
        last: dict[int, int] = {}
        acked: dict[int, int] = {}
        for k, (name, seqs) in enumerate(rooms.writes):
            for seq in seqs:
                if (name == "u0" and seq in flood_seqs) or (name == "s0" and seq in ping_seqs):
                    acked[seq] = k
                else:
                    last[seq] = k
        assert sorted(acked) == list(range(1, 2 * n + 1))
        assert all(acked[seq] > last[seq] for seq in acked)
    finally:
        fan.close(timeout=10)
        mlog.close()


def test_a_dm_and_a_lobby_message_wait_for_what_their_recipients_are_owed(
    rooms: Rooms, tmp_path: Path
) -> None:
    """While the large room's message is still going out in turns, a DM to one of its
    members and a lobby message to everyone come after it for each of them."""
    from chatroom.protocol import DirectMessage
    from chatroom_server.fanitems import Direct

    fan, mlog = _fan(rooms, tmp_path)
    m = rooms.members
    fan._sender._roster = lambda: tuple(m.values())
    try:
        with fan._lock:
            _say(fan, m["u0"], "big", "flood")
            dm = DirectMessage(sender="s0", to="u1498", message="psst", ts=1.0)
            ack = Ack(command="dm", to="u1498", id="d")
            msg = NewMessage("s0", "u1498", "psst", 1.0)
            fan.direct(
                Direct(m["s0"], encode(dm), encode(ack), msg, "d", username_key("u1498"), (dm, ack))
            )
            event = Broadcast(sender="s0", message="all", ts=1.0)
            lobby_ack = Ack(command="pm", id="l")
            lobby = NewMessage("s0", None, "all", 1.0)
            fan.broadcast(
                m["s0"], [encode(event)], [encode(lobby_ack)], [lobby], ["l"], [(event, lobby_ack)]
            )
        fan._combine()
        assert fan.settle(m["s0"], timeout=10)
        assert _seqs(m["u1498"], 3) == [1, 2, 3]
        assert _seqs(m["u5"], 2) == [1, 3]
        assert _seqs(m["u0"], 2) == [1, 3]  # its ack, then the lobby message
        assert _seqs(m["s0"], 2) == [2, 3]  # the DM's ack, the lobby message's
    finally:
        fan.close(timeout=10)
        mlog.close()


def test_a_member_that_exits_gets_what_it_is_owed_before_its_bye(
    rooms: Rooms, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member that has nothing of its own queued says ``exit`` while the large room's
    message is owed to it (its turn not come yet): the message was stored before the
    exit was read and its sender is acked after the last write, so the member gets it
    before its ``bye``, not a ``bye`` and then nothing (docs/PROTOCOL.md §exit, §pm)."""
    fan, mlog = _fan(rooms, tmp_path)
    m = rooms.members
    in_turns, go = threading.Event(), threading.Event()
    serve = Turns.serve

    def held(self: Turns) -> int:  # the first turn waits until the member has exited
        if not in_turns.is_set():
            in_turns.set()
            go.wait(10)
        return serve(self)

    monkeypatch.setattr(Turns, "serve", held)
    flood = threading.Thread(target=_say, args=(fan, m["u0"], "big", "flood"))
    try:
        flood.start()
        assert in_turns.wait(10)  # stored, owed to all 1,499, none written yet
        member = m["u1498"]
        fan.after(member, lambda: member.outbox.finish(b'{"type":"bye","reason":"exit"}\n'))
        go.set()
        flood.join(10)
        assert fan.settle(m["u0"], timeout=10)
        assert _seqs(m["u0"], 1) == [1]  # acked after the last write
        (first,) = member.lines(1)
        assert b'"seq":1' in first, first  # not the bye, with the message dropped after it
        assert b'"bye"' in member.lines(1)[0]
    finally:
        go.set()
        fan.close(timeout=10)
        mlog.close()


def test_the_turn_policy_from_the_environment() -> None:
    """``CHATROOM_FANOUT_TURN`` (docs/OPERATIONS.md, "Tuning knobs"): writes, or a time
    budget in ms; unset, ``SLICE`` writes; anything else refused, not guessed at."""
    assert turn_policy({}) == (SLICE, None)
    assert turn_policy({TURN_ENV: "256"}) == (256, None)
    writes, budget = turn_policy({TURN_ENV: "2.5ms"})
    assert budget == pytest.approx(0.0025) and writes > 10**6
    for bad in ("0", "-3", "0ms", "-1ms", "fast", "3 s"):
        with pytest.raises(ValueError):
            turn_policy({TURN_ENV: bad})


def _job(rooms: Rooms, turns: Turns) -> None:
    """A message of u0's owed to the 1,499 other members of "big", as a job."""
    from chatroom_server.fanitems import Batch

    m = rooms.members
    batch = Batch(m["u0"], [b"x\n"], [b"ack\n"], None, None, None)
    batch.ack = b'{"type":"ack","seq":1}\n'
    owed: dict[Any, list[bytes]] = {
        m[k]: [b'{"seq":1}\n'] for k in sorted(rooms.rooms["big"]) if k != "u0"
    }
    turns.add(batch, owed)


def test_a_turn_of_n_writes_and_a_turn_with_a_time_budget(rooms: Rooms) -> None:
    """A turn of 32 makes 32 writes; a turn of 3 ms ends at the first look at the clock
    (every 8 writes) that finds its time spent, on a clock that moves 1 ms a look. Either
    way every member is written to once and the ack comes after the last write."""
    counted = Turns({TURN_ENV: "32"})
    _job(rooms, counted)
    assert counted.serve() == 32
    looks = iter(range(10**6))
    timed = Turns({TURN_ENV: "3ms"}, clock=lambda: next(looks) / 1e3)
    rooms.writes.clear()
    _job(rooms, timed)
    # Looks at 0 (until 3), after writes 8, 16, 24 (at 1, 2, 3: spent).
    assert timed.serve() == 24
    while timed:
        assert timed.serve() > 0
    names = [name for name, _ in rooms.writes]
    assert len(names) == 1500 and len(set(names)) == 1500 and names[-1] == "u0"
