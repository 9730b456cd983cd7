"""``make demo``: a local server, the demo bots if installed, and the REPL in front.
``make cluster-demo`` (``--cluster``): three nodes of one cluster (docs/CLUSTER.md) on
Redis and PostgreSQL, the REPL on the first and the bots on the second and third, each
with the other nodes to fail over to.

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
from typing import IO

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


def bot_command(bot: str, index: int, ports: Sequence[int], db: Path) -> list[str]:
    """How the demo runs its ``index``-th bot. In a cluster each bot starts on a node of
    its own, not the REPL's, and has every other node after it to fail over to, as the
    REPL does (docs/CLUSTER.md): given one address, a bot whose node died never
    returned. ``db`` is where it keeps its generated password (beside the server's)."""
    first = (index + 1) % len(ports)
    order = [*ports[first:], *ports[:first]]
    hosts = ",".join(f"127.0.0.1:{p}" for p in order)
    return [sys.executable, "-m", "chatroom_bots", bot, "--host", hosts, "--db", str(db)]


def start_bots(
    ports: Sequence[int], db: Path, log: IO[bytes], procs: list[subprocess.Popen[bytes]]
) -> list[str]:
    """Start the demo bots (if installed), appending them to ``procs``; their names."""
    if not importlib.util.find_spec("chatroom_bots.__main__"):
        return []
    for i, bot in enumerate(BOTS):
        procs.append(subprocess.Popen(bot_command(bot, i, ports, db), stdout=log, stderr=log))
    return list(BOTS)


def _create_database(url: str) -> bool:
    """Create the cluster demo's PostgreSQL database unless it exists."""
    try:
        import psycopg
    except ModuleNotFoundError:
        print("the cluster demo needs pip install 'chatroom[cluster]'", file=sys.stderr)
        return False
    base, _, name = url.rpartition("/")
    try:
        with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=3) as db:
            if not db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                db.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        print(f"cannot use PostgreSQL at {base}: {exc}", file=sys.stderr)
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="chat-demo", description=__doc__)
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--db", type=Path, default=Path("demo.db"))
    ap.add_argument("--no-bots", action="store_true")
    ap.add_argument("--cluster", metavar="REDIS_URL", help="run three nodes of a cluster")
    ap.add_argument(
        "--cluster-db",
        default="postgresql://postgres@127.0.0.1:5432/chatroom_demo",
        help="the cluster's PostgreSQL database, created if missing (with --cluster)",
    )
    ap.add_argument("--nodes", type=int, default=3, help="cluster nodes (with --cluster)")
    args = ap.parse_args(argv)

    ports = []
    for i in range(args.nodes if args.cluster else 1):
        port = args.port + i
        if not _port_free(port):
            port = _free_port()
            print(f"port {args.port + i} is in use; using {port}")
        ports.append(port)
    log = open("demo.log", "ab")  # noqa: SIM115 - closed below, after the children exit
    procs: list[subprocess.Popen[bytes]] = []
    db = args.cluster_db if args.cluster else str(args.db)
    if args.cluster and not _create_database(db):
        return 1
    cluster = ["--cluster", args.cluster] if args.cluster else []
    try:
        for port in ports:
            server = subprocess.Popen(
                [
                    *(sys.executable, "-m", "chatroom_server", "--port", str(port)),
                    *("--db", db, *cluster, "--log-level", "info"),
                ],
                stdout=log,
                stderr=log,
            )
            procs.append(server)
            if not _wait_listening(port, server):
                print("the server did not start; see demo.log", file=sys.stderr)
                return 1
        started = [] if args.no_bots else start_bots(ports, args.db, log, procs)
        where = ", ".join(f"127.0.0.1:{p}" for p in ports)
        print(
            f"{'nodes' if args.cluster else 'server'} on {where} (accounts in {db}, "
            "logs in demo.log)" + (f"; bots: {', '.join(started)}" if started else "")
        )
        return chat_main(["--host", ",".join(f"127.0.0.1:{p}" for p in ports)])
    except KeyboardInterrupt:
        return 130
    finally:
        _stop(procs)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
