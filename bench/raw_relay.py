"""Baseline 2: the practical ceiling for Python sockets here.

Answers each connection's first line (its login) so clients can start, then forwards every
line, unparsed, to every other connection: one recv, then one sendall per other connection
under one lock (the cheapest correct ordering). No protocol, no validation, no accounts.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading

conns: list[socket.socket] = []
lock = threading.Lock()
# A client's goodbye is its last line; forwarded, it would reach the others as a frame
# without a "type" (a protocol error in their eyes), so the relay drops just that.
EXIT = b'{"command":"exit"}\n'


def handle(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    try:
        while b"\n" not in buf:  # the login line
            data = sock.recv(65536)
            if not data:
                return
            buf += data
        line, buf = buf.split(b"\n", 1)
        login = json.loads(line)
        ok = {
            "type": "login_ok",
            "username": login.get("username"),
            "new_user": False,
            "users": [],
            "id": login.get("id"),
        }
        sock.sendall(json.dumps(ok).encode() + b"\n")
        with lock:
            conns.append(sock)
        while True:
            if b"\n" in buf:
                cut = buf.rfind(b"\n") + 1
                chunk, buf = buf[:cut], buf[cut:]
                if chunk.endswith(EXIT):
                    chunk = chunk[: -len(EXIT)]
                with lock:
                    for other in conns:
                        if other is not sock:
                            try:
                                other.sendall(chunk)
                            except OSError:
                                pass
            data = sock.recv(65536)
            if not data:
                return
            buf += data
    except (OSError, ValueError):
        pass
    finally:
        with lock:
            if sock in conns:
                conns.remove(sock)
        sock.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=5050)
    ap.add_argument("--db")
    a = ap.parse_args()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", a.port))
    srv.listen(1024)
    print(f"listening on 127.0.0.1:{srv.getsockname()[1]}", file=sys.stderr, flush=True)
    while True:
        sock, _ = srv.accept()
        threading.Thread(target=handle, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
