"""What the server's Python costs per public message read, from the bytes to the pm
handler (stubbed out): the session's rules and the command table, no socket, no fan-out.

    .venv/bin/python bench/session_cost.py [--frames 100000]

For an A/B, run it under another checkout's code:
``PYTHONPATH=OTHER/server:OTHER/sdk .venv/bin/python bench/session_cost.py``; before the
sans-I/O session (chatroom_server.session) the read path was ``ChatServer._handle`` per
frame, which this measures there instead. Prints this thread's CPU per frame, the best of
five passes, with one frame per read (a quiet room) and ten (a busy sender).
"""

from __future__ import annotations

import argparse
import inspect
import time
from collections.abc import Callable
from typing import Any

from chatroom.protocol import FrameDecoder
from chatroom_server import server as S
from chatroom_server.config import ServerConfig

FRAME = b'{"command":"pm","message":"hello there, eighty bytes of chat text go here ok","id":1}\n'


def reader() -> Callable[[bytes], object]:
    srv: Any = S.ChatServer(ServerConfig(rate_limit=None))
    # The handlers and the runner are parts of their own since issue 34's split
    # (chatroom_server.handlers, chatroom_server.runner); the server itself before.
    handlers = getattr(srv, "_handlers", srv)
    handlers._public = lambda conn, cmd: None  # the handler is not what is measured
    conn: Any
    if "rules" in inspect.signature(S._Conn.__init__).parameters:
        conn = S._Conn(1, None, "127.0.0.1", "bench", None, srv._rules, 0.0)  # type: ignore[arg-type]
        conn.username = "alice"
        runner = getattr(srv, "_runner", None)
        if runner is not None:  # what the reader thread calls
            return lambda data: runner.frames(conn, data)
        return lambda data: srv._frames(conn, data)
    conn = S._Conn(1, None, "127.0.0.1", "bench", None, 0.0)  # type: ignore[call-arg, arg-type]
    conn.username = "alice"
    decoder = FrameDecoder(65536)
    return lambda data: all(srv._handle(conn, f) for f in decoder.feed(data))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=100_000)
    n = ap.parse_args().frames
    read = reader()
    for per_read in (1, 10):
        data = FRAME * per_read
        best = float("inf")
        for _ in range(5):
            t = time.thread_time()
            for _ in range(n // per_read):
                read(data)
            best = min(best, (time.thread_time() - t) / n * 1e6)
        print(f"{per_read:>2} frame(s) per read: {best:.3f} us of CPU per frame", flush=True)


if __name__ == "__main__":
    main()
