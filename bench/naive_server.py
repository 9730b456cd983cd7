"""Baseline 1: protocol v1 the way a first attempt would write it.

One thread per client; json.dumps per recipient; sendall to each recipient under one
global lock; plain-text passwords in a dict. Only for bench/: never deploy this.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

clients: dict[str, socket.socket] = {}  # name -> socket
passwords: dict[str, str] = {}
lock = threading.Lock()  # one global lock for everything


def send(sock: socket.socket, obj: dict[str, object]) -> None:
    try:
        sock.sendall((json.dumps(obj) + "\n").encode())
    except OSError:
        pass


def push_users(**extra: object) -> None:
    users = sorted(clients, key=str.lower)
    for s in list(clients.values()):
        send(s, {"type": "users", "users": users, **extra})


def handle(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    name = None
    buf = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                cmd, rid = msg.get("command"), msg.get("id")
                reply: dict[str, object] = {"id": rid} if rid is not None else {}
                with lock:
                    if cmd == "login":
                        u, p = msg.get("username"), msg.get("password")
                        if p is None:
                            send(
                                sock,
                                {
                                    "type": "password_required",
                                    "username": u,
                                    "new_user": u not in passwords,
                                    **reply,
                                },
                            )
                        elif passwords.setdefault(u, p) == p:
                            new = name is None
                            name = u
                            clients[u] = sock
                            send(
                                sock,
                                {
                                    "type": "login_ok",
                                    "username": u,
                                    "new_user": new,
                                    "users": sorted(clients, key=str.lower),
                                    **reply,
                                },
                            )
                            push_users(joined=u)
                        else:
                            send(
                                sock,
                                {
                                    "type": "error",
                                    "code": "bad_credentials",
                                    "message": "wrong password",
                                    **reply,
                                },
                            )
                    elif cmd == "pm":
                        for other, s in list(clients.items()):
                            if other != name:
                                send(
                                    s,
                                    {
                                        "type": "broadcast",
                                        "from": name,
                                        "message": msg.get("message"),
                                        "ts": time.time(),
                                    },
                                )
                        send(sock, {"type": "ack", "command": "pm", **reply})
                    elif cmd == "dm":
                        target = clients.get(msg.get("to"))
                        if target is None:
                            send(
                                sock,
                                {
                                    "type": "error",
                                    "code": "user_offline",
                                    "message": "offline",
                                    **reply,
                                },
                            )
                        else:
                            send(
                                target,
                                {
                                    "type": "dm",
                                    "from": name,
                                    "to": msg.get("to"),
                                    "message": msg.get("message"),
                                    "ts": time.time(),
                                },
                            )
                            send(
                                sock, {"type": "ack", "command": "dm", "to": msg.get("to"), **reply}
                            )
                    elif cmd == "users":
                        send(sock, {"type": "users", "users": sorted(clients), **reply})
                    elif cmd == "ping":
                        send(sock, {"type": "pong", **reply})
                    elif cmd in ("exit", "logout"):
                        send(sock, {"type": "bye", "reason": "exit"})
                        return
    except OSError:
        pass
    finally:
        with lock:
            if name is not None and clients.get(name) is sock:
                del clients[name]
                push_users(left=name)
        sock.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=5050)
    ap.add_argument("--db")  # accepted for a uniform command line; passwords stay in memory
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
