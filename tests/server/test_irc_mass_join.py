"""Mass JOINs into a room while messages flow (docs/IRC.md, docs/PERFORMANCE.md "mass
JOINs, a send per member"): a room's JOIN lines are owed to its members and written in
batches (chatroom_server.irc.outbox, chatroom_server.irc.pusher), yet every member sees
each JOIN once, before any message of the joiner, and every message in order; NAMES
after the burst is exact."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from chatroom.testing import TestServer
from chatroom_server.irc import pusher as pusher_module
from chatroom_server.irc.pusher import Pusher
from tests.helpers import quiet_server
from tests.server.test_irc import Irc, irc_address

T = 10.0
ROOM = "#crowd"
MEMBERS = 6
JOINERS = 12
FLOOD = 40
AFTER = 3  # messages each joiner sends right after its JOIN


@contextmanager
def server(guests: bool) -> Iterator[TestServer]:
    with quiet_server(irc_port=0, irc_guests=guests, password_hash="load-test") as srv:
        yield srv


def client(srv: TestServer, nick: str, guests: bool) -> Irc:
    irc = Irc(irc_address(srv))
    if guests:
        irc.send(f"NICK {nick}", "USER u 0 * :R")
        irc.until("376")  # a guest is in no channel yet
    else:
        irc.register(nick)  # an account: in the lobby channel too
    return irc


def joined(irc: Irc) -> list[str]:
    """JOIN the room: the lines up to its end of NAMES."""
    irc.send(f"JOIN {ROOM}")
    seen = [irc.until("JOIN", ROOM)]
    while " 366 " not in seen[-1]:
        seen.append(irc.line())
    return seen


def names(line: str) -> list[str]:
    return line.split(" :", 1)[1].split()


@pytest.mark.parametrize("guests", [True, False], ids=["guest-room", "stored-room"])
def test_concurrent_joins_reach_every_member_once_and_in_order(guests: bool) -> None:
    with server(guests) as srv:
        members = [client(srv, f"m{i}", guests) for i in range(MEMBERS)]
        for m in members:
            joined(m)
        for i, m in enumerate(members):  # each sees the later members' JOINs
            for later in range(i + 1, MEMBERS):
                assert m.until("JOIN", ROOM).startswith(f":m{later}!")
        joiners = [client(srv, f"j{i}", guests) for i in range(JOINERS)]
        go = threading.Barrier(JOINERS + 1)
        failures: queue.Queue[OSError] = queue.Queue()

        def arrive(irc: Irc, nick: str) -> None:
            try:
                go.wait(T)
                # The JOIN and the messages after it in one write, as clients send them.
                irc.send(
                    f"JOIN {ROOM}", *(f"PRIVMSG {ROOM} :after {nick} {k}" for k in range(AFTER))
                )
            except OSError as exc:  # reported by the test's thread
                failures.put(exc)

        threads = [
            threading.Thread(target=arrive, args=(j, f"j{i}")) for i, j in enumerate(joiners)
        ]
        for t in threads:
            t.start()
        go.wait(T)
        # The flood, from the first member, while the joiners arrive.
        members[0].send(*(f"PRIVMSG {ROOM} :flood {k}" for k in range(FLOOD)))
        for t in threads:
            t.join(T)
        assert failures.empty(), failures.get()
        for i, m in enumerate(members):
            lines: list[str] = []
            # Until every joiner's last message (and, for the others, the flood's last).
            waiting = {f"after j{j} {AFTER - 1}" for j in range(JOINERS)}
            if i:
                waiting.add(f"flood {FLOOD - 1}")
            while waiting:
                line = m.line()
                lines.append(line)
                waiting.discard(line.rsplit(" :", 1)[-1])
            for j in range(JOINERS):
                nick = f"j{j}"
                seen = [
                    k
                    for k, x in enumerate(lines)
                    if x.startswith(f":{nick}!") and (f" {ROOM} " in x or x.endswith(ROOM))
                ]  # the room's lines (an account's arrival in the lobby channel aside)
                joins = [k for k in seen if lines[k].endswith(f" JOIN {ROOM}")]
                assert len(joins) == 1, (m, nick, [lines[k] for k in seen])
                said = [lines[k].rsplit(" :", 1)[1] for k in seen if k != joins[0]]
                assert said == [f"after {nick} {k}" for k in range(AFTER)], said
                assert joins[0] < seen[1], "a message of the joiner before its JOIN"
            if i:
                flood = [x.rsplit(" :", 1)[1] for x in lines if " :flood " in x]
                assert flood == [f"flood {k}" for k in range(FLOOD)]
        # NAMES after the burst: everyone, once.
        members[0].send(f"NAMES {ROOM}")
        listed: list[str] = []
        line = members[0].until("353")
        while " 366 " not in line:
            listed += names(line)
            line = members[0].line()
        expected = {f"m{i}" for i in range(MEMBERS)} | {f"j{i}" for i in range(JOINERS)}
        assert sorted(n.lstrip("@+") for n in listed) == sorted(expected)


class Recorder:
    """An outbox as the pusher sees it: its pushes, in a queue."""

    def __init__(self, name: str, pushed: queue.Queue[str]) -> None:
        self.owed = False
        self.name = name
        self._pushed = pushed

    def push(self) -> None:
        self._pushed.put(self.name)


def test_the_pusher_writes_what_is_owed_and_its_thread_ends_when_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pusher_module, "IDLE", 0.01)
    pushed: queue.Queue[str] = queue.Queue()
    p = Pusher()
    a, b = Recorder("a", pushed), Recorder("b", pushed)
    p.owe(a)
    p.owe(a)  # owed twice before its push: pushed once or twice, never not at all
    assert pushed.get(timeout=T) == "a"
    first = p.thread
    assert first is not None
    first.join(T)  # nothing owed for IDLE s: the thread ends
    assert not first.is_alive()
    while not pushed.empty():  # the thread has ended: nothing more comes
        assert pushed.get_nowait() == "a"
    p.owe(b)  # and the next owed line starts another
    assert pushed.get(timeout=T) == "b"
    assert p.thread is not first
