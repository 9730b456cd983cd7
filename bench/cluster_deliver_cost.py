"""What a cluster node's delivery costs per delivery, in process: A/B of two trees.

    .venv/bin/python bench/cluster_deliver_cost.py --base main [--rounds 5]
        [--recipients 100] [--senders 10] [--run 10] [--calls 300] [--dm-every 0] [--irc]
        [--room]

The delivery a node makes of the cluster's stream (``node.ClusterNode.cluster_deliver``:
framing, the fan-out lock, the share of each recipient, the outboxes), without Redis,
PostgreSQL or a load generator: ``--recipients`` real :class:`Outbox`\\ es on Unix socket
pairs whose far ends are drained between calls (untimed), and ``--calls`` calls of
``--run`` stored messages each from ``--senders`` of them (every ``--dm-every``-th a DM,
0: none). ``--irc``: every recipient an IRC connection's outbox (chatroom_server.irc,
``IrcOutbox``, with message-tags and server-time), which renders the frames it gets as
IRC lines, sharing one translation per frame object as the gateway does. ``--room``:
every recipient a member of one room (joined by the stream's join rows first, untimed)
and the messages to it, so a node's rooms (chatroom_server.noderooms) deliver them; over
``LARGE`` members that is in turns (docs/PERFORMANCE.md, "Turns on a cluster node"),
partly on the fan-out's helper thread, so each call is timed until nothing is owed,
and the process's CPU (``time.process_time``) is counted. Otherwise reports this
thread's CPU (``time.thread_time``) per delivery, so the box's
load (bench/cluster.py's noise: p99s of seconds when seven helpers share two cores)
barely moves it. The server of git revision ``--base`` (A) and this tree's (B) run in
child processes, alternating A, B, A, B, ...; the ratio is the median of each round's B
over the A just before it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from typing import Any

from abtree import THIS_TREE, base_tree, pythonpath, run_child


class _Conn:
    """What the node reads of a connection (chatroom_server.conn.Conn)."""

    def __init__(self, outbox: Any, username: str) -> None:
        self.outbox = outbox
        self.username = username
        self.late_inbox = False
        self.rooms = True  # speaks rooms (chatroom_server.noderooms)
        self.handed = 0
        self.done = 0


class _Publisher:
    def announce(self, name: str) -> None:
        pass


class _Presence:
    """The presence's part the node uses (chatroom_server.presence.Presence)."""

    def __init__(self, conns: list[_Conn]) -> None:
        self.lock = threading.Lock()
        self.by_key = {c.username.lower(): c for c in conns}
        self._roster = tuple(conns)
        self.publisher = _Publisher()

    def roster(self) -> tuple[_Conn, ...]:
        return self._roster


class _Log:
    last_seq = 0


def _irc_outbox(sock: Any, flusher: Any, nick: str, shared: Any) -> Any:
    """An IRC connection's outbox and the part of its session that renders (what
    IrcSession.__init__ and its registration set on an IrcRender)."""
    from chatroom_server.irc import IrcOutbox
    from chatroom_server.irc.asked import Pending
    from chatroom_server.irc.render import IrcRender

    render = IrcRender()
    render.name, render.nick, render.channel = "chatroom", nick, "#lobby"
    render.caps = {"message-tags", "server-time"}
    render.registered, render.guest, render.max_message = True, None, 4096
    render._shared, render.pending = shared, Pending()
    outbox = IrcOutbox(sock, flusher, name=nick)
    outbox.session = render
    return outbox


def child(args: argparse.Namespace) -> float:
    """CPU µs per delivery of this interpreter's chatroom_server (the tree on its path)."""
    import socket

    from chatroom_server.backends import Backends
    from chatroom_server.fanout import FanOut
    from chatroom_server.irc import Translations
    from chatroom_server.messagelog import Stored
    from chatroom_server.node import ClusterNode
    from chatroom_server.outbox import Flusher, Outbox
    from chatroom_server.rooms import RoomBook
    from chatroom_server.roomservice import RoomService

    flusher = Flusher()
    flusher.start()
    pairs = [socket.socketpair() for _ in range(args.recipients)]
    try:
        for _, far in pairs:
            far.setblocking(False)
        shared = Translations()
        conns = [
            _Conn(
                _irc_outbox(near, flusher, f"user{i}", shared)
                if args.irc
                else Outbox(near, flusher, name=f"u{i}"),
                f"user{i}",
            )
            for i, (near, _) in enumerate(pairs)
        ]
        presence = _Presence(conns)
        b = Backends()
        b.log = _Log()  # type: ignore[assignment]
        b.fanout = FanOut(lambda: ())
        rooms = None
        if args.room:
            from chatroom_server.noderooms import NodeRooms

            book = RoomBook(max_rooms_per_user=10)
            rooms = NodeRooms(RoomService(book), presence.by_key.get)  # type: ignore[arg-type]
        node = ClusterNode(b, presence, threading.Condition(), rooms)  # type: ignore[arg-type]
        seq = 0
        body = "x" * 80
        room = "big" if args.room else None
        if args.room:  # everyone joins, as the stream's rows say (untimed)
            joins = [
                Stored(
                    seq=i + 1,
                    ts=1.0e9,
                    sender=c.username,
                    to=None,
                    body="",
                    room="big",
                    event="join",
                )
                for i, c in enumerate(conns)
            ]
            seq = len(joins)
            node.cluster_deliver(joins, set())
        # What a call leaves owed (docs/PERFORMANCE.md, "Turns on a cluster node"; a
        # private name: the base tree has no other).
        turns = b.fanout._turns

        def messages() -> list[Stored]:
            nonlocal seq
            out = []
            for _ in range(args.run):
                seq += 1
                sender = f"user{seq % args.senders}"
                to = None
                if args.dm_every and seq % args.dm_every == 0:
                    to = f"user{(seq + 1) % args.recipients}"
                out.append(
                    Stored(
                        seq=seq,
                        ts=1.0e9 + seq,
                        sender=sender,
                        to=to,
                        body=body,
                        room=room if to is None else None,
                    )
                )
            return out

        def drain() -> None:
            for _, far in pairs:
                try:
                    while far.recv(1 << 16):
                        pass
                except BlockingIOError:
                    pass

        # Deliveries as the node counts them (the metrics'), the same in both trees for
        # public messages: each to everyone but its sender.
        cpu, before = 0.0, b.fanout.stats.deliveries
        clock = time.process_time if args.room else time.thread_time
        for _ in range(args.calls):
            drain()
            batch = messages()
            t = clock()
            node.cluster_deliver(batch, set())
            while turns:  # the helper's turns: polled (a bench, not a test)
                time.sleep(0.0002)
            cpu += clock() - t
        delivered = b.fanout.stats.deliveries - before
        return 1e6 * cpu / max(1, delivered)
    finally:
        flusher.stop()
        for a, c in pairs:
            a.close()
            c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="main", help="git revision for A (B is this tree)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--recipients", type=int, default=100)
    ap.add_argument("--senders", type=int, default=10)
    ap.add_argument("--run", type=int, default=10, help="messages per call")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--dm-every", type=int, default=0)
    ap.add_argument("--irc", action="store_true", help="IRC recipients (rendered lines)")
    ap.add_argument("--room", action="store_true", help="all in one room, its messages")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    passed = [a for a in sys.argv[1:] if not a.startswith("--base")]
    if "--base" in sys.argv:  # its value too
        i = sys.argv.index("--base")
        passed = [a for k, a in enumerate(sys.argv[1:], 1) if k not in (i, i + 1)]
    got: dict[str, list[float]] = {"A": [], "B": []}
    with base_tree(args.base) as base:
        paths = {"A": pythonpath(base), "B": THIS_TREE}
        for _ in range(args.rounds):
            for v in ("A", "B"):
                got[v].append(run_child(__file__, passed, paths[v]))
                print(f"  {v}: {got[v][-1]:.2f} µs/delivery", flush=True)
    ratios = [b / a for a, b in zip(got["A"], got["B"], strict=True)]
    print(
        f"A = {args.base}, B = this tree; {args.recipients} recipients, {args.senders} "
        f"senders{' (IRC)' if args.irc else ''}{', one room' if args.room else ''}, "
        f"{args.run} messages a call, DM every "
        f"{args.dm_every or 'never'}: "
        f"A {statistics.median(got['A']):.2f}, B {statistics.median(got['B']):.2f} "
        f"µs/delivery (medians of {args.rounds}), B/A {statistics.median(ratios):.2f} "
        "(median of the rounds' ratios)"
    )


if __name__ == "__main__":
    main()
