"""The floor under fan-out: what one ``send`` to a loopback TCP socket costs here.

    .venv/bin/python bench/send_floor.py [--sockets 1000] [--rounds 200] [--repeat 5]

Opens N loopback connections; a child process drains their far ends with epoll (as a
client would read), while this process sends to them round-robin, one frame per
``send``, as a server's fan-out does at 1,000 clients when each recipient has one message
pending. Reports this process's CPU (user + system, from getrusage) per ``send``:

- ``1 frame per send``: the cost of one delivery when nothing coalesces (the floor for a
  server that makes one syscall per delivery, whatever its language);
- ``k frames per send``: per frame, when k messages for a recipient go in one ``send``;
- ``python loop``: the same loop calling a no-op instead of ``send`` (the interpreter's
  share, to subtract).

The loopback send is dear because the kernel does the receiving side's TCP work in the
sender's context (softirq on the same CPU), and wakes the reader; both are counted here.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import select
import socket
import statistics
import time
from multiprocessing.connection import Connection


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _drain(port: int, n: int, ready: Connection) -> None:
    """The far ends: connect n sockets, then read whatever comes until told to stop."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    ep = select.epoll()
    for s in socks:
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN)
    by_fd = {s.fileno(): s for s in socks}
    ready.send("connected")
    while not ready.poll(0):
        for fd, _ in ep.poll(0.1):
            try:
                while by_fd[fd].recv(1 << 16):
                    pass
            except BlockingIOError:
                pass
    for s in socks:
        s.close()


KS = (1, 2, 4, 10)


def measure(n: int, rounds: int, size: int, repeat: int, gap: float) -> dict[str, float]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=n)
    port = listener.getsockname()[1]
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_drain, args=(port, n, child))
    proc.start()
    conns = [listener.accept()[0] for _ in range(n)]
    parent.recv()
    frame = b"x" * (size - 1) + b"\n"
    out: dict[str, float] = {}
    try:
        # Interleaved repeats, medians reported: this shared machine is noisy. The first
        # pass warms up (socket buffers grow, pages fault in) and is not counted.
        per_frame: dict[int, list[float]] = {k: [] for k in KS}
        rate: list[float] = []
        for rep in range(repeat + 1):
            for k in KS:
                data = frame * k
                sends = [c.send for c in conns]
                cpu0, t0 = _cpu(), time.perf_counter()
                for _ in range(rounds // k or 1):
                    for send in sends:
                        send(data)
                    if gap:
                        # Let the reader fall asleep, as a client between messages does;
                        # the sleep costs this process no CPU.
                        time.sleep(gap)
                cpu, wall = _cpu() - cpu0, time.perf_counter() - t0
                frames = (rounds // k or 1) * k * n
                if rep:
                    per_frame[k].append(1e6 * cpu / frames)
                    if k == 1:
                        rate.append(frames / wall)
        for k in KS:
            out[f"{k} frame(s) per send: CPU µs per frame"] = statistics.median(per_frame[k])
        out["1 frame per send: sends/s (wall)"] = statistics.median(rate)

        def noop(_: bytes) -> None:
            return None

        noops = [noop] * n
        cpu0 = _cpu()
        for _ in range(rounds):
            for f in noops:
                f(frame)
        out["python loop alone: CPU µs per call"] = 1e6 * (_cpu() - cpu0) / (rounds * n)
    finally:
        parent.send("stop")
        proc.join(30)
        for c in conns:
            c.close()
        listener.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sockets", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=200, help="frames sent to each socket")
    ap.add_argument("--size", type=int, default=120, help="bytes per frame")
    ap.add_argument("--repeat", type=int, default=5, help="medians of this many passes")
    ap.add_argument(
        "--gap-ms",
        type=float,
        default=0.0,
        help="pause after each round to every socket, so readers sleep between messages "
        "(0: back to back, the reader never sleeps)",
    )
    a = ap.parse_args()
    for key, value in measure(a.sockets, a.rounds, a.size, a.repeat, a.gap_ms / 1000).items():
        print(f"{key:45} {value:12,.2f}")


if __name__ == "__main__":
    main()
