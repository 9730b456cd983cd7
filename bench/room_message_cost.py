"""What one room message costs the fan-out, in process: A/B of two trees.

    .venv/bin/python bench/room_message_cost.py --base main [--rounds 5] [--size 10]
        [--rooms 100] [--messages 3000]

A room's message as the server handles it once its reader has decoded it
(chatroom_server.fanout, "Rooms"): handed to :meth:`FanOut.broadcast` with its frame,
ack, events and :class:`NewMessage`, checked (member, canonical name), stored (the
message log, a group commit, WAL and all), given its seq, and sent to the other
members of its room, then its ack to its sender. ``--rooms`` rooms of ``--size``
members, each member a real :class:`Outbox` on a Unix socket pair whose far end is
drained between messages (untimed); each message from the next room's first member,
alone in its pass, as at a quiet rate in small rooms (docs/PERFORMANCE.md, "Issue 35
again"). Reports this thread's CPU (``time.thread_time``) per message, with the log
and with a log that stores nothing but gives seqs: their difference is what storing
costs.
Without the kernel's TCP or a reader's wake-up, so this is the fan-out's share of a
message, not the server's. A (git revision ``--base``) and B (this tree) run in child
processes, alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from abtree import THIS_TREE, base_tree, pythonpath, run_child


class _Unstored:
    """A message log that stores nothing (chatroom_server.storage.MessageStore's
    ``append`` alone): every message the next seq, so what is left is the fan-out's."""

    def __init__(self) -> None:
        self.last_seq = 0

    def append(self, messages: list[Any]) -> list[int]:
        first = self.last_seq + 1
        self.last_seq += len(messages)
        return list(range(first, self.last_seq + 1))


class _Member:
    """What the fan-out reads of a connection (fanitems.RoomMember)."""

    def __init__(self, outbox: Any, username: str) -> None:
        self.outbox = outbox
        self.username: str | None = username
        self.rooms = True
        self.handed = 0
        self.done = 0


def child(args: argparse.Namespace, with_log: bool) -> float:
    """CPU µs per room message of this interpreter's chatroom_server."""
    import socket

    from chatroom.protocol import Ack, Broadcast, encode
    from chatroom_server import fanout
    from chatroom_server.fanout import FanOut
    from chatroom_server.messagelog import MessageLog, NewMessage
    from chatroom_server.outbox import Flusher, Outbox

    n = args.rooms * args.size
    flusher = Flusher()
    flusher.start()
    pairs = [socket.socketpair() for _ in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        mlog = MessageLog(Path(tmp) / "chat.db") if with_log else None
        fan: Any = None
        store: Any = mlog if mlog is not None else _Unstored()
        try:
            for _, far in pairs:
                far.setblocking(False)
            members = [
                _Member(Outbox(near, flusher, name=f"u{i}"), f"user{i}")
                for i, (near, _) in enumerate(pairs)
            ]
            by_key: dict[str, Any] = {f"user{i}": m for i, m in enumerate(members)}
            rooms = {
                f"room{r}": frozenset(f"user{r * args.size + k}" for k in range(args.size))
                for r in range(args.rooms)
            }

            def check(sender: str, room: str, rid: object, ts: float) -> Any:
                return room, rooms[room], True

            # No pacing (coalesce 0), no budget: on a loaded box a thread preempted
            # for 5 ms would hand its pass to the helper thread, whose CPU this thread
            # does not see.
            fanout.READER_BUDGET = 3600.0
            roster: tuple[Any, ...] = tuple(members)
            fan = FanOut(lambda: roster, log=store, lookup=by_key.get, coalesce=0)
            fan.serve_rooms(check, by_key.get)
            if mlog is not None:  # a log of some size, as a server's is
                mlog.append(
                    [
                        NewMessage(f"user{i % n}", None, "x" * 40, 1.0, f"old{i}", room="room0")
                        for i in range(20_000)
                    ]
                )

            def drain() -> None:
                for _, far in pairs:
                    try:
                        while far.recv(1 << 16):
                            pass
                    except BlockingIOError:
                        pass

            body = "a line of chat text, as long as most " * 2
            cpu = 0.0
            for i in range(args.messages):
                r = i % args.rooms
                sender = members[r * args.size]
                name = f"user{r * args.size}"
                room = f"room{r}"
                rid = f"m{i}"
                if i % args.rooms == 0:
                    drain()
                t = time.thread_time()
                # What the reader makes of a pm to a room (chatroom_server.handlers).
                event = Broadcast(sender=name, message=body, ts=1.0e9, room=room)
                ack = Ack(command="pm", room=room, id=rid)
                msg = NewMessage(name, None, body, 1.0e9, f"c{i}", room=room)
                fan.broadcast(sender, [encode(event)], [encode(ack)], [msg], [rid], [(event, ack)])
                cpu += time.thread_time() - t
            assert fan._helper is None, "a pass went to the helper: not this thread's CPU"
            return float(1e6 * cpu / args.messages)
        finally:
            if fan is not None:
                fan.close()  # its helper thread (if it ever ran) before the log it writes
            if mlog is not None:
                mlog.close()
            flusher.stop()
            for a, c in pairs:
                a.close()
                c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="main", help="git revision for A (B is this tree)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=10, help="members of a room")
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--child", choices=("log", "nolog"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args, args.child == "log")))
        return
    passed = ["--size", str(args.size), "--rooms", str(args.rooms)]
    passed += ["--messages", str(args.messages)]
    got: dict[tuple[str, str], list[float]] = {}
    with base_tree(args.base) as base:
        paths = {"A": pythonpath(base), "B": THIS_TREE}
        for i in range(args.rounds):
            for kind in ("log", "nolog"):
                for v in ("A", "B"):
                    us = run_child(__file__, [kind, *passed], paths[v])
                    got.setdefault((v, kind), []).append(us)
                    print(f"round {i + 1} {v} {kind}: {us:.1f} µs/message", flush=True)
    med = {k: statistics.median(x) for k, x in got.items()}
    print(
        f"\nA = {args.base}, B = this tree; rooms of {args.size}, CPU µs per message, "
        f"medians of {args.rounds} rounds (load average {os.getloadavg()[0]:.1f} at the end)"
    )
    print("| | with the log | storing nothing | storing |")
    print("| --- | ---: | ---: | ---: |")
    for v in ("A", "B"):
        lg, nl = med[(v, "log")], med[(v, "nolog")]
        print(f"| {v} | {lg:.1f} | {nl:.1f} | {lg - nl:.1f} |")
    print(f"B/A with the log: {med[('B', 'log')] / med[('A', 'log')]:.2f}")


if __name__ == "__main__":
    main()
