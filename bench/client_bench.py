"""Receive cost per message: ChatClient (threads) against AsyncChatClient (asyncio).

One server (a subprocess); in this process a raw socket sends N public messages in bulk
and one client receives them through a hook. What is measured is this process's CPU
time from the first send to the last hook call, per message: the client's receive path
(read, decode, session, dispatch to the hook), the raw sender's share being a few large
``sendall`` calls. Alternating rounds, medians.

    .venv/bin/python bench/client_bench.py [--messages 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from common import start_server

from chatroom import Broadcast, ChatClient
from chatroom.aio import AsyncChatClient

PW = "bench password"


def sender(port: int, n: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(json.dumps({"command": "login", "username": "blaster", "password": PW}).encode())
    s.sendall(b"\n")
    s.recv(65536)  # login_ok
    return s


def blast(s: socket.socket, n: int) -> None:
    frames = b"".join(
        b'{"command":"pm","message":"message %06d of the bench"}\n' % i for i in range(n)
    )
    for i in range(0, len(frames), 1 << 20):
        s.sendall(frames[i : i + (1 << 20)])


def threaded(port: int, n: int) -> float:
    done = threading.Event()
    count = 0

    def hook(event: Broadcast) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    with ChatClient("127.0.0.1", port, timeout=60) as c:
        c.on_broadcast(hook)
        c.login("receiver", PW)
        s = sender(port, n)
        t0 = time.process_time()
        blast(s, n)
        assert done.wait(120), f"received {count} of {n}"
        cpu = time.process_time() - t0
        s.close()
    return 1e6 * cpu / n


def asynchronous(port: int, n: int) -> float:
    async def run() -> float:
        done = asyncio.Event()
        count = 0

        def hook(event: Broadcast) -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set()

        async with AsyncChatClient("127.0.0.1", port, timeout=60) as c:
            c.on_broadcast(hook)
            await c.login("receiver", PW)
            s = sender(port, n)
            t0 = time.process_time()
            await asyncio.to_thread(blast, s, n)
            await asyncio.wait_for(done.wait(), 120)
            cpu = time.process_time() - t0
            s.close()
        return 1e6 * cpu / n

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    got: dict[str, list[float]] = {"threads": [], "asyncio": []}
    with tempfile.TemporaryDirectory() as tmp:
        args = ("--history", "off", "--password-hash", "load-test")
        with start_server("ours", Path(tmp), *args) as (_, port):
            for r in range(a.rounds):
                order = ("threads", "asyncio") if r % 2 == 0 else ("asyncio", "threads")
                for kind in order:
                    us = (threaded if kind == "threads" else asynchronous)(port, a.messages)
                    got[kind].append(us)
                    print(f"round {r + 1} {kind}: {us:.2f} us of CPU per message", flush=True)
    t, s = statistics.median(got["threads"]), statistics.median(got["asyncio"])
    print(f"\nmedians: threads {t:.2f} us, asyncio {s:.2f} us per message")
    print(f"asyncio/threads {s / t:.2f}")


if __name__ == "__main__":
    main()
