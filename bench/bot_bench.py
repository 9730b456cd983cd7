"""A bot with 50 typed commands and 1,000 users issuing them: the bot's reply latency
(p50/p99) and its CPU per command, for the threaded and the asyncio bot, beside the floor:
a bare ChatClient that answers every DM with no framework at all (``sdk``).

The server and the bot each run as a process of their own (the bot's CPU is read from
/proc); the 1,000 users are sessions on one selector thread in this process, each
logged in and sending ``!cNN args`` by DM at random moments (``--rate`` commands a
second in all), never more than one command waiting for its reply per user. A reply is
matched to its user's command; the latency runs from the send to the reply's arrival.

    .venv/bin/python bench/bot_bench.py [--users 1000] [--rate 200] [--duration 15]
                                        [--kind all|threaded|asyncio|sdk] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import json
import random
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from common import start_server, wait_idle

from chatroom import ChatClient, DirectMessage, UsersChanged
from chatroom.protocol import DmCommand
from chatroom.session import ClientSession
from chatroom_bots import AsyncBot, Bot, Rest
from chatroom_bots.core import BotBase
from chatroom_bots.load import procstat
from chatroom_bots.load.stats import new_histogram, percentiles, record

BOT = "benchbot"
BOT_PW = "bench bot password"
USER_PW = "bench user password"
COMMANDS = 50


class Color(enum.Enum):
    RED = "r"
    GREEN = "g"
    BLUE = "b"


# Five signatures, ten commands each; ARGS[i] is a valid argument line for command i.
def _add(ctx: Any, a: int, b: int = 0) -> str:
    return str(a + b)


def _say(ctx: Any, *, text: str) -> str:
    return text[:40]


def _greet(ctx: Any, who: str, times: int = 1) -> str:
    return f"hi {who}" * min(times, 3)


def _wait(ctx: Any, d: timedelta, label: Rest = "") -> str:
    return f"{d.total_seconds():g}s {label}"


def _paint(ctx: Any, color: Color, shade: float = 0.5) -> str:
    return f"{color.name} {shade:g}"


SIGNATURES: list[tuple[Callable[..., str], str]] = [
    (_add, "2 3"),
    (_say, "hello there, bot"),
    (_greet, "alice 2"),
    (_wait, "1h30m tea"),
    (_paint, "blue 0.25"),
]


def build_bot(kind: str) -> BotBase:
    bot: BotBase = Bot(BOT) if kind == "threaded" else AsyncBot(BOT)
    bot.guard.replies_per_minute = 10_000  # the bench's users are not a loop
    for i in range(COMMANDS):
        fn, _ = SIGNATURES[i % len(SIGNATURES)]
        bot.command(f"c{i:02d}", help=f"command {i}")(fn)
    return bot


def command_line(i: int) -> str:
    return f"!c{i:02d} {SIGNATURES[i % len(SIGNATURES)][1]}"


def serve_sdk(port: int) -> None:
    """The floor: a bare ChatClient whose on_dm hook answers every DM, no framework."""
    client = ChatClient("127.0.0.1", port)

    @client.on_dm
    def answer(event: DirectMessage) -> None:
        client.dm(event.sender, event.message[:40])

    with client:
        client.login(BOT, BOT_PW)
        sys.stdin.read()


def serve(kind: str, port: int) -> None:
    """The bot's process: run until stdin closes."""
    if kind == "sdk":
        serve_sdk(port)
        return
    bot = build_bot(kind)

    def stop_at_eof() -> None:
        sys.stdin.read()
        bot.stop()  # type: ignore[attr-defined]

    if isinstance(bot, Bot):
        threading.Thread(target=stop_at_eof, daemon=True).start()
        bot.run(port=port, password=BOT_PW)
        return
    assert isinstance(bot, AsyncBot)

    async def main() -> None:
        assert isinstance(bot, AsyncBot)
        threading.Thread(target=stop_at_eof, daemon=True).start()
        await bot.run(port=port, password=BOT_PW)

    asyncio.run(main())


@dataclass
class User:
    name: str
    sock: socket.socket
    session: ClientSession = field(default_factory=ClientSession)
    sent_at: float | None = None  # the command waiting for its reply
    due: float = 0.0
    out: bytearray = field(default_factory=bytearray)


def run_users(
    port: int, users: int, rate: float, duration: float, settled: Callable[[], None]
) -> dict[str, Any]:
    """Log ``users`` in, call ``settled()`` once the bot has taken in their arrival, then
    send commands for ``duration`` seconds."""
    sel = selectors.DefaultSelector()
    now = time.monotonic()
    crowd: list[User] = []
    for k in range(users):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        u = User(f"u{k:04d}", s)
        u.out += u.session.connection_made(now)
        u.out += u.session.login(u.name, USER_PW)[1]
        crowd.append(u)
        sel.register(s, selectors.EVENT_READ, u)
    while not all(u.session.logged_in for u in crowd):
        for u in crowd:
            if u.out:
                with contextlib.suppress(BlockingIOError):
                    del u.out[: u.sock.send(u.out)]
        for key, _ in sel.select(0.05):
            u = key.data
            data = u.sock.recv(1 << 16)
            if not data:
                raise ConnectionError(f"{u.name}: the server closed the connection")
            u.session.receive_data(data, time.monotonic())
    settled()
    hist = new_histogram()
    sent = replies = 0
    per_user = rate / users
    begin = time.monotonic()
    end = begin + duration
    for u in crowd:
        u.due = begin + random.expovariate(per_user)
    while True:
        now = time.monotonic()
        if now >= end and all(u.sent_at is None for u in crowd):
            break
        if now >= end + 10:
            break  # replies that never came count as lost
        for u in crowd:
            if u.sent_at is None and begin <= u.due <= now < end and u.session.logged_in:
                i = random.randrange(COMMANDS)
                u.out += u.session.request(DmCommand(to=BOT, message=command_line(i)))[1]
                u.sent_at = now
                sent += 1
            if u.out:
                try:
                    n = u.sock.send(u.out)
                except BlockingIOError:
                    n = 0
                del u.out[:n]
        for key, _ in sel.select(0.005):
            u = key.data
            data = u.sock.recv(1 << 16)
            if not data:
                raise ConnectionError(f"{u.name}: the server closed the connection")
            t = time.monotonic()
            for event in u.session.receive_data(data, t):
                if (
                    isinstance(event, DirectMessage)
                    and event.sender == BOT
                    and u.sent_at is not None
                ):
                    record(hist, int((t - u.sent_at) * 1e6))
                    replies += 1
                    u.sent_at = None
                    u.due = t + random.expovariate(per_user)
    for u in crowd:
        u.sock.close()
    return {"sent": sent, "replies": replies, "lost": sent - replies, **percentiles(hist)}


def measure(kind: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    bot = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, str(port)], stdin=subprocess.PIPE, text=True
    )
    try:
        with ChatClient("127.0.0.1", port) as watch:
            watch.login("benchwatch", USER_PW)
            # Waiting first, then looking: a bot that logs in between is not missed.
            with watch.expect(UsersChanged, check=lambda e: BOT in e.users) as online:
                if BOT not in watch.users:
                    online.wait(30)
        cpu0: list[procstat.ProcSample | None] = []

        def settled() -> None:
            wait_idle(bot.pid)  # the bot has taken in the 1,000 arrivals
            cpu0.append(procstat.sample(bot.pid))

        result = run_users(port, args.users, args.rate, args.duration, settled)
        cpu1 = procstat.sample(bot.pid)
    finally:
        assert bot.stdin is not None
        bot.stdin.close()
        bot.wait(30)
    assert cpu0 and cpu0[0] is not None and cpu1 is not None
    cpu = cpu1.cpu_seconds - cpu0[0].cpu_seconds
    return {
        "kind": kind,
        **result,
        "bot_cpu_s": round(cpu, 3),
        "cpu_per_command_us": round(1e6 * cpu / max(result["replies"], 1), 1),
        "bot_threads": cpu1.threads,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--rate", type=float, default=200.0, help="commands a second, in all")
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument(
        "--kind",
        choices=["all", "threaded", "asyncio", "sdk"],
        default="all",
        help="the bots, or sdk: a bare ChatClient answering every DM (the floor)",
    )
    p.add_argument("--json", type=Path)
    p.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    kinds = ["sdk", "threaded", "asyncio"] if args.kind == "all" else [args.kind]
    results = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_server("ours", Path(tmp), "--password-hash", "load-test") as (_, port),
    ):
        for kind in kinds:
            r = measure(kind, port, args)
            results.append(r)
            print(
                f"{kind:9} {r['replies']:6d}/{r['sent']} replies  p50 {r['p50']:.2f} ms  "
                f"p99 {r['p99']:.2f} ms  max {r['max']:.2f} ms  "
                f"bot CPU {r['cpu_per_command_us']:.0f} µs/command  ({r['bot_threads']} threads)",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
