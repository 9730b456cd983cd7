"""chat-load's settings (:class:`LoadConfig`) and what a run found (:class:`LoadResult`):
its summary table, JSON and per-second CSV."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from chatroom.protocol import DEFAULT_PORT
from chatroom_bots.load.rooms import Distribution
from chatroom_bots.load.worker import SchedPolicy, sched_label

Mode = Literal["run", "logins", "hold", "churn"]
Transport = Literal["tcp", "ws", "mixed"]


@dataclass
class LoadConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    mode: Mode = "run"
    clients: int = 100
    senders: int = 10
    rate: float = 1000.0  # messages per second, all senders together
    duration: float = 10.0
    pm_fraction: float = 1.0  # the rest are DMs
    size: int = 80  # bytes of message text
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 1
    password: str = "chat-load password"
    drain: float = 2.0  # seconds to wait for deliveries after the last send
    max_loss: float = 0.0  # fraction of expected deliveries that may be lost or errored
    tls: bool = False
    ca_file: str | None = None
    login_concurrency: int = 32
    probe_rate: float = 10.0  # hold: the probe load on top of the idle clients
    probe_seconds: float = 5.0
    relay_frames: bool = False  # bench only: PMs a line-forwarding relay can deliver
    login_timeout: float | None = None  # seconds for every login; None: 120 + clients/20
    churn: float = 0.0  # run: receiving bots cut (no goodbye) and resumed per second
    # The server's pid on this machine: its CPU and RSS per second in the report, CPU per
    # delivery in the result; churn --drop-all also watches its threads go.
    server_pid: int | None = None
    # The worker processes' scheduling policy: "batch" lets the server run on when a
    # delivery wakes a bot (chatroom_bots.load.worker.set_sched).
    sched: SchedPolicy = "batch"
    # How the bots connect (docs/WEB.md): "tcp", "ws" (every bot over WebSocket to
    # web_port), or "mixed" (every other bot over WebSocket). Probes stay on port.
    transport: Transport = "tcp"
    web_port: int | None = None
    # --rooms R: the bots spread over R rooms (docs/PROTOCOL.md §Rooms) whose sizes
    # follow room_sizes, each bot in rooms_per_bot of them, every public message to one
    # of its sender's rooms (chatroom_bots.load.rooms); 0: everyone in lobby, protocol v1.
    rooms: int = 0
    room_sizes: Distribution = "uniform"
    rooms_per_bot: int = 1


@dataclass
class LoadResult:
    config: LoadConfig
    logged_in: int = 0
    login_failures: list[str] = field(default_factory=list)
    login_seconds: float = 0.0
    login_ms: dict[str, float] = field(default_factory=dict)
    sent_pm: int = 0
    sent_dm: int = 0
    expected: int = 0
    delivered: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    errors: int = 0
    disconnects: int = 0
    late_sends: int = 0
    max_lag: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    # (percentile, ms) from 0 to 99.9999: the whole curve, as wrk2 prints it.
    latency_curve: list[tuple[float, float]] = field(default_factory=list)
    replayed: int = 0  # deliveries that came replayed after a churn cut
    resumes: int = 0  # churn cuts that caught up
    resume_ms: dict[str, float] = field(default_factory=dict)  # cut -> replay_done
    # churn --drop-all: seconds from dropping every bot until the user list is empty (as
    # a probe client sees it) and until the server's threads for them are gone; then
    # from logging them all in again until the probe sees every one of them.
    time_to_empty: float | None = None
    threads_gone: float | None = None
    time_to_full: float | None = None
    # churn --drop-all: seconds from the rejoin's order until every bot's login_ok (the
    # list's last arrival may come later: time_to_full). login_seconds and login_ms stay
    # the first logins'.
    rejoin_login_seconds: float | None = None
    # churn --drop-all: the probe, which stays, pings every 100 ms from the drop until the
    # server has let everyone go: the round trips of a client that stays (ms).
    drop_ping_ms: dict[str, float] = field(default_factory=dict)
    drop_pings: int = 0
    drop_ping_failures: int = 0
    # churn --drop-all: CPU seconds spent over the rejoin (from the order to time_to_full)
    # by the server (with --server-pid) and by each generator process: on shared cores,
    # which of the two the rejoin waited for.
    rejoin_server_cpu_seconds: float | None = None
    rejoin_generator_cpu_seconds: list[float] = field(default_factory=list)
    send_seconds: float = 0.0
    # With --server-pid: the server's CPU over the step (first send to end of drain), its
    # largest RSS, and its RSS when the step began (all the clients logged in, idle).
    server_cpu_seconds: float | None = None
    server_rss_mib: float | None = None
    server_idle_rss_mib: float | None = None
    # The generator's own CPU over the step (all its worker processes): beside the
    # server's, it says which of the two the shared cores were spent on.
    generator_cpu_seconds: float = 0.0
    timeline: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # --rooms: deliveries the plan does not allow (to a bot that is not in the message's
    # room, or under another room's name), never counted as delivered: a failure.
    foreign: int = 0
    # --rooms: a row per room (name, members, sent, expected, delivered, duplicates,
    # lost) and per room size class ("size": "5-8", the rows added up, and latency_ms).
    rooms: list[dict[str, Any]] = field(default_factory=list)
    room_sizes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return self.sent_pm + self.sent_dm

    @property
    def lost(self) -> int:
        return max(0, self.expected - (self.delivered - self.duplicates))

    @property
    def ok(self) -> bool:
        """Nothing lost or errored beyond ``max_loss`` (a fraction of expected deliveries)."""
        if self.login_failures:
            return False
        if self.config.mode == "churn":
            return self.time_to_empty is not None and self.time_to_full is not None
        bad = self.lost + self.errors + self.foreign
        return bad <= self.config.max_loss * max(1, self.expected)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(sent=self.sent, lost=self.lost, ok=self.ok)
        return d

    def table(self) -> str:
        c = self.config
        lines = [
            f"chat-load {c.mode}: {self.logged_in}/{c.clients} clients on "
            f"{c.host}:{c.port}, {c.processes} processes"
        ]
        if self.login_seconds:
            rate = self.logged_in / self.login_seconds
            line = f"  logins        {self.logged_in} in {self.login_seconds:.2f} s ({rate:.0f}/s)"
            if self.login_ms:
                line += (
                    f"; connect to user list p50 {self.login_ms['p50']:.1f} ms, "
                    f"p99 {self.login_ms['p99']:.1f} ms"
                )
            lines.append(line)
        if self.login_failures:
            lines.append(
                f"  failed logins {len(self.login_failures)}: {_reasons(self.login_failures)}"
            )
        if self.sent or c.mode == "run":
            secs = self.send_seconds or 1
            lines += [
                f"  sent          {self.sent} ({self.sent / secs:.0f}/s; "
                f"{self.sent_pm} pm, {self.sent_dm} dm, {c.size} B)",
                f"  delivered     {self.delivered} ({self.delivered / secs:.0f}/s) of "
                f"{self.expected} expected",
                f"  lost          {self.lost} ({100 * self.lost / max(1, self.expected):.3f} %)"
                f"   duplicates {self.duplicates}   out of order {self.out_of_order}",
                f"  errors        {self.errors}   disconnects {self.disconnects}",
                *(
                    [
                        f"  churn         {self.resumes} cuts resumed, {self.replayed} "
                        f"deliveries replayed; cut to caught up p50 "
                        f"{self.resume_ms.get('p50', 0):.1f} ms, p99 "
                        f"{self.resume_ms.get('p99', 0):.1f} ms"
                    ]
                    if c.churn
                    else []
                ),
                "  latency (ms)  " + "  ".join(f"{k} {v:.2f}" for k, v in self.latency_ms.items()),
            ]
        if c.rooms:
            lines += self._room_lines()
        if self.server_cpu_seconds is not None and self.server_rss_mib is not None:
            per = self.server_cpu_seconds / max(1, self.delivered) * 1e6
            idle = self.server_idle_rss_mib or 0.0
            lines.append(
                f"  server        CPU {self.server_cpu_seconds:.2f} s ({per:.2f} µs per "
                f"delivery); RSS {self.server_rss_mib:.0f} MiB at most, {idle:.0f} MiB "
                f"before the first send with {self.logged_in} clients"
            )
        if self.generator_cpu_seconds and self.delivered:
            per = self.generator_cpu_seconds / self.delivered * 1e6
            lines.append(
                f"  generator     CPU {self.generator_cpu_seconds:.2f} s ({per:.2f} µs per "
                f"delivery) in {c.processes} processes ({sched_label(c.sched)})"
            )
        if c.mode == "churn":
            lines += [
                f"  drop-all      {self.logged_in} dropped at once: user list empty after "
                f"{_secs(self.time_to_empty)}, their threads gone after "
                f"{_secs(self.threads_gone)}",
                f"  meanwhile     a client that stayed: {self.drop_pings} pings, p50 "
                f"{self.drop_ping_ms.get('p50', 0):.1f} ms, p99 "
                f"{self.drop_ping_ms.get('p99', 0):.1f} ms, max "
                f"{self.drop_ping_ms.get('max', 0):.1f} ms, {self.drop_ping_failures} failed",
                f"  rejoin        all logged in again after {_secs(self.rejoin_login_seconds)}, "
                f"every one on the list after {_secs(self.time_to_full)}",
            ]
            if self.rejoin_generator_cpu_seconds:
                server = (
                    "server ?"  # no --server-pid
                    if self.rejoin_server_cpu_seconds is None
                    else f"server {self.rejoin_server_cpu_seconds:.2f} s"
                )
                gen = self.rejoin_generator_cpu_seconds
                lines.append(
                    f"                CPU meanwhile: {server}, generator {sum(gen):.2f} s "
                    f"in {len(gen)} processes"
                )
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append("  result        " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)

    def _room_lines(self) -> list[str]:
        c = self.config
        lines = [
            f"  rooms         {c.rooms} ({c.room_sizes} sizes, {c.rooms_per_bot} per bot); "
            f"foreign deliveries {self.foreign}"
        ]
        for row in self.room_sizes:
            ms = row["latency_ms"]
            rooms = f"{row['rooms']} room" + ("s" if row["rooms"] != 1 else "")
            lines.append(
                f"    size {row['size']:<7} {rooms:>10}, {row['members']:>6} members: "
                f"sent {row['sent']}, delivered {row['delivered']} of "
                f"{row['expected']}, lost {row['lost']}, duplicates {row['duplicates']}; "
                f"p50 {ms['p50']:.2f} ms, p99 {ms['p99']:.2f} ms"
            )
        return lines

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, default=str)

    def write_csv(self, path: str) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, TIMELINE_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for row in self.timeline:
                w.writerow({k: row.get(k) for k in w.fieldnames})


# The per-second rows (LoadResult.timeline), in the CSV's order. ``outstanding`` is
# deliveries expected so far and not yet seen: in flight, or (at the end) lost. ``lost``
# is what was sent in that second (by its intended time) and never arrived by the end of
# the drain; empty (None) in a second with nothing sent. The latencies are None in a
# second with no delivery, and ``lag_ms`` in one with no send: no data, not zero.
TIMELINE_COLUMNS = [
    "second",
    "sent",
    "delivered",
    "expected",
    "outstanding",
    "lost",
    "duplicates",
    "errors",
    "disconnects",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "lag_ms",
    "cpu",
    "server_cpu",
    "server_rss_mib",
]

# 0, 10, ..., 90, then 99, 99.9, ... 99.9999: even steps on a log(1 / (1 - p)) axis.
CURVE_PERCENTILES: tuple[float, ...] = (
    *(float(p) for p in range(0, 100, 10)),
    *(100 - 10.0**-k for k in range(0, 4)),
    99.9999,
)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _reasons(failures: list[str], most: int = 3) -> str:
    """Why logins failed, the commonest first: failures are "name: why"."""
    counts = Counter(f.partition(": ")[2] or f for f in failures)
    shown = [why if n == 1 else f"{why} (x{n})" for why, n in counts.most_common(most)]
    more = len(counts) - len(shown)
    return "; ".join(shown) + (f"; and {more} other reasons" if more > 0 else "")
