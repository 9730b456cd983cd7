"""``make demo``: a local server, the demo bots if installed, and the REPL in front.

Everything it starts is stopped when the REPL exits (or on Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from chatroom.protocol import DEFAULT_PORT
from chatroom_cli.__main__ import main as chat_main

BOTS = ("echo", "greeter")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            pause.wait(0.1)
    return False


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(6)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="chat-demo", description=__doc__)
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--db", type=Path, default=Path("demo.db"))
    ap.add_argument("--no-bots", action="store_true")
    args = ap.parse_args(argv)

    port = args.port
    if not _port_free(port):
        port = _free_port()
        print(f"port {args.port} is in use; using {port}")
    log = open("demo.log", "ab")  # noqa: SIM115 - closed below, after the children exit
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chatroom_server",
                "--port",
                str(port),
                "--db",
                str(args.db),
                "--log-level",
                "info",
            ],
            stdout=log,
            stderr=log,
        )
        procs.append(server)
        if not _wait_listening(port, server):
            print("the server did not start; see demo.log", file=sys.stderr)
            return 1
        started = []
        if not args.no_bots and importlib.util.find_spec("chatroom_bots.__main__"):
            for bot in BOTS:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "chatroom_bots",
                            bot,
                            "--port",
                            str(port),
                            "--db",
                            str(args.db),
                        ],
                        stdout=log,
                        stderr=log,
                    )
                )
                started.append(bot)
        print(
            f"server on 127.0.0.1:{port} (accounts in {args.db}, logs in demo.log)"
            + (f"; bots: {', '.join(started)}" if started else "")
        )
        return chat_main(["--port", str(port)])
    except KeyboardInterrupt:
        return 130
    finally:
        _stop(procs)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
