"""What one delivery costs the fan-out over a bare ``send``: the Python around it.

    .venv/bin/python bench/deliver_cost.py [--sockets 1000] [--rounds 200] [--repeat 3]

N socket pairs, each near end in a real :class:`~chatroom_server.outbox.Outbox`; a round
sends one 120-byte frame to every near end, as the fan-out does at 1,000 clients when
each recipient has one message pending, and the far ends are drained between rounds
(untimed). Reports this thread's CPU (``time.thread_time``) per delivery, medians of
``--repeat`` interleaved passes:

- ``send``: ``socket.send`` in a loop, the floor (no outbox at all);
- ``offer``: :meth:`Outbox.offer`, what the fan-out calls;
- ``queue+push``: :meth:`Outbox.queue` to every outbox, then :meth:`Outbox.push` to each,
  the two passes of a publication made under a lock (and of the fan-out before offer);
- ``irc offer``: an IRC connection's outbox (chatroom_server.irc.outbox), each round a new
  room message (a ``Frames`` carrying its event, as the fan-out hands it out): the first
  recipient renders it, the rest find its lines in the shared translations. The
  sessions are bare renderers (no server behind them); ``send`` and ``offer`` send
  the IRC line instead of ``FRAME`` when ``--irc`` is given, so the three compare.

The differences to ``send`` are the outbox's Python cost per delivery. The sockets are
Unix socket pairs whose readers never sleep, so the ``send`` itself is cheaper here than
to an idle TCP client (bench/send_floor.py); the overhead on top is the same.
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import time
from collections.abc import Callable

from chatroom.protocol import Broadcast, encode
from chatroom_server.frames import Frames, framed
from chatroom_server.irc.asked import Pending
from chatroom_server.irc.outbox import IrcOutbox
from chatroom_server.irc.render import IrcRender
from chatroom_server.irc.translations import Translations
from chatroom_server.outbox import Flusher, Outbox

FRAME = b'{"type":"message","from":"someone","text":"' + b"x" * 60 + b'","seq":12345}\n'
TEXT = "x" * 60
LINE = f":someone!someone@{'chatroom'} PRIVMSG #r1 :{TEXT}\r\n".encode()


def renderer(shared: Translations) -> IrcRender:
    """An IRC session's rendering half alone, registered, with no capabilities."""
    r = IrcRender.__new__(IrcRender)
    r.caps, r.registered, r.in_lobby, r.guest = set(), True, True, None
    r._shared, r.pending = shared, Pending()
    r.nick, r.channel, r.name = "x", "#lobby", "chatroom"
    return r


def room_message(seq: int) -> Frames:
    event = Broadcast(sender="someone", message=TEXT, ts=1.0, room="r1")
    return framed(encode(event), ((event, seq),))


def measure(n: int, rounds: int, repeat: int, irc: bool = False) -> dict[str, float]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * n + 64), hard))
    flusher = Flusher()
    flusher.start()
    pairs = [socket.socketpair() for _ in range(n)]
    try:
        near = [a for a, _ in pairs]
        far = [b for _, b in pairs]
        for b in far:
            b.setblocking(False)
        boxes = [Outbox(a, flusher) for a in near]
        shared = Translations()
        ircs = []
        for a in near:
            ob = IrcOutbox(a, flusher)
            ob.session = renderer(shared)
            ircs.append(ob)
        frame = LINE if irc else FRAME
        seq = [0]

        def drain() -> None:
            for b in far:
                try:
                    while b.recv(1 << 16):
                        pass
                except BlockingIOError:
                    pass

        def send() -> None:
            dontwait = socket.MSG_DONTWAIT
            for s in near:
                s.send(frame, dontwait)

        def offer() -> None:
            for ob in boxes:
                ob.offer(frame)

        def irc_offer() -> None:
            seq[0] += 1
            data = room_message(seq[0])  # made once per round, as the fan-out does
            for ob in ircs:
                ob.offer(data)

        def queue_push() -> None:
            for ob in boxes:
                ob.queue(FRAME)
            for ob in boxes:
                ob.push()

        ways: dict[str, Callable[[], None]] = {
            "send": send,
            "offer": offer,
            "queue+push": queue_push,
            **({"irc offer": irc_offer} if irc else {}),
        }
        samples: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(repeat):
            for name, fn in ways.items():
                cpu = 0.0
                for _ in range(rounds):
                    drain()
                    t = time.thread_time()
                    fn()
                    cpu += time.thread_time() - t
                samples[name].append(1e6 * cpu / (rounds * n))
        return {name: statistics.median(v) for name, v in samples.items()}
    finally:
        flusher.stop()
        for a, b in pairs:
            a.close()
            b.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sockets", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--irc", action="store_true", help="also an IRC outbox (irc offer)")
    args = ap.parse_args()
    got = measure(args.sockets, args.rounds, args.repeat, args.irc)
    floor = got["send"]
    print(f"{args.sockets} recipients, CPU µs per delivery (medians of {args.repeat} passes)")
    for name, us in got.items():
        extra = "" if name == "send" else f"  (+{us - floor:.2f} over send, {us / floor:.2f}x)"
        print(f"  {name:<11} {us:6.2f}{extra}")


if __name__ == "__main__":
    main()
