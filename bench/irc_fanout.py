"""IRC fan-out: the same workload, sent by IRC clients, to our gateway and to ngircd,
side by side in one run (docs/IRC.md, docs/PERFORMANCE.md).

N IRC clients register (PASS, NICK, USER), join the channel, and S of them send PRIVMSG
to it open-loop at R messages/s in total, each message carrying its intended send time
(CLOCK_MONOTONIC, the same in every process here). Every other client is a recipient,
so a step expects R x (N - 1) deliveries a second. Receivers run on an epoll loop in two
processes. Per step: delivered/s, lost, p50/p99 from the intended send time, and the
server's CPU per delivery. Sustainable = nothing lost and p99 under 50 ms.

    .venv/bin/python bench/irc_fanout.py [--clients 100] [--senders 10]
                                         [--rates 1000,2000,4000,8000] [--duration 4]

ngircd runs with MaxPenaltyTime = 0 (no flood penalties, as the performance anchors
measured it) and our server with --rate-limit off: the flood control is not what is
measured. Needs Debian's ngircd (make bench-irc installs it).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from common import SERVERS

from chatroom.testing import ServerProcess
from chatroom_bots.load import procstat

CHANNEL = "#lobby"
PASSWORD = "bench-password"


def register(port: int, nick: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(f"PASS {PASSWORD}\r\nNICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
    buf = b""
    while b" 001 " not in buf:
        data = s.recv(65536)
        if not data:
            raise ConnectionError(f"{nick}: closed during registration: {buf[-300:]!r}")
        buf += data
    s.sendall(f"JOIN {CHANNEL}\r\n".encode())
    while b" 366 " not in buf:
        buf += s.recv(65536)
    return s


def worker(port: int, nicks: list[str], senders: int, pipe: Connection) -> None:
    socks = [register(port, n) for n in nicks]
    for s in socks:
        s.setblocking(False)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ, bytearray())
    pipe.send("ready")
    while True:
        cmd = pipe.recv()
        if cmd == "stop":
            return
        t0, end, rate, drain = cmd
        lat: list[float] = []
        delivered = 0
        sent = 0
        interval = senders / rate if senders else 0.0
        next_send = t0
        k = 0
        while True:
            now = time.monotonic()
            if senders and next_send <= now and next_send < end:
                # Open loop: the message goes out (late if we are behind), stamped with
                # when it should have.
                s = socks[k % senders]
                s.send(f"PRIVMSG {CHANNEL} :t={next_send:.6f} x\r\n".encode())
                sent += 1
                k += 1
                next_send = t0 + k * interval / senders
                continue
            if now > end + drain:
                break
            timeout = max(0.0, min(next_send - now if senders else 0.05, 0.05))
            for key, _ in sel.select(timeout):
                buf: bytearray = key.data
                try:
                    data = key.fileobj.recv(1 << 18)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                buf += data
                arrived = time.monotonic()
                cut = buf.rfind(b"\n")
                if cut < 0:
                    continue
                for line in bytes(buf[: cut + 1]).split(b"\r\n"):
                    i = line.find(b":t=")
                    if i >= 0 and b" PRIVMSG " in line:
                        delivered += 1
                        lat.append(arrived - float(line[i + 3 : line.index(b" ", i)]))
                    elif line.startswith(b"PING"):
                        key.fileobj.send(b"PONG" + line[4:] + b"\r\n")  # type: ignore[union-attr]
                del buf[: cut + 1]
        pipe.send((sent, delivered, lat))


def ngircd_conf(tmp: Path, port: int) -> Path:
    conf = tmp / "ngircd.conf"
    conf.write_text(
        f"""[Global]
Name = bench.chatroom
Info = bench
Listen = 127.0.0.1
Ports = {port}
MotdPhrase = bench
Password = {PASSWORD}
[Limits]
MaxPenaltyTime = 0
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
PingTimeout = 600
PongTimeout = 600
[Options]
DNS = no
Ident = no
PAM = no
"""
    )
    return conf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(kind: str, args: argparse.Namespace, tmp: Path) -> list[dict[str, float]]:
    port = free_port()
    if kind == "ours":
        cmd = [
            *SERVERS["ours"],
            *("--password-hash", "load-test", "--irc-port", str(port)),
            *("--port", "0", "--db", str(tmp / "irc.db"), "--idle-timeout", "0"),
        ]
        with ServerProcess(cmd=cmd) as server:
            return measure(server.pid, port, args)
    exe = shutil.which("ngircd") or "/usr/sbin/ngircd"
    proc = subprocess.Popen(
        [exe, "-n", "-f", str(ngircd_conf(tmp, port))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                try:  # a bounded wait on the process: it exits or starts listening
                    proc.wait(0.05)
                except subprocess.TimeoutExpired:
                    continue
                raise RuntimeError("ngircd exited") from None
        return measure(proc.pid, port, args)
    finally:
        proc.terminate()
        proc.wait(10)


def measure(pid: int, port: int, args: argparse.Namespace) -> list[dict[str, float]]:
    ctx = mp.get_context("spawn")
    nicks = [f"b{i}" for i in range(args.clients)]
    halves = [nicks[: args.clients // 2], nicks[args.clients // 2 :]]
    pipes, procs = [], []
    for i, part in enumerate(halves):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker, args=(port, part, args.senders if i == 0 else 0, child))
        p.start()
        pipes.append(parent)
        procs.append(p)
    for pipe in pipes:
        assert pipe.recv() == "ready"
    rows = []
    try:
        for rate in [float(r) for r in args.rates.split(",")]:
            cpu0 = procstat.sample(pid)
            t0 = time.monotonic() + 0.3
            for pipe in pipes:
                pipe.send((t0, t0 + args.duration, rate, 2.0))
            results = [pipe.recv() for pipe in pipes]
            cpu1 = procstat.sample(pid)
            sent = sum(r[0] for r in results)
            delivered = sum(r[1] for r in results)
            lat = sorted(x for r in results for x in r[2])
            expected = sent * (args.clients - 1)
            row = {
                "rate": rate,
                "delivered_per_s": delivered / args.duration,
                "lost": max(0, expected - delivered),
                "p50_ms": 1e3 * statistics.median(lat) if lat else 0.0,
                "p99_ms": 1e3 * lat[int(0.99 * (len(lat) - 1))] if lat else 0.0,
                "cpu_us": 1e6
                * ((cpu1.cpu_seconds if cpu1 else 0) - (cpu0.cpu_seconds if cpu0 else 0))
                / max(1, delivered),
            }
            rows.append(row)
            print(row, flush=True)
    finally:
        for pipe in pipes:
            pipe.send("stop")
        for p in procs:
            p.join(10)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--senders", type=int, default=10)
    ap.add_argument("--rates", default="1000,2000,4000,8000")
    ap.add_argument("--duration", type=float, default=4.0)
    args = ap.parse_args()
    if shutil.which("ngircd") is None and not Path("/usr/sbin/ngircd").exists():
        sys.exit("ngircd is not installed: make bench-irc installs it")
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("ours", "ngircd"):
            print(f"== {kind}", flush=True)
            table[kind] = run(kind, args, Path(tmp))
    print(f"\n{args.clients} IRC clients, {args.senders} senders, {args.duration:g} s per step")
    print("| server | msg/s | delivered/s | lost | p50 ms | p99 ms | server CPU µs/delivery |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind, rows in table.items():
        for r in rows:
            print(
                f"| {kind} | {r['rate']:.0f} | {r['delivered_per_s']:,.0f} | {r['lost']:.0f} "
                f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['cpu_us']:.2f} |"
            )
    for kind, rows in table.items():
        ok = [r for r in rows if r["lost"] == 0 and r["p99_ms"] < 50]
        best = max(ok, key=lambda r: r["delivered_per_s"]) if ok else None
        print(
            f"{kind}: max sustainable "
            + (
                f"{best['delivered_per_s']:,.0f} deliveries/s (p99 {best['p99_ms']:.1f} ms)"
                if best
                else "none of the steps"
            )
        )


if __name__ == "__main__":
    main()
