"""``chat-load run|logins|hold``: load-test a chatroom server with a swarm of bots.

The server must run with flood control off (``chat-server --rate-limit off``), or the
swarm measures the rate limiter; its per-address limits exempt loopback by default.
"""

# main() is the chat-load console script: it checks for the 'load' extra before faker
# and hdrhistogram are imported (by the modules imported in the functions below), so
# that without it one line says what to install, and the exit status is 2.

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from chatroom.extras import MissingExtra, require_or_exit
from chatroom.protocol import DEFAULT_PORT


def _mix(text: str) -> float:
    """``pm=0.9,dm=0.1`` -> 0.9 (the PM fraction)."""
    parts = dict(p.split("=", 1) for p in text.split(",") if p)
    try:
        pm, dm = float(parts.pop("pm", 0)), float(parts.pop("dm", 0))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --mix {text!r}") from None
    if parts or pm < 0 or dm < 0 or pm + dm <= 0:
        raise argparse.ArgumentTypeError("--mix takes pm=X,dm=Y with non-negative weights")
    return pm / (pm + dm)


def build_parser() -> argparse.ArgumentParser:
    from chatroom_bots.load.result import LoadConfig
    from chatroom_bots.load.rooms import DISTRIBUTIONS
    from chatroom_bots.load.worker import SCHED_POLICIES

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--host",
        default="127.0.0.1",
        help="server address; a cluster's nodes as a:5050,b:5051 (bots spread over them)",
    )
    common.add_argument("--port", type=int, default=DEFAULT_PORT)
    common.add_argument("--clients", type=int, default=100, help="bots to log in")
    common.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: the number of cores)",
    )
    common.add_argument(
        "--login-concurrency",
        type=int,
        default=LoadConfig.login_concurrency,
        metavar="N",
        help="logins in flight at once per worker process (default %(default)s); churn "
        "--drop-all's rejoin with thousands is a whole room reconnecting after a blip",
    )
    common.add_argument("--seed", type=int, default=1, help="names come from faker with it")
    common.add_argument("--tls", action="store_true")
    common.add_argument(
        "--transport",
        choices=["tcp", "ws", "mixed"],
        default="tcp",
        help="how the bots connect: tcp (--port), ws (WebSocket to --web-port, "
        "docs/WEB.md), or mixed (every other bot over WebSocket)",
    )
    common.add_argument("--web-port", type=int, help="the server's --web-port, for ws and mixed")
    common.add_argument("--ca-file")
    common.add_argument("--json", metavar="FILE", help="write the full result as JSON")
    common.add_argument("--csv", metavar="FILE", help="write the per-second timeline as CSV")
    common.add_argument(
        "--html",
        metavar="FILE",
        help="write a self-contained report with charts (needs chatroom[report])",
    )
    common.add_argument(
        "--server-pid",
        type=int,
        help="the server's pid (same machine): its CPU per delivery and RSS in the result "
        "and the report; churn --drop-all also watches its threads",
    )
    common.add_argument(
        "--sched",
        choices=SCHED_POLICIES,
        default=LoadConfig.sched,
        help="the worker processes' scheduling policy (default %(default)s: Linux's "
        "SCHED_BATCH, so that a bot woken by a delivery does not preempt the server it "
        "measures on a shared machine)",
    )
    common.add_argument(
        "--max-loss",
        type=float,
        default=0.0,
        help="fraction of deliveries that may be lost or errored (default 0)",
    )
    p = argparse.ArgumentParser(
        prog="chat-load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run", parents=[common], help="open-loop message load")
    run.add_argument("--senders", type=int, default=10)
    run.add_argument("--rate", type=float, default=1000.0, help="messages/s, all senders")
    run.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    run.add_argument("--mix", type=_mix, default=1.0, help="e.g. pm=0.9,dm=0.1")
    run.add_argument("--size", type=int, default=80, help="bytes per message")
    run.add_argument(
        "--churn",
        type=float,
        default=0.0,
        help="receiving bots cut abruptly and resumed per second while sending; every "
        "delivery, live or replayed, is counted against what each bot should receive",
    )
    run.add_argument(
        "--rooms",
        type=int,
        default=0,
        metavar="R",
        help="spread the bots over R rooms (protocol v2; the server needs its message "
        "log); every public message goes to one of its sender's rooms, and is checked per "
        "room: expected by the room's other members, and by nobody else (default 0: "
        "everyone in lobby)",
    )
    run.add_argument(
        "--room-sizes",
        choices=DISTRIBUTIONS,
        default=LoadConfig.room_sizes,
        help="how the rooms' sizes are drawn: uniform (all alike), or zipf (room k holds "
        "a share proportional to 1/k: one large room and many small ones)",
    )
    run.add_argument(
        "--rooms-per-bot",
        type=int,
        default=LoadConfig.rooms_per_bot,
        metavar="K",
        help="rooms each bot is in (default %(default)s)",
    )
    run.add_argument(
        "--drain",
        type=float,
        default=2.0,
        help="seconds to wait for deliveries after the last send",
    )
    sub.add_parser("logins", parents=[common], help="login storm: logins/s, time to user list")
    churn = sub.add_parser(
        "churn", parents=[common], help="every bot dropped at once, then all back (--drop-all)"
    )
    churn.add_argument(
        "--drop-all",
        action="store_true",
        required=True,
        help="reset every bot's connection at once; report the time until the server's "
        "user list is empty (and, with --server-pid, its threads gone), then the time "
        "until all are logged in and listed again",
    )
    hold = sub.add_parser("hold", parents=[common], help="hold idle clients, then probe")
    hold.add_argument("--duration", type=float, default=30.0, help="seconds to hold")
    hold.add_argument("--probe-rate", type=float, default=10.0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # pip's console-script wrapper passes what this returns to sys.exit(): README
    # promises non-zero for a failed load run.
    require_or_exit("load", "chat-load")
    from chatroom_bots.load.report import write_html
    from chatroom_bots.load.rooms import room_sizes
    from chatroom_bots.load.runner import LoadConfig, print_progress, run_load

    a = build_parser().parse_args(argv)
    cfg = LoadConfig(
        host=a.host,
        port=a.port,
        mode=a.mode,
        clients=a.clients,
        processes=a.processes,
        seed=a.seed,
        tls=a.tls,
        ca_file=a.ca_file,
        max_loss=a.max_loss,
        server_pid=a.server_pid,
        login_concurrency=a.login_concurrency,
        sched=a.sched,
        transport=a.transport,
        web_port=a.web_port,
    )
    if a.transport != "tcp" and (a.web_port is None or a.tls):
        print("chat-load: --transport ws and mixed need --web-port, without --tls", file=sys.stderr)
        return 2
    if a.mode == "run":
        cfg.senders, cfg.rate, cfg.duration = a.senders, a.rate, a.duration
        cfg.pm_fraction, cfg.size, cfg.drain = a.mix, a.size, a.drain
        cfg.churn = a.churn
        cfg.rooms, cfg.room_sizes, cfg.rooms_per_bot = a.rooms, a.room_sizes, a.rooms_per_bot
        if cfg.rooms:
            try:
                room_sizes(cfg.clients, cfg.rooms, cfg.room_sizes, cfg.rooms_per_bot)
            except ValueError as exc:
                print(f"chat-load: {exc}", file=sys.stderr)
                return 2
    elif a.mode == "hold":
        cfg.duration, cfg.probe_rate = a.duration, a.probe_rate
    try:
        result = run_load(cfg, progress=print_progress())
    except KeyboardInterrupt:
        print("\ninterrupted; all workers stopped", file=sys.stderr)
        return 130
    except (TimeoutError, RuntimeError) as exc:
        print(f"chat-load: {exc}", file=sys.stderr)
        return 2
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(result.table())
    if a.json:
        result.write_json(a.json)
    if a.csv:
        result.write_csv(a.csv)
    if a.html:
        try:
            write_html(result, a.html)
        except MissingExtra as exc:
            print(f"chat-load: {exc}", file=sys.stderr)
            return 2
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
