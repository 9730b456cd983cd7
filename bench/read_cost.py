"""What one delivery costs chat-load's bots in Python: the generator's side of a delivery.

    .venv/bin/python bench/read_cost.py [--reads 100000] [--repeat 5]

One bot of a real :class:`~chatroom_bots.load.pool.BotPool`, with a real
:class:`~chatroom_bots.load.recorder.Recorder` as its sink, reads one broadcast per read
(as each of 10,000 bots does at 10 messages/s) from a stand-in socket whose ``recv``
returns the frame at once: no syscall, so what is timed is the Python of a read, from
the bytes to the counted latency. The pool hands its batch to the Recorder every 64 reads
(a loop round). Prints this thread's CPU per read, the best of ``--repeat`` passes.

For an A/B, run it under another checkout's code:
``PYTHONPATH=OTHER/sdk:OTHER/bots .venv/bin/python bench/read_cost.py``. The kernel's
part of a read (``recv``, ``epoll_wait``, the ACK) is not in it; docs/PERFORMANCE.md ("A
cheaper read in the generator") has both.
"""

from __future__ import annotations

import argparse
import time

import msgspec

from chatroom.session import ClientSession
from chatroom_bots.load import pool, poolbot
from chatroom_bots.load.recorder import Recorder
from chatroom_bots.load.stats import pack


class _Socket:
    """Always one frame to read."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame

    def recv(self, _: int) -> bytes:
        return self.frame


def measure(reads: int, repeat: int) -> float:
    rec = Recorder()
    bots = pool.BotPool("127.0.0.1", 1, ["reader"], "password", rec)
    message = pack(3, 1, int(time.monotonic() * 1e6), 80)
    broadcast = {"type": "broadcast", "from": "JohnSmith42", "message": message}
    frame = msgspec.json.encode({**broadcast, "seq": 5, "ts": 1733134567.123}) + b"\n"
    bot = poolbot.Bot(0, _Socket(frame), ClientSession(track_users=False), False)  # type: ignore[arg-type]
    bot.state = poolbot.READY
    flush = getattr(bots, "_flush", None)  # older pools handed each read over at once
    best = float("inf")
    for _ in range(repeat):
        rec.tick()  # as the worker does each second: the counts start empty
        t0 = time.thread_time()
        for i in range(reads):
            bots._readable(bot)
            if flush is not None and i % 64 == 63:
                flush()
        best = min(best, (time.thread_time() - t0) / reads * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reads", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cost = measure(args.reads, args.repeat)
    print(f"Python per one-delivery read: {cost:.2f} µs (best of {args.repeat})")


if __name__ == "__main__":
    main()
