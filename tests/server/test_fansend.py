"""The sending of a fan-out pass's parts (server/chatroom_server/fansend.py): a small
room's message alone in its round goes to exactly the members the gathered path
(fanturns.gather) picks, each in one write, the ack after them; a round of several
messages still gives each member one write."""

from __future__ import annotations

from dataclasses import dataclass

from chatroom_server.fanitems import Batch
from chatroom_server.fansend import Sender
from chatroom_server.fanturns import Turns, gather
from chatroom_server.metrics import FanOutStats


@dataclass(eq=False)
class _Outbox:
    """Records each write; every write made in the test, in order, goes to ``log``."""

    owner: str
    log: list[tuple[str, bytes]]
    renders: bool = False

    def offer(self, data: bytes) -> None:
        self.log.append((self.owner, bytes(data)))


@dataclass(eq=False)
class _Member:
    outbox: _Outbox
    username: str | None
    rooms: bool = True
    handed: int = 0
    done: int = 0


def _world() -> tuple[dict[str, _Member], list[tuple[str, bytes]]]:
    """Members by key: ``s`` the sender, ``a``/``b`` in rooms, ``old`` a client that
    never asked for rooms (gets no room traffic); ``gone`` is not on this server."""
    log: list[tuple[str, bytes]] = []
    made = {k: _Member(_Outbox(k, log), k, rooms=(k != "old")) for k in ("s", "a", "b", "old", "c")}
    return made, log


def _batch(sender: _Member, parts: list[tuple[str, frozenset[str], bytes]]) -> Batch:
    b = Batch(sender, [p[2] for p in parts], [b"ack\n"], None, None)  # type: ignore[arg-type]
    b.parts = [((room, keys), data, 1) for room, keys, data in parts]
    b.ack = b"ack\n"
    return b


def _sender(made: dict[str, _Member]) -> Sender:
    s = Sender(lambda: tuple(made.values()), made.get, Turns(), FanOutStats(), True)  # type: ignore[arg-type]
    s.local = made.get  # type: ignore[assignment]
    return s


def test_a_message_alone_in_its_round_reaches_whom_gather_picks_then_the_ack() -> None:
    made, log = _world()
    keys = frozenset({"s", "a", "b", "old", "gone"})
    gathered: dict[object, list[bytes]] = {}
    n = gather(gathered, keys, "s", made.get, b"m\n")  # type: ignore[arg-type]
    want = sorted(c.outbox.owner for c in gathered)  # type: ignore[attr-defined]
    assert want == ["a", "b"]  # not the sender, not "old", not "gone"

    sender = _sender(made)
    sender.send_parts([_batch(made["s"], [("r", keys, b"m\n")])])
    assert sorted(who for who, _ in log[:-1]) == want
    assert all(data == b"m\n" for _, data in log[:-1])
    assert log[-1] == ("s", b"ack\n")  # after every recipient has it (§pm)
    assert sender.stats.deliveries == n == 2


def test_a_round_of_several_messages_gives_each_member_one_write_in_order() -> None:
    made, log = _world()
    r1, r2 = frozenset({"s", "a", "b"}), frozenset({"s", "a", "c"})
    sender = _sender(made)
    # One batch of two rooms' messages, then another sender's batch: gathered per member.
    first = _batch(made["s"], [("r1", r1, b"1\n"), ("r2", r2, b"2\n")])
    second = _batch(made["c"], [("r2", r2, b"3\n")])
    sender.send_parts([first, second])
    writes = {who: data for who, data in log[:-2]}
    assert len(writes) == len(log) - 2  # one write per member
    assert writes == {"a": b"1\n2\n3\n", "b": b"1\n", "c": b"2\n", "s": b"3\n"}
    assert log[-2:] == [("s", b"ack\n"), ("c", b"ack\n")]
    assert sender.stats.deliveries == 6  # a three, b, c and s one each
