"""Slowloris: clients that send their first bytes a byte a second, and what the server
holds for them meanwhile.

    .venv/bin/python bench/slowloris.py [--clients 3000] [--modes tls,irc,json]
                                        [--base REV] [--rounds 1]

Per mode, ``--clients`` connections each send one byte a second of what a client sends
first, never whole within the login timeout (30 s): ``tls``, a ClientHello (some 500
bytes) on the JSON port with ``--tls-cert``; ``irc``, a USER line of 80 bytes on
``--irc-port``; ``json``, a login frame padded to 80 bytes. At t = 5, 15 and 25 s after
they have all connected (how long that took, one connect after the other, is shown), it
reads the server's threads and RSS (/proc) and times one normal login on the JSON port
(connect, the TLS handshake in ``tls`` mode, ``login_ok``); the slow clients closed by
the server before the end are counted (its login timeout runs from each connect).
``--base REV`` alternates the server of another git revision (A) with this tree's (B),
mode by mode and round by round, as bench/ab.py does (docs/PERFORMANCE.md, "A TLS
handshake without a thread"). Every row says the load average at its start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from abtree import THIS_TREE, base_tree, pythonpath
from common import rss_kib, start_server, thread_count

PASSWORD = "correct horse"
AT = (5.0, 15.0, 25.0)  # seconds after the slow clients are all connected


@dataclass
class Row:
    side: str
    mode: str
    clients: int
    load: float
    idle_threads: int = 0
    idle_rss_mb: float = 0.0
    threads: list[int] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    login_ms: list[float] = field(default_factory=list)
    gone: int = 0  # slow clients the server closed before the end
    connect_s: float = 0.0  # the slow clients' connects, one after the other

    def line(self) -> str:
        def each(xs: list[float] | list[int], fmt: str) -> str:
            return ", ".join(format(x, fmt) for x in xs)

        return (
            f"| {self.side} | {self.mode} | {self.clients:,} | {self.connect_s:.1f} "
            f"| {self.idle_threads} -> {each(self.threads, 'd')} "
            f"| {self.idle_rss_mb:.1f} -> {each(self.rss_mb, '.1f')} "
            f"| {each(self.login_ms, '.1f')} | {self.gone} | {self.load:.1f} |"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def client_hello(ctx: ssl.SSLContext) -> bytes:
    """A fresh ClientHello, as a real client's first flight."""
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="127.0.0.1")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


def first_bytes(mode: str, i: int, ctx: ssl.SSLContext) -> bytes:
    if mode == "tls":
        return client_hello(ctx)
    if mode == "irc":
        return f"USER slow{i} 0 * :{'x' * 80}"[:78].encode() + b"\r\n"
    frame = {"command": "login", "username": f"slow{i}", "password": PASSWORD}
    return json.dumps(frame).encode().ljust(79) + b"\n"


def drip(socks: list[socket.socket], data: list[bytes], stop: threading.Event) -> list[int]:
    """One byte a second to each socket until ``stop``; how many the server closed."""
    gone = [0]
    sent = 0
    while not stop.wait(1.0):
        for s, d in zip(socks, data, strict=True):
            if s.fileno() < 0 or sent >= len(d):
                continue
            try:
                s.send(d[sent : sent + 1])
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                gone[0] += 1
        sent += 1
    return gone


def login_time(port: int, ctx: ssl.SSLContext | None, name: str) -> float:
    """Milliseconds from connect to ``login_ok`` for a normal client."""
    began = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        frame = {"command": "login", "username": name, "password": PASSWORD}
        sock.sendall(json.dumps(frame).encode() + b"\n")
        got = b""
        while b"login_ok" not in got:
            more = sock.recv(65536)
            if not more:
                raise ConnectionError(f"closed before login_ok: {got[:200]!r}")
            got += more
    finally:
        sock.close()
    return (time.perf_counter() - began) * 1000


def one_run(side: str, path: str, mode: str, clients: int, tmp: Path, db: str) -> Row:
    ca = trustme.CA()
    pem = tmp / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    extra = ["--password-hash", "load-test"]
    irc_port = 0
    if mode == "tls":
        extra += ["--tls-cert", str(pem)]
    elif mode == "irc":
        irc_port = free_port()
        extra += ["--irc-port", str(irc_port)]
    row = Row(side, mode, clients, os.getloadavg()[0])
    env = {"PYTHONPATH": path}
    with start_server("ours", tmp, *extra, db=db, env=env) as (proc, port):
        ctx = trusting if mode == "tls" else None
        login_time(port, ctx, "warmup")
        row.idle_threads, row.idle_rss_mb = thread_count(proc.pid), rss_kib(proc.pid) / 1024
        target = irc_port or port
        data = [first_bytes(mode, i, trusting) for i in range(clients)]
        socks = []
        connecting = time.monotonic()
        for _ in range(clients):
            s = socket.create_connection(("127.0.0.1", target), timeout=60)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            socks.append(s)
        row.connect_s = time.monotonic() - connecting
        stop = threading.Event()
        gone: list[int] = []
        dripper = threading.Thread(target=lambda: gone.extend(drip(socks, data, stop)))
        began = time.monotonic()
        dripper.start()
        try:
            for n, at in enumerate(AT):
                time.sleep(max(0.0, began + at - time.monotonic()))  # pacing, not a sync
                row.threads.append(thread_count(proc.pid))
                row.rss_mb.append(rss_kib(proc.pid) / 1024)
                row.login_ms.append(login_time(port, ctx, f"probe{n}"))
        finally:
            stop.set()
            dripper.join()
            for s in socks:
                s.close()
        row.gone = gone[0] if gone else 0
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--clients", type=int, default=3000)
    p.add_argument("--modes", default="tls,irc,json")
    p.add_argument("--base", default="", help="a git revision to run as A, alternating")
    p.add_argument("--rounds", type=int, default=1)
    a = p.parse_args()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        sides: list[tuple[str, str]] = [("this tree", THIS_TREE)]
        if a.base:
            tree = stack.enter_context(base_tree(a.base))
            sides = [(f"A {a.base}", pythonpath(tree)), ("B this tree", THIS_TREE)]
        for r in range(a.rounds):
            for mode in a.modes.split(","):
                for side, path in sides:
                    row = one_run(side, path, mode, a.clients, Path(tmp), f"r{r}{mode}{side[0]}")
                    rows.append(row)
                    print(row.line(), flush=True)
    t = ", ".join(f"{x:g}" for x in AT)
    print(f"\n{a.clients:,} slow clients, a byte a second each; figures at t = {t} s")
    print(
        "| server | mode | clients | their connects, s | server threads (idle -> t) "
        "| RSS MB (idle -> t) | a login meanwhile, ms | slow ones closed | load |"
    )
    print("| --- " * 9 + "|")
    for row in rows:
        print(row.line())


if __name__ == "__main__":
    main()
