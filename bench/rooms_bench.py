"""What a message to a small room costs the server, beside a lobby of idle clients
(docs/PROTOCOL.md §Rooms): a room's message must walk its members, not every
connection, so its cost must not grow with the idle crowd.

    .venv/bin/python bench/rooms_bench.py [--idle 100,1000] [--rooms 20] [--size 5]
                                          [--messages 50]

For each idle-crowd size, a fresh server (a real process, its CPU read from /proc):
``idle`` v1 clients logged in and silent, ``rooms`` rooms of ``size`` v2 members each;
every room's first member sends ``messages`` messages to its room, each waited for by
every other member; then the same number of lobby messages, which every client gets.
Prints the server's CPU per message and per delivery for both. Numbers, never asserts.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, start_server, wait_idle

PASSWORD = "bench password"


class Clients:
    """Raw sockets, read by one selector thread that counts broadcasts per socket."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.counts: dict[socket.socket, int] = {}
        self.lock = threading.Lock()  # guards counts
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)

    def connect(self, port: int, name: str, rooms: bool) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        features = ["users_delta", "rooms"] if rooms else ["users_delta"]
        login = {"command": "login", "username": name, "password": PASSWORD, "features": features}
        s.sendall(json.dumps(login).encode() + b"\n")
        buf = b""
        while b'"login_ok"' not in buf:
            data = s.recv(65536)
            if not data:
                raise ConnectionError(f"{name}: closed during login: {buf[-200:]!r}")
            buf += data
        return s

    def watch(self, s: socket.socket) -> None:
        s.setblocking(False)
        with self.lock:
            self.counts[s] = 0
        self.sel.register(s, selectors.EVENT_READ)

    def _read(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.2):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    data = s.recv(1 << 20)
                except BlockingIOError:
                    continue
                n = data.count(b'"type":"broadcast"')
                if n:
                    with self.lock:
                        self.counts[s] += n

    def total(self, socks: list[socket.socket]) -> int:
        with self.lock:
            return sum(self.counts[s] for s in socks)

    def wait(self, socks: list[socket.socket], expected: int, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while self.total(socks) < expected:
            if time.monotonic() > end:
                raise TimeoutError(f"{self.total(socks)} of {expected} deliveries arrived")
            time.sleep(0.01)


def request(s: socket.socket, frame: dict[str, object], answer: bytes) -> None:
    """Send ``frame`` on a blocking socket and read until ``answer`` appears."""
    s.sendall(json.dumps(frame).encode() + b"\n")
    buf = b""
    while answer not in buf:
        data = s.recv(65536)
        if not data:
            raise ConnectionError("closed")
        buf += data


def run(idle: int, rooms: int, size: int, messages: int) -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_server("ours", Path(tmp), "--password-hash", "load-test") as (proc, port),
    ):
        clients = Clients()
        crowd = [clients.connect(port, f"idle{i}", rooms=False) for i in range(idle)]
        members: list[list[socket.socket]] = []
        for r in range(rooms):
            group = []
            for m in range(size):
                s = clients.connect(port, f"r{r}m{m}", rooms=True)
                request(s, {"command": "join", "room": f"room{r}", "id": 1}, b'"room_info"')
                group.append(s)
            members.append(group)
        everyone = crowd + [s for g in members for s in g]
        for s in everyone:
            clients.watch(s)
        clients.thread.start()
        wait_idle(proc.pid)

        listeners = [s for g in members for s in g[1:]]
        line = b"".join(
            json.dumps({"command": "pm", "room": f"room{r}", "message": f"m{i}"}).encode() + b"\n"
            for i in range(messages)
            for r in [0]
        )
        cpu0 = cpu_seconds(proc.pid)
        for r, g in enumerate(members):
            g[0].sendall(line.replace(b'"room0"', f'"room{r}"'.encode()))
        clients.wait(listeners, rooms * messages * (size - 1))
        room_cpu = cpu_seconds(proc.pid) - cpu0

        wait_idle(proc.pid)
        lobby_msgs = rooms * messages
        before = clients.total(everyone)
        sender = members[0][0]
        lobby = b"".join(
            json.dumps({"command": "pm", "message": f"l{i}"}).encode() + b"\n"
            for i in range(lobby_msgs)
        )
        cpu0 = cpu_seconds(proc.pid)
        sender.sendall(lobby)
        deliveries = lobby_msgs * (len(everyone) - 1)
        clients.wait(everyone, before + deliveries)
        lobby_cpu = cpu_seconds(proc.pid) - cpu0
        clients.stop.set()
        for s in everyone:
            s.close()
    room_msgs = rooms * messages
    return {
        "room_us_per_msg": room_cpu / room_msgs * 1e6,
        "room_us_per_delivery": room_cpu / (room_msgs * (size - 1)) * 1e6,
        "lobby_us_per_msg": lobby_cpu / lobby_msgs * 1e6,
        "lobby_us_per_delivery": lobby_cpu / deliveries * 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--idle", default="100,1000", help="idle lobby clients, comma-separated")
    p.add_argument("--rooms", type=int, default=20)
    p.add_argument("--size", type=int, default=5)
    p.add_argument("--messages", type=int, default=50, help="per room")
    a = p.parse_args()
    print(f"{a.rooms} rooms of {a.size}, {a.messages} messages each; server CPU:")
    for idle in (int(x) for x in a.idle.split(",")):
        r = run(idle, a.rooms, a.size, a.messages)
        print(
            f"  idle {idle:>6}: room {r['room_us_per_msg']:8.1f} us/msg "
            f"{r['room_us_per_delivery']:7.1f} us/delivery | lobby {r['lobby_us_per_msg']:9.1f} "
            f"us/msg {r['lobby_us_per_delivery']:6.2f} us/delivery"
        )


if __name__ == "__main__":
    main()
